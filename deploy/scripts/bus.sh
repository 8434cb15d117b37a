#!/usr/bin/env bash
# Runs the three raft-bus nodes of the local stack on 127.0.0.1:7101-7103, one cluster.
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BUS_HOST="${BUS_HOST:-127.0.0.1}"
BUS_BASE_PORT="${BUS_BASE_PORT:-7100}"
BUS_DIR="${BUS_DIR:-$STACK_DIR/bus}"
BUS_BIN="${BUS_BIN:-$REPO_ROOT/target/release/raft-bus}"
BUS_START_TIMEOUT="${BUS_START_TIMEOUT:-60}"

usage() {
  cat <<USAGE
usage: $(basename "$0") build|start|stop|status|token
  build   cargo build --release -p raft-bus
  start   build if missing, start nodes 1-3 on $BUS_HOST:$((BUS_BASE_PORT + 1))-$((BUS_BASE_PORT + 3)), wait until ready (no-op if running)
  stop    SIGTERM each node (graceful), SIGKILL after 20 s
  status  exit 0 if all three nodes are ready
  token   print the path of the file holding the cluster's bearer token
env: STACK_DIR=$STACK_DIR BUS_HOST=$BUS_HOST BUS_BASE_PORT=$BUS_BASE_PORT BUS_DIR=$BUS_DIR BUS_BIN=$BUS_BIN
     RAFT_BUS_TOKEN (default: a random token kept in \$BUS_DIR/token)
USAGE
}

port() { echo $((BUS_BASE_PORT + $1)); }
peers() { echo "1=$BUS_HOST:$(port 1),2=$BUS_HOST:$(port 2),3=$BUS_HOST:$(port 3)"; }
ready() { curl -fsS "http://$BUS_HOST:$(port "$1")/health/ready" >/dev/null; }

build() {
  say "cargo build --release -p raft-bus"
  (cd "$REPO_ROOT" && cargo build --release --locked -q -p raft-bus) || die "build failed"
}

token_file() {
  mkdir -p "$BUS_DIR"
  local f="$BUS_DIR/token"
  if [ -n "${RAFT_BUS_TOKEN:-}" ]; then
    (umask 077 && printf '%s' "$RAFT_BUS_TOKEN" >"$f")
  elif [ ! -s "$f" ]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
  fi
  echo "$f"
}

start() {
  [ -x "$BUS_BIN" ] || build
  local tf; tf="$(token_file)"
  for n in 1 2 3; do
    local pidf="$BUS_DIR/node-$n.pid"
    if pid_alive "$pidf"; then say "node $n already running"; continue; fi
    say "starting node $n on $BUS_HOST:$(port "$n")"
    # The token goes through the environment, never the command line.
    RAFT_BUS_TOKEN="$(cat "$tf")" nohup "$BUS_BIN" --node-id "$n" --listen "$BUS_HOST:$(port "$n")" \
      --data-dir "$BUS_DIR/node-$n" --peers "$(peers)" \
      >>"$BUS_DIR/node-$n.log" 2>&1 &
    echo $! >"$pidf"
  done
  for n in 1 2 3; do
    wait_until "$BUS_START_TIMEOUT" "node $n ready" ready "$n" || die "node $n is not ready; read $BUS_DIR/node-$n.log"
  done
  say "bus ready: http://$BUS_HOST:$(port 1) http://$BUS_HOST:$(port 2) http://$BUS_HOST:$(port 3) (token in $tf)"
}

stop() {
  for n in 1 2 3; do stop_pid "$BUS_DIR/node-$n.pid" "bus node $n" 20; done
}

status() {
  local ok=0
  for n in 1 2 3; do
    if ready "$n"; then say "node $n ready"; else say "node $n not ready"; ok=3; fi
  done
  return $ok
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  token) token_file ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
