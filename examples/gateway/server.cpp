// SPDX-License-Identifier: MIT
// The gateway's only Beast translation unit: the WebSocket server, the HTTP endpoints and the
// wiring of memgov's parts (governor, buffer pool, session map, sliding windows) to Kafka.
#include <utility> // before asio: Boost 1.74 asio uses std::exchange without including it

#include "gateway.hpp"
#include "protocol.hpp"

#include <memgov/fmt.hpp>
#include <memgov/memgov.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

namespace gateway {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr std::array<std::uint16_t, 6> counted_closes{close_code::normal,          close_code::going_away,
                                                      close_code::invalid_payload, close_code::policy,
                                                      close_code::too_big,         close_code::try_again_later};
std::size_t close_index(std::uint16_t code) {
    for (std::size_t i = 0; i < counted_closes.size(); ++i) {
        if (counted_closes[i] == code) return i;
    }
    return counted_closes.size();
}

// Beast fails a connection on violations it detects itself, a text message that is not
// UTF-8 (1007) and a message over read_message_max (1009), with a close frame that carries the
// code and no reason. This stream sits between the WebSocket stream and the TCP stream and
// gives exactly those bare close frames their documented reason; every other write, the
// gateway's own close frames included, passes through untouched.
class reasoned_close_stream {
public:
    using executor_type = beast::tcp_stream::executor_type;
    using next_layer_type = beast::tcp_stream;

    reasoned_close_stream(tcp::socket&& socket, std::size_t max_message_bytes)
        : m_next{std::move(socket)}, m_max_message_bytes{max_message_bytes} {}

    executor_type get_executor() noexcept { return m_next.get_executor(); }
    next_layer_type& next_layer() noexcept { return m_next; }
    const next_layer_type& next_layer() const noexcept { return m_next; }

    template <class MutableBufferSequence, class ReadHandler>
    void async_read_some(const MutableBufferSequence& buffers, ReadHandler&& handler) {
        m_next.async_read_some(buffers, std::forward<ReadHandler>(handler));
    }

    template <class ConstBufferSequence, class WriteHandler>
    void async_write_some(const ConstBufferSequence& buffers, WriteHandler&& handler) {
        // A server's bare close frame is exactly 4 bytes: FIN|close (0x88), length 2, the code.
        if (net::buffer_size(buffers) == 4) {
            std::array<unsigned char, 4> f{};
            net::buffer_copy(net::buffer(f), buffers);
            const auto code = static_cast<std::uint16_t>((f[2] << 8U) | f[3]);
            if (f[0] == 0x88 && f[1] == 2) m_failed = true;
            if (f[0] == 0x88 && f[1] == 2 && (code == close_code::invalid_payload || code == close_code::too_big)) {
                const std::string reason =
                    close_reason(code == close_code::invalid_payload
                                     ? std::string{"text message is not valid UTF-8"}
                                     : fmt::format("message over max_message_bytes ({} bytes)", m_max_message_bytes));
                m_close.assign({static_cast<char>(0x88), static_cast<char>(2 + reason.size()), static_cast<char>(f[2]),
                                static_cast<char>(f[3])});
                m_close += reason;
                // The WebSocket stream asked for its 4 bytes: it is told they were written.
                auto ex = net::get_associated_executor(handler, m_next.get_executor());
                net::async_write(m_next, net::buffer(m_close),
                                 net::bind_executor(ex, [h = std::forward<WriteHandler>(handler)](beast::error_code ec,
                                                                                                  std::size_t) mutable {
                                     std::move(h)(ec, ec ? std::size_t{0} : std::size_t{4});
                                 }));
                return;
            }
        }
        m_next.async_write_some(buffers, std::forward<WriteHandler>(handler));
    }

    /// Whether the WebSocket stream failed the connection itself (it wrote a bare close).
    [[nodiscard]] bool failed_with_close() const noexcept { return m_failed; }

private:
    next_layer_type m_next;
    std::size_t m_max_message_bytes;
    bool m_failed = false;
    std::string m_close; // the rewritten close frame, alive until its write completes
};

// The WebSocket stream's teardown is the TCP stream's.
template <class TeardownHandler>
void async_teardown(beast::role_type role, reasoned_close_stream& s, TeardownHandler&& handler) {
    using beast::websocket::async_teardown;
    async_teardown(role, s.next_layer(), std::forward<TeardownHandler>(handler));
}

class ws_connection;

// One session_map entry per connection.
struct gw_session {
    memgov::sliding_window window;
    std::weak_ptr<ws_connection> conn; // to post the 4001 close on eviction; expired: orphan
    // The connection that owns the entry: a session id may be reused by a new connection once
    // this entry left the map, and the old connection must never touch the new entry.
    std::uint64_t owner = 0;
    // The session's budget (also held by its connection and by each of its messages in flight:
    // it dies, returning what is left of its reservation, when the last of them does). Charged
    // with what the window holds and what is in flight to Kafka.
    std::shared_ptr<memgov::session_budget> budget;
    std::uint64_t next_seq = 0; // Kafka message number within the session
    // Bytes of the client's stream that are not in the window's stream (refused frames): the
    // Kafka `offset` header is the window's offset plus these. The window is drained before
    // this grows, so every byte it holds was appended after the last refusal.
    std::uint64_t skipped_bytes = 0;
    std::uint64_t dropped_bytes = 0; // dropped by the window cap (counted window_overflow)
    // The session's cost follows its window (memgov::value_cost finds this).
    [[nodiscard]] std::size_t held_bytes() const noexcept { return window.held_bytes(); }
};

using session_map_t = memgov::session_map<std::string, gw_session>;

} // namespace

struct server::impl {
    explicit impl(gateway_config c);

    gateway_config cfg;
    memgov::governor<> gov;
    memgov::buffer_pool pool;
    kafka_producer producer;
    memgov::sliding_window_config window_cfg;
    session_map_t sessions;
    std::shared_ptr<memgov::buffer_pool_reclaimer> pool_reclaimer;
    std::shared_ptr<memgov::session_map_reclaimer<session_map_t>> map_reclaimer;

    net::io_context ioc;
    tcp::acceptor ws_acceptor;
    tcp::acceptor http_acceptor;
    net::steady_timer housekeeping;
    std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
    std::vector<std::thread> threads;
    std::uint16_t ws_port = 0;
    std::uint16_t bound_http_port = 0;

    std::mutex registry_mutex;
    std::unordered_map<const ws_connection*, std::weak_ptr<ws_connection>> registry;

    std::atomic<bool> shutting_down{false};
    std::mutex shutdown_mutex;
    bool shut = false;
    gateway_stats final_stats{};

    std::atomic<std::uint64_t> connections{0}, active{0}, started{0}, ended{0}, frames{0}, frame_bytes{0}, refused{0},
        evicted{0}, orphaned{0};
    std::atomic<std::uint64_t> next_connection_id{1};
    std::atomic<std::uint64_t> mock_outages{0}, mock_errors{0};
    std::atomic<std::uint64_t> shed_periods{0}; // chunk periods in which a session shed (over its share)
    // Runs `cfg.faults` against the mock cluster (its calls block for milliseconds: never on
    // an I/O or memgov thread). Stopped first at shutdown.
    std::jthread fault_thread;
    std::atomic<std::uint64_t> received_frames{0}, received_bytes{0}, notices{0}, notices_suppressed{0};
    std::atomic<std::uint64_t> charged{0}, released_window{0}, released_not_appended{0};
    std::array<std::atomic<std::uint64_t>, memgov::admit_reason_count> refused_frames{}, refused_bytes{};
    std::array<std::string, memgov::admit_reason_count> refused_loss_keys = [] {
        std::array<std::string, memgov::admit_reason_count> k;
        for (std::size_t i = 0; i < k.size(); ++i) {
            k[i] = "refused_work:" + std::string{memgov::to_string(static_cast<memgov::admit_reason>(i))};
        }
        return k;
    }();
    std::uint64_t work_refusals_logged = 0;
    std::array<std::atomic<std::uint64_t>, counted_closes.size()> closes{};
    std::array<std::atomic<std::uint64_t>, memgov::evict_reason_count> evictions{};
    std::array<std::uint64_t, memgov::evict_reason_count> evictions_logged{};
    std::uint64_t refusals_logged = 0;
    memgov::pressure_subscription level_sub;

    template <class... Args>
    void log(fmt::format_string<Args...> f, Args&&... args) const {
        if (cfg.quiet) return;
        fmt::print(stderr, "gateway: {}\n", fmt::format(f, std::forward<Args>(args)...));
    }

    void count_close(std::uint16_t code) {
        const std::size_t i = close_index(code);
        if (i < closes.size()) closes[i].fetch_add(1, std::memory_order_relaxed);
    }

    // Takes every chunk the window lets go (`mode`) and produces it, keyed by session, with
    // the message number and byte offsets in the client's stream. The chunks' bytes stay
    // charged to the session's budget until their delivery reports. Runs under the entry lock
    // (or in on_evict, when nobody else can reach it).
    //
    // `charge_capacity` (only on the connection's strand, the one thread that charges the
    // budget): a chunk that fills its buffer only partly (taken at a tick before it was full)
    // still holds the whole buffer while it is in flight, so the unused capacity is charged to
    // the budget too and released with the chunk. Budgets, and the fair shares measured on
    // them, then count the memory in flight, not just the audio in it.
    void drain(const std::string& key, gw_session& s, memgov::take_mode mode, bool charge_capacity = true) noexcept {
        std::array<memgov::window_chunk, 8> chunks;
        for (;;) {
            const memgov::sliding_window_stats st = s.window.stats();
            // The oldest byte held: its offset in the window's stream, plus the refused bytes.
            std::uint64_t offset = st.appended_bytes - st.size_bytes + s.skipped_bytes;
            const std::size_t k = s.window.take_chunks(chunks, mode);
            for (std::size_t i = 0; i < k; ++i) {
                const std::size_t n = chunks[i].size();
                const std::size_t slack =
                    charge_capacity && s.budget != nullptr && n < s.window.chunk_size() ? s.window.chunk_size() - n : 0;
                if (slack > 0) {
                    s.budget->charge(slack);
                    charged.fetch_add(slack, std::memory_order_relaxed);
                }
                (void)producer.produce(key, std::move(chunks[i]), s.next_seq++, offset, s.budget, slack);
                chunks[i] = {};
                offset += n;
            }
            if (k < chunks.size()) break;
        }
    }

    // Counts a loss; never throws (out of memory counting is itself uncounted).
    void loss(std::string_view reason, std::uint64_t bytes, std::uint64_t messages = 1) noexcept {
        try {
            producer.count_loss(reason, bytes, messages);
        } catch (...) {
        }
    }

    // A frame refused by its session's budget: counted by reason, and as a loss.
    void count_refused(memgov::admit_reason why, std::size_t bytes) noexcept {
        const auto r = static_cast<std::size_t>(why);
        refused_frames[r].fetch_add(1, std::memory_order_relaxed);
        refused_bytes[r].fetch_add(bytes, std::memory_order_relaxed);
        loss(refused_loss_keys[r], bytes); // a prebuilt key: no allocation per refusal
    }

    // Bytes of pcm16 audio at `sample_rate` in one chunk period (6,400 for 200 ms at 16 kHz).
    [[nodiscard]] std::uint64_t period_bytes(int sample_rate) const noexcept {
        const auto period_ms = static_cast<std::uint64_t>(cfg.chunk_period.count());
        return static_cast<std::uint64_t>(sample_rate) * 2U * period_ms / 1000U;
    }

    // A session's window: chunks sized to one chunk period of its audio unless configured
    // (the pool rounds up to its class, 8 KiB for 6,400 B), so a period is one Kafka message.
    [[nodiscard]] memgov::sliding_window_config window_config(const start_message& st) const noexcept {
        memgov::sliding_window_config w = window_cfg;
        if (cfg.window_chunk_bytes == 0) {
            w.chunk_size = static_cast<std::size_t>(
                std::clamp<std::uint64_t>(period_bytes(st.sample_rate), 1, pool.max_pooled_size()));
        }
        return w;
    }

    void run_faults(const std::stop_token& st);

    // What a session declares at start (see gateway_config::session_cost_bytes).
    [[nodiscard]] std::size_t declared_bytes(const start_message& st) const noexcept {
        if (cfg.session_cost_bytes != 0) return cfg.session_cost_bytes;
        return static_cast<std::size_t>(
            std::min<std::uint64_t>(2 * period_bytes(st.sample_rate), cfg.window_cap_bytes));
    }

    void on_evict(const std::string& key, gw_session& s, memgov::evict_reason r) noexcept;
    void start_accept_ws();
    void start_accept_http();
    void arm_housekeeping();
    void housekeeping_tick();
    std::string metrics_text();
    std::string health_json();
    bool ready() const noexcept {
        if (shutting_down.load()) return false;
        if (!cfg.governor_on) return true;
        return gov.level() < gov.config().admission.close_sessions_at;
    }
    gateway_stats snapshot() const;
};

namespace {

// One WebSocket connection; everything runs on its strand.
class ws_connection : public std::enable_shared_from_this<ws_connection> {
public:
    ws_connection(server::impl& g, tcp::socket&& socket)
        : m_g{g}, m_ws{std::move(socket), g.cfg.max_message_bytes}, m_tick{m_ws.get_executor()},
          m_id{g.next_connection_id.fetch_add(1, std::memory_order_relaxed)} {}

    ~ws_connection() {
        if (m_in_map) (void)erase_own(); // backstop: produces what the window holds
    }

    void run() {
        net::dispatch(m_ws.get_executor(), [self = shared_from_this()] { self->read_request(); });
    }

    // From on_evict (any thread): close with 4001 on this connection's strand.
    void post_evicted(memgov::evict_reason r) {
        net::post(m_ws.get_executor(), [self = shared_from_this(), r] {
            if (self->m_closing || self->m_done) return;
            self->m_in_map = false; // it already left the map
            self->m_g.evicted.fetch_add(1, std::memory_order_relaxed);
            self->close(close_code::evicted, std::string{memgov::to_string(r)});
        });
    }

    void post_shutdown() {
        net::post(m_ws.get_executor(), [self = shared_from_this()] {
            if (self->m_closing || self->m_done) return;
            self->close(close_code::going_away, "gateway shutting down");
        });
    }

private:
    void read_request() {
        beast::get_lowest_layer(m_ws).expires_after(m_g.cfg.handshake_timeout);
        http::async_read(m_ws.next_layer(), m_buf, m_req,
                         [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_request(ec); });
    }

    void on_request(beast::error_code ec) {
        if (ec) return;
        const std::string_view target{m_req.target().data(), m_req.target().size()};
        const std::string_view path = target.substr(0, target.find('?'));
        if (!websocket::is_upgrade(m_req) || path != "/v1/stream") {
            auto res = std::make_shared<http::response<http::string_body>>(
                websocket::is_upgrade(m_req) ? http::status::not_found : http::status::upgrade_required,
                m_req.version());
            res->set(http::field::content_type, "text/plain");
            res->body() = "memgov gateway: WebSocket endpoint is ws://HOST:PORT/v1/stream\n";
            res->keep_alive(false);
            res->prepare_payload();
            http::async_write(
                m_ws.next_layer(), *res, [self = shared_from_this(), res](beast::error_code, std::size_t) {
                    beast::error_code ignored;
                    beast::get_lowest_layer(self->m_ws).socket().shutdown(tcp::socket::shutdown_send, ignored);
                });
            return;
        }
        beast::get_lowest_layer(m_ws).expires_never();
        websocket::stream_base::timeout t{};
        t.handshake_timeout = m_g.cfg.handshake_timeout;
        t.idle_timeout = m_g.cfg.idle_timeout;
        t.keep_alive_pings = true;
        m_ws.set_option(t);
        m_ws.read_message_max(m_g.cfg.max_message_bytes);
        m_ws.set_option(websocket::stream_base::decorator(
            [](websocket::response_type& res) { res.set(http::field::server, "memgov-gateway"); }));
        m_ws.async_accept(m_req, [self = shared_from_this()](beast::error_code e) { self->on_accept(e); });
    }

    void on_accept(beast::error_code ec) {
        if (ec) return;
        m_accepted = true;
        m_g.active.fetch_add(1, std::memory_order_relaxed);
        {
            std::lock_guard lock{m_g.registry_mutex};
            m_g.registry.emplace(this, weak_from_this());
        }
        m_buf.clear();
        do_read();
        if (m_g.shutting_down.load()) close(close_code::going_away, "gateway shutting down");
    }

    void do_read() {
        m_ws.async_read(m_buf, [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(beast::error_code ec) {
        if (ec) {
            finish(ec);
            return;
        }
        if (m_closing) {
            if (!m_ws.got_text() && m_buf.size() > 0) {
                m_g.received_frames.fetch_add(1, std::memory_order_relaxed);
                m_g.received_bytes.fetch_add(m_buf.size(), std::memory_order_relaxed);
                m_g.loss("discarded_after_close", m_buf.size());
            }
        } else if (m_ws.got_text()) {
            const auto d = m_buf.data();
            on_text(std::string_view{static_cast<const char*>(d.data()), d.size()});
        } else {
            const auto d = m_buf.data();
            on_binary(std::span<const std::byte>{static_cast<const std::byte*>(d.data()), d.size()});
        }
        m_buf.consume(m_buf.size());
        do_read();
    }

    void on_text(std::string_view text) {
        const auto parsed = parse_control(text);
        if (const auto* e = std::get_if<protocol_error>(&parsed)) {
            close(close_code::policy, e->reason);
            return;
        }
        const auto& msg = std::get<control_message>(parsed);
        if (msg.type == control_message::kind::start) {
            if (m_started || m_ended) {
                close(close_code::policy, "second start on one connection");
                return;
            }
            m_sid = msg.start.session_id;
            // Admission: the session declares its expected window bytes; the budget reserves
            // them from the headroom and grades the session's frames from now on.
            memgov::session_budget budget = m_g.gov.admit_session(m_g.declared_bytes(msg.start));
            if (!budget) {
                m_g.refused.fetch_add(1, std::memory_order_relaxed);
                close(close_code::try_again_later,
                      fmt::format("admission refused: {}", memgov::to_string(budget.refusal())));
                return;
            }
            bool inserted = false;
            try {
                m_budget = std::make_shared<memgov::session_budget>(std::move(budget));
                const memgov::sliding_window_config wc = m_g.window_config(msg.start);
                inserted = m_g.sessions.insert(m_sid, [&] {
                    return gw_session{memgov::sliding_window{m_g.pool, wc, &m_g.gov.ledger()}, weak_from_this(), m_id,
                                      m_budget};
                });
            } catch (const std::exception& ex) {
                m_budget.reset();
                close(close_code::internal_error, close_reason(std::string{"cannot start: "} + ex.what()));
                return;
            }
            if (!inserted) {
                m_budget.reset();
                close(close_code::policy, "session_id already in use");
                return;
            }
            m_started = true;
            m_in_map = true;
            m_g.started.fetch_add(1, std::memory_order_relaxed);
            send_text(
                ack_start(msg.start, static_cast<unsigned>(m_g.cfg.chunk_period.count()), m_g.cfg.max_message_bytes));
            arm_tick();
            return;
        }
        // end
        if (!m_started) {
            close(close_code::policy, m_ended ? "second end" : "end before start");
            return;
        }
        flush_refusals(); // the last run's notice goes before the end ack
        std::uint64_t dropped = 0;
        (void)with_own([&](gw_session& s) {
            m_g.drain(m_sid, s, memgov::take_mode::include_partial);
            dropped = s.dropped_bytes;
        });
        (void)erase_own();
        m_in_map = false;
        m_started = false;
        m_ended = true;
        m_budget.reset(); // what is in flight keeps it until its delivery reports
        m_g.ended.fetch_add(1, std::memory_order_relaxed);
        send_text(ack_end(m_sid, m_frames, m_bytes, dropped, m_refused_frames, m_refused_bytes));
        close(close_code::normal, "end");
    }

    void on_binary(std::span<const std::byte> data) {
        if (!m_started) {
            close(close_code::policy, m_ended ? "audio frame after end" : "audio frame before start");
            return;
        }
        const std::size_t n = data.size();
        const std::uint64_t index = m_received++; // the frame's number within the session
        m_g.received_frames.fetch_add(1, std::memory_order_relaxed);
        m_g.received_bytes.fetch_add(n, std::memory_order_relaxed);
        // The session's budget admits and charges the frame. Only this strand charges it
        // (session_budget: admit/charge from one thread at a time); releases come from here
        // (window drops) and from the producer's delivery reports (any thread).
        if (const memgov::admission a = m_budget->try_charge(n); !a) {
            refuse(index, n, a.reason);
            return;
        }
        m_g.charged.fetch_add(n, std::memory_order_relaxed);
        flush_refusals(); // an admitted frame ends a run of refused ones: its notice goes out
        bool found = false, oom = false;
        std::uint64_t written = 0, dropped = 0, drop_events = 0;
        try {
            found = with_own([&](gw_session& s) {
                // The append says what it did, also when it throws: appended = written plus an
                // oversized write's head; dropped = the oldest bytes (and that head).
                memgov::append_result r;
                try {
                    s.window.append(data, r);
                } catch (const std::bad_alloc&) { // a prefix may be in; `r` says how much
                    oom = true;
                }
                written = r.appended_bytes;
                dropped = r.dropped_bytes;
                drop_events = dropped > 0 ? 1 : 0; // one drop event per append that dropped
                s.dropped_bytes += dropped;
            });
        } catch (const std::bad_alloc&) {
            oom = true;
        }
        if (!found && !oom) { // evicted; the 4001 close is on its way
            release_not_appended(n);
            m_g.loss("after_eviction", n);
            return;
        }
        if (dropped > 0) { // the cap dropped the oldest bytes: they leave the budget too
            m_budget->release(dropped);
            m_g.released_window.fetch_add(dropped, std::memory_order_relaxed);
            m_g.loss("window_overflow", dropped, drop_events);
        }
        if (written < n) {
            release_not_appended(n - written);
            m_g.loss("out_of_memory", n - written);
        }
        if (oom) {
            close(close_code::internal_error, "out of memory");
            return;
        }
        ++m_frames;
        m_bytes += n;
        m_unflushed = true;
        m_g.frames.fetch_add(1, std::memory_order_relaxed);
        m_g.frame_bytes.fetch_add(n, std::memory_order_relaxed);
    }

    void release_not_appended(std::size_t bytes) {
        m_budget->release(bytes);
        m_g.released_not_appended.fetch_add(bytes, std::memory_order_relaxed);
    }

    // A frame the budget refused: dropped, counted by reason, and told to the client in a
    // `refused` notice (consecutive frames refused for one reason share one notice).
    void refuse(std::uint64_t index, std::size_t n, memgov::admit_reason why) {
        m_g.count_refused(why, n);
        ++m_refused_frames;
        m_refused_bytes += n;
        // The frame is a gap in the session's stream. What the window holds goes to Kafka
        // first, so that no message straddles the gap (one offset header could not say so).
        // Only the first refusal after an admitted frame finds the window non-empty.
        try {
            (void)with_own([&](gw_session& s) {
                if (!s.window.empty()) m_g.drain(m_sid, s, memgov::take_mode::include_partial);
                s.skipped_bytes += n;
            });
        } catch (...) { // nothing in the callable throws; the map's own bookkeeping might
        }
        if (m_run.frames > 0 && m_run.reason == why && m_run.first + m_run.frames == index) {
            ++m_run.frames;
            m_run.bytes += n;
            return;
        }
        flush_refusals();
        m_run = refusal_run{index, 1, n, why};
    }

    // Sends the notice of the current run of refused frames, if any. A client that does not
    // read its notices gets no more than `max_queued_texts` queued: the rest are counted as
    // suppressed (the end ack's totals still include them).
    void flush_refusals() {
        if (m_run.frames == 0) return;
        const refusal_run r = std::exchange(m_run, refusal_run{});
        if (m_closing) return;
        if (m_out.size() >= max_queued_texts) {
            m_g.notices_suppressed.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        try {
            send_text(refused_notice(m_sid, r.first, r.frames, r.bytes, memgov::to_string(r.reason)));
            m_g.notices.fetch_add(1, std::memory_order_relaxed);
        } catch (const std::bad_alloc&) {
            m_g.notices_suppressed.fetch_add(1, std::memory_order_relaxed);
        }
    }

    // A chunk period's work on the session, under its entry lock. A session over its fair share
    // (memory is tight and it holds more than its share, window plus what is in flight) sends
    // nothing more to Kafka this period: what is in flight cannot be called back, and while the
    // downstream is slow or down it would only pile up there. Its oldest audio is shed instead,
    // down to three quarters of the share, and counted as `shed_over_share`. Otherwise the window
    // is produced. With --governor=off nothing is shed (shares are advice, not refusals, so dry
    // run would not change them).
    void tick(gw_session& s) {
        if (m_g.cfg.governor_on && m_budget->over_share()) { // --governor=off: produce everything
            const std::size_t target = m_budget->share_bytes() / 4 * 3;
            const std::size_t held = m_budget->held_bytes();
            if (held > target) {
                const std::size_t gone = s.window.consume(std::min(s.window.size(), held - target));
                if (gone > 0) {
                    m_budget->release(gone);
                    m_g.released_window.fetch_add(gone, std::memory_order_relaxed);
                    m_g.loss("shed_over_share", gone);
                    m_g.shed_periods.fetch_add(1, std::memory_order_relaxed);
                }
            }
            m_unflushed = !s.window.empty(); // produced once the session is back under its share
            return;
        }
        m_g.drain(m_sid, s, memgov::take_mode::include_partial);
    }

    void arm_tick() {
        m_tick.expires_after(m_g.cfg.chunk_period);
        m_tick.async_wait([self = shared_from_this()](beast::error_code ec) {
            if (ec || self->m_closing || self->m_done || !self->m_started) return;
            self->flush_refusals(); // at most one notice per session per chunk_ms under refusal
            // Only when frames came since the last tick: `with` counts as activity, and an idle
            // session must still age for the session map's idle TTL.
            if (self->m_unflushed) {
                self->m_unflushed = false;
                (void)self->with_own([&](gw_session& s) { self->tick(s); });
            }
            self->arm_tick();
        });
    }

    void send_text(std::string text) {
        if (m_closing) return;
        m_out.push_back(std::move(text));
        if (!m_writing) write_next();
    }

    void close(std::uint16_t code, std::string reason) {
        if (m_closing) return;
        flush_refusals(); // before the close frame
        m_closing = true;
        m_g.count_close(code);
        m_tick.cancel();
        m_pending_close = websocket::close_reason{static_cast<websocket::close_code>(code), close_reason(reason)};
        if (!m_writing) write_next();
    }

    void write_next() {
        if (!m_out.empty()) {
            m_writing = true;
            m_ws.text(true);
            m_ws.async_write(net::buffer(m_out.front()),
                             [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                 self->m_out.pop_front();
                                 if (ec) {
                                     self->m_writing = false;
                                     self->m_out.clear();
                                     return;
                                 }
                                 self->write_next();
                             });
            return;
        }
        if (m_pending_close) {
            m_writing = true;
            const websocket::close_reason cr = *m_pending_close;
            m_pending_close.reset();
            m_ws.async_close(cr, [self = shared_from_this()](beast::error_code) { self->m_writing = false; });
            return;
        }
        m_writing = false;
    }

    void finish(beast::error_code ec) {
        if (m_done) return;
        m_done = true;
        m_tick.cancel();
        if (ec == websocket::error::message_too_big) m_g.count_close(close_code::too_big);
        if (ec == websocket::error::bad_frame_payload) m_g.count_close(close_code::invalid_payload);
        if (m_in_map) {
            m_in_map = false;
            // The WebSocket layer ended the stream: a close from either side, or a protocol
            // failure Beast closed with 1002/1007/1009 (the read's error may then be the
            // teardown's, a reset, so each is looked at): the session goes now.
            const bool websocket_end =
                ec.category() == websocket::make_error_code(websocket::error::closed).category() || m_closing ||
                m_ws.reason().code != websocket::close_code::none || m_ws.next_layer().failed_with_close();
            if (websocket_end) {
                (void)erase_own(); // on_evict(erased) produces what the window holds
            } else {
                // The TCP connection dropped (or timed out half-open) without a WebSocket
                // close: the session stays in the map, an orphan. Once this connection is
                // gone its `conn` expires, and the sweep's inconsistent-state rule removes it
                // with reason `orphan` (on_evict still produces what the window holds).
                m_g.orphaned.fetch_add(1, std::memory_order_relaxed);
            }
        }
        m_budget.reset();
        if (m_accepted) {
            m_g.active.fetch_sub(1, std::memory_order_relaxed);
            std::lock_guard lock{m_g.registry_mutex};
            m_g.registry.erase(this);
        }
    }

    // `fn(gw_session&)` on this connection's own entry, under its lock; false (fn not called)
    // when the session id no longer names it (it was evicted, and maybe reused since).
    template <class Fn>
    bool with_own(Fn&& fn) {
        bool own = false;
        (void)m_g.sessions.with(m_sid, [&](gw_session& s) {
            if (s.owner != m_id) return;
            own = true;
            fn(s);
        });
        return own;
    }

    // Removes this connection's own entry, never a newer session that reuses the id.
    bool erase_own() noexcept {
        try {
            return m_g.sessions.erase_if(m_sid, [this](const gw_session& s) { return s.owner == m_id; });
        } catch (...) { // erase_if throws only what the predicate throws (nothing) or on re-entry
            return false;
        }
    }

    server::impl& m_g;
    websocket::stream<reasoned_close_stream> m_ws;
    net::steady_timer m_tick;
    const std::uint64_t m_id; // this connection's number (gw_session::owner)
    beast::flat_buffer m_buf;
    http::request<http::string_body> m_req;
    struct refusal_run {
        std::uint64_t first = 0;  // the run's first frame number
        std::uint64_t frames = 0; // 0: no run
        std::uint64_t bytes = 0;
        memgov::admit_reason reason = memgov::admit_reason::admitted;
    };
    static constexpr std::size_t max_queued_texts = 64;

    std::shared_ptr<memgov::session_budget> m_budget; // set from an admitted start to end/finish
    refusal_run m_run{};
    std::uint64_t m_received = 0; // binary frames since start (refused ones included)
    std::uint64_t m_refused_frames = 0, m_refused_bytes = 0;
    std::string m_sid;
    std::deque<std::string> m_out;
    std::optional<websocket::close_reason> m_pending_close;
    std::uint64_t m_frames = 0;
    std::uint64_t m_bytes = 0;
    bool m_accepted = false, m_started = false, m_ended = false, m_in_map = false;
    bool m_closing = false, m_done = false, m_writing = false, m_unflushed = false;
};

// One HTTP request per connection (Connection: close).
class http_connection : public std::enable_shared_from_this<http_connection> {
public:
    http_connection(server::impl& g, tcp::socket&& socket) : m_g{g}, m_stream{std::move(socket)} {}

    void run() {
        m_stream.expires_after(m_g.cfg.handshake_timeout);
        http::async_read(m_stream, m_buf, m_req, [self = shared_from_this()](beast::error_code ec, std::size_t) {
            if (!ec) self->respond();
        });
    }

private:
    void respond() {
        const std::string_view target{m_req.target().data(), m_req.target().size()};
        const std::string_view path = target.substr(0, target.find('?'));
        m_res.version(m_req.version());
        m_res.keep_alive(false);
        m_res.set(http::field::server, "memgov-gateway");
        m_res.set(http::field::content_type, "text/plain; charset=utf-8");
        try {
            if (path == "/metrics") {
                m_res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
                m_res.body() = m_g.metrics_text();
            } else if (path == "/healthz") {
                m_res.body() = "ok\n";
            } else if (path == "/readyz") {
                // A blind monitor admits everything (it fails open): not ready, and say why.
                const memgov::health_summary h = m_g.gov.health();
                const bool blind = m_g.cfg.governor_on && h.blind;
                const bool ok = !blind && m_g.ready();
                m_res.result(ok ? http::status::ok : http::status::service_unavailable);
                if (ok) {
                    m_res.body() = "ready\n";
                } else if (blind && !m_g.shutting_down) {
                    m_res.body() = fmt::format("not ready: memgov is blind: {}\n", h.blind_reason);
                } else {
                    m_res.body() = fmt::format("not ready: {} (level {})\n",
                                               m_g.shutting_down ? "shutting down" : "session admission closed",
                                               memgov::to_string(h.level));
                }
            } else if (path == "/debug/health") {
                m_res.set(http::field::content_type, "application/json");
                m_res.body() = m_g.health_json();
            } else {
                m_res.result(http::status::not_found);
                m_res.body() = "not found; try /metrics /healthz /readyz /debug/health\n";
            }
        } catch (const std::exception& e) {
            m_res.result(http::status::internal_server_error);
            m_res.body() = std::string{e.what()} + "\n";
        }
        m_res.prepare_payload();
        http::async_write(m_stream, m_res, [self = shared_from_this()](beast::error_code, std::size_t) {
            beast::error_code ignored;
            self->m_stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
        });
    }

    server::impl& m_g;
    beast::tcp_stream m_stream;
    beast::flat_buffer m_buf;
    http::request<http::string_body> m_req;
    http::response<http::string_body> m_res{http::status::ok, 11};
};

memgov::governor_config make_governor_config(const gateway_config& c) {
    memgov::governor_config g;
    g.monitor.cgroup.root = c.cgroup_root;
    g.monitor.cgroup.explicit_limit = c.memory_limit;
    g.dry_run = !c.governor_on; // admission and reclaim only count what they would have done
    if (c.session_quota_bytes) g.admission.session_quota_bytes = *c.session_quota_bytes;
    // A budget byte costs more than a byte here: a 6,400 B chunk lives in an 8 KiB pool buffer,
    // and librdkafka copies messages below message.copy.max.bytes into the produce requests it
    // builds and retries. Fair shares therefore start at half the ceiling's even split, so that
    // sessions shed their oldest audio (tick) before memory reaches the eviction levels.
    g.admission.fair_share = {0.0, 0.0, 0.5, 0.35, 0.25};
    return g;
}

memgov::session_map_config make_map_config(const gateway_config& c) {
    memgov::session_map_config m;
    m.idle_ttl = c.session_idle_ttl;
    m.absolute_ttl = c.session_max_age;
    m.check_interval = c.orphan_check_interval;
    return m;
}

// The pool's classes: the default ones plus 8 KiB, the class that holds one 200 ms chunk of
// 16 kHz pcm16 audio (6,400 B), so such a chunk is one buffer and one Kafka message.
memgov::buffer_pool_config make_pool_config() {
    memgov::buffer_pool_config p;
    p.size_classes = {4096, 8192, 16384, 65536, 262144, 1048576};
    return p;
}

} // namespace

server::impl::impl(gateway_config c)
    : cfg{std::move(c)}, gov{make_governor_config(cfg)}, pool{make_pool_config(), &gov.ledger()}, producer{[&] {
          producer_config k = cfg.kafka;
          k.ledger = &gov.ledger();
          return k;
      }()},
      window_cfg{.chunk_size = cfg.window_chunk_bytes == 0 ? 8192 : cfg.window_chunk_bytes,
                 .cap_bytes = cfg.window_cap_bytes},
      sessions{make_map_config(cfg),
               [this] {
                   session_map_t::hooks_type h;
                   h.on_evict = [this](const std::string& k, gw_session& s, memgov::evict_reason r) {
                       on_evict(k, s, r);
                   };
                   // A session whose connection is gone (a TCP drop without a WebSocket
                   // close leaves it in the map) is an orphan: the sweep removes it.
                   h.inconsistent = [](const std::string&, const gw_session& s) { return s.conn.expired(); };
                   return h;
               }(),
               memgov::steady_clock{}, &gov.ledger()},
      ws_acceptor{net::make_strand(ioc)}, http_acceptor{net::make_strand(ioc)}, housekeeping{net::make_strand(ioc)} {
    if (cfg.io_threads == 0) throw std::invalid_argument{"gateway: io_threads must be > 0"};
    if (cfg.chunk_period.count() <= 0) throw std::invalid_argument{"gateway: chunk_ms must be > 0"};
    if (cfg.faults.any() && !producer.mock()) {
        throw std::invalid_argument{"gateway: mock faults need the mock cluster (no --brokers)"};
    }
    if (cfg.faults.broker_down_at && cfg.faults.broker_down_for.count() <= 0) {
        throw std::invalid_argument{"gateway: mock_faults::broker_down_for must be > 0"};
    }
    for (const int b : cfg.faults.broker_ids) {
        if (b < 1 || b > cfg.kafka.mock_brokers) {
            throw std::invalid_argument{
                fmt::format("gateway: mock broker id {} is not in 1..{}", b, cfg.kafka.mock_brokers)};
        }
    }
    // A window that cannot be built is a configuration error: find it now, not per session.
    (void)memgov::sliding_window{pool, window_cfg};
    pool_reclaimer = std::make_shared<memgov::buffer_pool_reclaimer>(pool);
    map_reclaimer = std::make_shared<memgov::session_map_reclaimer<session_map_t>>(sessions);
    gov.register_reclaimer(pool_reclaimer);
    gov.register_reclaimer(map_reclaimer);
    level_sub = gov.monitor().subscribe([this](const memgov::level_change& ch) {
        log("level {} -> {} ({}, {:.1f}% of {} bytes)", ch.from, ch.to, ch.cause, ch.ratio * 100.0, ch.limit_bytes);
    });
}

void server::impl::on_evict(const std::string& key, gw_session& s, memgov::evict_reason r) noexcept {
    // What it held still goes to Kafka. Not the strand: nothing more is charged here.
    drain(key, s, memgov::take_mode::include_partial, false);
    evictions[static_cast<std::size_t>(r)].fetch_add(1, std::memory_order_relaxed);
    if (r == memgov::evict_reason::erased || r == memgov::evict_reason::cleared) return;
    // Never I/O on a memgov thread: the close is posted to the connection's strand.
    if (auto c = s.conn.lock()) {
        try {
            c->post_evicted(r);
        } catch (...) { // out of memory posting: the idle timeout closes it
        }
    }
}

void server::impl::run_faults(const std::stop_token& st) {
    run_mock_faults(
        producer, cfg.faults, st, [this](const std::string& line) { log("{}", line); }, &mock_outages, &mock_errors);
}

void server::impl::start_accept_ws() {
    ws_acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
        if (ec == net::error::operation_aborted || !ws_acceptor.is_open()) return;
        if (!ec) {
            connections.fetch_add(1, std::memory_order_relaxed);
            std::make_shared<ws_connection>(*this, std::move(s))->run();
        }
        start_accept_ws();
    });
}

void server::impl::start_accept_http() {
    http_acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
        if (ec == net::error::operation_aborted || !http_acceptor.is_open()) return;
        if (!ec) std::make_shared<http_connection>(*this, std::move(s))->run();
        start_accept_http();
    });
}

void server::impl::arm_housekeeping() {
    housekeeping.expires_after(std::chrono::seconds{1});
    housekeeping.async_wait([this](beast::error_code ec) {
        if (ec || shutting_down.load()) return;
        housekeeping_tick();
        arm_housekeeping();
    });
}

void server::impl::housekeeping_tick() {
    // Expiry (idle and absolute TTL, orphan rules) is the governor's: its steps sweep the
    // registered session map at every level, normal included. With --governor=off its steps
    // only count (dry run), so the control build sweeps here to keep the same session hygiene.
    if (!cfg.governor_on) {
        try {
            (void)sessions.sweep(4096);
        } catch (...) {
        }
    }
    // Evictions and refusals in aggregate, once a second at most.
    std::string parts;
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < evictions.size(); ++i) {
        const auto r = static_cast<memgov::evict_reason>(i);
        if (r == memgov::evict_reason::erased || r == memgov::evict_reason::cleared) continue;
        const std::uint64_t n = evictions[i].load();
        if (n > evictions_logged[i]) {
            parts += fmt::format(" {}={}", r, n - evictions_logged[i]);
            total += n - evictions_logged[i];
            evictions_logged[i] = n;
        }
    }
    if (total > 0) log("evicted {} sessions in the last second:{}", total, parts);
    const std::uint64_t ref = refused.load();
    if (ref > refusals_logged) {
        log("refused {} new sessions in the last second (level {})", ref - refusals_logged, gov.level());
        refusals_logged = ref;
    }
    std::uint64_t frames_refused = 0;
    std::string why;
    for (std::size_t i = 0; i < refused_frames.size(); ++i) {
        const std::uint64_t n = refused_frames[i].load();
        if (n == 0) continue;
        frames_refused += n;
        why += fmt::format(" {}={}", memgov::to_string(static_cast<memgov::admit_reason>(i)), n);
    }
    if (frames_refused > work_refusals_logged) {
        log("refused {} audio frames in the last second (level {}; since start:{})",
            frames_refused - work_refusals_logged, gov.level(), why);
        work_refusals_logged = frames_refused;
    }
}

std::string server::impl::metrics_text() {
    memgov::prometheus_writer w;
    gov.collect(w);
    memgov::prometheus_writer g{"gateway_"};
    using memgov::metric_type;
    const gateway_stats s = snapshot();
    g.sample("connections_total", "WebSocket TCP connections accepted", metric_type::counter, {},
             static_cast<double>(s.connections));
    g.sample("connections_active", "Open WebSocket connections", metric_type::gauge, {},
             static_cast<double>(s.active_connections));
    g.sample("sessions_active", "Sessions in the session map", metric_type::gauge, {},
             static_cast<double>(sessions.size()));
    g.sample("sessions_started_total", "Sessions started", metric_type::counter, {},
             static_cast<double>(s.sessions_started));
    g.sample("sessions_ended_total", "Sessions ended by an end message", metric_type::counter, {},
             static_cast<double>(s.sessions_ended));
    g.sample("frames_total", "Audio frames appended to windows", metric_type::counter, {},
             static_cast<double>(s.frames));
    g.sample("frame_bytes_total", "Audio bytes appended to windows", metric_type::counter, {},
             static_cast<double>(s.frame_bytes));
    g.sample("frames_received_total", "Audio frames read on started sessions (appended, refused or lost)",
             metric_type::counter, {}, static_cast<double>(s.received_frames));
    g.sample("frame_bytes_received_total", "Audio bytes read on started sessions", metric_type::counter, {},
             static_cast<double>(s.received_bytes));
    for (std::size_t i = 0; i < memgov::admit_reason_count; ++i) {
        const auto r = static_cast<memgov::admit_reason>(i);
        const bool work_reason = r == memgov::admit_reason::over_quota || r == memgov::admit_reason::heavy ||
                                 r == memgov::admit_reason::paced;
        const std::uint64_t nf = refused_frames[i].load(), nb = refused_bytes[i].load();
        if (!work_reason && nf == 0) continue;
        g.sample("frames_refused_total", "Audio frames refused by their session's budget, by reason",
                 metric_type::counter, {{"reason", memgov::to_string(r)}}, static_cast<double>(nf));
        g.sample("frame_refused_bytes_total", "Audio bytes refused by their session's budget, by reason",
                 metric_type::counter, {{"reason", memgov::to_string(r)}}, static_cast<double>(nb));
    }
    g.sample("refusal_notices_total", "refused notices sent to clients", metric_type::counter, {},
             static_cast<double>(s.refusal_notices));
    g.sample("refusal_notices_suppressed_total", "refused notices not sent: the client's queue was full",
             metric_type::counter, {}, static_cast<double>(s.refusal_notices_suppressed));
    g.sample("budget_charged_bytes_total",
             "Bytes charged to session budgets (admitted frames, and the unused capacity of partly filled chunks sent "
             "to Kafka)",
             metric_type::counter, {}, static_cast<double>(s.budget_charged_bytes));
    g.sample("budget_released_bytes_total", "Bytes released from session budgets, by cause", metric_type::counter,
             {{"cause", "window_overflow"}}, static_cast<double>(s.budget_released_window_bytes));
    g.sample("budget_released_bytes_total", "Bytes released from session budgets, by cause", metric_type::counter,
             {{"cause", "not_appended"}}, static_cast<double>(s.budget_released_not_appended_bytes));
    g.sample("budget_released_bytes_total", "Bytes released from session budgets, by cause", metric_type::counter,
             {{"cause", "kafka"}}, static_cast<double>(s.kafka.budget_released_bytes));
    for (std::size_t i = 0; i < counted_closes.size(); ++i) {
        const std::string code = std::to_string(counted_closes[i]);
        g.sample("closes_total", "Close codes sent or failed with, by code", metric_type::counter, {{"code", code}},
                 static_cast<double>(s.closes_sent[i]));
    }
    g.sample("closes_total", "Close codes sent or failed with, by code", metric_type::counter, {{"code", "4001"}},
             static_cast<double>(s.evicted_sessions));
    for (std::size_t i = 0; i < evictions.size(); ++i) {
        g.sample("session_removals_total", "Sessions that left the map, by reason", metric_type::counter,
                 {{"reason", memgov::to_string(static_cast<memgov::evict_reason>(i))}},
                 static_cast<double>(evictions[i].load()));
    }
    g.sample("sessions_orphaned_total",
             "Sessions left in the map by a TCP drop without a WebSocket close (the sweep removes them)",
             metric_type::counter, {}, static_cast<double>(s.orphaned_sessions));
    g.sample("shed_periods_total",
             "Chunk periods in which a session over its fair share shed its oldest audio instead "
             "of producing it (its bytes: lost_bytes_total{reason=\"shed_over_share\"})",
             metric_type::counter, {}, static_cast<double>(s.shed_periods));
    if (producer.mock()) {
        g.sample("mock_broker_outages_total", "Mock cluster broker outages begun (fault injection)",
                 metric_type::counter, {}, static_cast<double>(s.mock_broker_outages));
        g.sample("mock_produce_errors_total", "Produce errors pushed into the mock cluster (fault injection)",
                 metric_type::counter, {}, static_cast<double>(s.mock_produce_errors));
    }
    g.sample("kafka_produced_messages_total", "Messages accepted by the producer", metric_type::counter, {},
             static_cast<double>(s.kafka.produced_messages));
    g.sample("kafka_produced_bytes_total", "Bytes accepted by the producer", metric_type::counter, {},
             static_cast<double>(s.kafka.produced_bytes));
    g.sample("kafka_delivered_messages_total", "Messages acknowledged by Kafka", metric_type::counter, {},
             static_cast<double>(s.kafka.delivered_messages));
    g.sample("kafka_delivered_bytes_total", "Bytes acknowledged by Kafka", metric_type::counter, {},
             static_cast<double>(s.kafka.delivered_bytes));
    g.sample("kafka_inflight_messages", "Messages produced and not yet reported", metric_type::gauge, {},
             static_cast<double>(s.kafka.inflight_messages));
    for (const auto& [reason, n] : s.kafka.losses) {
        g.sample("lost_messages_total", "Messages (or frames) lost, by reason", metric_type::counter,
                 {{"reason", reason}}, static_cast<double>(n.messages));
        g.sample("lost_bytes_total", "Bytes lost, by reason", metric_type::counter, {{"reason", reason}},
                 static_cast<double>(n.bytes));
    }
    return w.str() + g.str();
}

std::string server::impl::health_json() {
    const memgov::health_summary h = gov.health();
    const memgov::pressure_snapshot p = gov.monitor().snapshot();
    const gateway_stats s = snapshot();
    nlohmann::json j;
    j["level"] = std::string{memgov::to_string(h.level)};
    j["ready"] = ready();
    j["governor"] = cfg.governor_on ? "on" : "off (dry run)";
    j["limit_bytes"] = h.limit_bytes;
    j["limit_source"] = std::string{memgov::to_string(p.limit_from)};
    j["limit_origin"] = p.limit_origin;
    j["estimate_bytes"] = h.estimate_bytes;
    j["headroom_bytes"] = h.headroom_bytes;
    j["ratio"] = h.ratio;
    j["blind"] = h.blind;
    if (h.blind) j["blind_reason"] = h.blind_reason;
    j["growth_bytes_per_second"] = h.growth_bytes_per_second;
    if (h.time_to_limit)
        j["time_to_limit_s"] = std::chrono::duration<double>(*h.time_to_limit).count();
    else
        j["time_to_limit_s"] = nullptr;
    j["rejections_last_minute"] = h.rejections_last_minute;
    j["evictions_last_minute"] = h.evictions_last_minute;
    j["sessions"] = sessions.size();
    j["connections_active"] = s.active_connections;
    j["kafka"] = {{"bootstrap", producer.bootstrap()},
                  {"topic", producer.topic()},
                  {"mock", producer.mock()},
                  {"produced", s.kafka.produced_messages},
                  {"delivered", s.kafka.delivered_messages},
                  {"inflight", s.kafka.inflight_messages}};
    nlohmann::json losses = nlohmann::json::object();
    for (const auto& [reason, n] : s.kafka.losses) losses[reason] = {{"messages", n.messages}, {"bytes", n.bytes}};
    j["losses"] = losses;
    nlohmann::json refused_work = nlohmann::json::object();
    for (const auto& [reason, n] : s.refused_work) refused_work[reason] = {{"frames", n.messages}, {"bytes", n.bytes}};
    j["refused_work"] = refused_work;
    return j.dump(2) + "\n";
}

gateway_stats server::impl::snapshot() const {
    gateway_stats s;
    s.connections = connections.load();
    s.active_connections = active.load();
    s.sessions_started = started.load();
    s.sessions_ended = ended.load();
    s.frames = frames.load();
    s.frame_bytes = frame_bytes.load();
    s.refused_sessions = refused.load();
    s.received_frames = received_frames.load();
    s.received_bytes = received_bytes.load();
    for (std::size_t i = 0; i < memgov::admit_reason_count; ++i) {
        const std::uint64_t nf = refused_frames[i].load();
        if (nf == 0) continue;
        s.refused_work.emplace(std::string{memgov::to_string(static_cast<memgov::admit_reason>(i))},
                               loss_count{nf, refused_bytes[i].load()});
    }
    s.refusal_notices = notices.load();
    s.refusal_notices_suppressed = notices_suppressed.load();
    s.budget_charged_bytes = charged.load();
    s.budget_released_window_bytes = released_window.load();
    s.budget_released_not_appended_bytes = released_not_appended.load();
    s.evicted_sessions = evicted.load();
    s.orphaned_sessions = orphaned.load();
    s.mock_broker_outages = mock_outages.load();
    s.shed_periods = shed_periods.load();
    s.mock_produce_errors = mock_errors.load();
    for (std::size_t i = 0; i < closes.size(); ++i) s.closes_sent[i] = closes[i].load();
    s.kafka = producer.stats();
    return s;
}

server::server(gateway_config cfg) : m{std::make_unique<impl>(std::move(cfg))} {}

server::~server() {
    if (m) (void)shutdown();
}

void server::start() {
    const auto addr = net::ip::make_address(m->cfg.host);
    const auto open = [&](tcp::acceptor& a, std::uint16_t port) {
        const tcp::endpoint ep{addr, port};
        a.open(ep.protocol());
        a.set_option(net::socket_base::reuse_address(true));
        a.bind(ep);
        a.listen(net::socket_base::max_listen_connections);
        return a.local_endpoint().port();
    };
    m->ws_port = open(m->ws_acceptor, m->cfg.port);
    m->bound_http_port = open(m->http_acceptor, m->cfg.http_port);
    m->work.emplace(m->ioc.get_executor());
    net::dispatch(m->ws_acceptor.get_executor(), [this] { m->start_accept_ws(); });
    net::dispatch(m->http_acceptor.get_executor(), [this] { m->start_accept_http(); });
    m->arm_housekeeping();
    m->gov.start();
    if (m->cfg.faults.any()) {
        m->fault_thread = std::jthread{[this](const std::stop_token& st) { m->run_faults(st); }};
    }
    for (unsigned i = 0; i < m->cfg.io_threads; ++i) {
        m->threads.emplace_back([this] {
            for (;;) {
                try {
                    m->ioc.run();
                    return;
                } catch (const std::exception& e) {
                    m->log("I/O thread: {}", e.what());
                }
            }
        });
    }
    m->log("listening on ws://{}:{}/v1/stream, http://{}:{}/metrics, {} I/O threads", m->cfg.host, m->ws_port,
           m->cfg.host, m->bound_http_port, m->cfg.io_threads);
    m->log("{}", limit_line());
}

gateway_stats server::shutdown() {
    std::lock_guard lock{m->shutdown_mutex};
    if (m->shut) return m->final_stats;
    m->shut = true;
    m->shutting_down.store(true);
    const bool running = !m->threads.empty();
    if (running) {
        net::post(m->ws_acceptor.get_executor(), [this] {
            beast::error_code ec;
            m->ws_acceptor.close(ec);
        });
        net::post(m->http_acceptor.get_executor(), [this] {
            beast::error_code ec;
            m->http_acceptor.close(ec);
        });
        net::post(m->housekeeping.get_executor(), [this] { m->housekeeping.cancel(); });
        std::vector<std::shared_ptr<ws_connection>> conns;
        {
            std::lock_guard r{m->registry_mutex};
            for (auto& [p, w] : m->registry) {
                if (auto c = w.lock()) conns.push_back(std::move(c));
            }
        }
        for (auto& c : conns) c->post_shutdown();
        conns.clear();
        const auto until = std::chrono::steady_clock::now() + m->cfg.shutdown_grace;
        while (m->active.load() > 0 && std::chrono::steady_clock::now() < until) {
            std::this_thread::sleep_for(std::chrono::milliseconds{10});
        }
    }
    if (m->fault_thread.joinable()) { // brokers it took down come back up first, to drain
        m->fault_thread.request_stop();
        m->fault_thread.join();
    }
    m->gov.stop();
    (void)m->gov.unregister_reclaimer(*m->map_reclaimer);
    (void)m->gov.unregister_reclaimer(*m->pool_reclaimer);
    // What the windows of connections still open hold goes to Kafka (on_evict, cleared).
    (void)m->sessions.clear();
    m->final_stats.purged_at_shutdown = m->producer.flush(m->cfg.flush_timeout);
    m->work.reset();
    m->ioc.stop();
    for (auto& t : m->threads) t.join();
    m->threads.clear();
    m->final_stats = [&] {
        gateway_stats s = m->snapshot();
        s.purged_at_shutdown = m->final_stats.purged_at_shutdown;
        return s;
    }();
    const auto& k = m->final_stats.kafka;
    m->log("shutdown: {} messages ({} bytes) produced, {} delivered, {} purged at shutdown", k.produced_messages,
           k.produced_bytes, k.delivered_messages, m->final_stats.purged_at_shutdown);
    if (k.losses.empty()) m->log("shutdown: nothing lost");
    for (const auto& [reason, n] : k.losses) {
        m->log("shutdown: undelivered {:<28} {:>8} messages {:>12} bytes", reason, n.messages, n.bytes);
    }
    return m->final_stats;
}

std::uint16_t server::port() const noexcept { return m->ws_port; }
std::uint16_t server::http_port() const noexcept { return m->bound_http_port; }
const std::string& server::bootstrap() const noexcept { return m->producer.bootstrap(); }
const std::string& server::topic() const noexcept { return m->producer.topic(); }
bool server::mock_kafka() const noexcept { return m->producer.mock(); }
gateway_stats server::stats() const { return m->snapshot(); }
std::string server::metrics_text() const { return m->metrics_text(); }
void* server::mock_cluster() const noexcept { return m->producer.mock_cluster(); }

std::string server::limit_line() const {
    const memgov::pressure_snapshot p = m->gov.monitor().snapshot();
    return fmt::format("memory limit {} bytes ({:.1f} MiB) from {} ({}), estimate {} bytes, level {}, governor {}",
                       p.limit_bytes, static_cast<double>(p.limit_bytes) / 1048576.0, p.limit_from,
                       p.limit_origin.empty() ? "-" : p.limit_origin, p.estimate_bytes, p.level,
                       m->cfg.governor_on ? "on" : "off (dry run: admission and reclaim only count)");
}

} // namespace gateway
