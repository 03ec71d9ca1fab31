// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// `session_map_reclaimer<Map>`: lets the evictor (and so the governor) sweep and evict
/// sessions from a `session_map`. It answers sweep_expired, evict_by_age, evict_over_cost,
/// evict_largest and evict_lru with `sweep`, `evict_older_than`, `evict_over_cost`,
/// `evict_largest` and `evict_lru_until`, each within the step's budget (for largest and LRU:
/// `budget` evictions, at most `lru_samples` entries examined each; largest stops once the step
/// has what it wants); `no_evict` entries are spared by the map. The map must outlive the
/// adapter's registration (see `memgov/reclaimers/common.hpp`).

#include <memgov/config.hpp>
#include <memgov/detail/saturate.hpp>
#include <memgov/evictor.hpp>
#include <memgov/metrics.hpp>
#include <memgov/reclaimers/common.hpp>
#include <memgov/session_map.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

MEMGOV_NAMESPACE_BEGIN

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
            case reclaim_action::sweep_expired:
                r = m_map.sweep(req.now, req.budget);
                break;
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
            default:
                return {};
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
        sink.sample("sessions_cost_bytes", "Byte cost of the sessions in the map", metric_type::gauge,
                    {{"map", m_name}}, static_cast<double>(s.total_cost));
        for (std::size_t r = 0; r < evict_reason_count; ++r) {
            sink.sample("session_evictions_total", "Sessions removed, by reason", metric_type::counter,
                        {{"map", m_name}, {"reason", to_string(static_cast<evict_reason>(r))}},
                        static_cast<double>(s.evictions[r]));
        }
        sink.sample("session_sweep_work_total", "Entries examined by sweeps", metric_type::counter, {{"map", m_name}},
                    static_cast<double>(s.sweep_work));
        sink.sample("session_pinned_at_eviction_total", "Removals that found the entry in use", metric_type::counter,
                    {{"map", m_name}}, static_cast<double>(s.pinned_at_eviction));
    }

private:
    // Entries the map may examine for `budget` evictions: `lru_samples` each.
    [[nodiscard]] std::size_t work_for(std::size_t budget) const noexcept {
        const std::size_t samples = m_map.config().lru_samples;
        return budget > std::numeric_limits<std::size_t>::max() / samples ? std::numeric_limits<std::size_t>::max()
                                                                          : budget * samples;
    }

    Map& m_map;
    std::string m_name;
};

MEMGOV_NAMESPACE_END
