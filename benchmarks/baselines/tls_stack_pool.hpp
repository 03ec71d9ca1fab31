// The cost floor of memgov's buffer_pool design: per size class, a bare thread-local stack of
// free blocks, and the least code that can serve a request from it. No statistics, no
// accounting, no depot, no trim, no bound on what a thread keeps, no pool object to reach (the
// stacks are a plain thread_local array), and the size-class lookup written inline for the
// default classes (4 KiB × 4^k, k = 0..4): a bit_width and a shift, no table. An
// acquire+release pair here is what no real pool with these classes can beat.
//
// An earlier version of this floor called memgov's own size_class_map (a table load and a
// loop) and so paid part of the cost it was meant to measure memgov against.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdlib>

namespace baseline {

class tls_stack_pool {
public:
    static constexpr std::size_t depth = 64;
    static constexpr std::size_t class_count = 5;
    static constexpr std::size_t smallest = 4096;
    static constexpr std::size_t largest = smallest << (2 * (class_count - 1)); // 1 MiB

    /// The class of a request of n >= 1 bytes: 0 for n <= 4 KiB, then one class per factor
    /// of 4; class_count when n > 1 MiB.
    static std::size_t class_of(std::size_t n) noexcept {
        if (n > largest) return class_count;
        return static_cast<std::size_t>(std::bit_width((n - 1) | (smallest - 1)) - 11) >> 1;
    }
    static constexpr std::size_t size_of(std::size_t c) noexcept { return smallest << (2 * c); }

    static void* acquire(std::size_t n) noexcept {
        const std::size_t c = class_of(n);
        if (c == class_count) return std::aligned_alloc(64, round_up(n));
        stack& s = t_stacks[c];
        if (s.count != 0) return s.items[--s.count];
        return std::aligned_alloc(64, size_of(c));
    }

    static void release(void* p, std::size_t n) noexcept {
        const std::size_t c = class_of(n);
        if (c == class_count) {
            std::free(p);
            return;
        }
        stack& s = t_stacks[c];
        if (s.count < depth) {
            s.items[s.count++] = p;
        } else {
            std::free(p);
        }
    }

private:
    struct stack {
        std::array<void*, depth> items;
        std::size_t count;
    };
    static std::size_t round_up(std::size_t n) noexcept { return (n + 63) & ~std::size_t{63}; }

    // Trivial and constant-initialized: no guard, no destructor (blocks leak at thread exit,
    // which a baseline may do).
    static inline thread_local std::array<stack, class_count> t_stacks{};
};

} // namespace baseline
