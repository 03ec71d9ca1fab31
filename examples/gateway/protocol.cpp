// SPDX-License-Identifier: MIT
#include "protocol.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>

namespace gateway {
namespace {

bool valid_session_id(std::string_view id) {
    if (id.empty() || id.size() > 128) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
               c == ':' || c == '-';
    });
}

protocol_error fail(std::string reason) { return protocol_error{close_reason(reason)}; }

} // namespace

std::variant<control_message, protocol_error> parse_control(std::string_view text) {
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return fail("malformed JSON control message");
    if (!j.is_object()) return fail("control message must be a JSON object");
    const auto t = j.find("type");
    if (t == j.end() || !t->is_string()) return fail("control message without a string \"type\"");
    const auto& type = t->get_ref<const std::string&>();
    if (type == "end") return control_message{control_message::kind::end, {}};
    if (type != "start") return fail("unknown control message type \"" + type.substr(0, 40) + "\"");

    control_message m{control_message::kind::start, {}};
    const auto id = j.find("session_id");
    if (id == j.end() || !id->is_string()) return fail("start: session_id must be a string");
    m.start.session_id = id->get<std::string>();
    if (!valid_session_id(m.start.session_id)) {
        return fail("start: session_id must be 1..128 chars of [A-Za-z0-9._:-]");
    }
    const auto rate = j.find("sample_rate");
    if (rate == j.end() || !rate->is_number_integer()) return fail("start: sample_rate must be an integer");
    constexpr std::array<long long, 6> rates{8000, 16000, 24000, 32000, 44100, 48000};
    const auto r = rate->get<long long>();
    if (std::find(rates.begin(), rates.end(), r) == rates.end()) {
        return fail("start: sample_rate must be one of 8000,16000,24000,32000,44100,48000");
    }
    m.start.sample_rate = static_cast<int>(r);
    const auto codec = j.find("codec");
    if (codec == j.end() || !codec->is_string()) return fail("start: codec must be a string");
    m.start.codec = codec->get<std::string>();
    if (m.start.codec != "pcm16" && m.start.codec != "opus") {
        return fail("start: codec must be \"pcm16\" or \"opus\"");
    }
    if (const auto p = j.find("priority"); p != j.end()) {
        if (!p->is_number_integer() || p->get<long long>() < 0 || p->get<long long>() > 9) {
            return fail("start: priority must be an integer 0..9");
        }
        m.start.priority = static_cast<int>(p->get<long long>());
    }
    return m;
}

std::string ack_start(const start_message& s, unsigned chunk_ms, std::size_t max_message_bytes) {
    return nlohmann::json{{"type", "ack"},
                          {"of", "start"},
                          {"session_id", s.session_id},
                          {"chunk_ms", chunk_ms},
                          {"max_message_bytes", max_message_bytes}}
        .dump();
}

std::string ack_end(std::string_view session_id, std::uint64_t frames, std::uint64_t bytes, std::uint64_t dropped_bytes,
                    std::uint64_t refused_frames, std::uint64_t refused_bytes) {
    return nlohmann::json{{"type", "ack"},
                          {"of", "end"},
                          {"session_id", session_id},
                          {"frames", frames},
                          {"bytes", bytes},
                          {"dropped_bytes", dropped_bytes},
                          {"refused_frames", refused_frames},
                          {"refused_bytes", refused_bytes}}
        .dump();
}

std::string refused_notice(std::string_view session_id, std::uint64_t first_frame, std::uint64_t frames,
                           std::uint64_t bytes, std::string_view reason) {
    return nlohmann::json{{"type", "refused"}, {"session_id", session_id}, {"first_frame", first_frame},
                          {"frames", frames},  {"bytes", bytes},           {"reason", reason}}
        .dump();
}

std::string close_reason(std::string_view reason) {
    if (reason.size() <= 123) return std::string{reason};
    std::size_t n = 123;
    // Do not cut a UTF-8 sequence: back up over continuation bytes (10xxxxxx).
    while (n > 0 && (static_cast<unsigned char>(reason[n]) & 0xC0U) == 0x80U) --n;
    return std::string{reason.substr(0, n)};
}

} // namespace gateway
