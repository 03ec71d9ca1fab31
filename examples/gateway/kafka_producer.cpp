// SPDX-License-Identifier: MIT
#include "kafka_producer.hpp"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <stdexcept>
#include <string>
#include <thread>

namespace gateway {
namespace {

// What rides with a message until its delivery report: the chunk itself (so the buffer stays
// alive and unmoved while librdkafka points into it), its size for the counters, and the
// session's budget, charged with those bytes until the report (kept alive by this reference).
struct in_flight {
    memgov::window_chunk chunk;
    std::size_t bytes = 0;
    std::shared_ptr<memgov::session_budget> budget;
    std::size_t charged = 0; // bytes charged to `budget`: `bytes` and the buffer's unused capacity
};

void set(rd_kafka_conf_t* conf, const char* key, const std::string& value) {
    char err[512];
    if (rd_kafka_conf_set(conf, key, value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error{std::string{"librdkafka: "} + key + "=" + value + ": " + err};
    }
}

} // namespace

struct kafka_producer::impl {
    producer_config cfg;
    std::string bootstrap;
    rd_kafka_t* mock_holder = nullptr;
    rd_kafka_mock_cluster_t* mc = nullptr;
    rd_kafka_t* rk = nullptr;
    std::jthread poller;

    std::atomic<std::uint64_t> produced_messages{0}, produced_bytes{0};
    std::atomic<std::uint64_t> delivered_messages{0}, delivered_bytes{0};
    std::atomic<std::uint64_t> inflight{0};
    std::atomic<std::uint64_t> budget_released{0};
    mutable std::mutex loss_mutex;
    std::map<std::string, loss_count, std::less<>> losses;

    void loss(std::string_view reason, std::uint64_t bytes, std::uint64_t messages) {
        std::lock_guard lock{loss_mutex};
        auto it = losses.find(reason);
        if (it == losses.end()) it = losses.emplace(std::string{reason}, loss_count{}).first;
        it->second.messages += messages;
        it->second.bytes += bytes;
    }

    // The chunk's bytes leave the session: its budget gets them back (any thread may release).
    void release(const std::shared_ptr<memgov::session_budget>& b, std::size_t bytes) noexcept {
        if (b == nullptr) return;
        b->release(bytes);
        budget_released.fetch_add(bytes, std::memory_order_relaxed);
    }

    static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
        auto* self = static_cast<impl*>(opaque);
        auto* f = static_cast<in_flight*>(msg->_private);
        if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            self->delivered_messages.fetch_add(1, std::memory_order_relaxed);
            self->delivered_bytes.fetch_add(f->bytes, std::memory_order_relaxed);
        } else {
            try {
                self->loss(std::string{"delivery:"} + rd_kafka_err2name(msg->err), f->bytes, 1);
            } catch (...) { // out of memory counting: the chunk is still released below
            }
        }
        if (self->cfg.ledger != nullptr) {
            self->cfg.ledger->release(memgov::category::kafka_inflight, static_cast<std::int64_t>(f->bytes));
        }
        self->release(f->budget, f->charged);
        self->inflight.fetch_sub(1, std::memory_order_relaxed);
        delete f; // gives the buffer back to its pool (and may end the session's budget)
    }
};

kafka_producer::kafka_producer(producer_config cfg) : m{std::make_unique<impl>()} {
    m->cfg = std::move(cfg);
    char err[512];
    if (m->cfg.brokers.empty()) {
        rd_kafka_conf_t* hc = rd_kafka_conf_new();
        set(hc, "log_level", "3");
        m->mock_holder = rd_kafka_new(RD_KAFKA_PRODUCER, hc, err, sizeof err);
        if (m->mock_holder == nullptr) throw std::runtime_error{std::string{"librdkafka: "} + err};
        m->mc = rd_kafka_mock_cluster_new(m->mock_holder, m->cfg.mock_brokers);
        if (m->mc == nullptr) {
            rd_kafka_destroy(m->mock_holder);
            throw std::runtime_error{"librdkafka: cannot start the mock cluster"};
        }
        const auto e = rd_kafka_mock_topic_create(m->mc, m->cfg.topic.c_str(), m->cfg.partitions, 1);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_mock_cluster_destroy(m->mc);
            rd_kafka_destroy(m->mock_holder);
            throw std::runtime_error{std::string{"librdkafka: mock topic: "} + rd_kafka_err2str(e)};
        }
        m->bootstrap = rd_kafka_mock_cluster_bootstraps(m->mc);
    } else {
        m->bootstrap = m->cfg.brokers;
    }

    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", m->bootstrap);
    set(conf, "linger.ms", std::to_string(m->cfg.linger_ms));
    set(conf, "queue.buffering.max.messages", std::to_string(m->cfg.queue_max_messages));
    set(conf, "queue.buffering.max.kbytes", std::to_string(m->cfg.queue_max_kbytes));
    set(conf, "message.timeout.ms", std::to_string(m->cfg.message_timeout_ms));
    set(conf, "enable.idempotence", m->cfg.idempotent ? "true" : "false");
    set(conf, "reconnect.backoff.max.ms", "200");
    set(conf, "log_level", "3");
    rd_kafka_conf_set_dr_msg_cb(conf, &impl::on_delivery);
    rd_kafka_conf_set_opaque(conf, m.get());
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (m->rk == nullptr) { // conf is still ours on failure
        rd_kafka_conf_destroy(conf);
        if (m->mc != nullptr) rd_kafka_mock_cluster_destroy(m->mc);
        if (m->mock_holder != nullptr) rd_kafka_destroy(m->mock_holder);
        throw std::runtime_error{std::string{"librdkafka: "} + err};
    }
    // Delivery reports are served here, never on an I/O thread.
    m->poller = std::jthread{[p = m.get()](const std::stop_token& st) {
        while (!st.stop_requested()) rd_kafka_poll(p->rk, 50);
    }};
}

kafka_producer::~kafka_producer() {
    (void)flush(std::chrono::milliseconds{0});
    m->poller.request_stop();
    m->poller.join();
    rd_kafka_poll(m->rk, 0);
    rd_kafka_destroy(m->rk);
    if (m->mc != nullptr) rd_kafka_mock_cluster_destroy(m->mc);
    if (m->mock_holder != nullptr) rd_kafka_destroy(m->mock_holder);
}

const std::string& kafka_producer::bootstrap() const noexcept { return m->bootstrap; }
bool kafka_producer::mock() const noexcept { return m->mc != nullptr; }
const std::string& kafka_producer::topic() const noexcept { return m->cfg.topic; }
void* kafka_producer::mock_cluster() const noexcept { return m->mc; }

int kafka_producer::mock_set_brokers_down(const std::vector<int>& ids, bool down) {
    if (m->mc == nullptr) return 0;
    std::vector<int> all;
    if (ids.empty()) {
        for (int b = 1; b <= m->cfg.mock_brokers; ++b) all.push_back(b);
    }
    int changed = 0;
    for (const int b : ids.empty() ? all : ids) {
        if (b < 1 || b > m->cfg.mock_brokers) {
            throw std::invalid_argument{"mock broker id " + std::to_string(b) + " is not in 1.." +
                                        std::to_string(m->cfg.mock_brokers)};
        }
        const rd_kafka_resp_err_t e =
            down ? rd_kafka_mock_broker_set_down(m->mc, b) : rd_kafka_mock_broker_set_up(m->mc, b);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) ++changed;
    }
    return changed;
}

bool kafka_producer::mock_push_produce_errors(int count, int error) {
    if (m->mc == nullptr || count <= 0) return false;
    const std::vector<rd_kafka_resp_err_t> errs(static_cast<std::size_t>(count),
                                                static_cast<rd_kafka_resp_err_t>(error));
    rd_kafka_mock_push_request_errors_array(m->mc, 0 /* Produce */, errs.size(), errs.data());
    return true;
}

bool kafka_producer::produce(std::string_view key, memgov::window_chunk&& chunk, std::uint64_t seq,
                             std::uint64_t offset, std::shared_ptr<memgov::session_budget> budget,
                             std::size_t extra_charged) noexcept {
    const std::size_t n = chunk.size();
    in_flight* f = nullptr;
    rd_kafka_headers_t* h = nullptr;
    try {
        f = new in_flight{std::move(chunk), n, std::move(budget), n + extra_charged};
    } catch (...) {
        m->release(budget, n + extra_charged); // the allocation failed before anything was moved
        try {
            m->loss("produce:out_of_memory", n, 1);
        } catch (...) {
        }
        return false;
    }
    h = rd_kafka_headers_new(3);
    const std::string s = std::to_string(seq), o = std::to_string(offset),
                      e = std::to_string(offset + n); // std::string of ≤ 20 chars: SSO, no allocation
    rd_kafka_header_add(h, "seq", -1, s.data(), static_cast<ssize_t>(s.size()));
    rd_kafka_header_add(h, "offset", -1, o.data(), static_cast<ssize_t>(o.size()));
    rd_kafka_header_add(h, "end", -1, e.data(), static_cast<ssize_t>(e.size()));
    const auto data = f->chunk.bytes();
    if (m->cfg.ledger != nullptr) {
        m->cfg.ledger->charge(memgov::category::kafka_inflight, static_cast<std::int64_t>(n));
    }
    m->inflight.fetch_add(1, std::memory_order_relaxed);
    const rd_kafka_resp_err_t err = rd_kafka_producev(
        m->rk, RD_KAFKA_V_TOPIC(m->cfg.topic.c_str()), RD_KAFKA_V_KEY(const_cast<char*>(key.data()), key.size()),
        RD_KAFKA_V_VALUE(const_cast<std::byte*>(data.data()), data.size()),
        RD_KAFKA_V_MSGFLAGS(0), // no F_COPY, no F_FREE: the chunk owns the bytes
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(f), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(h); // not taken on failure
        m->inflight.fetch_sub(1, std::memory_order_relaxed);
        if (m->cfg.ledger != nullptr) {
            m->cfg.ledger->release(memgov::category::kafka_inflight, static_cast<std::int64_t>(n));
        }
        m->release(f->budget, f->charged);
        delete f;
        try {
            m->loss(std::string{"produce:"} + rd_kafka_err2name(err), n, 1);
        } catch (...) {
        }
        return false;
    }
    m->produced_messages.fetch_add(1, std::memory_order_relaxed);
    m->produced_bytes.fetch_add(n, std::memory_order_relaxed);
    return true;
}

void kafka_producer::count_loss(std::string_view reason, std::uint64_t bytes, std::uint64_t messages) {
    m->loss(reason, bytes, messages);
}

std::uint64_t kafka_producer::flush(std::chrono::milliseconds timeout) {
    (void)rd_kafka_flush(m->rk, static_cast<int>(timeout.count()));
    const std::uint64_t left = m->inflight.load();
    if (left == 0) return 0;
    rd_kafka_purge(m->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    // The purged messages' delivery reports (with _PURGE_*) count and release them.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds{5};
    while (m->inflight.load() > 0 && std::chrono::steady_clock::now() < until) {
        (void)rd_kafka_flush(m->rk, 100);
    }
    return left;
}

producer_stats kafka_producer::stats() const {
    producer_stats s;
    s.produced_messages = m->produced_messages.load();
    s.produced_bytes = m->produced_bytes.load();
    s.delivered_messages = m->delivered_messages.load();
    s.delivered_bytes = m->delivered_bytes.load();
    s.inflight_messages = m->inflight.load();
    s.budget_released_bytes = m->budget_released.load();
    std::lock_guard lock{m->loss_mutex};
    for (const auto& [k, v] : m->losses) s.losses.emplace(k, v);
    return s;
}

void run_mock_faults(kafka_producer& producer, const mock_faults& f, const std::stop_token& st,
                     const std::function<void(const std::string&)>& log, std::atomic<std::uint64_t>* outages,
                     std::atomic<std::uint64_t>* pushed_errors) {
    const auto t0 = std::chrono::steady_clock::now();
    std::mutex mu;
    std::condition_variable_any cv;
    // Sleeps until `t0 + at`; false when stopped first.
    const auto sleep_until = [&](std::chrono::milliseconds at) {
        std::unique_lock lock{mu};
        (void)cv.wait_until(lock, st, t0 + at, [] { return false; });
        return !st.stop_requested();
    };
    struct step {
        std::chrono::milliseconds at;
        enum class kind : std::uint8_t { down, up, errors } what;
    };
    std::vector<step> steps;
    if (f.broker_down_at) {
        steps.push_back({*f.broker_down_at, step::kind::down});
        steps.push_back({*f.broker_down_at + f.broker_down_for, step::kind::up});
    }
    if (f.produce_errors > 0) steps.push_back({f.produce_errors_at, step::kind::errors});
    std::stable_sort(steps.begin(), steps.end(), [](const step& a, const step& b) { return a.at < b.at; });
    bool down = false;
    try {
        for (const step& s : steps) {
            if (!sleep_until(s.at)) break;
            if (s.what == step::kind::down) {
                const int n = producer.mock_set_brokers_down(f.broker_ids, true);
                down = true;
                if (outages != nullptr) outages->fetch_add(1, std::memory_order_relaxed);
                log(fmt::format("mock fault: {} broker(s) down for {} ms", n, f.broker_down_for.count()));
            } else if (s.what == step::kind::up) {
                const int n = producer.mock_set_brokers_down(f.broker_ids, false);
                down = false;
                log(fmt::format("mock fault: {} broker(s) up again", n));
            } else {
                (void)producer.mock_push_produce_errors(f.produce_errors, f.produce_error);
                if (pushed_errors != nullptr) {
                    pushed_errors->fetch_add(static_cast<std::uint64_t>(f.produce_errors), std::memory_order_relaxed);
                }
                log(fmt::format("mock fault: the next {} produce requests fail with error {}", f.produce_errors,
                                f.produce_error));
            }
        }
        if (down) (void)producer.mock_set_brokers_down(f.broker_ids, false); // stopped mid-outage
    } catch (const std::exception& e) {
        log(std::string{"mock fault: "} + e.what());
    }
}

} // namespace gateway
