"""A small headless-Chromium driver (DevTools protocol) to check the rendered dashboard.

Used by the browser test and the load benchmark, not by the app. A Streamlit page renders through
a websocket after the HTML loads, so :meth:`Browser.open` waits until the app reports that its
script finished (``data-test-script-state``), the app's end-of-script marker ("rendered <view>")
is on the page, every Vega chart has drawn and every image has loaded.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``infra/install.sh`` installs it)
and the ``websocket-client`` package.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from medq.errors import MedQError, require_extra

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-extensions", "--mute-audio", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "--remote-allow-origins=*")

# Evaluated in the page: is the Streamlit app done rendering? (JSON string)
_READY_JS = r"""(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return JSON.stringify({app: false});
  const marker = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
    .some(e => e.innerText.trim().startsWith('rendered '));
  const charts = [...document.querySelectorAll('.vega-embed')];
  return JSON.stringify({
    app: true,
    state: app.getAttribute('data-test-script-state'),
    connection: app.getAttribute('data-test-connection-state'),
    marker: marker,
    skeletons: document.querySelectorAll('[data-testid="stSkeleton"]').length,
    stale: document.querySelectorAll('[data-stale="true"]').length,
    charts: charts.length,
    chartsDrawn: charts.filter(c => c.querySelector('canvas, svg')).length,
    images: [...document.images].filter(i => !i.complete).length,
    exception: document.querySelectorAll('[data-testid="stException"]').length,
  });
})()"""


class BrowserError(MedQError):
    """Chromium is missing, did not start, or a page did not render in time."""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, width: int = 1440, height: int = 1000, binary: str | None = None):
        self.width, self.height = width, height
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise BrowserError("no Chromium found; install it with `apt-get install -y chromium` "
                               "(infra/install.sh does)")
        self._dir = Path(tempfile.mkdtemp(prefix="medq-chromium-"))
        self._proc: subprocess.Popen | None = None
        self._ws = None
        self._id = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Browser:  # noqa: PYI034 - a plain class, never subclassed
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, timeout_s: float = 30.0) -> None:
        websocket = require_extra("websocket", "dashboard", "the headless browser check")
        env = dict(os.environ, XDG_CONFIG_HOME=str(self._dir / "xdg"),
                   XDG_CACHE_HOME=str(self._dir / "xdg-cache"), HOME=str(self._dir))
        with open(self._dir / "chromium.log", "wb") as log:  # the child keeps its own fd
            self._proc = subprocess.Popen(
                [self.binary, *FLAGS, f"--user-data-dir={self._dir / 'profile'}",
                 f"--window-size={self.width},{self.height}", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=log, env=env)
        port_file = self._dir / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = (self._dir / "chromium.log").read_text(errors="replace")[-2000:]
                self.close()
                raise BrowserError(f"Chromium did not start ({self.binary}): {log}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                                   timeout=10))
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60,
                                               suppress_origin=True)
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.resize(self.width, self.height)

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001, S110 - closing anyway
                pass
            self._ws = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- protocol ----------------------------------------------------------------------------
    def call(self, method: str, **params) -> dict:
        """Send one DevTools command and return its result (events in between are dropped)."""
        self._id += 1
        my_id = self._id
        self._ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise BrowserError(f"{method} failed: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise BrowserError(f"script failed in the page: {res['exceptionDetails']}")
        return res.get("result", {}).get("value")

    def resize(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    # -- pages -------------------------------------------------------------------------------
    def open(self, url: str, timeout_s: float = 60.0) -> float:
        """Load `url` and wait until the Streamlit app has rendered. Returns the seconds from
        navigation to fully rendered."""
        start = time.monotonic()
        self.call("Page.navigate", url=url)
        self.wait_rendered(timeout_s, since=start)
        return time.monotonic() - start

    def state(self) -> dict:
        return json.loads(self.evaluate(_READY_JS) or "{}")

    def wait_rendered(self, timeout_s: float = 60.0, since: float | None = None,
                      settle_s: float = 0.3) -> None:
        """Wait until the app is connected, its script has finished with the end marker on the
        page, no element is stale, every chart has drawn and every image loaded; the state
        must hold for `settle_s`."""
        deadline = (since or time.monotonic()) + timeout_s
        ok_since = None
        last: dict = {}
        while time.monotonic() < deadline:
            try:
                last = self.state()
            except BrowserError:  # page navigating: no context yet
                last = {}
            if last.get("exception"):
                raise BrowserError(f"the app raised an exception: {self.text()[:2000]}")
            ready = (last.get("app") and last.get("state") == "notRunning" and last.get("marker")
                     and not last.get("skeletons") and not last.get("stale")
                     and last.get("chartsDrawn") == last.get("charts")
                     and not last.get("images"))
            if ready:
                ok_since = ok_since or time.monotonic()
                if time.monotonic() - ok_since >= settle_s:
                    return
            else:
                ok_since = None
            time.sleep(0.1)
        raise BrowserError(f"page did not finish rendering in {timeout_s:.0f} s (last state "
                           f"{last})")

    def text(self) -> str:
        """The visible text of the app's main area (the sidebar left out)."""
        return self.evaluate("(document.querySelector('[data-testid=\"stMain\"]') || "
                             "document.body).innerText") or ""

    def screenshot(self, path: str | os.PathLike, full_page: bool = True) -> Path:
        """PNG of the page; `full_page` grows the viewport to the app's content height first
        (Streamlit scrolls inside its main container, not the document)."""
        if full_page:
            h = self.evaluate("(() => { const m = document.querySelector("
                              "'[data-testid=\"stMainBlockContainer\"]'); return m ? "
                              "Math.ceil(m.getBoundingClientRect().top + m.scrollHeight) : "
                              "document.body.scrollHeight; })()") or self.height
            self.resize(self.width, max(self.height, int(h) + 40))
            time.sleep(0.5)  # let Vega re-layout to the new size
            self.wait_rendered(30)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        if full_page:
            self.resize(self.width, self.height)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
