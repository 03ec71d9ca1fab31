// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The governor: one small facade over the ledger, the pressure monitor and the graded evictor.
///
/// - `admit_session(declared)` at ingress: a `session_budget` (see `session_budget.hpp`) that
///   reserves the declared cost from the admission headroom (lock-free, one CAS loop), so a
///   burst between two polls cannot pass the ceiling; the session's work then goes through
///   `budget.admit(bytes)`: graded refusal by quota, weight and level, no lock.
/// - `admit(cost, kind)` for callers without budgets: one atomic load and a compare on the
///   fast path. New sessions are refused from `admission_config::close_sessions_at`
///   (critical, the red line), all new work from `refuse_all_at` (emergency), and any
///   admission whose cost would pass the ceiling (`ceiling_ratio` of the limit) is refused
///   for lack of headroom (as the last poll saw it, reservations included).
/// - `poll(now)` from the service's event loop, or `start()`/`stop()` for a thread of its own:
///   polls the monitor, updates the admission gates, tells the evictor the level (so every
///   reclaimer hears every change, down as well as up, at the poll that sees it) and steps
///   the evictor every `step_period` at every level, and at once when the level rises. At
///   normal a step runs only the ladder's normal row: by default a bounded expiry sweep of
///   the registered session maps, never a pool trim, heap trim or eviction.
/// - `register_reclaimer(...)` adds what the evictor may ask to give memory back, and
///   `unregister_reclaimer(...)` takes it away again before its part is destroyed.
/// - `stats()`, `health()` and `collect(sink)` report everything (Prometheus: `prometheus.hpp`).
///
/// ## Lock order and callbacks
/// governor poll turn → monitor mutex (inside `poll`) → evictor step mutex (inside `step`)
/// → evictor list lock → reclaimers' own locks. The admission path takes no lock. `stats`,
/// `health` and `collect` take only leaf locks (the governor's report lock, the evictor's
/// counter lock, the monitor's mutex, never held while calling out) and the evictor's list
/// lock shared, which a step does not hold; so they are legal from inside every callback
/// memgov makes: a level subscriber, a reclaimer's `reclaim` or `on_level`, a session map's
/// `on_evict` run by a step, a `for_each_reclaimer` visit. From inside those callbacks:
/// `poll` does nothing and returns the level (counted in `governor_stats::ignored_polls`);
/// `register_reclaimer` and
/// `unregister_reclaimer` are deferred to the end of the running step or visit (see
/// `evictor`); `stop` only asks the thread to end. None of them throws for being called there.

#include <memgov/clock.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/owned_mutex.hpp>
#include <memgov/detail/saturate.hpp>
#include <memgov/detail/service_thread.hpp>
#include <memgov/detail/validate.hpp>
#include <memgov/evictor.hpp>
#include <memgov/ledger.hpp>
#include <memgov/metrics.hpp>
#include <memgov/pressure_level.hpp>
#include <memgov/pressure_monitor.hpp>
#include <memgov/prometheus.hpp>
#include <memgov/session_budget.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

MEMGOV_NAMESPACE_BEGIN

/// Configuration of a `governor`. Validated once by the constructor.
struct governor_config {
    /// The pressure monitor (limit discovery, thresholds, sampling period, forecast).
    pressure_monitor_config monitor{};
    /// The evictor's policy table.
    evictor_config evictor{};
    /// Admission control.
    admission_config admission{};
    /// How often the governor's own thread polls (`start()`). Files are still read only every
    /// `monitor.sample_period`; in between the ledger estimate is re-evaluated. Default 10 ms.
    duration poll_period = std::chrono::milliseconds{10};
    /// The evictor steps this often at every level (and at once when the level rises); at
    /// normal a step runs only the ladder's normal row (an expiry sweep by default), so this
    /// is also how late an idle session may expire. Default 100 ms.
    duration step_period = std::chrono::milliseconds{100};
    /// Dry run: the evictor counts instead of acting, and admission counts would-be refusals
    /// but admits.
    bool dry_run = false;
};

/// One reclaimer as seen in the stats.
struct reclaimer_info {
    std::string name;
    double reuse_rate = -1.0; ///< negative when not applicable
};

/// Everything the governor knows.
struct governor_stats {
    pressure_snapshot pressure;
    evictor_stats evictor;
    admission_stats admission;
    ledger_snapshot ledger;
    std::vector<reclaimer_info> reclaimers;
    std::uint64_t polls = 0;
    std::uint64_t steps = 0;
    /// `poll` calls made from inside a callback of this governor's own poll or from inside a
    /// visit of its evictor, which did nothing (see the file comment). Not counted in `polls`.
    std::uint64_t ignored_polls = 0;
};

/// A short answer to "how is it doing?", for a health endpoint.
struct health_summary {
    pressure_level level = pressure_level::normal;
    std::uint64_t limit_bytes = 0;
    std::uint64_t estimate_bytes = 0;
    /// Bytes left before the red line (negative: past it).
    std::int64_t headroom_bytes = 0;
    double ratio = 0.0;
    double growth_bytes_per_second = 0.0;
    std::optional<duration> time_to_limit{};
    std::uint64_t rejections_last_minute = 0;
    std::uint64_t evictions_last_minute = 0;
    std::vector<reclaimer_info> reuse_rates;
    /// True when the monitor cannot read the limit or the usage (see
    /// `pressure_snapshot::blind`): the level and the headroom above mean nothing then, and
    /// admission admits. `blind_reason` says why.
    bool blind = false;
    std::string blind_reason;
};

/// The facade. See the file comment.
/// Thread safety: `admit` from any number of threads, lock-free; everything else from any
/// thread (serialised internally).
template <clock_type Clock = steady_clock>
class governor {
public:
    /// Validates `cfg` (throws `std::invalid_argument` naming the field), builds the ledger,
    /// the monitor (which takes a first sample) and the evictor. `trim` and `rss` replace
    /// `malloc_trim(0)` and the RSS reading of the heap trimmer (tests, other allocators).
    explicit governor(governor_config cfg = {}, Clock clock = Clock{}, heap_trimmer::trim_fn trim = {},
                      heap_trimmer::rss_fn rss = {})
        : m_cfg{validate(std::move(cfg))}, m_clock{std::move(clock)}, m_monitor{m_cfg.monitor, &m_ledger, m_clock},
          m_evictor{with_dry_run(m_cfg.evictor, m_cfg.dry_run), std::move(trim), std::move(rss)},
          m_admission{std::make_shared<detail::admission_state>(m_cfg.admission, m_cfg.dry_run)} {
        const auto s = m_monitor.snapshot();
        update_gates(s.level, s.estimate_bytes, s.limit_bytes);
        m_evictor.set_level(s.level); // what a reclaimer registered before the first poll hears
        m_subscription =
            m_monitor.subscribe([this](const level_change& c) { update_gates(c.to, c.estimate_bytes, c.limit_bytes); });
    }

    governor(const governor&) = delete;
    governor& operator=(const governor&) = delete;
    /// Stops the thread if it runs. Must not run on the governor's own thread (from inside a
    /// callback of its poll): that ends the process.
    ~governor() {
        stop();
        m_subscription.reset();
    }

    /// The ledger every part should charge.
    [[nodiscard]] memgov::ledger& ledger() noexcept { return m_ledger; }
    /// The pressure monitor.
    [[nodiscard]] pressure_monitor<Clock>& monitor() noexcept { return m_monitor; }
    /// The evictor.
    [[nodiscard]] memgov::evictor& evictor() noexcept { return m_evictor; }
    /// The configuration in force.
    [[nodiscard]] const governor_config& config() const noexcept { return m_cfg; }

    /// The current level: one atomic load.
    [[nodiscard]] pressure_level level() const noexcept { return m_monitor.level(); }

    /// Asks to admit `cost` bytes of `kind`. Fast path: one atomic load and a compare, plus a
    /// thread-owned counter; no lock, no allocation, no system call. The allowance is the
    /// headroom the last `poll` saw: admits in between do not lower it.
    /// Thread safety: any thread. Complexity: O(1).
    [[nodiscard]] admission admit(std::size_t cost, admit_kind kind = admit_kind::work) noexcept {
        const auto k = static_cast<std::size_t>(kind);
        const std::int64_t allow = m_allow[k].load(std::memory_order_relaxed);
        const auto c = static_cast<std::int64_t>(
            std::min<std::size_t>(cost, static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max())));
        if (MEMGOV_LIKELY(c <= allow)) {
            m_admission->count_admitted(k, c);
            return {};
        }
        return refuse(k, c);
    }

    /// Admits a new session declaring `declared_bytes` (what it expects to hold soon: its
    /// first frames, its window). Refused, in order: when new sessions are closed
    /// (`sessions_closed` from `close_sessions_at`, `all_closed` from `refuse_all_at`); when
    /// `declared_bytes` exceeds the session quota at this level (`over_quota`); when the
    /// declared cost does not fit in the admission headroom (`no_headroom`). Admitted, the
    /// declared cost is reserved from the headroom at once, so admissions between two polls
    /// see each other; the reservation is consumed as the session charges and what is left
    /// returns when the budget dies. The answer is a budget: empty (false) when refused, with
    /// `refusal()` saying why. Disabled admission admits everything and reserves nothing; dry
    /// run counts would-be refusals and admits (reserving anyway).
    /// Thread safety: any thread; lock-free (a CAS loop on one atomic). Never throws.
    /// Complexity: O(1) plus CAS retries under contention; no allocation or system call.
    [[nodiscard]] session_budget admit_session(std::size_t declared_bytes) noexcept {
        return detail::admit_session(m_admission, declared_bytes);
    }

    /// What session admissions may still reserve before the next poll: the ceiling minus the
    /// estimate the last poll saw minus outstanding reservations (negative past the ceiling;
    /// 2^60 when the limit is unknown). Thread safety: any thread. Complexity: O(1).
    [[nodiscard]] std::int64_t admission_headroom() const noexcept { return m_admission->headroom(); }

    /// Adds a reclaimer for the evictor (it shares ownership). `r->on_level` is told at once
    /// the level the last poll (or the constructor) saw, `normal` included. From inside a
    /// callback of a step or a visit the addition is deferred to the end of that step or
    /// visit. Throws `std::invalid_argument` if `r` is null or already registered,
    /// `std::bad_alloc`. Thread safety: any thread.
    void register_reclaimer(std::shared_ptr<reclaimer> r) { m_evictor.add(std::move(r)); }

    /// Removes a reclaimer added by `register_reclaimer` (the object itself, compared by
    /// address); if the level is not `normal` it is told `normal` on its way out. Returns false
    /// if `r` was not registered. Waits for a step, `stats`, `health` or `collect` that may be
    /// using it; once it returns the governor will not call it again, so the part it works on
    /// may be destroyed, whether or not the polling thread runs. From inside a callback of a
    /// step or a visit (a reclaimer, an `on_evict`, a visitor) it does not wait: the running
    /// step no longer calls `r`, and `r` leaves when the step or the outermost visit ends (the
    /// part may be destroyed after that, e.g. once `poll` has returned). Throws
    /// `std::bad_alloc` only when deferred. Thread safety: any thread.
    bool unregister_reclaimer(const reclaimer& r) { return m_evictor.remove(r); }

    /// Polls the monitor, updates the gates, tells the evictor the level and steps it when
    /// due (every `step_period` at every level, at once when the level rises); returns the
    /// level. Call it from an event loop every few milliseconds, or use `start()`.
    /// Thread safety: any thread (serialised). Called from inside a callback of this thread's
    /// own poll (a level subscriber, a reclaimer, an `on_evict`) or from inside a visit of the
    /// evictor, it does nothing and returns the current level (counted in
    /// `governor_stats::ignored_polls`). Throws `std::bad_alloc`.
    /// Complexity: at normal with nothing expired, a file sample every `sample_period` and a
    /// step every `step_period` that costs one sweep call per session map.
    pressure_level poll(time_point now) {
        // Inside a visit or a step on this thread: polling could wait for that visit.
        if (MEMGOV_UNLIKELY(m_evictor.in_callback())) return ignored_poll();
        const detail::owned_mutex::guard turn{m_poll_turn};
        if (!turn) return ignored_poll();             // from a callback this thread's poll is running
        const std::uint64_t polls = record_poll(now); // the counts as they stand before it acts
        const pressure_level lvl = m_monitor.poll(now);
        const std::uint64_t est = m_monitor.estimate_bytes();
        // The limit changes rarely; refresh it (and the thresholds) with each file sample.
        if (polls == 1 || now - m_limit_read >= m_cfg.monitor.sample_period) {
            refresh_limit(now);
        }
        update_gates(lvl, est, m_limit_cache);
        m_evictor.set_level(lvl); // falls reach the reclaimers too, not only rises
        const bool rose = lvl > m_last_step_level;
        if (rose || !m_stepped || now - m_last_step >= m_cfg.step_period) {
            const pressure_view v = view(lvl, est);
            (void)m_evictor.step(v, now);
            {
                std::lock_guard report{m_report_mutex};
                ++m_steps;
            }
            m_stepped = true;
            m_last_step = now;
            if (lvl > pressure_level::normal) {
                // The step may have freed enough to change the level at once.
                const pressure_level after = m_monitor.poll(now);
                update_gates(after, m_monitor.estimate_bytes(), m_limit_cache);
                m_evictor.set_level(after);
            }
        }
        m_last_step_level = lvl;
        return m_monitor.level();
    }
    /// `poll(clock.now())`.
    pressure_level poll() { return poll(m_clock.now()); }

    /// Starts a thread that calls `poll()` every `poll_period`. No-op if running; a thread
    /// told to stop from inside its own callback is waited for first. Called from the
    /// governor's own thread it does nothing.
    /// Throws `std::system_error` (or `std::bad_alloc`) if the thread cannot start.
    void start() {
        m_thread.start([this](const std::stop_token& st, detail::service_no_wake&) { run(st); });
    }
    /// Stops the thread and waits for it, with no lock held while waiting (so a callback on
    /// the thread may call `running()` meanwhile). Called from the governor's own thread
    /// (inside a callback of its poll), it only asks the thread to end after this poll; a
    /// later `stop()`, `start()` or the destructor waits for it. Must not be called from inside
    /// a `for_each_reclaimer` visit on another thread (the poll it waits for may wait for
    /// that visit). Never throws.
    void stop() noexcept { m_thread.stop(); }
    /// True while the thread runs and has not been asked to stop.
    [[nodiscard]] bool running() const noexcept { return m_thread.running(); }

    /// A copy of every counter. Allocates; throws `std::bad_alloc`. Thread safety: any thread,
    /// also from inside every callback memgov makes (see the file comment).
    [[nodiscard]] governor_stats stats() const {
        governor_stats s;
        s.pressure = m_monitor.snapshot();
        s.evictor = m_evictor.stats();
        s.admission = admission_counts();
        s.ledger = m_ledger.snapshot();
        m_evictor.for_each_reclaimer([&](const reclaimer& r) {
            s.reclaimers.push_back({std::string{r.name()}, r.reuse_rate()});
        });
        std::lock_guard lock{m_report_mutex};
        s.polls = m_polls;
        s.steps = m_steps;
        s.ignored_polls = m_ignored_polls.load(std::memory_order_relaxed);
        return s;
    }

    /// The health summary. Allocates; throws `std::bad_alloc`. Thread safety: any thread,
    /// also from inside every callback memgov makes (see the file comment).
    [[nodiscard]] health_summary health() const {
        const pressure_snapshot p = m_monitor.snapshot();
        health_summary h;
        h.level = p.level;
        h.limit_bytes = p.limit_bytes;
        h.estimate_bytes = p.estimate_bytes;
        h.ratio = p.ratio;
        // Both terms lie in [0, 2^63 - 1] (a limit read as "unlimited" may be near 2^64), so the
        // difference cannot overflow.
        const double red_bytes = std::max(0.0, p.red_line * static_cast<double>(p.limit_bytes));
        h.headroom_bytes =
            detail::saturating_cast<std::int64_t>(red_bytes) - detail::saturating_cast<std::int64_t>(p.estimate_bytes);
        h.growth_bytes_per_second = p.growth_bytes_per_second;
        h.time_to_limit = p.time_to_limit;
        h.blind = p.blind;
        h.blind_reason = p.blind_reason;
        m_evictor.for_each_reclaimer([&](const reclaimer& r) {
            if (r.reuse_rate() >= 0.0) h.reuse_rates.push_back({std::string{r.name()}, r.reuse_rate()});
        });
        const std::uint64_t rej = admission_counts().total_refused();
        const std::uint64_t ev = evictions(m_evictor.stats());
        const time_point now = m_clock.now();
        std::lock_guard lock{m_report_mutex};
        std::uint64_t rej0 = rej;
        std::uint64_t ev0 = ev;
        for (const auto& e : m_history) { // oldest first: the first within the minute is the base
            if (now - e.at <= std::chrono::minutes{1}) {
                rej0 = e.rejections;
                ev0 = e.evictions;
                break;
            }
        }
        h.rejections_last_minute = rej - std::min(rej, rej0);
        h.evictions_last_minute = ev - std::min(ev, ev0);
        return h;
    }

    /// Writes every statistic of the governor and of every registered part into `sink`.
    /// Throws `std::bad_alloc` and what `sink` throws. Thread safety: any thread, also from
    /// inside every callback memgov makes (see the file comment).
    void collect(metric_sink& sink) const {
        const governor_stats s = stats();
        const auto& p = s.pressure;
        const auto g = [&](std::string_view name, std::string_view help, double v) {
            sink.sample(name, help, metric_type::gauge, {}, v);
        };
        g("limit_bytes", "The binding memory limit", static_cast<double>(p.limit_bytes));
        g("usage_bytes", "Usage of the binding cgroup at the last sample", static_cast<double>(p.usage_bytes));
        g("working_set_bytes", "Usage minus inactive file cache at the last sample",
          static_cast<double>(p.working_set_bytes));
        g("rss_bytes", "The process's resident set at the last sample", static_cast<double>(p.rss_bytes));
        g("estimate_bytes", "Working set plus what the ledger moved since the last sample",
          static_cast<double>(p.estimate_bytes));
        g("usage_ratio", "Estimate over limit", p.ratio);
        g("red_line_ratio", "The red line (critical threshold) as a share of the limit", p.red_line);
        g("growth_bytes_per_second", "Smoothed growth rate of the working set", p.growth_bytes_per_second);
        g("time_to_limit_seconds", "Forecast time to the limit (+Inf when not growing)",
          p.time_to_limit ? std::chrono::duration<double>(*p.time_to_limit).count()
                          : std::numeric_limits<double>::infinity());
        for (std::size_t li = 0; li < pressure_level_count; ++li) {
            const auto l = static_cast<pressure_level>(li);
            sink.sample("pressure_level", "1 for the current pressure level, 0 for the others", metric_type::gauge,
                        {{"level", to_string(l)}}, l == p.level ? 1.0 : 0.0);
        }
        if (p.psi) {
            const auto psi = [&](std::string_view kind, const psi_line& l) {
                sink.sample("psi_avg10_percent", "PSI memory stall share over 10 s", metric_type::gauge,
                            {{"kind", kind}}, l.avg10);
                sink.sample("psi_avg60_percent", "PSI memory stall share over 60 s", metric_type::gauge,
                            {{"kind", kind}}, l.avg60);
                sink.sample("psi_stall_seconds_total", "PSI memory stall time", metric_type::counter, {{"kind", kind}},
                            static_cast<double>(l.total_us) / 1e6);
            };
            psi("some", p.psi->some);
            if (p.psi->has_full) psi("full", p.psi->full);
        }
        sink.sample("oom_kills_total", "OOM kills in the binding cgroup since the monitor started",
                    metric_type::counter, {}, static_cast<double>(p.oom_kills_since_start));
        sink.sample("samples_total", "Successful monitor samples", metric_type::counter, {},
                    static_cast<double>(p.sample_count));
        sink.sample("sample_failures_total", "Monitor samples with no limit or usage", metric_type::counter, {},
                    static_cast<double>(p.sample_failures));
        g("monitor_blind", "1 while the monitor cannot read the limit or the usage (it fails open)",
          p.blind ? 1.0 : 0.0);
        g("sample_age_seconds", "Age of the last successful sample",
          std::chrono::duration<double>(p.sample_age).count());

        for (std::size_t k = 0; k < admit_kind_count; ++k) {
            const auto kind = to_string(static_cast<admit_kind>(k));
            sink.sample("admissions_total", "Admissions granted, by kind", metric_type::counter, {{"kind", kind}},
                        static_cast<double>(s.admission.admitted[k]));
            sink.sample("admitted_bytes_total", "Bytes admitted, by kind (sessions: declared cost; work: its bytes)",
                        metric_type::counter, {{"kind", kind}}, static_cast<double>(s.admission.admitted_bytes[k]));
            for (std::size_t r = 1; r < admit_reason_count; ++r) {
                const auto reason = to_string(static_cast<admit_reason>(r));
                sink.sample("rejections_total", "Admissions refused, by kind and reason", metric_type::counter,
                            {{"kind", kind}, {"reason", reason}}, static_cast<double>(s.admission.refused[k][r]));
                sink.sample("rejected_bytes_total", "Bytes refused, by kind and reason", metric_type::counter,
                            {{"kind", kind}, {"reason", reason}}, static_cast<double>(s.admission.refused_bytes[k][r]));
                sink.sample("dry_run_rejections_total", "Admissions that would have been refused (dry run)",
                            metric_type::counter, {{"kind", kind}, {"reason", reason}},
                            static_cast<double>(s.admission.dry_refused[k][r]));
                sink.sample("dry_run_rejected_bytes_total", "Bytes that would have been refused (dry run)",
                            metric_type::counter, {{"kind", kind}, {"reason", reason}},
                            static_cast<double>(s.admission.dry_refused_bytes[k][r]));
            }
        }
        g("session_budgets", "Live session budgets", static_cast<double>(s.admission.sessions));
        g("admission_reserved_bytes", "Declared session bytes reserved and not yet charged",
          static_cast<double>(s.admission.reserved_bytes));
        g("admission_headroom_bytes",
          "What session admissions may still reserve before the next poll (negative: past the ceiling)",
          static_cast<double>(s.admission.headroom_bytes));
        g("session_quota_bytes", "A session's quota at the current level",
          static_cast<double>(s.admission.session_quota_bytes));
        g("session_heavy_bytes", "Held bytes above which a session is heavy at the current level",
          static_cast<double>(s.admission.heavy_bytes));
        g("session_share_bytes", "A live session's fair share at the current level (shed above it)",
          static_cast<double>(s.admission.session_share_bytes));
        g("sessions_admission_open", "1 while new sessions are admitted", s.admission.sessions_open ? 1.0 : 0.0);
        g("work_admission_open", "1 while new work is admitted", s.admission.work_open ? 1.0 : 0.0);
        sink.sample("polls_total", "Governor polls", metric_type::counter, {}, static_cast<double>(s.polls));
        sink.sample("ignored_polls_total", "Polls called from inside the governor's own callbacks (they did nothing)",
                    metric_type::counter, {}, static_cast<double>(s.ignored_polls));
        memgov::collect(sink, m_ledger);
        memgov::collect(sink, s.evictor);
        m_evictor.for_each_reclaimer([&](const reclaimer& r) {
            r.collect(sink);
            if (r.reuse_rate() >= 0.0) {
                sink.sample("reuse_ratio", "Share of requests served by reuse, by reclaimer", metric_type::gauge,
                            {{"reclaimer", r.name()}}, r.reuse_rate());
            }
        });
    }

private:
    struct history_entry {
        time_point at;
        std::uint64_t rejections;
        std::uint64_t evictions;
    };

    static governor_config validate(governor_config c) {
        detail::validate(c.admission);
        detail::require_field(c.poll_period > duration::zero() && c.poll_period <= longest_period, "governor_config",
                              "poll_period", "must be in (0, longest_period]");
        detail::require_field(c.step_period >= duration::zero() && c.step_period <= longest_period, "governor_config",
                              "step_period", "must be in [0, longest_period]");
        return c;
    }

    static evictor_config with_dry_run(evictor_config e, bool dry) {
        e.dry_run = e.dry_run || dry;
        return e;
    }

    static std::uint64_t evictions(const evictor_stats& s) noexcept {
        std::uint64_t n = 0;
        for (auto a : {reclaim_action::sweep_expired, reclaim_action::evict_by_age, reclaim_action::evict_over_cost,
                       reclaim_action::evict_largest, reclaim_action::evict_lru}) {
            n += s.total(a).items;
        }
        return n;
    }

    MEMGOV_COLD admission refuse(std::size_t k, std::int64_t cost) noexcept {
        auto reason = static_cast<admit_reason>(m_reason[k].load(std::memory_order_relaxed));
        if (reason == admit_reason::admitted) {
            // The gate opened between the two loads; recheck against the current allowance.
            if (cost <= m_allow[k].load(std::memory_order_relaxed)) {
                m_admission->count_admitted(k, cost);
                return {};
            }
            reason = admit_reason::no_headroom;
        }
        return m_admission->refuse(k, reason, cost);
    }

    void update_gates(pressure_level lvl, std::uint64_t est, std::uint64_t limit) noexcept {
        std::lock_guard lock{m_gate_mutex};
        const auto& a = m_cfg.admission;
        m_admission->update(lvl, est, limit);
        // `admit` without a budget compares with the headroom as of now, reservations included.
        std::int64_t headroom = std::numeric_limits<std::int64_t>::max();
        if (limit > 0) headroom = m_admission->headroom();
        for (std::size_t k = 0; k < admit_kind_count; ++k) {
            admit_reason reason = admit_reason::admitted;
            if (a.enabled) {
                if (lvl >= a.refuse_all_at)
                    reason = admit_reason::all_closed;
                else if (k == 0 && lvl >= a.close_sessions_at)
                    reason = admit_reason::sessions_closed;
                else if (headroom < 0)
                    reason = admit_reason::no_headroom;
            }
            std::int64_t allow = std::numeric_limits<std::int64_t>::max();
            if (reason != admit_reason::admitted)
                allow = -1;
            else if (a.enabled)
                allow = headroom;
            m_reason[k].store(static_cast<std::uint8_t>(reason), std::memory_order_relaxed);
            m_allow[k].store(allow, std::memory_order_relaxed);
        }
        const bool sessions_open = !(a.enabled && lvl >= a.close_sessions_at);
        if (sessions_open != m_sessions_open) {
            (sessions_open ? m_gate_opens : m_gate_closes).fetch_add(1, std::memory_order_relaxed);
            m_sessions_open = sessions_open;
        }
        m_work_open.store(!(a.enabled && lvl >= a.refuse_all_at), std::memory_order_relaxed);
        m_sessions_open_atomic.store(sessions_open, std::memory_order_relaxed);
    }

    void refresh_limit(time_point now) {
        const pressure_snapshot s = m_monitor.snapshot();
        m_limit_cache = s.limit_bytes;
        m_red_line = s.red_line;
        m_thresholds = s.thresholds;
        m_limit_read = now;
    }

    pressure_view view(pressure_level lvl, std::uint64_t est) const noexcept {
        pressure_view v;
        v.level = lvl;
        v.limit_bytes = static_cast<std::size_t>(m_limit_cache);
        v.estimate_bytes = static_cast<std::size_t>(est);
        v.red_line = m_red_line;
        v.exit_ratio = lvl == pressure_level::normal ? 0.0 : m_thresholds[to_index(lvl) - 1].exit;
        // The per-session quota at this level caps what counts as over cost (and large).
        if (m_cfg.admission.enabled) {
            const std::int64_t q = m_admission->quota();
            v.session_quota_bytes = q > 0 ? static_cast<std::size_t>(q) : 0;
        }
        return v;
    }

    admission_stats admission_counts() const noexcept {
        admission_stats a;
        m_admission->fill(a);
        a.session_gate_closes = m_gate_closes.load(std::memory_order_relaxed);
        a.session_gate_opens = m_gate_opens.load(std::memory_order_relaxed);
        a.sessions_open = m_sessions_open_atomic.load(std::memory_order_relaxed);
        a.work_open = m_work_open.load(std::memory_order_relaxed);
        return a;
    }

    // A poll re-entered from a callback: counted, does nothing. A relaxed atomic, so it takes
    // no lock whatever the callback's caller holds.
    pressure_level ignored_poll() noexcept {
        m_ignored_polls.fetch_add(1, std::memory_order_relaxed);
        return m_monitor.level();
    }

    // Counts a poll and, at most once a second, records the refusal and eviction counts for
    // `health()`'s last minute. Returns the poll's number. Under the poll turn: only this
    // thread adds history, so deciding and adding need not be one step.
    std::uint64_t record_poll(time_point now) {
        std::uint64_t polls = 0;
        bool due = false;
        {
            std::lock_guard report{m_report_mutex};
            polls = ++m_polls;
            due = m_history.empty() || now - m_history.back().at >= std::chrono::seconds{1};
        }
        if (!due) return polls;
        const history_entry e{now, admission_counts().total_refused(), evictions(m_evictor.stats())};
        std::lock_guard report{m_report_mutex};
        m_history.push_back(e);
        while (m_history.size() > 62) m_history.pop_front();
        return polls;
    }

    void run(const std::stop_token& st) noexcept {
        std::unique_lock lock{m_wait_mutex};
        while (!st.stop_requested()) {
            lock.unlock();
            try {
                (void)poll(m_clock.now());
            } catch (...) {
                // Out of memory while polling: try again next period.
            }
            lock.lock();
            (void)m_wake.wait_for(lock, st, m_cfg.poll_period, [] { return false; });
        }
    }

    governor_config m_cfg;
    Clock m_clock;
    memgov::ledger m_ledger;
    pressure_monitor<Clock> m_monitor;
    memgov::evictor m_evictor;
    pressure_subscription m_subscription;

    // Admission: read by every admit, written under m_gate_mutex.
    alignas(cache_line_size) std::array<std::atomic<std::int64_t>, admit_kind_count> m_allow{};
    std::array<std::atomic<std::uint8_t>, admit_kind_count> m_reason{};
    // Shared with every session_budget: headroom and reservations, quota, counters.
    std::shared_ptr<detail::admission_state> m_admission;
    std::mutex m_gate_mutex;
    bool m_sessions_open = true; // under m_gate_mutex
    std::atomic<bool> m_sessions_open_atomic{true};
    std::atomic<bool> m_work_open{true};
    std::atomic<std::uint64_t> m_gate_closes{0};
    std::atomic<std::uint64_t> m_gate_opens{0};

    // Polling state, under m_poll_turn (one poll at a time; a poll re-entered from one of its
    // own callbacks returns at once).
    detail::owned_mutex m_poll_turn;
    bool m_stepped = false;
    time_point m_last_step{};
    pressure_level m_last_step_level = pressure_level::normal;
    std::uint64_t m_limit_cache = 0;
    double m_red_line = 0.85;
    std::array<level_threshold, 4> m_thresholds{};
    time_point m_limit_read{};
    // What `stats()` and `health()` read: under m_report_mutex, never held while the poll
    // calls out, so a subscriber or reclaimer callback may ask for them.
    mutable std::mutex m_report_mutex;
    std::uint64_t m_polls = 0;
    std::uint64_t m_steps = 0;
    std::deque<history_entry> m_history;
    std::atomic<std::uint64_t> m_ignored_polls{0};

    // The thread (declared last: it is stopped before anything it uses goes).
    std::mutex m_wait_mutex;
    std::condition_variable_any m_wake; // waits for the period or the thread's stop request
    detail::service_thread<> m_thread;
};

MEMGOV_NAMESPACE_END
