// SPDX-License-Identifier: MIT
// The load generator's only Beast translation unit: the WebSocket sessions, the run loop and
// the probes used by tests.
#include <utility> // before asio: Boost 1.74 asio uses std::exchange without including it

#include "loadgen.hpp"
#include "track.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <condition_variable>
#include <optional>
#include <random>
#include <stop_token>
#include <thread>

namespace loadgen {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using detail::session_track;

struct run_state {
    run_state(const config& c, tcp::endpoint ep, std::size_t fb) : cfg{c}, endpoint{ep}, frame_bytes{fb} {}
    const config& cfg;
    tcp::endpoint endpoint;
    std::size_t frame_bytes;
    std::atomic<unsigned> active{0};
    std::mutex error_mutex;
    std::vector<std::string> errors;

    void error(std::string e) {
        std::lock_guard lock{error_mutex};
        if (errors.size() < 10) errors.push_back(std::move(e));
    }
};

// How one session behaves (from its class and the config).
struct session_plan {
    std::chrono::milliseconds delay{0};     // from the run's start to the connect
    std::chrono::nanoseconds interval{0};   // between two frames' sends; 0: unpaced (a giant)
    std::chrono::nanoseconds max_stream{0}; // unpaced: stop after this long; 0: no bound
    std::uint64_t drop_after = 0;           // an orphan drops its connection after this many frames
    bool orphan = false;
    bool slow = false; // no reads while streaming
};

class client : public std::enable_shared_from_this<client> {
public:
    client(net::io_context& ioc, run_state& rs, session_track& t, session_plan plan)
        : m_rs{rs}, m_t{t}, m_plan{plan}, m_ws{net::make_strand(ioc)}, m_timer{m_ws.get_executor()},
          m_frame(rs.frame_bytes) {}

    void start() {
        m_rs.active.fetch_add(1);
        m_timer.expires_after(m_plan.delay);
        m_timer.async_wait([self = shared_from_this()](beast::error_code) { self->connect(); });
    }

private:
    void connect() {
        if (m_plan.slow) {
            // A small receive buffer, so what the reader leaves unread backs up to the server
            // sooner instead of sitting in this side's kernel buffer.
            beast::error_code ec;
            auto& sock = beast::get_lowest_layer(m_ws).socket();
            sock.open(m_rs.endpoint.protocol(), ec);
            if (!ec) sock.set_option(net::socket_base::receive_buffer_size{4096}, ec);
            if (ec) return fail("socket", ec);
        }
        beast::get_lowest_layer(m_ws).expires_after(std::chrono::seconds{10});
        beast::get_lowest_layer(m_ws).async_connect(m_rs.endpoint, [self = shared_from_this()](beast::error_code ec) {
            if (ec) return self->fail("connect", ec);
            beast::get_lowest_layer(self->m_ws).expires_never();
            self->m_ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
            const std::string host = fmt::format("{}:{}", self->m_rs.cfg.host, self->m_rs.cfg.port);
            self->m_ws.async_handshake(host, self->m_rs.cfg.path, [self](beast::error_code e) {
                if (e) return self->fail("handshake", e);
                self->send_start();
            });
        });
    }

    void send_start() {
        m_text = fmt::format(R"({{"type":"start","session_id":"{}","sample_rate":{},"codec":"pcm16"}})", m_t.key,
                             m_rs.cfg.sample_rate);
        m_ws.text(true);
        m_ws.async_write(net::buffer(m_text), [self = shared_from_this()](beast::error_code ec, std::size_t) {
            if (ec) return self->fail("start", ec);
            self->read();
        });
    }

    void read() {
        if (m_reading) return;
        m_reading = true;
        m_ws.async_read(m_rbuf, [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(beast::error_code ec) {
        m_reading = false;
        if (ec) {
            if (m_t.dropped.load() && ec != websocket::error::closed) {
                finish(); // an orphan: the server gave the connection up after our FIN
            } else if (ec == websocket::error::closed) {
                const auto& r = m_ws.reason();
                m_t.close_code.store(static_cast<int>(r.code));
                std::lock_guard lock{m_t.reason_mutex};
                m_t.close_reason = std::string{r.reason.data(), r.reason.size()};
                if (r.code == websocket::close_code::normal && m_end_acked) m_t.completed.store(true);
                finish();
            } else {
                fail("read", ec);
            }
            return;
        }
        const std::string text = beast::buffers_to_string(m_rbuf.data());
        m_rbuf.consume(m_rbuf.size());
        if (text.find(R"("of":"start")") != std::string::npos && !m_started) {
            m_started = true;
            m_t.admitted.store(true);
            m_t0 = std::chrono::steady_clock::now();
            next_frame();
            // A slow reader reads again only once it has sent everything (see send_end).
            if (m_plan.slow) return;
        } else if (text.find(R"("type":"refused")") != std::string::npos) {
            on_refused(text);
        } else if (text.find(R"("of":"end")") != std::string::npos) {
            m_end_acked = true;
            const auto j = nlohmann::json::parse(text, nullptr, false);
            if (j.is_object() && j.contains("refused_frames") && j["refused_frames"].is_number_unsigned()) {
                m_t.acked_refused_frames = static_cast<std::int64_t>(j["refused_frames"].get<std::uint64_t>());
            }
        }
        read();
    }

    // {"type":"refused","first_frame":F,"frames":N,"bytes":B,"reason":R}: frames F..F+N-1 were
    // dropped by the gateway, counted under R.
    void on_refused(const std::string& text) {
        const auto j = nlohmann::json::parse(text, nullptr, false);
        if (!j.is_object() || !j.contains("first_frame") || !j.contains("frames") || !j.contains("reason") ||
            !j["first_frame"].is_number_unsigned() || !j["frames"].is_number_unsigned() || !j["reason"].is_string()) {
            m_rs.error(fmt::format("{} malformed refused notice: {}", m_t.key, text.substr(0, 200)));
            return;
        }
        ++m_t.refusal_notices;
        const std::string reason = j["reason"].get<std::string>();
        auto it = std::find(m_t.refusal_reasons.begin(), m_t.refusal_reasons.end(), reason);
        if (it == m_t.refusal_reasons.end() && m_t.refusal_reasons.size() < 255) {
            m_t.refusal_reasons.push_back(reason);
            it = m_t.refusal_reasons.end() - 1;
        }
        if (it == m_t.refusal_reasons.end()) return;
        const auto code = static_cast<std::uint8_t>(it - m_t.refusal_reasons.begin() + 1);
        const auto first = j["first_frame"].get<std::uint64_t>();
        const auto n = j["frames"].get<std::uint64_t>();
        for (std::uint64_t f = first; f < first + n && f < m_t.refused.size(); ++f) m_t.refused[f] = code;
    }

    void next_frame() {
        if (m_closed) return;
        if (m_plan.orphan && m_seq == m_plan.drop_after) return drop();
        const bool out_of_time =
            m_plan.max_stream.count() > 0 && std::chrono::steady_clock::now() - m_t0 >= m_plan.max_stream;
        if (m_seq == m_t.send_ns.size() || out_of_time) return send_end();
        if (m_plan.interval.count() == 0) return send_frame(); // a giant: no pacing
        m_timer.expires_at(m_t0 + m_plan.interval * static_cast<long>(m_seq));
        m_timer.async_wait([self = shared_from_this()](beast::error_code ec) {
            if (ec || self->m_closed) return;
            self->send_frame();
        });
    }

    void send_frame() {
        const std::uint64_t now = detail::now_ns();
        m_t.send_ns[m_seq].store(now, std::memory_order_release);
        detail::fill_frame(m_frame, m_t.index, m_seq, now);
        m_ws.binary(true);
        m_ws.async_write(net::buffer(m_frame), [self = shared_from_this()](beast::error_code e, std::size_t) {
            // The read side sees the close or the error; a slow reader must start
            // reading for it.
            if (e) return self->read();
            ++self->m_seq;
            self->m_t.sent.store(self->m_seq, std::memory_order_release);
            self->next_frame();
        });
    }

    void send_end() {
        m_text = R"({"type":"end"})";
        m_ws.text(true);
        m_ws.async_write(net::buffer(m_text), [self = shared_from_this()](beast::error_code, std::size_t) {
            self->read(); // a slow reader reads from here on; for the others a read is pending
        });
    }

    // An orphan: a FIN without a WebSocket close frame. The read still pending sees what the
    // server sent before, then the end of the stream when the server gives the connection up
    // (the socket is closed only then, so nothing unread makes the kernel reset it). Bounded:
    // after 30 s the socket is closed anyway.
    void drop() {
        m_t.dropped.store(true);
        beast::error_code ec;
        beast::get_lowest_layer(m_ws).socket().shutdown(tcp::socket::shutdown_send, ec);
        m_timer.expires_after(std::chrono::seconds{30});
        m_timer.async_wait([self = shared_from_this()](beast::error_code e) {
            if (e || self->m_closed) return;
            beast::error_code ignored;
            beast::get_lowest_layer(self->m_ws).socket().close(ignored);
        });
    }

    void fail(const char* what, beast::error_code ec) {
        m_rs.error(fmt::format("{} {}: {}", m_t.key, what, ec.message()));
        finish();
    }

    void finish() {
        if (m_closed) return;
        m_closed = true;
        m_timer.cancel();
        m_t.done.store(true);
        m_rs.active.fetch_sub(1);
    }

    run_state& m_rs;
    session_track& m_t;
    session_plan m_plan;
    websocket::stream<beast::tcp_stream> m_ws;
    net::steady_timer m_timer;
    beast::flat_buffer m_rbuf;
    std::vector<std::byte> m_frame;
    std::string m_text;
    std::chrono::steady_clock::time_point m_t0{};
    std::uint64_t m_seq = 0;
    bool m_started = false, m_end_acked = false, m_closed = false, m_reading = false;
};

double percentile(const std::vector<std::uint32_t>& sorted, double q) {
    if (sorted.empty()) return 0.0;
    const auto i = static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
    return static_cast<double>(sorted[std::min(i, sorted.size() - 1)]) / 1000.0;
}

// Sync Beast/asio operations ignore SO_RCVTIMEO (asio polls on EAGAIN), so a watchdog thread
// shuts the socket down at the deadline: the blocked read then returns at once.
class watchdog {
public:
    watchdog(tcp::socket& s, std::chrono::milliseconds t)
        : m_fd{s.native_handle()}, m_thread{[this, t](const std::stop_token& st) {
              std::unique_lock lock{m_mutex};
              (void)m_cv.wait_for(lock, st, t, [] { return false; });
              if (!st.stop_requested()) ::shutdown(m_fd, SHUT_RDWR);
          }} {}
    ~watchdog() {
        m_thread.request_stop();
        m_thread.join();
    }

private:
    int m_fd;
    std::mutex m_mutex;
    std::condition_variable_any m_cv;
    std::jthread m_thread;
};

} // namespace

result run(const config& cfg) {
    if (cfg.sessions == 0) throw std::invalid_argument{"loadgen: sessions must be > 0"};
    if (cfg.frame_ms == 0) throw std::invalid_argument{"loadgen: frame_ms must be > 0"};
    if (!(cfg.speed > 0.0)) throw std::invalid_argument{"loadgen: speed must be > 0"};
    if (cfg.giant_sessions > 0 && cfg.giant_frames == 0) {
        throw std::invalid_argument{"loadgen: giant_frames must be > 0"};
    }
    if (!(cfg.orphan_share >= 0.0 && cfg.orphan_share <= 1.0)) {
        throw std::invalid_argument{"loadgen: orphan_share must be in [0, 1]"};
    }
    if (!(cfg.long_speed > 0.0)) throw std::invalid_argument{"loadgen: long_speed must be > 0"};
    if (cfg.long_sessions > 0 && cfg.long_duration.count() < cfg.frame_ms) {
        throw std::invalid_argument{"loadgen: long_duration must be at least one frame"};
    }
    const std::size_t frame_bytes = static_cast<std::size_t>(cfg.sample_rate) * 2 * cfg.frame_ms / 1000;
    const std::size_t frames =
        cfg.frames != 0 ? cfg.frames : static_cast<std::size_t>(cfg.duration.count() / cfg.frame_ms);
    const std::size_t long_frames = static_cast<std::size_t>(cfg.long_duration.count() / cfg.frame_ms);
    std::string prefix = cfg.prefix;
    if (prefix.empty()) prefix = fmt::format("lg-{:08x}", std::random_device{}());
    const std::uint64_t seed =
        cfg.seed != 0 ? cfg.seed : (std::uint64_t{std::random_device{}()} << 32 | std::random_device{}());
    std::mt19937_64 rng{seed};

    const auto pace = [&](double speed) {
        return std::chrono::nanoseconds{static_cast<std::int64_t>(static_cast<double>(cfg.frame_ms) * 1e6 / speed)};
    };
    const auto spread = [&](unsigned k, unsigned n) { // k-th of n sessions started over the ramp
        return n > 1 ? std::chrono::duration_cast<std::chrono::milliseconds>(cfg.ramp * k / n)
                     : std::chrono::milliseconds{0};
    };
    // Sessions are numbered across classes: steady (orphans among them), burst, giant, long, slow.
    detail::shared_state st;
    st.frame_bytes = frame_bytes;
    std::vector<session_plan> plans;
    const auto add = [&](session_class c, std::size_t n_frames, session_plan plan) {
        const auto i = static_cast<std::uint32_t>(st.sessions.size());
        st.sessions.push_back(
            std::make_unique<session_track>(fmt::format("{}-{}", prefix, i), i, n_frames, frame_bytes, c));
        st.by_key.emplace(st.sessions.back()->key, st.sessions.back().get());
        plans.push_back(plan);
    };
    std::vector<bool> orphan(cfg.sessions, false);
    const auto n_orphans = static_cast<unsigned>(cfg.orphan_share * cfg.sessions + 0.5);
    std::fill_n(orphan.begin(), n_orphans, true);
    std::shuffle(orphan.begin(), orphan.end(), rng);
    std::uniform_int_distribution<std::uint64_t> drop_at{1, std::max<std::uint64_t>(1, frames - 1)};
    for (unsigned i = 0; i < cfg.sessions; ++i) {
        session_plan p{.delay = spread(i, cfg.sessions), .interval = pace(cfg.speed)};
        if (orphan[i]) {
            p.orphan = true;
            p.drop_after = std::min<std::uint64_t>(drop_at(rng), frames);
        }
        add(orphan[i] ? session_class::orphan : session_class::steady, frames, p);
    }
    for (unsigned i = 0; i < cfg.burst_sessions; ++i) {
        add(session_class::burst, frames, {.delay = cfg.burst_at, .interval = pace(cfg.speed)});
    }
    for (unsigned i = 0; i < cfg.giant_sessions; ++i) {
        add(session_class::giant, cfg.giant_frames,
            {.delay = spread(i, cfg.giant_sessions),
             .interval = std::chrono::nanoseconds{0},
             .max_stream = cfg.duration});
    }
    for (unsigned i = 0; i < cfg.long_sessions; ++i) {
        add(session_class::long_, long_frames,
            {.delay = spread(i, cfg.long_sessions), .interval = pace(cfg.long_speed)});
    }
    for (unsigned i = 0; i < cfg.slow_sessions; ++i) {
        add(session_class::slow, frames,
            {.delay = spread(i, cfg.slow_sessions), .interval = pace(cfg.speed), .slow = true});
    }
    std::optional<detail::verifier> ver;
    if (!cfg.brokers.empty()) ver.emplace(st, cfg.brokers, cfg.topic, cfg.from_beginning);

    net::io_context ioc;
    run_state rs{cfg, tcp::endpoint{net::ip::make_address(cfg.host), cfg.port}, frame_bytes};
    std::chrono::nanoseconds longest{0}; // the latest planned end of a session's sending
    for (std::size_t i = 0; i < st.sessions.size(); ++i) {
        const session_plan& p = plans[i];
        const auto n = static_cast<long>(st.sessions[i]->send_ns.size());
        longest = std::max(longest, p.delay + (p.interval.count() == 0 ? p.max_stream : p.interval * n));
    }
    const auto t_start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < st.sessions.size(); ++i) {
        std::make_shared<client>(ioc, rs, *st.sessions[i], plans[i])->start();
    }
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < std::max(1U, cfg.io_threads); ++i) threads.emplace_back([&] { ioc.run(); });

    const auto sent_total = [&] {
        std::uint64_t n = 0;
        for (const auto& s : st.sessions) n += s->sent.load();
        return n;
    };
    const auto progress = [&](const char* phase) {
        if (!cfg.progress) return;
        std::vector<std::uint32_t> lat;
        {
            std::lock_guard lock{st.latency_mutex};
            lat = st.latency_us;
        }
        std::sort(lat.begin(), lat.end());
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        fmt::print(stderr,
                   "loadgen: {:6.1f}s {:<7} sessions={:<5} sent={:<9} delivered={:<9} p50={:.1f}ms p99={:.1f}ms\n",
                   secs, phase, rs.active.load(), sent_total(), st.delivered.load(), percentile(lat, 0.5),
                   percentile(lat, 0.99));
    };
    // Sending phase: until every session is done (plus a generous bound).
    const auto send_deadline = t_start + longest + std::chrono::seconds{30};
    auto next_progress = t_start + std::chrono::seconds{1};
    while (rs.active.load() > 0 && std::chrono::steady_clock::now() < send_deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds{20});
        if (std::chrono::steady_clock::now() >= next_progress) {
            progress("sending");
            next_progress += std::chrono::seconds{1};
        }
    }
    ioc.stop();
    for (auto& t : threads) t.join();
    // Drain phase: until everything sent is read back, nothing new came for 3 s, or the timeout.
    if (ver) {
        const auto drain_end = std::chrono::steady_clock::now() + cfg.drain_timeout;
        std::uint64_t last = st.delivered.load();
        auto last_change = std::chrono::steady_clock::now();
        const std::uint64_t sent = sent_total();
        while (st.delivered.load() < sent && std::chrono::steady_clock::now() < drain_end &&
               std::chrono::steady_clock::now() - last_change < std::chrono::seconds{3}) {
            std::this_thread::sleep_for(std::chrono::milliseconds{20});
            if (st.delivered.load() != last) {
                last = st.delivered.load();
                last_change = std::chrono::steady_clock::now();
            }
            if (std::chrono::steady_clock::now() >= next_progress) {
                progress("reading");
                next_progress += std::chrono::seconds{1};
            }
        }
        ver->stop();
    }

    result r;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    r.sessions = st.sessions.size();
    r.errors = rs.errors;
    r.seed = seed;
    for (const auto& sp : st.sessions) {
        const session_track& s = *sp;
        class_result& c = r.classes[to_string(s.cls)];
        const int code = s.close_code.load();
        std::string reason;
        {
            std::lock_guard lock{sp->reason_mutex};
            reason = s.close_reason;
        }
        ++c.sessions;
        ++r.close_codes[code];
        ++c.close_codes[code];
        ++c.close_reasons[code == -1 ? std::string{"-1"} : fmt::format("{} {}", code, reason)];
        if (s.admitted.load()) {
            ++c.admitted;
        } else {
            ++c.refused[code];
        }
        if (s.completed.load()) {
            ++r.sessions_completed;
            ++c.completed;
        }
        const std::uint64_t sent = s.sent.load();
        r.sent_frames += sent;
        r.sent_bytes += sent * frame_bytes;
        c.sent_frames += sent;
        r.refusal_notices += s.refusal_notices;
        std::uint64_t noticed = 0;
        for (const std::uint8_t x : s.refused) noticed += x != 0 ? 1 : 0;
        if (s.acked_refused_frames >= 0 && static_cast<std::uint64_t>(s.acked_refused_frames) != noticed) {
            ++r.refusal_mismatches;
        }
        // Refusals the end ack counts and no notice named (notices suppressed for a client that
        // left them unread): that many of the gaps are counted as such.
        std::uint64_t unnoticed =
            s.acked_refused_frames > 0 && static_cast<std::uint64_t>(s.acked_refused_frames) > noticed
                ? static_cast<std::uint64_t>(s.acked_refused_frames) - noticed
                : 0;
        const auto lose = [&](const std::string& why) {
            ++r.losses[why];
            ++c.losses[why];
        };
        for (std::uint64_t f = 0; f < sent; ++f) {
            if (!ver) {
                lose("no_readback");
            } else if (s.good[f] == frame_bytes && !s.bad[f] && !s.gap[f]) {
                ++r.delivered_frames;
                ++c.delivered_frames;
                r.delivered_bytes += frame_bytes;
            } else if (s.refused[f] != 0) { // the gateway said so: a counted refusal, not a gap
                lose("refused_" + s.refusal_reasons[s.refused[f] - 1]);
            } else if (s.bad[f]) {
                lose("corrupt");
            } else if (s.gap[f] && unnoticed > 0) {
                --unnoticed;
                lose("refused_unnoticed");
            } else if (s.gap[f]) {
                lose("gap");
            } else if (s.dropped.load()) {
                lose("orphan_dropped");
            } else if (code != 1000) {
                lose(fmt::format("close_{}", code));
            } else {
                lose("missing");
            }
        }
    }
    r.order_violations = st.order_violations.load();
    r.missing_messages = st.missing_messages.load();
    r.duplicate_messages = st.duplicates.load();
    {
        std::lock_guard lock{st.consumer_errors_mutex};
        r.consumer_errors = st.consumer_errors;
    }
    r.kafka_messages = st.kafka_messages.load();
    std::sort(st.latency_us.begin(), st.latency_us.end());
    r.p50_ms = percentile(st.latency_us, 0.5);
    r.p99_ms = percentile(st.latency_us, 0.99);
    r.p999_ms = percentile(st.latency_us, 0.999);
    r.max_ms = st.latency_us.empty() ? 0.0 : static_cast<double>(st.latency_us.back()) / 1000.0;
    return r;
}

probe_result probe(const std::string& host, std::uint16_t port, const std::string& target,
                   const std::vector<probe_message>& msgs, std::chrono::milliseconds timeout) {
    probe_result out;
    try {
        net::io_context ioc;
        websocket::stream<tcp::socket> ws{ioc};
        ws.next_layer().connect(tcp::endpoint{net::ip::make_address(host), port});
        const watchdog dog{ws.next_layer(), timeout};
        ws.handshake(fmt::format("{}:{}", host, port), target);
        out.connected = true;
        beast::error_code ec;
        for (const auto& m : msgs) {
            ws.text(m.text);
            ws.write(net::buffer(m.data), ec);
            if (ec) break; // the server may have closed already; read its close below
        }
        for (;;) {
            beast::flat_buffer b;
            ws.read(b, ec);
            if (ec) {
                if (ec == websocket::error::closed) {
                    out.close_code = static_cast<int>(ws.reason().code);
                    out.close_reason = std::string{ws.reason().reason.data(), ws.reason().reason.size()};
                } else {
                    out.error = ec.message();
                }
                break;
            }
            if (ws.got_text()) out.texts.push_back(beast::buffers_to_string(b.data()));
        }
    } catch (const std::exception& e) {
        out.error = e.what();
    }
    return out;
}

http_result http_get(const std::string& host, std::uint16_t port, const std::string& target) {
    http_result out;
    try {
        net::io_context ioc;
        tcp::socket s{ioc};
        s.connect(tcp::endpoint{net::ip::make_address(host), port});
        const watchdog dog{s, std::chrono::milliseconds{5000}};
        http::request<http::empty_body> req{http::verb::get, target, 11};
        req.set(http::field::host, host);
        http::write(s, req);
        beast::flat_buffer b;
        http::response<http::string_body> res;
        http::read(s, b, res);
        out.status = static_cast<int>(res.result_int());
        out.body = res.body();
    } catch (const std::exception& e) {
        out.body = e.what();
    }
    return out;
}

} // namespace loadgen
