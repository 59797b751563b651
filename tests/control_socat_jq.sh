#!/usr/bin/env bash
# How a script author talks to the control socket: socat for the socket, jq for the
# replies. Called by tests/control.rs with the socket path and the binary.
set -euo pipefail
sock=$1
sssonector=$2

ask() { printf '%s\n' "$@" | socat -t 5 - "UNIX-CONNECT:$sock"; }

# One request, one reply.
ask '{"id": 1, "command": "status"}' | jq -e '.id == 1 and .ok and .data.mode == "server"' >/dev/null

# Several requests on one connection come back in order, errors included.
ask '{"id": 1, "command": "version"}' '{"id": 2, "command": "nope"}' '{"id": 3, "command": "health"}' |
  jq -s -e '
    length == 3
    and .[0].ok and .[0].data.version != null
    and (.[1].ok | not) and .[1].error.code == "E_UNKNOWN_COMMAND"
    and .[2].data.status == "healthy"' >/dev/null

# Garbage gets a reply with a code, not silence.
ask 'garbage' | jq -e '.ok == false and .error.code == "E_BAD_JSON"' >/dev/null

# ctl --json pipes straight into jq; the exit status says whether it worked.
"$sssonector" ctl --socket "$sock" --json log.level level=warn | jq -e '.data.level == "warn"' >/dev/null
"$sssonector" ctl --socket "$sock" --json limits | jq -e '.data.enabled == false' >/dev/null
# A refused command exits non-zero: rate limiting is off in this daemon.
if "$sssonector" ctl --socket "$sock" --json limits.set rate=1000 >/dev/null; then
  echo "limits.set should be refused while throttle.enabled is false" >&2
  exit 1
fi

echo "all checks passed"
