// SPDX-License-Identifier: MIT
// libFuzzer target: /proc/self/mountinfo parsing and octal unescaping.
// Built and run by scripts/fuzz.sh (ctest label "fuzz").
#include <memgov/detail/cgroup_parse.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text{reinterpret_cast<const char*>(data), size};
    const auto mi = memgov::detail::cg_parse_mountinfo(text);
    if (mi.malformed_lines > mi.lines) __builtin_trap();
    if (mi.mounts.size() > mi.lines) __builtin_trap();
    for (const auto& m : mi.mounts) {
        // Only cgroup mounts are kept, with absolute root and mount point.
        if (m.fstype != "cgroup" && m.fstype != "cgroup2") __builtin_trap();
        if (m.root.empty() || m.root.front() != '/') __builtin_trap();
        if (m.mount_point.empty() || m.mount_point.front() != '/') __builtin_trap();
        if (m.v2 && m.v1_memory) __builtin_trap();
        // A relative placement never contains "..", "." or empty components.
        if (const auto rel = memgov::detail::cg_relative_path(m.root, m.mount_point)) {
            std::string_view r = *rel;
            while (!r.empty()) {
                const std::size_t slash = r.find('/');
                const std::string_view c = r.substr(0, slash);
                if (c.empty() || c == "." || c == "..") __builtin_trap();
                if (slash == std::string_view::npos) break;
                r.remove_prefix(slash + 1);
            }
        }
    }
    const std::string un = memgov::detail::cg_unescape_octal(text);
    if (un.size() > text.size()) __builtin_trap();
    return 0;
}
