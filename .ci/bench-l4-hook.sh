#!/usr/bin/env bash
# OURS_SETUP hook for ../shared/bench/l4-peers.sh (contract in its header): an
# SSSonector server in $PB_NS_SERVER and a client in $PB_NS_CLIENT, one tunnel
# between them, carrying two layer-4 services:
#   bulk  client 127.0.0.1:7201 -> the first iperf3 backend (iperf3 needs both of a
#         test's connections on one backend)
#   http  client 127.0.0.1:7080 -> the nginx backends, round robin
#   cargo build --release
#   OURS_SETUP=$PWD/.ci/bench-l4-hook.sh OURS_NAME=sssonector bash ../shared/bench/l4-peers.sh
# SSSONECTOR_BIN overrides the binary (default: target/release/sssonector here).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${SSSONECTOR_BIN:-$here/target/release/sssonector}
case "${1:-}" in
  start)
    [ -x "$bin" ] || { echo "no $bin: run cargo build --release" >&2; exit 1; }
    c=$PB_CERTS
    bulk=${PB_BACKENDS_BULK%% *}
    http=""
    for b in $PB_BACKENDS_HTTP; do http="$http{ address: \"$b\" }, "; done
    cat >"$PB_WORKDIR/server.yaml" <<YAML
mode: server
network: { interface: sssb4s, address: 10.231.0.1/24 }
tunnel: { listen_address: ${PB_SERVER_LISTEN_BULK%:*}, listen_port: ${PB_SERVER_LISTEN_BULK##*:},
          cert_file: $c/server.crt, key_file: $c/server.key, ca_file: $c/ca.crt }
services:
  - { name: bulk, endpoints: [ { address: "$bulk" } ] }
  - { name: http, strategy: round_robin, endpoints: [ ${http%, } ] }
connection: { max_connections: 10000 }
control: { socket: $PB_WORKDIR/server.sock }
logging: { level: warn, format: json }
YAML
    cat >"$PB_WORKDIR/client.yaml" <<YAML
mode: client
network: { interface: sssb4c, address: 10.231.0.2/24 }
tunnel: { servers: [ { address: "$PB_SERVER_LISTEN_BULK" } ], server_name: server.pb.test,
          cert_file: $c/client.crt, key_file: $c/client.key, ca_file: $c/ca.crt }
services:
  - { name: bulk, listen: "$PB_CLIENT_LISTEN_BULK" }
  - { name: http, listen: "$PB_CLIENT_LISTEN_HTTP" }
connection: { max_connections: 10000, retry_attempts: 10, retry_interval: 100ms }
control: { socket: $PB_WORKDIR/client.sock }
logging: { level: warn, format: json }
YAML
    ip netns exec "$PB_NS_SERVER" "$bin" run --config "$PB_WORKDIR/server.yaml" \
      >>"$PB_WORKDIR/srv.log" 2>&1 </dev/null 9>&- &
    echo $! >>"$PB_PIDFILE_SERVER"
    ip netns exec "$PB_NS_CLIENT" "$bin" run --config "$PB_WORKDIR/client.yaml" \
      >>"$PB_WORKDIR/cli.log" 2>&1 </dev/null 9>&- &
    echo $! >>"$PB_PIDFILE_CLIENT"
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
