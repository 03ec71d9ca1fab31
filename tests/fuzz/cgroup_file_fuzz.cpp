// SPDX-License-Identifier: MIT
// libFuzzer target: /proc/self/cgroup parsing, path placement and limit-file values.
// Built and run by scripts/fuzz.sh (ctest label "fuzz").
#include <memgov/detail/cgroup_numbers.hpp>
#include <memgov/detail/cgroup_parse.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace memgov::detail;
    const std::string_view text{reinterpret_cast<const char*>(data), size};
    const cg_membership m = cg_parse_proc_cgroup(text);
    if (m.malformed_lines > m.lines) __builtin_trap();
    if (m.v2 && (m.v2->empty() || m.v2->front() != '/')) __builtin_trap();
    if (m.v1_memory && (m.v1_memory->empty() || m.v1_memory->front() != '/')) __builtin_trap();
    // Place the found paths below a root taken from the input's first line.
    const std::string_view first = text.substr(0, text.find('\n'));
    for (const auto* p : {&m.v2, &m.v1_memory}) {
        if (!*p) continue;
        if (const auto rel = cg_relative_path(first, **p)) {
            if (!rel->empty() && (rel->front() == '/' || rel->back() == '/')) __builtin_trap();
        }
        (void)cg_relative_path(**p, first);
    }
    // The same bytes as a limit file.
    const cg_limit_value v = cg_parse_limit(text);
    if (v.kind == cg_limit_kind::max && cg_trim(text) != "max") __builtin_trap();
    if (v.kind == cg_limit_kind::value && !cg_parse_u64(text)) __builtin_trap();
    if (v.kind == cg_limit_kind::value) {
        // Plausibility: nothing at or above 2^62, nothing above 4 x MemTotal, no overflow.
        for (const std::uint64_t physical : {std::uint64_t{0}, v.bytes / 4, v.bytes, ~std::uint64_t{0}}) {
            const bool ok = cg_is_plausible_bytes(v.bytes, physical);
            if (ok && v.bytes >= cg_sentinel_floor) __builtin_trap();
            if (ok && physical != 0 && physical < cg_sentinel_floor / 4 && v.bytes > physical * 4) __builtin_trap();
        }
    }
    // A line whose trimmed id is 0 and whose trimmed controllers are empty is the v2 line: if
    // the first line is one, it is found.
    {
        std::string_view line = first;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        const std::size_t c1 = line.find(':');
        const std::size_t c2 = c1 == std::string_view::npos ? c1 : line.find(':', c1 + 1);
        if (c2 != std::string_view::npos) {
            const auto id = cg_parse_u64(line.substr(0, c1));
            const std::string_view path = line.substr(c2 + 1);
            if (id && *id == 0 && cg_trim(line.substr(c1 + 1, c2 - c1 - 1)).empty() && !path.empty() &&
                path.front() == '/' && (!m.v2 || *m.v2 != path))
                __builtin_trap();
        }
    }
    (void)cg_parse_size(text);
    return 0;
}
