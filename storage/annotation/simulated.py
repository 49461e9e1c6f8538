"""In-process simulated annotators: answer from ground truth with a configurable error rate.

Used by the demo, CI and benchmarks so the loop runs without services. Ground truth comes from
the catalog's `oracle_labels` (``simulated``) or from a labels JSONL file (``oracle:PATH``, lines
with ``image_id`` or ``image`` plus modality / verdict / degradations / description).

Answers are a pure function of (task id, annotator index, seed): submitting and pulling again,
or re-running a crashed round, yields the very same annotation records (stable ids), so nothing
is lost or counted twice. Label Studio lanes with real annotators use
:mod:`medq.storage.labelstudio` instead.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medq.engine.taxonomy import VERDICTS, verdict_sentence
from medq.errors import MedQError
from medq.storage.annotation.base import (
    AnnotationBackend,
    AnnotationRecord,
    AnnotationRequest,
    QueueStatus,
)

TruthLookup = Callable[[Sequence[str]], dict[str, dict]]


class SimulatedAnnotator(AnnotationBackend):
    """Annotates every submitted task at once. `truth(image_ids) -> {image_id: labels}`."""

    name = "simulated"

    def __init__(self, truth: TruthLookup, *, error_rate: float = 0.05, seed: int = 0,
                 name: str = "simulated"):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        self.truth = truth
        self.error_rate = error_rate
        self.seed = seed
        self.name = name
        self._tasks: dict[str, AnnotationRequest] = {}

    def submit(self, requests: Sequence[AnnotationRequest]) -> dict[str, str]:
        for req in requests:
            self._tasks[req.task_id] = req
        return {req.task_id: f"{self.name}:{req.task_id}" for req in requests}

    def status(self, task_ids: Sequence[str]) -> QueueStatus:
        known = [t for t in task_ids if t in self._tasks]
        return QueueStatus(total=len(task_ids), done=len(known), pending=len(task_ids) - len(known))

    def pull(self, task_ids: Sequence[str] | None = None) -> list[AnnotationRecord]:
        ids = list(self._tasks) if task_ids is None else [t for t in task_ids if t in self._tasks]
        requests = [self._tasks[t] for t in ids]
        truth = self.truth([r.image_id for r in requests])
        records = []
        for req in requests:
            labels = truth.get(req.image_id)
            if labels is None:
                raise MedQError(f"simulated annotator: no ground truth for image {req.image_id} "
                                f"(task {req.task_id})")
            for k in range(max(1, req.n_annotators)):
                records.append(self._annotate(req, labels, k))
        return records

    def _annotate(self, req: AnnotationRequest, labels: dict, k: int) -> AnnotationRecord:
        digest = hashlib.sha256(f"{self.seed}:{req.task_id}:{k}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        verdict = labels["verdict"]
        degradations = [dict(d) for d in labels.get("degradations") or []]
        description = labels.get("description") or ""
        erred = rng.random() < self.error_rate
        if erred:
            # A realistic slip: an adjacent verdict, and a severity misjudged.
            i = VERDICTS.index(verdict)
            verdict = VERDICTS[i + 1] if i == 0 else VERDICTS[i - 1]
            for d in degradations:
                d["level"] = 1 if int(d["level"]) == 2 else 2
            body = description.rsplit("Overall,", 1)[0].strip()
            description = f"{body} {verdict_sentence(verdict)}".strip()
        accepted = None
        if req.lane == "verify" and req.prediction:
            accepted = (req.prediction.get("verdict") == verdict)
        return AnnotationRecord(
            annotation_id=f"{self.name}:{req.task_id}:{k}", task_id=req.task_id,
            round_id=req.round_id, image_id=req.image_id, annotator=f"{self.name}-{k}",
            lane=req.lane, verdict=verdict, degradations=degradations, description=description,
            modality=labels.get("modality"), accepted_prediction=accepted,
            raw={"simulated_error": bool(erred)})


def catalog_truth(catalog) -> TruthLookup:
    """Ground truth from the catalog's oracle_labels table (pool images of a loaded world)."""
    from medq.storage.catalog import loads

    def lookup(image_ids: Sequence[str]) -> dict[str, dict]:
        rows = catalog.query("SELECT image_id, modality, verdict, degradations, description FROM "
                             "oracle_labels WHERE image_id IN (SELECT unnest(?::VARCHAR[]))",
                             [list(image_ids)])
        return {r["image_id"]: {**r, "degradations": loads(r["degradations"], [])} for r in rows}
    return lookup


def file_truth(path: Path, catalog, salt: Callable[[], str] | None = None) -> TruthLookup:
    """Ground truth from a labels JSONL. Lines name images by `image_id`, or by `image` (a path
    matched against the catalog's images.source_uri suffix). Files ingested with
    ``ingest.source_refs = pseudonymized`` hold no path: given `salt` (returns the
    de-identification salt), `image` also matches them when it is the file's path relative to
    the ingested folder or prefix."""
    path = Path(path)
    if not path.is_file():
        raise MedQError(f"oracle labels file not found: {path}")
    by_id: dict[str, dict] = {}
    by_name: dict[str, dict] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MedQError(f"{path}:{n}: not valid JSON: {exc}") from exc
        if "verdict" not in rec:
            raise MedQError(f"{path}:{n}: missing 'verdict'")
        if "image_id" in rec:
            by_id[rec["image_id"]] = rec
        elif "image" in rec:
            by_name[str(rec["image"])] = rec
        else:
            raise MedQError(f"{path}:{n}: needs 'image_id' or 'image'")

    pseudonyms: dict[str, str] = {}  # "/<rel pseudonym>" -> name, computed on first use

    def lookup(image_ids: Sequence[str]) -> dict[str, dict]:
        out = {i: by_id[i] for i in image_ids if i in by_id}
        rest = [i for i in image_ids if i not in out]
        if rest and by_name:
            if salt is not None and not pseudonyms:
                from medq.storage.ingest.deid import rel_pseudonym
                key = salt()
                if key:  # no salt yet: nothing was ingested pseudonymized
                    pseudonyms.update({"/" + rel_pseudonym(n.lstrip("/"), key): n
                                       for n in by_name})
            for r in catalog.query("SELECT image_id, source_uri FROM images WHERE image_id IN "
                                   "(SELECT unnest(?::VARCHAR[]))", [rest]):
                src = r["source_uri"] or ""
                for name, rec in by_name.items():
                    if src.endswith(name):
                        out[r["image_id"]] = rec
                        break
                else:
                    if src.startswith("ingest:") and "/" in src:
                        original = pseudonyms.get(src[src.index("/"):])
                        if original is not None:
                            out[r["image_id"]] = by_name[original]
        return out
    return lookup
