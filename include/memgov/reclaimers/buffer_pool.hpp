// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// `buffer_pool_reclaimer`: lets the evictor (and so the governor) reclaim idle capacity from a
/// `buffer_pool`. It answers `trim_pools` with `trim(target, budget)`: frees what the step wants
/// (all idle at emergency), largest class first, at most `budget` buffers a step; reports bytes
/// and buffers; follows the level with `set_pressure`. The pool must outlive the adapter's
/// registration (see `memgov/reclaimers/common.hpp`).

#include <memgov/buffer_pool.hpp>
#include <memgov/config.hpp>
#include <memgov/evictor.hpp>
#include <memgov/metrics.hpp>
#include <memgov/pressure_level.hpp>
#include <memgov/reclaimers/common.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

MEMGOV_NAMESPACE_BEGIN

/// Reclaims idle capacity from a `buffer_pool`.
/// Thread safety: as `reclaimer`; the pool itself is thread-safe.
class buffer_pool_reclaimer final : public pool_reclaimer_base<buffer_pool> {
public:
    /// `pool` must outlive this adapter's registration. Throws `std::invalid_argument` if
    /// `name` is empty.
    explicit buffer_pool_reclaimer(buffer_pool& pool, std::string name = "buffer_pool")
        : pool_reclaimer_base{pool, std::move(name), "buffer_pool_reclaimer"} {}

    /// Frees idle depot buffers until the depots hold `idle − bytes_wanted` (nothing at
    /// emergency), the largest class first, and at most `req.budget` buffers per call: the
    /// budget counts buffers freed, so one step frees at most `budget × max_pooled_size()`
    /// bytes and makes at most `budget` upstream frees (`buffer_pool::trim(target,
    /// max_buffers)`). Reports the bytes and the buffers freed. The thread caches of other
    /// threads are bounded and flushed on their next operation (see buffer_pool.hpp).
    reclaim_result reclaim(const reclaim_request& req) noexcept override {
        if (req.action != reclaim_action::trim_pools) return {};
        const std::size_t idle = m_pool.idle_bytes();
        std::size_t target = idle > req.bytes_wanted ? idle - req.bytes_wanted : 0;
        if (req.level >= pressure_level::emergency) target = 0;
        const buffer_pool_trim_result r = m_pool.trim(target, req.budget);
        return {r.bytes, r.buffers};
    }
    [[nodiscard]] double reuse_rate() const noexcept override {
        try {
            const auto s = m_pool.stats();
            std::uint64_t acq = 0;
            std::uint64_t hits = 0;
            for (const auto& c : s.classes) {
                acq += c.acquisitions;
                hits += c.thread_cache_hits + c.depot_hits;
            }
            return acq == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(acq);
        } catch (...) {
            return -1.0;
        }
    }
    void collect(metric_sink& sink) const override {
        const auto s = m_pool.stats();
        for (const auto& c : s.classes) {
            const std::string size = std::to_string(c.size);
            const auto counter = [&](std::string_view n, std::string_view help, std::uint64_t v) {
                sink.sample(n, help, metric_type::counter, {{"pool", m_name}, {"class", size}}, static_cast<double>(v));
            };
            const auto gauge = [&](std::string_view n, std::string_view help, std::size_t v) {
                sink.sample(n, help, metric_type::gauge, {{"pool", m_name}, {"class", size}}, static_cast<double>(v));
            };
            counter("buffer_pool_acquisitions_total", "Buffers handed out", c.acquisitions);
            counter("buffer_pool_thread_cache_hits_total", "Acquisitions served by the thread cache",
                    c.thread_cache_hits);
            counter("buffer_pool_depot_hits_total", "Acquisitions served by the depot", c.depot_hits);
            counter("buffer_pool_misses_total", "Acquisitions allocated from upstream", c.misses);
            counter("buffer_pool_remote_releases_total", "Buffers released on another thread", c.remote_releases);
            counter("buffer_pool_trimmed_bytes_total", "Idle bytes freed by trims and cap cuts", c.trimmed_bytes);
            gauge("buffer_pool_in_use_bytes", "Capacity of buffers handed out", c.in_use_bytes);
            gauge("buffer_pool_idle_bytes", "Idle bytes in depot and thread caches", c.idle_bytes);
            gauge("buffer_pool_harmful_bytes", "Capacity handed out beyond what was asked", c.harmful_bytes);
        }
        sink.sample("buffer_pool_oversize_total", "Requests larger than the largest class", metric_type::counter,
                    {{"pool", m_name}}, static_cast<double>(s.oversize_acquisitions));
    }
};

MEMGOV_NAMESPACE_END
