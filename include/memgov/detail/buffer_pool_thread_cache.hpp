// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// A buffer pool's per-thread cache: per size class a small stack of idle buffers and the
/// counters behind the pool's statistics. Only the owning thread writes a cache; `stats()`
/// reads the counters from other threads, so they are atomics written with a relaxed load and
/// store (a plain add on x86 and ARM, no locked instruction).

#include <memgov/config.hpp>
#include <memgov/detail/size_class_map.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

/// A counter one thread writes and any thread reads.
struct buffer_pool_counter {
    std::atomic<std::int64_t> value{0};
    /// Owner-only add: no locked instruction.
    void add(std::int64_t d) noexcept {
        value.store(value.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
    }
    /// Add from any thread.
    void add_shared(std::int64_t d) noexcept { value.fetch_add(d, std::memory_order_relaxed); }
    [[nodiscard]] std::int64_t get() const noexcept { return value.load(std::memory_order_relaxed); }
};

/// The per-class counters of one thread (or of the shared, cacheless path).
struct buffer_pool_class_counters {
    buffer_pool_counter cache_hits;
    buffer_pool_counter depot_hits;
    buffer_pool_counter misses;
    buffer_pool_counter failed_tries;
    buffer_pool_counter local_releases;
    buffer_pool_counter remote_releases;
    buffer_pool_counter harmful_acquired; // sum of (capacity - requested) at acquire
    buffer_pool_counter harmful_released; // the same sum at release
};

/// One size class in one thread's cache: a stack of idle buffers plus counters.
struct buffer_pool_cache_class {
    std::byte** items = nullptr;         // storage for up to max_count pointers
    std::atomic<std::uint32_t> count{0}; // owner writes; stats reads
    std::uint32_t cap = 0;               // current cap (owner's copy of the pool's)
    std::uint32_t batch = 0;             // buffers moved per depot transfer
    std::uint32_t max_count = 0;         // cap at the lowest pressure
    buffer_pool_class_counters counters;
};

/// Sentinel origin for buffers acquired with no thread cache (or through the memory resource).
inline constexpr std::uint32_t buffer_pool_no_origin = 0xffffffffu;

/// One thread's cache for one pool. Owned by the pool's shared state; handed to another thread
/// when its owner exits (its counters keep their partial sums).
struct buffer_pool_thread_cache {
    std::uint64_t seen_epoch = 0; // pool epoch last applied; 0 forces a sync on first use
    // Bytes moved from idle to in use (negative: back) not yet charged to the ledger. Owner
    // only; the ledger's pool_idle/pool_in_use split lags by less than the batch size.
    std::int64_t ledger_pending = 0;
    std::uint32_t index = 0; // position in the pool's cache list (a buffer's origin)
    bool owned = false;      // claimed by a live thread (guarded by the pool's mutex)
    std::unique_ptr<std::byte*[]> storage;
    // Inline (not a pointer): one dependent load fewer on every acquire and release.
    std::array<buffer_pool_cache_class, size_class_max_count> classes;
};

/// The thread-local lookup from a pool's unique id to this thread's cache for it.
struct buffer_pool_tls_entry {
    std::uint64_t id = 0;
    buffer_pool_thread_cache* cache = nullptr;
};

inline constexpr std::size_t buffer_pool_tls_size = 4;
// Trivially destructible and constant-initialized, so reaching it costs no guard on the hot path.
inline thread_local std::array<buffer_pool_tls_entry, buffer_pool_tls_size> t_buffer_pool_tls{};

} // namespace detail
MEMGOV_NAMESPACE_END
