#!/usr/bin/env bash
# What rate limiting costs: layer-4 bulk throughput with limiting on (limits far above
# the link, BENCH_THROTTLE=1 in bench-l4-hook.sh) against off, in interleaved blocks
# of one run each, the order alternating per block (on/off, off/on, ...) so the
# machine's drift falls on both sides.
#
# Every process of the transfer is pinned, so each run takes the same path through the
# scheduler: the client daemon and the iperf3 backends on CPU 0 (BENCH_PIN=1 in the
# hook), the server daemons and the iperf3 client on CPU 1 (an iperf3 wrapper put
# first on PATH). Unpinned, single runs fall into a fast and a slow mode by where the
# scheduler puts iperf3, and that ±10 % swamps a 2 % question.
#
#   cargo build --release
#   bash .ci/bench-throttle-ab.sh [BLOCKS=8]        (as root; about 35 s per block)
#
# Prints one line per run (block, limiting, Gbit/s, forwarder CPU s/GB) and then the
# medians and the on/off ratios. BENCH_BIN picks the binary, OUT_DIR the results.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
blocks=${1:-8}
out=${OUT_DIR:-/tmp/sss-throttle-ab/$(date +%Y%m%d-%H%M%S)}
harness=${HARNESS:-$here/../shared/bench/l4-peers.sh}
[ -f "$harness" ] || { echo "no $harness (set HARNESS)" >&2; exit 1; }
real_iperf3=$(command -v iperf3) || { echo "no iperf3: apt-get install iperf3" >&2; exit 1; }
mkdir -p "$out/bin"
cat >"$out/bin/iperf3" <<SH
#!/bin/sh
case " \$* " in
  *" -c "*) exec taskset -c 1 $real_iperf3 "\$@" ;;
  *) exec taskset -c 0 $real_iperf3 "\$@" ;;
esac
SH
chmod +x "$out/bin/iperf3"

field() { awk -F, -v k="$2" '$3 == k { print $4 }' "$1/results.csv"; }
for i in $(seq 1 "$blocks"); do
  order="1 0"; [ $((i % 2)) = 0 ] && order="0 1"
  for t in $order; do
    run=$out/$i-$t
    PATH=$out/bin:$PATH BENCH_PIN=1 BENCH_THROTTLE=$t OURS_SETUP=$here/.ci/bench-l4-hook.sh \
      OURS_NAME=sssonector SYSTEMS=sssonector METRICS=bulk OUT_DIR=$run \
      bash "$harness" >"$run.log" 2>&1 || { echo "run $i-$t failed: $run.log" >&2; exit 1; }
    echo "$i $t $(field "$run" gbps) $(field "$run" bulk_cpu_s_per_GB)" | tee -a "$out/runs.txt"
  done
done
python3 - "$out/runs.txt" <<'PY'
import math, statistics as st, sys
runs = {}
for line in open(sys.argv[1]):
    block, on, gbps, s_gb = line.split()
    runs.setdefault(block, {})[on] = (float(gbps), float(s_gb))
on = [r["1"] for r in runs.values()]
off = [r["0"] for r in runs.values()]
ratios = [r["1"][0] / r["0"][0] for r in runs.values()]
print(f"limiting on : median {st.median(g for g, _ in on):.2f} Gbit/s, {st.median(s for _, s in on):.3f} CPU-s/GB")
print(f"limiting off: median {st.median(g for g, _ in off):.2f} Gbit/s, {st.median(s for _, s in off):.3f} CPU-s/GB")
print(f"on/off: ratio of medians {st.median(g for g, _ in on) / st.median(g for g, _ in off):.3f}, "
      f"median of block ratios {st.median(ratios):.3f}, "
      f"geometric mean {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f} ({len(ratios)} blocks)")
PY
