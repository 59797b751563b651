#!/usr/bin/env bash
# Benchmark for issue 5: a full snmpbulkwalk of the agent with ROWS (default 1000)
# connection-table rows, timed RUNS (default 5) times each way; prints the median.
# The agent, view, BER and UDP are the daemon's own (actors/examples/snmp_table.rs);
# the sessions are synthetic. Loopback only, stops by itself.
#   bash .ci/bench-snmp.sh            # or ROWS=5000 RUNS=9 bash .ci/bench-snmp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${ROWS:-1000}
runs=${RUNS:-5}
port=${PORT:-11610}
for tool in snmpbulkwalk snmpwalk; do
  command -v "$tool" >/dev/null || { echo "bench-snmp: $tool missing: apt-get install -y snmp" >&2; exit 1; }
done
bash .ci/base-mibs.sh >/dev/null
cargo build --release -q -p sssonector-actors --example snmp_table
target/release/examples/snmp_table "$rows" "127.0.0.1:$port" 2>/dev/null &
agent=$!
trap 'kill $agent 2>/dev/null || true' EXIT
export SNMPCONFPATH=/nonexistent
mibs=(-M +target/base-mibs:mibs -m SNMPv2-MIB:SSSONECTOR-MIB -r 1 -t 2)
v2c=(-v2c -c public)
v3=(-v3 -l authPriv -u bench -a SHA-256 -A bench-auth-pw -x AES -X bench-priv-pw)
for _ in $(seq 50); do
  snmpget "${mibs[@]}" "${v2c[@]}" 127.0.0.1:$port sysDescr.0 >/dev/null 2>&1 && break
  sleep 0.1
done

# median SECONDS of RUNS timings of: label, expected line count, command...
measure() {
  local label=$1 want=$2; shift 2
  local times=() start end lines
  for _ in $(seq "$runs"); do
    start=$(date +%s.%N)
    lines=$("$@" | wc -l)
    end=$(date +%s.%N)
    if [ "$lines" -ne "$want" ]; then
      echo "bench-snmp: $label returned $lines objects, expected $want" >&2
      exit 1
    fi
    times+=("$(echo "$end - $start" | bc)")
  done
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")
  printf '%-44s %6d objects  median %6.3f s  (runs: %s)\n' "$label" "$want" "$median" "${times[*]}"
}

cells=$((rows * 9))
all=$((cells + 40))
echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "rows: $rows, runs: $runs"
measure "snmpbulkwalk v2c sssPeerTable" "$cells" snmpbulkwalk "${mibs[@]}" "${v2c[@]}" 127.0.0.1:$port SSSONECTOR-MIB::sssPeerTable
measure "snmpbulkwalk v2c whole agent (.1)" "$all" snmpbulkwalk "${mibs[@]}" "${v2c[@]}" 127.0.0.1:$port .1
measure "snmpbulkwalk -Cr50 v2c whole agent" "$all" snmpbulkwalk -Cr50 "${mibs[@]}" "${v2c[@]}" 127.0.0.1:$port .1
measure "snmpbulkwalk v3 authPriv whole agent" "$all" snmpbulkwalk "${mibs[@]}" "${v3[@]}" 127.0.0.1:$port .1
measure "snmpwalk (GetNext) v2c whole agent" "$all" snmpwalk "${mibs[@]}" "${v2c[@]}" 127.0.0.1:$port .1
