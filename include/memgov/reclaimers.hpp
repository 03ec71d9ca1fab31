// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Adapters that let the evictor (and so the governor) reclaim from memgov's own parts. This
/// header includes all three; prefer the per-adapter header, which compiles only its part:
///
/// | adapter | header | answers |
/// |---|---|---|
/// | `buffer_pool_reclaimer` | `memgov/reclaimers/buffer_pool.hpp` | trim_pools |
/// | `object_pool_reclaimer<Pool>` | `memgov/reclaimers/object_pool.hpp` | trim_pools |
/// | `session_map_reclaimer<Map>` | `memgov/reclaimers/session_map.hpp` | sweep_expired, evict_* |
///
/// What each does is described in its header. An adapter holds a reference: the part must
/// outlive its registration, so unregister the adapter (`governor::unregister_reclaimer`,
/// `evictor::remove`) before destroying the part, or destroy the governor first. Each adapter
/// also reports the part's statistics as metrics.

// Prefer the per-adapter headers: memgov/reclaimers/{buffer_pool,object_pool,session_map}.hpp.
#include <memgov/reclaimers/buffer_pool.hpp>
#include <memgov/reclaimers/object_pool.hpp>
#include <memgov/reclaimers/session_map.hpp>
