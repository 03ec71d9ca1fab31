// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// `object_pool<T>`: reuses objects of one type, resets every released object, ages idle
/// objects through three tiers, and catches use of an object after its release through
/// generation-stamped handles. See docs/object-pool.md for the model.
///
/// ## Design in brief
/// - Objects live in *slots* inside blocks that never move or get freed while the pool lives
///   (block k holds `block_objects << (k - 1)` slots, block 0 holds `block_objects`). A slot has
///   a 32-bit generation, bumped on every release.
/// - `acquire()` returns a move-only `lease`. `lease::handle()` gives a copyable
///   `object_handle{index, generation}`; `get(handle)` compares generations and returns
///   `nullptr` once the object's release happened before the call, even after the slot has
///   been reused (a release racing with the call is not seen; see `get`).
/// - Released objects are reset, then cached LIFO in the releasing thread's cache (a small
///   stack its owner uses with plain loads and stores, no locked instruction); a full cache
///   spills its older half into a shared depot with one list per age tier. `trim()` and
///   `stats()` reach every thread's cache by visiting it: Dekker's pattern with an asymmetric
///   fence, whose costly half (one `membarrier` system call per trim or stats) they pay.
/// - Idle objects sit in a tier (young, mid, old). Reuse promotes, idleness demotes and finally
///   frees; pressure divides every lifetime, and at `emergency` everything but a reserve goes.
///
/// Lock order: the pool's mutex → visiting a thread cache. No callback of the user's runs
/// under either (`T`'s constructor, reset and destructor all run outside them).

#include <memgov/clock.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/object_pool_core.hpp>
#include <memgov/detail/validate.hpp>
#include <memgov/ledger.hpp>
#include <memgov/pressure_level.hpp>

#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

MEMGOV_NAMESPACE_BEGIN

/// A type whose objects can be made reusable in place: `reset()` returns the object to its
/// freshly constructed state (as far as any user can observe) and must not throw. Keeping
/// inner capacity (`clear()` rather than `shrink_to_fit()`) is the point of pooling.
template <class T>
concept resettable = requires(T& t) {
    { t.reset() }
    noexcept;
};

/// A type that reports the heap capacity it keeps alive beyond `sizeof(T)` (string and vector
/// capacities, for example). The pool charges it to the ledger and enforces
/// `object_pool_config::max_retained_bytes` with it.
template <class T>
concept reports_retained_bytes = requires(const T& t) {
    { t.retained_bytes() }
    noexcept->std::convertible_to<std::size_t>;
};

/// The default reset policy of `object_pool`: calls `t.reset()`.
/// A custom policy is any type with `void operator()(T&) noexcept`; it may also provide
/// `std::size_t retained_bytes(const T&) const noexcept`, which then takes precedence over
/// `T::retained_bytes()`.
struct member_reset {
    /// Calls `t.reset()`. Thread safety: stateless. Complexity: that of `T::reset`.
    template <resettable T>
    void operator()(T& t) const noexcept {
        t.reset();
    }
};

/// What `object_pool::get` does with a stale handle. In every case the stale use is counted in
/// `object_pool_stats::stale_handles` (unless the process aborts first).
enum class stale_handle_policy : std::uint8_t {
    /// Abort with a message in builds with assertions (`!NDEBUG` or `MEMGOV_ENABLE_ASSERTS`),
    /// return `nullptr` in release builds. The default.
    debug_assert = 0,
    /// Always return `nullptr`, never abort. For tests and for code that checks handles on
    /// purpose.
    count = 1,
    /// Always abort with a message, also in release builds.
    abort = 2
};

/// A copyable reference to a leased object: its slot's index and the slot's generation when
/// the handle was made. A default-constructed handle is *null*.
struct object_handle {
    /// The index of the null handle.
    static constexpr std::uint32_t null_index = 0xFFFF'FFFFu;
    std::uint32_t index = null_index; ///< Slot index inside the pool.
    std::uint32_t generation = 0;     ///< The slot's generation when the handle was made.

    /// True unless null. Says nothing about staleness; ask the pool.
    [[nodiscard]] constexpr explicit operator bool() const noexcept { return index != null_index; }
    /// Handles are equal when index and generation are.
    friend constexpr bool operator==(const object_handle&, const object_handle&) noexcept = default;
};

/// Configuration of an `object_pool`. Validated by the constructor; a bad field throws
/// `std::invalid_argument` naming it.
struct object_pool_config {
    /// Slots in the first block; each further block doubles the pool's slot count.
    /// Must be a power of two.
    std::size_t block_objects = 64;
    /// Most slots the pool will ever make (live + idle + retired). `acquire()` past it throws
    /// `std::length_error`. Must be > 0 and < 2^32 - 1.
    std::size_t max_objects = std::size_t{1} << 24;
    /// Idle objects each thread's cache holds (0: no thread caches, every release goes to the
    /// shared depot). Must be ≤ 65536.
    std::size_t thread_cache_objects = 32;
    /// An object whose retained capacity (`retained_bytes()`) exceeds this after `reset()` is
    /// destroyed on release instead of pooled, so one huge object does not stay pooled.
    std::size_t max_retained_bytes = 64 * 1024;
    /// Idle lifetime in the young tier (where new objects start). Must be > 0.
    duration young_lifetime = std::chrono::seconds{5};
    /// Idle lifetime in the mid tier. Must be ≥ `young_lifetime`.
    duration mid_lifetime = std::chrono::seconds{120};
    /// Idle lifetime in the old tier. Must be ≥ `mid_lifetime`.
    duration old_lifetime = std::chrono::seconds{3600};
    /// Reuses within one tier that promote an object to the next tier (checked at release).
    /// Must be > 0.
    std::uint32_t reuses_to_promote = 8;
    /// Every lifetime is divided by the entry for the current pressure level (normal, elevated,
    /// high, critical, emergency). Entries must be ≥ 1 and non-decreasing.
    std::array<std::uint32_t, pressure_level_count> lifetime_divisor{1, 2, 8, 32, 32};
    /// Idle objects a trim at `pressure_level::emergency` keeps (all others are freed).
    std::size_t emergency_reserve = 8;
    /// The last generation a slot may carry; a slot released at this generation is retired
    /// (never reused). Must be ≥ 1 and ≤ 2^32 - 2. Lower it only to test retirement.
    std::uint32_t generation_limit = 0xFFFF'FFFEu;
    /// What `get()` does with a stale handle.
    stale_handle_policy on_stale_handle = stale_handle_policy::debug_assert;
    /// The ledger category charged (with a ledger given to the constructor): the pool's own
    /// storage (shared state, slot blocks, thread caches) and the heap its objects retain.
    category ledger_category = category::objects;
};

/// Counters and gauges of an `object_pool`, read by `object_pool::stats()`.
struct object_pool_stats {
    std::uint64_t acquisitions = 0;  ///< Objects handed out.
    std::uint64_t reuses = 0;        ///< ... of which were idle objects reused.
    std::uint64_t constructions = 0; ///< ... of which were constructed.
    std::uint64_t destructions = 0;  ///< Objects destroyed (trimmed, oversize or retired).
    /// Objects freed by trim, by the tier they were in (young, mid, old).
    std::array<std::uint64_t, 3> trimmed{};
    /// Bytes (sizeof(T) + retained) of the objects trim destroyed. Only the retained part
    /// goes back to the heap (and leaves the ledger); the slots stay in the pool's blocks.
    std::uint64_t trimmed_bytes = 0;
    std::uint64_t trim_calls = 0;              ///< Calls to trim.
    std::array<std::uint64_t, 2> promotions{}; ///< young→mid, mid→old.
    std::array<std::uint64_t, 2> demotions{};  ///< mid→young, old→mid.
    std::uint64_t oversize_drops = 0;          ///< Released objects destroyed for `max_retained_bytes`.
    std::uint64_t stale_handles = 0;           ///< Stale handles passed to `get()`.
    std::uint64_t retired_slots = 0;           ///< Slots retired because their generation ran out.
    std::size_t leased_objects = 0;            ///< Objects currently leased.
    std::size_t idle_objects = 0;              ///< Idle objects (thread caches and depot).
    std::array<std::size_t, 3> idle_by_tier{}; ///< Idle objects per tier.
    /// Bytes held by constructed objects: `sizeof(T)` + retained bytes each, leased or idle.
    /// The `sizeof(T)` part lies in the slot blocks (`slot_bytes`), the retained part is the
    /// objects' own heap.
    std::size_t retained_bytes = 0;
    std::size_t idle_bytes = 0; ///< The idle part of `retained_bytes`.
    std::size_t slots = 0;      ///< Slots made so far.
    std::size_t slot_bytes = 0; ///< Memory of the slot blocks (kept for the pool's life).
    /// The pool's own heap: its shared state, the slot blocks (`slot_bytes`: every slot's
    /// header and object storage, in use or not) and the thread caches. Kept until the pool
    /// is destroyed.
    std::size_t storage_bytes = 0;
    /// What the ledger is charged: `storage_bytes` plus the heap the objects retain beyond
    /// their slots (`retained_bytes` less `sizeof(T)` per object, leased or idle).
    std::size_t charged_bytes = 0;

    /// `reuses / acquisitions`, 0 before the first acquisition.
    [[nodiscard]] double reuse_rate() const noexcept {
        return acquisitions == 0 ? 0.0 : static_cast<double>(reuses) / static_cast<double>(acquisitions);
    }
};

/// What a trim freed.
struct object_pool_trim_result {
    std::size_t objects = 0; ///< Objects destroyed.
    /// Bytes they held (`sizeof(T)` + retained). The retained part is freed and uncharged;
    /// the `sizeof(T)` part is slot storage, kept (and charged) for reuse while the pool lives.
    std::size_t bytes = 0;
    /// The retained part of `bytes`: what went back to the allocator (and left the ledger).
    /// This is what a trim frees; reclaimers report it.
    std::size_t freed_bytes = 0;
};

namespace detail {
template <class Reset, class T>
concept reset_reports_retained = requires(const Reset& r, const T& t) {
    { r.retained_bytes(t) }
    noexcept->std::convertible_to<std::size_t>;
};
} // namespace detail

/// A pool of reusable `T` objects with reset on release, age tiers and stale-handle detection.
///
/// `T` must be default-constructible and nothrow-destructible; `Reset` is called with every
/// released object before anyone can get it again (default: `T::reset()`).
///
/// Thread safety: `acquire`, `try_acquire`, releasing leases, `get`, `is_live`, `trim`,
/// `set_pressure`, `idle_bytes` and `stats` may be called from any threads concurrently. A
/// lease may be released on another thread than the one that acquired it. The pool must
/// outlive its leases, and must not be destroyed while other threads use it.
template <class T, clock_type Clock = steady_clock, class Reset = member_reset>
requires std::default_initializable<T> && std::is_nothrow_destructible_v<T> && std::is_nothrow_invocable_v<Reset&, T&>
class object_pool {
    struct slot : detail::object_slot_header {
        // Set when the slot is made; a lease is then one pointer (two would be copied as one
        // 16-byte vector on a move, which stalls store forwarding on the caller's next use).
        object_pool* pool = nullptr;
        alignas(T) std::byte storage[sizeof(T)];
        T* object() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
    };
    static_assert(std::is_trivially_destructible_v<slot>);
    static constexpr std::size_t max_blocks = 33;

public:
    /// The handle type (`memgov::object_handle`).
    using handle = object_handle;
    /// The pooled type.
    using value_type = T;

    /// A move-only, RAII lease on one pooled object. Destroying it (or `reset()`) resets the
    /// object and returns it to the pool. An empty lease holds nothing.
    /// Thread safety: a lease is used by one thread at a time; it may be moved to and released
    /// on another thread.
    class [[nodiscard]] lease {
    public:
        /// An empty lease.
        lease() noexcept = default;
        /// Takes `o`'s object; `o` becomes empty.
        lease(lease&& o) noexcept : m_slot{std::exchange(o.m_slot, nullptr)} {}
        /// Releases the held object, then takes `o`'s.
        [[gnu::always_inline]] lease& operator=(lease&& o) noexcept {
            if (this != &o) {
                reset();
                m_slot = std::exchange(o.m_slot, nullptr);
            }
            return *this;
        }
        lease(const lease&) = delete;
        lease& operator=(const lease&) = delete;
        /// Releases the held object. Complexity: O(1) amortized, plus `Reset`.
        [[gnu::always_inline]] ~lease() { reset(); }

        /// Resets the object and returns it to the pool now; the lease becomes empty.
        /// Handles made from this lease become stale. Thread safety: see the class.
        /// Complexity: O(1) amortized, plus `Reset`. Never throws.
        [[gnu::always_inline]] void reset() noexcept {
            if (m_slot != nullptr) {
                m_slot->pool->release_slot(m_slot);
                m_slot = nullptr;
            }
        }

        /// The object (the lease must not be empty).
        [[nodiscard]] T& operator*() const noexcept { return *m_slot->object(); }
        /// The object (the lease must not be empty).
        [[nodiscard]] T* operator->() const noexcept { return m_slot->object(); }
        /// The object, or nullptr for an empty lease.
        [[nodiscard]] T* get() const noexcept { return m_slot != nullptr ? m_slot->object() : nullptr; }
        /// True unless empty.
        [[nodiscard]] explicit operator bool() const noexcept { return m_slot != nullptr; }

        /// A copyable handle to the object; `pool.get(handle)` returns the object until this
        /// lease releases it, and `nullptr` (a stale handle) afterwards. Null for an empty lease.
        [[nodiscard]] object_handle handle() const noexcept {
            if (m_slot == nullptr) return {};
            return {m_slot->index, m_slot->generation.load(std::memory_order_relaxed)};
        }

    private:
        friend class object_pool;
        explicit lease(slot* s) noexcept : m_slot{s} {}
        slot* m_slot = nullptr;
    };

    /// A pool with `cfg`, charging `ledger` (if not null; it must outlive the pool), reading
    /// time from `clock` and resetting released objects with `reset`. Allocates no slots yet.
    /// Throws `std::invalid_argument` naming the bad field of `cfg`, or `std::bad_alloc`.
    explicit object_pool(object_pool_config cfg = {}, ledger* ledger = nullptr, Clock clock = Clock{},
                         Reset reset = Reset{})
        : m_clock{std::move(clock)}, m_reset{std::move(reset)} {
        validate(cfg, ledger);
        m_cfg = cfg;
        m_generation_limit = cfg.generation_limit;
        m_block_shift = static_cast<unsigned>(std::countr_zero(cfg.block_objects));
        // The core and its control block are two allocations of known size (the counting
        // allocator reports the block's), charged below; the core goes with the pool, only the
        // small block stays while exiting threads still hold weak references to it.
        std::size_t control_block = 0;
        m_core_owner = std::shared_ptr<detail::object_pool_core>(
            new detail::object_pool_core{}, std::default_delete<detail::object_pool_core>{},
            detail::object_pool_counting_allocator<detail::object_pool_core>{&control_block});
        m_core = m_core_owner.get();
        m_core->cache_capacity = static_cast<std::uint32_t>(cfg.thread_cache_objects);
        m_core->reuses_to_promote = cfg.reuses_to_promote;
        m_core->object_size = sizeof(T);
        m_core->ledger_ptr = ledger;
        m_core->ledger_category = cfg.ledger_category;
        m_core->lifetime = {cfg.young_lifetime, cfg.mid_lifetime, cfg.old_lifetime};
        m_core->lifetime_divisor = cfg.lifetime_divisor;
        m_core->emergency_reserve = cfg.emergency_reserve;
        m_core->add_storage(sizeof(detail::object_pool_core) + control_block);
    }

    object_pool(const object_pool&) = delete;
    object_pool& operator=(const object_pool&) = delete;

    /// Destroys every pooled object and uncharges the ledger. All leases must be gone
    /// (asserted in debug builds).
    ~object_pool() {
        {
            std::lock_guard lock{m_core->mutex};
            m_core->closed = true; // exiting threads leave their caches alone from now on
        }
        const std::size_t n = m_slot_count.load(std::memory_order_acquire);
        // Everything the pool charged: its own storage and what its objects retain.
        auto bytes = static_cast<std::int64_t>(m_core->storage_bytes.load(std::memory_order_relaxed));
        for (std::size_t i = 0; i < n; ++i) {
            slot* s = slot_at(static_cast<std::uint32_t>(i));
            MEMGOV_ASSERT(s->state != detail::object_slot_state::leased,
                          "object_pool destroyed while an object is leased");
            if (s->state == detail::object_slot_state::idle || s->state == detail::object_slot_state::leased) {
                bytes += static_cast<std::int64_t>(s->charged);
                s->object()->~T();
            }
        }
        m_core->charge(-bytes);
        for (std::size_t b = 0; b < max_blocks; ++b) {
            if (slot* blk = m_blocks[b].load(std::memory_order_relaxed)) {
                // Unsized: sized deallocation is off by default in some compilers (clang < 19).
                ::operator delete (static_cast<void*>(blk), std::align_val_t{alignof(slot)});
            }
        }
    }

    /// An object: an idle one if any (the calling thread's cache first, then the depot,
    /// oldest tier first), else a newly constructed `T()`.
    /// Thread safety: any thread. Complexity: O(1) amortized; no lock, no locked instruction
    /// (where `membarrier` is available), no allocation and no system call when an idle object
    /// is reused from the thread's cache.
    /// Throws: whatever `T()` throws, `std::bad_alloc` if a new block cannot be allocated,
    /// `std::length_error` once `max_objects` slots exist and none is free.
    [[nodiscard, gnu::always_inline]] lease acquire() {
        if (detail::object_pool_cache* c = m_core->local_cache(); MEMGOV_LIKELY(c != nullptr)) {
            if (auto* s = m_core->template cache_pop<tracks_retained>(c); MEMGOV_LIKELY(s != nullptr)) {
                return lease{static_cast<slot*>(s)};
            }
            return acquire_slow(c);
        }
        return acquire_slow(nullptr);
    }

    /// An idle object if one is available, else an empty lease. Never constructs.
    /// Thread safety: any thread. Complexity: O(1) amortized. Never throws; allocates only on
    /// the calling thread's first use of the pool (its thread cache; if that fails, the lease
    /// comes from the shared free list or is empty).
    [[nodiscard]] lease try_acquire() noexcept {
        detail::object_pool_cache* c = m_core->local_cache();
        if (c != nullptr) {
            if (auto* s = m_core->template cache_pop<tracks_retained>(c)) return lease{static_cast<slot*>(s)};
        }
        if (auto* s = m_core->depot_take(c)) return lease{static_cast<slot*>(s)};
        return lease{};
    }

    /// The object `h` refers to, or `nullptr` if it was released since `h` was made (also when
    /// its slot has been reused or retired since). A null handle gives `nullptr` quietly; a
    /// detected stale handle is counted in `stats().stale_handles` and handled as
    /// `object_pool_config::on_stale_handle` says (by default: abort in debug builds).
    /// The pointer stays valid while the lease that `h` came from lives.
    /// Detected as stale: every handle whose lease's release happened before this call (also
    /// after its slot was reused or retired), and any index this pool never issued. Not
    /// detected: a release racing with this call, and a handle of another pool that matches a
    /// live slot here (see docs/object-pool.md, "Handles").
    /// Thread safety: any thread; the check is three acquire loads (slot count, the slot's
    /// block, the slot's generation) and two compares, no lock. Complexity: O(1).
    [[nodiscard]] T* get(object_handle h) noexcept {
        if (!h) return nullptr;
        slot* s = live_slot(h);
        if (MEMGOV_UNLIKELY(s == nullptr)) {
            on_stale(h);
            return nullptr;
        }
        return s->object();
    }
    /// `get` for a const pool.
    [[nodiscard]] const T* get(object_handle h) const noexcept { return const_cast<object_pool*>(this)->get(h); }

    /// True if `h` still refers to a leased object. Unlike `get`, a stale handle is neither
    /// counted nor asserted: this is the question to ask when staleness is expected.
    /// Thread safety: any thread. Complexity: O(1).
    [[nodiscard]] bool is_live(object_handle h) const noexcept { return h && live_slot(h) != nullptr; }

    /// Ages idle objects and frees those that outlived their tier (see docs/object-pool.md for
    /// the exact rules), at most `max_objects` of them. At `pressure_level::emergency` frees
    /// every idle object except `emergency_reserve`. Objects are destroyed outside the pool's
    /// locks. Visits every thread cache: one `membarrier` system call (where available), and
    /// a thread in the middle of an acquire or release is waited for (a few instructions).
    /// Thread safety: any thread. Complexity: O(idle objects + threads). Never throws.
    object_pool_trim_result trim(time_point now,
                                 std::size_t max_objects = std::numeric_limits<std::size_t>::max()) noexcept {
        const detail::object_pool_trim_collect done = m_core->collect_trim(now, max_objects);
        for (auto* s = done.victims; s != nullptr; s = s->next) static_cast<slot*>(s)->object()->~T();
        const std::size_t freed = m_core->finish_trim(done);
        return {done.objects, done.bytes, freed};
    }
    /// `trim(clock.now())`.
    object_pool_trim_result trim() noexcept { return trim(m_clock.now()); }

    /// Sets the pressure level that the next trims apply. Thread safety: any thread (one atomic
    /// store). Complexity: O(1). A level past `emergency` is taken as `emergency`.
    void set_pressure(pressure_level l) noexcept { m_core->level.store(clamp_level(l), std::memory_order_relaxed); }
    /// The pressure level last set. Thread safety: any thread. Complexity: O(1).
    [[nodiscard]] pressure_level pressure() const noexcept { return m_core->level.load(std::memory_order_relaxed); }

    /// Bytes held by idle objects (`sizeof(T)` + retained each): what a full trim could free.
    /// Lock-free; exact when no other thread is using the pool, otherwise a close estimate.
    /// Thread safety: any thread. Complexity: O(threads that used the pool).
    [[nodiscard]] std::size_t idle_bytes() const noexcept { return m_core->idle_bytes(); }

    /// Counters and gauges. Takes the pool's mutex and visits each thread cache briefly (one
    /// `membarrier` system call for all of them where available; see object_pool_core.hpp).
    /// Thread safety: any thread. Complexity: O(threads × thread_cache_objects).
    [[nodiscard]] object_pool_stats stats() const noexcept {
        object_pool_stats st;
        const auto& k = m_core->counters;
        auto ld = [](const auto& a) { return a.load(std::memory_order_relaxed); };
        st.acquisitions = ld(k.acquisitions);
        st.reuses = ld(k.reuses);
        st.constructions = ld(k.constructions);
        st.destructions = ld(k.destructions);
        for (std::size_t t = 0; t < 3; ++t) st.trimmed[t] = ld(k.trimmed[t]);
        st.trimmed_bytes = ld(k.trimmed_bytes);
        st.trim_calls = ld(k.trim_calls);
        for (std::size_t t = 0; t < 2; ++t) {
            st.promotions[t] = ld(k.promotions[t]);
            st.demotions[t] = ld(k.demotions[t]);
        }
        st.oversize_drops = ld(k.oversize_drops);
        st.stale_handles = ld(k.stale);
        st.retired_slots = ld(k.retired);
        std::int64_t charged = ld(k.charged);
        std::int64_t idle_bytes = 0;
        std::uint64_t constructed = 0;
        {
            std::lock_guard lock{m_core->mutex};
            // Every constructed object is idle, leased or destroyed: the leased ones are what
            // is left. Read under the mutex, where trim counts its destructions.
            constructed = ld(k.constructions) - ld(k.destructions);
            for (std::size_t t = 0; t < 3; ++t) st.idle_by_tier[t] = m_core->tiers[t].count;
            idle_bytes += ld(k.depot_idle_bytes);
            m_core->visit_caches([&](detail::object_pool_cache& c) noexcept {
                const std::uint64_t r = ld(c.reuses);
                st.acquisitions += r;
                st.reuses += r;
                for (std::size_t t = 0; t < 2; ++t) st.promotions[t] += ld(c.promotions[t]);
                charged += ld(c.charged);
                idle_bytes += c.idle_bytes(sizeof(T));
                for (const auto* s = c.head.load(std::memory_order_relaxed); s != nullptr; s = s->next) {
                    ++st.idle_by_tier[s->tier];
                }
            });
        }
        st.idle_objects = st.idle_by_tier[0] + st.idle_by_tier[1] + st.idle_by_tier[2];
        st.leased_objects = constructed > st.idle_objects ? static_cast<std::size_t>(constructed - st.idle_objects) : 0;
        st.retained_bytes = charged > 0 ? static_cast<std::size_t>(charged) : 0;
        st.idle_bytes = idle_bytes > 0 ? static_cast<std::size_t>(idle_bytes) : 0;
        const std::size_t n = m_slot_count.load(std::memory_order_acquire);
        st.slots = n;
        for (std::size_t b = 0; b < max_blocks; ++b) {
            if (m_blocks[b].load(std::memory_order_relaxed) != nullptr) {
                st.slot_bytes += block_size(b) * sizeof(slot);
            }
        }
        st.storage_bytes = m_core->storage_bytes.load(std::memory_order_relaxed);
        const std::int64_t objects_heap =
            charged - static_cast<std::int64_t>((st.leased_objects + st.idle_objects) * sizeof(T));
        st.charged_bytes = st.storage_bytes + (objects_heap > 0 ? static_cast<std::size_t>(objects_heap) : 0);
        return st;
    }

    /// The configuration the pool was made with. Thread safety: any thread.
    [[nodiscard]] const object_pool_config& config() const noexcept { return m_cfg; }

    /// The retained bytes the pool sees for `t`: `Reset::retained_bytes(t)` if the policy has
    /// it, else `T::retained_bytes()` if `T` has it, else 0. Complexity: that of the callee.
    [[nodiscard]] std::size_t retained_bytes_of(const T& t) const noexcept {
        if constexpr (detail::reset_reports_retained<Reset, T>) {
            return static_cast<std::size_t>(m_reset.retained_bytes(t));
        } else if constexpr (reports_retained_bytes<T>) {
            return static_cast<std::size_t>(t.retained_bytes());
        } else {
            return 0;
        }
    }

private:
    static void validate(const object_pool_config& c, const memgov::ledger* accounting) {
        constexpr std::string_view cfg = "object_pool_config";
        using detail::require_field;
        require_field(c.block_objects != 0 && std::has_single_bit(c.block_objects) &&
                          c.block_objects <= (std::size_t{1} << 20),
                      cfg, "block_objects", "must be a power of two between 1 and 2^20");
        require_field(c.max_objects != 0 && c.max_objects < object_handle::null_index, cfg, "max_objects",
                      "must be > 0 and < 2^32 - 1");
        require_field(c.thread_cache_objects <= 65536, cfg, "thread_cache_objects", "must be <= 65536");
        require_field(c.young_lifetime > duration::zero(), cfg, "young_lifetime", "must be > 0");
        require_field(c.mid_lifetime >= c.young_lifetime, cfg, "mid_lifetime", "must be >= young_lifetime");
        require_field(c.old_lifetime >= c.mid_lifetime, cfg, "old_lifetime", "must be >= mid_lifetime");
        require_field(c.reuses_to_promote != 0, cfg, "reuses_to_promote", "must be > 0");
        for (std::size_t i = 0; i < c.lifetime_divisor.size(); ++i) {
            require_field(c.lifetime_divisor[i] != 0, cfg, "lifetime_divisor", "entries must be >= 1");
            require_field(i == 0 || c.lifetime_divisor[i] >= c.lifetime_divisor[i - 1], cfg, "lifetime_divisor",
                          "entries must be non-decreasing");
        }
        require_field(c.generation_limit != 0 && c.generation_limit < detail::object_pool_retired_generation, cfg,
                      "generation_limit", "must be >= 1 and <= 2^32 - 2");
        require_field(c.on_stale_handle <= stale_handle_policy::abort, cfg, "on_stale_handle", "unknown policy");
        require_field(c.old_lifetime <= longest_period, cfg, "old_lifetime", "must be at most longest_period (a year)");
        // A category the ledger does not define would hide the pool's bytes from the totals.
        require_field(accounting != nullptr
                          ? accounting->defined(c.ledger_category)
                          : static_cast<std::size_t>(c.ledger_category) < memgov::ledger::max_categories,
                      cfg, "ledger_category", "must be a category the ledger defines");
    }

    [[nodiscard]] std::size_t block_size(std::size_t b) const noexcept {
        return b == 0 ? m_cfg.block_objects : m_cfg.block_objects << (b - 1);
    }
    // Block k ≥ 1 starts at index block_objects << (k - 1).
    [[nodiscard]] slot* slot_at(std::uint32_t i) const noexcept {
        const std::uint32_t q = i >> m_block_shift;
        if (q == 0) return m_blocks[0].load(std::memory_order_acquire) + i;
        const auto b = static_cast<std::size_t>(std::bit_width(q));
        const std::size_t off = i - (m_cfg.block_objects << (b - 1));
        return m_blocks[b].load(std::memory_order_acquire) + off;
    }

    [[nodiscard]] slot* live_slot(object_handle h) const noexcept {
        if (h.index >= m_slot_count.load(std::memory_order_acquire)) return nullptr;
        slot* s = slot_at(h.index);
        if (s->generation.load(std::memory_order_acquire) != h.generation) return nullptr;
        return s;
    }

    MEMGOV_COLD void on_stale(object_handle h) const noexcept {
        m_core->counters.stale.fetch_add(1, std::memory_order_relaxed);
        switch (m_cfg.on_stale_handle) {
        case stale_handle_policy::count:
            return;
        case stale_handle_policy::debug_assert:
#if MEMGOV_ASSERTS_ENABLED
            break;
#else
            return;
#endif
        case stale_handle_policy::abort:
            break;
        }
        std::fprintf(stderr,
                     "memgov: object_pool::get: stale handle {index %u, generation %u}: the "
                     "object was released\n",
                     static_cast<unsigned>(h.index), static_cast<unsigned>(h.generation));
        std::abort();
    }

    MEMGOV_NOINLINE lease acquire_slow(detail::object_pool_cache* c) {
        if (auto* s = m_core->depot_take(c)) return lease{static_cast<slot*>(s)};
        slot* s = take_empty_slot();
        try {
            ::new (static_cast<void*>(s->storage)) T();
        } catch (...) {
            std::lock_guard lock{m_core->mutex};
            m_core->empty.push_front(s);
            throw;
        }
        const std::size_t rb = retained_bytes_of(*s->object());
        s->charged = rb;
        s->tier = 0;
        s->promote_in = m_core->entry_countdown(0);
        s->state = detail::object_slot_state::leased;
        auto& k = m_core->counters;
        k.acquisitions.fetch_add(1, std::memory_order_relaxed);
        k.constructions.fetch_add(1, std::memory_order_relaxed);
        k.charged.fetch_add(m_core->slot_bytes(s), std::memory_order_relaxed);
        m_core->charge(static_cast<std::int64_t>(rb)); // sizeof(T) is in the slot's block
        return lease{s};
    }

    // An empty slot (no object in it), making a new one if none is free.
    slot* take_empty_slot() {
        std::lock_guard lock{m_core->mutex};
        if (auto* e = m_core->empty.pop_front()) return static_cast<slot*>(e);
        const std::size_t n = m_slot_count.load(std::memory_order_relaxed);
        if (n >= m_cfg.max_objects) {
            throw std::length_error{"memgov::object_pool::acquire: max_objects (" + std::to_string(m_cfg.max_objects) +
                                    ") slots in use"};
        }
        const auto i = static_cast<std::uint32_t>(n);
        const std::uint32_t q = i >> m_block_shift;
        const std::size_t b = q == 0 ? 0 : static_cast<std::size_t>(std::bit_width(q));
        const std::size_t off = q == 0 ? i : i - (m_cfg.block_objects << (b - 1));
        slot* blk = m_blocks[b].load(std::memory_order_relaxed);
        if (blk == nullptr) {
            // Uninitialized memory: a slot is constructed when first handed out, so a large
            // block costs only the pages actually used.
            blk = static_cast<slot*>(::operator new (block_size(b) * sizeof(slot), std::align_val_t{alignof(slot)}));
            m_blocks[b].store(blk, std::memory_order_release);
            m_core->add_storage(block_size(b) * sizeof(slot));
        }
        slot* s = ::new (static_cast<void*>(blk + off)) slot;
        s->index = i;
        s->pool = this;
        m_slot_count.store(n + 1, std::memory_order_release);
        return s;
    }

    // Whether the pool follows what objects retain beyond `sizeof(T)`; if not, `charged` stays 0
    // and the release path skips that arithmetic.
    static constexpr bool tracks_retained = detail::reset_reports_retained<Reset, T> || reports_retained_bytes<T>;

    [[gnu::always_inline]] void release_slot(slot* s) noexcept {
        MEMGOV_ASSERT(s->state == detail::object_slot_state::leased, "released slot not leased");
        // Stale handles fail from here on, before the object is touched.
        const std::uint32_t g = s->generation.load(std::memory_order_relaxed);
        if (MEMGOV_UNLIKELY(g >= m_generation_limit)) {
            retire(s);
            return;
        }
        s->generation.store(g + 1, std::memory_order_release);
        m_reset(*s->object());
        if constexpr (tracks_retained) {
            const std::size_t rb = retained_bytes_of(*s->object());
            if (MEMGOV_UNLIKELY(rb > m_cfg.max_retained_bytes)) {
                destroy_released(s, detail::object_slot_state::empty);
                return;
            }
            const auto delta = static_cast<std::int64_t>(rb) - static_cast<std::int64_t>(s->charged);
            s->charged = rb;
            m_core->template release_idle<true>(s, delta);
        } else {
            m_core->template release_idle<false>(s, 0);
        }
    }

    // A slot whose generation ran out: parked at the retired generation for good.
    MEMGOV_COLD void retire(slot* s) noexcept {
        s->generation.store(detail::object_pool_retired_generation, std::memory_order_release);
        destroy_released(s, detail::object_slot_state::retired);
    }

    // A released object that is not pooled: oversize (slot goes back to the empty list) or in
    // a slot whose generation ran out (slot retired for good).
    MEMGOV_COLD void destroy_released(slot* s, detail::object_slot_state to) noexcept {
        const std::int64_t bytes = m_core->slot_bytes(s);
        s->object()->~T();
        auto& k = m_core->counters;
        k.destructions.fetch_add(1, std::memory_order_relaxed);
        k.charged.fetch_sub(bytes, std::memory_order_relaxed);
        m_core->charge(-static_cast<std::int64_t>(s->charged)); // the slot stays in its block
        s->charged = 0;
        s->state = to;
        if (to == detail::object_slot_state::retired) {
            k.retired.fetch_add(1, std::memory_order_relaxed);
        } else {
            k.oversize_drops.fetch_add(1, std::memory_order_relaxed);
            std::lock_guard lock{m_core->mutex};
            m_core->empty.push_front(s);
        }
    }

    // Read on every release, kept apart from the rest of `m_cfg` in the pool's first line.
    std::uint32_t m_generation_limit = 0;
    object_pool_config m_cfg{};
    unsigned m_block_shift = 0;
    Clock m_clock;
    [[no_unique_address]] Reset m_reset;
    std::shared_ptr<detail::object_pool_core> m_core_owner;
    detail::object_pool_core* m_core = nullptr;
    std::array<std::atomic<slot*>, max_blocks> m_blocks{};
    std::atomic<std::size_t> m_slot_count{0};
};

MEMGOV_NAMESPACE_END
