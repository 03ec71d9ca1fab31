#!/usr/bin/env bash
# The README's main command: installs what is missing, builds the release preset and runs the
# main job.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cmake --preset release
cmake --build --preset release -j "${MEMGOV_JOBS:-2}" --target quick_start
./build/release/examples/quick_start
