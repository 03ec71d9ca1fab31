// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// A mutex that knows which thread holds it, so a thread that asks for it again (from inside a
/// callback it runs while holding it) can be told so instead of deadlocking.

#include <memgov/config.hpp>

#include <atomic>
#include <mutex>
#include <thread>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

// Used for the long, callback-running jobs of memgov's parts (a session map's sweep and its
// pressure eviction, the governor's poll): a callback that calls back into the same job on the
// same thread gets "already yours" rather than a self-deadlock.
class owned_mutex {
public:
    // Takes the mutex unless the calling thread already holds it; then it is false and takes
    // nothing.
    class guard {
    public:
        explicit guard(owned_mutex& m) {
            if (m.m_owner.load(std::memory_order_relaxed) == std::this_thread::get_id()) return;
            m.m_mutex.lock();
            m.m_owner.store(std::this_thread::get_id(), std::memory_order_relaxed);
            m_held = &m;
        }
        guard(const guard&) = delete;
        guard& operator=(const guard&) = delete;
        ~guard() {
            if (m_held == nullptr) return;
            m_held->m_owner.store(std::thread::id{}, std::memory_order_relaxed);
            m_held->m_mutex.unlock();
        }
        // False when the calling thread already held the mutex.
        explicit operator bool() const noexcept { return m_held != nullptr; }

    private:
        owned_mutex* m_held = nullptr;
    };

private:
    std::mutex m_mutex;
    // Written only by the holder, so a thread reads its own id here only while it holds.
    std::atomic<std::thread::id> m_owner{};
};

} // namespace detail
MEMGOV_NAMESPACE_END
