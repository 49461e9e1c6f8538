#!/usr/bin/env bash
# Local Prefect 3 server for MedQ on 127.0.0.1 (SQLite under the services dir). Optional: without
# it every flow run starts a temporary in-process server. Point flows at this one with
# PREFECT_API_URL=http://127.0.0.1:<port>/api (or settings prefect.api_url).
#
#   infra/prefect.sh start|stop|status      (contract: see infra/_lib.sh)
#
# Environment: MEDQ_PREFECT_PORT (default 4200), MEDQ_SERVICES_DIR (default <repo>/.services),
#              MEDQ_PYTHON (python whose env has prefect), MEDQ_PREFECT_START_TIMEOUT (default 120).
# Files: $MEDQ_SERVICES_DIR/prefect/prefect.pid, prefect.log; PREFECT_HOME=$MEDQ_SERVICES_DIR/prefect/home.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

NAME=prefect
PORT="${MEDQ_PREFECT_PORT:-4200}"
PIDFILE="$SERVICES_DIR/prefect/prefect.pid"
LOGFILE="$SERVICES_DIR/prefect/prefect.log"
URL="http://$HOST:$PORT"

healthy() { [ "$(http_get "$URL/api/health")" = "true" ]; }

case "${1:-}" in
  start)
    PREFECT="$(find_tool prefect)" || die "prefect not found (run: bash infra/install.sh)"
    export PREFECT_HOME="$SERVICES_DIR/prefect/home"
    export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_API_HOST="$HOST"
    export PREFECT_SERVER_API_PORT="$PORT"
    unset PREFECT_API_URL  # the server must not try to talk to another API
    mkdir -p "$PREFECT_HOME"
    svc_start "${MEDQ_PREFECT_START_TIMEOUT:-120}" "$PREFECT" server start --host "$HOST" --port "$PORT" ;;
  stop) svc_stop ;;
  status) svc_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
