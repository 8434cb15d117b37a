#!/usr/bin/env bash
# Seeds an engine with the demo: users mary (accounting) and peter (finance), the demo process
# (deploy/processes/demo-invoice.bpmn) and a few open tasks. Safe to run again: what exists is
# kept, and instances are only started while the demo has no open tasks.
# Used by scripts/stack and by the `demo` service of docker-compose.yml.
set -euo pipefail
SCRIPT_NAME=demo
say() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CAMUNDA_URL="${CAMUNDA_URL:-http://127.0.0.1:${CAMUNDA_PORT:-8080}/engine-rest}"
ADMIN_USER="${CAMUNDA_ADMIN_USER:-demo}"
ADMIN_PASSWORD="${CAMUNDA_ADMIN_PASSWORD:-demo}"
BPMN="$HERE/../processes/demo-invoice.bpmn"
DEMO_INSTANCES="${DEMO_INSTANCES:-5}"

case "${1:-}" in
  -h|--help|help)
    echo "usage: $(basename "$0")   (env: CAMUNDA_URL=$CAMUNDA_URL CAMUNDA_ADMIN_USER CAMUNDA_ADMIN_PASSWORD DEMO_INSTANCES=$DEMO_INSTANCES)"
    exit 0 ;;
esac

# api METHOD PATH [JSON]: the engine's REST API with basic auth (credentials via stdin, not argv);
# prints the body and fails on anything but 2xx.
api() {
  local args=(-fsS --max-time 20 -X "$1" -K - "$CAMUNDA_URL$2")
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data "$3")
  printf 'user = "%s:%s"\n' "$ADMIN_USER" "$ADMIN_PASSWORD" | curl "${args[@]}"
}
exists() { api GET "$1" >/dev/null 2>&1; }

group() { # ID NAME
  exists "/group/$1" || { api POST /group/create "{\"id\":\"$1\",\"name\":\"$2\",\"type\":\"WORKFLOW\"}" >/dev/null; say "group $1"; }
}
user() { # ID FIRST LAST GROUP
  exists "/user/$1/profile" || {
    api POST /user/create "{\"profile\":{\"id\":\"$1\",\"firstName\":\"$2\",\"lastName\":\"$3\",\"email\":\"$1@example.org\"},\"credentials\":{\"password\":\"$1\"}}" >/dev/null
    say "user $1 (password $1)"
  }
  member "$4" "$1"
}
member() { # GROUP USER (adding a member twice is an engine error, so ask first)
  [ "$(api GET "/user/count?id=$2&memberOfGroup=$1" | tr -dc '0-9')" = 1 ] ||
    api PUT "/group/$1/members/$2" >/dev/null
}

api GET /engine >/dev/null || die "the engine at $CAMUNDA_URL does not answer"
group accounting Accounting
group finance Finance
user mary Mary Major accounting
user peter Peter Payer finance
# The admin sees the demo tasks too.
member accounting "$ADMIN_USER"

printf 'user = "%s:%s"\n' "$ADMIN_USER" "$ADMIN_PASSWORD" |
  curl -fsS --max-time 30 -K - -o /dev/null "$CAMUNDA_URL/deployment/create" \
    -F deployment-name=taskpool-demo -F enable-duplicate-filtering=true -F deploy-changed-only=true \
    -F "demo-invoice.bpmn=@$BPMN" || die "could not deploy $BPMN"

open="$(api GET '/task/count?processDefinitionKey=demoInvoice' | tr -dc '0-9')"
if [ "${open:-0}" -eq 0 ]; then
  for i in $(seq 1 "$DEMO_INSTANCES"); do
    amount=$((i * 250 + 90))
    api POST /process-definition/key/demoInvoice/start \
      "{\"businessKey\":\"INV-$((1000 + i))\",\"variables\":{\"amount\":{\"value\":$amount,\"type\":\"Long\"},\"creditor\":{\"value\":\"Supplier $i\",\"type\":\"String\"},\"priority\":{\"value\":$((40 + i * 10)),\"type\":\"Integer\"}}}" >/dev/null
  done
  say "started $DEMO_INSTANCES invoice approvals"
else
  say "$open demo tasks are open already"
fi
