"""The engine chain on small images: embed -> discover -> budget -> anchors -> kNN -> select ->
route. Failures are blurred images; the retrieved candidates must be mostly blurred although the
pool holds blur as a minority (the point of failure-driven retrieval)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from medq.engine.discover import Failure, discover_prototypes
from medq.engine.embed import QualityEmbedder
from medq.engine.explore import (
    allocate_budget,
    anchor_queries,
    plan_anchors,
    retrieval_k,
    select_candidates,
)
from medq.engine.route import normalized_entropy, route_candidates
from medq.settings import LaneSettings


def _image(rng, kind):
    """Smooth 'anatomy' plus fine texture (so that blur removes something), then degraded."""
    f = ndimage.gaussian_filter(rng.normal(size=(64, 64)), rng.uniform(2, 5))
    f = (f - f.min()) / (np.ptp(f) + 1e-9)
    t = ndimage.gaussian_filter(rng.normal(size=(64, 64)), 0.8)
    f = 0.15 + 0.6 * f + 0.25 * (t - t.min()) / (np.ptp(t) + 1e-9)
    if kind == "blur":
        f = ndimage.gaussian_filter(f, 2.0)
    elif kind == "noise":
        f = f + rng.normal(0, 0.08, f.shape)
    elif kind == "dark":
        f = f * 0.35
    return np.clip(f, 0, 1).astype(np.float32)


def test_failure_driven_retrieval_beats_the_base_rate():
    import faiss
    rng = np.random.default_rng(0)
    pool_kinds = ["clean"] * 40 + ["noise"] * 34 + ["dark"] * 34 + ["blur"] * 14  # blur: 11 %
    pool = [_image(rng, k) for k in pool_kinds]
    eval_kinds = ["blur"] * 12 + ["noise"] * 3
    evals = [_image(rng, k) for k in eval_kinds]

    emb = QualityEmbedder(dims=16)
    pv = emb.fit_embed(pool)
    ev = emb.embed(evals)
    np.testing.assert_allclose(emb.embed(pool[:3]), pv[:3], atol=1e-4)  # batch-shape rounding
    fails = [Failure(f"e{i}", f"eimg{i}", "wrong_mcq", 1.0, "CT",
                     [{"type": k, "level": 2}] if k != "clean" else [], "How")
             for i, k in enumerate(eval_kinds)]
    res = discover_prototypes("r1", fails, ev, min_cluster_size=5, reduce_dims=6)
    top = res.prototypes[0]
    assert not top.is_noise and top.degradation == "blur"
    assert "blur" in top.summary

    budgets = allocate_budget(res.prototypes, 12)
    anchors = plan_anchors(res.prototypes, ev, per_prototype=3, budgets=budgets)
    q = anchor_queries(anchors)
    k = retrieval_k(budgets, anchors)
    d2, idx = faiss.knn(q, pv, k)
    ids = np.array([[f"p{j}" for j in row] for row in idx], dtype=object)
    vectors = {f"p{j}": pv[j] for j in range(len(pool))}
    labelled = {"p108", "p109"}  # two blurred pool images are already labelled
    cands = select_candidates(anchors, ids, np.sqrt(d2), budgets, vectors=vectors,
                              exclude=labelled, near_duplicate_distance=1e-4, diversity=0.2)
    assert len(cands) == 12 and not labelled & {c.image_id for c in cands}
    blur_share = np.mean([pool_kinds[int(c.image_id[1:])] == "blur" for c in cands])
    base_rate = pool_kinds.count("blur") / len(pool_kinds)
    assert blur_share >= 0.6 > 3 * base_rate, (blur_share, base_rate)

    # route: a confident model on blurred candidates is likely confidently wrong -> never auto
    # same-mode pool images lie at ~0.7-1.5 x the prototype radius (the 90th percentile of
    # 12 member distances underestimates the spread), other modes at > 2.2 x: factor 1.5
    lanes = LaneSettings(spot_check_rate=0.0, confidently_wrong_distance=1.5)
    ent = [normalized_entropy([0.97, 0.01, 0.01, 0.01])] * len(cands)
    cvec = np.stack([vectors[c.image_id] for c in cands])
    routed = route_candidates([c.image_id for c in cands], ent, lanes, budget=100.0,
                              vectors=cvec, prototypes=res.prototypes)
    lane = {r.image_id: r.lane for r in routed.routes}
    blurred = [c.image_id for c in cands if pool_kinds[int(c.image_id[1:])] == "blur"]
    assert sum(lane[i] == "verify" for i in blurred) >= 0.75 * len(blurred)
    assert all(lane[c.image_id] == "auto" for c in cands if c.image_id not in blurred)
