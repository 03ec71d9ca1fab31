// SPDX-License-Identifier: MIT
// memgov's reference gateway: `gateway --help`. No Beast here (see server.cpp).
#include "gateway.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

// "64M", "1G", "65536": bytes with an optional K/M/G/T suffix (powers of 1024).
std::uint64_t parse_bytes(const std::string& s) {
    if (s.empty()) throw std::invalid_argument{"empty"};
    std::size_t used = 0;
    const unsigned long long v = std::stoull(s, &used);
    std::uint64_t mul = 1;
    const std::string rest = s.substr(used);
    if (rest == "K" || rest == "k" || rest == "KiB")
        mul = 1ULL << 10;
    else if (rest == "M" || rest == "m" || rest == "MiB")
        mul = 1ULL << 20;
    else if (rest == "G" || rest == "g" || rest == "GiB")
        mul = 1ULL << 30;
    else if (rest == "T" || rest == "t" || rest == "TiB")
        mul = 1ULL << 40;
    else if (!rest.empty())
        throw std::invalid_argument{"bad suffix"};
    if (v == 0) throw std::invalid_argument{"zero"};
    return v * mul;
}

// Writes the bootstrap file whole (a reader never sees half of it).
void write_bootstrap(const std::string& path, const std::string& brokers, unsigned ws_port, unsigned http_port) {
    std::ofstream f{path + ".tmp"};
    f << brokers << '\n' << ws_port << '\n' << http_port << '\n';
    f.close();
    std::rename((path + ".tmp").c_str(), path.c_str());
}

// --kafka-mock-only: the mock cluster and its fault schedule in a process of their own, so a
// gateway measured in a memory cgroup does not carry the cluster's log (librdkafka's mock keeps up
// to 5 MiB per partition) and a scenario can give the topic enough partitions to retain an
// outage's backlog until the read-back has it.
int run_mock_only(const gateway::gateway_config& cfg, const std::string& bootstrap_file, const sigset_t& set) {
    try {
        gateway::kafka_producer cluster{cfg.kafka}; // no brokers: it starts the mock cluster
        const auto say = [&](const std::string& line) {
            if (!cfg.quiet) fmt::print(stderr, "gateway: {}\n", line);
        };
        std::jthread faults;
        if (cfg.faults.any()) {
            faults = std::jthread{
                [&](const std::stop_token& st) { gateway::run_mock_faults(cluster, cfg.faults, st, say); }};
        }
        fmt::print(stderr, "gateway: Kafka mock cluster only, at {} (topic {}, {} partitions)\n", cluster.bootstrap(),
                   cluster.topic(), cfg.kafka.partitions);
        if (!bootstrap_file.empty()) write_bootstrap(bootstrap_file, cluster.bootstrap(), 0, 0);
        int sig = 0;
        sigwait(&set, &sig);
        fmt::print(stderr, "gateway: {} received, stopping the mock cluster\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        return 0;
    } catch (const std::exception& e) {
        fmt::print(stderr, "gateway: {}\n", e.what());
        return 1;
    }
}

} // namespace

int main(int argc, char** argv) {
    gateway::gateway_config cfg;
    CLI::App app{"memgov reference gateway: WebSocket audio in, Kafka out, under one memgov::governor"};
    // A byte count, or one with a K/M/G/T suffix (the check of every such option).
    const auto byte_count = [](const std::string& s) {
        try {
            (void)parse_bytes(s);
            return std::string{};
        } catch (...) {
            return std::string{"must be a positive byte count, optionally with K/M/G/T"};
        }
    };
    app.option_defaults()->always_capture_default();
    std::string governor = "on";
    std::string memory_limit;
    std::string bootstrap_file;
    unsigned chunk_ms = 200, handshake_ms = 5000, idle_s = 30, grace_ms = 3000, flush_ms = 5000;
    unsigned session_idle_s = 120, session_max_age_s = 3600;

    app.add_option("--host", cfg.host, "Listen address");
    app.add_option("--port", cfg.port, "WebSocket port (0: ephemeral)")->check(CLI::Range(0, 65535));
    app.add_option("--http-port", cfg.http_port, "HTTP port for /metrics /healthz /readyz /debug/health (0: ephemeral)")
        ->check(CLI::Range(0, 65535));
    app.add_option("--io-threads", cfg.io_threads, "I/O threads")->check(CLI::Range(1, 256));
    app.add_option("--brokers", cfg.kafka.brokers, "Kafka bootstrap servers; empty: start librdkafka's mock cluster");
    app.add_option("--topic", cfg.kafka.topic, "Kafka topic")->check([](const std::string& t) {
        return t.empty() ? std::string{"must not be empty"} : std::string{};
    });
    app.add_option("--partitions", cfg.kafka.partitions, "Partitions of the mock cluster's topic")
        ->check(CLI::Range(1, 1024));
    app.add_option("--kafka-queue-kb", cfg.kafka.queue_max_kbytes, "Producer queue bound in KiB")
        ->check(CLI::Range(1, 2097151));
    app.add_option("--kafka-queue-messages", cfg.kafka.queue_max_messages, "Producer queue bound in messages")
        ->check(CLI::Range(1, 10000000));
    app.add_option("--kafka-timeout-ms", cfg.kafka.message_timeout_ms, "message.timeout.ms")
        ->check(CLI::Range(1, 900000));
    app.add_option("--chunk-ms", chunk_ms, "How often windows are produced to Kafka")->check(CLI::Range(1, 60000));
    app.add_option("--max-message-bytes", cfg.max_message_bytes, "Largest WebSocket message (above: close 1009)")
        ->check(CLI::Range(std::size_t{16}, std::size_t{64} << 20));
    app.add_option("--window-chunk-bytes", cfg.window_chunk_bytes,
                   "sliding_window chunk size; 0: one --chunk-ms of pcm16 audio at the session's sample "
                   "rate (6400 B at 16 kHz and 200 ms, an 8 KiB pool class): one Kafka message per chunk")
        ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 20));
    app.add_option("--window-cap-bytes", cfg.window_cap_bytes, "sliding_window cap per session")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
    app.add_option("--session-cost-bytes", cfg.session_cost_bytes,
                   "Bytes a session declares at start (reserved from the admission headroom); "
                   "0: two chunk periods of pcm16 audio at its sample rate, at most --window-cap-bytes")
        ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 30));
    std::string session_quota;
    app.add_option("--session-quota-bytes", session_quota,
                   "A session's budget quota at normal (bytes, or with K/M/G/T); memgov caps it at 1/8 "
                   "of the limit and shrinks it with the level; default: memgov's (30M)")
        ->check(byte_count);
    app.add_option("--handshake-timeout-ms", handshake_ms, "WebSocket handshake and HTTP read timeout")
        ->check(CLI::Range(1, 600000));
    app.add_option("--idle-timeout-s", idle_s, "Close a stream after this long without traffic")
        ->check(CLI::Range(1, 86400));
    app.add_option("--session-idle-ttl-s", session_idle_s, "Sessions idle this long are evicted (4001 expired_idle)")
        ->check(CLI::Range(1U, 604800U));
    app.add_option("--session-max-age-s", session_max_age_s,
                   "Sessions older than this are evicted (4001 expired_absolute)")
        ->check(CLI::Range(1U, 604800U));
    unsigned orphan_check_ms = 5000;
    app.add_option("--orphan-check-ms", orphan_check_ms,
                   "How often the sweep looks for sessions whose TCP connection dropped without a "
                   "WebSocket close (orphans; removed with reason orphan)")
        ->check(CLI::Range(1U, 3600000U));
    app.add_option("--shutdown-grace-ms", grace_ms, "How long shutdown waits for clients to close")
        ->check(CLI::Range(0, 600000));
    app.add_option("--flush-timeout-ms", flush_ms, "How long shutdown waits for Kafka deliveries")
        ->check(CLI::Range(0, 600000));
    app.add_option("--governor", governor, "on, or off: admission and reclaim only count (dry run)")
        ->check(CLI::IsMember({"on", "off"}));
    app.add_option("--memory-limit", memory_limit,
                   "Override the memory limit (bytes, or with K/M/G/T); default: the cgroup's")
        ->check(byte_count);
    // Faults for the mock cluster (never with --brokers).
    double down_at_s = 0, down_for_s = 0, errors_at_s = 0;
    std::string produce_error = "retriable";
    auto* down_at = app.add_option("--mock-broker-down-at-s", down_at_s,
                                   "Mock cluster fault: take brokers down this many seconds after start")
                        ->check(CLI::Range(0.0, 86400.0));
    auto* down_for = app.add_option("--mock-broker-down-for-s", down_for_s,
                                    "Mock cluster fault: ...for this many seconds, then bring them back up")
                         ->check(CLI::Range(0.001, 86400.0));
    auto* down_ids = app.add_option("--mock-broker-ids", cfg.faults.broker_ids,
                                    "Mock cluster fault: which brokers go down (comma-separated ids 1..3; default all)")
                         ->delimiter(',')
                         ->check(CLI::Range(1, cfg.kafka.mock_brokers));
    auto* errors = app.add_option("--mock-produce-errors", cfg.faults.produce_errors,
                                  "Mock cluster fault: the next N produce requests fail")
                       ->check(CLI::Range(1, 1000000));
    auto* error_kind = app.add_option("--mock-produce-error", produce_error,
                                      "...with: retriable (NOT_ENOUGH_REPLICAS, retried), non-retriable "
                                      "(INVALID_RECORD, the messages fail), or a Kafka error code 1..200")
                           ->check([](const std::string& v) {
                               if (v == "retriable" || v == "non-retriable") return std::string{};
                               try {
                                   std::size_t used = 0;
                                   const int c = std::stoi(v, &used);
                                   if (used == v.size() && c >= 1 && c <= 200) return std::string{};
                               } catch (...) {
                               }
                               return std::string{"must be retriable, non-retriable or an error code 1..200"};
                           });
    auto* errors_at = app.add_option("--mock-produce-errors-at-s", errors_at_s,
                                     "Mock cluster fault: when to inject the produce errors (seconds after start)")
                          ->check(CLI::Range(0.0, 86400.0));
    down_for->needs(down_at);
    down_at->needs(down_for);
    down_ids->needs(down_at);
    error_kind->needs(errors);
    errors_at->needs(errors);
    for (auto* o : {down_at, down_for, down_ids, errors, error_kind, errors_at}) o->excludes("--brokers");
    app.add_option("--bootstrap-file", bootstrap_file,
                   "Once ready, write three lines to this file: the Kafka bootstrap address, the "
                   "WebSocket port and the HTTP port (both 0 with --kafka-mock-only)");
    bool mock_only = false;
    app.add_flag("--kafka-mock-only", mock_only,
                 "Run only the mock cluster (--partitions, --topic and the --mock-* faults) for "
                 "gateways started elsewhere with --brokers; no WebSocket or HTTP port")
        ->excludes("--brokers");
    app.add_flag("--quiet", cfg.quiet, "No log lines");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        (void)app.exit(e); // prints the message, which names the option
        return 2;
    }
    cfg.chunk_period = std::chrono::milliseconds{chunk_ms};
    cfg.handshake_timeout = std::chrono::milliseconds{handshake_ms};
    cfg.idle_timeout = std::chrono::seconds{idle_s};
    cfg.shutdown_grace = std::chrono::milliseconds{grace_ms};
    cfg.flush_timeout = std::chrono::milliseconds{flush_ms};
    cfg.governor_on = governor == "on";
    cfg.session_idle_ttl = std::chrono::seconds{session_idle_s};
    cfg.session_max_age = std::chrono::seconds{session_max_age_s};
    cfg.orphan_check_interval = std::chrono::milliseconds{orphan_check_ms};
    const auto ms = [](double seconds) {
        return std::chrono::milliseconds{static_cast<std::int64_t>(seconds * 1000.0 + 0.5)};
    };
    if (down_at->count() > 0) {
        cfg.faults.broker_down_at = ms(down_at_s);
        cfg.faults.broker_down_for = ms(down_for_s);
    }
    if (errors->count() > 0) {
        cfg.faults.produce_errors_at = ms(errors_at_s);
        cfg.faults.produce_error = produce_error == "retriable"       ? 19 // NOT_ENOUGH_REPLICAS
                                   : produce_error == "non-retriable" ? 87 // INVALID_RECORD
                                                                      : std::stoi(produce_error);
    }
    if (!memory_limit.empty()) cfg.memory_limit = parse_bytes(memory_limit);
    if (!session_quota.empty()) cfg.session_quota_bytes = static_cast<std::size_t>(parse_bytes(session_quota));

    // Signals are taken synchronously by this thread; block them before any thread starts.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    if (mock_only) return run_mock_only(cfg, bootstrap_file, set);
    try {
        gateway::server srv{cfg};
        srv.start();
        if (srv.mock_kafka()) {
            fmt::print(stderr, "gateway: Kafka mock cluster at {} (topic {})\n", srv.bootstrap(), srv.topic());
        } else {
            fmt::print(stderr, "gateway: Kafka at {} (topic {})\n", srv.bootstrap(), srv.topic());
        }
        fmt::print(stderr, "gateway: read it back: kcat -b {} -C -t {} -o beginning -f '%k seq=%h %S bytes\\n'\n",
                   srv.bootstrap(), srv.topic());
        if (!bootstrap_file.empty()) write_bootstrap(bootstrap_file, srv.bootstrap(), srv.port(), srv.http_port());
        int sig = 0;
        sigwait(&set, &sig);
        fmt::print(stderr, "gateway: {} received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        const gateway::gateway_stats s = srv.shutdown();
        return s.kafka.losses.empty() ? 0 : 1;
    } catch (const std::exception& e) {
        fmt::print(stderr, "gateway: {}\n", e.what());
        return 1;
    }
}
