// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The gateway's load generator: N WebSocket sessions of 16 kHz 16-bit PCM in 20 ms frames
/// (640 B, 50/s), ramped in, for a duration or a frame count. Every frame carries its
/// session index, sequence number and send time in its first 24 bytes and a pattern after
/// them; a Kafka consumer reads the topic back and checks every byte by session and offset.
/// Result: sent = delivered + losses by reason, latency percentiles, order violations.
/// Also small probes for tests (one scripted WebSocket exchange, one HTTP GET).
/// No Beast in this header.

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace loadgen {

/// What to run.
struct config {
    std::string host = "127.0.0.1";
    std::uint16_t port = 8080;
    std::string path = "/v1/stream";
    std::string brokers;              ///< Kafka bootstrap; empty: no read-back (losses unknown).
    std::string topic = "audio";
    unsigned sessions = 10;
    unsigned frames = 0;              ///< Frames per session; 0: from `duration`.
    std::chrono::milliseconds duration{10000};
    std::chrono::milliseconds ramp{1000};        ///< Sessions start evenly over this.
    int sample_rate = 16000;
    unsigned frame_ms = 20;                      ///< 640 bytes at 16 kHz.
    /// Send this many times faster than real time (frames every frame_ms / speed): a client
    /// that streams past its session quota. Must be > 0.
    double speed = 1.0;
    std::chrono::milliseconds drain_timeout{15000}; ///< Wait for the last frames in Kafka.
    std::string prefix;               ///< Session id prefix; empty: "lg-<random>".
    unsigned io_threads = 2;
    bool progress = true;             ///< One line a second on stderr.
};

/// What happened.
struct result {
    std::uint64_t sessions = 0;
    std::uint64_t sessions_completed = 0;   ///< Ended with an end ack and close 1000.
    std::map<int, std::uint64_t> close_codes; ///< Close code seen per session (-1: none/error).
    std::uint64_t sent_frames = 0;
    std::uint64_t sent_bytes = 0;
    std::uint64_t delivered_frames = 0;     ///< Read back byte-exact.
    std::uint64_t delivered_bytes = 0;
    /// Frames sent and not delivered, by reason: "refused_<reason>" (the gateway refused the
    /// frame and said so in a `refused` notice: refused_over_quota, refused_heavy,
    /// refused_paced), "close_<code>" (the session was closed by the gateway with that code),
    /// "gap" (Kafka's byte offsets skip them: dropped in the gateway), "corrupt" (bytes
    /// differ), "missing" (not read back within drain_timeout), "no_readback" (no brokers).
    std::map<std::string, std::uint64_t> losses;
    std::uint64_t refusal_notices = 0;      ///< `refused` notices received.
    /// Sessions whose end ack's `refused_frames` differs from the frames their notices named
    /// (0 unless the gateway refused something silently, or suppressed notices).
    std::uint64_t refusal_mismatches = 0;
    std::uint64_t order_violations = 0;     ///< Kafka messages out of per-session order.
    std::uint64_t duplicate_messages = 0;
    std::uint64_t kafka_messages = 0;       ///< Messages of this run read back.
    double p50_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0; ///< Send → read back.
    double seconds = 0;
    std::vector<std::string> errors;        ///< Connection errors (first few).

    /// sent == delivered + Σ losses.
    [[nodiscard]] bool balanced() const noexcept {
        std::uint64_t l = 0;
        for (const auto& [k, v] : losses) l += v;
        return sent_frames == delivered_frames + l;
    }
};

/// Runs the load. Throws `std::runtime_error` when Kafka cannot be reached at all.
[[nodiscard]] result run(const config& cfg);

/// The summary table (several lines) and the JSON summary.
[[nodiscard]] std::string summary_table(const result& r);
[[nodiscard]] std::string summary_json(const result& r);

/// One scripted exchange, for tests.
struct probe_message {
    bool text = true;
    std::string data;
};
struct probe_result {
    bool connected = false;          ///< The WebSocket handshake succeeded.
    int close_code = -1;             ///< The server's close code (-1: none).
    std::string close_reason;
    std::vector<std::string> texts;  ///< Text messages received.
    std::string error;               ///< What failed, if anything.
};
/// Connects to ws://host:port/target, sends `msgs` in order, then reads until the server
/// closes or `timeout` passes.
[[nodiscard]] probe_result probe(const std::string& host, std::uint16_t port, const std::string& target,
                                 const std::vector<probe_message>& msgs,
                                 std::chrono::milliseconds timeout = std::chrono::milliseconds{5000});

/// One HTTP GET: status (0 on failure) and body.
struct http_result {
    int status = 0;
    std::string body;
};
[[nodiscard]] http_result http_get(const std::string& host, std::uint16_t port, const std::string& target);

} // namespace loadgen
