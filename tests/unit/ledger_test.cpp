#include <memgov/ledger.hpp>

#include <catch2/catch.hpp>

#include <initializer_list>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using memgov::category;

TEST_CASE("ledger: built-in categories are defined and start at zero", "[ledger]") {
    memgov::ledger l;
    CHECK(l.category_count() == static_cast<std::size_t>(category::first_user));
    CHECK(l.name(category::pool_idle) == "pool_idle");
    CHECK(l.name(category::pool_in_use) == "pool_in_use");
    CHECK(l.name(category::sessions) == "sessions");
    CHECK(l.name(category::windows) == "windows");
    CHECK(l.name(category::objects) == "objects");
    CHECK(l.name(category::kafka_inflight) == "kafka_inflight");
    CHECK(l.name(category::session_storage) == "session_storage");
    CHECK(l.category_count() == 7);
    CHECK(l.total() == 0);
    CHECK(l.find("sessions") == category::sessions);
    CHECK_FALSE(l.find("nope").has_value());
}

TEST_CASE("ledger: charge and release per category and in total", "[ledger]") {
    memgov::ledger l;
    l.charge(category::session_storage, 100);
    l.charge(category::objects, 50);
    l.charge(category::session_storage, 20);
    CHECK(l.bytes(category::session_storage) == 120);
    CHECK(l.bytes(category::objects) == 50);
    CHECK(l.bytes(category::pool_idle) == 0);
    CHECK(l.total() == 170);
    l.release(category::session_storage, 120);
    CHECK(l.bytes(category::session_storage) == 0);
    CHECK(l.total() == 50);
    l.charge(category::objects, -50); // a negative charge is a release
    CHECK(l.total() == 0);
}

TEST_CASE("ledger: physical memory is counted, attributions are not", "[ledger]") {
    memgov::ledger l;
    for (const category c :
         {category::pool_idle, category::pool_in_use, category::objects, category::session_storage}) {
        CHECK(l.counted(c));
    }
    // Who holds pool memory, not more memory: a session's cost is its window's chunks, a
    // window's chunks and the chunks a producer holds are the pool's pool_in_use.
    for (const category c : {category::sessions, category::windows, category::kafka_inflight}) {
        CHECK_FALSE(l.counted(c));
    }
    l.charge(category::pool_in_use, 64);
    l.charge(category::sessions, 64);
    l.charge(category::windows, 64);
    l.charge(category::kafka_inflight, 64);
    CHECK(l.total() == 64);
    l.release(category::sessions, 64);
    l.release(category::windows, 64);
    l.release(category::kafka_inflight, 64);
    l.release(category::pool_in_use, 64);
    CHECK(l.total() == 0);
}

TEST_CASE("ledger: attribution categories are kept out of the total", "[ledger]") {
    memgov::ledger l;
    CHECK_FALSE(l.counted(category::windows)); // a window's chunks are the pool's pool_in_use
    CHECK(l.counted(category::pool_in_use));
    l.set_counted(category::sessions, true);
    CHECK(l.counted(category::sessions));
    l.charge(category::pool_in_use, 64);
    l.charge(category::windows, 64);
    CHECK(l.total() == 64);
    CHECK(l.bytes(category::windows) == 64);
    const category who = l.define("per_tenant", false);
    l.charge(who, 64);
    CHECK(l.total() == 64);
    l.set_counted(category::sessions, false);
    l.charge(category::sessions, 10);
    CHECK(l.total() == 64);
    l.set_counted(category::sessions, true);
    CHECK(l.total() == 74);
    const auto s = l.snapshot();
    CHECK(s.total == 74);
    CHECK_FALSE(s.categories[static_cast<std::size_t>(category::windows)].counted);
    CHECK(s.categories[static_cast<std::size_t>(category::sessions)].counted);
    CHECK_THROWS_WITH(l.set_counted(static_cast<category>(15), true), Catch::Contains("category 15 is not defined"));
}

TEST_CASE("ledger: user categories", "[ledger]") {
    memgov::ledger l;
    const category audio = l.define("audio");
    CHECK(static_cast<int>(audio) == static_cast<int>(category::first_user));
    CHECK(l.name(audio) == "audio");
    CHECK(l.find("audio") == audio);
    l.charge(audio, 4096);
    CHECK(l.bytes(audio) == 4096);
    CHECK(l.total() == 4096);

    SECTION("bad names throw std::invalid_argument naming the problem") {
        CHECK_THROWS_WITH(l.define(""), Catch::Contains("name is empty"));
        CHECK_THROWS_WITH(l.define("audio"), Catch::Contains("'audio' is already defined"));
        CHECK_THROWS_AS(l.define("sessions"), std::invalid_argument);
    }
    SECTION("capacity is bounded and the overflow is a clear error") {
        const auto room = memgov::ledger::max_categories - l.category_count();
        for (std::size_t i = 0; i < room; ++i) (void)l.define("c" + std::to_string(i));
        CHECK(l.category_count() == memgov::ledger::max_categories);
        CHECK_THROWS_WITH(l.define("one-too-many"), Catch::Contains("categories are taken"));
    }
}

TEST_CASE("ledger: snapshot lists every category with its bytes", "[ledger]") {
    memgov::ledger l;
    const category kv = l.define("kv");
    l.charge(category::pool_idle, 7);
    l.charge(kv, 3);
    const auto s = l.snapshot();
    REQUIRE(s.categories.size() == l.category_count());
    CHECK(s.categories[0].name == "pool_idle");
    CHECK(s.categories[0].bytes == 7);
    CHECK(s.categories[0].counted);
    CHECK(s.categories.back().name == "kv");
    CHECK(s.categories.back().bytes == 3);
    CHECK(s.total == 10);
}

TEST_CASE("ledger: charge_token is RAII and move-only", "[ledger]") {
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<memgov::charge_token>);
    STATIC_REQUIRE(std::is_nothrow_move_constructible_v<memgov::charge_token>);
    STATIC_REQUIRE(std::is_nothrow_move_assignable_v<memgov::charge_token>);
    STATIC_REQUIRE(std::is_nothrow_destructible_v<memgov::charge_token>);
    memgov::ledger l;
    {
        memgov::charge_token t{l, category::windows, 1000};
        CHECK(t);
        CHECK(l.bytes(category::windows) == 1000);
        t.resize(1500);
        CHECK(t.bytes() == 1500);
        CHECK(l.bytes(category::windows) == 1500);
        memgov::charge_token moved = std::move(t);
        CHECK_FALSE(t); // NOLINT(bugprone-use-after-move): checking the moved-from state
        CHECK(l.bytes(category::windows) == 1500);
        memgov::charge_token other{l, category::objects, 10};
        other = std::move(moved); // releases other's 10 bytes, takes moved's 1500
        CHECK(l.bytes(category::objects) == 0);
        CHECK(l.bytes(category::windows) == 1500);
    }
    CHECK(l.total() == 0);
    memgov::charge_token empty;
    CHECK_FALSE(empty);
    empty.release(); // harmless
}

TEST_CASE("ledger: observers and hot path are noexcept", "[ledger]") {
    memgov::ledger l;
    STATIC_REQUIRE(noexcept(l.charge(category::sessions, 1)));
    STATIC_REQUIRE(noexcept(l.release(category::sessions, 1)));
    STATIC_REQUIRE(noexcept(l.total()));
    STATIC_REQUIRE(noexcept(l.bytes(category::sessions)));
    STATIC_REQUIRE(noexcept(l.category_count()));
}

TEST_CASE("ledger: charges from exited threads are kept and slots are reused", "[ledger]") {
    memgov::ledger l;
    l.charge(category::sessions, 1); // main thread's slot
    for (int round = 0; round < 8; ++round) {
        std::thread t{[&] { l.charge(category::sessions, 10); }};
        t.join();
    }
    CHECK(l.bytes(category::sessions) == 81);
    // One slot for main, one reused by each short-lived thread in turn.
    CHECK(l.slot_count() == 2);
    // A thread may release what another charged: totals are sums, not per-thread balances.
    std::thread t{[&] { l.release(category::sessions, 81); }};
    t.join();
    CHECK(l.total() == 0);
}

TEST_CASE("ledger: several ledgers in one thread stay separate", "[ledger]") {
    std::vector<std::unique_ptr<memgov::ledger>> ls;
    for (int i = 0; i < 7; ++i) ls.push_back(std::make_unique<memgov::ledger>()); // > cache size
    for (int round = 0; round < 3; ++round) {
        for (std::size_t i = 0; i < ls.size(); ++i) {
            ls[i]->charge(category::objects, static_cast<std::int64_t>(i + 1));
        }
    }
    for (std::size_t i = 0; i < ls.size(); ++i) {
        CHECK(ls[i]->bytes(category::objects) == static_cast<std::int64_t>(3 * (i + 1)));
        CHECK(ls[i]->slot_count() == 1);
    }
    // A destroyed ledger's successor (maybe at the same address) starts clean.
    ls[0] = std::make_unique<memgov::ledger>();
    CHECK(ls[0]->total() == 0);
    ls[0]->charge(category::objects, 5);
    CHECK(ls[0]->total() == 5);
}
