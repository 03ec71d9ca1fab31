// SPDX-License-Identifier: MIT
// The gateway's load generator: `loadgen --help`.
#include "loadgen.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <fstream>
#include <string>

int main(int argc, char** argv) {
    loadgen::config cfg;
    CLI::App app{"memgov gateway load generator: N sessions of 16 kHz PCM, read back from Kafka byte by byte"};
    app.option_defaults()->always_capture_default();
    unsigned duration_s = 10, ramp_ms = 1000, drain_s = 15;
    std::string json_path;
    std::string bootstrap_file;
    bool quiet = false;
    app.add_option("--host", cfg.host, "Gateway address");
    app.add_option("--port", cfg.port, "Gateway WebSocket port")->check(CLI::Range(1, 65535));
    app.add_option("--brokers", cfg.brokers, "Kafka bootstrap servers to read back from (empty: no read-back)");
    app.add_option("--bootstrap-file", bootstrap_file,
                   "Read brokers and port from the file `gateway --bootstrap-file` wrote");
    app.add_option("--topic", cfg.topic, "Kafka topic");
    app.add_option("--sessions", cfg.sessions, "Steady sessions (orphans included), started over --ramp-ms")
        ->check(CLI::Range(1U, 100000U));
    app.add_option("--duration-s", duration_s, "Seconds of audio per session")->check(CLI::Range(1U, 86400U));
    app.add_option("--frames", cfg.frames, "Frames per session (overrides --duration-s)")
        ->check(CLI::Range(0U, 100000000U));
    app.add_option("--ramp-ms", ramp_ms, "Sessions start evenly over this")->check(CLI::Range(0U, 3600000U));
    app.add_option("--sample-rate", cfg.sample_rate, "Hz")
        ->check(CLI::IsMember({8000, 16000, 24000, 32000, 44100, 48000}));
    app.add_option("--frame-ms", cfg.frame_ms, "Milliseconds of audio per frame")->check(CLI::Range(1U, 1000U));
    app.add_option("--speed", cfg.speed, "Send this many times faster than real time (a client past its quota)")
        ->check(CLI::Range(0.001, 1000.0));
    app.add_option("--drain-s", drain_s, "Longest wait for the last frames in Kafka")->check(CLI::Range(1U, 3600U));
    app.add_option("--prefix", cfg.prefix, "Session id prefix (default: lg-<random>)");
    app.add_option("--io-threads", cfg.io_threads, "I/O threads")->check(CLI::Range(1U, 256U));
    app.add_flag("--from-beginning", cfg.from_beginning,
                 "Read Kafka from the partitions' beginning, not their end at start (brokers may be down "
                 "at start; give each run its own --prefix)");
    app.add_option("--seed", cfg.seed, "Seed for the orphans' choice and drop times (0: random; printed in --json)");
    unsigned burst_at_ms = 0, long_duration_s = 3600;
    auto* abuse =
        app.add_option_group("Abusive sessions", "Added to the steady ones; each class is reported on its own");
    abuse->add_option("--burst", cfg.burst_sessions, "Burst: this many sessions connect at once at --burst-at-ms")
        ->check(CLI::Range(0U, 100000U));
    abuse->add_option("--burst-at-ms", burst_at_ms, "When the burst connects, from the start")
        ->check(CLI::Range(0U, 86400000U));
    abuse->add_option("--giants", cfg.giant_sessions, "Giants: sessions that stream as fast as the socket allows")
        ->check(CLI::Range(0U, 10000U));
    abuse
        ->add_option("--giant-frames", cfg.giant_frames,
                     "A giant stops after this many frames, or after --duration-s, whichever is first")
        ->check(CLI::Range(1U, 100000000U));
    abuse
        ->add_option("--orphan-share", cfg.orphan_share,
                     "This share of --sessions drop TCP without a WebSocket close, each at a random frame")
        ->check(CLI::Range(0.0, 1.0));
    abuse->add_option("--long", cfg.long_sessions, "Long sessions: --long-duration-s of audio at --long-speed")
        ->check(CLI::Range(0U, 10000U));
    abuse->add_option("--long-duration-s", long_duration_s, "Audio per long session")->check(CLI::Range(1U, 864000U));
    abuse->add_option("--long-speed", cfg.long_speed, "Long sessions send this many times faster than real time")
        ->check(CLI::Range(0.001, 100000.0));
    abuse
        ->add_option("--slow", cfg.slow_sessions,
                     "Slow readers: sessions that do not read the socket while streaming (acks pile up)")
        ->check(CLI::Range(0U, 100000U));
    app.add_option("--json", json_path, "Also write the summary as JSON to this file ('-': stdout)");
    app.add_flag("--quiet", quiet, "No progress lines");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        (void)app.exit(e);
        return 2;
    }
    if (!bootstrap_file.empty()) {
        std::ifstream f{bootstrap_file};
        std::string brokers;
        unsigned port = 0;
        if (!(f >> brokers >> port) || port == 0 || port > 65535) {
            fmt::print(stderr, "--bootstrap-file: cannot read brokers and port from {}\n", bootstrap_file);
            return 2;
        }
        if (cfg.brokers.empty()) cfg.brokers = brokers;
        cfg.port = static_cast<std::uint16_t>(port);
    }
    cfg.duration = std::chrono::seconds{duration_s};
    cfg.ramp = std::chrono::milliseconds{ramp_ms};
    cfg.drain_timeout = std::chrono::seconds{drain_s};
    cfg.burst_at = std::chrono::milliseconds{burst_at_ms};
    cfg.long_duration = std::chrono::seconds{long_duration_s};
    cfg.progress = !quiet;
    try {
        const loadgen::result r = loadgen::run(cfg);
        fmt::print("{}", loadgen::summary_table(r));
        if (json_path == "-") {
            fmt::print("{}", loadgen::summary_json(r));
        } else if (!json_path.empty()) {
            std::ofstream{json_path} << loadgen::summary_json(r);
        }
        return r.balanced() && r.order_violations == 0 ? 0 : 1;
    } catch (const std::exception& e) {
        fmt::print(stderr, "loadgen: {}\n", e.what());
        return 1;
    }
}
