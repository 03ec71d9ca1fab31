// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// A block of signed 64-bit counters that any number of threads add to without a locked
/// instruction, read as sums: the storage behind the ledger's categories and the governor's
/// admission counters.
///
/// Each thread that adds to a `thread_counters` owns one *slot*: a cache-line aligned array of
/// all `counter_count` counters. Only the owning thread writes its slot, so an add is a relaxed
/// load and a relaxed store to a line no other thread writes (no locked instruction, no
/// sharing). Readers sum the slots with relaxed loads. A thread finds its slot through a small
/// thread-local cache keyed by the instance's unique id; the first add from a thread takes the
/// instance's mutex once to claim a slot. When the thread exits its slot goes back to a free
/// list, keeping its values (slots hold partial sums, so whichever thread adopts it next simply
/// continues the sum).
///
/// Past the slot limit (`max_slots` unless made smaller) of concurrent threads, or if claiming
/// a slot fails to allocate, adds fall back to one shared overflow slot updated with atomic
/// adds: slower, never lost. Adds made by a thread's exit-time destructors that run after its
/// slot went back take the same path, so they never write a slot another thread may adopt (see
/// thread_claims.hpp).
///
/// Thread safety: `add` and every read from any number of threads; see each member.

#include <memgov/config.hpp>
#include <memgov/detail/instance_id.hpp>
#include <memgov/detail/thread_claims.hpp>

#include <algorithm>
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

inline constexpr std::size_t thread_counter_count = 16;
inline constexpr std::size_t thread_counter_slots_per_block = 64;
inline constexpr std::size_t thread_counter_max_blocks = 64;

/// One thread's counters. Aligned so that two threads' slots never share a cache line.
struct alignas(cache_line_size) thread_counter_slot {
    std::array<std::atomic<std::int64_t>, thread_counter_count> values{};
};

struct thread_counter_block {
    std::array<thread_counter_slot, thread_counter_slots_per_block> slots{};
};

/// The slots of one `thread_counters`, shared with the claims of the threads that hold one
/// (through a weak pointer, so a thread that outlives the counters gives nothing back).
struct thread_counter_slots {
    explicit thread_counter_slots(std::size_t limit) noexcept : slot_limit{limit} {}

    const std::size_t slot_limit; // private slots handed out at most
    std::mutex mutex;             // guards the free list and block allocation
    std::array<std::atomic<thread_counter_block*>, thread_counter_max_blocks> blocks{};
    std::atomic<std::size_t> slot_count{0}; // slots ever handed out (highest index + 1)
    std::vector<thread_counter_slot*> free_slots;
    thread_counter_slot overflow; // shared slot, updated with atomic adds

    thread_counter_slots(const thread_counter_slots&) = delete;
    thread_counter_slots& operator=(const thread_counter_slots&) = delete;
    ~thread_counter_slots() {
        for (auto& b : blocks) delete b.load(std::memory_order_relaxed);
    }

    // Claims a slot for the calling thread, or nullptr when none can be had.
    thread_counter_slot* acquire_slot() noexcept {
        std::lock_guard lock{mutex};
        if (!free_slots.empty()) {
            thread_counter_slot* s = free_slots.back();
            free_slots.pop_back();
            return s;
        }
        const std::size_t index = slot_count.load(std::memory_order_relaxed);
        if (index >= slot_limit) return nullptr;
        const std::size_t block = index / thread_counter_slots_per_block;
        thread_counter_block* b = blocks[block].load(std::memory_order_relaxed);
        if (b == nullptr) {
            b = new (std::nothrow) thread_counter_block{};
            if (b == nullptr) return nullptr;
            blocks[block].store(b, std::memory_order_release);
        }
        slot_count.store(index + 1, std::memory_order_release);
        return &b->slots[index % thread_counter_slots_per_block];
    }

    void release_slot(thread_counter_slot* s) noexcept {
        std::lock_guard lock{mutex};
        try {
            free_slots.push_back(s);
        } catch (...) {
            // The slot stays claimed by nobody; its partial sums are still read. Only reuse is
            // lost, and only when memory is exhausted.
        }
    }

    template <class Fn>
    void for_each_slot(Fn&& fn) const noexcept {
        const std::size_t n = slot_count.load(std::memory_order_acquire);
        for (std::size_t i = 0; i < n; ++i) {
            const thread_counter_block* b = blocks[i / thread_counter_slots_per_block].load(std::memory_order_acquire);
            fn(b->slots[i % thread_counter_slots_per_block]);
        }
        fn(overflow);
    }
};

struct thread_counter_cache_entry {
    std::uint64_t id = 0;
    thread_counter_slot* slot = nullptr;
    bool shared = false; // the overflow slot: must use atomic adds
};

inline constexpr std::size_t thread_counter_cache_size = 4;
// Trivially destructible, so reaching it costs no guard check on the hot path.
inline thread_local std::array<thread_counter_cache_entry, thread_counter_cache_size> t_thread_counter_cache{};

// A thread's claims on counter slots, given back when it exits. Adds made by later
// thread-exit destructors must not write a slot another thread may adopt: forgetting the
// cache sends them back to `claim`, which the exiting list refuses, so they take the shared
// overflow path.
struct thread_counter_claims {
    using owner_type = thread_counter_slots;
    using claim_type = thread_counter_slot;
    static void on_thread_exit() noexcept { t_thread_counter_cache = {}; }
    static void give_back(thread_counter_slots& s, thread_counter_slot* slot) noexcept { s.release_slot(slot); }
};
using thread_counter_thread_claims = thread_claims<thread_counter_claims>;

/// `counter_count` signed 64-bit counters, each the sum of what every thread added to it.
/// See the file comment for the design. Not copyable or movable (threads find it by id).
class thread_counters {
public:
    /// Counters in the block; an index passed to `add` or `sum` is below this.
    static constexpr std::size_t counter_count = thread_counter_count;
    /// The most threads that can get a private slot.
    static constexpr std::size_t max_slots = thread_counter_slots_per_block * thread_counter_max_blocks;

    /// All counters at zero, no slot claimed yet. Up to `slot_limit` threads at a time get a
    /// private slot (at most `max_slots`); more share one atomically updated slot.
    /// Throws `std::bad_alloc` only.
    explicit thread_counters(std::size_t slot_limit = max_slots)
        : m_slots{std::make_shared<thread_counter_slots>(std::min(slot_limit, max_slots))}, m_id{next_instance_id()} {}
    thread_counters(const thread_counters&) = delete;
    thread_counters& operator=(const thread_counters&) = delete;
    ~thread_counters() = default;

    /// Adds `n` (which may be negative) to counter `i` (below `counter_count`; asserts in
    /// debug builds, the caller checks).
    /// Thread safety: any thread. Complexity: O(1); a relaxed load and store on the calling
    /// thread's own slot, with no allocation, lock, system call or locked instruction once the
    /// thread has its slot (its first add claims one under a mutex; past the slot limit, in
    /// thread-exit destructors or out of memory: an atomic add on the shared overflow slot).
    [[gnu::always_inline]] void add(std::size_t i, std::int64_t n) noexcept {
        // Always inlined, so that a caller's hot path (`ledger::charge`) compiles as if the add
        // were written in it: inlining it must not use up the caller's inlining budget.
        MEMGOV_ASSERT(i < counter_count, "thread_counters: counter out of range");
        const thread_counter_cache_entry& e = local_entry();
        auto& counter = e.slot->values[i];
        if (MEMGOV_LIKELY(!e.shared)) {
            // Only this thread writes this counter: a plain read-modify-write is exact.
            counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
        } else {
            counter.fetch_add(n, std::memory_order_relaxed);
        }
    }

    /// Adds `n` to counter `i` and `m` to counter `j`, finding the calling thread's slot once.
    /// Same contract as the single `add`.
    void add(std::size_t i, std::int64_t n, std::size_t j, std::int64_t m) noexcept {
        MEMGOV_ASSERT(i < counter_count && j < counter_count, "thread_counters: counter out of range");
        // Read once: the second add must not reload the entry after the first one's store.
        const thread_counter_cache_entry& e = local_entry();
        thread_counter_slot* const slot = e.slot;
        const bool shared = e.shared;
        auto& a = slot->values[i];
        auto& b = slot->values[j];
        if (MEMGOV_LIKELY(!shared)) {
            a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
            b.store(b.load(std::memory_order_relaxed) + m, std::memory_order_relaxed);
        } else {
            a.fetch_add(n, std::memory_order_relaxed);
            b.fetch_add(m, std::memory_order_relaxed);
        }
    }

    /// The sum of counter `i` (0 if `i` is out of range). While other threads add, each slot's
    /// value is read atomically but the slots are not read at one instant; when none adds, the
    /// sum is exact. Thread safety: any thread. Complexity: O(slots), relaxed loads only.
    [[nodiscard]] std::int64_t sum(std::size_t i) const noexcept {
        if (i >= counter_count) return 0;
        std::int64_t s = 0;
        m_slots->for_each_slot(
            [&](const thread_counter_slot& slot) { s += slot.values[i].load(std::memory_order_relaxed); });
        return s;
    }

    /// Every counter's sum, read in one pass over the slots (as `sum`).
    /// Thread safety: any thread. Complexity: O(slots × counter_count).
    [[nodiscard]] std::array<std::int64_t, counter_count> sums() const noexcept {
        std::array<std::int64_t, counter_count> out{};
        m_slots->for_each_slot([&](const thread_counter_slot& slot) {
            for (std::size_t i = 0; i < counter_count; ++i) {
                out[i] += slot.values[i].load(std::memory_order_relaxed);
            }
        });
        return out;
    }

    /// Threads that currently hold or once held a private slot (the cost factor of reads).
    /// Thread safety: any thread. Complexity: O(1).
    [[nodiscard]] std::size_t slot_count() const noexcept {
        return m_slots->slot_count.load(std::memory_order_acquire);
    }

private:
    const thread_counter_cache_entry& local_entry() const noexcept {
        auto& cache = t_thread_counter_cache;
        if (MEMGOV_LIKELY(cache[0].id == m_id)) return cache[0];
        return local_entry_slow();
    }

    // The instance used most recently is found first; `claim` always gives an entry (at worst
    // the shared overflow slot), so afterwards it is at the front.
    MEMGOV_NOINLINE const thread_counter_cache_entry& local_entry_slow() const noexcept {
        mru_lookup(t_thread_counter_cache, m_id, [this]() noexcept { return claim(); });
        return t_thread_counter_cache[0];
    }

    thread_counter_cache_entry claim() const noexcept {
        thread_counter_slot* s =
            thread_counter_thread_claims::find_or_claim(m_id, m_slots, [this] { return m_slots->acquire_slot(); });
        if (s == nullptr) return {m_id, &m_slots->overflow, true};
        return {m_id, s, false};
    }

    std::shared_ptr<thread_counter_slots> m_slots;
    std::uint64_t m_id;
};

} // namespace detail
MEMGOV_NAMESPACE_END
