// SPDX-License-Identifier: MIT
#pragma once

// An upstream memory resource for pool tests that counts the bytes out and every call made
// after `close()` (the point where a real upstream would be gone). It stays alive itself, so a
// late call is counted, not a crash.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory_resource>

namespace memgov_test {

class watched_resource final : public std::pmr::memory_resource {
public:
    void close() noexcept { m_closed.store(true); }
    [[nodiscard]] std::int64_t outstanding() const noexcept { return m_outstanding.load(); }
    [[nodiscard]] std::int64_t late_calls() const noexcept { return m_late.load(); }

private:
    void* do_allocate(std::size_t n, std::size_t align) override {
        if (m_closed.load()) m_late.fetch_add(1);
        void* p = std::pmr::new_delete_resource()->allocate(n, align);
        m_outstanding.fetch_add(static_cast<std::int64_t>(n));
        return p;
    }
    void do_deallocate(void* p, std::size_t n, std::size_t align) override {
        if (m_closed.load()) m_late.fetch_add(1);
        m_outstanding.fetch_sub(static_cast<std::int64_t>(n));
        std::pmr::new_delete_resource()->deallocate(p, n, align);
    }
    [[nodiscard]] bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
    std::atomic<bool> m_closed{false};
    std::atomic<std::int64_t> m_outstanding{0};
    std::atomic<std::int64_t> m_late{0};
};

} // namespace memgov_test
