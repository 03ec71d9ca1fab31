// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// {fmt} support, optional: include this header where you log with {fmt} (9 or later) and
/// link `fmt::fmt`. Nothing else in memgov needs {fmt}, and `memgov.hpp` does not include it.
///
/// - Every memgov enumeration that has a `to_string` formats as that name, and takes the
///   format spec of a string: `fmt::format("{:>9}", pressure_level::high)` is `"     high"`.
/// - `health_summary` formats as one logfmt line, for logs and health endpoints:
///   `level=high ratio=0.812 estimate_bytes=871... limit_bytes=1073741824 headroom_bytes=41...
///   growth_bytes_per_second=1048576 time_to_limit_s=12.500 rejections_last_minute=3
///   evictions_last_minute=40 reuse.pools=0.900`. `time_to_limit_s` is `none` when usage is
///   not rising toward the limit; the reuse rates follow, one per reclaimer that reports one;
///   a blind monitor adds `blind=true blind_reason="..."`. It takes no format spec.

#include <memgov/cgroup.hpp>
#include <memgov/config.hpp>
#include <memgov/evictor.hpp>
#include <memgov/governor.hpp>
#include <memgov/pressure_level.hpp>
#include <memgov/pressure_monitor.hpp>
#include <memgov/session_map.hpp>
#include <memgov/sliding_window.hpp>

#include <fmt/format.h>

#include <chrono>
#include <string_view>
#include <type_traits>

MEMGOV_NAMESPACE_BEGIN
namespace detail {
template <class E, class... Es>
inline constexpr bool fmt_one_of = (std::is_same_v<E, Es> || ...);

// The enumerations `fmt.hpp` formats: those with a `to_string`.
template <class E>
concept fmt_named_enum =
    fmt_one_of<E, pressure_level, cgroup_mode, memory_controller, limit_source, usage_source, pressure_cause,
               reclaim_action, admit_kind, admit_reason, evict_reason, grant_result>;
} // namespace detail
MEMGOV_NAMESPACE_END

/// Formats a memgov enumeration as its `to_string` name; accepts a string's format spec.
template <memgov::detail::fmt_named_enum E>
struct fmt::formatter<E> : fmt::formatter<fmt::string_view> {
    template <class FormatContext>
    auto format(E e, FormatContext& ctx) const -> decltype(ctx.out()) {
        const std::string_view name = memgov::to_string(e);
        return fmt::formatter<fmt::string_view>::format(fmt::string_view{name.data(), name.size()}, ctx);
    }
};

/// Formats a `memgov::health_summary` as one logfmt line (see the file comment).
template <>
struct fmt::formatter<memgov::health_summary> {
    constexpr auto parse(fmt::format_parse_context& ctx) -> decltype(ctx.begin()) {
        const auto it = ctx.begin();
        if (it != ctx.end() && *it != '}') {
            throw fmt::format_error{"memgov::health_summary takes no format spec"};
        }
        return it;
    }

    template <class FormatContext>
    auto format(const memgov::health_summary& h, FormatContext& ctx) const -> decltype(ctx.out()) {
        auto out = fmt::format_to(ctx.out(),
                                  "level={} ratio={:.3f} estimate_bytes={} limit_bytes={} headroom_bytes={} "
                                  "growth_bytes_per_second={:.0f} time_to_limit_s=",
                                  h.level, h.ratio, h.estimate_bytes, h.limit_bytes, h.headroom_bytes,
                                  h.growth_bytes_per_second);
        if (h.time_to_limit) {
            out = fmt::format_to(out, "{:.3f}", std::chrono::duration<double>(*h.time_to_limit).count());
        } else {
            out = fmt::format_to(out, "none");
        }
        out = fmt::format_to(out, " rejections_last_minute={} evictions_last_minute={}", h.rejections_last_minute,
                             h.evictions_last_minute);
        for (const auto& r : h.reuse_rates) out = fmt::format_to(out, " reuse.{}={:.3f}", r.name, r.reuse_rate);
        if (h.blind) out = fmt::format_to(out, " blind=true blind_reason={:?}", h.blind_reason);
        return out;
    }
};
