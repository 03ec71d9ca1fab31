// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The claims one thread holds on shared owners (a `thread_counters` slot, a pool's thread
/// cache), and their return when the thread exits.
///
/// A part that gives each thread a private resource keeps, per thread, a list of
/// {owner id, weak owner, claim}. The list lives in a `thread_local` whose destructor gives
/// every claim back to its owner if the owner still exists, so a thread that exits returns
/// its slots and caches, and an owner destroyed first is simply skipped. One such list exists
/// per `Tag`, which names the types and the two thread-exit steps:
///
/// ```
/// struct my_claims {
///     using owner_type = my_state;   // held through std::weak_ptr
///     using claim_type = my_cache;   // handed out as a pointer
///     static void on_thread_exit() noexcept;                 // e.g. forget the fast-path cache
///     static void give_back(owner_type&, claim_type*) noexcept;
/// };
/// ```
///
/// After the list's destructor has started, `exiting()` is true for the rest of the thread's
/// life: later thread-exit destructors that still use the part must take a path that claims
/// nothing (claiming then would leak the claim). Claiming allocates (the list grows) and is
/// for slow paths only; `find` never creates the list.

#include <memgov/config.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

template <class Tag>
class thread_claims {
public:
    using owner_type = typename Tag::owner_type;
    using claim_type = typename Tag::claim_type;

    /// True once this thread's list is being or has been destroyed.
    [[nodiscard]] static bool exiting() noexcept { return t_exiting; }

    /// The claim this thread holds on owner `id`, or nullptr. Never creates the list.
    [[nodiscard]] static claim_type* find(std::uint64_t id) noexcept {
        if (!t_alive) return nullptr;
        return find_in(list(), id);
    }

    /// The claim this thread holds on owner `id`, or else a new one from `claim()` (which may
    /// throw or return nullptr to decline), recorded for return at thread exit. nullptr when
    /// the thread is exiting, `claim` declined or threw, or memory ran out: callers fall back
    /// to a path that needs no claim.
    template <class Claim>
    [[nodiscard]] static claim_type* find_or_claim(std::uint64_t id, std::weak_ptr<owner_type> owner,
                                                   Claim&& claim) noexcept {
        if (t_exiting) return nullptr;
        try {
            registry& r = list();
            if (claim_type* c = find_in(r, id)) return c;
            std::erase_if(r.entries, [](const entry& e) { return e.owner.expired(); });
            r.entries.reserve(r.entries.size() + 1); // may throw before anything is claimed
            claim_type* c = std::forward<Claim>(claim)();
            if (c != nullptr) r.entries.push_back(entry{id, std::move(owner), c});
            return c;
        } catch (...) {
            return nullptr;
        }
    }

private:
    struct entry {
        std::uint64_t id;
        std::weak_ptr<owner_type> owner;
        claim_type* claim;
    };

    struct registry {
        std::vector<entry> entries;

        registry() noexcept { t_alive = true; }
        registry(const registry&) = delete;
        registry& operator=(const registry&) = delete;
        ~registry() {
            t_exiting = true;
            t_alive = false;
            Tag::on_thread_exit();
            for (entry& e : entries) {
                if (std::shared_ptr<owner_type> o = e.owner.lock()) Tag::give_back(*o, e.claim);
            }
        }
    };

    static registry& list() {
        thread_local registry r;
        return r;
    }

    static claim_type* find_in(registry& r, std::uint64_t id) noexcept {
        for (const entry& e : r.entries) {
            if (e.id == id) return e.claim;
        }
        return nullptr;
    }

    // Trivially destructible, so reading them costs no guard check.
    static inline thread_local bool t_alive = false;
    static inline thread_local bool t_exiting = false;
};

/// The slow path of a thread's small most-recently-used array of {id, ...} entries (id 0:
/// empty), in front of a `thread_claims` list: the entry for `id` from places 1.. of `t` (the
/// caller's fast path has checked place 0), or else from `miss()`, moved to the front and
/// returned. An entry from `miss()` with id 0 (nothing to remember) is returned uncached.
template <class Entry, std::size_t N, class Miss>
Entry mru_lookup(std::array<Entry, N>& t, std::uint64_t id, Miss&& miss) noexcept {
    Entry found{};
    std::size_t at = N - 1; // the entry that makes room
    for (std::size_t i = 1; i < N; ++i) {
        if (t[i].id == id) {
            found = t[i];
            at = i;
            break;
        }
    }
    if (found.id == 0) {
        found = std::forward<Miss>(miss)();
        if (found.id == 0) return found;
    }
    for (std::size_t i = at; i > 0; --i) t[i] = t[i - 1];
    t[0] = found;
    return found;
}

} // namespace detail
MEMGOV_NAMESPACE_END
