// SPDX-License-Identifier: MIT
// The reference gateway end to end, in one process, on loopback: the gateway on ephemeral
// ports with librdkafka's mock cluster, driven by the load generator and by scripted probes.
// Links librdkafka: never part of the TSan ("concurrency") run.
#include "gateway.hpp"
#include "loadgen.hpp"
#include "protocol.hpp"

#include <catch2/catch.hpp>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <variant>

namespace {

using namespace std::chrono_literals;

gateway::gateway_config test_config() {
    gateway::gateway_config c;
    c.port = 0;
    c.http_port = 0;
    c.quiet = true;
    c.shutdown_grace = 2000ms;
    c.flush_timeout = 5000ms;
    return c;
}

std::string start_json(const std::string& id) {
    return R"({"type":"start","session_id":")" + id + R"(","sample_rate":16000,"codec":"pcm16"})";
}

loadgen::probe_message text(std::string s) { return {true, std::move(s)}; }
loadgen::probe_message binary(std::size_t n) { return {false, std::string(n, '\x01')}; }

// After shutdown every byte the gateway read is delivered or counted lost by reason, and every
// byte charged to a session budget was released exactly once.
void check_gateway_identities(const gateway::gateway_stats& s) {
    std::uint64_t lost = 0;
    for (const auto& [reason, n] : s.kafka.losses) {
        INFO(reason << ": " << n.bytes);
        lost += n.bytes;
    }
    CHECK(s.received_bytes == s.kafka.delivered_bytes + lost);
    CHECK(s.budget_charged_bytes == s.budget_released_window_bytes + s.budget_released_not_appended_bytes +
                                        s.kafka.budget_released_bytes);
    for (const auto& [reason, n] : s.refused_work) {
        INFO(reason);
        REQUIRE(s.kafka.losses.count("refused_work:" + reason) == 1);
        CHECK(s.kafka.losses.at("refused_work:" + reason).bytes == n.bytes);
        CHECK(s.kafka.losses.at("refused_work:" + reason).messages == n.messages);
    }
}

loadgen::probe_result probe(const gateway::server& srv, std::vector<loadgen::probe_message> msgs,
                            std::chrono::milliseconds timeout = 5000ms) {
    return loadgen::probe("127.0.0.1", srv.port(), "/v1/stream", msgs, timeout);
}

} // namespace

TEST_CASE("gateway protocol: control messages parse or name what is wrong", "[gateway]") {
    using gateway::control_message;
    using gateway::protocol_error;
    const auto ok = gateway::parse_control(R"({"type":"start","session_id":"a-1","sample_rate":16000,"codec":"pcm16","priority":7})");
    REQUIRE(std::holds_alternative<control_message>(ok));
    CHECK(std::get<control_message>(ok).start.session_id == "a-1");
    CHECK(std::get<control_message>(ok).start.priority == 7);
    CHECK(std::get<control_message>(gateway::parse_control(R"({"type":"end"})")).type ==
          control_message::kind::end);
    const auto reason = [](std::string_view t) {
        const auto r = gateway::parse_control(t);
        return std::holds_alternative<protocol_error>(r) ? std::get<protocol_error>(r).reason : std::string{};
    };
    CHECK(reason("{") == "malformed JSON control message");
    CHECK(reason("[]") == "control message must be a JSON object");
    CHECK(reason(R"({"type":"pause"})") == R"(unknown control message type "pause")");
    CHECK(reason(R"({"type":"start","sample_rate":16000,"codec":"pcm16"})").find("session_id") != std::string::npos);
    CHECK(reason(R"({"type":"start","session_id":"a b","sample_rate":16000,"codec":"pcm16"})").find("session_id") != std::string::npos);
    CHECK(reason(R"({"type":"start","session_id":"a","sample_rate":12345,"codec":"pcm16"})").find("sample_rate") != std::string::npos);
    CHECK(reason(R"({"type":"start","session_id":"a","sample_rate":16000,"codec":"mp3"})").find("codec") != std::string::npos);
    CHECK(reason(R"({"type":"start","session_id":"a","sample_rate":16000,"codec":"pcm16","priority":10})").find("priority") != std::string::npos);
    CHECK(gateway::close_reason(std::string(300, 'x')).size() == 123);
    CHECK(gateway::close_reason(std::string(122, 'x') + "\xC3\xA9").size() == 122); // not mid-character
}

TEST_CASE("gateway: 20 sessions x 100 frames are read back from Kafka byte-exact and in order", "[gateway][e2e]") {
    gateway::server srv{test_config()};
    srv.start();
    REQUIRE(srv.mock_kafka());
    loadgen::config lc;
    lc.port = srv.port();
    lc.brokers = srv.bootstrap();
    lc.sessions = 20;
    lc.frames = 100;
    lc.ramp = 200ms;
    lc.drain_timeout = 20s;
    lc.progress = false;
    const loadgen::result r = loadgen::run(lc);
    INFO(loadgen::summary_table(r));
    CHECK(r.sent_frames == 2000);
    CHECK(r.delivered_frames == 2000);
    CHECK(r.losses.empty());
    CHECK(r.balanced());
    CHECK(r.order_violations == 0);
    CHECK(r.duplicate_messages == 0);
    CHECK(r.sessions_completed == 20);
    CHECK(r.close_codes.at(1000) == 20);
    const gateway::gateway_stats s = srv.shutdown();
    CHECK(s.sessions_started == 20);
    CHECK(s.sessions_ended == 20);
    CHECK(s.frames == 2000);
    CHECK(s.kafka.losses.empty());
    CHECK(s.kafka.delivered_bytes == 2000 * 640);
    CHECK(s.purged_at_shutdown == 0);
    CHECK(s.refused_work.empty());
    check_gateway_identities(s);
}

TEST_CASE("gateway: bad input gets its close code and the server keeps serving", "[gateway]") {
    auto cfg = test_config();
    cfg.max_message_bytes = 4096;
    gateway::server srv{cfg};
    srv.start();

    SECTION("each bad input") {
        auto r = probe(srv, {binary(640)});
        CHECK(r.close_code == 1008);
        CHECK(r.close_reason == "audio frame before start");

        r = probe(srv, {text(start_json("b1")), text(start_json("b1"))});
        CHECK(r.close_code == 1008);
        CHECK(r.close_reason == "second start on one connection");

        r = probe(srv, {text(R"({"type":"rewind"})")});
        CHECK(r.close_code == 1008);
        CHECK(r.close_reason == R"(unknown control message type "rewind")");

        r = probe(srv, {text("{not json")});
        CHECK(r.close_code == 1008);
        CHECK(r.close_reason == "malformed JSON control message");

        r = probe(srv, {text(R"({"type":"end"})")});
        CHECK(r.close_code == 1008);
        CHECK(r.close_reason == "end before start");

        r = probe(srv, {text(std::string{"{\"type\":\"\xC3\x28\"}"})}); // invalid UTF-8
        CHECK(r.close_code == 1007);

        r = probe(srv, {text(start_json("b2")), binary(5000)}); // above max_message_bytes
        CHECK(r.close_code == 1009);

        r = loadgen::probe("127.0.0.1", srv.port(), "/v2/other", {text(start_json("b3"))});
        CHECK_FALSE(r.connected); // 404 at the handshake

        // A session id in use on another connection is refused; the first one is untouched.
        std::promise<loadgen::probe_result> first;
        std::thread t{[&] { first.set_value(probe(srv, {text(start_json("dup")), binary(640)}, 1500ms)); }};
        std::this_thread::sleep_for(300ms);
        r = probe(srv, {text(start_json("dup"))});
        CHECK(r.close_code == 1008);
        CHECK(r.close_reason == "session_id already in use");
        t.join();
    }

    // ...and a well-behaved session still works afterwards.
    auto ok = probe(srv, {text(start_json("good")), binary(640), binary(640), text(R"({"type":"end"})")});
    CHECK(ok.close_code == 1000);
    REQUIRE(ok.texts.size() == 2);
    CHECK(ok.texts[1].find(R"("frames":2)") != std::string::npos);
    const auto st = srv.stats();
    CHECK(st.frames >= 2);
    const auto h = loadgen::http_get("127.0.0.1", srv.http_port(), "/healthz");
    CHECK(h.status == 200);
}

TEST_CASE("gateway: a forced critical level refuses new sessions with 1013 and /readyz is 503", "[gateway]") {
    auto cfg = test_config();
    cfg.memory_limit = std::uint64_t{1} << 20; // far below what the process uses: critical or worse
    gateway::server srv{cfg};
    srv.start();
    const auto health = loadgen::http_get("127.0.0.1", srv.http_port(), "/debug/health");
    INFO(health.body);
    CHECK((health.body.find(R"("level": "critical")") != std::string::npos ||
           health.body.find(R"("level": "emergency")") != std::string::npos));
    CHECK(health.body.find(R"("limit_source": "configuration")") != std::string::npos);

    const auto r = probe(srv, {text(start_json("p1"))});
    CHECK(r.connected);
    CHECK(r.close_code == 1013);
    CHECK(r.close_reason.rfind("admission refused: ", 0) == 0);

    const auto ready = loadgen::http_get("127.0.0.1", srv.http_port(), "/readyz");
    CHECK(ready.status == 503);
    CHECK(loadgen::http_get("127.0.0.1", srv.http_port(), "/healthz").status == 200);
    const auto metrics = loadgen::http_get("127.0.0.1", srv.http_port(), "/metrics");
    CHECK(metrics.status == 200);
    CHECK(metrics.body.find(R"(gateway_closes_total{code="1013"} 1)") != std::string::npos);
    CHECK(metrics.body.find("memgov_rejections_total{kind=\"session\"") != std::string::npos);
    CHECK(srv.stats().refused_sessions == 1);
}

TEST_CASE("gateway: with --governor=off the same limit only counts, and sessions are admitted", "[gateway]") {
    auto cfg = test_config();
    cfg.memory_limit = std::uint64_t{1} << 20;
    cfg.governor_on = false;
    gateway::server srv{cfg};
    srv.start();
    const auto r = probe(srv, {text(start_json("off1")), binary(640), text(R"({"type":"end"})")});
    CHECK(r.close_code == 1000);
    CHECK(loadgen::http_get("127.0.0.1", srv.http_port(), "/readyz").status == 200);
    const auto metrics = loadgen::http_get("127.0.0.1", srv.http_port(), "/metrics").body;
    CHECK(metrics.find("memgov_dry_run_rejections_total{kind=\"session\",reason=") != std::string::npos);
}

TEST_CASE("gateway: a session evicted by memgov is closed with 4001 and the reason, its audio still produced", "[gateway]") {
    auto cfg = test_config();
    cfg.session_max_age = 1s; // the session map's absolute TTL: the sweep evicts it
    gateway::server srv{cfg};
    srv.start();
    const auto r = probe(srv, {text(start_json("old")), binary(640), binary(640)}, 10000ms);
    CHECK(r.close_code == 4001);
    CHECK(r.close_reason == "expired_absolute");
    const auto s = srv.shutdown();
    CHECK(s.evicted_sessions == 1);
    CHECK(s.kafka.delivered_bytes == 1280); // what its window held went to Kafka at eviction
    CHECK(s.kafka.losses.empty());
    check_gateway_identities(s);
}

TEST_CASE("gateway: shutdown closes open streams with 1001 and flushes their windows", "[gateway]") {
    gateway::server srv{test_config()};
    srv.start();
    auto fut = std::async(std::launch::async, [&] {
        return probe(srv, {text(start_json("s1")), binary(640)}, 10000ms);
    });
    std::this_thread::sleep_for(500ms);
    const auto s = srv.shutdown();
    const auto r = fut.get();
    CHECK(r.close_code == 1001);
    CHECK(s.closes_sent[1] == 1); // 1001
    CHECK(s.kafka.delivered_bytes == 640);
    CHECK(s.kafka.losses.empty());
    check_gateway_identities(s);
}

TEST_CASE("gateway: a Kafka outage loses nothing uncounted: each undelivered chunk is counted by reason", "[gateway]") {
    auto cfg = test_config();
    cfg.kafka.message_timeout_ms = 1000;
    gateway::server srv{cfg};
    srv.start();
    auto* mc = static_cast<rd_kafka_mock_cluster_t*>(srv.mock_cluster());
    REQUIRE(mc != nullptr);
    for (int b = 1; b <= 3; ++b) (void)rd_kafka_mock_broker_set_down(mc, b);
    std::vector<loadgen::probe_message> msgs{text(start_json("outage"))};
    for (int i = 0; i < 5; ++i) msgs.push_back(binary(640));
    msgs.push_back(text(R"({"type":"end"})"));
    const auto r = probe(srv, msgs);
    CHECK(r.close_code == 1000); // the client is not blocked by Kafka
    std::this_thread::sleep_for(2500ms); // past message.timeout.ms
    const auto s = srv.shutdown();
    std::uint64_t lost = 0;
    for (const auto& [reason, n] : s.kafka.losses) {
        INFO(reason);
        CHECK(reason.rfind("delivery:", 0) == 0);
        lost += n.bytes;
    }
    CHECK(s.kafka.delivered_bytes + lost == 5 * 640);
    CHECK(lost > 0);
    CHECK(s.kafka.losses.count("delivery:_MSG_TIMED_OUT") == 1);
    check_gateway_identities(s); // failed delivery reports release the budget too
}

TEST_CASE("gateway: a session streaming past its quota is refused over_quota frame by frame, a normal one delivers everything", "[gateway][budget]") {
    auto cfg = test_config();
    // A real-time 16 kHz session holds 32 KiB/s × (chunk_ms + Kafka ack latency): ~7 KiB on an
    // idle machine, ~40 KiB with the 1 s acks seen on a loaded one. Its bytes in flight count.
    cfg.session_quota_bytes = 96 * 1024;
    cfg.memory_limit = std::uint64_t{1} << 36; // level normal whatever this machine does: only the quota bites
    gateway::server srv{cfg};
    srv.start();
    loadgen::config normal;
    normal.port = srv.port();
    normal.brokers = srv.bootstrap();
    normal.sessions = 2;
    normal.frames = 60; // 1.2 s of real-time audio
    normal.ramp = 100ms;
    normal.drain_timeout = 15s;
    normal.progress = false;
    normal.prefix = "budget-normal";
    loadgen::config fast = normal;
    fast.sessions = 1;
    fast.frames = 600;
    fast.speed = 40.0; // 640 B every 0.5 ms: its window alone passes 96 KiB 75 ms into a 200 ms chunk period
    fast.prefix = "budget-fast";
    auto fast_run = std::async(std::launch::async, [&] { return loadgen::run(fast); });
    const loadgen::result rn = loadgen::run(normal);
    const loadgen::result rf = fast_run.get();

    INFO(loadgen::summary_table(rn));
    INFO(loadgen::summary_table(rf));
    // The normal sessions: untouched.
    CHECK(rn.sent_frames == 120);
    CHECK(rn.delivered_frames == 120);
    CHECK(rn.losses.empty());
    CHECK(rn.balanced());
    CHECK(rn.close_codes.at(1000) == 2);
    // The fast session: refused over_quota, told so frame by frame, not closed; the rest delivered.
    CHECK(rf.sent_frames == 600);
    CHECK(rf.balanced());
    CHECK(rf.sessions_completed == 1);
    CHECK(rf.close_codes.at(1000) == 1);
    REQUIRE(rf.losses.count("refused_over_quota") == 1);
    const std::uint64_t refused = rf.losses.at("refused_over_quota");
    CHECK(refused > 0);
    CHECK(rf.delivered_frames > 0);
    CHECK(rf.delivered_frames + refused == rf.sent_frames); // no gap, corrupt or missing frame
    CHECK(rf.refusal_notices > 0);
    CHECK(rf.refusal_mismatches == 0);
    CHECK(rf.order_violations == 0);
    CHECK(rn.order_violations == 0);

    const std::string metrics = loadgen::http_get("127.0.0.1", srv.http_port(), "/metrics").body;
    CHECK(metrics.find("gateway_frames_refused_total{reason=\"over_quota\"} " + std::to_string(refused)) !=
          std::string::npos);
    CHECK(metrics.find("gateway_frames_refused_total{reason=\"heavy\"} 0") != std::string::npos);
    CHECK(metrics.find("gateway_frames_refused_total{reason=\"paced\"} 0") != std::string::npos);

    const gateway::gateway_stats s = srv.shutdown();
    CHECK(s.received_frames == 720);
    CHECK(s.frames + refused == 720);
    REQUIRE(s.refused_work.count("over_quota") == 1);
    CHECK(s.refused_work.at("over_quota").messages == refused);
    CHECK(s.refused_work.at("over_quota").bytes == refused * 640);
    CHECK(s.refused_work.size() == 1);
    CHECK(s.refusal_notices == rf.refusal_notices);
    CHECK(s.refusal_notices_suppressed == 0);
    CHECK(s.kafka.losses.size() == 1); // refused_work:over_quota only
    CHECK(s.kafka.delivered_bytes == (720 - refused) * 640);
    check_gateway_identities(s);
}

TEST_CASE("gateway: a window at its cap drops the oldest bytes, releases them from the budget and counts them", "[gateway][budget]") {
    auto cfg = test_config();
    cfg.window_cap_bytes = 4096;
    cfg.chunk_period = 5000ms; // nothing leaves the window before the end
    gateway::server srv{cfg};
    srv.start();
    std::vector<loadgen::probe_message> msgs{text(start_json("cap"))};
    for (int i = 0; i < 10; ++i) msgs.push_back(binary(1000));
    msgs.push_back(text(R"({"type":"end"})"));
    const auto r = probe(srv, msgs);
    CHECK(r.close_code == 1000);
    REQUIRE(r.texts.size() == 2);
    CHECK(r.texts[1].find(R"("frames":10)") != std::string::npos);
    CHECK(r.texts[1].find(R"("refused_frames":0)") != std::string::npos);
    const auto s = srv.shutdown();
    REQUIRE(s.kafka.losses.count("window_overflow") == 1);
    const std::uint64_t dropped = s.kafka.losses.at("window_overflow").bytes;
    CHECK(dropped >= 10000 - 4096);
    CHECK(r.texts[1].find("\"dropped_bytes\":" + std::to_string(dropped)) != std::string::npos);
    CHECK(s.budget_released_window_bytes == dropped);
    CHECK(s.kafka.delivered_bytes == 10000 - dropped);
    check_gateway_identities(s);
}
