#!/usr/bin/env bash
# The `bus-credentials` one-shot of docker-compose.yml: writes the bus nodes' credentials file
# (raft-bus --credentials) from the client secrets in its environment (from .env). The file holds
# only each secret's SHA-256; the nodes mount its volume read-only.
#   BUS_CLIENTS   name:role[:application] ...   (roles: peer, admin, core, collector)
#   BUS_SECRET_<NAME>   each client's secret, NAME upper-cased with - as _ (BUS_SECRET_COLLECTOR_BILLING)
#   BUS_CREDENTIALS_FILE   where to write it (default /etc/taskpool/bus/credentials.toml)
set -euo pipefail
say() { printf '[bus-credentials] %s\n' "$*"; }
die() { printf '[bus-credentials] ERROR: %s\n' "$*" >&2; exit 1; }

out="${BUS_CREDENTIALS_FILE:-/etc/taskpool/bus/credentials.toml}"
[ -n "${BUS_CLIENTS:-}" ] || die "BUS_CLIENTS is empty"
mkdir -p "$(dirname "$out")"
tmp="$out.tmp"
trap 'rm -f "$tmp"' EXIT
(
  umask 077
  {
    echo "# The bus clients of docker-compose.yml, written by deploy/docker/bus-credentials.sh from .env."
    for client in $BUS_CLIENTS; do
      IFS=: read -r name role application <<<"$client"
      case "$role" in
        peer | admin | core) [ -z "$application" ] || die "client $name: only collectors have an application" ;;
        collector) [[ "$application" =~ ^[a-z][a-z0-9-]{0,39}$ ]] || die "client $name: collector needs an application [a-z][a-z0-9-]{0,39}" ;;
        *) die "client $name: role '$role' is not peer, admin, core or collector" ;;
      esac
      var="BUS_SECRET_$(printf %s "$name" | tr 'a-z-' 'A-Z_')"
      [ -n "${!var:-}" ] || die "$var (the secret of bus client $name) is empty; set it in .env"
      printf '\n[[client]]\nname = "%s"\nrole = "%s"\n' "$name" "$role"
      [ -z "$application" ] || printf 'application = "%s"\n' "$application"
      # printf is a shell builtin: the secret is on no command line.
      printf 'secret = "sha256:%s"\n' "$(printf %s "${!var}" | sha256sum | cut -d' ' -f1)"
    done
  } >"$tmp"
)
# The nodes run as the image's user; when this runs as root (to write into a new volume), hand
# the file over to them.
if [ "$(id -u)" -eq 0 ] && id taskpool >/dev/null 2>&1; then chown taskpool:taskpool "$tmp"; fi
chmod 0400 "$tmp"
mv -f "$tmp" "$out"
say "wrote $out: $(grep -c '^\[\[client\]\]' "$out") clients ($BUS_CLIENTS)"
