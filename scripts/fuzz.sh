#!/usr/bin/env bash
# Builds memgov's libFuzzer targets (tests/fuzz/*_fuzz.cpp) with clang++ and runs each for a
# bounded time, seeded from the cgroup fixtures under tests/data/cgroup/ and the hostile shapes
# under tests/fuzz/seeds/.
#
#   scripts/fuzz.sh [--seconds N] [--out DIR] [--target NAME]...
#
# Defaults: every target, 15 s each, output in build/fuzz. NAME is mountinfo, cgroup_file,
# memory_stat or psi. Each run appends one line to DIR/results.txt:
#   <date> <target> <seconds> s, <runs> runs, <exec/s> exec/s, cov <n>, ft <n>, corpus <n>: <ok|CRASH>
# A crash leaves its reproducer in DIR/<target>/ (run DIR/<target>/fuzzer <file> to replay).
# Exit status: 0 all clean, 1 a target crashed or failed to build, 77 clang++ or libFuzzer is
# missing (ctest treats 77 as "skipped").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=15
out="$root/build/fuzz"
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --target) targets+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(mountinfo cgroup_file memory_stat psi)

cxx="${MEMGOV_FUZZ_CXX:-clang++}"
if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "SKIPPED: $cxx not found (install clang to fuzz)"
  exit 77
fi
mkdir -p "$out"
probe="$out/.probe"
if ! printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long){return 0;}\n' |
     "$cxx" -x c++ -fsanitize=fuzzer - -o "$probe" >/dev/null 2>&1; then
  echo "SKIPPED: $cxx cannot link -fsanitize=fuzzer (libFuzzer missing)"
  exit 77
fi
rm -f "$probe"

# Seed files for each target: the fixtures, plus hostile shapes in tests/fuzz/seeds/<target>/
# (white space around ids, escaping paths, numbers at and past 2^62 and 2^64, wrapping statm).
seeds_for() {
  local d="$root/tests/data/cgroup"
  if [ -d "$root/tests/fuzz/seeds/$1" ]; then find "$root/tests/fuzz/seeds/$1" -type f; fi
  case "$1" in
    mountinfo) find "$d" -path '*/proc/self/mountinfo' ;;
    cgroup_file) find "$d" -path '*/proc/self/cgroup' -o -name memory.max -o -name memory.high \
                   -o -name memory.limit_in_bytes ;;
    memory_stat) find "$d" -name memory.stat -o -name memory.events -o -name memory.oom_control \
                   -o -name meminfo -o -name statm ;;
    psi) find "$d" -name memory.pressure -o -path '*/proc/pressure/memory' ;;
  esac
}

status=0
for t in "${targets[@]}"; do
  src="$root/tests/fuzz/${t}_fuzz.cpp"
  if [ ! -f "$src" ]; then echo "fuzz.sh: no target $t ($src)" >&2; status=1; continue; fi
  dir="$out/$t"
  mkdir -p "$dir/corpus" "$dir/seeds"
  echo "=== $t: building"
  if ! "$cxx" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
       -I"$root/include" "$src" -o "$dir/fuzzer"; then
    echo "$(date -u +%FT%TZ) $t build FAILED" >> "$out/results.txt"
    status=1
    continue
  fi
  i=0
  while IFS= read -r f; do cp "$f" "$dir/seeds/seed-$i"; i=$((i + 1)); done < <(seeds_for "$t")
  echo "=== $t: fuzzing for ${seconds} s"
  set +e
  "$dir/fuzzer" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
    -max_len=8192 -artifact_prefix="$dir/" "$dir/corpus" "$dir/seeds" > "$dir/log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log" | grep -o '[0-9]*$' || true)
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$dir/log" | grep -o '[0-9]*$' || true)
  last=$(grep -E '(pulse|DONE|NEW|REDUCE|INITED)' "$dir/log" | tail -1 || true)
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || true)
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || true)
  corpus=$(find "$dir/corpus" -type f | wc -l)
  verdict=ok
  if [ $rc -ne 0 ]; then verdict="CRASH (exit $rc, see $dir/log)"; status=1; fi
  line="$(date -u +%FT%TZ) $t ${seconds} s, ${runs:-?} runs, ${speed:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}, corpus $corpus: $verdict"
  echo "$line" | tee -a "$out/results.txt"
  if [ $rc -ne 0 ]; then tail -40 "$dir/log"; fi
done
exit $status
