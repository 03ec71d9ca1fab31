// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The gateway's Kafka producer: zero-copy produce of `memgov::window_chunk`s, a bounded queue,
/// delivery reports that give each chunk back to its pool, and every loss counted by reason.
/// With no brokers it starts librdkafka's mock cluster on loopback (real Kafka protocol, so
/// `kcat` can read it). No Beast in here.

#include <memgov/ledger.hpp>
#include <memgov/session_budget.hpp>
#include <memgov/sliding_window.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace gateway {

/// Faults injected into the mock cluster, for scenarios and tests (a real cluster is never
/// touched). Times count from the start of `run_mock_faults`: `server::start()` in the gateway,
/// the process start with `--kafka-mock-only`. They run on a thread of their own, never on an
/// I/O or memgov thread.
struct mock_faults {
    /// Brokers go down at this time (`rd_kafka_mock_broker_set_down`); unset: never.
    std::optional<std::chrono::milliseconds> broker_down_at{};
    /// ...and come back up this long after (`rd_kafka_mock_broker_set_up`). Must be > 0 when
    /// `broker_down_at` is set. A shutdown during the outage brings them back up first.
    std::chrono::milliseconds broker_down_for{0};
    /// Which brokers (ids 1..mock_brokers); empty: all of them.
    std::vector<int> broker_ids{};
    /// The next `produce_errors` Produce requests the cluster receives after
    /// `produce_errors_at` fail with `produce_error` (`rd_kafka_mock_push_request_errors`).
    int produce_errors = 0;
    /// A librdkafka error code (`rd_kafka_resp_err_t`): retriable ones (the default, 19
    /// NOT_ENOUGH_REPLICAS) are retried by the producer; others fail the request's messages.
    int produce_error = 19;
    std::chrono::milliseconds produce_errors_at{0};

    /// Whether any fault is configured.
    [[nodiscard]] bool any() const noexcept { return broker_down_at.has_value() || produce_errors > 0; }
};

/// Producer settings.
struct producer_config {
    std::string brokers;              ///< Empty: start a mock cluster on loopback.
    std::string topic = "audio";      ///< Created in the mock cluster with `partitions`.
    int mock_brokers = 3;             ///< Brokers of the mock cluster.
    int partitions = 3;               ///< Partitions of the topic in the mock cluster.
    int queue_max_messages = 100000;  ///< queue.buffering.max.messages: the bound.
    int queue_max_kbytes = 65536;     ///< queue.buffering.max.kbytes: the bound.
    int linger_ms = 5;                ///< linger.ms.
    int message_timeout_ms = 30000;   ///< message.timeout.ms: undelivered after this.
    bool idempotent = true;           ///< enable.idempotence (per-key order across retries).
    memgov::ledger* ledger = nullptr; ///< Charged with kafka_inflight while a chunk is queued.
};

/// Messages and bytes.
struct loss_count {
    std::uint64_t messages = 0;
    std::uint64_t bytes = 0;
};

/// A copy of the producer's counters.
struct producer_stats {
    std::uint64_t produced_messages = 0; ///< Accepted by librdkafka.
    std::uint64_t produced_bytes = 0;
    std::uint64_t delivered_messages = 0; ///< Acknowledged by the cluster.
    std::uint64_t delivered_bytes = 0;
    std::uint64_t inflight_messages = 0; ///< Produced, no delivery report yet.
    /// Bytes given back to session budgets: by delivery reports (delivered or failed) and by
    /// produces that failed. Each chunk's bytes are released exactly once.
    std::uint64_t budget_released_bytes = 0;
    /// Every loss by reason: "produce:<err>" (refused by produce, e.g. produce:_QUEUE_FULL),
    /// "delivery:<err>" (failed delivery report, e.g. delivery:_MSG_TIMED_OUT,
    /// delivery:_PURGE_QUEUE at shutdown), and what the gateway counts itself
    /// (`count_loss`: window_overflow, refused_work:<reason>, ...).
    std::map<std::string, loss_count> losses;
};

/// See the file comment. Thread safety: `produce`, `count_loss` and `stats` from any thread.
class kafka_producer {
public:
    /// Throws `std::runtime_error` naming what librdkafka refused.
    explicit kafka_producer(producer_config cfg);
    ~kafka_producer();
    kafka_producer(const kafka_producer&) = delete;
    kafka_producer& operator=(const kafka_producer&) = delete;

    /// The bootstrap servers in use (the mock cluster's when it runs).
    [[nodiscard]] const std::string& bootstrap() const noexcept;
    /// Whether the mock cluster runs.
    [[nodiscard]] bool mock() const noexcept;
    /// The topic.
    [[nodiscard]] const std::string& topic() const noexcept;

    /// Produces `chunk` without copying (no RD_KAFKA_MSG_F_COPY) with key `key` and headers
    /// `seq` (the session's message number), `offset` and `end` (byte offsets of the chunk in
    /// the session's stream). The delivery report destroys the chunk, giving the buffer back
    /// to its pool. Never blocks: a full queue is a counted loss (the chunk is released at
    /// once). Returns whether librdkafka accepted it.
    ///
    /// `budget` (may be null): the session's budget, charged with the chunk's bytes. They stay
    /// charged while the chunk is in flight and are released (`session_budget::release`, which
    /// may be called from any thread) when the chunk dies: in its delivery report, delivered or
    /// not (librdkafka's poll thread, or the thread in `flush`), or here when the produce fails.
    /// The message keeps the budget alive until then.
    ///
    /// `extra_charged`: bytes charged to `budget` beyond the chunk's own (the unused capacity of
    /// a partly filled chunk's buffer, which is memory the message holds all the same), released
    /// with them.
    bool produce(std::string_view key, memgov::window_chunk&& chunk, std::uint64_t seq, std::uint64_t offset,
                 std::shared_ptr<memgov::session_budget> budget = {}, std::size_t extra_charged = 0) noexcept;

    /// Counts a loss that happened before the producer (in the gateway).
    void count_loss(std::string_view reason, std::uint64_t bytes, std::uint64_t messages = 1);

    /// Waits up to `timeout` for every queued message's delivery report; what is still queued
    /// then is purged and counted ("delivery:_PURGE_QUEUE" / "_PURGE_INFLIGHT"). Returns how
    /// many messages were purged.
    std::uint64_t flush(std::chrono::milliseconds timeout);

    /// A copy of the counters.
    [[nodiscard]] producer_stats stats() const;

    /// The mock cluster handle (rd_kafka_mock_cluster_t*), for fault injection in tests;
    /// nullptr when brokers were given.
    [[nodiscard]] void* mock_cluster() const noexcept;

    /// Takes the mock cluster's brokers `ids` (empty: all) down, or brings them back up.
    /// Returns how many it changed; 0 without a mock cluster. Throws `std::invalid_argument`
    /// for an id outside 1..mock_brokers. Blocks until the cluster's thread applied it
    /// (milliseconds): call it from a thread of its own, not an I/O thread.
    int mock_set_brokers_down(const std::vector<int>& ids, bool down);
    /// Makes the mock cluster fail its next `count` Produce requests with `error` (a
    /// `rd_kafka_resp_err_t`). Returns whether it did (false without a mock cluster).
    bool mock_push_produce_errors(int count, int error);

private:
    struct impl;
    std::unique_ptr<impl> m;
};

/// Runs `faults` against `producer`'s mock cluster: sleeps until each step's time (counted from
/// this call), applies it and tells `log` what it did; returns when every step ran or `stop` is
/// requested. A stop during an outage brings the brokers back up first. `outages` and `errors`
/// (may be null) count the outages started and the produce errors pushed.
void run_mock_faults(kafka_producer& producer, const mock_faults& faults, const std::stop_token& stop,
                     const std::function<void(const std::string&)>& log, std::atomic<std::uint64_t>* outages = nullptr,
                     std::atomic<std::uint64_t>* errors = nullptr);

} // namespace gateway
