#!/usr/bin/env bash
# Checks that every C++ file in the repository is formatted as .clang-format says (clang-format
# 14, the version Debian 12 ships). `scripts/check-format.sh --fix` formats them in place.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cf="${CLANG_FORMAT:-clang-format-14}"
if ! command -v "$cf" > /dev/null; then
    echo "check-format: $cf not found (scripts/setup.sh installs it)" >&2
    exit 2
fi
mapfile -t files < <(git ls-files -- '*.hpp' '*.cpp' '*.h')
if [ "${1:-}" = "--fix" ]; then
    "$cf" -i -- "${files[@]}"
    exit 0
fi
if ! "$cf" --dry-run --Werror -- "${files[@]}"; then
    echo "check-format: files above are not formatted; run scripts/check-format.sh --fix" >&2
    exit 1
fi
echo "check-format: ${#files[@]} files formatted"
