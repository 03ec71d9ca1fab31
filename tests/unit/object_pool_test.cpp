#include <memgov/object_pool.hpp>

#include "object_pool_message.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <functional>
#include <latch>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace std::chrono_literals;
using memgov::category;
using memgov::manual_clock;
using memgov::object_handle;
using memgov::object_pool_config;
using memgov::pressure_level;
using object_pool_test::counts;
using object_pool_test::message;

namespace {

using pool_t = memgov::object_pool<message, manual_clock>;

object_pool_config counting_config(std::size_t cache = 32) {
    object_pool_config cfg;
    cfg.thread_cache_objects = cache;
    cfg.on_stale_handle = memgov::stale_handle_policy::count;
    return cfg;
}

constexpr auto msg_size = static_cast<std::int64_t>(sizeof(message));

// The pool's own storage (shared state, slot blocks, thread caches), charged to the ledger with
// what its objects retain beyond their slots.
template <class Pool>
std::int64_t storage_of(const Pool& pool) {
    return static_cast<std::int64_t>(pool.stats().storage_bytes);
}

// Runs `fn` in a forked child with stderr silenced; returns the child's wait status.
int run_in_child(const std::function<void()>& fn) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        // The test framework's own SIGABRT handler would report the expected abort as a
        // failure of the child; the parent judges the exit status instead.
        std::signal(SIGABRT, SIG_DFL);
        const int fd = ::open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
        }
        fn();
        ::_exit(0);
    }
    int status = 0;
    REQUIRE(pid > 0);
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return status;
}

} // namespace

TEST_CASE("object_pool: release paths, observers and moves are noexcept", "[object_pool]") {
    using lease = pool_t::lease;
    STATIC_REQUIRE(std::is_nothrow_move_constructible_v<lease>);
    STATIC_REQUIRE(std::is_nothrow_move_assignable_v<lease>);
    STATIC_REQUIRE(std::is_nothrow_destructible_v<lease>);
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<lease>);
    STATIC_REQUIRE_FALSE(std::is_copy_assignable_v<lease>);
    STATIC_REQUIRE(std::is_nothrow_copy_constructible_v<object_handle>);
    STATIC_REQUIRE(std::is_trivially_copyable_v<object_handle>);
    STATIC_REQUIRE(noexcept(std::declval<lease&>().reset()));
    STATIC_REQUIRE(noexcept(std::declval<lease&>().handle()));
    STATIC_REQUIRE(noexcept(std::declval<lease&>().get()));
    STATIC_REQUIRE(noexcept(std::declval<pool_t&>().try_acquire()));
    STATIC_REQUIRE(noexcept(std::declval<pool_t&>().get(object_handle{})));
    STATIC_REQUIRE(noexcept(std::declval<const pool_t&>().is_live(object_handle{})));
    STATIC_REQUIRE(noexcept(std::declval<pool_t&>().trim()));
    STATIC_REQUIRE(noexcept(std::declval<pool_t&>().trim(std::declval<memgov::time_point>())));
    STATIC_REQUIRE(noexcept(std::declval<pool_t&>().set_pressure(pressure_level::high)));
    STATIC_REQUIRE(noexcept(std::declval<const pool_t&>().idle_bytes()));
    STATIC_REQUIRE(noexcept(std::declval<const pool_t&>().stats()));
    STATIC_REQUIRE(std::is_nothrow_destructible_v<pool_t>);
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<pool_t>);
    STATIC_REQUIRE(memgov::resettable<message>);
    STATIC_REQUIRE(memgov::reports_retained_bytes<message>);
    STATIC_REQUIRE_FALSE(memgov::resettable<object_pool_test::plain>);
}

TEST_CASE("object_pool: a bad configuration field throws invalid_argument naming it", "[object_pool]") {
    struct bad_case {
        const char* field;
        std::function<void(object_pool_config&)> mutate;
    };
    const std::vector<bad_case> cases{
        {"block_objects", [](auto& c) { c.block_objects = 0; }},
        {"block_objects", [](auto& c) { c.block_objects = 48; }},
        {"max_objects", [](auto& c) { c.max_objects = 0; }},
        {"max_objects", [](auto& c) { c.max_objects = 0xFFFF'FFFFu; }},
        {"thread_cache_objects", [](auto& c) { c.thread_cache_objects = 70000; }},
        {"young_lifetime", [](auto& c) { c.young_lifetime = 0s; }},
        {"mid_lifetime", [](auto& c) { c.mid_lifetime = 1s; }},
        {"old_lifetime", [](auto& c) { c.old_lifetime = 60s; }},
        {"reuses_to_promote", [](auto& c) { c.reuses_to_promote = 0; }},
        {"lifetime_divisor", [](auto& c) { c.lifetime_divisor[2] = 0; }},
        {"lifetime_divisor",
         [](auto& c) {
             c.lifetime_divisor = {1, 4, 2, 8, 8};
         }},
        {"generation_limit", [](auto& c) { c.generation_limit = 0; }},
        {"generation_limit", [](auto& c) { c.generation_limit = 0xFFFF'FFFFu; }},
        {"on_stale_handle", [](auto& c) { c.on_stale_handle = static_cast<memgov::stale_handle_policy>(9); }},
    };
    for (const auto& bc : cases) {
        object_pool_config cfg;
        bc.mutate(cfg);
        INFO(bc.field);
        CHECK_THROWS_AS(pool_t(cfg), std::invalid_argument);
        CHECK_THROWS_WITH(pool_t(cfg),
                          Catch::StartsWith(std::string{"memgov::object_pool_config::"} + bc.field + ": "));
    }
    CHECK_NOTHROW(pool_t{object_pool_config{}});
}

TEST_CASE("object_pool: reset runs on every release and no state leaks to the next user", "[object_pool]") {
    object_pool_test::reset_counts();
    const std::size_t cache = GENERATE(std::size_t{0}, std::size_t{4});
    INFO("thread_cache_objects " << cache);
    pool_t pool{counting_config(cache)};
    {
        std::vector<pool_t::lease> held;
        for (int i = 0; i < 10; ++i) {
            held.push_back(pool.acquire());
            held.back()->owner = 7;
            held.back()->name = "a name long enough to live on the heap";
            held.back()->payload.assign(1000, std::uint8_t{0xAB});
        }
        CHECK(counts().reset == 0);
    }
    CHECK(counts().reset == 10);
    for (int round = 0; round < 3; ++round) {
        std::vector<pool_t::lease> held;
        for (int i = 0; i < 10; ++i) {
            held.push_back(pool.acquire());
            CHECK(held.back()->owner == 0);
            CHECK(held.back()->name.empty());
            CHECK(held.back()->payload.empty());
            // The point of pooling: inner capacity survives the reset.
            CHECK(held.back()->payload.capacity() >= 1000);
            held.back()->owner = 9;
        }
    }
    CHECK(counts().reset == 40);
    CHECK(counts().constructed == 10);
    const auto st = pool.stats();
    CHECK(st.acquisitions == 40);
    CHECK(st.constructions == 10);
    CHECK(st.reuses == 30);
    CHECK(st.reuse_rate() == Approx(0.75));
    CHECK(st.leased_objects == 0);
    CHECK(st.idle_objects == 10);
}

TEST_CASE("object_pool: lease moves, early reset and try_acquire", "[object_pool]") {
    object_pool_test::reset_counts();
    pool_t pool{counting_config()};
    CHECK_FALSE(pool.try_acquire()); // never constructs
    CHECK(counts().constructed == 0);

    auto a = pool.acquire();
    REQUIRE(a);
    message* obj = a.get();
    auto b = std::move(a);
    CHECK_FALSE(a); // NOLINT(bugprone-use-after-move): moved-from lease is empty
    CHECK(a.get() == nullptr);
    CHECK_FALSE(a.handle());
    CHECK(b.get() == obj);
    CHECK(&*b == obj);
    CHECK(pool.stats().leased_objects == 1);

    b.reset();
    CHECK_FALSE(b);
    CHECK(counts().reset == 1);
    CHECK(pool.stats().leased_objects == 0);

    auto c = pool.try_acquire();
    REQUIRE(c);
    CHECK(c.get() == obj);
    auto d = pool.acquire();
    c = std::move(d); // releases obj, takes d's object
    CHECK(counts().reset == 2);
    CHECK(c.get() != obj);
    CHECK(pool.stats().leased_objects == 1);
}

TEST_CASE("object_pool: a user reset function and its retained_bytes", "[object_pool]") {
    using object_pool_test::plain;
    using object_pool_test::plain_reset;
    int calls = 0;
    memgov::ledger l;
    memgov::object_pool<plain, memgov::steady_clock, plain_reset> pool{
        {}, &l, memgov::steady_clock{}, plain_reset{&calls}};
    std::size_t cap = 0;
    {
        auto p = pool.acquire();
        p->value = 42;
        p->items.assign(100, 5);
        cap = p->items.capacity();
    }
    CHECK(calls == 1);
    auto p = pool.acquire();
    CHECK(p->value == 0);
    CHECK(p->items.empty());
    CHECK(p->items.capacity() == cap);
    CHECK(pool.retained_bytes_of(*p) == cap * sizeof(int));
    CHECK(pool.stats().retained_bytes == sizeof(plain) + cap * sizeof(int));
    // sizeof(plain) lies in the pool's slot storage; the retained vector is the object's heap.
    CHECK(l.bytes(category::objects) == storage_of(pool) + static_cast<std::int64_t>(cap * sizeof(int)));
    CHECK(l.bytes(category::objects) == static_cast<std::int64_t>(pool.stats().charged_bytes));
}

TEST_CASE("object_pool: get(handle) works while leased and fails once released, even after "
          "the slot is reused",
          "[object_pool]") {
    object_pool_test::reset_counts();
    const std::size_t cache = GENERATE(std::size_t{0}, std::size_t{32});
    INFO("thread_cache_objects " << cache);
    pool_t pool{counting_config(cache)};

    CHECK(pool.get(object_handle{}) == nullptr); // null handle: quiet
    CHECK(pool.stats().stale_handles == 0);

    object_handle h1;
    message* obj = nullptr;
    {
        auto a = pool.acquire();
        obj = a.get();
        h1 = a.handle();
        REQUIRE(h1);
        CHECK(pool.get(h1) == obj);
        CHECK(pool.is_live(h1));
        const pool_t& cpool = pool;
        CHECK(cpool.get(h1) == obj);
    }
    // Released: the handle is stale.
    CHECK(pool.get(h1) == nullptr);
    CHECK(pool.stats().stale_handles == 1);
    CHECK_FALSE(pool.is_live(h1)); // asking does not count
    CHECK(pool.stats().stale_handles == 1);

    // The slot is reused by the next acquisition: same object, new generation.
    auto b = pool.acquire();
    REQUIRE(b.get() == obj);
    const object_handle h2 = b.handle();
    CHECK(h2.index == h1.index);
    CHECK(h2.generation != h1.generation);
    CHECK(pool.get(h2) == obj);
    CHECK(pool.get(h1) == nullptr);
    CHECK(pool.stats().stale_handles == 2);

    // Handles that were never issued by this pool are stale too.
    CHECK(pool.get(object_handle{12345, 0}) == nullptr);
    CHECK(pool.get(object_handle{h2.index, h2.generation + 7}) == nullptr);
    CHECK(pool.stats().stale_handles == 4);
}

TEST_CASE("object_pool: a slot whose generation would wrap is retired and its handles stay stale", "[object_pool]") {
    object_pool_test::reset_counts();
    auto cfg = counting_config();
    cfg.generation_limit = 3;
    pool_t pool{cfg};
    std::vector<object_handle> handles;
    message* first = nullptr;
    for (std::uint32_t i = 0; i <= 3; ++i) {
        auto a = pool.acquire();
        if (first == nullptr) first = a.get();
        CHECK(a.get() == first); // the same slot, LIFO
        CHECK(a.handle().generation == i);
        handles.push_back(a.handle());
    }
    auto st = pool.stats();
    CHECK(st.retired_slots == 1);
    CHECK(st.destructions == 1);
    CHECK(st.idle_objects == 0);
    CHECK(counts().alive() == 0);

    auto b = pool.acquire(); // a new slot; the retired one is never handed out again
    CHECK(b.handle().index != handles[0].index);
    CHECK(pool.stats().constructions == 2);
    for (const auto& h : handles) CHECK(pool.get(h) == nullptr);
    CHECK(pool.stats().stale_handles == handles.size());
    CHECK(pool.get(b.handle()) == b.get());
}

TEST_CASE("object_pool: slots in growing blocks keep stable addresses and distinct indices", "[object_pool]") {
    auto cfg = counting_config();
    cfg.block_objects = 2;
    pool_t pool{cfg};
    std::vector<pool_t::lease> held;
    std::set<std::uint32_t> indices;
    for (int i = 0; i < 37; ++i) {
        held.push_back(pool.acquire());
        held.back()->seq = static_cast<std::uint64_t>(i);
        indices.insert(held.back().handle().index);
    }
    CHECK(indices.size() == 37);
    CHECK(*indices.rbegin() == 36);
    for (int i = 0; i < 37; ++i) {
        message* m = pool.get(held[static_cast<std::size_t>(i)].handle());
        REQUIRE(m == held[static_cast<std::size_t>(i)].get());
        CHECK(m->seq == static_cast<std::uint64_t>(i));
    }
    const auto st = pool.stats();
    CHECK(st.slots == 37);
    CHECK(st.slot_bytes > 0);
    CHECK(st.stale_handles == 0);
}

#if MEMGOV_ASSERTS_ENABLED
TEST_CASE("object_pool: by default a stale handle aborts in builds with assertions", "[object_pool]") {
    memgov::object_pool<message> pool; // default policy: debug_assert
    object_handle h;
    {
        auto a = pool.acquire();
        h = a.handle();
    }
    const int status = run_in_child([&] { (void)pool.get(h); });
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
    // A live handle does not abort.
    auto b = pool.acquire();
    const object_handle live = b.handle();
    const int ok = run_in_child([&] { (void)pool.get(live); });
    CHECK(WIFEXITED(ok));
}
#else
TEST_CASE("object_pool: by default a stale handle gives nullptr and is counted in release builds", "[object_pool]") {
    memgov::object_pool<message> pool;
    object_handle h;
    {
        auto a = pool.acquire();
        h = a.handle();
    }
    CHECK(pool.get(h) == nullptr);
    CHECK(pool.stats().stale_handles == 1);
}
#endif

TEST_CASE("object_pool: stale_handle_policy::abort aborts in every build", "[object_pool]") {
    object_pool_config cfg;
    cfg.on_stale_handle = memgov::stale_handle_policy::abort;
    memgov::object_pool<message> pool{cfg};
    object_handle h;
    {
        auto a = pool.acquire();
        h = a.handle();
    }
    const int status = run_in_child([&] { (void)pool.get(h); });
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
}

TEST_CASE("object_pool: a young idle object is freed once its lifetime has passed since the "
          "first trim that saw it",
          "[object_pool]") {
    object_pool_test::reset_counts();
    const std::size_t cache = GENERATE(std::size_t{0}, std::size_t{32});
    INFO("thread_cache_objects " << cache);
    manual_clock clk;
    memgov::ledger l;
    pool_t pool{counting_config(cache), &l, clk};
    { auto a = pool.acquire(); }
    const std::int64_t storage = storage_of(pool);
    CHECK(l.bytes(category::objects) == storage); // the object retains nothing beyond its slot
    CHECK(pool.trim().objects == 0);              // first sighting: the idle clock starts
    clk.advance(4999ms);
    CHECK(pool.trim().objects == 0);
    clk.advance(1ms);
    const auto r = pool.trim();
    CHECK(r.objects == 1);
    CHECK(r.bytes == sizeof(message));
    const auto st = pool.stats();
    CHECK(st.trimmed == std::array<std::uint64_t, 3>{1, 0, 0});
    CHECK(st.trimmed_bytes == sizeof(message));
    CHECK(st.trim_calls == 3);
    CHECK(st.idle_objects == 0);
    CHECK(counts().alive() == 0);
    // The slot stays in its block for the next construction: storage is kept and charged.
    CHECK(storage_of(pool) == storage);
    CHECK(l.bytes(category::objects) == storage);

    // The freed slot is reused for the next construction.
    auto b = pool.acquire();
    CHECK(pool.stats().slots == 1);
    CHECK(pool.stats().constructions == 2);
}

TEST_CASE("object_pool: reuse promotes, idleness demotes one tier per lifetime, then frees", "[object_pool]") {
    object_pool_test::reset_counts();
    const std::size_t cache = GENERATE(std::size_t{0}, std::size_t{32});
    INFO("thread_cache_objects " << cache);
    manual_clock clk;
    auto cfg = counting_config(cache);
    cfg.reuses_to_promote = 2;
    pool_t pool{cfg, nullptr, clk};

    // Constructed (0 reuses), then reused twice: promoted to mid at the second reuse's release.
    for (int i = 0; i < 3; ++i) {
        auto a = pool.acquire();
    }
    auto st = pool.stats();
    CHECK(st.promotions == std::array<std::uint64_t, 2>{1, 0});
    CHECK(st.idle_by_tier == std::array<std::size_t, 3>{0, 1, 0});
    // Two more reuses: promoted to old.
    for (int i = 0; i < 2; ++i) {
        auto a = pool.acquire();
    }
    st = pool.stats();
    CHECK(st.promotions == std::array<std::uint64_t, 2>{1, 1});
    CHECK(st.idle_by_tier == std::array<std::size_t, 3>{0, 0, 1});
    // Old stays old however often it is reused.
    for (int i = 0; i < 5; ++i) {
        auto a = pool.acquire();
    }
    CHECK(pool.stats().idle_by_tier == std::array<std::size_t, 3>{0, 0, 1});

    (void)pool.trim(); // first sighting
    clk.advance(3599s);
    CHECK(pool.trim().objects == 0);
    CHECK(pool.stats().idle_by_tier == std::array<std::size_t, 3>{0, 0, 1});
    clk.advance(1s); // old lifetime over: demoted to mid, idle clock restarts
    CHECK(pool.trim().objects == 0);
    st = pool.stats();
    CHECK(st.demotions == std::array<std::uint64_t, 2>{0, 1});
    CHECK(st.idle_by_tier == std::array<std::size_t, 3>{0, 1, 0});
    clk.advance(119s);
    CHECK(pool.trim().objects == 0);
    clk.advance(1s); // mid lifetime over: demoted to young
    CHECK(pool.trim().objects == 0);
    st = pool.stats();
    CHECK(st.demotions == std::array<std::uint64_t, 2>{1, 1});
    CHECK(st.idle_by_tier == std::array<std::size_t, 3>{1, 0, 0});
    clk.advance(5s); // young lifetime over: freed
    CHECK(pool.trim().objects == 1);
    st = pool.stats();
    CHECK(st.trimmed == std::array<std::uint64_t, 3>{1, 0, 0});
    CHECK(counts().alive() == 0);
}

TEST_CASE("object_pool: a reused object's idle clock restarts", "[object_pool]") {
    manual_clock clk;
    pool_t pool{counting_config(), nullptr, clk};
    { auto a = pool.acquire(); }
    (void)pool.trim();
    clk.advance(4s);
    {
        auto a = pool.acquire(); // reused just before it would expire
    }
    clk.advance(2s);
    CHECK(pool.trim().objects == 0); // idle again since this trim, not since 6 s ago
    clk.advance(5s);
    CHECK(pool.trim().objects == 1);
}

TEST_CASE("object_pool: pressure divides every lifetime", "[object_pool]") {
    manual_clock clk;
    const auto level = GENERATE(pressure_level::elevated, pressure_level::high, pressure_level::critical);
    auto cfg = counting_config();
    pool_t pool{cfg, nullptr, clk};
    pool.set_pressure(level);
    CHECK(pool.pressure() == level);
    const memgov::duration young = cfg.young_lifetime / cfg.lifetime_divisor[memgov::to_index(level)];
    INFO("level " << memgov::to_string(level));
    { auto a = pool.acquire(); }
    (void)pool.trim();
    clk.advance(young - 1ns);
    CHECK(pool.trim().objects == 0);
    clk.advance(1ns);
    CHECK(pool.trim().objects == 1);
}

TEST_CASE("object_pool: at emergency trim frees every idle object but the reserve, oldest tier "
          "kept first",
          "[object_pool]") {
    object_pool_test::reset_counts();
    const std::size_t cache = GENERATE(std::size_t{0}, std::size_t{32});
    INFO("thread_cache_objects " << cache);
    manual_clock clk;
    memgov::ledger l;
    auto cfg = counting_config(cache);
    cfg.reuses_to_promote = 1;
    cfg.emergency_reserve = 4;
    pool_t pool{cfg, &l, clk};
    {
        std::vector<pool_t::lease> held;
        for (int i = 0; i < 10; ++i) held.push_back(pool.acquire());
    }
    for (int round = 0; round < 2; ++round) { // the same 3 objects twice: young → mid → old
        std::vector<pool_t::lease> held;
        for (int i = 0; i < 3; ++i) held.push_back(pool.acquire());
    }
    CHECK(pool.stats().idle_by_tier == std::array<std::size_t, 3>{7, 0, 3});

    pool.set_pressure(pressure_level::emergency);
    const auto r = pool.trim(); // no time has passed: lifetimes do not matter here
    CHECK(r.objects == 6);
    const auto st = pool.stats();
    CHECK(st.idle_by_tier == std::array<std::size_t, 3>{1, 0, 3});
    CHECK(st.trimmed == std::array<std::uint64_t, 3>{6, 0, 0});
    CHECK(counts().alive() == 4);
    CHECK(l.bytes(category::objects) == storage_of(pool)); // messages retain no heap when fresh
    CHECK(pool.stats().retained_bytes == 4 * sizeof(message));
    CHECK(pool.trim().objects == 0); // the reserve stays

    // Back to normal: the reserve is served again, and ages normally.
    pool.set_pressure(pressure_level::normal);
    {
        auto a = pool.acquire();
        CHECK(pool.stats().constructions == 10);
    }
}

TEST_CASE("object_pool: trim frees at most max_objects per call", "[object_pool]") {
    manual_clock clk;
    auto cfg = counting_config();
    cfg.emergency_reserve = 1;
    pool_t pool{cfg, nullptr, clk};
    {
        std::vector<pool_t::lease> held;
        for (int i = 0; i < 10; ++i) held.push_back(pool.acquire());
    }
    (void)pool.trim();
    pool.set_pressure(pressure_level::emergency);
    CHECK(pool.trim(clk.now(), 2).objects == 2);
    CHECK(pool.stats().idle_objects == 8);
    pool.set_pressure(pressure_level::normal);
    clk.advance(10s);
    CHECK(pool.trim(clk.now(), 3).objects == 3);
    CHECK(pool.stats().idle_objects == 5);
    pool.set_pressure(pressure_level::emergency);
    CHECK(pool.trim(clk.now()).objects == 4);
    CHECK(pool.stats().idle_objects == 1);
}

TEST_CASE("object_pool: the retained-capacity cap destroys oversize objects on release", "[object_pool]") {
    object_pool_test::reset_counts();
    memgov::ledger l;
    auto cfg = counting_config();
    cfg.max_retained_bytes = 2048;
    pool_t pool{cfg, &l};
    std::size_t small_cap = 0;
    {
        auto big = pool.acquire();
        auto small = pool.acquire();
        big->payload.assign(4096, 1);
        small->payload.assign(1024, 2);
        small_cap = small->payload.capacity();
        CHECK(l.bytes(category::objects) == storage_of(pool)); // growth during a lease is seen at release
    }
    auto st = pool.stats();
    CHECK(st.oversize_drops == 1);
    CHECK(st.destructions == 1);
    CHECK(st.idle_objects == 1);
    CHECK(counts().alive() == 1);
    const auto expected = msg_size + static_cast<std::int64_t>(small_cap);
    CHECK(l.bytes(category::objects) ==
          static_cast<std::int64_t>(st.storage_bytes) + static_cast<std::int64_t>(small_cap));
    CHECK(l.bytes(category::objects) == static_cast<std::int64_t>(st.charged_bytes));
    CHECK(static_cast<std::int64_t>(st.retained_bytes) == expected);
    CHECK(static_cast<std::int64_t>(st.idle_bytes) == expected);
    CHECK(static_cast<std::int64_t>(pool.idle_bytes()) == expected);

    auto again = pool.acquire();
    CHECK(again->payload.capacity() == small_cap); // the small one is kept
    auto fresh = pool.acquire();                   // the big one is gone: constructed anew
    CHECK(pool.stats().constructions == 3);
    CHECK(pool.stats().slots == 2); // its slot was reused
}

TEST_CASE("object_pool: the ledger is charged the pool's storage plus retained bytes, and "
          "uncharged on destruction",
          "[object_pool]") {
    object_pool_test::reset_counts();
    memgov::ledger l;
    {
        auto cfg = counting_config();
        cfg.ledger_category = category::sessions; // any category can be chosen
        pool_t other{cfg, &l};
        auto x = other.acquire();
        CHECK(l.bytes(category::sessions) == storage_of(other));
        CHECK(l.bytes(category::objects) == 0);
    }
    CHECK(l.bytes(category::sessions) == 0);

    std::size_t cap = 0;
    {
        auto cfg = counting_config();
        cfg.block_objects = 2;
        cfg.emergency_reserve = 0;
        pool_t pool{cfg, &l};
        // Made, the pool holds its shared state only: no slot, no thread cache yet.
        const std::int64_t core = storage_of(pool);
        CHECK(core > 0);
        CHECK(pool.stats().slot_bytes == 0);
        CHECK(l.bytes(category::objects) == core);
        {
            auto a = pool.acquire();
            // The first block (two slots, headers and objects) and this thread's cache.
            const auto st = pool.stats();
            CHECK(st.slot_bytes >= 2 * sizeof(message));
            CHECK(st.storage_bytes > static_cast<std::size_t>(core) + st.slot_bytes);
            CHECK(l.bytes(category::objects) == storage_of(pool));
            a->payload.assign(3000, 1);
            a->name.assign(100, 'x');
            cap = a->payload.capacity() + a->name.capacity();
        }
        const std::int64_t storage = storage_of(pool);
        CHECK(l.bytes(category::objects) == storage + static_cast<std::int64_t>(cap));
        CHECK(pool.stats().retained_bytes == sizeof(message) + cap);
        CHECK(pool.stats().charged_bytes == static_cast<std::size_t>(storage) + cap);
        {
            auto a = pool.acquire(); // reuse with no growth: no change
            a->payload.assign(10, 1);
        }
        CHECK(l.bytes(category::objects) == storage + static_cast<std::int64_t>(cap));
        {
            // A third object needs a second block: exactly its slots are added.
            const std::size_t block0 = pool.stats().slot_bytes;
            std::vector<pool_t::lease> held;
            for (int i = 0; i < 3; ++i) held.push_back(pool.acquire());
            CHECK(pool.stats().slot_bytes == 2 * block0);
            CHECK(storage_of(pool) == storage + static_cast<std::int64_t>(block0));
            CHECK(l.bytes(category::objects) == storage_of(pool) + static_cast<std::int64_t>(cap));
        }
        // A trim frees the objects and their heap; their slots stay in the blocks, charged.
        const std::int64_t blocks = storage_of(pool);
        pool.set_pressure(pressure_level::emergency);
        const auto r = pool.trim();
        CHECK(r.objects == 3);
        CHECK(r.bytes == 3 * sizeof(message) + cap);
        CHECK(storage_of(pool) == blocks);
        CHECK(l.bytes(category::objects) == blocks);
        CHECK(pool.stats().charged_bytes == static_cast<std::size_t>(blocks));
    }
    CHECK(l.bytes(category::objects) == 0); // pool destroyed with idle objects
    CHECK(counts().alive() == 0);
}

TEST_CASE("object_pool: acquire past max_objects throws length_error; a throwing constructor "
          "leaves the pool usable",
          "[object_pool]") {
    object_pool_test::reset_counts();
    auto cfg = counting_config();
    cfg.max_objects = 2;
    pool_t pool{cfg};
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        CHECK_THROWS_AS(pool.acquire(), std::length_error);
        CHECK_THROWS_WITH(pool.acquire(), Catch::Contains("max_objects"));
        CHECK_FALSE(pool.try_acquire());
    }
    auto a = pool.acquire(); // reuse works at the limit
    CHECK(a);

    pool_t other{counting_config()};
    counts().throw_on_construct = true;
    CHECK_THROWS_AS(other.acquire(), std::runtime_error);
    counts().throw_on_construct = false;
    auto c = other.acquire();
    CHECK(c);
    const auto st = other.stats();
    CHECK(st.slots == 1); // the slot of the failed construction was reused
    CHECK(st.constructions == 1);
    CHECK(st.leased_objects == 1);
}

TEST_CASE("object_pool: trim reaches the cache of a thread that is still alive", "[object_pool]") {
    object_pool_test::reset_counts();
    manual_clock clk;
    pool_t pool{counting_config(), nullptr, clk};
    std::latch released{1};
    std::latch done{1};
    std::thread t([&] {
        {
            auto a = pool.acquire();
            auto b = pool.acquire();
        }
        released.count_down();
        done.wait();
    });
    released.wait();
    CHECK(pool.stats().idle_objects == 2);
    CHECK(pool.idle_bytes() == 2 * sizeof(message));
    (void)pool.trim();
    clk.advance(5s);
    CHECK(pool.trim().objects == 2);
    CHECK(counts().alive() == 0);
    CHECK(pool.idle_bytes() == 0);
    done.count_down();
    t.join();
}

TEST_CASE("object_pool: objects cached by an exited thread go to the shared depot", "[object_pool]") {
    object_pool_test::reset_counts();
    pool_t pool{counting_config()};
    std::thread t([&] {
        std::vector<pool_t::lease> held;
        for (int i = 0; i < 3; ++i) held.push_back(pool.acquire());
    });
    t.join();
    CHECK(pool.stats().idle_objects == 3);
    std::vector<pool_t::lease> held;
    for (int i = 0; i < 3; ++i) {
        held.push_back(pool.try_acquire());
        CHECK(held.back());
    }
    const auto st = pool.stats();
    CHECK(st.constructions == 3);
    CHECK(st.reuses == 3);
    CHECK(st.leased_objects == 3);

    // A later thread adopts the parked cache; its counters keep adding up.
    held.clear();
    std::thread u([&] { auto a = pool.acquire(); });
    u.join();
    CHECK(pool.stats().acquisitions == 7);
}

TEST_CASE("object_pool: a lease is one pointer", "[object_pool]") {
    STATIC_REQUIRE(sizeof(pool_t::lease) == sizeof(void*));
}

TEST_CASE("object_pool: full thread caches spill to the depot and refill from it with every "
          "count exact",
          "[object_pool]") {
    // Capacities 1 and 2 spill everything or half; 4 and 5 spill and refill in batches.
    for (const std::size_t cache : {std::size_t{1}, std::size_t{2}, std::size_t{4}, std::size_t{5}}) {
        CAPTURE(cache);
        object_pool_test::reset_counts();
        manual_clock clk;
        auto cfg = counting_config(cache);
        cfg.emergency_reserve = 0;
        pool_t pool{cfg, nullptr, clk};
        for (int round = 0; round < 3; ++round) {
            CAPTURE(round);
            {
                std::vector<pool_t::lease> held;
                for (int i = 0; i < 11; ++i) held.push_back(pool.acquire());
                const auto st = pool.stats();
                CHECK(st.leased_objects == 11);
                CHECK(st.idle_objects == 0);
                CHECK(pool.idle_bytes() == 0);
            } // released newest last: the cache overflows and spills
            const auto st = pool.stats();
            CHECK(st.constructions == 11); // every round after the first reuses all 11
            CHECK(st.reuses == static_cast<std::uint64_t>(round) * 11);
            CHECK(st.acquisitions == static_cast<std::uint64_t>(round + 1) * 11);
            CHECK(st.leased_objects == 0);
            CHECK(st.idle_objects == 11);
            CHECK(st.idle_by_tier[0] + st.idle_by_tier[1] + st.idle_by_tier[2] == 11);
            CHECK(st.idle_bytes == 11 * sizeof(message));
            CHECK(pool.idle_bytes() == 11 * sizeof(message));
        }
        // A trim takes from the cache and the depot alike, oldest first, within its budget.
        (void)pool.trim();
        clk.advance(std::chrono::hours{2});
        CHECK(pool.trim(clk.now(), 4).objects == 4);
        CHECK(pool.stats().idle_objects == 7);
        CHECK(pool.idle_bytes() == 7 * sizeof(message));
        {
            std::vector<pool_t::lease> held;
            for (int i = 0; i < 9; ++i) held.push_back(pool.acquire());
            CHECK(pool.stats().constructions == 13);
            CHECK(pool.stats().leased_objects == 9);
        }
        CHECK(pool.stats().idle_objects == 9);
        pool.set_pressure(pressure_level::emergency);
        CHECK(pool.trim().objects == 9);
        const auto st = pool.stats();
        CHECK(st.idle_objects == 0);
        CHECK(st.leased_objects == 0);
        CHECK(pool.idle_bytes() == 0);
        CHECK(counts().alive() == 0);
    }
}

namespace {
struct trivial64 {
    std::array<std::uint64_t, 8> words{};
    void reset() noexcept { words = {}; }
};
} // namespace

TEST_CASE("object_pool: a type that retains nothing is charged its pool's storage only", "[object_pool]") {
    memgov::ledger l;
    {
        memgov::object_pool<trivial64> pool{counting_config(4), &l};
        {
            std::vector<memgov::object_pool<trivial64>::lease> held;
            for (int i = 0; i < 9; ++i) {
                held.push_back(pool.acquire());
                held.back()->words[0] = 7;
            }
        }
        auto a = pool.acquire();
        CHECK(a->words[0] == 0); // reset on release
        const auto st = pool.stats();
        CHECK(st.retained_bytes == 9 * sizeof(trivial64));
        CHECK(st.charged_bytes == st.storage_bytes);
        CHECK(l.bytes(category::objects) == static_cast<std::int64_t>(st.storage_bytes));
        CHECK(st.idle_objects == 8);
        CHECK(st.leased_objects == 1);
    }
    CHECK(l.bytes(category::objects) == 0);
}
