// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The type-independent half of `memgov::object_pool<T>`: slot headers, the per-thread caches,
/// the shared depot with its three age tiers, and the trim walk. Everything here handles slot
/// *headers* only; constructing, resetting and destroying `T` is the public template's job.
///
/// Ownership of a slot moves between exactly one of: a lease (its holder), one thread cache
/// or the depot (guarded by the core mutex). Every hand-off goes through the cache protocol
/// below or the mutex, so the plain header fields need no atomics. Only the generation is
/// atomic, because `object_pool::get` reads it from any thread without a lock.
///
/// A thread cache is used by its owner thread, lock-free and with no atomic read-modify-write,
/// and now and then *visited* by another thread (trim, stats), which always holds the core
/// mutex. The two are kept apart by Dekker's pattern on two flags, with an asymmetric fence
/// (detail/asymmetric_fence.hpp): the owner raises `busy`, a compiler barrier, reads
/// `visitor`; a visitor raises `visitor`, one `membarrier` system call for all caches, waits
/// for `busy` to fall. Either the owner sees the visitor and steps aside until it is done, or
/// the visitor sees the owner and waits out its few instructions. Without membarrier, both
/// sides use sequentially consistent stores and loads (one locked instruction per owner visit).
///
/// Lock order: core mutex → a cache (as its visitor). The owner never waits for anything
/// while `busy` is up, and never holds the core mutex while it waits for a visitor.

#include <memgov/clock.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/asymmetric_fence.hpp>
#include <memgov/detail/instance_id.hpp>
#include <memgov/detail/saturate.hpp>
#include <memgov/detail/spinlock.hpp>
#include <memgov/detail/thread_claims.hpp>
#include <memgov/ledger.hpp>
#include <memgov/pressure_level.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

inline constexpr std::size_t object_pool_tier_count = 3;
// The generation a retired slot is parked at; no handle ever carries it because
// `generation_limit` is at most this minus one.
inline constexpr std::uint32_t object_pool_retired_generation = 0xFFFF'FFFFu;
// The countdown of an object in the oldest tier. Should a reuse count it down to 0 (after 2^32
// reuses), the release finds nothing to promote to and starts it over.
inline constexpr std::uint32_t object_pool_never_promote = 0xFFFF'FFFFu;
// "Idle, but no trim has seen it yet": the release path does not read the clock.
inline constexpr time_point object_pool_unseen = time_point::min();

enum class object_slot_state : std::uint8_t { fresh, empty, idle, leased, retired };

struct object_slot_header {
    std::atomic<std::uint32_t> generation{0};
    std::uint32_t index = 0;
    // Reuses left before a release promotes the object out of its tier (counted down by each
    // reuse; `object_pool_never_promote` in the oldest tier).
    std::uint32_t promote_in = 0;
    object_slot_state state = object_slot_state::fresh;
    std::uint8_t tier = 0;
    // While in a thread cache: the objects under it in the stack (a cache holds at most 65536).
    std::atomic<std::uint16_t> below{0};
    std::size_t charged = 0; // retained bytes last charged for the object
    time_point idle_since = object_pool_unseen;
    object_slot_header* next = nullptr;
};

// Intrusive LIFO list of slot headers.
struct object_slot_list {
    object_slot_header* head = nullptr;
    std::size_t count = 0;

    void push_front(object_slot_header* s) noexcept {
        s->next = head;
        head = s;
        ++count;
    }
    object_slot_header* pop_front() noexcept {
        object_slot_header* s = head;
        if (s != nullptr) {
            head = s->next;
            s->next = nullptr;
            --count;
        }
        return s;
    }
};

// Appends to a chain while keeping order (for rebuilding lists in trim).
struct object_slot_chain {
    object_slot_header* head = nullptr;
    object_slot_header* tail = nullptr;
    std::size_t count = 0;

    void push_back(object_slot_header* s) noexcept {
        s->next = nullptr;
        if (tail == nullptr) {
            head = s;
        } else {
            tail->next = s;
        }
        tail = s;
        ++count;
    }
};

// Writers of these counters are exclusive (the cache's owner inside its visit-free section, or
// a holder of the core mutex), so a relaxed load + store is exact and costs no locked
// instruction; readers load them relaxed without a lock.
template <class I>
inline void locked_add(std::atomic<I>& a, I d) noexcept {
    a.store(static_cast<I>(a.load(std::memory_order_relaxed) + d), std::memory_order_relaxed);
}

// One thread's cache of idle objects: a LIFO stack of slot headers linked through their `next`.
// Its size is kept in the top slot (`below` + 1), not in a counter of the cache, so neither a
// push nor a pop waits on a load of a counter the previous operation stored. See the file
// comment for how its owner and its visitors take turns.
struct alignas(cache_line_size) object_pool_cache {
    // `visitor` bits: a visitor is in, and (for the life of the cache) no asymmetric fence,
    // which sends every owner section down the sequentially consistent slow path.
    static constexpr std::uint32_t visiting = 1;
    static constexpr std::uint32_t symmetric = 2;

    // ---- the owner's line: everything an acquire or a release touches ----
    std::atomic<std::uint32_t> busy{0};    // written by the owner only
    std::atomic<std::uint32_t> visitor{0}; // `visiting` written by visitors (under the core mutex)
    std::uint32_t capacity = 0;
    bool asymmetric = false; // asymmetric_fence_available(), read once
    // The top of the stack (most recently released). Written by whoever holds the cache;
    // read lock-free (with the top's `below`) by idle_bytes().
    std::atomic<object_slot_header*> head{nullptr};
    // Counters written by whoever holds the cache.
    std::atomic<std::uint64_t> reuses{0};       // acquisitions from this cache (all reuses)
    std::atomic<std::int64_t> charged{0};       // delta of retained bytes seen at release here
    std::atomic<std::int64_t> idle_retained{0}; // retained bytes of the objects in the stack
    std::array<std::atomic<std::uint64_t>, 2> promotions{};
    object_pool_cache* next_cache = nullptr; // immutable once published in the core's list
    bool owned = true;                       // guarded by the core mutex

    explicit object_pool_cache(std::uint32_t cap) : capacity{cap}, asymmetric{asymmetric_fence_available()} {
        visitor.store(asymmetric ? 0 : symmetric, std::memory_order_relaxed);
    }

    // What one cache allocates: itself (the stack runs through the slots).
    [[nodiscard]] static constexpr std::size_t heap_bytes() noexcept { return sizeof(object_pool_cache); }

    // Idle objects in the stack. Exact for a holder of the cache; an estimate otherwise.
    [[nodiscard]] std::uint32_t size() const noexcept {
        const object_slot_header* h = head.load(std::memory_order_relaxed);
        return h == nullptr ? 0 : h->below.load(std::memory_order_relaxed) + 1u;
    }

    // Pushes `s` onto a stack of `n` objects whose top is `h` (a holder of the cache only).
    void push(object_slot_header* s, object_slot_header* h, std::uint32_t n) noexcept {
        s->below.store(static_cast<std::uint16_t>(n), std::memory_order_relaxed);
        s->next = h;
        head.store(s, std::memory_order_relaxed);
    }

    // Takes the whole stack, oldest first (a holder of the cache only); the cache is empty.
    [[nodiscard]] object_slot_header* take_oldest_first() noexcept {
        object_slot_header* out = nullptr;
        object_slot_header* s = head.load(std::memory_order_relaxed);
        while (s != nullptr) {
            object_slot_header* n = s->next;
            s->next = out;
            out = s;
            s = n;
        }
        head.store(nullptr, std::memory_order_relaxed);
        idle_retained.store(0, std::memory_order_relaxed);
        return out;
    }

    // ---- the owner's side ----

    // Starts a section in which no visitor touches the cache: two plain stores, a load and a
    // branch unless a visitor is there (or there is no asymmetric fence).
    [[gnu::always_inline]] void enter() noexcept {
        busy.store(1, std::memory_order_relaxed);
        std::atomic_signal_fence(std::memory_order_seq_cst); // the light half of the fence
        if (MEMGOV_UNLIKELY(visitor.load(std::memory_order_acquire) != 0)) enter_slow();
    }
    [[gnu::always_inline]] void leave() noexcept { busy.store(0, std::memory_order_release); }

    // A visitor is there, or the symmetric form is in use.
    MEMGOV_NOINLINE void enter_slow() noexcept {
        for (;;) {
            if (asymmetric) {
                busy.store(1, std::memory_order_relaxed);
                std::atomic_signal_fence(std::memory_order_seq_cst);
                if ((visitor.load(std::memory_order_acquire) & visiting) == 0) return;
            } else {
                busy.store(1, std::memory_order_seq_cst);
                if ((visitor.load(std::memory_order_seq_cst) & visiting) == 0) return;
            }
            // Step aside until the visitor has gone, then try again.
            busy.store(0, std::memory_order_release);
            spin_backoff backoff;
            while ((visitor.load(std::memory_order_acquire) & visiting) != 0) backoff.pause();
        }
    }

    // ---- a visitor's side (caller holds the core mutex) ----

    // Raises the flag; `visit_wait` after one heavy fence for all the caches raised.
    void visit_raise() noexcept {
        if (asymmetric) {
            visitor.store(visiting, std::memory_order_relaxed);
        } else {
            visitor.store(symmetric | visiting, std::memory_order_seq_cst);
        }
    }
    // Waits until the owner is outside its section; the cache is then the caller's.
    void visit_wait() const noexcept {
        spin_backoff backoff;
        while (busy.load(asymmetric ? std::memory_order_acquire : std::memory_order_seq_cst) != 0) {
            backoff.pause();
        }
    }
    void visit_end() noexcept { visitor.store(asymmetric ? 0 : symmetric, std::memory_order_release); }

    [[nodiscard]] std::int64_t idle_bytes(std::size_t object_size) const noexcept {
        return static_cast<std::int64_t>(size() * object_size) + idle_retained.load(std::memory_order_relaxed);
    }
};

// An allocator that adds what it is asked for to a counter: gives the exact size of the
// shared_ptr control block the pool's core lives behind, which the ledger is charged. It only
// counts while the shared_ptr is being made; the copy inside the control block frees through
// `std::allocator` and never touches the counter.
template <class U>
struct object_pool_counting_allocator {
    using value_type = U;
    std::size_t* bytes = nullptr;

    object_pool_counting_allocator() noexcept = default;
    explicit object_pool_counting_allocator(std::size_t* b) noexcept : bytes{b} {}
    template <class V>
    object_pool_counting_allocator(const object_pool_counting_allocator<V>& o) noexcept // NOLINT
        : bytes{o.bytes} {}

    U* allocate(std::size_t n) {
        U* p = std::allocator<U>{}.allocate(n);
        if (bytes != nullptr) *bytes += n * sizeof(U);
        return p;
    }
    void deallocate(U* p, std::size_t n) noexcept { std::allocator<U>{}.deallocate(p, n); }
    template <class V>
    bool operator==(const object_pool_counting_allocator<V>&) const noexcept {
        return true;
    }
};

struct object_pool_tls_entry {
    std::uint64_t id = 0;
    object_pool_cache* cache = nullptr;
};
inline constexpr std::size_t object_pool_tls_size = 4;
// Trivially destructible, so reaching it costs no guard check on the hot path.
inline thread_local std::array<object_pool_tls_entry, object_pool_tls_size> t_object_pool_tls{};

struct object_pool_trim_collect {
    object_slot_header* victims = nullptr; // chained through `next`, objects still constructed
    std::size_t objects = 0;
    std::size_t bytes = 0;
};

// The shared state of one pool. Lives in a shared_ptr so that a thread exiting after the pool
// is gone can tell (through a weak_ptr) and leave it alone.
struct object_pool_core : std::enable_shared_from_this<object_pool_core> {
    // ---- read-only after construction (read on the hot path) ----
    std::uint64_t id = next_instance_id();
    std::uint32_t cache_capacity = 0;
    std::uint32_t reuses_to_promote = 1;
    std::size_t object_size = 0;
    ledger* ledger_ptr = nullptr;
    category ledger_category = category::objects;
    std::array<duration, object_pool_tier_count> lifetime{};
    std::array<std::uint32_t, pressure_level_count> lifetime_divisor{};
    std::size_t emergency_reserve = 0;

    std::atomic<pressure_level> level{pressure_level::normal};
    std::atomic<object_pool_cache*> caches{nullptr}; // append-only list, read lock-free
    // The pool's own heap: the core and its control block, the slot blocks, the thread caches
    // and `free_caches`. Charged to the ledger as it is allocated, uncharged with the pool.
    // Written under `mutex` (or before the pool is shared), read lock-free.
    std::atomic<std::size_t> storage_bytes{0};

    // ---- guarded by mutex ----
    alignas(cache_line_size) std::mutex mutex;
    std::array<object_slot_list, object_pool_tier_count> tiers{};
    object_slot_list empty{};
    std::vector<object_pool_cache*> free_caches; // caches whose thread exited, for adoption
    std::size_t cache_count = 0;
    bool closed = false;

    // ---- gauges and counters for the slow paths (atomic RMW; off the hot path) ----
    struct alignas(cache_line_size) counters_type {
        std::atomic<std::uint64_t> acquisitions{0};
        std::atomic<std::uint64_t> reuses{0};
        std::atomic<std::uint64_t> constructions{0};
        // Leased objects are not counted: they are constructions - destructions - idle
        // objects, read under the mutex (trim counts its destructions there).
        std::atomic<std::uint64_t> destructions{0};
        std::atomic<std::uint64_t> oversize_drops{0};
        std::atomic<std::uint64_t> retired{0};
        std::atomic<std::uint64_t> stale{0};
        std::atomic<std::uint64_t> trim_calls{0};
        std::atomic<std::uint64_t> trimmed_bytes{0};
        std::array<std::atomic<std::uint64_t>, object_pool_tier_count> trimmed{};
        std::array<std::atomic<std::uint64_t>, 2> promotions{};
        std::array<std::atomic<std::uint64_t>, 2> demotions{};
        std::atomic<std::int64_t> charged{0};
        std::atomic<std::int64_t> depot_idle_bytes{0}; // written under mutex
    } counters;

    object_pool_core() = default;
    object_pool_core(const object_pool_core&) = delete;
    object_pool_core& operator=(const object_pool_core&) = delete;
    ~object_pool_core() {
        object_pool_cache* c = caches.load(std::memory_order_acquire);
        while (c != nullptr) {
            object_pool_cache* n = c->next_cache;
            delete c;
            c = n;
        }
    }

    void charge(std::int64_t bytes) const noexcept {
        if (ledger_ptr != nullptr && bytes != 0) ledger_ptr->charge(ledger_category, bytes);
    }

    // Records and charges `bytes` the pool allocated for itself. Under `mutex` once the pool
    // is shared.
    void add_storage(std::size_t bytes) noexcept {
        locked_add<std::size_t>(storage_bytes, bytes);
        charge(static_cast<std::int64_t>(bytes));
    }

    [[nodiscard]] std::int64_t slot_bytes(const object_slot_header* s) const noexcept {
        return static_cast<std::int64_t>(object_size + s->charged);
    }

    // ---- the calling thread's cache ----

    // nullptr when caching is off, the thread is exiting or a cache could not be made; callers
    // then use the depot directly.
    [[gnu::always_inline]] object_pool_cache* local_cache() noexcept {
        auto& tls = t_object_pool_tls;
        if (MEMGOV_LIKELY(tls[0].id == id)) return tls[0].cache;
        return local_cache_slow();
    }

    object_pool_cache* local_cache_slow() noexcept;
    object_pool_cache* claim_cache() noexcept;
    void detach_cache(object_pool_cache* c) noexcept;

    // ---- depot (caller holds mutex) ----

    void depot_push_locked(object_slot_header* s) noexcept {
        tiers[s->tier].push_front(s);
        counters.depot_idle_bytes.fetch_add(slot_bytes(s), std::memory_order_relaxed);
    }
    object_slot_header* depot_pop_locked() noexcept {
        for (std::size_t t = object_pool_tier_count; t-- > 0;) { // oldest tier first
            if (object_slot_header* s = tiers[t].pop_front()) {
                counters.depot_idle_bytes.fetch_sub(slot_bytes(s), std::memory_order_relaxed);
                return s;
            }
        }
        return nullptr;
    }
    void depot_push_chain(object_slot_header* chain) noexcept {
        std::lock_guard lock{mutex};
        while (chain != nullptr) {
            object_slot_header* n = chain->next;
            depot_push_locked(chain);
            chain = n;
        }
    }

    // ---- hot path: acquire ----

    // An idle object from the calling thread's cache `c`, or nullptr. The slot comes back
    // leased. `Retains`: whether objects may retain bytes (else `charged` is always 0).
    template <bool Retains>
    [[gnu::always_inline]] static object_slot_header* cache_pop(object_pool_cache* c) noexcept {
        c->enter();
        object_slot_header* s = c->head.load(std::memory_order_relaxed);
        if (MEMGOV_UNLIKELY(s == nullptr)) {
            c->leave();
            return nullptr;
        }
        c->head.store(s->next, std::memory_order_relaxed);
        locked_add<std::uint64_t>(c->reuses, 1);
        if (Retains && s->charged != 0) {
            locked_add(c->idle_retained, -static_cast<std::int64_t>(s->charged));
        }
        c->leave();
        s->state = object_slot_state::leased;
        --s->promote_in;
        return s;
    }

    // Refills `c` (may be nullptr) from the depot and returns one idle object, or nullptr when
    // the depot has none.
    object_slot_header* depot_take(object_pool_cache* c) noexcept {
        object_slot_header* first = nullptr;
        object_slot_header* rest = nullptr;
        std::uint32_t taken = 0;
        {
            std::lock_guard lock{mutex};
            first = depot_pop_locked();
            if (first == nullptr) return nullptr;
            if (c != nullptr) {
                const std::uint32_t batch = c->capacity / 2;
                for (; taken < batch; ++taken) {
                    object_slot_header* s = depot_pop_locked();
                    if (s == nullptr) break;
                    s->next = rest;
                    rest = s;
                }
            }
        }
        counters.acquisitions.fetch_add(1, std::memory_order_relaxed);
        counters.reuses.fetch_add(1, std::memory_order_relaxed);
        first->state = object_slot_state::leased;
        --first->promote_in;
        if (rest != nullptr) {
            // Only the owner (us) adds to the cache, which was empty when we looked, so
            // `capacity / 2` fit; the overflow branch is for safety only.
            object_slot_header* overflow = nullptr;
            c->enter();
            std::uint32_t n = c->size();
            while (rest != nullptr) {
                object_slot_header* next = rest->next;
                if (n < c->capacity) {
                    c->push(rest, c->head.load(std::memory_order_relaxed), n);
                    ++n;
                    if (rest->charged != 0) {
                        locked_add(c->idle_retained, static_cast<std::int64_t>(rest->charged));
                    }
                } else {
                    rest->next = overflow;
                    overflow = rest;
                }
                rest = next;
            }
            c->leave();
            if (overflow != nullptr) depot_push_chain(overflow);
        }
        return first;
    }

    // ---- hot path: release ----

    // Puts a reset, re-stamped slot back as idle. `delta` is the change of its retained bytes
    // (already stored in `s->charged`) to account; `Retains` as for `cache_pop`.
    template <bool Retains>
    [[gnu::always_inline]] void release_idle(object_slot_header* s, std::int64_t delta) noexcept {
        int promoted = -1;
        if (MEMGOV_UNLIKELY(s->promote_in == 0)) promoted = promote(s);
        s->idle_since = object_pool_unseen;
        s->state = object_slot_state::idle;
        object_pool_cache* c = local_cache();
        if (MEMGOV_UNLIKELY(c == nullptr)) {
            release_to_depot(s, delta, promoted);
            return;
        }
        object_slot_header* spill = nullptr;
        c->enter();
        object_slot_header* h = c->head.load(std::memory_order_relaxed);
        std::uint32_t n = h == nullptr ? 0 : h->below.load(std::memory_order_relaxed) + 1u;
        if (MEMGOV_UNLIKELY(n == c->capacity)) {
            spill = spill_half(c);
            h = c->head.load(std::memory_order_relaxed);
            n = c->size();
        }
        c->push(s, h, n);
        if (Retains && s->charged != 0) {
            locked_add(c->idle_retained, static_cast<std::int64_t>(s->charged));
        }
        if (Retains && delta != 0) locked_add<std::int64_t>(c->charged, delta);
        if (MEMGOV_UNLIKELY(promoted >= 0)) {
            locked_add<std::uint64_t>(c->promotions[static_cast<std::size_t>(promoted)], 1);
        }
        c->leave();
        if (MEMGOV_UNLIKELY(spill != nullptr)) depot_push_chain(spill);
        if (Retains && delta != 0) charge_slow(delta);
    }

    // Moves `s` up a tier; returns the tier it left, or -1 when it is in the oldest already.
    MEMGOV_NOINLINE int promote(object_slot_header* s) const noexcept {
        if (s->tier + 1u >= object_pool_tier_count) {
            s->promote_in = object_pool_never_promote;
            return -1;
        }
        const int from = s->tier;
        ++s->tier;
        s->promote_in = entry_countdown(s->tier);
        return from;
    }

    // The countdown of an object entering `tier`.
    [[nodiscard]] std::uint32_t entry_countdown(std::size_t tier) const noexcept {
        return tier + 1 < object_pool_tier_count ? reuses_to_promote : object_pool_never_promote;
    }

    // No thread cache (caching off, or the thread is exiting): straight to the depot.
    MEMGOV_NOINLINE void release_to_depot(object_slot_header* s, std::int64_t delta, int promoted) noexcept {
        {
            std::lock_guard lock{mutex};
            depot_push_locked(s);
        }
        if (delta != 0) counters.charged.fetch_add(delta, std::memory_order_relaxed);
        if (promoted >= 0) {
            counters.promotions[static_cast<std::size_t>(promoted)].fetch_add(1, std::memory_order_relaxed);
        }
        charge(delta);
    }

    MEMGOV_NOINLINE void charge_slow(std::int64_t bytes) const noexcept { charge(bytes); }

    // Takes the bottom (least recently released) half of a full cache; the caller holds it.
    MEMGOV_NOINLINE static object_slot_header* spill_half(object_pool_cache* c) noexcept {
        const std::uint32_t keep = c->capacity / 2;
        object_slot_header* chain = nullptr;
        if (keep == 0) {
            chain = c->head.exchange(nullptr, std::memory_order_relaxed);
        } else {
            object_slot_header* last = c->head.load(std::memory_order_relaxed);
            for (std::uint32_t i = 0;; ++i) {
                last->below.store(static_cast<std::uint16_t>(keep - 1 - i), std::memory_order_relaxed);
                if (i + 1 == keep) break;
                last = last->next;
            }
            chain = std::exchange(last->next, nullptr);
        }
        std::int64_t retained = 0;
        for (object_slot_header* s = chain; s != nullptr; s = s->next) {
            retained += static_cast<std::int64_t>(s->charged);
        }
        if (retained != 0) locked_add(c->idle_retained, -retained);
        return chain;
    }

    // Calls `fn(cache)` for every thread cache, each while no owner touches it. One heavy
    // fence covers them all. Caller holds `mutex`.
    template <class Fn>
    void visit_caches(Fn&& fn) noexcept {
        object_pool_cache* first = caches.load(std::memory_order_acquire);
        bool heavy = false;
        for (object_pool_cache* c = first; c != nullptr; c = c->next_cache) {
            c->visit_raise();
            heavy = heavy || c->asymmetric;
        }
        if (heavy) asymmetric_fence_heavy();
        for (object_pool_cache* c = first; c != nullptr; c = c->next_cache) {
            c->visit_wait();
            fn(*c);
            c->visit_end();
        }
    }

    // ---- trim ----

    [[nodiscard]] duration effective_lifetime(std::size_t tier, pressure_level l) const noexcept {
        return lifetime[tier] / static_cast<std::int64_t>(lifetime_divisor[to_index(l)]);
    }

    // Visits every idle object (thread caches first, then the depot's tiers young → old),
    // stamps first sightings with `now`, demotes or frees what outlived its tier, and at
    // `emergency` frees everything but the reserve. At most `budget` objects are freed.
    object_pool_trim_collect collect_trim(time_point now, std::size_t budget) noexcept {
        object_pool_trim_collect out;
        const pressure_level l = level.load(std::memory_order_relaxed);
        const bool emergency = l == pressure_level::emergency;
        std::array<duration, object_pool_tier_count> life{};
        for (std::size_t t = 0; t < object_pool_tier_count; ++t) life[t] = effective_lifetime(t, l);

        auto victim = [&](object_slot_header* s) noexcept {
            s->next = out.victims;
            out.victims = s;
            ++out.objects;
            out.bytes += static_cast<std::size_t>(slot_bytes(s));
            counters.trimmed[s->tier].fetch_add(1, std::memory_order_relaxed);
        };
        // What happens to one idle object: 0 keep, 1 demoted (tier already lowered), 2 free.
        auto judge = [&](object_slot_header* s) noexcept -> int {
            if (s->idle_since == object_pool_unseen) s->idle_since = now;
            if (saturating_diff(now, s->idle_since) < life[s->tier]) return 0;
            if (s->tier > 0) {
                counters.demotions[s->tier - 1u].fetch_add(1, std::memory_order_relaxed);
                --s->tier;
                s->promote_in = entry_countdown(s->tier);
                s->idle_since = now;
                return 1;
            }
            return out.objects < budget ? 2 : 0;
        };

        std::lock_guard lock{mutex};
        counters.trim_calls.fetch_add(1, std::memory_order_relaxed);
        visit_caches([&](object_pool_cache& c) noexcept {
            object_slot_header* s = c.take_oldest_first();
            if (emergency) {
                while (s != nullptr) {
                    object_slot_header* n = s->next;
                    if (s->idle_since == object_pool_unseen) s->idle_since = now;
                    depot_push_locked(s);
                    s = n;
                }
                return;
            }
            // Oldest first, as before a budget runs out; pushing the survivors back restores
            // their order.
            std::uint32_t kept = 0;
            std::int64_t retained = 0;
            while (s != nullptr) {
                object_slot_header* n = s->next;
                if (judge(s) == 2) {
                    s->state = object_slot_state::empty;
                    victim(s);
                } else {
                    c.push(s, c.head.load(std::memory_order_relaxed), kept);
                    ++kept;
                    retained += static_cast<std::int64_t>(s->charged);
                }
                s = n;
            }
            c.idle_retained.store(retained, std::memory_order_relaxed);
        });

        if (emergency) {
            // Keep the reserve: oldest tier first, most recently released first within a tier.
            std::size_t keep = emergency_reserve;
            for (std::size_t t = object_pool_tier_count; t-- > 0;) {
                object_slot_chain survivors;
                object_slot_header* s = tiers[t].head;
                while (s != nullptr) {
                    object_slot_header* n = s->next;
                    if (keep > 0 || out.objects >= budget) {
                        if (keep > 0) --keep;
                        survivors.push_back(s);
                    } else {
                        counters.depot_idle_bytes.fetch_sub(slot_bytes(s), std::memory_order_relaxed);
                        s->state = object_slot_state::empty;
                        victim(s);
                    }
                    s = n;
                }
                tiers[t].head = survivors.head;
                tiers[t].count = survivors.count;
            }
        } else {
            // Young first: an object demoted into a tier already walked waits for the next
            // pass, so one trim moves an object down at most one tier.
            for (std::size_t t = 0; t < object_pool_tier_count; ++t) {
                object_slot_chain survivors;
                object_slot_header* s = tiers[t].head;
                while (s != nullptr) {
                    object_slot_header* n = s->next;
                    switch (judge(s)) {
                    case 0:
                        survivors.push_back(s);
                        break;
                    case 1:
                        tiers[t - 1].push_front(s);
                        break;
                    default:
                        counters.depot_idle_bytes.fetch_sub(slot_bytes(s), std::memory_order_relaxed);
                        s->state = object_slot_state::empty;
                        victim(s);
                        break;
                    }
                    s = n;
                }
                // Objects demoted into tier t while walking t + 1 are not in `survivors`;
                // this pass only rebuilds tier t before they arrive.
                tiers[t].head = survivors.head;
                tiers[t].count = survivors.count;
            }
        }
        counters.trimmed_bytes.fetch_add(out.bytes, std::memory_order_relaxed);
        // Counted here, under the mutex, so that stats() never sees the victims as leased.
        counters.destructions.fetch_add(out.objects, std::memory_order_relaxed);
        return out;
    }

    // Returns destroyed victims' slots to the empty list and settles the gauges. The ledger
    // loses what the objects retained beyond their slots, which is returned (the bytes that
    // went back to the allocator); the slots stay in their blocks.
    std::size_t finish_trim(const object_pool_trim_collect& done) noexcept {
        if (done.objects == 0) return 0;
        {
            std::lock_guard lock{mutex};
            object_slot_header* s = done.victims;
            while (s != nullptr) {
                object_slot_header* n = s->next;
                s->charged = 0;
                empty.push_front(s);
                s = n;
            }
        }
        counters.charged.fetch_sub(static_cast<std::int64_t>(done.bytes), std::memory_order_relaxed);
        const std::size_t freed = done.bytes - done.objects * object_size;
        charge(-static_cast<std::int64_t>(freed));
        return freed;
    }

    // ---- observers ----

    [[nodiscard]] std::size_t idle_bytes() const noexcept {
        std::int64_t sum = counters.depot_idle_bytes.load(std::memory_order_relaxed);
        for (const object_pool_cache* c = caches.load(std::memory_order_acquire); c != nullptr; c = c->next_cache) {
            sum += c->idle_bytes(object_size);
        }
        return sum > 0 ? static_cast<std::size_t>(sum) : 0;
    }
};

// A thread's claims on pools' caches, handed back when the thread exits. Releases made by
// later thread-exit destructors go straight to the depot.
struct object_pool_claims {
    using owner_type = object_pool_core;
    using claim_type = object_pool_cache;
    static void on_thread_exit() noexcept { t_object_pool_tls = {}; }
    static void give_back(object_pool_core& core, object_pool_cache* c) noexcept { core.detach_cache(c); }
};
using object_pool_thread_claims = thread_claims<object_pool_claims>;

// The pool used most recently is found first.
MEMGOV_NOINLINE inline object_pool_cache* object_pool_core::local_cache_slow() noexcept {
    if (cache_capacity == 0 || object_pool_thread_claims::exiting()) return nullptr;
    return mru_lookup(t_object_pool_tls, id,
                      [this]() noexcept {
                          object_pool_cache* c = claim_cache();
                          return object_pool_tls_entry{c != nullptr ? id : 0, c};
                      })
        .cache;
}

inline object_pool_cache* object_pool_core::claim_cache() noexcept {
    auto claim = [this]() -> object_pool_cache* {
        std::lock_guard lock{mutex};
        if (closed) return nullptr;
        object_pool_cache* c = nullptr;
        if (!free_caches.empty()) {
            c = free_caches.back();
            free_caches.pop_back();
        } else {
            // Room to park every cache on thread exit without allocating then.
            const std::size_t parked = free_caches.capacity();
            free_caches.reserve(cache_count + 1);
            add_storage((free_caches.capacity() - parked) * sizeof(object_pool_cache*));
            auto fresh = std::make_unique<object_pool_cache>(cache_capacity);
            add_storage(object_pool_cache::heap_bytes());
            c = fresh.release();
            ++cache_count;
            c->next_cache = caches.load(std::memory_order_relaxed);
            caches.store(c, std::memory_order_release);
        }
        c->owned = true;
        return c;
    };
    return object_pool_thread_claims::find_or_claim(id, weak_from_this(), claim);
}

inline void object_pool_core::detach_cache(object_pool_cache* c) noexcept {
    std::lock_guard lock{mutex};
    if (closed) return;
    // We are the cache's owner (this runs on its thread, at exit) and hold the mutex, which
    // every visitor holds: nobody else can touch the cache.
    object_slot_header* s = c->take_oldest_first();
    while (s != nullptr) {
        object_slot_header* n = s->next;
        depot_push_locked(s);
        s = n;
    }
    c->owned = false;
    free_caches.push_back(c); // capacity reserved when the cache was made
}

} // namespace detail
MEMGOV_NAMESPACE_END
