#!/usr/bin/env bash
# Builds and runs a Camunda 7.24 engine of the local stack (deploy/camunda-engine) on the stack's
# PostgreSQL. One app jar, one process per process application: `local` (port 8080, database
# camunda, task hooks to the collector on 7201) and `billing` (port 8081, database
# camunda_billing, no hooks: its collector polls); and `audit` (port 8082, database
# camunda_audit), a test engine whose history level is below what poll mode needs.
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

APP_DIR="$DEPLOY_DIR/camunda-engine"
PLUGIN_DIR="$REPO_ROOT/camunda-collector/engine-plugin"
JAR="$APP_DIR/target/camunda-engine.jar"
CAMUNDA_START_TIMEOUT="${CAMUNDA_START_TIMEOUT:-180}"
CAMUNDA_JAVA_OPTS="${CAMUNDA_JAVA_OPTS:--Xms256m -Xmx1g}"
INSTANCE="${2:-local}"
PGPORT="${PGPORT:-5432}"
# Each instance: its port, database, log and pid file, and where its hooks go. The app's
# application.yaml reads CAMUNDA_PORT, CAMUNDA_DB_* and TASKPOOL_HOOK_*, so each instance gets
# them set from its own variables.
case "$INSTANCE" in
  local)
    PORT="${CAMUNDA_PORT:-8080}"
    DB_URL="${CAMUNDA_DB_URL:-jdbc:postgresql://127.0.0.1:$PGPORT/camunda}"
    CAMUNDA_LOG="${CAMUNDA_LOG:-$STACK_DIR/camunda.log}"
    CAMUNDA_PID="$STACK_DIR/camunda.pid"
    # Task hooks go to the local collector by default (TASKPOOL_HOOK_URL= turns them off).
    HOOK_URL="${TASKPOOL_HOOK_URL-http://127.0.0.1:7201/v1/hooks}"
    AUTHORIZATION="${CAMUNDA_AUTHORIZATION_ENABLED:-false}"
    HISTORY_LEVEL=full
    ;;
  billing)
    SCRIPT_NAME=camunda-billing
    PORT="${CAMUNDA_BILLING_PORT:-8081}"
    DB_URL="${CAMUNDA_BILLING_DB_URL:-jdbc:postgresql://127.0.0.1:$PGPORT/camunda_billing}"
    CAMUNDA_LOG="${CAMUNDA_BILLING_LOG:-$STACK_DIR/camunda-billing.log}"
    CAMUNDA_PID="$STACK_DIR/camunda-billing.pid"
    # No plugin URL: the billing collector runs in poll mode.
    HOOK_URL="${TASKPOOL_BILLING_HOOK_URL:-}"
    # The billing engine checks authorizations (who may start what, Tasklist access), so the
    # platform is seen following an engine's own grants; demo.sh grants the demo users theirs.
    AUTHORIZATION="${CAMUNDA_BILLING_AUTHORIZATION_ENABLED:-true}"
    HISTORY_LEVEL=full
    ;;
  audit)
    SCRIPT_NAME=camunda-audit
    PORT="${CAMUNDA_AUDIT_PORT:-8082}"
    DB_URL="${CAMUNDA_AUDIT_DB_URL:-jdbc:postgresql://127.0.0.1:$PGPORT/camunda_audit}"
    CAMUNDA_LOG="${CAMUNDA_AUDIT_LOG:-$STACK_DIR/camunda-audit.log}"
    CAMUNDA_PID="$STACK_DIR/camunda-audit.pid"
    HOOK_URL=""
    AUTHORIZATION=false
    # No identity-link log, no variable details: a poll-mode collector must refuse it.
    HISTORY_LEVEL=audit
    ;;
  *) die "unknown instance '$INSTANCE': local, billing or audit" ;;
esac
export CAMUNDA_DB_USER="${CAMUNDA_DB_USER:-${PG_USER:-taskpool}}"
export CAMUNDA_DB_PASSWORD="${CAMUNDA_DB_PASSWORD:-${PG_PASSWORD:-taskpool}}"
export CAMUNDA_ADMIN_USER="${CAMUNDA_ADMIN_USER:-demo}"
export CAMUNDA_ADMIN_PASSWORD="${CAMUNDA_ADMIN_PASSWORD:-demo}"
BASE_URL="http://127.0.0.1:$PORT"
# The hook secret is shared with the collector and the tests through a file only the owner can read.
HOOK_SECRET_FILE="$STACK_DIR/hook-secret"

# hook_secret_file: the file holding the hook secret, created with a random one if missing
# (or with TASKPOOL_HOOK_SECRET when that is set).
hook_secret_file() {
  mkdir -p "$STACK_DIR"
  if [ -n "${TASKPOOL_HOOK_SECRET:-}" ]; then
    (umask 077 && printf '%s' "$TASKPOOL_HOOK_SECRET" >"$HOOK_SECRET_FILE")
  elif [ ! -s "$HOOK_SECRET_FILE" ]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$HOOK_SECRET_FILE")
  fi
  echo "$HOOK_SECRET_FILE"
}

# secret_state NAME: "(set)" or "(unset)"; never the value.
secret_state() { if [ -n "${!1:-}" ]; then echo "(set)"; else echo "(unset)"; fi; }

usage() {
  cat <<USAGE
usage: $(basename "$0") build|start|stop|status [local|billing|audit]
  build   mvn install of the engine plugin ($PLUGIN_DIR), then mvn package of the app
          (each offline first, online if something is missing) -> $JAR
  start   build if the jar is missing or older than the plugin/app sources, start the instance
          in the background, wait for /engine-rest/engine (no-op if running)
  stop    SIGTERM, then SIGKILL after 60 s
  status  exit 0 if the process runs and the REST API answers
instances (default local), each its own process of the same jar:
  local    CAMUNDA_PORT=${CAMUNDA_PORT:-8080} CAMUNDA_DB_URL=${CAMUNDA_DB_URL:-jdbc:postgresql://127.0.0.1:$PGPORT/camunda}
           CAMUNDA_LOG=${CAMUNDA_LOG:-$STACK_DIR/camunda.log} (pid $STACK_DIR/camunda.pid)
           TASKPOOL_HOOK_URL=${TASKPOOL_HOOK_URL-http://127.0.0.1:7201/v1/hooks} (empty: no task hooks)
  billing  CAMUNDA_BILLING_PORT=${CAMUNDA_BILLING_PORT:-8081} CAMUNDA_BILLING_DB_URL=${CAMUNDA_BILLING_DB_URL:-jdbc:postgresql://127.0.0.1:$PGPORT/camunda_billing}
           CAMUNDA_BILLING_LOG=${CAMUNDA_BILLING_LOG:-$STACK_DIR/camunda-billing.log} (pid $STACK_DIR/camunda-billing.pid)
           TASKPOOL_BILLING_HOOK_URL=${TASKPOOL_BILLING_HOOK_URL:-} (default empty: no hooks, its collector polls)
           CAMUNDA_BILLING_AUTHORIZATION_ENABLED=${CAMUNDA_BILLING_AUTHORIZATION_ENABLED:-true} (the engine checks authorizations)
  audit    CAMUNDA_AUDIT_PORT=${CAMUNDA_AUDIT_PORT:-8082} CAMUNDA_AUDIT_DB_URL=${CAMUNDA_AUDIT_DB_URL:-jdbc:postgresql://127.0.0.1:$PGPORT/camunda_audit}
           history level audit, no hooks, no authorizations (tests: poll mode refuses such an engine)
env: STACK_DIR=$STACK_DIR PGPORT=$PGPORT CAMUNDA_DB_USER=$CAMUNDA_DB_USER CAMUNDA_DB_PASSWORD=(set)
     CAMUNDA_ADMIN_USER=$CAMUNDA_ADMIN_USER CAMUNDA_ADMIN_PASSWORD=(set) (every instance)
     CAMUNDA_AUTHORIZATION_ENABLED=${CAMUNDA_AUTHORIZATION_ENABLED:-false} (local) TASKPOOL_REST_AUTH_ENABLED=true
     CAMUNDA_JAVA_OPTS="$CAMUNDA_JAVA_OPTS" CAMUNDA_START_TIMEOUT=$CAMUNDA_START_TIMEOUT
     TASKPOOL_HOOK_SECRET=$(secret_state TASKPOOL_HOOK_SECRET) (default: a random secret kept in $HOOK_SECRET_FILE)
     TASKPOOL_HOOK_TIMEOUT_MS=${TASKPOOL_HOOK_TIMEOUT_MS:-2000}
USAGE
}

# locked_build: build if the jar is outdated (always with "force"), one script at a time: both
# instances run the same jar and may start at once. The lock lives in a subshell, so the engine
# started afterwards does not inherit it.
locked_build() {
  mkdir -p "$STACK_DIR"
  (
    flock 9
    if [ "${1:-}" = force ] || jar_outdated; then build; fi
  ) 9>"$STACK_DIR/camunda-build.lock"
}

build() {
  command -v mvn >/dev/null || apt_install maven
  command -v java >/dev/null || apt_install openjdk-17-jdk-headless
  mkdir -p "$STACK_DIR"
  # The app depends on the plugin as dev.taskpool:camunda-engine-plugin:0.1.0 from ~/.m2.
  say "building $PLUGIN_DIR (mvn install)"
  mvn_offline_first "$PLUGIN_DIR/pom.xml" install
  say "building $APP_DIR (mvn package)"
  # Spring Boot's repackage skips a jar that is already repackaged, and the thin jar is only rebuilt
  # when the app's own classes change, so a new plugin would not get in: start from no jar. (A
  # running engine keeps its open, now unlinked, file.)
  rm -f "$JAR" "$JAR.original"
  mvn_offline_first "$APP_DIR/pom.xml" package
  say "built $JAR"
}

# mvn_offline_first POM GOAL: quiet build without tests, offline first (fast, no network), online
# only if something is missing from ~/.m2.
mvn_offline_first() {
  local log="$STACK_DIR/camunda-build.log"
  if mvn -B -q -o -f "$1" "$2" -DskipTests >"$log" 2>&1; then
    :
  elif mvn -B -q -f "$1" "$2" -DskipTests >"$log" 2>&1; then
    :
  else
    tail -n 30 "$log" >&2
    die "maven build of $1 failed; read $log"
  fi
}

# jar_outdated: the jar is missing, or a plugin/app source or pom is newer than it.
jar_outdated() {
  [ -f "$JAR" ] || return 0
  [ -n "$(find "$PLUGIN_DIR/pom.xml" "$PLUGIN_DIR/src/main" "$APP_DIR/pom.xml" "$APP_DIR/src/main" \
    -type f -newer "$JAR" -print -quit 2>/dev/null)" ]
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
    locked_build
    if port_open 127.0.0.1 "$PORT"; then
      die "port 127.0.0.1:$PORT is already in use by another program; stop it or set $(port_var)"
    fi
    # Fail fast with a clear message when the database is down (URL like jdbc:postgresql://HOST:PORT/DB).
    if [[ "$DB_URL" =~ ^jdbc:postgresql://([^:/]+):([0-9]+)/ ]] &&
      ! port_open "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"; then
      die "PostgreSQL at ${BASH_REMATCH[1]}:${BASH_REMATCH[2]} does not accept connections; run deploy/scripts/postgres.sh start"
    fi
    mkdir -p "$STACK_DIR"
    say "starting Camunda ($INSTANCE) on port $PORT (db $DB_URL, log $CAMUNDA_LOG)"
    # What the app reads, set from this instance's variables whatever the caller exported.
    export CAMUNDA_PORT="$PORT" CAMUNDA_DB_URL="$DB_URL" TASKPOOL_HOOK_URL="$HOOK_URL"
    export CAMUNDA_AUTHORIZATION_ENABLED="$AUTHORIZATION" CAMUNDA_HISTORY_LEVEL="$HISTORY_LEVEL"
    # The secret reaches the engine through its environment, never the command line.
    if [ "$INSTANCE" = local ] || [ -n "$HOOK_URL" ]; then
      local secret_file; secret_file="$(hook_secret_file)"
      TASKPOOL_HOOK_SECRET="$(cat "$secret_file")"
      export TASKPOOL_HOOK_SECRET
    else
      unset TASKPOOL_HOOK_SECRET
    fi
    # shellcheck disable=SC2086  # CAMUNDA_JAVA_OPTS is a list of options
    nohup setsid java $CAMUNDA_JAVA_OPTS -jar "$JAR" >"$CAMUNDA_LOG" 2>&1 </dev/null &
    echo $! >"$CAMUNDA_PID"
  fi
  local deadline=$((SECONDS + CAMUNDA_START_TIMEOUT))
  until engine_answers >/dev/null 2>&1; do
    if ! pid_alive "$CAMUNDA_PID"; then
      grep -E 'ERROR|Caused by|APPLICATION FAILED' "$CAMUNDA_LOG" | tail -n 8 >&2 || true
      rm -f "$CAMUNDA_PID"
      die "Camunda ($INSTANCE) exited during start; read $CAMUNDA_LOG (is PostgreSQL up? deploy/scripts/postgres.sh start)"
    fi
    [ "$SECONDS" -lt "$deadline" ] ||
      die "Camunda ($INSTANCE) did not answer $BASE_URL/engine-rest/engine within ${CAMUNDA_START_TIMEOUT}s; read $CAMUNDA_LOG"
    sleep 1
  done
  # /engine is open even with auth on; /version is not, so this proves the admin login works.
  rest_get version 2>/dev/null ||
    die "REST answers but GET /engine-rest/version with user $CAMUNDA_ADMIN_USER failed (wrong CAMUNDA_ADMIN_PASSWORD? failed logins also lock a user for a while); read $CAMUNDA_LOG"
  say "ready (pid $(cat "$CAMUNDA_PID")):"
  say "  REST     $BASE_URL/engine-rest  (basic auth, user $CAMUNDA_ADMIN_USER)"
  say "  webapps  $BASE_URL/camunda/app/  (Cockpit, Tasklist, Admin)"
  if [ -n "$HOOK_URL" ]; then
    say "  hooks    $HOOK_URL (secret in $HOOK_SECRET_FILE)"
  else
    say "  hooks    off (no hook URL; its collector polls)"
  fi
}

# port_var: the variable that sets this instance's port.
port_var() { if [ "$INSTANCE" = local ]; then echo CAMUNDA_PORT; else echo CAMUNDA_BILLING_PORT; fi; }

stop() { stop_pid "$CAMUNDA_PID" "Camunda ($INSTANCE)" 60; }

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
  build) locked_build force ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
