// A voice-gateway-shaped load inside whatever memory limit the process runs under: sessions in a
// session_map, each holding a sliding_window of audio built from one buffer_pool; new sessions
// keep arriving and audio keeps being appended, and nobody ever ends a session.
//
//   survival --governed=1 --seconds=15
//
// Governed, a memgov::governor polls the real cgroup, admits sessions and audio at ingress and
// reclaims (pool trims, heap trims, LRU eviction) under pressure. Ungoverned, the same code
// runs with no admission and no reclaim. At the end it prints "key value" lines.
#include <memgov/buffer_pool.hpp>
#include <memgov/governor.hpp>
#include <memgov/reclaimers.hpp>
#include <memgov/session_map.hpp>
#include <memgov/sliding_window.hpp>

#include <CLI/CLI.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <span>

namespace {

struct session {
    memgov::sliding_window window;
};

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"memgov survival load: sessions with audio windows under a memory limit"};
    bool governed = true;
    double seconds = 15.0;
    std::size_t window_kib = 1024;
    std::size_t append_kib = 32;
    std::size_t appends_per_round = 8;
    std::uint64_t seed = 1;
    app.add_option("--governed", governed, "Run with the governor (1) or without (0)");
    app.add_option("--seconds", seconds, "How long to run")->check(CLI::PositiveNumber);
    app.add_option("--window-kib", window_kib, "Cap of each session's window")->check(CLI::PositiveNumber);
    app.add_option("--append-kib", append_kib, "Audio appended per message")->check(CLI::PositiveNumber);
    app.add_option("--appends", appends_per_round, "Messages per new session")->check(CLI::PositiveNumber);
    app.add_option("--seed", seed, "Random seed");
    CLI11_PARSE(app, argc, argv);

    using clock = std::chrono::steady_clock;
    memgov::governor_config gcfg;
    gcfg.monitor.sample_period = std::chrono::milliseconds{20};
    gcfg.monitor.use_systemd_pressure_env = false;
    memgov::governor<> gov{gcfg};
    memgov::ledger& ledger = gov.ledger();

    memgov::buffer_pool pool{memgov::buffer_pool_config{}, &ledger};
    memgov::sliding_window_config wcfg;
    wcfg.cap_bytes = window_kib * 1024;

    std::uint64_t evicted = 0;
    memgov::session_map_hooks<std::uint64_t, session> hooks;
    hooks.on_evict = [&](const std::uint64_t&, session&, memgov::evict_reason) { ++evicted; };
    // The map's costs are the windows' bytes, which the pool already charges: no ledger here.
    using map_type = memgov::session_map<std::uint64_t, session>;
    map_type sessions{memgov::session_map_config{}, std::move(hooks)};

    if (governed) {
        gov.register_reclaimer(std::make_shared<memgov::buffer_pool_reclaimer>(pool));
        gov.register_reclaimer(std::make_shared<memgov::session_map_reclaimer<map_type>>(sessions));
    }

    std::vector<std::byte> audio(append_kib * 1024, std::byte{0x5a});
    std::mt19937_64 rng{seed};
    std::uint64_t next_id = 0;
    std::uint64_t created = 0;
    std::uint64_t refused_sessions = 0;
    std::uint64_t refused_work = 0;
    std::uint64_t appended_bytes = 0;
    std::uint64_t polls = 0;
    auto worst = memgov::pressure_level::normal;

    const auto start = clock::now();
    const auto deadline = start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
    auto last_poll = start;
    while (clock::now() < deadline) {
        const auto now = clock::now();
        if (governed && now - last_poll >= std::chrono::milliseconds{2}) {
            const auto l = gov.poll(now);
            worst = std::max(worst, l);
            last_poll = now;
            ++polls;
        }
        // A new connection.
        if (!governed || gov.admit(wcfg.cap_bytes, memgov::admit_kind::session)) {
            const std::uint64_t id = next_id++;
            (void)sessions.insert(id, [&] { return session{memgov::sliding_window{pool, wcfg, &ledger}}; });
            ++created;
        } else {
            ++refused_sessions;
        }
        // Audio for recent sessions.
        for (std::size_t i = 0; i < appends_per_round && next_id > 0; ++i) {
            const std::uint64_t span = std::min<std::uint64_t>(next_id, 256);
            const std::uint64_t id = next_id - 1 - rng() % span;
            if (governed && !gov.admit(audio.size(), memgov::admit_kind::work)) {
                ++refused_work;
                continue;
            }
            (void)sessions.with(id, [&](session& s, map_type::entry& e) {
                s.window.append(std::span<const std::byte>{audio});
                e.set_cost(static_cast<std::int64_t>(s.window.held_bytes()));
                appended_bytes += audio.size();
            });
        }
    }

    const auto st = gov.stats();
    const auto& p = st.pressure;
    std::printf("governed %d\n", governed ? 1 : 0);
    std::printf("seconds %.3f\n", std::chrono::duration<double>(clock::now() - start).count());
    std::printf("limit %llu\n", static_cast<unsigned long long>(p.limit_bytes));
    std::printf("binding %s\n", p.binding_cgroup.empty() ? "-" : p.binding_cgroup.c_str());
    std::printf("created %llu\n", static_cast<unsigned long long>(created));
    std::printf("sessions %zu\n", sessions.size());
    std::printf("evicted %llu\n", static_cast<unsigned long long>(evicted));
    std::printf("refused_sessions %llu\n", static_cast<unsigned long long>(refused_sessions));
    std::printf("refused_work %llu\n", static_cast<unsigned long long>(refused_work));
    std::printf("appended_mib %.1f\n", static_cast<double>(appended_bytes) / (1024.0 * 1024.0));
    std::printf("polls %llu\n", static_cast<unsigned long long>(polls));
    std::printf("worst_level %s\n", std::string{memgov::to_string(worst)}.c_str());
    std::printf("lru_evictions %llu\n",
                static_cast<unsigned long long>(st.evictor.total(memgov::reclaim_action::evict_lru).items));
    std::printf("heap_trims %llu\n", static_cast<unsigned long long>(st.evictor.heap_trims));
    std::printf("pool_trimmed_bytes %llu\n",
                static_cast<unsigned long long>(st.evictor.total(memgov::reclaim_action::trim_pools).bytes));
    std::printf("pool_trimmed_buffers %llu\n",
                static_cast<unsigned long long>(st.evictor.total(memgov::reclaim_action::trim_pools).items));
    std::printf("end 1\n");
    std::fflush(stdout);
    return 0;
}
