"""Base images: real medical images that ship inside PyPI packages, plus procedural phantoms.

What is used (all offline, nothing downloaded):

- MRI: nilearn's MNI152 T1 template (axial, coronal and sagittal slices at several positions) and
  pydicom test MR files (knee/shoulder, abdomen, small head series).
- CT: pydicom ``CT_small.dcm`` and ``693_UNCI.dcm`` (Hounsfield units, several display windows),
  skimage's Shepp-Logan phantom and random-ellipse phantoms (:mod:`medq.engine.phantoms`).
- X-ray: pydicom-data computed radiographs ``RG1_UNCI`` (chest) and ``RG3_UNCI`` (leg), crops.
- Ultrasound: pydicom-data ``gdcm-US-ALOKA-16`` (pelvis, two panes), cropped to the image area
  (no burnt-in text). The other US test files are Doppler overlays or nearly empty frames.
- Fundus: skimage ``data.retina()`` (and crops) and ``data.microaneurysms()``.
- Histopathology: skimage ``data.immunohistochemistry()`` and crops.
- Endoscopy: nothing ships, so :func:`medq.engine.phantoms.endoscopy_frame` frames.

A base is addressed by a stable reference string (``"MRI/mni152/axial/z090"``), which is what
worlds and pool manifests record. :func:`load_base` returns a square float32 image in [0, 1]
((H, W) or (H, W, 3)) and its provenance (package, version, file, slice, crop, window).
Loaded bases are cached in memory per (reference, size).
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any

import numpy as np
from PIL import Image

from medq.engine.taxonomy import MODALITIES
from medq.errors import MedQError


class SourceError(MedQError):
    """A base image reference is unknown or its source cannot be read."""


@dataclass(frozen=True)
class BaseRef:
    """One base image: `ref` (stable id), `modality`, and how to load it at native resolution."""

    ref: str
    modality: str
    package: str
    file: str
    slice: str | None
    load: Callable[[], np.ndarray] = field(compare=False, repr=False)
    extra: tuple = ()  # (key, value) pairs for provenance: crop box, window, ...
    native_side: int | None = None  # known small native resolution (None: 180 px or more)
    channels: int = 1                # 1 = grayscale, 3 = RGB (known without loading)

    def provenance(self) -> dict:
        prov: dict[str, Any] = {"ref": self.ref, "modality": self.modality, "package": self.package,
                                "version": _version(self.package), "file": self.file}
        if self.slice is not None:
            prov["slice"] = self.slice
        prov.update(dict(self.extra))
        if self.native_side:
            prov["native_side"] = self.native_side
        prov["channels"] = self.channels
        return prov


def _version(package: str) -> str | None:
    dist = {"skimage": "scikit-image", "medq": "medq"}.get(package, package)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _normalize(a: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = np.percentile(a, [lo_pct, hi_pct])
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def _crop(a: np.ndarray, box: tuple[float, float, float, float] | None) -> np.ndarray:
    """Crop by a fractional box (top, left, bottom, right) in [0, 1]."""
    if box is None:
        return a
    h, w = a.shape[:2]
    t, l, b, r = box
    return a[int(t * h):int(b * h), int(l * w):int(r * w)]


# -- native loaders (cached per file) ---------------------------------------------------------

MNI_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


@lru_cache(maxsize=1)
def _mni() -> np.ndarray:
    """The MNI152 T1 template scaled to [0, 1], exactly as nilearn's
    ``load_mni152_template(resolution=1)``, read with nibabel from the file nilearn ships
    (importing ``nilearn.datasets`` costs seconds; the data is the same)."""
    import importlib.util
    import os
    spec = importlib.util.find_spec("nilearn")
    path = None
    if spec and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", MNI_FILE)
    if path and os.path.isfile(path):
        import nibabel as nib
        # nibabel types load() as FileBasedImage; the NIfTI image it returns has dataobj
        vol = np.asarray(nib.load(path).dataobj, dtype=np.float32)  # type: ignore[attr-defined]
        return vol / vol.max()
    from nilearn.datasets import load_mni152_template
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)


@lru_cache(maxsize=16)
def _dicom(name: str):
    import pydicom
    from pydicom.data import get_testdata_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
        if path is None:
            raise SourceError(f"pydicom test file {name!r} is not installed (pydicom-data?)")
        ds = pydicom.dcmread(path)
        return ds, ds.pixel_array


def _dicom_gray(name: str, frame: int | None = None, window: tuple[float, float] | None = None
                ) -> np.ndarray:
    """A DICOM frame as float [0, 1]: modality LUT (HU for CT), then a window (centre, width)
    or percentile normalization; MONOCHROME1 inverted so that bright = dense; colour -> gray."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut
    ds, px = _dicom(name)
    a = px[frame] if frame is not None else px
    pi = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if pi == "PALETTE COLOR":
        a = apply_color_lut(a, ds)
    if a.ndim == 3:
        a = a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    else:
        a = apply_modality_lut(a, ds).astype(np.float32)
    if window is not None:
        c, w = window
        out = np.clip((a - (c - w / 2)) / w, 0, 1).astype(np.float32)
    else:
        out = _normalize(a)
    return 1.0 - out if pi == "MONOCHROME1" else out


def _fit_content(a: np.ndarray, threshold: float = 0.05, margin: float = 0.06) -> np.ndarray:
    """Crop to the bounding box of the content (values above `threshold`) plus a margin, padded
    with zeros to a square so that the anatomy fills the frame."""
    ys, xs = np.nonzero(a > threshold)
    if len(ys) == 0:
        return a
    t, b, l, r = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = int(max(b - t, r - l) * (1 + 2 * margin))
    cy, cx = (t + b) // 2, (l + r) // 2
    out = np.zeros((side, side), dtype=a.dtype)
    y0, x0 = cy - side // 2, cx - side // 2
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + side, a.shape[0]), min(x0 + side, a.shape[1])
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = a[sy0:sy1, sx0:sx1]
    return out


def _mni_slice(axis: int, index: int) -> np.ndarray:
    vol = _mni()
    sl = np.take(vol, index, axis=axis)
    # Radiological display (superior/anterior up), the brain filling the frame.
    return _fit_content(_normalize(np.rot90(sl), 0.0, 99.8))


@lru_cache(maxsize=8)
def _skimage(name: str) -> np.ndarray:
    from skimage import data
    a = getattr(data, name)()
    a = a.astype(np.float32)
    return a / 255.0 if a.max() > 1.5 else a


# -- the catalogue of bases ---------------------------------------------------------------------

_NATIVE = {"MR_small.dcm": 64, "emri_small.dcm": 64, "microaneurysms": 102,
           "CT_small.dcm": 128}


_RGB = ("fundus/skimage/retina/", "histopathology/", "endoscopy/")


def _ref(ref, modality, package, file, sl, load, **extra) -> BaseRef:
    native = next((v for k, v in _NATIVE.items() if k in ref), None)
    channels = 3 if ref.startswith(_RGB) else 1
    return BaseRef(ref, modality, package, file, sl, load, tuple(sorted(extra.items())), native,
                   channels)


def _build_refs() -> dict[str, list[BaseRef]]:
    out: dict[str, list[BaseRef]] = {m: [] for m in MODALITIES}
    mni_file = "MNI152 T1 template (load_mni152_template, resolution=1)"

    # MRI: MNI152 slices through the whole brain in three orientations.
    for z in range(50, 146, 8):
        out["MRI"].append(_ref(f"MRI/mni152/axial/z{z:03d}", "MRI", "nilearn", mni_file,
                               f"axial z={z}", lambda z=z: _mni_slice(2, z)))
    for y in range(70, 171, 12):
        out["MRI"].append(_ref(f"MRI/mni152/coronal/y{y:03d}", "MRI", "nilearn", mni_file,
                               f"coronal y={y}", lambda y=y: _mni_slice(1, y)))
    for x in range(45, 146, 12):
        out["MRI"].append(_ref(f"MRI/mni152/sagittal/x{x:03d}", "MRI", "nilearn", mni_file,
                               f"sagittal x={x}", lambda x=x: _mni_slice(0, x)))
    for name, box in (("MR_small.dcm", None), ("MR2_UNCI.dcm", None),
                      ("MR-SIEMENS-DICOM-WithOverlays.dcm", None),
                      ("examples_overlay.dcm", (0.0, 0.1, 1.0, 0.9))):
        out["MRI"].append(_ref(f"MRI/pydicom/{name}", "MRI", "pydicom", name, None,
                               lambda n=name, b=box: _crop(_dicom_gray(n), b),
                               **({"crop": list(box)} if box else {})))
    for f in (0, 4, 8):
        out["MRI"].append(_ref(f"MRI/pydicom/emri_small.dcm/f{f}", "MRI", "pydicom",
                               "emri_small.dcm", f"frame {f}",
                               lambda f=f: _dicom_gray("emri_small.dcm", frame=f)))

    # CT: real slices in several display windows, the Shepp-Logan phantom, random phantoms.
    windows = {"soft": (40.0, 400.0), "bone": (400.0, 1800.0), "brain": (40.0, 120.0)}
    for name, wins in (("CT_small.dcm", ("soft", "bone")),
                       ("693_UNCI.dcm", ("soft", "bone", "brain"))):
        pkg = "pydicom"
        for wname in wins:
            out["CT"].append(_ref(f"CT/pydicom/{name}/{wname}", "CT", pkg, name, None,
                                  lambda n=name, w=windows[wname]: _dicom_gray(n, window=w),
                                  window={"centre": windows[wname][0], "width": windows[wname][1]}))
    out["CT"].append(_ref("CT/skimage/shepp_logan_phantom", "CT", "skimage",
                          "data.shepp_logan_phantom()", None,
                          lambda: _skimage("shepp_logan_phantom")))
    from medq.engine.phantoms import ct_phantom, endoscopy_frame
    for k in range(8):
        out["CT"].append(_ref(f"CT/medq/ellipse_phantom/{k}", "CT", "medq",
                              "medq.engine.phantoms.ct_phantom", f"seed {k}",
                              lambda k=k: ct_phantom(k, 256)))

    # X-ray: two computed radiographs, whole and regional crops.
    for name, boxes in (("RG1_UNCI.dcm", {"full": (0.0, 0.0, 1.0, 1.0),
                                          "right_lung": (0.1, 0.05, 0.7, 0.55),
                                          "left_lung": (0.1, 0.45, 0.7, 0.95),
                                          "heart": (0.35, 0.25, 0.95, 0.85)}),
                        ("RG3_UNCI.dcm", {"full": (0.0, 0.0, 1.0, 1.0),
                                          "upper": (0.0, 0.2, 0.5, 0.8),
                                          "lower": (0.5, 0.2, 1.0, 0.8)})):
        for region, box in boxes.items():
            out["X-ray"].append(_ref(f"X-ray/pydicom/{name}/{region}", "X-ray", "pydicom-data",
                                     name, None, lambda n=name, b=box: _crop(_dicom_gray(n), b),
                                     crop=list(box)))

    # Ultrasound: the B-mode image areas (burnt-in text cropped away).
    us = {"gdcm-US-ALOKA-16.dcm": {"left": (0.2, 0.07, 0.84, 0.51),
                                   "right": (0.2, 0.54, 0.84, 0.97),
                                   "left_upper": (0.2, 0.07, 0.6, 0.51),
                                   "right_upper": (0.2, 0.54, 0.6, 0.97),
                                   "left_deep": (0.45, 0.07, 0.84, 0.51),
                                   "right_deep": (0.45, 0.54, 0.84, 0.97)}}
    for name, boxes in us.items():
        for region, box in boxes.items():
            out["ultrasound"].append(_ref(f"ultrasound/pydicom/{name}/{region}", "ultrasound",
                                          "pydicom-data", name, None,
                                          lambda n=name, b=box: _crop(_dicom_gray(n), b),
                                          crop=list(box)))

    # Fundus.
    for region, box in {"full": None, "disc": (0.3, 0.45, 0.75, 0.9),
                        "macula": (0.25, 0.1, 0.75, 0.6), "upper": (0.05, 0.2, 0.55, 0.8),
                        "lower": (0.45, 0.2, 0.95, 0.8)}.items():
        out["fundus"].append(_ref(f"fundus/skimage/retina/{region}", "fundus", "skimage",
                                  "data.retina()", None,
                                  lambda b=box: _crop(_skimage("retina"), b),
                                  **({"crop": list(box)} if box else {})))
    out["fundus"].append(_ref("fundus/skimage/microaneurysms", "fundus", "skimage",
                              "data.microaneurysms()", None, lambda: _skimage("microaneurysms")))

    # Histopathology.
    for region, box in {"full": None, "tl": (0, 0, 0.5, 0.5), "tr": (0, 0.5, 0.5, 1.0),
                        "bl": (0.5, 0, 1.0, 0.5), "br": (0.5, 0.5, 1.0, 1.0),
                        "centre": (0.25, 0.25, 0.75, 0.75)}.items():
        out["histopathology"].append(_ref(
            f"histopathology/skimage/immunohistochemistry/{region}", "histopathology", "skimage",
            "data.immunohistochemistry()", None,
            lambda b=box: _crop(_skimage("immunohistochemistry"), b),
            **({"crop": list(box)} if box else {})))

    # Endoscopy: procedural.
    for k in range(12):
        out["endoscopy"].append(_ref(f"endoscopy/medq/synthetic/{k}", "endoscopy", "medq",
                                     "medq.engine.phantoms.endoscopy_frame", f"seed {k}",
                                     lambda k=k: endoscopy_frame(k, 256)))
    return out


_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _refs() -> dict[str, list[BaseRef]]:
    return _build_refs()


def base_refs(modality: str, min_native: int | None = None) -> list[BaseRef]:
    """The bases of `modality` (a taxonomy modality), in a fixed order.

    `min_native` leaves out bases whose native resolution is below it (a 64-px MR upsampled to
    128 px looks blurred, which would contradict a "good" label); if that leaves none, all are
    kept."""
    refs = _refs()
    if modality not in refs:
        raise SourceError(f"no base images for modality {modality!r}; modalities: {list(refs)}")
    found = list(refs[modality])
    if min_native:
        sharp = [b for b in found if b.native_side is None or b.native_side >= min_native]
        found = sharp or found
    return found


def all_refs() -> dict[str, BaseRef]:
    return {b.ref: b for bases in _refs().values() for b in bases}


def _square(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    s = min(h, w)
    t, l = (h - s) // 2, (w - s) // 2
    return a[t:t + s, l:l + s]


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    if a.shape[0] == size and a.shape[1] == size:
        return a.astype(np.float32)
    chans = [a] if a.ndim == 2 else [a[:, :, c] for c in range(a.shape[2])]
    # Antialiased downsampling (LANCZOS on float mode works per channel).
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(c, dtype=np.float32), mode="F")
                      .resize((size, size), Image.Resampling.LANCZOS if size < c.shape[0]
                              else Image.Resampling.BICUBIC),
                      dtype=np.float32) for c in chans]
    res = out[0] if a.ndim == 2 else np.stack(out, axis=-1)
    return np.clip(res, 0, 1).astype(np.float32)


@lru_cache(maxsize=512)
def _load_cached(ref: str, size: int) -> tuple[np.ndarray, dict]:
    base = all_refs().get(ref)
    if base is None:
        raise SourceError(f"unknown base image reference {ref!r}")
    try:
        with _LOCK:  # loaders share caches (pydicom datasets, the MNI volume)
            native = base.load()
    except MedQError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot load base image {ref!r} from {base.package} "
                          f"({base.file}): {type(exc).__name__}: {exc}") from exc
    img = _resize(_square(np.asarray(native, dtype=np.float32)), size)
    if (1 if img.ndim == 2 else img.shape[2]) != base.channels:
        raise SourceError(f"base image {ref!r} has shape {img.shape}, declared "
                          f"{base.channels} channel(s)")
    img.setflags(write=False)  # shared by every caller of the cache
    return img, base.provenance()


def load_base(ref: str, size: int = 128) -> tuple[np.ndarray, dict]:
    """The base image `ref` as a read-only float32 (size, size) or (size, size, 3) array in
    [0, 1], and its provenance. Cached in memory."""
    if size < 16:
        raise SourceError(f"base image size must be at least 16 px, got {size}")
    img, prov = _load_cached(ref, int(size))
    return img, dict(prov)


def base_images(modality: str, size: int = 128) -> list[tuple[np.ndarray, dict]]:
    """Every base of `modality` as (array, provenance), loaded at `size` x `size`."""
    return [load_base(b.ref, size) for b in base_refs(modality)]


def base_lookup(refs, size: int) -> dict[str, np.ndarray]:
    """{ref: array} for the given references (what the engine's renderers take)."""
    return {ref: load_base(ref, size)[0] for ref in sorted(set(refs))}
