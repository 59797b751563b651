#!/usr/bin/env bash
# OURS_SETUP hook for ../shared/bench/l3-peers.sh: runs an SSSonector server in $NS_R
# and a client in $NS_L with the harness's throwaway PKI, at the harness's MTU 1500.
#   cargo build --release
#   OURS_SETUP=$PWD/.ci/bench-l3-hook.sh OURS_NAME=sssonector SYSTEMS="veth ours" \
#     bash ../shared/bench/l3-peers.sh
# BENCH_BIN overrides the binary (default: target/release/sssonector here). Not
# SSSONECTOR_*: the daemon reads that prefix as configuration overrides.
# BENCH_THROTTLE=1 turns rate limiting on in both daemons with limits far above
# the link (10 GB/s per connection, 40 GB/s shared), to measure what limiting costs.
# BENCH_DESTINATIONS=1 gives the client a security.client_destinations list on the
# server (two networks, the second matching), to measure what the check costs.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${BENCH_BIN:-$here/target/release/sssonector}
throttle="throttle: { enabled: false }"
if [ "${BENCH_THROTTLE:-0}" = 1 ]; then
  throttle="throttle: { enabled: true, rate: 10000000000, burst: 16777216, global_rate: 40000000000 }"
fi
destinations=""
# BENCH_TUNNEL adds keys to both daemons' tunnel section, e.g. "busy_poll: 0s".
tunnel_extra=${BENCH_TUNNEL:+, $BENCH_TUNNEL}
if [ "${BENCH_DESTINATIONS:-0}" = 1 ]; then
  destinations=", client_destinations: { pa-client: [10.0.0.0/8, $INNER_R/32] }"
fi
case "${1:-}" in
  up)
    [ -x "$bin" ] || { echo "no $bin: run cargo build --release" >&2; exit 1; }
    cat >"$OURS_LOG_DIR/server.yaml" <<YAML
mode: server
network: { interface: $TUN_R, address: $INNER_R/$INNER_PREFIX, mtu: 1500 }
tunnel: { listen_address: $UNDER_R, listen_port: $PORT, cert_file: $CERT_DIR/server.crt,
          key_file: $CERT_DIR/server.key, ca_file: $CERT_DIR/ca.crt$tunnel_extra }
security: { allowed_clients: [pa-client]$destinations }
$throttle
control: { socket: $OURS_LOG_DIR/server.sock }
logging: { level: warn, format: json }
YAML
    cat >"$OURS_LOG_DIR/client.yaml" <<YAML
mode: client
network: { interface: $TUN_L, address: $INNER_L/$INNER_PREFIX, mtu: 1500 }
tunnel: { servers: [ { address: "$UNDER_R:$PORT" } ], server_name: pa-server,
          cert_file: $CERT_DIR/client.crt, key_file: $CERT_DIR/client.key, ca_file: $CERT_DIR/ca.crt$tunnel_extra }
connection: { retry_attempts: 10, retry_interval: 100ms }
$throttle
control: { socket: $OURS_LOG_DIR/client.sock }
logging: { level: warn, format: json }
YAML
    ip netns exec "$NS_R" "$bin" run --config "$OURS_LOG_DIR/server.yaml" \
      >"$OURS_LOG_DIR/r.log" 2>&1 </dev/null 9>&- &
    echo $! >>"$OURS_PIDFILE"
    ip netns exec "$NS_L" "$bin" run --config "$OURS_LOG_DIR/client.yaml" \
      >"$OURS_LOG_DIR/l.log" 2>&1 </dev/null 9>&- &
    echo $! >>"$OURS_PIDFILE"
    ;;
  down) : ;;   # the harness kills the PIDs in $OURS_PIDFILE and deletes the namespaces
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
