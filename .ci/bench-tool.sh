#!/usr/bin/env bash
# Figures for the README's "sssonector bench" table (issue 9): each mode of
# `sssonector bench --local` (a server, a client and an echo backend on loopback,
# started and stopped by the bench) in a network namespace of its own, release
# build. Prints one Markdown row per run. Stops by itself: every run is bounded by
# DURATION + WARMUP.
#   bash .ci/bench-tool.sh                 # or DURATION=10s WARMUP=2s bash .ci/bench-tool.sh
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-30s}
warmup=${WARMUP:-5s}
command -v jq >/dev/null || { echo "bench-tool: jq missing: apt-get install -y jq" >&2; exit 1; }
cargo build --release -q --bin sssonector
bin=$PWD/target/release/sssonector
ns=sssbench$$
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip -n "$ns" link set lo up

echo "| mode | connections | payload B | interval | msg/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | daemons CPU % (server, client) | daemons RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
# mode connections payload interval
while read -r mode conns payload interval; do
  ip netns exec "$ns" "$bin" bench --local --json --mode "$mode" --connections "$conns" \
    --payload "$payload" --interval "$interval" --duration "$duration" --warmup "$warmup" |
    jq -r --arg interval "$interval" '
      def f(n): (. * pow(10; n) | round) / pow(10; n);
      "| \(.mode) | \(.connections) | \(.payload_bytes) | \($interval) | \(.messages_per_second | round) | \(.bytes_per_second / 1e6 | f(1)) | \(.latency_ms.p50) | \(.latency_ms.p99) | \(.latency_ms.p99_9) | \(.latency_ms.max) | \(.error_count) | \([.daemons[].cpu_percent | round] | join(", ")) | \([.daemons[].rss_max_bytes / 1048576 | f(1)] | join(", ")) |"'
done <<'RUNS'
echo 100 2048 50ms
echo 50 2048 0
bulk 10 2048 0
bulk 10 65536 0
connect 50 2048 0
RUNS
