"""What a file is: by extension (what it claims) and by its first bytes (what it is)."""
from __future__ import annotations

import struct

DICOM, NIFTI, PNG, JPEG, TIFF, GZIP, OTHER_IMAGE = (
    "dicom", "nifti", "png", "jpeg", "tiff", "gzip", "other_image")
IMAGE_KINDS = (DICOM, NIFTI, PNG, JPEG, TIFF)
HEAD_BYTES = 544  # enough for the DICOM preamble and both NIfTI headers

_EXTENSIONS = {
    ".dcm": DICOM, ".dicom": DICOM, ".ima": DICOM,
    ".nii": NIFTI, ".nii.gz": NIFTI,
    ".png": PNG, ".jpg": JPEG, ".jpeg": JPEG, ".jpe": JPEG,
    ".tif": TIFF, ".tiff": TIFF,
}
# Names never ingested nor quarantined (DICOM media directories, sidecars).
_IGNORED_NAMES = {"dicomdir"}


def kind_from_name(name: str) -> str | None:
    """Image kind an extension claims; "" for a name without extension; None for other files."""
    lower = name.lower()
    base = lower.rsplit("/", 1)[-1]
    if base in _IGNORED_NAMES or base.startswith("."):
        return None
    if lower.endswith(".nii.gz"):
        return NIFTI
    if "." not in base:
        return ""
    return _EXTENSIONS.get("." + base.rsplit(".", 1)[-1])


def image_extension(name: str) -> str:
    """The known image extension of `name`, lower case (".dcm", ".nii.gz"), else "": never any
    other part of the name (an unknown "extension" may be a patient ID)."""
    lower = name.lower().rsplit("/", 1)[-1]
    if lower.endswith(".nii.gz"):
        return ".nii.gz"
    if "." not in lower:
        return ""
    ext = "." + lower.rsplit(".", 1)[-1]
    return ext if ext in _EXTENSIONS else ""


def is_gzip_name(name: str) -> bool:
    return name.lower().endswith(".gz")


def sniff(head: bytes) -> str | None:
    """Kind from magic bytes, or None when unrecognised."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return DICOM
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return TIFF
    if head.startswith(b"\x1f\x8b"):
        return GZIP
    if is_nifti_header(head):
        return NIFTI
    if head[:2] == b"BM" or head[:4] == b"GIF8" or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return OTHER_IMAGE
    return None


def is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348:
        for endian in "<>":
            if struct.unpack(endian + "i", head[:4])[0] == 348 and head[344:348] in (b"n+1\x00",
                                                                                   b"ni1\x00"):
                return True
    if len(head) >= 540:
        for endian in "<>":
            if struct.unpack(endian + "i", head[:4])[0] == 540 and head[4:8] in (b"n+2\x00",
                                                                               b"ni2\x00"):
                return True
    return False
