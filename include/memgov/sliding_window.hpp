// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// A per-session byte buffer with a hard cap, built from fixed-size chunks of a `buffer_pool`.
///
/// ## Model
/// ```
///  append(bytes) ─▶ [chunk][chunk][chunk][tail chunk, partly filled]
///                    ▲ oldest                                  newest ▲
///  over the cap? first drop the oldest fraction (default 1/4 of the cap), then write
///  take_chunks(out) ─▶ whole chunks move out without a copy (for a Kafka producer)
/// ```
/// The window holds at most `cap_bytes()` bytes of data. A write that would pass the cap first
/// drops the oldest `max(overflow, ceil(cap × drop_fraction))` bytes (at most everything held)
/// and counts the bytes and the event; a single write larger than the cap keeps only its
/// newest `cap` bytes. What remains is always the newest bytes, in order, byte-exact.
///
/// Chunks are whole size classes of the pool: a `chunk_size` between two classes is rounded up
/// to the larger one and every chunk is filled to that capacity, so no chunk holds capacity it
/// never uses. Memory held is `chunk_count() × chunk_size()`, less than the cap plus two partly
/// used chunks (the oldest and the newest): `held_bytes() < cap_bytes() + 2 × chunk_size()`.
/// With a ledger the window charges what it holds to `category::windows` as chunks come and go.
/// The same chunks are also counted by the pool as `pool_in_use`: `windows` is an attribution
/// (it says *who* holds pool memory, it is not extra memory), left out of `ledger::total()`.
/// `held_bytes()` is also what a `session_map` of windows takes as each session's cost.
///
/// ## Long-context quota
/// `grant(quota, extra)` raises the window's cap by `extra` bytes taken from a `window_quota`,
/// which is shared by all windows and bounded in total and per window. A refusal is a plain
/// `grant_result`, never an exception. `return_grant()` gives the bytes back (dropping the
/// oldest data above the base cap); destroying the window returns them too.

#include <memgov/buffer_pool.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/saturate.hpp>
#include <memgov/detail/validate.hpp>
#include <memgov/ledger.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

MEMGOV_NAMESPACE_BEGIN

/// The configuration of a `sliding_window`. Validated once by the window's constructor.
struct sliding_window_config {
    /// Bytes per chunk; > 0 and at most the pool's largest size class (so chunks are pooled).
    /// Rounded up to the pool's smallest class that holds it: each chunk is a whole pooled
    /// buffer and is filled to its capacity (`sliding_window::chunk_size()` is the result).
    std::size_t chunk_size = std::size_t{64} << 10;
    /// The hard cap on bytes held, before any grant. Must be > 0. A cap plus grants beyond
    /// `SIZE_MAX` saturates at `SIZE_MAX`.
    std::size_t cap_bytes = std::size_t{10} << 20;
    /// The share of the cap dropped (oldest first) when a write would pass it, in (0, 1].
    double drop_fraction = 0.25;
};

/// The configuration of a `window_quota`.
struct window_quota_config {
    /// Bytes that may be granted at once over all windows. Must be > 0.
    std::size_t total_bytes = std::size_t{256} << 20;
    /// Bytes one window may hold granted at once. Must be > 0 and <= total_bytes.
    std::size_t max_grant_bytes = std::size_t{64} << 20;
};

/// Counters of a `window_quota`.
struct window_quota_stats {
    std::size_t total_bytes = 0;        ///< The configured total.
    std::size_t granted_bytes = 0;      ///< Granted and not yet returned.
    std::size_t peak_granted_bytes = 0; ///< The most ever granted at once.
    std::uint64_t grants = 0;           ///< Successful grants.
    std::uint64_t refusals = 0;         ///< Grants refused for lack of quota or per-window room.
    std::uint64_t returns = 0;          ///< Grants given back.
};

/// A global, bounded pool of extra window capacity for long-context sessions.
/// Thread safety: every member is safe to call concurrently. It must outlive the windows that
/// hold grants from it.
class window_quota {
public:
    /// Throws `std::invalid_argument` naming a bad field.
    explicit window_quota(const window_quota_config& config = {}) : m_config{config} {
        constexpr std::string_view cfg = "window_quota_config";
        detail::require_field(config.total_bytes != 0, cfg, "total_bytes", "must be > 0");
        detail::require_field(config.max_grant_bytes != 0 && config.max_grant_bytes <= config.total_bytes, cfg,
                              "max_grant_bytes", "must be > 0 and <= total_bytes");
    }
    window_quota(const window_quota&) = delete;
    window_quota& operator=(const window_quota&) = delete;
    window_quota(window_quota&&) = delete;
    window_quota& operator=(window_quota&&) = delete;
    ~window_quota() = default;

    /// The configured total. Complexity: O(1).
    [[nodiscard]] std::size_t total_bytes() const noexcept { return m_config.total_bytes; }
    /// The most one window may hold granted.
    [[nodiscard]] std::size_t max_grant_bytes() const noexcept { return m_config.max_grant_bytes; }
    /// Bytes granted now.
    [[nodiscard]] std::size_t granted_bytes() const noexcept { return m_granted.load(std::memory_order_relaxed); }
    /// Bytes that can still be granted.
    [[nodiscard]] std::size_t available_bytes() const noexcept { return m_config.total_bytes - granted_bytes(); }
    /// A copy of the counters (each read atomically).
    [[nodiscard]] window_quota_stats stats() const noexcept {
        window_quota_stats s;
        s.total_bytes = m_config.total_bytes;
        s.granted_bytes = granted_bytes();
        s.peak_granted_bytes = m_peak.load(std::memory_order_relaxed);
        s.grants = m_grants.load(std::memory_order_relaxed);
        s.refusals = m_refusals.load(std::memory_order_relaxed);
        s.returns = m_returns.load(std::memory_order_relaxed);
        return s;
    }

private:
    friend class sliding_window;

    bool try_take(std::size_t bytes) noexcept {
        std::size_t cur = m_granted.load(std::memory_order_relaxed);
        do {
            if (bytes > m_config.total_bytes - cur) {
                m_refusals.fetch_add(1, std::memory_order_relaxed);
                return false;
            }
        } while (!m_granted.compare_exchange_weak(cur, cur + bytes, std::memory_order_relaxed));
        const std::size_t now = cur + bytes;
        std::size_t peak = m_peak.load(std::memory_order_relaxed);
        while (now > peak && !m_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
        }
        m_grants.fetch_add(1, std::memory_order_relaxed);
        return true;
    }
    void refuse() noexcept { m_refusals.fetch_add(1, std::memory_order_relaxed); }
    void give_back(std::size_t bytes) noexcept {
        m_granted.fetch_sub(bytes, std::memory_order_relaxed);
        m_returns.fetch_add(1, std::memory_order_relaxed);
    }

    window_quota_config m_config;
    std::atomic<std::size_t> m_granted{0};
    std::atomic<std::size_t> m_peak{0};
    std::atomic<std::uint64_t> m_grants{0};
    std::atomic<std::uint64_t> m_refusals{0};
    std::atomic<std::uint64_t> m_returns{0};
};

/// The outcome of `sliding_window::grant`.
enum class grant_result : std::uint8_t {
    granted,           ///< The cap was raised.
    quota_exhausted,   ///< The quota has too little left.
    over_window_limit, ///< The window would hold more than `max_grant_bytes` granted.
    other_quota        ///< The window already holds a grant from another quota.
};

/// The result's name ("granted", ...). Thread safety: pure.
[[nodiscard]] constexpr std::string_view to_string(grant_result r) noexcept {
    switch (r) {
    case grant_result::granted:
        return "granted";
    case grant_result::quota_exhausted:
        return "quota_exhausted";
    case grant_result::over_window_limit:
        return "over_window_limit";
    case grant_result::other_quota:
        return "other_quota";
    }
    return "unknown";
}

/// A chunk taken out of a window: the pool buffer itself (no copy) and where its data starts
/// (non-zero only for a chunk whose oldest bytes were dropped or consumed). Move-only; the
/// buffer goes back to its pool when the chunk is destroyed.
struct window_chunk {
    buffer buf;             ///< The chunk's buffer; its size is the end of the data.
    std::size_t offset = 0; ///< Where the data starts in `buf`.

    /// The chunk's data.
    [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
        return buf.span().subspan(std::min(offset, buf.size()));
    }
    /// Bytes of data.
    [[nodiscard]] std::size_t size() const noexcept { return buf.size() > offset ? buf.size() - offset : 0; }
};

/// Which chunks `take_chunks` may hand out.
enum class take_mode : std::uint8_t {
    whole_only,     ///< Only full chunks; the partly filled newest chunk stays.
    include_partial ///< Also the newest chunk, however full (for example at session end).
};

/// Counters and sizes of one window.
struct sliding_window_stats {
    std::size_t size_bytes = 0;     ///< Bytes of data held.
    std::size_t held_bytes = 0;     ///< Memory held: chunks × chunk capacity.
    std::size_t chunks = 0;         ///< Chunks held.
    std::size_t cap_bytes = 0;      ///< The cap now (base + granted).
    std::size_t base_cap_bytes = 0; ///< The configured cap.
    std::size_t granted_bytes = 0;  ///< Extra cap granted from a quota.
    /// Bytes given to `append` (of a call that threw: only those written or dropped), so that
    /// `appended == size + dropped + consumed + taken` always holds.
    std::uint64_t appended_bytes = 0;
    std::uint64_t dropped_bytes = 0;  ///< Bytes dropped by the cap (oldest first).
    std::uint64_t drop_events = 0;    ///< Writes (or grant returns) that dropped bytes.
    std::uint64_t consumed_bytes = 0; ///< Bytes removed by `consume` and `read`.
    std::uint64_t taken_bytes = 0;    ///< Bytes handed out by `take_chunks`.
    std::uint64_t taken_chunks = 0;   ///< Chunks handed out by `take_chunks`.
};

/// What one `sliding_window::append` did: its share of the window's `appended_bytes` and
/// `dropped_bytes` counters.
struct append_result {
    /// Bytes of the write accounted for: written, or dropped as the head of a write larger than
    /// the cap. `data.size()` unless the call threw.
    std::size_t appended_bytes = 0;
    /// Bytes this call dropped under the cap: the oldest bytes held and, for a write larger
    /// than the cap, the write's head. Non-zero exactly when the call counted a drop event.
    std::size_t dropped_bytes = 0;
};

/// A capped, chunked byte window over a `buffer_pool`. See the file comment.
///
/// Thread safety: not thread-safe; one thread at a time (a session's own lock). It may be moved
/// between threads. Its pool, ledger and quota must outlive it.
class sliding_window {
public:
    /// An empty window. Throws `std::invalid_argument` naming a bad field.
    explicit sliding_window(buffer_pool& pool, const sliding_window_config& config = {}, ledger* l = nullptr)
        : m_pool{&pool}, m_ledger{l}, m_chunk_size{config.chunk_size}, m_base_cap{config.cap_bytes},
          m_fraction{config.drop_fraction} {
        constexpr std::string_view cfg = "sliding_window_config";
        if (config.chunk_size == 0 || config.chunk_size > pool.max_pooled_size()) {
            detail::throw_bad_field(cfg, "chunk_size",
                                    "must be > 0 and at most the pool's largest size class (" +
                                        std::to_string(pool.max_pooled_size()) + ")");
        }
        detail::require_field(config.cap_bytes != 0, cfg, "cap_bytes", "must be > 0");
        detail::require_field(config.drop_fraction > 0.0 && config.drop_fraction <= 1.0, cfg, "drop_fraction",
                              "must be in (0, 1]");
        // A whole class per chunk: filling only part of it would hold capacity never used.
        m_chunk_size = pool.size_class(pool.size_class_for(config.chunk_size));
        set_cap(m_base_cap);
    }

    sliding_window(const sliding_window&) = delete;
    sliding_window& operator=(const sliding_window&) = delete;
    /// Takes over `o`'s data, grant, charge and statistics; `o` is left empty, with zero
    /// statistics and its base cap. Complexity: O(1).
    sliding_window(sliding_window&& o) noexcept
        : m_pool{o.m_pool}, m_ledger{o.m_ledger}, m_chunk_size{o.m_chunk_size}, m_base_cap{o.m_base_cap},
          m_fraction{o.m_fraction} {
        steal(o);
    }
    /// Releases this window's chunks and grant, then takes over `o`'s.
    sliding_window& operator=(sliding_window&& o) noexcept {
        if (this != &o) {
            clear();
            (void)return_grant();
            m_pool = o.m_pool;
            m_ledger = o.m_ledger;
            m_chunk_size = o.m_chunk_size;
            m_base_cap = o.m_base_cap;
            m_fraction = o.m_fraction;
            steal(o);
        }
        return *this;
    }
    /// Gives every chunk back to the pool and any grant back to its quota.
    ~sliding_window() {
        clear();
        (void)return_grant();
    }

    /// Appends `data`. If the window would pass its cap, first drops the oldest bytes (see the
    /// file comment). Throws `std::bad_alloc` if a chunk cannot be had (basic guarantee): the
    /// window then holds what it held, minus the oldest bytes dropped to make room, plus a
    /// prefix of `data`, in order; `appended_bytes` counts only that prefix (and any head of
    /// an oversized `data` counted as dropped), so the statistics identity still holds.
    /// Returns the bytes this call dropped (`append_result::dropped_bytes`); ignoring it is
    /// fine, the statistics count them too.
    /// Complexity: O(data.size()) plus O(1) per chunk.
    std::size_t append(std::span<const std::byte> data) {
        const std::uint64_t dropped_before = m_stats.dropped_bytes;
        append_bytes(data);
        return static_cast<std::size_t>(m_stats.dropped_bytes - dropped_before);
    }

    /// As `append(data)`, and sets `out` to what this call did. `out` is exact also when the
    /// call throws `std::bad_alloc`: `out.appended_bytes` is then the prefix written (plus a
    /// dropped head) and `out.dropped_bytes` the oldest bytes already dropped to make room.
    /// Complexity: as `append(data)`.
    void append(std::span<const std::byte> data, append_result& out) {
        struct report {
            const sliding_window_stats& stats;
            append_result& result;
            std::uint64_t appended;
            std::uint64_t dropped;
            ~report() {
                result.appended_bytes = static_cast<std::size_t>(stats.appended_bytes - appended);
                result.dropped_bytes = static_cast<std::size_t>(stats.dropped_bytes - dropped);
            }
        } r{m_stats, out, m_stats.appended_bytes, m_stats.dropped_bytes};
        append_bytes(data);
    }

    /// Copies up to `out.size()` bytes starting `offset` bytes after the oldest into `out`,
    /// without removing them. Returns the bytes copied. Complexity: O(bytes copied + chunks).
    std::size_t peek(std::span<std::byte> out, std::size_t offset = 0) const noexcept {
        std::size_t copied = 0;
        std::size_t skip = offset;
        for (std::size_t i = 0; i < m_count && copied < out.size(); ++i) {
            const std::span<const std::byte> seg = segment(i);
            if (skip >= seg.size()) {
                skip -= seg.size();
                continue;
            }
            const std::size_t k = std::min(seg.size() - skip, out.size() - copied);
            std::memcpy(out.data() + copied, seg.data() + skip, k);
            copied += k;
            skip = 0;
        }
        return copied;
    }

    /// Copies up to `out.size()` of the oldest bytes into `out` and removes them. Returns the
    /// bytes read. Complexity: O(bytes read + chunks).
    std::size_t read(std::span<std::byte> out) noexcept {
        const std::size_t n = peek(out);
        (void)consume(n);
        return n;
    }

    /// Removes up to `n` of the oldest bytes (counted as consumed, not dropped). Returns the
    /// bytes removed. Emptied chunks go back to the pool. Complexity: O(chunks freed).
    std::size_t consume(std::size_t n) noexcept {
        n = std::min(n, m_size);
        m_stats.consumed_bytes += n;
        remove_front(n);
        return n;
    }

    /// Calls `fn(std::span<const std::byte>)` for each contiguous run of data, oldest first:
    /// a zero-copy view of the whole window. `fn` must not modify the window.
    template <class Fn>
    void for_each_segment(Fn&& fn) const {
        for (std::size_t i = 0; i < m_count; ++i) {
            const std::span<const std::byte> seg = segment(i);
            if (!seg.empty()) fn(seg);
        }
    }

    /// Moves up to `out.size()` of the oldest chunks into `out` without copying their bytes
    /// and returns how many. With `take_mode::whole_only` the newest chunk stays unless it is
    /// full. The window's size drops by the bytes taken. `out`'s previous contents are
    /// released. Complexity: O(chunks taken).
    std::size_t take_chunks(std::span<window_chunk> out, take_mode mode = take_mode::whole_only) noexcept {
        std::size_t k = 0;
        while (k < out.size() && m_count > 0) {
            buffer& head = at(0);
            if (m_count == 1 && mode == take_mode::whole_only && head.size() < m_chunk_size) break;
            const std::size_t bytes = head.size() - m_head_offset;
            out[k].offset = m_head_offset;
            out[k].buf = pop_front();
            m_head_offset = 0;
            m_size -= bytes;
            m_stats.taken_bytes += bytes;
            ++m_stats.taken_chunks;
            ++k;
        }
        return k;
    }

    /// Removes all data (counted as consumed) and gives the chunks back to the pool.
    void clear() noexcept { (void)consume(m_size); }

    /// Raises the cap by `extra_bytes` taken from `quota`. A window holds grants from one
    /// quota at a time (they add up). Returns `granted` or why not; never throws.
    /// Complexity: O(1) (one atomic compare-exchange loop on the quota).
    grant_result grant(window_quota& quota, std::size_t extra_bytes) noexcept {
        if (m_quota != nullptr && m_quota != &quota) {
            quota.refuse();
            return grant_result::other_quota;
        }
        if (extra_bytes > quota.max_grant_bytes() - m_granted) {
            quota.refuse();
            return grant_result::over_window_limit;
        }
        if (!quota.try_take(extra_bytes)) return grant_result::quota_exhausted;
        m_quota = &quota;
        m_granted += extra_bytes;
        set_cap(saturating_add(m_base_cap, m_granted));
        return grant_result::granted;
    }

    /// Gives every granted byte back to its quota and returns how many. If the window holds
    /// more than its base cap, the oldest bytes above it are dropped first (one drop event).
    /// Complexity: O(chunks freed).
    std::size_t return_grant() noexcept {
        if (m_quota == nullptr) return 0;
        if (m_size > m_base_cap) {
            const std::size_t n = m_size - m_base_cap;
            m_stats.dropped_bytes += n;
            ++m_stats.drop_events;
            remove_front(n);
        }
        const std::size_t g = m_granted;
        m_quota->give_back(g);
        m_quota = nullptr;
        m_granted = 0;
        set_cap(m_base_cap);
        return g;
    }

    /// Bytes of data held. Complexity: O(1).
    [[nodiscard]] std::size_t size() const noexcept { return m_size; }
    /// True when no data is held.
    [[nodiscard]] bool empty() const noexcept { return m_size == 0; }
    /// The cap now: the configured cap plus any grant.
    [[nodiscard]] std::size_t cap_bytes() const noexcept { return m_cap; }
    /// The configured cap.
    [[nodiscard]] std::size_t base_cap_bytes() const noexcept { return m_base_cap; }
    /// Extra cap granted from a quota.
    [[nodiscard]] std::size_t granted_bytes() const noexcept { return m_granted; }
    /// Bytes the cap drops when a write would pass it: `ceil(cap × drop_fraction)`.
    [[nodiscard]] std::size_t drop_bytes() const noexcept { return m_drop_bytes; }
    /// Bytes per chunk: the configured `chunk_size` rounded up to the pool's class that holds
    /// it (each chunk is filled to this capacity).
    [[nodiscard]] std::size_t chunk_size() const noexcept { return m_chunk_size; }
    /// Chunks held.
    [[nodiscard]] std::size_t chunk_count() const noexcept { return m_count; }
    /// Memory held: chunks × `chunk_size()`; less than `cap_bytes() + 2 × chunk_size()`.
    [[nodiscard]] std::size_t held_bytes() const noexcept { return m_count * m_chunk_size; }
    /// Sizes and counters.
    [[nodiscard]] sliding_window_stats stats() const noexcept {
        sliding_window_stats s = m_stats;
        s.size_bytes = m_size;
        s.held_bytes = held_bytes();
        s.chunks = m_count;
        s.cap_bytes = m_cap;
        s.base_cap_bytes = m_base_cap;
        s.granted_bytes = m_granted;
        return s;
    }

private:
    static std::size_t saturating_add(std::size_t a, std::size_t b) noexcept {
        return b > std::numeric_limits<std::size_t>::max() - a ? std::numeric_limits<std::size_t>::max() : a + b;
    }

    void set_cap(std::size_t cap) noexcept {
        m_cap = cap;
        // Saturated: cap × fraction may round up to 2^64, whose conversion is undefined.
        const double d = std::ceil(static_cast<double>(cap) * m_fraction);
        m_drop_bytes = std::clamp<std::size_t>(detail::saturating_cast<std::size_t>(d), 1, cap);
    }

    buffer& at(std::size_t i) noexcept { return m_ring[(m_head + i) & (m_ring_size - 1)]; }
    const buffer& at(std::size_t i) const noexcept { return m_ring[(m_head + i) & (m_ring_size - 1)]; }

    std::span<const std::byte> segment(std::size_t i) const noexcept {
        const buffer& b = at(i);
        const std::size_t from = i == 0 ? m_head_offset : 0;
        return {b.data() + from, b.size() - from};
    }

    buffer pop_front() noexcept {
        buffer b = std::move(at(0));
        m_head = (m_head + 1) & (m_ring_size - 1);
        --m_count;
        charge(-static_cast<std::int64_t>(m_chunk_size));
        return b;
    }

    void push_back(buffer&& b) {
        if (m_count == m_ring_size) grow();
        at(m_count) = std::move(b);
        ++m_count;
        charge(static_cast<std::int64_t>(m_chunk_size));
    }

    void grow() {
        const std::size_t n = m_ring_size == 0 ? 4 : m_ring_size * 2;
        auto ring = std::make_unique<buffer[]>(n);
        for (std::size_t i = 0; i < m_count; ++i) ring[i] = std::move(at(i));
        m_ring = std::move(ring);
        m_ring_size = n;
        m_head = 0;
    }

    // The write itself (see `append`).
    void append_bytes(std::span<const std::byte> data) {
        // m_size <= m_cap always, so this cannot wrap (m_size + data.size() could).
        if (MEMGOV_UNLIKELY(data.size() > m_cap - m_size)) {
            const std::size_t n = data.size();
            data = make_room(data);
            m_stats.appended_bytes += n - data.size(); // an oversized write's head: dropped
        }
        if (MEMGOV_LIKELY(m_count != 0)) {
            // The common case, a frame that fits in the newest chunk: one copy, no branches
            // on the slow paths.
            buffer& tail = at(m_count - 1);
            const std::size_t used = tail.size();
            if (data.size() <= m_chunk_size - used) {
                if (!data.empty()) std::memcpy(tail.data() + used, data.data(), data.size());
                (void)tail.try_resize(used + data.size());
                m_size += data.size();
                m_stats.appended_bytes += data.size();
                return;
            }
        }
        write(data);
    }

    // Removes the n oldest bytes (n <= m_size); the caller counts them.
    void remove_front(std::size_t n) noexcept {
        m_size -= n;
        while (n > 0) {
            const std::size_t avail = at(0).size() - m_head_offset;
            if (n < avail) {
                m_head_offset += n;
                return;
            }
            n -= avail;
            m_head_offset = 0;
            (void)pop_front(); // the buffer goes back to the pool here
        }
    }

    // Drops the oldest bytes so that `data` fits under the cap; returns the part of `data`
    // to write (its newest m_cap bytes when it is larger than the cap).
    MEMGOV_NOINLINE std::span<const std::byte> make_room(std::span<const std::byte> data) noexcept {
        if (data.size() >= m_cap) {
            // The write alone fills the window: keep only its newest m_cap bytes.
            const std::size_t skip = data.size() - m_cap;
            if (m_size > 0 || skip > 0) {
                m_stats.dropped_bytes += m_size + skip;
                ++m_stats.drop_events;
                remove_front(m_size);
            }
            return data.last(m_cap);
        }
        const std::size_t need = data.size() - (m_cap - m_size); // > 0, and cannot wrap
        const std::size_t n = std::min(std::max(need, m_drop_bytes), m_size);
        m_stats.dropped_bytes += n;
        ++m_stats.drop_events;
        remove_front(n);
        return data;
    }

    // Counts each byte as appended once it is written, so a throw (acquire or grow) leaves
    // the statistics exact.
    MEMGOV_NOINLINE void write(std::span<const std::byte> data) {
        while (!data.empty()) {
            if (m_count == 0 || at(m_count - 1).size() == m_chunk_size) {
                buffer b = m_pool->acquire(m_chunk_size);
                (void)b.try_resize(0);
                push_back(std::move(b));
            }
            buffer& tail = at(m_count - 1);
            const std::size_t used = tail.size();
            const std::size_t k = std::min(m_chunk_size - used, data.size());
            std::memcpy(tail.data() + used, data.data(), k);
            (void)tail.try_resize(used + k);
            m_size += k;
            m_stats.appended_bytes += k;
            data = data.subspan(k);
        }
    }

    void charge(std::int64_t bytes) noexcept {
        if (m_ledger != nullptr) m_ledger->charge(category::windows, bytes);
    }

    void steal(sliding_window& o) noexcept {
        m_ring = std::move(o.m_ring);
        m_ring_size = std::exchange(o.m_ring_size, 0);
        m_head = std::exchange(o.m_head, 0);
        m_count = std::exchange(o.m_count, 0);
        m_head_offset = std::exchange(o.m_head_offset, 0);
        m_size = std::exchange(o.m_size, 0);
        m_cap = o.m_cap;
        m_drop_bytes = o.m_drop_bytes;
        m_quota = std::exchange(o.m_quota, nullptr);
        m_granted = std::exchange(o.m_granted, 0);
        m_stats = std::exchange(o.m_stats, sliding_window_stats{});
        o.set_cap(o.m_base_cap);
    }

    buffer_pool* m_pool;
    ledger* m_ledger;
    std::size_t m_chunk_size; // a size class of the pool: each chunk's capacity, all of it used
    std::size_t m_base_cap;
    double m_fraction;
    std::size_t m_cap = 0;
    std::size_t m_drop_bytes = 0;
    std::unique_ptr<buffer[]> m_ring;
    std::size_t m_ring_size = 0; // a power of two (or 0)
    std::size_t m_head = 0;
    std::size_t m_count = 0;
    std::size_t m_head_offset = 0; // bytes of the head chunk already dropped or consumed
    std::size_t m_size = 0;
    window_quota* m_quota = nullptr;
    std::size_t m_granted = 0;
    sliding_window_stats m_stats{};
};

MEMGOV_NAMESPACE_END
