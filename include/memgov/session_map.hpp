// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// `session_map<Key, Value>`: a sharded concurrent map of long-lived sessions with two-level
/// locking, idle/absolute/ended expiry, pluggable orphan rules, an incremental sweep whose cost
/// follows what expires, pressure eviction by age, cost, recency and size, and an eviction
/// callback that runs exactly once per removed entry, after the last user lets go of it.
/// docs/session-map.md describes the expiry and orphan rules (their types are in
/// `<memgov/session_rules.hpp>`), the sweep and the eviction strategies; this comment states
/// the locking contract and the lock order.
///
/// ## Locking model
/// - **Shard lock** (one per shard, a spinlock that backs off and then yields): guards
///   structure: the lookup table, the expiry wheel, the creation-order list, the cost
///   buckets and node storage, and the writes of the entries' touch fields (last-active and
///   the message count, set while the entry is pinned). It is a *leaf* lock: while it is
///   held nothing waits for another map lock and no user callback runs, except the metadata
///   predicates of user orphan rules
///   (`orphan_rule::applies`, `orphan_rule::earliest`) and `for_each_info`'s visitor, which
///   must be cheap and must not call into the map. The user's types do run under it, and
///   must not call into the map either: `Hash`, `KeyEqual`, `Clock::now()` (clock mode), the
///   key's copy constructor and the value's move constructor (on insertion), and the
///   allocator when the table or node storage grows.
/// - **Entry lock** (one per entry, shared or exclusive): guards the session's value. User
///   callbacks (`with`, `with_shared`, `inspect`, the `upsert` update function) run under it.
///   It prefers neither side: a steady stream of shared holders can keep an exclusive one
///   waiting. At most 8191 threads hold one entry shared at once (more wait), and at most
///   65535 threads may be inside or waiting on one entry at once.
/// - **Pins**: `with(key, fn)` finds the entry and pins it under the shard lock, releases the
///   shard lock, then takes the entry lock and runs `fn`. A pinned entry is never freed.
/// - **Turns**: one thread at a time sweeps, and one at a time evicts under pressure; the
///   others wait for their turn. Neither turn is held by request paths.
///
/// **Lock order:** sweep or eviction turn, then entry lock, then shard lock. A thread holding
/// an entry lock may take a shard lock (for example `entry::set_no_evict`,
/// `entry::mark_ended`, or `erase` of another key from inside a callback); a thread holding
/// a shard lock never waits for an entry lock (the sweep only *tries* entry locks).
/// `on_evict` never runs under a shard lock or the removed entry's lock; see "Eviction
/// callback" for what the removing thread may still hold. The sweep and the `evict_*` calls
/// only try entry locks, so they may be called from inside a callback, unless `on_evict`
/// waits for entry locks (`with` on other keys): that would wait against the turn's order.
///
/// **Re-entry:** calling `with`, `with_shared`, `inspect`, `set_cost`, `erase_if` or
/// `upsert`-with-update on the key whose callback the thread is already inside would deadlock,
/// and is forbidden.
/// It is detected (up to 8 nested callbacks deep) and throws `std::logic_error` instead.
/// Structure operations on that same key (`erase`, `mark_ended`, `contains`, `info`,
/// `upsert` that replaces) are allowed from inside its callback. Holding callbacks on two
/// different keys at once is allowed but, as with any pair of locks, two threads that nest
/// them in opposite orders can deadlock.
///
/// ## Eviction callback
/// `on_evict(key, value&, reason)` runs exactly once for every entry that leaves the map,
/// before the value is destroyed, never under a shard lock or the removed entry's own lock.
/// An entry removed while another thread is inside its callback vanishes from lookups at once;
/// its `on_evict` and destruction run on the thread whose pin is released last (possibly a
/// request thread). It runs on the thread that removed the entry, inside whatever that thread
/// holds: the sweep's or the eviction turn (a `sweep` or `evict_*` called from it on the
/// same map returns at once with nothing done), or the entry lock of a callback the thread is
/// in (an `erase(b)` inside `with(a, ...)` runs `b`'s `on_evict` there, so that `on_evict`
/// must not enter `a`).

#include <memgov/clock.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/owned_mutex.hpp>
#include <memgov/detail/saturate.hpp>
#include <memgov/detail/session_map_eviction.hpp>
#include <memgov/detail/session_map_index.hpp>
#include <memgov/detail/session_map_node.hpp>
#include <memgov/detail/session_map_slab.hpp>
#include <memgov/detail/session_map_sync.hpp>
#include <memgov/detail/session_map_wheel.hpp>
#include <memgov/detail/validate.hpp>
#include <memgov/ledger.hpp>
#include <memgov/session_rules.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

MEMGOV_NAMESPACE_BEGIN

/// Where `with`/`with_shared` take the last-active time from.
enum class touch_time : std::uint8_t {
    clock, ///< Read the clock on every access: exact.
    coarse ///< Use the time last given to `tick(now)` or `sweep(now, ...)`: one relaxed load.
           ///< Last-active is then as fresh as the ticks; tick at least as often as the
           ///< resolution you need (a tenth of `idle_ttl` is plenty). Until the first `tick`
           ///< or `sweep`, touches read the clock as in `clock` mode, so a map that is not
           ///< ticked yet never ages its sessions; insertion and `mark_ended` always read it.
};

/// Configuration of a `session_map`. Durations equal to `never` disable their rule.
struct session_map_config {
    /// A duration that disables a rule.
    static constexpr duration never = duration::max();

    std::size_t shards = 64;                                  ///< Power of two, 1..65536.
    duration idle_ttl = std::chrono::minutes{10};             ///< Rule 3.
    duration absolute_ttl = std::chrono::hours{1};            ///< Rule 4.
    duration ended_grace = std::chrono::seconds{60};          ///< Rule 2 (0: at the next sweep).
    duration suspicious_age = std::chrono::minutes{20};       ///< Rule 5: at least this old,
    duration suspicious_idle = std::chrono::minutes{10};      ///< idle at least this long,
    std::uint32_t suspicious_min_messages = 3;                ///< and fewer messages than this.
    duration check_interval = std::chrono::seconds{60};       ///< Rule 1 and rules without `earliest`.
    duration sweep_resolution = std::chrono::milliseconds{1}; ///< The expiry wheel's tick.
    std::size_t lru_samples = 16;                             ///< Entries sampled per LRU step, 1..1024.
    touch_time touch = touch_time::clock;                     ///< See `touch_time`.
    category ledger_category = category::sessions;            ///< Where costs are charged.
    category storage_category = category::session_storage;    ///< Where the map's own storage is charged.
};

/// Metadata to give a new entry at insertion, so that it is never visible without it.
struct session_options {
    bool no_evict = false; ///< Exempt from pressure eviction from the start.
    /// Initial cost in bytes (negative counts as 0; saturates at 2^60 - 1). With a cost policy
    /// (see `value_cost`), 0 means "the policy's cost of the new value".
    std::int64_t cost = 0;
};

namespace detail::session_cost_lookup {
// Stops unqualified lookup here, so only argument-dependent lookup finds a user's
// `session_cost`.
void session_cost() = delete;

template <class V>
concept by_function = requires(const V& v) {
    { session_cost(v) } -> std::convertible_to<std::int64_t>;
};
template <class V>
concept by_held_bytes = requires(const V& v) {
    { v.held_bytes() } -> std::convertible_to<std::size_t>;
};

template <class V>
[[nodiscard]] constexpr std::int64_t of(const V& v) noexcept(noexcept(session_cost(v))) requires by_function<V> {
    return static_cast<std::int64_t>(session_cost(v));
}
template <class V>
[[nodiscard]] constexpr std::int64_t of(const V& v) noexcept(noexcept(v.held_bytes())) requires(!by_function<V> &&
                                                                                                by_held_bytes<V>) {
    const std::size_t b = v.held_bytes();
    constexpr auto top = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
    return static_cast<std::int64_t>(b > top ? top : b);
}
} // namespace detail::session_cost_lookup

/// The default cost policy of a `session_map`: an entry's cost follows its value.
/// A value has a cost when `session_cost(value)` is found by argument-dependent lookup (a
/// function in the value type's namespace returning bytes as an integer), or else when it has
/// a member `held_bytes()` (as `sliding_window` does). For any other value type the policy
/// does not apply and the map evaluates nothing (costs are then only what `set_cost` says).
/// The function must be O(1) and `noexcept`, and must not call into the map.
/// Thread safety: stateless. Complexity: that of the value's function.
struct value_cost {
    /// Whether values of type `V` have a cost under this policy.
    template <class V>
    static constexpr bool applies_to =
        detail::session_cost_lookup::by_function<V> || detail::session_cost_lookup::by_held_bytes<V>;

    /// The cost of `v` in bytes.
    template <class V>
    requires applies_to<V>
    [[nodiscard]] constexpr std::int64_t operator()(const V& v) const
        noexcept(noexcept(detail::session_cost_lookup::of(v))) {
        return detail::session_cost_lookup::of(v);
    }
};

/// A cost policy under which costs never follow values: only `set_cost`, `add_cost` and
/// `session_options::cost` set them (for value types that have `held_bytes()` but whose cost
/// the service sets itself).
struct manual_cost {};

/// What a sweep or an eviction did.
struct evict_result {
    std::size_t evicted = 0; ///< Entries removed (their callbacks may still be pending on pins).
    std::int64_t bytes = 0;  ///< Sum of their costs at removal.
    std::size_t work = 0;    ///< Entries examined: the unit of `max_work` and `budget`.
    bool complete = false;   ///< Nothing left to do (sweep: nothing due; evictions: goal met).
};

/// A snapshot of a map's counters (each read atomically, not all at one instant).
struct session_map_stats {
    std::size_t size = 0;        ///< Entries in the map.
    std::int64_t total_cost = 0; ///< Sum of their costs.
    std::uint64_t hits = 0;      ///< Lookups by `with`/`with_shared`/`inspect`/`set_cost` that found.
    std::uint64_t misses = 0;    ///< ... that did not.
    std::uint64_t inserts = 0;   ///< Entries inserted (including replacements).
    std::array<std::uint64_t, evict_reason_count> evictions{}; ///< Removals by reason.
    std::uint64_t sweep_work = 0;                              ///< Entries examined by sweeps.
    std::uint64_t pinned_at_eviction = 0;                      ///< Removals that found the entry pinned.
    /// The map's own heap (not counting costs): its shards, node slabs and the vectors that
    /// hold them, and its lookup tables. What `storage_category` is charged.
    std::size_t structure_bytes = 0;

    /// Removals for `r`. Thread safety: const. Complexity: O(1).
    [[nodiscard]] std::uint64_t evicted(evict_reason r) const noexcept {
        return evictions[static_cast<std::size_t>(r)];
    }
    /// All removals. Thread safety: const. Complexity: O(reasons).
    [[nodiscard]] std::uint64_t evictions_total() const noexcept {
        std::uint64_t s = 0;
        for (std::uint64_t e : evictions) s += e;
        return s;
    }
};

/// A sharded concurrent map from session keys to session values, with two-level locking,
/// expiry, orphan rules, an incremental sweep and pressure eviction. See the file comment for
/// the locking model and the callback guarantees, and docs/session-map.md for the rules, the
/// sweep and the eviction strategies.
///
/// `Value` may be move-only; it must be move-constructible (a new value is built by the user's
/// make function outside any lock and moved in under the shard lock). `Hash` and `KeyEqual`
/// must not throw.
///
/// ## Costs
/// An entry's cost is the number of bytes it is charged for: pressure eviction by cost, by
/// size and LRU-until-a-total all read it. With a `Cost` policy that applies to `Value`
/// (`value_cost`, the default, applies to `sliding_window` and to any value with `held_bytes()`
/// or a `session_cost` function), the cost follows the value: the map sets it to
/// `Cost{}(value)` at insertion (unless `session_options::cost` is non-zero) and each time an
/// exclusive callback (`with`, the update function of `upsert`) returns or throws. An explicit
/// `entry::set_cost`/`add_cost` inside that callback wins: the policy is not evaluated when
/// that callback returns, and is again when the next exclusive callback that sets no cost
/// returns. `set_cost(key, bytes)` is explicit too. `with_shared` and `inspect` cannot change
/// the value and evaluate nothing. For other value types (or with `manual_cost`) nothing is
/// evaluated, and costs are only what the explicit calls set.
///
/// Costs are charged to the ledger given at construction under `config.ledger_category`
/// (`sessions`, an attribution by default: a window's bytes are the pool's). The map's own
/// storage is charged under `config.storage_category` (`session_storage`, counted): that is
/// memory no other part charges, and the charge is every byte the map allocates for itself
/// (its shards, node slabs and the vectors that hold them, its lookup tables), as asked of
/// the allocator: `stats().structure_bytes`.
template <class Key, class Value, clock_type Clock = steady_clock, class Hash = std::hash<Key>,
          class KeyEqual = std::equal_to<Key>, class Cost = value_cost>
class session_map {
    using node = detail::session_node<Key, Value>;
    struct shard;

public:
    /// Whether costs follow values (the `Cost` policy applies to `Value`).
    static constexpr bool cost_follows_value = std::is_invocable_v<const Cost&, const Value&>;
    static_assert(!cost_follows_value || std::is_nothrow_invocable_r_v<std::int64_t, const Cost&, const Value&>,
                  "memgov::session_map: the Cost policy must be noexcept and return bytes as an integer");

    using key_type = Key;                             ///< The key type.
    using mapped_type = Value;                        ///< The value type.
    using hooks_type = session_map_hooks<Key, Value>; ///< Callbacks.
    using rule_type = orphan_rule<Key, Value>;        ///< A user orphan rule.

    /// The entry a callback is running on. Valid only inside that callback; never store it.
    /// `with` passes a mutable one, `with_shared` and `inspect` a const one.
    class entry {
    public:
        entry(const entry&) = delete;
        entry& operator=(const entry&) = delete;
        ~entry() = default;

        /// The key. Thread safety: valid inside the callback. Complexity: O(1).
        [[nodiscard]] const Key& key() const noexcept { return m_node->key(); }
        /// A copy of the metadata. Thread safety: valid inside the callback. Complexity: O(1).
        [[nodiscard]] session_info info() const noexcept { return m_map->info_of(*m_node); }
        /// The cost in bytes. Thread safety: valid inside the callback. Complexity: O(1).
        [[nodiscard]] std::int64_t cost() const noexcept {
            return detail::session_cost_of(m_node->cost.load(std::memory_order_relaxed));
        }
        /// True if the entry was removed from the map while this callback holds it: it is no
        /// longer found, and its `on_evict` runs when the callback returns.
        /// Thread safety: valid inside the callback. Complexity: O(1).
        [[nodiscard]] bool evicted() const noexcept {
            return (m_node->state.load(std::memory_order_acquire) & detail::entry_state::dead) != 0;
        }
        /// Sets the cost to `bytes` (negative counts as 0; saturates at 2^60 - 1), updating the
        /// shard's total and the ledger. Only under the exclusive lock (`with`). With a cost
        /// policy, the explicit cost wins over the policy for this callback (see "Costs").
        /// Thread safety: valid inside the callback. Complexity: O(1); takes the shard lock
        /// only when the cost crosses a power of two.
        void set_cost(std::int64_t bytes) noexcept {
            m_cost_set = true;
            m_map->set_cost_of(*m_shard, m_idx, *m_node, bytes);
        }
        /// Adds `delta` (may be negative) to the cost. Same guarantees as `set_cost`.
        void add_cost(std::int64_t delta) noexcept {
            const std::int64_t c = cost(); // never negative, so only a large positive delta overflows
            constexpr std::int64_t top = std::numeric_limits<std::int64_t>::max();
            set_cost(delta > top - c ? top : c + delta);
        }
        /// Sets or clears `no_evict`. Takes the shard lock. Complexity: O(1).
        void set_no_evict(bool on) noexcept { m_map->set_no_evict_of(*m_shard, *m_node, on); }
        /// Marks the session ended now (the first call wins). Takes the shard lock.
        /// Complexity: O(1).
        void mark_ended() noexcept { m_map->mark_ended_of(*m_shard, m_idx, *m_node, m_map->now_ns()); }

    private:
        friend class session_map;
        entry(session_map* m, shard* s, std::uint32_t idx, node* n) noexcept
            : m_map{m}, m_shard{s}, m_idx{idx}, m_node{n} {}
        // The exclusive callback is over: the cost follows the value unless it was set.
        void follow_value() noexcept {
            if (!m_cost_set)
                m_map->set_cost_of(*m_shard, m_idx, *m_node, m_map->m_cost(std::as_const(m_node->value())));
        }
        session_map* m_map;
        shard* m_shard;
        std::uint32_t m_idx;
        node* m_node;
        bool m_cost_set = false;
    };

    /// A map configured by `config`, calling `hooks`, reading time from `clock`, and charging
    /// costs to `accounting` (nullptr: no accounting).
    /// Throws `std::invalid_argument` naming the bad field of `config`, `std::bad_alloc`.
    explicit session_map(session_map_config config = {}, hooks_type hooks = {}, Clock clock = Clock{},
                         ledger* accounting = nullptr)
        : m_config{validate(config, accounting)}, m_hooks{std::move(hooks)}, m_clock{std::move(clock)},
          m_ledger{accounting} {
        for (const rule_type& r : m_hooks.rules) {
            if (!r.applies) {
                throw std::invalid_argument{"memgov::session_map_hooks::rules: rule '" + r.name +
                                            "' has no applies predicate"};
            }
            if (!r.earliest || r.confirm) m_interval_rules = true;
        }
        if (m_hooks.inconsistent) m_interval_rules = true;
        m_shard_mask = m_config.shards - 1;
        m_shards = make_shards(m_config.shards);
        m_epoch = m_clock.now().time_since_epoch().count();
        m_resolution = m_config.sweep_resolution.count();
        m_lru = detail::session_lru_sampler{static_cast<std::uint64_t>(m_epoch)};
        charge_storage(static_cast<std::int64_t>(sizeof(shard) * m_config.shards));
    }

    session_map(const session_map&) = delete;
    session_map& operator=(const session_map&) = delete;

    /// Removes every entry (`on_evict` with `cleared`) and frees the storage. No callback may
    /// be running on this map. Thread safety: not concurrent with anything else on the map.
    ~session_map() {
        clear();
        charge_storage(-static_cast<std::int64_t>(sizeof(shard) * m_config.shards));
        for (std::size_t i = 0; i < m_config.shards; ++i) {
            shard& s = m_shards[i];
            charge_storage(-static_cast<std::int64_t>(s.structure_bytes.load(std::memory_order_relaxed)));
        }
    }

    // ---------------------------------------------------------------- access

    /// Finds `key`, pins it under the shard lock, releases the shard lock, takes the entry's
    /// exclusive lock and calls `fn(value)` or `fn(value, entry&)`. Counts as activity:
    /// updates last-active (the LRU position) and the message count.
    /// Returns false (and does not call `fn`) if the key is absent.
    /// Throws what `fn` throws (the locks are released), and `std::logic_error` on re-entry
    /// into a key this thread is already inside.
    /// Thread safety: safe from any thread. Complexity: O(1) expected; no allocation.
    template <class Fn>
    bool with(const Key& key, Fn&& fn) {
        return access<mode::write>(key, fn);
    }

    /// As `with`, under the entry's shared lock: `fn(const value&)` or
    /// `fn(const value&, const entry&)`. Counts as activity.
    template <class Fn>
    bool with_shared(const Key& key, Fn&& fn) {
        return access<mode::read>(key, fn);
    }

    /// As `with_shared` but does not count as activity (for monitors and scavengers).
    template <class Fn>
    bool inspect(const Key& key, Fn&& fn) {
        return access<mode::peek>(key, fn);
    }

    /// Inserts `make()` under `key` if the key is absent; returns whether it did. `make` is
    /// called outside any lock, and only if the key looked absent; if another thread inserts
    /// the key meanwhile, the made value is destroyed unused and false is returned.
    /// `options` sets `no_evict` and the cost before the entry becomes visible.
    /// Throws what `make` throws, `std::bad_alloc` (strong guarantee).
    /// Thread safety: safe from any thread. Complexity: O(1) amortized.
    template <class Make>
    bool insert(const Key& key, Make&& make, session_options options = {}) {
        const std::uint64_t h = hash_of(key);
        if (contains_hashed(key, h)) return false;
        detail::session_value_buffer<Value> value{make};
        return emplace(key, h, value.get(), false, options);
    }

    /// Inserts `make()` under `key`, replacing (`on_evict` with `replaced`) any session already
    /// there; returns true if there was none. A callback still running on the old session keeps
    /// it until it returns. `make` is called outside any lock. `options` as for `insert`.
    /// Throws what `make` throws, `std::bad_alloc` (strong guarantee).
    /// Thread safety: safe from any thread. Complexity: O(1) amortized.
    template <class Make>
    bool upsert(const Key& key, Make&& make, session_options options = {}) {
        const std::uint64_t h = hash_of(key);
        detail::session_value_buffer<Value> value{make};
        return emplace(key, h, value.get(), true, options);
    }

    /// If `key` is present, calls `update(value)` (or `update(value, entry&)`) as `with` does;
    /// otherwise inserts `make()`. Returns true if it inserted.
    /// Throws what `make` or `update` throw, `std::bad_alloc`, `std::logic_error` on re-entry.
    /// Thread safety: safe from any thread. Complexity: O(1) amortized.
    template <class Make, class Update>
    requires(!std::is_same_v<std::remove_cvref_t<Update>, session_options>) bool upsert(const Key& key, Make&& make,
                                                                                        Update&& update,
                                                                                        session_options options = {}) {
        const std::uint64_t h = hash_of(key);
        for (;;) {
            if (access<mode::write>(key, update)) return false;
            // Just seen absent: make the value and insert without looking twice.
            detail::session_value_buffer<Value> value{make};
            if (emplace(key, h, value.get(), false, options)) return true;
        }
    }

    /// Removes `key` (`on_evict` with `erased`, now or when the last callback on it returns).
    /// Returns whether it was present. Thread safety: safe from any thread, including from
    /// inside a callback on the same key. Complexity: O(1).
    bool erase(const Key& key) noexcept {
        const std::uint64_t h = hash_of(key);
        shard& s = shard_of(h);
        victims v;
        {
            detail::session_shard_guard g{s.mutex};
            const std::uint32_t pos = find_pos(s, h, key);
            if (pos == detail::session_nil) return false;
            const std::uint32_t idx = s.index.slot(pos).idx;
            prefetch_neighbours(s, s.slab.at(idx));
            unlink(s, pos, idx, evict_reason::erased, v);
        }
        dispose_victims(s, v);
        return true;
    }

    /// Removes the session found under `key` if `pred(value)` (or `pred(value, entry)`) says
    /// so, and only that session: the entry is pinned while `pred` looks at it, so if it leaves
    /// the map meanwhile (expired, evicted, replaced) and the key is given to a new session,
    /// the new session stays. This is the safe way for an owner to remove *its own* session
    /// when the key may be reused, for example a connection that closes while a reconnect
    /// reuses its session id: `erase_if(id, [&](const session& s) { return s.owner == me; })`.
    /// `pred` runs under the entry's shared lock, like an `inspect` callback (it does not
    /// count as activity); it may use structure operations on the key but not `with`.
    /// The removal calls `on_evict` with `erased`, on this thread, once `pred`'s lock is
    /// released (or when the last other callback holding the entry returns).
    /// Returns whether this call removed the entry: false if the key is absent, `pred` said
    /// no, or the entry had already left the map when `pred` returned.
    /// Throws what `pred` throws (nothing is removed), `std::logic_error` on re-entry into a
    /// key this thread is already inside.
    /// Thread safety: safe from any thread. Complexity: O(1) expected; no allocation.
    template <class Pred>
    bool erase_if(const Key& key, Pred&& pred) {
        bool removed = false;
        auto fn = [&](const Value& v, const entry& e) {
            bool yes = false;
            if constexpr (std::is_invocable_v<Pred&, const Value&, const entry&>) {
                yes = static_cast<bool>(std::invoke(pred, v, e));
            } else {
                yes = static_cast<bool>(std::invoke(pred, v));
            }
            if (yes) removed = erase_entry(*e.m_shard, e.m_idx, *e.m_node);
        };
        (void)access<mode::peek>(key, fn);
        return removed;
    }

    /// Marks `key`'s session ended now (the first call wins), starting its grace period.
    /// Returns whether it was present. Thread safety: safe from any thread. Complexity: O(1).
    bool mark_ended(const Key& key) noexcept {
        const std::int64_t now = now_ns();
        const std::uint64_t h = hash_of(key);
        shard& s = shard_of(h);
        detail::session_shard_guard g{s.mutex};
        const std::uint32_t pos = find_pos(s, h, key);
        if (pos == detail::session_nil) return false;
        const std::uint32_t idx = s.index.slot(pos).idx;
        end_locked(s, idx, s.slab.at(idx), now);
        return true;
    }

    /// Sets or clears `key`'s `no_evict` flag. Returns whether it was present.
    /// Thread safety: safe from any thread. Complexity: O(1).
    bool set_no_evict(const Key& key, bool on) noexcept {
        const std::uint64_t h = hash_of(key);
        shard& s = shard_of(h);
        detail::session_shard_guard g{s.mutex};
        const std::uint32_t pos = find_pos(s, h, key);
        if (pos == detail::session_nil) return false;
        flag_no_evict(s.slab.at(s.index.slot(pos).idx), on);
        return true;
    }

    /// Sets `key`'s cost to `bytes` under its exclusive lock, without counting as activity.
    /// Returns whether it was present. Throws `std::logic_error` on re-entry.
    /// Thread safety: safe from any thread. Complexity: O(1).
    bool set_cost(const Key& key, std::int64_t bytes) {
        auto fn = [bytes](Value&, entry& e) noexcept { e.set_cost(bytes); };
        return access<mode::write_quiet>(key, fn);
    }

    /// Whether `key` is present. Thread safety: safe from any thread. Complexity: O(1).
    [[nodiscard]] bool contains(const Key& key) const noexcept { return contains_hashed(key, hash_of(key)); }

    /// A copy of `key`'s metadata, if present. Does not count as activity.
    /// Thread safety: safe from any thread. Complexity: O(1).
    [[nodiscard]] std::optional<session_info> info(const Key& key) const noexcept {
        const std::uint64_t h = hash_of(key);
        shard& s = shard_of(h);
        detail::session_shard_guard g{s.mutex};
        const std::uint32_t pos = find_pos(s, h, key);
        if (pos == detail::session_nil) return std::nullopt;
        return info_of(s.slab.at(s.index.slot(pos).idx));
    }

    /// Entries in the map. Thread safety: safe; exact when nothing runs concurrently.
    /// Complexity: O(shards).
    [[nodiscard]] std::size_t size() const noexcept {
        std::size_t n = 0;
        for (std::size_t i = 0; i < m_config.shards; ++i) {
            n += m_shards[i].size.load(std::memory_order_relaxed);
        }
        return n;
    }

    /// Whether the map is empty. Thread safety: as `size`. Complexity: O(shards).
    [[nodiscard]] bool empty() const noexcept { return size() == 0; }

    /// Sum of the entries' costs. Thread safety: safe; exact when nothing runs concurrently.
    /// Complexity: O(shards).
    [[nodiscard]] std::int64_t total_cost() const noexcept {
        std::int64_t n = 0;
        for (std::size_t i = 0; i < m_config.shards; ++i) {
            n += m_shards[i].total_cost.value.load(std::memory_order_relaxed);
        }
        return n;
    }

    /// Calls `fn(key, info)` for every entry, one shard at a time under that shard's lock.
    /// `fn` must not call into the map. Does not count as activity.
    /// Thread safety: safe from any thread; entries inserted or removed meanwhile may or may
    /// not be visited. Complexity: O(size + capacity).
    template <class Fn>
    void for_each_info(Fn&& fn) const {
        for (std::size_t i = 0; i < m_config.shards; ++i) {
            shard& s = m_shards[i];
            detail::session_shard_guard g{s.mutex};
            const std::uint32_t cap = s.index.positions();
            for (std::uint32_t p = 0; p < cap; ++p) {
                const detail::session_slot slot = s.index.slot(p);
                if (slot.idx == detail::session_nil) continue;
                node& n = s.slab.at(slot.idx);
                fn(std::as_const(n.key()), info_of(n));
            }
        }
    }

    // ---------------------------------------------------------------- time, sweep, eviction

    /// Tells the map the time, for `touch_time::coarse`. Never moves the time back.
    /// Thread safety: safe from any thread. Complexity: O(1).
    void tick(time_point now) noexcept {
        const std::int64_t t = now.time_since_epoch().count();
        std::int64_t cur = m_coarse_now.value.load(std::memory_order_relaxed);
        while (t > cur && !m_coarse_now.value.compare_exchange_weak(cur, t, std::memory_order_relaxed)) {
        }
    }

    /// Removes what the rules say has expired at `now`, examining at most `max_work` entries
    /// (those whose filed deadline has passed), and resumes there at the next call. Value
    /// checks (rule 1, `orphan_rule::confirm`) run under the entry's shared lock, outside the
    /// shard lock. Also acts as `tick(now)`. A `now` earlier than a previous sweep's is taken
    /// as that sweep's (the expiry wheels only move forward).
    /// Thread safety: safe from any thread; concurrent sweeps take turns. Called from inside a
    /// callback of this thread's own sweep (`on_evict`, a value check) it returns at once,
    /// with nothing done and `complete` false; likewise the `evict_*` calls.
    /// Complexity: O(max_work + shards); no work for entries whose deadline is in the future.
    evict_result sweep(time_point now, std::size_t max_work) {
        tick(now);
        const detail::owned_mutex::guard turn{m_sweep_turn};
        evict_result r;
        if (!turn) return r; // called from a callback of this thread's own sweep
        // The wheels only move forward: a time behind an earlier sweep's is taken as that one.
        const std::int64_t now_ns = std::max(now.time_since_epoch().count(), m_sweep_now);
        m_sweep_now = now_ns;
        const std::uint64_t now_tick = tick_floor(now_ns);
        r.complete = each_shard_from(
            m_sweep_cursor, [&](shard& s) { return sweep_shard(s, now_ns, now_tick, tick_ceil(now_ns), max_work, r); });
        m_sweep_work.fetch_add(r.work, std::memory_order_relaxed);
        return r;
    }

    /// `sweep(clock.now(), max_work)`.
    evict_result sweep(std::size_t max_work) { return sweep(m_clock.now(), max_work); }

    /// Evicts entries created at least `age` ago (reason `age_under_pressure`), oldest first in
    /// each shard, skipping `no_evict`, examining at most `budget` entries.
    /// `complete` is true when no evictable entry that old is left.
    /// Thread safety: safe from any thread. Complexity: O(budget + shards).
    evict_result evict_older_than(duration age, std::size_t budget) {
        const detail::owned_mutex::guard turn{m_evict_turn};
        evict_result r;
        if (!turn) return r; // called from a callback of this thread's own eviction
        // Saturated: a negative age makes every entry old enough, duration::max() none.
        const std::int64_t a = age.count();
        const std::int64_t cutoff = a == std::numeric_limits<std::int64_t>::min()
                                        ? std::numeric_limits<std::int64_t>::max()
                                        : detail::saturating_add(now_ns(), -a);
        r.complete = each_shard_from(m_age_cursor, [&](shard& s) { return evict_old_in(s, cutoff, budget, r); });
        return r;
    }

    /// Evicts entries whose cost exceeds `bytes` (reason `over_cost`), skipping `no_evict`,
    /// examining at most `budget` entries. Only cost buckets that can hold such entries are
    /// visited. Thread safety: safe from any thread. Complexity: O(budget + shards).
    evict_result evict_over_cost(std::int64_t bytes, std::size_t budget) {
        const detail::owned_mutex::guard turn{m_evict_turn};
        evict_result r;
        if (!turn) return r; // called from a callback of this thread's own eviction
        const std::uint64_t limit = bytes < 0 ? 0 : static_cast<std::uint64_t>(bytes);
        r.complete = each_shard_from(m_cost_cursor, [&](shard& s) { return evict_cost_in(s, limit, budget, r); });
        return r;
    }

    /// Evicts approximately least recently active entries (reason `lru_under_pressure`),
    /// skipping `no_evict`, until `total_cost() <= target_total_cost` or `budget` entries have
    /// been sampled. Each step samples `lru_samples` entries of the next shard.
    /// Thread safety: safe from any thread. Complexity: O(budget + shards).
    evict_result evict_lru_until(std::int64_t target_total_cost, std::size_t budget) {
        const detail::owned_mutex::guard turn{m_evict_turn};
        evict_result r;
        if (!turn) return r; // called from a callback of this thread's own eviction
        std::int64_t total = total_cost();
        std::size_t barren = 0; // consecutive shards that offered no victim
        while (total > target_total_cost && r.work < budget && barren < m_config.shards) {
            shard& s = m_shards[m_lru_cursor];
            m_lru_cursor = (m_lru_cursor + 1) & m_shard_mask;
            bool found = false;
            std::int64_t removed_bytes = 0;
            // One victim per batch: each step samples afresh.
            remove_in_batches(s, [&](victims& v) noexcept {
                const std::uint32_t idx = m_lru.pick(s.index, s.slab, m_config.lru_samples, budget, r.work);
                if (idx == detail::session_nil) return false;
                found = true;
                removed_bytes = evict_counted(s, idx, evict_reason::lru_under_pressure, v, r);
                return false;
            });
            if (!found) {
                ++barren;
                continue;
            }
            barren = 0;
            total = (r.evicted % 64 == 0) ? total_cost() : total - removed_bytes;
        }
        r.complete = total <= target_total_cost;
        return r;
    }

    /// Evicts up to `n` of the largest entries (reason `largest_under_pressure`), skipping
    /// `no_evict`: it empties the highest non-empty power-of-two cost bucket across shards
    /// first, then the next, so every evicted entry is at least half the cost of any evictable
    /// entry left. Only entries costing more than `min_cost` are chosen (never those of cost
    /// 0), so "largest" can mean "large" and not merely "the biggest of equals". Examines at
    /// most `budget` entries.
    /// Thread safety: safe from any thread. Complexity: O(n + skipped + 64 × shards).
    evict_result evict_largest(std::size_t n, std::size_t budget = std::numeric_limits<std::size_t>::max(),
                               std::uint64_t min_cost = 0) {
        const detail::owned_mutex::guard turn{m_evict_turn};
        evict_result r;
        if (!turn) return r; // called from a callback of this thread's own eviction
        const int low = static_cast<int>(std::max(1U, bucket_of(min_cost)));
        for (int b = 63; b >= low && r.evicted < n && r.work < budget; --b) {
            const std::uint64_t bit = std::uint64_t{1} << b;
            for (std::size_t i = 0; i < m_config.shards && r.evicted < n && r.work < budget; ++i) {
                shard& s = m_shards[i];
                if ((s.bucket_mask.load(std::memory_order_relaxed) & bit) == 0) continue;
                evict_bucket_in(s, static_cast<unsigned>(b), min_cost, evict_reason::largest_under_pressure, n, budget,
                                r);
            }
        }
        r.complete = r.evicted >= n;
        return r;
    }

    /// Removes every entry (`on_evict` with `cleared`). Entries pinned by a running callback
    /// are finalized when it returns. Returns how many were removed.
    /// Thread safety: safe from any thread. Complexity: O(size).
    std::size_t clear() noexcept {
        std::size_t removed = 0;
        for (std::size_t i = 0; i < m_config.shards; ++i) {
            shard& s = m_shards[i];
            remove_in_batches(s, [&](victims& v) noexcept {
                while (!v.full() && s.age.head != detail::session_nil) {
                    unlink(s, detail::session_nil, s.age.head, evict_reason::cleared, v);
                    ++removed;
                }
                return v.full(); // a full batch may have left entries behind
            });
        }
        return removed;
    }

    /// A snapshot of the counters. Thread safety: safe from any thread. Complexity: O(shards).
    [[nodiscard]] session_map_stats stats() const noexcept {
        session_map_stats st;
        for (std::size_t i = 0; i < m_config.shards; ++i) {
            const shard& s = m_shards[i];
            st.size += s.size.load(std::memory_order_relaxed);
            st.total_cost += s.total_cost.value.load(std::memory_order_relaxed);
            st.hits += s.hits.load(std::memory_order_relaxed);
            st.misses += s.misses.load(std::memory_order_relaxed);
            st.inserts += s.inserts.load(std::memory_order_relaxed);
            st.pinned_at_eviction += s.pinned_at_eviction.load(std::memory_order_relaxed);
            st.structure_bytes += s.structure_bytes.load(std::memory_order_relaxed);
            for (std::size_t r = 0; r < evict_reason_count; ++r) {
                st.evictions[r] += s.evictions[r].load(std::memory_order_relaxed);
            }
        }
        st.structure_bytes += sizeof(shard) * m_config.shards;
        st.sweep_work = m_sweep_work.load(std::memory_order_relaxed);
        return st;
    }

    /// The configuration in use. Thread safety: safe. Complexity: O(1).
    [[nodiscard]] const session_map_config& config() const noexcept { return m_config; }

    /// Bytes one entry occupies in node storage (key and value included, table slot not).
    static constexpr std::size_t node_bytes = sizeof(node);

private:
    enum class mode { write, write_quiet, read, peek };

    // ------------------------------------------------------------ shards

    struct alignas(cache_line_size) padded_cost {
        std::atomic<std::int64_t> value{0};
    };

    struct alignas(cache_line_size) shard {
        // Written by every lookup: the lock and the hit and miss counters, alone on their
        // cache line. Every other core that looks up a key of this shard takes that line over.
        detail::session_shard_mutex mutex;
        std::atomic<std::uint64_t> hits{0};
        std::atomic<std::uint64_t> misses{0};
        // Read by every lookup (the table's address and size, also read before the lock to
        // prefetch the buckets, and the node chunks), written only when the structure changes:
        // on lines of their own, so they stay cached on every core that reads them. Sharing
        // the lock's line made each lookup fetch that line twice from the core that wrote it
        // last: once shared, for the prefetch before the lock, and again to take the lock.
        alignas(cache_line_size) detail::session_index index;
        detail::session_slab<node> slab;
        // Structure: inserts, removals, sweeps, evictions.
        std::atomic<std::size_t> size{0};
        std::int64_t last_created = 0;
        detail::session_fifo age;
        detail::session_wheel wheel;
        std::array<std::uint32_t, 64> buckets{};
        std::atomic<std::uint64_t> bucket_mask{0};
        std::atomic<std::uint64_t> inserts{0};
        std::atomic<std::uint64_t> pinned_at_eviction{0};
        // The `now` of the last sweep pass that found nothing more due (under the sweep turn
        // and the shard lock).
        std::int64_t swept_at = std::numeric_limits<std::int64_t>::min();
        std::atomic<std::size_t> structure_bytes{0};
        std::array<std::atomic<std::uint64_t>, evict_reason_count> evictions{};
        // Updated by `set_cost` without the lock: kept off the lock's cache line.
        padded_cost total_cost;

        shard() noexcept { buckets.fill(detail::session_nil); }
    };

    // The shards live in one allocation of exactly `n * sizeof(shard)` bytes, which is what
    // the ledger is charged (`new shard[n]` would add an array cookie the map cannot see).
    struct shard_deleter {
        std::size_t n = 0;
        void operator()(shard* p) const noexcept {
            std::destroy_n(p, n);
            std::allocator<shard>{}.deallocate(p, n);
        }
    };
    static std::unique_ptr<shard[], shard_deleter> make_shards(std::size_t n) {
        shard* p = std::allocator<shard>{}.allocate(n);
        static_assert(std::is_nothrow_default_constructible_v<shard>);
        for (std::size_t i = 0; i < n; ++i) std::construct_at(p + i);
        return std::unique_ptr<shard[], shard_deleter>{p, shard_deleter{n}};
    }

    using victims = detail::session_victims<node>;

    template <class T>
    static void bump(std::atomic<T>& c, T by = 1) noexcept {
        // Only ever written under the shard lock: a plain read-modify-write is exact.
        c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
    }

    static session_map_config validate(const session_map_config& c, const ledger* accounting) {
        auto bad = [](const char* field, const char* what) {
            detail::throw_bad_field("session_map_config", field, what);
        };
        if (c.shards == 0 || c.shards > 65536 || !std::has_single_bit(c.shards)) {
            bad("shards", "must be a power of two in [1, 65536]");
        }
        if (c.idle_ttl < duration::zero()) bad("idle_ttl", "must be >= 0 (never disables)");
        if (c.absolute_ttl < duration::zero()) bad("absolute_ttl", "must be >= 0 (never disables)");
        if (c.ended_grace < duration::zero()) bad("ended_grace", "must be >= 0 (never disables)");
        if (c.suspicious_age < duration::zero()) bad("suspicious_age", "must be >= 0 (never disables)");
        if (c.suspicious_idle < duration::zero()) bad("suspicious_idle", "must be >= 0");
        if (c.check_interval <= duration::zero() || c.check_interval == session_map_config::never) {
            bad("check_interval", "must be > 0 and finite");
        }
        if (c.sweep_resolution <= duration::zero() || c.sweep_resolution > std::chrono::hours{1}) {
            bad("sweep_resolution", "must be in (0, 1h]");
        }
        if (c.lru_samples == 0 || c.lru_samples > 1024) bad("lru_samples", "must be in [1, 1024]");
        // A category the ledger does not define would hide its bytes from the named totals.
        const auto defined = [&](category k) {
            return accounting != nullptr ? accounting->defined(k)
                                         : static_cast<std::size_t>(k) < ledger::max_categories;
        };
        if (!defined(c.ledger_category)) bad("ledger_category", "must be a category the ledger defines");
        if (!defined(c.storage_category)) bad("storage_category", "must be a category the ledger defines");
        if (c.check_interval > longest_period) bad("check_interval", "must be at most longest_period (a year)");
        if (c.touch != touch_time::clock && c.touch != touch_time::coarse) bad("touch", "unknown value");
        return c;
    }

    [[nodiscard]] std::uint64_t hash_of(const Key& k) const noexcept {
        return detail::session_mix(static_cast<std::uint64_t>(m_hash(k)));
    }
    [[nodiscard]] shard& shard_of(std::uint64_t h) const noexcept {
        return m_shards[static_cast<std::size_t>(h >> 40) & m_shard_mask];
    }
    [[nodiscard]] static std::uint32_t fp_of(std::uint64_t h) noexcept { return static_cast<std::uint32_t>(h); }
    [[nodiscard]] std::uint32_t find_pos(shard& s, std::uint64_t h, const Key& key) const noexcept {
        return s.index.find(fp_of(h), [&](std::uint32_t idx) noexcept {
            const node& n = s.slab.at(idx);
            // The hot fields (state, times, key, value) may straddle two cache lines: ask for
            // both at once so the second miss overlaps the first.
            __builtin_prefetch(reinterpret_cast<const char*>(&n) + sizeof(node) - 1, 1);
            __builtin_prefetch(&n, 1);
            return m_eq(n.key(), key);
        });
    }
    [[nodiscard]] bool contains_hashed(const Key& key, std::uint64_t h) const noexcept {
        shard& s = shard_of(h);
        detail::session_shard_guard g{s.mutex};
        return find_pos(s, h, key) != detail::session_nil;
    }

    void charge(std::int64_t bytes) const noexcept {
        if (m_ledger != nullptr && bytes != 0) m_ledger->charge(m_config.ledger_category, bytes);
    }
    void charge_storage(std::int64_t bytes) const noexcept {
        if (m_ledger != nullptr && bytes != 0) m_ledger->charge(m_config.storage_category, bytes);
    }

    // ------------------------------------------------------------ time

    [[nodiscard]] std::int64_t now_ns() const noexcept { return m_clock.now().time_since_epoch().count(); }
    [[nodiscard]] std::int64_t touch_ns() const noexcept {
        if (m_config.touch == touch_time::coarse) {
            const std::int64_t t = m_coarse_now.value.load(std::memory_order_relaxed);
            if (t != detail::session_unticked) return t;
        }
        return now_ns();
    }
    [[nodiscard]] std::uint64_t tick_floor(std::int64_t ns) const noexcept {
        if (ns <= m_epoch) return 0;
        return static_cast<std::uint64_t>((ns - m_epoch) / m_resolution);
    }
    [[nodiscard]] std::uint64_t tick_ceil(std::int64_t ns) const noexcept {
        if (ns <= m_epoch) return 0;
        const std::int64_t d = ns - m_epoch;
        return static_cast<std::uint64_t>(d / m_resolution + (d % m_resolution != 0 ? 1 : 0));
    }
    [[nodiscard]] std::int64_t tick_start_ns(std::uint64_t tick) const noexcept {
        const auto max_ticks =
            static_cast<std::uint64_t>((std::numeric_limits<std::int64_t>::max() - m_epoch) / m_resolution);
        if (tick >= max_ticks) return detail::session_never;
        return m_epoch + static_cast<std::int64_t>(tick) * m_resolution;
    }
    static time_point to_time(std::int64_t ns) noexcept { return time_point{duration{ns}}; }

    // ------------------------------------------------------------ metadata and rules
    // The rule engine (deadlines, evaluation order, value checks) reads the configuration, the
    // hooks and the entry's node, all the map's own state, under the shard lock; it stays here.
    // docs/session-map.md states the order in which the rules are evaluated.

    [[nodiscard]] session_info info_of(const node& n) const noexcept {
        session_info i;
        i.created = to_time(n.created);
        i.last_active = to_time(n.last_active.load(std::memory_order_relaxed));
        const std::uint64_t cw = n.cost.load(std::memory_order_relaxed);
        if ((cw & detail::session_ended_bit) != 0) i.ended_at = i.last_active;
        i.no_evict = (cw & detail::session_no_evict_bit) != 0;
        i.messages = n.messages.load(std::memory_order_relaxed);
        i.cost = detail::session_cost_of(cw);
        return i;
    }

    [[nodiscard]] static bool rule_enabled(duration d) noexcept { return d != session_map_config::never; }

    // The earliest time any rule could fire for `n`, given the entry was last checked at
    // `after` (interval rules fire at creation + k × check_interval, the first after it).
    [[nodiscard]] std::int64_t next_deadline(const node& n, std::int64_t after) const noexcept {
        const session_map_config& c = m_config;
        std::int64_t d = detail::session_never;
        const std::int64_t last = n.last_active.load(std::memory_order_relaxed);
        if (rule_enabled(c.idle_ttl)) d = std::min(d, detail::session_add_sat(last, c.idle_ttl));
        if (rule_enabled(c.absolute_ttl)) d = std::min(d, detail::session_add_sat(n.created, c.absolute_ttl));
        if (ended(n) && rule_enabled(c.ended_grace)) {
            d = std::min(d, detail::session_add_sat(last, c.ended_grace));
        }
        if (rule_enabled(c.suspicious_age) && n.messages.load(std::memory_order_relaxed) < c.suspicious_min_messages) {
            d = std::min(d, std::max(detail::session_add_sat(n.created, c.suspicious_age),
                                     detail::session_add_sat(last, c.suspicious_idle)));
        }
        bool interval = m_interval_rules;
        if (!m_hooks.rules.empty()) {
            const session_info info = info_of(n);
            for (const rule_type& r : m_hooks.rules) {
                if (!r.earliest) continue;
                if (const std::optional<time_point> t = r.earliest(info)) {
                    const std::int64_t at = t->time_since_epoch().count();
                    // A hint already passed (the rule was checked and did not hold): check it
                    // again at the next interval rather than at every sweep.
                    if (at > after) {
                        d = std::min(d, at);
                    } else {
                        interval = true;
                    }
                }
            }
        }
        if (interval) {
            const std::int64_t iv = c.check_interval.count();
            const std::int64_t since = after - n.created;
            const std::int64_t k = since < 0 ? 1 : since / iv + 1;
            d = std::min(d, detail::session_add_sat(n.created, duration{k * iv}));
        }
        return d;
    }

    struct verdict {
        enum kind_t : std::uint8_t { keep, evict, confirm } kind = keep;
        evict_reason reason = evict_reason::orphan;
        std::size_t rule = 0; // confirm: index into rules, or rules.size() for `inconsistent`
    };

    // Rules 2..5 and user metadata rules, then value checks. Under the shard lock.
    [[nodiscard]] verdict evaluate_rules(const node& n, std::int64_t now) const noexcept {
        const session_map_config& c = m_config;
        const std::int64_t last = n.last_active.load(std::memory_order_relaxed);
        if (ended(n) && rule_enabled(c.ended_grace) && now >= detail::session_add_sat(last, c.ended_grace)) {
            return {verdict::evict, evict_reason::ended, 0};
        }
        if (rule_enabled(c.idle_ttl) && now >= detail::session_add_sat(last, c.idle_ttl)) {
            return {verdict::evict, evict_reason::expired_idle, 0};
        }
        if (rule_enabled(c.absolute_ttl) && now >= detail::session_add_sat(n.created, c.absolute_ttl)) {
            return {verdict::evict, evict_reason::expired_absolute, 0};
        }
        if (rule_enabled(c.suspicious_age) && n.messages.load(std::memory_order_relaxed) < c.suspicious_min_messages &&
            now >= detail::session_add_sat(n.created, c.suspicious_age) &&
            now >= detail::session_add_sat(last, c.suspicious_idle)) {
            return {verdict::evict, evict_reason::suspicious, 0};
        }
        if (!m_hooks.rules.empty()) {
            // Every metadata-only rule before any value check: a rule whose value check says
            // no must not shield the entry from a later rule that holds on metadata alone.
            const session_info info = info_of(n);
            std::size_t first_confirm = m_hooks.rules.size();
            for (std::size_t i = 0; i < m_hooks.rules.size(); ++i) {
                const rule_type& r = m_hooks.rules[i];
                if (!r.applies(info, to_time(now))) continue;
                if (!r.confirm) return {verdict::evict, r.reason, i};
                if (first_confirm == m_hooks.rules.size()) first_confirm = i;
            }
            if (first_confirm != m_hooks.rules.size()) {
                return {verdict::confirm, m_hooks.rules[first_confirm].reason, first_confirm};
            }
        }
        if (m_hooks.inconsistent) return {verdict::confirm, evict_reason::orphan, m_hooks.rules.size()};
        return {};
    }

    // The value checks of a `confirm` verdict, in order, under the entry's shared lock: the
    // rule found by `evaluate_rules`, every later rule with a value check that applies, then
    // rule 1.
    // The first that holds decides, and sets `v`'s reason; one that throws does not hold.
    [[nodiscard]] bool confirm_value(node& n, std::int64_t now, verdict& v) const noexcept {
        const Key& k = n.key();
        const Value& val = std::as_const(n.value());
        const auto holds = [&](const auto& test) noexcept {
            try {
                return static_cast<bool>(test(k, val));
            } catch (...) {
                return false;
            }
        };
        const std::size_t count = m_hooks.rules.size();
        if (v.rule < count) {
            const session_info info = info_of(n);
            for (std::size_t i = v.rule; i < count; ++i) {
                const rule_type& r = m_hooks.rules[i];
                if (!r.confirm || (i != v.rule && !r.applies(info, to_time(now)))) continue;
                if (holds(r.confirm)) {
                    v.rule = i;
                    v.reason = r.reason;
                    return true;
                }
            }
        }
        if (m_hooks.inconsistent && holds(m_hooks.inconsistent)) {
            v.rule = count;
            v.reason = evict_reason::orphan;
            return true;
        }
        return false;
    }

    // Files `idx` under its next deadline after `after` (on the due list if that tick has passed).
    void file_in_wheel(shard& s, std::uint32_t idx, node& n, std::int64_t after) noexcept {
        const std::int64_t d = next_deadline(n, after);
        if (d == detail::session_never) return;
        s.wheel.insert(idx, tick_ceil(d), wheel_links(s));
    }

    // ------------------------------------------------------------ link accessors

    static auto wheel_links(shard& s) noexcept {
        return [&s](std::uint32_t i) noexcept -> detail::session_links& { return s.slab.at(i).wheel; };
    }
    static auto age_links(shard& s) noexcept {
        return [&s](std::uint32_t i) noexcept -> detail::session_links& { return s.slab.at(i).age; };
    }
    static auto bucket_links(shard& s) noexcept {
        return [&s](std::uint32_t i) noexcept -> detail::session_links& { return s.slab.at(i).bucket; };
    }

    static unsigned bucket_of(std::uint64_t cost) noexcept {
        return static_cast<unsigned>(std::bit_width(cost)); // 0 for cost 0 (untracked)
    }

    // Moves `idx` to the bucket of its current cost. Under the shard lock.
    static void rebucket(shard& s, std::uint32_t idx, node& n) noexcept {
        if (detail::session_linked(n.bucket)) unbucket(s, idx);
        const std::uint64_t c = n.cost.load(std::memory_order_relaxed);
        if ((c & detail::session_detached_bit) != 0) return;
        const unsigned b = bucket_of(c & detail::session_cost_mask);
        if (b == 0) return;
        detail::session_list_push_front(s.buckets.data(), b, idx, bucket_links(s));
        s.bucket_mask.store(s.bucket_mask.load(std::memory_order_relaxed) | (std::uint64_t{1} << b),
                            std::memory_order_relaxed);
    }
    static void unbucket(shard& s, std::uint32_t idx) noexcept {
        const std::uint32_t list = detail::session_list_unlink(s.buckets.data(), idx, bucket_links(s));
        if (list != detail::session_nil && s.buckets[list] == detail::session_nil) {
            s.bucket_mask.store(s.bucket_mask.load(std::memory_order_relaxed) & ~(std::uint64_t{1} << list),
                                std::memory_order_relaxed);
        }
    }

    // ------------------------------------------------------------ insertion and removal

    // Inserts (or, with `replace`, replaces) under the shard lock. Returns false if the key
    // was present (and, without `replace`, nothing changed).
    bool emplace(const Key& key, std::uint64_t h, Value& value, bool replace, session_options options) {
        if constexpr (cost_follows_value) {
            if (options.cost == 0) options.cost = m_cost(std::as_const(value));
        }
        const std::int64_t now = now_ns();
        shard& s = shard_of(h);
        victims v;
        bool replaced = false;
        {
            detail::session_shard_guard g{s.mutex};
            struct sync_on_exit {
                const session_map* m;
                shard* s;
                ~sync_on_exit() { m->sync_structure(*s); }
            } sync{this, &s};
            const std::uint32_t pos = find_pos(s, h, key);
            if (pos != detail::session_nil && !replace) return false;
            if (pos == detail::session_nil) s.index.reserve_one(fp_of(h));
            const std::uint32_t idx = s.slab.allocate();
            node& n = s.slab.at(idx);
            try {
                ::new (static_cast<void*>(n.key_storage)) Key(key);
                try {
                    ::new (static_cast<void*>(n.value_storage)) Value(std::move(value));
                } catch (...) {
                    n.key().~Key();
                    throw;
                }
            } catch (...) {
                s.slab.free_locked(idx);
                throw;
            }
            const std::int64_t created = std::max(now, s.last_created);
            s.last_created = created;
            n.state.store(0, std::memory_order_relaxed);
            n.messages.store(0, std::memory_order_relaxed);
            n.last_active.store(created, std::memory_order_relaxed);
            n.created = created;
            const std::uint64_t cost = detail::session_cost_bits(options.cost);
            n.cost.store(cost | (options.no_evict ? detail::session_no_evict_bit : 0), std::memory_order_relaxed);
            n.wheel = {};
            n.age = {};
            n.bucket = {};
            if (cost != 0) {
                s.total_cost.value.fetch_add(static_cast<std::int64_t>(cost), std::memory_order_relaxed);
                rebucket(s, idx, n);
                charge(static_cast<std::int64_t>(cost));
            }
            if (pos != detail::session_nil) {
                const std::uint32_t old = s.index.slot(pos).idx;
                s.index.replace_at(pos, idx);
                unlink(s, pos, old, evict_reason::replaced, v, /*in_index=*/false);
                replaced = true;
            } else {
                s.index.insert(fp_of(h), idx);
            }
            s.age.push_back(idx, age_links(s));
            file_in_wheel(s, idx, n, created);
            s.size.store(s.index.size(), std::memory_order_relaxed);
            bump(s.inserts);
        }
        dispose_victims(s, v);
        return !replaced;
    }

    // Charges the ledger for growth or shrinkage of a shard's node storage and table.
    // Under the shard lock.
    void sync_structure(shard& s) const noexcept {
        const std::size_t now = s.slab.memory_bytes() + s.index.memory_bytes();
        const std::size_t was = s.structure_bytes.load(std::memory_order_relaxed);
        if (now == was) return;
        s.structure_bytes.store(now, std::memory_order_relaxed);
        charge_storage(static_cast<std::int64_t>(now) - static_cast<std::int64_t>(was));
    }

    // Starts loading the list neighbours `unlink` will write, so their misses overlap.
    static void prefetch_neighbours(shard& s, const node& n) noexcept {
        using links_of = detail::session_links node::*;
        for (const links_of member : {&node::wheel, &node::age, &node::bucket}) {
            const detail::session_links& l = n.*member;
            if (l.prev < detail::session_head_base) __builtin_prefetch(&(s.slab.at(l.prev).*member), 1);
            if (l.next != detail::session_nil) __builtin_prefetch(&(s.slab.at(l.next).*member), 1);
        }
    }

    // Starts loading what evicting `n` will touch: its table slot and list neighbours.
    void prefetch_eviction(shard& s, const node& n) const noexcept {
        s.index.prefetch(fp_of(hash_of(n.key())));
        prefetch_neighbours(s, n);
    }

    // Removes the pinned entry `idx` (reason `erased`) unless it already left the map: its
    // callback and destruction run when the caller's pin is released. Takes the shard lock.
    bool erase_entry(shard& s, std::uint32_t idx, node& n) noexcept {
        victims v;
        {
            detail::session_shard_guard g{s.mutex};
            if ((n.state.load(std::memory_order_relaxed) & detail::entry_state::dead) != 0) return false;
            (void)unlink(s, detail::session_nil, idx, evict_reason::erased, v);
        }
        dispose_victims(s, v);
        return true;
    }

    // Unlinks `idx` from everything and marks it dead. Under the shard lock. Returns its cost.
    // `pos` is its table slot if known (else looked up); `in_index` false when the caller has
    // already taken it out of the table.
    std::int64_t unlink(shard& s, std::uint32_t pos, std::uint32_t idx, evict_reason reason, victims& v,
                        bool in_index = true) noexcept {
        node& n = s.slab.at(idx);
        if (in_index) {
            if (pos == detail::session_nil) pos = s.index.find_index(fp_of(hash_of(n.key())), idx);
            s.index.erase_at(pos);
            sync_structure(s);
        }
        if (detail::session_linked(n.wheel)) s.wheel.remove(idx, wheel_links(s));
        if (detail::session_linked(n.age)) s.age.unlink(idx, age_links(s));
        if (detail::session_linked(n.bucket)) unbucket(s, idx);
        s.size.store(s.index.size(), std::memory_order_relaxed);
        bump(s.evictions[static_cast<std::size_t>(reason)]);
        n.wheel.next = static_cast<std::uint32_t>(reason);
        const std::uint32_t prev = n.state.fetch_or(detail::entry_state::dead, std::memory_order_acq_rel);
        std::uint64_t c;
        if (detail::entry_state::pins(prev) == 0) {
            // Unpinned and now unreachable: no `set_cost` can run, a plain update is enough.
            c = n.cost.load(std::memory_order_relaxed);
            n.cost.store(c | detail::session_detached_bit, std::memory_order_relaxed);
            v.add(idx, n, reason);
        } else {
            // A callback may be in `set_cost`: whichever of us goes first decides the total.
            c = n.cost.fetch_or(detail::session_detached_bit, std::memory_order_acq_rel);
            bump(s.pinned_at_eviction);
        }
        const std::int64_t cost = detail::session_cost_of(c);
        v.removed_cost += cost;
        v.last_bytes = cost;
        return cost;
    }

    // Unlinks `idx`, chosen by an eviction or the sweep, into `v` and counts it in `r`.
    // Under the shard lock. Returns its cost.
    std::int64_t evict_counted(shard& s, std::uint32_t idx, evict_reason reason, victims& v, evict_result& r) noexcept {
        const std::int64_t cost = unlink(s, detail::session_nil, idx, reason, v);
        r.bytes += cost;
        ++r.evicted;
        return cost;
    }

    // Bulk removal from one shard, in batches: takes the shard lock, lets `select(v)` unlink
    // at most `victims::capacity` entries into `v`, releases the lock, runs their `on_evict`
    // and frees them (`dispose_victims`), then calls `after_batch()`; again while `select`
    // returned true. So no callback runs under the shard lock, and the lock is never held for
    // more than one batch of removals.
    template <class Select, class AfterBatch>
    void remove_in_batches(shard& s, Select&& select, AfterBatch&& after_batch) noexcept {
        static_assert(std::is_nothrow_invocable_r_v<bool, Select&, victims&>);
        static_assert(std::is_nothrow_invocable_v<AfterBatch&>);
        for (bool more = true; more;) {
            victims v;
            {
                detail::session_shard_guard g{s.mutex};
                more = select(v);
            }
            dispose_victims(s, v);
            after_batch();
        }
    }
    template <class Select>
    void remove_in_batches(shard& s, Select&& select) noexcept {
        remove_in_batches(s, select, []() noexcept {});
    }

    // Runs the callbacks of unlinked, unpinned entries, destroys them and frees their nodes.
    // No lock held.
    void dispose_victims(shard& s, victims& v) noexcept {
        if (v.removed_cost != 0) s.total_cost.value.fetch_sub(v.removed_cost, std::memory_order_relaxed);
        if (v.count == 0) return;
        for (std::size_t i = 0; i < v.count; ++i) destroy_removed(*v.items[i].n, v.items[i].reason);
        // Give the nodes back in one push.
        for (std::size_t i = 0; i + 1 < v.count; ++i) v.items[i].n->free_link() = v.items[i + 1].idx;
        s.slab.free_chain_unlocked(v.items[0].idx, *v.items[v.count - 1].n);
    }

    void destroy_removed(node& n, evict_reason reason) noexcept {
        if (m_hooks.on_evict) m_hooks.on_evict(std::as_const(n.key()), n.value(), reason);
        charge(-detail::session_cost_of(n.cost.load(std::memory_order_acquire)));
        n.value().~Value();
        n.key().~Key();
    }

    void finalize(shard& s, std::uint32_t idx, node& n, evict_reason reason) noexcept {
        destroy_removed(n, reason);
        s.slab.free_unlocked(idx, n);
    }

    // Drops one pin (and lock units); finalizes if this was the last pin on a dead entry.
    void unpin(shard& s, std::uint32_t idx, node& n, std::uint32_t units) noexcept {
        const std::uint32_t prev = detail::entry_state::drop_units(n.state, units);
        if ((prev & detail::entry_state::dead) != 0 && detail::entry_state::pins(prev) == 1) {
            finalize(s, idx, n, static_cast<evict_reason>(n.wheel.next));
        }
    }

    // ------------------------------------------------------------ access

    template <mode M, class Fn>
    bool access(const Key& key, Fn& fn) {
        constexpr bool exclusive = M == mode::write || M == mode::write_quiet;
        constexpr bool touch = M == mode::write || M == mode::read;
        const std::uint64_t h = hash_of(key);
        shard& s = shard_of(h);
        s.index.prefetch(fp_of(h));
        std::int64_t t = 0;
        bool read_clock = false; // until the clock has been read, in the lookup below
        if constexpr (touch) {
            if (m_config.touch == touch_time::coarse) t = m_coarse_now.value.load(std::memory_order_relaxed);
            read_clock = m_config.touch == touch_time::clock || t == detail::session_unticked;
        }
        s.mutex.lock();
        // The clock read is serializing (lfence; rdtsc in the vDSO): take it once the entry's
        // cache lines are on their way, so it overlaps that miss instead of adding to it.
        const std::uint32_t pos = s.index.find(fp_of(h), [&](std::uint32_t i) noexcept {
            const node& c = s.slab.at(i);
            // Ask at once for what this access touches: the state word, counters and times
            // (written here) and the key, for writing, and the start of the value, for writing
            // only under the exclusive lock. Not the rest of the node: taking a line for
            // writing that a read does not write (the node's links, or the head of the next
            // node) takes it away from the other cores that read or write it.
            __builtin_prefetch(&c, 1);
            __builtin_prefetch(c.key_storage + sizeof(Key) - 1, 1);
            __builtin_prefetch(c.value_storage, exclusive ? 1 : 0);
            if (read_clock) {
                t = now_ns();
                read_clock = false;
            }
            return m_eq(c.key(), key);
        });
        if (MEMGOV_UNLIKELY(pos == detail::session_nil)) {
            bump(s.misses);
            s.mutex.unlock();
            return false;
        }
        const std::uint32_t idx = s.index.slot(pos).idx;
        node& n = s.slab.at(idx);
        if (MEMGOV_UNLIKELY(detail::session_is_held(&n))) {
            s.mutex.unlock();
            throw std::logic_error{"memgov::session_map: re-entered a key from inside its own callback"};
        }
        const bool locked = exclusive ? detail::entry_state::pin_try_lock_exclusive(n.state)
                                      : detail::entry_state::pin_try_lock_shared(n.state);
        // The touch, under the shard lock like every other write of these two fields: plain
        // stores, exact even when shared holders touch at once, and on the line the pin has
        // just taken over. (Locked read-modify-writes here cost as much as the pin itself.)
        if constexpr (touch) {
            advance_last_active(n, t);
            const std::uint32_t m = n.messages.load(std::memory_order_relaxed);
            if (m != std::numeric_limits<std::uint32_t>::max()) {
                n.messages.store(m + 1, std::memory_order_relaxed);
            }
        }
        bump(s.hits);
        s.mutex.unlock();
        if (!locked) detail::entry_state::lock_slow(n.state, exclusive);

        constexpr std::uint32_t units =
            detail::entry_state::pin + (exclusive ? detail::entry_state::writer : detail::entry_state::reader);
        struct guard {
            session_map* m;
            shard* s;
            std::uint32_t idx;
            node* n;
            ~guard() {
                detail::session_pop_held();
                m->unpin(*s, idx, *n, units);
            }
        } g{this, &s, idx, &n};
        detail::session_push_held(&n);

        if constexpr (exclusive) {
            entry e{this, &s, idx, &n};
            // Declared after `g`, so the cost is taken while the entry lock is still held,
            // also when `fn` throws (it may have changed the value before throwing).
            struct follow {
                entry* e;
                ~follow() {
                    if constexpr (M == mode::write && cost_follows_value) e->follow_value();
                }
            } f{&e};
            if constexpr (std::is_invocable_v<Fn&, Value&, entry&>) {
                std::invoke(fn, n.value(), e);
            } else {
                std::invoke(fn, n.value());
            }
        } else {
            const entry e{this, &s, idx, &n};
            if constexpr (std::is_invocable_v<Fn&, const Value&, const entry&>) {
                std::invoke(fn, std::as_const(n.value()), e);
            } else {
                std::invoke(fn, std::as_const(n.value()));
            }
        }
        return true;
    }

    void set_cost_of(shard& s, std::uint32_t idx, node& n, std::int64_t bytes) noexcept {
        const std::uint64_t want = detail::session_cost_bits(bytes);
        std::uint64_t cur = n.cost.load(std::memory_order_relaxed);
        if ((cur & detail::session_cost_mask) == want) return;
        while (!n.cost.compare_exchange_weak(cur, want | (cur & ~detail::session_cost_mask), std::memory_order_acq_rel,
                                             std::memory_order_relaxed)) {
        }
        const std::uint64_t old = cur & detail::session_cost_mask;
        const std::int64_t delta = static_cast<std::int64_t>(want) - static_cast<std::int64_t>(old);
        charge(delta);
        if ((cur & detail::session_detached_bit) != 0) return; // already unlinked: not in totals
        s.total_cost.value.fetch_add(delta, std::memory_order_relaxed);
        if (bucket_of(old) != bucket_of(want)) {
            detail::session_shard_guard g{s.mutex};
            if ((n.state.load(std::memory_order_relaxed) & detail::entry_state::dead) == 0) rebucket(s, idx, n);
        }
    }

    static void flag_no_evict(node& n, bool on) noexcept {
        if (on) {
            n.cost.fetch_or(detail::session_no_evict_bit, std::memory_order_relaxed);
        } else {
            n.cost.fetch_and(~detail::session_no_evict_bit, std::memory_order_relaxed);
        }
    }

    void set_no_evict_of(shard& s, node& n, bool on) noexcept {
        detail::session_shard_guard g{s.mutex};
        flag_no_evict(n, on);
    }

    void mark_ended_of(shard& s, std::uint32_t idx, node& n, std::int64_t now) noexcept {
        detail::session_shard_guard g{s.mutex};
        if ((n.state.load(std::memory_order_relaxed) & detail::entry_state::dead) != 0) return;
        end_locked(s, idx, n, now);
    }

    void end_locked(shard& s, std::uint32_t idx, node& n, std::int64_t now) noexcept {
        if (ended(n)) return;
        // Ending counts as activity: the end time is the entry's last_active from now on.
        advance_last_active(n, std::max(now, n.created));
        n.cost.fetch_or(detail::session_ended_bit, std::memory_order_relaxed);
        // The grace deadline may come before the filed one: re-file.
        if (detail::session_linked(n.wheel)) s.wheel.remove(idx, wheel_links(s));
        file_in_wheel(s, idx, n, now);
    }

    [[nodiscard]] static bool no_evict(const node& n) noexcept {
        return (n.cost.load(std::memory_order_relaxed) & detail::session_no_evict_bit) != 0;
    }
    // Moves last-active forward to `t`, never back. Under the shard lock (touches and
    // `mark_ended` are its only writers), so a plain store is exact. Costs no write when the
    // time has not moved on since the last touch (in coarse mode, most touches).
    static void advance_last_active(node& n, std::int64_t t) noexcept {
        if (t > n.last_active.load(std::memory_order_relaxed)) {
            n.last_active.store(t, std::memory_order_relaxed);
        }
    }
    [[nodiscard]] static bool ended(const node& n) noexcept {
        return (n.cost.load(std::memory_order_relaxed) & detail::session_ended_bit) != 0;
    }

    // ------------------------------------------------------------ sweep

    // An entry pinned by the sweep for the value checks of a `confirm` verdict.
    struct value_check {
        std::uint32_t idx;
        node* n;
        verdict v;
        enum : std::uint8_t { keep, evict, retry } outcome;
    };

    // Processes `s` until nothing is due or the budget is spent; true when nothing is due.
    // Every list filed at or before `horizon`, the first tick at or after `now`, is processed:
    // when `now` falls inside a tick, that tick's entries are checked against `now` itself, and
    // those not yet due are parked until the pass ends, so no deadline passes unnoticed.
    bool sweep_shard(shard& s, std::int64_t now, std::uint64_t now_tick, std::uint64_t horizon, std::size_t max_work,
                     evict_result& r) {
        struct file_parked_on_exit {
            session_map* m;
            shard* s;
            std::int64_t now;
            std::uint64_t now_tick;
            const bool* complete;
            ~file_parked_on_exit() { m->file_parked(*s, now, now_tick, *complete); }
        };
        bool exhausted = false;
        const file_parked_on_exit parked_guard{this, &s, now, now_tick, &exhausted};
        // Entries whose value checks run after each batch, outside the shard lock.
        std::array<value_check, 16> checks;
        std::size_t nchecks = 0;
        remove_in_batches(
            s,
            [&](victims& v) noexcept {
                nchecks = 0;
                std::uint32_t current_list = detail::session_nil;
                bool first_in_slot = true;
                while (!v.full() && nchecks < checks.size()) {
                    if (r.work >= max_work) break;
                    const auto e = s.wheel.next_due(horizon);
                    if (!e) {
                        s.wheel.advance_to(now_tick);
                        exhausted = true;
                        return false;
                    }
                    if (e->list != detail::session_wheel::due_list) s.wheel.advance_to(e->deadline);
                    if (e->list != current_list) {
                        current_list = e->list;
                        first_in_slot = true;
                    }
                    const std::uint32_t idx = s.wheel.pop(e->list, wheel_links(s));
                    ++r.work;
                    node& n = s.slab.at(idx);
                    // A three-deep pipeline over the slot's list: the node two ahead was
                    // requested one step ago, so ask now for what evicting it will touch (its
                    // table slot and list neighbours) and for the node after it. The entries
                    // at the start of a list get theirs as soon as the list is reached.
                    if (first_in_slot) prefetch_eviction(s, n);
                    if (const std::uint32_t next = s.wheel.head(e->list); next != detail::session_nil) {
                        const node& nx = s.slab.at(next);
                        if (first_in_slot) prefetch_eviction(s, nx);
                        if (const std::uint32_t next2 = nx.wheel.next; next2 != detail::session_nil) {
                            const node& nx2 = s.slab.at(next2);
                            prefetch_eviction(s, nx2);
                            if (nx2.wheel.next != detail::session_nil) __builtin_prefetch(&s.slab.at(nx2.wheel.next));
                        }
                    }
                    first_in_slot = false;
                    // Above level 0 the slot spans many ticks, and a tick spans many deadlines:
                    // re-file entries not yet due. Deadlines up to `after` have been checked: an
                    // entry filed under tick T is due after the start of tick T - 1; one on the
                    // due list, after this shard's last complete pass (or its creation).
                    const std::int64_t after = e->list == detail::session_wheel::due_list
                                                   ? std::min(now, std::max(s.swept_at, n.created))
                                                   : checked_before(e->deadline, now);
                    const bool recheck = (n.cost.load(std::memory_order_relaxed) & detail::session_recheck_bit) != 0;
                    if (recheck) n.cost.fetch_and(~detail::session_recheck_bit, std::memory_order_relaxed);
                    const std::int64_t d = recheck ? now : next_deadline(n, after);
                    if (d > now) {
                        refile_at(s, idx, d, now);
                        continue;
                    }
                    const verdict vd = evaluate_rules(n, now);
                    if (vd.kind == verdict::evict) {
                        evict_counted(s, idx, vd.reason, v, r);
                    } else if (vd.kind == verdict::confirm) {
                        n.state.fetch_add(detail::entry_state::pin, std::memory_order_relaxed);
                        checks[nchecks++] = value_check{idx, &n, vd, value_check::keep};
                    } else {
                        refile_at(s, idx, next_deadline(n, now), now);
                    }
                }
                return r.work < max_work;
            },
            [&]() noexcept {
                if (nchecks > 0) run_value_checks(s, checks.data(), nchecks, now, r);
            });
        return exhausted;
    }

    // The time up to which an entry filed under wheel tick `tick` has been checked.
    [[nodiscard]] std::int64_t checked_before(std::uint64_t tick, std::int64_t now) const noexcept {
        const std::int64_t start = tick_start_ns(tick);
        if (start == detail::session_never) return now;
        return start - m_resolution;
    }

    // Files `idx`, due at `d` (> now), during a sweep pass. An entry the pass would meet again
    // (due within the tick the wheel stands at) is parked until the pass ends instead.
    void refile_at(shard& s, std::uint32_t idx, std::int64_t d, std::int64_t now) noexcept {
        if (d == detail::session_never) return;
        const std::uint64_t t = tick_ceil(d);
        if (d <= now || t <= s.wheel.elapsed()) {
            s.wheel.park(idx, wheel_links(s));
        } else {
            s.wheel.insert(idx, t, wheel_links(s));
        }
    }

    // Ends a pass over `s`: files the parked entries under their deadlines (an entry whose
    // value check found it busy, at the next tick). `complete`: the pass found nothing else
    // due, so every deadline up to `now` has been checked.
    void file_parked(shard& s, std::int64_t now, std::uint64_t now_tick, bool complete) noexcept {
        detail::session_shard_guard g{s.mutex};
        for (;;) {
            const std::uint32_t idx = s.wheel.pop(detail::session_wheel::parked_list, wheel_links(s));
            if (idx == detail::session_nil) break;
            node& n = s.slab.at(idx);
            if ((n.cost.load(std::memory_order_relaxed) & detail::session_recheck_bit) != 0) {
                s.wheel.insert(idx, now_tick + 1, wheel_links(s));
            } else {
                file_in_wheel(s, idx, n, now);
            }
        }
        if (complete) s.swept_at = now;
    }

    // Runs the value checks of `checks` (trying each entry's shared lock, never waiting for it),
    // then, under the shard lock, evicts the entries whose check held, re-files the others (a
    // busy one to be checked again at the next tick) and drops the sweep's pins.
    void run_value_checks(shard& s, value_check* checks, std::size_t count, std::int64_t now,
                          evict_result& r) noexcept {
        for (std::size_t i = 0; i < count; ++i) {
            value_check& c = checks[i];
            if (!detail::entry_state::try_lock_shared(c.n->state)) {
                c.outcome = value_check::retry;
                continue;
            }
            c.outcome = confirm_value(*c.n, now, c.v) ? value_check::evict : value_check::keep;
            detail::entry_state::drop_units(c.n->state, detail::entry_state::reader);
        }
        victims v; // stays empty: we hold a pin on every checked entry
        {
            detail::session_shard_guard g{s.mutex};
            for (std::size_t i = 0; i < count; ++i) {
                value_check& c = checks[i];
                node& n = *c.n;
                if ((n.state.load(std::memory_order_relaxed) & detail::entry_state::dead) != 0) continue;
                if (c.outcome == value_check::evict) {
                    evict_counted(s, c.idx, c.v.reason, v, r);
                } else if (!detail::session_linked(n.wheel)) {
                    if (c.outcome == value_check::retry) {
                        n.cost.fetch_or(detail::session_recheck_bit, std::memory_order_relaxed);
                        s.wheel.park(c.idx, wheel_links(s));
                    } else {
                        refile_at(s, c.idx, next_deadline(n, now), now);
                    }
                }
            }
        }
        dispose_victims(s, v);
        for (std::size_t i = 0; i < count; ++i) unpin(s, checks[i].idx, *checks[i].n, detail::entry_state::pin);
    }

    // ------------------------------------------------------------ pressure eviction
    // The per-shard selections of `evict_older_than` and `evict_over_cost`/`evict_largest` stay
    // here: each walks a list of the shard (creation order, a cost bucket) and unlinks through
    // `unlink` as it goes, so it needs the shard and the map's removal path. The LRU sampler
    // only reads, and lives in detail/session_map_eviction.hpp.

    // Oldest-first in one shard. True when the shard has nothing evictable that old left.
    bool evict_old_in(shard& s, std::int64_t cutoff, std::size_t budget, evict_result& r) {
        bool exhausted = false;
        remove_in_batches(s, [&](victims& v) noexcept {
            std::uint32_t idx = s.age.head;
            while (!v.full()) {
                if (idx == detail::session_nil || s.slab.at(idx).created > cutoff) {
                    exhausted = true;
                    return false;
                }
                if (r.work >= budget) break;
                ++r.work;
                node& n = s.slab.at(idx);
                const std::uint32_t next = n.age.next;
                if (!no_evict(n)) evict_counted(s, idx, evict_reason::age_under_pressure, v, r);
                idx = next;
            }
            return r.work < budget;
        });
        return exhausted;
    }

    bool evict_cost_in(shard& s, std::uint64_t limit, std::size_t budget, evict_result& r) {
        const unsigned low = std::max(1U, bucket_of(limit));
        for (unsigned b = 64; b-- > low;) {
            if ((s.bucket_mask.load(std::memory_order_relaxed) & (std::uint64_t{1} << b)) == 0) continue;
            if (!evict_bucket_in(s, b, limit, evict_reason::over_cost, std::numeric_limits<std::size_t>::max(), budget,
                                 r)) {
                return false;
            }
        }
        return true;
    }

    // Evicts entries of bucket `b` with cost > `limit` until `n` evictions in total; true when
    // the bucket is exhausted.
    bool evict_bucket_in(shard& s, unsigned b, std::uint64_t limit, evict_reason reason, std::size_t n,
                         std::size_t budget, evict_result& r) {
        bool exhausted = false;
        remove_in_batches(s, [&](victims& v) noexcept {
            std::uint32_t idx = s.buckets[b];
            while (!v.full()) {
                if (idx == detail::session_nil) {
                    exhausted = true;
                    return false;
                }
                if (r.work >= budget || r.evicted >= n) break;
                ++r.work;
                node& nd = s.slab.at(idx);
                const std::uint32_t next = nd.bucket.next;
                const std::uint64_t w = nd.cost.load(std::memory_order_relaxed);
                if ((w & detail::session_cost_mask) > limit && (w & detail::session_no_evict_bit) == 0) {
                    evict_counted(s, idx, reason, v, r);
                }
                idx = next;
            }
            return r.work < budget && r.evicted < n;
        });
        return exhausted;
    }

    // Calls `step(shard)` for every shard once, round robin from `cursor`, until a step returns
    // false (its budget ran out: `cursor` stays on that shard, so the next call resumes there).
    // Returns true when every shard was stepped through.
    template <class Step>
    bool each_shard_from(std::size_t& cursor, Step&& step) {
        for (std::size_t visited = 0; visited < m_config.shards; ++visited) {
            if (!step(m_shards[cursor])) return false;
            cursor = (cursor + 1) & m_shard_mask;
        }
        return true;
    }

    // ------------------------------------------------------------ members

    struct alignas(cache_line_size) padded_time {
        std::atomic<std::int64_t> value{detail::session_unticked};
    };

    session_map_config m_config;
    hooks_type m_hooks;
    Clock m_clock;
    ledger* m_ledger;
    [[no_unique_address]] Hash m_hash{};
    [[no_unique_address]] KeyEqual m_eq{};
    [[no_unique_address]] Cost m_cost{};
    bool m_interval_rules = false;
    std::size_t m_shard_mask = 0;
    std::int64_t m_epoch = 0;
    std::int64_t m_resolution = 1;
    std::unique_ptr<shard[], shard_deleter> m_shards;
    padded_time m_coarse_now; // detail::session_unticked until the first tick
    detail::owned_mutex m_sweep_turn;
    std::int64_t m_sweep_now = std::numeric_limits<std::int64_t>::min(); // under m_sweep_turn
    std::size_t m_sweep_cursor = 0;
    std::atomic<std::uint64_t> m_sweep_work{0};
    detail::owned_mutex m_evict_turn;
    std::size_t m_age_cursor = 0;
    std::size_t m_cost_cursor = 0;
    std::size_t m_lru_cursor = 0;
    detail::session_lru_sampler m_lru;
};

MEMGOV_NAMESPACE_END
