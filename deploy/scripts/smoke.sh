#!/usr/bin/env bash
# Checks a running stack end to end: deploys deploy/processes/simple-user-task.bpmn through
# Camunda's REST API, starts an instance, finds its user task (candidate group "reviewers"),
# checks that REST refuses calls without credentials, and pings FerretDB.
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CAMUNDA_PORT="${CAMUNDA_PORT:-8080}"
CAMUNDA_ADMIN_USER="${CAMUNDA_ADMIN_USER:-demo}"
CAMUNDA_ADMIN_PASSWORD="${CAMUNDA_ADMIN_PASSWORD:-demo}"
REST="http://127.0.0.1:$CAMUNDA_PORT/engine-rest"
BPMN="$DEPLOY_DIR/processes/simple-user-task.bpmn"

case "${1:-}" in
  -h|--help|help) echo "usage: $(basename "$0")   (needs postgres.sh, camunda.sh and ferretdb.sh started)"; exit 0 ;;
  "") ;;
  *) echo "usage: $(basename "$0")" >&2; exit 2 ;;
esac

# rest ARGS...: curl with basic auth (credentials via stdin, not argv); prints the body.
rest() {
  printf 'user = "%s:%s"\n' "$CAMUNDA_ADMIN_USER" "$CAMUNDA_ADMIN_PASSWORD" | curl -fsS --max-time 30 -K - "$@"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

say "deploying $(basename "$BPMN")"
deployment="$(rest -F deployment-name=taskpool-smoke -F enable-duplicate-filtering=true \
  -F "simple-user-task.bpmn=@$BPMN" "$REST/deployment/create")" || die "deployment failed"
say "  deployment $(json 'd["id"]' <<<"$deployment")"

business_key="smoke-$(date +%s%N)"
say "starting an instance of simpleUserTask (businessKey $business_key)"
instance="$(rest -H 'Content-Type: application/json' \
  -d "{\"businessKey\":\"$business_key\",\"variables\":{\"amount\":{\"value\":42,\"type\":\"Integer\"}}}" \
  "$REST/process-definition/key/simpleUserTask/start" | json 'd["id"]')" || die "start failed"
say "  process instance $instance"

tasks="$(rest "$REST/task?processInstanceId=$instance&candidateGroup=reviewers")" || die "task query failed"
[ "$(json 'len(d)' <<<"$tasks")" = 1 ] || die "expected one task for group reviewers, got: $tasks"
task="$(json 'd[0]["id"]' <<<"$tasks")"
say "  task $task: $(json 'd[0]["name"]' <<<"$tasks"), candidate groups: $(rest "$REST/task/$task/identity-links" | json '",".join(l["groupId"] for l in d if l["type"]=="candidate")')"

code="$(curl -s -o /dev/null -w '%{http_code}' "$REST/task")"
[ "$code" = 401 ] || die "GET /engine-rest/task without credentials answered $code, expected 401"
say "  GET /engine-rest/task without credentials: 401"

say "completing task $task"
rest -H 'Content-Type: application/json' -d '{}' "$REST/task/$task/complete" >/dev/null || die "complete failed"
ended="$(rest "$REST/history/process-instance/$instance" | json 'd["state"]')"
[ "$ended" = COMPLETED ] || die "instance state is $ended, expected COMPLETED"
say "  instance $instance COMPLETED"

python3 "$DEPLOY_DIR/scripts/mongo_ping.py" "${FERRETDB_HOST:-127.0.0.1}" "${FERRETDB_PORT:-27017}" ||
  die "FerretDB at ${FERRETDB_HOST:-127.0.0.1}:${FERRETDB_PORT:-27017} did not answer a ping"
say "FerretDB answers ping"
say "smoke test passed"
