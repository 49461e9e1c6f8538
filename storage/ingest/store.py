"""Content-addressed image writes shared by ingest, world loading and MedQ-Bench import.

An image's id is the sha256 of its stored pixels (:func:`medq.engine.formats.images.pixel_hash`);
its PNG and thumbnail go to the object store under content keys (sha256 of the bytes). Usage per
batch: ``add`` every image, then ``commit_objects`` (one catalog query for the ids already known,
PNG encoding and object writes only for new ones) and upsert the returned rows in the same
transaction as the rows that reference them. Objects are written before rows, so a crash leaves
at most unreferenced objects, never a row without its image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medq.engine.formats.images import pixel_hash, png_bytes, thumbnail_png


@dataclass
class _Pending:
    pixels: np.ndarray
    row: dict


def stored_bits(pixels: np.ndarray) -> int:
    return 16 if pixels.dtype == np.uint16 else 8


def image_id_of(pixels: np.ndarray) -> str:
    """Content id of stored (uint8/uint16) pixels."""
    return pixel_hash(pixels, bits=stored_bits(pixels))


class ImageWriter:
    """Collects new images of one batch (see module docstring)."""

    def __init__(self, workspace, thumb_size: int = 128):
        self.workspace = workspace
        self.thumb_size = thumb_size
        self._pending: dict[str, _Pending] = {}

    def add(self, pixels: np.ndarray, *, source_uri: str, source_format: str,
            modality: str | None, metadata: dict | None = None) -> str:
        """Queue stored pixels ((H, W) or (H, W, 3) uint8/uint16); returns the image id. The
        first source of an id wins; an image already in the catalog keeps its row."""
        image_id = image_id_of(pixels)
        if image_id not in self._pending:
            self._pending[image_id] = _Pending(pixels, {
                "image_id": image_id, "source_uri": source_uri, "source_format": source_format,
                "modality": modality, "width": int(pixels.shape[1]),
                "height": int(pixels.shape[0]),
                "channels": 1 if pixels.ndim == 2 else int(pixels.shape[2]),
                "metadata": metadata or {}})
        return image_id

    def known_ids(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        return {r["image_id"] for r in self.workspace.catalog.query(
            "SELECT image_id FROM images WHERE image_id IN (SELECT unnest(?::VARCHAR[]))",
            [sorted(ids)])}

    def commit_objects(self) -> list[dict]:
        """Write objects of the queued images not yet in the catalog; return their image rows."""
        from medq.storage.objects import content_key
        pending, self._pending = self._pending, {}
        known = self.known_ids(list(pending))
        objects = self.workspace.objects
        rows = []
        for image_id, p in pending.items():
            if image_id in known:
                continue
            png = png_bytes(p.pixels, bits=stored_bits(p.pixels))
            key = content_key(png, "images", "png")
            if not objects.exists(key):
                objects.put_bytes(key, png, content_type="image/png")
            if max(p.pixels.shape[:2]) <= self.thumb_size and p.pixels.dtype == np.uint8:
                thumb_key = key  # already thumbnail-sized: the image is its own thumbnail
            else:
                thumb = thumbnail_png(p.pixels, self.thumb_size)
                thumb_key = content_key(thumb, "thumbs", "png")
                if not objects.exists(thumb_key):
                    objects.put_bytes(thumb_key, thumb, content_type="image/png")
            rows.append({**p.row, "object_key": key, "thumb_key": thumb_key})
        return rows


def decode_exact(data: bytes, name: str, opts) -> np.ndarray:
    """Stored pixels of one image file's bytes, kept exactly when it is PNG/JPEG/BMP/GIF (no
    re-normalization, no content checks: world and benchmark images are stored as they are);
    DICOM / NIfTI / TIFF go through the ingest decoders and must give exactly one frame.
    Raises :class:`medq.storage.ingest.errors.Rejected`."""
    from medq.engine.formats.images import PixelError, decode_image_bytes
    from medq.storage.ingest import sniff as sn
    from medq.storage.ingest.errors import (
        BAD_DIMENSIONS,
        DECOMPRESSION_BOMB,
        EMPTY_FILE,
        NOT_AN_IMAGE,
        Rejected,
    )
    from medq.storage.ingest.pipeline import decode_file
    if not data:
        raise Rejected(EMPTY_FILE, "file has 0 bytes")
    kind = sn.sniff(data[:sn.HEAD_BYTES])
    if kind in (sn.PNG, sn.JPEG, sn.OTHER_IMAGE):
        try:
            return decode_image_bytes(data, max_pixels=opts.max_pixels)
        except PixelError as exc:
            code = DECOMPRESSION_BOMB if "limit" in str(exc) else NOT_AN_IMAGE
            raise Rejected(code, str(exc)) from exc
    frames = decode_file(data, name, opts)
    if len(frames) != 1:
        raise Rejected(BAD_DIMENSIONS, f"file gives {len(frames)} images; a labelled or "
                       "benchmark image must be a single 2-D image")
    return frames[0].pixels


def write_items(workspace, writer: ImageWriter, items: list[dict], summary,
                extra: dict[str, list[dict]] | None = None) -> None:
    """Write the writer's queued images and the changed `items` (plus `extra` table rows) in one
    transaction. Items identical to their stored row are skipped; `summary` counts
    items_new / items_updated / items_unchanged / images_new (re-loading changes nothing)."""
    with workspace.catalog.connect():  # one connection for the lookups and the transaction
        existing = {}
        ids = [i["item_id"] for i in items]
        if ids:
            existing = {r["item_id"]: r for r in workspace.catalog.query(
                "SELECT * FROM items WHERE item_id IN (SELECT unnest(?::VARCHAR[]))", [ids])}
        changed = []
        for item in items:
            old = existing.get(item["item_id"])
            if old is None:
                summary.items_new += 1
                changed.append(item)
            elif _same(old, item):
                summary.items_unchanged += 1
            else:
                summary.items_updated += 1
                changed.append(item)
        image_rows = writer.commit_objects()
        summary.images_new += len(image_rows)
        with workspace.catalog.transaction() as tx:
            tx.upsert("images", image_rows)
            tx.upsert("items", changed)
            for table, rows in (extra or {}).items():
                tx.upsert(table, rows)


def _same(old: dict, new: dict) -> bool:
    """Whether a stored item row already holds every value of `new` (JSON columns as text)."""
    from medq.storage.catalog import dumps
    for k, v in new.items():
        stored = old.get(k)
        if isinstance(v, (dict, list)):
            if stored != dumps(v):
                return False
        elif stored != v:
            return False
    return True
