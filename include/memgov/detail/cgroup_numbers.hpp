// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Number parsing for the cgroup reader: strict unsigned decimals, the cgroup "max" keyword,
/// decimal fractions (PSI averages) and human sizes ("512M", "2GiB") for the environment
/// override. Nothing here allocates or throws; every parser reports failure by its return value.

#include <memgov/config.hpp>

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <system_error>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

/// Space, tab, CR and LF.
[[nodiscard]] constexpr bool cg_is_space(char c) noexcept {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/// `s` without leading and trailing white space.
[[nodiscard]] constexpr std::string_view cg_trim(std::string_view s) noexcept {
    while (!s.empty() && cg_is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && cg_is_space(s.back())) s.remove_suffix(1);
    return s;
}

/// A strict unsigned decimal: digits only (after trimming white space), no sign, no overflow.
[[nodiscard]] inline std::optional<std::uint64_t> cg_parse_u64(std::string_view s) noexcept {
    s = cg_trim(s);
    if (s.empty()) return std::nullopt;
    std::uint64_t v = 0;
    const char* end = s.data() + s.size();
    const auto [ptr, ec] = std::from_chars(s.data(), end, v, 10);
    if (ec != std::errc{} || ptr != end) return std::nullopt;
    return v;
}

/// What a limit file says.
enum class cg_limit_kind : std::uint8_t {
    value,    ///< a number of bytes (possibly the v1 "unlimited" sentinel; see `cg_is_unlimited`)
    max,      ///< the literal "max" (v2): no limit at this level
    malformed ///< anything else
};

/// A parsed limit file.
struct cg_limit_value {
    cg_limit_kind kind = cg_limit_kind::malformed;
    std::uint64_t bytes = 0;
};

/// Parses the content of `memory.max`, `memory.high` or `memory.limit_in_bytes`.
[[nodiscard]] inline cg_limit_value cg_parse_limit(std::string_view s) noexcept {
    s = cg_trim(s);
    if (s == "max") return {cg_limit_kind::max, 0};
    if (const auto v = cg_parse_u64(s)) return {cg_limit_kind::value, *v};
    return {};
}

/// Any value at or above this is "unlimited" whatever the physical memory: the v1 sentinel is
/// LONG_MAX rounded down to a page (9223372036854771712 with 4 KiB pages), and every page size
/// keeps it above 2^62.
inline constexpr std::uint64_t cg_sentinel_floor = std::uint64_t{1} << 62;

/// True if a limit of `bytes` cannot bind: it is the v1 sentinel or above the physical memory
/// (`physical` = 0 when unknown). A limit *equal* to MemTotal binds: under LXCFS (LXD, some
/// Kubernetes nodes) /proc/meminfo shows the container's limit as MemTotal, and the cgroup's
/// usage, not this process's RSS, is what the kernel compares with it.
[[nodiscard]] constexpr bool cg_is_unlimited(std::uint64_t bytes, std::uint64_t physical) noexcept {
    return bytes >= cg_sentinel_floor || (physical != 0 && bytes > physical);
}

/// How many times the physical memory (MemTotal) a usage may be and still be believed. Under
/// LXCFS MemTotal is the container's limit, and a cgroup whose limit was lowered below its usage
/// stays above it until reclaim or the OOM killer catches up; no machine holds more than a few
/// times what its own MemTotal says.
inline constexpr std::uint64_t cg_plausible_factor = 4;

/// True if `bytes` could be memory in use on this machine: below 2^62 (which no counter of real
/// memory reaches) and, when `physical` (MemTotal) is known, at most `cg_plausible_factor` times
/// it. Usage, RSS, peak and MemTotal itself are checked with it; anything else is rejected with
/// a reason rather than trusted (a wrapped or corrupt counter must not read as "almost empty").
[[nodiscard]] constexpr bool cg_is_plausible_bytes(std::uint64_t bytes, std::uint64_t physical) noexcept {
    if (bytes >= cg_sentinel_floor) return false;
    if (physical == 0) return true;
    const std::uint64_t bound =
        physical >= cg_sentinel_floor / cg_plausible_factor ? cg_sentinel_floor : physical * cg_plausible_factor;
    return bytes <= bound;
}

/// `a * b`, or nullopt when the product does not fit in 64 bits.
[[nodiscard]] constexpr std::optional<std::uint64_t> cg_mul(std::uint64_t a, std::uint64_t b) noexcept {
    if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return std::nullopt;
    return a * b;
}

/// A non-negative decimal such as "12.34" or "0.00" (PSI averages). No exponent, no sign.
[[nodiscard]] inline std::optional<double> cg_parse_decimal(std::string_view s) noexcept {
    s = cg_trim(s);
    if (s.empty()) return std::nullopt;
    for (const char c : s) {
        if (!((c >= '0' && c <= '9') || c == '.')) return std::nullopt;
    }
    double v = 0;
    const char* end = s.data() + s.size();
    const auto [ptr, ec] = std::from_chars(s.data(), end, v, std::chars_format::fixed);
    if (ec != std::errc{} || ptr != end) return std::nullopt;
    return v;
}

/// A size for the environment override: a decimal number of bytes, optionally followed by a
/// binary unit K, M, G or T (case-insensitive, with an optional "i" and/or "B": "512M",
/// "512MiB", "2g", "1073741824", "4096B"). Overflow and anything else is rejected.
[[nodiscard]] inline std::optional<std::uint64_t> cg_parse_size(std::string_view s) noexcept {
    s = cg_trim(s);
    std::size_t digits = 0;
    while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
    if (digits == 0) return std::nullopt;
    const auto number = cg_parse_u64(s.substr(0, digits));
    if (!number) return std::nullopt;
    std::string_view unit = cg_trim(s.substr(digits));
    unsigned shift = 0;
    if (!unit.empty()) {
        switch (unit.front()) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        case 't':
        case 'T':
            shift = 40;
            break;
        case 'b':
        case 'B':
            shift = 0;
            break;
        default:
            return std::nullopt;
        }
        if (shift != 0) {
            unit.remove_prefix(1);
            if (!unit.empty() && (unit.front() == 'i' || unit.front() == 'I')) unit.remove_prefix(1);
        }
        if (!unit.empty() && (unit.front() == 'b' || unit.front() == 'B')) unit.remove_prefix(1);
        if (!unit.empty()) return std::nullopt;
    }
    if (shift != 0 && *number > (std::numeric_limits<std::uint64_t>::max() >> shift)) {
        return std::nullopt;
    }
    return *number << shift;
}

/// `a - b`, or 0 when `b > a`.
[[nodiscard]] constexpr std::uint64_t cg_sub_floor(std::uint64_t a, std::uint64_t b) noexcept {
    return a > b ? a - b : 0;
}

} // namespace detail
MEMGOV_NAMESPACE_END
