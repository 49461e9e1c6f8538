#!/usr/bin/env bash
# Label Studio for MedQ: install into its own venv, start / stop / status on 127.0.0.1.
#
# CLI contract (used by infra/install.sh, storage/service_supervisor.py and tests/fixtures/labelstudio.py):
#
#   infra/labelstudio.sh install   Create $MEDQ_LS_VENV and pip-install label-studio==$MEDQ_LS_VERSION.
#                                  Idempotent: does nothing when the venv already runs that version.
#   infra/labelstudio.sh start     Start the server in the background (pid file + log), wait until
#                                  GET /health answers UP, make sure the admin token works.
#                                  Prints `running <url> pid <pid>`. Already running: same line, rc 0.
#   infra/labelstudio.sh stop      Stop the server started from this data dir (whole process group).
#   infra/labelstudio.sh status    Prints `running <url> pid <pid>` (rc 0), `stopped` (rc 3) or
#                                  `unhealthy <url> pid <pid>` (rc 1: process alive, /health not UP).
#   infra/labelstudio.sh user EMAIL PASSWORD TOKEN
#                                  Create (or update) an annotator account with a legacy API token in
#                                  the organization of the admin (the server must have been started once).
#   infra/labelstudio.sh env       Print the effective settings (token masked), for debugging.
#
# Exit codes: 0 ok, 1 failure (message on stderr), 2 usage, 3 stopped (status only).
#
# Environment (all optional):
#   MEDQ_SERVICES_DIR   root of service state           (default: <repo>/.services)
#   MEDQ_LS_VENV        Label Studio's own venv          (default: $MEDQ_SERVICES_DIR/labelstudio-venv)
#   MEDQ_LS_DATA_DIR    server data (SQLite, media)      (default: $MEDQ_SERVICES_DIR/labelstudio-data)
#   MEDQ_LS_PORT        port on 127.0.0.1                (default: 8080)
#   MEDQ_LS_USERNAME    admin e-mail                     (default: admin@medq.local)
#   MEDQ_LS_PASSWORD    admin password                   (default: medq-admin-pw)
#   MEDQ_LS_TOKEN       admin legacy API token, 40 chars (default: a fixed development token)
#   MEDQ_LS_FILES_ROOT  LOCAL_FILES_DOCUMENT_ROOT: local-files serving is allowed below it only
#                       (default: /; every served folder must still be registered as a project's
#                       local import storage by an admin, and the server listens on loopback only)
#   MEDQ_LS_VERSION     label-studio version             (default: 1.23.2)
#   MEDQ_LS_PYTHON      python used to create the venv   (default: python3)
#   MEDQ_LS_START_TIMEOUT  seconds to wait for /health   (default: 180)
#   MEDQ_LS_PIP_ARGS    extra arguments for pip install  (default: none)
#
# Files: $MEDQ_LS_DATA_DIR/labelstudio.pid, $MEDQ_LS_DATA_DIR/labelstudio.log.
# The admin user and token are created on the first start of a new data dir (Label Studio reads
# LABEL_STUDIO_USERNAME / _PASSWORD / _USER_TOKEN then); on an existing data dir `start` checks the
# token against the API and, if it is refused, sets it (and enables legacy tokens) through Django.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES_DIR="${MEDQ_SERVICES_DIR:-$REPO/.services}"
VENV="${MEDQ_LS_VENV:-$SERVICES_DIR/labelstudio-venv}"
DATA_DIR="${MEDQ_LS_DATA_DIR:-$SERVICES_DIR/labelstudio-data}"
PORT="${MEDQ_LS_PORT:-8080}"
HOST=127.0.0.1
USERNAME="${MEDQ_LS_USERNAME:-admin@medq.local}"
PASSWORD="${MEDQ_LS_PASSWORD:-medq-admin-pw}"
TOKEN="${MEDQ_LS_TOKEN:-medq0dev0token0000000000000000000000000a}"
FILES_ROOT="${MEDQ_LS_FILES_ROOT:-/}"
VERSION="${MEDQ_LS_VERSION:-1.23.2}"
PYTHON="${MEDQ_LS_PYTHON:-python3}"
START_TIMEOUT="${MEDQ_LS_START_TIMEOUT:-180}"
PIDFILE="$DATA_DIR/labelstudio.pid"
LOGFILE="$DATA_DIR/labelstudio.log"
URL="http://$HOST:$PORT"

die() { echo "labelstudio.sh: $*" >&2; exit 1; }

ls_env() {
  # Everything Label Studio reads, kept inside the data dir (nothing in $HOME).
  export LABEL_STUDIO_BASE_DATA_DIR="$DATA_DIR"
  export XDG_CONFIG_HOME="$DATA_DIR/xdg" XDG_CACHE_HOME="$DATA_DIR/xdg-cache"
  export LABEL_STUDIO_USERNAME="$USERNAME" LABEL_STUDIO_PASSWORD="$PASSWORD"
  export LABEL_STUDIO_USER_TOKEN="$TOKEN"
  export LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true
  export LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false
  # Label Studio reports errors and traces (with user data) to sentry.io unless the DSNs are empty.
  export SENTRY_DSN="" FRONTEND_SENTRY_DSN=""
  export LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="${LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK:-true}"
  export LOCAL_FILES_SERVING_ENABLED=true LOCAL_FILES_DOCUMENT_ROOT="$FILES_ROOT"
  # Presigned URLs of a local S3 endpoint (127.0.0.1) must be reachable from the server.
  export SSRF_PROTECTION_ENABLED=false
  export DJANGO_DB=sqlite DEBUG=false LOG_LEVEL="${LOG_LEVEL:-WARNING}"
  unset PYTHONPATH
}

installed_version() {
  [ -x "$VENV/bin/python" ] || return 1
  "$VENV/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
print(version("label-studio"))
EOF
}

cmd_install() {
  local have
  have="$(installed_version || true)"
  if [ "$have" = "$VERSION" ] && [ -x "$VENV/bin/label-studio" ]; then
    echo "label-studio $VERSION already installed in $VENV"
    return 0
  fi
  command -v "$PYTHON" >/dev/null || die "no $PYTHON to create $VENV (set MEDQ_LS_PYTHON)"
  mkdir -p "$(dirname "$VENV")"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || die "could not create venv $VENV"
  fi
  echo "installing label-studio $VERSION into $VENV (about a minute) ..."
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check ${MEDQ_LS_PIP_ARGS:-} \
      "label-studio==$VERSION" || die "pip install label-studio==$VERSION failed in $VENV"
  have="$(installed_version || true)"
  [ "$have" = "$VERSION" ] || die "label-studio $VERSION not importable in $VENV after install"
  echo "label-studio $VERSION installed in $VENV"
}

health() {
  # 0 when /health answers UP.
  "$VENV/bin/python" - "$URL" <<'EOF' 2>/dev/null
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/health", timeout=3) as r:
        sys.exit(0 if json.load(r).get("status") == "UP" else 1)
except Exception:
    sys.exit(1)
EOF
}

pid_alive() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

port_busy() {
  # Something accepts connections there (a bind test would also trip over TIME_WAIT sockets
  # left by the previous server on this port).
  (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

token_works() {
  # 0 = token accepted, 1 = refused, 2 = other error.
  "$VENV/bin/python" - "$URL" "$TOKEN" <<'EOF'
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1] + "/api/current-user/whoami",
                             headers={"Authorization": "Token " + sys.argv[2]})
try:
    urllib.request.urlopen(req, timeout=10).read()
except urllib.error.HTTPError as e:
    sys.exit(1 if e.code in (401, 403) else 2)
except Exception:
    sys.exit(2)
EOF
}

django_run() {
  # Run a Python snippet inside Label Studio's Django app against this data dir.
  ls_env
  local snippet="$1"; shift
  DJANGO_SETTINGS_MODULE=core.settings.label_studio "$VENV/bin/python" -c "
import os, sys, label_studio
sys.path.insert(0, os.path.dirname(label_studio.__file__))  # Label Studio's Django apps
import django
django.setup()
$snippet" "$@"
}

ensure_token() {
  local rc=0
  token_works || rc=$?
  [ "$rc" -eq 0 ] && return 0
  [ "$rc" -eq 1 ] || die "$URL/api/current-user/whoami did not answer (see $LOGFILE)"
  echo "admin token refused by $URL; setting it for $USERNAME in $DATA_DIR" >&2
  django_run '
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from organizations.models import Organization
email, password, token = sys.argv[1:4]
User = get_user_model()
user = User.objects.filter(email=email).first()
if user is None:
    sys.exit("no user " + email + " in this data dir; remove the data dir or set MEDQ_LS_USERNAME")
Token.objects.filter(user=user).delete()
Token.objects.create(user=user, key=token)
for org in Organization.objects.all():
    jwt = getattr(org, "jwt", None)
    if jwt is not None and not jwt.legacy_api_tokens_enabled:
        jwt.legacy_api_tokens_enabled = True
        jwt.save()
' "$USERNAME" "$PASSWORD" "$TOKEN" || die "could not set the admin token in $DATA_DIR"
  token_works || die "admin token still refused by $URL after setting it"
}

cmd_start() {
  [ -x "$VENV/bin/label-studio" ] || die "Label Studio is not installed in $VENV (run: $0 install)"
  [ "${#TOKEN}" -le 40 ] || die "MEDQ_LS_TOKEN must be at most 40 characters"
  mkdir -p "$DATA_DIR"
  if pid_alive; then
    if health; then
      ensure_token
      echo "running $URL pid $(cat "$PIDFILE")"
      return 0
    fi
    die "a Label Studio process (pid $(cat "$PIDFILE")) is alive but $URL/health is not UP; run: $0 stop"
  fi
  rm -f "$PIDFILE"
  if port_busy; then
    die "port $PORT on $HOST is already in use by another program (set MEDQ_LS_PORT)"
  fi
  ls_env
  # setsid: own process group, so `stop` ends the server and its workers together.
  setsid "$VENV/bin/label-studio" start --no-browser --internal-host "$HOST" --port "$PORT" \
      --data-dir "$DATA_DIR" --username "$USERNAME" --password "$PASSWORD" \
      --user-token "$TOKEN" >>"$LOGFILE" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  local waited=0
  until health; do
    if ! pid_alive; then
      tail -n 30 "$LOGFILE" >&2 || true
      rm -f "$PIDFILE"
      die "Label Studio exited during start (log: $LOGFILE)"
    fi
    if [ "$waited" -ge "$START_TIMEOUT" ]; then
      tail -n 30 "$LOGFILE" >&2 || true
      cmd_stop >/dev/null 2>&1 || true
      die "Label Studio did not answer UP on $URL/health within ${START_TIMEOUT}s (log: $LOGFILE)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  ensure_token
  echo "running $URL pid $(cat "$PIDFILE")"
}

cmd_stop() {
  if ! pid_alive; then
    rm -f "$PIDFILE"
    echo "stopped"
    return 0
  fi
  local pid i
  pid="$(cat "$PIDFILE")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  echo "stopped"
}

cmd_status() {
  if pid_alive; then
    if [ -x "$VENV/bin/python" ] && health; then
      echo "running $URL pid $(cat "$PIDFILE")"
      return 0
    fi
    echo "unhealthy $URL pid $(cat "$PIDFILE")"
    return 1
  fi
  echo "stopped"
  return 3
}

cmd_user() {
  [ $# -eq 3 ] || { echo "usage: $0 user EMAIL PASSWORD TOKEN" >&2; exit 2; }
  [ -x "$VENV/bin/python" ] || die "Label Studio is not installed in $VENV (run: $0 install)"
  [ -d "$DATA_DIR" ] || die "no data dir $DATA_DIR (run: $0 start once)"
  [ "${#3}" -le 40 ] || die "token must be at most 40 characters"
  django_run '
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from organizations.models import Organization
email, password, token, admin = sys.argv[1:5]
User = get_user_model()
owner = User.objects.filter(email=admin).first()
org = owner.active_organization if owner is not None else Organization.objects.order_by("id").first()
if org is None:
    sys.exit("no organization in this data dir yet; start the server once first")
user = User.objects.filter(email=email).first()
if user is None:
    user = User.objects.create_user(email=email, password=password, username=email)
else:
    user.set_password(password)
    user.save()
org.add_user(user)
user.active_organization = org
user.save(update_fields=["active_organization"])
Token.objects.filter(user=user).exclude(key=token).delete()
Token.objects.get_or_create(user=user, key=token)
print("user", email, "id", user.id, "org", org.id)
' "$1" "$2" "$3" "$USERNAME"
}

cmd_env() {
  cat <<EOF
MEDQ_SERVICES_DIR=$SERVICES_DIR
MEDQ_LS_VENV=$VENV
MEDQ_LS_DATA_DIR=$DATA_DIR
MEDQ_LS_PORT=$PORT
MEDQ_LS_URL=$URL
MEDQ_LS_USERNAME=$USERNAME
MEDQ_LS_TOKEN=${TOKEN:0:4}****
MEDQ_LS_FILES_ROOT=$FILES_ROOT
MEDQ_LS_VERSION=$VERSION
EOF
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  user) shift; cmd_user "$@" ;;
  env) cmd_env ;;
  *) echo "usage: $0 install|start|stop|status|user EMAIL PASSWORD TOKEN|env" >&2; exit 2 ;;
esac
