// The cost of admission control at ingress: governor::admit against what a service would write
// itself — a budget check under a mutex, and a shared atomic byte budget (reserve and release).
//
//   build/bench/benchmarks/governor_bench --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true --benchmark_format=json > governor.json
//   scripts/bench_ratio.py governor.json
#include <memgov/governor.hpp>

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <mutex>

namespace {

constexpr std::size_t cost = 4096;

memgov::governor<>& shared_governor() {
    static memgov::governor<> g{[] {
        memgov::governor_config c;
        c.monitor.use_systemd_pressure_env = false;
        return c;
    }()};
    return g;
}

void memgov_admit(benchmark::State& state) {
    auto& g = shared_governor();
    std::int64_t admitted = 0;
    for (auto _ : state) {
        admitted += g.admit(cost, memgov::admit_kind::work) ? 1 : 0;
        benchmark::DoNotOptimize(admitted);
    }
    state.SetItemsProcessed(state.iterations());
}

struct mutex_budget {
    std::mutex m;
    std::int64_t used = 0;
    std::int64_t limit = std::int64_t{1} << 40;
};
mutex_budget g_mutex_budget;

void mutex_check(benchmark::State& state) {
    std::int64_t admitted = 0;
    for (auto _ : state) {
        std::lock_guard lock{g_mutex_budget.m};
        admitted += g_mutex_budget.used + static_cast<std::int64_t>(cost) <= g_mutex_budget.limit ? 1 : 0;
        benchmark::DoNotOptimize(admitted);
    }
    state.SetItemsProcessed(state.iterations());
}

std::atomic<std::int64_t> g_atomic_budget{std::int64_t{1} << 40};

void atomic_reserve(benchmark::State& state) {
    std::int64_t admitted = 0;
    for (auto _ : state) {
        // Reserve, and give back when the work is done (as a byte semaphore does).
        const bool ok = g_atomic_budget.fetch_sub(cost, std::memory_order_acq_rel) >= static_cast<std::int64_t>(cost);
        admitted += ok ? 1 : 0;
        g_atomic_budget.fetch_add(cost, std::memory_order_acq_rel);
        benchmark::DoNotOptimize(admitted);
    }
    state.SetItemsProcessed(state.iterations());
}

} // namespace

BENCHMARK(memgov_admit)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(mutex_check)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(atomic_reserve)->Threads(1)->Threads(2)->UseRealTime();

BENCHMARK_MAIN();
