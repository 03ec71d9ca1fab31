// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The graded evictor: maps pressure levels to ordered reclaim actions through a policy table,
/// asks registered reclaimers (pools, session maps, anything the user adds) to act, trims the
/// heap with back-off on a thread of its own (a step only asks for the trim, so it never waits
/// for `malloc_trim`), and counts everything it does.
///
/// ## One step
/// `step(view, now)` is given the pressure situation (level, limit, estimate, red line, the
/// usage it should get back under) and walks the current level's row of the policy table in
/// order. Each entry runs its action on every reclaimer that handles it, bounded by the entry's
/// work budget. The step wants `wanted = estimate − target` bytes freed, where the target is the
/// current level's exit ratio times the limit (for emergency: the red line minus the emergency
/// margin). After each *until-enough* entry the step stops once the bytes freed in this step
/// reach `wanted` and something was freed; an entry that frees nothing lets the next one run at
/// once (feedback), rather than waiting for the next period. *Always* entries run on every step
/// of their level whatever was freed before them.
///
/// A step's `evict_over_cost` cap is `session_cost_cap`, or the view's per-session quota when
/// that is smaller. A user action takes a place in the ladder as a `custom` entry whose name is
/// declared in `evictor_config::custom_actions`; it runs on the reclaimers whose
/// `handles_custom(name)` is true. What each reclaimer freed is counted per action
/// (`evictor_stats::reclaimers`); the cells are made when a reclaimer's name first registers,
/// so a step never allocates for them.
///
/// At `normal` the step wants nothing freed: only the normal row runs (by default a bounded
/// expiry sweep, so idle and orphaned sessions expire without pressure); the normal row may
/// hold nothing but `sweep_expired`, so a step at normal never trims pools or the heap and
/// never evicts.
///
/// ## Levels
/// Reclaimers are told every change of the level once, down as well as up (`on_level`):
/// through `set_level` (the governor calls it on every poll) or a step whose level differs
/// from the last one told. A reclaimer added is told the current level at once, `normal`
/// included (so a part starts in step with the others whatever it was set to before); one
/// removed while the level is not `normal` is told `normal` on its way out.
/// A level past `emergency` (a `pressure_level` value no level has, given to `step` or
/// `set_level` at run time) is taken as `emergency` and counted
/// (`evictor_stats::out_of_range_levels`): no per-level table is indexed past its end, and
/// reclaimers are only ever told real levels.
///
/// ## Lock order and callbacks
/// step mutex → list lock → a reclaimer's own locks (a pool's depot lock, a session map's
/// shard locks). The counters live under a leaf lock of their own, which the heap trimmer's
/// thread takes when a trim completes; the trimmer's own lock is a leaf under it. A step, and every
/// `on_level` call, holds the step mutex but not the list lock; a visit
/// (`for_each_reclaimer`) holds the list lock shared; `add` and `remove` take both.
///
/// From inside any callback the evictor makes (`reclaim`, `on_level`, and what they run, such
/// as a session map's `on_evict`) and from inside a visit, on the same thread:
/// - `stats`, `for_each_reclaimer`, `reclaimers`, `level` and `dry_run` work as anywhere
///   else (a visit nested in a visit iterates under the outer visit's lock);
/// - `add`, `remove` and `set_level` are deferred: they return at once (`add` still throws for
///   a null or already registered reclaimer, `remove` still says whether it was registered)
///   and take effect when the running step, or the outermost visit, ends (a visit that ends
///   while another thread steps leaves them to the end of that step; at the latest the next
///   `step`, `add`, `remove` or `set_level` applies them). A reclaimer removed
///   this way is not called again by the running step, nor shown to visits; the part it
///   works on may be destroyed only once the step or visit has ended. Deferrals are counted
///   (`evictor_stats::deferred_changes`);
/// - `step` does nothing and returns an empty report (counted in `ignored_steps`).
/// None of these ends the process or waits for the step or visit it is called from.

#include <memgov/clock.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/cgroup_parse.hpp>
#include <memgov/detail/saturate.hpp>
#include <memgov/detail/validate.hpp>
#include <memgov/metrics.hpp>
#include <memgov/pressure_level.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#if MEMGOV_LINUX
#include <fcntl.h>
#include <unistd.h>
#endif
#if MEMGOV_HAS_MALLOC_TRIM
#include <malloc.h>
#endif

MEMGOV_NAMESPACE_BEGIN

/// What a policy entry asks of reclaimers.
enum class reclaim_action : std::uint8_t {
    trim_pools = 0,      ///< Give idle pooled capacity back toward the pools' reserves.
    sweep_expired = 1,   ///< Remove expired and orphaned sessions.
    trim_heap = 2,       ///< Return freed heap to the OS (`malloc_trim`), with back-off.
    evict_by_age = 3,    ///< Evict sessions older than the age the age ladder gives.
    evict_over_cost = 4, ///< Evict sessions whose byte cost passes the cost cap.
    evict_lru = 5,       ///< Evict least recently used sessions until enough is freed.
    /// Evict the largest sessions (power-of-two cost buckets, from the top, as Redis's
    /// `maxmemory-clients` and Envoy's `reset_high_memory_stream` do) until enough is freed.
    evict_largest = 6,
    /// A user action, named by the ladder entry (`policy_entry::name`, declared in
    /// `evictor_config::custom_actions`) and answered by reclaimers whose `handles_custom(name)`
    /// is true.
    custom = 7,
};
/// Number of distinct reclaim actions (`custom` included).
inline constexpr std::size_t reclaim_action_count = 8;

/// The action's name ("trim_pools", ...). Thread safety: pure.
[[nodiscard]] constexpr std::string_view to_string(reclaim_action a) noexcept {
    switch (a) {
    case reclaim_action::trim_pools:
        return "trim_pools";
    case reclaim_action::sweep_expired:
        return "sweep_expired";
    case reclaim_action::trim_heap:
        return "trim_heap";
    case reclaim_action::evict_by_age:
        return "evict_by_age";
    case reclaim_action::evict_over_cost:
        return "evict_over_cost";
    case reclaim_action::evict_lru:
        return "evict_lru";
    case reclaim_action::evict_largest:
        return "evict_largest";
    case reclaim_action::custom:
        return "custom";
    }
    return "unknown";
}

/// What one reclaimer is asked to do.
struct reclaim_request {
    reclaim_action action = reclaim_action::trim_pools;
    pressure_level level = pressure_level::normal;
    double usage_ratio = 0.0;     ///< Estimated usage over the limit.
    std::size_t bytes_wanted = 0; ///< What the step still wants freed (0: nothing more).
    std::size_t budget = 0;       ///< At most this many items removed or visited.
    duration max_age{};           ///< evict_by_age: evict what is older than this.
    /// evict_over_cost: evict what costs more than this (the configured cap, or the
    /// governor's per-session quota at this level when that is smaller).
    std::size_t cost_cap = 0;
    /// evict_largest: only sessions costing more than this are "large" (`cost_cap` ×
    /// `evictor_config::largest_min_share`), so equal, ordinary sessions are left to age and
    /// LRU.
    std::size_t largest_floor = 0;
    time_point now{}; ///< The step's time.
    /// custom: the action's name (as in `evictor_config::custom_actions`; the view lives as
    /// long as the evictor). Empty for the built-in actions.
    std::string_view name{};
};

/// What a reclaimer did.
struct reclaim_result {
    std::size_t bytes = 0; ///< Bytes freed (or, for a pool, given back to the upstream).
    std::size_t items = 0; ///< Buffers, objects or sessions removed.
};

/// Something that can give memory back when the evictor asks. Implement it for your own caches;
/// memgov provides adapters for its pools and session maps (see `memgov/reclaimers.hpp`).
/// Thread safety: `reclaim` and `on_level` are called one call at a time, under the evictor's
/// step mutex: by the stepping thread, or by the thread that adds or removes the reclaimer or
/// sets the level (`on_level`, see `evictor::add`, `evictor::set_level`); `name`, `handles`,
/// `estimate`, `collect` and `reuse_rate` may be called from a scraping thread concurrently.
/// Every callback may read the evictor (and the governor) back; see the file comment.
class reclaimer {
public:
    reclaimer() = default;
    reclaimer(const reclaimer&) = delete;
    reclaimer& operator=(const reclaimer&) = delete;
    virtual ~reclaimer() = default;

    /// A short name for counters and metrics ("buffer_pool", "sessions", ...).
    [[nodiscard]] virtual std::string_view name() const noexcept = 0;
    /// True if this reclaimer answers `a`. For `custom` the evictor asks `handles_custom`.
    [[nodiscard]] virtual bool handles(reclaim_action a) const noexcept = 0;
    /// True if this reclaimer answers the custom action `name` (one of
    /// `evictor_config::custom_actions`); `reclaim` then gets `action == custom` and `name`.
    /// Asked once at registration and on each step that runs a custom entry. Default: false.
    [[nodiscard]] virtual bool handles_custom(std::string_view /*name*/) const noexcept { return false; }
    /// A cheap estimate of the bytes `a` could free now (used by dry runs and the health view).
    /// For `custom`: what all the custom actions the reclaimer answers could free.
    [[nodiscard]] virtual std::size_t estimate(reclaim_action a) const noexcept = 0;
    /// Does the work for `req.action`, bounded by `req.budget`, and says what it freed.
    virtual reclaim_result reclaim(const reclaim_request& req) noexcept = 0;
    /// Told the level when added, at every change of it (down as well as up), and `normal`
    /// when removed under pressure: pools shrink or grow their caps. Default: nothing.
    virtual void on_level(pressure_level /*level*/) noexcept {}
    /// Writes the reclaimer's own statistics (default: none). May throw `std::bad_alloc`.
    virtual void collect(metric_sink& /*sink*/) const {}
    /// The fraction of requests served by reuse, in [0, 1], for the health summary; negative
    /// when the notion does not apply (default).
    [[nodiscard]] virtual double reuse_rate() const noexcept { return -1.0; }
};

namespace detail {
/// Returns `name`; throws `std::invalid_argument{"memgov::<what>: name is empty"}` if it is
/// empty (`what` names the reclaimer type).
inline std::string reclaimer_name(std::string name, const char* what) {
    if (name.empty()) throw std::invalid_argument{std::string{"memgov::"} + what + ": name is empty"};
    return name;
}
} // namespace detail

/// A reclaimer made of functions, for user caches and tests.
class function_reclaimer final : public reclaimer {
public:
    /// The work function: called for every action in `actions`.
    using reclaim_fn = std::function<reclaim_result(const reclaim_request&)>;
    /// The estimate function (optional).
    using estimate_fn = std::function<std::size_t(reclaim_action)>;

    /// `fn` is called for every action in `actions` and for every custom action named in
    /// `custom_actions` (a Kafka producer's "shed_queued_work", say: `req.action` is `custom`,
    /// `req.name` the name). Throws `std::invalid_argument` if `name` is empty, `fn` is empty
    /// or an action is out of range.
    function_reclaimer(std::string name, std::vector<reclaim_action> actions, reclaim_fn fn, estimate_fn estimate = {},
                       std::vector<std::string> custom_actions = {})
        : m_name{detail::reclaimer_name(std::move(name), "function_reclaimer")}, m_fn{std::move(fn)},
          m_estimate{std::move(estimate)}, m_custom{std::move(custom_actions)} {
        if (!m_fn) throw std::invalid_argument{"memgov::function_reclaimer: reclaim function is empty"};
        for (auto a : actions) {
            if (static_cast<std::size_t>(a) >= reclaim_action_count) {
                throw std::invalid_argument{"memgov::function_reclaimer: unknown action"};
            }
            m_handles[static_cast<std::size_t>(a)] = true;
        }
        if (!m_custom.empty()) m_handles[static_cast<std::size_t>(reclaim_action::custom)] = true;
    }
    [[nodiscard]] std::string_view name() const noexcept override { return m_name; }
    [[nodiscard]] bool handles(reclaim_action a) const noexcept override {
        return static_cast<std::size_t>(a) < reclaim_action_count && m_handles[static_cast<std::size_t>(a)];
    }
    [[nodiscard]] bool handles_custom(std::string_view action) const noexcept override {
        return std::find(m_custom.begin(), m_custom.end(), action) != m_custom.end();
    }
    [[nodiscard]] std::size_t estimate(reclaim_action a) const noexcept override {
        try {
            return m_estimate ? m_estimate(a) : 0;
        } catch (...) {
            return 0;
        }
    }
    reclaim_result reclaim(const reclaim_request& req) noexcept override {
        try {
            return m_fn(req);
        } catch (...) {
            return {}; // a throwing user function frees nothing; the ladder moves on
        }
    }

private:
    std::string m_name;
    std::array<bool, reclaim_action_count> m_handles{};
    reclaim_fn m_fn;
    estimate_fn m_estimate;
    std::vector<std::string> m_custom;
};

/// One entry of a policy row.
struct policy_entry {
    reclaim_action action = reclaim_action::trim_pools;
    /// At most this many items per reclaimer per step (Envoy resets at most 50 streams per
    /// tick; Redis bounds each eviction pass).
    std::size_t budget = 64;
    /// Run on every step of the level, whatever earlier entries freed (otherwise: only while
    /// the step still wants bytes).
    bool always = false;
    /// For `reclaim_action::custom` only: the action's name, one of
    /// `evictor_config::custom_actions` (e.g. "shed_queued_work"). Empty otherwise.
    std::string name{};
};

/// From this usage ratio on, sessions older than `max_age` are evicted (critical and above).
struct age_step {
    double usage_ratio = 0.0;
    duration max_age{};
};

/// Back-off for the heap trimmer (`malloc_trim(0)` under glibc).
struct heap_trim_config {
    bool enabled = true;
    /// The shortest interval between two trims.
    duration min_interval = std::chrono::milliseconds{200};
    /// The longest interval the back-off grows to.
    duration max_interval = std::chrono::seconds{10};
    /// The interval is multiplied by this after a trim that freed less than `useful_bytes`.
    double backoff_factor = 2.0;
    /// A trim that frees at least this much resets the interval to `min_interval`.
    std::size_t useful_bytes = std::size_t{1} << 20;
};

/// The evictor's policy table and limits. Every number is documented with its origin in
/// docs/governor.md.
struct evictor_config {
    /// The ordered actions of each level, indexed by `pressure_level`. Defaults: see
    /// `default_ladder()`.
    std::array<std::vector<policy_entry>, pressure_level_count> ladder = default_ladder();
    /// Age ladder for evict_by_age, by rising usage ratio (default: 94% → 400 s,
    /// 96% → 200 s, 98% → 100 s). Below the first step nothing is evicted by age.
    std::vector<age_step> age_ladder = {
        {0.94, std::chrono::seconds{400}}, {0.96, std::chrono::seconds{200}}, {0.98, std::chrono::seconds{100}}};
    /// evict_over_cost: sessions costing more than this are evicted (seed: 30 MiB); when the
    /// step's view carries a smaller per-session quota (`pressure_view::session_quota_bytes`),
    /// that quota.
    std::size_t session_cost_cap = std::size_t{30} << 20;
    /// evict_largest takes only sessions costing more than this share of the cost cap (the cap
    /// or quota above): as in Envoy's overload manager, only the big are eligible. In [0, 1];
    /// 0 makes any session with a cost eligible, largest first.
    double largest_min_share = 0.5;
    /// Names of user actions that `custom` ladder entries may use, answered by reclaimers'
    /// `handles_custom` (e.g. {"shed_queued_work"}). Each is non-empty, at most 64 characters of
    /// [a-z0-9_] starting with a letter, unique, and not a built-in action's name; they become
    /// the `action` label of the per-reclaimer metrics.
    std::vector<std::string> custom_actions{};
    /// emergency: evict until usage is under the red line minus this margin (hysteresis).
    double emergency_margin = 0.02;
    /// Heap trimming with back-off.
    heap_trim_config heap{};
    /// Count what would be done, do nothing.
    bool dry_run = false;

    /// The default policy table (docs/governor.md explains each row).
    [[nodiscard]] static std::array<std::vector<policy_entry>, pressure_level_count> default_ladder() {
        using a = reclaim_action;
        std::array<std::vector<policy_entry>, pressure_level_count> t;
        t[to_index(pressure_level::normal)] = {{a::sweep_expired, 256, true}};
        t[to_index(pressure_level::elevated)] = {
            {a::trim_pools, 256, false}, {a::sweep_expired, 256, false}, {a::trim_heap, 0, false}};
        t[to_index(pressure_level::high)] = {
            {a::trim_pools, 1024, false}, {a::sweep_expired, 1024, false}, {a::trim_heap, 0, false}};
        // Under pressure the cause goes first: sessions over the cost cap (always), then the
        // largest, before age and LRU reach the well-behaved ones. Trims keep their places.
        t[to_index(pressure_level::critical)] = {{a::evict_over_cost, 64, true},  {a::trim_pools, 4096, false},
                                                 {a::sweep_expired, 1024, false}, {a::evict_largest, 16, false},
                                                 {a::evict_by_age, 64, false},    {a::trim_heap, 0, false}};
        t[to_index(pressure_level::emergency)] = {{a::evict_over_cost, 64, true},  {a::trim_pools, 65536, false},
                                                  {a::sweep_expired, 4096, false}, {a::evict_largest, 16, false},
                                                  {a::evict_by_age, 256, false},   {a::evict_lru, 256, false},
                                                  {a::trim_heap, 0, false}};
        return t;
    }
};

/// The pressure situation one step acts on (usually built from a monitor snapshot).
struct pressure_view {
    pressure_level level = pressure_level::normal;
    std::size_t limit_bytes = 0;    ///< The binding limit.
    std::size_t estimate_bytes = 0; ///< Current usage estimate.
    double red_line = 0.85;         ///< The critical threshold as a ratio of the limit.
    double exit_ratio = 0.0;        ///< Below this ratio the current level is left.
    /// A session's quota at this level (the governor's admission quota), 0 when none applies:
    /// evict_over_cost then uses min(`evictor_config::session_cost_cap`, this).
    std::size_t session_quota_bytes = 0;
};

/// Counters for one (level, action) cell.
struct action_counters {
    std::uint64_t runs = 0; ///< Times the action ran (on at least one reclaimer).
    /// Bytes it freed. For trim_heap: counted when the trim completes on the trimmer's
    /// thread, in the cell of the level whose step requested it.
    std::uint64_t bytes = 0;
    std::uint64_t items = 0; ///< Items it removed.
    /// Runs that freed nothing (feedback passed on). For trim_heap: requests deferred or
    /// coalesced, and trims that completed having given nothing back.
    std::uint64_t empty = 0;
    std::uint64_t dry_runs = 0;  ///< Runs counted in dry-run mode.
    std::uint64_t dry_bytes = 0; ///< Bytes the reclaimers' estimates said a dry run would free.
};

/// What one reclaimer did for one action, over the evictor's life.
struct reclaimer_action_counters {
    /// The reclaimer answered the action when it was registered (`handles`, or for a custom
    /// action `handles_custom`); only these are exported.
    bool handled = false;
    std::uint64_t runs = 0;  ///< Times its `reclaim` was called for the action.
    std::uint64_t bytes = 0; ///< Bytes it reported freed.
    std::uint64_t items = 0; ///< Items it reported removed.
};

/// The counters of the reclaimers registered under one name (kept by the evictor after
/// removal, so they never go backwards: one registered again under the name goes on from them).
struct reclaimer_stats {
    std::string name;
    /// By built-in action (`actions[static_cast<std::size_t>(a)]`); the `custom` cell sums the
    /// custom actions. Dry runs are not counted here.
    std::array<reclaimer_action_counters, reclaim_action_count> actions{};
    /// By custom action, in the order of `evictor_config::custom_actions`.
    std::vector<reclaimer_action_counters> custom;
};

/// What one step did.
struct step_report {
    pressure_level level = pressure_level::normal;
    std::size_t wanted = 0; ///< Bytes the step wanted freed.
    std::size_t freed = 0;  ///< Bytes freed (0 in dry run).
    std::size_t items = 0;  ///< Items removed (0 in dry run).
    std::size_t actions_run = 0;
    bool dry_run = false;
};

/// A copy of the evictor's counters.
struct evictor_stats {
    std::array<std::array<action_counters, reclaim_action_count>, pressure_level_count> cells{};
    std::array<std::uint64_t, pressure_level_count> steps{}; ///< Steps taken at each level.
    std::uint64_t heap_trims = 0;                            ///< Heap trims completed (malloc_trim calls made).
    std::uint64_t heap_trims_deferred = 0;                   ///< Trims skipped by the back-off.
    /// Trims the back-off allowed while one still ran on the trimmer's thread (folded into it).
    std::uint64_t heap_trims_coalesced = 0;
    std::uint64_t heap_trimmed_bytes = 0; ///< RSS given back by completed heap trims.
    duration heap_interval{};             ///< The back-off's current interval.
    bool heap_trim_running = false;       ///< A requested heap trim has not completed yet.
    /// `add`, `remove` and `set_level` calls made from inside a callback or a visit, whose
    /// effect was deferred to the end of the step or visit.
    std::uint64_t deferred_changes = 0;
    /// `step` calls made from inside a callback or a visit of the same evictor (ignored).
    std::uint64_t ignored_steps = 0;
    /// Levels past `emergency` given to `step` or `set_level`, taken as `emergency`.
    std::uint64_t out_of_range_levels = 0;
    /// Counters per registered reclaimer name, in the order the names were first registered
    /// (empty if copying them ran out of memory). A name unregistered is not shown; registered
    /// again, its counters go on from where they were.
    std::vector<reclaimer_stats> reclaimers;
    /// `evictor_config::custom_actions`, naming the `custom` cells of `reclaimers`.
    std::vector<std::string> custom_actions;

    /// Sum of a column over all levels.
    [[nodiscard]] action_counters total(reclaim_action a) const noexcept {
        action_counters t;
        for (const auto& row : cells) {
            const auto& c = row[static_cast<std::size_t>(a)];
            t.runs += c.runs;
            t.bytes += c.bytes;
            t.items += c.items;
            t.empty += c.empty;
            t.dry_runs += c.dry_runs;
            t.dry_bytes += c.dry_bytes;
        }
        return t;
    }
};

namespace detail {

/// Resident set size from /proc/self/statm, or 0 where unavailable. A system call: never on a
/// hot path.
inline std::size_t read_rss_bytes() noexcept {
#if MEMGOV_LINUX
    const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[128];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return 0;
    // "size resident shared ...": the second field, in pages; refused (0) if implausible.
    const long page = ::sysconf(_SC_PAGESIZE);
    const auto bytes = detail::cg_statm_resident_bytes(std::string_view{buf, static_cast<std::size_t>(n)},
                                                       static_cast<std::uint64_t>(page > 0 ? page : 4096));
    return bytes ? static_cast<std::size_t>(*bytes) : 0;
#else
    return 0;
#endif
}

} // namespace detail

/// What `heap_trimmer::request` did with a request.
enum class heap_trim_request : std::uint8_t {
    disabled = 0,  ///< `heap.enabled` is false: nothing asked of the trimmer's thread.
    deferred = 1,  ///< The back-off's interval has not passed since the last trim began.
    coalesced = 2, ///< The back-off allowed it, but a trim still runs: folded into that one.
    started = 3,   ///< Handed to the trimmer's thread (or run inline if it cannot start).
};

/// A trim that completed, as told to the completion function of a `heap_trimmer`.
struct heap_trim_done {
    std::size_t bytes = 0; ///< The RSS it gave back (RSS before − after, 0 if it grew).
    std::size_t tag = 0;   ///< The tag given to `request` (the evictor passes the level).
    duration interval{};   ///< The back-off's interval after this trim.
};

/// Returns freed heap to the OS with a gentle back-off: at most one
/// `malloc_trim(0)` per interval; the interval starts at `min_interval`, grows by
/// `backoff_factor` after each trim that gave back less than `useful_bytes`, up to
/// `max_interval`, and resets after a useful one; the next trim may begin one interval after
/// the last one began. Never a tight loop.
///
/// `request(now)` is how the evictor trims: it never waits. The trim runs on the trimmer's own
/// thread, started on the first request the back-off allows (none while `enabled` is false or
/// when only `maybe_trim` is used) and joined by the destructor. What a trim gave back is known
/// when it completes: it is told to the completion function, on the trimmer's thread, and the
/// back-off's next interval is computed from it then. A request while a trim runs is
/// coalesced into it and counted. `maybe_trim(now)` trims on the caller's thread instead.
///
/// Why a thread: glibc's `malloc_trim` walks the whole heap, O(heap), which takes a good
/// fraction of a second on a large heap; a sampler that trims inline takes no sample
/// meanwhile. What a thread does not fix: `malloc_trim` holds each arena's lock while it walks
/// that arena, so any thread allocating from it waits anyway (docs/governor.md, heap trims).
///
/// Thread safety: every member may be called from any thread; one trim runs at a time. The
/// trim, RSS and completion functions run on the trimmer's thread (or the caller's, for
/// `maybe_trim` and the inline fallback), never two at once, with no trimmer lock held.
/// Lock order: the trimmer's lock is a leaf; the completion function may take locks that are
/// held while calling the trimmer's members.
class heap_trimmer {
public:
    /// The function that trims and the one that measures RSS; replaceable for tests.
    using trim_fn = std::function<void()>;
    using rss_fn = std::function<std::size_t()>;
    /// Told each completed trim that `request` started. Must not throw or call `wait`.
    using done_fn = std::function<void(const heap_trim_done&)>;

    /// Throws `std::invalid_argument` naming a bad field of `cfg`. Starts no thread.
    explicit heap_trimmer(heap_trim_config cfg, trim_fn trim = {}, rss_fn rss = {}, done_fn done = {})
        : m_cfg{cfg}, m_trim{std::move(trim)}, m_rss{std::move(rss)}, m_done{std::move(done)}, m_interval{
                                                                                                   cfg.min_interval} {
        detail::require_field(cfg.min_interval > duration::zero() && cfg.min_interval <= longest_period,
                              "heap_trim_config", "min_interval", "must be in (0, longest_period]");
        detail::require_field(cfg.max_interval >= cfg.min_interval && cfg.max_interval <= longest_period,
                              "heap_trim_config", "max_interval", "must be in [min_interval, longest_period]");
        detail::require_field(cfg.backoff_factor >= 1.0 && cfg.backoff_factor <= 1000.0, "heap_trim_config",
                              "backoff_factor", "must be in [1, 1000]");
        if (!m_trim) {
            m_trim = [] {
#if MEMGOV_HAS_MALLOC_TRIM
                ::malloc_trim(0);
#endif
            };
        }
        if (!m_rss) m_rss = [] { return detail::read_rss_bytes(); };
    }

    heap_trimmer(const heap_trimmer&) = delete;
    heap_trimmer& operator=(const heap_trimmer&) = delete;

    /// Joins the trimmer's thread: waits for a trim that runs (it cannot be interrupted);
    /// a request not yet begun is dropped. Never throws.
    ~heap_trimmer() {
        {
            std::lock_guard lock{m_mutex};
            m_stop = true;
        }
        m_wake.notify_all();
        if (m_thread.joinable()) m_thread.join();
    }

    /// Asks for a trim at `now` without waiting for it: deferred by the back-off, coalesced
    /// into a trim that runs, or handed to the trimmer's thread (started now if it is the first
    /// trim). If the thread cannot be started, the trim runs here instead (counted as started).
    /// `tag` comes back in `heap_trim_done`. Thread safety: any thread. Complexity: a lock and a
    /// notify; the first started request creates the thread.
    heap_trim_request request(time_point now, std::size_t tag = 0) noexcept {
        {
            std::unique_lock lock{m_mutex};
            const heap_trim_request r = admit_locked(now);
            if (r != heap_trim_request::started) return r;
            m_job_tag = tag;
            if (!m_thread.joinable() && !m_thread_failed) {
                try {
                    m_thread = std::thread{[this] { work(); }};
                } catch (...) {
                    m_thread_failed = true; // out of threads or memory: trim inline below
                }
            }
            if (m_thread.joinable()) {
                m_queued = true;
                lock.unlock();
                m_wake.notify_one();
                return r;
            }
        }
        complete(run_trim(), tag, true);
        return heap_trim_request::started;
    }

    /// Trims on the calling thread if the back-off allows at `now`; returns the RSS given back
    /// (0 if deferred, or coalesced because a requested trim still runs). For callers that
    /// already are off the latency-critical path; the evictor uses `request`. The completion
    /// function is not told. Thread safety: any thread.
    std::size_t maybe_trim(time_point now) noexcept {
        {
            std::lock_guard lock{m_mutex};
            if (admit_locked(now) != heap_trim_request::started) return 0;
        }
        const std::size_t freed = run_trim();
        complete(freed, 0, false);
        return freed;
    }

    /// Waits until no trim is queued or running and the completion function of the last one
    /// has returned. Not from the completion function. Thread safety: any thread.
    void wait() noexcept {
        std::unique_lock lock{m_mutex};
        m_idle.wait(lock, [&] { return !m_busy; });
    }

    /// True while a trim is queued or running. Thread safety: any thread.
    [[nodiscard]] bool busy() const noexcept {
        std::lock_guard lock{m_mutex};
        return m_busy;
    }
    /// True once the trimmer's thread has been started.
    [[nodiscard]] bool thread_started() const noexcept {
        std::lock_guard lock{m_mutex};
        return m_thread.joinable();
    }
    /// Trims completed (malloc_trim calls made).
    [[nodiscard]] std::uint64_t trims() const noexcept { return locked(m_trims); }
    /// Requests deferred by the back-off.
    [[nodiscard]] std::uint64_t deferred() const noexcept { return locked(m_deferred); }
    /// Requests the back-off allowed while a trim ran (folded into it).
    [[nodiscard]] std::uint64_t coalesced() const noexcept { return locked(m_coalesced); }
    /// Bytes given back by completed trims.
    [[nodiscard]] std::uint64_t bytes() const noexcept { return locked(m_bytes); }
    /// The current interval between trims.
    [[nodiscard]] duration interval() const noexcept {
        std::lock_guard lock{m_mutex};
        return m_interval;
    }

private:
    template <class T>
    T locked(const T& v) const noexcept {
        std::lock_guard lock{m_mutex};
        return v;
    }

    // The back-off's verdict at `now`; on `started`, marks the trimmer busy. Under m_mutex.
    heap_trim_request admit_locked(time_point now) noexcept {
        if (!m_cfg.enabled) return heap_trim_request::disabled;
        if (m_started && now < m_next) {
            ++m_deferred;
            return heap_trim_request::deferred;
        }
        if (m_busy) {
            ++m_coalesced;
            return heap_trim_request::coalesced;
        }
        m_busy = true;
        m_job_grows = m_started; // the first trim never grows the interval
        m_job_at = now;
        m_started = true;
        // Until this trim completes, the next may begin one current interval from now.
        m_next = detail::saturating_add(now, m_interval);
        return heap_trim_request::started;
    }

    // The trim itself, with no lock held.
    std::size_t run_trim() noexcept {
        try {
            const std::size_t before = m_rss();
            m_trim();
            const std::size_t after = m_rss();
            return before > after ? before - after : 0;
        } catch (...) {
            return 0;
        }
    }

    // Counts a trim that gave back `freed`, sets the back-off from it, tells the completion
    // function (with no lock held) and then marks the trimmer idle.
    void complete(std::size_t freed, std::size_t tag, bool tell) noexcept {
        heap_trim_done d;
        {
            std::lock_guard lock{m_mutex};
            ++m_trims;
            m_bytes += freed;
            if (freed >= m_cfg.useful_bytes) {
                m_interval = m_cfg.min_interval;
            } else if (m_job_grows) {
                const duration grown = detail::saturating_mul(m_interval, m_cfg.backoff_factor);
                m_interval = std::min(grown, m_cfg.max_interval);
            }
            m_next = detail::saturating_add(m_job_at, m_interval);
            d = {freed, tag, m_interval};
        }
        if (tell && m_done) m_done(d);
        {
            std::lock_guard lock{m_mutex};
            m_busy = false;
        }
        m_idle.notify_all();
    }

    // The trimmer's thread: one queued trim at a time until the destructor stops it.
    void work() noexcept {
        std::unique_lock lock{m_mutex};
        for (;;) {
            m_wake.wait(lock, [&] { return m_stop || m_queued; });
            if (m_stop) {
                if (m_queued) {
                    m_queued = false; // dropped: nobody waits for it any more
                    m_busy = false;
                    m_idle.notify_all();
                }
                return;
            }
            m_queued = false;
            const std::size_t tag = m_job_tag;
            lock.unlock();
            complete(run_trim(), tag, true);
            lock.lock();
        }
    }

    heap_trim_config m_cfg;
    trim_fn m_trim;
    rss_fn m_rss;
    done_fn m_done;

    mutable std::mutex m_mutex;     // guards everything below but m_thread's start and join
    std::condition_variable m_wake; // the trimmer's thread: a trim is queued, or stop
    std::condition_variable m_idle; // wait(): the trimmer became idle
    duration m_interval;
    time_point m_next{};
    time_point m_job_at{}; // when the trim in flight was requested
    std::size_t m_job_tag = 0;
    bool m_job_grows = false;
    bool m_started = false; // a trim has begun before (the back-off is in force)
    bool m_busy = false;    // a trim is queued or running, or its completion is being told
    bool m_queued = false;  // a trim waits for the trimmer's thread
    bool m_stop = false;
    bool m_thread_failed = false;
    std::uint64_t m_trims = 0;
    std::uint64_t m_deferred = 0;
    std::uint64_t m_coalesced = 0;
    std::uint64_t m_bytes = 0;
    std::thread m_thread; // last: joined by the destructor before the rest goes
};

namespace detail {
// What this thread is doing inside evictors, innermost first: a step (the thread holds that
// evictor's step mutex: a step, or an `on_level` round of add, remove or set_level) or a
// visit (it holds the list lock shared). Callbacks use it to avoid waiting for themselves.
struct evictor_scope {
    const void* evictor;
    bool step;
    const evictor_scope* outer;
};
inline thread_local const evictor_scope* t_evictor_scope = nullptr;

inline constexpr unsigned evictor_in_step = 1;
inline constexpr unsigned evictor_in_visit = 2;

// evictor_in_step and/or evictor_in_visit for `ev` on this thread (0: neither).
[[nodiscard]] inline unsigned evictor_scopes(const void* ev) noexcept {
    unsigned in = 0;
    for (const evictor_scope* s = t_evictor_scope; s != nullptr; s = s->outer) {
        if (s->evictor == ev) in |= s->step ? evictor_in_step : evictor_in_visit;
    }
    return in;
}

class evictor_scope_guard {
public:
    evictor_scope_guard(const void* ev, bool step) noexcept : m_scope{ev, step, t_evictor_scope} {
        t_evictor_scope = &m_scope;
    }
    evictor_scope_guard(const evictor_scope_guard&) = delete;
    evictor_scope_guard& operator=(const evictor_scope_guard&) = delete;
    ~evictor_scope_guard() { t_evictor_scope = m_scope.outer; }

private:
    evictor_scope m_scope;
};
} // namespace detail

/// The graded evictor. See the file comment for how a step works, how levels reach the
/// reclaimers and what may be called from inside a callback.
/// Thread safety: every member is safe to call from any thread, also from inside the
/// evictor's own callbacks and visits (see the file comment). Steps are serialised by the step
/// mutex (held while reclaimers run); `stats()` takes only a leaf lock, so it never waits for a
/// step. Time comes in through `step(view, now)`, so the evictor needs no clock of its own.
///
/// Registration: `add` and `remove` may be called at any time, also while another thread
/// steps. Called from outside the evictor's callbacks, `remove` waits for a step or a
/// `for_each_reclaimer` visit that may be using the reclaimer, so once it returns the part the
/// reclaimer works on may be destroyed.
class evictor {
public:
    /// Validates `cfg`; throws `std::invalid_argument` naming the bad field.
    /// `trim` and `rss` replace `malloc_trim(0)` and the RSS reading (tests, other allocators).
    /// The heap trims run on the heap trimmer's own thread, started on the first trim a step
    /// requests (never with `heap.enabled` false or in dry run) and joined by the destructor.
    explicit evictor(evictor_config cfg = {}, heap_trimmer::trim_fn trim = {}, heap_trimmer::rss_fn rss = {})
        : m_cfg{validate(std::move(cfg))}, m_heap{m_cfg.heap, std::move(trim), std::move(rss),
                                                  [this](const heap_trim_done& d) { heap_trim_completed(d); }} {
        m_heap_interval = m_heap.interval();
        for (std::size_t li = 0; li < pressure_level_count; ++li) {
            for (const policy_entry& e : m_cfg.ladder[li]) {
                m_entry_custom[li].push_back(custom_index(m_cfg, e.name));
            }
        }
    }

    evictor(const evictor&) = delete;
    evictor& operator=(const evictor&) = delete;

    /// Waits for a heap trim in flight, if any, and for its bytes to be counted; returns at
    /// once when none is. For tests and orderly shutdowns; never needed for correctness.
    /// Thread safety: any thread, also from inside a step's callbacks. Never throws.
    void wait_for_heap_trim() noexcept { m_heap.wait(); }

    /// True once the heap trimmer's thread has been started (by the first trim a step asked
    /// for). Thread safety: any thread.
    [[nodiscard]] bool heap_trimmer_started() const noexcept { return m_heap.thread_started(); }

    /// Adds a reclaimer; the evictor shares ownership. Reclaimers run in registration order
    /// within an action. `r->on_level` is told the current level (see `level()`, `normal`
    /// included) at once, so a part starts with the caps the others have, under pressure or
    /// not. From inside a callback or a visit of this evictor the addition is deferred to the
    /// end of the running step or visit (see the file comment). Throws
    /// `std::invalid_argument` if `r` is null or already registered, `std::bad_alloc`.
    /// Complexity: O(reclaimers).
    void add(std::shared_ptr<reclaimer> r) {
        if (!r) throw std::invalid_argument{"memgov::evictor::add: reclaimer is null"};
        if (detail::evictor_scopes(this) != 0) {
            defer_add(std::move(r));
            return;
        }
        std::lock_guard lock{m_mutex};
        apply_pending_locked();
        {
            std::unique_lock list{m_list};
            if (std::find(m_reclaimers.begin(), m_reclaimers.end(), r) != m_reclaimers.end()) {
                throw already_registered(*r);
            }
            const std::size_t slot = counters_slot(*r);
            m_slots.reserve(m_reclaimers.size() + 1);
            m_reclaimers.push_back(r);
            m_slots.push_back(slot); // reserved: cannot throw
            count_registration(slot, true);
        }
        {
            const detail::evictor_scope_guard scope{this, true};
            r->on_level(m_level.load(std::memory_order_relaxed));
        }
        apply_pending_locked();
    }

    /// Removes the reclaimer `r` (the object itself, compared by address) and drops the
    /// evictor's share of it. Returns false if `r` was not registered. If the current level is
    /// not `normal`, `r.on_level(normal)` is called before it goes, so a pool leaves with its
    /// caps restored rather than stuck at the pressure it was last told.
    /// From outside the evictor's callbacks and visits it waits for a running step or visit;
    /// once it returns, the evictor will not call `r` again, so the part `r` works on may be
    /// destroyed (if nobody else holds a copy from `reclaimers()`). From inside a callback or
    /// a visit it is deferred (see the file comment): `r` is not called again by the running
    /// step, and it leaves the list when that step or the outermost visit ends.
    /// Throws `std::bad_alloc` (only when deferred). Complexity: O(reclaimers), plus the wait.
    bool remove(const reclaimer& r) {
        if (detail::evictor_scopes(this) != 0) return defer_remove(r);
        std::shared_ptr<reclaimer> gone; // released after the locks
        {
            std::lock_guard lock{m_mutex};
            apply_pending_locked();
            {
                std::unique_lock list{m_list};
                const auto it = std::find_if(m_reclaimers.begin(), m_reclaimers.end(),
                                             [&](const auto& p) { return p.get() == &r; });
                if (it == m_reclaimers.end()) return false;
                gone = std::move(*it);
                const auto at = m_slots.begin() + (it - m_reclaimers.begin());
                count_registration(*at, false);
                m_slots.erase(at);
                m_reclaimers.erase(it);
            }
            if (m_level.load(std::memory_order_relaxed) != pressure_level::normal) {
                const detail::evictor_scope_guard scope{this, true};
                gone->on_level(pressure_level::normal);
            }
            apply_pending_locked();
        }
        return true;
    }

    /// Tells every reclaimer the level `l` (`on_level`) if it differs from the level they were
    /// last told; nothing otherwise. The governor calls it on every poll, so levels reach the
    /// reclaimers whether or not a step runs. From inside a callback or a visit of this evictor
    /// it is deferred to the end of the running step or visit.
    /// Thread safety: any thread; waits for a running step. Complexity: one atomic load when
    /// the level is unchanged, else O(reclaimers). Never throws. A level past `emergency` is
    /// taken as `emergency` (counted in `out_of_range_levels`).
    void set_level(pressure_level l) noexcept {
        l = checked_level(l);
        if (MEMGOV_UNLIKELY(detail::evictor_scopes(this) != 0)) {
            {
                std::lock_guard pending{m_pending_mutex};
                if (m_pending_level.value_or(m_level.load(std::memory_order_relaxed)) == l) return;
                m_pending_level = l;
                m_pending_count.fetch_add(1, std::memory_order_release);
            }
            count_deferral();
            return;
        }
        if (m_level.load(std::memory_order_acquire) == l && m_pending_count.load(std::memory_order_acquire) == 0) {
            return;
        }
        std::lock_guard lock{m_mutex};
        apply_pending_locked();
        set_level_locked(l);
        apply_pending_locked();
    }

    /// The level the reclaimers were last told (`normal` at first). Thread safety: any thread.
    /// Complexity: one atomic load.
    [[nodiscard]] pressure_level level() const noexcept { return m_level.load(std::memory_order_acquire); }

    /// Calls `fn(const reclaimer&)` for each registered reclaimer, in registration order,
    /// holding the list lock shared (steps and other visits go on). This is how to report on
    /// reclaimers safely: `remove` waits for the visit to end. The reclaimer is const: a
    /// visitor may call what `reclaimer` allows from a scraping thread (`name`, `handles`,
    /// `estimate`, `collect`, `reuse_rate`), not `reclaim`. Legal from inside every callback
    /// and visit of this evictor (a nested visit iterates under the outer one's lock); a
    /// reclaimer whose removal is deferred is not shown. Throws what `fn` throws.
    template <class Fn>
    void for_each_reclaimer(Fn&& fn) const {
        const unsigned in = detail::evictor_scopes(this);
        if ((in & detail::evictor_in_visit) != 0) {
            // This thread's outer visit holds the list lock: the list cannot change.
            for (const auto& r : m_reclaimers) {
                if (!removal_pending(r.get())) fn(std::as_const(*r));
            }
            return;
        }
        {
            // Inside a step the step mutex is held but not the list lock; writers take the
            // step mutex first, so no writer can be waiting here.
            std::shared_lock list{m_list};
            const detail::evictor_scope_guard scope{this, false};
            for (const auto& r : m_reclaimers) {
                if (!removal_pending(r.get())) fn(std::as_const(*r));
            }
        }
        if ((in & detail::evictor_in_step) == 0) settle_after_visit();
    }

    /// The registered reclaimers (a copy of the list). A copy shares ownership but does not
    /// keep the parts the reclaimers work on alive: after `remove`, using one is the holder's
    /// responsibility. Prefer `for_each_reclaimer`. Legal from inside every callback and visit
    /// of this evictor. Throws `std::bad_alloc`.
    [[nodiscard]] std::vector<std::shared_ptr<reclaimer>> reclaimers() const {
        std::vector<std::shared_ptr<reclaimer>> out;
        const auto copy = [&] {
            for (const auto& r : m_reclaimers) {
                if (!removal_pending(r.get())) out.push_back(r);
            }
        };
        const unsigned in = detail::evictor_scopes(this);
        if ((in & detail::evictor_in_visit) != 0) {
            copy();
            return out;
        }
        {
            std::shared_lock list{m_list};
            const detail::evictor_scope_guard scope{this, false};
            copy();
        }
        if ((in & detail::evictor_in_step) == 0) settle_after_visit();
        return out;
    }

    /// True if this thread is inside a step, an `on_level` round or a visit of this evictor
    /// (where registration changes are deferred and `step` does nothing).
    /// Thread safety: any thread. Complexity: O(nesting depth).
    [[nodiscard]] bool in_callback() const noexcept { return detail::evictor_scopes(this) != 0; }

    /// Turns dry-run mode on or off at run time.
    void set_dry_run(bool on) noexcept { m_dry_run.store(on, std::memory_order_relaxed); }
    /// True in dry-run mode.
    [[nodiscard]] bool dry_run() const noexcept { return m_dry_run.load(std::memory_order_relaxed); }

    /// The max age evict_by_age uses at `usage_ratio` (zero: no age eviction there).
    [[nodiscard]] duration age_limit(double usage_ratio) const noexcept {
        duration age{};
        for (const auto& s : m_cfg.age_ladder) {
            if (usage_ratio >= s.usage_ratio) age = s.max_age;
        }
        return age;
    }

    /// Runs one step of the policy for `view` at `now`; see the file comment. Tells the
    /// reclaimers `view.level` first if it differs from the level they were last told.
    /// Complexity: bounded by the budgets of the level's row; at `normal` with nothing expired,
    /// a lock, a few counter updates and one sweep call per sweeping reclaimer.
    /// Called from inside a callback or a visit of this evictor it does nothing and returns an
    /// empty report (counted in `ignored_steps`). A `view.level` past `emergency` is taken as
    /// `emergency` (counted in `out_of_range_levels`).
    step_report step(const pressure_view& view, time_point now) noexcept {
        if (MEMGOV_UNLIKELY(detail::evictor_scopes(this) != 0)) {
            std::lock_guard counters{m_stats_mutex};
            ++m_ignored_steps;
            return {};
        }
        const pressure_level level = checked_level(view.level);
        std::lock_guard lock{m_mutex};
        apply_pending_locked();
        step_report rep;
        rep.level = level;
        rep.dry_run = m_dry_run.load(std::memory_order_relaxed);
        const std::size_t li = to_index(level);
        {
            std::lock_guard counters{m_stats_mutex};
            ++m_steps[li];
        }
        {
            const detail::evictor_scope_guard scope{this, true};
            set_level_locked(level);

            const double limit = static_cast<double>(view.limit_bytes);
            const double target_ratio =
                level == pressure_level::emergency ? view.red_line - m_cfg.emergency_margin : view.exit_ratio;
            const double target = std::max(0.0, target_ratio) * limit;
            const double est = static_cast<double>(view.estimate_bytes);
            // At normal nothing is wanted: only the row's (always) expiry sweep runs.
            if (level != pressure_level::normal) {
                rep.wanted = est > target ? static_cast<std::size_t>(est - target) : 0;
            }
            const double ratio = limit > 0 ? est / limit : 0.0;

            std::size_t cost_cap = m_cfg.session_cost_cap;
            if (view.session_quota_bytes > 0) cost_cap = std::min(cost_cap, view.session_quota_bytes);
            const auto& row = m_cfg.ladder[li];
            for (std::size_t ei = 0; ei < row.size(); ++ei) {
                const policy_entry& e = row[ei];
                if (!e.always && rep.freed > 0 && rep.freed >= rep.wanted) continue;
                reclaim_request req;
                req.action = e.action;
                req.name = e.name;
                req.level = level;
                req.usage_ratio = ratio;
                req.bytes_wanted = rep.wanted > rep.freed ? rep.wanted - rep.freed : 0;
                req.budget = e.budget;
                req.max_age = age_limit(ratio);
                req.cost_cap = cost_cap;
                req.largest_floor =
                    detail::saturating_cast<std::size_t>(static_cast<double>(cost_cap) * m_cfg.largest_min_share);
                req.now = now;
                if (e.action == reclaim_action::evict_by_age && req.max_age.count() == 0) continue;
                run(li, req, m_entry_custom[li][ei], rep);
            }
        }
        apply_pending_locked();
        return rep;
    }

    /// A copy of the counters, with those per reclaimer name (`reclaimers`, copied: it
    /// allocates, and is left empty if that runs out of memory). Takes only the counters' leaf
    /// lock: legal from anywhere, also from inside a step's callbacks. Thread safety: any
    /// thread. Never throws.
    [[nodiscard]] evictor_stats stats() const noexcept {
        std::lock_guard counters{m_stats_mutex};
        evictor_stats s;
        s.cells = m_cells;
        s.steps = m_steps;
        s.heap_trims = m_heap_trims;
        s.heap_trims_deferred = m_heap_deferred;
        s.heap_trims_coalesced = m_heap_coalesced;
        s.heap_trimmed_bytes = m_heap_bytes;
        s.heap_interval = m_heap_interval;
        s.heap_trim_running = m_heap.busy(); // stats mutex → trimmer lock (a leaf)
        s.deferred_changes = m_deferred_changes;
        s.ignored_steps = m_ignored_steps;
        s.out_of_range_levels = m_out_of_range_levels;
        try {
            for (std::size_t i = 0; i < m_rec_stats.size(); ++i) {
                if (m_rec_registered[i] > 0) s.reclaimers.push_back(m_rec_stats[i]);
            }
            s.custom_actions = m_cfg.custom_actions;
        } catch (...) {
            // Out of memory: the counters without the per-reclaimer detail.
            s.reclaimers.clear();
            s.custom_actions.clear();
        }
        return s;
    }

    /// The configuration in force.
    [[nodiscard]] const evictor_config& config() const noexcept { return m_cfg; }

private:
    // A registration change asked for from inside a callback or a visit.
    struct pending_op {
        bool add = false;
        std::shared_ptr<reclaimer> r;
        bool applied = false;
        std::size_t slot = 0; // an addition's counters (m_rec_stats index)
    };

    static std::invalid_argument already_registered(const reclaimer& r) {
        return std::invalid_argument{"memgov::evictor::add: reclaimer '" + std::string{r.name()} +
                                     "' is already registered"};
    }

    void count_deferral() noexcept {
        std::lock_guard counters{m_stats_mutex};
        ++m_deferred_changes;
    }

    // Whether `r` counts as registered once the pending changes are applied. Under
    // m_pending_mutex; the caller holds the step mutex or the list lock, so the list is stable.
    [[nodiscard]] bool registered_after_pending(const reclaimer* r) const noexcept {
        bool in = std::any_of(m_reclaimers.begin(), m_reclaimers.end(), [&](const auto& p) { return p.get() == r; });
        for (const auto& op : m_pending) {
            if (op.r.get() == r) in = op.add;
        }
        return in;
    }

    // True if a removal of `r` waits to be applied (so steps and visits skip it).
    [[nodiscard]] bool removal_pending(const reclaimer* r) const noexcept {
        if (m_pending_count.load(std::memory_order_acquire) == 0) return false;
        std::lock_guard pending{m_pending_mutex};
        bool removed = false;
        for (const auto& op : m_pending) {
            if (op.r.get() == r) removed = !op.add;
        }
        return removed;
    }

    void defer_add(std::shared_ptr<reclaimer> r) {
        const std::size_t slot = counters_slot(*r);
        {
            std::lock_guard pending{m_pending_mutex};
            if (registered_after_pending(r.get())) throw already_registered(*r);
            m_pending.push_back({true, std::move(r), false, slot});
            m_pending_count.fetch_add(1, std::memory_order_release);
        }
        count_deferral();
    }

    bool defer_remove(const reclaimer& r) {
        {
            std::lock_guard pending{m_pending_mutex};
            if (!registered_after_pending(&r)) return false;
            std::shared_ptr<reclaimer> p;
            for (const auto& q : m_reclaimers) {
                if (q.get() == &r) p = q;
            }
            for (const auto& op : m_pending) {
                if (op.r.get() == &r) p = op.r;
            }
            m_pending.push_back({false, std::move(p), false});
            m_pending_count.fetch_add(1, std::memory_order_release);
        }
        count_deferral();
        return true;
    }

    // `l`, or emergency (counted) for a value past it: every per-level table is indexed by it.
    pressure_level checked_level(pressure_level l) noexcept {
        if (MEMGOV_LIKELY(l <= pressure_level::emergency)) return l;
        std::lock_guard counters{m_stats_mutex};
        ++m_out_of_range_levels;
        return pressure_level::emergency;
    }

    // Tells every reclaimer `l` if it is not the level last told. Under the step mutex.
    void set_level_locked(pressure_level l) noexcept {
        if (m_level.load(std::memory_order_relaxed) == l) return;
        m_level.store(l, std::memory_order_release);
        const detail::evictor_scope_guard scope{this, true};
        for (const auto& r : m_reclaimers) {
            if (!removal_pending(r.get())) r->on_level(l);
        }
    }

    // Applies the changes deferred from callbacks and visits, in the order they were asked
    // for. Under the step mutex, from a thread holding no visit of this evictor.
    void apply_pending_locked() noexcept {
        if (m_pending_count.load(std::memory_order_acquire) == 0) return;
        std::vector<pending_op> ops;
        std::optional<pressure_level> lvl;
        {
            // The list lock is taken before the pending changes are taken out, so a visit
            // (which holds it shared) sees the list and the pending changes move together:
            // "registered once the pending changes are applied" cannot flip in its middle.
            std::unique_lock list{m_list};
            {
                std::lock_guard pending{m_pending_mutex};
                ops.swap(m_pending);
                lvl = m_pending_level;
                m_pending_level.reset();
                m_pending_count.store(0, std::memory_order_release);
            }
            for (auto& op : ops) {
                const auto it = std::find(m_reclaimers.begin(), m_reclaimers.end(), op.r);
                if (op.add && it == m_reclaimers.end()) {
                    try {
                        m_slots.reserve(m_reclaimers.size() + 1);
                        m_reclaimers.push_back(op.r);
                        m_slots.push_back(op.slot); // reserved: cannot throw
                        count_registration(op.slot, true);
                        op.applied = true;
                    } catch (...) {
                        // Out of memory: the deferred addition is dropped.
                    }
                } else if (!op.add && it != m_reclaimers.end()) {
                    const auto at = m_slots.begin() + (it - m_reclaimers.begin());
                    count_registration(*at, false);
                    m_slots.erase(at);
                    m_reclaimers.erase(it);
                    op.applied = true;
                }
            }
        }
        // The list lock is released: an on_level callback may visit.
        const pressure_level now_level = m_level.load(std::memory_order_relaxed);
        {
            const detail::evictor_scope_guard scope{this, true};
            for (auto& op : ops) {
                if (!op.applied) continue;
                if (op.add) {
                    op.r->on_level(now_level);
                } else if (now_level != pressure_level::normal) {
                    op.r->on_level(pressure_level::normal);
                }
            }
        }
        if (lvl) set_level_locked(*lvl);
        // `ops` goes here, dropping the evictor's share of what was removed; changes deferred
        // by the on_level calls above wait for the next step, add, remove or visit.
    }

    // After the outermost visit on a thread outside any step: apply what was deferred during
    // it, unless a step runs now (that step applies it when it ends).
    void settle_after_visit() const noexcept {
        if (m_pending_count.load(std::memory_order_acquire) == 0) return;
        std::unique_lock lock{m_mutex, std::try_to_lock};
        if (!lock.owns_lock()) return;
        // A deferred change is a change of this object asked for through a non-const member
        // (add, remove, set_level), so the evictor is not a const object.
        const_cast<evictor*>(this)->apply_pending_locked();
    }

    static constexpr std::size_t no_custom = static_cast<std::size_t>(-1);

    // `name`'s index in cfg.custom_actions, or no_custom.
    static std::size_t custom_index(const evictor_config& cfg, std::string_view name) noexcept {
        if (name.empty()) return no_custom;
        const auto it = std::find(cfg.custom_actions.begin(), cfg.custom_actions.end(), name);
        return it == cfg.custom_actions.end() ? no_custom : static_cast<std::size_t>(it - cfg.custom_actions.begin());
    }

    // The counters of `r`'s name, created (with every cell the step may touch) if it is new;
    // the actions `r` answers are marked handled. Takes the stats lock (a leaf). Throws
    // `std::bad_alloc`.
    std::size_t counters_slot(const reclaimer& r) {
        // Asked before the lock: the counters' lock is never held while calling out.
        std::array<bool, reclaim_action_count> handled{};
        std::vector<bool> custom_handled(m_cfg.custom_actions.size());
        for (std::size_t a = 0; a < reclaim_action_count; ++a) {
            const auto act = static_cast<reclaim_action>(a);
            handled[a] = act != reclaim_action::custom && r.handles(act);
        }
        for (std::size_t c = 0; c < m_cfg.custom_actions.size(); ++c) {
            custom_handled[c] = r.handles_custom(m_cfg.custom_actions[c]);
            if (custom_handled[c]) handled[static_cast<std::size_t>(reclaim_action::custom)] = true;
        }
        reclaimer_stats fresh;
        fresh.name = std::string{r.name()};
        fresh.custom.resize(m_cfg.custom_actions.size());
        std::lock_guard counters{m_stats_mutex};
        std::size_t i = 0;
        while (i < m_rec_stats.size() && m_rec_stats[i].name != fresh.name) ++i;
        if (i == m_rec_stats.size()) {
            m_rec_registered.reserve(m_rec_stats.size() + 1);
            m_rec_stats.push_back(std::move(fresh));
            m_rec_registered.push_back(0); // reserved: cannot throw
        }
        reclaimer_stats& st = m_rec_stats[i];
        for (std::size_t a = 0; a < reclaim_action_count; ++a) st.actions[a].handled |= handled[a];
        for (std::size_t c = 0; c < custom_handled.size(); ++c) st.custom[c].handled |= custom_handled[c];
        return i;
    }

    [[nodiscard]] static bool valid_custom_name(std::string_view n) noexcept {
        if (n.empty() || n.size() > 64 || !(n.front() >= 'a' && n.front() <= 'z')) return false;
        for (char c : n) {
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
        }
        for (std::size_t a = 0; a < reclaim_action_count; ++a) {
            if (n == to_string(static_cast<reclaim_action>(a))) return false;
        }
        return true;
    }

    static evictor_config validate(evictor_config cfg) {
        using detail::require_field;
        using detail::throw_bad_field;
        constexpr std::string_view type = "evictor_config";
        double prev = 0.0;
        for (const auto& s : cfg.age_ladder) {
            require_field(s.usage_ratio > prev && s.usage_ratio <= 1.5, type, "age_ladder",
                          "usage ratios must be > 0, rise and be <= 1.5");
            require_field(s.max_age > duration::zero() && s.max_age <= longest_period, type, "age_ladder",
                          "max_age must be in (0, longest_period]");
            prev = s.usage_ratio;
        }
        require_field(cfg.session_cost_cap != 0, type, "session_cost_cap", "must be > 0");
        require_field(cfg.largest_min_share >= 0.0 && cfg.largest_min_share <= 1.0, type, "largest_min_share",
                      "must be in [0, 1]");
        require_field(cfg.emergency_margin >= 0.0 && cfg.emergency_margin < 1.0, type, "emergency_margin",
                      "must be in [0, 1)");
        for (std::size_t i = 0; i < cfg.custom_actions.size(); ++i) {
            const std::string& n = cfg.custom_actions[i];
            if (!valid_custom_name(n)) {
                throw_bad_field(type, "custom_actions",
                                "'" + n.substr(0, 64) +
                                    "' must be 1 to 64 characters of [a-z0-9_], start with a "
                                    "letter and not be a built-in action's name");
            }
            if (std::find(cfg.custom_actions.begin(), cfg.custom_actions.begin() + static_cast<std::ptrdiff_t>(i), n) !=
                cfg.custom_actions.begin() + static_cast<std::ptrdiff_t>(i)) {
                throw_bad_field(type, "custom_actions", "'" + n + "' is declared twice");
            }
        }
        for (const auto& row : cfg.ladder) {
            for (const auto& e : row) {
                require_field(static_cast<std::size_t>(e.action) < reclaim_action_count, type, "ladder",
                              "unknown action");
                require_field(e.budget != 0 || e.action == reclaim_action::trim_heap, type, "ladder",
                              "budget must be > 0");
                if (e.action == reclaim_action::custom && custom_index(cfg, e.name) == no_custom) {
                    throw_bad_field(type, "ladder",
                                    "custom action '" + e.name.substr(0, 64) +
                                        "' is not declared in evictor_config::custom_actions");
                }
                if (e.action != reclaim_action::custom && !e.name.empty()) {
                    throw_bad_field(type, "ladder",
                                    "only a custom entry has a name ('" + e.name.substr(0, 64) + "' on " +
                                        std::string{to_string(e.action)} + ")");
                }
            }
        }
        for (const auto& e : cfg.ladder[to_index(pressure_level::normal)]) {
            require_field(e.action == reclaim_action::sweep_expired, type, "ladder",
                          "the normal row may hold only sweep_expired");
        }
        return cfg;
    }

    // True if `r` answers the request's action (for custom: its name).
    [[nodiscard]] static bool answers(const reclaimer& r, const reclaim_request& req) noexcept {
        return req.action == reclaim_action::custom ? r.handles_custom(req.name) : r.handles(req.action);
    }

    // Runs one entry; `custom` is the entry's index in m_cfg.custom_actions (or no_custom).
    void run(std::size_t li, const reclaim_request& req, std::size_t custom, step_report& rep) noexcept {
        if (rep.dry_run) {
            std::size_t would = 0;
            for (auto& r : m_reclaimers) {
                if (answers(*r, req) && !removal_pending(r.get())) would += r->estimate(req.action);
            }
            std::lock_guard counters{m_stats_mutex};
            action_counters& c = m_cells[li][static_cast<std::size_t>(req.action)];
            ++c.dry_runs;
            c.dry_bytes += would;
            ++rep.actions_run;
            return;
        }
        reclaim_result got;
        bool ran = false;
        std::optional<heap_trim_request> trim;
        if (req.action == reclaim_action::trim_heap) {
            // Only asked for: the trim runs on the trimmer's thread and its bytes are counted
            // when it completes (heap_trim_completed); this step frees 0 bytes by it.
            trim = m_heap.request(req.now, li);
            ran = true;
        } else {
            for (std::size_t i = 0; i < m_reclaimers.size(); ++i) {
                reclaimer& r = *m_reclaimers[i];
                if (!answers(r, req) || removal_pending(&r)) continue;
                reclaim_request sub = req;
                sub.bytes_wanted = req.bytes_wanted > got.bytes ? req.bytes_wanted - got.bytes : 0;
                const reclaim_result one = r.reclaim(sub);
                got.bytes += one.bytes;
                got.items += one.items;
                ran = true;
                std::lock_guard counters{m_stats_mutex};
                reclaimer_stats& st = m_rec_stats[m_slots[i]];
                count_run(st.actions[static_cast<std::size_t>(req.action)], one);
                if (custom != no_custom) count_run(st.custom[custom], one);
            }
        }
        if (!ran) return;
        std::lock_guard counters{m_stats_mutex};
        action_counters& c = m_cells[li][static_cast<std::size_t>(req.action)];
        ++c.runs;
        ++rep.actions_run;
        c.bytes += got.bytes;
        c.items += got.items;
        rep.freed += got.bytes;
        rep.items += got.items;
        if (trim) {
            // A started trim is judged when it completes.
            if (*trim != heap_trim_request::started) ++c.empty;
            if (*trim == heap_trim_request::deferred) ++m_heap_deferred;
            if (*trim == heap_trim_request::coalesced) ++m_heap_coalesced;
        } else if (got.bytes == 0 && got.items == 0) {
            ++c.empty;
        }
    }

    // One more (or one fewer) registered reclaimer uses the counters `slot`.
    void count_registration(std::size_t slot, bool added) noexcept {
        std::lock_guard counters{m_stats_mutex};
        if (added)
            ++m_rec_registered[slot];
        else
            --m_rec_registered[slot];
    }

    static void count_run(reclaimer_action_counters& c, const reclaim_result& one) noexcept {
        ++c.runs;
        c.bytes += one.bytes;
        c.items += one.items;
    }

    // A heap trim that a step requested completed: on the trimmer's thread (or inline when its
    // thread could not start), with no evictor lock held but this leaf.
    void heap_trim_completed(const heap_trim_done& d) noexcept {
        std::lock_guard counters{m_stats_mutex};
        action_counters& c =
            m_cells[std::min(d.tag, pressure_level_count - 1)][static_cast<std::size_t>(reclaim_action::trim_heap)];
        c.bytes += d.bytes;
        if (d.bytes == 0) ++c.empty;
        ++m_heap_trims;
        m_heap_bytes += d.bytes;
        m_heap_interval = d.interval;
    }

    evictor_config m_cfg;
    mutable std::mutex m_mutex;                           // the step mutex: serialises steps and on_level rounds
    mutable std::shared_mutex m_list;                     // the list: exclusive to change it, shared to visit it
    std::vector<std::shared_ptr<reclaimer>> m_reclaimers; // changed under both locks
    std::vector<std::size_t> m_slots;                     // m_slots[i]: m_reclaimers[i]'s counters; changed with it
    // For each level's row, each entry's index into m_cfg.custom_actions (custom entries).
    std::array<std::vector<std::size_t>, pressure_level_count> m_entry_custom;
    std::atomic<pressure_level> m_level{pressure_level::normal}; // last told; written under m_mutex
    std::atomic<bool> m_dry_run{m_cfg.dry_run};

    // Changes deferred from callbacks and visits (a leaf lock; m_pending_count is the number
    // of changes asked for since the last apply, 0 when there are none).
    mutable std::mutex m_pending_mutex;
    std::vector<pending_op> m_pending;
    std::optional<pressure_level> m_pending_level;
    std::atomic<std::size_t> m_pending_count{0};

    // The counters, under a leaf lock never held while calling out.
    mutable std::mutex m_stats_mutex;
    std::array<std::array<action_counters, reclaim_action_count>, pressure_level_count> m_cells{};
    std::array<std::uint64_t, pressure_level_count> m_steps{};
    std::uint64_t m_heap_trims = 0;
    std::uint64_t m_heap_deferred = 0;
    std::uint64_t m_heap_coalesced = 0;
    std::uint64_t m_heap_bytes = 0;
    duration m_heap_interval{};
    std::uint64_t m_deferred_changes = 0;
    std::uint64_t m_ignored_steps = 0;
    std::uint64_t m_out_of_range_levels = 0;
    // Counters per reclaimer name, grown only when a new name registers (never on a step),
    // and how many registered reclaimers use each (only those are reported).
    std::vector<reclaimer_stats> m_rec_stats;
    std::vector<std::size_t> m_rec_registered;

    // Its own lock and thread; requested from steps. Last: its destructor joins the thread,
    // whose completions write the counters above, before they go.
    heap_trimmer m_heap;
};

MEMGOV_NAMESPACE_END
