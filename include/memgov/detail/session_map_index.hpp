// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The lookup table of one `session_map` shard: a bucketized two-choice cuckoo table of 8-byte
/// slots (32 hash bits + 32-bit entry index), eight slots to a 64-byte bucket.
///
/// - An entry lives in one of two buckets, both computed from its 32 hash bits, so a lookup
///   reads at most two cache lines, which `prefetch` requests together before the shard lock
///   is taken: the table costs one memory latency, whatever the load factor. An entry is
///   dereferenced only when its 32 hash bits match.
/// - Insertion takes a free slot in either bucket; when both are full, a short breadth-first
///   search finds a chain of slots each of which can move to its other bucket, and moves them
///   (as libcuckoo does). Only slots move: entries never do.
/// - Erasure clears the slot: nothing shifts and there are no tombstones.
/// - A degenerate hash (many keys with the same 32 hash bits) cannot fill two buckets and
///   stall: an entry that finds no room while the buckets are less than half full goes to a
///   small overflow list, scanned after both buckets (and only when not empty).
/// - Two choices of eight slots stay insertable past 95% full, so the table is kept between
///   72% and 90% full while it grows (it grows by a quarter at a time: the bucket count need
///   not be a power of two, as buckets are picked by multiply-shift), and halves when it falls
///   to an eighth full. Growth and shrinking rehash from the stored hash bits without touching
///   the entries.
///
/// Not thread-safe: the shard lock guards it, except `prefetch`.

#include <memgov/config.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

inline constexpr std::uint32_t session_nil = 0xFFFFFFFFU;

struct session_slot {
    std::uint32_t fp;  // low 32 bits of the entry's mixed hash
    std::uint32_t idx; // entry index, session_nil when the slot is empty
};

class session_index {
public:
    static constexpr std::uint32_t bucket_slots = 8;
    static constexpr std::uint32_t min_buckets = 1;
    static constexpr std::uint32_t min_capacity = min_buckets * bucket_slots;

    session_index() noexcept = default;
    session_index(const session_index&) = delete;
    session_index& operator=(const session_index&) = delete;
    ~session_index() = default;

    [[nodiscard]] std::uint32_t size() const noexcept { return m_size; }
    /// Bucket slots, empty or not.
    [[nodiscard]] std::uint32_t capacity() const noexcept { return m_buckets * bucket_slots; }
    /// Positions, empty or not: the bucket slots, then the overflow list. A position is valid
    /// until the table next changes.
    [[nodiscard]] std::uint32_t positions() const noexcept {
        return capacity() + static_cast<std::uint32_t>(m_overflow.size());
    }
    [[nodiscard]] const session_slot& slot(std::uint32_t pos) const noexcept {
        if (pos >= capacity()) return m_overflow[pos - capacity()];
        return m_table[pos / bucket_slots].slots[pos % bucket_slots];
    }
    [[nodiscard]] std::size_t memory_bytes() const noexcept {
        return static_cast<std::size_t>(m_buckets) * sizeof(bucket) + m_overflow.capacity() * sizeof(session_slot);
    }

    // `x` scaled from [0, 2^32) to [0, n) (Lemire's multiply-shift range reduction).
    [[nodiscard]] static std::uint32_t scale(std::uint32_t x, std::uint32_t n) noexcept {
        return static_cast<std::uint32_t>((static_cast<std::uint64_t>(x) * n) >> 32);
    }
    // The position after `pos`, wrapping around.
    [[nodiscard]] std::uint32_t next(std::uint32_t pos) const noexcept { return pos + 1 == positions() ? 0 : pos + 1; }
    // The two buckets an entry with hash bits `fp` may live in, among `n`; equal only when
    // n == 1.
    [[nodiscard]] static std::pair<std::uint32_t, std::uint32_t> buckets_of(std::uint32_t fp,
                                                                            std::uint32_t n) noexcept {
        const std::uint32_t a = scale(fp, n);
        std::uint32_t b = scale(fp * 0x9E3779B1U, n);
        if (b == a && n > 1) b = a + 1 == n ? 0 : a + 1;
        return {a, b};
    }

    // Starts loading both buckets a lookup of `fp` reads. Called without the shard lock (the
    // table may be swapped meanwhile; a prefetch of a stale address is harmless), so the misses
    // overlap the clock read and the lock acquisition.
    void prefetch(std::uint32_t fp) const noexcept {
        const bucket* table = m_prefetch_table.load(std::memory_order_relaxed);
        const std::uint32_t n = m_prefetch_buckets.load(std::memory_order_relaxed);
        if (table == nullptr) return;
        const auto [a, b] = buckets_of(fp, n);
        __builtin_prefetch(table + a);
        __builtin_prefetch(table + b);
    }

    // The slot position holding an entry with hash bits `fp` for which `eq(idx)` holds, or nil.
    template <class Eq>
    [[nodiscard]] std::uint32_t find(std::uint32_t fp, Eq&& eq) const noexcept {
        if (m_size == 0) return session_nil;
        const auto [a, b] = buckets_of(fp, m_buckets);
        if (const std::uint32_t pos = find_in(a, fp, eq); pos != session_nil) return pos;
        if (b != a) {
            if (const std::uint32_t pos = find_in(b, fp, eq); pos != session_nil) return pos;
        }
        if (MEMGOV_LIKELY(m_overflow.empty())) return session_nil;
        return find_overflow(fp, eq);
    }

    // The slot position holding entry `idx` (whose hash bits are `fp`), or nil.
    [[nodiscard]] std::uint32_t find_index(std::uint32_t fp, std::uint32_t idx) const noexcept {
        return find(fp, [idx](std::uint32_t i) noexcept { return i == idx; });
    }

    // Makes room for one more entry with hash bits `fp`: afterwards one of its buckets has a
    // free slot (other entries' slots may have moved), or the overflow list has room. Throws
    // std::bad_alloc when the table must grow and cannot; the table is unchanged then, up to
    // such moves.
    void reserve_one(std::uint32_t fp) {
        if (m_table == nullptr ||
            (static_cast<std::uint64_t>(in_buckets()) + 1) * 10 > static_cast<std::uint64_t>(capacity()) * 9) {
            rehash(grown(m_buckets));
        }
        if (make_room(m_table.get(), m_buckets, fp)) return;
        // No chain of moves frees a slot. Past half full, growing is the cure; below, the
        // buckets are crowded by keys with the same hash bits, which no growth separates.
        if (static_cast<std::uint64_t>(in_buckets()) * 2 >= capacity()) {
            rehash(grown(m_buckets));
            if (make_room(m_table.get(), m_buckets, fp)) return;
        }
        reserve_overflow_one(m_overflow);
    }

    // Inserts; `reserve_one(fp)` must have made room and nothing else changed the table since.
    void insert(std::uint32_t fp, std::uint32_t idx) noexcept {
        place(m_table.get(), m_buckets, m_overflow, session_slot{fp, idx});
        ++m_size;
    }

    void replace_at(std::uint32_t pos, std::uint32_t idx) noexcept { mutable_slot(pos).idx = idx; }

    // Removes the entry at `pos`.
    void erase_at(std::uint32_t pos) noexcept {
        if (pos >= capacity()) {
            m_overflow[pos - capacity()] = m_overflow.back();
            m_overflow.pop_back();
        } else {
            mutable_slot(pos).idx = session_nil;
        }
        --m_size;
        maybe_shrink();
    }

    void clear() noexcept {
        m_table.reset();
        m_buckets = 0;
        m_size = 0;
        std::vector<session_slot>{}.swap(m_overflow);
        publish();
    }

private:
    struct alignas(64) bucket {
        std::array<session_slot, bucket_slots> slots;
    };
    static_assert(sizeof(bucket) == 64);
    // `new bucket[n]` then allocates exactly `n * sizeof(bucket)` (no array cookie), which is
    // what `memory_bytes` reports.
    static_assert(std::is_trivially_destructible_v<bucket>);

    // The most slots a search for room examines before the table grows instead.
    static constexpr std::uint32_t search_limit = 256;

    [[nodiscard]] static std::uint32_t grown(std::uint32_t n) noexcept {
        if (n < 8) return n == 0 ? min_buckets : n * 2;
        return n + n / 4;
    }

    [[nodiscard]] std::uint32_t in_buckets() const noexcept {
        return m_size - static_cast<std::uint32_t>(m_overflow.size());
    }

    session_slot& mutable_slot(std::uint32_t pos) noexcept {
        return const_cast<session_slot&>(std::as_const(*this).slot(pos));
    }

    // Makes room for one more entry on an overflow list, growing it geometrically.
    static void reserve_overflow_one(std::vector<session_slot>& overflow) {
        if (overflow.size() == overflow.capacity()) overflow.reserve(overflow.size() * 2 + 4);
    }

    // Puts `s` in a free slot of one of its buckets, or else on the overflow list, which must
    // then have room (reserved).
    static void place(bucket* table, std::uint32_t n, std::vector<session_slot>& overflow, session_slot s) noexcept {
        const auto [a, b] = buckets_of(s.fp, n);
        if (const std::uint32_t i = free_slot(table[a]); i != session_nil) {
            table[a].slots[i] = s;
        } else if (const std::uint32_t j = free_slot(table[b]); j != session_nil) {
            table[b].slots[j] = s;
        } else {
            MEMGOV_ASSERT(overflow.size() < overflow.capacity(), "session_index: no room reserved");
            overflow.push_back(s);
        }
    }

    template <class Eq>
    [[nodiscard]] MEMGOV_NOINLINE std::uint32_t find_overflow(std::uint32_t fp, Eq& eq) const noexcept {
        for (std::size_t i = 0; i < m_overflow.size(); ++i) {
            const session_slot s = m_overflow[i];
            if (s.fp == fp && eq(s.idx)) return capacity() + static_cast<std::uint32_t>(i);
        }
        return session_nil;
    }

    [[nodiscard]] static std::uint32_t free_slot(const bucket& b) noexcept {
        for (std::uint32_t i = 0; i < bucket_slots; ++i) {
            if (b.slots[i].idx == session_nil) return i;
        }
        return session_nil;
    }

    template <class Eq>
    [[nodiscard]] std::uint32_t find_in(std::uint32_t bk, std::uint32_t fp, Eq& eq) const noexcept {
        const bucket& b = m_table[bk];
        for (std::uint32_t i = 0; i < bucket_slots; ++i) {
            const session_slot s = b.slots[i];
            if (s.fp == fp && s.idx != session_nil && eq(s.idx)) return bk * bucket_slots + i;
        }
        return session_nil;
    }

    // Ensures one of `fp`'s buckets in `table` (of `n` buckets) has a free slot, moving other
    // slots to their other bucket along the shortest chain found (breadth-first, at most
    // `search_limit` slots examined). False when no chain was found: the table must grow.
    static bool make_room(bucket* table, std::uint32_t n, std::uint32_t fp) noexcept {
        const auto [a, b] = buckets_of(fp, n);
        if (free_slot(table[a]) != session_nil || free_slot(table[b]) != session_nil) return true;
        if (n == 1) return false;
        // Each step: a full slot (bucket, slot) whose entry could move to bucket `to`; `parent`
        // is the step that would then move into the slot this one frees (-1: a root bucket).
        struct step {
            std::uint32_t bucket;
            std::uint32_t slot;
            std::uint32_t to;
            std::int32_t parent;
        };
        std::array<step, search_limit> q;
        std::uint32_t tail = 0;
        auto push_bucket = [&](std::uint32_t bk, std::int32_t parent) noexcept {
            for (std::uint32_t i = 0; i < bucket_slots && tail < search_limit; ++i) {
                const auto [x, y] = buckets_of(table[bk].slots[i].fp, n);
                q[tail++] = step{bk, i, x == bk ? y : x, parent};
            }
        };
        push_bucket(a, -1);
        push_bucket(b, -1);
        // Whether bucket `bk` is already on the chain ending at step `k`. A chain never enters
        // a bucket twice, so each of its moves places an entry in one of its own buckets.
        auto on_chain = [&](std::uint32_t bk, std::int32_t k) noexcept {
            for (; k >= 0; k = q[static_cast<std::size_t>(k)].parent) {
                if (q[static_cast<std::size_t>(k)].bucket == bk) return true;
            }
            return false;
        };
        for (std::uint32_t head = 0; head < tail; ++head) {
            const step& st = q[head];
            if (st.to == st.bucket) continue; // cannot leave: both choices are this bucket
            const std::uint32_t free = free_slot(table[st.to]);
            if (free == session_nil) {
                if (!on_chain(st.to, static_cast<std::int32_t>(head))) {
                    push_bucket(st.to, static_cast<std::int32_t>(head));
                }
                continue;
            }
            // Move the chain from its end: each slot into the one its successor freed.
            std::uint32_t dest_bucket = st.to;
            std::uint32_t dest_slot = free;
            for (std::int32_t k = static_cast<std::int32_t>(head); k >= 0; k = q[static_cast<std::size_t>(k)].parent) {
                const step& s = q[static_cast<std::size_t>(k)];
                table[dest_bucket].slots[dest_slot] = table[s.bucket].slots[s.slot];
                table[s.bucket].slots[s.slot].idx = session_nil;
                dest_bucket = s.bucket;
                dest_slot = s.slot;
            }
            return true;
        }
        return false;
    }

    // Rebuilds the table with `n` buckets. Entries that find no room (only keys crowding
    // on the same hash bits, at the load factors kept here) go to the overflow list.
    void rehash(std::uint32_t n) {
        if (static_cast<std::uint64_t>(n) * bucket_slots > 0xFFFFFFF0ULL) throw std::bad_alloc{};
        std::unique_ptr<bucket[]> fresh{new bucket[n]};
        for (std::uint32_t i = 0; i < n; ++i) {
            for (session_slot& s : fresh[i].slots) s = session_slot{0, session_nil};
        }
        std::vector<session_slot> overflow;
        overflow.reserve(m_overflow.size());
        auto move_in = [&](session_slot s) {
            if (!make_room(fresh.get(), n, s.fp)) reserve_overflow_one(overflow);
            place(fresh.get(), n, overflow, s);
        };
        for (std::uint32_t bk = 0; bk < m_buckets; ++bk) {
            for (const session_slot& s : m_table[bk].slots) {
                if (s.idx != session_nil) move_in(s);
            }
        }
        for (const session_slot& s : m_overflow) move_in(s);
        m_table = std::move(fresh);
        m_buckets = n;
        m_overflow.swap(overflow);
        publish();
    }

    void publish() noexcept {
        m_prefetch_table.store(m_table.get(), std::memory_order_relaxed);
        m_prefetch_buckets.store(m_buckets, std::memory_order_relaxed);
    }

    // Shrinks by half when an eighth full, so a map that once held a crowd does not keep a
    // table sized for it. Failure to allocate just keeps the bigger table.
    void maybe_shrink() noexcept {
        if (m_buckets > min_buckets && static_cast<std::uint64_t>(in_buckets()) * 8 < capacity()) {
            try {
                rehash(m_buckets / 2);
            } catch (...) {
            }
        }
    }

    std::unique_ptr<bucket[]> m_table;
    std::uint32_t m_buckets = 0;
    std::uint32_t m_size = 0;
    // Copies of the above readable without the lock, for `prefetch` only.
    std::atomic<const bucket*> m_prefetch_table{nullptr};
    std::atomic<std::uint32_t> m_prefetch_buckets{0};
    std::vector<session_slot> m_overflow; // entries with no room in their buckets; rarely any
};

} // namespace detail
MEMGOV_NAMESPACE_END
