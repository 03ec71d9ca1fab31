#pragma once
// Runs `promtool check metrics` on a text, for tests of the Prometheus output.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <unistd.h>

namespace memgov_test {

/// The promtool binary, if installed.
inline std::optional<std::string> find_promtool() {
    for (const char* p : {"/usr/bin/promtool", "/usr/local/bin/promtool"}) {
        if (::access(p, X_OK) == 0) return std::string{p};
    }
    return std::nullopt;
}

struct promtool_result {
    int exit_code = -1;
    std::string output;
};

/// Pipes `text` into `promtool check metrics` and returns its exit code and output.
inline promtool_result promtool_check(const std::string& promtool, const std::string& text) {
    const auto dir = std::filesystem::temp_directory_path();
    const auto in = dir / ("memgov-metrics-" + std::to_string(::getpid()) + ".txt");
    {
        std::ofstream f{in};
        f << text;
    }
    promtool_result r;
    const std::string cmd = promtool + " check metrics < " + in.string() + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p != nullptr) {
        char buf[512];
        while (std::fgets(buf, sizeof buf, p) != nullptr) r.output += buf;
        const int st = ::pclose(p);
        r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    std::filesystem::remove(in);
    return r;
}

// `promtool check metrics` on `text`. promtool comes with the Debian package 'prometheus'
// (scripts/packages.txt), so a missing one is a failure (exit code -2), not a skip.
inline promtool_result check_metrics_text(const std::string& text) {
    const auto promtool = find_promtool();
    if (!promtool) return {-2, "promtool not installed (Debian package 'prometheus')"};
    return promtool_check(*promtool, text);
}

} // namespace memgov_test
