// SPDX-License-Identifier: MIT
#pragma once

// Helpers for session_map tests: an eviction recorder and a move-only value that knows
// whether it is alive, so a test can tell that on_evict saw the value before destruction.

#include <memgov/session_map.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace memgov_test {

// Records every on_evict call. Thread-safe.
template <class Key>
class evict_recorder {
public:
    struct record {
        Key key;
        memgov::evict_reason reason;
    };

    void add(const Key& k, memgov::evict_reason r) {
        std::lock_guard lock{m_mutex};
        m_records.push_back({k, r});
    }
    [[nodiscard]] std::vector<record> records() const {
        std::lock_guard lock{m_mutex};
        return m_records;
    }
    [[nodiscard]] std::size_t count() const {
        std::lock_guard lock{m_mutex};
        return m_records.size();
    }
    [[nodiscard]] std::size_t count(memgov::evict_reason r) const {
        std::lock_guard lock{m_mutex};
        std::size_t n = 0;
        for (const auto& rec : m_records) n += rec.reason == r ? 1 : 0;
        return n;
    }
    [[nodiscard]] std::size_t count(const Key& k) const {
        std::lock_guard lock{m_mutex};
        std::size_t n = 0;
        for (const auto& rec : m_records) n += rec.key == k ? 1 : 0;
        return n;
    }

private:
    mutable std::mutex m_mutex;
    std::vector<record> m_records;
};

// A move-only session value: a heap-held payload (like a window of pooled buffers) plus a
// counter of live instances, so tests can check that nothing leaks or is destroyed twice.
struct tracked_value {
    static inline std::atomic<std::int64_t> live{0};

    std::unique_ptr<std::vector<std::uint8_t>> payload;
    std::int64_t counter = 0;
    bool inside = false; // set while a callback runs on it

    tracked_value() : payload{std::make_unique<std::vector<std::uint8_t>>(16)} { live.fetch_add(1); }
    explicit tracked_value(std::int64_t c) : tracked_value() { counter = c; }
    tracked_value(tracked_value&& o) noexcept : payload{std::move(o.payload)}, counter{o.counter}, inside{o.inside} {
        live.fetch_add(1);
    }
    tracked_value& operator=(tracked_value&& o) noexcept {
        payload = std::move(o.payload);
        counter = o.counter;
        inside = o.inside;
        return *this;
    }
    tracked_value(const tracked_value&) = delete;
    tracked_value& operator=(const tracked_value&) = delete;
    ~tracked_value() { live.fetch_sub(1); }
};

} // namespace memgov_test
