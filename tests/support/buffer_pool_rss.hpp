// Resident memory of this process, read from /proc/self/statm (what the kernel counts, not
// what an allocator believes), and an upstream resource for buffer pool tests that counts
// every call itself and can keep freed memory resident, so that only the pool's own page
// release can lower RSS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory_resource>
#include <mutex>
#include <new>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

namespace memgov_test {

/// Resident set size in bytes, or 0 when /proc/self/statm cannot be read.
inline std::size_t resident_bytes() {
    std::ifstream statm{"/proc/self/statm"};
    std::size_t size_pages = 0;
    std::size_t resident_pages = 0;
    if (!(statm >> size_pages >> resident_pages)) return 0;
    return resident_pages * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

/// Writes one byte in every page of [p, p + n) so the pages become resident.
inline void touch_pages(void* p, std::size_t n) {
    auto* b = static_cast<volatile unsigned char*>(p);
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    for (std::size_t i = 0; i < n; i += page) b[i] = 1;
    if (n > 0) b[n - 1] = 1;
}

/// Calls made to a `counting_resource` for blocks of one size.
struct size_counts {
    std::uint64_t allocations = 0;
    std::uint64_t deallocations = 0;
    /// Bytes allocated and not yet deallocated.
    [[nodiscard]] std::uint64_t outstanding_bytes(std::size_t size) const {
        return (allocations - deallocations) * size;
    }
};

/// An upstream resource that counts allocations and deallocations per block size, independently
/// of the pool's own statistics. Thread-safe (one mutex; tests only).
///
/// With `keeps_pages`, every block is its own anonymous mapping and a deallocated block stays
/// mapped, with its pages resident, on a free list (reused by a later allocation of the same
/// size, unmapped by the destructor). Such an upstream never lowers the process's RSS, so any
/// drop is the pool's `madvise`. Without it, blocks come from `operator new`.
class counting_resource final : public std::pmr::memory_resource {
public:
    explicit counting_resource(bool keeps_pages = false) : m_keeps{keeps_pages} {}
    counting_resource(const counting_resource&) = delete;
    counting_resource& operator=(const counting_resource&) = delete;
    ~counting_resource() override {
        for (auto& [size, blocks] : m_free) {
            for (void* p : blocks) ::munmap(p, size);
        }
    }

    /// The calls made for blocks of `size` bytes.
    [[nodiscard]] size_counts counts(std::size_t size) const {
        std::lock_guard lock{m_mutex};
        const auto it = m_counts.find(size);
        return it == m_counts.end() ? size_counts{} : it->second;
    }
    /// Bytes allocated and not yet deallocated, all sizes.
    [[nodiscard]] std::uint64_t outstanding_bytes() const {
        std::lock_guard lock{m_mutex};
        std::uint64_t sum = 0;
        for (const auto& [size, c] : m_counts) sum += c.outstanding_bytes(size);
        return sum;
    }
    /// Allocations made, all sizes.
    [[nodiscard]] std::uint64_t allocations() const {
        std::lock_guard lock{m_mutex};
        std::uint64_t sum = 0;
        for (const auto& [size, c] : m_counts) sum += c.allocations;
        return sum;
    }

private:
    void* do_allocate(std::size_t n, std::size_t align) override {
        std::lock_guard lock{m_mutex};
        ++m_counts[n].allocations;
        if (!m_keeps) return ::operator new (n, std::align_val_t{align});
        auto& blocks = m_free[n];
        if (!blocks.empty()) {
            void* p = blocks.back();
            blocks.pop_back();
            return p;
        }
        // Page-aligned, which covers every alignment a pool asks for.
        void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc{};
        return p;
    }
    void do_deallocate(void* p, std::size_t n, std::size_t align) override {
        std::lock_guard lock{m_mutex};
        ++m_counts[n].deallocations;
        if (!m_keeps) {
            ::operator delete (p, std::align_val_t{align}); // unsized: clang 14 lacks the sized one
            return;
        }
        m_free[n].push_back(p); // stays mapped: its pages stay resident unless madvised
    }
    [[nodiscard]] bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }

    const bool m_keeps;
    mutable std::mutex m_mutex;
    std::map<std::size_t, size_counts> m_counts;
    std::map<std::size_t, std::vector<void*>> m_free;
};

} // namespace memgov_test
