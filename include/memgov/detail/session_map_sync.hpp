// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Locks used by `session_map`: the shard mutex (structure) and the entry state word (pin count,
/// reader/writer lock, dead mark), plus the thread-local record that catches re-entry into an
/// entry the calling thread already holds.

#include <memgov/config.hpp>
#include <memgov/detail/spinlock.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

// The shard mutex: a `spinlock` (test-and-test-and-set, exponential pause backoff, then
// yielding). Shard critical sections are a few hundred nanoseconds and never block, so waiting
// is short; unlocking is a plain release store (no locked instruction), which matters on a
// path that costs about three of them in total. One 4-byte word, so it shares the shard's hot
// cache line with the table fields.
using session_shard_mutex = spinlock;

// RAII for the shard mutex.
class session_shard_guard {
public:
    explicit session_shard_guard(session_shard_mutex& m) noexcept : m_mutex{&m} { m.lock(); }
    session_shard_guard(const session_shard_guard&) = delete;
    session_shard_guard& operator=(const session_shard_guard&) = delete;
    ~session_shard_guard() {
        if (m_mutex != nullptr) m_mutex->unlock();
    }
    void unlock() noexcept {
        m_mutex->unlock();
        m_mutex = nullptr;
    }
    void lock(session_shard_mutex& m) noexcept {
        m.lock();
        m_mutex = &m;
    }

private:
    session_shard_mutex* m_mutex;
};

// The per-entry state word. One 32-bit atomic carries everything the request path needs, so
// pin + lock is one compare-and-swap and unlock + unpin is another:
//   bits  0..15  pins     (threads that found the entry and have not let go yet)
//   bits 16..28  readers  (shared holders; at most 8191: a full count makes the next wait)
//   bit  29      waiters  (someone sleeps on the word: the releaser must notify)
//   bit  30      dead     (unlinked from the map; the last unpin finalizes)
//   bit  31      writer   (exclusive holder)
// Pins only ever grow under the shard lock while the entry is linked, so once the evictor has
// set `dead` under that lock the pin count can only fall, and exactly one party sees it reach
// zero with `dead` set: that party runs the eviction callback and frees the entry.
namespace entry_state {
inline constexpr std::uint32_t pin = 1U;
inline constexpr std::uint32_t pin_mask = 0xFFFFU;
inline constexpr std::uint32_t reader = 1U << 16;
inline constexpr std::uint32_t reader_mask = 0x1FFFU << 16;
inline constexpr std::uint32_t waiters = 1U << 29;
inline constexpr std::uint32_t dead = 1U << 30;
inline constexpr std::uint32_t writer = 1U << 31;

[[nodiscard]] inline constexpr std::uint32_t pins(std::uint32_t s) noexcept { return s & pin_mask; }
// A shared holder may join unless a writer holds the lock or the reader count is full.
[[nodiscard]] inline constexpr bool can_add_reader(std::uint32_t s) noexcept {
    return (s & writer) == 0 && (s & reader_mask) != reader_mask;
}

// Under the shard lock: pin, and take the exclusive lock too when it is free. True when both.
inline bool pin_try_lock_exclusive(std::atomic<std::uint32_t>& w) noexcept {
    std::uint32_t s = w.load(std::memory_order_relaxed);
    if ((s & (writer | reader_mask)) == 0 &&
        w.compare_exchange_strong(s, s + pin + writer, std::memory_order_acquire, std::memory_order_relaxed)) {
        return true;
    }
    w.fetch_add(pin, std::memory_order_relaxed);
    return false;
}

// Under the shard lock: pin, and take a shared lock too when no writer holds it.
inline bool pin_try_lock_shared(std::atomic<std::uint32_t>& w) noexcept {
    std::uint32_t s = w.load(std::memory_order_relaxed);
    if (can_add_reader(s) &&
        w.compare_exchange_strong(s, s + pin + reader, std::memory_order_acquire, std::memory_order_relaxed)) {
        return true;
    }
    w.fetch_add(pin, std::memory_order_relaxed);
    return false;
}

inline bool try_lock_shared(std::atomic<std::uint32_t>& w) noexcept {
    std::uint32_t s = w.load(std::memory_order_relaxed);
    while (can_add_reader(s)) {
        if (w.compare_exchange_weak(s, s + reader, std::memory_order_acquire, std::memory_order_relaxed)) {
            return true;
        }
    }
    return false;
}

// Blocks until `unit` (writer or reader) can be added: spins briefly, then sleeps on the word.
inline MEMGOV_NOINLINE void lock_slow(std::atomic<std::uint32_t>& w, bool exclusive) noexcept {
    const std::uint32_t unit = exclusive ? writer : reader;
    int spins = 0;
    for (;;) {
        std::uint32_t s = w.load(std::memory_order_relaxed);
        if (exclusive ? (s & (writer | reader_mask)) == 0 : can_add_reader(s)) {
            if (w.compare_exchange_weak(s, s + unit, std::memory_order_acquire, std::memory_order_relaxed)) {
                return;
            }
            continue;
        }
        if (spins < 128) {
            ++spins;
            cpu_relax();
            continue;
        }
        if ((s & waiters) == 0) {
            if (!w.compare_exchange_weak(s, s | waiters, std::memory_order_relaxed, std::memory_order_relaxed)) {
                continue;
            }
            s |= waiters;
        }
        w.wait(s, std::memory_order_relaxed);
    }
}

// Subtracts `units` (lock unit and/or pin) and clears `waiters` in the same step, so nothing
// touches the word after a possible final unpin; returns the previous value. Waking sleepers
// afterwards is safe even if the entry was freed and reused meanwhile: the storage stays
// allocated for the map's lifetime, and a spurious wake only makes a waiter re-check.
inline std::uint32_t drop_units(std::atomic<std::uint32_t>& w, std::uint32_t units) noexcept {
    std::uint32_t s = w.load(std::memory_order_relaxed);
    while (!w.compare_exchange_weak(s, (s - units) & ~waiters, std::memory_order_acq_rel, std::memory_order_relaxed)) {
    }
    if (MEMGOV_UNLIKELY((s & waiters) != 0)) w.notify_all();
    return s;
}

} // namespace entry_state

// Entries the calling thread holds inside `with`/`with_shared`/`inspect`, innermost last. Used
// only to detect re-entry into the same key, which would otherwise self-deadlock. Nesting deeper
// than the array is not tracked (and not detected). Trivially constructible and destructible,
// so reaching it costs no TLS guard.
inline constexpr std::size_t session_held_depth = 8;
struct session_held_stack {
    const void* entries[session_held_depth];
    std::size_t depth;
};
inline thread_local session_held_stack t_session_held{};

[[nodiscard]] inline bool session_is_held(const void* entry) noexcept {
    const session_held_stack& h = t_session_held;
    const std::size_t n = h.depth < session_held_depth ? h.depth : session_held_depth;
    for (std::size_t i = 0; i < n; ++i) {
        if (h.entries[i] == entry) return true;
    }
    return false;
}

inline void session_push_held(const void* entry) noexcept {
    session_held_stack& h = t_session_held;
    if (h.depth < session_held_depth) h.entries[h.depth] = entry;
    ++h.depth;
}

inline void session_pop_held() noexcept { --t_session_held.depth; }

} // namespace detail
MEMGOV_NAMESPACE_END
