// SPDX-License-Identifier: MIT
#include <memgov/buffer_pool.hpp>
#include <memgov/session_map.hpp>
#include <memgov/sliding_window.hpp>

#include "session_map_support.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using memgov::evict_reason;
using memgov::session_map_config;
using memgov_test::evict_recorder;
using memgov_test::tracked_value;

namespace {

using smap = memgov::session_map<std::string, int, memgov::manual_clock>;

// Every rule off: tests turn on the ones they exercise.
session_map_config quiet_config() {
    session_map_config c;
    c.shards = 4;
    c.idle_ttl = session_map_config::never;
    c.absolute_ttl = session_map_config::never;
    c.ended_grace = session_map_config::never;
    c.suspicious_age = session_map_config::never;
    return c;
}

struct fixture {
    memgov::manual_clock clock;
    evict_recorder<std::string> rec;

    smap::hooks_type hooks() {
        smap::hooks_type h;
        h.on_evict = [this](const std::string& k, int&, evict_reason r) { rec.add(k, r); };
        return h;
    }
    std::unique_ptr<smap> make(session_map_config c, smap::hooks_type h) {
        return std::make_unique<smap>(c, std::move(h), clock);
    }
    std::unique_ptr<smap> make(session_map_config c) { return make(c, hooks()); }
};

auto value(int v) {
    return [v] { return v; };
}

// A map of `count` entries "0", "1", ... inserted `step` apart from now on, each costing `cost`,
// in `shards` shards sampled `samples` at a time for LRU.
std::unique_ptr<smap> aged_map(fixture& f, std::size_t shards, std::size_t samples, int count, memgov::duration step,
                               std::int64_t cost) {
    auto c = quiet_config();
    c.shards = shards;
    c.lru_samples = samples;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    for (int i = 0; i < count; ++i) {
        f.clock.set(t0 + i * step);
        m->insert(std::to_string(i), value(i), {.cost = cost});
    }
    return m;
}

int read(smap& m, const std::string& k) {
    int out = -1;
    m.inspect(k, [&](const int& v) { out = v; });
    return out;
}

} // namespace

TEST_CASE("session_map: configuration errors name the field", "[session_map]") {
    auto throws_with = [](session_map_config c, const std::string& field) {
        try {
            smap m{c};
            FAIL("no exception for " << field);
        } catch (const std::invalid_argument& e) {
            CHECK_THAT(e.what(), Catch::Contains("memgov::session_map_config::" + field));
        }
    };
    session_map_config c;
    c.shards = 3;
    throws_with(c, "shards");
    c = {};
    c.shards = 0;
    throws_with(c, "shards");
    c = {};
    c.idle_ttl = -1s;
    throws_with(c, "idle_ttl");
    c = {};
    c.absolute_ttl = -1s;
    throws_with(c, "absolute_ttl");
    c = {};
    c.ended_grace = -1s;
    throws_with(c, "ended_grace");
    c = {};
    c.suspicious_age = -1s;
    throws_with(c, "suspicious_age");
    c = {};
    c.suspicious_idle = -1s;
    throws_with(c, "suspicious_idle");
    c = {};
    c.check_interval = 0s;
    throws_with(c, "check_interval");
    c = {};
    c.sweep_resolution = 0s;
    throws_with(c, "sweep_resolution");
    c = {};
    c.lru_samples = 0;
    throws_with(c, "lru_samples");
    c = {};
    c.ledger_category = static_cast<memgov::category>(memgov::ledger::max_categories);
    throws_with(c, "ledger_category");

    smap::hooks_type h;
    h.rules.push_back({.name = "no-predicate"});
    CHECK_THROWS_WITH((smap{session_map_config{}, h}), Catch::Contains("no-predicate"));
}

TEST_CASE("session_map: observers, release paths and destructor are noexcept", "[session_map]") {
    smap m{quiet_config()};
    const smap& cm = m;
    STATIC_REQUIRE(noexcept(m.erase(std::string{})));
    STATIC_REQUIRE(noexcept(m.mark_ended(std::string{})));
    STATIC_REQUIRE(noexcept(m.set_no_evict(std::string{}, true)));
    STATIC_REQUIRE(noexcept(cm.contains(std::string{})));
    STATIC_REQUIRE(noexcept(cm.info(std::string{})));
    STATIC_REQUIRE(noexcept(cm.size()));
    STATIC_REQUIRE(noexcept(cm.empty()));
    STATIC_REQUIRE(noexcept(cm.total_cost()));
    STATIC_REQUIRE(noexcept(cm.stats()));
    STATIC_REQUIRE(noexcept(cm.config()));
    STATIC_REQUIRE(noexcept(m.clear()));
    const memgov::time_point t{};
    STATIC_REQUIRE(noexcept(m.tick(t)));
    STATIC_REQUIRE(std::is_nothrow_destructible_v<smap>);
    STATIC_REQUIRE(!std::is_copy_constructible_v<smap>);
    STATIC_REQUIRE(memgov::to_string(evict_reason::lru_under_pressure) == "lru_under_pressure");
    STATIC_REQUIRE(memgov::to_string(evict_reason::cleared) == "cleared");
}

TEST_CASE("session_map: an entry costs 56 bytes besides its key and value", "[session_map]") {
    // The memory goal (at most 2x std::unordered_map's per-node overhead) rests on this.
    using pair16 = std::array<std::uint64_t, 2>;
    STATIC_REQUIRE(memgov::session_map<std::uint64_t, pair16>::node_bytes == 56 + 8 + 16);
    STATIC_REQUIRE(memgov::session_map<std::string, pair16>::node_bytes == 56 + sizeof(std::string) + 16);
}

TEST_CASE("session_map: insert, contains, with, erase", "[session_map]") {
    fixture f;
    auto m = f.make(quiet_config());
    CHECK(m->empty());
    CHECK(m->insert("a", value(1)));
    CHECK(m->insert("b", value(2)));
    int calls = 0;
    CHECK_FALSE(m->insert("a", [&] {
        ++calls;
        return 9;
    }));
    CHECK(calls == 0); // make is not called for a key that is present
    CHECK(m->size() == 2);
    CHECK(m->contains("a"));
    CHECK_FALSE(m->contains("z"));

    CHECK(m->with("a", [](int& v) { v += 10; }));
    CHECK(read(*m, "a") == 11);
    CHECK_FALSE(m->with("z", [](int&) { FAIL("called for a missing key"); }));
    bool shared = false;
    CHECK(m->with_shared(
        "b", [&](const int& v, const smap::entry& e) { shared = v == 2 && e.key() == "b" && !e.evicted(); }));
    CHECK(shared);

    CHECK(m->erase("a"));
    CHECK_FALSE(m->erase("a"));
    CHECK_FALSE(m->contains("a"));
    CHECK(m->size() == 1);
    REQUIRE(f.rec.count() == 1);
    CHECK(f.rec.records()[0].key == "a");
    CHECK(f.rec.records()[0].reason == evict_reason::erased);

    const auto st = m->stats();
    CHECK(st.hits == 3); // with a, inspect a, with_shared b
    CHECK(st.misses == 1);
    CHECK(st.inserts == 2);
    CHECK(st.evicted(evict_reason::erased) == 1);
}

TEST_CASE("session_map: erase_if removes an entry only when the predicate holds", "[session_map]") {
    fixture f;
    auto m = f.make(quiet_config());
    m->insert("a", value(1));
    int calls = 0;
    CHECK_FALSE(m->erase_if("a", [&](const int& v) {
        ++calls;
        return v == 2;
    }));
    CHECK(calls == 1);
    CHECK(m->contains("a"));
    CHECK(f.rec.count() == 0);
    CHECK_FALSE(m->erase_if("z", [](const int&) -> bool {
        FAIL("called for a missing key");
        return true;
    }));
    CHECK(m->erase_if("a", [](const int& v, const smap::entry& e) { return v == 1 && e.key() == "a"; }));
    CHECK_FALSE(m->contains("a"));
    REQUIRE(f.rec.count() == 1);
    CHECK(f.rec.records()[0].reason == evict_reason::erased);
    CHECK(m->stats().evicted(evict_reason::erased) == 1);
    // It does not count as activity.
    m->insert("b", value(2));
    CHECK_FALSE(m->erase_if("b", [](const int&) { return false; }));
    CHECK(m->info("b")->messages == 0);
    // A predicate that throws removes nothing and leaves the entry unlocked.
    CHECK_THROWS_AS(m->erase_if("b", [](const int&) -> bool { throw std::runtime_error{"no"}; }), std::runtime_error);
    CHECK(m->with("b", [](int& v) { v = 3; }));
    // Re-entry into the key being erased is detected.
    m->with("b", [&](int&) { CHECK_THROWS_AS(m->erase_if("b", [](const int&) { return true; }), std::logic_error); });
    CHECK(m->contains("b"));
}

TEST_CASE("session_map: erase_if spares a new session that reuses the key", "[session_map]") {
    // The race it exists for: the owner of session 1 decides to remove it, but by then that
    // entry has left the map and the key belongs to session 2. Each removal is made to happen
    // inside the predicate, so the interleaving is exact.
    fixture f;
    auto m = f.make(quiet_config());
    SECTION("erased, then inserted again") {
        m->insert("k", value(1));
        CHECK_FALSE(m->erase_if("k", [&](const int& v) {
            CHECK(m->erase("k"));            // the sweep or an eviction takes session 1
            CHECK(m->insert("k", value(2))); // a reconnect reuses the key
            return v == 1;                   // the owner's check still sees its own session
        }));
        CHECK(read(*m, "k") == 2);
        CHECK(f.rec.count(evict_reason::erased) == 1);
    }
    SECTION("replaced by upsert") {
        m->insert("k", value(1));
        CHECK_FALSE(m->erase_if("k", [&](const int& v) {
            CHECK_FALSE(m->upsert("k", value(2)));
            return v == 1;
        }));
        CHECK(read(*m, "k") == 2);
        CHECK(f.rec.count(evict_reason::replaced) == 1);
        CHECK(f.rec.count(evict_reason::erased) == 0);
    }
    SECTION("a plain erase would have removed the new session") {
        m->insert("k", value(1));
        (void)m->inspect("k", [&](const int&) {
            CHECK(m->erase("k"));
            CHECK(m->insert("k", value(2)));
        });
        CHECK(m->erase("k")); // what an owner without erase_if would do: session 2 is gone
        CHECK_FALSE(m->contains("k"));
    }
    CHECK(m->size() <= 1);
}

TEST_CASE("session_map: upsert replaces or updates", "[session_map]") {
    fixture f;
    auto m = f.make(quiet_config());
    CHECK(m->upsert("k", value(1)));       // inserted
    CHECK_FALSE(m->upsert("k", value(2))); // replaced
    CHECK(read(*m, "k") == 2);
    CHECK(f.rec.count(evict_reason::replaced) == 1);

    CHECK_FALSE(m->upsert("k", value(100), [](int& v) { v += 5; }));
    CHECK(read(*m, "k") == 7);
    CHECK(m->upsert("n", value(100), [](int& v) { v += 5; }));
    CHECK(read(*m, "n") == 100);
    CHECK(m->stats().inserts == 3);
}

TEST_CASE("session_map: a make that throws inserts nothing", "[session_map]") {
    fixture f;
    auto m = f.make(quiet_config());
    CHECK_THROWS_AS(m->insert("x", []() -> int { throw std::runtime_error{"no"}; }), std::runtime_error);
    CHECK_THROWS_AS(m->upsert("x", []() -> int { throw std::runtime_error{"no"}; }), std::runtime_error);
    CHECK(m->size() == 0);
    CHECK(f.rec.count() == 0);
}

TEST_CASE("session_map: an exception in the callback releases the entry", "[session_map]") {
    fixture f;
    auto m = f.make(quiet_config());
    m->insert("k", value(1));
    CHECK_THROWS_AS(m->with("k", [](int&) { throw std::runtime_error{"fn"}; }), std::runtime_error);
    CHECK(m->with("k", [](int& v) { v = 3; })); // not left locked
    CHECK(read(*m, "k") == 3);
}

TEST_CASE("session_map: re-entering the same key is detected", "[session_map]") {
    fixture f;
    auto m = f.make(quiet_config());
    m->insert("a", value(1));
    m->insert("b", value(2));
    m->with("a", [&](int&) {
        CHECK_THROWS_AS(m->with("a", [](int&) {}), std::logic_error);
        CHECK_THROWS_AS(m->with_shared("a", [](const int&) {}), std::logic_error);
        CHECK_THROWS_AS(m->set_cost("a", 5), std::logic_error);
        // Other keys and structure operations on the same key are fine.
        CHECK(m->with("b", [](int& v) { v = 20; }));
        CHECK(m->contains("a"));
        CHECK(m->info("a").has_value());
        CHECK(m->mark_ended("a"));
    });
    m->with_shared("a", [&](const int&) { CHECK_THROWS_AS(m->inspect("a", [](const int&) {}), std::logic_error); });
    CHECK(read(*m, "b") == 20);
    CHECK(m->with("a", [](int&) {})); // nothing left held
}

TEST_CASE("session_map: activity updates last-active and the message count", "[session_map]") {
    fixture f;
    auto m = f.make(quiet_config());
    const auto t0 = f.clock.now();
    m->insert("k", value(0));
    auto i = m->info("k");
    REQUIRE(i);
    CHECK(i->created == t0);
    CHECK(i->last_active == t0);
    CHECK(i->messages == 0);
    CHECK_FALSE(i->ended());

    f.clock.advance(5s);
    m->with("k", [](int&) {});
    f.clock.advance(5s);
    m->with_shared("k", [](const int&) {});
    f.clock.advance(5s);
    m->inspect("k", [](const int&) {}); // not activity
    i = m->info("k");
    CHECK(i->messages == 2);
    CHECK(i->last_active == t0 + 10s);
    CHECK(i->age(f.clock.now()) == 15s);
    CHECK(i->idle(f.clock.now()) == 5s);
}

TEST_CASE("session_map: coarse touch time uses the ticked time", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.touch = memgov::touch_time::coarse;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    m->insert("k", value(0));
    f.clock.advance(5s);
    m->with("k", [](int&) {});
    CHECK(m->info("k")->last_active == t0 + 5s); // not ticked yet: the clock
    m->tick(t0 + 10s);
    f.clock.advance(25s);
    m->with("k", [](int&) {});
    CHECK(m->info("k")->last_active == t0 + 10s); // ticked: the ticked time, not the clock's
    m->tick(t0 + 20s);
    m->with("k", [](int&) {});
    CHECK(m->info("k")->last_active == t0 + 20s);
    m->tick(t0 + 15s); // never moves back
    m->with("k", [](int&) {});
    CHECK(m->info("k")->last_active == t0 + 20s);
    m->sweep(t0 + 25s, 100); // a sweep ticks too
    m->with("k", [](int&) {});
    CHECK(m->info("k")->last_active == t0 + 25s);
    m->insert("j", value(0)); // insertion reads the clock
    CHECK(m->info("j")->created == t0 + 30s);
}

TEST_CASE("session_map: idle ttl expires exactly at the bound and activity postpones it", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.idle_ttl = 10min;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    m->insert("idle", value(0));
    m->insert("busy", value(0));

    m->sweep(t0 + 10min - 1ns, 1000);
    CHECK(m->size() == 2);

    f.clock.set(t0 + 6min);
    m->with("busy", [](int&) {}); // busy is now due at t0 + 16 min

    auto r = m->sweep(t0 + 10min, 1000);
    CHECK(r.evicted == 1);
    CHECK(r.complete);
    CHECK_FALSE(m->contains("idle"));
    CHECK(m->contains("busy"));
    CHECK(f.rec.count(evict_reason::expired_idle) == 1);

    r = m->sweep(t0 + 16min - 1ns, 1000);
    CHECK(r.evicted == 0);
    r = m->sweep(t0 + 16min, 1000);
    CHECK(r.evicted == 1);
    CHECK(m->empty());
    CHECK(m->stats().evicted(evict_reason::expired_idle) == 2);
}

TEST_CASE("session_map: absolute ttl ignores activity", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.absolute_ttl = 1h;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    m->insert("k", value(0));
    for (int i = 1; i < 6; ++i) {
        f.clock.set(t0 + i * 10min);
        m->with("k", [](int&) {});
        m->sweep(f.clock.now(), 100);
    }
    CHECK(m->contains("k"));
    CHECK(m->sweep(t0 + 1h - 1ns, 100).evicted == 0);
    CHECK(m->sweep(t0 + 1h, 100).evicted == 1);
    REQUIRE(f.rec.count() == 1);
    CHECK(f.rec.records()[0].reason == evict_reason::expired_absolute);
}

TEST_CASE("session_map: ended sessions go after the grace period", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.ended_grace = 60s;
    c.idle_ttl = 10min;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    m->insert("k", value(0));
    m->insert("other", value(0));
    f.clock.set(t0 + 30s);
    CHECK(m->mark_ended("k"));
    f.clock.set(t0 + 50s);
    CHECK(m->mark_ended("k")); // the first call wins
    CHECK(m->info("k")->ended_at == t0 + 30s);
    CHECK_FALSE(m->mark_ended("missing"));

    CHECK(m->sweep(t0 + 90s - 1ns, 100).evicted == 0);
    CHECK(m->sweep(t0 + 90s, 100).evicted == 1); // earlier than its idle deadline
    CHECK(f.rec.count(evict_reason::ended) == 1);
    CHECK(m->contains("other"));

    // Ending from inside the callback, with zero grace: gone at the next sweep.
    c.ended_grace = 0s;
    fixture g;
    auto m2 = g.make(c);
    m2->insert("k", value(0));
    m2->with("k", [](int&, smap::entry& e) { e.mark_ended(); });
    CHECK(m2->sweep(g.clock.now(), 100).evicted == 1);
    CHECK(g.rec.count(evict_reason::ended) == 1);
}

TEST_CASE("session_map: activity after the end restarts the grace period", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.ended_grace = 60s;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    m->insert("k", value(0));
    f.clock.set(t0 + 10s);
    m->with("k", [](int&) {});
    CHECK_FALSE(m->info("k")->ended());
    f.clock.set(t0 + 30s);
    CHECK(m->mark_ended("k"));
    CHECK(m->info("k")->ended_at == t0 + 30s);
    CHECK(m->info("k")->last_active == t0 + 30s); // ending is activity

    // A late user (a delivery report, say) 40 s after the end: the grace runs from there.
    f.clock.set(t0 + 70s);
    m->with("k", [](int&) {});
    CHECK(m->info("k")->ended_at == t0 + 70s);
    CHECK(m->sweep(t0 + 90s, 100).evicted == 0); // 60 s after the end, 20 s after the use
    CHECK(m->sweep(t0 + 130s - 1ns, 100).evicted == 0);
    CHECK(m->sweep(t0 + 130s, 100).evicted == 1);
    CHECK(f.rec.count(evict_reason::ended) == 1);
}

TEST_CASE("session_map: flags and cost share a word without mixing", "[session_map]") {
    fixture f;
    auto m = f.make(quiet_config());
    m->insert("k", value(0), {.no_evict = true, .cost = 1000});
    CHECK(m->mark_ended("k"));
    auto i = m->info("k");
    CHECK(i->cost == 1000);
    CHECK(i->no_evict);
    CHECK(i->ended());
    CHECK(m->total_cost() == 1000);
    m->with("k", [](int&, smap::entry& e) {
        e.set_cost(5);
        CHECK(e.cost() == 5);
        e.set_no_evict(false);
        CHECK(e.cost() == 5);
    });
    i = m->info("k");
    CHECK(i->cost == 5);
    CHECK_FALSE(i->no_evict);
    CHECK(i->ended());
    CHECK(m->total_cost() == 5);

    // A cost beyond what the word holds saturates rather than spilling into the flags.
    constexpr std::int64_t most = (std::int64_t{1} << 60) - 1;
    CHECK(m->set_cost("k", std::numeric_limits<std::int64_t>::max()));
    i = m->info("k");
    CHECK(i->cost == most);
    CHECK_FALSE(i->no_evict);
    CHECK(i->ended());
    CHECK(m->total_cost() == most);
    CHECK(m->evict_over_cost(most - 1, 100).evicted == 1);
    CHECK(m->total_cost() == 0);
}

TEST_CASE("session_map: suspicious sessions are old, idle and nearly silent", "[session_map]") {
    fixture f;
    auto c = quiet_config(); // rule 5 on its own (idle ttl off)
    c.suspicious_age = 20min;
    c.suspicious_idle = 10min;
    c.suspicious_min_messages = 3;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    m->insert("silent", value(0));
    m->insert("chatty", value(0));
    m->insert("recent", value(0));
    for (int i = 0; i < 3; ++i) m->with("chatty", [](int&) {});
    m->with("recent", [](int&) {});
    f.clock.set(t0 + 15min);
    m->with("recent", [](int&) {}); // 2 messages, last at 15 min

    CHECK(m->sweep(t0 + 20min - 1ns, 100).evicted == 0);
    CHECK(m->sweep(t0 + 20min, 100).evicted == 1); // silent: 20 min old, idle 20 min, 0 msgs
    CHECK_FALSE(m->contains("silent"));
    CHECK(m->sweep(t0 + 25min - 1ns, 100).evicted == 0);
    CHECK(m->sweep(t0 + 25min, 100).evicted == 1); // recent: idle 10 min at 25 min
    CHECK(m->sweep(t0 + 5h, 100).evicted == 0);    // chatty has 3 messages
    CHECK(m->contains("chatty"));
    CHECK(f.rec.count(evict_reason::suspicious) == 2);
}

TEST_CASE("session_map: the inconsistent-state hook is checked under the entry lock", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.check_interval = 30s;
    auto h = f.hooks();
    h.inconsistent = [](const std::string&, const int& v) { return v < 0; };
    auto m = f.make(c, h);
    const auto t0 = f.clock.now();
    m->insert("good", value(1));
    m->insert("bad", value(1));
    m->with("bad", [](int& v) { v = -1; });

    CHECK(m->sweep(t0 + 30s - 1ns, 100).evicted == 0);
    auto r = m->sweep(t0 + 30s, 100);
    CHECK(r.evicted == 1);
    CHECK(r.work == 2); // both were due for a check; only the bad one went
    CHECK_FALSE(m->contains("bad"));
    CHECK(f.rec.count(evict_reason::orphan) == 1);

    // The good one is checked again one interval later, the bad one is found then.
    m->with("good", [](int& v) { v = -5; });
    CHECK(m->sweep(t0 + 60s - 1ns, 100).evicted == 0);
    CHECK(m->sweep(t0 + 60s, 100).evicted == 1);
}

TEST_CASE("session_map: a busy entry is re-checked at the next tick", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.check_interval = 1s;
    auto h = f.hooks();
    h.inconsistent = [](const std::string&, const int&) { return true; };
    auto m = f.make(c, h);
    const auto t0 = f.clock.now();
    m->insert("k", value(1));
    m->with("k", [&](int&) {
        // The sweep only tries the entry lock: it must not wait for us.
        const auto r = m->sweep(t0 + 1s, 100);
        CHECK(r.evicted == 0);
        CHECK(m->contains("k"));
    });
    CHECK(m->sweep(t0 + 1s + 1ms, 100).evicted == 1);
}

TEST_CASE("session_map: user orphan rules with a time hint and a value check", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.check_interval = 1h;
    auto h = f.hooks();
    // Over 5 minutes old and costing more than 100 bytes.
    h.rules.push_back(smap::rule_type{
        .name = "fat-and-old",
        .reason = evict_reason::orphan,
        .applies = [](const memgov::session_info& i,
                      memgov::time_point now) { return i.age(now) >= 5min && i.cost > 100; },
        .earliest = [](const memgov::session_info& i) -> std::optional<memgov::time_point> { return i.created + 5min; },
        .confirm = {}});
    // Values equal to 42, checked under the lock, at most every check_interval.
    h.rules.push_back(smap::rule_type{.name = "forty-two",
                                      .reason = evict_reason::orphan,
                                      .applies = [](const memgov::session_info&, memgov::time_point) { return true; },
                                      .earliest = {},
                                      .confirm = [](const std::string&, const int& v) { return v == 42; }});
    auto m = f.make(c, h);
    const auto t0 = f.clock.now();
    m->insert("fat", value(0), {.cost = 500});
    m->insert("thin", value(0), {.cost = 50});
    m->insert("answer", value(42));
    m->insert("late", value(0));
    CHECK(m->sweep(t0 + 5min - 1ns, 100).evicted == 0);
    // Every entry is evaluated at 5 min (the first rule's hint); value checks run whenever an
    // entry is evaluated, so "answer" goes too.
    CHECK(m->sweep(t0 + 5min, 100).evicted == 2);
    CHECK_FALSE(m->contains("fat"));
    CHECK_FALSE(m->contains("answer"));
    m->with("late", [](int& v) { v = 42; });
    CHECK(m->sweep(t0 + 1h - 1ns, 100).evicted == 0);
    CHECK(m->sweep(t0 + 1h, 100).evicted == 1); // "late", at its hourly check
    CHECK_FALSE(m->contains("late"));
    CHECK(m->contains("thin"));
}

TEST_CASE("session_map: the default rules are the seed gateway's five", "[session_map]") {
    const session_map_config c;
    CHECK(c.ended_grace == 60s);
    CHECK(c.idle_ttl == 10min);
    CHECK(c.absolute_ttl == 1h);
    CHECK(c.suspicious_age == 20min);
    CHECK(c.suspicious_idle == 10min);
    CHECK(c.suspicious_min_messages == 3);

    fixture f;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    m->insert("idle", value(0));
    m->insert("old", value(0));
    m->insert("ended", value(0));
    for (int i = 0; i < 3; ++i) m->with("old", [](int&) {});
    f.clock.set(t0 + 1min);
    m->mark_ended("ended");
    CHECK(m->sweep(t0 + 2min, 100).evicted == 1); // ended at 1 min + 60 s
    for (int minute = 3; minute <= 60; ++minute) {
        f.clock.set(t0 + minute * 1min);
        m->with("old", [](int&) {});
        m->sweep(f.clock.now(), 100);
    }
    CHECK(f.rec.count(evict_reason::ended) == 1);
    CHECK(f.rec.count(evict_reason::expired_idle) == 1);     // "idle" at 10 min
    CHECK(f.rec.count(evict_reason::expired_absolute) == 1); // "old" at 1 h despite activity
    CHECK(m->empty());
}

TEST_CASE("session_map: sweep work follows what expires and resumes", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.idle_ttl = 10min;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    for (int i = 0; i < 100; ++i) m->insert("old" + std::to_string(i), value(i));
    f.clock.set(t0 + 5min);
    for (int i = 0; i < 900; ++i) m->insert("new" + std::to_string(i), value(i));

    // 100 due of 1000: a sweep at 10 min examines only those.
    auto r = m->sweep(t0 + 10min, 30);
    CHECK(r.work == 30);
    CHECK(r.evicted == 30);
    CHECK_FALSE(r.complete);
    std::size_t evicted = r.evicted;
    std::size_t work = r.work;
    while (!r.complete) {
        r = m->sweep(t0 + 10min, 30);
        evicted += r.evicted;
        work += r.work;
    }
    CHECK(evicted == 100);
    CHECK(work == 100);
    CHECK(m->size() == 900);
    CHECK(m->sweep(t0 + 10min, 30).work == 0);
    CHECK(m->stats().sweep_work == 100);
    CHECK(m->sweep(t0 + 10min, 0).complete == false);
}

TEST_CASE("session_map: sweeping over a long quiet time costs nothing", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.idle_ttl = 24h;
    c.sweep_resolution = 1ms;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    for (int i = 0; i < 50; ++i) m->insert(std::to_string(i), value(i));
    for (int h = 1; h < 24; ++h) CHECK(m->sweep(t0 + h * 1h, 1000).work <= 50);
    auto r = m->sweep(t0 + 24h, 1000);
    CHECK(r.evicted == 50);
    // Far beyond the wheel's span (2^36 ticks): clamped and re-filed, never lost.
    c.idle_ttl = std::chrono::hours{24 * 2000};
    fixture g;
    auto m2 = g.make(c);
    m2->insert("k", value(0));
    const auto g0 = g.clock.now();
    CHECK(m2->sweep(g0 + std::chrono::hours{24 * 1000}, 100).evicted == 0);
    CHECK(m2->sweep(g0 + std::chrono::hours{24 * 2000}, 100).evicted == 1);
}

TEST_CASE("session_map: cost accounting in the map and the ledger", "[session_map]") {
    memgov::ledger l;
    memgov::manual_clock clock;
    const auto cat = l.define("my_sessions");
    auto c = quiet_config();
    c.ledger_category = cat;
    {
        smap m{c, {}, clock, &l};
        // The map's own storage has a category of its own, apart from the costs.
        CHECK(l.bytes(memgov::category::session_storage) == static_cast<std::int64_t>(m.stats().structure_bytes));
        CHECK(l.bytes(memgov::category::session_storage) > 0);
        CHECK(l.bytes(cat) == 0);
        CHECK(l.bytes(memgov::category::sessions) == 0);
        m.insert("a", value(0));
        m.insert("b", value(0), {.cost = 300});
        const std::int64_t base = l.bytes(cat);
        CHECK(base == 300);
        m.with("a", [](int&, smap::entry& e) {
            e.set_cost(1000);
            e.add_cost(24);
            CHECK(e.cost() == 1024);
        });
        CHECK(m.total_cost() == 1324);
        CHECK(m.info("a")->cost == 1024);
        CHECK(l.bytes(cat) == base + 1024);
        CHECK(m.set_cost("b", 100));
        CHECK_FALSE(m.set_cost("zz", 100));
        CHECK(m.total_cost() == 1124);
        m.with("a", [](int&, smap::entry& e) { e.set_cost(-5); }); // clamps at 0
        CHECK(m.info("a")->cost == 0);
        m.set_cost("a", 4096);
        m.erase("a");
        CHECK(m.total_cost() == 100);
        CHECK(m.stats().total_cost == 100);
        CHECK(l.bytes(cat) == 100);
    }
    CHECK(l.bytes(cat) == 0);
    CHECK(l.bytes(memgov::category::session_storage) == 0);
    // Storage may go to a category of the user's too.
    const auto storage = l.define("my_session_storage");
    c.storage_category = storage;
    {
        smap m{c, {}, clock, &l};
        m.insert("a", value(0), {.cost = 10});
        CHECK(l.bytes(storage) == static_cast<std::int64_t>(m.stats().structure_bytes));
        CHECK(l.bytes(memgov::category::session_storage) == 0);
        CHECK(l.bytes(cat) == 10);
    }
    CHECK(l.bytes(storage) == 0);
}

TEST_CASE("session_map: lru eviction takes the least recently active first", "[session_map]") {
    fixture f;
    const auto t0 = f.clock.now();
    auto m = aged_map(f, 1, 64, 10, 1s, 10); // a shard this small is scanned whole: exact LRU
    // Touch 0, 1, 2 again: the order becomes 3..9, 0, 1, 2.
    for (int i = 0; i < 3; ++i) {
        f.clock.set(t0 + (20 + i) * 1s);
        m->with(std::to_string(i), [](int&) {});
    }
    m->set_no_evict("3", true);
    const auto r = m->evict_lru_until(40, 1000);
    CHECK(r.complete);
    CHECK(r.evicted == 6);
    CHECK(r.bytes == 60);
    CHECK(m->total_cost() == 40);
    std::vector<std::string> order;
    for (const auto& rec : f.rec.records()) {
        CHECK(rec.reason == evict_reason::lru_under_pressure);
        order.push_back(rec.key);
    }
    CHECK(order == std::vector<std::string>{"4", "5", "6", "7", "8", "9"});
    CHECK(m->contains("3"));

    // A budget stops it early.
    const auto r2 = m->evict_lru_until(0, 2);
    CHECK(r2.work <= 2 + 4); // one step samples the whole (small) shard
    CHECK_FALSE(r2.complete);
}

TEST_CASE("session_map: lru eviction takes ended sessions first", "[session_map]") {
    fixture f;
    const auto t0 = f.clock.now();
    auto m = aged_map(f, 1, 64, 6, 1s, 10);
    f.clock.set(t0 + 10s);
    m->mark_ended("4"); // the most recently active now, but done
    m->mark_ended("5");
    m->set_no_evict("5", true);
    const auto r = m->evict_lru_until(40, 1000);
    CHECK(r.evicted == 2);
    std::vector<std::string> order;
    for (const auto& rec : f.rec.records()) order.push_back(rec.key);
    CHECK(order == std::vector<std::string>{"4", "0"});
    CHECK(m->contains("5"));
}

TEST_CASE("session_map: lru sampling on a large map prefers old entries", "[session_map]") {
    fixture f;
    auto m = aged_map(f, 8, 16, 4000, 1ms, 1);
    const auto r = m->evict_lru_until(3600, 100000);
    CHECK(r.evicted == 400);
    // With 16 samples per step the victims come overwhelmingly from the older half.
    std::size_t old = 0;
    for (const auto& rec : f.rec.records()) old += std::stoi(rec.key) < 2000 ? 1 : 0;
    CHECK(old >= 360);
}

TEST_CASE("session_map: evict_older_than by creation time with a budget", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    for (int i = 0; i < 20; ++i) {
        f.clock.set(t0 + i * 10s);
        m->insert(std::to_string(i), value(i), {.cost = 5});
    }
    m->set_no_evict("0", true);
    f.clock.set(t0 + 300s);
    // Created at or before t0 + 100s: 0..10, minus the no_evict one.
    auto r = m->evict_older_than(200s, 4);
    CHECK(r.work == 4);
    CHECK_FALSE(r.complete);
    std::size_t evicted = r.evicted;
    for (int guard = 0; guard < 20 && !r.complete; ++guard) {
        r = m->evict_older_than(200s, 4);
        evicted += r.evicted;
    }
    CHECK(r.complete);
    CHECK(evicted == 10);
    CHECK(m->contains("0"));
    CHECK(m->contains("11"));
    CHECK_FALSE(m->contains("10"));
    CHECK(f.rec.count(evict_reason::age_under_pressure) == 10);
}

TEST_CASE("session_map: evict_over_cost and evict_largest use cost buckets", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    auto m = f.make(c);
    m->insert("tiny", value(0), {.cost = 10});
    m->insert("small", value(0), {.cost = 1000});
    m->insert("big", value(0), {.cost = 30'000});
    m->insert("huge", value(0), {.cost = 5'000'000});
    m->insert("pinned", value(0), {.no_evict = true, .cost = 9'000'000});
    m->insert("free", value(0));

    auto r = m->evict_over_cost(30'000, 100); // strictly over
    CHECK(r.evicted == 1);
    CHECK(r.bytes == 5'000'000);
    CHECK(r.complete);
    CHECK_FALSE(m->contains("huge"));
    CHECK(m->contains("big"));
    CHECK(m->contains("pinned"));

    r = m->evict_largest(2);
    CHECK(r.evicted == 2);
    CHECK(m->contains("tiny"));
    CHECK_FALSE(m->contains("big"));
    CHECK_FALSE(m->contains("small"));
    r = m->evict_largest(5);
    CHECK(r.evicted == 1); // tiny; "free" costs nothing, "pinned" is exempt
    CHECK_FALSE(r.complete);
    CHECK(m->contains("free"));
    CHECK(m->contains("pinned"));
    CHECK(f.rec.count(evict_reason::over_cost) == 1);
    CHECK(f.rec.count(evict_reason::largest_under_pressure) == 3);

    // The cost moves between buckets as it changes.
    m->set_cost("free", 1 << 20);
    r = m->evict_over_cost(1 << 19, 100);
    CHECK(r.evicted == 1);
    CHECK_FALSE(m->contains("free"));
}

TEST_CASE("session_map: no_evict spares pressure eviction but not erase or expiry", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.idle_ttl = 1min;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    m->insert("vip", value(0), {.no_evict = true, .cost = 100});
    m->insert("vip2", value(0), {.cost = 100});
    m->with("vip2", [](int&, smap::entry& e) { e.set_no_evict(true); });
    CHECK(m->info("vip")->no_evict);
    CHECK(m->info("vip2")->no_evict);
    f.clock.set(t0 + 30s);
    CHECK(m->evict_older_than(0s, 100).evicted == 0);
    CHECK(m->evict_over_cost(0, 100).evicted == 0);
    CHECK(m->evict_lru_until(0, 100).evicted == 0);
    CHECK(m->evict_largest(10).evicted == 0);
    CHECK(m->size() == 2);
    CHECK(m->sweep(t0 + 1min, 100).evicted == 2); // expiry still applies
    m->insert("vip3", value(0), {.no_evict = true});
    CHECK(m->erase("vip3"));
    CHECK(m->set_no_evict("vip4", true) == false);
}

TEST_CASE("session_map: an entry evicted while pinned goes when the pin is released", "[session_map]") {
    memgov::manual_clock clock;
    evict_recorder<std::string> rec;
    bool inside = false;
    using vmap = memgov::session_map<std::string, tracked_value, memgov::manual_clock>;
    vmap::hooks_type h;
    h.on_evict = [&](const std::string& k, tracked_value& v, evict_reason r) {
        CHECK_FALSE(inside); // never while the callback still holds it
        CHECK(v.payload);    // observed before destruction
        CHECK(v.counter == (r == evict_reason::cleared ? 100 : 7));
        rec.add(k, r);
    };
    const auto live0 = tracked_value::live.load();
    {
        vmap m{quiet_config(), h, clock};
        m.insert("k", [] { return tracked_value{1}; });
        m.with("k", [&](tracked_value& v, vmap::entry& e) {
            inside = true;
            CHECK(m.erase("k"));
            CHECK_FALSE(m.contains("k")); // gone from lookups at once
            CHECK(e.evicted());
            CHECK(rec.count() == 0); // but not finalized
            v.counter = 7;
            e.set_cost(100); // cost changes after removal do not touch the totals
            inside = false;
        });
        CHECK(rec.count() == 1);
        CHECK(m.total_cost() == 0);
        CHECK(m.stats().pinned_at_eviction == 1);
        CHECK(m.stats().evicted(evict_reason::erased) == 1);

        // Replacement while pinned: the callback keeps the old value.
        m.insert("r", [] { return tracked_value{7}; });
        m.with("r", [&](tracked_value& v) {
            inside = true;
            m.upsert("r", [] { return tracked_value{100}; });
            CHECK(v.counter == 7);
            inside = false;
        });
        CHECK(rec.count(evict_reason::replaced) == 1);
        m.inspect("r", [](const tracked_value& v) { CHECK(v.counter == 100); });
    }
    CHECK(tracked_value::live.load() == live0);
}

TEST_CASE("session_map: move-only values, clear and destruction call on_evict once each", "[session_map]") {
    evict_recorder<int> rec;
    using vmap = memgov::session_map<int, std::unique_ptr<int>, memgov::manual_clock>;
    vmap::hooks_type h;
    h.on_evict = [&](const int& k, std::unique_ptr<int>& v, evict_reason r) {
        CHECK(*v == k * 2);
        rec.add(k, r);
    };
    memgov::manual_clock clock;
    {
        vmap m{quiet_config(), h, clock};
        for (int i = 0; i < 100; ++i) m.insert(i, [i] { return std::make_unique<int>(i * 2); });
        CHECK(m.clear() == 100);
        CHECK(m.empty());
        CHECK(rec.count(evict_reason::cleared) == 100);
        for (int i = 0; i < 50; ++i) m.insert(i, [i] { return std::make_unique<int>(i * 2); });
    }
    CHECK(rec.count() == 150);
    for (int i = 0; i < 50; ++i) CHECK(rec.count(i) == 2);
}

TEST_CASE("session_map: for_each_info visits every entry", "[session_map]") {
    fixture f;
    auto m = f.make(quiet_config());
    for (int i = 0; i < 300; ++i) m->insert(std::to_string(i), value(i), {.cost = i});
    std::int64_t cost = 0;
    std::size_t n = 0;
    m->for_each_info([&](const std::string&, const memgov::session_info& i) {
        cost += i.cost;
        ++n;
    });
    CHECK(n == 300);
    CHECK(cost == 299 * 300 / 2);
}

TEST_CASE("session_map: a hash that maps every key to one value still works", "[session_map]") {
    struct constant_hash {
        std::size_t operator()(int) const noexcept { return 42; }
    };
    memgov::manual_clock clock;
    memgov::session_map_config c = quiet_config();
    c.idle_ttl = 10s;
    memgov::session_map<int, int, memgov::manual_clock, constant_hash> m{c, {}, clock};
    const auto t0 = clock.now();
    for (int i = 0; i < 300; ++i) CHECK(m.insert(i, [i] { return i; }, {.cost = 1}));
    CHECK_FALSE(m.insert(7, [] { return 0; }));
    CHECK(m.size() == 300);
    for (int i = 0; i < 300; ++i) {
        int seen = -1;
        CHECK(m.with(i, [&](int& v) { seen = v; }));
        CHECK(seen == i);
    }
    for (int i = 0; i < 300; i += 3) CHECK(m.erase(i));
    CHECK(m.size() == 200);
    int visited = 0;
    m.for_each_info([&](int, const memgov::session_info&) { ++visited; });
    CHECK(visited == 200);
    CHECK(m.evict_lru_until(150, 10'000).evicted == 50);
    CHECK(m.total_cost() == 150);
    CHECK(m.sweep(t0 + 10s, 1000).complete);
    CHECK(m.size() == 0);
}

TEST_CASE("session_map: a big map grows and shrinks its tables", "[session_map]") {
    memgov::ledger l;
    memgov::manual_clock clock;
    auto c = quiet_config();
    smap m{c, {}, clock, &l};
    for (int i = 0; i < 20000; ++i) m.insert(std::to_string(i), value(i));
    CHECK(m.size() == 20000);
    for (int i = 0; i < 20000; i += 2) CHECK(m.erase(std::to_string(i)));
    for (int i = 0; i < 20000; ++i) CHECK(m.contains(std::to_string(i)) == (i % 2 == 1));
    const std::size_t before = m.stats().structure_bytes;
    for (int i = 1; i < 20000; i += 2) m.erase(std::to_string(i));
    CHECK(m.stats().structure_bytes < before); // tables shrank (node storage is kept)
    CHECK(l.bytes(memgov::category::session_storage) == static_cast<std::int64_t>(m.stats().structure_bytes));
    CHECK(l.bytes(memgov::category::sessions) == 0);
}

TEST_CASE("session_map: a partly re-filed wheel slot does not strand the rest of it", "[session_map]") {
    // Both entries are filed under the same slot far up the wheel (600 000 ticks of 1 ms). The
    // sweep reaches that slot at 524 288 ticks, re-files "a" (touched at 100 s, due at 700 s)
    // one level down, and must still find "b" (idle since 0 s, due at 600 s) in the same pass,
    // not after the lower level has emptied.
    fixture f;
    auto c = quiet_config();
    c.shards = 1;
    c.idle_ttl = 10min;
    c.sweep_resolution = 1ms;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    m->insert("b", value(1));
    m->insert("a", value(2)); // ahead of "b" in the slot's list
    f.clock.set(t0 + 100s);
    m->with("a", [](int&) {});
    const auto r = m->sweep(t0 + 601s, 1000);
    CHECK(r.evicted == 1);
    CHECK(r.complete);
    CHECK_FALSE(m->contains("b"));
    CHECK(m->contains("a"));
    CHECK(f.rec.count(std::string{"b"}) == 1);
    CHECK(m->sweep(t0 + 700s, 1000).evicted == 1);
    CHECK(m->size() == 0);
}

TEST_CASE("session_map: a sweep given an earlier time than the last one", "[session_map]") {
    // The wheel already stands at 10 s when "x" ends at 5 s with 2 s of grace: it is filed as
    // due. A sweep asked for 0 s must neither spin on it (due at 7 s, so "not yet" at 0 s, and
    // filed as due again) nor move the wheel back: it is taken as a sweep at 10 s.
    fixture f;
    auto c = quiet_config();
    c.shards = 1;
    c.ended_grace = 2s;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    CHECK(m->sweep(t0 + 10s, 1000).complete);
    f.clock.set(t0 + 5s);
    m->insert("x", value(1));
    m->insert("y", value(2));
    CHECK(m->mark_ended("x"));
    const auto r = m->sweep(t0, 1000);
    CHECK(r.work == 1);
    CHECK(r.evicted == 1);
    CHECK(r.complete);
    CHECK(f.rec.count(evict_reason::ended) == 1);
    CHECK(m->contains("y"));
}

TEST_CASE("session_map: a value check that says no does not shield an entry from later rules", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.check_interval = 1min;
    auto h = f.hooks();
    int busy_checks = 0;
    // 0: idle for a minute and not busy (the value check says no: every value here is busy).
    h.rules.push_back(smap::rule_type{
        .name = "idle-not-busy",
        .reason = evict_reason::orphan,
        .applies = [](const memgov::session_info& i, memgov::time_point now) { return i.idle(now) >= 1min; },
        .earliest = {},
        .confirm =
            [&](const std::string&, const int&) {
                ++busy_checks;
                return false;
            }});
    // 1: costing over 1000 bytes, on metadata alone.
    h.rules.push_back(
        smap::rule_type{.name = "fat",
                        .reason = evict_reason::over_cost,
                        .applies = [](const memgov::session_info& i, memgov::time_point) { return i.cost > 1000; },
                        .earliest = {},
                        .confirm = {}});
    // 2: a second value check: values of 7.
    h.rules.push_back(smap::rule_type{.name = "seven",
                                      .reason = evict_reason::suspicious,
                                      .applies = [](const memgov::session_info&, memgov::time_point) { return true; },
                                      .earliest = {},
                                      .confirm = [](const std::string&, const int& v) { return v == 7; }});
    // Rule 1 last: negative values.
    h.inconsistent = [](const std::string&, const int& v) {
        if (v == -2) throw std::runtime_error{"cannot tell"};
        return v < 0;
    };
    auto m = f.make(c, h);
    const auto t0 = f.clock.now();
    m->insert("fat", value(0), {.cost = 5000});
    m->insert("seven", value(7));
    m->insert("negative", value(-1));
    m->insert("unsure", value(-2));
    m->insert("fine", value(0));
    const auto r = m->sweep(t0 + 1min, 100);
    CHECK(r.evicted == 3);
    CHECK(f.rec.count(evict_reason::over_cost) == 1);  // "fat", though rule 0 said no first
    CHECK(f.rec.count(evict_reason::suspicious) == 1); // "seven", by the later value check
    CHECK(f.rec.count(evict_reason::orphan) == 1);     // "negative", by rule 1 after them
    CHECK(m->contains("unsure"));                      // a throwing check does not hold
    CHECK(m->contains("fine"));
    CHECK(busy_checks == 4); // every entry but "fat" reached the value checks
}

TEST_CASE("session_map: sweep and evict called from on_evict on the same thread return at once", "[session_map]") {
    fixture f;
    auto c = quiet_config();
    c.shards = 1;
    c.idle_ttl = 1min;
    smap* self = nullptr;
    std::map<std::string, memgov::evict_result> nested;
    auto h = f.hooks();
    auto record = h.on_evict;
    h.on_evict = [&](const std::string& k, int& v, evict_reason why) {
        record(k, v, why);
        nested[k + "/sweep"] = self->sweep(f.clock.now(), 100);
        nested[k + "/lru"] = self->evict_lru_until(0, 100);
    };
    auto m = f.make(c, h);
    self = m.get();
    const auto t0 = f.clock.now();
    m->insert("a", value(1), {.cost = 10});
    f.clock.set(t0 + 30s);
    m->insert("b", value(2), {.cost = 10});
    f.clock.set(t0 + 1min);
    // The sweep removes "a"; from its on_evict the nested sweep does nothing, while the
    // eviction (a turn not held) runs and removes "b", from whose on_evict neither runs.
    const auto r = m->sweep(t0 + 1min, 100);
    CHECK(r.evicted == 1);
    CHECK(r.complete);
    CHECK(m->size() == 0);
    REQUIRE(nested.size() == 4);
    for (const char* k : {"a/sweep", "b/sweep", "b/lru"}) {
        INFO(k);
        CHECK(nested[k].work == 0);
        CHECK(nested[k].evicted == 0);
        CHECK_FALSE(nested[k].complete);
    }
    CHECK(nested["a/lru"].evicted == 1);
    CHECK(f.rec.count(evict_reason::expired_idle) == 1);
    CHECK(f.rec.count(evict_reason::lru_under_pressure) == 1);
    // Both turns were given back: the map sweeps and evicts as before.
    m->insert("c", value(3), {.cost = 10});
    CHECK(m->evict_lru_until(0, 100).evicted == 1);
    CHECK(m->sweep(t0 + 2min, 100).complete);
}

TEST_CASE("session_map: add_cost saturates instead of overflowing", "[session_map]") {
    fixture f;
    auto m = f.make(quiet_config());
    m->insert("k", value(0), {.cost = 100});
    m->with("k", [](int&, smap::entry& e) { e.add_cost(std::numeric_limits<std::int64_t>::max()); });
    CHECK(m->info("k")->cost == (std::int64_t{1} << 60) - 1);
    m->with("k", [](int&, smap::entry& e) { e.add_cost(std::numeric_limits<std::int64_t>::min()); });
    CHECK(m->info("k")->cost == 0);
}

TEST_CASE("session_map: the entry lock caps its shared holders instead of overflowing", "[session_map]") {
    namespace es = memgov::detail::entry_state;
    std::atomic<std::uint32_t> w{es::reader_mask - es::reader}; // one short of full
    CHECK(es::try_lock_shared(w));
    CHECK((w.load() & es::reader_mask) == es::reader_mask);
    CHECK_FALSE(es::try_lock_shared(w));     // full: the next waits
    CHECK_FALSE(es::pin_try_lock_shared(w)); // pinned, not locked
    CHECK(es::pins(w.load()) == 1);
    CHECK((w.load() & es::waiters) == 0); // nothing carried into the next field
    es::drop_units(w, es::reader);
    CHECK(es::try_lock_shared(w));
}

// ---------------------------------------------------------------- costs that follow the value

namespace {

using window_map = memgov::session_map<int, memgov::sliding_window, memgov::manual_clock>;

// The README's setup: windows from a pool, filled through `with`, and no set_cost anywhere.
void fill_windows(window_map& m, memgov::buffer_pool& pool, memgov::ledger* l, int sessions, std::size_t bytes) {
    static const std::array<std::byte, 640> frame{};
    for (int id = 0; id < sessions; ++id) {
        REQUIRE(m.insert(id, [&] {
            return memgov::sliding_window{pool, {.chunk_size = 64 * 1024, .cap_bytes = 1 << 20}, l};
        }));
        m.with(id, [&](memgov::sliding_window& w) {
            for (std::size_t done = 0; done < bytes; done += frame.size()) w.append(frame);
        });
    }
}

std::int64_t held_by_windows(window_map& m) {
    std::vector<int> ids;
    m.for_each_info([&](const int& id, const memgov::session_info&) { ids.push_back(id); });
    std::int64_t sum = 0;
    for (const int id : ids) {
        m.inspect(id, [&](const memgov::sliding_window& w) { sum += static_cast<std::int64_t>(w.held_bytes()); });
    }
    return sum;
}

} // namespace

TEST_CASE("session_map: pressure eviction frees what sliding windows hold, without set_cost", "[session_map]") {
    memgov::manual_clock clock;
    memgov::buffer_pool pool;
    auto c = quiet_config();
    constexpr std::size_t per_session = 320 * 1024;
    {
        window_map m{c, {}, clock};
        fill_windows(m, pool, nullptr, 100, per_session);
        const std::int64_t held = held_by_windows(m);
        CHECK(held == 100 * static_cast<std::int64_t>(per_session));
        CHECK(m.total_cost() == held);
        const auto r = m.evict_lru_until(0, 100000);
        CHECK(r.evicted == 100);
        CHECK(r.bytes == held);
        CHECK(m.total_cost() == 0);
    }
    {
        window_map m{c, {}, clock};
        fill_windows(m, pool, nullptr, 100, per_session);
        const auto r = m.evict_over_cost(1, 100000);
        CHECK(r.evicted == 100);
        CHECK(r.bytes == 100 * static_cast<std::int64_t>(per_session));
        CHECK(m.size() == 0);
    }
}

TEST_CASE("session_map: the ledger total is what is held, once", "[session_map]") {
    memgov::ledger l;
    memgov::manual_clock clock;
    memgov::buffer_pool pool{{}, &l};
    auto c = quiet_config();
    window_map m{c, {}, clock, &l};
    fill_windows(m, pool, &l, 20, 320 * 1024);
    // Chunks taken out of windows for a producer are still the pool's; the producer says so
    // in kafka_inflight.
    std::vector<memgov::window_chunk> in_flight(20);
    std::size_t taken = 0;
    for (int id = 0; id < 5; ++id) {
        m.with(id, [&](memgov::sliding_window& w) { taken += w.take_chunks(std::span{in_flight}.subspan(taken, 4)); });
    }
    REQUIRE(taken == 20);
    std::int64_t in_flight_bytes = 0;
    for (const auto& ch : in_flight) in_flight_bytes += static_cast<std::int64_t>(ch.buf.capacity());
    l.charge(memgov::category::kafka_inflight, in_flight_bytes);

    const auto ps = pool.stats();
    const auto physical = static_cast<std::int64_t>(ps.in_use_bytes + ps.idle_bytes + m.stats().structure_bytes);
    CHECK(l.total() == physical);
    CHECK(m.total_cost() == held_by_windows(m));
    CHECK(l.bytes(memgov::category::sessions) == m.total_cost());

    l.release(memgov::category::kafka_inflight, in_flight_bytes);
    in_flight.clear();
    const auto after = pool.stats();
    CHECK(l.total() == static_cast<std::int64_t>(after.in_use_bytes + after.idle_bytes + m.stats().structure_bytes));
}

TEST_CASE("session_map: coarse touch time ticks from the start", "[session_map]") {
    // Nobody ticks and nothing sweeps for 15 minutes while the session is used every minute:
    // the first sweep must not see it as idle since its insertion.
    fixture f;
    auto c = quiet_config();
    c.touch = memgov::touch_time::coarse;
    c.idle_ttl = 10min;
    auto m = f.make(c);
    const auto t0 = f.clock.now();
    f.clock.set(t0 + 1s);
    m->insert("k", value(0));
    CHECK(m->info("k")->created == t0 + 1s);
    for (int minute = 1; minute <= 15; ++minute) {
        f.clock.set(t0 + minute * 1min);
        m->with("k", [](int&) {});
    }
    CHECK(m->info("k")->last_active == t0 + 15min);
    CHECK(m->sweep(t0 + 15min, 100).evicted == 0);
    CHECK(m->contains("k"));
    CHECK(m->sweep(t0 + 25min, 100).evicted == 1);
}

TEST_CASE("session_map: an interval rule fires between two wheel ticks", "[session_map]") {
    // Created half a tick after a tick boundary, so its interval checks fall inside ticks.
    fixture f;
    auto c = quiet_config();
    c.check_interval = 1min;
    c.sweep_resolution = 1ms;
    auto h = f.hooks();
    h.inconsistent = [](const std::string&, const int&) { return true; };
    auto m = f.make(c, std::move(h));
    const auto t0 = f.clock.now();
    f.clock.set(t0 + 500us);
    m->insert("k", value(0));
    CHECK(m->sweep(t0 + 1min, 100).evicted == 0);
    CHECK(m->sweep(t0 + 1min + 500us, 100).evicted == 1);
    CHECK(f.rec.count(evict_reason::orphan) == 1);
    // Swept well after the check fell due, inside the same minute: not skipped to the next.
    fixture g;
    auto h2 = g.hooks();
    h2.inconsistent = [](const std::string&, const int&) { return true; };
    auto m2 = g.make(c, std::move(h2));
    g.clock.set(t0 + 500us);
    m2->insert("k", value(0));
    CHECK(m2->sweep(t0 + 1min, 100).evicted == 0); // files it in the wheel's lowest level
    CHECK(m2->sweep(t0 + 1min + 900ms, 100).evicted == 1);
}

TEST_CASE("session_map: no deadline is late or early against a model", "[session_map]") {
    // Random insertions, touches, ends and sweeps at nanosecond times over a wheel of coarse
    // ticks: after sweep(now) every entry whose deadline is <= now is gone and every other is
    // still there.
    for (const auto resolution : {memgov::duration{1ms}, memgov::duration{7ms}, memgov::duration{1s}}) {
        const std::uint32_t seed = Catch::rngSeed() + static_cast<std::uint32_t>(resolution.count() % 1000);
        INFO("seed " << seed << ", resolution " << resolution.count() << " ns");
        std::mt19937_64 rng{seed};
        fixture f;
        auto c = quiet_config();
        c.shards = 2;
        c.sweep_resolution = resolution;
        c.idle_ttl = 40ms + resolution / 2;
        c.absolute_ttl = 300ms + resolution * 3 / 2;
        c.ended_grace = 5ms;
        auto m = f.make(c);
        struct model_entry {
            memgov::time_point created, last;
            bool ended = false;
        };
        std::map<std::string, model_entry> model;
        const auto deadline = [&](const model_entry& e) {
            auto d = std::min(e.last + c.idle_ttl, e.created + c.absolute_ttl);
            if (e.ended) d = std::min(d, e.last + c.ended_grace);
            return d;
        };
        auto now = f.clock.now();
        int next_key = 0;
        std::size_t late = 0;
        std::size_t early = 0;
        std::size_t checked = 0;
        for (int step = 0; step < 20000; ++step) {
            now += memgov::duration{static_cast<std::int64_t>(rng() % 3'000'000)};
            f.clock.set(now);
            const auto op = rng() % 10;
            if (op < 3 || model.empty()) {
                const std::string k = std::to_string(next_key++);
                m->insert(k, value(0));
                model[k] = {now, now, false};
            } else if (op < 8) {
                auto it = model.begin();
                std::advance(it, static_cast<std::ptrdiff_t>(rng() % model.size()));
                if (op < 7) {
                    if (m->with(it->first, [](int&) {})) it->second.last = now;
                } else if (!it->second.ended && m->mark_ended(it->first)) {
                    it->second.ended = true;
                    it->second.last = now;
                }
            } else {
                m->sweep(now, std::numeric_limits<std::size_t>::max());
                for (auto it = model.begin(); it != model.end();) {
                    ++checked;
                    const bool due = deadline(it->second) <= now;
                    const bool present = m->contains(it->first);
                    if (due && present) ++late;
                    if (!due && !present) ++early;
                    it = present ? std::next(it) : model.erase(it);
                }
            }
        }
        CHECK(checked > 10000);
        CHECK(late == 0);
        CHECK(early == 0);
    }
}

namespace costed {

// A session whose cost is found by argument-dependent lookup.
struct session {
    std::int64_t bytes = 0;
};
std::int64_t session_cost(const session& s) noexcept { return s.bytes; }

// A value with held_bytes() and a session_cost: the function wins.
struct both {
    std::size_t held = 1;
    [[nodiscard]] std::size_t held_bytes() const noexcept { return held; }
};
std::int64_t session_cost(const both& b) noexcept { return static_cast<std::int64_t>(b.held) * 2; }

} // namespace costed

TEST_CASE("session_map: a cost policy applies only to values that have a cost", "[session_map]") {
    using memgov::value_cost;
    STATIC_REQUIRE(value_cost::applies_to<memgov::sliding_window>);
    STATIC_REQUIRE(value_cost::applies_to<costed::session>);
    STATIC_REQUIRE_FALSE(value_cost::applies_to<int>);
    STATIC_REQUIRE_FALSE(value_cost::applies_to<tracked_value>);
    CHECK(value_cost{}(costed::both{}) == 2);
    STATIC_REQUIRE(noexcept(value_cost{}(costed::session{})));
    STATIC_REQUIRE(smap::cost_follows_value == false);
    STATIC_REQUIRE(window_map::cost_follows_value);
    STATIC_REQUIRE_FALSE(memgov::session_map<int, memgov::sliding_window, memgov::manual_clock, std::hash<int>,
                                             std::equal_to<>, memgov::manual_cost>::cost_follows_value);
    // No room taken in the map for a policy.
    STATIC_REQUIRE(sizeof(memgov::session_map<int, costed::session>) == sizeof(memgov::session_map<int, int>));
}

TEST_CASE("session_map: costs follow the value after each exclusive callback", "[session_map]") {
    using cmap = memgov::session_map<std::string, costed::session, memgov::manual_clock>;
    memgov::ledger l;
    memgov::manual_clock clock;
    cmap m{quiet_config(), {}, clock, &l};
    CHECK(m.insert("a", [] { return costed::session{100}; })); // at insertion
    CHECK(m.info("a")->cost == 100);
    CHECK(m.insert("b", [] { return costed::session{100}; }, {.cost = 7})); // explicit wins
    CHECK(m.info("b")->cost == 7);
    CHECK(l.bytes(memgov::category::sessions) == 107);

    m.with("a", [](costed::session& s) { s.bytes = 5000; });
    CHECK(m.info("a")->cost == 5000);
    CHECK(m.total_cost() == 5007);
    CHECK(l.bytes(memgov::category::sessions) == 5007);
    // An explicit cost inside the callback wins for that callback...
    m.with("a", [](costed::session& s, cmap::entry& e) {
        s.bytes = 1;
        e.set_cost(64);
    });
    CHECK(m.info("a")->cost == 64);
    CHECK(m.set_cost("a", 65)); // ... as does set_cost by key
    CHECK(m.info("a")->cost == 65);
    // ... until the next exclusive callback that sets none.
    m.with("a", [](costed::session&) {});
    CHECK(m.info("a")->cost == 1);
    // Shared callbacks cannot change the value: nothing is evaluated.
    m.with_shared("b", [](const costed::session&) {});
    CHECK(m.info("b")->cost == 7);
    // The update of upsert is an exclusive callback.
    CHECK_FALSE(m.upsert(
        "b", [] { return costed::session{}; }, [](costed::session& s) { s.bytes = 300; }));
    CHECK(m.info("b")->cost == 300);
    // A callback that throws may have changed the value: its cost is taken all the same.
    CHECK_THROWS_AS(m.with("b",
                           [](costed::session& s) {
                               s.bytes = 4096;
                               throw std::runtime_error{"after the change"};
                           }),
                    std::runtime_error);
    CHECK(m.info("b")->cost == 4096);
    // A replacement's cost is the new value's.
    CHECK_FALSE(m.upsert("b", [] { return costed::session{9}; }));
    CHECK(m.info("b")->cost == 9);
    CHECK(m.total_cost() == 10);
    CHECK(m.evict_over_cost(8, 100).evicted == 1); // b
    CHECK(m.total_cost() == 1);
    m.erase("a");
    CHECK(l.bytes(memgov::category::sessions) == 0);
}

TEST_CASE("session_map: with manual_cost only explicit costs count", "[session_map]") {
    using mmap = memgov::session_map<int, memgov::sliding_window, memgov::manual_clock, std::hash<int>,
                                     std::equal_to<int>, memgov::manual_cost>;
    memgov::manual_clock clock;
    memgov::buffer_pool pool;
    mmap m{quiet_config(), {}, clock};
    static const std::array<std::byte, 640> frame{};
    m.insert(1, [&] { return memgov::sliding_window{pool}; });
    m.with(1, [&](memgov::sliding_window& w) { w.append(frame); });
    CHECK(m.total_cost() == 0);
    m.with(1, [&](memgov::sliding_window& w, mmap::entry& e) { e.set_cost(static_cast<std::int64_t>(w.size())); });
    CHECK(m.total_cost() == 640);
}

TEST_CASE("session_map: evict_largest takes only entries above its floor", "[session_map]") {
    memgov::session_map<int, int> m;
    for (int i = 0; i < 8; ++i) REQUIRE(m.insert(i, [] { return 0; }, {.cost = 1000}));
    REQUIRE(m.insert(100, [] { return 0; }, {.cost = 1 << 20}));
    REQUIRE(m.insert(101, [] { return 0; }, {.cost = 3 << 20}));
    // Floor 1000: the two big ones only, the largest first; the equals stay.
    auto r = m.evict_largest(10, std::numeric_limits<std::size_t>::max(), 1000);
    CHECK(r.evicted == 2);
    CHECK(r.bytes == (1 << 20) + (3 << 20));
    CHECK(m.size() == 8);
    // An entry costing exactly the floor is not above it.
    r = m.evict_largest(10, std::numeric_limits<std::size_t>::max(), 1000);
    CHECK(r.evicted == 0);
    // Without a floor the equals are eligible, as before.
    r = m.evict_largest(3);
    CHECK(r.evicted == 3);
    CHECK(m.size() == 5);
}
