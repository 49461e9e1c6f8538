#!/usr/bin/env bash
# Local S3-compatible endpoint for MedQ: moto's server on 127.0.0.1 (stands in for MinIO, which
# production runs; see infra/README.md). In-memory: a restart starts with no buckets.
#
#   infra/s3.sh start|stop|status      (contract: see infra/_lib.sh)
#
# Environment: MEDQ_S3_PORT (default 9000), MEDQ_SERVICES_DIR (default <repo>/.services),
#              MEDQ_PYTHON (python whose env has moto[server]; default <repo>/.venv/bin/python),
#              MEDQ_S3_START_TIMEOUT (seconds, default 30).
# Files: $MEDQ_SERVICES_DIR/s3/s3.pid, s3.log. Any access/secret key is accepted.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

NAME=s3
PORT="${MEDQ_S3_PORT:-9000}"
PIDFILE="$SERVICES_DIR/s3/s3.pid"
LOGFILE="$SERVICES_DIR/s3/s3.log"
URL="http://$HOST:$PORT"

healthy() {  # the port answers HTTP (moto answers / with a bucket listing)
  curl -s -o /dev/null --max-time 3 "$URL/" 2>/dev/null || port_busy "$PORT"
}

case "${1:-}" in
  start)
    MOTO="$(find_tool moto_server)" || die "moto_server not found (run: bash infra/install.sh)"
    svc_start "${MEDQ_S3_START_TIMEOUT:-30}" "$MOTO" -H "$HOST" -p "$PORT" ;;
  stop) svc_stop ;;
  status) svc_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
