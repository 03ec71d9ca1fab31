// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Process-wide instance ids: the key under which a thread finds its own slot or cache of one
/// ledger or pool (thread-local lookups and thread claims compare ids, never addresses, so a
/// new instance at a freed address is never taken for the old one).

#include <memgov/config.hpp>

#include <atomic>
#include <cstdint>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

/// A new id: nonzero (0 marks an empty lookup entry) and never handed out twice in the
/// process (one 64-bit counter shared by every kind of instance).
/// Thread safety: any thread. Complexity: O(1), one relaxed atomic add.
[[nodiscard]] inline std::uint64_t next_instance_id() noexcept {
    static std::atomic<std::uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
}

} // namespace detail
MEMGOV_NAMESPACE_END
