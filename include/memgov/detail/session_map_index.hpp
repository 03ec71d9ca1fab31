// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The lookup table of one `session_map` shard: open addressing over 8-byte slots (32 hash
/// bits + 32-bit entry index) with Robin Hood linear probing. A probe reads consecutive slots
/// of one cache line and only dereferences an entry whose 32 hash bits match, so a lookup costs
/// about one cache miss in the table and one in the entry. Robin Hood placement keeps probe
/// runs short and even at a high load factor: a miss stops at the first entry nearer its home
/// than the probe is, and deletion shifts back only the displaced run after the hole (no
/// tombstones). Growth and shrinking rehash from the stored hash bits without touching the
/// entries. Not thread-safe: the shard lock guards it.
///
/// The capacity need not be a power of two: an entry's home slot is `fp * capacity >> 32`
/// (Lemire's multiply-shift range reduction), so a growing table can grow by a quarter at a
/// time: its load factor stays between 0.7 and 0.875 instead of falling to 0.44 after each
/// doubling, which at a million entries saves about 6.5 bytes per entry.

#include <memgov/config.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

inline constexpr std::uint32_t session_nil = 0xFFFFFFFFU;

struct session_slot {
    std::uint32_t fp;  // low 32 bits of the entry's mixed hash
    std::uint32_t idx; // entry index, session_nil when the slot is empty
};

class session_index {
public:
    static constexpr std::uint32_t min_capacity = 8;

    session_index() noexcept = default;
    session_index(const session_index&) = delete;
    session_index& operator=(const session_index&) = delete;
    ~session_index() = default;

    [[nodiscard]] std::uint32_t size() const noexcept { return m_size; }
    [[nodiscard]] std::uint32_t capacity() const noexcept { return m_cap; }
    [[nodiscard]] const session_slot& slot(std::uint32_t pos) const noexcept { return m_slots[pos]; }
    [[nodiscard]] std::size_t memory_bytes() const noexcept {
        return static_cast<std::size_t>(capacity()) * sizeof(session_slot);
    }

    // The home slot of hash bits `fp` in a table of `cap` slots.
    [[nodiscard]] static std::uint32_t home(std::uint32_t fp, std::uint32_t cap) noexcept {
        return static_cast<std::uint32_t>((static_cast<std::uint64_t>(fp) * cap) >> 32);
    }
    // The slot after `pos`, wrapping around.
    [[nodiscard]] std::uint32_t next(std::uint32_t pos) const noexcept {
        return pos + 1 == m_cap ? 0 : pos + 1;
    }
    // How far the slot at `pos` (holding hash bits `fp`) is from its home.
    [[nodiscard]] static std::uint32_t distance(std::uint32_t pos, std::uint32_t fp, std::uint32_t cap) noexcept {
        const std::uint32_t h = home(fp, cap);
        return pos >= h ? pos - h : pos + cap - h;
    }

    // Starts loading the slot a lookup of `fp` begins at. Called without the shard lock (the
    // table may be swapped meanwhile; a prefetch of a stale address is harmless), so the miss
    // overlaps the clock read and the lock acquisition.
    void prefetch(std::uint32_t fp) const noexcept {
        const session_slot* slots = m_prefetch_base.load(std::memory_order_relaxed);
        const std::uint32_t cap = m_prefetch_cap.load(std::memory_order_relaxed);
        if (slots != nullptr) __builtin_prefetch(slots + home(fp, cap));
    }

    // The slot position holding an entry with hash bits `fp` for which `eq(idx)` holds, or nil.
    template <class Eq>
    [[nodiscard]] std::uint32_t find(std::uint32_t fp, Eq&& eq) const noexcept {
        if (m_slots == nullptr) return session_nil;
        std::uint32_t pos = home(fp, m_cap);
        for (std::uint32_t dist = 0;; ++dist) {
            const session_slot s = m_slots[pos];
            if (s.idx == session_nil) return session_nil;
            if (s.fp == fp) {
                if (eq(s.idx)) return pos;
            } else if (distance(pos, s.fp, m_cap) < dist) {
                return session_nil; // an entry nearer its home: ours would have displaced it
            }
            pos = next(pos);
        }
    }

    // The slot position holding entry `idx` (whose hash bits are `fp`), or nil.
    [[nodiscard]] std::uint32_t find_index(std::uint32_t fp, std::uint32_t idx) const noexcept {
        return find(fp, [idx](std::uint32_t i) noexcept { return i == idx; });
    }

    // Makes room for one more entry. Throws std::bad_alloc (nothing changes then).
    void reserve_one() {
        const std::uint64_t cap = capacity();
        if ((static_cast<std::uint64_t>(m_size) + 1) * 8 > cap * 7) {
            // Double while small, then grow by a quarter (rounded to whole cache lines).
            const std::uint64_t want = cap == 0 ? min_capacity : cap < 64 ? cap * 2 : (cap + cap / 4 + 7) & ~std::uint64_t{7};
            if (want > 0xFFFFFFF8U) throw std::bad_alloc{};
            rehash(static_cast<std::uint32_t>(want));
        }
    }

    // Inserts; `reserve_one` must have made room.
    void insert(std::uint32_t fp, std::uint32_t idx) noexcept {
        place(m_slots.get(), m_cap, fp, idx);
        ++m_size;
    }

    void replace_at(std::uint32_t pos, std::uint32_t idx) noexcept { m_slots[pos].idx = idx; }

    // Removes the entry at `pos`, shifting back the run of displaced entries after it: the
    // shift stops at an empty slot or at an entry already in its home.
    void erase_at(std::uint32_t pos) noexcept {
        std::uint32_t hole = pos;
        for (;;) {
            const std::uint32_t j = next(hole);
            const session_slot s = m_slots[j];
            if (s.idx == session_nil || distance(j, s.fp, m_cap) == 0) break;
            m_slots[hole] = s;
            hole = j;
        }
        m_slots[hole].idx = session_nil;
        --m_size;
        maybe_shrink();
    }

    void clear() noexcept {
        m_slots.reset();
        m_cap = 0;
        m_size = 0;
        publish();
    }

private:
    // Robin Hood insertion: walking from the home slot, the entry takes the place of the
    // first one nearer its own home, which then continues the walk in its stead. So probe
    // lengths stay even, a miss stops early and an erasure shifts back only a short run.
    static void place(session_slot* slots, std::uint32_t cap, std::uint32_t fp,
                      std::uint32_t idx) noexcept {
        session_slot carry{fp, idx};
        std::uint32_t pos = home(fp, cap);
        for (std::uint32_t dist = 0;; ++dist) {
            session_slot& s = slots[pos];
            if (s.idx == session_nil) {
                s = carry;
                return;
            }
            const std::uint32_t d = distance(pos, s.fp, cap);
            if (d < dist) {
                std::swap(s, carry);
                dist = d;
            }
            pos = pos + 1 == cap ? 0 : pos + 1;
        }
    }

    void rehash(std::uint32_t new_cap) {
        std::unique_ptr<session_slot[]> fresh{new session_slot[new_cap]};
        for (std::uint32_t i = 0; i < new_cap; ++i) fresh[i] = session_slot{0, session_nil};
        const std::uint32_t cap = capacity();
        for (std::uint32_t i = 0; i < cap; ++i) {
            const session_slot s = m_slots[i];
            if (s.idx != session_nil) place(fresh.get(), new_cap, s.fp, s.idx);
        }
        m_slots = std::move(fresh);
        m_cap = new_cap;
        publish();
    }

    void publish() noexcept {
        m_prefetch_base.store(m_slots.get(), std::memory_order_relaxed);
        m_prefetch_cap.store(m_cap, std::memory_order_relaxed);
    }

    // Shrinks by half when an eighth full, so a map that once held a crowd does not keep a
    // table sized for it. Failure to allocate just keeps the bigger table.
    void maybe_shrink() noexcept {
        const std::uint32_t cap = capacity();
        if (cap > min_capacity && static_cast<std::uint64_t>(m_size) * 8 < cap) {
            try {
                rehash(std::max(min_capacity, cap / 2));
            } catch (...) {
            }
        }
    }

    std::unique_ptr<session_slot[]> m_slots;
    std::uint32_t m_cap = 0;
    std::uint32_t m_size = 0;
    // Copies of the above readable without the lock, for `prefetch` only.
    std::atomic<const session_slot*> m_prefetch_base{nullptr};
    std::atomic<std::uint32_t> m_prefetch_cap{0};
};

} // namespace detail
MEMGOV_NAMESPACE_END
