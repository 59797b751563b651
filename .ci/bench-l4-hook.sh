#!/usr/bin/env bash
# OURS_SETUP hook for ../shared/bench/l4-peers.sh (contract in its header): an
# SSSonector server in $PB_NS_SERVER and a client in $PB_NS_CLIENT, one tunnel
# between them, carrying two layer-4 services:
#   bulk  client 127.0.0.1:7201 -> the first iperf3 backend (iperf3 needs both of a
#         test's connections on one backend)
#   http  client 127.0.0.1:7080 -> the nginx backends, round robin
# The harness waits for TLS on both server ports, and one daemon listens on one: a
# second, idle server daemon listens on the HTTP port (the client uses the first).
#   cargo build --release
#   OURS_SETUP=$PWD/.ci/bench-l4-hook.sh OURS_NAME=sssonector bash ../shared/bench/l4-peers.sh
# BENCH_BIN overrides the binary (default: target/release/sssonector here). Not
# SSSONECTOR_*: the daemon reads that prefix as configuration overrides.
# BENCH_THROTTLE=1 turns rate limiting on in every daemon with limits far above
# the link (10 GB/s per connection, 40 GB/s shared), to measure what limiting costs;
# BENCH_THROTTLE=2 the same without a global rate.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${BENCH_BIN:-$here/target/release/sssonector}
throttle="throttle: { enabled: false }"
# BENCH_TUNNEL adds keys to both daemons' tunnel section, e.g. "busy_poll: 0s".
# BENCH_PIN=1 pins the client daemon and the harness's iperf3 backends to CPU 0 and
# the server daemons to CPU 1 (taskset), for A/B comparisons that the scheduler's
# placement would otherwise swamp: a server daemon sharing its core with the iperf3
# that reads from it runs a different (slower) way.
pin_client=""; pin_server=""
if [ "${BENCH_PIN:-0}" = 1 ]; then pin_client="taskset -c 0"; pin_server="taskset -c 1"; fi
tunnel_extra=${BENCH_TUNNEL:+, $BENCH_TUNNEL}
case "${BENCH_THROTTLE:-0}" in
  1) throttle="throttle: { enabled: true, rate: 10000000000, burst: 16777216, global_rate: 40000000000 }" ;;
  2) throttle="throttle: { enabled: true, rate: 10000000000, burst: 16777216 }" ;;   # no global rate
esac
case "${1:-}" in
  start)
    [ -x "$bin" ] || { echo "no $bin: run cargo build --release" >&2; exit 1; }
    c=$PB_CERTS
    bulk=${PB_BACKENDS_BULK%% *}
    http=""
    for b in $PB_BACKENDS_HTTP; do http="$http{ address: \"$b\" }, "; done
    server() {  # $1 = name, $2 = interface, $3 = inner /24 prefix, $4 = listen host:port
      cat >"$PB_WORKDIR/$1.yaml" <<YAML
mode: server
network: { interface: $2, address: $3.1/24 }
tunnel: { listen_address: ${4%:*}, listen_port: ${4##*:},
          cert_file: $c/server.crt, key_file: $c/server.key, ca_file: $c/ca.crt$tunnel_extra }
services:
  - { name: bulk, endpoints: [ { address: "$bulk" } ] }
  - { name: http, strategy: round_robin, endpoints: [ ${http%, } ] }
connection: { max_connections: 10000 }
$throttle
control: { socket: $PB_WORKDIR/$1.sock }
logging: { level: warn, format: json }
YAML
      ip netns exec "$PB_NS_SERVER" $pin_server "$bin" run --config "$PB_WORKDIR/$1.yaml" \
        >>"$PB_WORKDIR/$1.log" 2>&1 </dev/null 9>&- &
      echo $! >>"$PB_PIDFILE_SERVER"
    }
    server server sssb4s 10.231.0 "$PB_SERVER_LISTEN_BULK"
    server standby sssb4t 10.232.0 "$PB_SERVER_LISTEN_HTTP"
    cat >"$PB_WORKDIR/client.yaml" <<YAML
mode: client
network: { interface: sssb4c, address: 10.231.0.2/24 }
tunnel: { servers: [ { address: "$PB_SERVER_LISTEN_BULK" } ], server_name: server.pb.test,
          cert_file: $c/client.crt, key_file: $c/client.key, ca_file: $c/ca.crt$tunnel_extra }
services:
  - { name: bulk, listen: "$PB_CLIENT_LISTEN_BULK" }
  - { name: http, listen: "$PB_CLIENT_LISTEN_HTTP" }
connection: { max_connections: 10000, retry_attempts: 10, retry_interval: 100ms }
$throttle
control: { socket: $PB_WORKDIR/client.sock }
logging: { level: warn, format: json }
YAML
    ip netns exec "$PB_NS_CLIENT" $pin_client "$bin" run --config "$PB_WORKDIR/client.yaml" \
      >>"$PB_WORKDIR/cli.log" 2>&1 </dev/null 9>&- &
    echo $! >>"$PB_PIDFILE_CLIENT"
    if [ "${BENCH_PIN:-0}" = 1 ]; then
      for p in $(ip netns pids "$PB_NS_SERVER"); do
        [ "$(cat /proc/"$p"/comm 2>/dev/null)" = iperf3 ] && taskset -p -c 0 "$p" >/dev/null
      done
    fi
    # Ready when the client's tunnel is up and its service ports listen.
    for _ in $(seq 100); do
      if "$bin" ctl --socket "$PB_WORKDIR/client.sock" --json status 2>/dev/null | grep -q '"current": *1'; then
        exit 0
      fi
      sleep 0.1
    done
    echo "tunnel not up within 10 s; logs in $PB_WORKDIR" >&2
    exit 1
    ;;
  stop) : ;;   # the harness kills the PIDs; the namespaces take the TUN devices along
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
