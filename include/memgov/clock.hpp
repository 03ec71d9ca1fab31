// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The clock requirement every memgov component uses, the default steady clock and a
/// thread-safe manual clock for tests.
///
/// Components that need time take a `Clock` template parameter (default `steady_clock`) and a
/// clock object in their constructor. Tests pass a `manual_clock`; its copies share one
/// timeline, so the test keeps a copy and advances it while the component reads the same time.
/// Nothing in a test sleeps to make time pass.

#include <memgov/config.hpp>

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>

MEMGOV_NAMESPACE_BEGIN

/// The time point all memgov clocks produce: steady (monotonic), nanosecond resolution.
using time_point = std::chrono::steady_clock::time_point;
/// The duration type that goes with `time_point`.
using duration = std::chrono::steady_clock::duration;

/// A clock memgov can use: a copyable object whose `now()` is `noexcept`, returns a monotonic
/// `memgov::time_point`, and is safe to call from any thread.
template <class C>
concept clock_type = std::copy_constructible<C> && requires(const C& c) {
    { c.now() }
    noexcept->std::same_as<time_point>;
};

/// The default clock: `std::chrono::steady_clock` (CLOCK_MONOTONIC through the vDSO on Linux,
/// no system call).
/// Thread safety: stateless, safe from any thread.
struct steady_clock {
    /// The current time.
    [[nodiscard]] time_point now() const noexcept { return std::chrono::steady_clock::now(); }
};

/// A clock that moves only when told to. Copies share one timeline (the state is held by a
/// shared pointer), so a test keeps one copy and hands another to the component under test.
/// It starts at an arbitrary fixed epoch well after `time_point{}` so that subtracting lifetimes
/// from `now()` never goes below the clock's zero.
/// Thread safety: every member is safe to call concurrently; `now()` is one atomic load.
class manual_clock {
public:
    /// The time a new manual clock starts at: 1'000'000 s after the clock's epoch.
    static constexpr duration start_offset = std::chrono::seconds{1'000'000};

    /// A new, independent timeline at `start_offset`. Throws `std::bad_alloc` only.
    manual_clock() : m_ns{std::make_shared<std::atomic<std::int64_t>>(start_offset.count())} {}

    /// The current time of this timeline.
    [[nodiscard]] time_point now() const noexcept {
        return time_point{duration{m_ns->load(std::memory_order_acquire)}};
    }
    /// Moves time forward by `d`. A negative `d` is ignored: a steady clock never goes back.
    void advance(duration d) noexcept {
        if (d.count() > 0) m_ns->fetch_add(d.count(), std::memory_order_acq_rel);
    }
    /// Sets the time to `t` if `t` is not earlier than now (a steady clock never goes back).
    void set(time_point t) noexcept {
        std::int64_t cur = m_ns->load(std::memory_order_acquire);
        const std::int64_t want = t.time_since_epoch().count();
        while (want > cur && !m_ns->compare_exchange_weak(cur, want, std::memory_order_acq_rel)) {
        }
    }

private:
    std::shared_ptr<std::atomic<std::int64_t>> m_ns;
};

static_assert(clock_type<steady_clock>);
static_assert(clock_type<manual_clock>);

MEMGOV_NAMESPACE_END
