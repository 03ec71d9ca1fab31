// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Platform detection, compiler helpers and library-wide constants. Every macro starts with
/// `MEMGOV_`.

#include <memgov/version.hpp>

#include <cstddef>

#if defined(__linux__)
/// 1 on Linux, where cgroups, /proc and PSI exist.
#define MEMGOV_LINUX 1
#else
#define MEMGOV_LINUX 0
#endif

#if defined(__GLIBC__)
/// 1 where glibc's `malloc_trim` is available.
#define MEMGOV_HAS_MALLOC_TRIM 1
#else
#define MEMGOV_HAS_MALLOC_TRIM 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MEMGOV_LIKELY(x) __builtin_expect(!!(x), 1)
#define MEMGOV_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MEMGOV_NOINLINE __attribute__((noinline))
#define MEMGOV_COLD __attribute__((cold, noinline))
#else
#define MEMGOV_LIKELY(x) (x)
#define MEMGOV_UNLIKELY(x) (x)
#define MEMGOV_NOINLINE
#define MEMGOV_COLD
#endif

#if defined(__SANITIZE_THREAD__)
#define MEMGOV_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MEMGOV_TSAN 1
#endif
#endif
#ifndef MEMGOV_TSAN
#define MEMGOV_TSAN 0
#endif

/// Debug-only assertion. Define MEMGOV_ENABLE_ASSERTS to force it on in release builds.
#if !defined(NDEBUG) || defined(MEMGOV_ENABLE_ASSERTS)
#include <cstdio>
#include <cstdlib>
#define MEMGOV_ASSERT(cond, msg)                                                                                       \
    do {                                                                                                               \
        if (MEMGOV_UNLIKELY(!(cond))) {                                                                                \
            std::fprintf(stderr, "memgov: assertion failed: %s (%s) at %s:%d\n", msg, #cond, __FILE__, __LINE__);      \
            std::abort();                                                                                              \
        }                                                                                                              \
    } while (false)
#define MEMGOV_ASSERTS_ENABLED 1
#else
#define MEMGOV_ASSERT(cond, msg) ((void)0)
#define MEMGOV_ASSERTS_ENABLED 0
#endif

MEMGOV_NAMESPACE_BEGIN
/// The size that keeps two independently written counters off one cache line. 64 bytes on
/// x86-64 and most ARM cores; 128 would also defeat the adjacent-line prefetcher but doubles
/// the footprint of every striped counter.
inline constexpr std::size_t cache_line_size = 64;
MEMGOV_NAMESPACE_END
