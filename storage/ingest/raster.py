"""PNG, JPEG and TIFF decoding (PIL and tifffile) to stored pixels."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from medq.engine.formats.images import PixelError, pil_to_stored
from medq.storage.ingest.dicom import Frame
from medq.storage.ingest.errors import (
    BAD_DIMENSIONS,
    CORRUPT,
    DECOMPRESSION_BOMB,
    NOT_AN_IMAGE,
    TRUNCATED,
    UNSUPPORTED_FORMAT,
    Rejected,
)
from medq.storage.ingest.normalize import evenly_spaced, finish, minmax


def decode_pil(data: bytes, kind: str, *, max_pixels: int, bits: int, min_side: int) -> list[Frame]:
    """PNG/JPEG (or any single-frame PIL format) -> one frame. The pixel limit is checked from the
    header before any pixel is decompressed."""
    try:
        with warnings.catch_warnings():
            # Our own limit (max_pixels) is checked below; PIL still refuses > 2x its own.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise Rejected(DECOMPRESSION_BOMB, f"header says {w}x{h} = {w * h} pixels, over "
                               f"the limit of {max_pixels}")
            if w <= 0 or h <= 0:
                raise Rejected(BAD_DIMENSIONS, f"header says {w}x{h}")
            im.load()
    except Rejected:
        raise
    except Image.DecompressionBombError as exc:
        raise Rejected(DECOMPRESSION_BOMB, str(exc)) from exc
    except Image.UnidentifiedImageError as exc:
        raise Rejected(NOT_AN_IMAGE, f"not a {kind.upper()} image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc)
        code = TRUNCATED if "truncated" in msg.lower() or isinstance(exc, EOFError) else CORRUPT
        raise Rejected(code, f"{kind.upper()} cannot be decoded ({msg[:160]})") from exc
    try:
        stored = pil_to_stored(im)
    except PixelError as exc:
        raise Rejected(UNSUPPORTED_FORMAT, str(exc)) from exc
    meta = {"format": kind, "pil_mode": im.mode, "rows": h, "columns": w}
    return [Frame(finish(stored, bits=bits, min_side=min_side), None, meta, None)]


def decode_tiff(data: bytes, *, max_pixels: int, max_frames: int, bits: int, min_side: int
                ) -> list[Frame]:
    """TIFF pages -> up to `max_frames` evenly spaced frames (RGB kept, other depths min-max)."""
    import tifffile
    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
    except Exception as exc:
        raise Rejected(CORRUPT, f"TIFF cannot be parsed ({type(exc).__name__}: "
                       f"{str(exc)[:160]})") from exc
    with tif:
        pages = list(tif.pages)
        if not pages:
            raise Rejected(CORRUPT, "TIFF has no pages")
        frames = []
        for i in evenly_spaced(len(pages), max_frames):
            page = pages[i]
            shape = tuple(int(s) for s in page.shape)
            n_px = int(np.prod(shape[:2])) if len(shape) >= 2 else 0
            if len(shape) < 2 or n_px <= 0:
                raise Rejected(BAD_DIMENSIONS, f"page {i} has shape {shape}")
            if int(np.prod(shape)) > max_pixels * 4:
                raise Rejected(DECOMPRESSION_BOMB, f"page {i} has shape {shape}, over the limit "
                               f"of {max_pixels} pixels")
            try:
                arr = page.asarray()
            except Exception as exc:
                msg = str(exc)
                code = UNSUPPORTED_FORMAT if "imagecodecs" in msg or "compression" in msg.lower() \
                    else CORRUPT
                raise Rejected(code, f"TIFF page {i} cannot be decoded ({msg[:160]})") from exc
            img = _tiff_to_image(np.asarray(arr), bits)
            meta = {"format": "tiff", "rows": img.shape[0], "columns": img.shape[1],
                    "dtype": str(arr.dtype), "pages": len(pages)}
            if len(pages) > 1:
                meta["page"] = i
            frames.append(Frame(finish(img, bits=bits, min_side=min_side), None, meta,
                                f"page {i}" if len(pages) > 1 else None))
        return frames


def _tiff_to_image(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (samples first) -> interleaved
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 2 and not (arr.ndim == 3 and arr.shape[2] == 3):
        raise Rejected(BAD_DIMENSIONS, f"TIFF page has shape {arr.shape}; expected (H, W) or "
                       "(H, W, 3)")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16 and bits == 16 and arr.ndim == 2:
        return arr
    return minmax(arr)
