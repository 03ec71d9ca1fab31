// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Intrusive lists over 32-bit entry indices and the hierarchical timer wheel a `session_map`
/// shard keeps its entries' next deadlines in. Neither is thread-safe: the shard lock guards
/// both.
///
/// A list is an array of heads plus a `session_links` pair in every entry. An entry's `prev`
/// is either another entry or `session_head_base + list`, so an entry can be unlinked without
/// knowing which list it is on, and an entry on no list has `prev == session_nil`.
///
/// The wheel follows the hashed hierarchical design of Varghese & Lauck as Tokio implements
/// it: six levels of 64 slots, level L slot s covering 64^L ticks; an entry goes to the level
/// of the highest bit in which its deadline differs from the wheel's current time. A 64-bit
/// occupancy mask per level finds the next non-empty slot in O(1), so advancing over idle time
/// costs nothing. Processing a slot above level 0 re-files its entries lower down (each entry
/// moves at most six times over its life). Entries whose deadline has already passed go to a
/// separate "due" list. A sweep parks the entries it must not meet again in the same pass (those
/// due later within the current tick) on a separate "parked" list, and files them again when
/// the pass ends.

#include <memgov/config.hpp>
#include <memgov/detail/session_map_index.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <optional>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

inline constexpr std::uint32_t session_head_base = 0xFFFF0000U;
// Entry indices stay below this, so they never collide with head markers or nil.
inline constexpr std::uint32_t session_max_index = session_head_base;

struct session_links {
    std::uint32_t prev = session_nil;
    std::uint32_t next = session_nil;
};

[[nodiscard]] inline bool session_linked(const session_links& l) noexcept { return l.prev != session_nil; }

template <class Get>
void session_list_push_front(std::uint32_t* heads, std::uint32_t list, std::uint32_t idx, Get&& get) noexcept {
    session_links& l = get(idx);
    l.prev = session_head_base + list;
    l.next = heads[list];
    if (l.next != session_nil) get(l.next).prev = idx;
    heads[list] = idx;
}

// Unlinks `idx`; returns the list id if it was that list's head, else nil.
template <class Get>
std::uint32_t session_list_unlink(std::uint32_t* heads, std::uint32_t idx, Get&& get) noexcept {
    session_links& l = get(idx);
    std::uint32_t head_of = session_nil;
    if (l.prev >= session_head_base) {
        head_of = l.prev - session_head_base;
        heads[head_of] = l.next;
    } else {
        get(l.prev).next = l.next;
    }
    if (l.next != session_nil) get(l.next).prev = l.prev;
    l.prev = session_nil;
    l.next = session_nil;
    return head_of;
}

// A FIFO list with head and tail (the shard's creation-order list).
struct session_fifo {
    std::uint32_t head = session_nil;
    std::uint32_t tail = session_nil;

    template <class Get>
    void push_back(std::uint32_t idx, Get&& get) noexcept {
        session_links& l = get(idx);
        l.next = session_nil;
        if (tail == session_nil) {
            l.prev = session_head_base;
            head = idx;
        } else {
            l.prev = tail;
            get(tail).next = idx;
        }
        tail = idx;
    }

    template <class Get>
    void unlink(std::uint32_t idx, Get&& get) noexcept {
        session_links& l = get(idx);
        if (l.next == session_nil) tail = l.prev >= session_head_base ? session_nil : l.prev;
        session_list_unlink(&head, idx, get);
    }
};

class session_wheel {
public:
    static constexpr unsigned level_bits = 6;
    static constexpr unsigned levels = 6;
    static constexpr unsigned slots = 1U << level_bits;
    static constexpr std::uint32_t due_list = levels * slots;
    static constexpr std::uint32_t parked_list = due_list + 1;
    static constexpr std::uint64_t max_span = std::uint64_t{1} << (level_bits * levels);

    struct expiration {
        std::uint32_t list;
        std::uint64_t deadline;
        unsigned level;
    };

    session_wheel() noexcept { m_heads.fill(session_nil); }

    [[nodiscard]] std::uint64_t elapsed() const noexcept { return m_elapsed; }
    void advance_to(std::uint64_t t) noexcept { m_elapsed = std::max(m_elapsed, t); }
    [[nodiscard]] std::uint32_t head(std::uint32_t list) const noexcept { return m_heads[list]; }

    // Files `idx` under tick `when` (already past: the due list).
    template <class Get>
    void insert(std::uint32_t idx, std::uint64_t when, Get&& get) noexcept {
        std::uint32_t list = due_list;
        if (when > m_elapsed) {
            // Keep within the top level's span; an entry clamped here is re-filed when reached.
            when = std::min(when, m_elapsed | (max_span - 1));
            const unsigned level = level_for(m_elapsed, when);
            const unsigned slot = static_cast<unsigned>(when >> (level * level_bits)) & (slots - 1);
            list = level * slots + slot;
            m_occupied[level] |= std::uint64_t{1} << slot;
        }
        session_list_push_front(m_heads.data(), list, idx, get);
    }

    template <class Get>
    void remove(std::uint32_t idx, Get&& get) noexcept {
        const std::uint32_t list = session_list_unlink(m_heads.data(), idx, get);
        if (list != session_nil && list < due_list && m_heads[list] == session_nil) {
            m_occupied[list / slots] &= ~(std::uint64_t{1} << (list % slots));
        }
    }

    // Puts `idx` on the parked list, which `next_due` never returns.
    template <class Get>
    void park(std::uint32_t idx, Get&& get) noexcept {
        session_list_push_front(m_heads.data(), parked_list, idx, get);
    }

    // Unlinks and returns the first entry of `list` (nil when empty).
    template <class Get>
    std::uint32_t pop(std::uint32_t list, Get&& get) noexcept {
        const std::uint32_t idx = m_heads[list];
        if (idx != session_nil) remove(idx, get);
        return idx;
    }

    // The non-empty list with the earliest deadline, if that deadline is at or before `now`.
    // Every level is looked at: once a slot above level 0 has been partly re-filed, the lower
    // levels may hold later deadlines than what is left in it. Ties go to the lower level.
    [[nodiscard]] std::optional<expiration> next_due(std::uint64_t now) const noexcept {
        if (m_heads[due_list] != session_nil) return expiration{due_list, m_elapsed, 0};
        std::optional<expiration> best;
        for (unsigned level = 0; level < levels; ++level) {
            const std::uint64_t occ = m_occupied[level];
            if (occ == 0) continue;
            const unsigned shift = level * level_bits;
            const unsigned now_slot = static_cast<unsigned>(m_elapsed >> shift) & (slots - 1);
            const unsigned zeros = static_cast<unsigned>(std::countr_zero(std::rotr(occ, static_cast<int>(now_slot))));
            const unsigned slot = (now_slot + zeros) & (slots - 1);
            const std::uint64_t level_range = std::uint64_t{1} << (shift + level_bits);
            const std::uint64_t level_start = m_elapsed & ~(level_range - 1);
            std::uint64_t deadline = level_start + (std::uint64_t{slot} << shift);
            if (slot < now_slot) deadline += level_range; // not expected: entries stay in-span
            if (!best || deadline < best->deadline) best = expiration{level * slots + slot, deadline, level};
        }
        if (!best || best->deadline > now) return std::nullopt;
        return best;
    }

    // Whether any entry is filed at all.
    [[nodiscard]] bool empty() const noexcept {
        if (m_heads[due_list] != session_nil || m_heads[parked_list] != session_nil) return false;
        for (std::uint64_t occ : m_occupied) {
            if (occ != 0) return false;
        }
        return true;
    }

private:
    static unsigned level_for(std::uint64_t elapsed, std::uint64_t when) noexcept {
        std::uint64_t masked = (elapsed ^ when) | (slots - 1);
        if (masked >= max_span) masked = max_span - 1;
        const unsigned significant = 63U - static_cast<unsigned>(std::countl_zero(masked));
        return significant / level_bits;
    }

    std::uint64_t m_elapsed = 0;
    std::array<std::uint64_t, levels> m_occupied{};
    std::array<std::uint32_t, levels * slots + 2> m_heads{};
};

} // namespace detail
MEMGOV_NAMESPACE_END
