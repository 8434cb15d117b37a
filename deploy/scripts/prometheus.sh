#!/usr/bin/env bash
# Runs Prometheus (Debian's package) for the local stack on 127.0.0.1:9090, scraping the jobs of
# deploy/prometheus.yml with the compose host names replaced by the local addresses.
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
PROMETHEUS_DIR="${PROMETHEUS_DIR:-$STACK_DIR/prometheus}"
PROMETHEUS_PID="$PROMETHEUS_DIR/prometheus.pid"
PROMETHEUS_LOG="$PROMETHEUS_DIR/prometheus.log"
BUS_BASE_PORT="${BUS_BASE_PORT:-7100}"
COLLECTOR_LISTEN="${COLLECTOR_LISTEN:-127.0.0.1:7201}"
COLLECTOR_BILLING_LISTEN="${COLLECTOR_BILLING_LISTEN:-127.0.0.1:7202}"
TASKPOOL_LISTEN="${TASKPOOL_LISTEN:-127.0.0.1:7301}"

usage() {
  cat <<USAGE
usage: $(basename "$0") install|start|stop|status|config
  install  apt-get install prometheus (if missing)
  start    write the config, start in the background, wait until ready (no-op if running)
  stop     SIGTERM, SIGKILL after 20 s
  status   exit 0 if it answers /-/ready
  config   print the local config
env: STACK_DIR=$STACK_DIR PROMETHEUS_PORT=$PROMETHEUS_PORT BUS_BASE_PORT=$BUS_BASE_PORT
     COLLECTOR_LISTEN=$COLLECTOR_LISTEN COLLECTOR_BILLING_LISTEN=$COLLECTOR_BILLING_LISTEN TASKPOOL_LISTEN=$TASKPOOL_LISTEN
USAGE
}

install() { command -v prometheus >/dev/null || apt_install prometheus; }

# The compose file's targets, rewritten to where the local stack listens.
config() {
  sed -e "s/\"bus1:7101\"/\"127.0.0.1:$((BUS_BASE_PORT + 1))\"/" \
    -e "s/\"bus2:7102\"/\"127.0.0.1:$((BUS_BASE_PORT + 2))\"/" \
    -e "s/\"bus3:7103\"/\"127.0.0.1:$((BUS_BASE_PORT + 3))\"/" \
    -e "s/\"collector:7201\"/\"$COLLECTOR_LISTEN\"/" \
    -e "s/\"collector-billing:7202\"/\"$COLLECTOR_BILLING_LISTEN\"/" \
    -e "s/\"taskpool-core:7301\"/\"$TASKPOOL_LISTEN\"/" \
    -e "s/\"localhost:9090\"/\"127.0.0.1:$PROMETHEUS_PORT\"/" \
    "$DEPLOY_DIR/prometheus.yml"
}

ready() { curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" >/dev/null; }

start() {
  install
  mkdir -p "$PROMETHEUS_DIR/data"
  if pid_alive "$PROMETHEUS_PID"; then
    say "already running (pid $(cat "$PROMETHEUS_PID"))"
  else
    port_open 127.0.0.1 "$PROMETHEUS_PORT" &&
      die "port 127.0.0.1:$PROMETHEUS_PORT is in use (Debian's prometheus service? stop it or set PROMETHEUS_PORT)"
    config >"$PROMETHEUS_DIR/prometheus.yml"
    say "starting Prometheus on 127.0.0.1:$PROMETHEUS_PORT (log $PROMETHEUS_LOG)"
    nohup prometheus --config.file="$PROMETHEUS_DIR/prometheus.yml" \
      --storage.tsdb.path="$PROMETHEUS_DIR/data" --storage.tsdb.retention.time=2d \
      --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >>"$PROMETHEUS_LOG" 2>&1 </dev/null &
    echo $! >"$PROMETHEUS_PID"
  fi
  wait_until 60 "Prometheus ready" ready || die "Prometheus is not ready; read $PROMETHEUS_LOG"
  say "ready: http://127.0.0.1:$PROMETHEUS_PORT/targets"
}

stop() { stop_pid "$PROMETHEUS_PID" Prometheus 20; }

status() {
  if ready; then say "running on 127.0.0.1:$PROMETHEUS_PORT"; else say "not ready"; return 3; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  config) config ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
