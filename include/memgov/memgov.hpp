// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The umbrella header: includes every public memgov component.

#include <memgov/version.hpp>
#include <memgov/config.hpp>
#include <memgov/clock.hpp>
#include <memgov/pressure_level.hpp>
#include <memgov/ledger.hpp>
