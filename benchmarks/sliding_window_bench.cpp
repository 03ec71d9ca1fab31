// sliding_window append-and-drop throughput against what a user would otherwise write: a
// std::vector<uint8_t> that appends at the back and erases from the front, in two forms:
//   vector_keep_newest   erases the overflow after every append that passes the cap, so it
//                        always holds exactly the newest `cap` bytes (the usual code);
//   vector_quarter_drop  uses the window's own policy (drop the oldest quarter of the cap when
//                        a write would pass it): the strongest vector peer.
// All run in steady state (full, dropping) on audio-sized frames: 640 B (20 ms of 16 kHz
// 16-bit mono), 3200 B (100 ms) and 16 KiB, with a 10 MiB cap.
//
//   build/bench/benchmarks/sliding_window_bench --benchmark_min_time=0.05
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//       --benchmark_format=json > sliding_window.json
//   scripts/bench_ratio.py sliding_window.json
#include <memgov/sliding_window.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

constexpr std::size_t cap = std::size_t{10} << 20;
constexpr double fraction = 0.25;

std::vector<std::byte> frame_of(std::size_t n) {
    std::vector<std::byte> f(n);
    for (std::size_t i = 0; i < n; ++i) f[i] = static_cast<std::byte>(i * 31);
    return f;
}

void memgov_window(benchmark::State& state) {
    const auto frame = frame_of(static_cast<std::size_t>(state.range(0)));
    memgov::ledger l;
    memgov::buffer_pool pool{{}, &l};
    memgov::sliding_window w{pool, {.cap_bytes = cap, .drop_fraction = fraction}, &l};
    while (w.size() + frame.size() <= cap) w.append(frame); // start full: every run drops
    for (auto _ : state) {
        w.append(frame);
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * frame.size()));
    state.counters["drops"] = static_cast<double>(w.stats().drop_events);
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
    auto append = [&] {
        if (v.size() + frame.size() > cap) {
            const std::size_t n = std::min(std::max(v.size() + frame.size() - cap, drop), v.size());
            v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n));
            ++drops;
        }
        v.insert(v.end(), src, src + frame.size());
    };
    while (v.size() + frame.size() <= cap) append();
    for (auto _ : state) {
        append();
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * frame.size()));
    state.counters["drops"] = static_cast<double>(drops);
}

// What "append plus erase-front" usually looks like: keep exactly the newest `cap` bytes by
// erasing the overflow from the front after every append that passes the cap.
void vector_keep_newest(benchmark::State& state) {
    const auto frame = frame_of(static_cast<std::size_t>(state.range(0)));
    const auto* src = reinterpret_cast<const std::uint8_t*>(frame.data());
    std::vector<std::uint8_t> v;
    v.reserve(cap + frame.size());
    auto append = [&] {
        v.insert(v.end(), src, src + frame.size());
        if (v.size() > cap) {
            v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() - cap));
        }
    };
    while (v.size() + frame.size() <= cap) append();
    for (auto _ : state) {
        append();
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * frame.size()));
}

} // namespace

BENCHMARK(memgov_window)->Name("memgov/append")->Arg(640)->Arg(3200)->Arg(16384);
BENCHMARK(vector_erase_front)->Name("vector_quarter_drop/append")->Arg(640)->Arg(3200)->Arg(16384);
BENCHMARK(vector_keep_newest)->Name("vector_keep_newest/append")->Arg(640)->Arg(3200)->Arg(16384);

BENCHMARK_MAIN();
