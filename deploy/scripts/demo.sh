#!/usr/bin/env bash
# Seeds the demo of the local stack's process applications, each on its engine:
#   local    users mary (accounting), peter (finance), the admin in accounting;
#            deploy/processes/demo-invoice.bpmn and a few open "Approve invoice" tasks
#   billing  users mary (billing), bob (clerks), the admin in clerks;
#            deploy/processes/demo-billing.bpmn and a few open "Issue invoice" tasks
# mary is on both engines, peter only on local, bob only on billing. Safe to run again: what
# exists is kept, and instances are only started while the demo process has no open tasks.
# Used by scripts/stack and by the `demo` service of docker-compose.yml.
set -euo pipefail
SCRIPT_NAME=demo
say() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CAMUNDA_URL="${CAMUNDA_URL:-http://127.0.0.1:${CAMUNDA_PORT:-8080}/engine-rest}"
CAMUNDA_BILLING_URL="${CAMUNDA_BILLING_URL:-http://127.0.0.1:${CAMUNDA_BILLING_PORT:-8081}/engine-rest}"
ADMIN_USER="${CAMUNDA_ADMIN_USER:-demo}"
ADMIN_PASSWORD="${CAMUNDA_ADMIN_PASSWORD:-demo}"
PROCESSES="$HERE/../processes"
DEMO_INSTANCES="${DEMO_INSTANCES:-5}"
DEMO_BILLING_INSTANCES="${DEMO_BILLING_INSTANCES:-3}"

usage() {
  cat <<USAGE
usage: $(basename "$0") [local|billing]...   (default: local)
env: CAMUNDA_URL=$CAMUNDA_URL (local)
     CAMUNDA_BILLING_URL=$CAMUNDA_BILLING_URL (billing)
     CAMUNDA_ADMIN_USER=$ADMIN_USER CAMUNDA_ADMIN_PASSWORD=(set) (the same on both engines)
     DEMO_INSTANCES=$DEMO_INSTANCES (open invoice approvals) DEMO_BILLING_INSTANCES=$DEMO_BILLING_INSTANCES (open invoices to issue)
USAGE
}

URL=""  # the engine being seeded

# api METHOD PATH [JSON]: the engine's REST API with basic auth (credentials via stdin, not argv);
# prints the body and fails on anything but 2xx.
api() {
  local args=(-fsS --max-time 20 -X "$1" -K - "$URL$2")
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
deploy() { # DEPLOYMENT-NAME FILE (unchanged files are not deployed again)
  printf 'user = "%s:%s"\n' "$ADMIN_USER" "$ADMIN_PASSWORD" |
    curl -fsS --max-time 30 -K - -o /dev/null "$URL/deployment/create" \
      -F "deployment-name=$1" -F enable-duplicate-filtering=true -F deploy-changed-only=true \
      -F "$(basename "$2")=@$2" || die "could not deploy $2 to $URL"
}
open_tasks() { api GET "/task/count?processDefinitionKey=$1" | tr -dc '0-9'; }
engine() { # NAME URL
  URL="$2"
  SCRIPT_NAME="demo $1"
  api GET /engine >/dev/null || die "the $1 engine at $URL does not answer"
}

seed_local() {
  engine local "$CAMUNDA_URL"
  group accounting Accounting
  group finance Finance
  user mary Mary Major accounting
  user peter Peter Payer finance
  # The admin sees the demo tasks too.
  member accounting "$ADMIN_USER"
  deploy taskpool-demo "$PROCESSES/demo-invoice.bpmn"
  local open i amount
  open="$(open_tasks demoInvoice)"
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
}

# grant GROUP RESOURCE_TYPE RESOURCE_ID PERMISSION[,PERMISSION]: an authorization of the billing
# engine, which checks them (resource types: 0 application, 5 filter, 6 process definition,
# 8 process instance). Skipped when the group has one on that resource already.
grant() {
  local perms
  [ "$(api GET "/authorization/count?groupIdIn=$1&resourceType=$2&resourceId=$3" | tr -dc '0-9')" = 0 ] || return 0
  perms="\"${4//,/\",\"}\""
  api POST /authorization/create \
    "{\"type\":1,\"permissions\":[$perms],\"groupId\":\"$1\",\"resourceType\":$2,\"resourceId\":\"$3\"}" >/dev/null
}

seed_billing() {
  engine billing "$CAMUNDA_BILLING_URL"
  group billing Billing
  # Camunda refuses ids outside [a-zA-Z0-9]+ by default (no "billing-clerks").
  group clerks "Billing clerks"
  user mary Mary Major billing
  user bob Bob Biller clerks
  member clerks "$ADMIN_USER"
  # The billing engine checks authorizations: both groups use its Tasklist and filters; the
  # clerks may start billing runs (the platform lists demoBilling for them, not for mary).
  for g in billing clerks; do
    grant "$g" 0 tasklist ACCESS
    grant "$g" 5 '*' READ
  done
  grant clerks 6 demoBilling READ,CREATE_INSTANCE
  grant clerks 8 '*' CREATE
  deploy taskpool-demo-billing "$PROCESSES/demo-billing.bpmn"
  local open i
  open="$(open_tasks demoBilling)"
  if [ "${open:-0}" -eq 0 ]; then
    for i in $(seq 1 "$DEMO_BILLING_INSTANCES"); do
      api POST /process-definition/key/demoBilling/start \
        "{\"businessKey\":\"BILL-$((2000 + i))\",\"variables\":{\"customer\":{\"value\":\"Customer $i\",\"type\":\"String\"},\"amount\":{\"value\":$((i * 1200 + 45)),\"type\":\"Long\"},\"currency\":{\"value\":\"EUR\",\"type\":\"String\"},\"period\":{\"value\":\"2026-$(printf %02d "$i")\",\"type\":\"String\"},\"priority\":{\"value\":$((30 + i * 20)),\"type\":\"Integer\"}}}" >/dev/null
    done
    say "started $DEMO_BILLING_INSTANCES billing runs"
  else
    say "$open demo tasks are open already"
  fi
}

[ $# -gt 0 ] || set -- local
for app in "$@"; do
  case "$app" in
    local) seed_local ;;
    billing) seed_billing ;;
    -h|--help|help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
