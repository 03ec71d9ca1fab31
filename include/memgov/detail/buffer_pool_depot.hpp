// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The shared, byte-capped store of idle buffers for one size class, guarded by a `spinlock`
/// (its critical sections are a few dozen instructions). Buffers are kept in arrival order in
/// a ring: reuse takes the newest (its memory is the most likely to be warm), trim takes the
/// oldest. Each entry carries the time it arrived, which is what "oldest first" compares
/// across classes.

#include <memgov/clock.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/spinlock.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

/// One idle buffer in a depot and the time it arrived there.
struct buffer_pool_depot_entry {
    std::byte* ptr;
    time_point since;
};

/// The depot of one size class. Every member is safe to call from any thread.
class alignas(cache_line_size) buffer_pool_depot {
public:
    buffer_pool_depot() = default;
    buffer_pool_depot(const buffer_pool_depot&) = delete;
    buffer_pool_depot& operator=(const buffer_pool_depot&) = delete;

    /// Sizes the ring for at most `max_count` buffers (the cap at the lowest pressure; the
    /// pool's validation keeps it at most `buffer_pool_config::max_depot_buffers`, so the ring
    /// reserves at most 64 MiB). Not thread-safe; called once before use.
    /// Throws `std::bad_alloc`.
    void init(std::size_t max_count) {
        // for_overwrite: the ring's pages are touched only as buffers arrive.
        if (max_count > 0) m_ring = std::make_unique_for_overwrite<buffer_pool_depot_entry[]>(max_count);
        m_ring_size = max_count;
        m_cap = max_count;
        m_cap_mirror.store(max_count, std::memory_order_relaxed);
    }

    /// Buffers held now (a relaxed read; exact when no other thread moves buffers).
    [[nodiscard]] std::size_t count() const noexcept { return m_count_mirror.load(std::memory_order_relaxed); }
    /// The current cap in buffers.
    [[nodiscard]] std::size_t cap() const noexcept { return m_cap_mirror.load(std::memory_order_relaxed); }
    /// The largest cap this depot can take.
    [[nodiscard]] std::size_t max_cap() const noexcept { return m_ring_size; }

    /// Sets the cap (clamped to the ring size). Excess buffers stay until `pop_excess`.
    void set_cap(std::size_t cap) noexcept {
        std::lock_guard lock{m_lock};
        m_cap = std::min(cap, m_ring_size);
        m_cap_mirror.store(m_cap, std::memory_order_relaxed);
    }

    /// Moves up to `max` of the newest buffers into `out`, newest first. Returns how many.
    std::size_t pop_newest(std::byte** out, std::size_t max) noexcept {
        std::lock_guard lock{m_lock};
        const std::size_t k = std::min(max, m_count);
        for (std::size_t i = 0; i < k; ++i) out[i] = m_ring[slot(m_count - 1 - i)].ptr;
        m_count -= k;
        m_count_mirror.store(m_count, std::memory_order_relaxed);
        return k;
    }

    /// Appends the first buffers of `in` (as many as the cap allows), stamped `now`. Returns
    /// how many were taken; the caller frees the rest, `in[taken..n)`.
    std::size_t push(std::byte* const* in, std::size_t n, time_point now) noexcept {
        std::lock_guard lock{m_lock};
        const std::size_t room = m_cap > m_count ? m_cap - m_count : 0;
        const std::size_t k = std::min(n, room);
        for (std::size_t i = 0; i < k; ++i) m_ring[slot(m_count + i)] = {in[i], now};
        m_count += k;
        m_count_mirror.store(m_count, std::memory_order_relaxed);
        return k;
    }

    /// The arrival time of the oldest buffer, if any.
    [[nodiscard]] bool oldest(time_point& out) noexcept {
        std::lock_guard lock{m_lock};
        if (m_count == 0) return false;
        out = m_ring[m_head].since;
        return true;
    }

    /// Moves up to `max` of the oldest buffers that arrived no later than `not_after` into
    /// `out`, oldest first. Returns how many.
    std::size_t pop_oldest(std::byte** out, std::size_t max, time_point not_after) noexcept {
        std::lock_guard lock{m_lock};
        std::size_t k = 0;
        while (k < max && m_count > 0 && m_ring[m_head].since <= not_after) {
            out[k++] = m_ring[m_head].ptr;
            advance_head();
        }
        m_count_mirror.store(m_count, std::memory_order_relaxed);
        return k;
    }

    /// Moves up to `max` of the oldest buffers above the cap into `out`. Returns how many.
    std::size_t pop_excess(std::byte** out, std::size_t max) noexcept {
        std::lock_guard lock{m_lock};
        std::size_t k = 0;
        while (k < max && m_count > m_cap) {
            out[k++] = m_ring[m_head].ptr;
            advance_head();
        }
        m_count_mirror.store(m_count, std::memory_order_relaxed);
        return k;
    }

    /// Counters kept beside the depot (relaxed atomics, updated off the hot path).
    std::atomic<std::uint64_t> trimmed{0};        ///< Buffers freed by trim or a cap cut.
    std::atomic<std::uint64_t> overflow_frees{0}; ///< Released buffers freed: no room.

private:
    std::size_t slot(std::size_t i) const noexcept {
        const std::size_t s = m_head + i;
        return s >= m_ring_size ? s - m_ring_size : s;
    }
    void advance_head() noexcept {
        if (++m_head == m_ring_size) m_head = 0;
        --m_count;
    }

    spinlock m_lock;
    std::unique_ptr<buffer_pool_depot_entry[]> m_ring;
    std::size_t m_ring_size = 0;
    std::size_t m_head = 0;
    std::size_t m_count = 0;
    std::size_t m_cap = 0;
    std::atomic<std::size_t> m_count_mirror{0};
    std::atomic<std::size_t> m_cap_mirror{0};
};

} // namespace detail
MEMGOV_NAMESPACE_END
