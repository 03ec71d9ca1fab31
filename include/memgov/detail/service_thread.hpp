// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The background thread of a long-lived part (the governor's poller, the pressure monitor's
/// sampler): started and stopped from any thread, also racing, and stopped from inside a
/// callback running on the thread itself.

#include <memgov/config.hpp>

#include <memory>
#include <mutex>
#include <stop_token>
#include <thread>
#include <utility>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

// For a thread that waits on its stop token alone (a std::condition_variable_any does).
struct service_no_wake {
    void notify() noexcept {}
};

// One run at a time. Each run has its own stop token and its own `Wake` (something the thread
// waits on besides the token, such as a pipe: `notify()` is called on stop), made by `start`
// and destroyed after the thread is joined, so a stop still joining one run can never be
// undone by the start of the next. No lock is held while joining, so a callback on the
// thread may call `running()` meanwhile. Stopping from the thread itself only asks; the next
// `start` or `stop` joins that run. Destroying the owner on its own thread ends the process.
template <class Wake = service_no_wake>
class service_thread {
public:
    service_thread() = default;
    service_thread(const service_thread&) = delete;
    service_thread& operator=(const service_thread&) = delete;
    ~service_thread() { stop(); }

    // Runs `body(stop_token, Wake&)` on a new thread unless a run is going on (one asked to
    // stop from its own thread is joined first). Does nothing on the thread itself. Throws
    // what making the `Wake` or the thread throws; nothing is left running or open then.
    template <class Body>
    void start(Body body) {
        std::unique_ptr<run> old;
        {
            std::lock_guard lock{m_mutex};
            if (m_run) {
                if (!m_run->thread.get_stop_token().stop_requested() || on_this_thread()) return;
                old = std::move(m_run);
            }
        }
        old.reset(); // joins it
        std::lock_guard lock{m_mutex};
        if (m_run) return; // another start() won
        auto next = std::make_unique<run>();
        Wake& wake = next->wake;
        next->thread = std::jthread{[body = std::move(body), &wake](std::stop_token st) mutable { body(st, wake); }};
        m_run = std::move(next);
    }

    // Asks the run to stop, wakes it, and joins it unless called on the thread itself.
    void stop() noexcept {
        std::unique_ptr<run> done;
        {
            std::lock_guard lock{m_mutex};
            if (!m_run) return;
            m_run->thread.request_stop();
            m_run->wake.notify();
            if (on_this_thread()) return;
            done = std::move(m_run);
        }
        // `done` goes here: its thread is joined, then its wake destroyed.
    }

    // True while a run goes on and has not been asked to stop.
    [[nodiscard]] bool running() const noexcept {
        std::lock_guard lock{m_mutex};
        return m_run && !m_run->thread.get_stop_token().stop_requested();
    }

private:
    struct run {
        Wake wake;           // destroyed after the thread below is joined
        std::jthread thread; // joins when destroyed
    };

    [[nodiscard]] bool on_this_thread() const noexcept { return m_run->thread.get_id() == std::this_thread::get_id(); }

    mutable std::mutex m_mutex;
    std::unique_ptr<run> m_run;
};

} // namespace detail
MEMGOV_NAMESPACE_END
