// SPDX-License-Identifier: MIT
// Started by the real-cgroup test inside a fresh memory cgroup (moved there before exec, so
// everything it allocates is charged there). It reads its limit with memgov's reader, touches
// 64 MiB (or argv[1] MiB) of anonymous memory, reads again, and prints `key value` lines:
//   limit, limit_from, binding, usage_from, then after touching: working_set, usage, rss,
//   rss_anon (from /proc/self/status), touched.
// Exit status 0 when everything could be read, 2 otherwise.

#include <memgov/cgroup.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <sys/mman.h>

namespace {

std::uint64_t status_kib(const char* key) {
    std::ifstream in{"/proc/self/status"};
    std::string line;
    const std::size_t n = std::strlen(key);
    while (std::getline(in, line)) {
        if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') {
            return std::strtoull(line.c_str() + n + 1, nullptr, 10);
        }
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    const std::uint64_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 64;
    memgov::cgroup_config cfg;
    cfg.limit_env = "";
    memgov::cgroup_reader reader{cfg};
    std::error_code ec;
    const memgov::memory_reading before = reader.read(ec);
    std::printf("limit %llu\n", static_cast<unsigned long long>(before.limit_bytes));
    std::printf("limit_from %s\n", std::string{memgov::to_string(before.limit_from)}.c_str());
    std::printf("binding %s\n", before.binding_cgroup.empty() ? "-" : before.binding_cgroup.c_str());
    std::printf("usage_from %s\n", std::string{memgov::to_string(before.usage_from)}.c_str());
    std::printf("baseline_working_set %llu\n", static_cast<unsigned long long>(before.working_set_bytes));
    std::printf("baseline_rss_anon %llu\n", static_cast<unsigned long long>(status_kib("RssAnon") * 1024));

    const std::size_t bytes = static_cast<std::size_t>(mib) << 20;
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 2;
    std::memset(p, 0x5a, bytes); // touch every page
    const memgov::memory_reading after = reader.read(ec);
    std::printf("touched %llu\n", static_cast<unsigned long long>(bytes));
    std::printf("working_set %llu\n", static_cast<unsigned long long>(after.working_set_bytes));
    std::printf("usage %llu\n", static_cast<unsigned long long>(after.usage_bytes));
    std::printf("rss %llu\n", static_cast<unsigned long long>(after.rss_bytes));
    std::printf("rss_anon %llu\n", static_cast<unsigned long long>(status_kib("RssAnon") * 1024));
    std::printf("vm_pte %llu\n", static_cast<unsigned long long>(status_kib("VmPTE") * 1024));
    std::printf("end 1\n");
    std::fflush(stdout);
    ::munmap(p, bytes);
    return ec ? 2 : 0;
}
