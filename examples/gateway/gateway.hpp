// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// memgov's reference gateway: a Boost.Beast WebSocket server on ws://HOST:PORT/v1/stream
/// whose sessions live in a `memgov::session_map`, whose audio is held in
/// `memgov::sliding_window`s from one `memgov::buffer_pool` and produced to Kafka zero-copy
/// every `chunk_ms`, all under one `memgov::governor`. HTTP on a second port serves
/// /metrics, /healthz, /readyz and /debug/health. See docs/gateway.md.
///
/// This header is Beast-free (the server lives in one translation unit, server.cpp).

#include "kafka_producer.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace gateway {

/// Everything the gateway can be told (the CLI maps one option to one field).
struct gateway_config {
    std::string host = "127.0.0.1";                    ///< Listen address (WebSocket and HTTP).
    std::uint16_t port = 8080;                         ///< WebSocket port; 0: ephemeral.
    std::uint16_t http_port = 8081;                    ///< HTTP port; 0: ephemeral.
    unsigned io_threads = 2;                           ///< Threads running the io_context.
    std::chrono::milliseconds chunk_period{200};       ///< How often windows go to Kafka.
    std::size_t max_message_bytes = 65536;             ///< read_message_max: above it, 1009.
    std::chrono::milliseconds handshake_timeout{5000}; ///< WebSocket handshake / HTTP read.
    std::chrono::milliseconds idle_timeout{30000};     ///< No traffic (pings go at half of it).
    /// sliding_window chunk size. 0 (the default): what one `chunk_period` of pcm16 audio at
    /// the session's sample rate takes (6,400 B for 200 ms at 16 kHz), rounded up by the pool
    /// to its class (8 KiB), so each period's audio goes to Kafka as one message.
    std::size_t window_chunk_bytes = 0;
    std::size_t window_cap_bytes = 256 * 1024; ///< sliding_window hard cap per session.
    /// What a session declares at `start` (`governor::admit_session`: reserved from the
    /// admission headroom, refused over_quota above the quota). 0: automatic, two `chunk_period`s
    /// of pcm16 audio at the start's sample rate (the window filling while the previous chunk
    /// is in flight), at most `window_cap_bytes`.
    std::size_t session_cost_bytes = 0;
    /// `admission_config::session_quota_bytes`: a session's quota at normal (still capped by
    /// `session_quota_limit_share` of the limit and scaled down with the level). Unset: memgov's
    /// default (30 MiB).
    std::optional<std::size_t> session_quota_bytes{};
    bool governor_on = true;                     ///< false: the governor runs in dry run.
    std::optional<std::uint64_t> memory_limit{}; ///< Overrides the cgroup limit (bytes).
    /// Where memgov reads the cgroup and /proc files (`memgov::cgroup_config::root`): "/" but
    /// in tests, which point it at a fake tree to hold memory at a chosen level. No CLI option.
    std::string cgroup_root = "/";
    std::chrono::seconds session_idle_ttl{120}; ///< session_map idle TTL (backstop).
    std::chrono::seconds session_max_age{3600}; ///< session_map absolute TTL.
    /// How often the session map's sweep checks sessions for a lost connection: a session
    /// whose TCP connection dropped without a WebSocket close (or timed out half-open) stays in
    /// the map as an orphan until then, and leaves it with reason `orphan` (its window's audio
    /// is still produced). `session_map_config::check_interval`.
    std::chrono::milliseconds orphan_check_interval{5000};
    std::chrono::milliseconds shutdown_grace{3000}; ///< Wait for clients to close at shutdown.
    std::chrono::milliseconds flush_timeout{5000};  ///< Kafka flush at shutdown.
    producer_config kafka{};                        ///< Brokers (empty: mock cluster), topic, bounds.
    mock_faults faults{};                           ///< Mock cluster faults (none by default).
    bool quiet = false;                             ///< No log lines (tests).
};

/// What the gateway did, for the shutdown report and tests.
struct gateway_stats {
    std::uint64_t connections = 0; ///< Accepted TCP connections on the WS port.
    std::uint64_t active_connections = 0;
    std::uint64_t sessions_started = 0;
    std::uint64_t sessions_ended = 0; ///< Ended by an `end` message.
    std::uint64_t frames = 0;         ///< Audio frames appended.
    std::uint64_t frame_bytes = 0;
    /// Every audio frame the gateway read on a started session (appended, refused, lost after
    /// eviction or out of memory, discarded after close). After shutdown:
    /// received_bytes == kafka.delivered_bytes + Σ kafka.losses[*].bytes.
    std::uint64_t received_frames = 0;
    std::uint64_t received_bytes = 0;
    /// Frames refused by their session's budget, by `admit_reason` name (over_quota, heavy,
    /// paced); also counted as the losses `refused_work:<reason>` (bytes, frames).
    std::map<std::string, loss_count> refused_work;
    std::uint64_t refusal_notices = 0;            ///< `refused` notices sent to clients.
    std::uint64_t refusal_notices_suppressed = 0; ///< Not sent: the client's queue was full.
    /// Session budgets: bytes charged (admitted frames, and the unused buffer capacity of partly
    /// filled chunks produced to Kafka), and released by cause. After shutdown
    /// charged == released_window + released_not_appended + kafka.budget_released_bytes.
    std::uint64_t budget_charged_bytes = 0;
    std::uint64_t budget_released_window_bytes = 0;       ///< Dropped by the window cap.
    std::uint64_t budget_released_not_appended_bytes = 0; ///< After eviction, out of memory.
    std::uint64_t refused_sessions = 0;                   ///< Closed 1013 at admission.
    std::uint64_t evicted_sessions = 0;                   ///< Closed 4001.
    std::uint64_t closes_sent[6] = {};                    ///< 1000, 1001, 1007, 1008, 1009, 1013 (see close_index).
    /// Sessions whose connection dropped without a WebSocket close: left in the map as
    /// orphans for the sweep (`session_removals_total{reason="orphan"}` counts their removal).
    std::uint64_t orphaned_sessions = 0;
    std::uint64_t mock_broker_outages = 0; ///< Mock broker outages begun (`mock_faults`).
    /// Chunk periods in which a session over its fair share shed its oldest audio instead of
    /// producing it (bytes counted as the loss `shed_over_share`).
    std::uint64_t shed_periods = 0;
    std::uint64_t mock_produce_errors = 0; ///< Produce errors pushed into the mock cluster.
    producer_stats kafka{};
    std::uint64_t purged_at_shutdown = 0;
};

/// The gateway. `start()` binds and runs; `shutdown()` is the graceful stop (also run by the
/// destructor). Thread safety: `shutdown` and the accessors from any thread.
class server {
public:
    /// Builds the governor, pool, session map and producer (starting the mock cluster when no
    /// brokers are given). Throws `std::invalid_argument` / `std::runtime_error`.
    explicit server(gateway_config cfg);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Binds both ports and starts the I/O threads and the governor. Throws
    /// `boost::system::system_error` (as std::system_error's base std::runtime_error) on bind.
    void start();
    /// Graceful stop: refuse new connections, close every stream with 1001, produce what the
    /// windows hold, flush Kafka within `flush_timeout` and purge (count) the rest.
    /// Idempotent. Returns the final statistics.
    gateway_stats shutdown();

    [[nodiscard]] std::uint16_t port() const noexcept;           ///< The bound WebSocket port.
    [[nodiscard]] std::uint16_t http_port() const noexcept;      ///< The bound HTTP port.
    [[nodiscard]] const std::string& bootstrap() const noexcept; ///< Kafka bootstrap servers.
    [[nodiscard]] const std::string& topic() const noexcept;
    [[nodiscard]] bool mock_kafka() const noexcept;
    [[nodiscard]] gateway_stats stats() const;
    /// The /metrics body.
    [[nodiscard]] std::string metrics_text() const;
    /// One line: the limit, its source, the level (the startup log line).
    [[nodiscard]] std::string limit_line() const;
    /// The mock cluster (rd_kafka_mock_cluster_t*), or nullptr.
    [[nodiscard]] void* mock_cluster() const noexcept;

    struct impl; ///< Opaque (server.cpp).

private:
    std::unique_ptr<impl> m;
};

} // namespace gateway
