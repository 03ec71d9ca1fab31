// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// PSI triggers and systemd's memory pressure protocol.
///
/// systemd hands a service `$MEMORY_PRESSURE_WATCH` (a path: a PSI file such as the service's
/// `memory.pressure`, a FIFO or an AF_UNIX socket; "/dev/null" means "disabled"; anything else,
/// such as another device, is refused with a reason) and
/// `$MEMORY_PRESSURE_WRITE` (base64 of what to write to it, by default the text
/// `some 200000 2000000`: 200 ms of stall within any 2 s window). Writing the trigger to a PSI
/// file registers a kernel trigger: the descriptor then polls `POLLPRI` when the threshold is
/// crossed. The kernel refuses windows that are not a multiple of 2 s without
/// CAP_SYS_RESOURCE (EINVAL), and unprivileged writes may be refused outright; then we fall
/// back to reading the file on every sample and comparing the average with the threshold.

#include <memgov/config.hpp>
#include <memgov/detail/cgroup_file.hpp>
#include <memgov/detail/cgroup_numbers.hpp>
#include <memgov/detail/cgroup_parse.hpp>
#include <memgov/detail/psi_parse.hpp>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#if MEMGOV_LINUX
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#endif

MEMGOV_NAMESPACE_BEGIN

/// What the pressure watch (systemd's `$MEMORY_PRESSURE_WATCH` or a configured file) is doing.
enum class psi_watch_state : std::uint8_t {
    disabled,   ///< nothing to watch (no path, "/dev/null", or unusable)
    registered, ///< a kernel trigger (or a FIFO/socket) is polled
    polling     ///< the trigger was refused: the file is read on each sample instead
};

/// The name of a watch state ("disabled", "registered", "polling"). Thread safety: pure.
[[nodiscard]] constexpr std::string_view to_string(psi_watch_state s) noexcept {
    switch (s) {
    case psi_watch_state::disabled:
        return "disabled";
    case psi_watch_state::registered:
        return "registered";
    case psi_watch_state::polling:
        return "polling";
    }
    return "unknown";
}

namespace detail {

/// Decodes standard base64 (RFC 4648, '+' and '/'); padding optional, white space ignored.
[[nodiscard]] inline std::optional<std::string> psi_base64_decode(std::string_view in) {
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    bool padding = false;
    for (const char c : in) {
        if (cg_is_space(c)) continue;
        if (c == '=') {
            padding = true;
            continue;
        }
        if (padding) return std::nullopt; // data after padding
        int v = -1;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else
            return std::nullopt;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xFFU));
        }
    }
    if (bits >= 6) return std::nullopt; // a lone trailing sextet is not valid base64
    return out;
}

/// A parsed trigger "some|full <stall µs> <window µs>".
struct psi_trigger_spec {
    bool full = false;
    std::uint64_t stall_us = 0;
    std::uint64_t window_us = 0;
    /// The stall share the trigger stands for, in percent (for the polling fallback).
    [[nodiscard]] double percent() const noexcept {
        return window_us == 0 ? 0.0 : 100.0 * static_cast<double>(stall_us) / static_cast<double>(window_us);
    }
};

/// Parses a trigger text; a trailing NUL (systemd's WRITE data includes one) is allowed.
[[nodiscard]] inline std::optional<psi_trigger_spec> psi_parse_trigger(std::string_view text) noexcept {
    while (!text.empty() && text.back() == '\0') text.remove_suffix(1);
    std::string_view rest = text;
    const std::string_view kind = cg_next_field(rest);
    const auto stall = cg_parse_u64(cg_next_field(rest));
    const auto window = cg_parse_u64(cg_next_field(rest));
    if ((kind != "some" && kind != "full") || !stall || !window || !cg_trim(rest).empty() || *window == 0 ||
        *stall > *window) {
        return std::nullopt;
    }
    return psi_trigger_spec{kind == "full", *stall, *window};
}

/// One pressure watch: a registered trigger, or the polling fallback, with the reason.
class psi_watch {
public:
    psi_watch() = default;
    psi_watch(const psi_watch&) = delete;
    psi_watch& operator=(const psi_watch&) = delete;
    ~psi_watch() { close(); }

    /// Sets up a watch on `path` with trigger text `trigger` (already decoded).
    void open(const std::string& path, std::string_view trigger) {
        close();
        m_path = path;
        m_reason.clear();
        if (path.empty() || path == "/dev/null") {
            m_state = psi_watch_state::disabled;
            m_reason = path.empty() ? "no pressure file to watch" : "pressure watch disabled (/dev/null)";
            return;
        }
        const auto spec = psi_parse_trigger(trigger);
        m_spec = spec.value_or(psi_trigger_spec{}); // whatever the watch turns out to be
#if MEMGOV_LINUX
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) {
            fall_back("cannot stat " + path + ": " + std::generic_category().message(errno), spec);
            return;
        }
        if (S_ISFIFO(st.st_mode)) {
            m_fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
            if (m_fd < 0) {
                fall_back("cannot open FIFO " + path + ": " + std::generic_category().message(errno), spec);
                return;
            }
            m_events = POLLIN;
            m_state = psi_watch_state::registered;
            return;
        }
        if (S_ISSOCK(st.st_mode)) {
            m_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
            sockaddr_un addr{};
            addr.sun_family = AF_UNIX;
            if (m_fd < 0 || path.size() >= sizeof addr.sun_path) {
                fall_back("cannot use socket " + path, spec);
                return;
            }
            std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
            if (::connect(m_fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
                (!trigger.empty() && ::write(m_fd, trigger.data(), trigger.size()) < 0)) {
                fall_back("cannot connect to " + path + ": " + std::generic_category().message(errno), spec);
                return;
            }
            m_events = POLLIN;
            m_state = psi_watch_state::registered;
            return;
        }
        if (!S_ISREG(st.st_mode)) {
            // A device (a link to /dev/zero) would take the trigger write and never signal.
            fall_back("cannot watch " + path + ": not a PSI file, FIFO or socket", spec);
            return;
        }
        if (!spec) {
            fall_back("malformed trigger \"" + printable(trigger) + "\"", spec);
            return;
        }
        m_fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (m_fd < 0) {
            fall_back("cannot open " + path + " for writing: " + std::generic_category().message(errno), spec);
            return;
        }
        // The kernel wants the trigger with its terminating NUL.
        std::string text{trigger};
        while (!text.empty() && text.back() == '\0') text.pop_back();
        if (::write(m_fd, text.c_str(), text.size() + 1) < 0) {
            const int err = errno;
            fall_back("the kernel refused trigger \"" + text + "\" on " + path + ": " +
                          std::generic_category().message(err) +
                          (err == EINVAL ? " (windows must be a multiple of 2 s without CAP_SYS_RESOURCE)" : ""),
                      spec);
            return;
        }
        m_events = POLLPRI;
        m_state = psi_watch_state::registered;
        m_has_spec = true;
#else
        fall_back("PSI triggers need Linux", spec);
#endif
    }

    /// Skips registration: polls `path` against `trigger` on each sample, with `why` recorded.
    void poll_only(const std::string& path, std::string why, std::string_view trigger) {
        close();
        m_path = path;
        fall_back(std::move(why), psi_parse_trigger(trigger));
    }

    /// Non-blocking check: true if the trigger fired (or, when polling, the file's average is
    /// at or above the trigger's share). Never throws.
    [[nodiscard]] bool check(std::string& buf) noexcept {
        if (m_state == psi_watch_state::registered) return wait(0);
        if (m_state == psi_watch_state::polling && m_file.is_open() && m_has_spec) {
            const auto t = m_file.read(buf);
            if (!t) return false;
            const auto p = psi_parse(*t);
            if (!p) return false;
            const double avg = m_spec.full ? p->full.avg10 : p->some.avg10;
            return avg >= m_spec.percent();
        }
        return false;
    }

    /// Waits up to `timeout_ms` for the registered trigger (0: just look). True if it fired.
    /// See `consume` for what happens to the descriptor.
    bool wait(int timeout_ms) noexcept {
#if MEMGOV_LINUX
        if (m_fd < 0 || m_state != psi_watch_state::registered) return false;
        pollfd p{m_fd, static_cast<short>(m_events), 0};
        const int n = ::poll(&p, 1, timeout_ms);
        if (n <= 0) return false;
        return consume(p.revents);
#else
        (void)timeout_ms;
        return false;
#endif
    }

    /// Handles what a poll reported for `fd()`: true if pressure was signalled. A FIFO or
    /// socket is drained (any data is one event). When the other end has gone (end of file,
    /// hang-up or error) or the kernel reports an error on a pressure file (its cgroup was
    /// removed), the watch is closed and disabled with the reason: a descriptor that stays
    /// readable for good would otherwise wake the sampler in a loop and hold the level up.
    bool consume(short revents) noexcept {
#if MEMGOV_LINUX
        if (m_fd < 0 || m_state != psi_watch_state::registered || revents == 0) return false;
        bool fired = false;
        bool gone = (revents & (POLLERR | POLLNVAL)) != 0;
        if (m_events == POLLIN) {
            if ((revents & (POLLIN | POLLHUP)) != 0) {
                char sink[256];
                for (;;) {
                    const auto r = ::read(m_fd, sink, sizeof sink);
                    if (r > 0) {
                        fired = true;
                        continue;
                    }
                    if (r == 0) gone = true; // end of file: the writer or the peer closed
                    break;                   // nothing more to read now, or an error
                }
            }
        } else {
            fired = (revents & POLLPRI) != 0;
        }
        if (gone) {
            close();
            try {
                m_reason = "the other end of " + m_path + " closed, or it reported an error";
            } catch (...) {
                m_reason.clear(); // out of memory: the state still says disabled
            }
        }
        return fired;
#else
        (void)revents;
        return false;
#endif
    }

    void close() noexcept {
#if MEMGOV_LINUX
        if (m_fd >= 0) ::close(m_fd);
#endif
        m_fd = -1;
        m_file.close();
        m_state = psi_watch_state::disabled;
        m_has_spec = false;
    }

    [[nodiscard]] psi_watch_state state() const noexcept { return m_state; }
    /// The descriptor to add to an event loop (POLLPRI for PSI files, POLLIN for FIFO/socket);
    /// -1 unless registered.
    [[nodiscard]] int fd() const noexcept { return m_state == psi_watch_state::registered ? m_fd : -1; }
    [[nodiscard]] short events() const noexcept { return static_cast<short>(m_events); }
    [[nodiscard]] const std::string& path() const noexcept { return m_path; }
    /// Why the watch is disabled or polling (empty when registered).
    [[nodiscard]] const std::string& reason() const noexcept { return m_reason; }
    [[nodiscard]] const psi_trigger_spec& spec() const noexcept { return m_spec; }

private:
    static std::string printable(std::string_view s) {
        std::string out;
        for (const char c : s) out.push_back(c >= 32 && c < 127 ? c : '?');
        return out;
    }

    void fall_back(std::string why, const std::optional<psi_trigger_spec>& spec) {
        if (m_fd >= 0) {
#if MEMGOV_LINUX
            ::close(m_fd);
#endif
            m_fd = -1;
        }
        m_has_spec = spec.has_value();
        if (spec) m_spec = *spec;
        m_file.open(m_path);
        if (m_has_spec && m_file.is_open()) {
            m_state = psi_watch_state::polling;
            m_reason = std::move(why) + "; polling " + m_path + " instead";
        } else {
            m_state = psi_watch_state::disabled;
            m_reason = std::move(why) + (m_has_spec ? "; and cannot read it either" : "; watch disabled");
        }
    }

    int m_fd = -1;
    int m_events = 0;
    psi_watch_state m_state = psi_watch_state::disabled;
    bool m_has_spec = false;
    psi_trigger_spec m_spec{};
    std::string m_path;
    std::string m_reason;
    cg_file m_file;
};

} // namespace detail
MEMGOV_NAMESPACE_END
