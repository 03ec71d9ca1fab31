// SPDX-License-Identifier: MIT
// libFuzzer target: memory.stat / memory.events / oom_control key lookup, /proc/meminfo and
// /proc/self/statm. Built and run by scripts/fuzz.sh (ctest label "fuzz").
#include <memgov/detail/cgroup_parse.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace memgov::detail;
    const std::string_view text{reinterpret_cast<const char*>(data), size};
    for (const std::string_view key :
         {"inactive_file", "total_inactive_file", "hierarchical_memory_limit", "oom_kill", "anon", ""}) {
        const cg_lookup l = cg_find_key(text, key);
        if (l.status == cg_lookup::ok && key.empty()) __builtin_trap(); // no empty key exists
        if (l.status != cg_lookup::ok && l.value != 0) __builtin_trap();
    }
    const cg_lookup mt = cg_find_meminfo(text, "MemTotal");
    if (mt.status == cg_lookup::ok && text.find("MemTotal:") == std::string_view::npos) __builtin_trap();
    // The resident set in bytes never wraps and is never at or above 2^62.
    const auto st = cg_parse_statm(text);
    for (const std::uint64_t page : {std::uint64_t{4096}, std::uint64_t{65536}}) {
        const auto bytes = cg_statm_resident_bytes(text, page);
        if (bytes && !st) __builtin_trap();
        if (bytes && (*bytes >= (std::uint64_t{1} << 62) || *bytes / page != st->resident)) __builtin_trap();
        if (!bytes && st && st->resident < (std::uint64_t{1} << 40)) __builtin_trap(); // 4 PiB at most refused
    }
    if (mt.status == cg_lookup::ok && cg_is_plausible_bytes(mt.value, 0) && mt.value >= (std::uint64_t{1} << 62))
        __builtin_trap();
    std::size_t lines = 0;
    cg_for_each_line(text, [&](std::string_view line) {
        if (line.find('\n') != std::string_view::npos) __builtin_trap();
        ++lines;
    });
    if (lines > size + 1) __builtin_trap();
    return 0;
}
