// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Files the cgroup reader keeps open and re-reads with `pread` (one system call per read, no
/// path lookup), and a one-shot whole-file read for files parsed once.
///
/// Only regular files are read: procfs and cgroupfs pseudo-files report as regular files (of
/// size 0), so a FIFO, a socket, a device (a symlink to /dev/zero) or a directory in their place
/// is refused at open, which never blocks (O_NONBLOCK). Every read stops at a cap, so no file
/// can make a read allocate or spin without bound.

#include <memgov/config.hpp>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#if __has_include(<unistd.h>) && __has_include(<fcntl.h>) && __has_include(<sys/stat.h>)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#define MEMGOV_DETAIL_HAS_POSIX_FILES 1
#else
#define MEMGOV_DETAIL_HAS_POSIX_FILES 0
#endif

MEMGOV_NAMESPACE_BEGIN
namespace detail {

/// The most bytes read from a cgroup or /proc file parsed on every sample. The largest of
/// them, memory.stat, is about 1.5 KiB on v2 (about 40 keys) and under 2 KiB on v1; meminfo
/// about 1.5 KiB; statm, limits and PSI under 200 bytes. 64 KiB leaves room for many new keys.
inline constexpr std::size_t cg_file_cap = std::size_t{64} * 1024;
/// The most bytes read from /proc/self/mountinfo (read once per (re)load). A line is 100-250
/// bytes and busy Kubernetes nodes have a few thousand mounts; 4 MiB holds over 16,000 lines.
inline constexpr std::size_t cg_mountinfo_cap = std::size_t{4} * 1024 * 1024;

/// What went wrong with a file, beyond errno.
enum class cg_file_problem : std::uint8_t {
    none,        ///< no problem, or an errno (see `cg_file_error::err`)
    not_regular, ///< a FIFO, socket, device or directory where a file was expected
    too_large    ///< more bytes than the cap
};

/// The last failure of a file: errno (0 with `problem == none` means the contents were
/// malformed, which only the parser can tell), the problem and the cap in force.
struct cg_file_error {
    int err = 0;
    cg_file_problem problem = cg_file_problem::none;
    std::size_t cap = cg_file_cap;
};

/// Plain words for `e`: "not a regular file", "larger than 65536 bytes", the errno message,
/// or "malformed contents". Throws `std::bad_alloc`.
[[nodiscard]] inline std::string cg_file_error_text(const cg_file_error& e) {
    switch (e.problem) {
    case cg_file_problem::not_regular:
        return "not a regular file";
    case cg_file_problem::too_large:
        return "larger than " + std::to_string(e.cap) + " bytes";
    case cg_file_problem::none:
        break;
    }
    if (e.err == 0) return "malformed contents";
    return std::generic_category().message(e.err);
}

/// A read-only file descriptor kept open for repeated whole-file reads from offset 0.
/// Rewriting the file in place (same inode) is seen by the next read; replacing it by rename
/// is not (call `reopen`). Move-only.
class cg_file {
public:
    cg_file() noexcept = default;
    cg_file(const cg_file&) = delete;
    cg_file& operator=(const cg_file&) = delete;
    cg_file(cg_file&& o) noexcept : m_fd{std::exchange(o.m_fd, -1)}, m_error{o.m_error}, m_path{std::move(o.m_path)} {}
    cg_file& operator=(cg_file&& o) noexcept {
        if (this != &o) {
            close();
            m_fd = std::exchange(o.m_fd, -1);
            m_error = o.m_error;
            m_path = std::move(o.m_path);
        }
        return *this;
    }
    ~cg_file() { close(); }

    /// Opens `path` read-only without blocking, and keeps it only if it is a regular file;
    /// reads will stop at `cap` bytes. On failure remembers why. Returns true on success.
    bool open(std::string path, std::size_t cap = cg_file_cap) {
        close();
        m_path = std::move(path);
        m_error = cg_file_error{};
        m_error.cap = cap;
#if MEMGOV_DETAIL_HAS_POSIX_FILES
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        m_fd = ::open(m_path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (m_fd < 0) {
            m_error.err = errno;
            return false;
        }
        struct stat st {};
        if (::fstat(m_fd, &st) != 0) {
            m_error.err = errno;
            close();
            return false;
        }
        if (!S_ISREG(st.st_mode)) {
            m_error.problem = cg_file_problem::not_regular;
            m_error.err = EINVAL;
            close();
            return false;
        }
        // Back to blocking reads: a regular file on FUSE (LXCFS serves /proc/meminfo) could
        // otherwise answer EAGAIN.
        const int flags = ::fcntl(m_fd, F_GETFL);
        if (flags >= 0) (void)::fcntl(m_fd, F_SETFL, flags & ~O_NONBLOCK);
#else
        m_error.err = ENOSYS;
#endif
        return m_fd >= 0;
    }
    /// Re-opens the same path with the same cap (after the file was replaced). Returns true on
    /// success.
    bool reopen() { return open(std::string{m_path}, m_error.cap); }

    /// Reads the whole file into `buf` (grown as needed, up to the cap + 1 bytes) and returns a
    /// view of the bytes, or nullopt on a read error or a file longer than the cap (the reason
    /// kept in `last_error()`). Thread safety: one reader per file.
    [[nodiscard]] std::optional<std::string_view> read(std::string& buf) noexcept {
#if MEMGOV_DETAIL_HAS_POSIX_FILES
        if (m_fd < 0) return std::nullopt;
        const std::size_t cap = m_error.cap;
        try {
            const std::size_t want = cap < 4096 ? cap + 1 : 4096;
            if (buf.size() < want) buf.resize(want);
            std::size_t used = 0;
            for (;;) {
                // Never more than cap + 1 bytes: one byte past the cap proves the file too large.
                const std::size_t room = (buf.size() < cap + 1 ? buf.size() : cap + 1) - used;
                const ssize_t n = ::pread(m_fd, buf.data() + used, room, static_cast<off_t>(used));
                if (n < 0) {
                    if (errno == EINTR) continue;
                    m_error.err = errno;
                    m_error.problem = cg_file_problem::none;
                    return std::nullopt;
                }
                if (n == 0) break;
                used += static_cast<std::size_t>(n);
                if (used > cap) {
                    m_error.err = EFBIG;
                    m_error.problem = cg_file_problem::too_large;
                    return std::nullopt;
                }
                if (used == buf.size()) {
                    buf.resize(buf.size() * 2 < cap + 1 ? buf.size() * 2 : cap + 1);
                }
            }
            m_error.err = 0;
            m_error.problem = cg_file_problem::none;
            return std::string_view{buf.data(), used};
        } catch (...) {
            m_error.err = ENOMEM;
            m_error.problem = cg_file_problem::none;
            return std::nullopt;
        }
#else
        (void)buf;
        return std::nullopt;
#endif
    }

    /// Closes the descriptor (if open). The path is kept for `reopen`.
    void close() noexcept {
#if MEMGOV_DETAIL_HAS_POSIX_FILES
        if (m_fd >= 0) ::close(m_fd);
#endif
        m_fd = -1;
    }

    [[nodiscard]] bool is_open() const noexcept { return m_fd >= 0; }
    [[nodiscard]] int fd() const noexcept { return m_fd; }
    /// errno of the last failed open or read (EINVAL for a file that is not regular, EFBIG for
    /// one over the cap), 0 after a success.
    [[nodiscard]] int error() const noexcept { return m_error.err; }
    /// The last failure in full, for `cg_file_error_text`.
    [[nodiscard]] const cg_file_error& last_error() const noexcept { return m_error; }
    [[nodiscard]] const std::string& path() const noexcept { return m_path; }

private:
    int m_fd = -1;
    cg_file_error m_error{};
    std::string m_path;
};

/// Reads the whole file at `path` (open, read, close), at most `cap` bytes. On failure returns
/// nullopt and sets `error`.
[[nodiscard]] inline std::optional<std::string> cg_read_file(const std::string& path, cg_file_error& error,
                                                             std::size_t cap = cg_file_cap) {
    cg_file f;
    if (!f.open(path, cap)) {
        error = f.last_error();
        return std::nullopt;
    }
    std::string buf;
    const auto v = f.read(buf);
    if (!v) {
        error = f.last_error();
        return std::nullopt;
    }
    buf.resize(v->size());
    error = cg_file_error{};
    return buf;
}

} // namespace detail
MEMGOV_NAMESPACE_END
