// The README's quick start: account bytes by category and read them back.
#include <memgov/memgov.hpp>

#include <cstdio>

int main() {
    memgov::ledger ledger;
    const memgov::category audio = ledger.define("audio");

    ledger.charge(memgov::category::sessions, 4096);                   // a session's state
    memgov::charge_token window{ledger, audio, 64 * 1024};            // released when it ends
    std::printf("charged: %lld bytes\n", static_cast<long long>(ledger.total()));

    window.release();
    ledger.release(memgov::category::sessions, 4096);
    const bool ok = ledger.total() == 0;
    std::printf("memgov %s quick start: %s\n", memgov::version_string, ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
