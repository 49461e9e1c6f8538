"""Label Studio annotation lanes: projects, task import, progressive pull, catalog upsert.

- :mod:`.client`: the retrying connection to one server (label-studio-sdk plus raw endpoints);
- :mod:`.label_configs`: the labelling interfaces (XML) and result <-> labels conversion;
- :mod:`.backend`: :class:`LabelStudioBackend` (projects, views, storage, submit, pull);
- :mod:`.catalog_sync`: :func:`pull_into_catalog` (annotations, history, quarantine, deletions
  in one catalog transaction);
- :mod:`.batch_wait`: :func:`wait_for_batch` (bounded polling, progressive pulls).

Projects (one per kind of work, not one per lane label, because what differs is project-level in
Label Studio: whether pre-annotations are shown and how many annotators each task gets):

- ``<title> · expert``: blind full annotation (no model answer shown, so experts are not
  anchored by it); ``maximum_annotations`` = the consensus size N (``annotation.consensus``).
- ``<title> · verify``: the model's answer is imported as a prediction (``model_version``,
  ``score``) and pre-fills the interface; the annotator accepts or corrects it. Auto-lane spot
  checks go here too (same work; the task's ``lane`` data field stays ``auto`` and a view lists them).
- ``<title> · paired``: two images side by side, which one is better and why.

Each project carries a "Most uncertain first" view sorted by ``-data.uncertainty``, and every batch
is imported in descending uncertainty, so both the Data Manager and the label stream (sequential
sampling) serve the hardest items first. Task data: ``image`` (a URL the server can reach, see
``labelstudio.image_access``), ``header``, ``task_id``, ``image_id``, ``round``, ``lane``,
``uncertainty``, ``modality``.

Idempotency: ``submit`` looks a task up in the catalog's ``annotation_tasks`` (external id) and
then in Label Studio (tasks of the round carrying the ``task_id`` in their data) before importing;
an import that fails half-way is re-checked before it is retried, so no task is created twice.
``pull`` fetches only tasks updated since the previous pull (the server's ``updated_at``; the first
pull of a process fetches every annotated task) and returns every submitted annotation of the
asked tasks. :func:`pull_into_catalog` upserts them (one row per annotation, history on edits,
quarantine for incomplete ones; paired comparisons too, with ``better`` and ``image_b_id``),
removes the rows of annotations deleted in Label Studio (history keeps them) and marks deleted
tasks, all in one transaction after all network calls have succeeded.
"""
from __future__ import annotations

from medq.storage.labelstudio.backend import (
    BACKEND_NAME,
    CURSOR_MARGIN,
    LANE_PROJECT,
    PROJECT_KINDS,
    SPOT_CHECK_VIEW,
    UNCERTAIN_VIEW,
    LabelStudioBackend,
    ProjectSpec,
)
from medq.storage.labelstudio.batch_wait import WaitResult, wait_for_batch
from medq.storage.labelstudio.catalog_sync import pull_into_catalog
from medq.storage.labelstudio.client import LabelStudioAuthError, LabelStudioError

__all__ = [
    "BACKEND_NAME",
    "CURSOR_MARGIN",
    "LANE_PROJECT",
    "PROJECT_KINDS",
    "SPOT_CHECK_VIEW",
    "UNCERTAIN_VIEW",
    "LabelStudioAuthError",
    "LabelStudioBackend",
    "LabelStudioError",
    "ProjectSpec",
    "WaitResult",
    "pull_into_catalog",
    "wait_for_batch",
]
