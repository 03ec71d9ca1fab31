// SPDX-License-Identifier: MIT
#pragma once
// Test types for object_pool tests: a message with heap-backed fields that counts its
// constructions, resets and destructions in a shared tally.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace object_pool_test {

struct tally {
    std::atomic<int> constructed{0};
    std::atomic<int> reset{0};
    std::atomic<int> destroyed{0};
    std::atomic<bool> throw_on_construct{false};
    [[nodiscard]] int alive() const { return constructed.load() - destroyed.load(); }
};

inline tally& counts() {
    static tally t;
    return t;
}

inline void reset_counts() {
    counts().constructed = 0;
    counts().reset = 0;
    counts().destroyed = 0;
    counts().throw_on_construct = false;
}

// Resettable, reports retained bytes, counts its life in counts().
struct message {
    std::uint64_t owner = 0;
    std::uint64_t seq = 0;
    std::string name;
    std::vector<std::uint8_t> payload;

    message() {
        if (counts().throw_on_construct.load()) throw std::runtime_error{"construct failed"};
        counts().constructed.fetch_add(1);
    }
    message(const message&) = delete;
    message& operator=(const message&) = delete;
    ~message() { counts().destroyed.fetch_add(1); }

    void reset() noexcept {
        owner = 0;
        seq = 0;
        name.clear();
        payload.clear();
        counts().reset.fetch_add(1);
    }
    [[nodiscard]] std::size_t retained_bytes() const noexcept {
        // The string's in-object buffer is part of sizeof; count only heap capacity.
        const std::size_t sso = std::string{}.capacity();
        return (name.capacity() > sso ? name.capacity() : 0) + payload.capacity();
    }
};

// Not resettable itself: reset by a policy, which also reports the retained bytes.
struct plain {
    int value = 0;
    std::vector<int> items;
};

struct plain_reset {
    int* calls = nullptr;
    void operator()(plain& p) const noexcept {
        p.value = 0;
        p.items.clear();
        if (calls != nullptr) ++*calls;
    }
    [[nodiscard]] std::size_t retained_bytes(const plain& p) const noexcept { return p.items.capacity() * sizeof(int); }
};

} // namespace object_pool_test
