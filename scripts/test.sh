#!/usr/bin/env bash
# The README's test command: installs what is missing, builds the dev preset and runs every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
extra=()
if [ -n "${CI:-}" ]; then extra+=(-DMEMGOV_WERROR=ON); fi
cmake --preset dev "${extra[@]}"
cmake --build --preset dev -j "${MEMGOV_JOBS:-2}"
ctest --preset dev
