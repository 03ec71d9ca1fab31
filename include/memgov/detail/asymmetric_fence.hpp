// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// An asymmetric store-load fence: a free one for a frequent side and a costly one for a rare
/// side, which together order like two full fences (Dekker's pattern). The frequent side
/// (`light`) is a compiler barrier; the rare side (`heavy`) is Linux's
/// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which runs a full fence on every CPU that is
/// running a thread of this process (a CPU switching threads fences anyway).
///
/// `asymmetric_fence_available()` registers the process for that command once and says
/// whether it worked (it needs Linux ≥ 4.14 and a seccomp policy that allows it; valgrind
/// does not pass it through). Callers read it once, store the answer next to the data the
/// fence guards, and use the symmetric form (`std::memory_order_seq_cst` on both sides) when it
/// is false. ThreadSanitizer does not model the system call, so under TSan it is always false.

#include <memgov/config.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#if MEMGOV_LINUX && !MEMGOV_TSAN
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if MEMGOV_LINUX && !MEMGOV_TSAN && defined(SYS_membarrier)
#define MEMGOV_HAS_ASYMMETRIC_FENCE 1
#else
#define MEMGOV_HAS_ASYMMETRIC_FENCE 0
#endif

MEMGOV_NAMESPACE_BEGIN
namespace detail {

#if MEMGOV_HAS_ASYMMETRIC_FENCE
// From <linux/membarrier.h>, which not every libc's kernel headers carry.
inline constexpr int membarrier_cmd_query = 0;
inline constexpr int membarrier_cmd_private_expedited = 1 << 3;
inline constexpr int membarrier_cmd_register_private_expedited = 1 << 4;

/// True if `asymmetric_fence_heavy()` works in this process. The first call registers the
/// process (one or two system calls); later calls read a static. Thread safety: any thread.
[[nodiscard]] inline bool asymmetric_fence_available() noexcept {
    static const bool available = [] {
        const long cmds = ::syscall(SYS_membarrier, membarrier_cmd_query, 0, 0);
        constexpr long needed = membarrier_cmd_private_expedited | membarrier_cmd_register_private_expedited;
        if (cmds < 0 || (cmds & needed) != needed) return false;
        return ::syscall(SYS_membarrier, membarrier_cmd_register_private_expedited, 0, 0) == 0;
    }();
    return available;
}

/// The rare side: a full fence on every CPU running a thread of this process. Only after
/// `asymmetric_fence_available()` returned true. About a microsecond; a system call.
inline void asymmetric_fence_heavy() noexcept {
    for (;;) {
        if (::syscall(SYS_membarrier, membarrier_cmd_private_expedited, 0, 0) == 0) return;
        if (errno != EINTR) break;
    }
    // Registered commands do not fail; if one does, the light side's ordering is gone and
    // continuing could hand one object to two threads.
    std::fputs("memgov: membarrier(PRIVATE_EXPEDITED) failed after registration\n", stderr);
    std::abort();
}
#else
[[nodiscard]] inline bool asymmetric_fence_available() noexcept { return false; }
inline void asymmetric_fence_heavy() noexcept {}
#endif

} // namespace detail
MEMGOV_NAMESPACE_END
