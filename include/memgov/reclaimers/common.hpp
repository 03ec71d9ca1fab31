// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// What the reclaimer adapters (`memgov/reclaimers/*.hpp`) share: `pool_reclaimer_base`, the
/// part both pool adapters have in common (the name check, `detail::reclaimer_name`, is the
/// evictor's, which `function_reclaimer` uses too).
/// It knows the evictor's `reclaimer` interface but no part: each adapter header includes the
/// one part it adapts.
///
/// An adapter holds a reference: the part must outlive its registration, so unregister the
/// adapter (`governor::unregister_reclaimer`, `evictor::remove`) before destroying the part,
/// or destroy the governor first. Each adapter also reports the part's statistics as metrics.

#include <memgov/config.hpp>
#include <memgov/evictor.hpp>
#include <memgov/pressure_level.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

MEMGOV_NAMESPACE_BEGIN

/// The part every pool adapter shares: a name, `trim_pools` as the one action, the pool's
/// idle bytes as the estimate, and the level passed on to `set_pressure`.
template <class Pool>
class pool_reclaimer_base : public reclaimer {
public:
    [[nodiscard]] std::string_view name() const noexcept override { return m_name; }
    [[nodiscard]] bool handles(reclaim_action a) const noexcept override { return a == reclaim_action::trim_pools; }
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

MEMGOV_NAMESPACE_END
