// SPDX-License-Identifier: MIT
#pragma once
// What the senders and the read-back verifier share (internal to the load generator).

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "loadgen.hpp"

namespace loadgen::detail {

inline constexpr std::size_t header_bytes = 24; // magic, session index, seq, send time

// The expected byte at position `i` of frame `seq` of session `index` sent at `send_ns`.
inline void fill_frame(std::span<std::byte> out, std::uint32_t index, std::uint64_t seq,
                       std::uint64_t send_ns) noexcept {
    std::byte head[header_bytes];
    std::memcpy(head, "MGLG", 4);
    std::memcpy(head + 4, &index, 4);
    std::memcpy(head + 8, &seq, 8);
    std::memcpy(head + 16, &send_ns, 8);
    for (std::size_t i = 0; i < out.size(); ++i) {
        out[i] = i < header_bytes ? head[i] : static_cast<std::byte>((index * 131U + seq * 31U + i * 7U) & 0xFFU);
    }
}

struct session_track {
    session_track(std::string k, std::uint32_t i, std::size_t frames, std::size_t frame_bytes,
                  session_class c = session_class::steady)
        : key{std::move(k)}, index{i}, cls{c}, send_ns(frames), refused(frames, 0), good(frames, 0), bad(frames, false),
          gap(frames, false), fb{frame_bytes} {}

    std::string key;
    std::uint32_t index;
    session_class cls;
    // Written by the sender (before the frame goes out), read by the verifier.
    std::vector<std::atomic<std::uint64_t>> send_ns;
    std::atomic<std::uint64_t> sent{0}; // frames whose write completed
    std::atomic<bool> done{false};
    std::atomic<int> close_code{-1};
    std::atomic<bool> completed{false}; // end acked and closed 1000
    std::atomic<bool> admitted{false};  // the start ack came
    std::atomic<bool> dropped{false};   // an orphan that dropped its TCP connection
    std::mutex reason_mutex;
    std::string close_reason;

    // Sender only (read after the sender's threads are joined): frames the gateway refused,
    // by index into `refusal_reasons` + 1 (0: not refused), from its `refused` notices.
    std::vector<std::uint8_t> refused;
    std::vector<std::string> refusal_reasons;
    std::uint64_t refusal_notices = 0;
    std::int64_t acked_refused_frames = -1; // from the end ack; -1: no end ack

    // Verifier only.
    std::vector<std::uint16_t> good; // bytes verified per frame
    std::vector<bool> bad;
    std::vector<bool> gap;
    std::uint64_t next_offset = 0;
    std::uint64_t next_seq = 0;
    std::vector<bool> seen_seq; // messages read back, by seq: tells a duplicate from a late one
    std::size_t fb;
};

struct shared_state {
    std::vector<std::unique_ptr<session_track>> sessions;
    std::unordered_map<std::string, session_track*> by_key;
    std::size_t frame_bytes = 640;
    // Verifier outputs.
    std::atomic<std::uint64_t> delivered{0};
    std::atomic<std::uint64_t> kafka_messages{0};
    std::atomic<std::uint64_t> order_violations{0};
    std::atomic<std::uint64_t> missing_messages{0}; // seq numbers never read back (gateway or log)
    std::atomic<std::uint64_t> duplicates{0};
    // Errors the consumer was handed instead of a message (a fetch error, a partition reset),
    // by librdkafka's error name: a read-back that skipped data says why here.
    std::mutex consumer_errors_mutex;
    std::map<std::string, std::uint64_t> consumer_errors;
    std::mutex latency_mutex;
    std::vector<std::uint32_t> latency_us;
};

// The read-back: a Kafka consumer verifying every byte (verify.cpp).
class verifier {
public:
    /// Reads from each partition's end as it is at construction, or from its beginning.
    verifier(shared_state& st, const std::string& brokers, const std::string& topic, bool from_beginning);
    ~verifier();
    verifier(const verifier&) = delete;
    verifier& operator=(const verifier&) = delete;
    void stop();

private:
    struct impl;
    std::unique_ptr<impl> m;
};

std::uint64_t now_ns() noexcept;

} // namespace loadgen::detail
