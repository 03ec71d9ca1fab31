// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The umbrella header: includes every public memgov component.

#include <memgov/buffer_pool.hpp>
#include <memgov/cgroup.hpp>
#include <memgov/clock.hpp>
#include <memgov/config.hpp>
#include <memgov/evictor.hpp>
#include <memgov/governor.hpp>
#include <memgov/ledger.hpp>
#include <memgov/metrics.hpp>
#include <memgov/object_pool.hpp>
#include <memgov/pressure_level.hpp>
#include <memgov/pressure_monitor.hpp>
#include <memgov/prometheus.hpp>
#include <memgov/reclaimers/buffer_pool.hpp>
#include <memgov/reclaimers/object_pool.hpp>
#include <memgov/reclaimers/session_map.hpp>
#include <memgov/session_budget.hpp>
#include <memgov/session_map.hpp>
#include <memgov/sliding_window.hpp>
#include <memgov/version.hpp>
