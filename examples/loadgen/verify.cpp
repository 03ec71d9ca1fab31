// SPDX-License-Identifier: MIT
// The load generator's read-back: a librdkafka consumer that checks every byte of this run's
// sessions by session, message order and byte offset.
#include "track.hpp"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

namespace loadgen::detail {

std::uint64_t now_ns() noexcept {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count());
}

namespace {

std::uint64_t header_u64(rd_kafka_headers_t* h, const char* name, bool& ok) {
    const void* v = nullptr;
    std::size_t n = 0;
    if (h == nullptr || rd_kafka_header_get_last(h, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || n == 0 || n > 20) {
        ok = false;
        return 0;
    }
    std::uint64_t x = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const char c = static_cast<const char*>(v)[i];
        if (c < '0' || c > '9') {
            ok = false;
            return 0;
        }
        x = x * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return x;
}

void set(rd_kafka_conf_t* conf, const char* k, const std::string& v) {
    char err[512];
    if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error{std::string{"loadgen: librdkafka "} + k + ": " + err};
    }
}

} // namespace

struct verifier::impl {
    shared_state& st;
    rd_kafka_t* rk = nullptr;
    std::jthread thread;

    explicit impl(shared_state& s) : st{s} {}

    // The next Kafka offset expected per partition (-1: none read yet). The producer is
    // idempotent and nothing is transactional, so a partition's offsets are consecutive: a jump
    // means messages the log deleted before this consumer read them (retention), not a loss of
    // the gateway's. They are counted under one name; their frames still count as a gap.
    std::vector<std::int64_t> next_kafka_offset;

    void count_skipped(const rd_kafka_message_t* msg) {
        if (msg->partition < 0) return;
        const auto part = static_cast<std::size_t>(msg->partition);
        if (next_kafka_offset.size() <= part) next_kafka_offset.resize(part + 1, -1);
        std::int64_t& next = next_kafka_offset[part];
        if (next >= 0 && msg->offset > next) {
            std::lock_guard lock{st.consumer_errors_mutex};
            st.consumer_errors["offsets_skipped(deleted_before_read)"] +=
                static_cast<std::uint64_t>(msg->offset - next);
        }
        next = std::max(next, msg->offset + 1);
    }

    void check(const rd_kafka_message_t* msg) {
        count_skipped(msg);
        if (msg->key == nullptr) return;
        const std::string key{static_cast<const char*>(msg->key), msg->key_len};
        const auto it = st.by_key.find(key);
        if (it == st.by_key.end()) return; // another run's session
        session_track& t = *it->second;
        st.kafka_messages.fetch_add(1, std::memory_order_relaxed);
        rd_kafka_headers_t* h = nullptr;
        (void)rd_kafka_message_headers(msg, &h);
        bool ok = true;
        const std::uint64_t seq = header_u64(h, "seq", ok);
        const std::uint64_t offset = header_u64(h, "offset", ok);
        if (!ok) {
            st.order_violations.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        // Each seq is read once, in increasing order. A seq seen before is a duplicate; an
        // unseen seq below the next expected one arrived late (reordered: its frames were
        // already counted as a gap); a seq above it means the messages between were lost in
        // the gateway (counted as missing messages, their frames as a gap), not reordered.
        if (seq > (std::uint64_t{1} << 32)) {
            st.order_violations.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        if (t.seen_seq.size() <= seq) t.seen_seq.resize(static_cast<std::size_t>(seq) + 1, false);
        if (t.seen_seq[seq]) {
            st.duplicates.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        t.seen_seq[seq] = true;
        if (seq < t.next_seq || offset < t.next_offset) {
            st.order_violations.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        if (seq > t.next_seq) st.missing_messages.fetch_add(seq - t.next_seq, std::memory_order_relaxed);
        const std::size_t fb = t.fb;
        const std::size_t frames = t.send_ns.size();
        for (std::uint64_t p = t.next_offset; p < offset; ++p) { // bytes the gateway dropped
            if (p / fb < frames) t.gap[p / fb] = true;
        }
        t.next_seq = seq + 1;
        const auto* data = static_cast<const std::byte*>(msg->payload);
        const std::size_t len = msg->len;
        std::byte expect[4096];
        std::uint64_t cur_frame = ~std::uint64_t{0};
        for (std::size_t j = 0; j < len; ++j) {
            const std::uint64_t p = offset + j;
            const std::uint64_t f = p / fb;
            const std::size_t w = static_cast<std::size_t>(p % fb);
            if (f >= frames) {
                st.order_violations.fetch_add(1, std::memory_order_relaxed);
                break;
            }
            if (f != cur_frame) {
                cur_frame = f;
                fill_frame({expect, fb}, t.index, f, t.send_ns[f].load(std::memory_order_acquire));
            }
            if (data[j] != expect[w]) {
                t.bad[f] = true;
            } else if (++t.good[f] == fb && !t.bad[f] && !t.gap[f]) {
                st.delivered.fetch_add(1, std::memory_order_relaxed);
                const std::uint64_t lat = (now_ns() - t.send_ns[f].load(std::memory_order_relaxed)) / 1000;
                std::lock_guard lock{st.latency_mutex};
                st.latency_us.push_back(static_cast<std::uint32_t>(std::min<std::uint64_t>(lat, UINT32_MAX)));
            }
        }
        t.next_offset = offset + len;
    }
};

verifier::verifier(shared_state& st, const std::string& brokers, const std::string& topic, bool from_beginning)
    : m{std::make_unique<impl>(st)} {
    if (st.frame_bytes > 4096) throw std::runtime_error{"loadgen: frames above 4096 bytes are not verified"};
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", brokers);
    set(conf, "group.id", "memgov-loadgen");
    set(conf, "enable.auto.commit", "false");
    set(conf, "fetch.wait.max.ms", "20"); // latency is measured at read-back: do not idle in fetches
    // Back within half a second of the brokers' return (the default backs off up to 10 s, longer
    // than the drain waits for news), so an outage does not end the read-back early.
    set(conf, "reconnect.backoff.max.ms", "500");
    // A position the brokers no longer hold (the log's oldest part was deleted before this
    // consumer read it: librdkafka's mock cluster keeps 5 MiB per partition) restarts at the
    // earliest offset the log still has; `check` counts the offsets jumped over.
    set(conf, "auto.offset.reset", "earliest");
    set(conf, "log_level", "3");
    char err[512];
    m->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (m->rk == nullptr) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error{std::string{"loadgen: consumer: "} + err};
    }
    rd_kafka_poll_set_consumer(m->rk);
    // Start at each partition's end as it is now, so a gateway's earlier traffic is skipped;
    // or at its beginning (a run whose sessions may be produced before this point, e.g. while
    // the brokers are down: other runs' keys are skipped by key).
    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(m->rk, topic.c_str(), nullptr);
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int attempt = 0; attempt < 50; ++attempt) {
        e = rd_kafka_metadata(m->rk, 0, rkt, &md, 5000);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && md->topics[0].partition_cnt > 0) break;
        if (md != nullptr) rd_kafka_metadata_destroy(md);
        md = nullptr;
        std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
    rd_kafka_topic_destroy(rkt);
    if (md == nullptr) {
        rd_kafka_destroy(m->rk);
        throw std::runtime_error{"loadgen: no metadata for topic " + topic + " at " + brokers};
    }
    const int parts = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; ++p) {
        std::int64_t lo = 0, hi = RD_KAFKA_OFFSET_BEGINNING;
        if (!from_beginning &&
            rd_kafka_query_watermark_offsets(m->rk, topic.c_str(), p, &lo, &hi, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            hi = RD_KAFKA_OFFSET_BEGINNING;
        }
        rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = hi;
    }
    e = rd_kafka_assign(m->rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_destroy(m->rk);
        throw std::runtime_error{std::string{"loadgen: assign: "} + rd_kafka_err2str(e)};
    }
    m->thread = std::jthread{[p = m.get()](const std::stop_token& stop) {
        while (!stop.stop_requested()) {
            rd_kafka_message_t* msg = rd_kafka_consumer_poll(p->rk, 50);
            if (msg == nullptr) continue;
            if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                p->check(msg);
            } else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                std::lock_guard lock{p->st.consumer_errors_mutex};
                ++p->st.consumer_errors[rd_kafka_err2name(msg->err)];
            }
            rd_kafka_message_destroy(msg);
        }
    }};
}

void verifier::stop() {
    if (m->thread.joinable()) {
        m->thread.request_stop();
        m->thread.join();
    }
}

verifier::~verifier() {
    stop();
    (void)rd_kafka_consumer_close(m->rk);
    rd_kafka_destroy(m->rk);
}

} // namespace loadgen::detail
