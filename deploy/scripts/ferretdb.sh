#!/usr/bin/env bash
# Builds and runs FerretDB v1.24.2, the MongoDB wire-compatible store of the local stack.
#
# Backend: PostgreSQL, the `ferretdb` database that deploy/scripts/postgres.sh creates (started
# here first if it is not running). It is FerretDB's production backend and takes documents
# about twice as fast as SQLite here (docs/BENCHMARKS.md, rebuild). FERRETDB_HANDLER=sqlite
# keeps the store in $STACK_DIR/ferretdb/ instead and needs nothing else running.
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SRC_DIR="$DEPLOY_DIR/ferretdb"
FERRETDB_BIN_DIR="${FERRETDB_BIN_DIR:-$STACK_DIR/bin}"
FERRETDB_BIN="$FERRETDB_BIN_DIR/ferretdb"
FERRETDB_HOST="${FERRETDB_HOST:-127.0.0.1}"
FERRETDB_PORT="${FERRETDB_PORT:-27017}"
FERRETDB_HANDLER="${FERRETDB_HANDLER:-postgresql}"
FERRETDB_DATA_DIR="${FERRETDB_DATA_DIR:-$STACK_DIR/ferretdb}"
FERRETDB_LOG="${FERRETDB_LOG:-$STACK_DIR/ferretdb.log}"
FERRETDB_PID="$STACK_DIR/ferretdb.pid"
FERRETDB_START_TIMEOUT="${FERRETDB_START_TIMEOUT:-30}"

usage() {
  cat <<USAGE
usage: $(basename "$0") install|start|stop|status
  install  go install deploy/ferretdb (FerretDB v1.24.2, pinned in its go.mod) into \$FERRETDB_BIN_DIR
  start    install if missing, start on \$FERRETDB_HOST:\$FERRETDB_PORT, wait for a MongoDB ping (no-op if running)
  stop     SIGTERM, then SIGKILL after 20 s
  status   exit 0 if the process runs and answers a ping
env: STACK_DIR=$STACK_DIR FERRETDB_HOST=$FERRETDB_HOST FERRETDB_PORT=$FERRETDB_PORT
     FERRETDB_HANDLER=$FERRETDB_HANDLER (sqlite|postgresql) FERRETDB_DATA_DIR=$FERRETDB_DATA_DIR
     FERRETDB_BIN_DIR=$FERRETDB_BIN_DIR FERRETDB_LOG=$FERRETDB_LOG FERRETDB_START_TIMEOUT=$FERRETDB_START_TIMEOUT
     for postgresql: PGPORT, PG_USER, PG_PASSWORD as in postgres.sh
USAGE
}

install() {
  if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then PATH="$PATH:/usr/local/go/bin"; fi
  command -v go >/dev/null || die "go is not installed (Go 1.24 or newer is needed to build FerretDB)"
  say "building FerretDB v1.24.2 from $SRC_DIR into $FERRETDB_BIN_DIR (go install)"
  mkdir -p "$FERRETDB_BIN_DIR" "$STACK_DIR"
  local log="$STACK_DIR/ferretdb-build.log"
  (cd "$SRC_DIR" && GOBIN="$FERRETDB_BIN_DIR" go install -buildvcs=false .) >"$log" 2>&1 ||
    { tail -n 20 "$log" >&2; die "go install failed; read $log"; }
  say "installed $FERRETDB_BIN"
}

ping_ok() { python3 "$DEPLOY_DIR/scripts/mongo_ping.py" "$FERRETDB_HOST" "$FERRETDB_PORT"; }

start() {
  if pid_alive "$FERRETDB_PID"; then
    say "already running (pid $(cat "$FERRETDB_PID"))"
  else
    [ -x "$FERRETDB_BIN" ] || install
    command -v python3 >/dev/null || apt_install python3
    if port_open "$FERRETDB_HOST" "$FERRETDB_PORT"; then
      die "port $FERRETDB_HOST:$FERRETDB_PORT is already in use by another program; stop it or set FERRETDB_PORT"
    fi
    local backend=()
    case "$FERRETDB_HANDLER" in
      sqlite)
        mkdir -p "$FERRETDB_DATA_DIR"
        backend=(-handler sqlite -sqlite-url "file:$FERRETDB_DATA_DIR/") ;;
      postgresql)
        "$DEPLOY_DIR/scripts/postgres.sh" start
        # The URL (with its password) goes through the environment, not the command line.
        export FERRETDB_POSTGRESQL_URL="postgres://${PG_USER:-taskpool}:${PG_PASSWORD:-taskpool}@127.0.0.1:${PGPORT:-5432}/ferretdb"
        backend=(-handler postgresql) ;;
      *) die "FERRETDB_HANDLER must be sqlite or postgresql, not $FERRETDB_HANDLER" ;;
    esac
    say "starting FerretDB on $FERRETDB_HOST:$FERRETDB_PORT ($FERRETDB_HANDLER backend, log $FERRETDB_LOG)"
    nohup setsid "$FERRETDB_BIN" -listen-addr "$FERRETDB_HOST:$FERRETDB_PORT" "${backend[@]}" \
      >"$FERRETDB_LOG" 2>&1 </dev/null &
    echo $! >"$FERRETDB_PID"
  fi
  local deadline=$((SECONDS + FERRETDB_START_TIMEOUT))
  until ping_ok >/dev/null 2>&1; do
    if ! pid_alive "$FERRETDB_PID"; then
      tail -n 20 "$FERRETDB_LOG" >&2 || true
      rm -f "$FERRETDB_PID"
      die "FerretDB exited during start; read $FERRETDB_LOG"
    fi
    [ "$SECONDS" -lt "$deadline" ] ||
      die "FerretDB did not answer a ping within ${FERRETDB_START_TIMEOUT}s; read $FERRETDB_LOG"
    sleep 0.5
  done
  say "ready (pid $(cat "$FERRETDB_PID")): mongodb://$FERRETDB_HOST:$FERRETDB_PORT/"
}

stop() { stop_pid "$FERRETDB_PID" FerretDB 20; }

status() {
  if pid_alive "$FERRETDB_PID" && ping_ok >/dev/null 2>&1; then
    say "running (pid $(cat "$FERRETDB_PID")), mongodb://$FERRETDB_HOST:$FERRETDB_PORT/ answers ping"
  elif pid_alive "$FERRETDB_PID"; then
    say "process $(cat "$FERRETDB_PID") runs but does not answer a ping; log $FERRETDB_LOG"; return 1
  else
    say "not running"; return 3
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
