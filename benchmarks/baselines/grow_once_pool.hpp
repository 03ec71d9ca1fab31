// The pattern behind "harmful capacity" (Go's sync.Pool of bytes.Buffer, golang/go#23199): a
// free list of growable buffers. get() hands out any free buffer and grows it to the request;
// put() keeps it, whatever it grew to. Nothing ever shrinks or leaves the list.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace baseline {

class grow_once_pool {
public:
    using buffer = std::unique_ptr<std::vector<std::byte>>;

    buffer get(std::size_t n) {
        buffer b;
        {
            std::lock_guard lock{m_mutex};
            if (!m_free.empty()) {
                b = std::move(m_free.back());
                m_free.pop_back();
            }
        }
        if (!b) b = std::make_unique<std::vector<std::byte>>();
        b->resize(n); // grows when needed; a smaller request keeps the old capacity
        return b;
    }

    void put(buffer b) {
        std::lock_guard lock{m_mutex};
        m_free.push_back(std::move(b));
    }

    /// Capacity held by idle buffers.
    std::size_t idle_capacity() {
        std::lock_guard lock{m_mutex};
        std::size_t sum = 0;
        for (const auto& b : m_free) sum += b->capacity();
        return sum;
    }

private:
    std::mutex m_mutex;
    std::vector<buffer> m_free;
};

} // namespace baseline
