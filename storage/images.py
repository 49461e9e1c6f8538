"""Pixels for image ids, wherever they live.

An image row either points at a normalized PNG in the object store (`object_key`) or at a row of
the pool manifest (`manifest_row`), rendered on demand and identical every time. Callers never
care which: :func:`load_images` returns float32 arrays in [0, 1], (H, W) or (H, W, 3), in the
order of the ids asked for. Only the requested images are ever decoded, so a million-item pool
never has to be in memory.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image

from medq.errors import MedQError


class ImageNotFoundError(MedQError):
    """An image id has no catalog row or its bytes are missing."""


def decode_png(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> float32 [0, 1] array (H, W) or (H, W, 3)."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("I;16", "I;16B", "I"):
            arr = np.asarray(im, dtype=np.float32)
            return arr / max(float(arr.max()), 1.0) if arr.max() > 255 else arr / 255.0
        rgb = im.convert("RGB") if im.mode not in ("L", "RGB") else im
        return np.asarray(rgb, dtype=np.float32) / 255.0


def _resize(img: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or (img.shape[0] == size and img.shape[1] == size):
        return img
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(pil, dtype=np.float32) / 255.0


def load_images(workspace, image_ids: Sequence[str], size: int | None = None) -> list[np.ndarray]:
    """Decode `image_ids` (any mix of stored and manifest-rendered images), optionally resized
    to `size` x `size`. Raises :class:`ImageNotFoundError` naming the first missing id."""
    ids = list(image_ids)
    if not ids:
        return []
    rows = {}
    catalog = workspace.catalog
    for start in range(0, len(ids), 5000):
        chunk = ids[start:start + 5000]
        for r in catalog.query("SELECT image_id, object_key, manifest_row FROM images WHERE "
                               "image_id IN (SELECT unnest(?::VARCHAR[]))", [chunk]):
            rows[r["image_id"]] = r
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ImageNotFoundError(f"{len(missing)} image id(s) not in the catalog "
                                 f"({catalog.path}), e.g. {missing[0]}")
    out: dict[str, np.ndarray] = {}
    manifest_ids = [i for i in ids if rows[i]["object_key"] is None and rows[i]["manifest_row"] is not None]
    if manifest_ids:
        from medq.storage.pool_manifest import render_for_workspace
        for image_id, img in zip(manifest_ids, render_for_workspace(workspace, manifest_ids)):
            out[image_id] = img
    for image_id in ids:
        if image_id in out:
            continue
        key = rows[image_id]["object_key"]
        if key is None:
            raise ImageNotFoundError(f"image {image_id} has neither an object key nor a manifest row")
        try:
            out[image_id] = decode_png(workspace.objects.get_bytes(key))
        except MedQError:
            raise
        except Exception as exc:  # missing object, undecodable bytes
            raise ImageNotFoundError(f"image {image_id}: cannot read {key!r} from the object "
                                     f"store: {exc}") from exc
    return [_resize(out[i], size) for i in ids]
