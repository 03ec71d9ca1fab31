// SPDX-License-Identifier: MIT
// The reference gateway end to end, in one process, on loopback: the gateway on ephemeral
// ports with librdkafka's mock cluster, driven by the load generator and by scripted probes.
// Links librdkafka: never part of the TSan ("concurrency") run.
#include "fake_cgroup.hpp"
#include "gateway.hpp"
#include "loadgen.hpp"
#include "promtool.hpp"
#include "protocol.hpp"
#include "track.hpp"

#include <catch2/catch.hpp>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <initializer_list>
#include <iostream>
#include <map>
#include <netinet/in.h>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
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
    CHECK(s.budget_charged_bytes ==
          s.budget_released_window_bytes + s.budget_released_not_appended_bytes + s.kafka.budget_released_bytes);
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

// A test that cannot run here says so on a line ctest reports as skipped (never passed).
void skip_test(const std::string& why) { std::cout << "MEMGOV_SKIP: " << why << std::endl; }

struct command_result {
    int status = -1; // exit status; -1: did not run or was killed
    std::string output;
};

// Runs `cmd` with sh, collecting stdout (binary-safe).
command_result run_command(const std::string& cmd) {
    command_result r;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) return r;
    char buf[65536];
    for (;;) {
        const std::size_t n = std::fread(buf, 1, sizeof buf, p);
        if (n == 0) break;
        r.output.append(buf, n);
    }
    const int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

// One Kafka message as kcat prints it.
struct kafka_record {
    std::string key;
    std::map<std::string, std::uint64_t> headers; // seq, offset, end
    std::string payload;
};

// Reads the whole topic once with kcat (a consumer nobody here wrote): one format line per
// message, "key<TAB>headers<TAB>payload length<LF>" followed by the raw payload. Messages of
// one key come out in their partition's order.
std::vector<kafka_record> kcat_read_once(const std::string& bootstrap, const std::string& topic) {
    const auto r = run_command("timeout 30 kcat -C -q -e -o beginning -b '" + bootstrap + "' -t '" + topic +
                               "' -f '%k\t%h\t%S\n%s' 2>/dev/null");
    INFO("kcat: " << r.output.substr(0, 500));
    REQUIRE(r.status == 0);
    std::vector<kafka_record> out;
    std::size_t i = 0;
    const std::string& o = r.output;
    while (i < o.size()) {
        const std::size_t t1 = o.find('\t', i), t2 = o.find('\t', t1 + 1), nl = o.find('\n', t2 + 1);
        REQUIRE(nl != std::string::npos);
        kafka_record rec;
        rec.key = o.substr(i, t1 - i);
        std::stringstream hs{o.substr(t1 + 1, t2 - t1 - 1)};
        for (std::string kv; std::getline(hs, kv, ',');) {
            const std::size_t eq = kv.find('=');
            REQUIRE(eq != std::string::npos);
            rec.headers[kv.substr(0, eq)] = std::stoull(kv.substr(eq + 1));
        }
        const std::size_t n = std::stoull(o.substr(t2 + 1, nl - t2 - 1));
        REQUIRE(nl + 1 + n <= o.size());
        rec.payload = o.substr(nl + 1, n);
        i = nl + 1 + n;
        out.push_back(std::move(rec));
    }
    return out;
}

// kcat_read_once until it returns at least `expected` messages (what the gateway saw
// acknowledged), at most 5 times: kcat 1.7's `-e` can see a partition's end before it fetched.
// With `exact`, Kafka must hold exactly those; without, it may hold more (under faults a message
// the broker stored but never acknowledged is counted lost: the count errs on the safe side).
std::vector<kafka_record> kcat_read(const std::string& bootstrap, const std::string& topic, std::uint64_t expected,
                                    bool exact = true) {
    std::vector<kafka_record> r;
    for (int attempt = 0; attempt < 5; ++attempt) {
        r = kcat_read_once(bootstrap, topic);
        if (r.size() >= expected) break;
    }
    if (exact) {
        CHECK(r.size() == expected);
    } else {
        CHECK(r.size() >= expected);
    }
    return r;
}

// A session's stream as Kafka holds it: the payloads of its messages concatenated, after
// checking that they follow each other (seq 0, 1, ...; each `offset` is the previous `end`).
// Returns false (after failing a check) if they do not.
bool session_stream(const std::vector<kafka_record>& all, const std::string& key, std::string& out) {
    std::uint64_t seq = 0, offset = 0;
    for (const auto& r : all) {
        if (r.key != key) continue;
        INFO(key << " message " << seq);
        REQUIRE((r.headers.count("seq") == 1 && r.headers.count("offset") == 1 && r.headers.count("end") == 1));
        if (r.headers.at("seq") != seq || r.headers.at("offset") != offset ||
            r.headers.at("end") != offset + r.payload.size()) {
            CHECK(r.headers.at("seq") == seq);
            CHECK(r.headers.at("offset") == offset);
            CHECK(r.headers.at("end") == offset + r.payload.size());
            return false;
        }
        ++seq;
        offset += r.payload.size();
        out += r.payload;
    }
    return true;
}

// Whether the messages of `key` that Kafka holds are in the session's order, gaps allowed (lost
// messages): seq and offset strictly increase, and no message overlaps the one before.
// Returns how many messages it saw (0 after a failed check).
std::size_t in_order_with_gaps(const std::vector<kafka_record>& all, const std::string& key) {
    std::size_t n = 0;
    std::uint64_t next_seq = 0, next_offset = 0;
    for (const auto& r : all) {
        if (r.key != key) continue;
        INFO(key << " message " << n);
        const std::uint64_t seq = r.headers.at("seq"), offset = r.headers.at("offset");
        if (seq < next_seq || offset < next_offset) {
            CHECK(seq >= next_seq);
            CHECK(offset >= next_offset);
            return 0;
        }
        next_seq = seq + 1;
        next_offset = offset + r.payload.size();
        ++n;
    }
    return n;
}

// Frame `index` of the python client's session `id` (tests/gateway/ws_client.py, frame_bytes).
std::string python_frame(const std::string& id, std::size_t index, std::size_t size) {
    char num[16];
    std::snprintf(num, sizeof num, "%06zu", index);
    std::string f = id + ":" + num + ":";
    for (std::size_t k = 0; f.size() < size; ++k) f += static_cast<char>('a' + (index + k) % 26);
    f.resize(size);
    return f;
}

// The load generator's frames of one session, checked byte for byte against its pattern
// (track.hpp: magic, session index, sequence number, send time, then a pattern); the send
// time is the only field not known in advance. Returns the frames that match, in order.
std::size_t loadgen_frames_in_order(const std::string& stream, std::size_t frame_bytes) {
    std::size_t good = 0;
    std::uint32_t index = 0;
    for (std::size_t k = 0; (k + 1) * frame_bytes <= stream.size(); ++k) {
        const char* f = stream.data() + k * frame_bytes;
        if (std::memcmp(f, "MGLG", 4) != 0) return good;
        std::uint64_t seq = 0, send_ns = 0;
        std::uint32_t ix = 0;
        std::memcpy(&ix, f + 4, 4);
        std::memcpy(&seq, f + 8, 8);
        std::memcpy(&send_ns, f + 16, 8);
        if (k == 0) index = ix;
        if (ix != index || seq != k) return good;
        std::string want(frame_bytes, '\0');
        loadgen::detail::fill_frame(std::as_writable_bytes(std::span{want.data(), want.size()}), index, seq, send_ns);
        if (std::memcmp(want.data(), f, frame_bytes) != 0) return good;
        ++good;
    }
    return good;
}

// A WebSocket client written against the socket API, for what no library client does: it
// opens a session and then goes silent (never reads, never answers a ping, never closes),
// as a peer behind a dead NAT or a crashed host looks to the server. -1 on failure.
int silent_client(std::uint16_t port, const std::string& start, std::size_t frame_bytes) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const std::string upgrade = "GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "Sec-WebSocket-Version: 13\r\n\r\n";
    std::string response;
    char buf[512];
    bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0 &&
              ::send(fd, upgrade.data(), upgrade.size(), 0) == static_cast<ssize_t>(upgrade.size());
    while (ok && response.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        ok = n > 0;
        if (ok) response.append(buf, static_cast<std::size_t>(n));
    }
    ok = ok && response.rfind("HTTP/1.1 101", 0) == 0;
    // Client frames are masked; a zero mask leaves the payload as it is.
    const auto frame = [](unsigned opcode, const std::string& payload) {
        std::string f{static_cast<char>(0x80U | opcode)};
        if (payload.size() < 126) {
            f += static_cast<char>(0x80U | payload.size());
        } else {
            f += static_cast<char>(0x80U | 126U);
            f += static_cast<char>((payload.size() >> 8U) & 0xFFU);
            f += static_cast<char>(payload.size() & 0xFFU);
        }
        return f + std::string(4, '\0') + payload;
    };
    const std::string out = frame(1, start) + frame(2, std::string(frame_bytes, '\x02'));
    ok = ok && ::send(fd, out.data(), out.size(), 0) == static_cast<ssize_t>(out.size());
    if (!ok) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// Polls `pred` every 50 ms for up to `timeout`; whether it became true.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(50ms);
    }
    return true;
}

} // namespace

TEST_CASE("gateway protocol: control messages parse or name what is wrong", "[gateway]") {
    using gateway::control_message;
    using gateway::protocol_error;
    const auto ok = gateway::parse_control(
        R"({"type":"start","session_id":"a-1","sample_rate":16000,"codec":"pcm16","priority":7})");
    REQUIRE(std::holds_alternative<control_message>(ok));
    CHECK(std::get<control_message>(ok).start.session_id == "a-1");
    CHECK(std::get<control_message>(ok).start.priority == 7);
    CHECK(std::get<control_message>(gateway::parse_control(R"({"type":"end"})")).type == control_message::kind::end);
    const auto reason = [](std::string_view t) {
        const auto r = gateway::parse_control(t);
        return std::holds_alternative<protocol_error>(r) ? std::get<protocol_error>(r).reason : std::string{};
    };
    CHECK(reason("{") == "malformed JSON control message");
    CHECK(reason("[]") == "control message must be a JSON object");
    CHECK(reason(R"({"type":"pause"})") == R"(unknown control message type "pause")");
    CHECK(reason(R"({"type":"start","sample_rate":16000,"codec":"pcm16"})").find("session_id") != std::string::npos);
    CHECK(reason(R"({"type":"start","session_id":"a b","sample_rate":16000,"codec":"pcm16"})").find("session_id") !=
          std::string::npos);
    CHECK(reason(R"({"type":"start","session_id":"a","sample_rate":12345,"codec":"pcm16"})").find("sample_rate") !=
          std::string::npos);
    CHECK(reason(R"({"type":"start","session_id":"a","sample_rate":16000,"codec":"mp3"})").find("codec") !=
          std::string::npos);
    CHECK(reason(R"({"type":"start","session_id":"a","sample_rate":16000,"codec":"pcm16","priority":10})")
              .find("priority") != std::string::npos);
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
    lc.prefix = "e2e";
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

    // The same frames as kcat reads them: every session's messages in order, every frame
    // byte-exact against the load generator's pattern.
    const auto records = kcat_read(srv.bootstrap(), srv.topic(), srv.stats().kafka.delivered_messages);
    for (unsigned i = 0; i < 20; ++i) {
        const std::string key = "e2e-" + std::to_string(i);
        INFO(key);
        std::string stream;
        CHECK(session_stream(records, key, stream));
        CHECK(stream.size() == 100 * 640);
        CHECK(loadgen_frames_in_order(stream, 640) == 100);
    }
    // /metrics after real traffic is valid Prometheus text.
    const auto metrics = loadgen::http_get("127.0.0.1", srv.http_port(), "/metrics");
    REQUIRE(metrics.status == 200);
    const auto pc = memgov_test::check_metrics_text(metrics.body);
    INFO(pc.output);
    CHECK(pc.exit_code == 0);

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
        CHECK(r.close_reason == "text message is not valid UTF-8");

        r = probe(srv, {text(start_json("b2")), binary(5000)}); // above max_message_bytes
        CHECK(r.close_code == 1009);
        CHECK(r.close_reason == "message over max_message_bytes (4096 bytes)");
        // A connection the WebSocket layer closed is not an orphan: its session goes at once.
        CHECK(eventually(
            [&] {
                return loadgen::http_get("127.0.0.1", srv.http_port(), "/metrics")
                           .body.find("gateway_sessions_active 0") != std::string::npos;
            },
            2000ms));
        CHECK(srv.stats().orphaned_sessions == 0);
        r = probe(srv, {text(std::string(4097, ' '))}); // a text message, before start
        CHECK(r.close_code == 1009);
        CHECK(r.close_reason == "message over max_message_bytes (4096 bytes)");

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

TEST_CASE("gateway: a session evicted by memgov is closed with 4001 and the reason, its audio still produced",
          "[gateway]") {
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
    CHECK(r.close_code == 1000);         // the client is not blocked by Kafka
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

TEST_CASE("gateway: a session streaming past its quota is refused over_quota frame by frame, a normal one delivers "
          "everything",
          "[gateway][budget]") {
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

TEST_CASE("gateway: a window at its cap drops the oldest bytes, releases them from the budget and counts them",
          "[gateway][budget]") {
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

namespace {

// The value of one sample (its name and labels as /metrics writes them) in a /metrics body;
// -1 when it is not there.
double metric_value(const std::string& body, const std::string& series) {
    const std::string line = "\n" + series + " ";
    const std::size_t at = body.find(line);
    return at == std::string::npos ? -1.0 : std::stod(body.substr(at + line.size()));
}

// The samples of a /metrics body whose names start with one of `prefixes` (a failure's context).
std::string metric_lines(const std::string& body, std::initializer_list<std::string_view> prefixes) {
    std::string out;
    std::istringstream in{body};
    for (std::string l; std::getline(in, l);) {
        for (const std::string_view p : prefixes) {
            if (l.rfind(p, 0) == 0) {
                out += l + "\n";
                break;
            }
        }
    }
    return out;
}

// What the fair-share scenario below saw.
struct over_share_run {
    std::uint64_t burst = 0;                // bytes the heavy session sent within one chunk period
    double share = 0, quota = 0, heavy = 0; // its budget's figures at `high`, from /metrics
    std::string metrics;                    // /metrics once its first period was over
    std::string context;                    // its level, share and shed lines
    std::vector<loadgen::probe_result> clients;
    gateway::gateway_stats stats; // after shutdown
};

// Memory at `high`, where the gateway's fair share applies, and twelve live sessions: eleven
// idle, one that sends a burst above its share (and below the heavy mark, so no frame of it is
// refused) within one chunk period. The level comes from a fake cgroup tree whose usage the test
// sets: a real one moves with everything else on the machine. The share is half the admission
// ceiling split between the live sessions (0.5 × 0.95 × 16 MiB / 12 = 664,098 B), under the quota
// at `high` (0.75 × 2 MiB); the burst is 720,000 B, under the heavy mark (half the quota).
over_share_run run_over_share(bool governor_on) {
    constexpr std::uint64_t limit = 16 * memgov_test::fake_mib;
    auto tree = memgov_test::fake_cgroup_tree::v2("/gateway");
    tree.set_limit("/gateway", limit);
    // 80%: high, entered at 78% (7 points under the 85% red line).
    tree.set_usage("/gateway", limit / 100 * 80);
    std::vector<std::future<loadgen::probe_result>> clients; // outlive the server: it closes them
    auto cfg = test_config();
    cfg.governor_on = governor_on;
    cfg.cgroup_root = tree.root();
    cfg.memory_limit = limit;           // as the tree says; MEMGOV_MEMORY_LIMIT cannot move it
    cfg.chunk_period = 1000ms;          // the burst lands within the heavy session's first period
    cfg.window_chunk_bytes = 65536;     // a pool class: the window's buffers hold only audio
    cfg.window_cap_bytes = 1024 * 1024; // above the burst: the cap drops nothing
    gateway::server srv{cfg};
    srv.start();
    const auto metrics = [&] { return loadgen::http_get("127.0.0.1", srv.http_port(), "/metrics").body; };
    const std::string high = R"(memgov_pressure_level{level="high"})";
    REQUIRE(eventually([&] { return metric_value(metrics(), high) == 1.0; }, 3000ms));
    // Held at 75%, above high's exit (74%), the level stays high, and the window the burst
    // fills (tracked, so it shows in the estimate at once) stays clear of critical (85%), where
    // the evictor would take the largest session.
    tree.set_usage("/gateway", limit / 100 * 75);
    REQUIRE(eventually([&] { return metric_value(metrics(), "memgov_usage_ratio") < 0.77; }, 3000ms));

    for (int i = 0; i < 11; ++i) {
        clients.push_back(std::async(std::launch::async, [&srv, i] {
            return probe(srv, {text(start_json("share-idle-" + std::to_string(i)))}, 15000ms);
        }));
    }
    REQUIRE(eventually([&] { return srv.stats().sessions_started == 11; }, 5000ms));
    over_share_run out;
    std::vector<loadgen::probe_message> msgs{text(start_json("share-heavy"))};
    for (int i = 0; i < 90; ++i) msgs.push_back(binary(8000));
    out.burst = 90 * 8000;
    clients.push_back(std::async(std::launch::async, [&srv, msgs] { return probe(srv, msgs, 15000ms); }));
    REQUIRE(eventually([&] { return metric_value(metrics(), "memgov_session_budgets") == 12.0; }, 5000ms));
    // Its first tick either sheds (governed) or produces (off).
    REQUIRE(eventually(
        [&] {
            const auto st = srv.stats();
            return st.shed_periods > 0 || st.kafka.produced_bytes > 0;
        },
        5000ms));
    out.metrics = metrics();
    out.share = metric_value(out.metrics, "memgov_session_share_bytes");
    out.quota = metric_value(out.metrics, "memgov_session_quota_bytes");
    out.heavy = metric_value(out.metrics, "memgov_session_heavy_bytes");
    out.context = metric_lines(out.metrics, {"memgov_pressure_level", "memgov_usage_ratio", "memgov_session_",
                                             "gateway_shed_", "gateway_lost_"});
    INFO(out.context);
    CHECK(metric_value(out.metrics, high) == 1.0);
    out.stats = srv.shutdown();
    for (auto& c : clients) out.clients.push_back(c.get());
    return out;
}

// The figures every run of the scenario must show, governed or not.
void check_over_share_run(const over_share_run& r) {
    INFO(r.context);
    // The input is what the case says: a share that applies (below the quota), a burst above
    // it and at most the heavy mark.
    CHECK(r.share > 0.0);
    CHECK(r.share < r.quota);
    CHECK(r.share < static_cast<double>(r.burst));
    CHECK(static_cast<double>(r.burst) <= r.heavy);
    const auto& s = r.stats;
    CHECK(s.sessions_started == 12);
    CHECK(s.received_bytes == r.burst);
    CHECK(s.refused_work.empty());
    CHECK(s.evicted_sessions == 0);
    REQUIRE(r.clients.size() == 12);
    for (const auto& c : r.clients) {
        INFO(c.error);
        CHECK(c.close_code == 1001); // open until the shutdown, never evicted
    }
    check_gateway_identities(s);
}

} // namespace

TEST_CASE("gateway: a session over its fair share sheds its oldest audio at a tick as shed_over_share",
          "[gateway][budget]") {
    const over_share_run r = run_over_share(true);
    check_over_share_run(r);
    const auto& s = r.stats;
    INFO(r.context);
    CHECK(s.shed_periods == 1); // the next period finds it under its share: produced
    REQUIRE(s.kafka.losses.count("shed_over_share") == 1);
    const auto shed = s.kafka.losses.at("shed_over_share");
    // Shed down to three quarters of the share, the rest produced.
    CHECK(shed.bytes == r.burst - static_cast<std::uint64_t>(r.share) / 4 * 3);
    CHECK(shed.messages == s.shed_periods);
    CHECK(s.kafka.losses.size() == 1);
    CHECK(s.kafka.delivered_bytes + shed.bytes == r.burst);
    CHECK(s.budget_released_window_bytes == shed.bytes);
    CHECK(metric_value(r.metrics, "gateway_shed_periods_total") == 1.0);
    CHECK(metric_value(r.metrics, R"(gateway_lost_bytes_total{reason="shed_over_share"})") ==
          static_cast<double>(shed.bytes));
}

TEST_CASE("gateway: with --governor=off a session over its fair share sheds nothing", "[gateway][budget]") {
    const over_share_run r = run_over_share(false);
    check_over_share_run(r);
    const auto& s = r.stats;
    INFO(r.context);
    CHECK(s.shed_periods == 0);
    CHECK(s.kafka.losses.empty());
    CHECK(s.kafka.delivered_bytes == r.burst);
    CHECK(metric_value(r.metrics, "gateway_shed_periods_total") == 0.0);
}

TEST_CASE("gateway: 5 sessions from an independent python client are read back by kcat byte-exact "
          "and in order",
          "[gateway][e2e]") {
    const std::string python = "/usr/bin/python3";
    if (run_command(python + " -c 'import websockets' 2>&1").status != 0) {
        return skip_test("python3-websockets is not installed for /usr/bin/python3 (scripts/packages.txt)");
    }
    gateway::server srv{test_config()};
    srv.start();
    const std::string url = "ws://127.0.0.1:" + std::to_string(srv.port()) + "/v1/stream";
    const auto client =
        run_command("timeout 60 " + python + " " MEMGOV_GATEWAY_TEST_DIR "/ws_client.py " + url + " py 5 100 640");
    INFO(client.output);
    REQUIRE(client.status == 0); // every session acked and closed 1000
    std::size_t sessions = 0;
    std::istringstream lines{client.output};
    for (std::string line; std::getline(lines, line);) {
        const auto j = nlohmann::json::parse(line);
        CHECK(j.at("close_code") == 1000);
        const auto& acks = j.at("acks");
        REQUIRE(acks.size() == 2);
        CHECK(acks[0].at("of") == "start");
        CHECK(acks[1].at("of") == "end");
        CHECK(acks[1].at("frames") == 100);
        CHECK(acks[1].at("bytes") == 100 * 640);
        ++sessions;
    }
    CHECK(sessions == 5);
    // Everything is acknowledged by Kafka before kcat reads it.
    CHECK(eventually([&] { return srv.stats().kafka.delivered_bytes == 5 * 100 * 640; }, 10000ms));
    const auto records = kcat_read(srv.bootstrap(), srv.topic(), srv.stats().kafka.delivered_messages);
    for (int i = 0; i < 5; ++i) {
        const std::string key = "py-" + std::to_string(i);
        INFO(key);
        std::string stream;
        CHECK(session_stream(records, key, stream));
        std::string want;
        for (std::size_t f = 0; f < 100; ++f) want += python_frame(key, f, 640);
        CHECK(stream.size() == want.size());
        CHECK(stream == want);
    }
    const gateway::gateway_stats s = srv.shutdown();
    CHECK(s.sessions_ended == 5);
    CHECK(s.kafka.losses.empty());
    CHECK(s.kafka.delivered_bytes == 5 * 100 * 640);
    check_gateway_identities(s);
}

TEST_CASE("gateway: one 200 ms chunk of 16 kHz audio is one Kafka message", "[gateway]") {
    std::vector<loadgen::probe_message> msgs{text(start_json("chunk"))};
    for (int i = 0; i < 10; ++i) msgs.push_back(binary(640)); // 10 x 20 ms = 6,400 B
    msgs.push_back(text(R"({"type":"end"})"));
    SECTION("chunks sized from chunk_ms and the sample rate (the default)") {
        gateway::server srv{test_config()};
        srv.start();
        CHECK(probe(srv, msgs).close_code == 1000);
        const auto s = srv.shutdown();
        CHECK(s.kafka.produced_messages == 1);
        CHECK(s.kafka.delivered_bytes == 6400);
    }
    SECTION("a fixed 4 KiB chunk splits it in two") {
        auto cfg = test_config();
        cfg.window_chunk_bytes = 4096;
        gateway::server srv{cfg};
        srv.start();
        CHECK(probe(srv, msgs).close_code == 1000);
        const auto s = srv.shutdown();
        CHECK(s.kafka.produced_messages == 2); // 4,096 + 2,304
        CHECK(s.kafka.delivered_bytes == 6400);
    }
}

TEST_CASE("gateway: a TCP drop without a WebSocket close leaves an orphan that the sweep removes", "[gateway]") {
    auto cfg = test_config();
    cfg.orphan_check_interval = 200ms;
    gateway::server srv{cfg};
    srv.start();
    // The probe's watchdog shuts the socket down after 800 ms: no close frame is ever sent.
    const auto r = probe(srv, {text(start_json("orphan")), binary(640)}, 800ms);
    CHECK(r.connected);
    CHECK(r.close_code == -1);
    const auto removed = [&] {
        return loadgen::http_get("127.0.0.1", srv.http_port(), "/metrics")
                   .body.find(R"(gateway_session_removals_total{reason="orphan"} 1)") != std::string::npos;
    };
    CHECK(eventually(removed, 5000ms));
    const std::string metrics = loadgen::http_get("127.0.0.1", srv.http_port(), "/metrics").body;
    CHECK(metrics.find(R"(gateway_session_removals_total{reason="erased"} 0)") != std::string::npos);
    CHECK(metrics.find("gateway_sessions_orphaned_total 1") != std::string::npos);
    CHECK(metrics.find("gateway_sessions_active 0") != std::string::npos);
    const auto s = srv.shutdown();
    CHECK(s.orphaned_sessions == 1);
    CHECK(s.evicted_sessions == 0);        // nobody to send a 4001 to
    CHECK(s.kafka.delivered_bytes == 640); // its window still went to Kafka
    CHECK(s.kafka.losses.empty());
    check_gateway_identities(s);
}

TEST_CASE("gateway: mock brokers down for 2 s: frames wait and are delivered in order, delivery resumes",
          "[gateway][faults]") {
    auto cfg = test_config();
    cfg.faults.broker_down_at = 500ms;
    cfg.faults.broker_down_for = 2000ms; // well under message.timeout.ms (30 s): retried
    gateway::server srv{cfg};
    srv.start();
    loadgen::config lc;
    lc.port = srv.port();
    lc.brokers = srv.bootstrap();
    lc.sessions = 4;
    lc.frames = 150; // 3 s of real-time audio, across the outage
    lc.ramp = 100ms;
    lc.drain_timeout = 20s;
    lc.progress = false;
    lc.prefix = "outage";
    // The brokers go down while the consumer may still be finding its start position.
    lc.from_beginning = true;
    const auto t0 = std::chrono::steady_clock::now(); // the faults count from start(): ~t0
    auto run = std::async(std::launch::async, [&] { return loadgen::run(lc); });
    // While the brokers are down nothing is acknowledged.
    std::this_thread::sleep_until(t0 + 1000ms);
    const std::uint64_t during0 = srv.stats().kafka.delivered_messages;
    std::this_thread::sleep_until(t0 + 2200ms);
    const auto during = srv.stats();
    CHECK(during.mock_broker_outages == 1);
    CHECK(during.kafka.delivered_messages == during0);
    const loadgen::result r = run.get();
    INFO(loadgen::summary_table(r));
    CHECK(r.sent_frames == 600);
    CHECK(r.balanced());
    // Everything arrives, in order, byte-exact: as the load generator reads it (from the
    // partitions' beginning) and as kcat reads it.
    CHECK(r.delivered_frames == 600);
    CHECK(r.order_violations == 0);
    CHECK(r.missing_messages == 0);
    CHECK(eventually([&] { return srv.stats().kafka.delivered_bytes == 600 * 640; }, 15000ms));
    const auto records = kcat_read(srv.bootstrap(), srv.topic(), srv.stats().kafka.delivered_messages,
                                   /*exact=*/false);
    for (int i = 0; i < 4; ++i) {
        const std::string key = "outage-" + std::to_string(i);
        INFO(key);
        std::string stream;
        CHECK(session_stream(records, key, stream));
        CHECK(loadgen_frames_in_order(stream, 640) == 150);
    }
    // After the outage a new session is delivered at once.
    lc.sessions = 1;
    lc.frames = 20;
    lc.prefix = "after";
    const loadgen::result after = loadgen::run(lc);
    CHECK(after.delivered_frames == 20);
    const auto s = srv.shutdown();
    CHECK(s.kafka.losses.empty());
    CHECK(s.kafka.delivered_bytes == 620 * 640);
    check_gateway_identities(s);
}

TEST_CASE("gateway: mock brokers down past message.timeout.ms: lost chunks are counted by reason, "
          "delivery resumes",
          "[gateway][faults]") {
    auto cfg = test_config();
    cfg.kafka.message_timeout_ms = 1000;
    cfg.faults.broker_down_at = 300ms;
    cfg.faults.broker_down_for = 2500ms;
    gateway::server srv{cfg};
    srv.start();
    loadgen::config lc;
    lc.port = srv.port();
    lc.brokers = srv.bootstrap();
    lc.sessions = 2;
    lc.frames = 175; // 3.5 s: the outage falls inside
    lc.ramp = 100ms;
    lc.drain_timeout = 10s;
    lc.progress = false;
    lc.prefix = "timeout";
    lc.from_beginning = true;
    const loadgen::result r = loadgen::run(lc);
    INFO(loadgen::summary_table(r));
    CHECK(r.sent_frames == 350);
    CHECK(r.balanced()); // sent = delivered + counted losses
    CHECK(r.delivered_frames < 350);
    // Lost messages are skipped seq numbers, told apart from reordering: none is out of order.
    CHECK(r.order_violations == 0);
    CHECK(r.duplicate_messages == 0);
    // Once the brokers are back, a new session is delivered whole. (How much of the sessions
    // above still makes it depends on how long the producer takes to recover its idempotent
    // state: their frames within 1 s of the outage's end may time out too, and are counted.)
    lc.sessions = 1;
    lc.frames = 20;
    lc.prefix = "resumed";
    CHECK(loadgen::run(lc).delivered_frames == 20);
    // kcat agrees: what was delivered is in order, lost messages are gaps.
    const auto records = kcat_read(srv.bootstrap(), srv.topic(), srv.stats().kafka.delivered_messages,
                                   /*exact=*/false);
    for (const char* key : {"timeout-0", "timeout-1"}) (void)in_order_with_gaps(records, key);
    std::string resumed;
    CHECK(session_stream(records, "resumed-0", resumed));
    CHECK(loadgen_frames_in_order(resumed, 640) == 20);
    const auto s = srv.shutdown();
    REQUIRE(s.kafka.losses.count("delivery:_MSG_TIMED_OUT") == 1);
    const auto lost = s.kafka.losses.at("delivery:_MSG_TIMED_OUT").bytes;
    CHECK(lost > 0);
    CHECK(s.kafka.delivered_bytes + lost == 370 * 640);
    check_gateway_identities(s);
}

TEST_CASE("gateway: injected produce errors are retried, or counted by reason when not retriable",
          "[gateway][faults]") {
    auto cfg = test_config();
    loadgen::config lc;
    lc.sessions = 2;
    lc.frames = 50;
    lc.ramp = 100ms;
    lc.drain_timeout = 15s;
    lc.progress = false;
    SECTION("retriable (NOT_ENOUGH_REPLICAS): every frame is delivered, in order") {
        cfg.faults.produce_errors = 3;
        cfg.faults.produce_error = RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS;
        gateway::server srv{cfg};
        srv.start();
        lc.port = srv.port();
        lc.brokers = srv.bootstrap();
        lc.prefix = "retriable";
        const loadgen::result r = loadgen::run(lc);
        INFO(loadgen::summary_table(r));
        CHECK(r.delivered_frames == 100);
        CHECK(r.order_violations == 0);
        CHECK(r.duplicate_messages == 0);
        const auto s = srv.shutdown();
        CHECK(s.mock_produce_errors == 3);
        CHECK(s.kafka.losses.empty());
        check_gateway_identities(s);
    }
    SECTION("non-retriable (INVALID_RECORD): the failed messages are counted, the rest delivered") {
        cfg.faults.produce_errors = 2;
        cfg.faults.produce_error = RD_KAFKA_RESP_ERR_INVALID_RECORD;
        gateway::server srv{cfg};
        srv.start();
        lc.port = srv.port();
        lc.brokers = srv.bootstrap();
        lc.prefix = "fatal";
        const loadgen::result r = loadgen::run(lc);
        INFO(loadgen::summary_table(r));
        CHECK(r.balanced());
        CHECK(r.delivered_frames < 100);
        // Once the injected errors are used up, delivery resumes.
        lc.sessions = 1;
        lc.frames = 20;
        lc.prefix = "fatal-after";
        CHECK(loadgen::run(lc).delivered_frames == 20);
        const auto records = kcat_read(srv.bootstrap(), srv.topic(), srv.stats().kafka.delivered_messages,
                                       /*exact=*/false);
        for (const char* key : {"fatal-0", "fatal-1"}) (void)in_order_with_gaps(records, key);
        const std::string metrics = loadgen::http_get("127.0.0.1", srv.http_port(), "/metrics").body;
        const auto pc = memgov_test::check_metrics_text(metrics); // loss labels are valid too
        INFO(pc.output);
        CHECK(pc.exit_code == 0);
        CHECK(metrics.find("gateway_mock_produce_errors_total 2") != std::string::npos);
        CHECK(metrics.find(R"(gateway_lost_bytes_total{reason="delivery:INVALID_RECORD"})") != std::string::npos);
        const auto s = srv.shutdown();
        std::uint64_t lost = 0;
        for (const auto& [reason, n] : s.kafka.losses) {
            INFO(reason);
            CHECK(reason == "delivery:INVALID_RECORD");
            lost += n.bytes;
        }
        CHECK(lost > 0);
        CHECK(s.kafka.delivered_bytes + lost == 120 * 640);
        check_gateway_identities(s);
    }
}

TEST_CASE("gateway: a silent half-open peer is timed out and its session left as an orphan the "
          "sweep removes",
          "[gateway]") {
    auto cfg = test_config();
    cfg.idle_timeout = 1000ms; // Beast pings at 500 ms and gives up at 1 s without a reply
    cfg.orphan_check_interval = 200ms;
    gateway::server srv{cfg};
    srv.start();
    const int fd = silent_client(srv.port(), start_json("silent"), 640);
    REQUIRE(fd >= 0);
    const auto removed = [&] {
        return loadgen::http_get("127.0.0.1", srv.http_port(), "/metrics")
                   .body.find(R"(gateway_session_removals_total{reason="orphan"} 1)") != std::string::npos;
    };
    CHECK(eventually(removed, 5000ms));
    ::close(fd); // only now: the peer never closed its side
    const auto s = srv.shutdown();
    CHECK(s.sessions_started == 1);
    CHECK(s.orphaned_sessions == 1);
    CHECK(s.evicted_sessions == 0);
    CHECK(s.kafka.delivered_bytes == 640); // its window still went to Kafka
    CHECK(s.kafka.losses.empty());
    check_gateway_identities(s);
}

namespace {

// Every class balances on its own (sent = delivered + losses by reason), the classes add up to
// the run, and every session of a class was either admitted or refused with a close code.
void check_class_identities(const loadgen::result& r) {
    std::uint64_t sessions = 0, sent = 0, delivered = 0;
    for (const auto& [name, c] : r.classes) {
        INFO(name);
        std::uint64_t lost = 0, refused = 0, closes = 0;
        for (const auto& [reason, n] : c.losses) lost += n;
        for (const auto& [code, n] : c.refused) refused += n;
        for (const auto& [code, n] : c.close_codes) closes += n;
        CHECK(c.sent_frames == c.delivered_frames + lost);
        CHECK(c.admitted + refused == c.sessions);
        CHECK(closes == c.sessions);
        sessions += c.sessions;
        sent += c.sent_frames;
        delivered += c.delivered_frames;
    }
    CHECK(sessions == r.sessions);
    CHECK(sent == r.sent_frames);
    CHECK(delivered == r.delivered_frames);
    CHECK(r.balanced());
}

loadgen::config abuse_config(const gateway::server& srv, std::string prefix) {
    loadgen::config lc;
    lc.port = srv.port();
    lc.brokers = srv.bootstrap();
    lc.from_beginning = true;
    lc.ramp = 100ms;
    lc.drain_timeout = 15s;
    lc.progress = false;
    lc.seed = 17;
    lc.prefix = std::move(prefix);
    return lc;
}

} // namespace

TEST_CASE("loadgen: a burst and giants against the gateway balance exactly, class by class", "[gateway][abuse]") {
    gateway::server srv{test_config()};
    srv.start();
    auto lc = abuse_config(srv, "abuse");
    lc.sessions = 3;
    lc.frames = 50;
    lc.burst_sessions = 8;
    lc.burst_at = 200ms;
    lc.giant_sessions = 2;
    lc.giant_frames = 400;
    lc.duration = 3000ms; // bounds the giants; they reach their 400 frames long before
    const loadgen::result r = loadgen::run(lc);
    INFO(loadgen::summary_table(r));
    check_class_identities(r);
    REQUIRE(r.classes.size() == 3);
    const auto& steady = r.classes.at("steady");
    const auto& burst = r.classes.at("burst");
    const auto& giant = r.classes.at("giant");
    CHECK(steady.sessions == 3);
    CHECK(burst.sessions == 8);
    CHECK(giant.sessions == 2);
    // No memory pressure here: everyone is admitted and ends with `end`; the paced classes
    // deliver everything.
    CHECK(burst.admitted == 8);
    CHECK(burst.completed == 8);
    CHECK(burst.close_reasons.at("1000 end") == 8);
    CHECK(steady.delivered_frames == 150);
    CHECK(burst.sent_frames == 400);
    CHECK(burst.delivered_frames == 400);
    CHECK(giant.sent_frames == 800);
    CHECK(giant.completed == 2);
    // What a giant lost, the gateway dropped and counted (its window's cap): never a reorder.
    for (const auto& [reason, n] : giant.losses) {
        INFO(reason);
        CHECK((reason == "gap" || reason.rfind("refused_", 0) == 0));
    }
    CHECK(r.order_violations == 0);
    CHECK(r.duplicate_messages == 0);
    CHECK(r.errors.empty());
    const auto s = srv.shutdown();
    CHECK(s.sessions_started == 13);
    CHECK(s.received_frames == r.sent_frames);
    check_gateway_identities(s);
}

TEST_CASE("loadgen: orphans drop TCP without a close and the gateway's orphan check removes them", "[gateway][abuse]") {
    auto cfg = test_config();
    cfg.orphan_check_interval = 200ms;
    gateway::server srv{cfg};
    srv.start();
    auto lc = abuse_config(srv, "orphans");
    lc.sessions = 6;
    lc.frames = 50;
    lc.orphan_share = 0.5;
    const loadgen::result r = loadgen::run(lc);
    INFO(loadgen::summary_table(r));
    check_class_identities(r);
    REQUIRE(r.classes.size() == 2);
    const auto& orphan = r.classes.at("orphan");
    const auto& steady = r.classes.at("steady");
    CHECK(orphan.sessions == 3);
    CHECK(orphan.admitted == 3);
    CHECK(orphan.completed == 0);
    CHECK(orphan.close_codes.at(-1) == 3); // no close frame either way
    CHECK(orphan.sent_frames >= 3);        // each drops after 1 to 49 of its 50 frames
    CHECK(orphan.sent_frames < 150);
    CHECK(steady.completed == 3);
    CHECK(steady.delivered_frames == 150);
    // The gateway keeps each orphan's session until its orphan check, which produces what the
    // window held: every frame an orphan sent is delivered.
    CHECK(orphan.delivered_frames == orphan.sent_frames);
    CHECK(r.errors.empty());
    const auto removed = [&] {
        return loadgen::http_get("127.0.0.1", srv.http_port(), "/metrics")
                   .body.find(R"(gateway_session_removals_total{reason="orphan"} 3)") != std::string::npos;
    };
    CHECK(eventually(removed, 5000ms));
    const auto s = srv.shutdown();
    CHECK(s.orphaned_sessions == 3);
    CHECK(s.evicted_sessions == 0);
    CHECK(s.sessions_started == 6);
    CHECK(s.received_frames == r.sent_frames);
    CHECK(s.kafka.losses.empty());
    check_gateway_identities(s);
}

TEST_CASE("loadgen: long sessions at an accelerated pace and slow readers balance class by class", "[gateway][abuse]") {
    gateway::server srv{test_config()};
    srv.start();
    auto lc = abuse_config(srv, "longslow");
    lc.sessions = 1;
    lc.frames = 50;
    lc.long_sessions = 1;
    lc.long_duration = 30s; // 1,500 frames at 20x: 1.5 s
    lc.long_speed = 20.0;
    lc.slow_sessions = 2;
    const loadgen::result r = loadgen::run(lc);
    INFO(loadgen::summary_table(r));
    check_class_identities(r);
    REQUIRE(r.classes.size() == 3);
    const auto& lng = r.classes.at("long");
    const auto& slow = r.classes.at("slow");
    CHECK(lng.sent_frames == 1500);
    CHECK(lng.completed == 1);
    CHECK(slow.sessions == 2);
    CHECK(slow.sent_frames == 100);
    // A slow reader reads its acks once it has sent everything: it still ends with `end`.
    CHECK(slow.completed == 2);
    CHECK(r.order_violations == 0);
    CHECK(r.errors.empty());
    const auto s = srv.shutdown();
    CHECK(s.sessions_started == 4);
    CHECK(s.received_frames == r.sent_frames);
    check_gateway_identities(s);
}
