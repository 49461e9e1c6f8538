"""The loop's reads and writes of the catalog, one named function each (the SQL of the loop
steps lives here, not in tasks or flows).

Every function takes the :class:`~medq.storage.catalog.Catalog` (or an open
:class:`~medq.storage.catalog.CatalogTx` where a step writes several tables in one
transaction) and returns plain rows (dicts, as :meth:`Catalog.query` gives them) or scalars.
Grouped by the step that uses them: rounds and checkpoints, evaluation, discovery, exploration,
routing, annotation, curation, training and promotion.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medq.storage.catalog import Catalog, CatalogTx

Rows = list[dict[str, Any]]


def _first_row(catalog: Catalog, sql: str, params: Sequence[Any] | None = None
               ) -> dict[str, Any] | None:
    """The first row `sql` returns, None when it returns none."""
    rows = catalog.query(sql, params)
    return rows[0] if rows else None


# -- rounds and checkpoints ------------------------------------------------------------------

def finished_round_count(catalog: Catalog) -> int:
    return int(catalog.scalar("SELECT count(*) FROM rounds WHERE status = 'done'"))


def running_round(catalog: Catalog) -> dict[str, Any] | None:
    """The oldest round still marked ``running`` (a crashed process), or None."""
    return _first_row(catalog, "SELECT round_id, round_index, model_in FROM rounds WHERE "
                      "status = 'running' ORDER BY round_index LIMIT 1")


def last_round_index(catalog: Catalog) -> int:
    """The highest round index so far (0 before the first round)."""
    return int(catalog.scalar("SELECT coalesce(max(round_index), 0) FROM rounds"))


def last_done_round(catalog: Catalog) -> dict[str, Any] | None:
    """model_in, model_out, promoted of the latest finished round, or None."""
    return _first_row(catalog, "SELECT model_in, model_out, promoted FROM rounds WHERE "
                      "status = 'done' ORDER BY round_index DESC LIMIT 1")


def seed_champion(catalog: Catalog) -> str | None:
    """The promoted seed model (no parent), None before round 0."""
    return catalog.scalar("SELECT version FROM model_versions WHERE parent IS NULL AND promoted "
                          "ORDER BY created_at LIMIT 1")


def done_rounds(catalog: Catalog) -> Rows:
    """round_id, spend, promoted, report of every finished round, oldest first."""
    return catalog.query("SELECT round_id, spend, promoted, report FROM rounds WHERE status = "
                         "'done' ORDER BY round_index")


def previous_done_round(catalog: Catalog, round_id: str) -> dict[str, Any] | None:
    """round_id and report of the latest finished round before `round_id`, or None."""
    return _first_row(catalog, "SELECT round_id, report FROM rounds WHERE status = 'done' AND "
                      "round_id < ? ORDER BY round_index DESC LIMIT 1", [round_id])


def round_index_of(catalog: Catalog, round_id: str) -> int | None:
    return catalog.scalar("SELECT round_index FROM rounds WHERE round_id = ?", [round_id])


def model_in_of(catalog: Catalog, round_id: str) -> str | None:
    return catalog.scalar("SELECT model_in FROM rounds WHERE round_id = ?", [round_id])


# -- evaluation -------------------------------------------------------------------------------

def eval_item_rows(catalog: Catalog, split: str) -> Rows:
    """Every MCQ, description and paired item of `split`, in item-id order."""
    return catalog.query(
        "SELECT item_id, kind, image_id, image_b_id, question, options, answer, question_type, "
        "modality, verdict, degradations, level, description FROM items "
        "WHERE split = ? AND kind IN ('mcq', 'description', 'paired') ORDER BY item_id", [split])


def replace_predictions(tx: CatalogTx, eval_id: str) -> None:
    """Drop the earlier predictions of `eval_id` (the caller upserts the new ones)."""
    tx.execute("DELETE FROM predictions WHERE eval_id = ?", [eval_id])


def eval_run(catalog: Catalog, eval_id: str) -> dict[str, Any] | None:
    """eval_id and metrics (JSON text) of a stored evaluation, or None."""
    return _first_row(catalog, "SELECT eval_id, metrics FROM eval_runs WHERE eval_id = ?",
                      [eval_id])


def eval_image_ids(catalog: Catalog) -> list[str]:
    """Every distinct image of the eval split, sorted."""
    return [r["image_id"] for r in catalog.query(
        "SELECT DISTINCT image_id FROM items WHERE split = 'eval' ORDER BY image_id")]


# -- discovery --------------------------------------------------------------------------------

def failed_predictions(catalog: Catalog, eval_id: str, fail_below: float) -> Rows:
    """Wrong MCQ answers and descriptions scored below `fail_below` (0-8) of `eval_id`, with
    their items' image, answer, modality, degradations and question type."""
    return catalog.query(
        "SELECT p.item_id, p.kind, p.probs, p.correct, p.score, i.image_id, i.answer, i.modality, "
        "i.degradations, i.question_type FROM predictions p JOIN items i USING (item_id) "
        "WHERE p.eval_id = ? AND ((p.kind = 'mcq' AND NOT coalesce(p.correct, FALSE)) OR "
        "(p.kind = 'description' AND p.score < ?)) ORDER BY p.item_id", [eval_id, fail_below])


def clear_discovery(tx: CatalogTx, round_id: str) -> None:
    """Drop a round's failures and prototypes (a re-run writes them again)."""
    tx.execute("DELETE FROM failures WHERE round_id = ?", [round_id])
    tx.execute("DELETE FROM prototypes WHERE round_id = ?", [round_id])


def prototype_rows(catalog: Catalog, round_id: str) -> Rows:
    """A round's prototypes, heaviest error mass first."""
    return catalog.query(
        "SELECT * FROM prototypes WHERE round_id = ? ORDER BY error_mass DESC, prototype_id",
        [round_id])


# -- exploration ------------------------------------------------------------------------------

def excluded_image_ids(catalog: Catalog) -> list[str]:
    """Images never to retrieve: labelled (train), in the eval set, or already queued."""
    rows = catalog.query(
        "SELECT image_id FROM items WHERE split IN ('train', 'eval') UNION "
        "SELECT image_b_id FROM items WHERE image_b_id IS NOT NULL UNION "
        "SELECT image_id FROM annotation_tasks WHERE status <> 'deleted'")
    return sorted(r["image_id"] for r in rows)


def images_of_items(catalog: Catalog, item_ids: Sequence[str]) -> dict[str, str]:
    """item_id -> image_id for the given items (unknown ids are left out)."""
    return {r["item_id"]: r["image_id"] for r in catalog.query(
        "SELECT item_id, image_id FROM items WHERE item_id IN (SELECT unnest(?::VARCHAR[]))",
        [list(item_ids)])}


def modalities_of_images(catalog: Catalog, image_ids: Sequence[str]) -> dict[str, str | None]:
    """image_id -> modality for the given images."""
    return {r["image_id"]: r["modality"] for r in catalog.query(
        "SELECT image_id, modality FROM images WHERE image_id IN (SELECT unnest(?::VARCHAR[]))",
        [list(image_ids)])}


def oracle_pool_sample(catalog: Catalog, sample: int, seed: int) -> Rows:
    """A seeded pseudo-random sample of pool images with ground truth (image_id, verdict,
    modality); empty where the world has no oracle labels."""
    return catalog.query(
        "SELECT o.image_id, o.verdict, o.modality FROM oracle_labels o JOIN items i USING "
        "(image_id) WHERE i.split = 'pool' ORDER BY hash(o.image_id || ?) LIMIT ?",
        [str(seed), sample])


def oracle_verdicts(catalog: Catalog, image_ids: Sequence[str]) -> dict[str, str]:
    """image_id -> ground-truth verdict, for the images that have one."""
    return {r["image_id"]: r["verdict"] for r in catalog.query(
        "SELECT image_id, verdict FROM oracle_labels WHERE image_id IN "
        "(SELECT unnest(?::VARCHAR[]))", [list(image_ids)])}


def clear_candidates(tx: CatalogTx, round_id: str) -> None:
    tx.execute("DELETE FROM candidates WHERE round_id = ?", [round_id])


def pool_image_count(catalog: Catalog) -> int:
    return int(catalog.scalar("SELECT count(DISTINCT image_id) FROM items WHERE split = 'pool'"))


def pool_image_page(catalog: Catalog, limit: int, offset: int) -> list[str]:
    """Pool image ids in id order, one page."""
    return [r["image_id"] for r in catalog.query(
        "SELECT DISTINCT image_id FROM items WHERE split = 'pool' ORDER BY image_id "
        "LIMIT ? OFFSET ?", [limit, offset])]


def pool_image_ids(catalog: Catalog) -> list[str]:
    """Every pool image id, sorted."""
    return [r["image_id"] for r in catalog.query(
        "SELECT DISTINCT image_id FROM items WHERE split = 'pool' ORDER BY image_id")]


def all_image_ids(catalog: Catalog) -> list[str]:
    """Every image that has an item, sorted."""
    return [r["image_id"] for r in catalog.query(
        "SELECT DISTINCT image_id FROM items ORDER BY image_id")]


# -- routing ----------------------------------------------------------------------------------

def spot_check_outcomes(catalog: Catalog, round_id: str) -> Rows:
    """(predicted, verdict) of every spot-checked auto item of `round_id` that an annotator
    answered."""
    return catalog.query(
        "SELECT c.predicted, a.verdict FROM routes r JOIN candidates c USING (round_id, image_id) "
        "JOIN annotations a ON a.round_id = r.round_id AND a.image_id = r.image_id "
        "WHERE r.round_id = ? AND r.spot_check AND a.lane IS DISTINCT FROM 'paired' "
        "AND a.verdict IS NOT NULL", [round_id])


def scored_candidates(catalog: Catalog, round_id: str) -> Rows:
    """image_id, entropy, prototype_id, rank of a round's candidates, by image id."""
    return catalog.query("SELECT image_id, entropy, prototype_id, rank FROM candidates "
                         "WHERE round_id = ? ORDER BY image_id", [round_id])


def clear_routes(tx: CatalogTx, round_id: str) -> None:
    tx.execute("DELETE FROM routes WHERE round_id = ?", [round_id])


# -- annotation -------------------------------------------------------------------------------

def annotation_request_rows(catalog: Catalog, round_id: str) -> Rows:
    """The round's live annotation tasks with their image key and modality, most uncertain
    first."""
    return catalog.query(
        "SELECT t.task_id, t.round_id, t.image_id, t.lane, t.uncertainty, t.prediction, "
        "i.object_key, i.modality FROM annotation_tasks t JOIN images i USING (image_id) "
        "WHERE t.round_id = ? AND t.status <> 'deleted' ORDER BY t.uncertainty DESC, t.task_id",
        [round_id])


def human_lane_routes(catalog: Catalog, round_id: str) -> Rows:
    """Routes that need a person (expert, verify, spot-checked auto) with the model's
    prediction."""
    return catalog.query(
        "SELECT r.image_id, r.lane, r.entropy, r.spot_check, c.predicted, c.probs FROM routes r "
        "LEFT JOIN candidates c USING (round_id, image_id) WHERE r.round_id = ? AND "
        "(r.lane IN ('expert', 'verify') OR r.spot_check)", [round_id])


def round_task_ids(catalog: Catalog, round_id: str) -> set[str]:
    return {t["task_id"] for t in catalog.query(
        "SELECT task_id FROM annotation_tasks WHERE round_id = ?", [round_id])}


def known_task_ids(catalog: Catalog, task_ids: Sequence[str]) -> set[str]:
    """The subset of `task_ids` already recorded."""
    return {r["task_id"] for r in catalog.query(
        "SELECT task_id FROM annotation_tasks WHERE task_id IN (SELECT unnest(?::VARCHAR[]))",
        [list(task_ids)])}


def image_keys(catalog: Catalog, image_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """image_id -> {image_id, object_key} for the images in the catalog."""
    return {r["image_id"]: r for r in catalog.query(
        "SELECT image_id, object_key FROM images WHERE image_id IN "
        "(SELECT unnest(?::VARCHAR[]))", [list(image_ids)])}


def annotation_count(catalog: Catalog, round_id: str) -> int:
    return int(catalog.scalar("SELECT count(*) FROM annotations WHERE round_id = ?", [round_id]))


# -- curation ---------------------------------------------------------------------------------

def verdict_annotations(catalog: Catalog, round_id: str) -> Rows:
    """A round's non-paired annotations that carry a verdict, with their image's modality, by
    image and annotation id."""
    return catalog.query(
        "SELECT a.image_id, a.annotator, a.lane, a.verdict, a.degradations, a.description, "
        "a.modality, i.modality AS image_modality FROM annotations a "
        "JOIN images i USING (image_id) WHERE a.round_id = ? "
        "AND a.lane IS DISTINCT FROM 'paired' AND a.verdict IS NOT NULL "
        "ORDER BY a.image_id, a.annotation_id", [round_id])


def unchecked_auto_routes(catalog: Catalog, round_id: str) -> Rows:
    """Auto-lane items of a round that were not spot-checked (image_id, modality)."""
    return catalog.query(
        "SELECT r.image_id, i.modality FROM routes r JOIN images i USING (image_id) "
        "WHERE r.round_id = ? AND r.lane = 'auto' AND NOT r.spot_check ORDER BY r.image_id",
        [round_id])


def dataset_item_rows(catalog: Catalog, dataset_id: str) -> Rows:
    """item_id, image_id, label_source of a dataset's items."""
    return catalog.query(
        "SELECT item_id, image_id, label_source FROM dataset_items WHERE dataset_id = ? "
        "ORDER BY item_id", [dataset_id])


def latest_passed_dataset_before(catalog: Catalog, round_id: str) -> str | None:
    """The latest curated dataset of a round before `round_id`, None if there is none."""
    return catalog.scalar("SELECT dataset_id FROM datasets WHERE status = 'passed' AND "
                          "round_id < ? ORDER BY round_id DESC LIMIT 1", [round_id])


def latest_seed_dataset(catalog: Catalog) -> str | None:
    return catalog.scalar("SELECT dataset_id FROM datasets WHERE round_id IS NULL AND status = "
                          "'passed' ORDER BY created_at DESC LIMIT 1")


# -- training and promotion -------------------------------------------------------------------

def train_split_images(catalog: Catalog) -> Rows:
    """item_id, image_id of the labelled train split's image items."""
    return catalog.query("SELECT item_id, image_id FROM items WHERE split = 'train' AND "
                         "kind = 'image' ORDER BY item_id")


def training_examples(catalog: Catalog, dataset_id: str) -> Rows:
    """The labelled items of a dataset (item_id, image_id, modality, verdict, degradations,
    description)."""
    return catalog.query(
        "SELECT i.item_id, i.image_id, i.modality, i.verdict, i.degradations, i.description "
        "FROM dataset_items d JOIN items i USING (item_id) WHERE d.dataset_id = ? "
        "ORDER BY i.item_id", [dataset_id])


def registered_version(catalog: Catalog, version: str) -> dict[str, Any] | None:
    """version, artifact_key, metrics of a model version with a complete artifact, or None."""
    return _first_row(catalog, "SELECT version, artifact_key, metrics FROM model_versions "
                      "WHERE version = ? AND artifact_key IS NOT NULL", [version])


def eval_metrics_text(catalog: Catalog, eval_id: str) -> Rows:
    """The metrics (JSON text) of an evaluation, as rows (empty when not evaluated)."""
    return catalog.query("SELECT metrics FROM eval_runs WHERE eval_id = ?", [eval_id])


def model_metrics_text(catalog: Catalog, version: str) -> Any:
    """The stored metrics (JSON text) of a model version, None when unknown."""
    return catalog.scalar("SELECT metrics FROM model_versions WHERE version = ?", [version])


# -- benchmark diagnostics (what a round added and picked) -------------------------------------

def train_image_ids(catalog: Catalog) -> list[str]:
    """Every image of the labelled train split, sorted."""
    return [r["image_id"] for r in catalog.query(
        "SELECT DISTINCT image_id FROM items WHERE split = 'train' ORDER BY image_id")]


def labels_added_by_lane(catalog: Catalog, round_id: str) -> dict[str, int]:
    """lane (the part of ``items.source`` before ':') -> training items a round added."""
    return {r["lane"]: int(r["n"]) for r in catalog.query(
        "SELECT split_part(source, ':', 1) AS lane, count(*) AS n FROM items WHERE split = "
        "'train' AND round_added = ? GROUP BY 1", [round_id])}


def human_pick_outcomes(catalog: Catalog, round_id: str) -> Rows:
    """lane, spot_check, predicted (the starting model's verdict), verdict (ground truth) and
    modality of every route of `round_id` a person labels (expert, verify, spot checks)."""
    return catalog.query(
        "SELECT r.lane, r.spot_check, c.predicted, o.verdict, coalesce(o.modality, i.modality) "
        "AS modality FROM routes r LEFT JOIN candidates c USING (round_id, image_id) "
        "LEFT JOIN oracle_labels o USING (image_id) LEFT JOIN images i USING (image_id) "
        "WHERE r.round_id = ? AND (r.lane IN ('expert', 'verify') OR r.spot_check)", [round_id])


def round_report_text(catalog: Catalog, round_id: str) -> Any:
    """The stored report (JSON text) of a round, None when unknown."""
    return catalog.scalar("SELECT report FROM rounds WHERE round_id = ?", [round_id])


# -- inventory (CLI tables, benchmark reports) ---------------------------------------------------

def done_round_reports(catalog: Catalog) -> Rows:
    """status and report (JSON text) of every finished round, oldest first."""
    return catalog.query(
        "SELECT status, report FROM rounds WHERE status = 'done' ORDER BY round_index")


def split_image_counts(catalog: Catalog) -> dict[str, int]:
    """split -> number of distinct images with an item in it."""
    return {r["split"]: int(r["n"]) for r in catalog.query(
        "SELECT split, count(DISTINCT image_id) AS n FROM items GROUP BY split")}


def eval_mcq_count(catalog: Catalog) -> int:
    return int(catalog.scalar("SELECT count(*) FROM items WHERE split = 'eval' AND kind = 'mcq'"))


def oracle_label_count(catalog: Catalog) -> int:
    return int(catalog.scalar("SELECT count(*) FROM oracle_labels"))


def annotation_total(catalog: Catalog) -> int:
    """Every stored annotation record, all rounds."""
    return int(catalog.scalar("SELECT count(*) FROM annotations"))


def pool_images_with_modality(catalog: Catalog, limit: int) -> Rows:
    """image_id, modality of the first `limit` pool images in id order."""
    return catalog.query(
        "SELECT i.image_id, m.modality FROM (SELECT DISTINCT image_id FROM items "
        "WHERE split = 'pool') i JOIN images m USING (image_id) ORDER BY i.image_id LIMIT ?",
        [limit])
