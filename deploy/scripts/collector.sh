#!/usr/bin/env bash
# Runs a camunda-collector of the local stack next to its engine (deploy/scripts/camunda.sh) and
# the three bus nodes (deploy/scripts/bus.sh). One per process application: `local` (hook mode
# on 127.0.0.1:7201, state database collector) and `billing` (poll mode on 127.0.0.1:7202, state
# database collector_billing). Each appends with its own bus secret, collector-<application>.
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

COLLECTOR_BIN="${COLLECTOR_BIN:-$REPO_ROOT/target/release/camunda-collector}"
INSTANCE="${2:-local}"
PG_URL="postgres://${PG_USER:-taskpool}:${PG_PASSWORD:-taskpool}@127.0.0.1:${PGPORT:-5432}"
BUS_BASE_PORT="${BUS_BASE_PORT:-7100}"
export COLLECTOR_BUS="${COLLECTOR_BUS:-http://127.0.0.1:$((BUS_BASE_PORT + 1)),http://127.0.0.1:$((BUS_BASE_PORT + 2)),http://127.0.0.1:$((BUS_BASE_PORT + 3))}"
export COLLECTOR_ENGINE_USER="${COLLECTOR_ENGINE_USER:-${CAMUNDA_ADMIN_USER:-demo}}"
# Each instance: its application, address, engine, state database and mode; the collector reads
# the COLLECTOR_* variables, set here from the instance's own whatever the caller exported.
case "$INSTANCE" in
  local)
    COLLECTOR_DIR="${COLLECTOR_DIR:-$STACK_DIR/collector}"
    export COLLECTOR_LISTEN="${COLLECTOR_LISTEN:-127.0.0.1:7201}"
    export COLLECTOR_APPLICATION="${COLLECTOR_APPLICATION:-local}"
    export COLLECTOR_ENGINE_URL="${COLLECTOR_ENGINE_URL:-http://127.0.0.1:${CAMUNDA_PORT:-8080}/engine-rest}"
    export COLLECTOR_DATABASE_URL="${COLLECTOR_DATABASE_URL:-$PG_URL/collector}"
    export COLLECTOR_MODE="${COLLECTOR_MODE:-hook}"
    ;;
  billing)
    SCRIPT_NAME=collector-billing
    COLLECTOR_DIR="${COLLECTOR_BILLING_DIR:-$STACK_DIR/collector-billing}"
    export COLLECTOR_LISTEN="${COLLECTOR_BILLING_LISTEN:-127.0.0.1:7202}"
    export COLLECTOR_APPLICATION=billing
    export COLLECTOR_ENGINE_URL="${COLLECTOR_BILLING_ENGINE_URL:-http://127.0.0.1:${CAMUNDA_BILLING_PORT:-8081}/engine-rest}"
    export COLLECTOR_DATABASE_URL="${COLLECTOR_BILLING_DATABASE_URL:-$PG_URL/collector_billing}"
    # The billing engine has no hook plugin URL: poll it every second.
    export COLLECTOR_MODE="${COLLECTOR_BILLING_MODE:-poll}"
    export COLLECTOR_POLL_INTERVAL="${COLLECTOR_BILLING_POLL_INTERVAL:-1s}"
    ;;
  *) die "unknown instance '$INSTANCE': local or billing" ;;
esac
COLLECTOR_PID="$COLLECTOR_DIR/collector.pid"
COLLECTOR_LOG="$COLLECTOR_DIR/collector.log"
BUS_CLIENT="collector-$INSTANCE"

usage() {
  cat <<USAGE
usage: $(basename "$0") build|start|stop|status [local|billing]
  build   cargo build --release -p camunda-collector
  start   build if missing, start the instance in the background, wait until ready (no-op if running)
  stop    SIGTERM (graceful), SIGKILL after 20 s
  status  exit 0 if it answers /health/ready
instances (default local):
  local    COLLECTOR_LISTEN=${COLLECTOR_LISTEN:-127.0.0.1:7201} COLLECTOR_APPLICATION=${COLLECTOR_APPLICATION:-local} COLLECTOR_MODE=${COLLECTOR_MODE:-hook}
           COLLECTOR_ENGINE_URL=${COLLECTOR_ENGINE_URL:-http://127.0.0.1:${CAMUNDA_PORT:-8080}/engine-rest}
           COLLECTOR_DATABASE_URL=(postgres .../collector) COLLECTOR_DIR=${COLLECTOR_DIR:-$STACK_DIR/collector}
  billing  COLLECTOR_BILLING_LISTEN=${COLLECTOR_BILLING_LISTEN:-127.0.0.1:7202} (application billing)
           COLLECTOR_BILLING_MODE=${COLLECTOR_BILLING_MODE:-poll} COLLECTOR_BILLING_POLL_INTERVAL=${COLLECTOR_BILLING_POLL_INTERVAL:-1s}
           COLLECTOR_BILLING_ENGINE_URL=${COLLECTOR_BILLING_ENGINE_URL:-http://127.0.0.1:${CAMUNDA_BILLING_PORT:-8081}/engine-rest}
           COLLECTOR_BILLING_DATABASE_URL=(postgres .../collector_billing) COLLECTOR_BILLING_DIR=${COLLECTOR_BILLING_DIR:-$STACK_DIR/collector-billing}
env: STACK_DIR=$STACK_DIR COLLECTOR_BUS=$COLLECTOR_BUS COLLECTOR_ENGINE_USER=$COLLECTOR_ENGINE_USER
     COLLECTOR_BIN=$COLLECTOR_BIN PGPORT PG_USER PG_PASSWORD BUS_BASE_PORT BUS_DIR CAMUNDA_PORT CAMUNDA_BILLING_PORT
     (the engine password, the bus secret of client collector-<instance> in $BUS_SECRETS_DIR and the
     hook secret come from the stack's files or CAMUNDA_ADMIN_PASSWORD, never the command line)
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
    local bus_secret_file hook_secret=""
    bus_secret_file="$(bus_secret "$BUS_CLIENT")"
    if [ "$COLLECTOR_MODE" = hook ]; then
      local secret_file="$STACK_DIR/hook-secret"
      [ -s "$secret_file" ] || die "no hook secret in $secret_file; run deploy/scripts/camunda.sh start first"
      hook_secret="$(cat "$secret_file")"
    fi
    say "starting the $COLLECTOR_APPLICATION collector on $COLLECTOR_LISTEN ($COLLECTOR_MODE mode, engine $COLLECTOR_ENGINE_URL, log $COLLECTOR_LOG)"
    COLLECTOR_BUS_TOKEN="$(cat "$bus_secret_file")" COLLECTOR_HOOK_SECRET="$hook_secret" \
      COLLECTOR_ENGINE_PASSWORD="${CAMUNDA_ADMIN_PASSWORD:-demo}" \
      nohup "$COLLECTOR_BIN" >>"$COLLECTOR_LOG" 2>&1 </dev/null &
    echo $! >"$COLLECTOR_PID"
  fi
  wait_until 60 "collector ready" ready || die "collector ($INSTANCE) is not ready; read $COLLECTOR_LOG"
  say "ready: http://$COLLECTOR_LISTEN (application $COLLECTOR_APPLICATION; metrics /metrics, status /v1/status)"
}

stop() { stop_pid "$COLLECTOR_PID" "collector ($INSTANCE)" 20; }

status() {
  if ready; then say "running, ready on $COLLECTOR_LISTEN (application $COLLECTOR_APPLICATION)"; else say "not ready"; return 3; fi
}

case "${1:-}" in
  build) cd "$REPO_ROOT" && cargo build --release --locked -p camunda-collector ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
