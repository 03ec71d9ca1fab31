#include <memgov/governor.hpp>
#include <memgov/prometheus.hpp>
#include <memgov/session_budget.hpp>

#include "fake_cgroup.hpp"
#include "promtool.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

using namespace std::chrono_literals;
using memgov::admit_kind;
using memgov::admit_reason;
using memgov::pressure_level;
using memgov::session_budget;
using memgov_test::fake_cgroup_tree;

namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;
constexpr auto work = static_cast<std::size_t>(admit_kind::work);
constexpr auto sess = static_cast<std::size_t>(admit_kind::session);
constexpr auto idx(admit_reason r) { return static_cast<std::size_t>(r); }

// A governor on a fake v2 tree (limit `limit`, usage 50%), no forecast. Levels enter at
// 70/78/85/89% (the monitor's defaults with an 85% red line).
struct rig {
    fake_cgroup_tree tree = fake_cgroup_tree::v2("/app");
    memgov::manual_clock clock;
    std::uint64_t limit;
    std::unique_ptr<memgov::governor<memgov::manual_clock>> gov;

    explicit rig(std::uint64_t lim = GiB, const std::function<void(memgov::governor_config&)>& edit = {}) : limit{lim} {
        tree.set_limit("/app", limit);
        tree.set_usage("/app", limit / 2);
        memgov::governor_config cfg;
        cfg.monitor.cgroup = tree.config();
        cfg.monitor.use_systemd_pressure_env = false;
        cfg.monitor.forecast_horizon = 0s;
        if (edit) edit(cfg);
        gov = std::make_unique<memgov::governor<memgov::manual_clock>>(
            cfg, clock, [] {}, [] { return std::size_t{0}; });
    }
    // One second passes, usage is now `p` percent of the limit, the governor polls.
    pressure_level at(double p) {
        clock.advance(1s);
        tree.set_usage("/app", static_cast<std::uint64_t>(p / 100.0 * static_cast<double>(limit)));
        return gov->poll(clock.now());
    }
    memgov::admission_stats adm() const { return gov->stats().admission; }
};

// `n` calls of `admit(bytes)`; how many were refused with `reason` (the others must pass).
int refusals(session_budget& b, int n, std::size_t bytes, admit_reason reason) {
    int refused = 0;
    for (int i = 0; i < n; ++i) {
        const auto a = b.admit(bytes);
        if (!a) {
            CHECK(a.reason == reason);
            ++refused;
        }
    }
    return refused;
}

} // namespace

TEST_CASE("session_budget: handles are move-only and their hot paths noexcept", "[session_budget]") {
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<session_budget>);
    STATIC_REQUIRE_FALSE(std::is_copy_assignable_v<session_budget>);
    STATIC_REQUIRE(std::is_nothrow_move_constructible_v<session_budget>);
    STATIC_REQUIRE(std::is_nothrow_move_assignable_v<session_budget>);
    STATIC_REQUIRE(std::is_nothrow_destructible_v<session_budget>);
    session_budget b;
    STATIC_REQUIRE(noexcept(b.admit(1)));
    STATIC_REQUIRE(noexcept(b.charge(1)));
    STATIC_REQUIRE(noexcept(b.try_charge(1)));
    STATIC_REQUIRE(noexcept(b.release(1)));
    STATIC_REQUIRE(noexcept(b.reset()));
    STATIC_REQUIRE(noexcept(b.held_bytes()));
    STATIC_REQUIRE(noexcept(b.refused_bytes()));
    STATIC_REQUIRE(noexcept(std::declval<memgov::governor<>&>().admit_session(1)));

    rig r;
    auto a = r.gov->admit_session(MiB);
    REQUIRE(a);
    a.charge(100);
    session_budget moved{std::move(a)};
    CHECK_FALSE(a); // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    CHECK(a.admit(1).reason == admit_reason::sessions_closed);
    a.charge(5); // ignored on an empty budget
    CHECK(a.held_bytes() == 0);
    CHECK(moved.held_bytes() == 100);
    CHECK(moved.reserved_bytes() == MiB - 100);
    CHECK(r.adm().sessions == 1);
    session_budget other = r.gov->admit_session(0);
    other = std::move(moved); // `other`'s own budget ends here
    CHECK(r.adm().sessions == 1);
    CHECK(other.held_bytes() == 100);
    other.release(100);
    other.reset();
    CHECK_FALSE(other);
    CHECK(r.adm().sessions == 0);
    CHECK(r.adm().reserved_bytes == 0);
}

TEST_CASE("session_budget: the default quota is 30 MiB, at most 1/8 of the limit, and shrinks with the level",
          "[session_budget]") {
    rig r;
    CHECK(r.adm().session_quota_bytes == 30 * MiB);
    CHECK(r.adm().heavy_bytes == 15 * MiB);
    CHECK(r.at(72) == pressure_level::elevated);
    CHECK(r.adm().session_quota_bytes == 30 * MiB);
    CHECK(r.at(80) == pressure_level::high);
    CHECK(r.adm().session_quota_bytes == 30 * MiB * 3 / 4);
    CHECK(r.at(86) == pressure_level::critical);
    CHECK(r.adm().session_quota_bytes == 15 * MiB);
    CHECK(r.at(95) == pressure_level::emergency);
    CHECK(r.adm().session_quota_bytes == 30 * MiB / 4);
    CHECK(r.adm().heavy_bytes == 30 * MiB / 8);

    rig small{128 * MiB}; // a 128 MiB container: 16 MiB, not 30
    CHECK(small.adm().session_quota_bytes == 16 * MiB);
    auto b = small.gov->admit_session(0);
    CHECK(b.quota_bytes() == 16 * MiB);

    rig tuned{GiB, [](auto& c) {
                  c.admission.session_quota_bytes = 8 * MiB;
                  c.admission.quota_factor = {1.0, 0.5, 0.5, 0.5, 0.5};
              }};
    CHECK(tuned.adm().session_quota_bytes == 8 * MiB);
    CHECK(tuned.at(72) == pressure_level::elevated);
    CHECK(tuned.adm().session_quota_bytes == 4 * MiB);
}

TEST_CASE("session_budget: a crowd's fair share shrinks with the level and the live sessions; "
          "over it a session sheds, it is not refused",
          "[session_budget]") {
    rig r{128 * MiB};
    std::vector<session_budget> crowd;
    for (int i = 0; i < 200; ++i) crowd.push_back(r.gov->admit_session(0));
    // Below high no share applies: the share is the quota.
    CHECK(r.at(50) == pressure_level::normal);
    CHECK(crowd[0].share_bytes() == crowd[0].quota_bytes());
    CHECK(r.adm().session_share_bytes == 16 * MiB);
    // At high: the ceiling (95% of 128 MiB) over 200 live sessions.
    CHECK(r.at(80) == pressure_level::high);
    const auto ceiling = 0.95 * 128.0 * static_cast<double>(MiB);
    CHECK(crowd[0].share_bytes() == static_cast<std::size_t>(ceiling / 200));
    CHECK(r.adm().session_share_bytes == crowd[0].share_bytes());
    // Fewer live sessions, a larger share; a higher level, a smaller one.
    crowd.resize(100);
    CHECK(r.at(80) == pressure_level::high);
    CHECK(crowd[0].share_bytes() == static_cast<std::size_t>(ceiling / 100));
    CHECK(r.at(86) == pressure_level::critical);
    CHECK(crowd[0].share_bytes() == static_cast<std::size_t>(0.75 * ceiling / 100));
    // Over its share a session is told to shed, and its work is still admitted (it is far
    // under its quota and light).
    auto& s = crowd[0];
    s.charge(s.share_bytes() + 1);
    CHECK(s.over_share());
    CHECK_FALSE(s.over_quota());
    CHECK(s.admit(640));
    CHECK_FALSE(crowd[1].over_share());
    // Sticky: a session found over its share keeps it as its cap, also once the level falls
    // (it may not regrow and push the level back up); the others get the quota back.
    const std::size_t marked = s.share_bytes();
    for (int i = 0; i < 30 && r.at(50) != pressure_level::normal; ++i) {
    } // the dwells pass
    REQUIRE(r.gov->level() == pressure_level::normal);
    CHECK(s.share_bytes() == marked);
    CHECK(s.over_share()); // still holds more than its cap
    s.release(s.held_bytes());
    CHECK_FALSE(s.over_share());
    CHECK(crowd[1].share_bytes() == crowd[1].quota_bytes());
    session_budget moved{std::move(s)};
    CHECK(moved.share_bytes() == marked); // the mark moves with the budget
    // Never above the quota: one session alone at critical has the quota as its share.
    crowd.resize(1);
    crowd[0] = r.gov->admit_session(0);
    CHECK(r.at(86) == pressure_level::critical);
    CHECK(crowd[0].share_bytes() == crowd[0].quota_bytes());

    rig off{128 * MiB, [](auto& c) { c.admission.fair_share = {0.0, 0.0, 0.0, 0.0, 0.0}; }};
    auto one = off.gov->admit_session(0);
    auto two = off.gov->admit_session(0);
    CHECK(off.at(95) == pressure_level::emergency);
    CHECK(one.share_bytes() == one.quota_bytes());

    rig forgetful{128 * MiB, [](auto& c) { c.admission.share_sticky = false; }};
    std::vector<session_budget> many;
    for (int i = 0; i < 100; ++i) many.push_back(forgetful.gov->admit_session(0));
    CHECK(forgetful.at(86) == pressure_level::critical);
    many[0].charge(many[0].share_bytes() + 1);
    CHECK(many[0].over_share());
    for (int i = 0; i < 30 && forgetful.at(50) != pressure_level::normal; ++i) {
    }
    REQUIRE(forgetful.gov->level() == pressure_level::normal);
    CHECK(many[0].share_bytes() == many[0].quota_bytes());
    CHECK_FALSE(many[0].over_share());
}

TEST_CASE("session_budget: work over the quota is refused before anyone else's", "[session_budget]") {
    rig r;
    auto hog = r.gov->admit_session(0);
    auto calm = r.gov->admit_session(0);
    REQUIRE(hog);
    REQUIRE(calm);
    CHECK(hog.try_charge(30 * MiB - KiB));
    CHECK(hog.admit(KiB));                                             // exactly at the quota
    CHECK(hog.try_charge(2 * KiB).reason == admit_reason::over_quota); // past it
    CHECK(hog.held_bytes() == 30 * MiB - KiB);                         // a refusal charges nothing
    CHECK(calm.try_charge(64 * KiB));                                  // others are untouched
    // Bytes in flight downstream stay charged until released.
    hog.release(MiB);
    CHECK(hog.try_charge(2 * KiB));
    CHECK(hog.refused_calls() == 1);
    CHECK(hog.refused_bytes() == 2 * KiB);
    CHECK(hog.admitted_calls() == 3);
    CHECK(calm.refused_calls() == 0);

    const auto s = r.adm();
    CHECK(s.refused[work][idx(admit_reason::over_quota)] == 1);
    CHECK(s.refused_bytes[work][idx(admit_reason::over_quota)] == 2 * KiB);
    CHECK(s.admitted[work] == 4);
    CHECK(s.admitted_bytes[work] == (30 * MiB - KiB) + KiB + 64 * KiB + 2 * KiB);
    CHECK(s.total_refused() == 1);
    CHECK(s.total_refused_bytes() == 2 * KiB);

    // The quota shrinks under a session as the level rises: at critical (15 MiB) the hog is
    // over it and says so (the evictor's first candidate), and every frame of it is refused.
    CHECK(r.at(86) == pressure_level::critical);
    CHECK(hog.over_quota());
    CHECK(hog.admit(1).reason == admit_reason::over_quota);
    CHECK(calm.admit(KiB));
}

TEST_CASE("session_budget: graded refusal by level, exact counts", "[session_budget]") {
    rig r;
    auto heavy = r.gov->admit_session(0);
    auto light = r.gov->admit_session(0);
    heavy.charge(12 * MiB);
    light.charge(MiB);

    SECTION("normal and elevated: everyone under quota passes") {
        CHECK(refusals(heavy, 100, KiB, admit_reason::heavy) == 0);
        CHECK(r.at(72) == pressure_level::elevated);
        CHECK(refusals(heavy, 100, KiB, admit_reason::heavy) == 0);
        CHECK(refusals(light, 100, KiB, admit_reason::paced) == 0);
    }
    SECTION("high: heavy sessions (over 11.25 MiB) are paced at 25%, light ones pass") {
        CHECK(r.at(80) == pressure_level::high);
        CHECK(heavy.heavy());
        CHECK(refusals(heavy, 100, KiB, admit_reason::heavy) == 25);
        CHECK(refusals(light, 100, KiB, admit_reason::paced) == 0);
        const auto s = r.adm();
        CHECK(s.refused[work][idx(admit_reason::heavy)] == 25);
        CHECK(s.refused_bytes[work][idx(admit_reason::heavy)] == 25 * KiB);
        CHECK(heavy.refused_calls() == 25);
        CHECK(heavy.admitted_calls() == 75);
    }
    SECTION("critical: heavy sessions (over 7.5 MiB) are refused, light ones still pass") {
        CHECK(r.at(86) == pressure_level::critical);
        CHECK(refusals(heavy, 100, KiB, admit_reason::heavy) == 100);
        CHECK(refusals(light, 100, KiB, admit_reason::paced) == 0);
        // Light, until the work would make it heavy.
        CHECK(light.admit(7 * MiB).reason == admit_reason::heavy);
    }
    SECTION("emergency: light sessions are paced at 50%, not cut off") {
        CHECK(r.at(95) == pressure_level::emergency);
        CHECK(refusals(light, 100, KiB, admit_reason::paced) == 50);
        CHECK(heavy.admit(KiB).reason == admit_reason::over_quota); // 12 MiB > 7.5 MiB
        const auto s = r.adm();
        CHECK(s.refused[work][idx(admit_reason::paced)] == 50);
        CHECK(s.refused_bytes[work][idx(admit_reason::paced)] == 50 * KiB);
        // `admit` without a budget is still all-or-nothing at emergency.
        CHECK(r.gov->admit(KiB, admit_kind::work).reason == admit_reason::all_closed);
    }
}

TEST_CASE("session_budget: a crowd of one-frame sessions is paced as a crowd", "[session_budget]") {
    rig r;
    std::vector<session_budget> crowd;
    for (int i = 0; i < 1000; ++i) crowd.push_back(r.gov->admit_session(0));
    CHECK(r.at(95) == pressure_level::emergency);
    int refused = 0;
    for (auto& b : crowd) refused += b.admit(KiB) ? 0 : 1;
    // Each session starts at its own phase (golden-ratio spacing): half of them, give or take
    // the sequence's discrepancy, not all or none.
    CHECK(refused >= 495);
    CHECK(refused <= 505);
    CHECK(r.adm().refused[work][idx(admit_reason::paced)] == static_cast<std::uint64_t>(refused));
}

TEST_CASE("session_budget: admission reserves the declared cost until charges take over", "[session_budget]") {
    rig r;
    const std::int64_t h0 = r.gov->admission_headroom();
    REQUIRE(h0 > 0);
    {
        auto b = r.gov->admit_session(10 * MiB);
        REQUIRE(b);
        CHECK(b.declared_bytes() == 10 * MiB);
        CHECK(b.reserved_bytes() == 10 * MiB);
        CHECK(r.gov->admission_headroom() == h0 - std::int64_t{10 * MiB});
        CHECK(r.adm().reserved_bytes == 10 * MiB);

        // A charge consumes the reservation; the headroom does not move (the bytes are real now).
        b.charge(4 * MiB);
        CHECK(b.reserved_bytes() == 6 * MiB);
        CHECK(r.adm().reserved_bytes == 6 * MiB);
        CHECK(r.gov->admission_headroom() == h0 - std::int64_t{10 * MiB});

        // The next poll sees the 4 MiB in the usage: headroom = ceiling − usage − reserved.
        r.tree.set_usage("/app", GiB / 2 + 4 * MiB);
        r.clock.advance(1s);
        (void)r.gov->poll(r.clock.now());
        CHECK(r.gov->admission_headroom() == h0 - std::int64_t{4 * MiB} - std::int64_t{6 * MiB});

        // Charges past the declared cost leave the reservation at 0.
        b.charge(8 * MiB);
        CHECK(b.reserved_bytes() == 0);
        CHECK(r.adm().reserved_bytes == 0);
        CHECK(r.gov->admission_headroom() == h0 - std::int64_t{10 * MiB});
    }
    // The handle died with nothing left reserved: nothing comes back until the usage falls.
    CHECK(r.gov->admission_headroom() == h0 - std::int64_t{10 * MiB});
    {
        auto b = r.gov->admit_session(3 * MiB);
        b.charge(MiB);
    } // 2 MiB unused: back at once
    CHECK(r.gov->admission_headroom() == h0 - std::int64_t{10 * MiB} - std::int64_t{MiB});
    CHECK(r.adm().reserved_bytes == 0);
    CHECK(r.adm().sessions == 0);
}

TEST_CASE("session_budget: a burst between two polls admits exactly floor(headroom / declared)", "[session_budget]") {
    rig r;
    const std::int64_t h = r.gov->admission_headroom();
    constexpr std::size_t x = 7 * MiB;
    const auto fit = static_cast<std::uint64_t>(h / static_cast<std::int64_t>(x));
    REQUIRE(fit < 400);
    std::vector<session_budget> admitted;
    std::uint64_t refused = 0;
    for (int i = 0; i < 400; ++i) {
        auto b = r.gov->admit_session(x);
        if (b)
            admitted.push_back(std::move(b));
        else {
            CHECK(b.refusal() == admit_reason::no_headroom);
            ++refused;
        }
    }
    CHECK(admitted.size() == fit);
    CHECK(refused == 400 - fit);
    const auto s = r.adm();
    CHECK(s.admitted[sess] == fit);
    CHECK(s.admitted_bytes[sess] == fit * x);
    CHECK(s.refused[sess][idx(admit_reason::no_headroom)] == 400 - fit);
    CHECK(s.refused_bytes[sess][idx(admit_reason::no_headroom)] == (400 - fit) * x);
    CHECK(s.reserved_bytes == fit * x);
    CHECK(s.headroom_bytes == h - static_cast<std::int64_t>(fit * x));
    // `admit` without a budget sees the reservations from the next poll on.
    r.clock.advance(1s);
    (void)r.gov->poll(r.clock.now());
    CHECK(r.gov->admit(static_cast<std::size_t>(s.headroom_bytes), admit_kind::work));
    CHECK(r.gov->admit(static_cast<std::size_t>(s.headroom_bytes) + 1, admit_kind::work).reason ==
          admit_reason::no_headroom);
    admitted.clear();
    CHECK(r.gov->admission_headroom() == h);
}

TEST_CASE("session_budget: session admission follows the gates and the quota", "[session_budget]") {
    rig r;
    CHECK(r.gov->admit_session(31 * MiB).refusal() == admit_reason::over_quota);
    CHECK(r.gov->admit_session(30 * MiB));
    CHECK(r.at(86) == pressure_level::critical);
    CHECK(r.gov->admit_session(KiB).refusal() == admit_reason::sessions_closed);
    CHECK(r.at(95) == pressure_level::emergency);
    CHECK(r.gov->admit_session(KiB).refusal() == admit_reason::all_closed);
    const auto s = r.adm();
    CHECK(s.refused[sess][idx(admit_reason::over_quota)] == 1);
    CHECK(s.refused_bytes[sess][idx(admit_reason::over_quota)] == 31 * MiB);
    CHECK(s.refused[sess][idx(admit_reason::sessions_closed)] == 1);
    CHECK(s.refused[sess][idx(admit_reason::all_closed)] == 1);
    CHECK(s.admitted[sess] == 1);
    CHECK(s.admitted_bytes[sess] == 30 * MiB);
}

TEST_CASE("session_budget: disabled admission admits and reserves nothing; dry run counts and admits",
          "[session_budget]") {
    SECTION("disabled") {
        rig r{GiB, [](auto& c) { c.admission.enabled = false; }};
        const auto h = r.gov->admission_headroom();
        auto b = r.gov->admit_session(GiB);
        REQUIRE(b);
        CHECK(b.reserved_bytes() == 0);
        CHECK(r.gov->admission_headroom() == h);
        b.charge(GiB);
        CHECK(b.admit(GiB));
        CHECK(r.adm().total_refused() == 0);
    }
    SECTION("dry run") {
        rig r{GiB, [](auto& c) { c.dry_run = true; }};
        auto b = r.gov->admit_session(31 * MiB); // over quota: counted, admitted, reserved
        REQUIRE(b);
        CHECK(b.reserved_bytes() == 31 * MiB);
        CHECK(b.try_charge(40 * MiB)); // over quota again
        CHECK(r.at(95) == pressure_level::emergency);
        CHECK(b.admit(KiB));
        const auto s = r.adm();
        CHECK(s.total_refused() == 0);
        CHECK(s.dry_refused[sess][idx(admit_reason::over_quota)] == 1);
        CHECK(s.dry_refused_bytes[sess][idx(admit_reason::over_quota)] == 31 * MiB);
        CHECK(s.dry_refused[work][idx(admit_reason::over_quota)] == 2);
        CHECK(s.dry_refused_bytes[work][idx(admit_reason::over_quota)] == 40 * MiB + KiB);
        CHECK(s.admitted[work] == 2);
        CHECK(b.refused_calls() == 0);
    }
}

TEST_CASE("session_budget: a budget may outlive its governor", "[session_budget]") {
    session_budget b;
    {
        rig r;
        b = r.gov->admit_session(MiB);
        REQUIRE(b);
    }
    b.charge(2 * MiB);
    CHECK(b.admit(KiB));
    b.release(2 * MiB);
    CHECK(b.held_bytes() == 0);
}

TEST_CASE("session_budget: bytes and reasons in stats and Prometheus", "[session_budget]") {
    rig r;
    auto b = r.gov->admit_session(MiB);
    CHECK(b.try_charge(29 * MiB));
    CHECK_FALSE(b.try_charge(2 * MiB));
    memgov::prometheus_writer w;
    r.gov->collect(w);
    const std::string text = w.str();
    CHECK_THAT(text, Catch::Contains("memgov_admitted_bytes_total{kind=\"session\"} 1048576"));
    CHECK_THAT(text, Catch::Contains("memgov_admitted_bytes_total{kind=\"work\"} 30408704"));
    CHECK_THAT(text, Catch::Contains("memgov_rejections_total{kind=\"work\",reason=\"over_quota\"} 1"));
    CHECK_THAT(text, Catch::Contains("memgov_rejected_bytes_total{kind=\"work\",reason=\"over_quota\"} 2097152"));
    CHECK_THAT(text, Catch::Contains("memgov_rejections_total{kind=\"work\",reason=\"paced\"} 0"));
    CHECK_THAT(text, Catch::Contains("memgov_session_budgets 1"));
    CHECK_THAT(text, Catch::Contains("memgov_admission_reserved_bytes 0"));
    CHECK_THAT(text, Catch::Contains("memgov_session_quota_bytes 31457280"));
    const auto res = memgov_test::check_metrics_text(text);
    INFO(res.output);
    CHECK(res.exit_code == 0);
}

TEST_CASE("session_budget: bad configuration throws std::invalid_argument naming the field", "[session_budget]") {
    const auto make = [](const std::function<void(memgov::admission_config&)>& edit) {
        rig r{GiB, [&](auto& c) { edit(c.admission); }};
    };
    using A = memgov::admission_config;
    const auto rejects = [&](const std::function<void(A&)>& edit, const char* field) {
        CHECK_THROWS_WITH(make(edit), Catch::Contains(std::string{"admission_config::"} + field));
    };
    rejects([](A& a) { a.session_quota_bytes = 0; }, "session_quota_bytes");
    rejects([](A& a) { a.session_quota_limit_share = 0.0; }, "session_quota_limit_share");
    rejects([](A& a) { a.session_quota_limit_share = 1.5; }, "session_quota_limit_share");
    rejects([](A& a) { a.quota_factor[2] = 0.0; }, "quota_factor");
    rejects([](A& a) { a.quota_factor = {1.0, 0.5, 0.75, 0.5, 0.25}; }, "quota_factor");
    rejects([](A& a) { a.heavy_share = 0.0; }, "heavy_share");
    rejects([](A& a) { a.heavy_refusal[4] = 1.5; }, "heavy_refusal");
    rejects([](A& a) { a.heavy_refusal = {0.0, 0.5, 0.25, 1.0, 1.0}; }, "heavy_refusal");
    rejects([](A& a) { a.pace_refusal[4] = -0.1; }, "pace_refusal");
    rejects([](A& a) { a.pace_refusal = {0.0, 0.0, 0.5, 0.25, 0.5}; }, "pace_refusal");
    rejects([](A& a) { a.pace_refusal[2] = 0.5; }, "pace_refusal"); // above heavy_refusal (0.25)
    rejects([](A& a) { a.fair_share[3] = 1.5; }, "fair_share");
    rejects([](A& a) { a.fair_share = {0.0, 0.0, 0.5, 0.75, 0.5}; }, "fair_share");
    // Boundaries are accepted.
    CHECK_NOTHROW(make([](A& a) {
        a.session_quota_bytes = 1;
        a.session_quota_limit_share = 1.0;
        a.quota_factor = {1.0, 1.0, 1.0, 1.0, 1.0};
        a.heavy_share = 1.0;
        a.heavy_refusal = {1.0, 1.0, 1.0, 1.0, 1.0};
        a.pace_refusal = {0.0, 0.0, 0.0, 0.0, 1.0};
        a.fair_share = {0.0, 1.0, 1.0, 0.0, 0.0};
    }));
}
