// object_pool acquire + use + release of a message-like object (≈256 B of fixed fields, a
// std::string topic and a std::vector<uint8_t> payload filled to 1–4 KiB), against the two
// things a user would otherwise write: std::make_unique + delete, and boost::object_pool
// (construct/destroy). "inflight:N" keeps N messages alive in a ring, so each iteration
// releases the oldest message, then makes a new one (steady churn); every peer does the
// same in the same order.
//
//   build/bench/benchmarks/object_pool_bench --benchmark_min_time=0.05
//       --benchmark_repetitions=10 --benchmark_enable_random_interleaving=true
//       --benchmark_report_aggregates_only=true --benchmark_format=json > object_pool.json
//   scripts/bench_ratio.py object_pool.json
//
// Interleaving the repetitions makes every peer sample the same machine noise.
// memgov rows carry a `reuse_rate` counter: reuses / acquisitions over the whole run.
// `floor_reused_object` fills and resets one object with no pool and no allocation: the cost
// of the "use" alone, which bounds what any pool can gain over make_unique here.
#include <memgov/object_pool.hpp>

#include <benchmark/benchmark.h>
#include <boost/pool/object_pool.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct message {
    std::array<std::uint64_t, 30> fields{}; // 240 B
    std::uint64_t id = 0;
    std::uint32_t kind = 0;
    std::uint32_t flags = 0;
    std::string topic;
    std::vector<std::uint8_t> payload;

    void reset() noexcept {
        fields = {};
        id = 0;
        kind = 0;
        flags = 0;
        topic.clear();
        payload.clear();
    }
    [[nodiscard]] std::size_t retained_bytes() const noexcept {
        return topic.capacity() + payload.capacity();
    }
};
static_assert(sizeof(message) >= 256 + 56);

constexpr std::size_t size_count = 1024;
constexpr std::string_view topic = "gateway.audio.session-000123456.frames.v1";

struct inputs {
    std::array<std::uint32_t, size_count> sizes{};
    std::vector<std::uint8_t> source;
    inputs() : source(4096) {
        std::mt19937 rng{42};
        for (auto& s : sizes) s = static_cast<std::uint32_t>(1024 + rng() % (4096 - 1024 + 1));
        for (auto& b : source) b = static_cast<std::uint8_t>(rng());
    }
};
const inputs& in() {
    static const inputs i;
    return i;
}

// The "use": what a gateway does with a message between getting and dropping it.
inline void use(message& m, std::size_t i) {
    const inputs& x = in();
    m.id = i;
    m.kind = static_cast<std::uint32_t>(i & 7);
    m.fields[i % m.fields.size()] = i;
    m.topic.assign(topic);
    const std::uint8_t* src = x.source.data();
    m.payload.assign(src, src + x.sizes[i % size_count]);
    benchmark::DoNotOptimize(m.payload.data());
    benchmark::DoNotOptimize(m.topic.data());
}

using pool_t = memgov::object_pool<message>;

void memgov_object_pool(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    pool_t pool;
    std::vector<pool_t::lease> ring(n);
    std::size_t i = 0;
    for (auto _ : state) {
        auto& slot = ring[i % n];
        slot.reset(); // release (and reset) the oldest message first, as every peer does
        slot = pool.acquire();
        use(*slot, i);
        ++i;
    }
    ring.clear();
    const auto st = pool.stats();
    state.counters["reuse_rate"] = st.reuse_rate();
    state.SetItemsProcessed(state.iterations());
}

void make_unique(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    std::vector<std::unique_ptr<message>> ring(n);
    std::size_t i = 0;
    for (auto _ : state) {
        auto& slot = ring[i % n];
        slot.reset();
        slot = std::make_unique<message>();
        use(*slot, i);
        ++i;
    }
    state.SetItemsProcessed(state.iterations());
}

void boost_object_pool(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    boost::object_pool<message> pool;
    std::vector<message*> ring(n, nullptr);
    std::size_t i = 0;
    for (auto _ : state) {
        auto& slot = ring[i % n];
        if (slot != nullptr) pool.destroy(slot);
        slot = pool.construct();
        use(*slot, i);
        ++i;
    }
    for (auto* p : ring) {
        if (p != nullptr) pool.destroy(p);
    }
    state.SetItemsProcessed(state.iterations());
}

// Two threads share one pool (each with its own ring): the thread caches at work.
pool_t& shared_pool() {
    static pool_t pool;
    return pool;
}

void memgov_object_pool_shared(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    pool_t& pool = shared_pool();
    std::vector<pool_t::lease> ring(n);
    std::size_t i = 0;
    for (auto _ : state) {
        auto& slot = ring[i % n];
        slot.reset();
        slot = pool.acquire();
        use(*slot, i);
        ++i;
    }
    ring.clear();
    if (state.thread_index() == 0) state.counters["reuse_rate"] = pool.stats().reuse_rate();
    state.SetItemsProcessed(state.iterations());
}

// Reference row, not a peer: the same use and reset on one object, no pool, no allocation.
void floor_reused_object(benchmark::State& state) {
    message m;
    std::size_t i = 0;
    for (auto _ : state) {
        use(m, i);
        m.reset();
        ++i;
    }
}

} // namespace

BENCHMARK(memgov_object_pool)->ArgName("inflight")->Arg(1)->Arg(64);
BENCHMARK(make_unique)->ArgName("inflight")->Arg(1)->Arg(64);
BENCHMARK(boost_object_pool)->ArgName("inflight")->Arg(1)->Arg(64);
BENCHMARK(memgov_object_pool_shared)->ArgName("inflight")->Arg(64)->Threads(2)->UseRealTime();
BENCHMARK(make_unique)->ArgName("inflight")->Arg(64)->Threads(2)->UseRealTime();

BENCHMARK(floor_reused_object);

BENCHMARK_MAIN();
