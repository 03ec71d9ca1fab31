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
    const double pct =
        r.sent_frames == 0 ? 0.0 : 100.0 * static_cast<double>(r.delivered_frames) / static_cast<double>(r.sent_frames);
    std::string s;
    s += fmt::format("loadgen summary: {} sessions in {:.1f} s\n", r.sessions, r.seconds);
    s += fmt::format("  {:<18} {:>10} frames {:>12} bytes\n", "sent", r.sent_frames, r.sent_bytes);
    s += fmt::format("  {:<18} {:>10} frames {:>12} bytes  ({:.2f}%, byte-exact)\n", "delivered", r.delivered_frames,
                     r.delivered_bytes, pct);
    s += fmt::format("  {:<18} {:>10} frames {}\n", "lost", lost, reasons.empty() ? "" : " by reason:" + reasons);
    s += fmt::format("  {:<18} p50 {:.1f} ms  p99 {:.1f} ms  p999 {:.1f} ms  max {:.1f} ms (send to Kafka read-back)\n",
                     "latency", r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms);
    s += fmt::format("  {:<18} {} completed; close codes:{}\n", "sessions", r.sessions_completed, codes);
    s += fmt::format("  {:<18} {} messages read back, {} missing (seq numbers never read back), {} out of order, "
                     "{} duplicates\n",
                     "kafka", r.kafka_messages, r.missing_messages, r.order_violations, r.duplicate_messages);
    if (!r.consumer_errors.empty()) {
        std::string errs;
        for (const auto& [k, v] : r.consumer_errors) errs += fmt::format(" {}={}", k, v);
        s += fmt::format("  {:<18}{}\n", "consumer errors", errs);
    }
    if (r.refusal_notices > 0 || r.refusal_mismatches > 0) {
        s += fmt::format("  {:<18} {} notices; {} sessions whose end ack disagrees with them\n", "refusals",
                         r.refusal_notices, r.refusal_mismatches);
    }
    if (!r.classes.empty()) {
        s += fmt::format("  by session class:\n  {:<7} {:>8} {:>8} {:>8} {:>10} {:>10} {:>6}  {}\n", "class",
                         "sessions", "admitted", "refused", "sent", "delivered", "equal", "lost / refused / closes");
    }
    for (const auto& [name, c] : r.classes) {
        std::uint64_t refused = 0;
        for (const auto& [code, n] : c.refused) refused += n;
        s += fmt::format("  {:<7} {:>8} {:>8} {:>8} {:>10} {:>10} {:>6}\n", name, c.sessions, c.admitted, refused,
                         c.sent_frames, c.delivered_frames, c.balanced() ? "yes" : "NO");
        std::string class_lost;
        for (const auto& [k, v] : c.losses) class_lost += fmt::format(" {}={}", k, v);
        if (!class_lost.empty()) s += fmt::format("  {:<7} lost:{}\n", "", class_lost);
        std::string by_code;
        for (const auto& [code, n] : c.refused) by_code += fmt::format(" {}={}", code, n);
        if (!by_code.empty()) s += fmt::format("  {:<7} refused by close code:{}\n", "", by_code);
        std::string closes;
        for (const auto& [k, v] : c.close_reasons) closes += fmt::format(" [{}]={}", k, v);
        s += fmt::format("  {:<7} closes:{}\n", "", closes);
    }
    s += fmt::format("  {:<18} {}\n", "sent = delivered + lost", r.balanced() ? "yes" : "NO");
    for (const auto& e : r.errors) s += fmt::format("  error: {}\n", e);
    return s;
}

namespace {

// A map keyed by close code as a JSON object (JSON keys are strings).
template <class Map>
nlohmann::json by_code(const Map& m) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [code, n] : m) j[std::to_string(code)] = n;
    return j;
}

} // namespace

std::string summary_json(const result& r) {
    nlohmann::json j;
    j["sessions"] = r.sessions;
    j["sessions_completed"] = r.sessions_completed;
    j["close_codes"] = by_code(r.close_codes);
    j["sent_frames"] = r.sent_frames;
    j["sent_bytes"] = r.sent_bytes;
    j["delivered_frames"] = r.delivered_frames;
    j["delivered_bytes"] = r.delivered_bytes;
    j["losses"] = r.losses;
    j["order_violations"] = r.order_violations;
    j["consumer_errors"] = r.consumer_errors;
    j["missing_messages"] = r.missing_messages;
    j["duplicate_messages"] = r.duplicate_messages;
    j["kafka_messages"] = r.kafka_messages;
    j["latency_ms"] = {{"p50", r.p50_ms}, {"p99", r.p99_ms}, {"p999", r.p999_ms}, {"max", r.max_ms}};
    j["seconds"] = r.seconds;
    j["refusal_notices"] = r.refusal_notices;
    j["refusal_mismatches"] = r.refusal_mismatches;
    j["balanced"] = r.balanced();
    j["errors"] = r.errors;
    j["seed"] = r.seed;
    nlohmann::json classes = nlohmann::json::object();
    for (const auto& [name, c] : r.classes) {
        nlohmann::json k;
        k["sessions"] = c.sessions;
        k["admitted"] = c.admitted;
        k["completed"] = c.completed;
        k["refused"] = by_code(c.refused);
        k["close_codes"] = by_code(c.close_codes);
        k["close_reasons"] = c.close_reasons;
        k["sent_frames"] = c.sent_frames;
        k["delivered_frames"] = c.delivered_frames;
        k["losses"] = c.losses;
        k["balanced"] = c.balanced();
        classes[name] = k;
    }
    j["classes"] = classes;
    return j.dump(2) + "\n";
}

} // namespace loadgen
