// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// A format-neutral way for memgov's parts to report their statistics. Components and
/// reclaimers write samples into a `metric_sink`; `memgov/prometheus.hpp` renders them in the
/// Prometheus text format. Reporting allocates and is meant for scrapes, not hot paths.

#include <memgov/config.hpp>

#include <initializer_list>
#include <string_view>
#include <utility>

MEMGOV_NAMESPACE_BEGIN

/// How a metric behaves over time.
enum class metric_type {
    counter, ///< Only goes up (resets only with the process).
    gauge    ///< Goes up and down.
};

/// One label of a sample: name and value.
using metric_label = std::pair<std::string_view, std::string_view>;

/// Receives metric samples. A metric family is identified by `name`; every sample of one family
/// must carry the same `help` and `type`, and differs from the others by its labels.
/// Names are given without the `memgov_` prefix; sinks add it.
/// Thread safety: a sink is used by one thread at a time.
class metric_sink {
public:
    metric_sink() = default;
    metric_sink(const metric_sink&) = delete;
    metric_sink& operator=(const metric_sink&) = delete;
    virtual ~metric_sink() = default;

    /// Records one sample. May throw `std::bad_alloc`.
    virtual void sample(std::string_view name, std::string_view help, metric_type type,
                        std::initializer_list<metric_label> labels, double value) = 0;
};

MEMGOV_NAMESPACE_END
