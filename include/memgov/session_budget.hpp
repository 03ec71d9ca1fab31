// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Per-session budgets: who pays under pressure.
///
/// A `session_budget` is the handle a session holds from the moment it is admitted
/// (`governor::admit_session(declared_bytes)`) until it ends. It carries:
///
/// - a **reservation**: the declared cost, taken from the governor's admission headroom with a
///   CAS on one atomic, so admissions between two polls see each other (a burst cannot be
///   admitted past the headroom). The reservation is consumed as the session charges bytes and
///   what is left goes back to the headroom when the handle dies;
/// - the session's **held bytes** (`charge` / `release`; bytes in flight downstream stay charged
///   until released), checked against a **quota** that scales with the limit and shrinks as
///   the pressure level rises;
/// - **graded refusal** of the session's work (`admit`): over its quota a session is refused at
///   every level (`over_quota`); a *heavy* session (holding more than `heavy_share` of its
///   quota) is refused with a probability that rises with the level (`heavy`); every other
///   session is paced last, with a smaller probability (`paced`). The probability is applied
///   deterministically per session: a fixed-point accumulator refuses exactly ⌊n·p⌋ (±1) of n
///   calls, so tests are exact and no random numbers are drawn;
/// - its own counters (admitted and refused calls and bytes).
///
/// This header also holds the admission vocabulary shared with `governor.hpp` (`admit_kind`,
/// `admit_reason`, `admission`, `admission_config`, `admission_stats`).
///
/// ## Thread safety of a handle
/// `admit`, `charge` and `try_charge` from one thread at a time (the thread reading the
/// session). `release` and every observer from any thread, concurrently with those (a
/// producer's delivery report releasing bytes, a scrape reading counters): the handle's
/// counters are relaxed atomics. Moving, `reset` and destruction need exclusive access.
/// The governor's state is shared with every handle, so a handle may outlive the governor
/// (it then only keeps its own counters).

#include <memgov/config.hpp>
#include <memgov/detail/saturate.hpp>
#include <memgov/detail/thread_counters.hpp>
#include <memgov/detail/validate.hpp>
#include <memgov/pressure_level.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <utility>

MEMGOV_NAMESPACE_BEGIN

/// What is being admitted.
enum class admit_kind : std::uint8_t {
    session = 0, ///< A new session (connection, stream): refused from the red line on.
    work = 1     ///< New work for an existing session (a message, bytes).
};
/// Number of admission kinds.
inline constexpr std::size_t admit_kind_count = 2;

/// The outcome of an admission.
enum class admit_reason : std::uint8_t {
    admitted = 0,        ///< Go ahead.
    sessions_closed = 1, ///< New sessions are closed (critical or above).
    all_closed = 2,      ///< All new work is refused (emergency; `governor::admit` only).
    no_headroom = 3,     ///< The cost (or a session's declared cost) would pass the ceiling.
    over_quota = 4,      ///< The session would hold more than its quota at this level.
    heavy = 5,           ///< Work of a session holding more than `heavy_share` of its quota.
    paced = 6            ///< Work of a light session, paced at the highest levels.
};
/// Number of admission reasons, `admitted` included.
inline constexpr std::size_t admit_reason_count = 7;

/// Names ("session", "work"; "admitted", "sessions_closed", ...). Thread safety: pure.
[[nodiscard]] constexpr std::string_view to_string(admit_kind k) noexcept {
    return k == admit_kind::session ? "session" : "work";
}
/// See `to_string(admit_kind)`.
[[nodiscard]] constexpr std::string_view to_string(admit_reason r) noexcept {
    switch (r) {
    case admit_reason::admitted:
        return "admitted";
    case admit_reason::sessions_closed:
        return "sessions_closed";
    case admit_reason::all_closed:
        return "all_closed";
    case admit_reason::no_headroom:
        return "no_headroom";
    case admit_reason::over_quota:
        return "over_quota";
    case admit_reason::heavy:
        return "heavy";
    case admit_reason::paced:
        return "paced";
    }
    return "unknown";
}

/// The answer of an admission: true when admitted, else the reason.
struct admission {
    admit_reason reason = admit_reason::admitted;
    /// True when admitted.
    [[nodiscard]] explicit operator bool() const noexcept { return reason == admit_reason::admitted; }
};

/// Admission control at ingress. Tables indexed by `pressure_level` (normal .. emergency).
struct admission_config {
    /// False: everything is admitted (refusals are neither made nor counted; no reservation).
    bool enabled = true;
    /// New sessions are refused from this level on (default: critical, the red line).
    pressure_level close_sessions_at = pressure_level::critical;
    /// `governor::admit` refuses all new work from this level on (default: emergency). Work
    /// admitted through a `session_budget` is graded instead (see `pace_refusal`).
    pressure_level refuse_all_at = pressure_level::emergency;
    /// An admission whose cost would take the estimate past this share of the limit is refused
    /// (no_headroom). Default 0.95: the last 5% are for what does not go through memgov.
    double ceiling_ratio = 0.95;

    /// A session's quota at normal: this many bytes (default 30 MiB) ...
    std::size_t session_quota_bytes = std::size_t{30} << 20;
    /// ... but at most this share of the limit (default 1/8: 16 MiB in a 128 MiB container).
    double session_quota_limit_share = 0.125;
    /// The quota at each level is the quota above × this factor. In (0, 1], not rising with
    /// the level. Default 1, 1, 0.75, 0.5, 0.25.
    std::array<double, pressure_level_count> quota_factor{1.0, 1.0, 0.75, 0.5, 0.25};
    /// A session holding (after the work in question) more than this share of its current
    /// quota is heavy. In (0, 1]. Default 0.5.
    double heavy_share = 0.5;
    /// Share of a heavy session's work refused at each level (`heavy`). In [0, 1], not falling
    /// with the level. Default 0, 0, 0.25, 1, 1: paced at high, refused from critical.
    std::array<double, pressure_level_count> heavy_refusal{0.0, 0.0, 0.25, 1.0, 1.0};
    /// Share of a light session's work refused at each level (`paced`). In [0, 1], not falling
    /// with the level, never above `heavy_refusal` at the same level. Default 0, 0, 0, 0, 0.5:
    /// light sessions pass at critical and are paced, not cut off, at emergency.
    std::array<double, pressure_level_count> pace_refusal{0.0, 0.0, 0.0, 0.0, 0.5};
    /// A live session's fair share at each level: this share of the admission ceiling
    /// (`ceiling_ratio` × the limit) divided by the live sessions, and never above the quota
    /// (0: no share at that level; the share is the quota). A session holding more than its
    /// share (`session_budget::over_share`) is asked to shed its oldest data, the way a window
    /// drops its oldest part: a crowd of well-behaved sessions then keeps flowing, each holding
    /// less, instead of being refused or evicted. Refusals still follow the quota. In [0, 1],
    /// not rising with the level where non-zero. Default 0, 0, 1, 0.75, 0.5.
    std::array<double, pressure_level_count> fair_share{0.0, 0.0, 1.0, 0.75, 0.5};
    /// True: a session found over its fair share keeps that share as its cap for the rest of
    /// its life, at every level (`session_budget::share_bytes` never rises again for it). A
    /// session that pushes faster than the others otherwise regrows as soon as the level
    /// falls and pushes it back up: the heaviest few turn the level over every few seconds.
    bool share_sticky = true;
};

/// Admission counters: calls and bytes, by kind and reason.
struct admission_stats {
    /// Admitted calls, by kind.
    std::array<std::uint64_t, admit_kind_count> admitted{};
    /// Admitted bytes, by kind (a session's declared cost; work's bytes).
    std::array<std::uint64_t, admit_kind_count> admitted_bytes{};
    /// Refused calls, by kind and reason (index by `admit_reason`; `admitted` stays 0).
    std::array<std::array<std::uint64_t, admit_reason_count>, admit_kind_count> refused{};
    /// Refused bytes, by kind and reason.
    std::array<std::array<std::uint64_t, admit_reason_count>, admit_kind_count> refused_bytes{};
    /// Would-be refusals counted in dry run (calls), by kind and reason.
    std::array<std::array<std::uint64_t, admit_reason_count>, admit_kind_count> dry_refused{};
    /// Would-be refusals counted in dry run (bytes), by kind and reason.
    std::array<std::array<std::uint64_t, admit_reason_count>, admit_kind_count> dry_refused_bytes{};
    /// Times the session gate closed and reopened.
    std::uint64_t session_gate_closes = 0;
    std::uint64_t session_gate_opens = 0;
    /// Whether new sessions and new work are admitted now (cost aside).
    bool sessions_open = true;
    bool work_open = true;
    /// Live `session_budget`s.
    std::uint64_t sessions = 0;
    /// Declared bytes reserved by live budgets and not yet charged.
    std::uint64_t reserved_bytes = 0;
    /// What session admissions may still reserve before the next poll (negative: past the
    /// ceiling). Unlimited (2^60) when the limit is unknown.
    std::int64_t headroom_bytes = 0;
    /// A session's quota at the current level, and the held bytes above which it is heavy.
    std::uint64_t session_quota_bytes = 0;
    std::uint64_t heavy_bytes = 0;
    /// A live session's fair share at the current level (the quota when no share applies).
    std::uint64_t session_share_bytes = 0;

    /// All refusals (calls).
    [[nodiscard]] std::uint64_t total_refused() const noexcept {
        std::uint64_t t = 0;
        for (const auto& k : refused) {
            for (auto n : k) t += n;
        }
        return t;
    }
    /// All refused bytes.
    [[nodiscard]] std::uint64_t total_refused_bytes() const noexcept {
        std::uint64_t t = 0;
        for (const auto& k : refused_bytes) {
            for (auto n : k) t += n;
        }
        return t;
    }
};

class session_budget;

namespace detail {

// Probabilities as fixed point over 2^16: p = 1 is 65536, refusing every call.
inline constexpr std::uint64_t pace_one = std::uint64_t{1} << 16;
// "Unlimited" bytes: far above any real limit, far below overflow when added or subtracted.
inline constexpr std::int64_t unlimited_bytes = std::int64_t{1} << 60;

[[nodiscard]] inline std::int64_t clamp_bytes(std::int64_t v) noexcept {
    return std::clamp(v, -unlimited_bytes, unlimited_bytes);
}
[[nodiscard]] inline std::int64_t to_bytes(std::size_t n) noexcept {
    return std::min(saturating_cast<std::int64_t>(n), unlimited_bytes);
}
[[nodiscard]] inline std::uint32_t to_pace(double p) noexcept {
    return saturating_cast<std::uint32_t>(p * static_cast<double>(pace_one) + 0.5);
}

/// Throws `std::invalid_argument` naming the first bad field of `a`.
inline void validate(const admission_config& a) {
    constexpr std::string_view cfg = "admission_config";
    require_field(a.ceiling_ratio > 0.0 && a.ceiling_ratio <= 1.0, cfg, "ceiling_ratio", "must be in (0, 1]");
    require_field(a.close_sessions_at <= pressure_level::emergency, cfg, "close_sessions_at",
                  "must be a level (normal .. emergency)");
    require_field(a.refuse_all_at <= pressure_level::emergency, cfg, "refuse_all_at",
                  "must be a level (normal .. emergency)");
    require_field(a.refuse_all_at >= a.close_sessions_at, cfg, "refuse_all_at", "must not be below close_sessions_at");
    require_field(a.session_quota_bytes != 0 && a.session_quota_bytes <= (std::size_t{1} << 60), cfg,
                  "session_quota_bytes", "must be in [1, 2^60]");
    require_field(a.session_quota_limit_share > 0.0 && a.session_quota_limit_share <= 1.0, cfg,
                  "session_quota_limit_share", "must be in (0, 1]");
    for (std::size_t l = 0; l < pressure_level_count; ++l) {
        require_field(a.quota_factor[l] > 0.0 && a.quota_factor[l] <= 1.0, cfg, "quota_factor",
                      "every factor must be in (0, 1]");
        require_field(!(l > 0 && a.quota_factor[l] > a.quota_factor[l - 1]), cfg, "quota_factor",
                      "must not rise with the level");
    }
    require_field(a.heavy_share > 0.0 && a.heavy_share <= 1.0, cfg, "heavy_share", "must be in (0, 1]");
    for (std::size_t l = 0; l < pressure_level_count; ++l) {
        require_field(a.heavy_refusal[l] >= 0.0 && a.heavy_refusal[l] <= 1.0, cfg, "heavy_refusal",
                      "every share must be in [0, 1]");
        require_field(!(l > 0 && a.heavy_refusal[l] < a.heavy_refusal[l - 1]), cfg, "heavy_refusal",
                      "must not fall with the level");
        require_field(a.pace_refusal[l] >= 0.0 && a.pace_refusal[l] <= 1.0, cfg, "pace_refusal",
                      "every share must be in [0, 1]");
        require_field(!(l > 0 && a.pace_refusal[l] < a.pace_refusal[l - 1]), cfg, "pace_refusal",
                      "must not fall with the level");
        require_field(!(a.pace_refusal[l] > a.heavy_refusal[l]), cfg, "pace_refusal",
                      "must not be above heavy_refusal at the same level");
        require_field(a.fair_share[l] >= 0.0 && a.fair_share[l] <= 1.0, cfg, "fair_share",
                      "every share must be in [0, 1]");
        require_field(!(l > 0 && a.fair_share[l - 1] > 0.0 && a.fair_share[l] > a.fair_share[l - 1]), cfg, "fair_share",
                      "must not rise with the level where it is set");
    }
}

/// What the governor and every `session_budget` share: the reservation headroom, the current
/// quota and refusal shares, and the admission counters. Written by the governor's gate
/// update (`update`, serialised by the governor), read by every admission.
class admission_state {
public:
    admission_state(const admission_config& cfg, bool dry_run) : m_cfg{cfg}, m_dry_run{dry_run} {}
    admission_state(const admission_state&) = delete;
    admission_state& operator=(const admission_state&) = delete;

    [[nodiscard]] const admission_config& config() const noexcept { return m_cfg; }
    [[nodiscard]] bool dry_run() const noexcept { return m_dry_run; }

    /// Recomputes the headroom, the session gate, the quota and the refusal shares for `lvl`,
    /// with `est` bytes used of `limit` (0: unknown, then the headroom is unlimited). Not
    /// thread-safe against itself: the governor calls it under its gate mutex.
    void update(pressure_level lvl, std::uint64_t est, std::uint64_t limit) noexcept {
        const auto& a = m_cfg;
        std::int64_t base = unlimited_bytes;
        if (limit > 0) {
            const double ceiling = a.ceiling_ratio * static_cast<double>(limit);
            base = clamp_bytes(saturating_cast<std::int64_t>(ceiling) -
                               std::min(saturating_cast<std::int64_t>(est), unlimited_bytes));
        }
        // headroom = base − outstanding reservations, kept exact between polls: reservations
        // and their returns move both; a charge consumes a reservation without giving the
        // headroom back (the bytes are now real), and the next estimate sees those bytes, so
        // they are added back here rather than counted twice.
        const std::int64_t consumed = m_consumed.load(std::memory_order_relaxed);
        m_headroom.fetch_add((base - m_base) + (consumed - m_consumed_seen), std::memory_order_relaxed);
        m_base = base;
        m_consumed_seen = consumed;

        const std::size_t li = to_index(std::min(lvl, pressure_level::emergency));
        admit_reason gate = admit_reason::admitted;
        if (a.enabled && lvl >= a.refuse_all_at)
            gate = admit_reason::all_closed;
        else if (a.enabled && lvl >= a.close_sessions_at)
            gate = admit_reason::sessions_closed;
        m_session_gate.store(static_cast<std::uint8_t>(gate), std::memory_order_relaxed);

        double q = static_cast<double>(a.session_quota_bytes);
        if (limit > 0) q = std::min(q, a.session_quota_limit_share * static_cast<double>(limit));
        q *= a.quota_factor[li];
        const std::int64_t quota = std::max<std::int64_t>(1, saturating_cast<std::int64_t>(q));
        m_quota.store(quota, std::memory_order_relaxed);
        std::int64_t share = quota;
        const std::uint64_t live = m_live.load(std::memory_order_relaxed);
        if (a.enabled && a.fair_share[li] > 0.0 && limit > 0 && live > 0) {
            const double ceiling = a.ceiling_ratio * static_cast<double>(limit);
            const double fair = a.fair_share[li] * ceiling / static_cast<double>(live);
            share = std::clamp<std::int64_t>(saturating_cast<std::int64_t>(fair), 1, quota);
        }
        m_share.store(share, std::memory_order_relaxed);
        m_heavy_at.store(saturating_cast<std::int64_t>(static_cast<double>(quota) * a.heavy_share),
                         std::memory_order_relaxed);
        m_heavy_pace.store(to_pace(a.heavy_refusal[li]), std::memory_order_relaxed);
        m_light_pace.store(to_pace(a.pace_refusal[li]), std::memory_order_relaxed);
        m_level.store(static_cast<std::uint8_t>(li), std::memory_order_relaxed);
    }

    /// Counts an admission of `bytes` of kind `k`. Thread-owned counters (a thread's first
    /// count claims its slot once). Thread safety: any thread. Complexity: O(1), no locked
    /// instruction once the thread has its slot.
    void count_admitted(std::size_t k, std::int64_t bytes) noexcept {
        m_counts.add(admitted_calls_at(k), 1, admitted_bytes_at(k), bytes);
    }
    /// Counts a refusal (or, in dry run, a would-be refusal and an admission); returns the
    /// answer to give. Thread safety: any thread.
    MEMGOV_COLD admission refuse(std::size_t k, admit_reason reason, std::int64_t bytes) noexcept {
        const auto r = static_cast<std::size_t>(reason);
        const auto b = static_cast<std::uint64_t>(std::max<std::int64_t>(0, bytes));
        if (m_dry_run) {
            m_dry_refused[k][r].fetch_add(1, std::memory_order_relaxed);
            m_dry_refused_bytes[k][r].fetch_add(b, std::memory_order_relaxed);
            count_admitted(k, bytes);
            return {};
        }
        m_refused[k][r].fetch_add(1, std::memory_order_relaxed);
        m_refused_bytes[k][r].fetch_add(b, std::memory_order_relaxed);
        return {reason};
    }

    /// Takes `bytes` from the headroom if it has them (CAS loop; `force`: takes them anyway).
    /// Thread safety: any thread; lock-free.
    [[nodiscard]] bool reserve(std::int64_t bytes, bool force) noexcept {
        std::int64_t h = m_headroom.load(std::memory_order_relaxed);
        do {
            if (!force && h < bytes) return false;
        } while (!m_headroom.compare_exchange_weak(h, h - bytes, std::memory_order_relaxed));
        m_reserved.fetch_add(bytes, std::memory_order_relaxed);
        return true;
    }
    /// A charge consumed `bytes` of a reservation.
    void consume(std::int64_t bytes) noexcept {
        m_reserved.fetch_sub(bytes, std::memory_order_relaxed);
        m_consumed.fetch_add(bytes, std::memory_order_relaxed);
    }
    /// A budget died with `bytes` of its reservation unused: they go back to the headroom.
    void unreserve(std::int64_t bytes) noexcept {
        m_reserved.fetch_sub(bytes, std::memory_order_relaxed);
        m_headroom.fetch_add(bytes, std::memory_order_relaxed);
    }

    // Read by every admission (relaxed: each is one consistent number; the set may straddle
    // an update, which at worst applies one call the previous level's rule).
    [[nodiscard]] admit_reason session_gate() const noexcept {
        return static_cast<admit_reason>(m_session_gate.load(std::memory_order_relaxed));
    }
    [[nodiscard]] std::int64_t headroom() const noexcept { return m_headroom.load(std::memory_order_relaxed); }
    [[nodiscard]] std::int64_t reserved() const noexcept { return m_reserved.load(std::memory_order_relaxed); }
    [[nodiscard]] std::int64_t quota() const noexcept { return m_quota.load(std::memory_order_relaxed); }
    [[nodiscard]] std::int64_t share() const noexcept { return m_share.load(std::memory_order_relaxed); }
    [[nodiscard]] std::int64_t heavy_at() const noexcept { return m_heavy_at.load(std::memory_order_relaxed); }
    [[nodiscard]] std::uint32_t heavy_pace() const noexcept { return m_heavy_pace.load(std::memory_order_relaxed); }
    [[nodiscard]] std::uint32_t light_pace() const noexcept { return m_light_pace.load(std::memory_order_relaxed); }
    [[nodiscard]] pressure_level level() const noexcept {
        return static_cast<pressure_level>(m_level.load(std::memory_order_relaxed));
    }

    /// A new session's number (spreads the sessions' pacing phases). Thread safety: any thread.
    std::uint64_t open_session() noexcept {
        m_live.fetch_add(1, std::memory_order_relaxed);
        return m_opened.fetch_add(1, std::memory_order_relaxed);
    }
    void close_session() noexcept { m_live.fetch_sub(1, std::memory_order_relaxed); }

    /// Fills the counters and gauges of `s` (gate fields are the governor's).
    void fill(admission_stats& s) const noexcept {
        for (std::size_t k = 0; k < admit_kind_count; ++k) {
            s.admitted[k] = static_cast<std::uint64_t>(std::max<std::int64_t>(0, m_counts.sum(admitted_calls_at(k))));
            s.admitted_bytes[k] =
                static_cast<std::uint64_t>(std::max<std::int64_t>(0, m_counts.sum(admitted_bytes_at(k))));
            for (std::size_t r = 0; r < admit_reason_count; ++r) {
                s.refused[k][r] = m_refused[k][r].load(std::memory_order_relaxed);
                s.refused_bytes[k][r] = m_refused_bytes[k][r].load(std::memory_order_relaxed);
                s.dry_refused[k][r] = m_dry_refused[k][r].load(std::memory_order_relaxed);
                s.dry_refused_bytes[k][r] = m_dry_refused_bytes[k][r].load(std::memory_order_relaxed);
            }
        }
        s.sessions = m_live.load(std::memory_order_relaxed);
        s.reserved_bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(0, reserved()));
        s.headroom_bytes = headroom();
        s.session_quota_bytes = static_cast<std::uint64_t>(quota());
        s.heavy_bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(0, heavy_at()));
        s.session_share_bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(0, share()));
    }

private:
    using counter_table = std::array<std::array<std::atomic<std::uint64_t>, admit_reason_count>, admit_kind_count>;

    // The thread-owned counters of kind `k`: admitted calls, then admitted bytes.
    static constexpr std::size_t admitted_calls_at(std::size_t k) noexcept { return 2 * k; }
    static constexpr std::size_t admitted_bytes_at(std::size_t k) noexcept { return 2 * k + 1; }
    static_assert(2 * admit_kind_count <= thread_counters::counter_count);

    admission_config m_cfg;
    bool m_dry_run;
    // Only `update` (serialised by the governor) touches these two.
    std::int64_t m_base = 0;
    std::int64_t m_consumed_seen = 0;

    alignas(cache_line_size) std::atomic<std::int64_t> m_headroom{0};
    alignas(cache_line_size) std::atomic<std::int64_t> m_reserved{0};
    std::atomic<std::int64_t> m_consumed{0};
    std::atomic<std::uint64_t> m_live{0};
    std::atomic<std::uint64_t> m_opened{0};
    // Written only by `update`: on a line of their own, read by every admission.
    alignas(cache_line_size) std::atomic<std::int64_t> m_quota{std::int64_t{30} << 20};
    std::atomic<std::int64_t> m_heavy_at{std::int64_t{15} << 20};
    std::atomic<std::int64_t> m_share{std::int64_t{30} << 20};
    std::atomic<std::uint32_t> m_heavy_pace{0};
    std::atomic<std::uint32_t> m_light_pace{0};
    std::atomic<std::uint8_t> m_session_gate{0};
    std::atomic<std::uint8_t> m_level{0};
    alignas(cache_line_size) thread_counters m_counts; // admitted calls and bytes, by kind
    counter_table m_refused{};
    counter_table m_refused_bytes{};
    counter_table m_dry_refused{};
    counter_table m_dry_refused_bytes{};
};

[[nodiscard]] session_budget admit_session(const std::shared_ptr<admission_state>& s, std::size_t declared) noexcept;

} // namespace detail

/// A session's budget: its reservation, its held bytes against a quota, graded refusal of its
/// work and its own counters. Obtained from `governor::admit_session`; an empty budget (false)
/// is a refusal and says why (`refusal()`). Move-only; destroying it returns what is left of
/// the reservation. See the file comment for the rules and the thread safety.
class [[nodiscard]] session_budget {
public:
    /// An empty budget (refused with `sessions_closed`, e.g. a moved-from one).
    session_budget() noexcept = default;
    session_budget(const session_budget&) = delete;
    session_budget& operator=(const session_budget&) = delete;
    /// Takes `o`'s budget; `o` becomes empty. Never throws.
    session_budget(session_budget&& o) noexcept { take(o); }
    /// Returns this budget's reservation, then takes `o`'s. Never throws.
    session_budget& operator=(session_budget&& o) noexcept {
        if (this != &o) {
            reset();
            take(o);
        }
        return *this;
    }
    /// Returns what is left of the reservation. Never throws.
    ~session_budget() { reset(); }

    /// True for an admitted session's budget.
    [[nodiscard]] explicit operator bool() const noexcept { return m_state != nullptr; }
    /// Why the session was refused (`admitted` for a live budget).
    [[nodiscard]] admit_reason refusal() const noexcept { return m_refusal; }

    /// Asks to admit `bytes` of this session's work (a frame, an append). Refuses, in order:
    /// work that would take the session past its quota at the current level (`over_quota`);
    /// work of a heavy session, with the level's `heavy_refusal` share (`heavy`); work of a
    /// light session, with the level's `pace_refusal` share (`paced`). Does not charge: call
    /// `charge` as the bytes are taken, or use `try_charge`. On an empty budget: refused with
    /// `refusal()`. Thread safety: one thread at a time (see the file comment). Complexity:
    /// O(1): a few relaxed loads, and an add on the handle when a share applies; no lock,
    /// allocation, exception or system call (a thread's first admission ever claims its
    /// counter slot once).
    [[nodiscard]] admission admit(std::size_t bytes) noexcept {
        detail::admission_state* s = m_state.get();
        if (MEMGOV_UNLIKELY(s == nullptr)) return {m_refusal};
        const std::int64_t b = detail::to_bytes(bytes);
        if (MEMGOV_UNLIKELY(!s->config().enabled)) return admitted(*s, b);
        const std::int64_t after = m_held.load(std::memory_order_relaxed) + b;
        if (MEMGOV_UNLIKELY(after > s->quota())) return refused(*s, admit_reason::over_quota, b);
        const bool heavy = after > s->heavy_at();
        const std::uint64_t p = heavy ? s->heavy_pace() : s->light_pace();
        if (p != 0) {
            // Error diffusion on the session's own accumulator: a refusal each time it crosses
            // a multiple of 2^16, so n calls at share p refuse ⌊n·p⌋ or ⌊n·p⌋ + 1 of them.
            const std::uint64_t old = m_pace.load(std::memory_order_relaxed);
            m_pace.store(old + p, std::memory_order_relaxed);
            if ((old + p) / detail::pace_one != old / detail::pace_one) {
                return refused(*s, heavy ? admit_reason::heavy : admit_reason::paced, b);
            }
        }
        return admitted(*s, b);
    }

    /// Charges `bytes` the session now holds (also bytes in flight downstream, until released).
    /// Consumes the reservation first. Never refuses. Thread safety: one thread at a time
    /// (with `admit`), concurrently with `release`. Complexity: O(1), no lock, allocation or
    /// system call; one shared atomic add while the reservation lasts.
    void charge(std::size_t bytes) noexcept {
        if (MEMGOV_UNLIKELY(m_state == nullptr)) return;
        const std::int64_t b = detail::to_bytes(bytes);
        m_held.fetch_add(b, std::memory_order_relaxed);
        const std::int64_t r = m_reservation.load(std::memory_order_relaxed);
        if (MEMGOV_UNLIKELY(r > 0)) {
            const std::int64_t c = std::min(r, b);
            m_reservation.store(r - c, std::memory_order_relaxed);
            m_state->consume(c);
        }
    }

    /// `admit(bytes)`, and `charge(bytes)` when admitted. Same rules as those two.
    [[nodiscard]] admission try_charge(std::size_t bytes) noexcept {
        const admission a = admit(bytes);
        if (a) charge(bytes);
        return a;
    }

    /// Gives back `bytes` charged before (a frame dropped, a chunk acknowledged downstream).
    /// Releasing more than is held is a bug (asserts in debug builds; saturates at 0 in the
    /// observers). Thread safety: any thread, concurrently with the others. Complexity: O(1).
    void release(std::size_t bytes) noexcept {
        if (MEMGOV_UNLIKELY(m_state == nullptr)) return;
        [[maybe_unused]] const std::int64_t old = m_held.fetch_sub(detail::to_bytes(bytes), std::memory_order_relaxed);
        MEMGOV_ASSERT(old >= detail::to_bytes(bytes), "session_budget: released more than charged");
    }

    /// Ends the session's budget now: returns what is left of the reservation; the budget
    /// becomes empty (its counters read 0). Never throws.
    void reset() noexcept {
        if (m_state == nullptr) return;
        const std::int64_t r = m_reservation.load(std::memory_order_relaxed);
        if (r > 0) m_state->unreserve(r);
        m_state->close_session();
        m_state.reset();
        m_refusal = admit_reason::sessions_closed;
        m_reservation.store(0, std::memory_order_relaxed);
        m_held.store(0, std::memory_order_relaxed);
        m_declared = 0;
        m_pace.store(0, std::memory_order_relaxed);
        m_share_cap.store(detail::unlimited_bytes, std::memory_order_relaxed);
        m_admitted_calls.store(0, std::memory_order_relaxed);
        m_admitted_bytes.store(0, std::memory_order_relaxed);
        m_refused_calls.store(0, std::memory_order_relaxed);
        m_refused_bytes.store(0, std::memory_order_relaxed);
    }

    /// Bytes the session holds (charged, not released). Thread safety: any thread.
    [[nodiscard]] std::size_t held_bytes() const noexcept {
        return static_cast<std::size_t>(std::max<std::int64_t>(0, m_held.load(std::memory_order_relaxed)));
    }
    /// What is left of the reservation (declared, not yet charged). Thread safety: any thread.
    [[nodiscard]] std::size_t reserved_bytes() const noexcept {
        return static_cast<std::size_t>(std::max<std::int64_t>(0, m_reservation.load(std::memory_order_relaxed)));
    }
    /// The cost declared at admission.
    [[nodiscard]] std::size_t declared_bytes() const noexcept { return m_declared; }
    /// The quota at the current level (0 for an empty budget). Thread safety: any thread.
    [[nodiscard]] std::size_t quota_bytes() const noexcept {
        return m_state == nullptr ? 0 : static_cast<std::size_t>(m_state->quota());
    }
    /// The session's fair share: the quota, or less when many sessions live at a level with a
    /// `fair_share`, or the share it was once found over (`share_sticky`), whichever is least
    /// (0 for an empty budget). Thread safety: any thread.
    [[nodiscard]] std::size_t share_bytes() const noexcept {
        if (m_state == nullptr) return 0;
        return static_cast<std::size_t>(std::min(m_state->share(), m_share_cap.load(std::memory_order_relaxed)));
    }
    /// True when the session holds more than its fair share (`share_bytes`) now: it should
    /// shed its oldest data (see `admission_config::fair_share`). Not a refusal. With
    /// `share_sticky`, a session found over a share that applies keeps it as its cap.
    /// Thread safety: any thread. Complexity: a few relaxed loads (and a store when marked).
    [[nodiscard]] bool over_share() const noexcept {
        if (m_state == nullptr) return false;
        const std::int64_t held = m_held.load(std::memory_order_relaxed);
        const std::int64_t share = m_state->share();
        if (held > share && share < m_state->quota() && m_state->config().share_sticky &&
            share < m_share_cap.load(std::memory_order_relaxed)) {
            m_share_cap.store(share, std::memory_order_relaxed);
        }
        return held > static_cast<std::int64_t>(share_bytes());
    }
    /// True when the session holds more than `heavy_share` of its quota now.
    [[nodiscard]] bool heavy() const noexcept {
        return m_state != nullptr && m_held.load(std::memory_order_relaxed) > m_state->heavy_at();
    }
    /// True when the session holds more than its quota now (the quota shrank under it): the
    /// evictor's first candidates. Thread safety: any thread.
    [[nodiscard]] bool over_quota() const noexcept {
        return m_state != nullptr && m_held.load(std::memory_order_relaxed) > m_state->quota();
    }
    /// This session's admitted and refused work (calls and bytes). Thread safety: any thread.
    [[nodiscard]] std::uint64_t admitted_calls() const noexcept {
        return m_admitted_calls.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t admitted_bytes() const noexcept {
        return m_admitted_bytes.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t refused_calls() const noexcept {
        return m_refused_calls.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t refused_bytes() const noexcept {
        return m_refused_bytes.load(std::memory_order_relaxed);
    }

private:
    friend session_budget detail::admit_session(const std::shared_ptr<detail::admission_state>&, std::size_t) noexcept;

    session_budget(std::shared_ptr<detail::admission_state> s, std::int64_t reservation, std::size_t declared,
                   std::uint64_t number) noexcept
        : m_state{std::move(s)}, m_refusal{admit_reason::admitted}, m_declared{declared}, m_reservation{reservation},
          // Each session starts its pacing at its own phase (golden-ratio spacing of the
          // session numbers), so sessions that send one frame each are paced as a crowd too.
          m_pace{(number * 0x9E3779B97F4A7C15ULL) >> 48} {}
    explicit session_budget(admit_reason refusal) noexcept : m_refusal{refusal} {}

    void take(session_budget& o) noexcept {
        m_state = std::move(o.m_state);
        m_refusal = std::exchange(o.m_refusal, admit_reason::sessions_closed);
        m_declared = std::exchange(o.m_declared, 0);
        m_reservation.store(o.m_reservation.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
        m_held.store(o.m_held.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
        m_pace.store(o.m_pace.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
        m_share_cap.store(o.m_share_cap.exchange(detail::unlimited_bytes, std::memory_order_relaxed),
                          std::memory_order_relaxed);
        m_admitted_calls.store(o.m_admitted_calls.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
        m_admitted_bytes.store(o.m_admitted_bytes.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
        m_refused_calls.store(o.m_refused_calls.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
        m_refused_bytes.store(o.m_refused_bytes.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
    }

    // Adds to a counter only the admitting thread writes: a load and a store, no locked
    // instruction (readers on other threads see each value whole).
    static void single_writer_add(std::atomic<std::uint64_t>& c, std::uint64_t n) noexcept {
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    admission admitted(detail::admission_state& s, std::int64_t b) noexcept {
        single_writer_add(m_admitted_calls, 1);
        single_writer_add(m_admitted_bytes, static_cast<std::uint64_t>(b));
        s.count_admitted(static_cast<std::size_t>(admit_kind::work), b);
        return {};
    }
    MEMGOV_COLD admission refused(detail::admission_state& s, admit_reason r, std::int64_t b) noexcept {
        const admission a = s.refuse(static_cast<std::size_t>(admit_kind::work), r, b);
        if (a) { // dry run: counted as a would-be refusal, admitted
            single_writer_add(m_admitted_calls, 1);
            single_writer_add(m_admitted_bytes, static_cast<std::uint64_t>(b));
            return a;
        }
        single_writer_add(m_refused_calls, 1);
        single_writer_add(m_refused_bytes, static_cast<std::uint64_t>(b));
        return a;
    }

    std::shared_ptr<detail::admission_state> m_state;
    admit_reason m_refusal = admit_reason::sessions_closed;
    std::size_t m_declared = 0;
    std::atomic<std::int64_t> m_reservation{0};
    std::atomic<std::int64_t> m_held{0};
    std::atomic<std::uint64_t> m_pace{0};
    // The share this session was found over (share_sticky), written by the const observer
    // over_share: what it caches is the session's own history, not its logical value.
    mutable std::atomic<std::int64_t> m_share_cap{detail::unlimited_bytes};
    std::atomic<std::uint64_t> m_admitted_calls{0};
    std::atomic<std::uint64_t> m_admitted_bytes{0};
    std::atomic<std::uint64_t> m_refused_calls{0};
    std::atomic<std::uint64_t> m_refused_bytes{0};
};

namespace detail {

/// Admits a session declaring `declared` bytes against `s`: the session gate, the quota (a
/// declared cost above the quota is `over_quota`), then a reservation taken from the headroom
/// with a CAS loop (`no_headroom` when it does not fit). Counts the outcome.
/// Thread safety: any thread; lock-free. Complexity: O(1) (+ CAS retries under contention).
[[nodiscard]] inline session_budget admit_session(const std::shared_ptr<admission_state>& s,
                                                  std::size_t declared) noexcept {
    constexpr std::size_t k = static_cast<std::size_t>(admit_kind::session);
    const std::int64_t d = to_bytes(declared);
    const auto& a = s->config();
    if (!a.enabled) {
        s->count_admitted(k, d);
        return session_budget{s, 0, declared, s->open_session()};
    }
    admit_reason why = s->session_gate();
    if (why == admit_reason::admitted && d > s->quota()) why = admit_reason::over_quota;
    if (why == admit_reason::admitted && !s->reserve(d, false)) why = admit_reason::no_headroom;
    if (why != admit_reason::admitted) {
        if (!s->refuse(k, why, d)) return session_budget{why};
        (void)s->reserve(d, true); // dry run: admitted, and its reservation counts
        return session_budget{s, d, declared, s->open_session()};
    }
    s->count_admitted(k, d);
    return session_budget{s, d, declared, s->open_session()};
}

} // namespace detail

MEMGOV_NAMESPACE_END
