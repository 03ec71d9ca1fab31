// SPDX-License-Identifier: MIT
#pragma once

// A fake cgroup + /proc tree under a temporary directory, for tests of the cgroup reader, the
// pressure monitor and anything built on them (the governor's replay tests).
//
//   auto t = memgov_test::fake_cgroup_tree::v2("/app");      // or ::v1(...), ::hybrid(...)
//   t.set_limit("/app", 512 * MiB);                          // memory.max / limit_in_bytes
//   t.set_usage("/app", 100 * MiB);                          // memory.current / usage_in_bytes
//   t.set_inactive_file("/app", 10 * MiB);                   // memory.stat
//   memgov::cgroup_reader r{t.config()};                     // root = t.root(), no env
//
// Every setter rewrites its file IN PLACE (truncate + write on the same inode), so a reader
// that keeps the file open and re-reads it with pread sees the new value. The tree is removed
// when the object is destroyed. Cgroup paths are as the process sees them in /proc/self/cgroup
// ("/" is the hierarchy's root); missing ancestors are created with unlimited defaults.
//
// Layouts:
//   v2      cgroup2 mounted at /sys/fs/cgroup, memory in cgroup.controllers.
//   v1      cgroup v1 controllers under /sys/fs/cgroup/<ctrl>, memory at /sys/fs/cgroup/memory.
//   hybrid  v1 controllers as above, plus cgroup2 at /sys/fs/cgroup/unified without memory
//           (the layout of common container hosts); memory.pressure lives in the v2 tree.

#include <memgov/cgroup.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

namespace memgov_test {

inline constexpr std::uint64_t fake_kib = 1024;
inline constexpr std::uint64_t fake_mib = 1024 * 1024;
inline constexpr std::uint64_t fake_gib = 1024 * 1024 * 1024;
/// The v1 "unlimited" value with 4 KiB pages.
inline constexpr std::uint64_t v1_unlimited = 9223372036854771712ULL;

class fake_cgroup_tree {
public:
    enum class kind { v1, v2, hybrid };

    /// Pure cgroup v2. `mount_root` is the mountinfo root field (e.g. a container's cgroup).
    static fake_cgroup_tree v2(std::string process_cgroup = "/app", std::string mount_root = "/") {
        return fake_cgroup_tree{kind::v2, std::move(process_cgroup), std::move(mount_root)};
    }
    /// cgroup v1 only.
    static fake_cgroup_tree v1(std::string process_cgroup = "/app", std::string mount_root = "/") {
        return fake_cgroup_tree{kind::v1, std::move(process_cgroup), std::move(mount_root)};
    }
    /// Memory on v1, cgroup2 at /sys/fs/cgroup/unified without memory; the process is at "/"
    /// in the unified hierarchy.
    static fake_cgroup_tree hybrid(std::string process_cgroup = "/app", std::string mount_root = "/") {
        return fake_cgroup_tree{kind::hybrid, std::move(process_cgroup), std::move(mount_root)};
    }

    fake_cgroup_tree(fake_cgroup_tree&& o) noexcept
        : m_kind{o.m_kind}, m_root{std::exchange(o.m_root, {})}, m_mount_root{std::move(o.m_mount_root)},
          m_process{std::move(o.m_process)}, m_groups{std::move(o.m_groups)}, m_hidden_limit{o.m_hidden_limit} {}
    fake_cgroup_tree(const fake_cgroup_tree&) = delete;
    fake_cgroup_tree& operator=(const fake_cgroup_tree&) = delete;
    fake_cgroup_tree& operator=(fake_cgroup_tree&&) = delete;
    ~fake_cgroup_tree() {
        if (m_root.empty()) return;
        std::error_code ec;
        std::filesystem::remove_all(m_root, ec);
    }

    /// The temporary directory standing for "/".
    [[nodiscard]] const std::string& root() const noexcept { return m_root; }
    [[nodiscard]] kind layout_kind() const noexcept { return m_kind; }
    [[nodiscard]] bool is_v2() const noexcept { return m_kind == kind::v2; }
    /// The process's cgroup in the memory hierarchy.
    [[nodiscard]] const std::string& process_cgroup() const noexcept { return m_process; }
    /// A reader configuration on this tree, with the environment override switched off.
    [[nodiscard]] memgov::cgroup_config config() const {
        memgov::cgroup_config c;
        c.root = m_root;
        c.limit_env = "";
        return c;
    }

    /// Writes `content` to `rel` (a path under the root, e.g. "/proc/meminfo") in place.
    void write(std::string_view rel, std::string_view content) const {
        const std::filesystem::path p = path(rel);
        std::filesystem::create_directories(p.parent_path());
        std::FILE* f = std::fopen(p.c_str(), "w"); // "w" truncates; the inode stays the same
        if (f == nullptr) throw std::runtime_error{"fake_cgroup_tree: cannot write " + p.string()};
        std::fwrite(content.data(), 1, content.size(), f);
        std::fclose(f);
    }
    /// Replaces `rel` with a FIFO (nobody writes to it: a blocking open or read would hang).
    void make_fifo(std::string_view rel) const {
        const std::filesystem::path p = path(rel);
        std::filesystem::create_directories(p.parent_path());
        std::error_code ec;
        std::filesystem::remove(p, ec);
        if (::mkfifo(p.c_str(), 0600) != 0) {
            throw std::runtime_error{"fake_cgroup_tree: mkfifo " + p.string()};
        }
    }
    /// Replaces `rel` with a symbolic link to `target` (e.g. "/dev/zero").
    void make_symlink(std::string_view rel, const std::string& target) const {
        const std::filesystem::path p = path(rel);
        std::filesystem::create_directories(p.parent_path());
        std::error_code ec;
        std::filesystem::remove(p, ec);
        std::filesystem::create_symlink(target, p);
    }
    /// Removes a file under the root (to test missing files).
    void remove(std::string_view rel) const {
        std::error_code ec;
        std::filesystem::remove(path(rel), ec);
    }
    /// The absolute path of `rel` under the root.
    [[nodiscard]] std::filesystem::path path(std::string_view rel) const {
        std::string r{rel};
        while (!r.empty() && r.front() == '/') r.erase(0, 1);
        return std::filesystem::path{m_root} / r;
    }
    /// The directory (as the process sees it, without the root) of `cgroup` in the memory
    /// hierarchy.
    [[nodiscard]] std::string dir(std::string_view cgroup) const {
        const std::string base = m_kind == kind::v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
        std::string rel{cgroup};
        // The mount shows the hierarchy from mount_root down.
        if (m_mount_root != "/" && rel.rfind(m_mount_root, 0) == 0) rel.erase(0, m_mount_root.size());
        while (!rel.empty() && rel.back() == '/') rel.pop_back();
        return rel.empty() || rel == "/" ? base : base + rel;
    }

    /// Creates `cgroup` (and missing ancestors) with unlimited defaults.
    void add_cgroup(std::string_view cgroup) {
        std::string cg = normal(cgroup);
        if (m_groups.count(cg) != 0) return;
        if (cg != top() && cg != "/") add_cgroup(parent(cg));
        group g;
        if (is_v2()) {
            g.stat = {{"anon", 0},        {"file", 0},           {"kernel", 0},      {"kernel_stack", 0},
                      {"pagetables", 0},  {"sock", 0},           {"shmem", 0},       {"file_mapped", 0},
                      {"file_dirty", 0},  {"file_writeback", 0}, {"swapcached", 0},  {"inactive_anon", 0},
                      {"active_anon", 0}, {"inactive_file", 0},  {"active_file", 0}, {"unevictable", 0},
                      {"slab", 0},        {"pgfault", 0}};
        } else {
            g.stat = {{"cache", 0},
                      {"rss", 0},
                      {"rss_huge", 0},
                      {"shmem", 0},
                      {"mapped_file", 0},
                      {"inactive_anon", 0},
                      {"active_anon", 0},
                      {"inactive_file", 0},
                      {"active_file", 0},
                      {"unevictable", 0},
                      {"hierarchical_memory_limit", v1_unlimited},
                      {"hierarchical_memsw_limit", v1_unlimited},
                      {"total_cache", 0},
                      {"total_rss", 0},
                      {"total_inactive_anon", 0},
                      {"total_active_anon", 0},
                      {"total_inactive_file", 0},
                      {"total_active_file", 0}};
        }
        m_groups.emplace(cg, std::move(g));
        const std::string d = dir(cg);
        std::filesystem::create_directories(path(d));
        if (is_v2()) {
            const bool real_root = cg == "/";
            if (!real_root) {
                write(d + "/memory.max", "max\n");
                write(d + "/memory.high", "max\n");
                write(d + "/memory.current", "0\n");
                write(d + "/memory.peak", "0\n");
                write(d + "/memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n");
            }
            write(d + "/memory.pressure", psi_text(0, 0, 0, 0));
            write(d + "/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
        } else {
            write(d + "/memory.limit_in_bytes", std::to_string(v1_unlimited) + "\n");
            write(d + "/memory.usage_in_bytes", "0\n");
            write(d + "/memory.max_usage_in_bytes", "0\n");
            write(d + "/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n");
        }
        rewrite_stats();
    }

    /// Sets the hard limit: v2 memory.max ("max" for nullopt), v1 memory.limit_in_bytes (the
    /// unlimited sentinel for nullopt; every hierarchical_memory_limit is recomputed).
    void set_limit(std::string_view cgroup, std::optional<std::uint64_t> bytes) {
        const std::string cg = ensure(cgroup);
        m_groups[cg].limit = bytes;
        if (is_v2()) {
            write(dir(cg) + "/memory.max", bytes ? std::to_string(*bytes) + "\n" : "max\n");
        } else {
            write(dir(cg) + "/memory.limit_in_bytes", std::to_string(bytes ? *bytes : v1_unlimited) + "\n");
            rewrite_stats();
        }
    }
    /// v2 memory.high ("max" for nullopt).
    void set_high(std::string_view cgroup, std::optional<std::uint64_t> bytes) {
        const std::string cg = ensure(cgroup);
        write(dir(cg) + "/memory.high", bytes ? std::to_string(*bytes) + "\n" : "max\n");
    }
    /// v1 only: a limit on an ancestor above the visible tree; it shows only in
    /// hierarchical_memory_limit.
    void set_hidden_parent_limit(std::optional<std::uint64_t> bytes) {
        m_hidden_limit = bytes;
        rewrite_stats();
    }
    /// memory.current / memory.usage_in_bytes.
    void set_usage(std::string_view cgroup, std::uint64_t bytes) {
        const std::string cg = ensure(cgroup);
        write(dir(cg) + (is_v2() ? "/memory.current" : "/memory.usage_in_bytes"), std::to_string(bytes) + "\n");
    }
    /// Sets one memory.stat key (added at the end if new), other keys kept in their order.
    void set_stat(std::string_view cgroup, std::string_view key, std::uint64_t value) {
        const std::string cg = ensure(cgroup);
        auto& st = m_groups[cg].stat;
        bool found = false;
        for (auto& kv : st) {
            if (kv.first == key) {
                kv.second = value;
                found = true;
            }
        }
        if (!found) st.emplace_back(std::string{key}, value);
        write_stat(cg);
    }
    /// inactive_file (v2) or inactive_file and total_inactive_file (v1).
    void set_inactive_file(std::string_view cgroup, std::uint64_t bytes) {
        set_stat(cgroup, "inactive_file", bytes);
        if (!is_v2()) set_stat(cgroup, "total_inactive_file", bytes);
    }
    /// The OOM-kill counter (memory.events / memory.oom_control).
    void set_oom_kills(std::string_view cgroup, std::uint64_t n) {
        const std::string cg = ensure(cgroup);
        if (is_v2()) {
            write(dir(cg) + "/memory.events", "low 0\nhigh 0\nmax " + std::to_string(n) + "\noom " + std::to_string(n) +
                                                  "\noom_kill " + std::to_string(n) + "\noom_group_kill 0\n");
        } else {
            write(dir(cg) + "/memory.oom_control",
                  "oom_kill_disable 0\nunder_oom 0\noom_kill " + std::to_string(n) + "\n");
        }
    }
    /// Peak usage (memory.peak / memory.max_usage_in_bytes).
    void set_peak(std::string_view cgroup, std::uint64_t bytes) {
        const std::string cg = ensure(cgroup);
        write(dir(cg) + (is_v2() ? "/memory.peak" : "/memory.max_usage_in_bytes"), std::to_string(bytes) + "\n");
    }
    /// Memory PSI, both in the process's cgroup (v2 tree) and in /proc/pressure/memory.
    void set_psi(double some_avg10, double full_avg10, std::uint64_t some_total_us = 0,
                 std::uint64_t full_total_us = 0) const {
        const std::string text = psi_text(some_avg10, full_avg10, some_total_us, full_total_us);
        write("/proc/pressure/memory", text);
        write(v2_dir() + "/memory.pressure", text);
    }
    /// /proc/meminfo's MemTotal.
    void set_mem_total(std::uint64_t bytes) const {
        write("/proc/meminfo", "MemTotal:       " + std::to_string(bytes / 1024) +
                                   " kB\nMemFree:         1024 kB\nMemAvailable:    2048 kB\n"
                                   "Buffers:            0 kB\nCached:          4096 kB\n");
    }
    /// /proc/self/statm's resident field (bytes, rounded down to pages).
    void set_rss(std::uint64_t bytes) const {
        const std::uint64_t pages = bytes / page_size();
        write("/proc/self/statm", std::to_string(pages + 1000) + " " + std::to_string(pages) + " 100 10 0 " +
                                      std::to_string(pages) + " 0\n");
    }
    /// The page size statm is in (the reader multiplies by the real one).
    [[nodiscard]] static std::uint64_t page_size() noexcept {
        const long ps = ::sysconf(_SC_PAGESIZE);
        return ps > 0 ? static_cast<std::uint64_t>(ps) : 4096;
    }
    /// The unified hierarchy's directory of the process (where memory.pressure lives).
    [[nodiscard]] std::string v2_dir() const {
        if (m_kind == kind::v2) return dir(m_process);
        return "/sys/fs/cgroup/unified";
    }

private:
    struct group {
        std::optional<std::uint64_t> limit;
        std::vector<std::pair<std::string, std::uint64_t>> stat;
    };

    fake_cgroup_tree(kind k, std::string process, std::string mount_root)
        : m_kind{k}, m_mount_root{std::move(mount_root)}, m_process{normal(process)} {
        std::string tmpl = (std::filesystem::temp_directory_path() / "memgov-fake-cgroup-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error{"fake_cgroup_tree: mkdtemp failed"};
        m_root = tmpl;
        write("/proc/self/mountinfo", mountinfo());
        write("/proc/self/cgroup", proc_cgroup());
        set_mem_total(16 * fake_gib);
        set_rss(64 * fake_mib);
        write("/proc/pressure/memory", psi_text(0, 0, 0, 0));
        if (m_kind == kind::hybrid) {
            write("/sys/fs/cgroup/unified/cgroup.controllers", "\n");
            write("/sys/fs/cgroup/unified/memory.pressure", psi_text(0, 0, 0, 0));
        }
        add_cgroup(m_process);
    }

    static std::string normal(std::string_view cg) {
        std::string s{cg};
        if (s.empty() || s.front() != '/') s.insert(s.begin(), '/');
        while (s.size() > 1 && s.back() == '/') s.pop_back();
        return s;
    }
    static std::string parent(const std::string& cg) {
        const std::size_t slash = cg.rfind('/');
        return slash == 0 ? std::string{"/"} : cg.substr(0, slash);
    }
    [[nodiscard]] std::string top() const { return normal(m_mount_root); }
    std::string ensure(std::string_view cgroup) {
        const std::string cg = normal(cgroup);
        add_cgroup(cg);
        return cg;
    }

    [[nodiscard]] static std::string psi_text(double s10, double f10, std::uint64_t st, std::uint64_t ft) {
        char buf[256];
        std::snprintf(buf, sizeof buf,
                      "some avg10=%.2f avg60=%.2f avg300=%.2f total=%llu\n"
                      "full avg10=%.2f avg60=%.2f avg300=%.2f total=%llu\n",
                      s10, s10 / 2, s10 / 4, static_cast<unsigned long long>(st), f10, f10 / 2, f10 / 4,
                      static_cast<unsigned long long>(ft));
        return buf;
    }

    [[nodiscard]] std::string mountinfo() const {
        std::string m = "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
                        "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n"
                        "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n";
        if (m_kind == kind::v2) {
            m += "31 23 0:28 " + m_mount_root +
                 " /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
                 "rw,nsdelegate,memory_recursiveprot\n";
            return m;
        }
        m += "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
             "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
             "35 31 0:32 " +
             m_mount_root +
             " /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
             "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
             "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n";
        if (m_kind == kind::hybrid) {
            m += "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        }
        return m;
    }
    [[nodiscard]] std::string proc_cgroup() const {
        if (m_kind == kind::v2) return "0::" + m_process + "\n";
        std::string s = "9:name=systemd:/\n8:pids:/\n4:memory:" + m_process + "\n1:cpu:/\n";
        if (m_kind == kind::hybrid) s += "0::/\n";
        return s;
    }

    void write_stat(const std::string& cg) {
        std::string text;
        for (const auto& [k, v] : m_groups[cg].stat) text += k + " " + std::to_string(v) + "\n";
        write(dir(cg) + "/memory.stat", text);
    }
    // v1: hierarchical_memory_limit = min over the cgroup, its ancestors and the hidden limit.
    void rewrite_stats() {
        for (auto& [cg, g] : m_groups) {
            if (!is_v2()) {
                std::uint64_t h = m_hidden_limit.value_or(v1_unlimited);
                for (std::string a = cg;; a = parent(a)) {
                    const auto it = m_groups.find(a);
                    if (it != m_groups.end() && it->second.limit && *it->second.limit < h) h = *it->second.limit;
                    if (a == top() || a == "/") break;
                }
                for (auto& kv : g.stat) {
                    if (kv.first == "hierarchical_memory_limit") kv.second = h;
                }
            }
            write_stat(cg);
        }
    }

    kind m_kind;
    std::string m_root;
    std::string m_mount_root;
    std::string m_process;
    std::map<std::string, group> m_groups;
    std::optional<std::uint64_t> m_hidden_limit;
};

} // namespace memgov_test
