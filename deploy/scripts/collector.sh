#!/usr/bin/env bash
# Runs the local stack's camunda-collector in hook mode on 127.0.0.1:7201, next to the local
# engine (deploy/scripts/camunda.sh) and the three bus nodes (deploy/scripts/bus.sh).
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

COLLECTOR_BIN="${COLLECTOR_BIN:-$REPO_ROOT/target/release/camunda-collector}"
COLLECTOR_DIR="${COLLECTOR_DIR:-$STACK_DIR/collector}"
COLLECTOR_PID="$COLLECTOR_DIR/collector.pid"
COLLECTOR_LOG="$COLLECTOR_DIR/collector.log"
export COLLECTOR_LISTEN="${COLLECTOR_LISTEN:-127.0.0.1:7201}"
export COLLECTOR_APPLICATION="${COLLECTOR_APPLICATION:-local}"
export COLLECTOR_ENGINE_URL="${COLLECTOR_ENGINE_URL:-http://127.0.0.1:${CAMUNDA_PORT:-8080}/engine-rest}"
export COLLECTOR_ENGINE_USER="${COLLECTOR_ENGINE_USER:-${CAMUNDA_ADMIN_USER:-demo}}"
export COLLECTOR_DATABASE_URL="${COLLECTOR_DATABASE_URL:-postgres://${PG_USER:-taskpool}:${PG_PASSWORD:-taskpool}@127.0.0.1:${PGPORT:-5432}/collector}"
BUS_BASE_PORT="${BUS_BASE_PORT:-7100}"
export COLLECTOR_BUS="${COLLECTOR_BUS:-http://127.0.0.1:$((BUS_BASE_PORT + 1)),http://127.0.0.1:$((BUS_BASE_PORT + 2)),http://127.0.0.1:$((BUS_BASE_PORT + 3))}"
export COLLECTOR_MODE="${COLLECTOR_MODE:-hook}"

usage() {
  cat <<USAGE
usage: $(basename "$0") build|start|stop|status
  build   cargo build --release -p camunda-collector
  start   build if missing, start in the background, wait until ready (no-op if running)
  stop    SIGTERM (graceful), SIGKILL after 20 s
  status  exit 0 if it answers /health/ready
env: COLLECTOR_LISTEN=$COLLECTOR_LISTEN COLLECTOR_APPLICATION=$COLLECTOR_APPLICATION COLLECTOR_MODE=$COLLECTOR_MODE
     COLLECTOR_ENGINE_URL=$COLLECTOR_ENGINE_URL COLLECTOR_BUS=$COLLECTOR_BUS COLLECTOR_BIN=$COLLECTOR_BIN
     (engine password, bus token and hook secret come from the stack's files, never the command line)
USAGE
}

ready() { curl -fsS "http://$COLLECTOR_LISTEN/health/ready" >/dev/null; }

start() {
  [ -x "$COLLECTOR_BIN" ] || (say "cargo build --release -p camunda-collector" &&
    cd "$REPO_ROOT" && cargo build --release --locked -q -p camunda-collector) || die "build failed"
  mkdir -p "$COLLECTOR_DIR"
  if pid_alive "$COLLECTOR_PID"; then
    say "already running (pid $(cat "$COLLECTOR_PID"))"
  else
    local token_file="$STACK_DIR/bus/token" secret_file="$STACK_DIR/hook-secret"
    [ -s "$token_file" ] || die "no bus token in $token_file; run deploy/scripts/bus.sh start first"
    [ -s "$secret_file" ] || die "no hook secret in $secret_file; run deploy/scripts/camunda.sh start first"
    say "starting the collector on $COLLECTOR_LISTEN ($COLLECTOR_MODE mode, log $COLLECTOR_LOG)"
    COLLECTOR_BUS_TOKEN="$(cat "$token_file")" COLLECTOR_HOOK_SECRET="$(cat "$secret_file")" \
      COLLECTOR_ENGINE_PASSWORD="${CAMUNDA_ADMIN_PASSWORD:-demo}" \
      nohup "$COLLECTOR_BIN" >>"$COLLECTOR_LOG" 2>&1 </dev/null &
    echo $! >"$COLLECTOR_PID"
  fi
  wait_until 60 "collector ready" ready || die "collector is not ready; read $COLLECTOR_LOG"
  say "ready: http://$COLLECTOR_LISTEN (metrics /metrics, status /v1/status)"
}

stop() { stop_pid "$COLLECTOR_PID" collector 20; }

status() {
  if ready; then say "running, ready on $COLLECTOR_LISTEN"; else say "not ready"; return 3; fi
}

case "${1:-}" in
  build) cd "$REPO_ROOT" && cargo build --release --locked -p camunda-collector ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
