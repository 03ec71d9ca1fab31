// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// One `session_map` entry as its shard stores it: the node (entry word, touch fields, key,
/// value, creation time, cost word and list links), the cost word's layout, the hash mix that
/// spreads keys over shards and table, and the buffer a new value is made in outside any lock.

#include <memgov/clock.hpp>
#include <memgov/config.hpp>
#include <memgov/detail/session_map_wheel.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <new>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

// wyhash-style mix: spreads weak hashes (std::hash of integers is the identity) over all
// 64 bits, since shards use the top bits and the table the low ones.
[[nodiscard]] inline std::uint64_t session_mix(std::uint64_t x) noexcept {
    __extension__ using u128 = unsigned __int128;
    const u128 r = static_cast<u128>(x) * 0x9E3779B97F4A7C15ULL;
    return static_cast<std::uint64_t>(r >> 64) ^ static_cast<std::uint64_t>(r);
}

[[nodiscard]] inline std::int64_t session_add_sat(std::int64_t t, duration d) noexcept {
    const std::int64_t c = d.count();
    if (c >= std::numeric_limits<std::int64_t>::max() - t) return std::numeric_limits<std::int64_t>::max();
    return t + c;
}

// The cost word of an entry: the cost in bytes in the low 60 bits, four flags above.
// Set once the entry is unlinked: its cost is no longer in the shard's total.
inline constexpr std::uint64_t session_detached_bit = std::uint64_t{1} << 63;
inline constexpr std::uint64_t session_no_evict_bit = std::uint64_t{1} << 62;
inline constexpr std::uint64_t session_ended_bit = std::uint64_t{1} << 61;
// Set by the sweep on an entry whose value check found it busy: evaluate it when next reached.
inline constexpr std::uint64_t session_recheck_bit = std::uint64_t{1} << 60;
inline constexpr std::uint64_t session_cost_mask = session_recheck_bit - 1;

// The cost part of a cost word.
[[nodiscard]] inline std::int64_t session_cost_of(std::uint64_t word) noexcept {
    return static_cast<std::int64_t>(word & session_cost_mask);
}
// A requested cost as stored: negative counts as 0, and it saturates at 2^60 - 1 bytes.
[[nodiscard]] inline std::uint64_t session_cost_bits(std::int64_t bytes) noexcept {
    if (bytes <= 0) return 0;
    const auto b = static_cast<std::uint64_t>(bytes);
    return b > session_cost_mask ? session_cost_mask : b;
}
inline constexpr std::int64_t session_never = std::numeric_limits<std::int64_t>::max();
// The coarse time of a map that has not been ticked yet: touches read the clock instead.
inline constexpr std::int64_t session_unticked = std::numeric_limits<std::int64_t>::min();

// One entry. Hot fields (touched by every `with`) first, then key and value, then the fields
// only structure operations use. Times are nanoseconds since the clock's epoch. An ended
// entry's end time is its `last_active`: ending counts as activity, so the grace period runs
// from the end or from the last activity after it, and the node needs no field of its own.
template <class Key, class Value>
struct session_node {
    std::atomic<std::uint32_t> state{0}; // detail::entry_state
    std::atomic<std::uint32_t> messages{0};
    std::atomic<std::int64_t> last_active{0};
    alignas(Key) unsigned char key_storage[sizeof(Key)];
    alignas(Value) unsigned char value_storage[sizeof(Value)];
    std::int64_t created = 0;           // written before the entry is published
    std::atomic<std::uint64_t> cost{0}; // bytes and the flags above (session_cost_mask)
    session_links wheel;                // expiry wheel (after unlink: .next = reason)
    session_links age;                  // creation order (when free: .next = free list)
    session_links bucket;               // cost bucket

    Key& key() noexcept { return *std::launder(reinterpret_cast<Key*>(key_storage)); }
    const Key& key() const noexcept { return *std::launder(reinterpret_cast<const Key*>(key_storage)); }
    Value& value() noexcept { return *std::launder(reinterpret_cast<Value*>(value_storage)); }
    std::uint32_t& free_link() noexcept { return age.next; }
};

template <class Value>
class session_value_buffer {
public:
    template <class Make>
    explicit session_value_buffer(Make& make) {
        ::new (static_cast<void*>(m_storage)) Value(std::invoke(make));
    }
    session_value_buffer(const session_value_buffer&) = delete;
    session_value_buffer& operator=(const session_value_buffer&) = delete;
    ~session_value_buffer() { get().~Value(); }
    Value& get() noexcept { return *std::launder(reinterpret_cast<Value*>(m_storage)); }

private:
    alignas(Value) unsigned char m_storage[sizeof(Value)];
};

} // namespace detail
MEMGOV_NAMESPACE_END
