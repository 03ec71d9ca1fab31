// object_pool acquire + use + release, against the two things a user would otherwise write:
// std::make_unique + delete (and boost::object_pool for the big message), plus a floor.
//
// Three objects:
// - `small` (small_object): a trivial 64-byte struct with nothing to reset. The use writes one
//   word. This is the pool's own cost, with nothing to hide it.
// - `vector_message`: one std::vector<uint8_t> payload, 64–512 B copied in (one heap
//   allocation per make_unique, none once the pool has kept its capacity).
// - the message (unnamed rows, kept from before): ≈256 B of fixed fields, a std::string topic
//   and a std::vector<uint8_t> payload filled to 1–4 KiB.
// "inflight:N" keeps N objects alive in a ring, so each iteration releases the oldest object,
// then makes a new one (steady churn); every peer does the same in the same order.
//
// Peers of `small` and `vector_message`: `make_unique` on a warmed heap (each run first
// allocates and frees a few thousand objects and runs the loop untimed, so glibc is in its
// steady state, not its first-touch mode), and `floor_tls_list`: the bare minimum a pool can
// be, a thread_local singly linked stack of 64-byte nodes with no accounting, no handles and no
// ages. `faults_per_op` counts page faults (getrusage) over the timed loop.
//
//   build/bench/benchmarks/object_pool_bench --benchmark_min_time=0.05
//       --benchmark_repetitions=10 --benchmark_enable_random_interleaving=true
//       --benchmark_report_aggregates_only=true --benchmark_format=json > object_pool.json
//   scripts/bench_ratio.py object_pool.json [more runs.json ...]
//
// Interleaving the repetitions makes every peer sample the same machine noise.
// memgov rows carry a `reuse_rate` counter: reuses / acquisitions over the whole run.
// `floor_reused_object` fills and resets one message with no pool and no allocation: the cost
// of the "use" alone, which bounds what any pool can gain over make_unique there.
#include <memgov/object_pool.hpp>

#include <benchmark/benchmark.h>
#include <boost/pool/object_pool.hpp>

#include <sys/resource.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
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
    [[nodiscard]] std::size_t retained_bytes() const noexcept { return topic.capacity() + payload.capacity(); }
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

// ---- small objects: the pool's own cost ----

// A trivial 64-byte object with nothing to reset (its user overwrites what it uses).
// make_unique<small_object>() value-initializes it: 64 B of zeroing, part of that peer's cost.
struct small_object {
    std::array<std::uint64_t, 8> words;
    void reset() noexcept {}
};
static_assert(sizeof(small_object) == 64 && std::is_trivially_copyable_v<small_object>);

inline void use(small_object& o, std::size_t i) {
    o.words[i & 7] = i;
    benchmark::DoNotOptimize(&o);
}

// One vector: the commonest message shape. 64–512 B of payload.
struct vector_message {
    std::vector<std::uint8_t> payload;
    void reset() noexcept { payload.clear(); }
    [[nodiscard]] std::size_t retained_bytes() const noexcept { return payload.capacity(); }
};

inline void use(vector_message& m, std::size_t i) {
    const inputs& x = in();
    const std::uint8_t* src = x.source.data();
    m.payload.assign(src, src + 64 + x.sizes[i % size_count] % (512 - 64 + 1));
    benchmark::DoNotOptimize(m.payload.data());
}

// The floor: a thread_local LIFO of 64-byte nodes. A free small_object node keeps the link in
// its first word (the object has nothing to keep); a vector_message node keeps its message
// (and so its payload capacity) next to the link.
union small_node {
    small_node* next;
    small_object object;
};
struct alignas(64) message_node {
    vector_message object;
    message_node* next = nullptr;
};
template <class T>
using floor_node = std::conditional_t<std::is_same_v<T, small_object>, small_node, message_node>;
static_assert(sizeof(floor_node<small_object>) == 64 && sizeof(floor_node<vector_message>) == 64);

template <class T>
struct floor_tls_list {
    using node = floor_node<T>;
    static node*& head() noexcept {
        static thread_local node* h = nullptr;
        return h;
    }
    static T* acquire() {
        node* n = head();
        if (n == nullptr) return &(new node{})->object; // only while warming up
        head() = n->next;
        return &n->object;
    }
    static void release(T* p) noexcept {
        auto* n = reinterpret_cast<node*>(p); // the object is the node's first member
        if constexpr (!std::is_same_v<T, small_object>) p->reset();
        n->next = head();
        head() = n;
    }
    static void drain() noexcept {
        while (node* n = head()) {
            head() = n->next;
            delete n;
        }
    }
};

// The ring every peer runs: release the oldest of `n` (a power of two) objects in flight, get
// a new one, use it.
template <class Get, class Put, class Ptr>
void churn(std::vector<Ptr>& ring, std::size_t iterations, std::size_t& i, Get get, Put put) {
    const std::size_t mask = ring.size() - 1;
    for (std::size_t k = 0; k < iterations; ++k, ++i) {
        Ptr& p = ring[i & mask];
        put(p);
        p = get();
        use(*p, i);
    }
}

long page_faults() noexcept {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt + u.ru_majflt;
}

constexpr std::size_t warm_iterations = 20000;

template <class T>
void memgov_pool(benchmark::State& state) {
    using pool_type = memgov::object_pool<T>;
    using lease = typename pool_type::lease;
    const auto n = static_cast<std::size_t>(state.range(0));
    pool_type pool;
    std::vector<lease> ring(n);
    std::size_t i = 0;
    auto get = [&] { return pool.acquire(); };
    auto put = [](lease& l) { l.reset(); };
    churn(ring, warm_iterations, i, get, put);
    const long faults = page_faults();
    const std::size_t mask = n - 1;
    for (auto _ : state) {
        lease& p = ring[i & mask];
        p.reset();
        p = pool.acquire();
        use(*p, i);
        ++i;
    }
    state.counters["faults_per_op"] =
        benchmark::Counter(static_cast<double>(page_faults() - faults), benchmark::Counter::kAvgIterations);
    ring.clear();
    state.counters["reuse_rate"] = pool.stats().reuse_rate();
    state.SetItemsProcessed(state.iterations());
}

template <class T>
void make_unique_warm(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    {
        // Shape the heap first: many objects of this size made and freed out of order.
        std::vector<std::unique_ptr<T>> many(4096);
        std::size_t j = 0;
        for (auto& p : many) {
            p = std::make_unique<T>();
            use(*p, j++);
        }
        for (std::size_t k = 0; k < many.size(); k += 2) many[k].reset();
        many.clear();
    }
    std::vector<std::unique_ptr<T>> ring(n);
    std::size_t i = 0;
    churn(
        ring, warm_iterations, i, [] { return std::make_unique<T>(); }, [](std::unique_ptr<T>& p) { p.reset(); });
    const long faults = page_faults();
    const std::size_t mask = n - 1;
    for (auto _ : state) {
        std::unique_ptr<T>& p = ring[i & mask];
        p.reset();
        p = std::make_unique<T>();
        use(*p, i);
        ++i;
    }
    state.counters["faults_per_op"] =
        benchmark::Counter(static_cast<double>(page_faults() - faults), benchmark::Counter::kAvgIterations);
    state.SetItemsProcessed(state.iterations());
}

template <class T>
void floor_list(benchmark::State& state) {
    using list = floor_tls_list<T>;
    const auto n = static_cast<std::size_t>(state.range(0));
    std::vector<T*> ring(n, nullptr);
    std::size_t i = 0;
    auto put = [](T*& p) {
        if (p != nullptr) list::release(p);
    };
    churn(
        ring, warm_iterations, i, [] { return list::acquire(); }, put);
    const long faults = page_faults();
    const std::size_t mask = n - 1;
    for (auto _ : state) {
        T*& p = ring[i & mask];
        if (p != nullptr) list::release(p);
        p = list::acquire();
        use(*p, i);
        ++i;
    }
    state.counters["faults_per_op"] =
        benchmark::Counter(static_cast<double>(page_faults() - faults), benchmark::Counter::kAvgIterations);
    for (T*& p : ring) put(p);
    list::drain();
    state.SetItemsProcessed(state.iterations());
}

template <class T>
void register_small_peers(const char* object) {
    const std::string o{object};
    benchmark::RegisterBenchmark(("memgov/" + o).c_str(), memgov_pool<T>)->ArgName("inflight")->Arg(1)->Arg(64);
    benchmark::RegisterBenchmark(("make_unique/" + o).c_str(), make_unique_warm<T>)
        ->ArgName("inflight")
        ->Arg(1)
        ->Arg(64);
    benchmark::RegisterBenchmark(("floor_tls_list/" + o).c_str(), floor_list<T>)->ArgName("inflight")->Arg(1)->Arg(64);
}

} // namespace

BENCHMARK(memgov_object_pool)->ArgName("inflight")->Arg(1)->Arg(64);
BENCHMARK(make_unique)->ArgName("inflight")->Arg(1)->Arg(64);
BENCHMARK(boost_object_pool)->ArgName("inflight")->Arg(1)->Arg(64);
BENCHMARK(memgov_object_pool_shared)->ArgName("inflight")->Arg(64)->Threads(2)->UseRealTime();
BENCHMARK(make_unique)->ArgName("inflight")->Arg(64)->Threads(2)->UseRealTime();

BENCHMARK(floor_reused_object);

int main(int argc, char** argv) {
    register_small_peers<small_object>("small");
    register_small_peers<vector_message>("vector_message");
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
