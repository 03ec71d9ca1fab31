// buffer_pool against the allocators and pools a user would otherwise reach for.
//
//   P1  acquire+release of mixed sizes (1 KiB .. 1 MiB, random over the five classes, 8 live
//       buffers, first byte written) on one thread: glibc malloc/free, mimalloc
//       (mi_malloc/mi_free), std::pmr::synchronized_pool_resource, and a bare thread-local
//       stack per class (baselines/tls_stack_pool.hpp, the design's cost floor).
//   P2  acquire on one thread, release on another, through the same SPSC queue in every
//       variant: glibc malloc/free and mimalloc.
//   P3  harmful capacity: a 1 GiB spike of large buffers, then steady 1 KiB traffic, then one
//       trim; RSS (from /proc/self/statm) against a grow-once free-list pool
//       (baselines/grow_once_pool.hpp).
//
// mimalloc is loaded with dlopen (RTLD_LOCAL): linking it would replace malloc for the whole
// process and the glibc peer would silently measure mimalloc. The binary checks that plain
// malloc is still glibc's and skips the mimalloc variants if the library is missing.
//
//   build/bench/benchmarks/buffer_pool_bench --benchmark_filter='P1|P2'
//       --benchmark_min_time=0.05 --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true --benchmark_format=json > buffer_pool.json
//   scripts/bench_ratio.py buffer_pool.json
//
// P2 reports real time (throughput) and, as CPU time, the whole process's CPU time (both
// threads), which is steadier on a shared machine. P3 measures process RSS, so run each variant
// in its own process (what ran before would otherwise sit in the baseline):
//   build/bench/benchmarks/buffer_pool_bench --benchmark_filter=memgov/P3
//   build/bench/benchmarks/buffer_pool_bench --benchmark_filter=grow_once/P3
#include <memgov/buffer_pool.hpp>

#include "baselines/grow_once_pool.hpp"
#include "baselines/tls_stack_pool.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory_resource>
#include <random>
#include <thread>
#include <vector>

#include <dlfcn.h>
#include <malloc.h>
#include <unistd.h>

namespace {

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;
constexpr std::size_t live_count = 8; // buffers alive at once in P1
constexpr std::size_t size_count = 4096;

// Random sizes: a class chosen uniformly among the five, then a size uniform within it
// (the first class starts at 1 KiB).
const std::vector<std::size_t>& mixed_sizes() {
    static const std::vector<std::size_t> sizes = [] {
        constexpr std::array<std::size_t, 6> bounds{1 * KiB - 1, 4 * KiB, 16 * KiB, 64 * KiB,
                                                    256 * KiB, 1 * MiB};
        std::mt19937_64 rng{42};
        std::vector<std::size_t> out(size_count);
        for (auto& s : out) {
            const std::size_t c = rng() % 5;
            s = bounds[c] + 1 + rng() % (bounds[c + 1] - bounds[c]);
        }
        return out;
    }();
    return sizes;
}

// ---- mimalloc through dlopen ------------------------------------------------------------------

struct mimalloc_api {
    void* (*malloc)(std::size_t) = nullptr;
    void (*free)(void*) = nullptr;
    bool (*is_in_heap_region)(const void*) = nullptr;
    const char* skip_reason = nullptr;
};

const mimalloc_api& mimalloc() {
    static const mimalloc_api api = [] {
        mimalloc_api a;
        void* h = ::dlopen("libmimalloc.so.2", RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr) {
            a.skip_reason = "libmimalloc.so.2 not found (apt-get install libmimalloc-dev)";
            return a;
        }
        a.malloc = reinterpret_cast<void* (*)(std::size_t)>(::dlsym(h, "mi_malloc"));
        a.free = reinterpret_cast<void (*)(void*)>(::dlsym(h, "mi_free"));
        a.is_in_heap_region =
            reinterpret_cast<bool (*)(const void*)>(::dlsym(h, "mi_is_in_heap_region"));
        if (a.malloc == nullptr || a.free == nullptr || a.is_in_heap_region == nullptr) {
            a.skip_reason = "mimalloc symbols missing";
            return a;
        }
        // Plain malloc must still be glibc's, or every "glibc" figure would be mimalloc's.
        void* probe = std::malloc(64);
        const bool replaced = a.is_in_heap_region(probe);
        std::free(probe);
        void* mine = a.malloc(64);
        const bool works = a.is_in_heap_region(mine);
        a.free(mine);
        if (replaced) a.skip_reason = "malloc is mimalloc's in this process: glibc peer invalid";
        if (!works) a.skip_reason = "mi_is_in_heap_region does not recognise mi_malloc memory";
        return a;
    }();
    return api;
}

void report_malloc_check() {
    const auto& m = mimalloc();
    if (m.skip_reason == nullptr) {
        std::fprintf(stderr, "mimalloc loaded with dlopen; malloc(64) is not in mimalloc's heap: "
                             "the glibc peer is glibc\n");
    } else {
        std::fprintf(stderr, "mimalloc variants skipped: %s\n", m.skip_reason);
    }
}

// ---- P1: one thread, mixed sizes ----------------------------------------------------------------

template <class Acquire, class Release>
void run_p1(benchmark::State& state, Acquire acquire, Release release) {
    const auto& sizes = mixed_sizes();
    std::array<void*, live_count> live{};
    std::array<std::size_t, live_count> live_size{};
    std::size_t i = 0;
    for (auto _ : state) {
        const std::size_t slot = i % live_count;
        if (live[slot] != nullptr) release(live[slot], live_size[slot]);
        const std::size_t n = sizes[i % size_count];
        void* p = acquire(n);
        static_cast<volatile unsigned char*>(p)[0] = 1;
        live[slot] = p;
        live_size[slot] = n;
        ++i;
    }
    for (std::size_t s = 0; s < live_count; ++s) {
        if (live[s] != nullptr) release(live[s], live_size[s]);
    }
    state.SetItemsProcessed(state.iterations());
}

void P1_glibc(benchmark::State& state) {
    run_p1(state, [](std::size_t n) { return std::malloc(n); },
           [](void* p, std::size_t) { std::free(p); });
}

void P1_mimalloc(benchmark::State& state) {
    const auto& m = mimalloc();
    if (m.skip_reason != nullptr) {
        state.SkipWithError(m.skip_reason);
        return;
    }
    run_p1(state, [&](std::size_t n) { return m.malloc(n); },
           [&](void* p, std::size_t) { m.free(p); });
}

void P1_pmr_synchronized(benchmark::State& state) {
    std::pmr::synchronized_pool_resource r{std::pmr::pool_options{0, 1 * MiB}};
    run_p1(state, [&](std::size_t n) { return r.allocate(n, 64); },
           [&](void* p, std::size_t n) { r.deallocate(p, n, 64); });
}

void P1_tls_stack(benchmark::State& state) {
    baseline::tls_stack_pool pool;
    run_p1(state, [&](std::size_t n) { return pool.acquire(n); },
           [&](void* p, std::size_t n) { pool.release(p, n); });
}

void run_p1_memgov(benchmark::State& state, memgov::ledger* l) {
    memgov::buffer_pool pool{{}, l};
    const auto& sizes = mixed_sizes();
    std::array<memgov::buffer, live_count> live{};
    std::size_t i = 0;
    for (auto _ : state) {
        const std::size_t slot = i % live_count;
        live[slot].reset();
        live[slot] = pool.acquire(sizes[i % size_count]);
        static_cast<volatile std::byte*>(live[slot].data())[0] = std::byte{1};
        ++i;
    }
    for (auto& b : live) b.reset();
    state.SetItemsProcessed(state.iterations());
}

void P1_memgov(benchmark::State& state) {
    memgov::ledger l;
    run_p1_memgov(state, &l);
}

void P1_memgov_no_ledger(benchmark::State& state) { run_p1_memgov(state, nullptr); }

// ---- P2: acquire on one thread, release on another ----------------------------------------------

// A bounded single-producer single-consumer ring; the same one in every variant. 64 slots:
// about 17 MiB of mixed-size buffers in flight, a realistic hand-off backlog.
template <class T, std::size_t N = 64>
class spsc_queue {
public:
    void push(T&& v) noexcept {
        const std::size_t t = m_tail.load(std::memory_order_relaxed);
        unsigned spins = 0;
        while (t - m_head_cache >= N) {
            m_head_cache = m_head.load(std::memory_order_acquire);
            if (t - m_head_cache >= N) backoff(spins);
        }
        m_slots[t % N] = std::move(v);
        m_tail.store(t + 1, std::memory_order_release);
    }
    bool pop(T& out) noexcept {
        const std::size_t h = m_head.load(std::memory_order_relaxed);
        if (h == m_tail_cache) {
            m_tail_cache = m_tail.load(std::memory_order_acquire);
            if (h == m_tail_cache) return false;
        }
        out = std::move(m_slots[h % N]);
        m_head.store(h + 1, std::memory_order_release);
        return true;
    }

private:
    static void cpu_relax() noexcept { __builtin_ia32_pause(); }

public:
    // Spin briefly, then yield: on a machine with as many busy threads as cores, a waiting
    // side must let the other one run.
    static void backoff(unsigned& spins) noexcept {
        if (++spins < 64) {
            cpu_relax();
        } else {
            std::this_thread::yield();
            spins = 0;
        }
    }

private:
    std::array<T, N> m_slots{};
    alignas(64) std::atomic<std::size_t> m_tail{0};
    std::size_t m_head_cache = 0; // producer's view of head
    alignas(64) std::atomic<std::size_t> m_head{0};
    std::size_t m_tail_cache = 0; // consumer's view of tail
};

struct raw_item {
    void* p = nullptr;
    std::size_t n = 0;
};

template <class Item, class Acquire, class Release>
void run_p2(benchmark::State& state, Acquire acquire, Release release) {
    const auto& sizes = mixed_sizes();
    auto q = std::make_unique<spsc_queue<Item>>();
    std::atomic<bool> done{false};
    std::thread consumer{[&] {
        Item it{};
        unsigned spins = 0;
        for (;;) {
            if (q->pop(it)) {
                release(it);
                spins = 0;
            } else if (done.load(std::memory_order_acquire)) {
                while (q->pop(it)) release(it);
                return;
            } else {
                spsc_queue<Item>::backoff(spins);
            }
        }
    }};
    std::size_t i = 0;
    for (auto _ : state) {
        q->push(acquire(sizes[i % size_count]));
        ++i;
    }
    done.store(true, std::memory_order_release);
    consumer.join();
    state.SetItemsProcessed(state.iterations());
}

void P2_glibc(benchmark::State& state) {
    run_p2<raw_item>(
        state,
        [](std::size_t n) {
            void* p = std::malloc(n);
            static_cast<volatile unsigned char*>(p)[0] = 1;
            return raw_item{p, n};
        },
        [](raw_item& it) { std::free(it.p); });
}

void P2_mimalloc(benchmark::State& state) {
    const auto& m = mimalloc();
    if (m.skip_reason != nullptr) {
        state.SkipWithError(m.skip_reason);
        return;
    }
    run_p2<raw_item>(
        state,
        [&](std::size_t n) {
            void* p = m.malloc(n);
            static_cast<volatile unsigned char*>(p)[0] = 1;
            return raw_item{p, n};
        },
        [&](raw_item& it) { m.free(it.p); });
}

void P2_memgov(benchmark::State& state) {
    memgov::ledger l;
    memgov::buffer_pool pool{{}, &l};
    run_p2<memgov::buffer>(
        state,
        [&](std::size_t n) {
            memgov::buffer b = pool.acquire(n);
            static_cast<volatile std::byte*>(b.data())[0] = std::byte{1};
            return b;
        },
        [](memgov::buffer& b) { b.reset(); });
}

// ---- P3: harmful capacity ------------------------------------------------------------------------

std::size_t resident_bytes() {
    std::ifstream statm{"/proc/self/statm"};
    std::size_t size_pages = 0;
    std::size_t resident_pages = 0;
    statm >> size_pages >> resident_pages;
    return resident_pages * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

void touch(void* p, std::size_t n) {
    auto* b = static_cast<volatile unsigned char*>(p);
    for (std::size_t i = 0; i < n; i += 4096) b[i] = 1;
}

// The spike: 1 GiB live at once, half in 1 MiB buffers (the largest class) and half in 4 MiB
// buffers (oversize for buffer_pool). Then 100k steady 1 KiB requests.
constexpr std::size_t spike_small = 512; // x 1 MiB
constexpr std::size_t spike_large = 128; // x 4 MiB
constexpr std::size_t steady_ops = 100000;

void report_p3(benchmark::State& state, std::size_t baseline, std::size_t peak,
               std::size_t after) {
    state.counters["baseline_MiB"] = static_cast<double>(baseline) / MiB;
    state.counters["peak_MiB"] = static_cast<double>(peak) / MiB;
    state.counters["after_trim_MiB"] = static_cast<double>(after) / MiB;
    state.counters["after_over_baseline"] =
        static_cast<double>(after) / static_cast<double>(baseline);
}

void P3_grow_once(benchmark::State& state) {
    for (auto _ : state) {
        ::malloc_trim(0);
        const std::size_t baseline = resident_bytes();
        baseline::grow_once_pool pool;
        std::size_t peak = 0;
        {
            std::vector<baseline::grow_once_pool::buffer> live;
            for (std::size_t i = 0; i < spike_small + spike_large; ++i) {
                const std::size_t n = i < spike_small ? 1 * MiB : 4 * MiB;
                live.push_back(pool.get(n));
                touch(live.back()->data(), n);
            }
            peak = resident_bytes();
            for (auto& b : live) pool.put(std::move(b));
        }
        for (std::size_t i = 0; i < steady_ops; ++i) {
            auto b = pool.get(1 * KiB);
            (*b)[0] = std::byte{1};
            pool.put(std::move(b));
        }
        ::malloc_trim(0); // the only trim this pattern has
        const std::size_t after = resident_bytes();
        report_p3(state, baseline, peak, after);
        state.counters["idle_capacity_MiB"] = static_cast<double>(pool.idle_capacity()) / MiB;
    }
}

void P3_memgov(benchmark::State& state) {
    for (auto _ : state) {
        ::malloc_trim(0);
        const std::size_t baseline = resident_bytes();
        memgov::buffer_pool pool;
        std::size_t peak = 0;
        {
            std::vector<memgov::buffer> live;
            live.reserve(spike_small + spike_large);
            for (std::size_t i = 0; i < spike_small + spike_large; ++i) {
                live.push_back(pool.acquire(i < spike_small ? 1 * MiB : 4 * MiB));
                touch(live.back().data(), live.back().size());
            }
            peak = resident_bytes();
        }
        for (std::size_t i = 0; i < steady_ops; ++i) {
            memgov::buffer b = pool.acquire(1 * KiB);
            b.data()[0] = std::byte{1};
        }
        pool.trim(0);
        ::malloc_trim(0);
        const std::size_t after = resident_bytes();
        report_p3(state, baseline, peak, after);
        state.counters["idle_MiB"] = static_cast<double>(pool.stats().idle_bytes) / MiB;
    }
}

} // namespace

BENCHMARK(P1_glibc)->Name("glibc/P1");
BENCHMARK(P1_mimalloc)->Name("mimalloc/P1");
BENCHMARK(P1_pmr_synchronized)->Name("pmr_synchronized/P1");
BENCHMARK(P1_tls_stack)->Name("tls_stack/P1");
BENCHMARK(P1_memgov)->Name("memgov/P1");
BENCHMARK(P1_memgov_no_ledger)->Name("memgov_no_ledger/P1");
BENCHMARK(P2_glibc)->Name("glibc/P2")->UseRealTime()->MeasureProcessCPUTime();
BENCHMARK(P2_mimalloc)->Name("mimalloc/P2")->UseRealTime()->MeasureProcessCPUTime();
BENCHMARK(P2_memgov)->Name("memgov/P2")->UseRealTime()->MeasureProcessCPUTime();
BENCHMARK(P3_memgov)->Name("memgov/P3")->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(P3_grow_once)->Name("grow_once/P3")->Iterations(1)->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
    report_malloc_check();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
