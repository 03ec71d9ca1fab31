// SPDX-License-Identifier: MIT
#pragma once

// Real memory cgroups for tests that need the kernel's own accounting and OOM killer.
//
//   auto cg = memgov_test::real_cgroup::create(128 * MiB, "survival");
//   if (!cg) return memgov_test::skip_test(cg.skip_reason());
//   auto r = cg.run({program, "--flag"}, std::chrono::seconds{60});
//
// Needs root and a writable memory hierarchy (v1 `memory` or a v2 mount whose root is "/").
// Where that is missing, `create` returns an object that converts to false and says why, and
// the test skips: Catch2 v2 has no skip, so `skip_test` prints "MEMGOV_SKIP: <reason>" on
// stdout, the test returns, and ctest (SKIP_REGULAR_EXPRESSION "MEMGOV_SKIP:") reports it
// skipped rather than passed. A child is moved
// into the cgroup before it execs, so everything it allocates is charged there. Only that
// child is ever killed (on timeout, by its PID). The cgroup is removed on destruction.

#include <memgov/cgroup.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace memgov_test {

/// Marks the running test skipped for ctest: prints "MEMGOV_SKIP: <why>" on stdout. The caller
/// returns at once; nothing checked before the skip may fail.
inline void skip_test(const std::string& why) { std::cout << "MEMGOV_SKIP: " << why << std::endl; }

/// What a child run in a cgroup did.
struct child_run {
    int status = 0;         ///< waitpid status
    bool started = false;   ///< moved into the cgroup and exec'd
    bool timed_out = false; ///< killed by the test after the timeout
    std::string output;     ///< its standard output

    [[nodiscard]] bool exited_ok() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
    [[nodiscard]] bool killed_by(int sig) const { return WIFSIGNALED(status) && WTERMSIG(status) == sig; }
    /// "key value" lines of the output.
    [[nodiscard]] std::map<std::string, std::string> values() const {
        std::map<std::string, std::string> kv;
        std::istringstream in{output};
        std::string line;
        while (std::getline(in, line)) {
            const auto sp = line.find(' ');
            if (sp != std::string::npos) kv[line.substr(0, sp)] = line.substr(sp + 1);
        }
        return kv;
    }
};

class real_cgroup {
public:
    /// Creates a memory cgroup limited to `limit` bytes, named after `tag` and this process.
    static real_cgroup create(std::uint64_t limit, const std::string& tag) {
        real_cgroup out;
        if (::geteuid() != 0) {
            out.m_skip = "needs root";
            return out;
        }
        static std::atomic<int> counter{0};
        memgov::cgroup_config c;
        c.limit_env = "";
        memgov::cgroup_reader r{c};
        const auto& l = r.layout();
        if (l.controller == memgov::memory_controller::none) {
            out.m_skip = "no memory cgroup on this machine";
            return out;
        }
        out.m_v2 = l.controller == memgov::memory_controller::v2;
        if (l.mount_root != "/") {
            out.m_skip = "the memory hierarchy is mounted from " + l.mount_root + " (namespaced)";
            return out;
        }
        out.m_name = "/memgov-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
        const std::string dir = l.mount_point + out.m_name;
        if (::mkdir(dir.c_str(), 0755) != 0) {
            out.m_skip = "cannot create " + dir + ": " + std::strerror(errno);
            return out;
        }
        out.m_dir = dir;
        if (!out.write(out.m_v2 ? "memory.max" : "memory.limit_in_bytes", std::to_string(limit))) {
            out.m_skip = "cannot set the limit of " + dir + ": " + std::strerror(errno);
            out.remove();
            return out;
        }
        if (!out.m_v2) (void)out.write("memory.memsw.limit_in_bytes", std::to_string(limit));
        return out;
    }

    real_cgroup() = default;
    real_cgroup(real_cgroup&& o) noexcept
        : m_dir{std::move(o.m_dir)}, m_name{std::move(o.m_name)}, m_skip{std::move(o.m_skip)}, m_v2{o.m_v2} {
        o.m_dir.clear();
    }
    real_cgroup& operator=(real_cgroup&&) = delete;
    real_cgroup(const real_cgroup&) = delete;
    real_cgroup& operator=(const real_cgroup&) = delete;
    ~real_cgroup() { remove(); }

    explicit operator bool() const { return !m_dir.empty(); }
    [[nodiscard]] const std::string& skip_reason() const { return m_skip; }
    [[nodiscard]] const std::string& dir() const { return m_dir; }
    /// The cgroup's path inside its hierarchy, as /proc/<pid>/cgroup shows it.
    [[nodiscard]] const std::string& name() const { return m_name; }
    [[nodiscard]] bool v2() const { return m_v2; }

    /// The highest usage the kernel saw (v1 max_usage_in_bytes, v2 memory.peak).
    [[nodiscard]] std::optional<std::uint64_t> peak_bytes() const {
        return read_u64(m_v2 ? "memory.peak" : "memory.max_usage_in_bytes");
    }
    /// OOM kills in this cgroup (v1 memory.oom_control, v2 memory.events).
    [[nodiscard]] std::optional<std::uint64_t> oom_kills() const {
        std::ifstream f{m_dir + (m_v2 ? "/memory.events" : "/memory.oom_control")};
        std::string k;
        std::uint64_t v = 0;
        while (f >> k >> v) {
            if (k == "oom_kill") return v;
        }
        return std::nullopt;
    }

    /// Starts `argv` inside the cgroup, collects its output, and waits for it; kills it (by
    /// PID) if it runs past `timeout`, or as soon as `*stop` turns true (checked at least every
    /// 100 ms; for a caller's SIGINT/SIGTERM handler).
    child_run run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                  const std::atomic<bool>* stop = nullptr) const {
        child_run r;
        int go[2];
        int out[2];
        if (::pipe2(go, O_CLOEXEC) != 0) return r;
        if (::pipe2(out, O_CLOEXEC) != 0) {
            ::close(go[0]);
            ::close(go[1]);
            return r;
        }
        std::vector<const char*> args;
        for (const auto& a : argv) args.push_back(a.c_str());
        args.push_back(nullptr);
        const pid_t pid = ::fork();
        if (pid == 0) {
            char b = 0;
            if (::read(go[0], &b, 1) != 1 || b != 1) ::_exit(3);
            ::dup2(out[1], 1);
            ::execv(args[0], const_cast<char* const*>(args.data()));
            ::_exit(4);
        }
        ::close(go[0]);
        ::close(out[1]);
        if (pid < 0) {
            ::close(go[1]);
            ::close(out[0]);
            return r;
        }
        r.started = write("cgroup.procs", std::to_string(pid));
        const char b = r.started ? 1 : 0;
        [[maybe_unused]] const auto n = ::write(go[1], &b, 1);
        ::close(go[1]);
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0 || (stop != nullptr && stop->load())) {
                ::kill(pid, SIGKILL); // our own child only, by PID
                r.timed_out = true;
                break;
            }
            pollfd p{out[0], POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 100))) <= 0) continue;
            char buf[4096];
            const ssize_t got = ::read(out[0], buf, sizeof buf);
            if (got <= 0) break;
            r.output.append(buf, static_cast<std::size_t>(got));
        }
        ::close(out[0]);
        ::waitpid(pid, &r.status, 0);
        return r;
    }

private:
    bool write(const std::string& file, const std::string& text) const {
        const int fd = ::open((m_dir + "/" + file).c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) return false;
        const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
        ::close(fd);
        return ok;
    }
    std::optional<std::uint64_t> read_u64(const std::string& file) const {
        std::ifstream f{m_dir + "/" + file};
        std::uint64_t v = 0;
        if (f >> v) return v;
        return std::nullopt;
    }
    void remove() {
        if (m_dir.empty()) return;
        for (int i = 0; i < 100; ++i) { // the kernel may need a moment after the child is reaped
            if (::rmdir(m_dir.c_str()) == 0 || errno == ENOENT) break;
            std::this_thread::sleep_for(std::chrono::milliseconds{20});
        }
        m_dir.clear();
    }

    std::string m_dir;
    std::string m_name;
    std::string m_skip;
    bool m_v2 = false;
};

} // namespace memgov_test
