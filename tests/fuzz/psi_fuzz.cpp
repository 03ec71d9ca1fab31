// SPDX-License-Identifier: MIT
// libFuzzer target: PSI files, PSI trigger text and systemd's base64 WRITE data.
// Built and run by scripts/fuzz.sh (ctest label "fuzz").
#include <memgov/detail/psi_parse.hpp>
#include <memgov/detail/psi_trigger.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace memgov::detail;
    const std::string_view text{reinterpret_cast<const char*>(data), size};
    if (const auto p = psi_parse(text)) {
        for (const double v : {p->some.avg10, p->some.avg60, p->some.avg300, p->full.avg10}) {
            if (!(v >= 0.0) || std::isnan(v)) __builtin_trap(); // no sign, no NaN accepted
        }
        if (!p->has_full && (p->full.avg10 != 0 || p->full.total_us != 0)) __builtin_trap();
    }
    if (const auto t = psi_parse_trigger(text)) {
        if (t->window_us == 0 || t->stall_us > t->window_us) __builtin_trap();
        const double pct = t->percent();
        if (pct < 0.0 || pct > 100.0) __builtin_trap();
    }
    if (const auto d = psi_base64_decode(text)) {
        if (d->size() > size) __builtin_trap();
        (void)psi_parse_trigger(*d);
    }
    return 0;
}
