// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The pressure monitor: turns the cgroup reader's samples and the ledger's moves into one
/// `pressure_level` that every component can read with a single atomic load.
///
/// ## How it works
/// - **Samples.** Every `sample_period` (default 100 ms) it re-reads the binding cgroup's files
///   through kept descriptors (`pread`), from its own thread (`start()`/`stop()`) or from
///   `poll(now)` called by the service's event loop.
/// - **Estimate between samples.** estimate = working set at the last sample + what the ledger
///   moved since. A burst that passes through memgov is seen at once (`update_estimate`), not at
///   the next sample; each sample recalibrates (calibration = working set − ledger total).
///   A sample that catches a tracked allocation half touched calibrates low, so an earlier
///   calibration of the last `calibration_window` (1 s) may lift the new one, but only by what
///   the ledger rose since it (the bytes that can still be in flight). Memory given back
///   (the working set falling more than the ledger) shows at the next sample: the estimate
///   follows the kernel down within one sample and up at once.
/// - **Thresholds scale with the limit.** The red line is 85% of limits up to 4 GiB and 92%
///   above (configurable). By default each level's thresholds are offsets from the red line:
///   elevated −15 points, high −7, critical at the red line, emergency +4.
/// - **Levels with hysteresis.** A level is entered at its `enter` ratio at once, and left only
///   below its lower `exit` ratio and once its minimum dwell time has passed since it was last
///   held (entered, or held by a band below), so it cannot flap.
/// - **Forecast.** An EWMA of the working set's growth gives a time to the limit; under the
///   horizon (default 10 s) the level rises one step early, under half of it two steps, never
///   past `forecast_ceiling` (default high) on the forecast alone: a fast rise far from the
///   limit trims and paces, but only the usage itself closes the door to new sessions (a
///   burst of admissions, bounded by their reservations, is growth too). Its exit band: a
///   level the forecast holds up is left only once the time to the limit is back above the
///   horizon that raised it times `1 + forecast_exit_margin` (default 1.5 × horizon, or 1.5 ×
///   horizon/2 for the second step), and after the level's dwell.
/// - **PSI.** `$MEMORY_PRESSURE_WATCH`/`$MEMORY_PRESSURE_WRITE` (systemd) or a configured file
///   and trigger: a fired trigger raises the level at least to `psi_level`. Its exit: that
///   level is left only once `psi_hold` has passed with no new event *and* the level's dwell
///   has passed after that (so events a little more than `psi_hold` apart hold it steady).
///   When the kernel refuses the trigger, the file is polled instead, with the reason recorded.
/// - **Subscribers** hear level changes; they are called after every internal lock is released.
///
/// ## Thread safety and lock order
/// `level()`, `estimate_bytes()` and `update_estimate()` are lock-free (the last takes the
/// sample lock with `try_lock` only when the level must rise). `poll`, `sample` and `snapshot`
/// take the sample lock; `subscribe` and dispatch take the subscriber lock, never both at once.
/// Subscribers run with no monitor lock held and may call any member except `stop()` and the
/// destructor.

#include <memgov/cgroup.hpp>
#include <memgov/clock.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/psi_trigger.hpp>
#include <memgov/detail/saturate.hpp>
#include <memgov/detail/service_thread.hpp>
#include <memgov/detail/validate.hpp>
#include <memgov/ledger.hpp>
#include <memgov/pressure_level.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#if MEMGOV_LINUX
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#endif

MEMGOV_NAMESPACE_BEGIN

/// One level's thresholds, as a ratio of the limit (usage / limit), or, when
/// `pressure_monitor_config::thresholds_relative` is true, as an offset from the red line.
struct level_threshold {
    double enter = 0; ///< the level is entered when the ratio reaches this
    double exit = 0;  ///< and left when the ratio falls below this (lower than `enter`)
    duration dwell{}; ///< minimum time at the level before it may fall
};

/// The red line: the ratio at which admission closes (the critical level), by limit size.
/// Small containers are more conservative: a fixed share of a small limit is little headroom.
struct red_line_rule {
    double small_limit_ratio = 0.85;                          ///< for limits up to `small_limit_bytes`
    double large_limit_ratio = 0.92;                          ///< for larger limits
    std::uint64_t small_limit_bytes = std::uint64_t{4} << 30; ///< 4 GiB

    /// The red line for `limit` bytes. Thread safety: pure. Complexity: O(1).
    [[nodiscard]] constexpr double ratio_for(std::uint64_t limit) const noexcept {
        return limit <= small_limit_bytes ? small_limit_ratio : large_limit_ratio;
    }
};

/// Configuration of a `pressure_monitor`. Validated once by the constructor.
struct pressure_monitor_config {
    /// Where to read the limit and usage (root, explicit limit, environment variable).
    cgroup_config cgroup{};
    /// How often the files are read. Default 100 ms.
    duration sample_period = std::chrono::milliseconds{100};
    /// How often the monitor's own thread re-evaluates the ledger estimate between samples
    /// (no system call). Zero: only at samples. Default 10 ms.
    duration estimate_period = std::chrono::milliseconds{10};
    /// How long a calibration of the estimate is kept (with a ledger). A calibration is the
    /// working set minus the ledger total at a sample. A sample that lands while a tracked
    /// allocation is being touched sees only part of it, so it calibrates low. The rule: the
    /// estimate's calibration is the highest over the samples in this window (at most 64) of
    ///     min(that calibration, this sample's calibration + max(0, ledger now − ledger then)),
    /// so an earlier calibration protects only against the bytes charged since it, which may
    /// still be untouched, never against memory given back. A working set that falls more than
    /// the ledger (trims, evictions, untracked frees) is the estimate at the next sample. The
    /// limits of the rule: an untracked fall smaller than what the ledger rose since a kept
    /// calibration is held for up to this window (the safe side); a release of tracked bytes
    /// that takes the ledger below a calibration's total ends that calibration's protection
    /// (the release may have been the untouched part). Zero: only the last sample. Default 1 s.
    duration calibration_window = std::chrono::seconds{1};
    /// The red line by limit size (85% up to 4 GiB, 92% above).
    red_line_rule red_line{};
    /// True: `thresholds` are offsets from the red line (so they scale with the limit).
    /// False: they are absolute ratios of the limit.
    bool thresholds_relative = true;
    /// Thresholds for elevated, high, critical and emergency (in that order). Defaults
    /// (relative): elevated −0.15/−0.20 2 s; high −0.07/−0.11 2 s; critical 0/−0.04 5 s;
    /// emergency +0.04/0 1 s. With an 85% red line: 70, 78, 85, 89% to enter.
    /// Each exit must give a ratio of at least `min_exit_ratio` (for both red lines when
    /// relative), so every level can be left.
    std::array<level_threshold, 4> thresholds{{
        {-0.15, -0.20, std::chrono::seconds{2}},
        {-0.07, -0.11, std::chrono::seconds{2}},
        {0.00, -0.04, std::chrono::seconds{5}},
        {+0.04, 0.00, std::chrono::seconds{1}},
    }};
    /// The lowest exit ratio a threshold may give (1% of the limit): a level whose exit is 0,
    /// or a ratio so small that usage never falls below it (1e-300), could never be left.
    static constexpr double min_exit_ratio = 0.01;
    /// When the time to the limit falls under this, the level rises early (zero: no forecast).
    duration forecast_horizon = std::chrono::seconds{10};
    /// The forecast's exit band: a level the forecast raised is held while the time to the
    /// limit stays under the horizon that raised it (the horizon, or half of it for the second
    /// step) times `1 + forecast_exit_margin`, and then for the level's dwell. Finite, >= 0.
    /// Default 0.5.
    double forecast_exit_margin = 0.5;
    /// The highest level the forecast alone may raise to (normal: the forecast never raises).
    /// At most critical. Default high: critical, which closes admission of new sessions, is
    /// left to the usage ratio and PSI.
    pressure_level forecast_ceiling = pressure_level::high;
    /// Half-life of the growth-rate EWMA. Default 1 s.
    duration growth_half_life = std::chrono::seconds{1};
    /// Honour systemd's `$MEMORY_PRESSURE_WATCH` / `$MEMORY_PRESSURE_WRITE`.
    bool use_systemd_pressure_env = true;
    /// A pressure file (or FIFO/socket) to watch when the environment names none; empty: none.
    std::string psi_watch{};
    /// The trigger written to it: "some|full <stall µs> <window µs>". systemd's default.
    std::string psi_trigger = "some 200000 2000000";
    /// The level held while pressure is signalled (normal: PSI does not move the level).
    pressure_level psi_level = pressure_level::elevated;
    /// How long a fired trigger holds `psi_level` at least. The level is left only after this
    /// has passed with no new event and then the level's dwell (the PSI exit).
    duration psi_hold = std::chrono::seconds{2};

    /// The absolute thresholds for a limit of `limit` bytes (each enter/exit clamped at >= 0).
    /// Thread safety: pure. Complexity: O(1).
    [[nodiscard]] std::array<level_threshold, 4> thresholds_for(std::uint64_t limit) const noexcept {
        std::array<level_threshold, 4> out = thresholds;
        if (thresholds_relative) {
            const double red = red_line.ratio_for(limit);
            for (auto& t : out) {
                t.enter = std::max(0.0, red + t.enter);
                t.exit = std::max(0.0, red + t.exit);
            }
        }
        return out;
    }
};

/// Why a level changed.
enum class pressure_cause : std::uint8_t {
    ratio,    ///< the estimate crossed an enter threshold
    forecast, ///< the time to the limit fell under the horizon
    psi,      ///< a PSI trigger fired (or the polled average crossed it)
    recovery  ///< the ratio fell below the exit threshold after the dwell time
};

/// The name of a cause ("ratio", "forecast", "psi", "recovery"). Thread safety: pure.
[[nodiscard]] constexpr std::string_view to_string(pressure_cause c) noexcept {
    switch (c) {
    case pressure_cause::ratio:
        return "ratio";
    case pressure_cause::forecast:
        return "forecast";
    case pressure_cause::psi:
        return "psi";
    case pressure_cause::recovery:
        return "recovery";
    }
    return "unknown";
}

/// A level change, as told to subscribers.
struct level_change {
    pressure_level from = pressure_level::normal; ///< the level before
    pressure_level to = pressure_level::normal;   ///< the level now
    pressure_cause cause = pressure_cause::ratio; ///< what moved it
    time_point at{};                              ///< when (the monitor's clock)
    double ratio = 0;                             ///< estimate / limit at that moment
    std::uint64_t estimate_bytes = 0;             ///< the estimate at that moment
    std::uint64_t limit_bytes = 0;                ///< the limit at that moment
    std::uint64_t sequence = 0;                   ///< increases with every change
};

/// Everything the monitor knows, at one instant.
struct pressure_snapshot {
    std::uint64_t limit_bytes = 0;                         ///< the effective limit
    limit_source limit_from = limit_source::unknown;       ///< what kind of limit
    std::string limit_origin;                              ///< file / "configuration" / variable
    std::string binding_cgroup;                            ///< the cgroup whose limit binds, or ""
    std::uint64_t usage_bytes = 0;                         ///< usage at the last sample
    usage_source usage_from = usage_source::unknown;       ///< where the usage came from
    std::uint64_t working_set_bytes = 0;                   ///< usage − inactive_file at the last sample
    std::uint64_t rss_bytes = 0;                           ///< the process's RSS at the last sample
    std::uint64_t estimate_bytes = 0;                      ///< working set + ledger moves since
    std::int64_t ledger_delta_bytes = 0;                   ///< the ledger's move since the last sample
    double ratio = 0;                                      ///< estimate / limit (+inf for a 0 limit)
    double red_line = 0;                                   ///< the red line for this limit
    pressure_level level = pressure_level::normal;         ///< the current level
    std::array<level_threshold, 4> thresholds{};           ///< absolute thresholds for this limit
    double growth_bytes_per_second = 0;                    ///< EWMA of the working set's growth
    std::optional<duration> time_to_limit{};               ///< at that growth; nullopt if not growing
    std::optional<psi_figures> psi{};                      ///< PSI at the last sample
    std::string psi_origin;                                ///< where PSI came from
    psi_watch_state psi_watch = psi_watch_state::disabled; ///< trigger state
    std::string psi_watch_path;                            ///< the watched file
    std::string psi_watch_reason;                          ///< why the watch is disabled or polling
    std::uint64_t psi_events = 0;                          ///< triggers seen
    std::optional<std::uint64_t> oom_kills{};              ///< the binding cgroup's OOM-kill counter
    std::uint64_t oom_kills_since_start = 0;               ///< its increase since the monitor started
    std::optional<std::uint64_t> peak_bytes{};             ///< peak usage of the binding cgroup
    std::uint64_t sample_count = 0;                        ///< successful samples
    std::uint64_t sample_failures = 0;                     ///< samples with no limit or no usage
    time_point last_sample{};                              ///< when the last successful sample was taken
    duration sample_age{};                                 ///< now − last_sample
    std::vector<std::string> fallbacks;                    ///< every fallback, with the reason
    /// True when the monitor cannot see the memory it governs: no limit or no usage could be
    /// read at the last sample (a missing cgroup root, unreadable /proc files). A blind monitor
    /// fails open: the level stays where it was (normal from the start) and admission has no
    /// headroom to check, so it admits; `blind_reason` says why, and the governor's health,
    /// metrics (`monitor_blind`) and any readiness check built on them must show it.
    bool blind = false;
    std::string blind_reason; ///< why the monitor is blind; empty when it is not
};

namespace detail {

struct pm_subscriber {
    std::function<void(const level_change&)> fn;
    std::atomic<int> in_flight{0};
    std::atomic<bool> active{true};
};

inline thread_local const pm_subscriber* t_pm_current_subscriber = nullptr;

struct pm_registry {
    std::mutex mutex;
    std::vector<std::shared_ptr<pm_subscriber>> subscribers;
    std::atomic<std::uint64_t> delivered{0};

    // `active` and `in_flight` form a store-then-load handshake from both sides (remove:
    // clear active, then read in_flight; dispatch: raise in_flight, then read active): only
    // sequential consistency keeps both from reading stale values, so both sides use it.
    void remove(const std::shared_ptr<pm_subscriber>& s) noexcept {
        s->active.store(false, std::memory_order_seq_cst);
        {
            std::lock_guard lock{mutex};
            std::erase(subscribers, s);
        }
        // Wait for calls in flight on other threads (not for our own call, if we are in it).
        if (t_pm_current_subscriber == s.get()) return;
        for (int n = s->in_flight.load(std::memory_order_seq_cst); n != 0;
             n = s->in_flight.load(std::memory_order_seq_cst)) {
            s->in_flight.wait(n, std::memory_order_seq_cst);
        }
    }

    void dispatch(const level_change& c) {
        // A change superseded by a newer, already delivered one is skipped.
        std::uint64_t seen = delivered.load(std::memory_order_acquire);
        do {
            if (seen >= c.sequence) return;
        } while (!delivered.compare_exchange_weak(seen, c.sequence, std::memory_order_acq_rel));
        std::vector<std::shared_ptr<pm_subscriber>> copy;
        {
            std::lock_guard lock{mutex};
            copy = subscribers;
        }
        for (const auto& s : copy) {
            s->in_flight.fetch_add(1, std::memory_order_seq_cst);
            if (s->active.load(std::memory_order_seq_cst)) {
                const pm_subscriber* prev = t_pm_current_subscriber;
                t_pm_current_subscriber = s.get();
                try {
                    s->fn(c);
                } catch (...) {
                    // A throwing subscriber must not stop the others or the sampler.
                }
                t_pm_current_subscriber = prev;
            }
            s->in_flight.fetch_sub(1, std::memory_order_acq_rel);
            s->in_flight.notify_all();
        }
    }
};

// The sampler thread's wake-up pipe: `notify` (from `stop`) makes its wait return at once.
// One per run of the thread, closed after the thread is joined.
class pm_wake_pipe {
public:
    // Throws `std::system_error` if the pipe cannot be made.
    pm_wake_pipe() {
#if MEMGOV_LINUX
        if (::pipe2(m_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
            throw std::system_error{errno, std::generic_category(), "memgov::pressure_monitor::start"};
        }
#endif
    }
    pm_wake_pipe(const pm_wake_pipe&) = delete;
    pm_wake_pipe& operator=(const pm_wake_pipe&) = delete;
    ~pm_wake_pipe() {
#if MEMGOV_LINUX
        ::close(m_fds[0]);
        ::close(m_fds[1]);
#endif
    }
    void notify() noexcept {
#if MEMGOV_LINUX
        const char b = 1;
        [[maybe_unused]] const auto n = ::write(m_fds[1], &b, 1);
#endif
    }
    [[nodiscard]] int read_fd() const noexcept { return m_fds[0]; }

private:
    int m_fds[2] = {-1, -1};
};

} // namespace detail

/// A subscription to level changes; unsubscribes when destroyed or reset. Move-only.
/// After `reset()` (or destruction) returns, the callback is not running on another thread and
/// will not be called again (when reset from inside the callback itself, the current call
/// finishes normally).
class [[nodiscard]] pressure_subscription {
public:
    pressure_subscription() noexcept = default;
    pressure_subscription(std::shared_ptr<detail::pm_registry> r, std::shared_ptr<detail::pm_subscriber> s) noexcept
        : m_registry{std::move(r)}, m_subscriber{std::move(s)} {}
    pressure_subscription(pressure_subscription&&) noexcept = default;
    pressure_subscription& operator=(pressure_subscription&& o) noexcept {
        if (this != &o) {
            reset();
            m_registry = std::move(o.m_registry);
            m_subscriber = std::move(o.m_subscriber);
        }
        return *this;
    }
    pressure_subscription(const pressure_subscription&) = delete;
    pressure_subscription& operator=(const pressure_subscription&) = delete;
    ~pressure_subscription() { reset(); }

    /// Unsubscribes now. Thread safety: one owner. Never throws.
    void reset() noexcept {
        if (m_registry && m_subscriber) m_registry->remove(m_subscriber);
        m_registry.reset();
        m_subscriber.reset();
    }
    /// True while subscribed.
    [[nodiscard]] explicit operator bool() const noexcept { return m_subscriber != nullptr; }

private:
    std::shared_ptr<detail::pm_registry> m_registry;
    std::shared_ptr<detail::pm_subscriber> m_subscriber;
};

/// Watches the process's memory and publishes a `pressure_level`.
///
/// `Clock` supplies time (a `memgov::manual_clock` in tests). The ledger, when given, must
/// outlive the monitor.
/// Thread safety: see the file comment. Throws: see each member.
template <clock_type Clock = steady_clock>
class pressure_monitor {
public:
    /// Validates `cfg`, opens the files, sets up the pressure watch and takes a first sample.
    /// Throws `std::invalid_argument` naming the bad field, and `std::bad_alloc`. Unreadable
    /// files never throw: they become fallbacks (see `snapshot().fallbacks`).
    explicit pressure_monitor(pressure_monitor_config cfg = {}, ledger* l = nullptr, Clock clock = Clock{})
        : m_cfg{validate(std::move(cfg))}, m_ledger{l}, m_clock{std::move(clock)}, m_reader{m_cfg.cgroup},
          m_registry{std::make_shared<detail::pm_registry>()} {
        setup_watch();
        sample(m_clock.now());
        m_oom_at_start = m_sample.has_oom ? m_sample.oom_kills : 0;
    }

    pressure_monitor(const pressure_monitor&) = delete;
    pressure_monitor& operator=(const pressure_monitor&) = delete;

    /// Stops the sampler thread if it runs. Subscriptions outliving the monitor stay valid
    /// (they are simply never called again). Never throws.
    ~pressure_monitor() { stop(); }

    /// The current level. One relaxed-acquire atomic load; no lock, no system call.
    /// Thread safety: any thread. Complexity: O(1).
    [[nodiscard]] pressure_level level() const noexcept { return m_level.load(std::memory_order_acquire); }

    /// The estimate now: the last sample's working set plus what the ledger moved since.
    /// Thread safety: any thread. Complexity: O(ledger threads); no system call.
    [[nodiscard]] std::uint64_t estimate_bytes() const noexcept {
        // The calibration in force (see `calibration_window`).
        const std::int64_t base = m_base.load(std::memory_order_acquire);
        const std::int64_t e = base + (m_ledger != nullptr ? m_ledger->total() : 0);
        return e > 0 ? static_cast<std::uint64_t>(e) : 0;
    }

    /// Recomputes the estimate from the ledger and raises the level at once if it crossed the
    /// next enter threshold. No system call; takes the sample lock with `try_lock` only when
    /// the level must rise (falls wait for `poll`). For the admission path.
    /// Thread safety: any thread. Never throws (a throwing subscriber is ignored).
    pressure_level update_estimate(time_point now) noexcept {
        const std::uint64_t est = estimate_bytes();
        if (est < m_rise_bytes.load(std::memory_order_acquire)) return level();
        std::optional<level_change> change;
        {
            std::unique_lock lock{m_mutex, std::try_to_lock};
            if (!lock.owns_lock()) return level();
            change = evaluate(now, estimate_bytes());
        }
        notify(change);
        return level();
    }
    /// `update_estimate(clock.now())`.
    pressure_level update_estimate() noexcept { return update_estimate(m_clock.now()); }

    /// Samples if `sample_period` has passed since the last sample (or a PSI trigger fired),
    /// else re-evaluates the ledger estimate only; then updates the level and tells
    /// subscribers. Returns the level. For event loops; the sampler thread calls it too.
    /// Thread safety: any thread (serialised internally). Throws `std::bad_alloc` only.
    pressure_level poll(time_point now) {
        std::optional<level_change> change;
        {
            std::lock_guard lock{m_mutex};
            const bool due = m_sample_count + m_sample_failures == 0 || now - m_last_attempt >= m_cfg.sample_period ||
                             m_force_sample;
            if (due) {
                change = sample_locked(now);
            } else {
                change = evaluate(now, estimate_bytes());
            }
        }
        notify(change);
        return level();
    }
    /// `poll(clock.now())`.
    pressure_level poll() { return poll(m_clock.now()); }

    /// Re-reads the files now, whatever the period; then like `poll`. Files rewritten in place
    /// since the last read are seen. Thread safety: any thread. Throws `std::bad_alloc` only.
    pressure_level sample(time_point now) {
        std::optional<level_change> change;
        {
            std::lock_guard lock{m_mutex};
            change = sample_locked(now);
        }
        notify(change);
        return level();
    }

    /// Everything the monitor knows. Allocates. Thread safety: any thread.
    /// Throws `std::bad_alloc`. Complexity: O(levels + fallbacks).
    [[nodiscard]] pressure_snapshot snapshot() const {
        const time_point now = m_clock.now();
        std::lock_guard lock{m_mutex};
        const memory_reading r = m_reader.describe(m_sample);
        pressure_snapshot s;
        s.limit_bytes = m_sample.limit;
        s.limit_from = m_sample.limit_from;
        s.limit_origin = r.limit_origin;
        s.binding_cgroup = r.binding_cgroup;
        s.usage_bytes = m_sample.usage;
        s.usage_from = m_sample.usage_from;
        s.working_set_bytes = m_sample.working_set;
        s.rss_bytes = m_sample.rss;
        s.estimate_bytes = estimate_bytes();
        s.ledger_delta_bytes = (m_ledger != nullptr ? m_ledger->total() : 0) - m_ledger_at_sample;
        s.ratio = ratio_of(s.estimate_bytes, m_limit);
        s.red_line = m_cfg.red_line.ratio_for(m_limit);
        s.level = level();
        s.thresholds = m_thresholds;
        s.growth_bytes_per_second = m_growth;
        s.time_to_limit = time_to_limit(s.estimate_bytes);
        s.psi = r.psi;
        s.psi_origin = r.psi_origin;
        s.psi_watch = m_watch.state();
        s.psi_watch_path = m_watch.path();
        s.psi_watch_reason = m_watch.reason();
        s.psi_events = m_psi_events;
        s.oom_kills = r.oom_kills;
        if (r.oom_kills && *r.oom_kills >= m_oom_at_start) s.oom_kills_since_start = *r.oom_kills - m_oom_at_start;
        s.peak_bytes = r.peak_bytes;
        s.sample_count = m_sample_count;
        s.sample_failures = m_sample_failures;
        s.last_sample = m_last_sample;
        s.sample_age = m_sample_count == 0 ? duration::zero() : now - m_last_sample;
        s.fallbacks = r.fallbacks;
        s.blind = r.blind;
        s.blind_reason = r.blind_reason;
        if (!m_watch.reason().empty() && m_watch.state() == psi_watch_state::polling) {
            s.fallbacks.push_back(m_watch.reason());
        }
        return s;
    }

    /// Calls `fn(change)` on every level change until the returned subscription is destroyed.
    /// `fn` runs on the thread that made the change (the sampler thread or a caller of `poll`,
    /// `sample` or `update_estimate`), with no monitor lock held; calls from different threads
    /// may overlap, and a change already superseded by a newer delivered one is skipped. An
    /// exception from `fn` is swallowed. Throws `std::bad_alloc`.
    /// Thread safety: any thread, also from inside a callback.
    [[nodiscard]] pressure_subscription subscribe(std::function<void(const level_change&)> fn) {
        auto s = std::make_shared<detail::pm_subscriber>();
        s->fn = std::move(fn);
        {
            std::lock_guard lock{m_registry->mutex};
            m_registry->subscribers.push_back(s);
        }
        return pressure_subscription{m_registry, std::move(s)};
    }

    /// Starts the sampler thread (no-op if it runs). It samples every `sample_period`,
    /// re-evaluates the ledger estimate every `estimate_period`, and wakes at once when the
    /// PSI trigger fires. A thread told to stop from inside a subscriber is waited for first;
    /// called on the sampler thread itself, `start` does nothing. Throws `std::system_error`
    /// if the thread or its wake-up pipe cannot be created (nothing is left open then).
    /// Thread safety: any thread, also racing `stop`.
    void start() {
        m_thread.start([this](const std::stop_token& st, detail::pm_wake_pipe& wake) { run(st, wake.read_fd()); });
    }

    /// Stops and joins the sampler thread (no-op if not running), with no lock held while
    /// waiting. Called from a subscriber running on the sampler thread, it only asks the
    /// thread to end; a later `stop`, `start` or the destructor joins it. Never throws.
    /// Thread safety: any thread; of concurrent calls, one waits for the thread.
    void stop() noexcept { m_thread.stop(); }

    /// True while the sampler thread runs and has not been asked to stop.
    [[nodiscard]] bool running() const noexcept { return m_thread.running(); }

    /// The PSI trigger's descriptor for an external event loop (poll it for `psi_events()`
    /// and then call `poll(now)`), or -1 when no trigger is registered.
    [[nodiscard]] int psi_fd() const noexcept {
        std::lock_guard lock{m_mutex};
        return m_watch.fd();
    }
    /// The events to poll `psi_fd()` for (POLLPRI for a PSI file, POLLIN for a FIFO/socket).
    [[nodiscard]] short psi_events() const noexcept {
        std::lock_guard lock{m_mutex};
        return m_watch.events();
    }

    /// The validated configuration.
    [[nodiscard]] const pressure_monitor_config& config() const noexcept { return m_cfg; }

    /// The clock.
    [[nodiscard]] const Clock& clock() const noexcept { return m_clock; }

private:
    static pressure_monitor_config validate(pressure_monitor_config c) {
        constexpr std::string_view cfg = "pressure_monitor_config";
        using detail::throw_bad_field;
        // Every period is bounded so that `now + period` and `period × factor` always fit.
        const auto period = [&](const char* field, duration d, bool zero_ok) {
            if (d < duration::zero() || (!zero_ok && d == duration::zero()) || d > longest_period) {
                throw_bad_field(cfg, field,
                                zero_ok ? "must be in [0, longest_period]" : "must be in (0, longest_period]");
            }
        };
        period("sample_period", c.sample_period, false);
        period("estimate_period", c.estimate_period, true);
        period("calibration_window", c.calibration_window, true);
        period("growth_half_life", c.growth_half_life, false);
        period("forecast_horizon", c.forecast_horizon, true);
        if (!(c.forecast_exit_margin >= 0.0 && c.forecast_exit_margin <= 100.0)) {
            throw_bad_field(cfg, "forecast_exit_margin", "must be in [0, 100]");
        }
        period("psi_hold", c.psi_hold, true);
        if (to_index(c.psi_level) >= pressure_level_count) throw_bad_field(cfg, "psi_level", "unknown level");
        if (c.forecast_ceiling > pressure_level::critical) {
            throw_bad_field(cfg, "forecast_ceiling", "must be at most critical");
        }
        const auto ratio_ok = [](double r) { return r > 0.0 && r <= 1.0; };
        if (!ratio_ok(c.red_line.small_limit_ratio))
            throw_bad_field(cfg, "red_line.small_limit_ratio", "must be in (0, 1]");
        if (!ratio_ok(c.red_line.large_limit_ratio))
            throw_bad_field(cfg, "red_line.large_limit_ratio", "must be in (0, 1]");
        if (c.red_line.small_limit_bytes == 0) throw_bad_field(cfg, "red_line.small_limit_bytes", "must be > 0");
        // Check the thresholds as they apply, for both red lines.
        for (const double red : {c.red_line.small_limit_ratio, c.red_line.large_limit_ratio}) {
            const double base = c.thresholds_relative ? red : 0.0;
            for (std::size_t i = 0; i < c.thresholds.size(); ++i) {
                const auto& t = c.thresholds[i];
                const std::string name = "thresholds[" + std::to_string(i) + "]";
                if (!(std::isfinite(t.enter) && std::isfinite(t.exit))) throw_bad_field(cfg, name, "must be finite");
                if (base + t.enter <= 0.0 || base + t.enter > 2.0)
                    throw_bad_field(cfg, name + ".enter", "must give a ratio in (0, 2]");
                // An exit ratio of 0, or one usage never falls below (1e-300), could never be
                // crossed from above: the level would stay forever.
                if (!(base + t.exit >= pressure_monitor_config::min_exit_ratio)) {
                    throw_bad_field(cfg, name + ".exit", "must give a ratio >= min_exit_ratio (0.01)");
                }
                if (!(t.exit < t.enter)) throw_bad_field(cfg, name + ".exit", "must be below enter");
                if (t.dwell < duration::zero() || t.dwell > longest_period) {
                    throw_bad_field(cfg, name + ".dwell", "must be in [0, longest_period]");
                }
                if (i > 0 && !(t.enter > c.thresholds[i - 1].enter))
                    throw_bad_field(cfg, name + ".enter", "must be above the previous level's enter");
            }
        }
        if (!c.psi_trigger.empty() && !detail::psi_parse_trigger(c.psi_trigger)) {
            throw_bad_field(cfg, "psi_trigger",
                            "must be \"some|full <stall us> <window us>\" with 0 < window, stall <= window");
        }
        return c;
    }

    void setup_watch() {
        std::string path = m_cfg.psi_watch;
        std::string trigger = m_cfg.psi_trigger;
        std::string note;
        if (m_cfg.use_systemd_pressure_env) {
            if (const char* w = std::getenv("MEMORY_PRESSURE_WATCH"); w != nullptr && *w != '\0') {
                path = w;
                if (const char* t = std::getenv("MEMORY_PRESSURE_WRITE"); t != nullptr && *t != '\0') {
                    if (auto decoded = detail::psi_base64_decode(t)) {
                        trigger = std::move(*decoded);
                    } else {
                        note = "MEMORY_PRESSURE_WRITE is not valid base64; ";
                        trigger.clear();
                    }
                }
            }
        }
        if (path.empty()) {
            m_watch.open("", "");
            return;
        }
        if (!note.empty()) {
            // Unusable trigger text: poll the file against the configured trigger instead.
            m_watch.poll_only(path, note + "cannot register a trigger", m_cfg.psi_trigger);
            return;
        }
        m_watch.open(path, trigger);
    }

    // b − a for a < b, saturated at the int64 maximum.
    static std::int64_t rise(std::int64_t a, std::int64_t b) noexcept {
        const std::uint64_t d = static_cast<std::uint64_t>(b) - static_cast<std::uint64_t>(a);
        constexpr auto top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
        return static_cast<std::int64_t>(std::min(d, top));
    }

    static double ratio_of(std::uint64_t est, std::uint64_t limit) noexcept {
        if (limit == 0) return std::numeric_limits<double>::infinity();
        return static_cast<double>(est) / static_cast<double>(limit);
    }

    std::optional<duration> time_to_limit(std::uint64_t est) const noexcept {
        if (m_limit == 0 || est >= m_limit) return duration::zero();
        if (!(m_growth > 0.0)) return std::nullopt;
        const double secs = static_cast<double>(m_limit - est) / m_growth;
        if (secs > 1e9) return std::nullopt;
        return std::chrono::duration_cast<duration>(std::chrono::duration<double>{secs});
    }

    // Reads the files; recalibrates the estimate and the growth rate; evaluates.
    std::optional<level_change> sample_locked(time_point now) {
        m_last_attempt = now;
        m_force_sample = false;
        // The ledger is read before the files: a charge landing in between is counted twice
        // until the next sample (an over-estimate, the safe side).
        const std::int64_t ledger_now = m_ledger != nullptr ? m_ledger->total() : 0;
        detail::cg_sample s;
        const bool ok = m_reader.sample(s);
        if (m_watch.check(m_psi_buf)) {
            ++m_psi_events;
            m_psi_until = detail::saturating_add(now, m_cfg.psi_hold);
        }
        if (!ok) {
            ++m_sample_failures;
            if (m_sample_count == 0) m_sample = s; // keep the reasons of a first failure
            return evaluate(now, estimate_bytes());
        }
        const bool had_previous = m_sample_count > 0;
        const std::uint64_t prev_ws = m_sample.working_set;
        const time_point prev_t = m_last_sample;
        // Calibrations are comparable only if they measured the same thing. Without a ledger
        // there is no allocation in flight to protect: the last sample rules.
        const bool same_source = had_previous && s.usage_from == m_sample.usage_from && s.binding == m_sample.binding;
        const bool comparable = m_ledger != nullptr && same_source;
        m_sample = s;
        ++m_sample_count;
        m_last_sample = now;
        m_ledger_at_sample = ledger_now;
        const std::int64_t base = static_cast<std::int64_t>(s.working_set) - ledger_now;
        if (!comparable) m_calibrations_used = 0;
        m_calibrations[m_calibration_next] = {base, ledger_now, now};
        m_calibration_next = (m_calibration_next + 1) % m_calibrations.size();
        if (m_calibrations_used < m_calibrations.size()) ++m_calibrations_used;
        // The rule (see `calibration_window`): a sample can calibrate low only by the part of a
        // tracked allocation not yet touched, and that part was charged since an earlier
        // sample. So an earlier calibration may lift this one by at most what the ledger rose
        // since it: never by memory that was given back (ledger down, working set down more,
        // or working set down alone), which the kernel's figure shows at once.
        std::int64_t best = base;
        for (std::size_t i = 1; i < m_calibrations_used; ++i) {
            const auto& c =
                m_calibrations[(m_calibration_next + m_calibrations.size() - 1 - i) % m_calibrations.size()];
            if (now - c.at > m_cfg.calibration_window) break; // older ones are older still
            const std::int64_t in_flight = ledger_now > c.ledger ? rise(c.ledger, ledger_now) : 0;
            best = std::max(best, std::min(c.base, detail::saturating_add(base, in_flight)));
        }
        m_base.store(best, std::memory_order_release);
        if (s.limit != m_limit || m_sample_count == 1) {
            m_limit = s.limit;
            m_thresholds = m_cfg.thresholds_for(m_limit);
        }
        if (had_previous && !same_source) {
            // Another cgroup became binding, or usage came from elsewhere: the difference from
            // the last sample is not growth. Start the rate afresh rather than forecast on it.
            m_growth = 0.0;
        } else if (had_previous && now > prev_t) {
            const double dt = std::chrono::duration<double>(now - prev_t).count();
            const double inst = (static_cast<double>(s.working_set) - static_cast<double>(prev_ws)) / dt;
            const double hl = std::chrono::duration<double>(m_cfg.growth_half_life).count();
            const double alpha = 1.0 - std::exp2(-dt / hl);
            m_growth = alpha * inst + (1.0 - alpha) * m_growth;
        }
        return evaluate(now, estimate_bytes());
    }

    // The level state machine. Called with m_mutex held.
    std::optional<level_change> evaluate(time_point now, std::uint64_t est) noexcept {
        if (m_sample_count == 0) {
            m_rise_bytes.store(std::numeric_limits<std::uint64_t>::max(), std::memory_order_release);
            return std::nullopt;
        }
        const double ratio = ratio_of(est, m_limit);
        const auto at = [](std::size_t i) { return static_cast<pressure_level>(i + 1); };
        pressure_level enter_level = pressure_level::normal;
        pressure_level hold_level = pressure_level::normal;
        for (std::size_t i = 0; i < m_thresholds.size(); ++i) {
            if (ratio >= m_thresholds[i].enter) enter_level = at(i);
            if (ratio >= m_thresholds[i].exit) hold_level = at(i);
        }
        pressure_level signal = enter_level;
        pressure_cause cause = pressure_cause::ratio;
        bool psi_holds = false;
        const std::size_t top = to_index(m_cfg.forecast_ceiling);
        if (m_cfg.forecast_horizon > duration::zero()) {
            if (const auto ttl = time_to_limit(est)) {
                const double t = std::chrono::duration<double>(*ttl).count();
                const double h = std::chrono::duration<double>(m_cfg.forecast_horizon).count();
                const std::size_t bump = t < h / 2 ? 2 : t < h ? 1 : 0;
                const std::size_t f = std::min(to_index(enter_level) + bump, top);
                if (f > to_index(signal)) {
                    signal = static_cast<pressure_level>(f);
                    cause = pressure_cause::forecast;
                }
                // The exit band: the same steps with the horizon widened by the margin,
                // counted from the level the ratio holds (so the ratio's own band applies too).
                const double wide = h * (1.0 + m_cfg.forecast_exit_margin);
                const std::size_t keep = t < wide / 2 ? 2 : t < wide ? 1 : 0;
                const std::size_t kh = std::min(to_index(hold_level) + keep, top);
                hold_level = std::max(hold_level, static_cast<pressure_level>(kh));
            }
        }
        if (m_cfg.psi_level != pressure_level::normal && m_psi_events > 0) {
            if (now < m_psi_until && m_cfg.psi_level > signal) {
                signal = m_cfg.psi_level;
                cause = pressure_cause::psi;
            }
            // The PSI exit: the hold with no new event (then the level's dwell, as for every
            // way a level is held).
            if (now < m_psi_until) {
                hold_level = std::max(hold_level, m_cfg.psi_level);
                psi_holds = true;
            }
        }
        const pressure_level cur = level();
        pressure_level next = cur;
        if (signal > cur) {
            next = signal;
        } else if (signal < cur && hold_level < cur) {
            // Leaving needs the dwell since the level was last justified (entered, or held by
            // the ratio's band, the forecast's band or PSI): a level justified again for a
            // moment (a regrowth, a sample back in the band) starts its dwell over.
            const std::size_t ci = to_index(cur) - 1;
            if (now - m_justified_at >= m_thresholds[ci].dwell) {
                next = std::max(signal, hold_level);
                cause = pressure_cause::recovery;
            }
        }
        // The estimate at which the fast path must come in: the next level's enter threshold.
        std::uint64_t rise = std::numeric_limits<std::uint64_t>::max();
        if (next != pressure_level::emergency) {
            const double enter = m_thresholds[to_index(next)].enter;
            const double bytes = std::ceil(enter * static_cast<double>(m_limit));
            rise = bytes >= 1.8e19 ? std::numeric_limits<std::uint64_t>::max() : static_cast<std::uint64_t>(bytes);
        }
        m_rise_bytes.store(rise, std::memory_order_release);
        if (next != cur || signal >= cur || hold_level >= cur) m_justified_at = now;
        // A PSI hold justifies its level until the hold ends, not just until the last sample.
        if (psi_holds && m_cfg.psi_level >= next) {
            m_justified_at = std::max(m_justified_at, m_psi_until);
        }
        if (next == cur) return std::nullopt;
        m_level.store(next, std::memory_order_release);
        level_change c;
        c.from = cur;
        c.to = next;
        c.cause = cause;
        c.at = now;
        c.ratio = ratio;
        c.estimate_bytes = est;
        c.limit_bytes = m_limit;
        c.sequence = ++m_change_seq;
        return c;
    }

    void notify(const std::optional<level_change>& c) noexcept {
        if (!c) return;
        try {
            m_registry->dispatch(*c);
        } catch (...) {
            // Out of memory while copying the subscriber list: the change is still visible
            // through level() and snapshot().
        }
    }

    // The sampler loop; `wake` is the read end of this thread's own wake-up pipe.
    void run(const std::stop_token& st, int wake) noexcept {
        while (!st.stop_requested()) {
            try {
                poll(m_clock.now());
            } catch (...) {
                // bad_alloc in a sample: try again next period.
            }
            duration wait = m_cfg.sample_period;
            if (m_cfg.estimate_period > duration::zero() && m_cfg.estimate_period < wait) {
                wait = m_cfg.estimate_period;
            }
            wait_for(wait, wake);
        }
    }

    // Sleeps up to `d`, waking early for stop() or a PSI trigger.
    void wait_for(duration d, [[maybe_unused]] int wake) noexcept {
#if MEMGOV_LINUX
        pollfd fds[2];
        nfds_t n = 0;
        fds[n++] = pollfd{wake, POLLIN, 0};
        int psi = -1;
        short events = 0;
        {
            std::lock_guard lock{m_mutex}; // a sample may close the watch (its peer went away)
            psi = m_watch.fd();
            events = m_watch.events();
        }
        if (psi >= 0) fds[n++] = pollfd{psi, events, 0};
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
        timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
        const int r = ::ppoll(fds, n, &ts, nullptr);
        if (r > 0 && n > 1 && fds[1].revents != 0) {
            // Drain and interpret it here (a FIFO or socket that closed is shut, not counted
            // forever); an event is recorded and a sample taken at once.
            const time_point now = m_clock.now();
            std::lock_guard lock{m_mutex};
            if (m_watch.consume(fds[1].revents)) {
                ++m_psi_events;
                m_psi_until = detail::saturating_add(now, m_cfg.psi_hold);
                m_force_sample = true;
            }
        }
        if (r > 0 && (fds[0].revents & POLLIN) != 0) {
            char sink[16];
            while (::read(wake, sink, sizeof sink) > 0) {
            }
        }
#else
        std::this_thread::sleep_for(d);
#endif
    }

    pressure_monitor_config m_cfg;
    ledger* m_ledger;
    Clock m_clock;

    mutable std::mutex m_mutex; // guards everything below down to m_psi_buf
    cgroup_reader m_reader;
    detail::cg_sample m_sample{};
    detail::psi_watch m_watch;
    std::string m_psi_buf;
    std::uint64_t m_limit = 0;
    std::array<level_threshold, 4> m_thresholds{};
    std::int64_t m_ledger_at_sample = 0;
    std::uint64_t m_sample_count = 0;
    std::uint64_t m_sample_failures = 0;
    std::uint64_t m_oom_at_start = 0;
    std::uint64_t m_psi_events = 0;
    std::uint64_t m_change_seq = 0;
    time_point m_last_sample{};
    time_point m_last_attempt{};
    time_point m_justified_at{}; // when the current level was last entered or justified
    time_point m_psi_until{};
    double m_growth = 0;
    bool m_force_sample = false;
    struct calibration {
        std::int64_t base = 0;   // working set − ledger total at a sample
        std::int64_t ledger = 0; // the ledger total at that sample
        time_point at{};
    };
    std::array<calibration, 64> m_calibrations{};
    std::size_t m_calibration_next = 0;
    std::size_t m_calibrations_used = 0;

    // Read without the lock.
    std::atomic<pressure_level> m_level{pressure_level::normal};
    std::atomic<std::int64_t> m_base{0}; // the calibration in force (see calibration_window)
    std::atomic<std::uint64_t> m_rise_bytes{std::numeric_limits<std::uint64_t>::max()};

    std::shared_ptr<detail::pm_registry> m_registry;
    detail::service_thread<detail::pm_wake_pipe> m_thread; // last: stopped before the rest goes
};

MEMGOV_NAMESPACE_END
