// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Parsers for the files the cgroup reader reads: /proc/self/mountinfo, /proc/self/cgroup,
/// flat key-value files (memory.stat, memory.events, memory.oom_control), /proc/meminfo and
/// /proc/self/statm, plus the path arithmetic that places the process inside a mount.
///
/// Every parser takes the whole file as a string_view, never throws anything but
/// `std::bad_alloc`, never reads out of bounds, and reports malformed input by its result. They
/// are the fuzz targets' subjects (tests/fuzz/).

#include <memgov/config.hpp>
#include <memgov/detail/cgroup_numbers.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

/// Calls `fn(line)` for each line of `text` (without the '\n'). A last line without a newline
/// is still a line; an empty text has no lines.
template <class Fn>
void cg_for_each_line(std::string_view text, Fn&& fn) {
    while (!text.empty()) {
        const std::size_t nl = text.find('\n');
        const std::string_view line = text.substr(0, nl);
        fn(line);
        if (nl == std::string_view::npos) break;
        text.remove_prefix(nl + 1);
    }
}

/// Splits off the next white-space separated field of `s` (advancing `s`); empty when none.
[[nodiscard]] inline std::string_view cg_next_field(std::string_view& s) noexcept {
    while (!s.empty() && cg_is_space(s.front())) s.remove_prefix(1);
    std::size_t n = 0;
    while (n < s.size() && !cg_is_space(s[n])) ++n;
    const std::string_view f = s.substr(0, n);
    s.remove_prefix(n);
    return f;
}

/// Undoes the kernel's octal escapes in mountinfo paths ("\040" is a space, "\011" a tab,
/// "\012" a newline, "\134" a backslash). A backslash not followed by three octal digits is kept.
[[nodiscard]] inline std::string cg_unescape_octal(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && s.size() - i >= 4) {
            const char a = s[i + 1], b = s[i + 2], c = s[i + 3];
            if (a >= '0' && a <= '3' && b >= '0' && b <= '7' && c >= '0' && c <= '7') {
                out.push_back(static_cast<char>((a - '0') * 64 + (b - '0') * 8 + (c - '0')));
                i += 3;
                continue;
            }
        }
        out.push_back(s[i]);
    }
    return out;
}

/// True if the comma-separated list `list` contains `token` as a whole element.
[[nodiscard]] inline bool cg_has_token(std::string_view list, std::string_view token) noexcept {
    while (!list.empty()) {
        const std::size_t comma = list.find(',');
        if (list.substr(0, comma) == token) return true;
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
    return false;
}

/// One cgroup mount from /proc/self/mountinfo.
struct cg_mount {
    std::string root;          ///< field 4: the mount's root inside the hierarchy (unescaped)
    std::string mount_point;   ///< field 5: where it is mounted (unescaped)
    std::string fstype;        ///< "cgroup" or "cgroup2"
    std::string super_options; ///< the super options (v1: the controllers, e.g. "rw,memory")
    bool v2 = false;           ///< fstype is cgroup2
    bool v1_memory = false;    ///< fstype is cgroup and "memory" is among the super options
};

/// The cgroup mounts of a mountinfo file.
struct cg_mountinfo {
    std::vector<cg_mount> mounts;    ///< cgroup and cgroup2 mounts, in file order
    std::size_t lines = 0;           ///< lines seen
    std::size_t malformed_lines = 0; ///< lines that are not mountinfo lines
};

/// Parses /proc/self/mountinfo, keeping only cgroup and cgroup2 mounts. The format is
/// `id parent major:minor root mount-point options [optional fields...] - fstype source
/// super-options`: zero or more optional fields end at a lone "-"; super options may contain
/// spaces, so everything after the source is taken as super options.
[[nodiscard]] inline cg_mountinfo cg_parse_mountinfo(std::string_view text) {
    cg_mountinfo out;
    cg_for_each_line(text, [&](std::string_view line) {
        if (cg_trim(line).empty()) return;
        ++out.lines;
        std::string_view rest = line;
        std::string_view f[6];
        for (auto& field : f) field = cg_next_field(rest);
        if (f[5].empty()) {
            ++out.malformed_lines;
            return;
        }
        // Optional fields, up to the separator.
        bool separator = false;
        for (;;) {
            const std::string_view opt = cg_next_field(rest);
            if (opt.empty()) break;
            if (opt == "-") {
                separator = true;
                break;
            }
        }
        const std::string_view fstype = cg_next_field(rest);
        if (!separator || fstype.empty()) {
            ++out.malformed_lines;
            return;
        }
        const std::string_view source = cg_next_field(rest);
        (void)source;
        const std::string_view super = cg_trim(rest);
        const bool v2 = fstype == "cgroup2";
        const bool v1 = fstype == "cgroup";
        if (!v1 && !v2) return;
        if (f[3].empty() || f[3].front() != '/' || f[4].empty() || f[4].front() != '/') {
            ++out.malformed_lines;
            return;
        }
        cg_mount m;
        m.root = cg_unescape_octal(f[3]);
        m.mount_point = cg_unescape_octal(f[4]);
        m.fstype = std::string{fstype};
        m.super_options = std::string{super};
        m.v2 = v2;
        m.v1_memory = v1 && cg_has_token(super, "memory");
        out.mounts.push_back(std::move(m));
    });
    return out;
}

/// The process's place in the hierarchies, from /proc/self/cgroup.
struct cg_membership {
    std::optional<std::string> v1_memory; ///< path in the v1 hierarchy holding "memory"
    std::optional<std::string> v2;        ///< path in the unified (v2) hierarchy ("0::path")
    std::size_t lines = 0;                ///< lines seen
    std::size_t malformed_lines = 0;      ///< lines that are not `id:controllers:path`
};

/// Parses /proc/self/cgroup: lines `hierarchy-id:controller-list:path`. The path may itself
/// contain ':' (only the first two separate). White space around the id and the controller
/// list is ignored (the kernel writes none). v2 is `0::path`; the v1 memory hierarchy is the
/// line whose controller list contains "memory". The first matching line wins.
[[nodiscard]] inline cg_membership cg_parse_proc_cgroup(std::string_view text) {
    cg_membership out;
    cg_for_each_line(text, [&](std::string_view line) {
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (cg_trim(line).empty()) return;
        ++out.lines;
        const std::size_t c1 = line.find(':');
        if (c1 == std::string_view::npos) {
            ++out.malformed_lines;
            return;
        }
        const std::size_t c2 = line.find(':', c1 + 1);
        if (c2 == std::string_view::npos) {
            ++out.malformed_lines;
            return;
        }
        // The id and the controllers are trimmed alike, so the id that parses as a number is
        // the id compared with 0. The path is taken as is: a cgroup name may end in a space.
        const auto id = cg_parse_u64(line.substr(0, c1));
        const std::string_view controllers = cg_trim(line.substr(c1 + 1, c2 - c1 - 1));
        const std::string_view path = line.substr(c2 + 1);
        if (!id || path.empty() || path.front() != '/') {
            ++out.malformed_lines;
            return;
        }
        if (*id == 0 && controllers.empty()) {
            if (!out.v2) out.v2 = std::string{path};
        } else if (cg_has_token(controllers, "memory")) {
            if (!out.v1_memory) out.v1_memory = std::string{path};
        }
    });
    return out;
}

/// Where `cgroup_path` sits below a mount whose root field is `mount_root`: the relative path
/// ("" for the mount's root itself, else "a/b" without leading slash), or nullopt when it
/// escapes the mount (it is not below the root, or either path has a ".." component).
[[nodiscard]] inline std::optional<std::string> cg_relative_path(std::string_view mount_root,
                                                                 std::string_view cgroup_path) {
    auto components = [](std::string_view p, std::vector<std::string_view>& out) {
        while (!p.empty()) {
            const std::size_t slash = p.find('/');
            const std::string_view c = p.substr(0, slash);
            if (c == "..") return false;
            if (!c.empty() && c != ".") out.push_back(c);
            if (slash == std::string_view::npos) break;
            p.remove_prefix(slash + 1);
        }
        return true;
    };
    if (mount_root.empty() || mount_root.front() != '/') return std::nullopt;
    if (cgroup_path.empty() || cgroup_path.front() != '/') return std::nullopt;
    std::vector<std::string_view> root_parts, path_parts;
    if (!components(mount_root, root_parts) || !components(cgroup_path, path_parts)) {
        return std::nullopt;
    }
    if (path_parts.size() < root_parts.size()) return std::nullopt;
    for (std::size_t i = 0; i < root_parts.size(); ++i) {
        if (root_parts[i] != path_parts[i]) return std::nullopt;
    }
    std::string rel;
    for (std::size_t i = root_parts.size(); i < path_parts.size(); ++i) {
        if (!rel.empty()) rel.push_back('/');
        rel.append(path_parts[i]);
    }
    return rel;
}

/// Result of looking a key up in a key-value file.
struct cg_lookup {
    enum status_type : std::uint8_t { missing, malformed, ok };
    status_type status = missing; ///< whether the key was found and its value parsed
    std::uint64_t value = 0;      ///< the value when `status == ok`
    [[nodiscard]] explicit operator bool() const noexcept { return status == ok; }
};

/// Looks up `key` in a flat key-value file (`memory.stat`, `memory.events`,
/// `memory.oom_control`): lines `key value`, in any order, unknown keys ignored. The first line
/// with that key wins.
[[nodiscard]] inline cg_lookup cg_find_key(std::string_view text, std::string_view key) noexcept {
    cg_lookup out;
    bool done = false;
    cg_for_each_line(text, [&](std::string_view line) {
        if (done) return;
        std::string_view rest = line;
        const std::string_view k = cg_next_field(rest);
        if (k != key) return;
        done = true;
        const std::string_view v = cg_next_field(rest);
        const auto parsed = cg_parse_u64(v);
        if (!parsed || !cg_trim(rest).empty()) {
            out.status = cg_lookup::malformed;
            return;
        }
        out.status = cg_lookup::ok;
        out.value = *parsed;
    });
    return out;
}

/// Looks up `key` ("MemTotal") in /proc/meminfo: lines `Key:   value kB`. Returns bytes.
[[nodiscard]] inline cg_lookup cg_find_meminfo(std::string_view text, std::string_view key) noexcept {
    cg_lookup out;
    bool done = false;
    cg_for_each_line(text, [&](std::string_view line) {
        if (done) return;
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos || line.substr(0, colon) != key) return;
        done = true;
        std::string_view rest = line.substr(colon + 1);
        const auto value = cg_parse_u64(cg_next_field(rest));
        const std::string_view unit = cg_next_field(rest);
        if (!value || !cg_trim(rest).empty() || !(unit.empty() || unit == "kB")) {
            out.status = cg_lookup::malformed;
            return;
        }
        std::uint64_t v = *value;
        if (unit == "kB") {
            if (v > (UINT64_MAX >> 10)) {
                out.status = cg_lookup::malformed;
                return;
            }
            v <<= 10;
        }
        out.status = cg_lookup::ok;
        out.value = v;
    });
    return out;
}

/// /proc/self/statm in pages.
struct cg_statm {
    std::uint64_t size = 0;     ///< total program size
    std::uint64_t resident = 0; ///< resident set
    std::uint64_t shared = 0;   ///< resident file-backed and shared pages
};

/// Parses /proc/self/statm ("size resident shared text lib data dt", in pages). At least the
/// first three fields must be numbers.
[[nodiscard]] inline std::optional<cg_statm> cg_parse_statm(std::string_view text) noexcept {
    std::string_view rest = text;
    const auto size = cg_parse_u64(cg_next_field(rest));
    const auto resident = cg_parse_u64(cg_next_field(rest));
    const auto shared = cg_parse_u64(cg_next_field(rest));
    if (!size || !resident || !shared) return std::nullopt;
    return cg_statm{*size, *resident, *shared};
}

/// The resident set in bytes from /proc/self/statm: the second field times `page_size`.
/// nullopt when the text is not statm, or the product overflows or is not plausible memory
/// (`cg_is_plausible_bytes` without MemTotal: at or above 2^62). Never wraps: 2^52 + 1 pages of
/// 4 KiB are refused, not read as 4096 bytes. For any reader of statm, not only this one.
[[nodiscard]] inline std::optional<std::uint64_t> cg_statm_resident_bytes(std::string_view text,
                                                                          std::uint64_t page_size) noexcept {
    const auto st = cg_parse_statm(text);
    if (!st) return std::nullopt;
    const auto bytes = cg_mul(st->resident, page_size);
    if (!bytes || !cg_is_plausible_bytes(*bytes, 0)) return std::nullopt;
    return bytes;
}

} // namespace detail
MEMGOV_NAMESPACE_END
