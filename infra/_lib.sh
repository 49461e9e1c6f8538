# Shared helpers for infra/s3.sh and infra/prefect.sh (sourced, not run).
#
# Contract of every service script (same as infra/labelstudio.sh):
#   start   start in the background (pid file + log under the services dir), wait until healthy,
#           print `running <url> pid <pid>`; already running: same line, rc 0.
#   stop    stop the whole process group; prints `stopped`.
#   status  `running <url> pid <pid>` (rc 0), `stopped` (rc 3),
#           `unhealthy <url> pid <pid>` (rc 1: process alive, health check failing).
# Exit codes: 0 ok, 1 failure (message on stderr), 2 usage, 3 stopped (status only).
# Everything listens on 127.0.0.1 only.
set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$INFRA_DIR/.." && pwd)"
SERVICES_DIR="${MEDQ_SERVICES_DIR:-$REPO/.services}"
HOST=127.0.0.1

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# The Python whose environment has the service packages: $MEDQ_PYTHON, the repo venv, python3.
medq_python() {
  if [ -n "${MEDQ_PYTHON:-}" ]; then echo "$MEDQ_PYTHON"
  elif [ -x "$REPO/.venv/bin/python" ]; then echo "$REPO/.venv/bin/python"
  else command -v python3 || die "no python3 found (set MEDQ_PYTHON)"
  fi
}

# An executable installed next to that Python (console scripts), else one on PATH.
find_tool() {
  local bin
  bin="$(dirname "$(medq_python)")/$1"
  if [ -x "$bin" ]; then echo "$bin"; return 0; fi
  command -v "$1" 2>/dev/null || return 1
}

port_busy() {  # rc 0 when something already listens on HOST:$1
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

http_get() {  # body of GET $1 (3 s timeout); rc != 0 on any failure
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 3 "$1" 2>/dev/null
  else
    "$(medq_python)" -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())' "$1" 2>/dev/null
  fi
}

# svc_* use: NAME, PIDFILE, LOGFILE, URL, and a function `healthy` (rc 0 when healthy).
svc_pid() { cat "$PIDFILE" 2>/dev/null || true; }

svc_alive() {
  local pid
  pid="$(svc_pid)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

svc_start() {  # svc_start TIMEOUT_S COMMAND...
  local timeout="$1"; shift
  mkdir -p "$(dirname "$PIDFILE")"
  if svc_alive; then
    healthy || die "a $NAME process (pid $(svc_pid)) is alive but not healthy at $URL; run: $0 stop"
    echo "running $URL pid $(svc_pid)"
    return 0
  fi
  rm -f "$PIDFILE"
  if port_busy "$PORT"; then
    die "port $PORT on $HOST is already in use by another program (choose another port)"
  fi
  # setsid: own process group, so `stop` ends the server and any workers together.
  if command -v setsid >/dev/null 2>&1; then
    setsid "$@" >>"$LOGFILE" 2>&1 </dev/null &
  else
    nohup "$@" >>"$LOGFILE" 2>&1 </dev/null &
  fi
  echo $! >"$PIDFILE"
  local waited=0
  until healthy; do
    if ! svc_alive; then
      tail -n 30 "$LOGFILE" >&2 || true
      rm -f "$PIDFILE"
      die "$NAME exited during start (log: $LOGFILE)"
    fi
    if [ "$waited" -ge "$((timeout * 5))" ]; then
      tail -n 30 "$LOGFILE" >&2 || true
      svc_stop >/dev/null 2>&1 || true
      die "$NAME did not become healthy at $URL within ${timeout}s (log: $LOGFILE)"
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  echo "running $URL pid $(svc_pid)"
}

svc_stop() {
  if ! svc_alive; then
    rm -f "$PIDFILE"
    echo "stopped"
    return 0
  fi
  local pid i
  pid="$(svc_pid)"
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

svc_status() {
  if svc_alive; then
    if healthy; then
      echo "running $URL pid $(svc_pid)"
      return 0
    fi
    echo "unhealthy $URL pid $(svc_pid)"
    return 1
  fi
  echo "stopped"
  return 3
}
