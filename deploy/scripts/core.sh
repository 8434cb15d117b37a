#!/usr/bin/env bash
# Runs the local stack's taskpool-core on 127.0.0.1:7301: the task view (in FerretDB,
# deploy/scripts/ferretdb.sh) of the three bus nodes (deploy/scripts/bus.sh), and the task API.
# Users: a JWT signed with the secret in $STACK_DIR/jwt-secret, or (local only) the headers
# X-User / X-Groups. It reads the bus as client core (deploy/scripts/bus.sh writes its secret).
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CORE_BIN="${CORE_BIN:-$REPO_ROOT/target/release/taskpool-core}"
CORE_DIR="${CORE_DIR:-$STACK_DIR/core}"
CORE_PID="$CORE_DIR/core.pid"
CORE_LOG="$CORE_DIR/core.log"
export TASKPOOL_LISTEN="${TASKPOOL_LISTEN:-127.0.0.1:7301}"
export TASKPOOL_MONGO_URL="${TASKPOOL_MONGO_URL:-mongodb://127.0.0.1:${FERRETDB_PORT:-27017}}"
export TASKPOOL_DATABASE="${TASKPOOL_DATABASE:-taskpool}"
BUS_BASE_PORT="${BUS_BASE_PORT:-7100}"
export TASKPOOL_BUS="${TASKPOOL_BUS:-http://127.0.0.1:$((BUS_BASE_PORT + 1)),http://127.0.0.1:$((BUS_BASE_PORT + 2)),http://127.0.0.1:$((BUS_BASE_PORT + 3))}"
export TASKPOOL_TRUST_IDENTITY_HEADERS="${TASKPOOL_TRUST_IDENTITY_HEADERS:-true}"

usage() {
  cat <<USAGE
usage: $(basename "$0") build|start|stop|status
  build   cargo build --release -p taskpool-core
  start   build if missing, start in the background, wait until ready (no-op if running)
  stop    SIGTERM (graceful), SIGKILL after 20 s
  status  exit 0 if it answers /health/ready
env: TASKPOOL_LISTEN=$TASKPOOL_LISTEN TASKPOOL_MONGO_URL=$TASKPOOL_MONGO_URL TASKPOOL_DATABASE=$TASKPOOL_DATABASE
     TASKPOOL_BUS=$TASKPOOL_BUS TASKPOOL_TRUST_IDENTITY_HEADERS=$TASKPOOL_TRUST_IDENTITY_HEADERS CORE_BIN=$CORE_BIN
     (the bus secret of client core, $BUS_SECRETS_DIR/core, and the JWT secret, $STACK_DIR/jwt-secret,
     come from the stack's files, never the command line)
USAGE
}

ready() { curl -fsS "http://$TASKPOOL_LISTEN/health/ready" >/dev/null; }

start() {
  [ -x "$CORE_BIN" ] || (say "cargo build --release -p taskpool-core" &&
    cd "$REPO_ROOT" && cargo build --release --locked -q -p taskpool-core) || die "build failed"
  mkdir -p "$CORE_DIR"
  if pid_alive "$CORE_PID"; then
    say "already running (pid $(cat "$CORE_PID"))"
  else
    local token_file secret_file="$STACK_DIR/jwt-secret"
    token_file="$(bus_secret core)"
    if [ ! -s "$secret_file" ]; then
      (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret_file")
    fi
    say "starting taskpool-core on $TASKPOOL_LISTEN (log $CORE_LOG)"
    TASKPOOL_BUS_TOKEN="$(cat "$token_file")" TASKPOOL_JWT_SECRET="$(cat "$secret_file")" \
      nohup "$CORE_BIN" serve >>"$CORE_LOG" 2>&1 </dev/null &
    echo $! >"$CORE_PID"
  fi
  wait_until 60 "taskpool-core ready" ready || die "taskpool-core is not ready; read $CORE_LOG"
  say "ready: http://$TASKPOOL_LISTEN/api/v1/tasks (OpenAPI /api/v1/openapi.json, /metrics)"
}

stop() { stop_pid "$CORE_PID" taskpool-core 20; }

status() {
  if ready; then say "running, ready on $TASKPOOL_LISTEN"; else say "not ready"; return 3; fi
}

case "${1:-}" in
  build) cd "$REPO_ROOT" && cargo build --release --locked -p taskpool-core ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
