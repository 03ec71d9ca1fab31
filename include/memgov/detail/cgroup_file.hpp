// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Files the cgroup reader keeps open and re-reads with `pread` (one system call per read, no
/// path lookup), and a one-shot whole-file read for files parsed once.

#include <memgov/config.hpp>

#include <cerrno>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#if __has_include(<unistd.h>) && __has_include(<fcntl.h>)
#include <fcntl.h>
#include <unistd.h>
#define MEMGOV_DETAIL_HAS_POSIX_FILES 1
#else
#define MEMGOV_DETAIL_HAS_POSIX_FILES 0
#endif

MEMGOV_NAMESPACE_BEGIN
namespace detail {

/// A read-only file descriptor kept open for repeated whole-file reads from offset 0.
/// Rewriting the file in place (same inode) is seen by the next read; replacing it by rename
/// is not (call `reopen`). Move-only.
class cg_file {
public:
    cg_file() noexcept = default;
    cg_file(const cg_file&) = delete;
    cg_file& operator=(const cg_file&) = delete;
    cg_file(cg_file&& o) noexcept
        : m_fd{std::exchange(o.m_fd, -1)}, m_error{o.m_error}, m_path{std::move(o.m_path)} {}
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

    /// Opens `path` read-only; on failure remembers errno. Returns true on success.
    bool open(std::string path) {
        close();
        m_path = std::move(path);
#if MEMGOV_DETAIL_HAS_POSIX_FILES
        m_fd = ::open(m_path.c_str(), O_RDONLY | O_CLOEXEC);
        m_error = m_fd < 0 ? errno : 0;
#else
        m_error = ENOSYS;
#endif
        return m_fd >= 0;
    }
    /// Re-opens the same path (after the file was replaced). Returns true on success.
    bool reopen() { return open(std::string{m_path}); }

    /// Reads the whole file into `buf` (grown as needed) and returns a view of the bytes, or
    /// nullopt on a read error (errno kept in `error()`). Thread safety: one reader per file.
    [[nodiscard]] std::optional<std::string_view> read(std::string& buf) noexcept {
#if MEMGOV_DETAIL_HAS_POSIX_FILES
        if (m_fd < 0) return std::nullopt;
        try {
            if (buf.size() < 4096) buf.resize(4096);
            std::size_t used = 0;
            for (;;) {
                const ssize_t n = ::pread(m_fd, buf.data() + used, buf.size() - used,
                                          static_cast<off_t>(used));
                if (n < 0) {
                    if (errno == EINTR) continue;
                    m_error = errno;
                    return std::nullopt;
                }
                if (n == 0) break;
                used += static_cast<std::size_t>(n);
                if (used == buf.size()) buf.resize(buf.size() * 2);
            }
            m_error = 0;
            return std::string_view{buf.data(), used};
        } catch (...) {
            m_error = ENOMEM;
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
    /// errno of the last failed open or read, 0 after a success.
    [[nodiscard]] int error() const noexcept { return m_error; }
    [[nodiscard]] const std::string& path() const noexcept { return m_path; }

private:
    int m_fd = -1;
    int m_error = 0;
    std::string m_path;
};

/// Reads the whole file at `path` (open, read, close). On failure returns nullopt and sets
/// `error` to errno.
[[nodiscard]] inline std::optional<std::string> cg_read_file(const std::string& path, int& error) {
    cg_file f;
    if (!f.open(path)) {
        error = f.error();
        return std::nullopt;
    }
    std::string buf;
    const auto v = f.read(buf);
    if (!v) {
        error = f.error();
        return std::nullopt;
    }
    buf.resize(v->size());
    error = 0;
    return buf;
}

} // namespace detail
MEMGOV_NAMESPACE_END
