// SPDX-License-Identifier: MIT
// Tests of the cgroup reader: the parsers, every fixture tree under tests/data/cgroup/, fake
// trees rewritten in place, the environment and explicit overrides, error codes, hostile files
// (FIFOs, devices, oversized files, implausible numbers), a blind reader, and a real memory
// cgroup where the machine lets us create one.
//
// The real-cgroup test needs root and a writable memory hierarchy. Where it cannot create its
// cgroup it prints "MEMGOV_SKIP: ..." and returns, and ctest reports it as skipped.

#include <memgov/cgroup.hpp>
#include <memgov/detail/psi_trigger.hpp>

#include "fake_cgroup.hpp"
#include "real_cgroup.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

using memgov::cgroup_config;
using memgov::cgroup_mode;
using memgov::cgroup_reader;
using memgov::limit_source;
using memgov::memory_controller;
using memgov::memory_reading;
using memgov::usage_source;
using memgov_test::fake_cgroup_tree;
using memgov_test::fake_gib;
using memgov_test::fake_mib;

namespace {

constexpr std::uint64_t MiB = 1024 * 1024;
constexpr std::uint64_t GiB = 1024 * MiB;

std::string fixture(const char* name) { return std::string{MEMGOV_TEST_DATA_DIR} + "/cgroup/" + name; }

memory_reading read_fixture(const char* name, std::error_code* ec_out = nullptr) {
    cgroup_config c;
    c.root = fixture(name);
    c.limit_env = "";
    cgroup_reader r{c};
    std::error_code ec;
    memory_reading m = r.read(ec);
    if (ec_out != nullptr) *ec_out = ec;
    return m;
}

bool ends_with(const std::string& s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool any_contains(const std::vector<std::string>& v, std::string_view needle) {
    for (const auto& s : v) {
        if (s.find(needle) != std::string::npos) return true;
    }
    return false;
}

std::string join_lines(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += "  " + s + "\n";
    return out;
}

std::uint64_t statm_rss_of_fixture() { return 1000 * fake_cgroup_tree::page_size(); }

// Runs `fn` in a forked child: true if it exits normally within `limit`. A child still running
// then is killed (by its own pid) and counts as a hang.
template <class Fn>
bool finishes_in_child(Fn fn, std::chrono::seconds limit) {
    const pid_t pid = ::fork();
    if (pid < 0) return false;
    if (pid == 0) {
        try {
            fn();
        } catch (...) {
            ::_exit(2);
        }
        ::_exit(0);
    }
    const auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    for (;;) {
        if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (std::chrono::steady_clock::now() >= deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds{10}); // polling the child, not faking time
    }
}

} // namespace

// ---------------------------------------------------------------------------------------------
// Parsers

TEST_CASE("cgroup: numbers are strict", "[cgroup]") {
    using namespace memgov::detail;
    CHECK(cg_parse_u64("42\n") == 42U);
    CHECK(cg_parse_u64("  18446744073709551615 ") == 18446744073709551615ULL);
    CHECK_FALSE(cg_parse_u64("18446744073709551616"));
    CHECK_FALSE(cg_parse_u64("-1"));
    CHECK_FALSE(cg_parse_u64("12abc"));
    CHECK_FALSE(cg_parse_u64(""));
    CHECK(cg_parse_limit("max\n").kind == cg_limit_kind::max);
    CHECK(cg_parse_limit("0").kind == cg_limit_kind::value);
    CHECK(cg_parse_limit("0").bytes == 0);
    CHECK(cg_parse_limit("banana").kind == cg_limit_kind::malformed);
    CHECK(cg_is_unlimited(9223372036854771712ULL, 0));
    CHECK(cg_is_unlimited(9223372036854710272ULL, 0)); // 64 KiB pages
    CHECK(cg_is_unlimited(32 * GiB, 16 * GiB));
    CHECK_FALSE(cg_is_unlimited(16 * GiB, 16 * GiB)); // LXCFS: MemTotal is the container's limit
    CHECK(cg_is_unlimited(16 * GiB + 4096, 16 * GiB));
    CHECK_FALSE(cg_is_unlimited(15 * GiB, 16 * GiB));
    CHECK_FALSE(cg_is_unlimited(0, 16 * GiB));
    CHECK(cg_parse_size("512M") == 512 * MiB);
    CHECK(cg_parse_size("512MiB") == 512 * MiB);
    CHECK(cg_parse_size("2g") == 2 * GiB);
    CHECK(cg_parse_size("1073741824") == GiB);
    CHECK(cg_parse_size("4096B") == 4096U);
    CHECK(cg_parse_size("3 KiB") == 3072U);
    CHECK_FALSE(cg_parse_size("1.5G"));
    CHECK_FALSE(cg_parse_size("12X"));
    CHECK_FALSE(cg_parse_size("99999999999999999999"));
    CHECK_FALSE(cg_parse_size("17179869184T"));
    CHECK(cg_parse_decimal("12.34").value() == Approx(12.34));
    CHECK_FALSE(cg_parse_decimal("1e5"));
    CHECK_FALSE(cg_parse_decimal("-1.0"));
}

TEST_CASE("cgroup: mountinfo parsing handles optional fields, escapes and garbage", "[cgroup]") {
    using namespace memgov::detail;
    const char* text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
                       "31 23 0:28 / /sys/fs/my\\040cgroup rw shared:9 master:3 propagate_from:2 unbindable - "
                       "cgroup2 cgroup2 rw,nsdelegate with spaces\n"
                       "35 31 0:32 /docker/a\\134b /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                       "36 31 0:33 / /sys/fs/cgroup/memsw rw - cgroup cgroup rw,memory_extra\n"
                       "garbage line\n"
                       "1 2 3 4 5 6 7 no separator here\n"
                       "37 31 0:33 relative /x rw - cgroup cgroup rw,memory\n";
    const cg_mountinfo mi = cg_parse_mountinfo(text);
    REQUIRE(mi.mounts.size() == 3);
    CHECK(mi.mounts[0].mount_point == "/sys/fs/my cgroup");
    CHECK(mi.mounts[0].v2);
    CHECK(mi.mounts[0].super_options == "rw,nsdelegate with spaces");
    CHECK(mi.mounts[1].root == "/docker/a\\b");
    CHECK(mi.mounts[1].v1_memory);
    CHECK_FALSE(mi.mounts[2].v1_memory); // "memory_extra" is not "memory"
    CHECK(mi.malformed_lines == 3);
    CHECK(cg_unescape_octal("a\\011b\\012c\\0") == "a\tb\nc\\0");
    CHECK(cg_unescape_octal("\\777") == "\\777"); // not a byte: kept
}

TEST_CASE("cgroup: /proc/self/cgroup parsing", "[cgroup]") {
    using namespace memgov::detail;
    const cg_membership m =
        cg_parse_proc_cgroup("12:cpu,cpuacct:/a\n11:blkio,memory:/svc/x:y:z\n0::/unified/path\nbad\n3:cpu\nq::/x\n");
    CHECK(m.v1_memory == "/svc/x:y:z");
    CHECK(m.v2 == "/unified/path");
    CHECK(m.malformed_lines == 3);
    const cg_membership none = cg_parse_proc_cgroup("");
    CHECK_FALSE(none.v1_memory);
    CHECK_FALSE(none.v2);
}

TEST_CASE("cgroup: a cgroup path is made relative to the mount root; escapes are refused", "[cgroup]") {
    using namespace memgov::detail;
    CHECK(cg_relative_path("/", "/a/b") == "a/b");
    CHECK(cg_relative_path("/", "/") == "");
    CHECK(cg_relative_path("/docker/abc", "/docker/abc") == "");
    CHECK(cg_relative_path("/docker/abc", "/docker/abc/sub") == "sub");
    CHECK(cg_relative_path("/docker/abc/", "//docker//abc/./sub/") == "sub");
    CHECK_FALSE(cg_relative_path("/docker/abc", "/docker/abcd"));
    CHECK_FALSE(cg_relative_path("/docker/abc", "/docker/xyz"));
    CHECK_FALSE(cg_relative_path("/", "/../other"));
    CHECK_FALSE(cg_relative_path("/a", "/a/../b"));
    CHECK_FALSE(cg_relative_path("relative", "/a"));
}

TEST_CASE("cgroup: key-value files are looked up by name in any order", "[cgroup]") {
    using namespace memgov::detail;
    const char* stat = "zzz 1\ninactive_file 42\nanon 7\ninactive_file 99\nbad x\n";
    CHECK(cg_find_key(stat, "inactive_file").value == 42U);
    CHECK(cg_find_key(stat, "anon").value == 7U);
    CHECK(cg_find_key(stat, "missing").status == cg_lookup::missing);
    CHECK(cg_find_key(stat, "bad").status == cg_lookup::malformed);
    CHECK(cg_find_key("inactive_file_x 1\n", "inactive_file").status == cg_lookup::missing);
    CHECK(cg_find_key("oom_kill 3 extra\n", "oom_kill").status == cg_lookup::malformed);
    CHECK(cg_find_meminfo("MemFree: 1 kB\nMemTotal:   16 kB\n", "MemTotal").value == 16384U);
    CHECK(cg_find_meminfo("MemTotal: 16 MB\n", "MemTotal").status == cg_lookup::malformed);
    const auto statm = cg_parse_statm("100 50 10 1 0 40 0\n");
    REQUIRE(statm);
    CHECK(statm->resident == 50U);
    CHECK_FALSE(cg_parse_statm("100 x 10"));
}

TEST_CASE("cgroup: PSI parsing reads keys by name; full is optional", "[cgroup]") {
    using namespace memgov::detail;
    const auto p = psi_parse("some avg60=2.50 total=99 avg10=1.25 avg300=0.10 future=1\n"
                             "full avg10=0.50 avg60=0.25 avg300=0.00 total=7\n");
    REQUIRE(p);
    CHECK(p->some.avg10 == Approx(1.25));
    CHECK(p->some.avg60 == Approx(2.5));
    CHECK(p->some.total_us == 99U);
    CHECK(p->has_full);
    CHECK(p->full.total_us == 7U);
    const auto only_some = psi_parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=0");
    REQUIRE(only_some);
    CHECK_FALSE(only_some->has_full);
    CHECK_FALSE(psi_parse("some avg10=abc avg60=0 avg300=0 total=0\n"));
    CHECK_FALSE(psi_parse("some avg10=1.0 avg60=0.0 total=0\n")); // avg300 missing
    CHECK_FALSE(psi_parse("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"));
    CHECK_FALSE(psi_parse(""));
}

TEST_CASE("cgroup: systemd trigger text and base64", "[cgroup]") {
    using namespace memgov::detail;
    CHECK(psi_base64_decode("c29tZSAyMDAwMDAgMjAwMDAwMAA=") == std::string{"some 200000 2000000\0", 20});
    CHECK(psi_base64_decode("c29tZQ") == "some");
    CHECK_FALSE(psi_base64_decode("c29t*ZQ=="));
    CHECK_FALSE(psi_base64_decode("c=29t"));
    const auto t = psi_parse_trigger(std::string{"some 200000 2000000\0", 20});
    REQUIRE(t);
    CHECK_FALSE(t->full);
    CHECK(t->stall_us == 200000U);
    CHECK(t->window_us == 2000000U);
    CHECK(t->percent() == Approx(10.0));
    CHECK(psi_parse_trigger("full 1 2")->full);
    CHECK_FALSE(psi_parse_trigger("some 3 2"));
    CHECK_FALSE(psi_parse_trigger("some 1 0"));
    CHECK_FALSE(psi_parse_trigger("half 1 2"));
    CHECK_FALSE(psi_parse_trigger("some 1 2 3"));
}

// ---------------------------------------------------------------------------------------------
// Fixture trees

TEST_CASE("cgroup: fixture v2 nested, the parent's lower limit binds and usage comes from it", "[cgroup]") {
    const memory_reading m = read_fixture("v2_nested_parent_limit");
    INFO(join_lines(m.fallbacks));
    CHECK(m.mode == cgroup_mode::v2);
    CHECK(m.controller == memory_controller::v2);
    CHECK(m.limit_bytes == 256 * MiB);
    CHECK(m.limit_from == limit_source::cgroup_v2_max);
    CHECK(m.binding_cgroup == "/kubepods/pod1");
    CHECK(ends_with(m.limit_origin, "/sys/fs/cgroup/kubepods/pod1/memory.max"));
    CHECK(m.usage_bytes == 120 * MiB); // the parent's, not the leaf's 100 MiB
    CHECK(m.usage_from == usage_source::cgroup_v2);
    CHECK(ends_with(m.usage_origin, "/kubepods/pod1/memory.current"));
    CHECK(m.inactive_file_bytes == 20 * MiB);
    CHECK(m.working_set_bytes == 100 * MiB);
    CHECK(ends_with(m.working_set_origin, "/kubepods/pod1/memory.stat"));
    CHECK(m.peak_bytes == 200 * MiB);
    CHECK(m.oom_kills == 3U);
    CHECK(ends_with(m.oom_origin, "/kubepods/pod1/memory.events"));
    REQUIRE(m.psi);
    CHECK(ends_with(m.psi_origin, "/kubepods/pod1/ctr/memory.pressure")); // the process's own
    CHECK(m.psi->some.avg10 == Approx(2.0));
    CHECK(m.psi->full.total_us == 555U);
    CHECK(m.rss_bytes == statm_rss_of_fixture());
    CHECK(m.physical_memory_bytes == 16 * GiB);
    CHECK(m.fallbacks.empty());
    CHECK(m.complete());
}

TEST_CASE("cgroup: the layout is found from mountinfo and /proc/self/cgroup, as the reader finds it", "[cgroup]") {
    const std::string root = fixture("v2_nested_parent_limit");
    memgov::cgroup_layout l;
    std::error_code ec;
    memgov::detail::cg_find_layout(root, l, ec);
    CHECK_FALSE(ec);
    INFO(join_lines(l.notes));
    CHECK(l.mode == cgroup_mode::v2);
    CHECK(l.controller == memory_controller::v2);
    CHECK(l.mount_point == "/sys/fs/cgroup");
    CHECK(l.mount_root == "/");
    CHECK(l.process_cgroup == "/kubepods/pod1/ctr");
    CHECK(l.v2_directory == "/sys/fs/cgroup/kubepods/pod1/ctr");
    std::vector<std::string> cgroups, directories;
    for (const auto& lvl : l.levels) {
        cgroups.push_back(lvl.cgroup);
        directories.push_back(lvl.directory);
    }
    CHECK(cgroups == std::vector<std::string>{"/kubepods/pod1/ctr", "/kubepods/pod1", "/kubepods", "/"});
    CHECK(directories == std::vector<std::string>{"/sys/fs/cgroup/kubepods/pod1/ctr", "/sys/fs/cgroup/kubepods/pod1",
                                                  "/sys/fs/cgroup/kubepods", "/sys/fs/cgroup"});
    CHECK(l.notes.empty());

    cgroup_config c;
    c.root = root;
    c.limit_env = "";
    const cgroup_reader r{c};
    CHECK(r.layout().levels.size() == l.levels.size());
    CHECK(r.layout().v2_directory == l.v2_directory);
    CHECK(memgov::detail::cg_root_problem(root).empty());
    CHECK(memgov::detail::cg_root_problem(root + "/no-such-dir").find("cannot be used") != std::string::npos);
    CHECK(memgov::detail::cg_root_problem(root + "/proc/meminfo") ==
          "the root " + root + "/proc/meminfo is not a directory");
}

TEST_CASE("cgroup: fixture v2 memory.high below memory.max binds", "[cgroup]") {
    const memory_reading m = read_fixture("v2_high");
    CHECK(m.limit_bytes == 768 * MiB);
    CHECK(m.limit_from == limit_source::cgroup_v2_high);
    CHECK(ends_with(m.limit_origin, "/app/memory.high"));
    CHECK(m.cgroup_limit_bytes == 768 * MiB);
    CHECK(m.working_set_bytes == 200 * MiB);
}

TEST_CASE("cgroup: fixture v1 with the limit above the visible tree uses hierarchical_memory_limit", "[cgroup]") {
    const memory_reading m = read_fixture("v1_hierarchical");
    INFO(join_lines(m.fallbacks));
    CHECK(m.mode == cgroup_mode::v1);
    CHECK(m.controller == memory_controller::v1);
    CHECK(m.limit_bytes == 512 * MiB);
    CHECK(m.limit_from == limit_source::cgroup_v1_hierarchical);
    CHECK(m.binding_cgroup == "/docker/abc"); // mount root /docker/abc, process at /docker/abc
    CHECK(ends_with(m.limit_origin, "/sys/fs/cgroup/memory/memory.stat"));
    CHECK(m.usage_bytes == 200 * MiB);
    CHECK(m.usage_from == usage_source::cgroup_v1);
    CHECK(m.inactive_file_bytes == 50 * MiB); // total_inactive_file, not inactive_file
    CHECK(m.working_set_bytes == 150 * MiB);
    CHECK(m.peak_bytes == 300 * MiB);
    CHECK(m.oom_kills == 1U);
    CHECK(ends_with(m.psi_origin, "/proc/pressure/memory")); // the unified tree has no file here
    CHECK(any_contains(m.fallbacks, "above the visible cgroup tree"));
}

TEST_CASE("cgroup: fixture v1 nested, a visible parent limit binds", "[cgroup]") {
    const memory_reading m = read_fixture("v1_nested");
    CHECK(m.limit_bytes == GiB);
    CHECK(m.limit_from == limit_source::cgroup_v1_limit);
    CHECK(m.binding_cgroup == "/svc");
    CHECK(m.usage_bytes == 600 * MiB);
    CHECK(m.working_set_bytes == 500 * MiB);
}

TEST_CASE("cgroup: fixture hybrid in this host kind's layout, all unlimited", "[cgroup]") {
    cgroup_config c;
    c.root = fixture("hybrid_host");
    c.limit_env = "";
    cgroup_reader r{c};
    const auto& l = r.layout();
    CHECK(l.mode == cgroup_mode::hybrid);
    CHECK(l.controller == memory_controller::v1);
    CHECK(l.mount_point == "/sys/fs/cgroup/memory");
    CHECK(l.mount_root == "/");
    CHECK(l.process_cgroup == "/docker/0123456789abcdef0123456789abcdef");
    REQUIRE(l.levels.size() == 3);
    CHECK(l.levels[0].cgroup == "/docker/0123456789abcdef0123456789abcdef");
    CHECK(l.levels[0].directory == "/sys/fs/cgroup/memory/docker/0123456789abcdef0123456789abcdef");
    CHECK(l.levels[1].cgroup == "/docker");
    CHECK(l.levels[2].cgroup == "/");
    CHECK(l.levels[2].directory == "/sys/fs/cgroup/memory");
    CHECK(l.v2_directory == "/sys/fs/cgroup/unified");

    const memory_reading m = r.read();
    CHECK(m.limit_from == limit_source::physical_memory); // the sentinel everywhere
    CHECK(m.limit_bytes == 16 * GiB);
    CHECK(ends_with(m.limit_origin, "/proc/meminfo"));
    CHECK_FALSE(m.cgroup_limit_bytes);
    CHECK(m.binding_cgroup.empty());
    CHECK(m.usage_from == usage_source::proc_statm);
    CHECK(m.usage_bytes == statm_rss_of_fixture());
    CHECK(m.working_set_bytes == statm_rss_of_fixture());
    CHECK(ends_with(m.psi_origin, "/sys/fs/cgroup/unified/memory.pressure"));
    CHECK(ends_with(m.oom_origin, "/docker/0123456789abcdef0123456789abcdef/memory.oom_control"));
    CHECK(m.peak_bytes == 10362880U);
    CHECK(any_contains(m.fallbacks, "no cgroup limit"));
}

TEST_CASE("cgroup: fixture hybrid in this host kind's layout with a leaf limit", "[cgroup]") {
    const memory_reading m = read_fixture("hybrid_host_limited");
    CHECK(m.limit_bytes == 128 * MiB);
    CHECK(m.limit_from == limit_source::cgroup_v1_limit);
    CHECK(m.binding_cgroup == "/docker/0123456789abcdef0123456789abcdef");
    CHECK(m.usage_bytes == 5279744U);
    CHECK(m.working_set_bytes == 5279744U - 565248U);
    CHECK(m.fallbacks.empty());
}

TEST_CASE("cgroup: fixtures with \"max\", the sentinel above physical memory, and 0", "[cgroup]") {
    SECTION("v2 max everywhere") {
        const memory_reading m = read_fixture("v2_max");
        CHECK(m.limit_from == limit_source::physical_memory);
        CHECK(m.usage_from == usage_source::proc_statm);
    }
    SECTION("v1 limit above physical memory counts as unlimited") {
        const memory_reading m = read_fixture("v1_above_physical");
        CHECK(m.limit_from == limit_source::physical_memory);
        CHECK(m.limit_bytes == 16 * GiB);
    }
    SECTION("v2 memory.max = 0 is a limit of zero bytes") {
        const memory_reading m = read_fixture("v2_zero");
        CHECK(m.limit_from == limit_source::cgroup_v2_max);
        CHECK(m.limit_bytes == 0);
        CHECK(m.binding_cgroup == "/app");
        CHECK(m.usage_bytes == 4096U);
    }
}

TEST_CASE("cgroup: fixture with garbage falls back with reasons, never crashes", "[cgroup]") {
    std::error_code ec;
    const memory_reading m = read_fixture("v2_garbage", &ec);
    INFO(join_lines(m.fallbacks));
    CHECK_FALSE(ec);
    CHECK(m.limit_bytes == GiB); // /svc's valid limit; /svc/app's garbage limits are ignored
    CHECK(m.binding_cgroup == "/svc");
    CHECK(m.usage_from == usage_source::proc_statm); // /svc's usage is garbage
    CHECK(any_contains(m.fallbacks, "malformed line(s) in"));
    CHECK(any_contains(m.fallbacks, "svc/app/memory.max: malformed contents"));
    CHECK(any_contains(m.fallbacks, "svc/app/memory.high: malformed contents"));
    CHECK(any_contains(m.fallbacks, "cannot read usage"));
    CHECK(any_contains(m.fallbacks, "svc/memory.events: malformed contents"));
    CHECK(ends_with(m.psi_origin, "/proc/pressure/memory"));
    CHECK(any_contains(m.fallbacks, "app/memory.pressure: malformed contents; PSI from"));
}

TEST_CASE("cgroup: fixture with a bad memory.stat uses usage as the working set", "[cgroup]") {
    const memory_reading m = read_fixture("v2_bad_stat");
    CHECK(m.usage_bytes == 300 * MiB);
    CHECK(m.working_set_bytes == 300 * MiB);
    CHECK(any_contains(m.fallbacks, "working set = usage"));
    CHECK_FALSE(m.psi);
    CHECK(any_contains(m.fallbacks, "no PSI"));
}

TEST_CASE("cgroup: fixture with missing files falls back with reasons", "[cgroup]") {
    const memory_reading m = read_fixture("v2_missing");
    INFO(join_lines(m.fallbacks));
    CHECK(m.limit_from == limit_source::physical_memory);
    CHECK(any_contains(m.fallbacks, "memory.max: No such file or directory"));
    CHECK(any_contains(m.fallbacks, "memory.events: No such file or directory"));
    CHECK_FALSE(m.psi);
    CHECK_FALSE(m.oom_kills);
    CHECK_FALSE(m.peak_bytes);
}

TEST_CASE("cgroup: an empty root yields an error code, and read() throws", "[cgroup]") {
    std::error_code ec;
    const memory_reading m = read_fixture("empty", &ec);
    CHECK(ec == std::errc::no_such_file_or_directory);
    CHECK_FALSE(m.complete());
    CHECK(any_contains(m.fallbacks, "cannot read"));
    cgroup_config c;
    c.root = fixture("empty");
    c.limit_env = "";
    cgroup_reader r{c};
    CHECK_THROWS_AS(r.read(), std::system_error);
    CHECK_THROWS_AS(r.reload(), std::system_error);
    std::error_code rec;
    r.reload(rec);
    CHECK(rec == std::errc::no_such_file_or_directory);
    // An explicit limit makes a limit known, but there is still no usage.
    c.explicit_limit = GiB;
    cgroup_reader with_limit{c};
    std::error_code ec2;
    const memory_reading m2 = with_limit.read(ec2);
    CHECK(ec2);
    CHECK(m2.limit_from == limit_source::configuration);
}

TEST_CASE("cgroup: a cgroup path that escapes the mount root means no visible cgroup", "[cgroup]") {
    // The mount shows another cgroup than the process's: its limit is not an ancestor's and
    // cannot bind this process, so the reader falls back as if no memory cgroup were mounted.
    for (const char* name : {"v2_escape", "v1_escape"}) {
        cgroup_config c;
        c.root = fixture(name);
        c.limit_env = "";
        cgroup_reader r{c};
        INFO(name << "\n" << join_lines(r.layout().notes));
        CHECK(r.layout().controller == memory_controller::none);
        CHECK(r.layout().levels.empty());
        CHECK(any_contains(r.layout().notes, "escapes the mount root"));
        CHECK(any_contains(r.layout().notes, "no cgroup limit applies"));
        const memory_reading m = r.read();
        INFO(join_lines(m.fallbacks));
        CHECK(m.limit_from == limit_source::physical_memory);
        CHECK(m.limit_bytes == 16 * GiB);
        CHECK_FALSE(m.cgroup_limit_bytes);
        CHECK(m.binding_cgroup.empty());
        CHECK(m.usage_from == usage_source::proc_statm);
        CHECK(m.usage_bytes == statm_rss_of_fixture());
        CHECK(ends_with(m.psi_origin, "/proc/pressure/memory")); // not the foreign cgroup's file
        CHECK(any_contains(m.fallbacks, "escapes the mount root"));
        // An explicit limit still wins, with the RSS as usage.
        c.explicit_limit = 100 * MiB;
        cgroup_reader with_limit{c};
        const memory_reading e = with_limit.read();
        CHECK(e.limit_from == limit_source::configuration);
        CHECK(e.usage_from == usage_source::proc_statm);
    }
    cgroup_config c;
    c.root = fixture("v1_escape");
    c.limit_env = "";
    cgroup_reader r{c};
    CHECK(any_contains(r.layout().notes, "the memory cgroup path /other_container escapes the mount root /container0"));
}

TEST_CASE("cgroup: fixture with an octal-escaped mount point and optional fields", "[cgroup]") {
    cgroup_config c;
    c.root = fixture("v2_octal");
    c.limit_env = "";
    cgroup_reader r{c};
    CHECK(r.layout().mount_point == "/sys/fs/my cgroup\\x");
    CHECK(r.layout().levels.front().cgroup == "/app:with:colons");
    const memory_reading m = r.read();
    CHECK(m.limit_bytes == 2 * GiB);
    CHECK(m.working_set_bytes == 768 * MiB);
}

TEST_CASE("cgroup: fixtures with memory.stat keys in any order", "[cgroup]") {
    const memory_reading v2 = read_fixture("v2_stat_order");
    CHECK(v2.inactive_file_bytes == 104857600U); // the first of two inactive_file lines
    CHECK(v2.working_set_bytes == 400 * MiB - 100 * MiB);
    const memory_reading v1 = read_fixture("v1_stat_order");
    CHECK(v1.inactive_file_bytes == 50 * MiB); // total_inactive_file wins over inactive_file
    CHECK(v1.working_set_bytes == 350 * MiB);
}

// ---------------------------------------------------------------------------------------------
// Fake trees, rewritten in place

TEST_CASE("cgroup: values rewritten in place are seen by the next read", "[cgroup]") {
    for (auto kind : {fake_cgroup_tree::kind::v1, fake_cgroup_tree::kind::v2, fake_cgroup_tree::kind::hybrid}) {
        auto t = kind == fake_cgroup_tree::kind::v1   ? fake_cgroup_tree::v1("/svc/app")
                 : kind == fake_cgroup_tree::kind::v2 ? fake_cgroup_tree::v2("/svc/app")
                                                      : fake_cgroup_tree::hybrid("/svc/app");
        t.set_limit("/svc/app", 512 * MiB);
        t.set_usage("/svc/app", 100 * MiB);
        cgroup_reader r{t.config()};
        memory_reading m = r.read();
        CHECK(m.limit_bytes == 512 * MiB);
        CHECK(m.usage_bytes == 100 * MiB);

        const std::string usage_file =
            t.path(t.dir("/svc/app") + (t.is_v2() ? "/memory.current" : "/memory.usage_in_bytes")).string();
        struct stat before {};
        REQUIRE(::stat(usage_file.c_str(), &before) == 0);
        t.set_usage("/svc/app", 300 * MiB);
        t.set_inactive_file("/svc/app", 50 * MiB);
        t.set_limit("/svc/app", 400 * MiB);
        t.set_oom_kills("/svc/app", 2);
        t.set_peak("/svc/app", 350 * MiB);
        t.set_psi(12.5, 3.0, 1000, 500);
        t.set_rss(90 * MiB);
        struct stat after {};
        REQUIRE(::stat(usage_file.c_str(), &after) == 0);
        CHECK(after.st_ino == before.st_ino); // rewritten in place, not replaced
        m = r.read();
        CHECK(m.limit_bytes == 400 * MiB);
        CHECK(m.usage_bytes == 300 * MiB);
        CHECK(m.working_set_bytes == 250 * MiB);
        CHECK(m.oom_kills == 2U);
        CHECK(m.peak_bytes == 350 * MiB);
        REQUIRE(m.psi);
        CHECK(m.psi->some.avg10 == Approx(12.5));
        CHECK(m.rss_bytes == 90 * MiB);

        // A parent limit appears at run time and binds.
        t.set_limit("/svc", 256 * MiB);
        t.set_usage("/svc", 310 * MiB);
        m = r.read();
        CHECK(m.limit_bytes == 256 * MiB);
        CHECK(m.binding_cgroup == "/svc");
        CHECK(m.usage_bytes == 310 * MiB);
    }
}

TEST_CASE("cgroup: the binding cgroup is the one with the least headroom", "[cgroup]") {
    auto t = fake_cgroup_tree::v2("/pod/ctr");
    t.set_limit("/pod/ctr", 512 * MiB);
    t.set_usage("/pod/ctr", 100 * MiB);
    t.set_limit("/pod", 1 * GiB);
    t.set_usage("/pod", 900 * MiB); // siblings use most of the pod
    cgroup_reader r{t.config()};
    memory_reading m = r.read();
    CHECK(m.binding_cgroup == "/pod"); // 124 MiB of headroom against the leaf's 412 MiB
    CHECK(m.limit_bytes == GiB);
    CHECK(m.usage_bytes == 900 * MiB);
    t.set_usage("/pod", 200 * MiB);
    m = r.read();
    CHECK(m.binding_cgroup == "/pod/ctr");
    CHECK(m.limit_bytes == 512 * MiB);
}

TEST_CASE("cgroup: v1 hidden parent limit through the fake tree", "[cgroup]") {
    auto t = fake_cgroup_tree::v1("/docker/abc", "/docker/abc");
    t.set_usage("/docker/abc", 100 * MiB);
    cgroup_reader r{t.config()};
    CHECK(r.read().limit_from == limit_source::physical_memory);
    t.set_hidden_parent_limit(300 * MiB);
    const memory_reading m = r.read();
    CHECK(m.limit_from == limit_source::cgroup_v1_hierarchical);
    CHECK(m.limit_bytes == 300 * MiB);
    CHECK(m.binding_cgroup == "/docker/abc");
}

TEST_CASE("cgroup: an explicit limit wins, then the environment", "[cgroup]") {
    auto t = fake_cgroup_tree::v2("/app");
    t.set_limit("/app", 512 * MiB);
    t.set_usage("/app", 100 * MiB);
    cgroup_config c = t.config();
    c.limit_env = "MEMGOV_TEST_LIMIT_ENV_CGROUP";
    ::setenv(c.limit_env.c_str(), "256M", 1);
    {
        cgroup_reader r{c};
        const memory_reading m = r.read();
        CHECK(m.limit_bytes == 256 * MiB);
        CHECK(m.limit_from == limit_source::environment);
        CHECK(m.limit_origin == c.limit_env);
        CHECK(m.cgroup_limit_bytes == 512 * MiB);
        CHECK(m.usage_from == usage_source::cgroup_v2); // usage still from the binding cgroup
        CHECK(any_contains(m.fallbacks, "overrides the cgroup limit"));
        CHECK(r.environment_limit() == 256 * MiB);
    }
    c.explicit_limit = 2 * GiB;
    {
        cgroup_reader r{c};
        const memory_reading m = r.read();
        CHECK(m.limit_bytes == 2 * GiB);
        CHECK(m.limit_from == limit_source::configuration);
        CHECK(m.limit_origin == "configuration");
    }
    c.explicit_limit.reset();
    ::setenv(c.limit_env.c_str(), "lots", 1);
    {
        cgroup_reader r{c};
        const memory_reading m = r.read();
        CHECK(m.limit_from == limit_source::cgroup_v2_max);
        CHECK(any_contains(m.fallbacks, "ignored MEMGOV_TEST_LIMIT_ENV_CGROUP=\"lots\""));
    }
    ::unsetenv(c.limit_env.c_str());
}

TEST_CASE("cgroup: reload follows the process into another cgroup", "[cgroup]") {
    auto t = fake_cgroup_tree::v2("/a");
    t.set_limit("/a", 100 * MiB);
    t.set_limit("/b", 200 * MiB);
    cgroup_reader r{t.config()};
    CHECK(r.read().limit_bytes == 100 * MiB);
    t.write("/proc/self/cgroup", "0::/b\n");
    CHECK(r.read().limit_bytes == 100 * MiB); // the layout is kept until reload
    r.reload();
    CHECK(r.read().limit_bytes == 200 * MiB);
    CHECK(r.read().binding_cgroup == "/b");
}

TEST_CASE("cgroup: configuration errors name the field", "[cgroup]") {
    cgroup_config c;
    c.root = "relative/path";
    CHECK_THROWS_WITH(cgroup_reader{c}, "memgov::cgroup_config::root: must be an absolute path");
    c.root = "";
    CHECK_THROWS_AS(cgroup_reader{c}, std::invalid_argument);
    c.root = "/";
    c.explicit_limit = 0;
    CHECK_THROWS_WITH(cgroup_reader{c}, "memgov::cgroup_config::explicit_limit: must be > 0");
}

TEST_CASE("cgroup: moves, destructor and sample are noexcept", "[cgroup]") {
    STATIC_REQUIRE(std::is_nothrow_move_constructible_v<cgroup_reader>);
    STATIC_REQUIRE(std::is_nothrow_move_assignable_v<cgroup_reader>);
    STATIC_REQUIRE(std::is_nothrow_destructible_v<cgroup_reader>);
    STATIC_REQUIRE(noexcept(std::declval<cgroup_reader&>().sample(std::declval<memgov::detail::cg_sample&>())));
    STATIC_REQUIRE(noexcept(std::declval<const cgroup_reader&>().layout()));
    STATIC_REQUIRE(noexcept(memgov::to_string(cgroup_mode::v1)));
}

TEST_CASE("cgroup: this machine's own reading is complete", "[cgroup]") {
    cgroup_config c;
    c.limit_env = "";
    cgroup_reader r{c};
    std::error_code ec;
    const memory_reading m = r.read(ec);
    INFO("mode " << memgov::to_string(m.mode) << ", controller " << memgov::to_string(m.controller) << ", limit "
                 << m.limit_bytes << " from " << m.limit_origin << "\n"
                 << join_lines(m.fallbacks));
    CHECK_FALSE(ec);
    CHECK(m.complete());
    CHECK(m.limit_bytes > 0);
    CHECK(m.usage_bytes > 0);
    CHECK(m.rss_bytes > 0);
    CHECK_FALSE(m.limit_origin.empty());
    CHECK_FALSE(m.usage_origin.empty());
}

// ---------------------------------------------------------------------------------------------
// Hostile files: numbers no machine holds, FIFOs, devices, oversized files, odd white space

TEST_CASE("cgroup: an implausible usage is rejected with a reason, never trusted", "[cgroup]") {
    for (const char* bad : {"9223372036854775808", "18446744073709551615", "4611686018427387904",
                            "107374182400" /* 100 GiB: over 4 x MemTotal (16 GiB) */}) {
        for (auto kind : {fake_cgroup_tree::kind::v1, fake_cgroup_tree::kind::v2}) {
            auto t = kind == fake_cgroup_tree::kind::v1 ? fake_cgroup_tree::v1("/app") : fake_cgroup_tree::v2("/app");
            t.set_limit("/app", 512 * MiB);
            t.write(t.dir("/app") + (t.is_v2() ? "/memory.current" : "/memory.usage_in_bytes"),
                    std::string{bad} + "\n");
            cgroup_reader r{t.config()};
            const memory_reading m = r.read();
            INFO(bad << "\n" << join_lines(m.fallbacks));
            CHECK(m.limit_bytes == 512 * MiB);
            CHECK(m.binding_cgroup == "/app");
            CHECK(m.usage_from == usage_source::proc_statm); // the RSS, with the reason
            CHECK(m.usage_bytes == 64 * MiB);
            CHECK(any_contains(m.fallbacks, std::string{"implausible value "} + bad));
        }
    }
}

TEST_CASE("cgroup: fixtures with implausible numbers and inactive_file above usage", "[cgroup]") {
    std::error_code ec;
    const memory_reading m = read_fixture("v2_implausible", &ec);
    INFO(join_lines(m.fallbacks));
    CHECK(ec); // a limit, but no usage to hold against it
    CHECK(m.limit_bytes == 512 * MiB);
    CHECK(m.usage_from == usage_source::unknown);
    CHECK(m.rss_bytes == 0);
    CHECK_FALSE(m.peak_bytes);
    CHECK(m.blind);
    CHECK(any_contains(m.fallbacks, "memory.current: implausible value 18446744073709551615"));
    CHECK(any_contains(m.fallbacks, "statm: implausible resident set of 4503599627370497 pages"));
    CHECK(any_contains(m.fallbacks, "memory.peak: implausible value 9223372036854775808"));
    const memory_reading w = read_fixture("v2_inactive_above_usage");
    INFO(join_lines(w.fallbacks));
    CHECK(w.usage_bytes == 100 * MiB);
    CHECK(w.working_set_bytes == 100 * MiB);
    CHECK(any_contains(w.fallbacks, "inactive_file 314572800 in"));
    CHECK(any_contains(w.fallbacks, "exceeds usage 104857600; working set = usage"));
}

TEST_CASE("cgroup: a statm resident that overflows bytes is rejected, never wrapped", "[cgroup]") {
    // 2^52 + 1 pages of 4 KiB is 2^64 + 4096 bytes: wrapped, that reads as 4096.
    for (const char* statm : {"4503599627370500 4503599627370497 100 10 0 1 0\n",
                              "1099511627776 1099511627776 100 10 0 1 0\n" /* 4 PiB */}) {
        auto t = fake_cgroup_tree::v2("/app"); // no cgroup limit: usage would be the RSS
        t.write("/proc/self/statm", statm);
        cgroup_reader r{t.config()};
        std::error_code ec;
        const memory_reading m = r.read(ec);
        INFO(statm << join_lines(m.fallbacks));
        CHECK(m.rss_bytes == 0);
        CHECK(m.rss_origin.empty());
        CHECK(m.usage_from == usage_source::unknown);
        CHECK(ec); // nothing to compare with the limit
        CHECK(any_contains(m.fallbacks, "statm: implausible resident"));
    }
}

TEST_CASE("cgroup: inactive_file above usage leaves the working set at usage, with a reason", "[cgroup]") {
    for (auto kind : {fake_cgroup_tree::kind::v1, fake_cgroup_tree::kind::v2}) {
        auto t = kind == fake_cgroup_tree::kind::v1 ? fake_cgroup_tree::v1("/app") : fake_cgroup_tree::v2("/app");
        t.set_limit("/app", 512 * MiB);
        t.set_usage("/app", 100 * MiB);
        t.set_inactive_file("/app", 300 * MiB);
        cgroup_reader r{t.config()};
        const memory_reading m = r.read();
        INFO(join_lines(m.fallbacks));
        CHECK(m.usage_bytes == 100 * MiB);
        CHECK(m.working_set_bytes == 100 * MiB); // not 0: the safe side
        CHECK(m.working_set_origin == m.usage_origin);
        CHECK(any_contains(m.fallbacks, "exceeds usage"));
    }
}

TEST_CASE("cgroup: FIFOs and devices in place of files neither hang nor count", "[cgroup]") {
    struct hostile {
        const char* file; // under the process's cgroup directory, or an absolute /proc path
        bool fifo;        // else a symlink to /dev/zero
        const char* reason;
    };
    const hostile cases[] = {
        {"memory.max", true, "memory.max: not a regular file"},
        {"memory.max", false, "memory.max: not a regular file"},
        {"memory.current", true, "memory.current: not a regular file"},
        {"memory.stat", false, "memory.stat: not a regular file"},
        {"memory.stat", true, "memory.stat: not a regular file"},
        {"memory.events", false, "memory.events: not a regular file"},
        {"memory.pressure", true, "memory.pressure: not a regular file"},
        {"/proc/self/statm", false, "statm: not a regular file"},
        {"/proc/meminfo", true, "meminfo: not a regular file"},
        {"/proc/self/mountinfo", true, "mountinfo: not a regular file"},
        {"/proc/self/cgroup", false, "/proc/self/cgroup: not a regular file"},
    };
    for (const auto& h : cases) {
        auto t = fake_cgroup_tree::v2("/app");
        t.set_limit("/app", 512 * MiB);
        t.set_usage("/app", 100 * MiB);
        const std::string rel = h.file[0] == '/' ? std::string{h.file} : t.dir("/app") + "/" + h.file;
        if (h.fifo)
            t.make_fifo(rel);
        else
            t.make_symlink(rel, "/dev/zero");
        INFO(rel << (h.fifo ? " is a FIFO" : " -> /dev/zero"));
        const auto cfg = t.config();
        REQUIRE(finishes_in_child(
            [&] {
                cgroup_reader r{cfg};
                std::error_code ec;
                (void)r.read(ec);
                (void)r.read(ec);
            },
            std::chrono::seconds{3}));
        cgroup_reader r{cfg};
        std::error_code ec;
        const memory_reading m = r.read(ec);
        INFO(join_lines(m.fallbacks));
        CHECK(any_contains(m.fallbacks, h.reason));
    }
}

// A limit file that could not be read may hold the binding limit: the MemTotal fallback must
// not call the tree unlimited then.
TEST_CASE("cgroup: an unreadable limit file is not reported as unlimited", "[cgroup]") {
    auto t = fake_cgroup_tree::v2("/app");
    t.set_usage("/app", 100 * MiB);
    {
        cgroup_reader r{t.config()}; // memory.max says "max": unlimited, and said so
        const memory_reading m = r.read();
        INFO(join_lines(m.fallbacks));
        CHECK(any_contains(m.fallbacks, "every level from /app up is unlimited"));
    }
    for (const bool fifo : {true, false}) {
        auto h = fake_cgroup_tree::v2("/app");
        h.set_usage("/app", 100 * MiB);
        const std::string limit = h.dir("/app") + "/memory.max";
        if (fifo) {
            h.make_fifo(limit);
        } else {
            h.make_symlink(limit, "/dev/zero");
        }
        cgroup_reader r{h.config()};
        const memory_reading m = r.read();
        INFO(join_lines(m.fallbacks));
        CHECK(m.limit_from == memgov::limit_source::physical_memory);
        CHECK_FALSE(any_contains(m.fallbacks, "up is unlimited"));
        CHECK(any_contains(m.fallbacks, "no cgroup limit (no readable limit from /app up; unreadable: "));
        CHECK(any_contains(m.fallbacks, "memory.max): limit from "));
    }
}

TEST_CASE("cgroup: an oversized file is not read past its cap", "[cgroup]") {
    auto t = fake_cgroup_tree::v2("/app");
    t.set_limit("/app", 512 * MiB);
    t.set_usage("/app", 100 * MiB);
    std::string stat;
    while (stat.size() < 200 * 1024) stat += "padding_key_" + std::to_string(stat.size()) + " 0\n";
    stat += "inactive_file 10485760\n";
    t.write(t.dir("/app") + "/memory.stat", stat);
    cgroup_reader r{t.config()};
    const memory_reading m = r.read();
    INFO(join_lines(m.fallbacks));
    CHECK(m.working_set_bytes == 100 * MiB);
    CHECK(any_contains(m.fallbacks, "memory.stat: larger than 65536 bytes"));
    // A normal memory.stat after the oversized one is read again.
    t.set_inactive_file("/app", 10 * MiB);
    CHECK(r.read().working_set_bytes == 90 * MiB);
}

TEST_CASE("cgroup: a pressure watch on a device is refused, not registered", "[cgroup]") {
    auto t = fake_cgroup_tree::v2("/app");
    const std::string watch = t.path("/run/pressure").string();
    t.make_symlink("/run/pressure", "/dev/zero");
    memgov::detail::psi_watch w;
    w.open(watch, "some 200000 2000000");
    INFO(w.reason());
    CHECK(w.state() == memgov::psi_watch_state::disabled);
    CHECK(w.fd() == -1);
    CHECK(w.reason().find("not a PSI file, FIFO or socket") != std::string::npos);
    std::string buf;
    CHECK_FALSE(w.check(buf));
}

TEST_CASE("cgroup: white space around the hierarchy id still finds the v2 line", "[cgroup]") {
    using namespace memgov::detail;
    CHECK(cg_parse_proc_cgroup("\t0::/x\n").v2 == "/x");
    CHECK(cg_parse_proc_cgroup(" 0 ::/x\n").v2 == "/x");
    CHECK(cg_parse_proc_cgroup("0:\t:/x\n").v2 == "/x");
    CHECK_FALSE(cg_parse_proc_cgroup(" 1::/x\n").v2);
    CHECK(cg_parse_proc_cgroup(" 4 :memory:/m\n").v1_memory == "/m");
    auto t = fake_cgroup_tree::v2("/app");
    t.set_limit("/app", 512 * MiB);
    t.write(t.dir("/app") + "/memory.pressure", "some avg10=7.00 avg60=1.00 avg300=0.50 total=777\n"
                                                "full avg10=1.00 avg60=0.50 avg300=0.25 total=555\n");
    t.write("/proc/self/cgroup", "\t0::/app\n");
    cgroup_reader r{t.config()};
    CHECK(r.layout().controller == memory_controller::v2);
    const memory_reading m = r.read();
    INFO(join_lines(m.fallbacks));
    CHECK(m.limit_bytes == 512 * MiB);
    REQUIRE(m.psi);
    CHECK(ends_with(m.psi_origin, "/app/memory.pressure"));
    CHECK(m.psi->some.avg10 == Approx(7.0));
}

TEST_CASE("cgroup: a missing root, or a root that is a file, makes the reader blind, with the reason", "[cgroup]") {
    auto t = fake_cgroup_tree::v2("/app");
    const std::string missing = t.root() + "/no-such-root";
    const std::string file = t.path("/proc/meminfo").string();
    const std::pair<std::string, std::string> cases[] = {{missing, "cannot be used: No such file or directory"},
                                                         {file, "is not a directory"}};
    for (const auto& [root, why] : cases) {
        for (const bool with_limit : {false, true}) {
            cgroup_config c;
            c.root = root;
            c.limit_env = "";
            if (with_limit) c.explicit_limit = GiB; // a limit, but still nothing to compare with it
            cgroup_reader r{c};
            INFO(root << (with_limit ? " with an explicit limit" : ""));
            CHECK(r.blind());
            CHECK(r.blind_reason() == "the root " + root + " " + why);
            memgov::detail::cg_sample s;
            CHECK_FALSE(r.sample(s));
            CHECK((s.fallbacks & memgov::detail::cg_fb_blind) != 0);
            std::error_code ec;
            const memory_reading m = r.read(ec);
            CHECK(ec);
            CHECK(m.blind);
            CHECK(m.blind_reason == r.blind_reason());
            REQUIRE_FALSE(m.fallbacks.empty());
            CHECK(m.fallbacks.front() == "the reader is blind: " + r.blind_reason());
        }
    }
}

TEST_CASE("cgroup: a reader that sees is not blind; one that loses its files is, until they return", "[cgroup]") {
    auto t = fake_cgroup_tree::v2("/app"); // no cgroup limit: MemTotal and the RSS
    cgroup_reader r{t.config()};
    CHECK_FALSE(r.blind());
    CHECK(r.blind_reason().empty());
    memory_reading m = r.read();
    CHECK_FALSE(m.blind);
    CHECK(m.blind_reason.empty());
    t.write("/proc/self/statm", "garbage\n");
    std::error_code ec;
    m = r.read(ec);
    CHECK(ec);
    CHECK(r.blind());
    CHECK(m.blind);
    CHECK(r.blind_reason().find("no usage can be read") != std::string::npos);
    CHECK(any_contains(m.fallbacks, "the reader is blind: no usage can be read"));
    t.set_rss(64 * MiB);
    memgov::detail::cg_sample s;
    CHECK(r.sample(s));
    CHECK((s.fallbacks & memgov::detail::cg_fb_blind) == 0);
    CHECK_FALSE(r.blind());
    // No MemTotal and no cgroup limit: usage but no limit.
    t.write("/proc/meminfo", "MemFree: 1 kB\n");
    CHECK_FALSE(r.sample(s));
    CHECK(r.blind_reason().find("no limit can be read") != std::string::npos);
    // A root that exists but shows no /proc (the "empty" fixture): blind from the start.
    cgroup_config c;
    c.root = fixture("empty");
    c.limit_env = "";
    cgroup_reader empty{c};
    CHECK(empty.blind());
    CHECK(empty.blind_reason().find("proc/self/mountinfo: No such file or directory") != std::string::npos);
    CHECK(empty.blind_reason().find("cannot tell which cgroup limit applies") != std::string::npos);
    STATIC_REQUIRE(noexcept(std::declval<const cgroup_reader&>().blind()));
    STATIC_REQUIRE(noexcept(std::declval<const cgroup_reader&>().blind_reason()));
}

TEST_CASE("cgroup: implausible numbers in the parsers' helpers", "[cgroup]") {
    using namespace memgov::detail;
    CHECK_FALSE(cg_statm_resident_bytes("1 4503599627370497 1 0 0 0 0\n", 4096)); // 2^52 + 1 pages
    CHECK_FALSE(cg_statm_resident_bytes("1 1125899906842624 1 0 0 0 0\n", 4096)); // exactly 2^62
    CHECK(cg_statm_resident_bytes("100 50 10 1 0 40 0\n", 4096) == 50U * 4096);
    CHECK_FALSE(cg_statm_resident_bytes("100 x 10", 4096));
    CHECK_FALSE(cg_mul(std::uint64_t{1} << 52, std::uint64_t{1} << 12));
    CHECK(cg_mul(0, UINT64_MAX) == 0U);
    CHECK(cg_is_plausible_bytes(64 * GiB, 16 * GiB));
    CHECK_FALSE(cg_is_plausible_bytes(64 * GiB + 1, 16 * GiB));
    CHECK_FALSE(cg_is_plausible_bytes(std::uint64_t{1} << 62, 0));
    CHECK(cg_is_plausible_bytes((std::uint64_t{1} << 62) - 1, 0));
    CHECK(cg_is_plausible_bytes((std::uint64_t{1} << 62) - 1, std::uint64_t{1} << 61)); // no overflow
}

TEST_CASE("cgroup: an implausible MemTotal or peak is refused with a reason", "[cgroup]") {
    auto t = fake_cgroup_tree::v2("/app");
    t.set_limit("/app", 512 * MiB);
    t.set_usage("/app", 100 * MiB);
    t.set_peak("/app", std::uint64_t{1} << 63);
    t.write("/proc/meminfo", "MemTotal: 9007199254740992 kB\n"); // 2^63 bytes
    cgroup_reader r{t.config()};
    const memory_reading m = r.read();
    INFO(join_lines(m.fallbacks));
    CHECK(m.physical_memory_bytes == 0);
    CHECK(any_contains(m.fallbacks, "meminfo: implausible value 9223372036854775808"));
    CHECK_FALSE(m.peak_bytes);
    CHECK(any_contains(m.fallbacks, "memory.peak: implausible value 9223372036854775808"));
    CHECK(m.limit_bytes == 512 * MiB);
    CHECK(m.usage_bytes == 100 * MiB);
}

// ---------------------------------------------------------------------------------------------
// A real memory cgroup (root only; skips elsewhere)

TEST_CASE("cgroup: a child in a real 128 MiB memory cgroup reads its limit and working set", "[cgroup][real]") {
    const auto cg = memgov_test::real_cgroup::create(128 * MiB, "cgroup-test");
    if (!cg) return memgov_test::skip_test(cg.skip_reason());
    const auto run = cg.run({std::string{MEMGOV_TEST_PROGRAM_DIR} + "/cgroup_child"}, std::chrono::seconds{60});
    if (!run.started) return memgov_test::skip_test("cannot move a process into " + cg.dir());
    const auto kv = run.values();
    INFO("child status " << run.status << ", output:\n" << run.output);
    REQUIRE(run.exited_ok());
    REQUIRE(kv.count("end") == 1); // the child printed everything
    CHECK(kv.at("limit") == std::to_string(128 * MiB));
    CHECK(kv.at("limit_from") == (cg.v2() ? "cgroup_v2_max" : "cgroup_v1_limit"));
    CHECK(kv.at("binding") == cg.name());
    CHECK(kv.at("usage_from") == (cg.v2() ? "cgroup_v2" : "cgroup_v1"));
    const double ws = std::stod(kv.at("working_set"));
    const double truth = std::stod(kv.at("rss_anon")); // the child's anonymous resident memory
    const double touched = std::stod(kv.at("touched"));
    INFO("working set " << ws << ", RssAnon " << truth << ", touched " << touched << ", usage " << kv.at("usage")
                        << ", rss " << kv.at("rss"));
    CHECK(touched == 64.0 * MiB);
    CHECK(std::abs(ws - truth) <= 0.05 * truth);
    CHECK(ws >= touched);
}
