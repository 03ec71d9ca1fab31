// Ledger charge+release throughput against the counter a user would otherwise reach for: one
// shared std::atomic<int64_t>. Also shows a cache-line striped atomic (the usual "sharded
// counter") to place the ledger's design between the two.
//
//   build/bench/benchmarks/ledger_bench --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true --benchmark_format=json > ledger.json
//   scripts/bench_ratio.py ledger.json
#include <memgov/ledger.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <cstdint>

namespace {

constexpr std::int64_t chunk = 4096;

memgov::ledger& shared_ledger() {
    static memgov::ledger l;
    return l;
}

void memgov_ledger(benchmark::State& state) {
    memgov::ledger& l = shared_ledger();
    for (auto _ : state) {
        l.charge(memgov::category::windows, chunk);
        l.release(memgov::category::windows, chunk);
    }
    state.SetItemsProcessed(state.iterations());
}

std::atomic<std::int64_t> g_shared{0};

void shared_atomic(benchmark::State& state) {
    for (auto _ : state) {
        g_shared.fetch_add(chunk, std::memory_order_relaxed);
        g_shared.fetch_sub(chunk, std::memory_order_relaxed);
    }
    state.SetItemsProcessed(state.iterations());
}

struct alignas(memgov::cache_line_size) padded_atomic {
    std::atomic<std::int64_t> v{0};
};
std::array<padded_atomic, 64> g_stripes;

void striped_atomic(benchmark::State& state) {
    auto& stripe = g_stripes[static_cast<std::size_t>(state.thread_index()) % g_stripes.size()];
    for (auto _ : state) {
        stripe.v.fetch_add(chunk, std::memory_order_relaxed);
        stripe.v.fetch_sub(chunk, std::memory_order_relaxed);
    }
    state.SetItemsProcessed(state.iterations());
}

} // namespace

BENCHMARK(memgov_ledger)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(shared_atomic)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(striped_atomic)->Threads(1)->Threads(2)->UseRealTime();

BENCHMARK_MAIN();
