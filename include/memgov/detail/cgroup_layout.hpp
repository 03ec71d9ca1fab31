// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Where the process's memory cgroup is: the layout types (public, re-exported by
/// `memgov/cgroup.hpp`) and `cg_find_layout`, which reads `/proc/self/mountinfo` and
/// `/proc/self/cgroup` under a root, picks the mount that holds the process and lists the
/// cgroups from the process's own up to the mount's root. What those cgroups' files say (limits,
/// usage, working set, events, PSI) is the reader's business (`cgroup_reader`); this header only
/// finds them.
///
/// A path that escapes the mount's root (not below it, or with a `..` component, as paths out
/// of a cgroup namespace's view show) is below no visible cgroup: the layout then has no memory
/// controller, and a note says why.

#include <memgov/config.hpp>
#include <memgov/detail/cgroup_file.hpp>
#include <memgov/detail/cgroup_parse.hpp>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#if __has_include(<sys/stat.h>)
#include <sys/stat.h>
#endif

MEMGOV_NAMESPACE_BEGIN

/// Which cgroup hierarchies the host has mounted.
enum class cgroup_mode : std::uint8_t {
    none,  ///< no cgroup mount found (or mountinfo unreadable)
    v1,    ///< only cgroup v1 hierarchies
    v2,    ///< only the unified (v2) hierarchy
    hybrid ///< both: v1 controllers and a cgroup2 mount (typically /sys/fs/cgroup/unified)
};

/// Which hierarchy holds the memory controller for this process.
enum class memory_controller : std::uint8_t {
    none, ///< no memory cgroup: limits come from configuration or physical memory
    v1,   ///< a cgroup v1 hierarchy with "memory" among its controllers
    v2    ///< the unified hierarchy, with "memory" in cgroup.controllers
};

/// The name of a mode ("none", "v1", "v2", "hybrid"). Thread safety: pure. Complexity: O(1).
[[nodiscard]] constexpr std::string_view to_string(cgroup_mode m) noexcept {
    switch (m) {
    case cgroup_mode::none:
        return "none";
    case cgroup_mode::v1:
        return "v1";
    case cgroup_mode::v2:
        return "v2";
    case cgroup_mode::hybrid:
        return "hybrid";
    }
    return "unknown";
}
/// The name of a controller location ("none", "v1", "v2"). Thread safety: pure.
[[nodiscard]] constexpr std::string_view to_string(memory_controller m) noexcept {
    switch (m) {
    case memory_controller::none:
        return "none";
    case memory_controller::v1:
        return "v1";
    case memory_controller::v2:
        return "v2";
    }
    return "unknown";
}

/// One cgroup between the process and the mount's root.
struct cgroup_level {
    std::string cgroup;    ///< path inside the hierarchy, e.g. "/system.slice/app.service"
    std::string directory; ///< the directory read, under `cgroup_config::root`
};

/// Where the memory cgroup is, as found from mountinfo and /proc/self/cgroup.
struct cgroup_layout {
    cgroup_mode mode = cgroup_mode::none;                   ///< what the host mounts
    memory_controller controller = memory_controller::none; ///< where memory is controlled
    std::string mount_point;                                ///< the memory hierarchy's mount point (as in mountinfo)
    std::string mount_root;                                 ///< its root field in mountinfo
    std::string process_cgroup;                             ///< the process's path from /proc/self/cgroup
    /// From the process's own cgroup (index 0) up to the mount's root (last).
    std::vector<cgroup_level> levels;
    /// The process's cgroup directory in the unified hierarchy, for `memory.pressure`; empty
    /// when there is no cgroup2 mount.
    std::string v2_directory;
    /// Why anything in the discovery fell back, in plain words.
    std::vector<std::string> notes;
};

namespace detail {

/// The path of `p` (absolute, as the process sees it) under `root` ("/", or an absolute
/// directory without a trailing slash).
[[nodiscard]] inline std::string cg_under_root(const std::string& root, std::string_view p) {
    if (root == "/") return std::string{p};
    return root + std::string{p};
}

/// `dir` and `rel` joined by one slash; `dir` when `rel` is empty.
[[nodiscard]] inline std::string cg_join(const std::string& dir, const std::string& rel) {
    if (rel.empty()) return dir;
    std::string out = dir;
    if (out.empty() || out.back() != '/') out.push_back('/');
    out += rel;
    return out;
}

/// Why `root` cannot be the root the files are read under: it does not exist (or cannot be
/// examined) or is not a directory. Empty when it can.
[[nodiscard]] inline std::string cg_root_problem(const std::string& root) {
    std::string why;
#if __has_include(<sys/stat.h>)
    struct stat st {};
    if (::stat(root.c_str(), &st) != 0) {
        why = "the root " + root + " cannot be used: " + std::generic_category().message(errno);
    } else if (!S_ISDIR(st.st_mode)) {
        why = "the root " + root + " is not a directory";
    }
#else
    (void)root;
#endif
    return why;
}

/// Picks the mount of the wanted kind whose root contains `path` (longest root wins), and sets
/// `rel` to `path` below it. When none does, the path escapes: the mounted cgroups are not the
/// process's ancestors and their limits cannot bind it (under a cgroup namespace, paths out of
/// view show as "/.."). Notes the escape in `layout.notes` and returns nullptr: there is no
/// visible cgroup.
inline const cg_mount* cg_pick_mount(cgroup_layout& layout, const cg_mountinfo& mi, bool v2, const std::string& path,
                                     std::string& rel, std::string_view what) {
    const cg_mount* best = nullptr;
    const cg_mount* first = nullptr;
    for (const auto& m : mi.mounts) {
        if (v2 ? !m.v2 : !m.v1_memory) continue;
        if (first == nullptr) first = &m;
        if (auto r = cg_relative_path(m.root, path)) {
            if (best == nullptr || m.root.size() > best->root.size()) {
                best = &m;
                rel = std::move(*r);
            }
        }
    }
    if (best != nullptr) return best;
    rel.clear();
    if (first != nullptr) {
        layout.notes.push_back("the " + std::string{what} + " cgroup path " + path + " escapes the mount root " +
                               first->root + " of " + first->mount_point +
                               ": the process is below no visible cgroup, so no cgroup "
                               "limit applies to it here");
    }
    return nullptr;
}

/// Records in `layout` that memory is controlled by `c` on the mount `m`, for the process at
/// `process_path` (`rel` below the mount's root), with one level per cgroup from the process's
/// own up to the mount's root.
inline void cg_set_levels(cgroup_layout& layout, memory_controller c, const cg_mount& m,
                          const std::string& process_path, const std::string& rel) {
    layout.controller = c;
    layout.mount_point = m.mount_point;
    layout.mount_root = m.root;
    layout.process_cgroup = process_path;
    std::vector<std::string> parts;
    std::string_view r = rel;
    while (!r.empty()) {
        const std::size_t slash = r.find('/');
        parts.emplace_back(r.substr(0, slash));
        if (slash == std::string_view::npos) break;
        r.remove_prefix(slash + 1);
    }
    for (std::size_t n = parts.size() + 1; n-- > 0;) {
        std::string sub;
        for (std::size_t i = 0; i < n; ++i) {
            sub.push_back('/');
            sub += parts[i];
        }
        cgroup_level lvl;
        std::string cg = m.root == "/" ? std::string{} : m.root;
        cg += sub;
        lvl.cgroup = cg.empty() ? std::string{"/"} : cg;
        lvl.directory = sub.empty() ? m.mount_point : cg_join(m.mount_point, sub.substr(1));
        layout.levels.push_back(std::move(lvl));
    }
}

/// Finds where the process's memory cgroup is, reading the files under `root` ("/", or an
/// absolute directory without a trailing slash): the mode from mountinfo, the process's paths
/// from /proc/self/cgroup, the memory hierarchy (v1 memory first, else the unified hierarchy
/// when its mount has the memory controller) and its levels. Fills `layout`, appending why
/// anything fell back to `layout.notes`. Sets `ec` when mountinfo or /proc/self/cgroup cannot be
/// read (then the layout has no memory controller). Throws `std::bad_alloc`. Complexity: one
/// read of each of those files, and of the unified mount's cgroup.controllers.
inline void cg_find_layout(const std::string& root, cgroup_layout& layout, std::error_code& ec) {
    const std::string mountinfo_path = cg_under_root(root, "/proc/self/mountinfo");
    const std::string cgroup_path = cg_under_root(root, "/proc/self/cgroup");
    cg_file_error err;
    // Without either file there is no memory cgroup to find: say why and set `ec`.
    const auto unreadable = [&](const std::string& path) {
        layout.notes.push_back("cannot read " + path + ": " + cg_file_error_text(err) + "; no memory cgroup");
        ec = std::error_code{err.err != 0 ? err.err : EINVAL, std::generic_category()};
    };
    const auto note_malformed = [&](std::size_t lines, const std::string& path) {
        if (lines != 0) layout.notes.push_back("skipped " + std::to_string(lines) + " malformed line(s) in " + path);
    };
    const auto mountinfo = cg_read_file(mountinfo_path, err, cg_mountinfo_cap);
    if (!mountinfo) return unreadable(mountinfo_path);
    const cg_mountinfo mi = cg_parse_mountinfo(*mountinfo);
    note_malformed(mi.malformed_lines, mountinfo_path);
    bool any_v1 = false, any_v2 = false, v1_memory = false;
    for (const auto& m : mi.mounts) {
        any_v1 = any_v1 || !m.v2;
        any_v2 = any_v2 || m.v2;
        v1_memory = v1_memory || m.v1_memory;
    }
    layout.mode = any_v1 && any_v2 ? cgroup_mode::hybrid
                  : any_v1         ? cgroup_mode::v1
                  : any_v2         ? cgroup_mode::v2
                                   : cgroup_mode::none;
    if (layout.mode == cgroup_mode::none) {
        layout.notes.push_back("no cgroup mount in " + mountinfo_path);
        return;
    }
    const auto cgroup_text = cg_read_file(cgroup_path, err);
    if (!cgroup_text) return unreadable(cgroup_path);
    const cg_membership mb = cg_parse_proc_cgroup(*cgroup_text);
    note_malformed(mb.malformed_lines, cgroup_path);

    // The unified hierarchy's directory (for memory.pressure, and v2 memory).
    const cg_mount* v2_mount = nullptr;
    std::string v2_rel;
    if (any_v2 && mb.v2) {
        v2_mount = cg_pick_mount(layout, mi, true, *mb.v2, v2_rel, "cgroup2");
        if (v2_mount != nullptr) layout.v2_directory = cg_join(v2_mount->mount_point, v2_rel);
    }

    if (v1_memory) {
        if (mb.v1_memory) {
            std::string rel;
            const cg_mount* m = cg_pick_mount(layout, mi, false, *mb.v1_memory, rel, "memory");
            if (m != nullptr) cg_set_levels(layout, memory_controller::v1, *m, *mb.v1_memory, rel);
            return; // else the path escapes every memory mount: no visible cgroup (noted)
        }
        layout.notes.push_back("a v1 memory hierarchy is mounted but " + cgroup_path + " has no memory line");
    }
    if (v2_mount != nullptr) {
        const std::string controllers_path = cg_under_root(root, cg_join(v2_mount->mount_point, "cgroup.controllers"));
        const auto controllers = cg_read_file(controllers_path, err);
        bool has_memory = false;
        if (controllers) {
            std::string_view rest = *controllers;
            for (;;) {
                const auto c = cg_next_field(rest);
                if (c.empty()) break;
                has_memory = has_memory || c == "memory";
            }
        } else {
            // No cgroup.controllers: accept v2 if the process's cgroup has memory files.
            cg_file_error e2;
            const std::string current = cg_under_root(root, cg_join(layout.v2_directory, "memory.current"));
            has_memory = cg_read_file(current, e2).has_value();
        }
        if (has_memory) {
            cg_set_levels(layout, memory_controller::v2, *v2_mount, *mb.v2, v2_rel);
            return;
        }
        layout.notes.push_back("the cgroup2 mount at " + v2_mount->mount_point + " has no memory controller");
    } else if (any_v2 && !mb.v2) {
        layout.notes.push_back(cgroup_path + " has no \"0::\" line");
    }
    if (!v1_memory && !any_v2) {
        layout.notes.push_back("no memory cgroup is mounted");
    }
}

} // namespace detail
MEMGOV_NAMESPACE_END
