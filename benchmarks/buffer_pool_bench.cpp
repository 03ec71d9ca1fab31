// buffer_pool against the allocators and pools a user would otherwise reach for.
//
//   P1  acquire+release of mixed sizes (1 KiB .. 1 MiB, random over the five classes, 8 live
//       buffers, first byte written) on one thread: glibc malloc/free, mimalloc
//       (mi_malloc/mi_free), std::pmr::synchronized_pool_resource, and the cost floor: a bare
//       thread-local stack per class with the class lookup written inline
//       (baselines/tls_stack_pool.hpp). Time is the thread's CPU time.
//   P2  acquire on one thread, release on another, through the same SPSC queue in every
//       variant: glibc malloc/free and mimalloc. Time is wall time.
//   P3  harmful capacity: a 1 GiB spike of large buffers, then steady 1 KiB traffic, then one
//       trim; RSS (from /proc/self/statm) against a grow-once free-list pool
//       (baselines/grow_once_pool.hpp).
//
// Two regimes, as separate benchmarks, because the allocators have two speeds:
//   <impl>/P1/steady, <impl>/P2/steady   a warmed heap, as in a long-lived service. Before
//       timing, every benchmark (each repetition, whatever ran before it) shapes the heap of
//       the allocator it uses: once per process, 16k long-lived small objects (16 B .. 4 KiB)
//       are allocated interleaved with 64k operations of the benchmark's own pattern, and a
//       third of them freed again at random (the live state of a service: small objects
//       scattered between and above its transient buffers); then it runs 8,192 untimed
//       operations of its own pattern on its own pool or heap. The pools' upstream is glibc,
//       so glibc's heap is shaped for them too.
//   <impl>/P1/fresh, <impl>/P2/fresh     first touch: the first 16,384 operations of a new
//       process in which nothing else ran. Each iteration starts this binary again
//       (--fresh-child), which times its loop itself and reports the time and its page faults.
//
// Every benchmark reports page faults per operation (minor + major, getrusage over the timed
// loop, divided by the operations) as the counter `faults_per_op`. Each benchmark warms its own
// state, so the order does not matter; run with random interleaving and repetitions, and in
// several processes (the ratio of each run, then the median and range over the runs):
//
//   for run in 1 2 3; do nice -n -5 build/bench/benchmarks/buffer_pool_bench
//       --benchmark_filter='P1|P2' --benchmark_min_time=0.2 --benchmark_repetitions=5
//       --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
//       --benchmark_format=json > bp$run.json; done
//   scripts/bench_ratio.py bp1.json bp2.json bp3.json
//
// (the exact commands of the published figures are in docs/benchmarks.md)
//
// mimalloc is loaded with dlopen (RTLD_LOCAL): linking it would replace malloc for the whole
// process and the glibc peer would silently measure mimalloc. The binary checks that plain
// malloc is still glibc's and skips the mimalloc variants if the library is missing.
//
// P2 reports real time (throughput) and, as CPU time, the whole process's CPU time (both
// threads). P3 measures process RSS, so run each variant in its own process (what ran before
// would otherwise sit in the baseline):
//   build/bench/benchmarks/buffer_pool_bench --benchmark_filter=memgov/P3
//   build/bench/benchmarks/buffer_pool_bench --benchmark_filter=grow_once/P3
#include <memgov/buffer_pool.hpp>

#include "baselines/grow_once_pool.hpp"
#include "baselines/tls_stack_pool.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory_resource>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <dlfcn.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

namespace {

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;
constexpr std::size_t live_count = 8; // buffers alive at once in P1
constexpr std::size_t size_count = 4096;
constexpr std::size_t warm_ops = 8192;   // untimed operations before every steady benchmark
constexpr std::size_t fresh_ops = 16384; // operations timed in a fresh process

// Random sizes: a class chosen uniformly among the five, then a size uniform within it
// (the first class starts at 1 KiB).
const std::vector<std::size_t>& mixed_sizes() {
    static const std::vector<std::size_t> sizes = [] {
        constexpr std::array<std::size_t, 6> bounds{1 * KiB - 1, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB};
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

// The floor's inline class lookup must agree with memgov's default classes.
[[maybe_unused]] const bool floor_classes_checked = [] {
    const memgov::buffer_pool_config cfg;
    for (std::size_t n : mixed_sizes()) {
        std::size_t c = 0;
        while (cfg.size_classes[c] < n) ++c;
        if (baseline::tls_stack_pool::class_of(n) != c) {
            std::fprintf(stderr, "tls_stack_pool::class_of(%zu) is wrong\n", n);
            std::abort();
        }
    }
    return true;
}();

// Minor plus major page faults of the whole process so far.
long page_faults() noexcept {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt + u.ru_majflt;
}

void report_faults(benchmark::State& state, long faults, double ops) {
    state.counters["faults_per_op"] = static_cast<double>(faults) / ops;
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
        a.is_in_heap_region = reinterpret_cast<bool (*)(const void*)>(::dlsym(h, "mi_is_in_heap_region"));
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

// ---- the implementations ------------------------------------------------------------------------
//
// Each has a handle type, acquire(n) -> handle, release(handle&) (a no-op on an empty handle,
// which it leaves empty) and data(handle&). `heap` names the general allocator whose heap the
// implementation's steady state runs on (shaped once per process before its first timing).

struct raw_item {
    void* p = nullptr;
    std::size_t n = 0;
};

struct glibc_heap {
    static void* allocate(std::size_t n) noexcept { return std::malloc(n); }
    static void deallocate(void* p) noexcept { std::free(p); }
};

struct mimalloc_heap {
    static void* allocate(std::size_t n) noexcept { return mimalloc().malloc(n); }
    static void deallocate(void* p) noexcept { mimalloc().free(p); }
};

template <class Heap>
struct heap_impl {
    using heap = Heap;
    using handle = raw_item;
    static raw_item acquire(std::size_t n) noexcept { return {Heap::allocate(n), n}; }
    static void release(raw_item& h) noexcept {
        if (h.p != nullptr) Heap::deallocate(h.p);
        h.p = nullptr;
    }
    static void* data(raw_item& h) noexcept { return h.p; }
};
using glibc_impl = heap_impl<glibc_heap>;
using mimalloc_impl = heap_impl<mimalloc_heap>;

struct pmr_impl {
    using heap = glibc_heap;
    using handle = raw_item;
    std::pmr::synchronized_pool_resource r{std::pmr::pool_options{0, 1 * MiB}};
    raw_item acquire(std::size_t n) { return {r.allocate(n, 64), n}; }
    void release(raw_item& h) noexcept {
        if (h.p != nullptr) r.deallocate(h.p, h.n, 64);
        h.p = nullptr;
    }
    static void* data(raw_item& h) noexcept { return h.p; }
};

struct floor_impl {
    using heap = glibc_heap;
    using handle = raw_item;
    static raw_item acquire(std::size_t n) noexcept { return {baseline::tls_stack_pool::acquire(n), n}; }
    static void release(raw_item& h) noexcept {
        if (h.p != nullptr) baseline::tls_stack_pool::release(h.p, h.n);
        h.p = nullptr;
    }
    static void* data(raw_item& h) noexcept { return h.p; }
};

template <bool WithLedger>
struct memgov_impl {
    using heap = glibc_heap;
    using handle = memgov::buffer;
    memgov::ledger l;
    memgov::buffer_pool pool{{}, WithLedger ? &l : nullptr};
    memgov::buffer acquire(std::size_t n) { return pool.acquire(n); }
    static void release(memgov::buffer& b) noexcept { b.reset(); }
    static void* data(memgov::buffer& b) noexcept { return b.data(); }
};

bool skip_if_unavailable(benchmark::State* state, const mimalloc_impl*) {
    const char* why = mimalloc().skip_reason;
    if (why != nullptr && state != nullptr) state->SkipWithError(why);
    return why != nullptr;
}
template <class Impl>
bool skip_if_unavailable(benchmark::State*, const Impl*) {
    return false;
}

// ---- P1: one thread, mixed sizes ----------------------------------------------------------------

template <class Impl>
class p1_loop {
public:
    explicit p1_loop(Impl& impl) noexcept : m_impl{impl}, m_sizes{mixed_sizes().data()} {}
    p1_loop(const p1_loop&) = delete;
    p1_loop& operator=(const p1_loop&) = delete;
    ~p1_loop() {
        for (auto& h : m_live) m_impl.release(h);
    }

    void step() {
        auto& h = m_live[m_i % live_count];
        m_impl.release(h);
        h = m_impl.acquire(m_sizes[m_i % size_count]);
        static_cast<volatile unsigned char*>(Impl::data(h))[0] = 1;
        ++m_i;
    }
    // Every release is inside step(): nothing is left to wait for.
    void finish() noexcept {}

private:
    Impl& m_impl;
    const std::size_t* m_sizes;
    std::array<typename Impl::handle, live_count> m_live{};
    std::size_t m_i = 0;
};

// Shapes Heap's heap as a long-lived service's is, once per process: long-lived small objects
// scattered between and above the transient buffers (so the top of the heap is not free to
// be trimmed and given back), the mmap threshold raised by freed large blocks, and holes
// left by small objects that died. The objects stay allocated until the process exits.
template <class Heap>
void shape_heap() {
    static const bool shaped = [] {
        heap_impl<Heap> impl;
        p1_loop<heap_impl<Heap>> loop{impl};
        std::mt19937_64 rng{7};
        std::vector<void*> resident;
        resident.reserve(16384);
        for (std::size_t op = 0; op < 65536; ++op) {
            loop.step();
            if (op % 4 == 0) {
                const std::size_t n = std::size_t{16} << (rng() % 9); // 16 B .. 4 KiB
                void* p = Heap::allocate(n - rng() % (n / 2));
                static_cast<volatile unsigned char*>(p)[0] = 1;
                resident.push_back(p);
            }
            if (op % 12 == 0 && !resident.empty()) {
                const std::size_t k = rng() % resident.size();
                Heap::deallocate(resident[k]);
                resident[k] = resident.back();
                resident.pop_back();
            }
        }
        // A one-off large buffer grown by doubling to 16 MiB and freed (a reload, a big
        // response): each block above glibc's mmap threshold is mmapped, and freeing it raises
        // the threshold (and the trim threshold, twice it) to its size, as in most processes
        // that have run for a while.
        for (std::size_t n = 1 * MiB; n <= 16 * MiB; n *= 2) {
            void* p = Heap::allocate(n);
            std::memset(p, 1, n);
            benchmark::DoNotOptimize(p); // or the compiler drops the pair
            benchmark::ClobberMemory();
            Heap::deallocate(p);
        }
        static std::vector<void*> keep;
        keep = std::move(resident);
        return true;
    }();
    (void)shaped;
}

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

// The producer side of P2 with its consumer thread; step() acquires one buffer, writes its
// first byte and hands it over.
template <class Impl>
class p2_loop {
public:
    explicit p2_loop(Impl& impl)
        : m_impl{impl}, m_sizes{mixed_sizes().data()}, m_queue{std::make_unique<spsc_queue<typename Impl::handle>>()},
          m_consumer{[this] { consume(); }} {}
    p2_loop(const p2_loop&) = delete;
    p2_loop& operator=(const p2_loop&) = delete;
    ~p2_loop() { finish(); }

    void step() {
        auto h = m_impl.acquire(m_sizes[m_i % size_count]);
        static_cast<volatile unsigned char*>(Impl::data(h))[0] = 1;
        m_queue->push(std::move(h));
        ++m_i;
    }

    // Waits until the consumer has released everything.
    void finish() {
        if (!m_consumer.joinable()) return;
        m_done.store(true, std::memory_order_release);
        m_consumer.join();
    }

private:
    void consume() {
        typename Impl::handle it{};
        unsigned spins = 0;
        for (;;) {
            if (m_queue->pop(it)) {
                m_impl.release(it);
                spins = 0;
            } else if (m_done.load(std::memory_order_acquire)) {
                while (m_queue->pop(it)) m_impl.release(it);
                return;
            } else {
                spsc_queue<typename Impl::handle>::backoff(spins);
            }
        }
    }

    Impl& m_impl;
    const std::size_t* m_sizes;
    std::size_t m_i = 0;
    std::unique_ptr<spsc_queue<typename Impl::handle>> m_queue;
    std::atomic<bool> m_done{false};
    std::thread m_consumer;
};

// The steady state of P1 or P2: the heap shaped, the loop warmed untimed, then timed; the
// timed work includes the releases that `finish` waits for (P2's consumer thread).
template <template <class> class Loop, class Impl>
void steady(benchmark::State& state) {
    if (skip_if_unavailable(&state, static_cast<Impl*>(nullptr))) return;
    shape_heap<typename Impl::heap>();
    Impl impl;
    Loop<Impl> loop{impl};
    for (std::size_t k = 0; k < warm_ops; ++k) loop.step();
    const long faults = page_faults();
    for (auto _ : state) loop.step();
    loop.finish();
    report_faults(state, page_faults() - faults, static_cast<double>(state.iterations()));
    state.SetItemsProcessed(state.iterations());
}

// ---- first touch: the first operations of a fresh process -----------------------------------

double thread_cpu_seconds() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double wall_seconds() noexcept {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs in the child: `fresh_ops` operations of pattern P ("P1" or "P2") on a new Impl, with
// nothing run before in this process. P1 is timed in thread CPU time, P2 in wall time (as in
// the steady benchmarks). Prints "seconds faults".
template <class Impl>
int run_fresh(std::string_view pattern) {
    if (skip_if_unavailable(nullptr, static_cast<Impl*>(nullptr))) return 2;
    Impl impl;
    double seconds = 0;
    long faults = 0;
    if (pattern == "P1") {
        p1_loop<Impl> loop{impl};
        const long f0 = page_faults();
        const double t0 = thread_cpu_seconds();
        for (std::size_t k = 0; k < fresh_ops; ++k) loop.step();
        seconds = thread_cpu_seconds() - t0;
        faults = page_faults() - f0;
    } else {
        p2_loop<Impl> loop{impl};
        const long f0 = page_faults();
        const double t0 = wall_seconds();
        for (std::size_t k = 0; k < fresh_ops; ++k) loop.step();
        loop.finish();
        seconds = wall_seconds() - t0;
        faults = page_faults() - f0;
    }
    std::printf("%.9f %ld\n", seconds, faults);
    return 0;
}

// Which implementation a fresh child runs; the names are the benchmarks' first segments.
int run_fresh_child(std::string_view spec) {
    const auto colon = spec.find(':');
    if (colon == std::string_view::npos) return 2;
    const std::string_view pattern = spec.substr(0, colon);
    const std::string_view impl = spec.substr(colon + 1);
    if (impl == "glibc") return run_fresh<glibc_impl>(pattern);
    if (impl == "mimalloc") return run_fresh<mimalloc_impl>(pattern);
    if (impl == "pmr_synchronized") return run_fresh<pmr_impl>(pattern);
    if (impl == "tls_stack") return run_fresh<floor_impl>(pattern);
    if (impl == "memgov") return run_fresh<memgov_impl<true>>(pattern);
    if (impl == "memgov_no_ledger") return run_fresh<memgov_impl<false>>(pattern);
    return 2;
}

std::string self_path() {
    std::array<char, 4096> buf{};
    const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
    return n > 0 ? std::string(buf.data(), static_cast<std::size_t>(n)) : std::string{};
}

// One iteration = one new process running `fresh_ops` operations; the time is what the child
// measured (manual time), so starting the process is not counted.
template <class Impl>
void fresh(benchmark::State& state, const char* pattern, const std::string& impl) {
    if (skip_if_unavailable(&state, static_cast<Impl*>(nullptr))) return;
    static const std::string self = self_path();
    const std::string cmd = "'" + self + "' --fresh-child=" + pattern + ":" + impl;
    long faults = 0;
    for (auto _ : state) {
        FILE* f = ::popen(cmd.c_str(), "r");
        double seconds = 0;
        long child_faults = 0;
        const int got = f != nullptr ? std::fscanf(f, "%lf %ld", &seconds, &child_faults) : 0;
        const int rc = f != nullptr ? ::pclose(f) : -1;
        if (got != 2 || rc != 0) {
            state.SkipWithError("the fresh child process failed");
            return;
        }
        state.SetIterationTime(seconds);
        faults += child_faults;
    }
    const double ops = static_cast<double>(state.iterations()) * static_cast<double>(fresh_ops);
    report_faults(state, faults, ops);
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(fresh_ops));
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

void report_p3(benchmark::State& state, std::size_t baseline, std::size_t peak, std::size_t after) {
    state.counters["baseline_MiB"] = static_cast<double>(baseline) / MiB;
    state.counters["peak_MiB"] = static_cast<double>(peak) / MiB;
    state.counters["after_trim_MiB"] = static_cast<double>(after) / MiB;
    state.counters["after_over_baseline"] = static_cast<double>(after) / static_cast<double>(baseline);
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

// Steady and fresh variants of every implementation. The fresh ones start 8 child processes
// per repetition.
template <class Impl>
void register_impl(const std::string& name, bool p2) {
    benchmark::RegisterBenchmark((name + "/P1/steady").c_str(), steady<p1_loop, Impl>);
    benchmark::RegisterBenchmark((name + "/P1/fresh").c_str(),
                                 [name](benchmark::State& s) { fresh<Impl>(s, "P1", name); })
        ->UseManualTime()
        ->Iterations(8);
    if (!p2) return;
    benchmark::RegisterBenchmark((name + "/P2/steady").c_str(), steady<p2_loop, Impl>)
        ->UseRealTime()
        ->MeasureProcessCPUTime();
    benchmark::RegisterBenchmark((name + "/P2/fresh").c_str(),
                                 [name](benchmark::State& s) { fresh<Impl>(s, "P2", name); })
        ->UseManualTime()
        ->Iterations(8);
}

} // namespace

BENCHMARK(P3_memgov)->Name("memgov/P3")->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(P3_grow_once)->Name("grow_once/P3")->Iterations(1)->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
    constexpr std::string_view child_flag = "--fresh-child=";
    if (argc == 2 && std::string_view{argv[1]}.starts_with(child_flag)) {
        return run_fresh_child(std::string_view{argv[1]}.substr(child_flag.size()));
    }
    report_malloc_check();
    register_impl<glibc_impl>("glibc", true);
    register_impl<mimalloc_impl>("mimalloc", true);
    register_impl<pmr_impl>("pmr_synchronized", false);
    register_impl<floor_impl>("tls_stack", false);
    register_impl<memgov_impl<true>>("memgov", true);
    register_impl<memgov_impl<false>>("memgov_no_ledger", false);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
