#include <memgov/memgov.hpp>

#include <cstdio>

int main() {
    memgov::ledger ledger;
    memgov::charge_token t{ledger, memgov::category::pool_in_use, 1024};
    const bool ok = ledger.total() == 1024;
    std::printf("consumer (find_package): memgov %s %s\n", memgov::version_string, ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
