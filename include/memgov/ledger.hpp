// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Byte accounting by category: every memgov component charges what it holds and releases what
/// it gives back, and the pressure monitor reads the total between its samples.
///
/// ## Design
/// A category is one counter of the ledger's `detail::thread_counters`
/// (detail/thread_counters.hpp). Each thread that charges a ledger owns one *slot*: a
/// cache-line aligned array of counters, one per category. Only the owning thread writes its
/// slot, so a charge is a relaxed load and a relaxed store to a line no other thread writes (no
/// locked instruction, no sharing). Readers sum the slots with relaxed loads. A thread finds its
/// slot through a small thread-local cache keyed by a unique id; the first charge from a thread
/// takes a mutex once to claim a slot. When the thread exits its slot goes back to a free list,
/// keeping its value (slots hold partial sums, so whichever thread adopts it next simply
/// continues the sum).
///
/// Past `max_slots` concurrent threads, or if claiming a slot fails to allocate, charges fall
/// back to one shared overflow slot updated with atomic adds: slower, never lost.
///
/// ## Counted and attribution categories
/// A category is either *counted* (its bytes are memory no other category charges) or an
/// *attribution* (it says who holds memory that a counted category already has). `total()`
/// sums counted categories only, so the pressure monitor's estimate never counts one byte
/// twice. Object pools and session maps charge every allocation they make for themselves,
/// byte for byte as asked of the allocator (a pooled object's own heap is charged as its
/// `retained_bytes()` reports it); buffer pools charge their buffers' capacities as asked of
/// their upstream. The built-in defaults:
///
/// | category          | default     | what it holds                                            |
/// |-------------------|-------------|----------------------------------------------------------|
/// | `pool_idle`       | counted     | idle pool buffers (depots, thread caches)                |
/// | `pool_in_use`     | counted     | pool buffers handed out (window chunks among them)       |
/// | `objects`         | counted     | object pools' own storage (shared state, slot blocks with|
/// |                   |             | every slot's header and object, thread caches) and the   |
/// |                   |             | heap their objects retain beyond their slots             |
/// | `session_storage` | counted     | session maps' own storage: shards, node slabs and the    |
/// |                   |             | vectors holding them, lookup tables                      |
/// | `sessions`        | attribution | session costs (for windows: their chunks, `pool_in_use`) |
/// | `windows`         | attribution | chunks held by sliding windows (`pool_in_use`)           |
/// | `kafka_inflight`  | attribution | chunks handed to a producer (still `pool_in_use`)        |
///
/// User categories are counted unless defined otherwise. `set_counted` changes any of them:
/// for example, make `sessions` counted when session costs are memory no pool charges (the
/// session's own heap state), or `kafka_inflight` counted when the producer copies the bytes
/// into buffers of its own.
///
/// Thread safety: `charge`, `release`, `total`, `bytes` and `snapshot` are safe from any number
/// of threads. Sums read while other threads charge are a consistent-enough snapshot: each
/// counter is read atomically, the set of counters is not read at one instant. When no thread
/// is charging, reads are exact.

#include <memgov/config.hpp>
#include <memgov/detail/thread_counters.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

MEMGOV_NAMESPACE_BEGIN

/// A byte-accounting category. The built-in ones are named here; user-defined categories are
/// made by `ledger::define` and take the indices from `category::first_user` on.
enum class category : std::uint8_t {
    pool_idle = 0,       ///< Idle buffers kept by buffer pools (depots and thread caches).
    pool_in_use = 1,     ///< Pooled buffers handed out and not yet returned.
    sessions = 2,        ///< Byte cost of live sessions in session maps (attribution).
    windows = 3,         ///< Bytes held by sliding windows (attribution).
    objects = 4,         ///< Object pools' storage (slot blocks, caches) and their objects' heap.
    kafka_inflight = 5,  ///< Bytes handed to a Kafka producer, not yet acknowledged (attribution).
    session_storage = 6, ///< Session maps' own storage: shards, node slabs, lookup tables.
    first_user = 7       ///< The index of the first user-defined category.
};

namespace detail {

inline constexpr std::size_t ledger_max_categories = thread_counters::counter_count;

// A ledger's names and counted set. The bytes are in the ledger's `thread_counters`.
struct ledger_state {
    std::mutex mutex; // guards names
    std::array<std::string, ledger_max_categories> names;
    std::atomic<std::size_t> category_count{0};
    std::atomic<std::uint32_t> counted_mask{0}; // bit i: category i counts in total()
};

} // namespace detail

/// A point-in-time copy of a ledger's counters.
struct ledger_snapshot {
    /// One category's name and bytes.
    struct entry {
        std::string name;
        std::int64_t bytes;
        bool counted; ///< False for an attribution (not part of `total`).
    };
    std::vector<entry> categories; ///< Every defined category, in index order.
    std::int64_t total = 0;        ///< Sum over the counted categories.
};

/// Byte accounting by category, built for a hot path: a charge is a plain add on a counter the
/// calling thread owns. See the file comment for the design.
class ledger {
public:
    /// Categories a ledger can hold, built-in and user-defined together.
    static constexpr std::size_t max_categories = detail::ledger_max_categories;
    /// Threads that get a private slot; more than this share one atomically updated slot.
    static constexpr std::size_t max_slots = detail::thread_counters::max_slots;

    /// An empty ledger with the built-in categories defined. Throws `std::bad_alloc` only.
    ledger() : m_state{std::make_unique<detail::ledger_state>()} {
        static constexpr std::array<std::string_view, 7> builtin{
            "pool_idle", "pool_in_use", "sessions", "windows", "objects", "kafka_inflight", "session_storage"};
        static_assert(builtin.size() == static_cast<std::size_t>(category::first_user));
        for (std::size_t i = 0; i < builtin.size(); ++i) m_state->names[i] = builtin[i];
        // Every index is counted unless it is an attribution, so bytes charged to an index no
        // `define` has named yet still show in total() (and in the snapshot, as "undefined").
        std::uint32_t mask = (std::uint32_t{1} << max_categories) - 1U;
        // Attributions: the pool already counts these bytes as pool_in_use (see the file comment).
        for (const category a : {category::sessions, category::windows, category::kafka_inflight}) {
            mask &= ~(1U << static_cast<unsigned>(a));
        }
        m_state->counted_mask.store(mask, std::memory_order_release);
        m_state->category_count.store(builtin.size(), std::memory_order_release);
    }
    ledger(const ledger&) = delete;
    ledger& operator=(const ledger&) = delete;
    ~ledger() = default;

    /// Defines a user category named `name` and returns it. `counted` false makes it an
    /// attribution (not part of `total()`, see the file comment).
    /// Throws `std::invalid_argument` if `name` is empty, already defined, or all
    /// `max_categories` are taken.
    /// Thread safety: safe with concurrent charges and other definitions. Complexity: O(categories).
    category define(std::string_view name, bool counted = true) {
        if (name.empty()) throw std::invalid_argument{"memgov::ledger::define: name is empty"};
        std::lock_guard lock{m_state->mutex};
        const std::size_t n = m_state->category_count.load(std::memory_order_relaxed);
        for (std::size_t i = 0; i < n; ++i) {
            if (m_state->names[i] == name) {
                throw std::invalid_argument{"memgov::ledger::define: name '" + std::string{name} +
                                            "' is already defined"};
            }
        }
        if (n >= max_categories) {
            throw std::invalid_argument{"memgov::ledger::define: all " + std::to_string(max_categories) +
                                        " categories are taken; cannot define '" + std::string{name} + "'"};
        }
        m_state->names[n] = std::string{name};
        if (counted)
            m_state->counted_mask.fetch_or(1U << n, std::memory_order_acq_rel);
        else
            m_state->counted_mask.fetch_and(~(1U << n), std::memory_order_acq_rel);
        m_state->category_count.store(n + 1, std::memory_order_release);
        return static_cast<category>(n);
    }

    /// Makes `c` counted (part of `total()`) or an attribution. Throws `std::invalid_argument`
    /// if `c` is not defined. Thread safety: safe; `total()` follows from its next call.
    void set_counted(category c, bool counted) {
        const auto i = static_cast<std::size_t>(c);
        if (i >= category_count()) {
            throw std::invalid_argument{"memgov::ledger::set_counted: category " + std::to_string(i) +
                                        " is not defined"};
        }
        if (counted)
            m_state->counted_mask.fetch_or(1U << i, std::memory_order_acq_rel);
        else
            m_state->counted_mask.fetch_and(~(1U << i), std::memory_order_acq_rel);
    }

    /// True if `c` is counted in `total()`. Thread safety: safe. Complexity: O(1).
    [[nodiscard]] bool counted(category c) const noexcept {
        const auto i = static_cast<std::size_t>(c);
        return i < max_categories && ((m_state->counted_mask.load(std::memory_order_acquire) >> i) & 1U) != 0;
    }

    /// The category named `name`, if defined. Thread safety: safe. Complexity: O(categories).
    [[nodiscard]] std::optional<category> find(std::string_view name) const {
        std::lock_guard lock{m_state->mutex};
        const std::size_t n = m_state->category_count.load(std::memory_order_relaxed);
        for (std::size_t i = 0; i < n; ++i) {
            if (m_state->names[i] == name) return static_cast<category>(i);
        }
        return std::nullopt;
    }

    /// The name of category `c` (empty if undefined). Thread safety: safe.
    [[nodiscard]] std::string name(category c) const {
        std::lock_guard lock{m_state->mutex};
        const auto i = static_cast<std::size_t>(c);
        return i < max_categories ? m_state->names[i] : std::string{};
    }

    /// Number of defined categories. Thread safety: safe. Complexity: O(1).
    [[nodiscard]] std::size_t category_count() const noexcept {
        return m_state->category_count.load(std::memory_order_acquire);
    }

    /// True if `c` is a built-in category or one made by `define`. Parts that take a category
    /// in their configuration check it with this at construction.
    /// Thread safety: safe. Complexity: O(1).
    [[nodiscard]] bool defined(category c) const noexcept { return static_cast<std::size_t>(c) < category_count(); }

    /// Adds `bytes` (which may be negative) to category `c`.
    /// A category index past `max_categories` is ignored (and asserts in debug builds).
    /// Thread safety: safe from any thread. Complexity: O(1); no allocation, lock, system call
    /// or locked instruction once the calling thread has its slot.
    void charge(category c, std::int64_t bytes) noexcept {
        const auto i = static_cast<std::size_t>(c);
        MEMGOV_ASSERT(i < max_categories, "ledger category out of range");
        if (MEMGOV_UNLIKELY(i >= max_categories)) return;
        m_counters.add(i, bytes);
    }

    /// Subtracts `bytes` from category `c`. Same guarantees as `charge`.
    void release(category c, std::int64_t bytes) noexcept { charge(c, -bytes); }

    /// Bytes currently charged to category `c`.
    /// Thread safety: safe. Complexity: O(threads that have charged this ledger).
    [[nodiscard]] std::int64_t bytes(category c) const noexcept {
        const auto i = static_cast<std::size_t>(c);
        if (i >= max_categories) return 0;
        return m_counters.sum(i);
    }

    /// Bytes charged over all counted categories (attributions are left out: their bytes are
    /// already in a counted category).
    /// Thread safety: safe. Complexity: O(threads × categories).
    [[nodiscard]] std::int64_t total() const noexcept {
        const std::uint32_t mask = m_state->counted_mask.load(std::memory_order_acquire);
        const std::array<std::int64_t, max_categories> sums = m_counters.sums();
        std::int64_t sum = 0;
        for (std::size_t i = 0; i < max_categories; ++i) {
            if (((mask >> i) & 1U) != 0) sum += sums[i];
        }
        return sum;
    }

    /// Every category's name and bytes, and the total. Allocates; not for the hot path.
    [[nodiscard]] ledger_snapshot snapshot() const {
        const std::array<std::int64_t, max_categories> sums = m_counters.sums();
        ledger_snapshot out;
        const std::uint32_t mask = m_state->counted_mask.load(std::memory_order_acquire);
        std::lock_guard lock{m_state->mutex};
        const std::size_t n = m_state->category_count.load(std::memory_order_relaxed);
        out.categories.reserve(n + 1);
        for (std::size_t i = 0; i < n; ++i) {
            const bool counted = ((mask >> i) & 1U) != 0;
            out.categories.push_back({m_state->names[i], sums[i], counted});
            if (counted) out.total += sums[i];
        }
        // Bytes charged to indices that no `define` named: shown, never lost.
        std::int64_t undefined = 0;
        for (std::size_t i = n; i < max_categories; ++i) undefined += sums[i];
        if (undefined != 0) {
            out.categories.push_back({"undefined", undefined, true});
            out.total += undefined;
        }
        return out;
    }

    /// Threads that currently hold or once held a private slot (the cost factor of reads).
    [[nodiscard]] std::size_t slot_count() const noexcept { return m_counters.slot_count(); }

private:
    detail::thread_counters m_counters; // one counter per category index
    // Out of line: `define`, `find` and `snapshot` lock its mutex, which must not share a cache
    // line with what every charge reads.
    std::unique_ptr<detail::ledger_state> m_state;
};

/// An RAII charge: charges its bytes on construction, releases them when destroyed or reset.
/// Move-only. A default-constructed token charges nothing.
/// Thread safety: a token is owned by one thread at a time; it may be moved to and destroyed
/// on another thread.
class [[nodiscard]] charge_token {
public:
    charge_token() noexcept = default;
    /// Charges `bytes` to `c` in `l`.
    charge_token(ledger& l, category c, std::int64_t bytes) noexcept : m_ledger{&l}, m_category{c}, m_bytes{bytes} {
        l.charge(c, bytes);
    }
    charge_token(charge_token&& o) noexcept
        : m_ledger{std::exchange(o.m_ledger, nullptr)}, m_category{o.m_category}, m_bytes{std::exchange(o.m_bytes, 0)} {
    }
    charge_token& operator=(charge_token&& o) noexcept {
        if (this != &o) {
            release();
            m_ledger = std::exchange(o.m_ledger, nullptr);
            m_category = o.m_category;
            m_bytes = std::exchange(o.m_bytes, 0);
        }
        return *this;
    }
    charge_token(const charge_token&) = delete;
    charge_token& operator=(const charge_token&) = delete;
    ~charge_token() { release(); }

    /// Changes the charged amount to `bytes`, charging only the difference.
    void resize(std::int64_t bytes) noexcept {
        if (m_ledger != nullptr) m_ledger->charge(m_category, bytes - m_bytes);
        m_bytes = bytes;
    }
    /// Releases the charge now; the token is then empty.
    void release() noexcept {
        if (m_ledger != nullptr) m_ledger->release(m_category, m_bytes);
        m_ledger = nullptr;
        m_bytes = 0;
    }
    /// The bytes this token holds charged.
    [[nodiscard]] std::int64_t bytes() const noexcept { return m_bytes; }
    /// The category charged.
    [[nodiscard]] category charged_category() const noexcept { return m_category; }
    /// True while the token holds a charge on a ledger.
    [[nodiscard]] explicit operator bool() const noexcept { return m_ledger != nullptr; }

private:
    ledger* m_ledger = nullptr;
    category m_category = category::pool_idle;
    std::int64_t m_bytes = 0;
};

MEMGOV_NAMESPACE_END
