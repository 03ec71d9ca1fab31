// memgov — keeps long-lived, stateful Linux services alive and fast under memory pressure.
// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The one source of the library's version. CMake parses the three numbers below.

#define MEMGOV_VERSION_MAJOR 0
#define MEMGOV_VERSION_MINOR 1
#define MEMGOV_VERSION_PATCH 0

#define MEMGOV_DETAIL_STR2(x) #x
#define MEMGOV_DETAIL_STR(x) MEMGOV_DETAIL_STR2(x)
#define MEMGOV_DETAIL_NS_IMPL(major, minor) v##major##_##minor
#define MEMGOV_DETAIL_NS(major, minor) MEMGOV_DETAIL_NS_IMPL(major, minor)

/// The version as a string, "major.minor.patch".
#define MEMGOV_VERSION                                                                                                 \
    MEMGOV_DETAIL_STR(MEMGOV_VERSION_MAJOR)                                                                            \
    "." MEMGOV_DETAIL_STR(MEMGOV_VERSION_MINOR) "." MEMGOV_DETAIL_STR(MEMGOV_VERSION_PATCH)

/// The inline namespace that carries the ABI version (`v0_1` for 0.1.x). Two incompatible
/// versions of memgov linked into one binary then fail to link instead of silently mixing
/// layouts.
#define MEMGOV_ABI_NAMESPACE MEMGOV_DETAIL_NS(MEMGOV_VERSION_MAJOR, MEMGOV_VERSION_MINOR)

/// Opens `namespace memgov { inline namespace vX_Y {`.
#define MEMGOV_NAMESPACE_BEGIN                                                                                         \
    namespace memgov {                                                                                                 \
    inline namespace MEMGOV_ABI_NAMESPACE {
/// Closes what MEMGOV_NAMESPACE_BEGIN opened.
#define MEMGOV_NAMESPACE_END                                                                                           \
    }                                                                                                                  \
    }

MEMGOV_NAMESPACE_BEGIN
/// The library's version, as numbers, for run-time checks and diagnostics.
struct version_info {
    int major;
    int minor;
    int patch;
};
/// The version this header was compiled with.
inline constexpr version_info version{MEMGOV_VERSION_MAJOR, MEMGOV_VERSION_MINOR, MEMGOV_VERSION_PATCH};
/// The version as "major.minor.patch".
inline constexpr const char* version_string = MEMGOV_VERSION;
MEMGOV_NAMESPACE_END
