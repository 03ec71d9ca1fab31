// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Adapters that let the evictor (and so the governor) reclaim from memgov's own parts:
///
/// | adapter | answers | does |
/// |---|---|---|
/// | `buffer_pool_reclaimer` | trim_pools | `trim(target, budget)`: frees what the step wants (all idle at emergency), largest class first, at most `budget` buffers a step; reports bytes and buffers; follows the level with `set_pressure` |
/// | `object_pool_reclaimer<Pool>` | trim_pools | `trim(now, budget)`: frees objects past their tier's (pressure-shortened) lifetime; all but the reserve at emergency |
/// | `session_map_reclaimer<Map>` | sweep_expired, evict_by_age, evict_over_cost, evict_largest, evict_lru | `sweep`, `evict_older_than`, `evict_over_cost`, `evict_largest`, `evict_lru_until`, each within the step's budget (for largest and LRU: `budget` evictions, at most `lru_samples` entries examined each; largest stops once the step has what it wants); `no_evict` entries are spared by the map |
///
/// An adapter holds a reference: the part must outlive its registration, so unregister the
/// adapter (`governor::unregister_reclaimer`, `evictor::remove`) before destroying the part,
/// or destroy the governor first. Each adapter also reports the part's statistics as metrics.

#include <memgov/buffer_pool.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/saturate.hpp>
#include <memgov/evictor.hpp>
#include <memgov/metrics.hpp>
#include <memgov/object_pool.hpp>
#include <memgov/pressure_level.hpp>
#include <memgov/session_map.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

MEMGOV_NAMESPACE_BEGIN

namespace detail {
inline std::string reclaimer_name(std::string name, const char* what) {
    if (name.empty()) {
        throw std::invalid_argument{std::string{"memgov::"} + what + ": name is empty"};
    }
    return name;
}
} // namespace detail

/// The part every pool adapter shares: a name, `trim_pools` as the one action, the pool's
/// idle bytes as the estimate, and the level passed on to `set_pressure`.
template <class Pool>
class pool_reclaimer_base : public reclaimer {
public:
    [[nodiscard]] std::string_view name() const noexcept override { return m_name; }
    [[nodiscard]] bool handles(reclaim_action a) const noexcept override {
        return a == reclaim_action::trim_pools;
    }
    [[nodiscard]] std::size_t estimate(reclaim_action a) const noexcept override {
        return a == reclaim_action::trim_pools ? m_pool.idle_bytes() : 0;
    }
    void on_level(pressure_level level) noexcept override { m_pool.set_pressure(level); }

protected:
    /// Throws `std::invalid_argument` if `name` is empty (`what` names the adapter).
    pool_reclaimer_base(Pool& pool, std::string name, const char* what)
        : m_pool{pool}, m_name{detail::reclaimer_name(std::move(name), what)} {}

    Pool& m_pool;
    std::string m_name;
};

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
                sink.sample(n, help, metric_type::counter, {{"pool", m_name}, {"class", size}},
                            static_cast<double>(v));
            };
            const auto gauge = [&](std::string_view n, std::string_view help, std::size_t v) {
                sink.sample(n, help, metric_type::gauge, {{"pool", m_name}, {"class", size}},
                            static_cast<double>(v));
            };
            counter("buffer_pool_acquisitions_total", "Buffers handed out", c.acquisitions);
            counter("buffer_pool_thread_cache_hits_total", "Acquisitions served by the thread cache",
                    c.thread_cache_hits);
            counter("buffer_pool_depot_hits_total", "Acquisitions served by the depot", c.depot_hits);
            counter("buffer_pool_misses_total", "Acquisitions allocated from upstream", c.misses);
            counter("buffer_pool_remote_releases_total", "Buffers released on another thread",
                    c.remote_releases);
            counter("buffer_pool_trimmed_bytes_total", "Idle bytes freed by trims and cap cuts",
                    c.trimmed_bytes);
            gauge("buffer_pool_in_use_bytes", "Capacity of buffers handed out", c.in_use_bytes);
            gauge("buffer_pool_idle_bytes", "Idle bytes in depot and thread caches", c.idle_bytes);
            gauge("buffer_pool_harmful_bytes", "Capacity handed out beyond what was asked",
                  c.harmful_bytes);
        }
        sink.sample("buffer_pool_oversize_total", "Requests larger than the largest class",
                    metric_type::counter, {{"pool", m_name}},
                    static_cast<double>(s.oversize_acquisitions));
    }
};

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
        sink.sample("object_pool_idle_objects", "Idle objects", metric_type::gauge,
                    {{"pool", m_name}}, static_cast<double>(s.idle_objects));
        sink.sample("object_pool_retained_bytes", "Bytes held by the pool's objects",
                    metric_type::gauge, {{"pool", m_name}}, static_cast<double>(s.retained_bytes));
    }
};

/// Sweeps and evicts sessions from a `session_map<K, V, ...>`.
template <class Map>
class session_map_reclaimer final : public reclaimer {
public:
    /// `map` must outlive this adapter's registration. Throws `std::invalid_argument` if
    /// `name` is empty.
    explicit session_map_reclaimer(Map& map, std::string name = "sessions")
        : m_map{map}, m_name{detail::reclaimer_name(std::move(name), "session_map_reclaimer")} {}

    [[nodiscard]] std::string_view name() const noexcept override { return m_name; }
    [[nodiscard]] bool handles(reclaim_action a) const noexcept override {
        return a == reclaim_action::sweep_expired || a == reclaim_action::evict_by_age ||
               a == reclaim_action::evict_over_cost || a == reclaim_action::evict_largest ||
               a == reclaim_action::evict_lru;
    }
    /// An upper bound: the map's total cost for the evictions, 0 for the sweep (what expires is
    /// known only by sweeping).
    [[nodiscard]] std::size_t estimate(reclaim_action a) const noexcept override {
        if (a == reclaim_action::sweep_expired || !handles(a)) return 0;
        const std::int64_t c = m_map.total_cost();
        return c > 0 ? static_cast<std::size_t>(c) : 0;
    }
    reclaim_result reclaim(const reclaim_request& req) noexcept override {
        try {
            evict_result r;
            switch (req.action) {
            case reclaim_action::sweep_expired: r = m_map.sweep(req.now, req.budget); break;
            case reclaim_action::evict_by_age:
                r = m_map.evict_older_than(req.max_age, req.budget);
                break;
            case reclaim_action::evict_over_cost:
                // A cap beyond any real cost saturates: nothing is over it.
                r = m_map.evict_over_cost(detail::saturating_cast<std::int64_t>(req.cost_cap), req.budget);
                break;
            case reclaim_action::evict_lru: {
                const std::int64_t total = m_map.total_cost();
                const auto want = detail::saturating_cast<std::int64_t>(req.bytes_wanted);
                // The ladder's budget counts sessions evicted; the map counts entries sampled,
                // `lru_samples` per eviction.
                r = m_map.evict_lru_until(total > want ? total - want : 0, work_for(req.budget));
                break;
            }
            case reclaim_action::evict_largest: {
                // One at a time, the largest first, until the step has what it wants or the
                // budget (sessions evicted) is spent: a giant may cover the need alone. Nothing
                // is wanted, nothing goes: "largest" is relative and needs a reason. The work
                // (entries examined, `no_evict` ones included) is bounded as for LRU.
                const auto want = detail::saturating_cast<std::int64_t>(req.bytes_wanted);
                const std::size_t work = work_for(req.budget);
                while (r.evicted < req.budget && r.bytes < want && r.work < work) {
                    const evict_result one = m_map.evict_largest(1, work - r.work, req.largest_floor);
                    r.evicted += one.evicted;
                    r.bytes += one.bytes;
                    r.work += one.work;
                    if (one.evicted == 0) break;
                }
                break;
            }
            default: return {};
            }
            return {r.bytes > 0 ? static_cast<std::size_t>(r.bytes) : 0, r.evicted};
        } catch (...) {
            return {}; // an eviction callback threw: what it removed is still counted by the map
        }
    }
    void collect(metric_sink& sink) const override {
        const auto s = m_map.stats();
        sink.sample("sessions", "Sessions in the map", metric_type::gauge, {{"map", m_name}},
                    static_cast<double>(s.size));
        sink.sample("sessions_cost_bytes", "Byte cost of the sessions in the map",
                    metric_type::gauge, {{"map", m_name}}, static_cast<double>(s.total_cost));
        for (std::size_t r = 0; r < evict_reason_count; ++r) {
            sink.sample("session_evictions_total", "Sessions removed, by reason",
                        metric_type::counter,
                        {{"map", m_name}, {"reason", to_string(static_cast<evict_reason>(r))}},
                        static_cast<double>(s.evictions[r]));
        }
        sink.sample("session_sweep_work_total", "Entries examined by sweeps", metric_type::counter,
                    {{"map", m_name}}, static_cast<double>(s.sweep_work));
        sink.sample("session_pinned_at_eviction_total", "Removals that found the entry in use",
                    metric_type::counter, {{"map", m_name}},
                    static_cast<double>(s.pinned_at_eviction));
    }

private:
    // Entries the map may examine for `budget` evictions: `lru_samples` each.
    [[nodiscard]] std::size_t work_for(std::size_t budget) const noexcept {
        const std::size_t samples = m_map.config().lru_samples;
        return budget > std::numeric_limits<std::size_t>::max() / samples
                   ? std::numeric_limits<std::size_t>::max()
                   : budget * samples;
    }

    Map& m_map;
    std::string m_name;
};

MEMGOV_NAMESPACE_END
