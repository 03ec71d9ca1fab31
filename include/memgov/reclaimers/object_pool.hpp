// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// `object_pool_reclaimer<Pool>`: lets the evictor (and so the governor) reclaim idle objects
/// from an `object_pool`. It answers `trim_pools` with `trim(now, budget)`: frees objects past
/// their tier's (pressure-shortened) lifetime; all but the reserve at emergency. The pool must
/// outlive the adapter's registration (see `memgov/reclaimers/common.hpp`).

#include <memgov/config.hpp>
#include <memgov/evictor.hpp>
#include <memgov/metrics.hpp>
#include <memgov/object_pool.hpp>
#include <memgov/reclaimers/common.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

MEMGOV_NAMESPACE_BEGIN

/// Reclaims idle objects from an `object_pool<T, ...>`.
template <class Pool>
class object_pool_reclaimer final : public pool_reclaimer_base<Pool> {
    using base = pool_reclaimer_base<Pool>;
    using base::m_name;
    using base::m_pool;

public:
    /// `pool` must outlive this adapter's registration. Throws `std::invalid_argument` if
    /// `name` is empty.
    explicit object_pool_reclaimer(Pool& pool, std::string name = "object_pool")
        : base{pool, std::move(name), "object_pool_reclaimer"} {}

    /// Frees up to `budget` idle objects that outlived their tier (all but the reserve at
    /// emergency, where the pool's own pressure rule applies).
    reclaim_result reclaim(const reclaim_request& req) noexcept override {
        if (req.action != reclaim_action::trim_pools) return {};
        const auto r = m_pool.trim(req.now, req.budget);
        return {r.freed_bytes, r.objects}; // the slots stay in their blocks, for reuse
    }
    /// For `trim_pools`: the heap the idle objects retain beyond their slots, which is what
    /// trimming all of them would give back (their slots stay allocated for reuse). Costs one
    /// `stats()` call (a system call where the pool's fence needs one).
    [[nodiscard]] std::size_t estimate(reclaim_action a) const noexcept override {
        if (a != reclaim_action::trim_pools) return 0;
        const auto s = m_pool.stats();
        const std::size_t slots = s.idle_objects * sizeof(typename Pool::value_type);
        return s.idle_bytes > slots ? s.idle_bytes - slots : 0;
    }
    [[nodiscard]] double reuse_rate() const noexcept override { return m_pool.stats().reuse_rate(); }
    void collect(metric_sink& sink) const override {
        const auto s = m_pool.stats();
        const auto counter = [&](std::string_view n, std::string_view help, std::uint64_t v) {
            sink.sample(n, help, metric_type::counter, {{"pool", m_name}}, static_cast<double>(v));
        };
        counter("object_pool_acquisitions_total", "Objects handed out", s.acquisitions);
        counter("object_pool_reuses_total", "Acquisitions served by an idle object", s.reuses);
        counter("object_pool_constructions_total", "Objects constructed", s.constructions);
        counter("object_pool_stale_handles_total", "Stale handles detected", s.stale_handles);
        counter("object_pool_trimmed_bytes_total", "Bytes freed by trims", s.trimmed_bytes);
        sink.sample("object_pool_idle_objects", "Idle objects", metric_type::gauge, {{"pool", m_name}},
                    static_cast<double>(s.idle_objects));
        sink.sample("object_pool_retained_bytes", "Bytes held by the pool's objects", metric_type::gauge,
                    {{"pool", m_name}}, static_cast<double>(s.retained_bytes));
    }
};

MEMGOV_NAMESPACE_END
