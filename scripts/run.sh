#!/usr/bin/env bash
# The README's main command: installs what is missing, builds the release preset, runs the
# quick start, then a ~30 s demo of the reference gateway on the embedded Kafka (librdkafka's
# mock cluster on loopback): 200 steady voice sessions from the traffic tool, every frame read
# back from Kafka and matched, a summary table, and a kcat line that reads what was produced.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cmake --preset release
cmake --build --preset release -j "${MEMGOV_JOBS:-2}" --target quick_start gateway loadgen
./build/release/examples/quick_start

build=build/release/examples
boot="$(mktemp -u "${TMPDIR:-/tmp}/memgov-gateway.XXXXXX")"
"$build/gateway/gateway" --port 0 --http-port 0 --bootstrap-file "$boot" &
gw=$!
trap 'kill -INT "$gw" 2>/dev/null || true; rm -f "$boot"' EXIT
for _ in $(seq 100); do [ -s "$boot" ] && break; sleep 0.1; done
[ -s "$boot" ] || { echo "the gateway did not start" >&2; exit 1; }
"$build/loadgen/loadgen" --bootstrap-file "$boot" --sessions 200 --duration-s 25 --ramp-ms 2000
echo "--- five of the messages, read back with kcat:"
timeout 10 kcat -b "$(head -n1 "$boot")" -C -t audio -o beginning -c 5 -f '%k %h %S bytes\n' || true
echo "--- a few of the gateway's metrics:"
curl -fsS "http://127.0.0.1:$(sed -n 3p "$boot")/metrics" |
    grep -E '^(gateway_(frames|kafka_delivered_bytes|lost)|memgov_pressure_level\{.*\} 1)' || true
kill -INT "$gw"
trap - EXIT
wait "$gw"
rm -f "$boot"
