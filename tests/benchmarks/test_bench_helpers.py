"""The pure parts of the benchmark scripts: k-center greedy, curve arithmetic (first reach, area,
efficiency ratios), the runner's JSON parsing and the README table replacement. Fast (no loop)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_all
import sample_efficiency as se


def test_first_reach_interpolates_and_reports_never():
    xs, ys = [0, 60, 120], [0.50, 0.56, 0.62]
    assert se.first_reach(xs, ys, 0.53) == pytest.approx(30.0)
    assert se.first_reach(xs, ys, 0.50) == 0.0
    assert se.first_reach(xs, ys, 0.62) == pytest.approx(120.0)
    assert se.first_reach(xs, ys, 0.70) is None
    # non-monotone: the FIRST crossing counts
    assert se.first_reach([0, 60, 120], [0.5, 0.6, 0.55], 0.58) == pytest.approx(48.0)


def test_area_is_the_mean_accuracy_over_the_range():
    assert se.area([0, 10, 20], [0.5, 0.5, 0.5], 20) == pytest.approx(0.5)
    assert se.area([0, 10], [0.0, 1.0], 10) == pytest.approx(0.5)
    # cut at 5: mean of the line from 0 to 0.5 = 0.25
    assert se.area([0, 10], [0.0, 1.0], 5) == pytest.approx(0.25)


def _points(strategy, seed, accs, step=60):
    return [{"strategy": strategy, "seed": seed, "round": r, "annotations": r * step,
             "accuracy": a, "champion_accuracy": max(accs[:r + 1]), "pseudo_labels": 0,
             "cost": float(r * step)} for r, a in enumerate(accs)]


def test_summarize_ratio_auc_and_never_reached():
    curves = {"random": _points("random", 0, [0.50, 0.52, 0.54, 0.56, 0.58]),
              "engine": _points("engine", 0, [0.50, 0.58, 0.60, 0.61, 0.62]),
              "coreset": _points("coreset", 0, [0.50, 0.51, 0.52, 0.53, 0.54])}
    s = se.summarize(curves, [0], 4.0)
    eng = s["strategies"]["engine"]["accuracy"]
    # random needs 240 labels for 0.58, the engine 60: ratio 4
    assert eng["ratio"]["mean"] == pytest.approx(4.0)
    assert s["strategies"]["random"]["accuracy"]["ratio"]["mean"] == pytest.approx(1.0)
    assert s["strategies"]["coreset"]["accuracy"]["reached_random_final"] == "0/1 seeds"
    assert s["strategies"]["coreset"]["accuracy"]["ratio"]["mean"] is None
    assert eng["auc"]["mean"] > s["strategies"]["random"]["accuracy"]["auc"]["mean"]
    assert s["headline"]["target_met"] is True
    assert s["strategies"]["engine"]["mean_curve_ratio"]["accuracy"] == pytest.approx(4.0)


def test_parse_json_output_finds_the_printed_object():
    assert run_all.parse_json_output('{"a": 1}') == {"a": 1}
    text = 'warming up\nsome log line\n{\n  "x": 2,\n  "y": {"z": 3}\n}\n'
    assert run_all.parse_json_output(text) == {"x": 2, "y": {"z": 3}}
    assert run_all.parse_json_output("no json here") is None


def test_update_readme_replaces_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nbefore\n{run_all.START}\nold table\n{run_all.END}\nafter\n")
    assert run_all.update_readme(readme, "| new |\n")
    text = readme.read_text()
    assert "old table" not in text and "| new |" in text
    assert text.startswith("# T\n\nbefore\n") and text.endswith(f"{run_all.END}\nafter\n")
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not run_all.update_readme(plain, "| new |\n")
    assert plain.read_text() == "no markers\n"


def test_render_table_lists_results_and_missing():
    results = {"ingest_throughput": {"png": {"images_per_s": 40.0}, "dicom": {"images_per_s": 30.0},
                                     "png_reingest_noop": {"images_per_s": 300.0},
                                     "generated_at": "2026-01-02T00:00:00", "_mode": "quick"}}
    table = run_all.render_table(results, [{"name": "gpu_finetune", "status": "skipped",
                                            "reason": "CUDA is not available"}])
    assert "| ingest_throughput | PNG (images/s) | 40.0 | quick | 2026-01-02 |" in table
    assert "| gpu_finetune | - | CUDA is not available | - | - |" in table
