#!/usr/bin/env bash
# Builds and runs the local Camunda 7.24 engine (deploy/camunda-engine) on the stack's PostgreSQL.
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

APP_DIR="$DEPLOY_DIR/camunda-engine"
JAR="$APP_DIR/target/camunda-engine.jar"
CAMUNDA_LOG="${CAMUNDA_LOG:-$STACK_DIR/camunda.log}"
CAMUNDA_PID="$STACK_DIR/camunda.pid"
CAMUNDA_START_TIMEOUT="${CAMUNDA_START_TIMEOUT:-180}"
CAMUNDA_JAVA_OPTS="${CAMUNDA_JAVA_OPTS:--Xms256m -Xmx1g}"
# Read by the app's application.yaml; defaults match deploy/scripts/postgres.sh.
export CAMUNDA_PORT="${CAMUNDA_PORT:-8080}"
export CAMUNDA_DB_URL="${CAMUNDA_DB_URL:-jdbc:postgresql://127.0.0.1:${PGPORT:-5432}/camunda}"
export CAMUNDA_DB_USER="${CAMUNDA_DB_USER:-${PG_USER:-taskpool}}"
export CAMUNDA_DB_PASSWORD="${CAMUNDA_DB_PASSWORD:-${PG_PASSWORD:-taskpool}}"
export CAMUNDA_ADMIN_USER="${CAMUNDA_ADMIN_USER:-demo}"
export CAMUNDA_ADMIN_PASSWORD="${CAMUNDA_ADMIN_PASSWORD:-demo}"
BASE_URL="http://127.0.0.1:$CAMUNDA_PORT"

usage() {
  cat <<USAGE
usage: $(basename "$0") build|start|stop|status
  build   mvn package (offline first, online if something is missing) -> $JAR
  start   build if the jar is missing, start in the background, wait for /engine-rest/engine (no-op if running)
  stop    SIGTERM, then SIGKILL after 60 s
  status  exit 0 if the process runs and the REST API answers
env: STACK_DIR=$STACK_DIR CAMUNDA_PORT=$CAMUNDA_PORT CAMUNDA_DB_URL=$CAMUNDA_DB_URL
     CAMUNDA_DB_USER=$CAMUNDA_DB_USER CAMUNDA_DB_PASSWORD=(set) CAMUNDA_ADMIN_USER=$CAMUNDA_ADMIN_USER
     CAMUNDA_ADMIN_PASSWORD=(set) CAMUNDA_AUTHORIZATION_ENABLED=false TASKPOOL_REST_AUTH_ENABLED=true
     CAMUNDA_JAVA_OPTS="$CAMUNDA_JAVA_OPTS" CAMUNDA_START_TIMEOUT=$CAMUNDA_START_TIMEOUT CAMUNDA_LOG=$CAMUNDA_LOG
USAGE
}

build() {
  command -v mvn >/dev/null || apt_install maven
  command -v java >/dev/null || apt_install openjdk-17-jdk-headless
  say "building $APP_DIR (mvn package)"
  local log="$STACK_DIR/camunda-build.log"
  mkdir -p "$STACK_DIR"
  if mvn -B -q -o -f "$APP_DIR/pom.xml" package -DskipTests >"$log" 2>&1; then
    :
  elif mvn -B -q -f "$APP_DIR/pom.xml" package -DskipTests >"$log" 2>&1; then
    :
  else
    tail -n 30 "$log" >&2
    die "maven build failed; read $log"
  fi
  say "built $JAR"
}

# rest_get PATH: GET $BASE_URL/engine-rest/PATH with basic auth, fails unless 2xx.
# The credentials go to curl via stdin, not argv.
rest_get() {
  printf 'user = "%s:%s"\n' "$CAMUNDA_ADMIN_USER" "$CAMUNDA_ADMIN_PASSWORD" |
    curl -fsS -o /dev/null --max-time 5 -K - "$BASE_URL/engine-rest/$1"
}
engine_answers() { rest_get engine; }

running_and_answering() { pid_alive "$CAMUNDA_PID" && engine_answers; }

start() {
  if pid_alive "$CAMUNDA_PID"; then
    say "already running (pid $(cat "$CAMUNDA_PID"))"
  else
    [ -f "$JAR" ] || build
    if port_open 127.0.0.1 "$CAMUNDA_PORT"; then
      die "port 127.0.0.1:$CAMUNDA_PORT is already in use by another program; stop it or set CAMUNDA_PORT"
    fi
    # Fail fast with a clear message when the database is down (URL like jdbc:postgresql://HOST:PORT/DB).
    if [[ "$CAMUNDA_DB_URL" =~ ^jdbc:postgresql://([^:/]+):([0-9]+)/ ]] &&
      ! port_open "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"; then
      die "PostgreSQL at ${BASH_REMATCH[1]}:${BASH_REMATCH[2]} does not accept connections; run deploy/scripts/postgres.sh start"
    fi
    mkdir -p "$STACK_DIR"
    say "starting Camunda on port $CAMUNDA_PORT (db $CAMUNDA_DB_URL, log $CAMUNDA_LOG)"
    # shellcheck disable=SC2086  # CAMUNDA_JAVA_OPTS is a list of options
    nohup setsid java $CAMUNDA_JAVA_OPTS -jar "$JAR" >"$CAMUNDA_LOG" 2>&1 </dev/null &
    echo $! >"$CAMUNDA_PID"
  fi
  local deadline=$((SECONDS + CAMUNDA_START_TIMEOUT))
  until engine_answers >/dev/null 2>&1; do
    if ! pid_alive "$CAMUNDA_PID"; then
      grep -E 'ERROR|Caused by|APPLICATION FAILED' "$CAMUNDA_LOG" | tail -n 8 >&2 || true
      rm -f "$CAMUNDA_PID"
      die "Camunda exited during start; read $CAMUNDA_LOG (is PostgreSQL up? deploy/scripts/postgres.sh start)"
    fi
    [ "$SECONDS" -lt "$deadline" ] ||
      die "Camunda did not answer $BASE_URL/engine-rest/engine within ${CAMUNDA_START_TIMEOUT}s; read $CAMUNDA_LOG"
    sleep 1
  done
  # /engine is open even with auth on; /version is not, so this proves the admin login works.
  rest_get version 2>/dev/null ||
    die "REST answers but GET /engine-rest/version with user $CAMUNDA_ADMIN_USER failed (wrong CAMUNDA_ADMIN_PASSWORD? failed logins also lock a user for a while); read $CAMUNDA_LOG"
  say "ready (pid $(cat "$CAMUNDA_PID")):"
  say "  REST     $BASE_URL/engine-rest  (basic auth, user $CAMUNDA_ADMIN_USER)"
  say "  webapps  $BASE_URL/camunda/app/  (Cockpit, Tasklist, Admin)"
}

stop() { stop_pid "$CAMUNDA_PID" Camunda 60; }

status() {
  if running_and_answering; then
    say "running (pid $(cat "$CAMUNDA_PID")), REST $BASE_URL/engine-rest answers"
  elif pid_alive "$CAMUNDA_PID"; then
    say "process $(cat "$CAMUNDA_PID") runs but $BASE_URL/engine-rest/engine does not answer (yet); log $CAMUNDA_LOG"
    return 1
  else
    say "not running"; return 3
  fi
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
