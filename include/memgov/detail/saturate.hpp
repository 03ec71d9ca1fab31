// SPDX-License-Identifier: MIT
#pragma once

// Saturating arithmetic for configured numbers: every conversion of a double to an integer and
// every time computed from a configured duration goes through here, so a "huge" value that
// passed validation cannot overflow later (signed overflow and out-of-range float-to-integer
// conversions are undefined behaviour).

#include <memgov/clock.hpp>
#include <memgov/config.hpp>

#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

MEMGOV_NAMESPACE_BEGIN

/// The longest period any configured duration may have, other than the `never` value of the
/// fields that document one: a year. Longer periods are rejected at construction, so the
/// arithmetic that uses them (now + period, period × factor) always fits.
inline constexpr duration longest_period = std::chrono::hours{24 * 366};

namespace detail {

/// `v` converted to the integer type `To`, saturated to its range; NaN gives 0.
/// Thread safety: pure. Complexity: O(1).
template <std::integral To>
[[nodiscard]] constexpr To saturating_cast(double v) noexcept {
    if (!(v == v)) return To{0}; // NaN
    // 2^digits is exact as a double; every double below it converts exactly.
    constexpr double top = static_cast<double>(std::uint64_t{1} << (std::numeric_limits<To>::digits - 1)) * 2.0;
    if (v >= top) return std::numeric_limits<To>::max();
    if constexpr (std::is_signed_v<To>) {
        if (v <= -top) return std::numeric_limits<To>::min();
    } else {
        if (v <= 0.0) return To{0};
    }
    return static_cast<To>(v);
}

/// `v` converted to `To`, saturated to its range. Thread safety: pure. Complexity: O(1).
template <std::integral To, std::integral From>
[[nodiscard]] constexpr To saturating_cast(From v) noexcept {
    if (std::cmp_less(v, std::numeric_limits<To>::min())) return std::numeric_limits<To>::min();
    if (std::cmp_greater(v, std::numeric_limits<To>::max())) return std::numeric_limits<To>::max();
    return static_cast<To>(v);
}

/// `a + b` saturated to the range of `std::int64_t`. Thread safety: pure. Complexity: O(1).
[[nodiscard]] constexpr std::int64_t saturating_add(std::int64_t a, std::int64_t b) noexcept {
    std::int64_t r = 0;
    if (__builtin_add_overflow(a, b, &r)) {
        return b > 0 ? std::numeric_limits<std::int64_t>::max() : std::numeric_limits<std::int64_t>::min();
    }
    return r;
}

/// `t + d` saturated to the clock's range. Thread safety: pure. Complexity: O(1).
[[nodiscard]] constexpr time_point saturating_add(time_point t, duration d) noexcept {
    return time_point{duration{saturating_add(t.time_since_epoch().count(), d.count())}};
}

/// `t − d` saturated to the clock's range. Thread safety: pure. Complexity: O(1).
[[nodiscard]] constexpr time_point saturating_sub(time_point t, duration d) noexcept {
    const std::int64_t c = d.count();
    if (c == std::numeric_limits<std::int64_t>::min()) return time_point::max();
    return saturating_add(t, duration{-c});
}

/// `a − b` as a duration, saturated to its range. Thread safety: pure. Complexity: O(1).
[[nodiscard]] constexpr duration saturating_diff(time_point a, time_point b) noexcept {
    std::int64_t r = 0;
    const std::int64_t x = a.time_since_epoch().count();
    const std::int64_t y = b.time_since_epoch().count();
    if (__builtin_sub_overflow(x, y, &r)) {
        return x > y ? duration::max() : duration::min();
    }
    return duration{r};
}

/// `d × f` saturated to the duration's range; NaN gives zero. Thread safety: pure.
[[nodiscard]] inline duration saturating_mul(duration d, double f) noexcept {
    return duration{saturating_cast<std::int64_t>(static_cast<double>(d.count()) * f)};
}

} // namespace detail

MEMGOV_NAMESPACE_END
