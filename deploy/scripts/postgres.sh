#!/usr/bin/env bash
# Runs a private PostgreSQL cluster for the local stack (Debian's packages, no Docker).
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PG_DATA_DIR="${PG_DATA_DIR:-$STACK_DIR/postgres}"
PG_LOG="${PG_LOG:-$STACK_DIR/postgres.log}"
PGPORT="${PGPORT:-5432}"
PG_USER="${PG_USER:-taskpool}"
PG_PASSWORD="${PG_PASSWORD:-taskpool}"
# One database per engine and per collector (state), one for FerretDB.
PG_DATABASES="${PG_DATABASES:-camunda camunda_billing camunda_audit collector collector_billing ferretdb}"
PG_START_TIMEOUT="${PG_START_TIMEOUT:-60}"
PG_OS_USER=postgres

usage() {
  cat <<USAGE
usage: $(basename "$0") start|stop|status|install|psql [psql args...]
  start    install PostgreSQL if missing, init the cluster in \$PG_DATA_DIR if new, start it on
           127.0.0.1:\$PGPORT, create role \$PG_USER and databases \$PG_DATABASES (no-op if running)
  stop     fast shutdown
  status   exit 0 if running
  install  apt-get install postgresql if missing
  psql     psql as \$PG_USER on database camunda over TCP (extra args go to psql, e.g. -d collector)
env: STACK_DIR=$STACK_DIR PG_DATA_DIR=$PG_DATA_DIR PGPORT=$PGPORT PG_USER=$PG_USER
     PG_PASSWORD=(set) PG_DATABASES="$PG_DATABASES" PG_LOG=$PG_LOG PG_START_TIMEOUT=$PG_START_TIMEOUT
USAGE
}

# The newest installed server version's bin dir, or nothing.
pg_bindir() { find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1; }

install_pg() {
  if [ -z "$(pg_bindir)" ] || [ ! -x "$(pg_bindir)/initdb" ]; then
    apt_install postgresql
  fi
  BIN="$(pg_bindir)"
  if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
    die "PostgreSQL server binaries not found under /usr/lib/postgresql"
  fi
  id "$PG_OS_USER" >/dev/null 2>&1 || die "OS user $PG_OS_USER missing (the postgresql package creates it)"
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

# Unix socket for local admin (peer auth) lives in the data dir; socket paths are
# limited to ~107 bytes, so fall back to /tmp for deep data dirs.
socket_dir() {
  if [ "${#PG_DATA_DIR}" -le 80 ]; then echo "$PG_DATA_DIR"; else echo /tmp; fi
}

is_running() {
  local bin; bin="$(pg_bindir)"
  [ -n "$bin" ] && [ -f "$PG_DATA_DIR/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$PG_DATA_DIR" status >/dev/null 2>&1
}

init_cluster() {
  [ -f "$PG_DATA_DIR/PG_VERSION" ] && return 0
  say "initialising a new cluster in $PG_DATA_DIR"
  mkdir -p "$PG_DATA_DIR"
  chown "$PG_OS_USER": "$PG_DATA_DIR"
  chmod 700 "$PG_DATA_DIR"
  as_pg test -w "$PG_DATA_DIR" ||
    die "user $PG_OS_USER cannot reach $PG_DATA_DIR (a parent dir is not traversable?); set PG_DATA_DIR or STACK_DIR to a path it can reach, e.g. under /var/tmp"
  # peer auth on the socket (admin as the postgres OS user), passwords over TCP.
  as_pg "$BIN/initdb" -D "$PG_DATA_DIR" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >>"$PG_LOG" 2>&1 ||
    die "initdb failed; read $PG_LOG"
}

ensure_role_and_dbs() {
  local sock; sock="$(socket_dir)"
  say "ensuring role $PG_USER and databases: $PG_DATABASES"
  # The password goes through stdin, never on a command line.
  {
    printf "\\set ON_ERROR_STOP on\n"
    printf "\\set u '%s'\n" "${PG_USER//\'/\'\'}"
    printf "\\set pw '%s'\n" "${PG_PASSWORD//\'/\'\'}"
    cat <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'u') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'u') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'u', :'pw') \gexec
SQL
    for db in $PG_DATABASES; do
      printf "\\set d '%s'\n" "$db"
      echo "SELECT format('CREATE DATABASE %I OWNER %I', :'d', :'u') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'d') \\gexec"
    done
  } | as_pg "$BIN/psql" -X -q -h "$sock" -p "$PGPORT" -U postgres -d postgres >/dev/null ||
    die "creating role/databases failed; read $PG_LOG"
}

start() {
  install_pg
  mkdir -p "$STACK_DIR"
  if is_running; then
    say "already running (data $PG_DATA_DIR)"
  else
    init_cluster
    if port_open 127.0.0.1 "$PGPORT"; then
      die "port 127.0.0.1:$PGPORT is already in use by another program (Debian's own cluster? see pg_lsclusters); stop it or set PGPORT"
    fi
    say "starting PostgreSQL on 127.0.0.1:$PGPORT (data $PG_DATA_DIR, log $PG_LOG)"
    # pg_ctl -w polls until the server accepts connections, up to -t seconds. The server
    # writes to pg_ctl's stdout, a log file opened here, so the postgres user needs no
    # write access to STACK_DIR.
    as_pg "$BIN/pg_ctl" -D "$PG_DATA_DIR" -w -t "$PG_START_TIMEOUT" \
      -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $(socket_dir)" start >>"$PG_LOG" 2>&1 ||
      die "PostgreSQL did not start within ${PG_START_TIMEOUT}s; read $PG_LOG"
  fi
  wait_until "$PG_START_TIMEOUT" "PostgreSQL to accept connections" \
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" || die "PostgreSQL is not ready; read $PG_LOG"
  ensure_role_and_dbs
  say "ready: postgres://$PG_USER@127.0.0.1:$PGPORT/{${PG_DATABASES// /,}}"
}

stop() {
  local bin; bin="$(pg_bindir)"
  if ! is_running; then say "not running"; return 0; fi
  say "stopping PostgreSQL (data $PG_DATA_DIR)"
  as_pg "$bin/pg_ctl" -D "$PG_DATA_DIR" -m fast -w -t 60 stop >/dev/null || die "stop failed; read $PG_LOG"
  say "stopped"
}

status() {
  if is_running; then
    say "running on 127.0.0.1:$PGPORT (data $PG_DATA_DIR, log $PG_LOG)"
  else
    say "not running"; return 3
  fi
}

run_psql() {
  local bin; bin="$(pg_bindir)"
  [ -n "$bin" ] || die "PostgreSQL is not installed; run: $0 start"
  PGPASSWORD="$PG_PASSWORD" exec "$bin/psql" -X -h 127.0.0.1 -p "$PGPORT" -U "$PG_USER" -d camunda "$@"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  install) install_pg; say "installed: $BIN" ;;
  psql) shift; run_psql "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
