"""DICOM decoding: de-identify first, then rescale (modality LUT), apply the VOI transform (the
file's VOI LUT Sequence through ``pydicom.pixels.apply_voi_lut``, else its window, else the
modality's default window), invert MONOCHROME1.

Multi-frame files give up to `max_frames` evenly spaced frames. Only safe technical metadata
leaves this module (see :func:`safe_metadata`).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    get_decoder,
    pixel_array,
)

from medq.storage.ingest.deid import deidentify
from medq.storage.ingest.errors import (
    BURNED_IN_ANNOTATION,
    CORRUPT,
    DECOMPRESSION_BOMB,
    NO_PIXEL_DATA,
    NOT_DICOM,
    TRUNCATED,
    UNSUPPORTED_TRANSFER_SYNTAX,
    Rejected,
)
from medq.storage.ingest.normalize import (
    DEFAULT_WINDOWS,
    apply_window,
    evenly_spaced,
    finish,
    minmax,
    to_unit_gray,
)

# DICOM Modality (0008,0060) -> MedQ modality; codes not listed are kept as they are.
MODALITY_MAP = {
    "CT": "CT", "MR": "MRI", "CR": "X-ray", "DX": "X-ray", "DR": "X-ray", "RG": "X-ray",
    "MG": "X-ray", "IO": "X-ray", "PX": "X-ray", "XA": "X-ray", "RF": "X-ray", "US": "ultrasound",
    "IVUS": "ultrasound", "OP": "fundus", "SM": "histopathology", "ES": "endoscopy",
}


@dataclass
class Frame:
    """One decoded 2-D image of a file. `pixels` is the stored uint8/uint16 array."""

    pixels: np.ndarray
    modality: str | None
    metadata: dict = field(default_factory=dict)
    part: str | None = None  # "frame 3", "axis 2 slice 40"; None for single-image files


def read_dataset(data: bytes, *, forced: bool) -> Dataset:
    """Parse DICOM bytes; `forced` allows files without the DICM preamble."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on every oddity of real files
            ds = pydicom.dcmread(io.BytesIO(data), force=forced)
            ds.remove_private_tags()  # parse-time check of every element happens in deidentify
    except InvalidDicomError as exc:
        raise Rejected(NOT_DICOM, str(exc)) from exc
    except (EOFError, OSError) as exc:
        raise Rejected(TRUNCATED, f"file ends inside the DICOM header ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on garbage
        raise Rejected(CORRUPT, f"unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    if forced and not ("Rows" in ds and "Columns" in ds and _has_pixels(ds)):
        raise Rejected(NOT_DICOM, "no DICM preamble and no image dataset could be parsed")
    return ds


def _has_pixels(ds: Dataset) -> bool:
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def decode_dicom(data: bytes, *, forced: bool, salt: str, max_frames: int, max_pixels: int,
                 bits: int, min_side: int) -> list[Frame]:
    """De-identified, normalized frames of one DICOM file (raises :class:`Rejected`)."""
    ds = read_dataset(data, forced=forced)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deidentify(ds, salt)  # before anything else reads the dataset
    except Exception as exc:
        raise Rejected(CORRUPT, f"DICOM elements cannot be parsed ({type(exc).__name__})") from exc
    if not _has_pixels(ds):
        meta = getattr(ds, "file_meta", None)
        sop = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
        sop_name = getattr(sop, "name", str(sop or "?"))
        if "Image Storage" in sop_name:  # an image object whose pixels never arrived
            raise Rejected(TRUNCATED, f"{sop_name} object ends before its pixel data")
        raise Rejected(NO_PIXEL_DATA, f"DICOM object without pixel data (SOP class {sop_name})")
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        raise Rejected(BURNED_IN_ANNOTATION, "pixels may show identifying text "
                       "(BurnedInAnnotation = YES)")
    meta = getattr(ds, "file_meta", None)
    tsuid = meta.get("TransferSyntaxUID") if meta is not None else None
    if tsuid is None:
        tsuid = pydicom.uid.ImplicitVRLittleEndian
    try:
        decoder = get_decoder(tsuid)
    except NotImplementedError as exc:
        raise Rejected(UNSUPPORTED_TRANSFER_SYNTAX, f"{tsuid.name if hasattr(tsuid, 'name') else tsuid}: "
                       "no pixel decoder exists") from exc
    if not decoder.is_available:
        raise Rejected(UNSUPPORTED_TRANSFER_SYNTAX, f"{tsuid.name}: no decoder plugin installed "
                       "(e.g. pylibjpeg/gdcm)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as exc:
        raise Rejected(CORRUPT, f"bad Rows/Columns/NumberOfFrames ({exc})") from exc
    if rows * cols > max_pixels:
        raise Rejected(DECOMPRESSION_BOMB, f"{cols}x{rows} = {rows * cols} pixels per frame, over "
                       f"the limit of {max_pixels}")
    if rows <= 0 or cols <= 0 or n_frames <= 0:
        raise Rejected(CORRUPT, f"impossible size {cols}x{rows}x{n_frames}")
    metadata = safe_metadata(ds, tsuid)
    dicom_modality = str(ds.get("Modality", "") or "").upper()
    modality = MODALITY_MAP.get(dicom_modality, dicom_modality or None)
    frames = []
    picks = evenly_spaced(n_frames, max_frames)
    for i in picks:
        raw = _decode_frame(ds, i if n_frames > 1 else None)
        img, voi = _display(ds, raw, dicom_modality)
        frame_meta = dict(metadata) | voi
        if n_frames > 1:
            frame_meta["frame"] = i
        frames.append(Frame(finish(img, bits=bits, min_side=min_side), modality, frame_meta,
                            f"frame {i}" if n_frames > 1 else None))
    return frames


def _decode_frame(ds: Dataset, index: int | None) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pixel_array(ds, index=index)
    except Exception as exc:
        msg = str(exc)
        low = msg.lower()
        if any(t in low for t in ("less than expected", "truncat", "end of", "too short")):
            raise Rejected(TRUNCATED, f"pixel data is shorter than its header says ({msg[:160]})") from exc
        if "does not support" in low or "not supported" in low:
            raise Rejected(UNSUPPORTED_TRANSFER_SYNTAX, f"the installed decoders cannot decode "
                           f"this encoding ({msg[:200]})") from exc
        raise Rejected(CORRUPT, f"pixel data cannot be decoded ({type(exc).__name__}: "
                       f"{msg[:160]})") from exc


def _display(ds: Dataset, raw: np.ndarray, dicom_modality: str) -> tuple[np.ndarray, dict]:
    """Frame -> float [0, 1] (or uint8 colour) for storage, and the VOI transform used
    ({"voi_lut": ...} or {"window": {"center", "width"}}; empty for colour or min-max)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(raw, ds)
        return (rgb if rgb.dtype == np.uint8 else minmax(rgb)), {}
    if raw.ndim == 3:  # RGB / YBR already converted to RGB by pydicom
        return (raw if raw.dtype == np.uint8 else minmax(raw)), {}
    try:
        values = apply_modality_lut(raw, ds)
    except Exception:  # noqa: BLE001 - a broken modality LUT falls back to raw values
        values = raw
    img, voi = _voi_lut(values, ds)
    if img is None:
        window = _header_window(ds) or DEFAULT_WINDOWS.get(dicom_modality)
        img = apply_window(values, *window) if window else to_unit_gray(values)
        voi = {"window": {"center": window[0], "width": window[1]}} if window else {}
    if photometric == "MONOCHROME1":  # 0 is white: invert so that bright means dense everywhere
        img = 1.0 - img if img.dtype.kind == "f" else 255 - img
    return img, voi


def _voi_lut(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray | None, dict]:
    """The file's first VOI LUT (a lookup table the scanner chose for display, preferred over
    its window, as pydicom does) -> float [0, 1] over the table's own output range; (None, {})
    when there is none or it is unusable (then the window path runs)."""
    seq = ds.get("VOILUTSequence")
    if not seq:
        return None, {}
    try:
        item = seq[0]
        out = apply_voi_lut(values, ds, index=0, prefer_lut=True)
        table = np.asarray(item.LUTData, np.float64).ravel()
        lo, hi = float(table.min()), float(table.max())
    except Exception:  # noqa: BLE001 - a broken VOI LUT falls back to the window
        return None, {}
    if not hi > lo:
        return None, {}
    img = np.clip((np.asarray(out, np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    # LUT Explanation is free text and stays behind (only technical metadata leaves ingest)
    return img, {"voi_lut": {"entries": int(len(table)),
                             "first_mapped": int(item.LUTDescriptor[1])}}


def _header_window(ds: Dataset) -> tuple[float, float] | None:
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None:
        return None
    try:
        c, w = float(center), float(width)
    except (TypeError, ValueError):
        return None
    return (c, w) if w > 0 and np.isfinite(c) and np.isfinite(w) else None


def _first(value):
    if isinstance(value, (MultiValue, list, tuple)):
        return value[0] if len(value) else None
    return value


def safe_metadata(ds: Dataset, tsuid) -> dict:
    """The technical fields kept in images.metadata (read from the de-identified dataset)."""
    out: dict = {"format": "dicom", "deidentified": True}

    def put(key, value):
        if value is not None and value != "":
            out[key] = value
    put("dicom_modality", str(ds.get("Modality", "") or ""))
    put("rows", _int(ds.get("Rows")))
    put("columns", _int(ds.get("Columns")))
    put("frames", _int(ds.get("NumberOfFrames", 1)))
    put("bits_stored", _int(ds.get("BitsStored")))
    put("photometric", str(ds.get("PhotometricInterpretation", "") or ""))
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if spacing is not None:
        try:
            put("pixel_spacing_mm", [float(v) for v in spacing])
        except (TypeError, ValueError):
            pass
    thickness = ds.get("SliceThickness")
    try:
        put("slice_thickness_mm", float(thickness) if thickness not in (None, "") else None)
    except (TypeError, ValueError):
        pass
    header_window = _header_window(ds)
    if header_window:
        put("header_window", {"center": header_window[0], "width": header_window[1]})
    try:
        put("rescale", {"slope": float(ds.RescaleSlope), "intercept": float(ds.RescaleIntercept)}
            if "RescaleSlope" in ds and "RescaleIntercept" in ds else None)
    except (TypeError, ValueError):
        pass
    put("manufacturer_model", str(ds.get("ManufacturerModelName", "") or ""))
    put("manufacturer", str(ds.get("Manufacturer", "") or ""))
    put("transfer_syntax", getattr(tsuid, "name", str(tsuid)))
    put("series", str(ds.get("SeriesInstanceUID", "") or ""))  # hashed by de-identification
    return out


def _int(v):
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None
