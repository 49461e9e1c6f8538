"""Pixel normalization, PNG encoding and content ids, shared by TSV import, world loading, ingest.

Conventions: images in the engine are float32 in [0, 1], shape (H, W) or (H, W, 3). What is
*stored* is an integer image (uint8, or uint16 when asked to keep depth): (H, W) grayscale PNG
mode L / I;16, or (H, W, 3) RGB. The content id of an image is the sha256 of those stored pixels
(dtype, shape and bytes), so the same pixels always get the same id whatever file they came from.
Pure: bytes in, bytes out, no file I/O.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from medq.errors import MedQError


class PixelError(MedQError):
    """An array cannot be turned into a stored image (NaN, wrong shape, wrong dtype)."""


def to_stored(img: np.ndarray, *, bits: int = 8) -> np.ndarray:
    """The integer image that is stored for `img`.

    - float in [0, 1] -> uint8 ``round(x * 255)`` (or uint16 ``round(x * 65535)`` when bits=16);
      values a rounding error outside [0, 1] are clipped, NaN/inf raise :class:`PixelError`.
    - uint8 / uint16 are kept as they are; bool -> 0/255; other integer arrays must lie in 0-255
      (bits=8) or 0-65535.
    - (H, W, 1) -> (H, W); (H, W, 4) drops alpha; (H, W, 3) stays RGB.
    """
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise PixelError(f"image must be (H, W) or (H, W, 3), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise PixelError(f"image has an empty dimension: shape {arr.shape}")
    if bits not in (8, 16):
        raise PixelError(f"bits must be 8 or 16, got {bits}")
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr.astype(np.uint8) * 255)
    if arr.dtype == np.uint8 or (arr.dtype == np.uint16 and bits == 16):
        return np.ascontiguousarray(arr)
    if arr.dtype == np.uint16:  # asked for 8 bits: rescale the full 16-bit range
        return np.ascontiguousarray(np.round(arr.astype(np.float64) / 257.0).astype(np.uint8))
    if np.issubdtype(arr.dtype, np.integer):
        top = 255 if bits == 8 else 65535
        if arr.size and (arr.min() < 0 or arr.max() > top):
            raise PixelError(f"integer image values must lie in 0-{top}, got "
                             f"{arr.min()}-{arr.max()} ({arr.dtype})")
        return np.ascontiguousarray(arr.astype(np.uint8 if bits == 8 else np.uint16))
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise PixelError("image contains NaN or infinite values")
        scale = 255.0 if bits == 8 else 65535.0
        out = np.round(np.clip(arr.astype(np.float64), 0.0, 1.0) * scale)
        return np.ascontiguousarray(out.astype(np.uint8 if bits == 8 else np.uint16))
    raise PixelError(f"unsupported image dtype {arr.dtype}")


def to_float(stored: np.ndarray) -> np.ndarray:
    """Stored integer pixels -> float32 in [0, 1] (uint16 / 65535, uint8 / 255)."""
    top = 65535.0 if stored.dtype == np.uint16 else 255.0
    return stored.astype(np.float32) / np.float32(top)


def pixel_hash(img: np.ndarray, *, bits: int = 8) -> str:
    """Content id (64 hex chars): sha256 of the stored pixels' dtype, shape and bytes."""
    stored = to_stored(img, bits=bits)
    h = hashlib.sha256()
    h.update(f"medq-px1|{stored.dtype.str}|{'x'.join(map(str, stored.shape))}|".encode())
    h.update(stored.tobytes())
    return h.hexdigest()


def png_bytes(img: np.ndarray, *, bits: int = 8, compress_level: int = 6) -> bytes:
    """Encode `img` (see :func:`to_stored`) as PNG bytes: L, I;16 or RGB."""
    stored = to_stored(img, bits=bits)
    if stored.dtype == np.uint16:
        if stored.ndim == 3:  # PIL has no 16-bit RGB PNG writer: keep 8 bits for colour
            stored = np.round(stored.astype(np.float64) / 257.0).astype(np.uint8)
            pil = Image.fromarray(stored, mode="RGB")
        else:
            pil = Image.fromarray(stored.astype("<u2"), mode="I;16")
    else:
        pil = Image.fromarray(stored, mode="L" if stored.ndim == 2 else "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def decode_image_bytes(data: bytes, *, max_pixels: int | None = None) -> np.ndarray:
    """PNG/JPEG/any-PIL bytes -> stored integer pixels (uint8 or uint16), (H, W) or (H, W, 3).

    Palette, LA, CMYK, RGBA, 1-bit images are converted to L or RGB. 16-bit grayscale stays
    uint16. `max_pixels` guards against decompression bombs (checked before decoding).
    Raises :class:`PixelError` for anything PIL cannot decode.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise PixelError(f"image is {w}x{h} = {w * h} pixels, over the limit "
                                 f"of {max_pixels} (decompression bomb?)")
            im.load()
            return pil_to_stored(im)
    except PixelError:
        raise
    except Exception as exc:  # PIL raises many types: UnidentifiedImageError, OSError, ...
        raise PixelError(f"not a decodable image: {type(exc).__name__}: {exc}") from exc


def pil_to_stored(im: Image.Image) -> np.ndarray:
    """A loaded PIL image -> uint8/uint16 array, (H, W) or (H, W, 3)."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise PixelError(f"32-bit integer image with values {arr.min()}-{arr.max()} "
                             "outside 0-65535")
        return arr.astype(np.uint16)
    if mode == "F":
        raise PixelError("floating-point PIL image: normalize it before storing")
    if mode == "L":
        return np.asarray(im, dtype=np.uint8)
    if mode in ("1", "LA", "La") or (mode == "P" and _palette_is_gray(im)):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _palette_is_gray(im: Image.Image) -> bool:
    pal = im.getpalette() or []
    triples = [pal[i:i + 3] for i in range(0, len(pal) - 2, 3)]
    return bool(triples) and all(t[0] == t[1] == t[2] for t in triples)


def thumbnail_png(img: np.ndarray, size: int = 128) -> bytes:
    """PNG thumbnail whose longer side is at most `size` px (8-bit, aspect kept)."""
    stored = to_stored(img, bits=8) if np.asarray(img).dtype != np.uint16 else \
        np.round(np.asarray(img, dtype=np.float64) / 257.0).astype(np.uint8)
    pil = Image.fromarray(stored, mode="L" if stored.ndim == 2 else "RGB")
    pil.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()
