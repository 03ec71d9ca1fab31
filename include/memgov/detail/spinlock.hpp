// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Spin-waiting: `cpu_relax` (one pause of a spin loop), `spin_backoff` (bounded exponential
/// pauses, then yielding) and `spinlock` (a test-and-test-and-set lock built on them), for
/// critical sections of at most a few hundred nanoseconds that never block.

#include <memgov/config.hpp>

#include <atomic>
#include <cstdint>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

MEMGOV_NAMESPACE_BEGIN
namespace detail {

/// Tells the core the caller is spinning (x86 `pause`, ARM `yield`), which frees issue slots
/// for a sibling hyperthread and slows the loop down; elsewhere it does nothing.
/// Thread safety: pure. Complexity: O(1).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

/// The wait between two looks at a contended word: 1, 2, 4 ... 64 pauses (127 in all), then
/// a `std::this_thread::yield()` per wait, so a waiter whose holder was preempted gives the
/// core back instead of burning its time slice. One object per wait; start a new one for the
/// next wait. Thread safety: one thread. Complexity: O(1) per call (at most 64 pauses).
class spin_backoff {
public:
    /// Waits once, longer than the previous time, until the pauses reach their bound.
    void pause() noexcept {
        if (m_pauses <= max_pauses) {
            for (unsigned i = 0; i < m_pauses; ++i) cpu_relax();
            m_pauses *= 2;
        } else {
            std::this_thread::yield();
        }
    }

private:
    static constexpr unsigned max_pauses = 64;
    unsigned m_pauses = 1;
};

/// A test-and-test-and-set spinlock (BasicLockable and Lockable). `lock` is one exchange when
/// the lock is free; a waiter spins on a plain load with `spin_backoff` and retries the
/// exchange only when the lock looks free, out of line. `unlock` is a plain release store (no
/// locked instruction). One 4-byte word, so it fits beside the fields it guards on their line.
/// Thread safety: every member from any thread. Complexity: O(1) uncontended.
class spinlock {
public:
    spinlock() noexcept = default;
    spinlock(const spinlock&) = delete;
    spinlock& operator=(const spinlock&) = delete;

    /// Takes the lock if it is free; never waits.
    [[nodiscard]] bool try_lock() noexcept {
        return m_locked.load(std::memory_order_relaxed) == 0 && m_locked.exchange(1, std::memory_order_acquire) == 0;
    }
    /// Takes the lock, waiting for it as long as it takes.
    void lock() noexcept {
        if (MEMGOV_LIKELY(m_locked.exchange(1, std::memory_order_acquire) == 0)) return;
        lock_slow();
    }
    /// Gives the lock back (the caller holds it).
    void unlock() noexcept { m_locked.store(0, std::memory_order_release); }

private:
    MEMGOV_NOINLINE void lock_slow() noexcept {
        spin_backoff backoff;
        for (;;) {
            while (m_locked.load(std::memory_order_relaxed) != 0) backoff.pause();
            if (m_locked.exchange(1, std::memory_order_acquire) == 0) return;
        }
    }

    std::atomic<std::uint32_t> m_locked{0};
};

} // namespace detail
MEMGOV_NAMESPACE_END
