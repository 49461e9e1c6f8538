"""Screenshot of a Label Studio task page with the Med-IQA interface (headless Chromium).

Usage::

    .venv/bin/python scripts/ls_screenshot.py [--out docs/img/labelstudio_task.png]
    .venv/bin/python scripts/ls_screenshot.py --url http://127.0.0.1:8080 --project 3 --task 17

Without ``--url`` it starts a private server through ``infra/labelstudio.sh`` (fresh data dir,
stopped after), builds a small workspace with CT phantom images (clean and low-dose), submits
them to the verify lane with the model's answer as a pre-annotation and photographs the first
(most uncertain) task. With ``--url`` it logs in as ``--admin`` / ``--password`` and photographs
``/projects/<project>/data?task=<task>``.

Chromium (Debian package ``chromium``; ``apt-get install -y chromium``) is driven through its
DevTools protocol over a websocket (the ``websockets`` package, a Prefect dependency): the page
renders with JavaScript after load, so a plain ``--screenshot`` would catch it half drawn.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--hide-scrollbars", "--remote-debugging-port=0"]
# Present once the labeling interface has drawn its controls next to the image.
READY_JS = """(() => {
  const img = [...document.querySelectorAll('img, canvas')].some(e => e.offsetWidth > 200);
  const txt = document.body ? document.body.innerText : '';
  return img && txt.includes('Overall verdict') && txt.includes('usable');
})()"""


def login_cookies(url: str, email: str, password: str) -> dict[str, str]:
    """Session cookies of `email` (the web login form, as a person signs in)."""
    with httpx.Client(base_url=url, follow_redirects=True, timeout=30) as s:
        s.get("/user/login/")
        s.post("/user/login/", data={"email": email, "password": password,
                                     "csrfmiddlewaretoken": s.cookies.get("csrftoken", "")},
               headers={"Referer": url + "/user/login/"})
        if s.get("/api/current-user/whoami").status_code != 200:
            sys.exit(f"could not log in to {url} as {email}")
        return {k: v for k, v in s.cookies.items()}


class Chromium:
    """A headless Chromium with a DevTools websocket (one page)."""

    def __init__(self, width: int, height: int):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            sys.exit("chromium not found: apt-get install -y chromium")
        self.profile = Path(tempfile.mkdtemp(prefix="medq-chromium-"))
        env = {**os.environ, "XDG_CONFIG_HOME": str(self.profile / "xdg"),
               "XDG_CACHE_HOME": str(self.profile / "xdg-cache")}
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                sys.exit("chromium did not open its DevTools port")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        from websockets.sync.client import connect
        self.ws = connect(ws_url, max_size=64 * 2**20, open_timeout=30)
        self._id = 0
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", expression=expression,
                         returnByValue=True).get("result", {}).get("value")

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort while shutting down
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def screenshot(url: str, cookies: dict[str, str], path: str, out: Path, *, width: int = 1600,
               height: int = 1000, timeout_s: float = 90) -> bool:
    """Open `url + path` with `cookies`, wait for the labeling interface, save a PNG to `out`.
    Returns whether the interface was detected before the timeout (the PNG is saved anyway)."""
    browser = Chromium(width, height)
    try:
        browser.send("Network.enable")
        for name, value in cookies.items():
            browser.send("Network.setCookie", name=name, value=value, url=url)
        browser.send("Page.enable")
        browser.send("Page.navigate", url=url + path)
        deadline = time.monotonic() + timeout_s
        ready = False
        while time.monotonic() < deadline:
            if browser.evaluate(READY_JS):
                ready = True
                break
            time.sleep(1.0)
        time.sleep(2.0)  # let the image finish decoding and the layout settle
        shot = browser.send("Page.captureScreenshot", format="png")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        return ready
    finally:
        browser.close()


def _phantoms(ws, n: int = 4) -> list[str]:
    """CT phantoms: clean, and with simulated low-dose noise of growing strength."""
    from PIL import Image
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    from medq.storage.objects import content_key
    base = resize(shepp_logan_phantom(), (320, 320), anti_aliasing=True)
    rng = np.random.default_rng(0)
    ids, rows = [], []
    for i in range(n):
        img = np.clip(base + rng.normal(0, 0.04 * i, base.shape), 0, 1)
        buf = io.BytesIO()
        Image.fromarray((img * 255).astype(np.uint8)).save(buf, "PNG")
        key = ws.objects.put_bytes(content_key(buf.getvalue()), buf.getvalue())
        ids.append(f"phantom{i}")
        rows.append({"image_id": ids[-1], "object_key": key, "modality": "CT"})
    ws.catalog.upsert("images", rows)
    return ids


def demo(out: Path) -> None:
    from labelstudio_io import TOKEN, _Server

    from medq.settings import load_settings
    from medq.storage.annotation.base import AnnotationRequest
    from medq.storage.labelstudio import LabelStudioBackend
    from medq.storage.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="medq-ls-shot-")).resolve()
    server = _Server(tmp)
    try:
        ws = Workspace.init(load_settings(workspace=tmp / "ws", labelstudio={
            "url": server.url, "token": TOKEN, "project_title": "MedQ demo",
            "local_files_root": str(tmp)}))
        ids = _phantoms(ws)
        backend = LabelStudioBackend(ws)
        reqs = [AnnotationRequest(
            task_id=f"r001:{iid}", round_id="r001", image_id=iid, lane="verify",
            uncertainty=0.35 + 0.15 * i, modality="CT",
            prediction={"verdict": "usable", "score": 0.62, "model_version": "lite-r000",
                        "degradations": [{"type": "low_dose", "level": 1}],
                        "description": "Grainy low-dose noise over the whole slice; edges still "
                                       "visible. Overall, the quality of this image is usable."})
            for i, iid in enumerate(ids)]
        sent = backend.submit(reqs)
        first = max(reqs, key=lambda r: r.uncertainty).task_id
        pid = backend.project_id("verify")
        cookies = login_cookies(server.url, "admin@medq.local", "medq-admin-pw")
        ready = screenshot(server.url, cookies, f"/projects/{pid}/data?task={sent[first]}", out)
        print(json.dumps({"out": str(out), "interface_detected": ready, "project": pid,
                          "task": int(sent[first])}))
        backend.close()
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "labelstudio_task.png")
    ap.add_argument("--url")
    ap.add_argument("--admin", default="admin@medq.local")
    ap.add_argument("--password", default="medq-admin-pw")
    ap.add_argument("--project", type=int)
    ap.add_argument("--task", type=int)
    args = ap.parse_args()
    if args.url is None:
        demo(args.out)
        return
    if args.project is None or args.task is None:
        ap.error("--url needs --project and --task")
    ready = screenshot(args.url.rstrip("/"), login_cookies(args.url, args.admin, args.password),
                       f"/projects/{args.project}/data?task={args.task}", args.out)
    print(json.dumps({"out": str(args.out), "interface_detected": ready}))


if __name__ == "__main__":
    main()
