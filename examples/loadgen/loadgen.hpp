// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The gateway's load generator: N WebSocket sessions of 16 kHz 16-bit PCM in 20 ms frames
/// (640 B, 50/s), ramped in, for a duration or a frame count. Every frame carries its
/// session index, sequence number and send time in its first 24 bytes and a pattern after
/// them; a Kafka consumer reads the topic back and checks every byte by session and offset.
/// Result: sent = delivered + losses by reason, latency percentiles, order violations.
/// Besides the steady sessions it can add abusive ones (see `session_class`), each counted on
/// its own. Also small probes for tests (one scripted WebSocket exchange, one HTTP GET).
/// No Beast in this header.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace loadgen {

/// What a session does. Every session has one class and the result is reported per class.
enum class session_class : std::uint8_t {
    steady, ///< Paced at `speed` times real time, started over the ramp.
    burst,  ///< Like steady, but all `burst_sessions` connect at once at `burst_at`.
    giant,  ///< Streams as fast as the socket allows: the next frame as soon as a write completes.
    orphan, ///< Like steady, but drops its TCP connection (no WebSocket close) at a random frame.
    long_,  ///< Hours of audio at an accelerated pace (frames every frame_ms / long_speed).
    slow,   ///< Like steady, but never reads the socket while streaming (the acks pile up).
};
inline constexpr std::size_t session_class_count = 6;
/// "steady", "burst", "giant", "orphan", "long", "slow".
[[nodiscard]] constexpr const char* to_string(session_class c) noexcept {
    constexpr const char* names[] = {"steady", "burst", "giant", "orphan", "long", "slow"};
    return names[static_cast<std::size_t>(c)];
}

/// What to run.
struct config {
    std::string host = "127.0.0.1";
    std::uint16_t port = 8080;
    std::string path = "/v1/stream";
    std::string brokers; ///< Kafka bootstrap; empty: no read-back (losses unknown).
    std::string topic = "audio";
    unsigned sessions = 10; ///< Steady sessions (orphans included).
    unsigned frames = 0;    ///< Frames per session; 0: from `duration`.
    std::chrono::milliseconds duration{10000};
    std::chrono::milliseconds ramp{1000}; ///< Sessions start evenly over this.
    int sample_rate = 16000;
    unsigned frame_ms = 20; ///< 640 bytes at 16 kHz.
    /// Send this many times faster than real time (frames every frame_ms / speed): a client
    /// that streams past its session quota. Must be > 0.
    double speed = 1.0;
    std::chrono::milliseconds drain_timeout{15000}; ///< Wait for the last frames in Kafka.
    std::string prefix;                             ///< Session id prefix; empty: "lg-<random>".
    unsigned io_threads = 2;
    bool progress = true; ///< One line a second on stderr.
    /// Read Kafka from the partitions' beginning instead of their end at start (needed when
    /// frames may be produced before the consumer has its position, e.g. brokers down at start;
    /// other runs' sessions are skipped by key, so give each run its own prefix).
    bool from_beginning = false;
    std::uint64_t seed = 0; ///< For the orphans' choice and drop times; 0: random.

    // Abusive sessions, each class on top of the steady ones.
    unsigned burst_sessions = 0;           ///< Connect all at once at `burst_at`.
    std::chrono::milliseconds burst_at{0}; ///< From the run's start.
    unsigned giant_sessions = 0;           ///< Unpaced.
    /// A giant stops after this many frames or when `duration` has passed since it started,
    /// whichever comes first. Must be > 0 when there are giants.
    unsigned giant_frames = 5000;
    /// Share in [0, 1] of the steady sessions that are orphans instead: each drops its TCP
    /// connection (a FIN, no close frame) after a uniformly random number of frames in
    /// [1, frames - 1], then reads until the server closes.
    double orphan_share = 0.0;
    unsigned long_sessions = 0;                       ///< Long sessions, started over the ramp.
    std::chrono::milliseconds long_duration{3600000}; ///< Audio per long session.
    double long_speed = 100.0;                        ///< Long sessions' pace (times real time), > 0.
    /// Slow readers, started over the ramp: after the start ack they do not read until they have
    /// sent their last frame and `end` (or a write failed); then they read to the close.
    unsigned slow_sessions = 0;
};

/// One class's (or the whole run's) accounting.
struct class_result {
    std::uint64_t sessions = 0;  ///< Started (a connection attempted).
    std::uint64_t admitted = 0;  ///< Got the start ack.
    std::uint64_t completed = 0; ///< Ended with an end ack and close 1000.
    /// Not admitted, by the close code received (-1: no close frame: a connection error).
    std::map<int, std::uint64_t> refused;
    std::map<int, std::uint64_t> close_codes; ///< Close code seen per session (-1: none/error).
    /// Sessions by "<code> <reason>" of their close ("-1" when none).
    std::map<std::string, std::uint64_t> close_reasons;
    std::uint64_t sent_frames = 0;
    std::uint64_t delivered_frames = 0;
    std::map<std::string, std::uint64_t> losses; ///< As `result::losses`.

    /// sent == delivered + Σ losses.
    [[nodiscard]] bool balanced() const noexcept {
        std::uint64_t l = 0;
        for (const auto& [k, v] : losses) l += v;
        return sent_frames == delivered_frames + l;
    }
};

/// What happened.
struct result {
    std::uint64_t sessions = 0;
    std::uint64_t sessions_completed = 0;     ///< Ended with an end ack and close 1000.
    std::map<int, std::uint64_t> close_codes; ///< Close code seen per session (-1: none/error).
    std::uint64_t sent_frames = 0;
    std::uint64_t sent_bytes = 0;
    std::uint64_t delivered_frames = 0; ///< Read back byte-exact.
    std::uint64_t delivered_bytes = 0;
    /// Frames sent and not delivered, by reason: "refused_<reason>" (the gateway refused the
    /// frame and said so in a `refused` notice: refused_over_quota, refused_heavy,
    /// refused_paced), "close_<code>" (the session was closed by the gateway with that code),
    /// "gap" (Kafka's byte offsets skip them: dropped in the gateway), "corrupt" (bytes
    /// differ), "refused_unnoticed" (a gap the end ack's `refused_frames` accounts for but no
    /// notice named: notices suppressed for a client that did not read), "orphan_dropped" (an
    /// orphan's frame not read back), "missing" (not read back within drain_timeout),
    /// "no_readback" (no brokers).
    std::map<std::string, std::uint64_t> losses;
    std::uint64_t refusal_notices = 0; ///< `refused` notices received.
    /// Sessions whose end ack's `refused_frames` differs from the frames their notices named
    /// (0 unless the gateway refused something silently, or suppressed notices).
    std::uint64_t refusal_mismatches = 0;
    /// Kafka messages out of per-session order (arrived after a later one), or unreadable.
    std::uint64_t order_violations = 0;
    /// Kafka messages never read back: skipped `seq` numbers (lost in the gateway, or deleted
    /// by the cluster before they were read: see `consumer_errors`; not reordering). Their
    /// frames are counted as lost above.
    std::uint64_t missing_messages = 0;
    std::uint64_t duplicate_messages = 0;
    std::map<std::string, std::uint64_t> consumer_errors;   ///< Read-back errors by librdkafka name.
    std::uint64_t kafka_messages = 0;                       ///< Messages of this run read back.
    double p50_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0; ///< Send → read back.
    double seconds = 0;
    std::vector<std::string> errors; ///< Connection errors (first few).
    std::uint64_t seed = 0;          ///< The seed used.
    /// Per session class, for the classes the run had.
    std::map<std::string, class_result> classes;

    /// sent == delivered + Σ losses, for the run and for every class; the classes add up to
    /// the run.
    [[nodiscard]] bool balanced() const noexcept {
        std::uint64_t l = 0;
        for (const auto& [k, v] : losses) l += v;
        if (sent_frames != delivered_frames + l) return false;
        std::uint64_t sent = 0, delivered = 0;
        for (const auto& [k, c] : classes) {
            if (!c.balanced()) return false;
            sent += c.sent_frames;
            delivered += c.delivered_frames;
        }
        return classes.empty() || (sent == sent_frames && delivered == delivered_frames);
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
    bool connected = false; ///< The WebSocket handshake succeeded.
    int close_code = -1;    ///< The server's close code (-1: none).
    std::string close_reason;
    std::vector<std::string> texts; ///< Text messages received.
    std::string error;              ///< What failed, if anything.
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
