// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// A size-class buffer pool that never keeps harmful capacity: requests are served from the
/// smallest class that fits, oversize requests are never pooled, idle buffers live in small
/// per-thread caches and byte-capped per-class depots, and `trim` gives idle memory back to the
/// operating system, oldest first. Depot and thread-cache caps shrink as pressure rises.
///
/// ## Model
/// ```
///  acquire(n) ─▶ class = smallest size >= n ─▶ thread cache ─▶ depot ─▶ upstream allocator
///  ~buffer    ─▶ this thread's cache ─(full: oldest half)─▶ depot ─(full)─▶ freed
///  trim(t)    ─▶ frees depot buffers, oldest first across classes, until idle <= t
///  trim(t, k) ─▶ frees at most k depot buffers, largest class first, until idle <= t
/// ```
/// A released buffer always goes to the *releasing* thread's cache, so a release from another
/// thread (an I/O thread acquires, a delivery-report thread releases) costs what a local one
/// costs; caches trade buffers with the depot in batches of half their size.
///
/// ## Thread caches: bounded and flushed
/// Another thread's cache can only be emptied by its owner (anything else would put a locked
/// instruction on every acquire and release). So thread caches are *bounded and flushed*:
/// - per thread and class at most `min(thread_cache_buffers, thread_cache_bytes / class size)`
///   buffers, scaled by the pressure factor (defaults: 8 buffers and 4 MiB per class, so 8, 8,
///   8, 8 and 4 buffers for the default classes: at most 6.66 MiB per thread at `normal`,
///   3.33 MiB at `elevated`, 1.66 MiB at `high`, nothing at `critical`);
/// - `trim` empties the calling thread's cache at once and, if other caches hold anything,
///   raises the pool's epoch; every thread flushes its whole cache to the depot on its next
///   pool operation, where the next `trim` reaches it;
/// - `set_pressure` also raises the epoch, so new (smaller) caps apply on each thread's next
///   operation; at `critical` and above the default factor is 0 and nothing is cached;
/// - a thread that exits gives its cache back to the depots; `flush_thread_cache()` does it on
///   demand (for example from an event loop's idle hook);
/// - `~buffer_pool` frees every cache and depot itself, under the pool's mutex, then marks the
///   pool closed: a thread exiting at that moment either hands its cache back first or finds
///   the pool closed and skips it, so the ledger and upstream are never used afterwards.
///
/// ## Accounting
/// With a ledger, idle buffers (depots and thread caches) are charged to `category::pool_idle`
/// and buffers handed out (pooled or oversize) to `category::pool_in_use`. Bytes that enter or
/// leave the pool (a miss, a free) are charged at once, so the ledger's total is always exact
/// and growth is seen immediately. A thread's moves between its cache and its users only
/// change the split between the two categories; they are summed per thread and charged at
/// every depot visit (and in `ledger_batch_bytes` batches, by default larger than what a
/// thread cache can hold). The pool's own
/// statistics are per-thread counters too, so the hot path touches no shared cache line.

#include <memgov/clock.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/buffer_pool_depot.hpp>
#include <memgov/detail/buffer_pool_thread_cache.hpp>
#include <memgov/detail/instance_id.hpp>
#include <memgov/detail/saturate.hpp>
#include <memgov/detail/size_class_map.hpp>
#include <memgov/detail/thread_claims.hpp>
#include <memgov/detail/validate.hpp>
#include <memgov/ledger.hpp>
#include <memgov/pressure_level.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if MEMGOV_LINUX
#include <sys/mman.h>
#include <unistd.h>
#endif

MEMGOV_NAMESPACE_BEGIN

/// The configuration of a `buffer_pool`. Validated once by the pool's constructor.
struct buffer_pool_config {
    /// Class sizes in bytes, strictly increasing, at most 32, each at most `max_class_size`.
    /// A request is served from the smallest class that holds it; a request larger than the
    /// last class is oversize.
    std::vector<std::size_t> size_classes{4096, 16384, 65536, 262144, 1048576};
    /// Most buffers a thread caches per class (before the pressure factor). 0 disables
    /// thread caches. At most 1024.
    std::size_t thread_cache_buffers = 8;
    /// Most bytes a thread caches per class (before the pressure factor): a class caches
    /// `min(thread_cache_buffers, thread_cache_bytes / class size)` buffers per thread.
    std::size_t thread_cache_bytes = std::size_t{4} << 20;
    /// Most buffers one depot may be sized for: `depot_bytes / size_classes.front()` must not
    /// exceed it. Each depot's ring of 16-byte entries is reserved at construction (its pages
    /// are touched only as buffers arrive), so this bounds that reservation to 64 MiB a class.
    static constexpr std::size_t max_depot_buffers = std::size_t{1} << 22;
    /// The largest class size accepted (4 TiB): above it no allocator serves a class, and class
    /// arithmetic stays far from overflow. Classes are allocated on demand (the constructor
    /// allocates no buffer), so an accepted class need not be one the upstream can serve: a
    /// request in such a class throws `std::bad_alloc` from `acquire` (nothing is charged, the
    /// other classes keep working). Keep the last class at a size you mean to pool.
    static constexpr std::size_t max_class_size = std::size_t{1} << 42;
    /// The largest alignment accepted (2 MiB, a huge page).
    static constexpr std::size_t max_alignment = std::size_t{1} << 21;
    /// Byte cap of each class's shared depot at `pressure_level::normal` with factor 1. Must be
    /// > 0, and `depot_bytes / size_classes.front()` at most `max_depot_buffers` (with the
    /// default classes: at most 16 GiB).
    std::size_t depot_bytes = std::size_t{16} << 20;
    /// Factor applied to depot and thread-cache caps at each pressure level, in [0, 1] and
    /// never increasing with pressure. Defaults: normal 1, elevated 0.5, high 0.25,
    /// critical 0, emergency 0.
    std::array<double, pressure_level_count> pressure_factors{1.0, 0.5, 0.25, 0.0, 0.0};
    /// Alignment of every buffer, a power of two up to `max_alignment` (default: a cache line).
    std::size_t alignment = cache_line_size;
    /// Where buffers come from and go back to; nullptr means `std::pmr::new_delete_resource()`.
    /// Must outlive the pool.
    std::pmr::memory_resource* upstream = nullptr;
    /// When a pooled buffer is freed by `trim` or a cap cut (or because its depot is full while
    /// pressure is above normal), or an oversize buffer is released, first tell the kernel its
    /// whole pages are unused (`madvise(MADV_DONTNEED)`), so resident memory drops at once even
    /// if the upstream allocator keeps the block.
    bool release_pages = true;
    /// A thread's moves of buffers between its cache and its users (idle to in use and back)
    /// are charged to the ledger once they add up to this many bytes, and at every depot visit,
    /// flush, trim and thread exit; 0 charges every move. Bytes entering or leaving the pool
    /// (misses, frees) are charged at once, so the ledger's total is always exact; only its
    /// split between `pool_idle` and `pool_in_use` may lag, by less than
    /// `min(ledger_batch_bytes, thread cache bound)` per thread. The default, 8 MiB, is above
    /// the default thread cache bound (6.66 MiB), so the hot path never calls the ledger.
    std::size_t ledger_batch_bytes = std::size_t{8} << 20;
};

/// Statistics of one size class. Counters are totals since construction; `*_bytes` without
/// `total` are current values. Exact when no other thread uses the pool during the read.
struct buffer_pool_class_stats {
    std::size_t size = 0;                  ///< The class size in bytes (each buffer's capacity).
    std::uint64_t acquisitions = 0;        ///< Buffers handed out (= the three sources below).
    std::uint64_t thread_cache_hits = 0;   ///< ... from the acquiring thread's cache.
    std::uint64_t depot_hits = 0;          ///< ... from the shared depot.
    std::uint64_t misses = 0;              ///< ... newly allocated from upstream.
    std::uint64_t failed_try_acquires = 0; ///< `try_acquire` calls that found nothing idle.
    std::uint64_t local_releases = 0;      ///< Released on the thread that acquired them.
    std::uint64_t remote_releases = 0;     ///< Released on another thread.
    std::uint64_t trimmed_buffers = 0;     ///< Idle buffers freed by `trim` or a cap cut.
    std::uint64_t trimmed_bytes = 0;       ///< Their bytes.
    std::uint64_t overflow_frees = 0;      ///< Released buffers freed because the depot was full.
    std::size_t in_use_bytes = 0;          ///< Capacity of buffers handed out and not returned.
    std::size_t depot_bytes = 0;           ///< Idle bytes in the depot (what `trim` can free now).
    std::size_t thread_cache_bytes = 0;    ///< Idle bytes in all threads' caches.
    std::size_t idle_bytes = 0;            ///< depot_bytes + thread_cache_bytes.
    /// Harmful capacity now: capacity of the buffers out minus the bytes their users asked for.
    std::size_t harmful_bytes = 0;
    /// Harmful capacity handed out since construction (capacity handed out minus bytes asked).
    std::uint64_t harmful_bytes_total = 0;
    std::size_t depot_cap_bytes = 0;  ///< The depot's byte cap at the current pressure.
    std::size_t thread_cache_cap = 0; ///< Buffers each thread may cache at this pressure.
};

/// Statistics of a whole pool.
struct buffer_pool_stats {
    std::vector<buffer_pool_class_stats> classes;     ///< One entry per size class, in size order.
    std::uint64_t oversize_acquisitions = 0;          ///< Requests larger than the largest class.
    std::uint64_t oversize_releases = 0;              ///< Oversize buffers given back (and freed).
    std::size_t oversize_in_use_bytes = 0;            ///< Bytes of oversize buffers out now.
    std::uint64_t trim_calls = 0;                     ///< Calls of `trim`.
    std::uint64_t trimmed_bytes = 0;                  ///< Bytes freed by trims and cap cuts.
    std::size_t in_use_bytes = 0;                     ///< Pooled and oversize bytes out now.
    std::size_t idle_bytes = 0;                       ///< Depots and thread caches.
    std::size_t depot_bytes = 0;                      ///< Depots only (what `trim` can free now).
    std::size_t thread_cache_bytes = 0;               ///< Thread caches only.
    std::size_t harmful_bytes = 0;                    ///< Harmful capacity of the buffers out now.
    std::uint64_t harmful_bytes_total = 0;            ///< Harmful capacity handed out in total.
    std::size_t thread_caches = 0;                    ///< Thread caches owned by live threads.
    pressure_level pressure = pressure_level::normal; ///< The pressure the caps follow.
};

/// What a bounded `buffer_pool::trim(target_idle_bytes, max_buffers)` freed.
struct buffer_pool_trim_result {
    std::size_t bytes = 0;   ///< Bytes given back to the upstream resource.
    std::size_t buffers = 0; ///< Buffers given back (at most the call's `max_buffers`).
};

namespace detail {
class buffer_pool_state;
} // namespace detail

/// A buffer from a `buffer_pool`: `size()` bytes in use out of `capacity()` (its class size;
/// the exact request for an oversize buffer). Destroying it gives it back to its pool.
/// Move-only. A default-constructed or moved-from buffer is empty and holds nothing.
/// A buffer must be given back before its pool is destroyed.
/// Thread safety: one thread at a time; it may be moved to and destroyed on any thread.
class [[nodiscard]] buffer {
public:
    /// An empty buffer.
    buffer() noexcept = default;
    buffer(buffer&& o) noexcept
        : m_pool{std::exchange(o.m_pool, nullptr)}, m_data{std::exchange(o.m_data, nullptr)}, m_size{std::exchange(
                                                                                                  o.m_size, 0)},
          m_capacity{std::exchange(o.m_capacity, 0)}, m_requested{o.m_requested}, m_class{o.m_class}, m_origin{
                                                                                                          o.m_origin} {}
    buffer& operator=(buffer&& o) noexcept {
        if (this != &o) {
            reset();
            m_pool = std::exchange(o.m_pool, nullptr);
            m_data = std::exchange(o.m_data, nullptr);
            m_size = std::exchange(o.m_size, 0);
            m_capacity = std::exchange(o.m_capacity, 0);
            m_requested = o.m_requested;
            m_class = o.m_class;
            m_origin = o.m_origin;
        }
        return *this;
    }
    buffer(const buffer&) = delete;
    buffer& operator=(const buffer&) = delete;
    /// Gives the buffer back to its pool. Complexity: O(1) amortized.
    ~buffer() { reset(); }

    /// The first byte (nullptr when empty).
    [[nodiscard]] std::byte* data() noexcept { return m_data; }
    /// The first byte (nullptr when empty).
    [[nodiscard]] const std::byte* data() const noexcept { return m_data; }
    /// Bytes in use: the request at first, then whatever `resize` set.
    [[nodiscard]] std::size_t size() const noexcept { return m_size; }
    /// Bytes available: the class size (the request itself for oversize buffers).
    [[nodiscard]] std::size_t capacity() const noexcept { return m_capacity; }
    /// The size asked for when the buffer was acquired.
    [[nodiscard]] std::size_t requested() const noexcept { return m_requested; }
    /// True when the buffer holds memory.
    [[nodiscard]] explicit operator bool() const noexcept { return m_pool != nullptr; }
    /// True for a buffer from a size class (false for oversize and empty buffers).
    [[nodiscard]] bool pooled() const noexcept { return m_pool != nullptr && m_class != oversize_class; }
    /// The bytes in use, `[data(), data() + size())`.
    [[nodiscard]] std::span<std::byte> span() noexcept { return {m_data, m_size}; }
    /// The bytes in use, `[data(), data() + size())`.
    [[nodiscard]] std::span<const std::byte> span() const noexcept { return {m_data, m_size}; }
    /// The whole capacity, `[data(), data() + capacity())`.
    [[nodiscard]] std::span<std::byte> storage() noexcept { return {m_data, m_capacity}; }

    /// Sets the size to `n`, which must not exceed the capacity. Throws `std::length_error`
    /// otherwise. Contents up to the smaller size are kept. Complexity: O(1).
    void resize(std::size_t n) {
        if (n > m_capacity) {
            throw std::length_error{"memgov::buffer::resize: " + std::to_string(n) + " bytes exceed the capacity of " +
                                    std::to_string(m_capacity)};
        }
        m_size = n;
    }
    /// Sets the size to `n` if it fits in the capacity; returns whether it did.
    bool try_resize(std::size_t n) noexcept {
        if (n > m_capacity) return false;
        m_size = n;
        return true;
    }
    /// Gives the buffer back now; it is then empty. Complexity: O(1) amortized.
    void reset() noexcept;

private:
    friend class detail::buffer_pool_state;
    static constexpr std::uint32_t oversize_class = 0xffffffffu;

    buffer(detail::buffer_pool_state* pool, std::byte* data, std::size_t n, std::size_t capacity, std::uint32_t cls,
           std::uint32_t origin) noexcept
        : m_pool{pool}, m_data{data}, m_size{n}, m_capacity{capacity}, m_requested{n}, m_class{cls}, m_origin{origin} {}

    detail::buffer_pool_state* m_pool = nullptr;
    std::byte* m_data = nullptr;
    std::size_t m_size = 0;
    std::size_t m_capacity = 0;
    std::size_t m_requested = 0;
    std::uint32_t m_class = 0;
    std::uint32_t m_origin = 0;
};

namespace detail {

// The pool is one (non-template) type so that windows, the governor and users can hold a
// `buffer_pool&` whatever clock it reads; the clock is only read off the hot path (when
// buffers enter a depot), so one indirect call there costs nothing that matters.
struct buffer_pool_clock_base {
    buffer_pool_clock_base() = default;
    buffer_pool_clock_base(const buffer_pool_clock_base&) = delete;
    buffer_pool_clock_base& operator=(const buffer_pool_clock_base&) = delete;
    virtual ~buffer_pool_clock_base() = default;
    [[nodiscard]] virtual time_point now() const noexcept = 0;
};

template <class Clock>
struct buffer_pool_clock final : buffer_pool_clock_base {
    explicit buffer_pool_clock(Clock c) : clock{std::move(c)} {}
    [[nodiscard]] time_point now() const noexcept override { return clock.now(); }
    Clock clock;
};

inline std::size_t buffer_pool_page_size() noexcept {
#if MEMGOV_LINUX
    const long p = ::sysconf(_SC_PAGESIZE);
    if (p > 0 && std::has_single_bit(static_cast<unsigned long>(p))) return static_cast<std::size_t>(p);
#endif
    return 4096;
}

// Tells the kernel the whole pages inside [p, p + n) are unused, so they stop counting as
// resident even if the allocator keeps the block. Safe on memory we still own: it only zeroes
// pages no allocator metadata lives in.
inline void buffer_pool_release_pages(std::byte* p, std::size_t n, std::size_t page) noexcept {
#if MEMGOV_LINUX
    const auto begin = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t first = (begin + page - 1) & ~(static_cast<std::uintptr_t>(page) - 1);
    const std::uintptr_t last = (begin + n) & ~(static_cast<std::uintptr_t>(page) - 1);
    if (last > first) {
        (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
    }
#else
    (void)p;
    (void)n;
    (void)page;
#endif
}

// A thread's claims on pools' caches, retired when the thread exits. Pool calls made by later
// thread-exit destructors take the cacheless path.
struct buffer_pool_claims {
    using owner_type = buffer_pool_state;
    using claim_type = buffer_pool_thread_cache;
    static void on_thread_exit() noexcept { t_buffer_pool_tls = {}; }
    static void give_back(buffer_pool_state& s, buffer_pool_thread_cache* tc) noexcept;
};
using buffer_pool_thread_claims = thread_claims<buffer_pool_claims>;

struct alignas(cache_line_size) buffer_pool_oversize_counters {
    std::atomic<std::uint64_t> acquisitions{0};
    std::atomic<std::uint64_t> releases{0};
    std::atomic<std::int64_t> in_use_bytes{0};
};

/// Everything a pool owns. Shared (through `std::shared_ptr`) only so that a thread exiting
/// while the pool is being destroyed can still reach the mutex and the `closed` flag safely;
/// `close()` (from `~buffer_pool`) frees all memory, so a state that outlives its pool on an
/// exiting thread holds no buffer and uses neither the ledger nor the upstream.
class buffer_pool_state : public std::enable_shared_from_this<buffer_pool_state> {
public:
    static constexpr std::size_t transfer_max = 64;
    static constexpr std::uint32_t oversize_class = 0xffffffffu;

    buffer_pool_state(const buffer_pool_config& cfg, ledger* l, std::unique_ptr<buffer_pool_clock_base> clock)
        : m_id{next_instance_id()}, m_map{cfg.size_classes}, m_fast_class{make_fast_classes(m_map)}, m_ledger{l},
          m_alignment{cfg.alignment}, m_upstream{cfg.upstream != nullptr ? cfg.upstream
                                                                         : std::pmr::new_delete_resource()},
          m_release_pages{cfg.release_pages}, m_page_size{buffer_pool_page_size()},
          m_ledger_batch{l == nullptr ? std::numeric_limits<std::int64_t>::max()
                                      : static_cast<std::int64_t>(
                                            std::min<std::size_t>(cfg.ledger_batch_bytes, std::size_t{1} << 62))},
          m_clock{std::move(clock)}, m_factors{cfg.pressure_factors}, m_depot_bytes{cfg.depot_bytes} {
        const std::size_t n = m_map.count();
        m_depots = std::make_unique<buffer_pool_depot[]>(n);
        m_shared = std::make_unique<buffer_pool_class_counters[]>(n);
        m_tc_cap = std::make_unique<std::atomic<std::uint32_t>[]>(n);
        m_tc_max.resize(n);
        for (std::size_t c = 0; c < n; ++c) {
            const std::size_t size = m_map.size_of(c);
            m_depots[c].init(depot_cap_count(c, m_factors[0]));
            const std::size_t by_bytes = cfg.thread_cache_bytes / size;
            m_tc_max[c] = static_cast<std::uint32_t>(std::min(cfg.thread_cache_buffers, by_bytes));
        }
        apply_caps(pressure_level::normal);
    }

    buffer_pool_state(const buffer_pool_state&) = delete;
    buffer_pool_state& operator=(const buffer_pool_state&) = delete;

    // Touches neither the ledger nor the upstream: it may run on a thread that exits after the
    // pool was destroyed (and after the user destroyed those two). `close()` freed everything.
    ~buffer_pool_state() = default;

    /// Called once by `~buffer_pool`: frees every idle buffer (all thread caches and depots),
    /// gives back their ledger charges and marks the state closed, all under the mutex. A
    /// thread exit that pinned the state before runs `retire` either wholly before this (its
    /// cache is then in the depots, freed here) or after it, as a no-op.
    void close() noexcept {
        std::lock_guard lock{m_mutex};
        // By contract no buffer is out and no thread uses the pool any more.
        MEMGOV_ASSERT(in_use_buffers_locked() == 0, "buffer_pool destroyed while buffers are still out");
        std::array<std::byte*, transfer_max> batch{};
        for (auto& tc : m_caches) {
            flush_ledger(*tc);
            for (std::size_t c = 0; c < m_map.count(); ++c) {
                buffer_pool_cache_class& cc = tc->classes[c];
                const std::uint32_t k = cc.count.load(std::memory_order_relaxed);
                if (k != 0) free_idle(c, cc.items, k, false);
                cc.count.store(0, std::memory_order_relaxed);
            }
        }
        for (std::size_t c = 0; c < m_map.count(); ++c) {
            std::size_t k = 0;
            while ((k = m_depots[c].pop_newest(batch.data(), batch.size())) > 0) {
                free_idle(c, batch.data(), k, false);
            }
        }
        m_closed = true;
    }

    // ---- hot path -------------------------------------------------------------------------

    // The fast paths handle only the common case (this thread's cache is current, has a
    // buffer or room, and no ledger batch is due) and contain no call: everything else is one
    // tail call to the general path. So they need no saved registers and inline cheaply.
    template <bool MayAllocate>
    [[nodiscard]] buffer acquire(std::size_t n) noexcept(!MayAllocate) {
        const std::size_t c = m_fast_class[fast_bucket(n)];
        const buffer_pool_tls_entry& t = t_buffer_pool_tls[0];
        if (MEMGOV_LIKELY(c != no_fast_class && t.id == m_id)) {
            buffer_pool_thread_cache* tc = t.cache;
            buffer_pool_cache_class& cc = tc->classes[c];
            const std::uint32_t k = cc.count.load(std::memory_order_relaxed);
            const std::size_t cap = m_map.size_of(c);
            const std::int64_t pending = tc->ledger_pending + static_cast<std::int64_t>(cap);
            if (MEMGOV_LIKELY(k != 0 && pending < m_ledger_batch &&
                              tc->seen_epoch == m_epoch.load(std::memory_order_relaxed))) {
                std::byte* p = cc.items[k - 1];
                cc.count.store(k - 1, std::memory_order_relaxed);
                cc.counters.cache_hits.add(1);
                cc.counters.harmful_acquired.add(static_cast<std::int64_t>(cap - n));
                tc->ledger_pending = pending;
                return buffer{this, p, n, cap, static_cast<std::uint32_t>(c), tc->index};
            }
        }
        return acquire_general<MayAllocate>(n);
    }

    // A buffer given back by its holder (`buffer::reset`, the memory resource): into this
    // thread's cache while it has room, else the general path.
    void take_back(std::byte* p, std::size_t cap, std::size_t requested, std::uint32_t cls,
                   std::uint32_t origin) noexcept {
        const buffer_pool_tls_entry& t = t_buffer_pool_tls[0];
        if (MEMGOV_LIKELY(cls != oversize_class && t.id == m_id)) {
            buffer_pool_thread_cache* tc = t.cache;
            buffer_pool_cache_class& cc = tc->classes[cls];
            const std::uint32_t k = cc.count.load(std::memory_order_relaxed);
            const std::int64_t pending = tc->ledger_pending - static_cast<std::int64_t>(cap);
            if (MEMGOV_LIKELY(k < cc.cap && pending > -m_ledger_batch &&
                              tc->seen_epoch == m_epoch.load(std::memory_order_relaxed))) {
                cc.items[k] = p;
                cc.count.store(k + 1, std::memory_order_relaxed);
                // A release from another thread costs the same: only the counter differs.
                const bool local = origin == tc->index || origin == buffer_pool_no_origin;
                (local ? cc.counters.local_releases : cc.counters.remote_releases).add(1);
                cc.counters.harmful_released.add(static_cast<std::int64_t>(cap - requested));
                tc->ledger_pending = pending;
                return;
            }
        }
        take_back_general(p, cap, requested, cls, origin);
    }

    // ---- control --------------------------------------------------------------------------

    std::size_t trim(std::size_t target) noexcept {
        std::lock_guard lock{m_mutex};
        begin_trim_locked();
        const std::size_t freed = free_oldest(target);
        end_trim_locked();
        return freed;
    }

    buffer_pool_trim_result trim(std::size_t target, std::size_t max_buffers) noexcept {
        std::lock_guard lock{m_mutex};
        begin_trim_locked();
        const buffer_pool_trim_result r = free_largest(target, max_buffers);
        end_trim_locked();
        return r;
    }

    void set_pressure(pressure_level level) noexcept {
        level = clamp_level(level); // the factor table has one entry per real level
        std::lock_guard lock{m_mutex};
        if (level == m_level.load(std::memory_order_relaxed)) return;
        m_level.store(level, std::memory_order_relaxed);
        apply_caps(level);
        std::array<std::byte*, transfer_max> batch{};
        for (std::size_t c = 0; c < m_map.count(); ++c) {
            std::size_t k = 0;
            while ((k = m_depots[c].pop_excess(batch.data(), batch.size())) > 0) {
                free_idle(c, batch.data(), k, true);
            }
        }
        m_epoch.fetch_add(1, std::memory_order_release);
    }

    [[nodiscard]] pressure_level pressure() const noexcept { return m_level.load(std::memory_order_relaxed); }

    void flush_thread_cache() noexcept {
        if (buffer_pool_thread_cache* tc = local_cache(false)) flush_all(*tc);
    }

    [[nodiscard]] std::size_t idle_bytes() const noexcept {
        std::size_t sum = 0;
        for (std::size_t c = 0; c < m_map.count(); ++c) {
            sum += m_depots[c].count() * m_map.size_of(c);
        }
        return sum;
    }

    [[nodiscard]] std::size_t thread_cache_bytes() const {
        std::lock_guard lock{m_mutex};
        return thread_cache_bytes_locked();
    }

    [[nodiscard]] buffer_pool_stats stats() const {
        buffer_pool_stats s;
        const std::size_t n = m_map.count();
        s.classes.resize(n);
        std::lock_guard lock{m_mutex};
        for (std::size_t c = 0; c < n; ++c) {
            buffer_pool_class_stats& cs = s.classes[c];
            const std::size_t size = m_map.size_of(c);
            cs.size = size;
            std::int64_t cached = 0;
            add_counters(cs, m_shared[c]);
            std::int64_t harmful_acq = m_shared[c].harmful_acquired.get();
            std::int64_t harmful_rel = m_shared[c].harmful_released.get();
            for (const auto& tc : m_caches) {
                const buffer_pool_cache_class& cc = tc->classes[c];
                add_counters(cs, cc.counters);
                harmful_acq += cc.counters.harmful_acquired.get();
                harmful_rel += cc.counters.harmful_released.get();
                cached += cc.count.load(std::memory_order_relaxed);
            }
            cs.acquisitions = cs.thread_cache_hits + cs.depot_hits + cs.misses;
            const std::uint64_t released = cs.local_releases + cs.remote_releases;
            cs.in_use_bytes =
                cs.acquisitions > released ? static_cast<std::size_t>(cs.acquisitions - released) * size : 0;
            cs.trimmed_buffers = m_depots[c].trimmed.load(std::memory_order_relaxed);
            cs.trimmed_bytes = cs.trimmed_buffers * size;
            cs.overflow_frees = m_depots[c].overflow_frees.load(std::memory_order_relaxed);
            cs.depot_bytes = m_depots[c].count() * size;
            cs.thread_cache_bytes = static_cast<std::size_t>(std::max<std::int64_t>(cached, 0)) * size;
            cs.idle_bytes = cs.depot_bytes + cs.thread_cache_bytes;
            cs.harmful_bytes = static_cast<std::size_t>(std::max<std::int64_t>(harmful_acq - harmful_rel, 0));
            cs.harmful_bytes_total = static_cast<std::uint64_t>(std::max<std::int64_t>(harmful_acq, 0));
            cs.depot_cap_bytes = m_depots[c].cap() * size;
            cs.thread_cache_cap = m_tc_cap[c].load(std::memory_order_relaxed);

            s.in_use_bytes += cs.in_use_bytes;
            s.idle_bytes += cs.idle_bytes;
            s.depot_bytes += cs.depot_bytes;
            s.thread_cache_bytes += cs.thread_cache_bytes;
            s.harmful_bytes += cs.harmful_bytes;
            s.harmful_bytes_total += cs.harmful_bytes_total;
            s.trimmed_bytes += cs.trimmed_bytes;
        }
        s.oversize_acquisitions = m_oversize.acquisitions.load(std::memory_order_relaxed);
        s.oversize_releases = m_oversize.releases.load(std::memory_order_relaxed);
        s.oversize_in_use_bytes = static_cast<std::size_t>(
            std::max<std::int64_t>(m_oversize.in_use_bytes.load(std::memory_order_relaxed), 0));
        s.in_use_bytes += s.oversize_in_use_bytes;
        s.trim_calls = m_trim_calls.load(std::memory_order_relaxed);
        for (const auto& tc : m_caches) s.thread_caches += tc->owned ? 1 : 0;
        s.pressure = m_level.load(std::memory_order_relaxed);
        return s;
    }

    [[nodiscard]] const size_class_map& classes() const noexcept { return m_map; }
    [[nodiscard]] std::size_t depot_cap_bytes(std::size_t c) const noexcept {
        return m_depots[c].cap() * m_map.size_of(c);
    }
    [[nodiscard]] std::size_t thread_cache_cap(std::size_t c) const noexcept {
        return m_tc_cap[c].load(std::memory_order_relaxed);
    }

    // ---- memory_resource support ------------------------------------------------------------

    void* allocate_raw(std::size_t bytes, std::size_t align) {
        if (align > m_alignment) return allocate_oversize_raw(bytes, align);
        buffer b = acquire<true>(bytes);
        b.m_pool = nullptr; // ownership moves to the caller of allocate
        return b.m_data;
    }

    void deallocate_raw(void* p, std::size_t bytes, std::size_t align) noexcept {
        if (align > m_alignment) {
            release_oversize(static_cast<std::byte*>(p), bytes, align);
            return;
        }
        const std::size_t c = m_map.index_for(bytes);
        if (c == m_map.count()) {
            release_oversize(static_cast<std::byte*>(p), bytes, m_alignment);
            return;
        }
        take_back(static_cast<std::byte*>(p), m_map.size_of(c), bytes, static_cast<std::uint32_t>(c),
                  buffer_pool_no_origin);
    }

    // ---- thread exit ------------------------------------------------------------------------

    // Runs on an exiting thread that pinned the state. Holds the mutex throughout, so it either
    // completes before `close()` or finds the pool closed (its ledger and upstream may be gone
    // by now) and does nothing: `close()` already freed this cache's buffers.
    void retire(buffer_pool_thread_cache* tc) noexcept {
        std::lock_guard lock{m_mutex};
        if (m_closed) return;
        flush_all(*tc);
        tc->owned = false;
        tc->seen_epoch = 0;
    }

private:
    template <bool MayAllocate>
    MEMGOV_NOINLINE buffer acquire_general(std::size_t n) noexcept(!MayAllocate) {
        const std::size_t c = m_map.index_for(n);
        if (c == m_map.count()) {
            if constexpr (MayAllocate) {
                return acquire_oversize(n);
            } else {
                return buffer{};
            }
        }
        buffer_pool_thread_cache* tc = local_cache(MayAllocate);
        if (tc == nullptr) return acquire_cacheless<MayAllocate>(c, n);
        if (tc->seen_epoch != m_epoch.load(std::memory_order_relaxed)) sync(*tc);
        buffer_pool_cache_class& cc = tc->classes[c];
        const std::uint32_t k = cc.count.load(std::memory_order_relaxed);
        if (k == 0) return refill<MayAllocate>(*tc, c, n);
        std::byte* p = cc.items[k - 1];
        cc.count.store(k - 1, std::memory_order_relaxed);
        const std::size_t cap = m_map.size_of(c);
        cc.counters.cache_hits.add(1);
        cc.counters.harmful_acquired.add(static_cast<std::int64_t>(cap - n));
        tc->ledger_pending += static_cast<std::int64_t>(cap);
        if (tc->ledger_pending >= m_ledger_batch) flush_ledger(*tc);
        return buffer{this, p, n, cap, static_cast<std::uint32_t>(c), tc->index};
    }

    MEMGOV_NOINLINE void take_back_general(std::byte* p, std::size_t cap, std::size_t requested, std::uint32_t cls,
                                           std::uint32_t origin) noexcept {
        if (cls == oversize_class) {
            release_oversize(p, cap, m_alignment);
            return;
        }
        buffer_pool_thread_cache* tc = local_cache(true);
        if (tc == nullptr) {
            take_back_cacheless(p, cap, requested, cls, origin);
            return;
        }
        if (tc->seen_epoch != m_epoch.load(std::memory_order_relaxed)) sync(*tc);
        buffer_pool_cache_class& cc = tc->classes[cls];
        if (origin == tc->index || origin == buffer_pool_no_origin) {
            cc.counters.local_releases.add(1);
        } else {
            cc.counters.remote_releases.add(1);
        }
        cc.counters.harmful_released.add(static_cast<std::int64_t>(cap - requested));
        tc->ledger_pending -= static_cast<std::int64_t>(cap);
        const std::uint32_t k = cc.count.load(std::memory_order_relaxed);
        if (k < cc.cap) {
            cc.items[k] = p;
            cc.count.store(k + 1, std::memory_order_relaxed);
            if (tc->ledger_pending <= -m_ledger_batch) flush_ledger(*tc);
            return;
        }
        spill(*tc, cc, cls, p);
    }

    [[nodiscard]] std::size_t depot_cap_count(std::size_t c, double factor) const noexcept {
        // Never above depot_bytes / size (factor <= 1), which validation bounds.
        const double scaled = static_cast<double>(m_depot_bytes) * factor;
        const std::size_t bytes = std::min(m_depot_bytes, saturating_cast<std::size_t>(scaled));
        return bytes / m_map.size_of(c);
    }

    void apply_caps(pressure_level level) noexcept {
        const double f = m_factors[to_index(level)];
        for (std::size_t c = 0; c < m_map.count(); ++c) {
            m_depots[c].set_cap(depot_cap_count(c, f));
            m_tc_cap[c].store(static_cast<std::uint32_t>(static_cast<double>(m_tc_max[c]) * f),
                              std::memory_order_relaxed);
        }
    }

    // Charges this thread's pending idle <-> in-use moves to the ledger.
    void flush_ledger(buffer_pool_thread_cache& tc) noexcept {
        const std::int64_t d = tc.ledger_pending;
        tc.ledger_pending = 0;
        if (m_ledger != nullptr && d != 0) {
            m_ledger->charge(category::pool_idle, -d);
            m_ledger->charge(category::pool_in_use, d);
        }
    }

    void move_charge(std::size_t cap, bool to_in_use) noexcept {
        if (m_ledger != nullptr) {
            const auto b = static_cast<std::int64_t>(cap);
            m_ledger->charge(category::pool_idle, to_in_use ? -b : b);
            m_ledger->charge(category::pool_in_use, to_in_use ? b : -b);
        }
    }

    void charge(category c, std::int64_t bytes) noexcept {
        if (m_ledger != nullptr) m_ledger->charge(c, bytes);
    }

    [[nodiscard]] time_point now() const noexcept { return m_clock->now(); }

    void free_block(std::byte* p, std::size_t size, std::size_t align, bool release_pages) noexcept {
        if (release_pages) buffer_pool_release_pages(p, size, m_page_size);
        m_upstream->deallocate(p, size, align);
    }

    // Frees idle buffers of class c (they are charged as idle). Trims and cap cuts release the
    // pages at once; so do overflow frees under pressure. At normal pressure an overflow free
    // is churn the upstream allocator will likely reuse soon: no system call for it.
    void free_idle(std::size_t c, std::byte* const* in, std::size_t n, bool trimmed) noexcept {
        const std::size_t size = m_map.size_of(c);
        const bool release_pages =
            m_release_pages && (trimmed || m_level.load(std::memory_order_relaxed) != pressure_level::normal);
        for (std::size_t i = 0; i < n; ++i) free_block(in[i], size, m_alignment, release_pages);
        charge(category::pool_idle, -static_cast<std::int64_t>(n * size));
        if (trimmed) {
            m_depots[c].trimmed.fetch_add(n, std::memory_order_relaxed);
        }
    }

    // Moves idle buffers into the depot; what does not fit under its cap is freed.
    void push_to_depot(std::size_t c, std::byte* const* in, std::size_t n) noexcept {
        if (n == 0) return;
        const std::size_t taken = m_depots[c].push(in, n, now());
        if (taken < n) {
            free_idle(c, in + taken, n - taken, false);
            m_depots[c].overflow_frees.fetch_add(n - taken, std::memory_order_relaxed);
        }
    }

    void flush_all(buffer_pool_thread_cache& tc) noexcept {
        flush_ledger(tc);
        for (std::size_t c = 0; c < m_map.count(); ++c) {
            buffer_pool_cache_class& cc = tc.classes[c];
            const std::uint32_t k = cc.count.load(std::memory_order_relaxed);
            if (k != 0) {
                push_to_depot(c, cc.items, k);
                cc.count.store(0, std::memory_order_relaxed);
            }
        }
    }

    MEMGOV_NOINLINE void sync(buffer_pool_thread_cache& tc) noexcept {
        const std::uint64_t e = m_epoch.load(std::memory_order_acquire);
        flush_all(tc);
        for (std::size_t c = 0; c < m_map.count(); ++c) {
            buffer_pool_cache_class& cc = tc.classes[c];
            cc.cap = std::min(m_tc_cap[c].load(std::memory_order_relaxed), cc.max_count);
            cc.batch = std::max<std::uint32_t>(cc.cap / 2, 1);
        }
        tc.seen_epoch = e;
    }

    template <bool MayAllocate>
    MEMGOV_NOINLINE buffer refill(buffer_pool_thread_cache& tc, std::size_t c, std::size_t n) noexcept(!MayAllocate) {
        buffer_pool_cache_class& cc = tc.classes[c];
        const std::size_t cap = m_map.size_of(c);
        std::byte* p = nullptr;
        std::size_t got = 0;
        if (cc.cap == 0) {
            got = m_depots[c].pop_newest(&p, 1);
        } else {
            // The cache is empty: fill half of it in one depot visit.
            got = m_depots[c].pop_newest(cc.items, cc.batch);
            if (got != 0) {
                p = cc.items[0];
                cc.items[0] = cc.items[got - 1];
                cc.count.store(static_cast<std::uint32_t>(got - 1), std::memory_order_relaxed);
            }
        }
        if (got != 0) {
            cc.counters.depot_hits.add(1);
            tc.ledger_pending += static_cast<std::int64_t>(cap);
        } else if constexpr (MayAllocate) {
            p = static_cast<std::byte*>(m_upstream->allocate(cap, m_alignment));
            cc.counters.misses.add(1);
            charge(category::pool_in_use, static_cast<std::int64_t>(cap));
        } else {
            cc.counters.failed_tries.add(1);
            return buffer{};
        }
        flush_ledger(tc);
        cc.counters.harmful_acquired.add(static_cast<std::int64_t>(cap - n));
        return buffer{this, p, n, cap, static_cast<std::uint32_t>(c), tc.index};
    }

    // The cache is full: move its oldest half to the depot, then keep the new one.
    MEMGOV_NOINLINE void spill(buffer_pool_thread_cache& tc, buffer_pool_cache_class& cc, std::size_t c,
                               std::byte* p) noexcept {
        flush_ledger(tc); // before any buffer leaves: frees are charged as idle
        if (cc.cap == 0) {
            push_to_depot(c, &p, 1);
            return;
        }
        const std::uint32_t k = cc.count.load(std::memory_order_relaxed);
        const std::uint32_t b = std::min(cc.batch, k);
        push_to_depot(c, cc.items, b);
        std::memmove(cc.items, cc.items + b, static_cast<std::size_t>(k - b) * sizeof(std::byte*));
        cc.items[k - b] = p;
        cc.count.store(k - b + 1, std::memory_order_relaxed);
    }

    template <bool MayAllocate>
    buffer acquire_cacheless(std::size_t c, std::size_t n) noexcept(!MayAllocate) {
        buffer_pool_class_counters& ctr = m_shared[c];
        const std::size_t cap = m_map.size_of(c);
        std::byte* p = nullptr;
        if (m_depots[c].pop_newest(&p, 1) == 1) {
            ctr.depot_hits.add_shared(1);
            move_charge(cap, true);
        } else if constexpr (MayAllocate) {
            p = static_cast<std::byte*>(m_upstream->allocate(cap, m_alignment));
            ctr.misses.add_shared(1);
            charge(category::pool_in_use, static_cast<std::int64_t>(cap));
        } else {
            ctr.failed_tries.add_shared(1);
            return buffer{};
        }
        ctr.harmful_acquired.add_shared(static_cast<std::int64_t>(cap - n));
        return buffer{this, p, n, cap, static_cast<std::uint32_t>(c), buffer_pool_no_origin};
    }

    void take_back_cacheless(std::byte* p, std::size_t cap, std::size_t requested, std::uint32_t c,
                             std::uint32_t origin) noexcept {
        buffer_pool_class_counters& ctr = m_shared[c];
        if (origin == buffer_pool_no_origin) {
            ctr.local_releases.add_shared(1);
        } else {
            ctr.remote_releases.add_shared(1);
        }
        ctr.harmful_released.add_shared(static_cast<std::int64_t>(cap - requested));
        move_charge(cap, false);
        push_to_depot(c, &p, 1);
    }

    buffer acquire_oversize(std::size_t n) {
        auto* p = static_cast<std::byte*>(m_upstream->allocate(n, m_alignment));
        note_oversize_acquired(n);
        return buffer{this, p, n, n, oversize_class, buffer_pool_no_origin};
    }

    void* allocate_oversize_raw(std::size_t n, std::size_t align) {
        void* p = m_upstream->allocate(n, align);
        note_oversize_acquired(n);
        return p;
    }

    void note_oversize_acquired(std::size_t n) noexcept {
        m_oversize.acquisitions.fetch_add(1, std::memory_order_relaxed);
        m_oversize.in_use_bytes.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
        charge(category::pool_in_use, static_cast<std::int64_t>(n));
    }

    void release_oversize(std::byte* p, std::size_t n, std::size_t align) noexcept {
        free_block(p, n, align, m_release_pages);
        m_oversize.releases.fetch_add(1, std::memory_order_relaxed);
        m_oversize.in_use_bytes.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
        charge(category::pool_in_use, -static_cast<std::int64_t>(n));
    }

    void begin_trim_locked() noexcept {
        m_trim_calls.fetch_add(1, std::memory_order_relaxed);
        if (buffer_pool_thread_cache* tc = local_cache(false)) flush_all(*tc);
    }

    void end_trim_locked() noexcept {
        // Other threads' caches can only be emptied by their owners: ask them to.
        if (thread_cache_bytes_locked() > 0) m_epoch.fetch_add(1, std::memory_order_release);
    }

    // Frees depot buffers, the largest class first and the oldest first within a class, until
    // the depots hold at most `target` bytes or `max_buffers` were freed. Never frees more than
    // the depots held when it started (other threads may refill them meanwhile).
    buffer_pool_trim_result free_largest(std::size_t target, std::size_t max_buffers) noexcept {
        std::array<std::byte*, transfer_max> batch{};
        const std::size_t start = idle_bytes();
        buffer_pool_trim_result r;
        for (std::size_t c = m_map.count(); c-- > 0;) {
            const std::size_t size = m_map.size_of(c);
            for (;;) {
                const std::size_t idle = idle_bytes();
                if (idle <= target || r.buffers >= max_buffers || r.bytes >= start) return r;
                const std::size_t want =
                    std::min({transfer_max, (idle - target + size - 1) / size, max_buffers - r.buffers});
                const std::size_t k = m_depots[c].pop_oldest(batch.data(), want, time_point::max());
                if (k == 0) break; // this class is empty: the next smaller one
                free_idle(c, batch.data(), k, true);
                r.buffers += k;
                r.bytes += k * size;
            }
        }
        return r;
    }

    // Frees depot buffers, the oldest first across all classes, until the depots hold at most
    // `target` bytes. Never frees more than the depots held when it started.
    std::size_t free_oldest(std::size_t target) noexcept {
        std::array<std::byte*, transfer_max> batch{};
        const std::size_t start = idle_bytes();
        std::size_t freed = 0;
        for (std::size_t rounds = 0; freed < start && rounds < (std::size_t{1} << 20); ++rounds) {
            const std::size_t idle = idle_bytes();
            if (idle <= target) break;
            std::size_t best = m_map.count();
            time_point best_t = time_point::max();
            time_point second_t = time_point::max();
            for (std::size_t c = 0; c < m_map.count(); ++c) {
                time_point t{};
                if (!m_depots[c].oldest(t)) continue;
                // On equal age the larger class goes first: fewer frees for the same bytes.
                if (t <= best_t) {
                    second_t = best_t;
                    best_t = t;
                    best = c;
                } else if (t < second_t) {
                    second_t = t;
                }
            }
            if (best == m_map.count()) break;
            const std::size_t size = m_map.size_of(best);
            const std::size_t want = std::min(transfer_max, (idle - target + size - 1) / size);
            const std::size_t k = m_depots[best].pop_oldest(batch.data(), want, second_t);
            if (k == 0) continue;
            free_idle(best, batch.data(), k, true);
            freed += k * size;
        }
        return freed;
    }

    [[nodiscard]] std::size_t thread_cache_bytes_locked() const noexcept {
        std::size_t sum = 0;
        for (const auto& tc : m_caches) {
            for (std::size_t c = 0; c < m_map.count(); ++c) {
                sum += tc->classes[c].count.load(std::memory_order_relaxed) * m_map.size_of(c);
            }
        }
        return sum;
    }

    [[nodiscard]] std::int64_t in_use_buffers_locked() const noexcept {
        std::int64_t out = 0;
        auto add = [&](const buffer_pool_class_counters& k) {
            out += k.cache_hits.get() + k.depot_hits.get() + k.misses.get() - k.local_releases.get() -
                   k.remote_releases.get();
        };
        for (std::size_t c = 0; c < m_map.count(); ++c) {
            add(m_shared[c]);
            for (const auto& tc : m_caches) add(tc->classes[c].counters);
        }
        return out + static_cast<std::int64_t>(m_oversize.acquisitions.load() - m_oversize.releases.load());
    }

    static void add_counters(buffer_pool_class_stats& cs, const buffer_pool_class_counters& k) {
        auto u = [](std::int64_t v) { return static_cast<std::uint64_t>(std::max<std::int64_t>(v, 0)); };
        cs.thread_cache_hits += u(k.cache_hits.get());
        cs.depot_hits += u(k.depot_hits.get());
        cs.misses += u(k.misses.get());
        cs.failed_try_acquires += u(k.failed_tries.get());
        cs.local_releases += u(k.local_releases.get());
        cs.remote_releases += u(k.remote_releases.get());
    }

    // ---- thread caches ------------------------------------------------------------------------

    buffer_pool_thread_cache* local_cache(bool may_claim) noexcept {
        const auto& t = t_buffer_pool_tls;
        if (MEMGOV_LIKELY(t[0].id == m_id)) return t[0].cache;
        return local_cache_slow(may_claim);
    }

    // The pool used most recently is found first.
    MEMGOV_NOINLINE buffer_pool_thread_cache* local_cache_slow(bool may_claim) noexcept {
        return mru_lookup(t_buffer_pool_tls, m_id,
                          [&]() noexcept {
                              buffer_pool_thread_cache* c = find_or_claim(may_claim);
                              return buffer_pool_tls_entry{c != nullptr ? m_id : 0, c};
                          })
            .cache;
    }

    // This thread's cache for the pool: the one it holds, or (with `may_claim`) a claimed one.
    buffer_pool_thread_cache* find_or_claim(bool may_claim) noexcept {
        if (!may_claim) return buffer_pool_thread_claims::find(m_id);
        return buffer_pool_thread_claims::find_or_claim(m_id, weak_from_this(), [this] { return adopt_cache(); });
    }

    buffer_pool_thread_cache* adopt_cache() {
        std::lock_guard lock{m_mutex};
        if (m_closed) return nullptr; // (a contract breach: no pool use during destruction)
        for (auto& tc : m_caches) {
            if (!tc->owned) {
                tc->owned = true;
                return tc.get();
            }
        }
        if (m_caches.size() >= buffer_pool_no_origin - 1) return nullptr;
        const std::size_t n = m_map.count();
        auto tc = std::make_unique<buffer_pool_thread_cache>();
        std::size_t slots = 0;
        for (std::size_t c = 0; c < n; ++c) slots += m_tc_max[c];
        if (slots > 0) tc->storage = std::make_unique_for_overwrite<std::byte*[]>(slots);
        std::size_t at = 0;
        for (std::size_t c = 0; c < n; ++c) {
            tc->classes[c].items = tc->storage.get() + at;
            tc->classes[c].max_count = m_tc_max[c];
            at += m_tc_max[c];
        }
        tc->index = static_cast<std::uint32_t>(m_caches.size());
        tc->owned = true;
        m_caches.push_back(std::move(tc));
        return m_caches.back().get();
    }

    // The fast path's class lookup: one table load by the request's power-of-two bucket
    // (requests n in (2^(w-1), 2^w] share bucket w; n == 0 falls in bucket 64). A bucket
    // whose requests do not all map to one class (or are oversize) holds no_fast_class and
    // goes to the general path, which uses the size class map. For tables of powers of two
    // (such as the default classes) every bucket up to the largest class is direct.
    static constexpr std::uint8_t no_fast_class = 0xff;
    static std::size_t fast_bucket(std::size_t n) noexcept {
        // `| 1` keeps the argument nonzero, so bit_width needs no zero test.
        return static_cast<std::size_t>(std::bit_width((n - 1) | 1));
    }
    static std::array<std::uint8_t, 65> make_fast_classes(const size_class_map& map) noexcept {
        std::array<std::uint8_t, 65> out{};
        out.fill(no_fast_class);
        for (std::size_t w = 1; w < 64; ++w) {
            const std::size_t lo = w == 1 ? 1 : (std::size_t{1} << (w - 1)) + 1;
            const std::size_t hi = std::size_t{1} << w;
            const std::size_t c = map.index_for(lo);
            if (c < map.count() && map.index_for(hi) == c) out[w] = static_cast<std::uint8_t>(c);
        }
        return out;
    }

    // Read on every acquire and release: kept together, written only at construction.
    const std::uint64_t m_id;
    const size_class_map m_map;
    const std::array<std::uint8_t, 65> m_fast_class; // after m_map: built from it
    ledger* const m_ledger;
    const std::size_t m_alignment;
    std::pmr::memory_resource* const m_upstream;
    const bool m_release_pages;
    const std::size_t m_page_size;
    const std::int64_t m_ledger_batch;
    std::unique_ptr<buffer_pool_clock_base> m_clock;
    const std::array<double, pressure_level_count> m_factors;
    const std::size_t m_depot_bytes;
    std::unique_ptr<buffer_pool_depot[]> m_depots;
    std::unique_ptr<buffer_pool_class_counters[]> m_shared;
    std::unique_ptr<std::atomic<std::uint32_t>[]> m_tc_cap;
    std::vector<std::uint32_t> m_tc_max;
    // Raised by trim and set_pressure; read (relaxed) on every operation, written rarely.
    std::atomic<std::uint64_t> m_epoch{1};
    std::atomic<pressure_level> m_level{pressure_level::normal};

    // Guards the cache list and `m_closed`; serializes trim, set_pressure, thread exit and close.
    mutable std::mutex m_mutex;
    std::vector<std::unique_ptr<buffer_pool_thread_cache>> m_caches;
    bool m_closed = false; // set by close(): exiting threads leave their caches alone
    std::atomic<std::uint64_t> m_trim_calls{0};
    buffer_pool_oversize_counters m_oversize;
};

inline void buffer_pool_claims::give_back(buffer_pool_state& s, buffer_pool_thread_cache* tc) noexcept { s.retire(tc); }

/// The pool seen as a `std::pmr::memory_resource`.
class buffer_pool_memory_resource final : public std::pmr::memory_resource {
public:
    explicit buffer_pool_memory_resource(buffer_pool_state* s) noexcept : m_state{s} {}

private:
    void* do_allocate(std::size_t bytes, std::size_t align) override { return m_state->allocate_raw(bytes, align); }
    void do_deallocate(void* p, std::size_t bytes, std::size_t align) override {
        m_state->deallocate_raw(p, bytes, align);
    }
    [[nodiscard]] bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
    buffer_pool_state* m_state;
};

} // namespace detail

inline void buffer::reset() noexcept {
    if (m_pool != nullptr) {
        m_pool->take_back(m_data, m_capacity, m_requested, m_class, m_origin);
        m_pool = nullptr;
        m_data = nullptr;
        m_size = 0;
        m_capacity = 0;
    }
}

/// A size-class buffer pool with per-thread caches, byte-capped depots, pressure-scaled caps
/// and trim. See the file comment for the model and docs/buffer-pool.md for the guarantees.
///
/// Thread safety: every member function is safe to call concurrently from any thread.
/// Buffers may be released on any thread. The pool must outlive its buffers, and its ledger
/// and upstream resource must outlive it.
class buffer_pool {
public:
    /// Validates `config` and builds an empty pool (nothing is allocated up front but
    /// bookkeeping). `l` (optional) is charged with `pool_idle` and `pool_in_use`. `clock`
    /// stamps the time buffers become idle in a depot; it is read only off the hot path.
    /// Throws `std::invalid_argument` naming the bad field, or `std::bad_alloc`.
    template <clock_type Clock = steady_clock>
    explicit buffer_pool(const buffer_pool_config& config = {}, ledger* l = nullptr, Clock clock = Clock{})
        : m_config{validated(config)}, m_state{std::make_shared<detail::buffer_pool_state>(
                                           m_config, l,
                                           std::make_unique<detail::buffer_pool_clock<Clock>>(std::move(clock)))},
          m_resource{m_state.get()} {}

    buffer_pool(const buffer_pool&) = delete;
    buffer_pool& operator=(const buffer_pool&) = delete;
    buffer_pool(buffer_pool&&) = delete;
    buffer_pool& operator=(buffer_pool&&) = delete;
    /// Frees every idle buffer, in all threads' caches and the depots, and gives back their
    /// ledger charges; after it returns the pool never touches its ledger or upstream again,
    /// even from a thread that was exiting meanwhile (such a thread's hand-back either
    /// completes first or is skipped). All buffers must have been given back (asserted in
    /// debug) and no other thread may be using the pool. Complexity: O(idle buffers + threads).
    ~buffer_pool() { m_state->close(); }

    /// A buffer of size `n` from the smallest class that holds it: from this thread's cache,
    /// else the depot, else newly allocated. A request larger than the largest class is
    /// allocated exactly, never pooled, and freed when given back (`oversize`).
    /// Throws `std::bad_alloc` when the upstream allocator does.
    /// Complexity: O(1); no lock, allocation or system call when this thread's cache has one.
    [[nodiscard]] buffer acquire(std::size_t n) { return m_state->acquire<true>(n); }

    /// Like `acquire`, but never allocates: returns an empty buffer when no idle buffer of the
    /// class is at hand (in this thread's cache or the depot) and for oversize requests.
    /// Complexity: O(1).
    [[nodiscard]] buffer try_acquire(std::size_t n) noexcept { return m_state->acquire<false>(n); }

    /// Frees idle buffers, the oldest first across all classes, until the depots hold at most
    /// `target_idle_bytes`, and returns the bytes freed. The calling thread's cache is emptied
    /// into the depots first; other threads' caches are asked to flush on their next pool
    /// operation (see the file comment). Freed buffers' pages are released to the kernel.
    /// Complexity: O(buffers freed + classes × threads).
    std::size_t trim(std::size_t target_idle_bytes = 0) noexcept { return m_state->trim(target_idle_bytes); }

    /// A trim with bounded work: frees idle depot buffers, the largest class first (the oldest
    /// first within a class), until the depots hold at most `target_idle_bytes` or
    /// `max_buffers` buffers were freed, and returns the bytes and buffers freed. Largest first
    /// because the bound counts buffers: each unit of work frees as many bytes as it can. It
    /// may go below the target by less than one buffer of the last class it freed from; with
    /// `max_buffers == 0` it frees nothing. The calling thread's cache is emptied into the
    /// depots first and other threads' caches are asked to flush, as by `trim(target)`; freed
    /// buffers' pages are released to the kernel (`release_pages`).
    /// Complexity: O(buffers freed + classes × threads); at most `max_buffers` upstream frees.
    buffer_pool_trim_result trim(std::size_t target_idle_bytes, std::size_t max_buffers) noexcept {
        return m_state->trim(target_idle_bytes, max_buffers);
    }

    /// Applies the caps of `level`: each depot's cap becomes `depot_bytes × factor` (the
    /// excess is freed at once, oldest first) and each thread cache's cap becomes its maximum
    /// × factor (applied by each thread on its next operation). Calling it with the current
    /// level does nothing; a level past `emergency` is taken as `emergency`.
    /// Unlike the budgeted `trim(target, max_buffers)`, a rise frees *every* depot buffer above
    /// the new caps in this one call, without a budget: the depot must hold no more than its cap,
    /// or releases would grow it again. That is acceptable because the work is bounded by the
    /// depots' caps at the previous level (at most `depot_bytes` per class: with the defaults
    /// 16 MiB a class, 5,456 buffers in all from `normal` to `critical`), happens once per
    /// level change (the monitor's dwell spaces changes out), and each free is the upstream's
    /// deallocation (plus one `madvise` with `release_pages`).
    /// Complexity: O(buffers freed + classes).
    void set_pressure(pressure_level level) noexcept { m_state->set_pressure(level); }

    /// The pressure level the caps follow now.
    [[nodiscard]] pressure_level pressure() const noexcept { return m_state->pressure(); }

    /// Bytes held idle in the depots: exactly what `trim(0)` would free now if no other
    /// thread moved buffers meanwhile. Complexity: O(classes), relaxed loads only.
    [[nodiscard]] std::size_t idle_bytes() const noexcept { return m_state->idle_bytes(); }

    /// Bytes held idle in all threads' caches (bounded, see the file comment).
    /// Complexity: O(threads × classes); takes the pool's mutex.
    [[nodiscard]] std::size_t thread_cache_bytes() const { return m_state->thread_cache_bytes(); }

    /// Moves the calling thread's cached buffers to the depots (where `trim` reaches them).
    void flush_thread_cache() noexcept { m_state->flush_thread_cache(); }

    /// Per-class and total statistics. Allocates; not for the hot path.
    /// Complexity: O(threads × classes).
    [[nodiscard]] buffer_pool_stats stats() const { return m_state->stats(); }

    /// Number of size classes.
    [[nodiscard]] std::size_t size_class_count() const noexcept { return m_state->classes().count(); }
    /// The size of class `i` (precondition: `i < size_class_count()`).
    [[nodiscard]] std::size_t size_class(std::size_t i) const noexcept { return m_state->classes().size_of(i); }
    /// The class a request of `n` bytes is served from, or `size_class_count()` if oversize.
    [[nodiscard]] std::size_t size_class_for(std::size_t n) const noexcept { return m_state->classes().index_for(n); }
    /// The largest class size: larger requests are oversize.
    [[nodiscard]] std::size_t max_pooled_size() const noexcept { return m_state->classes().largest(); }
    /// The depot byte cap of class `i` at the current pressure.
    [[nodiscard]] std::size_t depot_cap_bytes(std::size_t i) const noexcept { return m_state->depot_cap_bytes(i); }
    /// Buffers of class `i` each thread may cache at the current pressure.
    [[nodiscard]] std::size_t thread_cache_cap(std::size_t i) const noexcept { return m_state->thread_cache_cap(i); }
    /// The most idle bytes one thread can hold in its cache at the current pressure.
    [[nodiscard]] std::size_t thread_cache_bound_bytes() const noexcept {
        std::size_t sum = 0;
        for (std::size_t i = 0; i < size_class_count(); ++i) sum += thread_cache_cap(i) * size_class(i);
        return sum;
    }

    /// The pool as a `std::pmr::memory_resource`: allocations of at most the largest class (and
    /// alignment at most the pool's) come from the pool; others go to the upstream resource
    /// and count as oversize. Equal only to itself.
    [[nodiscard]] std::pmr::memory_resource& resource() noexcept { return m_resource; }

    /// The configuration the pool was built with.
    [[nodiscard]] const buffer_pool_config& config() const noexcept { return m_config; }

private:
    static const buffer_pool_config& validated(const buffer_pool_config& c) {
        constexpr std::string_view cfg = "buffer_pool_config";
        using detail::require_field;
        require_field(!c.size_classes.empty(), cfg, "size_classes", "must not be empty");
        if (c.size_classes.size() > detail::size_class_max_count) {
            detail::throw_bad_field(cfg, "size_classes",
                                    "at most " + std::to_string(detail::size_class_max_count) + " classes");
        }
        require_field(c.size_classes.front() != 0, cfg, "size_classes", "sizes must be > 0");
        // Above this no allocator can serve a class, and class arithmetic must not overflow.
        require_field(c.size_classes.back() <= buffer_pool_config::max_class_size, cfg, "size_classes",
                      "sizes must be at most 2^42 (4 TiB)");
        for (std::size_t i = 1; i < c.size_classes.size(); ++i) {
            require_field(c.size_classes[i] > c.size_classes[i - 1], cfg, "size_classes",
                          "must be strictly increasing");
        }
        require_field(c.thread_cache_buffers <= 1024, cfg, "thread_cache_buffers", "must be <= 1024");
        require_field(c.depot_bytes != 0, cfg, "depot_bytes", "must be > 0");
        if (const std::size_t n = c.depot_bytes / c.size_classes.front(); n > buffer_pool_config::max_depot_buffers) {
            // Each depot's ring is reserved up front: refuse rather than reserve gigabytes.
            detail::throw_bad_field(cfg, "depot_bytes",
                                    "would size the depot of the " + std::to_string(c.size_classes.front()) +
                                        "-byte class for " + std::to_string(n) +
                                        " buffers; at most max_depot_buffers (" +
                                        std::to_string(buffer_pool_config::max_depot_buffers) + ") per depot");
        }
        for (std::size_t i = 0; i < c.pressure_factors.size(); ++i) {
            const double f = c.pressure_factors[i];
            require_field(f >= 0.0 && f <= 1.0, cfg, "pressure_factors", "each must be in [0, 1]");
            require_field(i == 0 || f <= c.pressure_factors[i - 1], cfg, "pressure_factors",
                          "must not increase with pressure");
        }
        require_field(c.alignment != 0 && std::has_single_bit(c.alignment) &&
                          c.alignment <= buffer_pool_config::max_alignment,
                      cfg, "alignment", "must be a power of two, at most 2 MiB (a huge page)");
        return c;
    }

    buffer_pool_config m_config;
    std::shared_ptr<detail::buffer_pool_state> m_state;
    detail::buffer_pool_memory_resource m_resource;
};

MEMGOV_NAMESPACE_END
