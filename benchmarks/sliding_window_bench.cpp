// sliding_window append-and-drop throughput against the floor and what a user would otherwise
// write:
//   memcpy_ring          the floor: a bare memcpy of the frame into a preallocated 10 MiB ring
//                        (no chunks, no accounting, nothing dropped: the bytes written are
//                        the work every window must do);
//   vector_keep_newest   a std::vector<uint8_t> that appends at the back and erases the
//                        overflow from the front after every append that passes the cap, so it
//                        always holds exactly the newest `cap` bytes (the usual code);
//   vector_quarter_drop  the same vector with the window's own policy (drop the oldest quarter
//                        of the cap when a write would pass it): the strongest vector peer.
// All run in steady state on audio-sized frames: 640 B (20 ms of 16 kHz 16-bit mono), 3200 B
// (100 ms) and 16 KiB, with a 10 MiB cap. Each benchmark builds and warms its own state before
// timing (full, and through at least two drops for the dropping ones, so the pool's caches and
// the pages are warm); the order does not matter. Every benchmark reports page faults per
// append (`faults_per_op`, getrusage over the timed loop).
//
//   for run in 1 2 3; do nice -n -5 build/bench/benchmarks/sliding_window_bench
//       --benchmark_min_time=0.2 --benchmark_repetitions=5
//       --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
//       --benchmark_format=json > sw$run.json; done
//   scripts/bench_ratio.py sw1.json sw2.json sw3.json
#include <memgov/sliding_window.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include <sys/resource.h>

namespace {

constexpr std::size_t cap = std::size_t{10} << 20;
constexpr double fraction = 0.25;

std::vector<std::byte> frame_of(std::size_t n) {
    std::vector<std::byte> f(n);
    for (std::size_t i = 0; i < n; ++i) f[i] = static_cast<std::byte>(i * 31);
    return f;
}

long page_faults() noexcept {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt + u.ru_majflt;
}

// Warms `append` (2 × cap bytes: the container is full and has dropped at least twice), then
// times it.
template <class Append>
void run(benchmark::State& state, std::size_t frame_bytes, Append append) {
    for (std::size_t done = 0; done < 2 * cap; done += frame_bytes) append();
    const long faults = page_faults();
    for (auto _ : state) {
        append();
        benchmark::ClobberMemory();
    }
    state.counters["faults_per_op"] =
        static_cast<double>(page_faults() - faults) / static_cast<double>(state.iterations());
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * frame_bytes));
    state.SetItemsProcessed(state.iterations());
}

void memgov_window(benchmark::State& state) {
    const auto frame = frame_of(static_cast<std::size_t>(state.range(0)));
    memgov::ledger l;
    memgov::buffer_pool pool{{}, &l};
    memgov::sliding_window w{pool, {.cap_bytes = cap, .drop_fraction = fraction}, &l};
    run(state, frame.size(), [&] { w.append(frame); });
    state.counters["drops"] = static_cast<double>(w.stats().drop_events);
}

// The floor: the frame copied into a ring of `cap` bytes, split in two where it wraps.
void memcpy_ring(benchmark::State& state) {
    const auto frame = frame_of(static_cast<std::size_t>(state.range(0)));
    std::vector<std::byte> ring(cap);
    std::size_t at = 0;
    run(state, frame.size(), [&] {
        const std::size_t first = std::min(frame.size(), cap - at);
        std::memcpy(ring.data() + at, frame.data(), first);
        std::memcpy(ring.data(), frame.data() + first, frame.size() - first);
        at = (at + frame.size()) % cap;
    });
}

// The same policy on a vector: append at the back; when the cap would be passed, erase the
// oldest max(overflow, quarter of the cap) bytes from the front.
void vector_erase_front(benchmark::State& state) {
    const auto frame = frame_of(static_cast<std::size_t>(state.range(0)));
    const auto* src = reinterpret_cast<const std::uint8_t*>(frame.data());
    const auto drop = static_cast<std::size_t>(std::ceil(static_cast<double>(cap) * fraction));
    std::vector<std::uint8_t> v;
    v.reserve(cap);
    std::uint64_t drops = 0;
    run(state, frame.size(), [&] {
        if (v.size() + frame.size() > cap) {
            const std::size_t n = std::min(std::max(v.size() + frame.size() - cap, drop), v.size());
            v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n));
            ++drops;
        }
        v.insert(v.end(), src, src + frame.size());
    });
    state.counters["drops"] = static_cast<double>(drops);
}

// What "append plus erase-front" usually looks like: keep exactly the newest `cap` bytes by
// erasing the overflow from the front after every append that passes the cap.
void vector_keep_newest(benchmark::State& state) {
    const auto frame = frame_of(static_cast<std::size_t>(state.range(0)));
    const auto* src = reinterpret_cast<const std::uint8_t*>(frame.data());
    std::vector<std::uint8_t> v;
    v.reserve(cap + frame.size());
    run(state, frame.size(), [&] {
        v.insert(v.end(), src, src + frame.size());
        if (v.size() > cap) {
            v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() - cap));
        }
    });
}

} // namespace

BENCHMARK(memgov_window)->Name("memgov/append")->Arg(640)->Arg(3200)->Arg(16384);
BENCHMARK(memcpy_ring)->Name("memcpy_ring/append")->Arg(640)->Arg(3200)->Arg(16384);
BENCHMARK(vector_erase_front)->Name("vector_quarter_drop/append")->Arg(640)->Arg(3200)->Arg(16384);
BENCHMARK(vector_keep_newest)->Name("vector_keep_newest/append")->Arg(640)->Arg(3200)->Arg(16384);

BENCHMARK_MAIN();
