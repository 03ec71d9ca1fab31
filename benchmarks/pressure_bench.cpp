// The pressure monitor's costs and accuracy.
//
// P6: `level()` (one atomic load) against what a component would otherwise do to learn how
// close the process is to its limit, in the same run: open+read+close of the cgroup usage file
// (memory.usage_in_bytes on v1, memory.current on v2), pread on a kept descriptor of it, and
// open+read+close of /proc/self/statm. Goal: level() at least 1000x cheaper than the cheapest.
// Also shown: update_estimate() (the admission path's ledger check) and a full sample().
//
// Accuracy: with allocations tracked through the ledger, the estimate must stay within 5% of
// the measured RSS while memory grows by 1 GiB in 32 MiB bursts (the sampler thread running
// at its default 100 ms). After each burst the estimate is compared with the RSS; the counter
// `worst_err_pct` is the worst error. `estimate_accuracy/1` charges each burst when it is
// allocated, before touching it (what memgov's components do for fresh memory);
// `estimate_accuracy/2` charges after touching; `estimate_accuracy/0` has no ledger (the
// estimate only knows the last sample), for contrast. The second argument is the pause between
// bursts in ms: 50 spreads the growth over ~3 s (several calibration windows); 0 touches memory
// back to back, so nearly every sample lands mid-burst.
//
//   build/bench/benchmarks/pressure_bench --benchmark_min_time=0.05 --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true
#include <memgov/cgroup.hpp>
#include <memgov/pressure_monitor.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace {

constexpr std::uint64_t MiB = 1024 * 1024;

// The usage file of this process's memory cgroup (the leaf), or "" when there is none.
const std::string& usage_path() {
    static const std::string path = [] {
        memgov::cgroup_config c;
        c.limit_env = "";
        memgov::cgroup_reader r{c};
        const auto& l = r.layout();
        if (l.controller == memgov::memory_controller::none || l.levels.empty()) return std::string{};
        return l.levels.front().directory +
               (l.controller == memgov::memory_controller::v2 ? "/memory.current" : "/memory.usage_in_bytes");
    }();
    return path;
}

memgov::pressure_monitor<>& monitor() {
    static memgov::pressure_monitor<> m{};
    return m;
}

std::uint64_t read_whole(const char* path) {
    char buf[256];
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    return n > 0 ? static_cast<std::uint64_t>(n) : 0;
}

void level_load(benchmark::State& state) {
    auto& m = monitor();
    for (auto _ : state) {
        benchmark::DoNotOptimize(m.level());
    }
    state.SetItemsProcessed(state.iterations());
}

void usage_open_read_close(benchmark::State& state) {
    const std::string& p = usage_path();
    if (p.empty()) {
        state.SkipWithError("no memory cgroup");
        return;
    }
    for (auto _ : state) benchmark::DoNotOptimize(read_whole(p.c_str()));
    state.SetItemsProcessed(state.iterations());
}

void usage_pread_kept_fd(benchmark::State& state) {
    const std::string& p = usage_path();
    const int fd = p.empty() ? -1 : ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        state.SkipWithError("no memory cgroup");
        return;
    }
    char buf[64];
    for (auto _ : state) benchmark::DoNotOptimize(::pread(fd, buf, sizeof buf, 0));
    ::close(fd);
    state.SetItemsProcessed(state.iterations());
}

void statm_open_read_close(benchmark::State& state) {
    for (auto _ : state) benchmark::DoNotOptimize(read_whole("/proc/self/statm"));
    state.SetItemsProcessed(state.iterations());
}

void update_estimate(benchmark::State& state) {
    static memgov::ledger l;
    static memgov::pressure_monitor<> m{{}, &l};
    l.charge(memgov::category::pool_in_use, 4096);
    for (auto _ : state) benchmark::DoNotOptimize(m.update_estimate());
    state.SetItemsProcessed(state.iterations());
}

void full_sample(benchmark::State& state) {
    auto& m = monitor();
    const memgov::steady_clock clock;
    for (auto _ : state) benchmark::DoNotOptimize(m.sample(clock.now()));
    state.SetItemsProcessed(state.iterations());
}

std::uint64_t rss_now() {
    char buf[128];
    const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    unsigned long long size = 0, resident = 0;
    if (std::sscanf(buf, "%llu %llu", &size, &resident) != 2) return 0;
    return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

// Grows memory by 1 GiB in 32 MiB bursts, each charged to the ledger as it is touched, with
// the sampler thread running; after every burst compares the estimate with the RSS.
void estimate_accuracy(benchmark::State& state) {
    // range(0): 0 = no ledger, 1 = charge when allocating (before the pages are touched: what
    // memgov's components do for fresh memory), 2 = charge after touching.
    const bool with_ledger = state.range(0) != 0;
    const bool charge_first = state.range(0) == 1;
    // range(1): quiet time between bursts, in ms (the run then spans several calibration
    // windows and most samples land between bursts or in the middle of one).
    const auto pause = std::chrono::milliseconds{state.range(1)};
    constexpr std::size_t burst = 32 * MiB;
    constexpr std::size_t bursts = 32; // 1 GiB
    double worst = 0;
    double sum = 0;
    std::uint64_t samples = 0;
    std::size_t checks = 0;
    for (auto _ : state) {
        memgov::ledger l;
        memgov::pressure_monitor<> m{{}, with_ledger ? &l : nullptr};
        m.start();
        std::vector<void*> blocks;
        for (std::size_t b = 0; b < bursts; ++b) {
            void* p = ::mmap(nullptr, burst, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) {
                state.SkipWithError("mmap failed");
                break;
            }
            if (charge_first) l.charge(memgov::category::pool_in_use, static_cast<std::int64_t>(burst));
            std::memset(p, 1, burst);
            if (!charge_first) l.charge(memgov::category::pool_in_use, static_cast<std::int64_t>(burst));
            blocks.push_back(p);
            if (pause.count() > 0) std::this_thread::sleep_for(pause);
            const double est = static_cast<double>(m.estimate_bytes());
            const double rss = static_cast<double>(rss_now());
            const double err = std::abs(est - rss) / rss;
            worst = std::max(worst, err);
            sum += err;
            ++checks;
        }
        samples = m.snapshot().sample_count;
        m.stop();
        for (void* p : blocks) ::munmap(p, burst);
        l.release(memgov::category::pool_in_use, static_cast<std::int64_t>(blocks.size() * burst));
    }
    state.counters["worst_err_pct"] = worst * 100.0;
    state.counters["mean_err_pct"] = checks != 0 ? 100.0 * sum / static_cast<double>(checks) : 0.0;
    state.counters["samples"] = static_cast<double>(samples);
    state.counters["bursts"] = static_cast<double>(bursts);
}

} // namespace

BENCHMARK(level_load);
BENCHMARK(usage_open_read_close);
BENCHMARK(usage_pread_kept_fd);
BENCHMARK(statm_open_read_close);
BENCHMARK(update_estimate);
BENCHMARK(full_sample);
BENCHMARK(estimate_accuracy)
    ->Args({1, 50})
    ->Args({1, 0})
    ->Args({2, 50})
    ->Args({0, 50})
    ->ComputeStatistics("max", [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); })
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
