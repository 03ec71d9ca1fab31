// SPDX-License-Identifier: MIT
#include <memgov/session_map.hpp>

#include "session_map_support.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
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
std::unique_ptr<smap> aged_map(fixture& f, std::size_t shards, std::size_t samples, int count,
                               memgov::duration step, std::int64_t cost) {
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
    CHECK(m->with_shared("b", [&](const int& v, const smap::entry& e) {
        shared = v == 2 && e.key() == "b" && !e.evicted();
    }));
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

TEST_CASE("session_map: upsert replaces or updates", "[session_map]") {
    fixture f;
    auto m = f.make(quiet_config());
    CHECK(m->upsert("k", value(1)));        // inserted
    CHECK_FALSE(m->upsert("k", value(2)));  // replaced
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
    f.clock.advance(30s);
    m->with("k", [](int&) {});
    CHECK(m->info("k")->last_active == t0); // not ticked yet: the old time (never goes back)
    m->tick(t0 + 20s);
    m->with("k", [](int&) {});
    CHECK(m->info("k")->last_active == t0 + 20s);
    m->sweep(t0 + 25s, 100); // a sweep ticks too
    m->with("k", [](int&) {});
    CHECK(m->info("k")->last_active == t0 + 25s);
}

TEST_CASE("session_map: idle ttl expires exactly at the bound and activity postpones it",
          "[session_map]") {
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

TEST_CASE("session_map: the inconsistent-state hook is checked under the entry lock",
          "[session_map]") {
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
        .applies = [](const memgov::session_info& i, memgov::time_point now) {
            return i.age(now) >= 5min && i.cost > 100;
        },
        .earliest = [](const memgov::session_info& i) -> std::optional<memgov::time_point> {
            return i.created + 5min;
        },
        .confirm = {}});
    // Values equal to 42, checked under the lock, at most every check_interval.
    h.rules.push_back(smap::rule_type{
        .name = "forty-two",
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
        const std::int64_t structure = l.bytes(cat);
        CHECK(structure > 0); // the map's own storage
        CHECK(l.bytes(memgov::category::sessions) == 0);
        m.insert("a", value(0));
        m.insert("b", value(0), {.cost = 300});
        const std::int64_t base = l.bytes(cat);
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
    }
    CHECK(l.bytes(cat) == 0);
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

TEST_CASE("session_map: an entry evicted while pinned goes when the pin is released",
          "[session_map]") {
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
            CHECK(rec.count() == 0);      // but not finalized
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

TEST_CASE("session_map: move-only values, clear and destruction call on_evict once each",
          "[session_map]") {
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
    CHECK(l.bytes(memgov::category::sessions) == static_cast<std::int64_t>(m.stats().structure_bytes));
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

TEST_CASE("session_map: a value check that says no does not shield an entry from later rules",
          "[session_map]") {
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
        .confirm = [&](const std::string&, const int&) {
            ++busy_checks;
            return false;
        }});
    // 1: costing over 1000 bytes, on metadata alone.
    h.rules.push_back(smap::rule_type{
        .name = "fat",
        .reason = evict_reason::over_cost,
        .applies = [](const memgov::session_info& i, memgov::time_point) { return i.cost > 1000; },
        .earliest = {},
        .confirm = {}});
    // 2: a second value check: values of 7.
    h.rules.push_back(smap::rule_type{
        .name = "seven",
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

TEST_CASE("session_map: sweep and evict called from on_evict on the same thread return at once",
          "[session_map]") {
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

TEST_CASE("session_map: the entry lock caps its shared holders instead of overflowing",
          "[session_map]") {
    namespace es = memgov::detail::entry_state;
    std::atomic<std::uint32_t> w{es::reader_mask - es::reader}; // one short of full
    CHECK(es::try_lock_shared(w));
    CHECK((w.load() & es::reader_mask) == es::reader_mask);
    CHECK_FALSE(es::try_lock_shared(w));        // full: the next waits
    CHECK_FALSE(es::pin_try_lock_shared(w));    // pinned, not locked
    CHECK(es::pins(w.load()) == 1);
    CHECK((w.load() & es::waiters) == 0);       // nothing carried into the next field
    es::release(w, es::reader);
    CHECK(es::try_lock_shared(w));
}
