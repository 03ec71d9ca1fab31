// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Pressure stall information (PSI): the figures type (public, re-exported by
/// `memgov/cgroup.hpp`) and the parser for `memory.pressure` and `/proc/pressure/memory`.

#include <memgov/config.hpp>
#include <memgov/detail/cgroup_numbers.hpp>
#include <memgov/detail/cgroup_parse.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

MEMGOV_NAMESPACE_BEGIN

/// One PSI line: the share of time tasks were stalled on memory, averaged over 10, 60 and
/// 300 seconds (percent, 0..100), and the total stall time in microseconds (monotonic).
struct psi_line {
    double avg10 = 0;           ///< percent over the last 10 s
    double avg60 = 0;           ///< percent over the last 60 s
    double avg300 = 0;          ///< percent over the last 300 s
    std::uint64_t total_us = 0; ///< total stall time, microseconds, since boot
};

/// A memory PSI file: "some" (at least one task stalled) and "full" (all non-idle tasks stalled).
struct psi_figures {
    psi_line some;         ///< the "some" line
    psi_line full;         ///< the "full" line (zeros when `has_full` is false)
    bool has_full = false; ///< the file had a valid "full" line
};

namespace detail {

/// Parses one PSI line's fields after its "some"/"full" tag: `avg10=.. avg60=.. avg300=..
/// total=..`, keys by name in any order; unknown keys are ignored. All four must be present.
[[nodiscard]] inline std::optional<psi_line> psi_parse_fields(std::string_view rest) noexcept {
    psi_line out;
    unsigned seen = 0;
    for (;;) {
        const std::string_view f = cg_next_field(rest);
        if (f.empty()) break;
        const std::size_t eq = f.find('=');
        if (eq == std::string_view::npos) return std::nullopt;
        const std::string_view k = f.substr(0, eq);
        const std::string_view v = f.substr(eq + 1);
        if (k == "total") {
            const auto t = cg_parse_u64(v);
            if (!t) return std::nullopt;
            out.total_us = *t;
            seen |= 8U;
            continue;
        }
        double* slot = nullptr;
        unsigned bit = 0;
        if (k == "avg10")
            slot = &out.avg10, bit = 1U;
        else if (k == "avg60")
            slot = &out.avg60, bit = 2U;
        else if (k == "avg300")
            slot = &out.avg300, bit = 4U;
        if (slot == nullptr) continue;
        const auto d = cg_parse_decimal(v);
        if (!d) return std::nullopt;
        *slot = *d;
        seen |= bit;
    }
    if (seen != 15U) return std::nullopt;
    return out;
}

/// Parses a memory PSI file. The "some" line is required; a "full" line is used when valid.
[[nodiscard]] inline std::optional<psi_figures> psi_parse(std::string_view text) noexcept {
    psi_figures out;
    bool has_some = false;
    bool bad = false;
    cg_for_each_line(text, [&](std::string_view line) {
        std::string_view rest = line;
        const std::string_view tag = cg_next_field(rest);
        if (tag == "some" && !has_some) {
            if (const auto l = psi_parse_fields(rest)) {
                out.some = *l;
                has_some = true;
            } else {
                bad = true;
            }
        } else if (tag == "full" && !out.has_full) {
            if (const auto l = psi_parse_fields(rest)) {
                out.full = *l;
                out.has_full = true;
            }
        }
    });
    if (!has_some || bad) return std::nullopt;
    return out;
}

} // namespace detail
MEMGOV_NAMESPACE_END
