// Resident memory of this process, read from /proc/self/statm (what the kernel counts, not
// what an allocator believes).
#pragma once

#include <cstddef>
#include <fstream>
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

} // namespace memgov_test
