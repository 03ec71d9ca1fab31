// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The pressure levels that every memgov component speaks: the monitor produces them, pools
/// and maps react to them, the evictor maps them to actions.

#include <memgov/config.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

MEMGOV_NAMESPACE_BEGIN

/// How close the process is to its memory limit, from calm to about to be killed.
/// The numeric order is meaningful: a higher value is more pressure.
enum class pressure_level : std::uint8_t {
    normal = 0,   ///< Plenty of headroom: pools may keep their full caps.
    elevated = 1, ///< Trim idle capacity, sweep orphans, give freed heap back.
    high = 2,     ///< Trim harder; caps shrink further.
    critical = 3, ///< The red line: admission closes, old and oversized sessions go.
    emergency = 4 ///< Evict until back under the red line; refuse all new work.
};

/// Number of distinct levels.
inline constexpr std::size_t pressure_level_count = 5;

/// The level's name in lower case ("normal" ... "emergency").
/// Thread safety: pure. Complexity: O(1).
[[nodiscard]] constexpr std::string_view to_string(pressure_level l) noexcept {
    switch (l) {
    case pressure_level::normal:
        return "normal";
    case pressure_level::elevated:
        return "elevated";
    case pressure_level::high:
        return "high";
    case pressure_level::critical:
        return "critical";
    case pressure_level::emergency:
        return "emergency";
    }
    return "unknown";
}

/// The level as an index in [0, pressure_level_count).
[[nodiscard]] constexpr std::size_t to_index(pressure_level l) noexcept { return static_cast<std::size_t>(l); }

/// `l`, or `emergency` for a value past it (an enum value no level has), so per-level tables
/// indexed by `to_index` are never overrun. The evictor and the pools pass every level they are
/// given at run time through it. Thread safety: pure. Complexity: O(1).
[[nodiscard]] constexpr pressure_level clamp_level(pressure_level l) noexcept {
    return l > pressure_level::emergency ? pressure_level::emergency : l;
}

MEMGOV_NAMESPACE_END
