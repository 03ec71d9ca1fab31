// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The type-independent half of `memgov::object_pool<T>`: slot headers, the per-thread caches,
/// the shared depot with its three age tiers, and the trim walk. Everything here handles slot
/// *headers* only; constructing, resetting and destroying `T` is the public template's job.
///
/// Ownership of a slot moves between exactly one of: a lease (its holder), one thread cache
/// (guarded by that cache's spinlock) or the depot (guarded by the core mutex). Every hand-off
/// goes through one of those locks, so the plain header fields need no atomics. Only the
/// generation is atomic, because `object_pool::get` reads it from any thread without a lock.
///
/// Lock order: core mutex → a cache's spinlock. The hot path takes only its own thread's
/// spinlock, which nobody else takes except trim, stats and thread exit.

#include <memgov/clock.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/saturate.hpp>
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
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

MEMGOV_NAMESPACE_BEGIN
namespace detail {

inline constexpr std::size_t object_pool_tier_count = 3;
// The generation a retired slot is parked at; no handle ever carries it because
// `generation_limit` is at most this minus one.
inline constexpr std::uint32_t object_pool_retired_generation = 0xFFFF'FFFFu;
// "Idle, but no trim has seen it yet": the release path does not read the clock.
inline constexpr time_point object_pool_unseen = time_point::min();

enum class object_slot_state : std::uint8_t { fresh, empty, idle, leased, retired };

struct object_slot_header {
    std::atomic<std::uint32_t> generation{0};
    std::uint32_t index = 0;
    object_slot_state state = object_slot_state::fresh;
    std::uint8_t tier = 0;
    std::uint32_t reuses = 0;   // reuses since the object entered its current tier
    std::size_t charged = 0;    // retained bytes last charged for the object
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

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
}

// A test-and-test-and-set lock. Uncontended except while trim, stats or thread exit visit the
// cache, which hold it for at most one pass over `capacity` pointers.
class object_pool_spinlock {
public:
    void lock() noexcept {
        for (;;) {
            if (!m_locked.exchange(true, std::memory_order_acquire)) return;
            for (unsigned spins = 0; m_locked.load(std::memory_order_relaxed); ++spins) {
                if (spins < 128) {
                    cpu_relax();
                } else {
                    std::this_thread::yield();
                }
            }
        }
    }
    void unlock() noexcept { m_locked.store(false, std::memory_order_release); }

private:
    std::atomic<bool> m_locked{false};
};

// Writers of these counters all hold the owning lock, so a relaxed load + store is exact and
// costs no locked instruction; readers load them relaxed without the lock.
template <class I>
inline void locked_add(std::atomic<I>& a, I d) noexcept {
    a.store(static_cast<I>(a.load(std::memory_order_relaxed) + d), std::memory_order_relaxed);
}

// One thread's cache of idle objects: a LIFO stack of slot headers.
struct alignas(cache_line_size) object_pool_cache {
    object_pool_spinlock lock;
    std::uint32_t count = 0; // guarded by lock
    std::uint32_t capacity = 0;
    std::unique_ptr<object_slot_header*[]> items;
    object_pool_cache* next_cache = nullptr; // immutable once published in the core's list
    bool owned = true;                       // guarded by the core mutex

    // Counters written under `lock`.
    std::atomic<std::uint64_t> acquisitions{0};
    std::atomic<std::uint64_t> reuses{0};
    std::atomic<std::int64_t> leased{0};  // delta: +1 per acquire here, -1 per release here
    std::atomic<std::int64_t> charged{0}; // delta of retained bytes seen at release here
    std::atomic<std::int64_t> idle_objects{0};
    std::atomic<std::int64_t> idle_bytes{0};
    std::array<std::atomic<std::uint64_t>, 2> promotions{};

    explicit object_pool_cache(std::uint32_t cap)
        : capacity{cap}, items{std::make_unique<object_slot_header*[]>(cap)} {}

    // What one cache of `cap` items allocates: itself and its item array (an array of
    // pointers has no array cookie).
    [[nodiscard]] static constexpr std::size_t heap_bytes(std::uint32_t cap) noexcept {
        return sizeof(object_pool_cache) + std::size_t{cap} * sizeof(object_slot_header*);
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

inline std::uint64_t next_object_pool_id() noexcept {
    static std::atomic<std::uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
}

struct object_pool_trim_collect {
    object_slot_header* victims = nullptr; // chained through `next`, objects still constructed
    std::size_t objects = 0;
    std::size_t bytes = 0;
};

// The shared state of one pool. Lives in a shared_ptr so that a thread exiting after the pool
// is gone can tell (through a weak_ptr) and leave it alone.
struct object_pool_core : std::enable_shared_from_this<object_pool_core> {
    // ---- read-only after construction (read on the hot path) ----
    std::uint64_t id = next_object_pool_id();
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
        std::atomic<std::uint64_t> destructions{0};
        std::atomic<std::uint64_t> oversize_drops{0};
        std::atomic<std::uint64_t> retired{0};
        std::atomic<std::uint64_t> stale{0};
        std::atomic<std::uint64_t> trim_calls{0};
        std::atomic<std::uint64_t> trimmed_bytes{0};
        std::array<std::atomic<std::uint64_t>, object_pool_tier_count> trimmed{};
        std::array<std::atomic<std::uint64_t>, 2> promotions{};
        std::array<std::atomic<std::uint64_t>, 2> demotions{};
        std::atomic<std::int64_t> leased{0};
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
    object_pool_cache* local_cache() noexcept {
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

    // An idle object from `c`, or nullptr. The slot comes back leased.
    object_slot_header* cache_pop(object_pool_cache* c) noexcept {
        c->lock.lock();
        if (MEMGOV_UNLIKELY(c->count == 0)) {
            c->lock.unlock();
            return nullptr;
        }
        object_slot_header* s = c->items[--c->count];
        locked_add<std::int64_t>(c->idle_objects, -1);
        locked_add<std::int64_t>(c->idle_bytes, -slot_bytes(s));
        locked_add<std::uint64_t>(c->acquisitions, 1);
        locked_add<std::uint64_t>(c->reuses, 1);
        locked_add<std::int64_t>(c->leased, 1);
        c->lock.unlock();
        s->state = object_slot_state::leased;
        ++s->reuses;
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
        counters.leased.fetch_add(1, std::memory_order_relaxed);
        first->state = object_slot_state::leased;
        ++first->reuses;
        if (rest != nullptr) {
            c->lock.lock();
            // The cache was empty when we looked; another pass (trim) may have added nothing,
            // but the owner is us, so at most `capacity / 2` fit for sure. Overflow goes back.
            object_slot_header* overflow = nullptr;
            while (rest != nullptr) {
                object_slot_header* n = rest->next;
                if (c->count < c->capacity) {
                    c->items[c->count++] = rest;
                    locked_add<std::int64_t>(c->idle_objects, 1);
                    locked_add<std::int64_t>(c->idle_bytes, slot_bytes(rest));
                } else {
                    rest->next = overflow;
                    overflow = rest;
                }
                rest = n;
            }
            c->lock.unlock();
            if (overflow != nullptr) depot_push_chain(overflow);
        }
        return first;
    }

    // ---- hot path: release ----

    // Puts a reset, re-stamped slot back as idle. `delta` is the change of its retained bytes
    // (already stored in `s->charged`) to account.
    void release_idle(object_slot_header* s, std::int64_t delta) noexcept {
        int promoted = -1;
        if (s->tier + 1u < object_pool_tier_count && s->reuses >= reuses_to_promote) {
            promoted = s->tier;
            ++s->tier;
            s->reuses = 0;
        }
        s->idle_since = object_pool_unseen;
        s->state = object_slot_state::idle;
        object_pool_cache* c = local_cache();
        if (MEMGOV_LIKELY(c != nullptr)) {
            object_slot_header* spill = nullptr;
            c->lock.lock();
            if (MEMGOV_UNLIKELY(c->count == c->capacity)) spill = spill_locked(c);
            c->items[c->count++] = s;
            locked_add<std::int64_t>(c->idle_objects, 1);
            locked_add<std::int64_t>(c->idle_bytes, slot_bytes(s));
            locked_add<std::int64_t>(c->leased, -1);
            if (delta != 0) locked_add<std::int64_t>(c->charged, delta);
            if (promoted >= 0) {
                locked_add<std::uint64_t>(c->promotions[static_cast<std::size_t>(promoted)], 1);
            }
            c->lock.unlock();
            if (spill != nullptr) depot_push_chain(spill);
        } else {
            {
                std::lock_guard lock{mutex};
                depot_push_locked(s);
            }
            counters.leased.fetch_sub(1, std::memory_order_relaxed);
            if (delta != 0) counters.charged.fetch_add(delta, std::memory_order_relaxed);
            if (promoted >= 0) {
                counters.promotions[static_cast<std::size_t>(promoted)].fetch_add(
                    1, std::memory_order_relaxed);
            }
        }
        charge(delta);
    }

    // Takes the bottom (least recently released) half of a full cache; caller holds its lock.
    object_slot_header* spill_locked(object_pool_cache* c) noexcept {
        const std::uint32_t n = c->capacity - c->capacity / 2;
        object_slot_header* chain = nullptr;
        for (std::uint32_t i = n; i-- > 0;) {
            object_slot_header* s = c->items[i];
            s->next = chain;
            chain = s;
            locked_add<std::int64_t>(c->idle_objects, -1);
            locked_add<std::int64_t>(c->idle_bytes, -slot_bytes(s));
        }
        for (std::uint32_t i = n; i < c->count; ++i) c->items[i - n] = c->items[i];
        c->count -= n;
        return chain;
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
                s->reuses = 0;
                s->idle_since = now;
                return 1;
            }
            return out.objects < budget ? 2 : 0;
        };

        std::lock_guard lock{mutex};
        counters.trim_calls.fetch_add(1, std::memory_order_relaxed);
        for (object_pool_cache* c = caches.load(std::memory_order_acquire); c != nullptr;
             c = c->next_cache) {
            c->lock.lock();
            if (emergency) {
                for (std::uint32_t i = 0; i < c->count; ++i) {
                    object_slot_header* s = c->items[i];
                    if (s->idle_since == object_pool_unseen) s->idle_since = now;
                    depot_push_locked(s);
                }
                c->count = 0;
                c->idle_objects.store(0, std::memory_order_relaxed);
                c->idle_bytes.store(0, std::memory_order_relaxed);
            } else {
                std::uint32_t w = 0;
                for (std::uint32_t i = 0; i < c->count; ++i) {
                    object_slot_header* s = c->items[i];
                    if (judge(s) == 2) {
                        locked_add<std::int64_t>(c->idle_objects, -1);
                        locked_add<std::int64_t>(c->idle_bytes, -slot_bytes(s));
                        s->state = object_slot_state::empty;
                        victim(s);
                    } else {
                        c->items[w++] = s;
                    }
                }
                c->count = w;
            }
            c->lock.unlock();
        }

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
                        counters.depot_idle_bytes.fetch_sub(slot_bytes(s),
                                                            std::memory_order_relaxed);
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
                    case 0: survivors.push_back(s); break;
                    case 1: tiers[t - 1].push_front(s); break;
                    default:
                        counters.depot_idle_bytes.fetch_sub(slot_bytes(s),
                                                            std::memory_order_relaxed);
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
        return out;
    }

    // Returns destroyed victims' slots to the empty list and settles the gauges. The ledger
    // loses what the objects retained beyond their slots; the slots stay in their blocks.
    void finish_trim(const object_pool_trim_collect& done) noexcept {
        if (done.objects == 0) return;
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
        counters.destructions.fetch_add(done.objects, std::memory_order_relaxed);
        counters.charged.fetch_sub(static_cast<std::int64_t>(done.bytes), std::memory_order_relaxed);
        charge(-static_cast<std::int64_t>(done.bytes - done.objects * object_size));
    }

    // ---- observers ----

    [[nodiscard]] std::size_t idle_bytes() const noexcept {
        std::int64_t sum = counters.depot_idle_bytes.load(std::memory_order_relaxed);
        for (const object_pool_cache* c = caches.load(std::memory_order_acquire); c != nullptr;
             c = c->next_cache) {
            sum += c->idle_bytes.load(std::memory_order_relaxed);
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
    static void give_back(object_pool_core& core, object_pool_cache* c) noexcept {
        core.detach_cache(c);
    }
};
using object_pool_thread_claims = thread_claims<object_pool_claims>;

// The pool used most recently is found first.
MEMGOV_NOINLINE inline object_pool_cache* object_pool_core::local_cache_slow() noexcept {
    if (cache_capacity == 0 || object_pool_thread_claims::exiting()) return nullptr;
    return mru_lookup(t_object_pool_tls, id, [this]() noexcept {
               object_pool_cache* c = claim_cache();
               return object_pool_tls_entry{c != nullptr ? id : 0, c};
           }).cache;
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
            add_storage(object_pool_cache::heap_bytes(cache_capacity));
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
    c->lock.lock();
    for (std::uint32_t i = 0; i < c->count; ++i) depot_push_locked(c->items[i]);
    c->count = 0;
    c->idle_objects.store(0, std::memory_order_relaxed);
    c->idle_bytes.store(0, std::memory_order_relaxed);
    c->lock.unlock();
    c->owned = false;
    free_caches.push_back(c); // capacity reserved when the cache was made
}

} // namespace detail
MEMGOV_NAMESPACE_END
