// Survival inside a real memory cgroup: the same load with and without the governor.
//
// A child (tests/programs/survival.cpp) runs in a fresh 128 MiB memory cgroup, holding
// sessions with sliding windows from a buffer pool and creating sessions and appending audio as
// fast as it can. Governed, it must live through 15 s with the cgroup's peak usage at or below
// 95% of the limit. Ungoverned, the kernel must OOM-kill it: the test has teeth.
//
// Needs root and a writable memory cgroup hierarchy; elsewhere it is reported skipped (it prints
// "MEMGOV_SKIP: <reason>" and returns; ctest shows it as skipped, never as passed). Under a
// sanitizer it is skipped too: ASan's shadow memory and quarantine (TSan's shadow) are memory
// the ledger cannot see, so the limit would measure the sanitizer rather than memgov.
#include "real_cgroup.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <iostream>
#include <string>

namespace {

constexpr std::uint64_t MiB = 1024 * 1024;
constexpr std::uint64_t limit = 128 * MiB;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitized = true;
#elif defined(__has_feature)
// clang: the same question, asked its way.
constexpr bool sanitized = __has_feature(address_sanitizer) || __has_feature(thread_sanitizer);
#else
constexpr bool sanitized = false;
#endif

std::string program() { return std::string{MEMGOV_TEST_PROGRAM_DIR} + "/survival"; }

} // namespace

TEST_CASE("governor: survives 15 s in a 128 MiB cgroup where the ungoverned build is OOM-killed",
          "[governor][survival][cgroup]") {
    if (sanitized) {
        return memgov_test::skip_test(
            "the survival test does not run under sanitizers (their memory is not the service's)");
    }
    auto governed_cg = memgov_test::real_cgroup::create(limit, "survival-governed");
    if (!governed_cg) return memgov_test::skip_test(governed_cg.skip_reason());
    const auto governed = governed_cg.run({program(), "--governed=1", "--seconds=15"}, std::chrono::seconds{60});
    if (!governed.started) {
        return memgov_test::skip_test("cannot move a process into " + governed_cg.dir());
    }
    const auto kv = governed.values();
    INFO("governed run output:\n" << governed.output);
    const auto peak = governed_cg.peak_bytes();
    const auto oom = governed_cg.oom_kills();
    CHECK_FALSE(governed.timed_out);
    CHECK(governed.exited_ok());
    REQUIRE(kv.count("end") == 1);
    CHECK(kv.at("limit") == std::to_string(limit));
    CHECK(kv.at("binding") == governed_cg.name());
    REQUIRE(peak.has_value());
    const double peak_percent = 100.0 * static_cast<double>(*peak) / static_cast<double>(limit);
    INFO("peak " << *peak << " bytes = " << peak_percent << "% of the limit");
    // On stdout for the record (docs quote it): the peak of this run.
    std::cout << "survival: governed peak " << *peak << " bytes = " << peak_percent << "% of the " << limit / MiB
              << " MiB limit\n";
    CHECK(*peak <= limit * 95 / 100);
    if (oom) CHECK(*oom == 0);
    // It did real work and memgov really acted: sessions were evicted and admissions refused.
    CHECK(std::stod(kv.at("seconds")) >= 15.0);
    CHECK(std::stoull(kv.at("created")) > 100);
    CHECK(std::stoull(kv.at("evicted")) > 0);
    CHECK(std::stoull(kv.at("refused_sessions")) > 0);
    CHECK(std::stod(kv.at("appended_mib")) > 128.0); // far more than fits, over the run

    auto control_cg = memgov_test::real_cgroup::create(limit, "survival-control");
    REQUIRE(control_cg);
    const auto control = control_cg.run({program(), "--governed=0", "--seconds=30"}, std::chrono::seconds{60});
    REQUIRE(control.started);
    INFO("ungoverned run output:\n" << control.output);
    CHECK_FALSE(control.timed_out);
    CHECK(control.killed_by(SIGKILL));
    const auto control_oom = control_cg.oom_kills();
    REQUIRE(control_oom.has_value());
    CHECK(*control_oom >= 1);
}
