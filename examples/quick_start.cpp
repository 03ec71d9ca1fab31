// The README's quick start: a governed service with sessions holding capped audio windows.
#include <memgov/memgov.hpp>

#include <cstddef>
#include <cstdio>
#include <memory>

int main() {
    memgov::governor<> gov;                      // finds this process's memory limit (cgroup)
    memgov::buffer_pool pool{{}, &gov.ledger()}; // size classes, trimmed under pressure
    memgov::session_map<int, memgov::sliding_window> sessions{{}, {}, memgov::steady_clock{}, &gov.ledger()};
    gov.register_reclaimer(std::make_shared<memgov::buffer_pool_reclaimer>(pool));
    gov.register_reclaimer(std::make_shared<memgov::session_map_reclaimer<decltype(sessions)>>(sessions));
    gov.start(); // polls the cgroup, sweeps expired sessions and reclaims in the background

    if (gov.admit(64 * 1024, memgov::admit_kind::session)) { // admission control at ingress
        sessions.insert(1, [&] { return memgov::sliding_window{pool, {}, &gov.ledger()}; });
    }
    const std::byte audio[320]{};
    sessions.with(1, [&](memgov::sliding_window& w) { w.append(audio); });

    const memgov::health_summary h = gov.health();
    std::printf("level %s, estimate %llu of %llu bytes\n", memgov::to_string(h.level).data(),
                static_cast<unsigned long long>(h.estimate_bytes), static_cast<unsigned long long>(h.limit_bytes));
    gov.stop(); // before the parts it reclaims from go away

    bool ok = sessions.size() == 1 && gov.ledger().bytes(memgov::category::windows) > 0 &&
              gov.ledger().bytes(memgov::category::session_storage) > 0;
    std::printf("memgov %s quick start: %s\n", memgov::version_string, ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
