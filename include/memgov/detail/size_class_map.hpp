// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Maps a request size to the smallest size class that holds it, in O(1) for power-of-two
/// class tables and in a few compares otherwise, with no data-dependent loop for the default
/// classes (so random request sizes cost no branch mispredictions beyond the class choice).

#include <memgov/config.hpp>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

/// Most size classes a pool may have.
inline constexpr std::size_t size_class_max_count = 32;

/// A table of size classes, strictly increasing. The caller validates the sizes.
class size_class_map {
public:
    size_class_map() noexcept = default;

    // Precondition: 1 <= sizes.size() <= size_class_max_count, sizes strictly increasing, > 0.
    explicit size_class_map(std::span<const std::size_t> sizes) noexcept : m_count{sizes.size()} {
        for (std::size_t i = 0; i < m_count; ++i) m_sizes[i] = sizes[i];
        m_largest = m_count == 0 ? 0 : sizes[m_count - 1];
        // Bucket w holds the requests n with bit_width(n - 1) == w, that is n in
        // (2^(w-1), 2^w]; its smallest request is 2^(w-1) + 1 (0 for bucket 0).
        for (std::size_t w = 0; w < m_first.size(); ++w) {
            const std::size_t min_n = w == 0 ? 0 : (std::size_t{1} << (w - 1)) + 1;
            std::size_t i = 0;
            while (i < m_count && m_sizes[i] < min_n) ++i;
            m_first[w] = static_cast<std::uint8_t>(i);
        }
    }

    /// Number of classes.
    [[nodiscard]] std::size_t count() const noexcept { return m_count; }
    /// The largest class size.
    [[nodiscard]] std::size_t largest() const noexcept { return m_largest; }
    /// The size of class `i` (precondition: i < count()).
    [[nodiscard]] std::size_t size_of(std::size_t i) const noexcept { return m_sizes[i]; }

    /// The index of the smallest class whose size is >= n, or count() when n is larger than
    /// every class. A request of 0 maps to the first class.
    [[nodiscard]] std::size_t index_for(std::size_t n) const noexcept {
        if (MEMGOV_UNLIKELY(n > m_largest)) return m_count;
        // n - (n != 0) keeps n == 0 in bucket 0 without a branch.
        const auto w = static_cast<std::size_t>(std::bit_width(n - static_cast<std::size_t>(n != 0)));
        std::size_t i = m_first[w];
        // Only non-power-of-two tables ever loop here; n <= largest bounds the walk.
        while (m_sizes[i] < n) ++i;
        return i;
    }

private:
    std::array<std::size_t, size_class_max_count> m_sizes{};
    std::array<std::uint8_t, 65> m_first{};
    std::size_t m_count = 0;
    std::size_t m_largest = 0;
};

} // namespace detail
MEMGOV_NAMESPACE_END
