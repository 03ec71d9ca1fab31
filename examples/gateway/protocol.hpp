// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The gateway's wire protocol on ws://HOST:PORT/v1/stream (docs/gateway-protocol.md).
///
/// Client → server: one text message `{"type":"start","session_id":"...","sample_rate":16000,
/// "codec":"pcm16","priority":5}`, then binary audio frames, then `{"type":"end"}`.
/// Server → client: JSON acks (`{"type":"ack","of":"start",...}`, `{"type":"ack","of":"end",...}`),
/// refusal notices for audio frames its session budget refused (`{"type":"refused",...}`) and
/// a close frame whose code says why the stream ended (see `close_code`).
/// This header has no Beast and no Kafka in it: it is parsed and tested on its own.

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace gateway {

/// WebSocket close codes the gateway sends (RFC 6455 §7.4 and the 4000-4999 private range).
namespace close_code {
inline constexpr std::uint16_t normal = 1000;          ///< After an `end`, acked.
inline constexpr std::uint16_t going_away = 1001;      ///< The gateway shuts down.
inline constexpr std::uint16_t invalid_payload = 1007; ///< A text message that is not UTF-8.
inline constexpr std::uint16_t policy = 1008;          ///< Malformed or out-of-order control message.
inline constexpr std::uint16_t too_big = 1009;         ///< A message above `max_message_bytes`.
inline constexpr std::uint16_t internal_error = 1011;  ///< The gateway failed (out of memory...).
inline constexpr std::uint16_t try_again_later = 1013; ///< Refused at admission (memory pressure).
inline constexpr std::uint16_t evicted = 4001;         ///< Evicted by memgov; reason = evict_reason.
} // namespace close_code

/// What a `start` message carries.
struct start_message {
    std::string session_id; ///< 1..128 characters of [A-Za-z0-9._:-]; the Kafka key.
    int sample_rate = 0;    ///< One of 8000, 16000, 24000, 32000, 44100, 48000.
    std::string codec;      ///< "pcm16" (16-bit little-endian PCM) or "opus".
    int priority = 5;       ///< 0..9, optional (default 5). Reported; not yet used for policy.
};

/// A control message: a start or an end.
struct control_message {
    enum class kind : std::uint8_t { start, end };
    kind type = kind::end;
    start_message start{}; ///< Set when `type == start`.
};

/// Why a text message was not a valid control message (the close reason, ≤ 120 bytes).
struct protocol_error {
    std::string reason;
};

/// Parses one text message. Never throws (a bad message is a `protocol_error`, except
/// `std::bad_alloc`).
[[nodiscard]] std::variant<control_message, protocol_error> parse_control(std::string_view text);

/// `{"type":"ack","of":"start","session_id":...,"chunk_ms":...,"max_message_bytes":...}`.
[[nodiscard]] std::string ack_start(const start_message& s, unsigned chunk_ms, std::size_t max_message_bytes);
/// `{"type":"ack","of":"end","session_id":...,"frames":...,"bytes":...,"dropped_bytes":...,
/// "refused_frames":...,"refused_bytes":...}`: frames and bytes admitted, bytes the window cap
/// dropped, frames and bytes refused (the sum of the session's `refused` notices).
[[nodiscard]] std::string ack_end(std::string_view session_id, std::uint64_t frames, std::uint64_t bytes,
                                  std::uint64_t dropped_bytes, std::uint64_t refused_frames = 0,
                                  std::uint64_t refused_bytes = 0);

/// A run of consecutive audio frames refused for one reason: frames `first_frame` ..
/// `first_frame + frames - 1` (numbered from 0 in the order the session sent its binary
/// frames), `bytes` in all, `reason` an `admit_reason` name (`over_quota`, `heavy`, `paced`).
/// `{"type":"refused","session_id":...,"first_frame":...,"frames":...,"bytes":...,"reason":...}`.
[[nodiscard]] std::string refused_notice(std::string_view session_id, std::uint64_t first_frame, std::uint64_t frames,
                                         std::uint64_t bytes, std::string_view reason);

/// A close reason fits a control frame (125 bytes minus the 2-byte code): cut to 123 bytes at a
/// UTF-8 boundary.
[[nodiscard]] std::string close_reason(std::string_view reason);

} // namespace gateway
