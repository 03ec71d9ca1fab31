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
    (void)cg_parse_size(text);
    return 0;
}
