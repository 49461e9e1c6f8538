#!/usr/bin/env bash
# Install what the local services need; idempotent (checks first, installs only what is missing).
#   - moto[server] and prefect in the project's Python environment (normally already there from
#     `pip install -e ".[all,dev]"`),
#   - Label Studio in its own venv, via infra/labelstudio.sh install (when that script exists).
# Environment: MEDQ_PYTHON, MEDQ_SERVICES_DIR (see infra/_lib.sh), MEDQ_SKIP_LABELSTUDIO=1 to skip
# Label Studio.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

PY="$(medq_python)"
mkdir -p "$SERVICES_DIR"
echo "medq infra: python $PY, services dir $SERVICES_DIR"

have() {  # have MODULE... : rc 0 when every module is importable (found, not imported: fast)
  "$PY" -c 'import importlib.util as u, sys
sys.exit(0 if all(u.find_spec(m) for m in sys.argv[1:]) else 1)' "$@" >/dev/null 2>&1
}
need() {  # need PIP_SPEC MODULE...
  local spec="$1"; shift
  if have "$@"; then
    echo "  ok: $spec"
  else
    echo "  installing $spec ..."
    "$PY" -m pip install -q --disable-pip-version-check "$spec" || die "pip install $spec failed"
    have "$@" || die "$spec installed but $* still not importable with $PY"
  fi
}
need "moto[server]>=5.0" moto flask flask_cors
need "prefect>=3.4,<4" prefect
command -v curl >/dev/null 2>&1 || echo "  note: curl not found; health checks fall back to python"

# --- Headless Chromium + websocket-client: the dashboard's browser test and load benchmark
# (tests/e2e/test_dashboard_browser.py, benchmarks/dashboard_load.py) drive Debian's chromium
# through the DevTools protocol. Idempotent: installs only what is missing; MEDQ_SKIP_CHROMIUM=1
# skips it; without root or apt-get it only prints how to install it (the browser test skips).
need "websocket-client>=1.6" websocket
if [ "${MEDQ_SKIP_CHROMIUM:-0}" = "1" ]; then
  echo "  skipped: chromium (MEDQ_SKIP_CHROMIUM=1)"
elif command -v chromium >/dev/null 2>&1; then
  echo "  ok: chromium"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "  installing chromium (apt-get) ..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
    || die "apt-get install chromium failed"
else
  echo "  note: chromium not installed; as root: apt-get install -y chromium (dashboard browser test)"
fi

if [ "${MEDQ_SKIP_LABELSTUDIO:-0}" = "1" ]; then
  echo "  skipped: Label Studio (MEDQ_SKIP_LABELSTUDIO=1)"
elif [ -f "$INFRA_DIR/labelstudio.sh" ]; then
  bash "$INFRA_DIR/labelstudio.sh" install
else
  echo "  skipped: Label Studio (infra/labelstudio.sh not present)"
fi
echo "medq infra: ready"
