// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The lookup table of one `session_map` shard: open addressing with linear probing over
/// 8-byte slots (32 hash bits + 32-bit entry index). A probe reads consecutive slots of one
/// cache line and only dereferences an entry whose 32 hash bits match, so a lookup costs about
/// one cache miss in the table and one in the entry. Deletion shifts later entries back
/// (Knuth's algorithm R), so there are no tombstones. Growth and shrinking rehash from the
/// stored hash bits without touching the entries. Not thread-safe: the shard lock guards it.

#include <memgov/config.hpp>

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
    [[nodiscard]] std::uint32_t capacity() const noexcept { return m_slots ? m_mask + 1 : 0; }
    [[nodiscard]] const session_slot& slot(std::uint32_t pos) const noexcept { return m_slots[pos]; }
    [[nodiscard]] std::size_t memory_bytes() const noexcept {
        return static_cast<std::size_t>(capacity()) * sizeof(session_slot);
    }

    // Starts loading the slot a lookup of `fp` begins at. Called without the shard lock (the
    // table may be swapped meanwhile; a prefetch of a stale address is harmless), so the miss
    // overlaps the clock read and the lock acquisition.
    void prefetch(std::uint32_t fp) const noexcept {
        const session_slot* slots = m_prefetch_base.load(std::memory_order_relaxed);
        const std::uint32_t mask = m_prefetch_mask.load(std::memory_order_relaxed);
        if (slots != nullptr) __builtin_prefetch(slots + (fp & mask));
    }

    // The slot position holding an entry with hash bits `fp` for which `eq(idx)` holds, or nil.
    template <class Eq>
    [[nodiscard]] std::uint32_t find(std::uint32_t fp, Eq&& eq) const noexcept {
        if (m_slots == nullptr) return session_nil;
        std::uint32_t pos = fp & m_mask;
        for (;;) {
            const session_slot s = m_slots[pos];
            if (s.idx == session_nil) return session_nil;
            if (s.fp == fp && eq(s.idx)) return pos;
            pos = (pos + 1) & m_mask;
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
            rehash(cap == 0 ? min_capacity : static_cast<std::uint32_t>(cap * 2));
        }
    }

    // Inserts; `reserve_one` must have made room.
    void insert(std::uint32_t fp, std::uint32_t idx) noexcept {
        place(m_slots.get(), m_mask, fp, idx);
        ++m_size;
    }

    void replace_at(std::uint32_t pos, std::uint32_t idx) noexcept { m_slots[pos].idx = idx; }

    // Removes the entry at `pos`, shifting back the entries that probed past it.
    void erase_at(std::uint32_t pos) noexcept {
        std::uint32_t hole = pos;
        std::uint32_t j = pos;
        for (;;) {
            j = (j + 1) & m_mask;
            const session_slot s = m_slots[j];
            if (s.idx == session_nil) break;
            const std::uint32_t home = s.fp & m_mask;
            // The entry at j may move into the hole only if its home is not cyclically in
            // (hole, j]; otherwise it would land before its home and never be found.
            const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
            if (stays) continue;
            m_slots[hole] = s;
            hole = j;
        }
        m_slots[hole].idx = session_nil;
        --m_size;
        maybe_shrink();
    }

    void clear() noexcept {
        m_slots.reset();
        m_mask = 0;
        m_size = 0;
        publish();
    }

private:
    static void place(session_slot* slots, std::uint32_t mask, std::uint32_t fp,
                      std::uint32_t idx) noexcept {
        std::uint32_t pos = fp & mask;
        while (slots[pos].idx != session_nil) pos = (pos + 1) & mask;
        slots[pos] = session_slot{fp, idx};
    }

    void rehash(std::uint32_t new_cap) {
        std::unique_ptr<session_slot[]> fresh{new session_slot[new_cap]};
        for (std::uint32_t i = 0; i < new_cap; ++i) fresh[i] = session_slot{0, session_nil};
        const std::uint32_t new_mask = new_cap - 1;
        const std::uint32_t cap = capacity();
        for (std::uint32_t i = 0; i < cap; ++i) {
            const session_slot s = m_slots[i];
            if (s.idx != session_nil) place(fresh.get(), new_mask, s.fp, s.idx);
        }
        m_slots = std::move(fresh);
        m_mask = new_mask;
        publish();
    }

    void publish() noexcept {
        m_prefetch_base.store(m_slots.get(), std::memory_order_relaxed);
        m_prefetch_mask.store(m_mask, std::memory_order_relaxed);
    }

    // Shrinks by half when an eighth full, so a map that once held a crowd does not keep a
    // table sized for it. Failure to allocate just keeps the bigger table.
    void maybe_shrink() noexcept {
        const std::uint32_t cap = capacity();
        if (cap > min_capacity && static_cast<std::uint64_t>(m_size) * 8 < cap) {
            try {
                rehash(cap / 2);
            } catch (...) {
            }
        }
    }

    std::unique_ptr<session_slot[]> m_slots;
    std::uint32_t m_mask = 0;
    std::uint32_t m_size = 0;
    // Copies of the above readable without the lock, for `prefetch` only.
    std::atomic<const session_slot*> m_prefetch_base{nullptr};
    std::atomic<std::uint32_t> m_prefetch_mask{0};
};

} // namespace detail
MEMGOV_NAMESPACE_END
