#include <memgov/prometheus.hpp>

#include "promtool.hpp"

#include <catch2/catch.hpp>

#include <string>

using memgov::metric_type;

TEST_CASE("prometheus: families get HELP and TYPE once, samples keep their labels", "[prometheus]") {
    memgov::prometheus_writer w;
    w.sample("things_total", "Things counted", metric_type::counter, {{"kind", "a"}}, 3);
    w.sample("level", "The level", metric_type::gauge, {}, 2);
    w.sample("things_total", "Things counted", metric_type::counter, {{"kind", "b"}}, 4.5);
    const std::string text = w.str();
    CHECK(text == "# HELP memgov_things_total Things counted\n"
                  "# TYPE memgov_things_total counter\n"
                  "memgov_things_total{kind=\"a\"} 3\n"
                  "memgov_things_total{kind=\"b\"} 4.5\n"
                  "# HELP memgov_level The level\n"
                  "# TYPE memgov_level gauge\n"
                  "memgov_level 2\n");
    CHECK(w.family_count() == 2);
}

TEST_CASE("prometheus: label values and help are escaped", "[prometheus]") {
    memgov::prometheus_writer w;
    w.sample("x", "line\none \\ two", metric_type::gauge, {{"v", "a\"b\\c\nd"}}, 1);
    CHECK(w.str() == "# HELP memgov_x line\\none \\\\ two\n# TYPE memgov_x gauge\n"
                     "memgov_x{v=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST_CASE("prometheus: bad names and conflicting types are rejected", "[prometheus]") {
    memgov::prometheus_writer w;
    CHECK_THROWS_WITH(w.sample("9lives", "", metric_type::gauge, {}, 1),
                      Catch::Contains("invalid metric name '9lives'"));
    CHECK_THROWS_WITH(w.sample("ok", "", metric_type::gauge, {{"bad-label", "v"}}, 1),
                      Catch::Contains("invalid label name 'bad-label'"));
    w.sample("m", "", metric_type::gauge, {}, 1);
    CHECK_THROWS_WITH(w.sample("m", "", metric_type::counter, {}, 1), Catch::Contains("two types"));
}

TEST_CASE("prometheus: ledger and evictor output passes promtool", "[prometheus]") {
    memgov::ledger l;
    l.charge(memgov::category::sessions, 1234);
    memgov::evictor ev{{}, [] {}, [] { return std::size_t{0}; }};
    memgov::prometheus_writer w;
    memgov::collect(w, l);
    memgov::collect(w, ev.stats());
    const std::string text = w.str();
    CHECK_THAT(text, Catch::Contains("memgov_ledger_bytes{category=\"sessions\"} 1234"));
    CHECK_THAT(text, Catch::Contains("memgov_evictor_actions_total{level=\"critical\",action=\"evict_lru\"} 0"));
    const auto r = memgov_test::check_metrics_text(text);
    INFO(r.output);
    CHECK(r.exit_code == 0);
}
