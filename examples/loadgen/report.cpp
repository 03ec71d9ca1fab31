// SPDX-License-Identifier: MIT
// The load generator's summary table and JSON summary.
#include "loadgen.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace loadgen {

std::string summary_table(const result& r) {
    std::uint64_t lost = 0;
    std::string reasons;
    for (const auto& [k, v] : r.losses) {
        lost += v;
        reasons += fmt::format(" {}={}", k, v);
    }
    std::string codes;
    for (const auto& [k, v] : r.close_codes) codes += fmt::format(" {}={}", k, v);
    const double pct = r.sent_frames == 0 ? 0.0 : 100.0 * static_cast<double>(r.delivered_frames) /
                                                      static_cast<double>(r.sent_frames);
    std::string s;
    s += fmt::format("loadgen summary: {} sessions in {:.1f} s\n", r.sessions, r.seconds);
    s += fmt::format("  {:<18} {:>10} frames {:>12} bytes\n", "sent", r.sent_frames, r.sent_bytes);
    s += fmt::format("  {:<18} {:>10} frames {:>12} bytes  ({:.2f}%, byte-exact)\n", "delivered",
                     r.delivered_frames, r.delivered_bytes, pct);
    s += fmt::format("  {:<18} {:>10} frames {}\n", "lost", lost, reasons.empty() ? "" : " by reason:" + reasons);
    s += fmt::format("  {:<18} p50 {:.1f} ms  p99 {:.1f} ms  p999 {:.1f} ms  max {:.1f} ms (send to Kafka read-back)\n",
                     "latency", r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms);
    s += fmt::format("  {:<18} {} completed; close codes:{}\n", "sessions", r.sessions_completed, codes);
    s += fmt::format("  {:<18} {} messages read back, {} out of order, {} duplicates\n", "kafka",
                     r.kafka_messages, r.order_violations, r.duplicate_messages);
    if (r.refusal_notices > 0 || r.refusal_mismatches > 0) {
        s += fmt::format("  {:<18} {} notices; {} sessions whose end ack disagrees with them\n", "refusals",
                         r.refusal_notices, r.refusal_mismatches);
    }
    s += fmt::format("  {:<18} {}\n", "sent = delivered + lost", r.balanced() ? "yes" : "NO");
    for (const auto& e : r.errors) s += fmt::format("  error: {}\n", e);
    return s;
}

std::string summary_json(const result& r) {
    nlohmann::json j;
    j["sessions"] = r.sessions;
    j["sessions_completed"] = r.sessions_completed;
    nlohmann::json codes = nlohmann::json::object();
    for (const auto& [k, v] : r.close_codes) codes[std::to_string(k)] = v;
    j["close_codes"] = codes;
    j["sent_frames"] = r.sent_frames;
    j["sent_bytes"] = r.sent_bytes;
    j["delivered_frames"] = r.delivered_frames;
    j["delivered_bytes"] = r.delivered_bytes;
    j["losses"] = r.losses;
    j["order_violations"] = r.order_violations;
    j["duplicate_messages"] = r.duplicate_messages;
    j["kafka_messages"] = r.kafka_messages;
    j["latency_ms"] = {{"p50", r.p50_ms}, {"p99", r.p99_ms}, {"p999", r.p999_ms}, {"max", r.max_ms}};
    j["seconds"] = r.seconds;
    j["refusal_notices"] = r.refusal_notices;
    j["refusal_mismatches"] = r.refusal_mismatches;
    j["balanced"] = r.balanced();
    j["errors"] = r.errors;
    return j.dump(2) + "\n";
}

} // namespace loadgen
