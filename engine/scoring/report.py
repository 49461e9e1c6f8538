"""Results tables in the VLMEvalKit style (one row per model, one column per split of the score).

The evaluation metrics dict (see :func:`medq.engine.scoring.evaluation.summarize`) becomes
(headers, rows) tables that the CLI renders with rich and the flow as a markdown artifact.
Accuracies are printed in percent with two decimals, as VLMEvalKit does; description scores on
their own 0-2 / 0-8 scales with three decimals.
"""
from __future__ import annotations

from medq.engine.scoring.description import DIMENSIONS

Table = tuple[str, list[str], list[list[str]]]  # title, headers, rows


def _pct(value) -> str:
    return "-" if value is None else f"{100.0 * float(value):.2f}"


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def mcq_tables(metrics: dict, model: str) -> list[Table]:
    """Perception accuracy tables (%): overall + per modality, per question type, per level."""
    mcq = metrics.get("mcq") or {}
    if not mcq.get("n"):
        return []
    tables: list[Table] = []
    head = ["Model", "Overall"] + list(mcq.get("per_modality", {}))
    row = [model, _pct(mcq.get("accuracy"))] + [_pct(v["accuracy"]) for v in
                                                mcq.get("per_modality", {}).values()]
    tables.append(("Perception accuracy (%) by modality", head, [row]))
    for key, title in (("per_type", "question type"), ("per_level", "degradation level")):
        groups = mcq.get(key) or {}
        if groups:
            tables.append((f"Perception accuracy (%) by {title}", ["Model"] + list(groups),
                           [[model] + [_pct(v["accuracy"]) for v in groups.values()]]))
    tables.append(("Perception calibration", ["Model", "N", "Correct", "ECE", "Mean entropy",
                                              "Unparsed"],
                   [[model, str(mcq["n"]), str(mcq["correct"]), _num(mcq.get("ece")),
                     _num(mcq.get("mean_entropy")), str(mcq.get("unparsed", 0))]]))
    return tables


def description_tables(metrics: dict, model: str) -> list[Table]:
    """Description (and paired description) scores: four dimensions 0-2 and overall 0-8."""
    tables: list[Table] = []
    headers = ["Model", "N"] + [d.replace("_", " ").title() for d in DIMENSIONS] + ["Overall (0-8)"]
    for key, title in (("description", "Description"), ("paired", "Paired description")):
        agg = metrics.get(key) or {}
        if not agg.get("n"):
            continue
        tables.append((f"{title} scores ({metrics.get('judge', 'judge')} judge)", headers,
                       [[model, str(agg["n"])] + [_num(agg.get(d)) for d in DIMENSIONS]
                        + [_num(agg.get("overall"))]]))
    return tables


def results_tables(metrics: dict, model: str) -> list[Table]:
    return mcq_tables(metrics, model) + description_tables(metrics, model)


def results_markdown(metrics: dict, model: str) -> str:
    """All tables as GitHub markdown (for a Prefect artifact or a report file)."""
    parts = [f"# MedQ evaluation: `{model}`", ""]
    for title, headers, rows in results_tables(metrics, model):
        parts += [f"### {title}", "", "| " + " | ".join(headers) + " |",
                  "|" + "|".join("---" for _ in headers) + "|"]
        parts += ["| " + " | ".join(r) + " |" for r in rows]
        parts.append("")
    if len(parts) == 2:
        parts.append("No evaluation items.")
    return "\n".join(parts)
