// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The cgroup reader: finds the memory limit that can actually kill this process, and reads the
/// usage, working set, RSS, peak, OOM kills and memory pressure that go with it.
///
/// ## What it does
/// - Reads the host's cgroup mode from `/proc/self/mountinfo` (v1, v2 or hybrid: both mounted)
///   and the process's path from `/proc/self/cgroup`, made relative to the mount's root field.
///   A path that escapes the mount's root (not below it, or with a `..` component, as paths out
///   of a cgroup namespace's view show) is below no visible cgroup: the mounted cgroup is not
///   an ancestor of the process, so its limit cannot bind it (cgroup v2's top-down constraint).
///   The reader then has no memory cgroup and says why.
/// - Walks every ancestor from the process's cgroup up to the mount and reads each level's limit
///   (v2: `memory.max` and `memory.high`; v1: `memory.limit_in_bytes`, and
///   `hierarchical_memory_limit` from `memory.stat` for limits set above the visible tree).
///   "max", the v1 unlimited sentinel (any value at or above 2^62, or above physical memory)
///   mean "no limit at this level"; 0 is a real limit of zero bytes, and a limit equal to
///   MemTotal is real too (LXCFS shows the container's limit as MemTotal).
/// - The *binding* cgroup is the limited ancestor with the least headroom (limit − usage); with
///   no usage readable, the smallest limit. Usage, working set (usage − inactive_file), peak and
///   OOM kills all come from that same cgroup.
/// - Without a cgroup limit the limit is physical memory (`/proc/meminfo` MemTotal) and the
///   usage is the RSS from `/proc/self/statm`. An explicit limit from configuration, then the
///   `MEMGOV_MEMORY_LIMIT` environment variable, wins over everything.
/// - Every value says which file it came from, and every fallback says why
///   (`memory_reading::fallbacks`). A missing or malformed file is a fallback, never a crash.
/// - Hostile files are refused with a reason: only regular files are read (a FIFO or a device
///   in a file's place is refused at an open that never blocks), each read stops at a cap
///   (`detail::cg_file_cap`), and a number no machine holds (usage, RSS, peak or MemTotal at or
///   above 2^62, or usage/RSS/peak above 4 × MemTotal) is not trusted. `inactive_file` above
///   usage leaves the working set at usage (the safe side), never below it.
/// - A reader that cannot see says so: `blind()` and `blind_reason()` (the root is missing or
///   not a directory, mountinfo or /proc/self/cgroup is unreadable, or the last sample found no
///   limit or no usage), also in each `memory_reading` and as `detail::cg_fb_blind` in a sample.
/// - The filesystem root is injectable (`cgroup_config::root`), so tests run on fake trees.
///
/// The files of the binding cgroup are kept open and re-read with `pread`.
///
/// ## Where the parts are
/// This header says what the files mean: which limit binds, usage, working set, peak, OOM kills,
/// which PSI file counts, and every fallback's reason. Finding the cgroups (mountinfo,
/// /proc/self/cgroup, the levels, and the layout types `cgroup_mode`, `memory_controller`,
/// `cgroup_level` and `cgroup_layout`, all re-exported here) is in `detail/cgroup_layout.hpp`;
/// opening and reading files in `detail/cgroup_file.hpp`; parsing them in
/// `detail/cgroup_parse.hpp`, `detail/cgroup_numbers.hpp` and `detail/psi_parse.hpp` (which also
/// declares `psi_figures`).

#include <memgov/config.hpp>
#include <memgov/detail/cgroup_file.hpp>
#include <memgov/detail/cgroup_layout.hpp>
#include <memgov/detail/cgroup_numbers.hpp>
#include <memgov/detail/cgroup_parse.hpp>
#include <memgov/detail/psi_parse.hpp>
#include <memgov/detail/validate.hpp>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

MEMGOV_NAMESPACE_BEGIN

/// Where the effective limit came from.
enum class limit_source : std::uint8_t {
    unknown,                ///< nothing could be read
    configuration,          ///< `cgroup_config::explicit_limit`
    environment,            ///< the `MEMGOV_MEMORY_LIMIT` environment variable
    cgroup_v2_max,          ///< a v2 `memory.max` (the OOM-kill limit)
    cgroup_v2_high,         ///< a v2 `memory.high` (the throttling limit), lower than max
    cgroup_v1_limit,        ///< a v1 `memory.limit_in_bytes`
    cgroup_v1_hierarchical, ///< v1 `hierarchical_memory_limit`: set above the visible tree
    physical_memory         ///< no cgroup limit: `/proc/meminfo` MemTotal
};

/// Where the usage came from.
enum class usage_source : std::uint8_t {
    unknown,   ///< nothing could be read
    cgroup_v2, ///< the binding cgroup's `memory.current`
    cgroup_v1, ///< the binding cgroup's `memory.usage_in_bytes`
    proc_statm ///< the process's RSS from `/proc/self/statm` (no cgroup limit)
};

/// The name of a limit source, e.g. "cgroup_v2_max". Thread safety: pure.
[[nodiscard]] constexpr std::string_view to_string(limit_source s) noexcept {
    switch (s) {
    case limit_source::unknown:
        return "unknown";
    case limit_source::configuration:
        return "configuration";
    case limit_source::environment:
        return "environment";
    case limit_source::cgroup_v2_max:
        return "cgroup_v2_max";
    case limit_source::cgroup_v2_high:
        return "cgroup_v2_high";
    case limit_source::cgroup_v1_limit:
        return "cgroup_v1_limit";
    case limit_source::cgroup_v1_hierarchical:
        return "cgroup_v1_hierarchical";
    case limit_source::physical_memory:
        return "physical_memory";
    }
    return "unknown";
}
/// The name of a usage source, e.g. "proc_statm". Thread safety: pure.
[[nodiscard]] constexpr std::string_view to_string(usage_source s) noexcept {
    switch (s) {
    case usage_source::unknown:
        return "unknown";
    case usage_source::cgroup_v2:
        return "cgroup_v2";
    case usage_source::cgroup_v1:
        return "cgroup_v1";
    case usage_source::proc_statm:
        return "proc_statm";
    }
    return "unknown";
}

/// How to find the limit. Validated by the `cgroup_reader` constructor.
struct cgroup_config {
    /// The filesystem root under which `/proc/...` and every cgroup mount point are read.
    /// "/" in production; a fake tree's directory in tests. Must be an absolute path.
    std::string root = "/";
    /// A limit that wins over everything (bytes, > 0). Usage still comes from the binding
    /// cgroup when there is one, else from the RSS.
    std::optional<std::uint64_t> explicit_limit{};
    /// The environment variable whose value (bytes, or with a K/M/G/T suffix) wins over the
    /// cgroup limit when no explicit limit is configured. Empty: do not look. Read when the
    /// reader is constructed or reloaded. A malformed value is ignored, with a reason.
    std::string limit_env = "MEMGOV_MEMORY_LIMIT";
};

/// One reading of the process's memory situation. Every value names its origin (a file
/// path, "configuration" or the environment variable); empty origin = not available.
struct memory_reading {
    cgroup_mode mode = cgroup_mode::none;                   ///< the host's cgroup mode
    memory_controller controller = memory_controller::none; ///< where memory is controlled

    std::uint64_t limit_bytes = 0;                   ///< the effective limit
    limit_source limit_from = limit_source::unknown; ///< what kind of limit that is
    std::string limit_origin;                        ///< the file, "configuration" or the environment variable
    std::string binding_cgroup;                      ///< the cgroup whose limit binds ("" when none does)
    /// The binding cgroup's limit, even when configuration or the environment overrides it;
    /// nullopt when no cgroup has a limit.
    std::optional<std::uint64_t> cgroup_limit_bytes{};

    std::uint64_t usage_bytes = 0;                   ///< usage of the binding cgroup, or RSS
    usage_source usage_from = usage_source::unknown; ///< where it came from
    std::string usage_origin;                        ///< the file it was read from
    std::uint64_t inactive_file_bytes = 0;           ///< inactive page cache in that cgroup
    std::uint64_t working_set_bytes = 0;             ///< usage − inactive_file
    std::string working_set_origin;                  ///< the memory.stat read (or statm when usage is RSS)
    std::uint64_t rss_bytes = 0;                     ///< the process's resident set from /proc/self/statm
    std::string rss_origin;                          ///< the statm file read
    std::uint64_t physical_memory_bytes = 0;         ///< MemTotal, 0 when unreadable
    std::optional<std::uint64_t> peak_bytes{};       ///< memory.peak / max_usage_in_bytes
    std::string peak_origin;                         ///< the file it was read from
    std::optional<std::uint64_t> oom_kills{};        ///< memory.events / memory.oom_control oom_kill
    std::string oom_origin;                          ///< the file it was read from
    std::optional<psi_figures> psi{};                ///< memory pressure stall information
    std::string psi_origin;                          ///< the file it was read from
    /// Every fallback taken, in plain words with the file and the reason.
    std::vector<std::string> fallbacks;
    /// True when the reader could not see: see `cgroup_reader::blind()`. Then `blind_reason`
    /// says why (it is also the first entry of `fallbacks`).
    bool blind = false;
    std::string blind_reason; ///< why the reader is blind; empty when it is not

    /// True if both a limit and a usage were found.
    [[nodiscard]] bool complete() const noexcept {
        return limit_from != limit_source::unknown && usage_from != usage_source::unknown;
    }
};

namespace detail {

enum cg_fallback_bit : std::uint32_t {
    cg_fb_no_controller = 1U << 0,
    cg_fb_no_cgroup_limit = 1U << 1,
    cg_fb_limit_unreadable = 1U << 2,
    cg_fb_usage_unreadable = 1U << 3,
    cg_fb_stat_unreadable = 1U << 4,
    cg_fb_statm_unreadable = 1U << 5,
    cg_fb_meminfo_unreadable = 1U << 6,
    cg_fb_psi_unreadable = 1U << 7,
    cg_fb_oom_unreadable = 1U << 8,
    cg_fb_peak_unreadable = 1U << 9,
    cg_fb_hierarchical_above = 1U << 10,
    cg_fb_psi_system = 1U << 11,
    cg_fb_usage_implausible = 1U << 12,    // with cg_fb_usage_unreadable: the value was not believable
    cg_fb_rss_implausible = 1U << 13,      // with cg_fb_statm_unreadable
    cg_fb_inactive_above_usage = 1U << 14, // working set = usage
    cg_fb_peak_implausible = 1U << 15,     // with cg_fb_peak_unreadable
    cg_fb_meminfo_implausible = 1U << 16,  // with cg_fb_meminfo_unreadable
    /// The reader is blind (`cgroup_reader::blind()`): no usable reading, or it cannot see.
    cg_fb_blind = 1U << 17,
};

/// One reading without strings: what the monitor takes on every sample (no allocation once
/// the files are open).
struct cg_sample {
    std::uint64_t limit = 0;
    limit_source limit_from = limit_source::unknown;
    int binding = -1; // index into layout.levels, -1 = none
    bool has_cgroup_limit = false;
    std::uint64_t cgroup_limit = 0;
    std::uint64_t usage = 0;
    usage_source usage_from = usage_source::unknown;
    std::uint64_t inactive_file = 0;
    std::uint64_t working_set = 0;
    bool working_set_from_stat = false;
    std::uint64_t rss = 0;
    bool has_rss = false;
    std::uint64_t physical = 0;
    bool has_peak = false;
    std::uint64_t peak = 0;
    bool has_oom = false;
    std::uint64_t oom_kills = 0;
    bool has_psi = false;
    bool psi_from_cgroup = false;
    psi_figures psi{};
    int stats_level = -1; // the cgroup peak/oom/stat were read from
    std::uint32_t fallbacks = 0;
    // Values refused as implausible (for the reasons): usage of the binding cgroup, statm's
    // resident pages, peak, MemTotal.
    std::uint64_t rejected_usage = 0;
    std::uint64_t rejected_rss_pages = 0;
    std::uint64_t rejected_peak = 0;
    std::uint64_t rejected_physical = 0;
    [[nodiscard]] bool complete() const noexcept {
        return limit_from != limit_source::unknown && usage_from != usage_source::unknown;
    }
};

// What one limit file said at the last read.
enum class cg_limit_state : std::uint8_t { unread, absent, unlimited, limited, malformed };

struct cg_level_files {
    cg_file limit;  // v2 memory.max, v1 memory.limit_in_bytes
    cg_file high;   // v2 memory.high
    cg_file usage;  // memory.current / memory.usage_in_bytes (opened on demand)
    cg_file stat;   // memory.stat (on demand)
    cg_file events; // memory.events / memory.oom_control (on demand)
    cg_file peak;   // memory.peak / memory.max_usage_in_bytes (on demand)
    bool usage_tried = false;
    bool stats_tried = false;
    cg_limit_state limit_state = cg_limit_state::unread;
    cg_limit_state high_state = cg_limit_state::unread;
    cg_limit_state usage_state = cg_limit_state::unread;
    std::uint64_t usage_rejected = 0; // the implausible usage last read (usage_state malformed)
};

inline std::string cg_reason(const cg_file& f) { return cg_file_error_text(f.last_error()); }

inline std::string cg_implausible_text(std::uint64_t v) {
    return "implausible value " + std::to_string(v) + " (at or above 2^62, or above " +
           std::to_string(cg_plausible_factor) + " x MemTotal)";
}

} // namespace detail

/// Reads the process's memory limit and usage from cgroups and /proc.
///
/// Thread safety: one thread at a time per reader (it owns file descriptors and a buffer);
/// `layout()` and `config()` may be read concurrently with nothing else running.
/// Throws: the constructor throws `std::invalid_argument` for a bad configuration and
/// `std::bad_alloc`; file problems never throw there: they become fallbacks with reasons.
class cgroup_reader {
public:
    /// Validates `cfg`, discovers the layout and opens the files it will re-read.
    /// Throws `std::invalid_argument` naming the field: `root` empty or not absolute,
    /// `explicit_limit` of 0. A root that is missing or not a directory is not a throw: the
    /// reader is then `blind()`, with the reason. Complexity: reads mountinfo and
    /// /proc/self/cgroup once.
    explicit cgroup_reader(cgroup_config cfg = {}) : m_cfg{std::move(cfg)} {
        detail::require_field(!m_cfg.root.empty() && m_cfg.root.front() == '/', "cgroup_config", "root",
                              "must be an absolute path");
        detail::require_field(!(m_cfg.explicit_limit && *m_cfg.explicit_limit == 0), "cgroup_config", "explicit_limit",
                              "must be > 0");
        while (m_cfg.root.size() > 1 && m_cfg.root.back() == '/') m_cfg.root.pop_back();
#if __has_include(<unistd.h>)
        const long ps = ::sysconf(_SC_PAGESIZE);
        if (ps > 0) m_page_size = static_cast<std::uint64_t>(ps);
#endif
        std::error_code ec;
        reload(ec);
    }

    cgroup_reader(const cgroup_reader&) = delete;
    cgroup_reader& operator=(const cgroup_reader&) = delete;
    /// Moves the reader (its open files go with it). Never throws.
    cgroup_reader(cgroup_reader&&) noexcept = default;
    /// Move-assigns the reader. Never throws.
    cgroup_reader& operator=(cgroup_reader&&) noexcept = default;
    /// Closes the files. Never throws.
    ~cgroup_reader() = default;

    /// Discovers the layout again (the process may have moved to another cgroup) and re-reads
    /// the environment override. Throws `std::system_error` when `/proc/self/mountinfo` or
    /// `/proc/self/cgroup` cannot be read (the reader still falls back and keeps working), and
    /// `std::bad_alloc`. Complexity: one read of each of those files.
    void reload() {
        std::error_code ec;
        reload(ec);
        if (ec) throw std::system_error{ec, "memgov::cgroup_reader::reload"};
    }

    /// Like `reload()`, but reports an unreadable mountinfo or /proc/self/cgroup in `ec`.
    /// Throws only `std::bad_alloc`.
    void reload(std::error_code& ec) {
        ec.clear();
        m_layout = cgroup_layout{};
        m_files.clear();
        m_notes.clear();
        m_last_incomplete = false;
        m_blind_reason = detail::cg_root_problem(m_cfg.root);
        if (!m_blind_reason.empty()) m_layout.notes.push_back(m_blind_reason);
        detail::cg_find_layout(m_cfg.root, m_layout, ec);
        if (ec && m_blind_reason.empty()) {
            m_blind_reason =
                m_layout.notes.empty() ? std::string{"cannot read the process's cgroups"} : m_layout.notes.back();
            m_blind_reason += "; the reader cannot tell which cgroup limit applies";
        }
        read_environment();
        open_files();
        m_no_usage_reason = "no usage can be read (no readable usage file of a limited cgroup, "
                            "and no resident set in " +
                            m_statm.path() + ")";
        m_no_limit_reason = "no limit can be read (no cgroup limit, no configured or environment "
                            "limit, and no MemTotal in " +
                            m_meminfo.path() + ")";
    }

    /// True when the reader cannot see what it needs: the configured root is missing or not a
    /// directory, `/proc/self/mountinfo` or `/proc/self/cgroup` could not be read at the last
    /// (re)load (so no one can tell which cgroup limit applies), or the last `sample`/`read`
    /// found no limit or no usage at all. A blind reader's readings must not be taken for
    /// "no pressure". Thread safety: not concurrently with `sample`, `read` or `reload`.
    /// Complexity: O(1).
    [[nodiscard]] bool blind() const noexcept { return !m_blind_reason.empty() || m_last_incomplete; }

    /// Why the reader is blind, in plain words with the path; empty when it is not. Thread
    /// safety: as `blind()`. Complexity: O(1).
    [[nodiscard]] const std::string& blind_reason() const noexcept {
        static const std::string none;
        if (!m_blind_reason.empty()) return m_blind_reason;
        if (m_last_incomplete) return m_last_no_usage ? m_no_usage_reason : m_no_limit_reason;
        return none;
    }

    /// Reads everything now. Throws `std::system_error` when neither a limit nor a usage can
    /// be determined from any source (then nothing useful can be said), and `std::bad_alloc`.
    /// Complexity: a handful of `pread`s on kept descriptors; memory.stat is among them.
    [[nodiscard]] memory_reading read() {
        std::error_code ec;
        memory_reading r = read(ec);
        if (ec) throw std::system_error{ec, "memgov::cgroup_reader::read"};
        return r;
    }

    /// Like `read()`, but reports an incomplete reading in `ec` (`errc::no_such_file_or_directory`)
    /// and returns what was found. Throws only `std::bad_alloc`.
    [[nodiscard]] memory_reading read(std::error_code& ec) {
        detail::cg_sample s;
        sample(s);
        ec.clear();
        if (!s.complete()) ec = std::make_error_code(std::errc::no_such_file_or_directory);
        return describe(s);
    }

    /// Reads the numbers into `out` without building strings; what the monitor calls on every
    /// sample. Returns `out.complete()`. Allocates only the first time a file is opened or
    /// when a file outgrows the read buffer. Never throws.
    /// A sample taken while the reader is blind carries `detail::cg_fb_blind` in `fallbacks`.
    bool sample(detail::cg_sample& out) noexcept {
        out = detail::cg_sample{};
        read_proc(out);
        if (m_layout.controller != memory_controller::none) {
            read_cgroups(out);
        } else {
            out.fallbacks |= detail::cg_fb_no_controller | detail::cg_fb_no_cgroup_limit;
        }
        read_psi(out);
        decide(out);
        m_last_incomplete = !out.complete();
        m_last_no_usage = out.usage_from == usage_source::unknown;
        if (blind()) out.fallbacks |= detail::cg_fb_blind;
        return out.complete();
    }

    /// Turns a sample into a reading with origins and fallback reasons.
    /// Throws `std::bad_alloc`. Complexity: O(levels).
    [[nodiscard]] memory_reading describe(const detail::cg_sample& s) const {
        memory_reading r;
        r.mode = m_layout.mode;
        r.controller = m_layout.controller;
        r.limit_bytes = s.limit;
        r.limit_from = s.limit_from;
        const bool v2 = m_layout.controller == memory_controller::v2;
        if (s.binding >= 0) r.binding_cgroup = m_layout.levels[idx(s.binding)].cgroup;
        if (s.has_cgroup_limit) r.cgroup_limit_bytes = s.cgroup_limit;
        switch (s.limit_from) {
        case limit_source::configuration:
            r.limit_origin = "configuration";
            break;
        case limit_source::environment:
            r.limit_origin = m_cfg.limit_env;
            break;
        case limit_source::cgroup_v2_max:
        case limit_source::cgroup_v1_limit:
            r.limit_origin = m_files[idx(s.binding)].limit.path();
            break;
        case limit_source::cgroup_v2_high:
            r.limit_origin = m_files[idx(s.binding)].high.path();
            break;
        case limit_source::cgroup_v1_hierarchical:
            r.limit_origin = m_files.front().stat.path();
            break;
        case limit_source::physical_memory:
            r.limit_origin = m_meminfo.path();
            break;
        case limit_source::unknown:
            break;
        }
        r.usage_bytes = s.usage;
        r.usage_from = s.usage_from;
        if (s.usage_from == usage_source::proc_statm) {
            r.usage_origin = m_statm.path();
            r.working_set_origin = m_statm.path();
        } else if (s.usage_from != usage_source::unknown) {
            r.usage_origin = m_files[idx(s.binding)].usage.path();
            if (s.working_set_from_stat)
                r.working_set_origin = m_files[idx(s.binding)].stat.path();
            else
                r.working_set_origin = r.usage_origin;
        }
        r.inactive_file_bytes = s.inactive_file;
        r.working_set_bytes = s.working_set;
        r.rss_bytes = s.rss;
        if (s.has_rss) r.rss_origin = m_statm.path();
        r.physical_memory_bytes = s.physical;
        if (s.has_peak) {
            r.peak_bytes = s.peak;
            r.peak_origin = m_files[idx(s.stats_level)].peak.path();
        }
        if (s.has_oom) {
            r.oom_kills = s.oom_kills;
            r.oom_origin = m_files[idx(s.stats_level)].events.path();
        }
        if (s.has_psi) {
            r.psi = s.psi;
            r.psi_origin = s.psi_from_cgroup ? m_psi_cgroup.path() : m_psi_proc.path();
        }

        // Why anything fell back; blindness first.
        if ((s.fallbacks & detail::cg_fb_blind) != 0) {
            r.blind = true;
            r.blind_reason = !m_blind_reason.empty()                 ? m_blind_reason
                             : s.usage_from == usage_source::unknown ? m_no_usage_reason
                                                                     : m_no_limit_reason;
            r.fallbacks.push_back("the reader is blind: " + r.blind_reason);
        }
        for (const auto& n : m_layout.notes) r.fallbacks.push_back(n);
        for (const auto& n : m_notes) r.fallbacks.push_back(n);
        const auto has = [&](std::uint32_t bit) { return (s.fallbacks & bit) != 0; };
        if (has(detail::cg_fb_limit_unreadable)) {
            for (const auto& f : m_files) {
                if (f.limit_state == detail::cg_limit_state::malformed)
                    r.fallbacks.push_back("ignored limit " + f.limit.path() + ": " + detail::cg_reason(f.limit));
                if (f.high_state == detail::cg_limit_state::malformed)
                    r.fallbacks.push_back("ignored limit " + f.high.path() + ": " + detail::cg_reason(f.high));
            }
            if (!m_files.empty() && m_files.front().limit_state == detail::cg_limit_state::absent)
                r.fallbacks.push_back("no limit file " + m_files.front().limit.path() + ": " +
                                      detail::cg_reason(m_files.front().limit));
        }
        if (has(detail::cg_fb_hierarchical_above)) {
            r.fallbacks.push_back("the limit is set above the visible cgroup tree "
                                  "(hierarchical_memory_limit in " +
                                  m_files.front().stat.path() + "); usage is read from " + r.binding_cgroup +
                                  ", the highest visible cgroup");
        }
        if (has(detail::cg_fb_no_cgroup_limit)) {
            // "Unlimited" only when every limit file said so: one that could not be read (a
            // FIFO, no permission, garbage) may hold the limit that binds.
            std::string unreadable;
            const auto note = [&](const detail::cg_file& lf, detail::cg_limit_state state) {
                if (state == detail::cg_limit_state::malformed) {
                    unreadable += (unreadable.empty() ? "" : ", ") + lf.path();
                }
            };
            for (const auto& f : m_files) {
                note(f.limit, f.limit_state);
                note(f.high, f.high_state);
            }
            std::string why;
            if (m_layout.controller == memory_controller::none) {
                why = "no visible memory cgroup";
            } else if (unreadable.empty()) {
                why = "every level from " + m_layout.levels.front().cgroup + " up is unlimited";
            } else {
                why = "no readable limit from " + m_layout.levels.front().cgroup + " up; unreadable: " + unreadable;
            }
            r.fallbacks.push_back("no cgroup limit (" + why + "): limit from " + m_meminfo.path() +
                                  ", usage is the RSS from " + m_statm.path());
        }
        if (has(detail::cg_fb_usage_unreadable) && s.binding >= 0) {
            const auto& f = m_files[idx(s.binding)].usage;
            r.fallbacks.push_back("cannot read usage " + f.path() + ": " +
                                  (has(detail::cg_fb_usage_implausible) ? detail::cg_implausible_text(s.rejected_usage)
                                                                        : detail::cg_reason(f)) +
                                  "; usage is the RSS from " + m_statm.path());
        }
        if (has(detail::cg_fb_stat_unreadable) && s.stats_level >= 0) {
            const auto& f = m_files[idx(s.stats_level)].stat;
            r.fallbacks.push_back("cannot read " + std::string{v2 ? "inactive_file" : "total_inactive_file"} +
                                  " from " + f.path() + ": " + detail::cg_reason(f) + "; working set = usage");
        }
        if (has(detail::cg_fb_inactive_above_usage) && s.stats_level >= 0) {
            r.fallbacks.push_back("inactive_file " + std::to_string(s.inactive_file) + " in " +
                                  m_files[idx(s.stats_level)].stat.path() + " exceeds usage " +
                                  std::to_string(s.usage) + "; working set = usage");
        }
        if (has(detail::cg_fb_statm_unreadable)) {
            r.fallbacks.push_back(
                "cannot read " + m_statm.path() + ": " +
                (has(detail::cg_fb_rss_implausible)
                     ? "implausible resident set of " + std::to_string(s.rejected_rss_pages) + " pages"
                     : detail::cg_reason(m_statm)) +
                "; RSS unknown");
        }
        if (has(detail::cg_fb_meminfo_unreadable)) {
            r.fallbacks.push_back("cannot read MemTotal from " + m_meminfo.path() + ": " +
                                  (has(detail::cg_fb_meminfo_implausible)
                                       ? "implausible value " + std::to_string(s.rejected_physical)
                                       : detail::cg_reason(m_meminfo)) +
                                  "; only values >= 2^62 count as unlimited");
        }
        if (has(detail::cg_fb_psi_system)) {
            r.fallbacks.push_back("cannot read PSI from " + m_psi_cgroup.path() + ": " +
                                  detail::cg_reason(m_psi_cgroup) + "; PSI from " + m_psi_proc.path());
        }
        if (has(detail::cg_fb_psi_unreadable)) {
            r.fallbacks.push_back("cannot read PSI from " + m_psi_proc.path() + ": " + detail::cg_reason(m_psi_proc) +
                                  "; no PSI");
        }
        if (has(detail::cg_fb_oom_unreadable) && s.stats_level >= 0) {
            const auto& f = m_files[idx(s.stats_level)].events;
            r.fallbacks.push_back("cannot read oom_kill from " + f.path() + ": " + detail::cg_reason(f));
        }
        if (has(detail::cg_fb_peak_unreadable) && s.stats_level >= 0) {
            const auto& f = m_files[idx(s.stats_level)].peak;
            r.fallbacks.push_back("cannot read peak usage from " + f.path() + ": " +
                                  (has(detail::cg_fb_peak_implausible) ? detail::cg_implausible_text(s.rejected_peak)
                                                                       : detail::cg_reason(f)));
        }
        if (s.limit_from == limit_source::configuration && s.has_cgroup_limit) {
            r.fallbacks.push_back("the configured limit overrides the cgroup limit of " +
                                  std::to_string(s.cgroup_limit) + " bytes");
        } else if (s.limit_from == limit_source::environment && s.has_cgroup_limit) {
            r.fallbacks.push_back(m_cfg.limit_env + " overrides the cgroup limit of " + std::to_string(s.cgroup_limit) +
                                  " bytes");
        }
        return r;
    }

    /// The layout found by the last (re)load. Thread safety: see the class.
    [[nodiscard]] const cgroup_layout& layout() const noexcept { return m_layout; }
    /// The validated configuration.
    [[nodiscard]] const cgroup_config& config() const noexcept { return m_cfg; }
    /// The limit from the environment variable, if it was set and valid at the last (re)load.
    [[nodiscard]] std::optional<std::uint64_t> environment_limit() const noexcept { return m_env_limit; }
    /// The directory of the binding cgroup's files for `sample.binding`, or "" (for tools and
    /// benchmarks that want to read the same files themselves).
    [[nodiscard]] std::string usage_file(const detail::cg_sample& s) const {
        return s.binding >= 0 ? m_files[idx(s.binding)].usage.path() : std::string{};
    }
    /// The path of `p` (absolute, as the process sees it) under the configured root.
    [[nodiscard]] std::string under_root(std::string_view p) const { return detail::cg_under_root(m_cfg.root, p); }

private:
    static std::size_t idx(int i) noexcept { return static_cast<std::size_t>(i); }

    void read_environment() {
        m_env_limit.reset();
        if (m_cfg.limit_env.empty()) return;
        const char* v = std::getenv(m_cfg.limit_env.c_str());
        if (v == nullptr) return;
        const auto parsed = detail::cg_parse_size(v);
        if (!parsed || *parsed == 0) {
            m_notes.push_back("ignored " + m_cfg.limit_env + "=\"" + std::string{v} +
                              "\": not a size in bytes > 0 (e.g. 1073741824, 512M, 2GiB)");
            return;
        }
        m_env_limit = parsed;
    }

    void open_files() {
        m_meminfo.open(under_root("/proc/meminfo"));
        m_statm.open(under_root("/proc/self/statm"));
        const bool v2 = m_layout.controller == memory_controller::v2;
        for (const auto& l : m_layout.levels) {
            detail::cg_level_files f;
            const std::string dir = under_root(l.directory);
            f.limit.open(detail::cg_join(dir, v2 ? "memory.max" : "memory.limit_in_bytes"));
            if (v2) f.high.open(detail::cg_join(dir, "memory.high"));
            m_files.push_back(std::move(f));
        }
        if (!m_files.empty() && !v2) {
            // v1: the leaf's memory.stat carries hierarchical_memory_limit.
            open_stats(0);
        }
        m_psi_cgroup = detail::cg_file{}; // also forgets the path: the layout may have lost v2
        if (!m_layout.v2_directory.empty()) {
            m_psi_cgroup.open(under_root(detail::cg_join(m_layout.v2_directory, "memory.pressure")));
        }
        m_psi_proc.open(under_root("/proc/pressure/memory"));
    }

    void open_usage(std::size_t i) noexcept {
        auto& f = m_files[i];
        if (f.usage_tried) return;
        const bool v2 = m_layout.controller == memory_controller::v2;
        try { // from noexcept `sample`: building the path may fail; then try again next time
            f.usage.open(detail::cg_join(under_root(m_layout.levels[i].directory),
                                         v2 ? "memory.current" : "memory.usage_in_bytes"));
            f.usage_tried = true;
        } catch (...) {
        }
    }

    void open_stats(std::size_t i) noexcept {
        auto& f = m_files[i];
        if (f.stats_tried) return;
        const bool v2 = m_layout.controller == memory_controller::v2;
        try { // as open_usage
            const std::string dir = under_root(m_layout.levels[i].directory);
            f.stat.open(detail::cg_join(dir, "memory.stat"));
            f.events.open(detail::cg_join(dir, v2 ? "memory.events" : "memory.oom_control"));
            f.peak.open(detail::cg_join(dir, v2 ? "memory.peak" : "memory.max_usage_in_bytes"));
            f.stats_tried = true;
        } catch (...) {
        }
    }

    void read_proc(detail::cg_sample& s) noexcept {
        if (const auto t = m_meminfo.read(m_buf)) {
            const auto v = detail::cg_find_meminfo(*t, "MemTotal");
            if (v && detail::cg_is_plausible_bytes(v.value, 0)) {
                s.physical = v.value;
            } else if (v) {
                s.rejected_physical = v.value;
                s.fallbacks |= detail::cg_fb_meminfo_implausible;
            }
        }
        if (s.physical == 0) s.fallbacks |= detail::cg_fb_meminfo_unreadable;
        if (const auto t = m_statm.read(m_buf)) {
            if (const auto st = detail::cg_parse_statm(*t)) {
                const auto bytes = detail::cg_mul(st->resident, m_page_size);
                if (bytes && detail::cg_is_plausible_bytes(*bytes, s.physical)) {
                    s.rss = *bytes;
                    s.has_rss = true;
                } else {
                    s.rejected_rss_pages = st->resident;
                    s.fallbacks |= detail::cg_fb_rss_implausible;
                }
            }
        }
        if (!s.has_rss) s.fallbacks |= detail::cg_fb_statm_unreadable;
    }

    // Reads one limit file: returns true and the bytes when it limits.
    bool read_limit(detail::cg_file& f, detail::cg_limit_state& state, std::uint64_t physical,
                    std::uint64_t& bytes) noexcept {
        if (!f.is_open()) {
            // Missing is "no limit file"; anything else (not a regular file, no permission) is
            // a file we refused, reported as ignored.
            state = f.error() == 0 || f.error() == ENOENT ? detail::cg_limit_state::absent
                                                          : detail::cg_limit_state::malformed;
            return false;
        }
        const auto t = f.read(m_buf);
        if (!t) {
            state = detail::cg_limit_state::malformed;
            return false;
        }
        const detail::cg_limit_value v = detail::cg_parse_limit(*t);
        if (v.kind == detail::cg_limit_kind::malformed) {
            state = detail::cg_limit_state::malformed;
            return false;
        }
        if (v.kind == detail::cg_limit_kind::max || detail::cg_is_unlimited(v.bytes, physical)) {
            state = detail::cg_limit_state::unlimited;
            return false;
        }
        state = detail::cg_limit_state::limited;
        bytes = v.bytes;
        return true;
    }

    bool read_u64(detail::cg_file& f, std::uint64_t& out) noexcept {
        const auto t = f.read(m_buf);
        if (!t) return false;
        const auto v = detail::cg_parse_u64(*t);
        if (!v) return false;
        out = *v;
        return true;
    }

    // Reads level i's usage; a value that is not plausible memory is refused and remembered.
    bool read_usage(std::size_t i, std::uint64_t physical, std::uint64_t& out) noexcept {
        auto& f = m_files[i];
        f.usage_rejected = 0;
        if (!f.usage.is_open()) return false;
        std::uint64_t v = 0;
        if (!read_u64(f.usage, v)) {
            f.usage_state = detail::cg_limit_state::malformed;
            return false;
        }
        if (!detail::cg_is_plausible_bytes(v, physical)) {
            f.usage_state = detail::cg_limit_state::malformed;
            f.usage_rejected = v;
            return false;
        }
        f.usage_state = detail::cg_limit_state::limited;
        out = v;
        return true;
    }

    void read_cgroups(detail::cg_sample& s) noexcept {
        const bool v2 = m_layout.controller == memory_controller::v2;
        bool best = false;
        std::int64_t best_headroom = 0;
        std::uint64_t best_limit = 0, best_usage = 0;
        bool best_usage_ok = false;
        limit_source best_kind = limit_source::unknown;
        std::uint64_t min_visible = UINT64_MAX;
        for (std::size_t i = 0; i < m_files.size(); ++i) {
            auto& f = m_files[i];
            std::uint64_t lim = 0;
            bool limited = read_limit(f.limit, f.limit_state, s.physical, lim);
            limit_source kind = v2 ? limit_source::cgroup_v2_max : limit_source::cgroup_v1_limit;
            if (v2) {
                std::uint64_t high = 0;
                if (read_limit(f.high, f.high_state, s.physical, high) && (!limited || high < lim)) {
                    lim = high;
                    limited = true;
                    kind = limit_source::cgroup_v2_high;
                }
            }
            if (f.limit_state == detail::cg_limit_state::malformed ||
                f.high_state == detail::cg_limit_state::malformed ||
                (i == 0 && f.limit_state == detail::cg_limit_state::absent && m_layout.levels.size() > 1)) {
                s.fallbacks |= detail::cg_fb_limit_unreadable;
            }
            if (!limited) continue;
            min_visible = lim < min_visible ? lim : min_visible;
            open_usage(i);
            std::uint64_t usage = 0;
            const bool usage_ok = read_usage(i, s.physical, usage);
            // Headroom decides which limit binds; without usage, the limit itself does.
            const std::int64_t headroom =
                static_cast<std::int64_t>(lim > INT64_MAX ? INT64_MAX : lim) -
                (usage_ok ? static_cast<std::int64_t>(usage > INT64_MAX ? INT64_MAX : usage) : 0);
            if (!best || headroom < best_headroom || (headroom == best_headroom && lim < best_limit)) {
                best = true;
                best_headroom = headroom;
                best_limit = lim;
                best_usage = usage;
                best_usage_ok = usage_ok;
                best_kind = kind;
                s.binding = static_cast<int>(i);
            }
        }
        // v1: a limit set above the visible tree shows only in hierarchical_memory_limit.
        if (!v2 && !m_files.empty()) {
            auto& leaf = m_files.front();
            if (const auto t = leaf.stat.read(m_buf)) {
                const auto h = detail::cg_find_key(*t, "hierarchical_memory_limit");
                if (h && !detail::cg_is_unlimited(h.value, s.physical) && h.value < min_visible) {
                    const std::size_t top = m_files.size() - 1;
                    open_usage(top);
                    best = true;
                    best_limit = h.value;
                    best_usage_ok = read_usage(top, s.physical, best_usage);
                    best_kind = limit_source::cgroup_v1_hierarchical;
                    s.binding = static_cast<int>(top);
                    s.fallbacks |= detail::cg_fb_hierarchical_above;
                }
            }
        }
        // Peak, OOM kills and inactive_file come from the binding cgroup, else the leaf.
        const std::size_t st = best ? idx(s.binding) : 0;
        s.stats_level = static_cast<int>(st);
        open_stats(st);
        auto& sf = m_files[st];
        bool stat_ok = false;
        if (const auto t = sf.stat.read(m_buf)) {
            auto v = detail::cg_find_key(*t, v2 ? "inactive_file" : "total_inactive_file");
            if (!v && !v2) v = detail::cg_find_key(*t, "inactive_file");
            if (v) {
                s.inactive_file = v.value;
                stat_ok = true;
            }
        }
        if (const auto t = sf.events.read(m_buf)) {
            const auto v = detail::cg_find_key(*t, "oom_kill");
            if (v) {
                s.has_oom = true;
                s.oom_kills = v.value;
            }
        }
        if (!s.has_oom) s.fallbacks |= detail::cg_fb_oom_unreadable;
        s.has_peak = read_u64(sf.peak, s.peak);
        if (s.has_peak && !detail::cg_is_plausible_bytes(s.peak, s.physical)) {
            s.has_peak = false;
            s.rejected_peak = s.peak;
            s.peak = 0;
            s.fallbacks |= detail::cg_fb_peak_implausible;
        }
        if (!s.has_peak) s.fallbacks |= detail::cg_fb_peak_unreadable;

        if (!best) {
            s.fallbacks |= detail::cg_fb_no_cgroup_limit;
            return;
        }
        s.has_cgroup_limit = true;
        s.cgroup_limit = best_limit;
        s.limit = best_limit;
        s.limit_from = best_kind;
        if (!best_usage_ok) {
            s.fallbacks |= detail::cg_fb_usage_unreadable;
            if (const std::uint64_t rejected = m_files[idx(s.binding)].usage_rejected; rejected != 0) {
                s.rejected_usage = rejected;
                s.fallbacks |= detail::cg_fb_usage_implausible;
            }
            return;
        }
        s.usage = best_usage;
        s.usage_from = v2 ? usage_source::cgroup_v2 : usage_source::cgroup_v1;
        if (stat_ok && s.inactive_file > best_usage) {
            // The two files disagree (read at different moments, or one is wrong): subtracting
            // would report less than nothing in use. Usage is the safe side.
            s.working_set = best_usage;
            s.fallbacks |= detail::cg_fb_inactive_above_usage;
        } else if (stat_ok) {
            s.working_set = best_usage - s.inactive_file;
            s.working_set_from_stat = true;
        } else {
            s.working_set = best_usage;
            s.fallbacks |= detail::cg_fb_stat_unreadable;
        }
    }

    void read_psi(detail::cg_sample& s) noexcept {
        if (!m_psi_cgroup.path().empty()) {
            if (const auto t = m_psi_cgroup.read(m_buf)) {
                if (const auto p = detail::psi_parse(*t)) {
                    s.psi = *p;
                    s.has_psi = true;
                    s.psi_from_cgroup = true;
                    return;
                }
            }
            s.fallbacks |= detail::cg_fb_psi_system;
        }
        if (const auto t = m_psi_proc.read(m_buf)) {
            if (const auto p = detail::psi_parse(*t)) {
                s.psi = *p;
                s.has_psi = true;
                return;
            }
        }
        s.fallbacks |= detail::cg_fb_psi_unreadable;
    }

    void decide(detail::cg_sample& s) const noexcept {
        if (s.limit_from == limit_source::unknown && s.physical != 0) {
            s.limit = s.physical;
            s.limit_from = limit_source::physical_memory;
        }
        if (s.usage_from == usage_source::unknown && s.has_rss) {
            s.usage = s.rss;
            s.working_set = s.rss;
            s.usage_from = usage_source::proc_statm;
        }
        if (m_env_limit) {
            s.limit = *m_env_limit;
            s.limit_from = limit_source::environment;
        }
        if (m_cfg.explicit_limit) {
            s.limit = *m_cfg.explicit_limit;
            s.limit_from = limit_source::configuration;
        }
    }

    cgroup_config m_cfg;
    cgroup_layout m_layout;
    std::vector<std::string> m_notes; // reader-level notes (environment)
    std::optional<std::uint64_t> m_env_limit;
    std::vector<detail::cg_level_files> m_files;
    detail::cg_file m_meminfo;
    detail::cg_file m_statm;
    detail::cg_file m_psi_cgroup; // memory.pressure in the unified hierarchy (path empty: none)
    detail::cg_file m_psi_proc;   // /proc/pressure/memory
    std::string m_buf;
    std::uint64_t m_page_size = 4096;
    std::string m_blind_reason;    // why the last (re)load cannot see; empty when it can
    std::string m_no_usage_reason; // built at (re)load, so a sample never allocates for it
    std::string m_no_limit_reason;
    bool m_last_incomplete = false; // the last sample found no limit or no usage
    bool m_last_no_usage = false;   // ... and it was the usage that was missing
};

MEMGOV_NAMESPACE_END
