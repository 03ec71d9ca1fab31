// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Renders memgov's statistics in the Prometheus text exposition format (version 0.0.4).
///
/// `prometheus_writer` is a `metric_sink`: give it to anything that collects (a governor, an
/// evictor's stats, a ledger, a reclaimer) and call `str()`. Families keep the order in which
/// they first appear; every family gets one `# HELP` and one `# TYPE` line; names get the
/// `memgov_` prefix; label values are escaped. Counters should be named with a `_total` suffix.
///
/// Thread safety: a writer is used by one thread at a time. Allocates; for scrapes, not hot
/// paths.

#include <memgov/config.hpp>
#include <memgov/evictor.hpp>
#include <memgov/ledger.hpp>
#include <memgov/metrics.hpp>
#include <memgov/pressure_level.hpp>

#include <charconv>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

MEMGOV_NAMESPACE_BEGIN

/// Collects samples and renders them as Prometheus text.
class prometheus_writer final : public metric_sink {
public:
    /// `prefix` is prepended to every metric name (default "memgov_").
    explicit prometheus_writer(std::string prefix = "memgov_") : m_prefix{std::move(prefix)} {}

    /// Records one sample (see `metric_sink`). Throws `std::invalid_argument` if `name` is not a
    /// valid metric name or a label name is invalid, or if the family was first given with
    /// another type.
    void sample(std::string_view name, std::string_view help, metric_type type,
                std::initializer_list<metric_label> labels, double value) override {
        check_name(name, "metric name");
        const std::string full = m_prefix + std::string{name};
        auto it = m_index.find(full);
        if (it == m_index.end()) {
            it = m_index.emplace(full, m_families.size()).first;
            m_families.push_back({full, std::string{help}, type, {}});
        }
        family& f = m_families[it->second];
        if (f.type != type) {
            throw std::invalid_argument{"memgov::prometheus_writer: metric '" + full + "' given with two types"};
        }
        std::string line = full;
        if (labels.size() != 0) {
            line += '{';
            bool first = true;
            for (const auto& [k, v] : labels) {
                check_name(k, "label name");
                if (!first) line += ',';
                first = false;
                line += k;
                line += "=\"";
                append_escaped(line, v);
                line += '"';
            }
            line += '}';
        }
        line += ' ';
        append_value(line, value);
        f.lines.push_back(std::move(line));
    }

    /// The exposition text of everything recorded so far.
    [[nodiscard]] std::string str() const {
        std::string out;
        for (const auto& f : m_families) {
            out += "# HELP ";
            out += f.name;
            out += ' ';
            append_help(out, f.help);
            out += "\n# TYPE ";
            out += f.name;
            out += f.type == metric_type::counter ? " counter\n" : " gauge\n";
            for (const auto& l : f.lines) {
                out += l;
                out += '\n';
            }
        }
        return out;
    }

    /// Number of metric families recorded.
    [[nodiscard]] std::size_t family_count() const noexcept { return m_families.size(); }

private:
    struct family {
        std::string name;
        std::string help;
        metric_type type;
        std::vector<std::string> lines;
    };

    static void check_name(std::string_view n, const char* what) {
        auto ok_first = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
        auto ok_rest = [&](char c) { return ok_first(c) || (c >= '0' && c <= '9'); };
        bool ok = !n.empty() && ok_first(n.front());
        for (char c : n) ok = ok && ok_rest(c);
        if (!ok) {
            throw std::invalid_argument{std::string{"memgov::prometheus_writer: invalid "} + what + " '" +
                                        std::string{n} + "'"};
        }
    }
    static void append_escaped(std::string& out, std::string_view v) {
        for (char c : v) {
            if (c == '\\')
                out += "\\\\";
            else if (c == '"')
                out += "\\\"";
            else if (c == '\n')
                out += "\\n";
            else
                out += c;
        }
    }
    static void append_help(std::string& out, std::string_view v) {
        for (char c : v) {
            if (c == '\\')
                out += "\\\\";
            else if (c == '\n')
                out += "\\n";
            else
                out += c;
        }
    }
    static void append_value(std::string& out, double v) {
        if (std::isnan(v)) {
            out += "NaN";
            return;
        }
        if (std::isinf(v)) {
            out += v > 0 ? "+Inf" : "-Inf";
            return;
        }
        char buf[64];
        const auto r = std::to_chars(buf, buf + sizeof buf, v);
        out.append(buf, r.ec == std::errc{} ? r.ptr : buf);
    }

    std::string m_prefix;
    std::vector<family> m_families;
    std::unordered_map<std::string, std::size_t> m_index;
};

/// Writes a ledger's categories: `memgov_ledger_bytes{category=...}` and the total.
inline void collect(metric_sink& sink, const ledger& l) {
    const ledger_snapshot s = l.snapshot();
    for (const auto& c : s.categories) {
        sink.sample("ledger_bytes", "Bytes charged to the ledger, by category", metric_type::gauge,
                    {{"category", c.name}}, static_cast<double>(c.bytes));
    }
    sink.sample("ledger_total_bytes", "Bytes charged to the ledger over all categories", metric_type::gauge, {},
                static_cast<double>(s.total));
}

/// Writes an evictor's counters by level and action, the heap trimmer's, and each reclaimer's
/// by action (`memgov_evictor_reclaimer_*{reclaimer, action}`; a custom action's label is its
/// name).
inline void collect(metric_sink& sink, const evictor_stats& s) {
    for (std::size_t li = 0; li < pressure_level_count; ++li) {
        const auto level = to_string(static_cast<pressure_level>(li));
        sink.sample("evictor_steps_total", "Evictor steps taken, by pressure level", metric_type::counter,
                    {{"level", level}}, static_cast<double>(s.steps[li]));
    }
    for (std::size_t li = 0; li < pressure_level_count; ++li) {
        const auto level = to_string(static_cast<pressure_level>(li));
        for (std::size_t ai = 0; ai < reclaim_action_count; ++ai) {
            const auto& c = s.cells[li][ai];
            const auto action = to_string(static_cast<reclaim_action>(ai));
            sink.sample("evictor_actions_total", "Reclaim actions run, by level and action", metric_type::counter,
                        {{"level", level}, {"action", action}}, static_cast<double>(c.runs));
            sink.sample("evictor_freed_bytes_total", "Bytes freed by reclaim actions", metric_type::counter,
                        {{"level", level}, {"action", action}}, static_cast<double>(c.bytes));
            sink.sample("evictor_freed_items_total", "Items removed by reclaim actions", metric_type::counter,
                        {{"level", level}, {"action", action}}, static_cast<double>(c.items));
            sink.sample("evictor_empty_actions_total",
                        "Reclaim actions that freed nothing (the next action ran at once)", metric_type::counter,
                        {{"level", level}, {"action", action}}, static_cast<double>(c.empty));
            sink.sample("evictor_dry_run_actions_total", "Actions counted but not run (dry run)", metric_type::counter,
                        {{"level", level}, {"action", action}}, static_cast<double>(c.dry_runs));
        }
    }
    // Per reclaimer: only the actions it answers; the custom actions by their own names (the
    // `custom` cell, their sum, is not written again).
    for (const auto& r : s.reclaimers) {
        const auto write = [&](std::string_view action, const reclaimer_action_counters& c) {
            if (!c.handled) return;
            sink.sample("evictor_reclaimer_runs_total", "Reclaim calls, by reclaimer and action", metric_type::counter,
                        {{"reclaimer", r.name}, {"action", action}}, static_cast<double>(c.runs));
            sink.sample("evictor_reclaimer_freed_bytes_total", "Bytes freed, by reclaimer and action",
                        metric_type::counter, {{"reclaimer", r.name}, {"action", action}},
                        static_cast<double>(c.bytes));
            sink.sample("evictor_reclaimer_freed_items_total", "Items removed, by reclaimer and action",
                        metric_type::counter, {{"reclaimer", r.name}, {"action", action}},
                        static_cast<double>(c.items));
        };
        for (std::size_t ai = 0; ai < reclaim_action_count; ++ai) {
            if (static_cast<reclaim_action>(ai) == reclaim_action::custom) continue;
            write(to_string(static_cast<reclaim_action>(ai)), r.actions[ai]);
        }
        for (std::size_t ci = 0; ci < r.custom.size() && ci < s.custom_actions.size(); ++ci) {
            write(s.custom_actions[ci], r.custom[ci]);
        }
    }
    sink.sample("heap_trims_total", "Heap trims completed (on the heap trimmer's thread)", metric_type::counter, {},
                static_cast<double>(s.heap_trims));
    sink.sample("heap_trims_coalesced_total", "Heap trims asked for while one was running", metric_type::counter, {},
                static_cast<double>(s.heap_trims_coalesced));
    sink.sample("heap_trim_running", "1 while a heap trim runs", metric_type::gauge, {},
                s.heap_trim_running ? 1.0 : 0.0);
    sink.sample("evictor_deferred_changes_total",
                "Registrations, removals and level changes made from inside a step, applied after it",
                metric_type::counter, {}, static_cast<double>(s.deferred_changes));
    sink.sample("evictor_ignored_steps_total", "Steps called from inside a step, which do nothing",
                metric_type::counter, {}, static_cast<double>(s.ignored_steps));
    sink.sample("evictor_out_of_range_levels_total", "Levels past emergency given to the evictor, taken as emergency",
                metric_type::counter, {}, static_cast<double>(s.out_of_range_levels));
    sink.sample("heap_trims_deferred_total", "Heap trims skipped by the back-off", metric_type::counter, {},
                static_cast<double>(s.heap_trims_deferred));
    sink.sample("heap_trimmed_bytes_total", "Resident bytes given back by heap trims", metric_type::counter, {},
                static_cast<double>(s.heap_trimmed_bytes));
}

MEMGOV_NAMESPACE_END
