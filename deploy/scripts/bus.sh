#!/usr/bin/env bash
# Runs the three raft-bus nodes of the local stack on 127.0.0.1:7101-7103, one cluster.
# Every bus client has its own secret and role (raft-bus --credentials): the nodes among
# themselves (peer), an operator (admin), taskpool-core (core) and one collector per process
# application (collector-local, collector-billing). The secrets are random, made once and kept in
# $BUS_DIR/secrets/ (one file each, mode 0600); the credentials file holds only their SHA-256.
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BUS_HOST="${BUS_HOST:-127.0.0.1}"
BUS_BASE_PORT="${BUS_BASE_PORT:-7100}"
BUS_BIN="${BUS_BIN:-$REPO_ROOT/target/release/raft-bus}"
BUS_START_TIMEOUT="${BUS_START_TIMEOUT:-60}"
# The applications whose collectors get a credential (role collector, their own streams only).
BUS_APPLICATIONS="${BUS_APPLICATIONS:-local billing}"
CREDENTIALS="$BUS_DIR/credentials.toml"

usage() {
  cat <<USAGE
usage: $(basename "$0") build|start|stop|status|reload|secret NAME|token
  build        cargo build --release -p raft-bus
  start        build if missing, make missing client secrets, write the credentials file, start
               nodes 1-3 on $BUS_HOST:$((BUS_BASE_PORT + 1))-$((BUS_BASE_PORT + 3)), wait until ready (no-op for a running node)
  stop         SIGTERM each node (graceful), SIGKILL after 20 s
  status       exit 0 if all three nodes are ready
  reload       make missing client secrets, rewrite the credentials file and send SIGHUP to the
               running nodes, which read it again (a new application: BUS_APPLICATIONS="local billing new")
  secret NAME  print the path of bus client NAME's secret file (made if missing); clients:
               $(clients | tr '\n' ' ')
  token        print the path of the admin client's secret (what the single bus token was)
env: STACK_DIR=$STACK_DIR BUS_HOST=$BUS_HOST BUS_BASE_PORT=$BUS_BASE_PORT BUS_DIR=$BUS_DIR BUS_BIN=$BUS_BIN
     BUS_START_TIMEOUT=$BUS_START_TIMEOUT BUS_APPLICATIONS="$BUS_APPLICATIONS"
     secrets in $BUS_SECRETS_DIR/<client>; credentials (hashes only) in $CREDENTIALS;
     the nodes get the peer secret as RAFT_BUS_PEER_TOKEN in their environment, never on a command line
USAGE
}

port() { echo $((BUS_BASE_PORT + $1)); }
peers() { echo "1=$BUS_HOST:$(port 1),2=$BUS_HOST:$(port 2),3=$BUS_HOST:$(port 3)"; }
ready() { curl -fsS "http://$BUS_HOST:$(port "$1")/health/ready" >/dev/null; }

# clients: every client's name, one a line.
clients() {
  printf '%s\n' peer admin core
  local app
  for app in $BUS_APPLICATIONS; do printf 'collector-%s\n' "$app"; done
}

# role NAME: the role of client NAME.
role() {
  case "$1" in
    peer | admin | core) echo "$1" ;;
    collector-*) echo collector ;;
    *) return 1 ;;
  esac
}

build() {
  say "cargo build --release -p raft-bus"
  (cd "$REPO_ROOT" && cargo build --release --locked -q -p raft-bus) || die "build failed"
}

# ensure_secrets: a random secret for every client that has none yet (kept across restarts).
ensure_secrets() {
  local app name f
  for app in $BUS_APPLICATIONS; do
    [[ "$app" =~ ^[a-z][a-z0-9-]{0,39}$ ]] || die "application name '$app' in BUS_APPLICATIONS is not [a-z][a-z0-9-]{0,39}"
  done
  mkdir -p "$BUS_SECRETS_DIR"
  chmod 700 "$BUS_SECRETS_DIR"
  for name in $(clients); do
    f="$BUS_SECRETS_DIR/$name"
    if [ ! -s "$f" ]; then
      (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
      say "new secret for bus client $name in $f"
    fi
    chmod 600 "$f"
  done
}

# write_credentials: the credentials file of the nodes, from the secrets' SHA-256 (the secrets
# themselves stay in their files); replaced in one rename, so a node never reads half of it.
write_credentials() {
  local tmp="$CREDENTIALS.tmp" name
  (
    umask 077
    {
      echo "# The bus clients of the local stack, written by deploy/scripts/bus.sh from $BUS_SECRETS_DIR."
      for name in $(clients); do
        printf '\n[[client]]\nname = "%s"\nrole = "%s"\n' "$name" "$(role "$name")"
        if [ "$(role "$name")" = collector ]; then printf 'application = "%s"\n' "${name#collector-}"; fi
        printf 'secret = "sha256:%s"\n' "$(sha256sum <"$BUS_SECRETS_DIR/$name" | cut -d' ' -f1)"
      done
    } >"$tmp"
  )
  chmod 600 "$tmp"
  mv -f "$tmp" "$CREDENTIALS"
}

start() {
  [ -x "$BUS_BIN" ] || build
  ensure_secrets
  write_credentials
  if [ -f "$BUS_DIR/token" ]; then
    rm -f "$BUS_DIR/token"
    say "removed the old single bus token $BUS_DIR/token: every client has its own secret in $BUS_SECRETS_DIR"
  fi
  local n
  for n in 1 2 3; do
    local pidf="$BUS_DIR/node-$n.pid"
    if pid_alive "$pidf"; then say "node $n already running"; continue; fi
    say "starting node $n on $BUS_HOST:$(port "$n")"
    # The peer secret goes through the environment, never the command line; a RAFT_BUS_TOKEN
    # of the caller's would clash with --credentials.
    (
      unset RAFT_BUS_TOKEN
      RAFT_BUS_PEER_TOKEN="$(cat "$BUS_SECRETS_DIR/peer")"
      export RAFT_BUS_PEER_TOKEN
      exec nohup "$BUS_BIN" --node-id "$n" --listen "$BUS_HOST:$(port "$n")" \
        --data-dir "$BUS_DIR/node-$n" --peers "$(peers)" --credentials "$CREDENTIALS" \
        >>"$BUS_DIR/node-$n.log" 2>&1 </dev/null
    ) &
    echo $! >"$pidf"
  done
  for n in 1 2 3; do
    wait_until "$BUS_START_TIMEOUT" "node $n ready" ready "$n" || die "node $n is not ready; read $BUS_DIR/node-$n.log"
  done
  say "bus ready: http://$BUS_HOST:$(port 1) http://$BUS_HOST:$(port 2) http://$BUS_HOST:$(port 3)"
  say "  clients: $(clients | tr '\n' ' ')(secrets in $BUS_SECRETS_DIR, admin: $BUS_SECRETS_DIR/admin)"
}

reload() {
  ensure_secrets
  write_credentials
  local n pidf
  for n in 1 2 3; do
    pidf="$BUS_DIR/node-$n.pid"
    if pid_alive "$pidf"; then
      kill -HUP "$(cat "$pidf")"
      say "node $n: SIGHUP, reads $CREDENTIALS again"
    else
      say "node $n is not running; it reads $CREDENTIALS when it starts"
    fi
  done
}

stop() {
  local n
  for n in 1 2 3; do stop_pid "$BUS_DIR/node-$n.pid" "bus node $n" 20; done
}

status() {
  local ok=0 n
  for n in 1 2 3; do
    if ready "$n"; then say "node $n ready"; else say "node $n not ready"; ok=3; fi
  done
  return $ok
}

# secret NAME: the path of client NAME's secret file.
secret() {
  local name="${1:-}"
  [ -n "$name" ] || die "usage: $(basename "$0") secret NAME (one of: $(clients | tr '\n' ' '))"
  clients | grep -qxF -- "$name" || die "no bus client '$name'; clients: $(clients | tr '\n' ' ')"
  ensure_secrets >&2
  echo "$BUS_SECRETS_DIR/$name"
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  reload) reload ;;
  secret) secret "${2:-}" ;;
  token) secret admin ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
