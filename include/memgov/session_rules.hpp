// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// What a `session_map` user states about how sessions end: the reasons an entry leaves the map
/// (`evict_reason`), the metadata the rules read (`session_info`), user orphan rules
/// (`orphan_rule`) and the callbacks that carry them (`session_map_hooks`). The built-in rules'
/// durations are fields of `session_map_config` (`<memgov/session_map.hpp>`, which includes
/// this header); docs/session-map.md describes the five built-in rules and the order in which
/// all rules are evaluated.

#include <memgov/clock.hpp>
#include <memgov/config.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

MEMGOV_NAMESPACE_BEGIN

/// Why an entry left a `session_map`. Passed to `on_evict` and counted in `stats()`.
enum class evict_reason : std::uint8_t {
    erased = 0,                  ///< `erase(key)`.
    replaced = 1,                ///< `upsert(key, make)` replaced it with a new session.
    expired_idle = 2,            ///< Rule 3: idle for `idle_ttl`.
    expired_absolute = 3,        ///< Rule 4: older than `absolute_ttl`.
    ended = 4,                   ///< Rule 2: ended and `ended_grace` past the end.
    orphan = 5,                  ///< Rule 1 (inconsistent state) or a user rule.
    suspicious = 6,              ///< Rule 5: old, idle and nearly silent.
    age_under_pressure = 7,      ///< `evict_older_than`.
    over_cost = 8,               ///< `evict_over_cost`.
    lru_under_pressure = 9,      ///< `evict_lru_until`.
    largest_under_pressure = 10, ///< `evict_largest`.
    cleared = 11                 ///< `clear()` or the map's destruction.
};

/// Number of `evict_reason` values.
inline constexpr std::size_t evict_reason_count = 12;

/// The reason's name in snake_case ("erased" ... "cleared").
/// Thread safety: pure. Complexity: O(1).
[[nodiscard]] constexpr std::string_view to_string(evict_reason r) noexcept {
    switch (r) {
    case evict_reason::erased:
        return "erased";
    case evict_reason::replaced:
        return "replaced";
    case evict_reason::expired_idle:
        return "expired_idle";
    case evict_reason::expired_absolute:
        return "expired_absolute";
    case evict_reason::ended:
        return "ended";
    case evict_reason::orphan:
        return "orphan";
    case evict_reason::suspicious:
        return "suspicious";
    case evict_reason::age_under_pressure:
        return "age_under_pressure";
    case evict_reason::over_cost:
        return "over_cost";
    case evict_reason::lru_under_pressure:
        return "lru_under_pressure";
    case evict_reason::largest_under_pressure:
        return "largest_under_pressure";
    case evict_reason::cleared:
        return "cleared";
    }
    return "unknown";
}

/// A copy of one entry's metadata.
struct session_info {
    time_point created{};     ///< When the session was inserted.
    time_point last_active{}; ///< The last `with`/`with_shared` (or insertion).
    /// Set once `mark_ended` was called: the time of that first call, or of the last activity
    /// after it if there was any (ending counts as activity, and the grace period runs from
    /// here, so a session still in use after its end is not reaped under its user).
    std::optional<time_point> ended_at;
    std::uint32_t messages = 0; ///< `with`/`with_shared` calls in its life (saturates).
    std::int64_t cost = 0;      ///< Bytes it is charged for.
    bool no_evict = false;      ///< Exempt from pressure eviction.

    /// Whether `mark_ended` was called. Thread safety: const. Complexity: O(1).
    [[nodiscard]] bool ended() const noexcept { return ended_at.has_value(); }
    /// Time since creation at `now`. Thread safety: const. Complexity: O(1).
    [[nodiscard]] duration age(time_point now) const noexcept { return now - created; }
    /// Time since last activity at `now`. Thread safety: const. Complexity: O(1).
    [[nodiscard]] duration idle(time_point now) const noexcept { return now - last_active; }
};

/// A user orphan rule. The sweep evicts an entry, with `reason`, when `applies(info, now)` is
/// true and, if `confirm` is set, `confirm(key, value)` is true under the entry's shared lock
/// (tried, never waited for: a busy entry is re-checked at the next tick).
/// `applies` and `earliest` run under the shard lock (and `applies` of a rule with `confirm`
/// again under the entry's shared lock, when an earlier rule's value check did not hold):
/// they must be cheap, must not throw and must not call into the map. `confirm` runs under
/// the entry's shared lock only; if it throws the rule does not hold (later rules still may).
template <class Key, class Value>
struct orphan_rule {
    std::string name;                           ///< For diagnostics.
    evict_reason reason = evict_reason::orphan; ///< Reported to `on_evict` and stats.
    /// Required: whether the rule holds for this metadata at `now`.
    std::function<bool(const session_info&, time_point now)> applies{};
    /// Optional: the earliest time `applies` can become true (a lower bound that may only move
    /// later as the entry lives; nullopt: never). Without it, or once that time has passed and
    /// the rule did not hold, the rule is checked every `check_interval`.
    std::function<std::optional<time_point>(const session_info&)> earliest{};
    /// Optional: a look at the value, under the entry's shared lock.
    std::function<bool(const Key&, const Value&)> confirm{};
};

/// Callbacks of a `session_map`. All are called concurrently from any thread and must be
/// thread-safe.
template <class Key, class Value>
struct session_map_hooks {
    /// Called exactly once per entry that leaves the map, before the value is destroyed, never
    /// under a shard lock or the entry's own lock (see `<memgov/session_map.hpp>` for what the
    /// removing thread may hold). Must not throw (the map calls it from noexcept code); the key is already
    /// gone, so a lookup of it simply misses.
    std::function<void(const Key&, Value&, evict_reason)> on_evict;
    /// Rule 1, "inconsistent state": true evicts the entry (reason `orphan`). Checked under
    /// the entry's shared lock every `check_interval`, after the user rules' value checks; if
    /// it throws the entry is kept.
    std::function<bool(const Key&, const Value&)> inconsistent;
    /// Further rules, checked after the built-in ones.
    std::vector<orphan_rule<Key, Value>> rules;
};

MEMGOV_NAMESPACE_END
