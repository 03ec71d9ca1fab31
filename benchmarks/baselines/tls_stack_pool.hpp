// The physical limit of memgov's buffer_pool design: per size class, a bare thread-local stack
// of free blocks, with no statistics, no accounting, no depot, no trim and no bound on what a
// thread keeps. An acquire+release pair here is the cost floor the real pool is measured against.
#pragma once

#include <memgov/detail/size_class_map.hpp>

#include <array>
#include <cstddef>
#include <cstdlib>

namespace baseline {

class tls_stack_pool {
public:
    static constexpr std::size_t depth = 64;
    static constexpr std::array<std::size_t, 5> sizes{4096, 16384, 65536, 262144, 1048576};

    tls_stack_pool() noexcept : m_map{sizes} {}

    void* acquire(std::size_t n) noexcept {
        const std::size_t c = m_map.index_for(n);
        if (c == sizes.size()) return std::aligned_alloc(64, round_up(n));
        stack& s = t_stacks[c];
        if (s.count != 0) return s.items[--s.count];
        return std::aligned_alloc(64, sizes[c]);
    }

    void release(void* p, std::size_t n) noexcept {
        const std::size_t c = m_map.index_for(n);
        if (c == sizes.size()) {
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
    static inline thread_local std::array<stack, sizes.size()> t_stacks{};
    memgov::detail::size_class_map m_map;
};

} // namespace baseline
