"""Run every benchmark script, collect the results and regenerate the README table.

``make bench`` = ``run_all.py`` (full mode), ``make bench-quick`` = ``run_all.py --quick``.

- Full-mode results go to ``benchmarks/results/<name>.json`` (+ plots), quick-mode results to
  ``benchmarks/results/quick/<name>.json``, so a quick run never replaces a full measurement.
  Scripts that only print JSON get their output written there by this runner (with machine
  info); scripts that write their own file get ``--out`` and a ``run_all`` block added.
- The table between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in README.md is
  regenerated from the results (a full result wins over a quick one; a ``mode`` column says
  which) and also written to ``benchmarks/results/summary.md``. Without the markers only the
  summary file is written.
- A benchmark whose precondition is missing (no CUDA for ``gpu_finetune``) is *skipped* and
  its earlier result, if any, is kept; a failing one is reported, the others still run, and
  the exit code is 1.

Usage::

    .venv/bin/python benchmarks/run_all.py --quick            # everything, quick (7-20 min)
    .venv/bin/python benchmarks/run_all.py                    # everything, full (hours)
    .venv/bin/python benchmarks/run_all.py --quick --only sample_efficiency,throughput
    .venv/bin/python benchmarks/run_all.py --table-only       # only regenerate the table
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS, ROOT, machine_info, now_iso, setup_paths, write_json

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Bench:
    """One benchmark script. `writes`: it writes its own JSON and takes ``--out``; otherwise it
    prints one JSON object that this runner stores. `skip`: given the parsed output, the reason
    it did not measure (precondition missing), else None."""

    name: str
    quick: list[str]
    full: list[str]
    writes: bool
    timeout_quick: int = 1200
    timeout_full: int = 3600
    skip: Callable[[dict], str | None] | None = None
    extra: list[str] = field(default_factory=list)


def _gpu_skip(out: dict) -> str | None:
    return None if out.get("ok", True) else str(out.get("reason") or "no CUDA")


BENCHMARKS: list[Bench] = [
    Bench("sample_efficiency", ["--quick"], [], True, 900, 6 * 3600),
    Bench("throughput", ["--quick"], [], True, 900, 3600),
    Bench("ingest_throughput", ["--n", "50"], ["--n", "200"], False),
    Bench("lite_train", ["--n", "1000"], ["--n", "5000"], False),
    Bench("manifest_build", ["--size", "100000"], ["--size", "1000000", "--register"], False,
          1200, 3 * 3600),
    Bench("pool_scale", ["--quick"], [], True, 1800, 3 * 3600),
    Bench("dashboard_load", ["--pool", "100000", "--rounds", "10", "--no-browser"], [], True,
          1200, 3600),
    Bench("labelstudio_io", ["--n", "500"], [], True, 1800, 3600),
    Bench("gpu_finetune", [], [], False, 1800, 3600, skip=_gpu_skip),
]
NAMES = [b.name for b in BENCHMARKS]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def result_path(name: str, quick: bool) -> Path:
    return (RESULTS / "quick" if quick else RESULTS) / f"{name}.json"


def parse_json_output(text: str) -> dict | None:
    """The JSON object a script printed (the whole stdout, or its last top-level ``{`` block)."""
    text = text.strip()
    try:
        obj = json.loads(text)
        return obj if isinstance(obj, dict) else None
    except ValueError:
        pass
    starts = [i for i in range(len(text)) if text[i] == "{" and (i == 0 or text[i - 1] == "\n")]
    for i in reversed(starts):
        try:
            obj = json.loads(text[i:])
            return obj if isinstance(obj, dict) else None
        except ValueError:
            continue
    return None


def run_one(b: Bench, quick: bool, machine: dict) -> dict:
    out_path = result_path(b.name, quick)
    args = list(b.quick if quick else b.full) + b.extra
    if b.writes:
        args += ["--out", str(out_path)]
    cmd = [sys.executable, str(BENCH_DIR / f"{b.name}.py"), *args]
    timeout = b.timeout_quick if quick else b.timeout_full
    log(f"{b.name}: {' '.join(cmd[1:])} (timeout {timeout} s)")
    t = time.perf_counter()
    record: dict[str, Any] = {"name": b.name, "mode": "quick" if quick else "full",
                              "args": args, "started": now_iso()}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env=os.environ.copy(), check=False)
    except subprocess.TimeoutExpired as exc:
        record.update(status="timeout", seconds=round(time.perf_counter() - t, 1),
                      reason=f"no result within {timeout} s",
                      stderr_tail=(exc.stderr or b"")[-2000:].decode(errors="replace")
                      if isinstance(exc.stderr, bytes) else str(exc.stderr or "")[-2000:])
        log(f"{b.name}: TIMEOUT")
        return record
    record["seconds"] = round(time.perf_counter() - t, 1)
    record["rc"] = proc.returncode
    output = parse_json_output(proc.stdout) if not b.writes else None
    started = time.time() - record["seconds"]
    if b.writes and proc.returncode == 0 and out_path.is_file() and \
            out_path.stat().st_mtime >= started - 1:  # written by this run, not an old file
        output = json.loads(out_path.read_text())
    reason = b.skip(output) if (b.skip and output is not None) else None
    if reason:
        record.update(status="skipped", reason=reason)
    elif proc.returncode != 0 or output is None:
        tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
        record.update(status="failed", reason=tail.splitlines()[-1] if tail else
                      f"exit code {proc.returncode}, no JSON output", stderr_tail=tail)
    else:
        record["status"] = "ok"
        body = dict(output)
        body.setdefault("benchmark", b.name)
        body.setdefault("generated_at", now_iso())
        body.setdefault("machine", machine)
        body["run_all"] = {"mode": record["mode"], "args": args, "seconds": record["seconds"],
                           "finished": now_iso()}
        write_json(out_path, body)
        record["result"] = str(out_path.relative_to(ROOT))
    log(f"{b.name}: {record['status']} in {record['seconds']} s"
        + (f" ({record.get('reason')})" if record.get("reason") else ""))
    return record


# -- the table ----------------------------------------------------------------------------------

def load_results() -> dict[str, dict]:
    """name -> result dict (full preferred over quick), with ``_mode`` and ``_path`` added."""
    out = {}
    for name in NAMES:
        for quick in (False, True):
            p = result_path(name, quick)
            if p.is_file():
                try:
                    data = json.loads(p.read_text())
                except ValueError:
                    continue
                mode = (data.get("run_all") or {}).get("mode") or data.get("mode") or (
                    (data.get("params") or {}).get("mode")) or ("quick" if quick else "full")
                mtime = time.strftime("%Y-%m-%d", time.gmtime(p.stat().st_mtime))
                out[name] = {**data, "_mode": mode, "_path": str(p.relative_to(ROOT)),
                             "_mtime": mtime}
                break
    return out


def _g(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _f(x, fmt="{:.1f}", unit=""):
    if x is None:
        return "-"
    try:
        return fmt.format(x) + unit
    except (ValueError, TypeError):
        return str(x)


def _when(d: dict) -> str:
    w = (d.get("generated_at") or d.get("when") or d.get("finished") or d.get("started")
         or d.get("_mtime") or "")
    return str(w)[:10]


def _ms(d: dict | None, scale=1.0, fmt="{:.1f}") -> str:
    if not d or d.get("mean") is None:
        return "-"
    s = fmt.format(scale * d["mean"])
    return s + ("" if d.get("std") is None else " ± " + fmt.format(scale * d["std"]))


def sample_efficiency_section(d: dict) -> list[str]:
    from sample_efficiency import markdown_table
    p, s = d.get("params", {}), d.get("summary", {})
    intro = (f"**Sample efficiency** ({d['_mode']} mode, {_when(d)}): {p.get('world')}; "
             f"{len(p.get('seeds', []))} seed(s) x {p.get('rounds')} rounds x {p.get('budget')} "
             f"cost units per round; {p.get('candidates')} items scored per round; backend "
             f"{p.get('backend')}; simulated annotators (5 % error). Labels = human labels added "
             "to training (expert + verify lanes; pseudo-labels apart); accuracy = eval MCQ "
             "accuracy of the model trained in the round; ratio = labels (or cost units) random "
             "needs / the strategy needs to first reach random's final accuracy (mean ± std over "
             "the seeds that reach it; `mean curve`: on the seed-averaged curves).")
    lines = [intro, ""]
    if s.get("strategies"):
        lines.append(markdown_table(s))
    h = s.get("headline") or {}
    if h:
        verdict = "met" if h.get("target_met") else "not met"
        lines += ["", (f"Engine vs random: **{_f(h.get('engine_vs_random_ratio_mean'), '{:.2f}')}x "
                       f"per label** (± {_f(h.get('engine_vs_random_ratio_std'), '{:.2f}')}; "
                       f"reached random's final accuracy in {h.get('engine_reached_random_final')};"
                       f" mean curve {_f(h.get('engine_vs_random_ratio_mean_curve'), '{:.2f}')}x), "
                       f"{_f(h.get('engine_vs_random_cost_ratio_mean'), '{:.2f}')}x per cost unit; "
                       f"target {h.get('target_ratio')}x: **{verdict}** (benchmarks/README.md "
                       "explains why and what would fix it).")]
    strong = RESULTS / "sample_efficiency_strong_seed.json"
    if d.get("_mode") == "full" and strong.is_file():
        lines += ["", strong_seed_line(json.loads(strong.read_text()))]
    if d.get("plot"):
        lines += ["", f"![sample efficiency]({d['plot']})"]
    return lines


def strong_seed_line(d: dict) -> str:
    """One sentence on the supplementary strong-seed run (sample_efficiency_strong_seed.json)."""
    p, st = d.get("params", {}), (d.get("summary") or {}).get("strategies") or {}

    def ratios(name: str) -> str:
        s = st.get(name) or {}
        lab = (s.get("accuracy") or {}).get("ratio")
        cost = (s.get("accuracy_vs_cost") or {}).get("ratio")
        return (f"{_ms(lab, fmt='{:.2f}')}x per label, {_ms(cost, fmt='{:.2f}')}x per cost unit "
                f"({(s.get('accuracy') or {}).get('reached_random_final', '-')})")
    acc0 = [m.get("accuracy") for m in (d.get("seed_models") or {}).values()
            if m.get("accuracy") is not None]
    start = f"{100 * min(acc0):.0f}-{100 * max(acc0):.0f} %" if acc0 else "?"
    return (f"Supplementary, strong seed model ({p.get('world')}; seed models at {start}; "
            f"{len(p.get('seeds', []))} seeds x {p.get('rounds')} rounds, "
            f"`benchmarks/results/sample_efficiency_strong_seed.json`): engine {ratios('engine')}; "
            f"retrieval {ratios('retrieval')}.")


def rows_for(name: str, d: dict) -> list[tuple[str, str]]:
    """(metric, value) rows of one benchmark's headline numbers."""
    r: list[tuple[str, str]] = []
    if name == "throughput":
        r += [("ingest PNG 256 px (images/s)", _f(_g(d, "ingest", "png_256", "images_per_s"))),
              ("ingest DICOM CT 128 px (images/s)", _f(_g(d, "ingest", "dicom_ct_128", "images_per_s"))),
              ("embedding, in memory (images/s)", _f(_g(d, "embedding", "in_memory_images_per_s"))),
              ("embedding, embed_pool from the object store (images/s)",
               _f(_g(d, "embedding", "embed_pool_images_per_s"))),
              ("lite scoring, verdict question, new images (items/s)",
               _f(_g(d, "scoring", "cold_features_items_per_s"))),
              ("lite scoring, cached features (items/s)",
               _f(_g(d, "scoring", "cached_features_items_per_s")))]
        steps = d.get("round_step_seconds_mean") or {}
        loop = d.get("loop") or {}
        if steps:
            w = loop.get("world") or {}
            r.append(((f"round steps, s (eval {w.get('eval_size')}, pool {w.get('pool_size')}, "
                       f"{loop.get('candidates')} candidates)"),
                      ", ".join(f"{k} {v:.1f}" for k, v in steps.items() if k not in ("open", "close"))))
            r.append(("round total, s", _f(sum(steps.values()))))
        if loop.get("engine_loop_flow_s") is not None:
            r.append(("same rounds via the engine_loop Prefect flow vs direct, s",
                      f"{loop['engine_loop_flow_s']:.1f} vs {loop.get('driver_rounds_s', 0):.1f}"))
    elif name == "ingest_throughput":
        r += [("PNG (images/s)", _f(_g(d, "png", "images_per_s"))),
              ("DICOM (images/s)", _f(_g(d, "dicom", "images_per_s"))),
              ("re-ingest no-op (images/s)", _f(_g(d, "png_reingest_noop", "images_per_s")))]
    elif name == "lite_train":
        r += [(f"train {d.get('n')} images from scratch, wall / CPU s",
               f"{_f(d.get('train_wall_s'))} / {_f(d.get('train_cpu_s'))}"),
              ("warm fine-tune, wall s", _f(d.get("warm_train_wall_s"))),
              ("hold-out accuracy", _f(d.get("holdout_accuracy"), "{:.3f}"))]
    elif name == "manifest_build":
        r += [(f"build {d.get('rows')} rows (rows/s)", _f(d.get("rows_per_second"), "{:.0f}")),
              ("size (bytes/row)", _f(d.get("bytes_per_row"))),
              ("render on demand (images/s)", _f(d.get("render_images_per_second")))]
        if d.get("register_rows_per_second") is not None:
            r.append(("register into the catalog (rows/s)",
                      _f(d.get("register_rows_per_second"), "{:.0f}")))
    elif name == "pool_scale":
        r.append(("embedding (images/s)", _f(_g(d, "embedding", "images_per_s"))))
        for s in d.get("sizes") or []:
            for k in s.get("kinds") or []:
                # IVF-PQ: the engine re-ranks PQ hits with the stored exact vectors, so the row shows the
                # re-ranked search (what a round gets) with the raw PQ recall in brackets
                rr = k.get("recall@10_reranked") is not None
                ms = k.get("round_search_ms_reranked") if rr else k.get("round_search_ms")
                recall = (f"{_f(k['recall@10_reranked'], '{:.3f}')} (PQ codes alone "
                          f"{_f(k.get('recall@10'), '{:.3f}')})" if rr
                          else _f(k.get("recall@10"), "{:.3f}"))
                kind = f"{k.get('kind')}{' + exact re-rank' if rr else ''}"
                r.append(((f"{s['n']:,} vectors, {kind}: build s / RSS MiB / round "
                           "search ms / recall@10"),
                          (f"{_f(k.get('build_s'))} / {_f(k.get('rss_delta_mib'), '{:.0f}')} / "
                           f"{_f(ms)} / {recall}")))
            sc = s.get("scoring") or {}
            if sc:
                r.append((f"{s['n']:,} vectors: candidates scored per round (share of pool)",
                          f"{sc.get('candidates_scored')} ({_f(100 * sc['scored_fraction_of_pool'], '{:.3f}')} %)"
                          if sc.get("scored_fraction_of_pool") is not None else "-"))
        if d.get("hdbscan"):
            h = d["hdbscan"]
            r.append((f"HDBSCAN on {h.get('failures'):,} failures, s", _f(h.get("seconds"))))
    elif name == "dashboard_load":
        p = d.get("params") or {}
        pages = _g(d, "page_load", "pages") or {}
        fns = d.get("data_functions_uncached") or {}
        r.append((f"catalog of {p.get('pool', 0):,} items / {p.get('rounds')} rounds: build s",
                  _f(_g(d, "catalog", "build_s"))))
        if fns:
            worst = max(fns.items(), key=lambda kv: kv[1].get("median_ms", 0))
            r.append(("slowest data function, median ms", f"{worst[0]} {worst[1].get('median_ms')}"))
        if pages:
            r.append(("page load, slowest cold / warm s",
                      (f"{max(v.get('cold_s', 0) for v in pages.values()):.1f} / "
                       f"{max(v.get('warm_s', 0) for v in pages.values()):.1f}")))
    elif name == "labelstudio_io":
        r += [(f"import {d.get('n')} tasks (tasks/s)", _f(d.get("import_tasks_per_s"))),
              (f"pull {d.get('n')} annotations (annotations/s)", _f(d.get("pull_annotations_per_s")))]
    elif name == "gpu_finetune":
        r += [("LoRA fine-tune (samples/s)", _f(d.get("samples_per_s"), "{:.2f}")),
              ("peak GPU memory (GiB)", _f(d.get("peak_memory_gib"), "{:.2f}")),
              ("answering (questions/s)", _f(d.get("answer_questions_per_s")))]
    elif name == "sample_efficiency":
        h = _g(d, "summary", "headline") or {}
        r.append(("engine vs random sample-efficiency ratio",
                  (f"{_f(h.get('engine_vs_random_ratio_mean'), '{:.2f}')}x (target "
                   f"{h.get('target_ratio')}x)")))
    return r


def render_table(results: dict[str, dict], runs: list[dict] | None = None) -> str:
    machines = [d["machine"] for d in results.values() if isinstance(d.get("machine"), dict)]
    m = next((x for x in machines if x.get("cpu")), machines[0] if machines else {})
    cores = m.get("cores") or m.get("cpu_count") or m.get("cpus") or "?"
    lines = [(f"_Generated by `benchmarks/run_all.py` ({now_iso()[:16].replace('T', ' ')} UTC) "
              "from `benchmarks/results/*.json`. Machine of the latest results: "
              f"{m.get('cpu') or '?'}, {cores} cores, {m.get('mem_gib') or '?'} GiB; numbers "
              "depend on the machine and its load (shared 2-core machine here)._"), ""]
    if "sample_efficiency" in results:
        lines += sample_efficiency_section(results["sample_efficiency"]) + [""]
    lines += ["| benchmark | metric | value | mode | measured |", "|---|---|---|---|---|"]
    for name in NAMES:
        if name == "sample_efficiency" or name not in results:
            continue
        d = results[name]
        for metric, value in rows_for(name, d):
            lines.append(f"| {name} | {metric} | {value} | {d['_mode']} | {_when(d)} |")
    missing = [n for n in NAMES if n not in results]
    status = {r["name"]: r for r in runs or []}
    for n in missing:
        why = status.get(n, {}).get("reason") or "not run yet"
        lines.append(f"| {n} | - | {str(why)[:120].replace('|', '/')} | - | - |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str) -> bool:
    """Replace what is between the markers; False when the markers are missing."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        return False
    new = text[:i + len(START)] + "\n" + table + text[j:]
    if new != text:
        tmp = readme.with_name(f".{readme.name}.tmp")
        tmp.write_text(new)
        os.replace(tmp, readme)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help=f"comma-separated subset of {NAMES}")
    ap.add_argument("--skip", help="comma-separated benchmarks not to run")
    ap.add_argument("--table-only", action="store_true", help="regenerate the table, run nothing")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args(argv)
    setup_paths()
    os.environ.setdefault("PREFECT_HOME", str(ROOT / ".medq" / "prefect"))
    chosen = NAMES
    if args.only:
        chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    skip = {n.strip() for n in (args.skip or "").split(",") if n.strip()}
    unknown = [n for n in list(chosen) + list(skip) if n not in NAMES]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {NAMES}")
    runs: list[dict] = []
    if not args.table_only:
        machine = machine_info()
        t = time.perf_counter()
        for b in BENCHMARKS:
            if b.name in chosen and b.name not in skip:
                runs.append(run_one(b, args.quick, machine))
        write_json(RESULTS / ("quick" if args.quick else "") / "run_all.json",
                   {"benchmark": "run_all", "generated_at": now_iso(), "machine": machine,
                    "mode": "quick" if args.quick else "full",
                    "seconds": round(time.perf_counter() - t, 1), "runs": runs})
    status_runs = runs
    if args.table_only:  # why a benchmark has no result: the latest run_all status (full first)
        status_runs = []
        for f in (RESULTS / "quick" / "run_all.json", RESULTS / "run_all.json"):
            if f.is_file():
                status_runs += json.loads(f.read_text()).get("runs") or []
    table = render_table(load_results(), status_runs)
    (RESULTS / "summary.md").write_text(table)
    if update_readme(args.readme, table):
        log(f"updated the table in {args.readme}")
    else:
        log(f"{args.readme} has no {START} ... {END} markers: table written to "
            f"{RESULTS / 'summary.md'} only")
    print(table)
    failed = [r for r in runs if r["status"] in ("failed", "timeout")]
    for r in runs:
        log(f"{r['name']:18s} {r['status']:8s} {r.get('seconds', '-')} s "
            f"{r.get('reason', '') or ''}"[:300])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
