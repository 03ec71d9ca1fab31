// SPDX-License-Identifier: MIT
// The per-thread claim list behind the counter slots (ledgers, admission counters) and the
// pools' thread caches.
#include <memgov/detail/thread_claims.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

struct owner {
    std::vector<int> resources = std::vector<int>(8);
    std::atomic<int> handed_out{0};
    std::atomic<int> given_back{0};
    int* hand_out() { return &resources[static_cast<std::size_t>(handed_out++)]; }
};

std::atomic<int> exit_hooks{0};

struct test_claims {
    using owner_type = owner;
    using claim_type = int;
    static void on_thread_exit() noexcept { ++exit_hooks; }
    static void give_back(owner& o, int*) noexcept { ++o.given_back; }
};
using claims = memgov::detail::thread_claims<test_claims>;

// Checks, from a thread-exit destructor that runs after the claim list's, that claiming is
// refused then.
struct late_user {
    std::shared_ptr<owner> o;
    bool* refused;
    ~late_user() {
        *refused = claims::exiting() && claims::find_or_claim(99, o, [this] { return o->hand_out(); }) == nullptr &&
                   claims::find(1) == nullptr;
    }
};

} // namespace

TEST_CASE("thread_claims: one claim per owner and thread, given back at thread exit", "[thread_claims]") {
    auto a = std::make_shared<owner>();
    auto b = std::make_shared<owner>();
    const int hooks_before = exit_hooks.load();
    std::thread t{[&] {
        CHECK(claims::find(1) == nullptr); // nothing claimed yet
        CHECK_FALSE(claims::exiting());
        int* ca = claims::find_or_claim(1, a, [&] { return a->hand_out(); });
        int* cb = claims::find_or_claim(2, b, [&] { return b->hand_out(); });
        REQUIRE(ca != nullptr);
        REQUIRE(cb != nullptr);
        CHECK(ca != cb);
        CHECK(claims::find_or_claim(1, a, [&] { return a->hand_out(); }) == ca); // not again
        CHECK(claims::find(1) == ca);
        CHECK(claims::find(2) == cb);
    }};
    t.join();
    CHECK(a->handed_out == 1);
    CHECK(b->handed_out == 1);
    CHECK(a->given_back == 1);
    CHECK(b->given_back == 1);
    CHECK(exit_hooks.load() == hooks_before + 1);
}

TEST_CASE("thread_claims: an owner gone before the thread is skipped", "[thread_claims]") {
    std::weak_ptr<owner> seen;
    std::thread t{[&] {
        auto o = std::make_shared<owner>();
        seen = o;
        CHECK(claims::find_or_claim(7, o, [&] { return o->hand_out(); }) != nullptr);
        o.reset(); // the owner dies while the thread still lives
        // A new owner under another id: the dead one's entry is dropped from the list.
        auto n = std::make_shared<owner>();
        CHECK(claims::find_or_claim(8, n, [&] { return n->hand_out(); }) != nullptr);
        CHECK(claims::find(7) == nullptr);
    }};
    t.join();
    CHECK(seen.expired());
}

TEST_CASE("thread_claims: a declined or failed claim records nothing", "[thread_claims]") {
    auto o = std::make_shared<owner>();
    std::thread t{[&] {
        CHECK(claims::find_or_claim(3, o, []() -> int* { return nullptr; }) == nullptr);
        CHECK(claims::find_or_claim(3, o, []() -> int* { throw std::runtime_error{"no"}; }) == nullptr);
        CHECK(claims::find(3) == nullptr);
        CHECK(claims::find_or_claim(3, o, [&] { return o->hand_out(); }) != nullptr);
    }};
    t.join();
    CHECK(o->handed_out == 1);
    CHECK(o->given_back == 1);
}

TEST_CASE("thread_claims: destructors that run after the list's cannot claim", "[thread_claims]") {
    auto o = std::make_shared<owner>();
    bool refused = false;
    std::thread t{[&] {
        // Constructed before the list, so destroyed after it.
        thread_local late_user late{o, &refused};
        (void)late;
        CHECK(claims::find_or_claim(1, o, [&] { return o->hand_out(); }) != nullptr);
    }};
    t.join();
    CHECK(refused);
    CHECK(o->handed_out == 1);
    CHECK(o->given_back == 1);
}
