// SPDX-License-Identifier: MIT
#pragma once

// The one way memgov reports a bad configuration field: `std::invalid_argument` whose message
// is "memgov::<config type>::<field>: <what must hold>", so a caller can tell which field of
// which configuration was wrong without reading the code.

#include <memgov/config.hpp>

#include <stdexcept>
#include <string>
#include <string_view>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

/// Throws `std::invalid_argument{"memgov::" + config + "::" + field + ": " + what}`.
/// Thread safety: pure. Throws: always.
[[noreturn]] inline void throw_bad_field(std::string_view config, std::string_view field, std::string_view what) {
    std::string message;
    message.reserve(10 + config.size() + field.size() + what.size());
    message.append("memgov::").append(config).append("::").append(field).append(": ").append(what);
    throw std::invalid_argument{message};
}

/// Throws as `throw_bad_field` unless `ok`.
/// Thread safety: pure. Throws: `std::invalid_argument` when `!ok`.
inline void require_field(bool ok, std::string_view config, std::string_view field, std::string_view what) {
    if (!ok) throw_bad_field(config, field, what);
}

} // namespace detail
MEMGOV_NAMESPACE_END
