"""Altair chart builders for the dashboard: data frames in, charts out (no Streamlit, no I/O).

Conventions: rates and accuracies are shown in percent with the unit in the axis title; rounds
are ordinal ("start", "R1", "R2", ...) so there are no fractional round ticks; colours come from
:mod:`medq.dashboards.palette` only.
"""
from __future__ import annotations

import pandas as pd

from medq.errors import require_extra

require_extra("altair", "dashboard", "the dashboard's charts")
import altair as alt  # noqa: E402  (after the clear missing-extra error)

from medq.dashboards import palette  # noqa: E402

# Streamlit fits the whole chart (axes, titles, legend) into the height: leave room for them.
HEIGHT = 380


def round_label(position: int, first: int | None = None) -> str:
    """Axis label of a champion-timeline position: the start (before the first round) or R<n>."""
    return "start" if first is not None and position < first else f"R{int(position)}"


def _round_axis(title: str = "Round"):
    return alt.Axis(title=title, labelAngle=0)


def _labels(positions, first: int) -> list[str]:
    return [round_label(p, first) for p in sorted({int(p) for p in positions})]


def progress_chart(rounds: pd.DataFrame, metric: str) -> alt.LayerChart:
    """Champion score after every round (line) and each round's candidate (points coloured by
    the promotion decision, a dashed rule from the incoming model's score to the candidate's).

    `metric`: "accuracy" (MCQ accuracy, shown in %) or "description" (0-8 score)."""
    done = rounds[rounds["status"] == "done"].copy()
    if done.empty:
        return alt.LayerChart()
    pct = metric == "accuracy"
    k = 100.0 if pct else 1.0
    first = int(done["round_index"].min())
    champ = [{"label": "start", "position": first - 1,
              "value": done.iloc[0][f"{metric}_in"] * k, "series": "champion", "model":
              done.iloc[0]["model_in"]}]
    for r in done.itertuples(index=False):
        champ.append({"label": round_label(r.round_index), "position": r.round_index,
                      "value": getattr(r, f"champion_{metric}") * k, "series": "champion",
                      "model": r.model_out if r.promoted else r.model_in})
    champ = pd.DataFrame(champ).dropna(subset=["value"])
    cand = pd.DataFrame({
        "label": [round_label(i) for i in done["round_index"]],
        "in": done[f"{metric}_in"] * k, "value": done[f"{metric}_out"] * k,
        "series": done["decision"], "model": done["model_out"],
        "reason": done["promotion_reason"].fillna("")}).dropna(subset=["value"])
    order = _labels(champ["position"], first)
    title = "MCQ accuracy (%)" if pct else "Description score (0-8)"
    fmt = ".1f" if pct else ".2f"
    domain = ["champion", "promoted", "rejected"]
    colors = [palette.SERIES["champion"], palette.DECISION["promoted"], palette.DECISION["rejected"]]
    color = alt.Color("series:N", title=None, scale=alt.Scale(domain=domain, range=colors),
                      legend=alt.Legend(orient="bottom"))
    x = alt.X("label:O", sort=order, axis=_round_axis("After round"))
    y_scale = alt.Scale(zero=False, nice=True)  # rounds move a few points: don't squash them
    line = alt.Chart(champ).mark_line(point=alt.OverlayMarkDef(size=60), strokeWidth=2.5).encode(
        x=x, y=alt.Y("value:Q", title=title, scale=y_scale), color=color,
        tooltip=[alt.Tooltip("label:N", title="after"), alt.Tooltip("model:N", title="champion"),
                 alt.Tooltip("value:Q", title=title, format=fmt)])
    rule = alt.Chart(cand).mark_rule(strokeDash=[4, 3], strokeWidth=1.5).encode(
        x=x, y="in:Q", y2="value:Q", color=color)
    pts = alt.Chart(cand).mark_point(size=110, filled=True, shape="diamond").encode(
        x=x, y="value:Q", color=color,
        tooltip=[alt.Tooltip("label:N", title="round"), alt.Tooltip("model:N", title="candidate"),
                 alt.Tooltip("value:Q", title=title, format=fmt),
                 alt.Tooltip("series:N", title="decision"), alt.Tooltip("reason:N")])
    return (rule + line + pts).properties(height=HEIGHT)


def breakdown_bars(df: pd.DataFrame, dimension: str, start: int, latest: int) -> alt.Chart:
    """Horizontal grouped bars: accuracy (%) per group of `dimension` for the starting (faint)
    and the latest champion (solid), coloured per group from the palette. Horizontal so that
    long degradation names stay readable."""
    sub = df[(df["dimension"] == dimension) & df["position"].isin([start, latest])].copy()
    sub["when"] = ["start" if p == start else "latest" for p in sub["position"]]
    sub["accuracy_pct"] = sub["accuracy"] * 100.0
    sub["label"] = sub["group"].str.replace("_", " ")
    mapping, order = palette.DIMENSIONS[dimension]
    groups = palette.ordered(sub["group"], order)
    labels = [g.replace("_", " ") for g in groups]
    scale = palette.scale(mapping, groups, order)
    return alt.Chart(sub).mark_bar().encode(
        y=alt.Y("label:N", sort=labels, title=None,
                axis=alt.Axis(labelLimit=200, labelOverlap=False)),
        yOffset=alt.YOffset("when:N", sort=["start", "latest"]),
        x=alt.X("accuracy_pct:Q", title="MCQ accuracy (%)", scale=alt.Scale(domain=[0, 100])),
        color=alt.Color("group:N", scale=scale, legend=None),
        opacity=alt.Opacity("when:N", sort=["start", "latest"],
                            scale=alt.Scale(domain=["start", "latest"], range=[0.35, 1.0]),
                            legend=alt.Legend(title=None, orient="bottom")),
        tooltip=[alt.Tooltip("group:N", title=dimension), alt.Tooltip("when:N"),
                 alt.Tooltip("accuracy_pct:Q", title="accuracy (%)", format=".1f"),
                 alt.Tooltip("n:Q", title="questions")],
    ).properties(height=alt.Step(14))  # per start/latest bar


def breakdown_lines(df: pd.DataFrame, dimension: str, first: int) -> alt.Chart:
    """Accuracy (%) per group of `dimension` for every champion across rounds."""
    sub = df[df["dimension"] == dimension].copy()
    sub["label"] = [round_label(p, first) for p in sub["position"]]
    sub["accuracy_pct"] = sub["accuracy"] * 100.0
    mapping, order = palette.DIMENSIONS[dimension]
    groups = palette.ordered(sub["group"], order)
    return alt.Chart(sub).mark_line(point=True).encode(
        x=alt.X("label:O", sort=_labels(sub["position"], first), axis=_round_axis("After round")),
        y=alt.Y("accuracy_pct:Q", title="MCQ accuracy (%)", scale=alt.Scale(domain=[0, 100])),
        color=alt.Color("group:N", title=dimension, scale=palette.scale(mapping, groups, order)),
        tooltip=[alt.Tooltip("group:N", title=dimension), alt.Tooltip("label:N", title="after"),
                 alt.Tooltip("accuracy_pct:Q", title="accuracy (%)", format=".1f"),
                 alt.Tooltip("n:Q", title="questions")],
    ).properties(height=HEIGHT)


def description_lines(df: pd.DataFrame, first: int) -> alt.Chart:
    """Description score (0-8) per modality across rounds."""
    sub = df.copy()
    sub["label"] = [round_label(p, first) for p in sub["position"]]
    mods = palette.ordered(sub["modality"], palette.DIMENSIONS["modality"][1])
    return alt.Chart(sub).mark_line(point=True).encode(
        x=alt.X("label:O", sort=_labels(sub["position"], first), axis=_round_axis("After round")),
        y=alt.Y("overall:Q", title="Description score (0-8)", scale=alt.Scale(domain=[0, 8])),
        color=alt.Color("modality:N", scale=palette.scale(palette.MODALITY, mods)),
        tooltip=["modality:N", alt.Tooltip("label:N", title="after"),
                 alt.Tooltip("overall:Q", title="score (0-8)", format=".2f"), "n:Q"],
    ).properties(height=HEIGHT)


def lift_heatmap(lift: pd.DataFrame, first: int) -> alt.LayerChart:
    """Prototypes (rows) x champions (columns): error rate (%) of the prototype's member items.
    The column before a prototype's round is the model that failed on them ("before")."""
    # columns before the model that failed on the cluster say nothing about the round's effect
    sub = lift[lift["position"] >= lift["found_index"] - 1].copy()
    sub["stage"] = ["before" if p < f else "after" for p, f in zip(sub["position"],
                                                                     sub["found_index"])]
    # the column of the model that failed reads "R3 (before)" when one round is shown
    one_round = sub["found_index"].nunique() == 1
    sub["label"] = [round_label(p, first) + (" (before)" if one_round and st == "before" else "")
                    for p, st in zip(sub["position"], sub["stage"])]
    order = [lab for _, lab in sorted(set(zip(sub["position"], sub["label"])))]
    sub["error_pct"] = sub["error_rate"] * 100.0
    sub["cluster"] = [f"{p} · {m or '?'} · {(d or '?').replace('_', ' ')}"
                      for p, m, d in zip(sub["prototype_id"], sub["modality"], sub["degradation"])]
    clusters = list(dict.fromkeys(sub["cluster"]))
    x = alt.X("label:O", sort=order,
              axis=alt.Axis(title="Champion after round", labelAngle=0, orient="top"))
    y = alt.Y("cluster:N", sort=clusters, title=None,
              axis=alt.Axis(labelLimit=320, labelOverlap=False))
    base = alt.Chart(sub).encode(x=x, y=y)
    rect = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color("error_pct:Q", title="error rate (%)",
                        scale=alt.Scale(scheme="reds", domain=[0, 100])),
        tooltip=[alt.Tooltip("prototype_id:N", title="prototype"),
                 alt.Tooltip("summary:N"), alt.Tooltip("label:N", title="champion after"),
                 alt.Tooltip("stage:N", title="vs the round"),
                 alt.Tooltip("model_version:N", title="model"),
                 alt.Tooltip("error_pct:Q", title="error rate (%)", format=".0f"),
                 alt.Tooltip("n:Q", title="member items scored")])
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("error_pct:Q", format=".0f"),
        color=alt.condition("datum.error_pct > 55", alt.value("white"), alt.value("#222")))
    return (rect + text).properties(height=alt.Step(26))


def lift_status_bars(summary: pd.DataFrame) -> alt.Chart:
    """Per discovery round: how many of its prototypes are fixed / improving / still open."""
    order = ["fixed", "improving", "open"]
    colors = ["#2CA02C", "#F2B447", "#D62728"]
    counts = summary.groupby(["found_index", "status"], as_index=False).size()
    counts["label"] = [round_label(i) for i in counts["found_index"]]
    return alt.Chart(counts).mark_bar().encode(
        x=alt.X("label:O", sort=_labels(counts["found_index"], 0),
                axis=_round_axis("Round that found the cluster")),
        y=alt.Y("size:Q", title="prototypes (count)"),
        color=alt.Color("status:N", scale=alt.Scale(domain=order, range=colors),
                        legend=alt.Legend(title=None, orient="bottom")),
        order=alt.Order("status_rank:Q"),
        tooltip=[alt.Tooltip("label:N", title="found in"), "status:N",
                 alt.Tooltip("size:Q", title="prototypes")],
    ).transform_calculate(status_rank="indexof(['fixed','improving','open'], datum.status)"
                          ).properties(height=320)


def lane_bars(rounds: pd.DataFrame, what: str) -> alt.Chart:
    """Stacked bars per round by lane: `what` = "spend" (cost units) or "items" (count)."""
    done = rounds[rounds["status"] == "done"]
    rows = [{"label": round_label(r["round_index"]), "lane": lane,
             "value": r.get(f"{what}_{lane}")} for _, r in done.iterrows()
            for lane in palette.LANE_ORDER]
    df = pd.DataFrame(rows).dropna(subset=["value"])
    title = "spend (cost units)" if what == "spend" else "items routed (count)"
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("label:O", sort=[round_label(i) for i in done["round_index"]],
                axis=_round_axis()),
        y=alt.Y("value:Q", title=title),
        color=alt.Color("lane:N", scale=palette.scale(palette.LANE, df["lane"],
                                                      palette.LANE_ORDER),
                        legend=alt.Legend(title="lane", orient="bottom")),
        order=alt.Order("lane_rank:Q"),
        tooltip=[alt.Tooltip("label:N", title="round"), "lane:N",
                 alt.Tooltip("value:Q", title=title, format=",.1f")],
    ).transform_calculate(lane_rank="indexof(['expert','verify','auto'], datum.lane)"
                          ).properties(height=HEIGHT)


def spend_vs_accuracy(rounds: pd.DataFrame) -> alt.LayerChart:
    """Champion accuracy (%) against cumulative spend (cost units): what the money bought."""
    done = rounds[rounds["status"] == "done"]
    if done.empty:
        return alt.LayerChart()
    pts = [{"spend": 0.0, "accuracy": done.iloc[0]["accuracy_in"] * 100, "label": "start",
            "decision": "start"}]
    pts += [{"spend": r["cumulative_spend"], "accuracy": r["champion_accuracy"] * 100,
             "label": round_label(r["round_index"]), "decision": r["decision"]}
            for _, r in done.iterrows()]
    df = pd.DataFrame(pts).dropna(subset=["accuracy"])
    base = alt.Chart(df).encode(
        x=alt.X("spend:Q", title="cumulative spend (cost units)"),
        y=alt.Y("accuracy:Q", title="champion MCQ accuracy (%)", scale=alt.Scale(zero=False)))
    line = base.mark_line(color=palette.SERIES["champion"], interpolate="step-after")
    dots = base.mark_point(size=80, filled=True).encode(
        color=alt.Color("decision:N", scale=alt.Scale(
            domain=["start", "promoted", "rejected"],
            range=[palette.SERIES["champion"], palette.DECISION["promoted"],
                   palette.DECISION["rejected"]]), legend=alt.Legend(title=None, orient="bottom")),
        tooltip=[alt.Tooltip("label:N", title="after"),
                 alt.Tooltip("spend:Q", title="spend (units)", format=",.1f"),
                 alt.Tooltip("accuracy:Q", title="accuracy (%)", format=".1f")])
    labels = base.mark_text(dy=-12, fontSize=11).encode(text="label:N")
    return (line + dots + labels).properties(height=HEIGHT)


def yield_chart(rounds: pd.DataFrame) -> alt.Chart:
    """Failure yield of retrieved candidates vs the pool base rate per round (both % wrong)."""
    done = rounds[rounds["status"] == "done"]
    rows = [{"label": round_label(r["round_index"]), "series": name,
             "value": None if pd.isna(r[col]) else r[col] * 100.0}
            for _, r in done.iterrows()
            for name, col in (("failure yield", "failure_yield"),
                              ("pool base rate", "pool_base_rate"))]
    df = pd.DataFrame(rows).dropna(subset=["value"])
    domain = ["failure yield", "pool base rate"]
    return alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=60)).encode(
        x=alt.X("label:O", sort=[round_label(i) for i in done["round_index"]], axis=_round_axis()),
        y=alt.Y("value:Q", title="items the model gets wrong (%)",
                scale=alt.Scale(domain=[0, 100])),
        color=alt.Color("series:N", scale=alt.Scale(domain=domain, range=[
            palette.SERIES[d] for d in domain]), legend=alt.Legend(
                title=None, orient="bottom", symbolType="stroke", symbolStrokeWidth=3)),
        strokeDash=alt.StrokeDash("series:N", scale=alt.Scale(domain=domain,
                                                              range=[[1, 0], [5, 4]]),
                                  legend=None),
        tooltip=[alt.Tooltip("label:N", title="round"), "series:N",
                 alt.Tooltip("value:Q", title="% wrong", format=".1f")],
    ).properties(height=HEIGHT)


def efficiency_chart(curves: pd.DataFrame) -> alt.LayerChart:
    """Sample-efficiency curves: mean accuracy (%) vs annotations per strategy, band = min-max
    over seeds; the random baseline is grey and dashed."""
    from medq.storage.dashboard_queries import efficiency_curves
    df = efficiency_curves(curves)
    for c in ("mean", "low", "high"):
        df[c] = df[c] * 100.0
    strategies = list(dict.fromkeys(sorted(df["strategy"], key=lambda s: (s.lower() != "random", s))))
    colors = palette.strategy_colors(strategies)
    scale = alt.Scale(domain=strategies, range=[colors[s] for s in strategies])
    color = alt.Color("strategy:N", scale=scale, legend=alt.Legend(
        orient="bottom", title=None, symbolType="stroke", symbolStrokeWidth=3,
        symbolOpacity=1))
    dash = alt.StrokeDash("is_random:N", scale=alt.Scale(domain=[True, False],
                                                         range=[[6, 4], [1, 0]]), legend=None)
    df["is_random"] = df["strategy"].str.lower().str.startswith("random")
    x = alt.X("annotations:Q", title="annotations (count)")
    band = alt.Chart(df).mark_area(opacity=0.15).encode(
        x=x, y="low:Q", y2="high:Q", color=alt.Color("strategy:N", scale=scale, legend=None))
    line = alt.Chart(df).mark_line(point=True).encode(
        x=x, y=alt.Y("mean:Q", title="MCQ accuracy (%)", scale=alt.Scale(zero=False)),
        color=color, strokeDash=dash,
        tooltip=["strategy:N", alt.Tooltip("annotations:Q", format=",.0f"),
                 alt.Tooltip("mean:Q", title="mean accuracy (%)", format=".1f"),
                 alt.Tooltip("seeds:Q", title="seeds")])
    return (band + line).properties(height=HEIGHT)


def queue_bars(totals: pd.DataFrame) -> alt.Chart:
    """Tasks per lane stacked by status (count)."""
    lanes = palette.ordered(totals["lane"], palette.LANE_ORDER)
    statuses = palette.ordered(totals["status"], palette.STATUS_ORDER)
    return alt.Chart(totals).mark_bar().encode(
        y=alt.Y("lane:N", sort=lanes, title="lane"),
        x=alt.X("n:Q", title="tasks (count)", axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color("status:N", scale=palette.scale(palette.STATUS, statuses,
                                                        palette.STATUS_ORDER),
                        legend=alt.Legend(title="status", orient="bottom")),
        order=alt.Order("status_rank:Q"),
        tooltip=["lane:N", "status:N", alt.Tooltip("n:Q", title="tasks")],
    ).transform_calculate(
        status_rank="indexof(['queued','sent','done','failed','deleted'], datum.status)"
    ).properties(height=150 + 44 * len(lanes))


def queue_round_bars(by_round: pd.DataFrame) -> alt.Chart:
    """One bar per (round, lane), latest round on top, stacked by status (count)."""
    df = by_round.copy()
    lane_rank = {ln: i for i, ln in enumerate(palette.LANE_ORDER)}
    df["row"] = [f"{round_label(i)} · {ln}" for i, ln in zip(df["round_index"], df["lane"])]
    rows = [r for _, _, r in sorted({(-int(i), lane_rank.get(ln, 9), r) for i, ln, r in
                                     zip(df["round_index"], df["lane"], df["row"])})]
    statuses = palette.ordered(df["status"], palette.STATUS_ORDER)
    return alt.Chart(df).mark_bar().encode(
        y=alt.Y("row:N", sort=rows, title="round · lane", axis=alt.Axis(labelOverlap=False)),
        x=alt.X("n:Q", title="tasks (count)", axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color("status:N", scale=palette.scale(palette.STATUS, statuses,
                                                        palette.STATUS_ORDER),
                        legend=alt.Legend(title="status", orient="bottom")),
        order=alt.Order("status_rank:Q"),
        tooltip=[alt.Tooltip("row:N", title="round · lane"), "status:N",
                 alt.Tooltip("n:Q", title="tasks")],
    ).transform_calculate(
        status_rank="indexof(['queued','sent','done','failed','deleted'], datum.status)"
    ).properties(height=alt.Step(24))
