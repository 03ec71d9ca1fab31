// Whole episodes through the public API, composed the way the README and the gateway compose
// memgov: one governor, a buffer pool, a session map of sliding windows fed from that pool and
// an object pool, all registered as reclaimers, on a fake cgroup tree and a manual clock.
// Nothing here calls a part's reclaim entry points directly: the governor's polls do it all.

#include <memgov/memgov.hpp>

#include "fake_cgroup.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

// An independent count of what the process holds on the heap: every operator new of this
// binary records its size in a header, and the allocations made while a thread's `counting`
// flag is set are summed (and subtracted again when freed, whichever thread frees them). The
// ledger test sets the flag around the session map's and the object pool's own work only, so
// the sum is what memgov allocated for them, measured without asking memgov.
namespace heap_count {
thread_local bool counting = false;
std::atomic<std::int64_t> live{0};

struct header {
    std::size_t size;
    std::size_t offset; // from the block's start to the pointer handed out
    bool counted;
};
constexpr std::size_t header_room = 32; // >= sizeof(header), a multiple of 16

void* allocate(std::size_t n, std::size_t align) {
    const std::size_t offset = std::max(align, header_room);
    void* block = nullptr;
    if (::posix_memalign(&block, std::max(align, alignof(std::max_align_t)), n + offset) != 0) {
        throw std::bad_alloc{};
    }
    auto* p = static_cast<std::byte*>(block) + offset;
    auto* h = reinterpret_cast<header*>(p - sizeof(header));
    h->size = n;
    h->offset = offset;
    h->counted = counting;
    if (h->counted) live.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
    return p;
}

void release(void* ptr) noexcept {
    if (ptr == nullptr) return;
    auto* p = static_cast<std::byte*>(ptr);
    const auto* h = reinterpret_cast<const header*>(p - sizeof(header));
    if (h->counted) live.fetch_sub(static_cast<std::int64_t>(h->size), std::memory_order_relaxed);
    std::free(p - h->offset);
}

// Counts the allocations made on this thread while it lives.
struct scope {
    scope() noexcept { counting = true; }
    ~scope() { counting = false; }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;
};
// Stops counting while it lives (inside a counted scope).
struct pause {
    pause() noexcept { counting = false; }
    ~pause() { counting = true; }
    pause(const pause&) = delete;
    pause& operator=(const pause&) = delete;
};
} // namespace heap_count

void* operator new(std::size_t n) { return heap_count::allocate(n, alignof(std::max_align_t)); }
void* operator new[](std::size_t n) { return heap_count::allocate(n, alignof(std::max_align_t)); }
void* operator new(std::size_t n, std::align_val_t a) { return heap_count::allocate(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return heap_count::allocate(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return heap_count::allocate(n, alignof(std::max_align_t));
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return heap_count::allocate(n, alignof(std::max_align_t));
    } catch (...) {
        return nullptr;
    }
}
// The aligned nothrow forms too: a sanitizer's runtime defines its own, which would hand out
// blocks without the header that the replaced deletes read.
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    try {
        return heap_count::allocate(n, static_cast<std::size_t>(a));
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    try {
        return heap_count::allocate(n, static_cast<std::size_t>(a));
    } catch (...) {
        return nullptr;
    }
}
void operator delete(void* p) noexcept { heap_count::release(p); }
void operator delete[](void* p) noexcept { heap_count::release(p); }
void operator delete(void* p, std::size_t) noexcept { heap_count::release(p); }
void operator delete[](void* p, std::size_t) noexcept { heap_count::release(p); }
void operator delete(void* p, std::align_val_t) noexcept { heap_count::release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { heap_count::release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { heap_count::release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { heap_count::release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { heap_count::release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { heap_count::release(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { heap_count::release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { heap_count::release(p); }

using namespace std::chrono_literals;
using memgov::admit_kind;
using memgov::evict_reason;
using memgov::pressure_level;
using memgov_test::fake_cgroup_tree;

namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;

// The pool's upstream: counts every call, so the test knows independently of the pool's own
// statistics how much memory the pool holds and when it frees a block (each free of a pooled
// block at a pressure above normal is preceded by an madvise).
class counting_resource final : public std::pmr::memory_resource {
public:
    [[nodiscard]] std::int64_t outstanding() const noexcept { return m_outstanding.load(); }
    [[nodiscard]] std::uint64_t allocations() const noexcept { return m_allocs.load(); }
    [[nodiscard]] std::uint64_t deallocations() const noexcept { return m_deallocs.load(); }

private:
    void* do_allocate(std::size_t n, std::size_t align) override {
        void* p = std::pmr::new_delete_resource()->allocate(n, align);
        m_outstanding.fetch_add(static_cast<std::int64_t>(n));
        m_allocs.fetch_add(1);
        return p;
    }
    void do_deallocate(void* p, std::size_t n, std::size_t align) override {
        m_outstanding.fetch_sub(static_cast<std::int64_t>(n));
        m_deallocs.fetch_add(1);
        std::pmr::new_delete_resource()->deallocate(p, n, align);
    }
    [[nodiscard]] bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
    std::atomic<std::int64_t> m_outstanding{0};
    std::atomic<std::uint64_t> m_allocs{0};
    std::atomic<std::uint64_t> m_deallocs{0};
};

// A pooled per-session object (the gateway keeps its protocol state in one).
struct session_state {
    std::uint64_t frames = 0;
    void reset() noexcept { frames = 0; }
};

using gov_t = memgov::governor<memgov::manual_clock>;
using map_t = memgov::session_map<int, memgov::sliding_window, memgov::manual_clock>;
using objects_t = memgov::object_pool<session_state, memgov::manual_clock>;

// What the gateway does when memgov evicts a session: it logs the governor's health line and
// closes the session's socket with the reason.
struct socket_log {
    std::mutex mutex;
    std::map<int, evict_reason> closed;
    std::vector<memgov::health_summary> health;
    std::size_t metric_text_bytes = 0; // what `collect` rendered from inside the callback
    std::uint64_t polls_seen = 0;      // what `stats` said from inside the callback

    [[nodiscard]] std::size_t count(evict_reason r) {
        std::lock_guard lock{mutex};
        return static_cast<std::size_t>(
            std::count_if(closed.begin(), closed.end(), [&](const auto& c) { return c.second == r; }));
    }
};

struct service {
    static constexpr std::size_t chunk = 16 * KiB;

    fake_cgroup_tree tree = fake_cgroup_tree::v2("/app");
    memgov::manual_clock clock;
    counting_resource upstream;
    socket_log sockets;
    std::unique_ptr<gov_t> gov;
    std::unique_ptr<memgov::buffer_pool> pool;
    std::unique_ptr<objects_t> objects;
    std::unique_ptr<map_t> sessions;
    std::shared_ptr<memgov::buffer_pool_reclaimer> pool_reclaimer;
    std::shared_ptr<memgov::object_pool_reclaimer<objects_t>> objects_reclaimer;
    std::shared_ptr<memgov::session_map_reclaimer<map_t>> sessions_reclaimer;

    // The heap the session map and the object pool allocated for themselves (the map's
    // shards, node slabs and tables; the pool's shared state, slot blocks and thread caches),
    // counted by this binary's operator new (heap_count), not by the parts.
    std::int64_t map_heap_bytes = 0;
    std::int64_t objects_heap_bytes = 0;
    std::uint64_t limit = GiB;

    explicit service(memgov::touch_time touch = memgov::touch_time::clock, std::uint64_t limit_bytes = GiB)
        : limit{limit_bytes} {
        tree.set_limit("/app", limit);
        set_usage(0.50);
        memgov::governor_config cfg;
        cfg.monitor.cgroup = tree.config();
        cfg.monitor.use_systemd_pressure_env = false;
        cfg.monitor.forecast_horizon = 0s; // the levels follow the usage ratio alone
        cfg.evictor.session_cost_cap = 2 * MiB;
        gov = std::make_unique<gov_t>(
            cfg, clock, [] {}, [] { return std::size_t{0}; });

        memgov::buffer_pool_config pc;
        pc.upstream = &upstream;
        pool = std::make_unique<memgov::buffer_pool>(pc, &gov->ledger());
        // This thread's first charge claims its counter slot in the ledger (a block of slots,
        // allocated once per ledger): the ledger's own memory, not the parts'. Claim it before
        // counting what the parts allocate.
        gov->ledger().charge(memgov::category::objects, 0);
        {
            const std::int64_t before = heap_count::live.load();
            const heap_count::scope counted;
            objects = std::make_unique<objects_t>(memgov::object_pool_config{}, &gov->ledger(), clock);
            // The pool object itself is the application's; its shared state is the pool's.
            objects_heap_bytes += heap_count::live.load() - before - static_cast<std::int64_t>(sizeof(objects_t));
        }

        memgov::session_map_config mc;
        mc.shards = 4;
        mc.idle_ttl = 5min;
        mc.touch = touch;
        memgov::session_map_hooks<int, memgov::sliding_window> hooks;
        hooks.on_evict = [this](const int& id, memgov::sliding_window&, evict_reason why) {
            // Reading the governor from inside its own reclaim step is what a service does.
            memgov::health_summary h = gov->health();
            const memgov::governor_stats st = gov->stats();
            memgov::prometheus_writer text;
            gov->collect(text);
            std::lock_guard lock{sockets.mutex};
            sockets.closed.emplace(id, why);
            sockets.health.push_back(std::move(h));
            sockets.metric_text_bytes = text.str().size();
            sockets.polls_seen = st.polls;
        };
        {
            const std::int64_t before = heap_count::live.load();
            const heap_count::scope counted;
            // The hooks were made above, outside the count, and are moved in (moving a
            // std::function allocates nothing): a callback's captures are the application's
            // memory, not storage the map allocates, so they must not be in this count.
            sessions = std::make_unique<map_t>(mc, std::move(hooks), clock, &gov->ledger());
            // The map object itself is the application's, not storage the map manages.
            map_heap_bytes += heap_count::live.load() - before - static_cast<std::int64_t>(sizeof(map_t));
        }

        pool_reclaimer = std::make_shared<memgov::buffer_pool_reclaimer>(*pool);
        objects_reclaimer = std::make_shared<memgov::object_pool_reclaimer<objects_t>>(*objects);
        sessions_reclaimer = std::make_shared<memgov::session_map_reclaimer<map_t>>(*sessions);
        gov->register_reclaimer(pool_reclaimer);
        gov->register_reclaimer(objects_reclaimer);
        gov->register_reclaimer(sessions_reclaimer);
    }

    ~service() {
        // As a service shuts down: the governor stops calling the parts, the sessions close
        // (their callback still reads the governor), the parts go, and the governor, whose
        // ledger they charge, goes last.
        gov->stop();
        (void)gov->unregister_reclaimer(*sessions_reclaimer);
        (void)gov->unregister_reclaimer(*objects_reclaimer);
        (void)gov->unregister_reclaimer(*pool_reclaimer);
        sessions.reset();
        objects.reset();
        pool.reset();
        gov.reset();
    }

    void set_usage(double ratio) {
        tree.set_usage("/app", static_cast<std::uint64_t>(ratio * static_cast<double>(limit)));
    }

    // Polls the governor every `period` for `d` of manual time; returns the final level.
    pressure_level run_for(memgov::duration d, memgov::duration period = 100ms) {
        for (memgov::duration t{}; t < d; t += period) {
            clock.advance(period);
            (void)gov->poll();
        }
        return gov->level();
    }

    // Admits and opens a session whose window may hold `cap` bytes, then appends `bytes`.
    bool open(int id, std::size_t cap, std::size_t bytes) {
        if (!gov->admit(64 * KiB, admit_kind::session)) return false;
        memgov::sliding_window_config wc;
        wc.chunk_size = chunk;
        wc.cap_bytes = cap;
        bool inserted = false;
        {
            const std::int64_t before = heap_count::live.load();
            const heap_count::scope counted; // the map's own allocations, not the window's
            inserted = sessions->insert(id, [&] {
                const heap_count::pause window;
                return memgov::sliding_window{*pool, wc, &gov->ledger()};
            });
            map_heap_bytes += heap_count::live.load() - before;
        }
        REQUIRE(inserted);
        append(id, bytes);
        return true;
    }

    // Appends `bytes` of audio in 640-byte frames (20 ms of 16 kHz 16-bit audio each).
    void append(int id, std::size_t bytes) {
        static const std::array<std::byte, 640> frame{};
        sessions->with(id, [&](memgov::sliding_window& w) {
            for (std::size_t done = 0; done < bytes; done += frame.size()) {
                w.append(std::span<const std::byte>{frame}.first(std::min(frame.size(), bytes - done)));
            }
        });
    }

    // The bytes every window holds, computed from the windows themselves.
    std::int64_t window_bytes() {
        std::vector<int> ids;
        sessions->for_each_info([&](const int& id, const memgov::session_info&) { ids.push_back(id); });
        std::int64_t sum = 0;
        for (const int id : ids) {
            sessions->with_shared(
                id, [&](const memgov::sliding_window& w) { sum += static_cast<std::int64_t>(w.held_bytes()); });
        }
        return sum;
    }
};

} // namespace

TEST_CASE("composition: rise, reclaim, fall and recovery of a governed service", "[composition]") {
    service svc;
    constexpr int regular = 100;
    constexpr int giant = 1000;

    // Rise: 100 well-behaved sessions of 320 KiB and one giant holding 4 MiB.
    for (int id = 0; id < regular; ++id) REQUIRE(svc.open(id, 512 * KiB, 320 * KiB));
    REQUIRE(svc.open(giant, 8 * MiB, 4 * MiB));
    REQUIRE(svc.gov->poll() == pressure_level::normal);

    // A burst that ended: its buffers are idle in the pool (depot and this thread's cache).
    {
        std::vector<memgov::buffer> burst;
        for (int i = 0; i < 64; ++i) burst.push_back(svc.pool->acquire(64 * KiB));
    }
    svc.pool->flush_thread_cache();
    const std::size_t idle_before = svc.pool->idle_bytes();
    REQUIRE(idle_before == 64 * 64 * KiB);
    const std::int64_t upstream_before = svc.upstream.outstanding();

    // The sessions' costs follow their windows: nobody called set_cost.
    const std::int64_t held = svc.window_bytes();
    CHECK(held == regular * 320 * static_cast<std::int64_t>(KiB) + 4 * static_cast<std::int64_t>(MiB));
    CHECK(svc.sessions->total_cost() == held);

    // Reclaim: the cgroup passes the red line (critical).
    svc.set_usage(0.86);
    REQUIRE(svc.run_for(200ms) == pressure_level::critical);
    CHECK_FALSE(svc.gov->admit(64 * KiB, admit_kind::session));
    // The giant passed the 2 MiB cost cap and was evicted by the ladder, with its reason, and
    // its socket closed; the well-behaved sessions live.
    CHECK(svc.sockets.count(evict_reason::over_cost) == 1);
    CHECK(svc.sockets.closed.count(giant) == 1);
    CHECK(svc.sessions->size() == static_cast<std::size_t>(regular));
    // The on_evict callback read the governor's health from inside the reclaim step.
    REQUIRE(svc.sockets.health.size() == svc.sockets.closed.size());
    REQUIRE_FALSE(svc.sockets.health.empty());
    CHECK(svc.sockets.health.back().level == pressure_level::critical);
    CHECK(svc.sockets.metric_text_bytes > 0);
    CHECK(svc.sockets.polls_seen > 0);
    // The pools were trimmed: the burst's idle buffers went back to the upstream (counted by
    // the pool as trimmed, and seen leaving by the upstream itself).
    std::uint64_t trimmed = 0;
    for (const auto& c : svc.pool->stats().classes) trimmed += c.trimmed_bytes;
    CHECK(trimmed >= idle_before);
    CHECK(svc.pool->idle_bytes() == 0);
    CHECK(upstream_before - svc.upstream.outstanding() >= static_cast<std::int64_t>(idle_before));
    // The pools follow the level: no depot, no thread cache at critical.
    CHECK(svc.pool->stats().pressure == pressure_level::critical);
    CHECK(svc.objects->pressure() == pressure_level::critical);

    // Fall: usage drops to 40% and stays there.
    svc.set_usage(0.40);
    REQUIRE(svc.run_for(30s) == pressure_level::normal);
    CHECK(svc.gov->stats().admission.sessions_open);
    CHECK(svc.gov->admit(64 * KiB, admit_kind::session));

    // Recovery: every part heard the way down.
    const memgov::buffer_pool_stats after = svc.pool->stats();
    CHECK(after.pressure == pressure_level::normal);
    CHECK(after.classes.front().thread_cache_cap > 0);
    CHECK(after.classes.front().depot_cap_bytes > 0);
    CHECK(svc.objects->pressure() == pressure_level::normal);

    // Acquire and release now hit the caches: no upstream call at all, so no free and no
    // madvise on release.
    {
        auto warm = svc.pool->acquire(4 * KiB); // the first may miss
    }
    const std::uint64_t allocs = svc.upstream.allocations();
    const std::uint64_t frees = svc.upstream.deallocations();
    const auto hits_before = svc.pool->stats().classes.front().thread_cache_hits;
    for (int i = 0; i < 1000; ++i) {
        auto b = svc.pool->acquire(4 * KiB);
        REQUIRE(b.capacity() == 4 * KiB);
    }
    CHECK(svc.upstream.allocations() == allocs);
    CHECK(svc.upstream.deallocations() == frees);
    CHECK(svc.pool->stats().classes.front().thread_cache_hits - hits_before == 1000);
}

TEST_CASE("composition: orphans expire at normal with nothing but the governor running", "[composition]") {
    for (const auto touch : {memgov::touch_time::clock, memgov::touch_time::coarse}) {
        CAPTURE(touch == memgov::touch_time::clock ? "clock" : "coarse");
        service svc{touch};
        // Time passes before the sessions arrive: the coarse clock must already be ticking.
        REQUIRE(svc.run_for(90s, 1s) == pressure_level::normal);
        const memgov::time_point opened = svc.clock.now();
        for (int id = 0; id < 20; ++id) REQUIRE(svc.open(id, 512 * KiB, 64 * KiB));

        // Even ids keep talking every 10 s; odd ids go silent (their peers dropped TCP).
        const auto talk = [&] {
            for (int id = 0; id < 20; id += 2) svc.append(id, 640);
        };
        while (svc.clock.now() - opened < 5min - 10s) {
            svc.run_for(10s, 250ms);
            talk();
            REQUIRE(svc.gov->level() == pressure_level::normal);
        }
        svc.run_for(opened + 5min - 250ms - svc.clock.now(), 250ms); // to just before idle_ttl
        CHECK(svc.sockets.count(evict_reason::expired_idle) == 0);   // not one early
        // Idle for idle_ttl: gone within one step period of it (the governor's sweep).
        while (svc.clock.now() - opened < 5min + svc.gov->config().step_period + 250ms) {
            svc.run_for(250ms, 250ms);
        }
        CHECK(svc.sockets.count(evict_reason::expired_idle) == 10);
        for (int id = 1; id < 20; id += 2) CHECK_FALSE(svc.sessions->contains(id));
        for (int id = 0; id < 20; id += 2) CHECK(svc.sessions->contains(id));
        // Their windows' buffers went back to the pool.
        CHECK(svc.sessions->total_cost() == svc.window_bytes());
    }
}

TEST_CASE("composition: reclaimers registered and removed mid-episode hear the current level", "[composition]") {
    service svc;
    REQUIRE(svc.open(1, 512 * KiB, 320 * KiB));
    svc.set_usage(0.86);
    REQUIRE(svc.run_for(200ms) == pressure_level::critical);

    // A pool that joins under pressure starts with the caps the others have.
    memgov::buffer_pool late_pool{{}, &svc.gov->ledger()};
    auto late = std::make_shared<memgov::buffer_pool_reclaimer>(late_pool, "late_pool");
    svc.gov->register_reclaimer(late);
    CHECK(late_pool.stats().pressure == pressure_level::critical);

    // One that leaves under pressure leaves with its caps restored.
    REQUIRE(svc.gov->unregister_reclaimer(*svc.objects_reclaimer));
    CHECK(svc.objects->pressure() == pressure_level::normal);

    // The fall reaches every reclaimer still registered, including the late one.
    svc.set_usage(0.40);
    REQUIRE(svc.run_for(30s) == pressure_level::normal);
    CHECK(late_pool.stats().pressure == pressure_level::normal);
    CHECK(svc.pool->stats().pressure == pressure_level::normal);

    // Registered after the episode: told the current level, not the last crisis.
    memgov::buffer_pool after_pool{{}, &svc.gov->ledger()};
    auto after = std::make_shared<memgov::buffer_pool_reclaimer>(after_pool, "after_pool");
    after_pool.set_pressure(pressure_level::emergency); // whatever it held before
    svc.gov->register_reclaimer(after);
    CHECK(after_pool.stats().pressure == pressure_level::normal);

    // A second rise reaches the re-registered part too.
    svc.gov->register_reclaimer(svc.objects_reclaimer);
    svc.set_usage(0.86);
    REQUIRE(svc.run_for(200ms) == pressure_level::critical);
    CHECK(svc.objects->pressure() == pressure_level::critical);
    CHECK(after_pool.stats().pressure == pressure_level::critical);

    REQUIRE(svc.gov->unregister_reclaimer(*late));
    REQUIRE(svc.gov->unregister_reclaimer(*after));
}

TEST_CASE("composition: pressure eviction frees the windows' bytes in the README's setup", "[composition]") {
    service svc;
    for (int id = 0; id < 100; ++id) REQUIRE(svc.open(id, 512 * KiB, 320 * KiB));
    const std::int64_t held = svc.window_bytes();
    REQUIRE(held == 100 * 320 * static_cast<std::int64_t>(KiB));

    // Emergency: the ladder evicts down toward the red line minus the margin. The cgroup says
    // 95% of 1 GiB while the sessions hold 31 MiB, so the step wants more than they hold and
    // every session goes, by LRU, with its window's bytes reported freed.
    svc.set_usage(0.95);
    REQUIRE(svc.run_for(100ms) == pressure_level::emergency);
    const memgov::governor_stats st = svc.gov->stats();
    const auto lru = st.evictor.total(memgov::reclaim_action::evict_lru);
    CHECK(lru.items == 100);
    CHECK(lru.bytes == static_cast<std::uint64_t>(held));
    CHECK(svc.sessions->size() == 0);
    CHECK(svc.sockets.count(evict_reason::lru_under_pressure) == 100);
}

// The same setup where the cgroup's usage is the rest of the process plus what memgov holds
// (`other + ledger.total()`), as in a real service: eviction gives back the windows' bytes, the
// usage follows, and the ladder stops at its target instead of evicting everyone.
TEST_CASE("composition: emergency eviction in the README's setup stops at the target", "[composition]") {
    service svc{memgov::touch_time::clock, 128 * MiB};
    for (int id = 0; id < 100; ++id) REQUIRE(svc.open(id, 512 * KiB, 320 * KiB));
    REQUIRE(svc.sessions->total_cost() == svc.window_bytes()); // costs from the windows
    const auto usage = [&](std::int64_t other) {
        svc.tree.set_usage("/app", static_cast<std::uint64_t>(other + svc.gov->ledger().total()));
    };
    const auto limit = static_cast<double>(svc.limit);
    std::int64_t other = 20 * static_cast<std::int64_t>(MiB);
    usage(other);
    REQUIRE(svc.run_for(1s) == pressure_level::normal);

    // The rest of the process grows: 90% of the limit, emergency (89%).
    other = static_cast<std::int64_t>(0.90 * limit) - svc.gov->ledger().total();
    for (int i = 0; i < 30; ++i) { // 3 s of polls, the usage following every eviction
        usage(other);
        svc.clock.advance(100ms);
        (void)svc.gov->poll();
    }
    usage(other);
    svc.clock.advance(1s);
    (void)svc.gov->poll(); // a fresh sample of the file

    const memgov::governor_stats st = svc.gov->stats();
    const double target = st.pressure.red_line - svc.gov->config().evictor.emergency_margin;
    const auto evicted = svc.sockets.count(evict_reason::lru_under_pressure);
    INFO("evicted " << evicted << " of 100; ratio " << st.pressure.ratio << ", target " << target);
    CHECK(st.evictor.steps[memgov::to_index(pressure_level::emergency)] > 0);
    CHECK(evicted > 0);
    CHECK(evicted < 100); // only part of them
    CHECK(svc.sessions->size() == 100 - evicted);
    CHECK(st.pressure.ratio <= target);
    // Not far below either: at most one session's window more than needed.
    CHECK(st.pressure.ratio > target - 2.0 * 320.0 * KiB / limit);
    CHECK(svc.sessions->total_cost() == svc.window_bytes());
}

TEST_CASE("composition: the ledger counts what is held, once", "[composition]") {
    service svc;
    for (int id = 0; id < 50; ++id) REQUIRE(svc.open(id, 512 * KiB, 320 * KiB));

    // Chunks taken out of windows for the producer are still the pool's memory; the producer
    // charges them to kafka_inflight, an attribution, until their delivery reports.
    std::vector<memgov::window_chunk> in_flight(40);
    std::size_t taken = 0;
    for (int id = 0; id < 10; ++id) {
        svc.sessions->with(
            id, [&](memgov::sliding_window& w) { taken += w.take_chunks(std::span{in_flight}.subspan(taken, 4)); });
    }
    REQUIRE(taken == 40);
    std::int64_t in_flight_bytes = 0;
    for (const auto& c : in_flight) in_flight_bytes += static_cast<std::int64_t>(c.buf.capacity());
    svc.gov->ledger().charge(memgov::category::kafka_inflight, in_flight_bytes);

    // This thread keeps a list of the object pools it holds a cache in (one entry per pool,
    // freed when the thread exits, whichever pools still exist): the thread's bookkeeping,
    // shared by every pool it uses and outliving them, not one pool's memory. A pool the thread
    // used and that is gone leaves room in that list, so the service's pool claims its cache
    // below without growing the list.
    {
        objects_t warm{memgov::object_pool_config{}, nullptr, svc.clock};
        auto once = warm.acquire();
    }

    // An object leased per session: a whole block of the pool (64 slots), so what the pool
    // allocated is all in use.
    std::vector<objects_t::lease> states;
    states.reserve(64);
    std::int64_t object_heap = svc.objects_heap_bytes; // its shared state, made with the pool
    {
        const std::int64_t before = heap_count::live.load();
        const heap_count::scope counted;
        for (int i = 0; i < 64; ++i) states.push_back(svc.objects->acquire());
        object_heap += heap_count::live.load() - before;
    }
    REQUIRE(object_heap > 0);

    // What is held, counted without asking memgov: the pool's blocks by its upstream, the map's
    // storage and the object pool's blocks by this binary's operator new.
    REQUIRE(svc.map_heap_bytes > 0);
    const memgov::ledger& ledger = svc.gov->ledger();
    const auto bytes = [&](memgov::category c) { return ledger.bytes(c); };
    const std::int64_t pool_bytes = bytes(memgov::category::pool_idle) + bytes(memgov::category::pool_in_use);
    INFO("map heap " << svc.map_heap_bytes << ", charged " << bytes(memgov::category::session_storage)
                     << "; object pool heap " << object_heap << ", charged " << bytes(memgov::category::objects));
    // The pools' bytes are exactly what their upstream holds, counted once, whatever the
    // windows and the producer say they hold (attributions).
    CHECK(pool_bytes == svc.upstream.outstanding());
    CHECK(ledger.total() == pool_bytes + bytes(memgov::category::session_storage) + bytes(memgov::category::objects));
    // The map and the object pool are charged exactly what they allocated for themselves: the
    // map its shards, node slabs, the vectors that hold the slabs, and its tables; the object
    // pool its shared state, slot blocks (headers and objects), thread caches and their list.
    // (`session_state` keeps no heap of its own, so the objects retain nothing beyond that.)
    CHECK(bytes(memgov::category::session_storage) == svc.map_heap_bytes);
    CHECK(bytes(memgov::category::objects) == object_heap);
    CHECK(ledger.total() == svc.upstream.outstanding() + svc.map_heap_bytes + object_heap);

    // Giving the chunks back (the delivery reports) changes nothing physical but the split.
    const std::int64_t total = ledger.total();
    svc.gov->ledger().release(memgov::category::kafka_inflight, in_flight_bytes);
    in_flight.clear();
    CHECK(ledger.total() == total);
    CHECK(bytes(memgov::category::pool_idle) + bytes(memgov::category::pool_in_use) == svc.upstream.outstanding());
}
