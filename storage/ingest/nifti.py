"""NIfTI volumes (.nii, .nii.gz) -> evenly spaced 2-D slices along one axis.

Volumes are normalized once (their finite min-max, or the CT window when the modality is CT and
the values look like Hounsfield units) so slices of one volume share a scale. Slices are rotated
90 degrees so that the second voxel axis points up (the usual radiological display of axial
slices). 4-D and higher volumes contribute their first volume.
"""
from __future__ import annotations

import io
import zlib

import numpy as np

from medq.storage.ingest.dicom import Frame
from medq.storage.ingest.errors import (
    BAD_DIMENSIONS,
    CONSTANT_IMAGE,
    CORRUPT,
    DECOMPRESSION_BOMB,
    NAN_VALUES,
    NOT_AN_IMAGE,
    TOO_LARGE,
    TRUNCATED,
    Rejected,
)
from medq.storage.ingest.normalize import DEFAULT_WINDOWS, apply_window, evenly_spaced, finish
from medq.storage.ingest.sniff import is_nifti_header


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress gzip bytes, refusing output over `limit` bytes (gzip bombs)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise Rejected(CORRUPT, f"gzip stream is corrupt ({exc})") from exc
    if len(out) > limit:
        raise Rejected(TOO_LARGE, f"decompresses to more than {limit} bytes")
    if not d.eof:
        raise Rejected(TRUNCATED, "gzip stream ends early")
    return out


def decode_nifti(data: bytes, *, gz: bool, axis: int, n_slices: int, modality: str | None,
                 max_pixels: int, max_bytes: int, bits: int, min_side: int) -> list[Frame]:
    import nibabel as nib
    raw = gunzip_limited(data, max_bytes) if gz else data
    if not is_nifti_header(raw[:544]):
        raise Rejected(NOT_AN_IMAGE, "no NIfTI-1/2 header")
    cls = nib.Nifti2Image if int.from_bytes(raw[:4], "little") == 540 or \
        int.from_bytes(raw[:4], "big") == 540 else nib.Nifti1Image
    try:
        img = cls.from_stream(io.BytesIO(raw))
        shape = tuple(int(s) for s in img.header.get_data_shape())
    except Exception as exc:
        raise Rejected(CORRUPT, f"NIfTI header cannot be parsed ({type(exc).__name__}: "
                       f"{str(exc)[:160]})") from exc
    if len(shape) < 2 or any(s <= 0 for s in shape[:3]):
        raise Rejected(BAD_DIMENSIONS, f"volume shape {shape}")
    vol_shape = shape[:3] if len(shape) >= 3 else shape
    plane = [s for i, s in enumerate(vol_shape) if i != axis] if len(vol_shape) == 3 else vol_shape
    if int(np.prod(plane)) > max_pixels:
        raise Rejected(DECOMPRESSION_BOMB, f"slices of {plane} exceed {max_pixels} pixels")
    itemsize = img.header.get_data_dtype().itemsize
    offset = int(img.header.get("vox_offset", 0) or 0)
    needed = offset + int(np.prod(shape)) * itemsize
    if needed > max_bytes:
        raise Rejected(TOO_LARGE, f"volume {shape} needs {needed} bytes, over {max_bytes}")
    if len(raw) < needed:
        raise Rejected(TRUNCATED, f"volume {shape} needs {needed} bytes, the file has {len(raw)}")
    try:
        vol = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise Rejected(CORRUPT, f"voxel data cannot be read ({type(exc).__name__})") from exc
    while vol.ndim > 3:
        vol = vol[..., 0]
    if vol.ndim == 2:
        vol = vol[:, :, None]
        axis = 2
    vol = vol.astype(np.float32, copy=False)  # float32 keeps big volumes at 4 bytes/voxel
    finite = np.isfinite(vol)
    if not finite.any():
        raise Rejected(NAN_VALUES, "every voxel is NaN or infinite")
    lo, hi = float(vol[finite].min()), float(vol[finite].max())
    window = DEFAULT_WINDOWS.get(modality or "") if (modality == "CT" and lo <= -500) else None
    vol = np.where(finite, vol, lo)
    if window:
        unit = apply_window(vol, *window)
    else:
        if hi <= lo:
            raise Rejected(CONSTANT_IMAGE, f"every voxel has the value {lo:g}")
        unit = ((vol - lo) / np.float32(hi - lo)).astype(np.float32, copy=False)
    moved = np.moveaxis(unit, axis, 0)
    nonempty = [i for i in range(moved.shape[0]) if moved[i].max() > moved[i].min()]
    if not nonempty:
        raise Rejected(NAN_VALUES if not finite.all() else CORRUPT,
                       "no slice with any contrast along the chosen axis")
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    frames = []
    for k in [nonempty[j] for j in evenly_spaced(len(nonempty), n_slices)]:
        sl = np.ascontiguousarray(np.rot90(moved[k]))
        meta = {"format": "nifti", "shape": list(shape), "voxel_size_mm": zooms, "axis": axis,
                "slice": k, "n_slices": int(moved.shape[0])}
        if window:
            meta["window"] = {"center": window[0], "width": window[1]}
        frames.append(Frame(finish(sl, bits=bits, min_side=min_side), modality, meta,
                            f"axis {axis} slice {k}"))
    return frames


__all__ = ["decode_nifti", "gunzip_limited"]
