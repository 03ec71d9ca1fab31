// SPDX-License-Identifier: MIT
//
// The governance scenario: a voice-gateway-shaped workload inside a real memory cgroup, run with
// memgov governing it and again without, to show who pays under pressure.
//
//   governance_scenario --limits 128,256 --out scenario-out          # the four runs, a table
//   governance_scenario --short                                      # the ctest version (~20 s)
//
// Each run is a child process (this program with --child) started inside a memory cgroup made
// for it (cgroup v1 `memory` or v2, whichever is writable; root only) and removed afterwards;
// only that child is ever killed, by its PID (also on SIGINT/SIGTERM, which stop the runner
// after removing the cgroup). Where no cgroup is writable the child runs with
// the limit override (MEMGOV_MEMORY_LIMIT) instead, and the output says so: nothing is then
// killed by the kernel, so survival is not shown.
//
// The workload, in one process (no network; the downstream is a bounded in-process queue):
// - regular sessions: 16 kHz 16-bit audio, one 640 B frame per 20 ms, a 64 KiB decoder state,
//   a sliding_window from one buffer_pool drained to the downstream every 200 ms. They ramp
//   from --sessions-start to --sessions-max. --orphan-share of them stop sending at a random
//   moment without ending (a dropped TCP connection): the idle TTL sweeps them;
// - a burst of --burst sessions arriving within 0.5 s;
// - --giants sessions that push --giant-frames frames per 20 ms and keep what they sent (a long
//   context; their window's cap is 30 MiB);
// - the downstream goes down for --outage-s: nothing is delivered, the queue fills, windows
//   grow.
// Governed, every session is admitted through governor::admit_session with its declared cost
// and every frame through its session_budget; a session over its quota drops its oldest audio;
// a session over its fair share (admission_config::fair_share) sheds its oldest audio; the pool
// and the session map are reclaimers. Ungoverned, admission is off and nothing is
// registered (the monitor still samples, for the timeline).
//
// Each child writes a CSV timeline (100 ms) and prints "key value" lines; the parent prints a
// table of them. Accounting, per class: frames generated = frames refused + frames accepted,
// and bytes accepted = bytes delivered + bytes dropped (by reason) once the end has drained
// everything; the child checks both and prints `identity ok` or what is off.
#include <memgov/buffer_pool.hpp>
#include <memgov/governor.hpp>
#include <memgov/reclaimers.hpp>
#include <memgov/session_map.hpp>
#include <memgov/sliding_window.hpp>

#include "buffer_pool_rss.hpp"
#include "real_cgroup.hpp"

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t frame_bytes = 640;                                           // 20 ms of 16 kHz 16-bit mono
constexpr std::size_t chunk_bytes = 8192;                                          // the window's chunk (a pool class)
constexpr std::size_t state_bytes = 64 * 1024;                                     // a session's decoder state
constexpr std::size_t regular_window = 20 * 50 * frame_bytes;                      // 20 s of audio
constexpr std::size_t giant_window = 30 * 1024 * 1024 / frame_bytes * frame_bytes; // ~30 MiB
constexpr std::size_t declared_regular = state_bytes + 64 * 1024;                  // state + 2 s of audio

// ------------------------------------------------------------------------------- options

struct options {
    // Runner
    std::vector<std::size_t> limits_mib{128, 256};
    std::vector<std::string> variants{"on", "off"};
    std::string out = "scenario-out";
    bool short_run = false;
    // Child
    bool child = false;
    bool governed = true;
    std::string csv;
    double seconds = 40;
    std::size_t sessions_start = 100;
    std::size_t sessions_max = 500;
    double ramp_s = 15;
    double orphan_share = 0.2;
    std::size_t burst = 400;
    double burst_at_s = 10;
    std::size_t giants = 4;
    double giant_at_s = 3;
    std::size_t giant_frames = 50;
    double outage_at_s = 16;
    double outage_s = 6;
    std::size_t inflight_mib = 8;
    double bandwidth_mib_s = 64;
    std::uint64_t seed = 1;
};

// ------------------------------------------------------------------------------- counters

enum class cls : std::uint8_t { regular = 0, orphan = 1, burst = 2, giant = 3 };
constexpr std::size_t cls_count = 4;
constexpr std::array<const char*, cls_count> cls_names{"regular", "orphan", "burst", "giant"};

enum class drop : std::uint8_t { window_cap = 0, shed = 1, evicted = 2 };
constexpr std::size_t drop_count = 3;
constexpr std::array<const char*, drop_count> drop_names{"window_cap", "shed", "evicted"};

using counter = std::atomic<std::uint64_t>;

struct class_counters {
    counter sessions_tried{0};
    counter sessions_admitted{0};
    std::array<counter, memgov::admit_reason_count> sessions_refused{};
    counter frames_generated{0};
    counter frames_accepted{0};
    std::array<counter, memgov::admit_reason_count> frames_refused{};
    counter bytes_delivered{0};
    std::array<counter, drop_count> bytes_dropped{};
    std::array<counter, memgov::evict_reason_count> evicted{};
    counter evicted_pressure_while_overquota_lived{0}; // see `pressure_evicted`
};

std::array<class_counters, cls_count> g_count;

std::uint64_t sum(const auto& arr) {
    std::uint64_t s = 0;
    for (const auto& c : arr) s += c.load();
    return s;
}

bool pressure_reason(memgov::evict_reason r) {
    using memgov::evict_reason;
    return r == evict_reason::age_under_pressure || r == evict_reason::over_cost ||
           r == evict_reason::lru_under_pressure || r == evict_reason::largest_under_pressure;
}

// ------------------------------------------------------------------------------- downstream

// The downstream (a Kafka producer's queue, in effect): bounded bytes in flight, a bandwidth,
// and an outage during which nothing is delivered. Delivered chunks go back to the pool.
class downstream {
public:
    downstream(std::size_t bound, double bytes_per_s) : m_bound{bound}, m_rate{bytes_per_s} {}

    [[nodiscard]] bool has_room() const noexcept { return m_inflight.load(std::memory_order_relaxed) < m_bound; }
    void push(cls c, memgov::window_chunk&& ch) {
        const std::size_t n = ch.size();
        std::lock_guard lock{m_mutex};
        m_queue.push_back({c, std::move(ch)});
        m_inflight.fetch_add(n, std::memory_order_relaxed);
    }
    void set_down(bool down) noexcept { m_down.store(down, std::memory_order_relaxed); }
    [[nodiscard]] std::size_t inflight() const noexcept { return m_inflight.load(std::memory_order_relaxed); }

    // Delivers up to `dt` worth of bandwidth. Returns the bytes delivered.
    std::size_t deliver(std::chrono::duration<double> dt) {
        if (m_down.load(std::memory_order_relaxed)) return 0;
        m_credit = std::min(m_credit + dt.count() * m_rate, m_rate); // at most 1 s of burst
        std::deque<item> done;
        {
            std::lock_guard lock{m_mutex};
            while (!m_queue.empty() && m_credit >= static_cast<double>(m_queue.front().chunk.size())) {
                m_credit -= static_cast<double>(m_queue.front().chunk.size());
                done.push_back(std::move(m_queue.front()));
                m_queue.pop_front();
            }
        }
        std::size_t bytes = 0;
        for (auto& it : done) {
            const std::size_t n = it.chunk.size();
            g_count[static_cast<std::size_t>(it.c)].bytes_delivered.fetch_add(n);
            m_inflight.fetch_sub(n, std::memory_order_relaxed);
            bytes += n;
        }
        return bytes; // `done` goes here: the buffers go back to the pool
    }

private:
    struct item {
        cls c;
        memgov::window_chunk chunk;
    };
    std::mutex m_mutex;
    std::deque<item> m_queue;
    std::atomic<std::size_t> m_inflight{0};
    std::atomic<bool> m_down{false};
    std::size_t m_bound;
    double m_rate;
    double m_credit = 0;
};

// ------------------------------------------------------------------------------- sessions

struct session {
    cls c = cls::regular;
    memgov::session_budget budget;
    memgov::sliding_window window;
    std::unique_ptr<std::byte[]> state;
    std::size_t charged = 0;        // what the budget was charged
    std::uint64_t dropped_seen = 0; // the window's dropped_bytes already counted

    // The map's cost: what the session holds (decoder state and window chunks).
    [[nodiscard]] std::size_t held_bytes() const noexcept { return state_bytes + window.held_bytes(); }

    // Brings the budget to what the session holds and counts what the window's cap dropped.
    void settle() noexcept {
        const std::size_t held = held_bytes();
        if (held > charged) budget.charge(held - charged);
        if (held < charged) budget.release(charged - held);
        charged = held;
        const std::uint64_t d = window.stats().dropped_bytes;
        if (d != dropped_seen) {
            g_count[static_cast<std::size_t>(c)].bytes_dropped[static_cast<std::size_t>(drop::window_cap)] +=
                d - dropped_seen;
            dropped_seen = d;
        }
    }
};

// Hands everything the window holds to the downstream.
void flush(session& s, downstream& ds) {
    std::array<memgov::window_chunk, 16> out;
    for (;;) {
        const std::size_t k = s.window.take_chunks(out, memgov::take_mode::include_partial);
        for (std::size_t i = 0; i < k; ++i) ds.push(s.c, std::move(out[i]));
        if (k < out.size()) break;
    }
}

// What the ingress thread knows of a session it drives.
struct driver {
    std::uint64_t id;
    cls c;
    double stops_at_s; // orphans stop sending then; +inf otherwise
    std::size_t frames_per_tick;
    std::uint32_t tick_phase; // which 20 ms tick of 10 drains its window
};

// ------------------------------------------------------------------------------- cgroup files

// The process's own memory cgroup directory (v2, or v1's memory controller), or "".
std::string own_cgroup_dir() {
    std::ifstream f{"/proc/self/cgroup"};
    std::string line;
    std::string v2;
    while (std::getline(f, line)) {
        const auto a = line.find(':');
        const auto b = line.find(':', a + 1);
        if (a == std::string::npos || b == std::string::npos) continue;
        const std::string ctrls = line.substr(a + 1, b - a - 1);
        const std::string path = line.substr(b + 1);
        if (ctrls == "") v2 = "/sys/fs/cgroup" + path;
        std::stringstream ss{ctrls};
        std::string c;
        while (std::getline(ss, c, ',')) {
            if (c == "memory") return "/sys/fs/cgroup/memory" + path;
        }
    }
    return v2;
}

std::optional<std::uint64_t> read_u64(const std::string& file) {
    std::ifstream f{file};
    std::uint64_t v = 0;
    if (f >> v) return v;
    return std::nullopt;
}

std::optional<std::uint64_t> stat_value(const std::string& file, const std::string& key) {
    std::ifstream f{file};
    std::string k;
    std::uint64_t v = 0;
    while (f >> k >> v) {
        if (k == key) return v;
    }
    return std::nullopt;
}

// The cgroup's usage and working set, read independently of memgov.
struct cgroup_reading {
    std::uint64_t usage = 0;
    std::uint64_t working_set = 0;
};

std::optional<cgroup_reading> read_cgroup(const std::string& dir) {
    if (dir.empty()) return std::nullopt;
    const bool v1 = dir.find("/sys/fs/cgroup/memory") == 0;
    const auto usage = read_u64(dir + (v1 ? "/memory.usage_in_bytes" : "/memory.current"));
    const auto inactive = stat_value(dir + "/memory.stat", v1 ? "total_inactive_file" : "inactive_file");
    if (!usage || !inactive) return std::nullopt;
    return cgroup_reading{*usage, *usage > *inactive ? *usage - *inactive : 0};
}

// ------------------------------------------------------------------------------- the child

int run_child(const options& o) {
    memgov::governor_config gcfg;
    gcfg.monitor.use_systemd_pressure_env = false;
    gcfg.monitor.sample_period = 20ms;
    if (!o.governed) gcfg.admission.enabled = false;
    memgov::governor<> gov{gcfg};
    const std::uint64_t limit = gov.stats().pressure.limit_bytes;

    memgov::buffer_pool pool{memgov::buffer_pool_config{}, &gov.ledger()};
    memgov::sliding_window_config regular_cfg;
    regular_cfg.chunk_size = chunk_bytes;
    regular_cfg.cap_bytes = regular_window;
    memgov::sliding_window_config giant_cfg = regular_cfg;
    giant_cfg.cap_bytes = giant_window;

    downstream ds{o.inflight_mib << 20, o.bandwidth_mib_s * 1024 * 1024};

    // Pressure evictions of well-behaved sessions while an over-quota session lived: the
    // ingress thread publishes how many over-quota sessions it saw at its last tick.
    std::atomic<std::uint64_t> over_quota_live{0};

    memgov::session_map_config mcfg;
    mcfg.idle_ttl = 3s; // an orphan is swept 3 s after its last frame
    mcfg.check_interval = 1s;
    memgov::session_map_hooks<std::uint64_t, session> hooks;
    hooks.on_evict = [&](const std::uint64_t&, session& s, memgov::evict_reason r) {
        auto& cc = g_count[static_cast<std::size_t>(s.c)];
        cc.evicted[static_cast<std::size_t>(r)].fetch_add(1);
        s.settle();
        if (pressure_reason(r)) {
            // Under pressure what it holds is dropped, which is the point of evicting it.
            cc.bytes_dropped[static_cast<std::size_t>(drop::evicted)] += s.window.size();
            if ((s.c == cls::regular || s.c == cls::burst) && over_quota_live.load() > 0) {
                cc.evicted_pressure_while_overquota_lived.fetch_add(1);
            }
            s.window.clear();
        } else {
            flush(s, ds); // swept or ended: what it holds is still delivered
        }
        s.budget.reset();
    };
    using map_type = memgov::session_map<std::uint64_t, session>;
    map_type sessions{mcfg, std::move(hooks)};
    if (o.governed) {
        gov.register_reclaimer(std::make_shared<memgov::buffer_pool_reclaimer>(pool));
        gov.register_reclaimer(std::make_shared<memgov::session_map_reclaimer<map_type>>(sessions));
    }

    std::atomic<std::uint64_t> level_changes{0};
    auto sub = gov.monitor().subscribe([&](const memgov::level_change&) { level_changes.fetch_add(1); });
    gov.start();

    const auto start = clock_type::now();
    const auto elapsed = [&] { return std::chrono::duration<double>(clock_type::now() - start).count(); };
    std::atomic<bool> stop_threads{false};

    // The downstream's thread.
    std::thread delivery{[&] {
        auto last = clock_type::now();
        while (!stop_threads.load()) {
            std::this_thread::sleep_for(2ms);
            const auto now = clock_type::now();
            const double t = std::chrono::duration<double>(now - start).count();
            ds.set_down(t >= o.outage_at_s && t < o.outage_at_s + o.outage_s);
            (void)ds.deliver(now - last);
            last = now;
        }
    }};

    // The stall probe: what an ingress thread does per frame that touches the allocator and
    // memgov (a 640 B allocation, an admission), timed every millisecond.
    std::atomic<std::int64_t> stall_max_ns{0};
    std::thread probe{[&] {
        memgov::session_budget b = gov.admit_session(0);
        while (!stop_threads.load()) {
            const auto t0 = clock_type::now();
            auto* p = static_cast<volatile std::byte*>(std::malloc(frame_bytes));
            if (p != nullptr) p[0] = std::byte{1};
            std::free(const_cast<std::byte*>(p));
            (void)b.admit(frame_bytes);
            (void)gov.level();
            const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0).count();
            if (ns > stall_max_ns.load(std::memory_order_relaxed)) stall_max_ns.store(ns);
            std::this_thread::sleep_for(1ms);
        }
    }};

    // The timeline.
    const std::string cg_dir = own_cgroup_dir();
    std::atomic<std::uint64_t> live_sessions{0};
    struct estimate_error {
        std::uint64_t samples = 0;
        std::uint64_t within_5 = 0;
        double worst = 0;
    } est_err;
    std::uint64_t peak_ws = 0;
    std::mutex timeline_mutex;
    std::thread sampler{[&] {
        std::FILE* f = o.csv.empty() ? nullptr : std::fopen(o.csv.c_str(), "w");
        if (f != nullptr) {
            std::fprintf(f, "t_s,rss,cg_usage,cg_working_set,estimate,limit,level,sessions,"
                            "admitted,refused_sessions,refused_frames,evicted,dropped_bytes,"
                            "inflight,delivered_bytes,level_changes\n");
        }
        auto next = clock_type::now();
        while (!stop_threads.load()) {
            next += 100ms;
            std::this_thread::sleep_until(next);
            const auto h = gov.health();
            const auto cg = read_cgroup(cg_dir);
            std::uint64_t admitted = 0, ref_s = 0, ref_f = 0, ev = 0, dropped = 0, delivered = 0;
            for (const auto& c : g_count) {
                admitted += c.sessions_admitted.load();
                ref_s += sum(c.sessions_refused);
                ref_f += sum(c.frames_refused);
                ev += sum(c.evicted);
                dropped += sum(c.bytes_dropped);
                delivered += c.bytes_delivered.load();
            }
            if (cg && h.limit_bytes > 0) {
                std::lock_guard lock{timeline_mutex};
                const double err =
                    std::abs(static_cast<double>(h.estimate_bytes) - static_cast<double>(cg->working_set)) /
                    static_cast<double>(h.limit_bytes);
                ++est_err.samples;
                if (err <= 0.05) ++est_err.within_5;
                est_err.worst = std::max(est_err.worst, err);
                peak_ws = std::max(peak_ws, cg->working_set);
            }
            if (f != nullptr) {
                std::fprintf(
                    f,
                    "%.1f,%llu,%llu,%llu,%llu,%llu,%s,%llu,%llu,%llu,%llu,%llu,%llu,%zu,%llu,%"
                    "llu\n",
                    elapsed(), static_cast<unsigned long long>(memgov_test::resident_bytes()),
                    static_cast<unsigned long long>(cg ? cg->usage : 0),
                    static_cast<unsigned long long>(cg ? cg->working_set : 0),
                    static_cast<unsigned long long>(h.estimate_bytes), static_cast<unsigned long long>(h.limit_bytes),
                    std::string{memgov::to_string(h.level)}.c_str(),
                    static_cast<unsigned long long>(live_sessions.load()), static_cast<unsigned long long>(admitted),
                    static_cast<unsigned long long>(ref_s), static_cast<unsigned long long>(ref_f),
                    static_cast<unsigned long long>(ev), static_cast<unsigned long long>(dropped), ds.inflight(),
                    static_cast<unsigned long long>(delivered), static_cast<unsigned long long>(level_changes.load()));
                std::fflush(f); // a run killed by the kernel keeps its timeline
            }
        }
        if (f != nullptr) std::fclose(f);
    }};

    // The ingress thread (this one): a 20 ms tick.
    std::mt19937_64 rng{o.seed};
    std::uniform_real_distribution<double> unit{0.0, 1.0};
    std::vector<driver> drivers;
    std::uint64_t next_id = 0;
    std::size_t regular_started = 0;
    std::size_t burst_started = 0;
    std::size_t giants_started = 0;
    std::array<std::byte, frame_bytes> frame{};
    std::int64_t ingress_governance_max_ns = 0;
    std::int64_t ingress_control_max_ns = 0;
    std::uint64_t ingress_governance_over_1ms = 0;
    std::uint64_t ingress_control_over_1ms = 0;
    std::uint64_t ingress_timed = 0;
    {
        // This thread's first admission claims its counter slot in the governor's ledger (once
        // per thread, a lock and an allocation): done here, before anything is timed.
        memgov::session_budget warm = gov.admit_session(0);
        (void)warm.admit(0);
    }
    std::uint64_t tick = 0;
    std::uint64_t ticks_late = 0;

    const auto open_session = [&](cls c, double t) {
        auto& cc = g_count[static_cast<std::size_t>(c)];
        cc.sessions_tried.fetch_add(1);
        const std::size_t declared = c == cls::giant ? declared_regular * 4 : declared_regular;
        const auto t0 = clock_type::now();
        memgov::session_budget b = gov.admit_session(declared);
        ingress_governance_max_ns = std::max<std::int64_t>(
            ingress_governance_max_ns,
            std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0).count());
        if (!b) {
            cc.sessions_refused[static_cast<std::size_t>(b.refusal())].fetch_add(1);
            return;
        }
        const std::uint64_t id = next_id++;
        const bool inserted = sessions.insert(id, [&] {
            session s{c, std::move(b), memgov::sliding_window{pool, c == cls::giant ? giant_cfg : regular_cfg},
                      std::make_unique<std::byte[]>(state_bytes)};
            std::fill_n(s.state.get(), state_bytes, std::byte{0x11}); // touched: resident
            s.settle();
            return s;
        });
        if (!inserted) return;
        cc.sessions_admitted.fetch_add(1);
        // An orphan stops sending 2..12 s after it starts, without ending.
        const double stops = c == cls::orphan ? t + 2.0 + unit(rng) * 10.0 : std::numeric_limits<double>::infinity();
        drivers.push_back({id, c, stops, c == cls::giant ? o.giant_frames : 1, static_cast<std::uint32_t>(id % 10)});
    };

    auto next_tick = clock_type::now();
    for (;;) {
        const double t = elapsed();
        if (t >= o.seconds) break;
        // Arrivals.
        const double ramp = std::min(1.0, t / o.ramp_s);
        const auto regular_target = static_cast<std::size_t>(
            static_cast<double>(o.sessions_start) +
            static_cast<double>(o.sessions_max - std::min(o.sessions_max, o.sessions_start)) * ramp);
        while (regular_started < regular_target) {
            ++regular_started;
            open_session(unit(rng) < o.orphan_share ? cls::orphan : cls::regular, t);
        }
        if (t >= o.burst_at_s) {
            const double share = std::min(1.0, (t - o.burst_at_s) / 0.5);
            const auto target = static_cast<std::size_t>(static_cast<double>(o.burst) * share);
            while (burst_started < target) {
                ++burst_started;
                open_session(cls::burst, t);
            }
        }
        while (t >= o.giant_at_s && giants_started < o.giants) {
            ++giants_started;
            open_session(cls::giant, t);
        }

        // Frames, and every 200 ms (a tenth of the sessions each tick) the window drains.
        std::uint64_t over_quota = 0;
        std::erase_if(drivers, [&](const driver& d) {
            if (t >= d.stops_at_s) return !sessions.contains(d.id); // an orphan: silent
            const bool found = sessions.with(d.id, [&](session& s) {
                auto& cc = g_count[static_cast<std::size_t>(s.c)];
                for (std::size_t i = 0; i < d.frames_per_tick; ++i) {
                    // The control: the same two clock reads around one atomic add. Its tail
                    // is the thread being descheduled, which the admission's tail includes.
                    const auto c0 = clock_type::now();
                    cc.frames_generated.fetch_add(1);
                    const auto cns =
                        std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - c0).count();
                    ingress_control_max_ns = std::max<std::int64_t>(ingress_control_max_ns, cns);
                    if (cns > 1'000'000) ++ingress_control_over_1ms;
                    const auto t0 = clock_type::now();
                    const memgov::admission a = s.budget.admit(frame_bytes);
                    const auto ns =
                        std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0).count();
                    ingress_governance_max_ns = std::max<std::int64_t>(ingress_governance_max_ns, ns);
                    if (ns > 1'000'000) ++ingress_governance_over_1ms;
                    ++ingress_timed;
                    if (!a) {
                        cc.frames_refused[static_cast<std::size_t>(a.reason)].fetch_add(1);
                        continue;
                    }
                    cc.frames_accepted.fetch_add(1);
                    s.window.append(frame);
                    s.settle();
                }
                if (o.governed && s.budget.over_quota()) ++over_quota;
                if (o.governed && s.budget.over_share()) {
                    // Over its fair share (a crowd under pressure) or its quota (which shrank
                    // under it): drop the oldest audio down to three quarters of the share,
                    // whole frames.
                    const std::size_t target = s.budget.share_bytes() / 4 * 3;
                    const std::size_t held = s.held_bytes();
                    if (held > target) {
                        std::size_t n = std::min(s.window.size(), held - target);
                        n = (n + frame_bytes - 1) / frame_bytes * frame_bytes;
                        n = std::min(n, s.window.size() / frame_bytes * frame_bytes);
                        const std::size_t gone = s.window.consume(n);
                        cc.bytes_dropped[static_cast<std::size_t>(drop::shed)] += gone;
                        s.settle();
                    }
                }
                if (s.c != cls::giant && tick % 10 == d.tick_phase && ds.has_room()) {
                    flush(s, ds);
                    s.settle();
                }
            });
            return !found; // evicted: forget it
        });
        over_quota_live.store(over_quota);
        live_sessions.store(sessions.size());

        ++tick;
        next_tick += 20ms;
        const auto now = clock_type::now();
        if (now > next_tick) {
            ++ticks_late;
            next_tick = now; // never catch up in a burst
        } else {
            std::this_thread::sleep_until(next_tick);
        }
    }

    // The end: no more frames; every window goes downstream, which is up again by now.
    const double generate_end = elapsed();
    for (const auto& d : drivers) {
        (void)sessions.with(d.id, [&](session& s) {
            flush(s, ds);
            s.settle();
        });
    }
    const auto drain_deadline = clock_type::now() + 30s;
    while (ds.inflight() > 0 && clock_type::now() < drain_deadline) std::this_thread::sleep_for(10ms);
    const auto final_stats = gov.stats();
    stop_threads = true;
    delivery.join();
    probe.join();
    sampler.join();
    gov.stop();
    sessions.clear();

    // The report.
    const auto kv = [](const std::string& k, auto v) { fmt::print("{} {}\n", k, v); };
    kv("governed", o.governed ? 1 : 0);
    kv("limit_bytes", limit);
    kv("limit_origin", final_stats.pressure.limit_origin.empty() ? "-" : final_stats.pressure.limit_origin);
    kv("seconds", generate_end);
    kv("ticks_late", ticks_late);
    kv("level_changes", level_changes.load());
    kv("level_changes_per_min", static_cast<double>(level_changes.load()) * 60.0 / generate_end);
    kv("stall_probe_max_ms", static_cast<double>(stall_max_ns.load()) / 1e6);
    kv("ingress_governance_max_ms", static_cast<double>(ingress_governance_max_ns) / 1e6);
    kv("ingress_control_max_ms", static_cast<double>(ingress_control_max_ns) / 1e6);
    kv("ingress_timed_calls", ingress_timed);
    kv("ingress_governance_over_1ms", ingress_governance_over_1ms);
    kv("ingress_control_over_1ms", ingress_control_over_1ms);
    kv("estimate_samples", est_err.samples);
    kv("estimate_within_5pct",
       est_err.samples == 0 ? 0.0 : static_cast<double>(est_err.within_5) / static_cast<double>(est_err.samples));
    kv("estimate_worst_pct", est_err.worst * 100.0);
    kv("peak_working_set", peak_ws);
    kv("heap_trims", final_stats.evictor.heap_trims);
    kv("evicted_largest", final_stats.evictor.total(memgov::reclaim_action::evict_largest).items);
    kv("evicted_lru", final_stats.evictor.total(memgov::reclaim_action::evict_lru).items);
    kv("evicted_age", final_stats.evictor.total(memgov::reclaim_action::evict_by_age).items);
    bool identity = true;
    for (std::size_t i = 0; i < cls_count; ++i) {
        const auto& c = g_count[i];
        const std::string p = cls_names[i];
        const std::uint64_t gen = c.frames_generated.load();
        const std::uint64_t acc = c.frames_accepted.load();
        const std::uint64_t ref = sum(c.frames_refused);
        const std::uint64_t del = c.bytes_delivered.load();
        const std::uint64_t dropped = sum(c.bytes_dropped);
        kv(p + ".sessions_tried", c.sessions_tried.load());
        kv(p + ".sessions_admitted", c.sessions_admitted.load());
        for (std::size_t r = 1; r < memgov::admit_reason_count; ++r) {
            if (c.sessions_refused[r].load() != 0) {
                kv(p + ".sessions_refused." + std::string{memgov::to_string(static_cast<memgov::admit_reason>(r))},
                   c.sessions_refused[r].load());
            }
        }
        kv(p + ".frames_generated", gen);
        kv(p + ".frames_accepted", acc);
        kv(p + ".goodput", gen == 0 ? 1.0 : static_cast<double>(acc) / static_cast<double>(gen));
        for (std::size_t r = 1; r < memgov::admit_reason_count; ++r) {
            if (c.frames_refused[r].load() != 0) {
                kv(p + ".frames_refused." + std::string{memgov::to_string(static_cast<memgov::admit_reason>(r))},
                   c.frames_refused[r].load());
            }
        }
        kv(p + ".frames_delivered", del / frame_bytes);
        for (std::size_t d = 0; d < drop_count; ++d) {
            kv(p + ".frames_dropped." + drop_names[d], c.bytes_dropped[d].load() / frame_bytes);
        }
        for (std::size_t r = 0; r < memgov::evict_reason_count; ++r) {
            if (c.evicted[r].load() != 0) {
                kv(p + ".evicted." + std::string{memgov::to_string(static_cast<memgov::evict_reason>(r))},
                   c.evicted[r].load());
            }
        }
        kv(p + ".pressure_evicted_while_over_quota_lived", c.evicted_pressure_while_overquota_lived.load());
        const bool frames_ok = gen == acc + ref;
        const bool bytes_ok = acc * frame_bytes == del + dropped;
        if (!frames_ok || !bytes_ok) {
            identity = false;
            kv(p + ".identity_off_by_bytes",
               static_cast<std::int64_t>(acc * frame_bytes) - static_cast<std::int64_t>(del + dropped));
        }
    }
    kv("identity", identity ? "ok" : "off");
    kv("end", 1);
    std::fflush(stdout);
    return identity ? 0 : 1;
}

// ------------------------------------------------------------------------------- the runner

// SIGINT/SIGTERM: the running child is killed (by its PID) and its cgroup removed, then the
// runner stops.
std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) { g_stop.store(true); }

std::string self_path() {
    std::array<char, 4096> buf{};
    const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
    return n > 0 ? std::string{buf.data(), static_cast<std::size_t>(n)} : std::string{};
}

std::vector<std::string> child_args(const options& o, bool governed, const std::string& csv) {
    std::vector<std::string> a{self_path(), "--child", fmt::format("--governed={}", governed ? 1 : 0), "--csv", csv};
    const auto add = [&](const char* name, auto v) { a.push_back(fmt::format("--{}={}", name, v)); };
    add("seconds", o.seconds);
    add("sessions-start", o.sessions_start);
    add("sessions-max", o.sessions_max);
    add("ramp-s", o.ramp_s);
    add("orphan-share", o.orphan_share);
    add("burst", o.burst);
    add("burst-at-s", o.burst_at_s);
    add("giants", o.giants);
    add("giant-at-s", o.giant_at_s);
    add("giant-frames", o.giant_frames);
    add("outage-at-s", o.outage_at_s);
    add("outage-s", o.outage_s);
    add("inflight-mib", o.inflight_mib);
    add("bandwidth-mib-s", o.bandwidth_mib_s);
    add("seed", o.seed);
    return a;
}

struct run_result {
    std::size_t limit_mib = 0;
    bool governed = true;
    std::string where;
    memgov_test::child_run run;
    std::optional<std::uint64_t> peak;
    std::optional<std::uint64_t> oom_kills;
};

int run_all(const options& o) {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal; // no SA_RESTART: a waiting poll returns at once
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    std::vector<run_result> results;
    (void)std::system(fmt::format("mkdir -p '{}'", o.out).c_str());
    const auto timeout = std::chrono::milliseconds{static_cast<std::int64_t>((o.seconds + 45) * 1000)};
    for (const std::size_t mib : o.limits_mib) {
        for (const auto& v : o.variants) {
            const bool governed = v == "on";
            run_result r;
            r.limit_mib = mib;
            r.governed = governed;
            const std::string csv = fmt::format("{}/scenario-{}mib-{}.csv", o.out, mib, v);
            auto cg = memgov_test::real_cgroup::create(static_cast<std::uint64_t>(mib) << 20,
                                                       fmt::format("scenario-{}-{}", mib, v));
            if (cg) {
                r.where = cg.v2() ? "cgroup v2" : "cgroup v1";
                r.run = cg.run(child_args(o, governed, csv), timeout, &g_stop);
                r.peak = cg.peak_bytes();
                r.oom_kills = cg.oom_kills();
            } else {
                // No writable cgroup: the limit override, and no kernel to kill anyone.
                r.where = "limit override (" + cg.skip_reason() + ")";
                ::setenv("MEMGOV_MEMORY_LIMIT", std::to_string(static_cast<std::uint64_t>(mib) << 20).c_str(), 1);
                std::string cmd;
                for (const auto& a : child_args(o, governed, csv)) cmd += "'" + a + "' ";
                std::FILE* p = ::popen(cmd.c_str(), "r");
                if (p != nullptr) {
                    std::array<char, 4096> buf{};
                    std::size_t n = 0;
                    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.run.output.append(buf.data(), n);
                    const int st = ::pclose(p);
                    r.run.status = st;
                    r.run.started = true;
                }
                ::unsetenv("MEMGOV_MEMORY_LIMIT");
            }
            std::ofstream{fmt::format("{}/scenario-{}mib-{}.txt", o.out, mib, v)} << r.run.output;
            fmt::print("{} MiB, governor {}: {} ({})\n", mib, v,
                       r.run.exited_ok()          ? "survived"
                       : r.run.timed_out          ? "stopped (timed out or interrupted)"
                       : r.run.killed_by(SIGKILL) ? "killed (SIGKILL)"
                                                  : "failed",
                       r.where);
            std::fflush(stdout);
            results.push_back(std::move(r));
            if (g_stop.load()) break;
        }
        if (g_stop.load()) break;
    }

    // The table.
    std::string md;
    md += "| limit | governor | where | outcome | OOM kills | peak % of limit | well-behaved goodput "
          "(regular, burst) | well-behaved shed | giants refused + shed | sessions refused "
          "(regular+burst) | evicted: well-behaved while an over-quota lived / all | level changes "
          "(/min) | estimate within 5% / worst | stall max ms (probe / admit / control) | calls over "
          "1 ms (admit / control) | identity |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    bool ok = true;
    for (const auto& r : results) {
        const auto kv = r.run.values();
        const auto num = [&](const std::string& k) {
            const auto it = kv.find(k);
            return it == kv.end() ? 0.0 : std::strtod(it->second.c_str(), nullptr);
        };
        const bool has = kv.count("end") != 0;
        std::string outcome = r.run.exited_ok()          ? "survived"
                              : r.run.timed_out          ? "stopped"
                              : r.run.killed_by(SIGKILL) ? "killed"
                                                         : "failed";
        if (!r.run.exited_ok()) {
            // When: the timeline's last row (it is flushed every 100 ms).
            std::ifstream csv{fmt::format("{}/scenario-{}mib-{}.csv", o.out, r.limit_mib, r.governed ? "on" : "off")};
            std::string line;
            std::string last;
            while (std::getline(csv, line)) last = line;
            if (!last.empty() && last[0] != 't') outcome += " at " + last.substr(0, last.find(',')) + " s";
        }
        const double limit = static_cast<double>(static_cast<std::uint64_t>(r.limit_mib) << 20);
        const auto pct = [](double a, double b) {
            return b == 0 ? std::string{"-"} : fmt::format("{:.1f}%", 100.0 * a / b);
        };
        const double wb_acc = num("regular.frames_accepted") + num("burst.frames_accepted");
        const double wb_shed = num("regular.frames_dropped.shed") + num("burst.frames_dropped.shed");
        const double g_gen = num("giant.frames_generated");
        const double g_lost = g_gen - num("giant.frames_accepted") + num("giant.frames_dropped.shed") +
                              num("giant.frames_dropped.evicted") + num("giant.frames_dropped.window_cap");
        double evicted_all = 0;
        for (const auto& [k, v] : kv) {
            if (k.find(".evicted.") != std::string::npos && k.find("cleared") == std::string::npos &&
                k.find("expired") == std::string::npos) {
                evicted_all += std::strtod(v.c_str(), nullptr);
            }
        }
        const auto cell = [&](const std::string& v) { return has ? v : std::string{"-"}; };
        md += fmt::format(
            "| {} MiB | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} "
            "|\n",
            r.limit_mib, r.governed ? "on" : "off", r.where, outcome, r.oom_kills ? std::to_string(*r.oom_kills) : "-",
            r.peak ? fmt::format("{:.1f}%", static_cast<double>(*r.peak) * 100.0 / limit) : "-",
            cell(fmt::format("{} / {}", pct(num("regular.frames_accepted"), num("regular.frames_generated")),
                             pct(num("burst.frames_accepted"), num("burst.frames_generated")))),
            cell(pct(wb_shed, wb_acc)), cell(pct(g_lost, g_gen)),
            cell(fmt::format("{}", num("regular.sessions_tried") - num("regular.sessions_admitted") +
                                       num("burst.sessions_tried") - num("burst.sessions_admitted"))),
            cell(fmt::format("{} / {}",
                             num("regular.pressure_evicted_while_over_quota_lived") +
                                 num("burst.pressure_evicted_while_over_quota_lived"),
                             evicted_all)),
            cell(fmt::format("{} ({:.1f})", num("level_changes"), num("level_changes_per_min"))),
            cell(fmt::format("{:.1f}% / {:.1f}%", num("estimate_within_5pct") * 100.0, num("estimate_worst_pct"))),
            cell(fmt::format("{:.2f} / {:.2f} / {:.2f}", num("stall_probe_max_ms"), num("ingress_governance_max_ms"),
                             num("ingress_control_max_ms"))),
            cell(fmt::format("{} / {} of {}", num("ingress_governance_over_1ms"), num("ingress_control_over_1ms"),
                             num("ingress_timed_calls"))),
            cell(kv.count("identity") ? kv.at("identity") : "-"));
        if (r.governed && (!r.run.exited_ok() || !has || kv.at("identity") != "ok")) ok = false;
    }
    fmt::print("\n{}", md);
    std::ofstream{o.out + "/summary.md"} << md;
    return ok ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"memgov governance scenario: a gateway-shaped workload in a real memory cgroup, "
                 "governed and ungoverned"};
    options o;
    std::string limits = "128,256";
    std::string variants = "on,off";
    app.add_option("--limits", limits, "Cgroup limits in MiB, comma-separated (runner)");
    app.add_option("--variants", variants, "Governor on, off, or both: on,off (runner)");
    app.add_option("--out", o.out, "Directory for the CSV timelines and the summary (runner)");
    app.add_flag("--short", o.short_run,
                 "The ctest version: 20 s, 128 MiB, governed only; checks survival and accounting");
    app.add_flag("--child", o.child, "Run the workload in this process (what the runner starts)");
    app.add_option("--governed", o.governed, "Child: with the governor (1) or without (0)");
    app.add_option("--csv", o.csv, "Child: the timeline file");
    app.add_option("--seconds", o.seconds, "Seconds of traffic")->check(CLI::Range(1.0, 3600.0));
    app.add_option("--sessions-start", o.sessions_start, "Regular sessions at the start");
    app.add_option("--sessions-max", o.sessions_max, "Regular sessions after the ramp");
    app.add_option("--ramp-s", o.ramp_s, "Seconds of the ramp")->check(CLI::Range(0.1, 3600.0));
    app.add_option("--orphan-share", o.orphan_share, "Share of regular sessions that go silent")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--burst", o.burst, "Sessions arriving within 0.5 s");
    app.add_option("--burst-at-s", o.burst_at_s, "When the burst arrives");
    app.add_option("--giants", o.giants, "Sessions that push as fast as they can and keep it all");
    app.add_option("--giant-at-s", o.giant_at_s, "When the giants arrive");
    app.add_option("--giant-frames", o.giant_frames, "Frames per 20 ms a giant pushes")->check(CLI::Range(1, 10000));
    app.add_option("--outage-at-s", o.outage_at_s, "When the downstream goes down");
    app.add_option("--outage-s", o.outage_s, "For how long");
    app.add_option("--inflight-mib", o.inflight_mib, "The downstream queue's bound")->check(CLI::Range(1, 4096));
    app.add_option("--bandwidth-mib-s", o.bandwidth_mib_s, "The downstream's bandwidth")
        ->check(CLI::Range(0.1, 100000.0));
    app.add_option("--seed", o.seed, "Random seed");
    CLI11_PARSE(app, argc, argv);

    if (o.child) return run_child(o);

    o.limits_mib.clear();
    std::stringstream ls{limits};
    for (std::string s; std::getline(ls, s, ',');) {
        try {
            const auto v = std::stoul(s);
            if (v < 32 || v > 65536) throw std::out_of_range{"limit"};
            o.limits_mib.push_back(v);
        } catch (const std::exception&) {
            fmt::print(stderr, "--limits: '{}' is not a limit in MiB (32..65536)\n", s);
            return 2;
        }
    }
    o.variants.clear();
    std::stringstream vs{variants};
    for (std::string s; std::getline(vs, s, ',');) {
        if (s != "on" && s != "off") {
            fmt::print(stderr, "--variants: '{}' is neither on nor off\n", s);
            return 2;
        }
        o.variants.push_back(s);
    }
    if (o.short_run) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
        // The sanitizers' shadow memory and quarantine are memory the workload does not
        // control: inside a 128 MiB cgroup they, not the workload, would decide the outcome.
        fmt::print("MEMGOV_SKIP: the scenario measures memory, which a sanitizer inflates\n");
        return 0;
#endif
        o.limits_mib = {128};
        o.variants = {"on"};
        o.seconds = 20;
        o.ramp_s = 8;
        o.burst_at_s = 6;
        o.outage_at_s = 10;
        o.outage_s = 4;
    }
    return run_all(o);
}
