# Shared helpers for the deploy/scripts/*.sh scripts. Sourced, not run.
# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Sets REPO_ROOT and STACK_DIR (default <repo>/.stack) and small helpers.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEPLOY_DIR="$REPO_ROOT/deploy"
STACK_DIR="${STACK_DIR:-$REPO_ROOT/.stack}"

SCRIPT_NAME="$(basename "$0" .sh)"

say() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# apt-get update at most once per script run, then install the named packages.
APT_UPDATED=0
apt_install() {
  [ "$(id -u)" -eq 0 ] || die "installing $* needs root (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
  say "apt-get install -y $*"
  apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

# wait_until SECONDS DESCRIPTION COMMAND...: run COMMAND every 0.5 s until it
# succeeds; return 1 once the deadline has passed.
wait_until() {
  local timeout="$1" what="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "gave up waiting for $what after ${timeout}s"
      return 1
    fi
    sleep 0.5
  done
}

# pid_alive FILE: the pid in FILE names a running process.
pid_alive() {
  local pid
  [ -f "$1" ] || return 1
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# stop_pid FILE NAME [GRACE_SECONDS]: SIGTERM, wait, then SIGKILL; removes FILE.
stop_pid() {
  local file="$1" name="$2" grace="${3:-30}" pid
  if ! pid_alive "$file"; then
    say "$name is not running"
    rm -f "$file"
    return 0
  fi
  pid="$(cat "$file")"
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_until "$grace" "$name to exit" not_alive "$pid"; then
    say "$name did not exit after SIGTERM, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_until 10 "$name to die" not_alive "$pid" || die "could not stop $name (pid $pid)"
  fi
  rm -f "$file"
  say "$name stopped"
}
not_alive() { ! kill -0 "$1" 2>/dev/null; }

# port_open HOST PORT: something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# The bus clients' secrets (deploy/scripts/bus.sh writes them): one file per client, mode 0600.
BUS_DIR="${BUS_DIR:-$STACK_DIR/bus}"
BUS_SECRETS_DIR="$BUS_DIR/secrets"

# bus_secret NAME: the path of bus client NAME's secret file (peer, admin, core,
# collector-<application>); dies, naming the script to run, when bus.sh has not written it.
bus_secret() {
  local f="$BUS_SECRETS_DIR/$1"
  [ -s "$f" ] || die "no bus secret for client $1 in $f; run deploy/scripts/bus.sh start first"
  echo "$f"
}
