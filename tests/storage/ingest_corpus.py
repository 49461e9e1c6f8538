"""Builders for ingest tests: good files of every format and a corpus of broken ones.

Each bad file's expected reason code is returned with it, so the test checks the reason, not
only that something failed. Everything is generated here (seeded), from pydicom's test files.
"""
from __future__ import annotations

import gzip
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file


def dicom(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file(name))


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def noise(shape, seed=0, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 4095
    return rng.integers(0, top + 1, size=shape).astype(dtype)


def nifti(vol: np.ndarray, *, gz: bool) -> bytes:
    import nibabel as nib
    img = nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.0, 1.0]))
    raw = img.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def smooth_volume(shape=(40, 36, 24), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    vol = 1000 * np.exp(-(x**2 + y**2 + z**2) * 2) + rng.normal(0, 20, shape)
    return vol.astype(np.float32)


def png_bomb_header(width=100_000, height=100_000) -> bytes:
    """A valid PNG signature and IHDR declaring a huge image, with one tiny IDAT."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def good_files(root: Path) -> dict[str, int]:
    """Write good files under `root`; returns relative path -> expected number of images."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}

    def put(rel, data, n=1):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out[rel] = n

    put("fundus/gray.png", png(noise((64, 48), 1)))
    put("rgb.png", png(noise((40, 50, 3), 2)))
    buf = io.BytesIO()
    Image.fromarray(noise((32, 32, 3), 3)).save(buf, format="JPEG", quality=90)
    put("photo.jpeg", buf.getvalue())
    import tifffile
    buf = io.BytesIO()
    tifffile.imwrite(buf, noise((30, 20), 4, np.uint16))
    put("img16.tif", buf.getvalue())
    buf = io.BytesIO()
    tifffile.imwrite(buf, noise((16, 24, 3), 5))
    put("rgb.tiff", buf.getvalue())
    put("ct/ct.dcm", dicom_bytes(dicom("CT_small.dcm")))
    put("mr/MRFILE", dicom_bytes(dicom("MR_small.dcm")))  # no extension: sniffed
    mono1 = dicom("MR_small.dcm")
    mono1.PhotometricInterpretation = "MONOCHROME1"
    put("mr/mono1.dcm", dicom_bytes(mono1))
    put("mr/multi.dcm", dicom_bytes(dicom("emri_small.dcm")), 4)  # 10 frames, 4 kept (setting)
    put("mri/vol.nii.gz", nifti(smooth_volume(), gz=True), 3)
    put("vol.nii", nifti(smooth_volume(seed=1)[::-1].copy(), gz=False), 3)
    (root / "README.txt").write_text("not an image, ignored")
    (root / "NOTES").write_text("extensionless text, ignored")
    return out


def bad_files(root: Path) -> dict[str, str]:
    """Write broken files under `root`; returns relative path -> expected reason code."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = {}

    def put(rel, data, code):
        (root / rel).write_bytes(data)
        out[rel] = code

    ct = dicom_bytes(dicom("CT_small.dcm"))
    put("empty.dcm", b"", "empty_file")
    put("random.dcm", rng.bytes(4096), "not_dicom")
    put("truncated_pixels.dcm", ct[:-9000], "truncated")
    put("header_only.dcm", ct[:300], "truncated")
    put("jpegls.dcm", Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm")).read_bytes(),
        "unsupported_transfer_syntax")
    put("rtplan.dcm", Path(get_testdata_file("rtplan.dcm")).read_bytes(), "no_pixel_data")
    bomb = dicom("CT_small.dcm")
    bomb.Rows, bomb.Columns = 60000, 60000
    put("bomb.dcm", dicom_bytes(bomb), "decompression_bomb")
    burned = dicom("CT_small.dcm")
    burned.BurnedInAnnotation = "YES"
    put("burned.dcm", dicom_bytes(burned), "burned_in_annotation")
    put("bomb.png", png_bomb_header(), "decompression_bomb")
    put("text.png", b"this is a text file pretending to be a PNG\n" * 5, "not_an_image")
    good_png = png(noise((64, 64), 11))
    put("truncated.png", good_png[: len(good_png) // 2], "truncated")
    put("tiny.png", png(np.array([[7]], np.uint8)), "too_small")
    put("blank.png", png(np.zeros((64, 64), np.uint8)), "constant_image")
    put("png_named.jpg", png(noise((32, 32), 12)), "extension_mismatch")
    put("corrupt.jpg", b"\xff\xd8\xff\xe0" + rng.bytes(2000), "corrupt")
    put("corrupt.nii.gz", b"\x1f\x8b\x08\x00" + rng.bytes(3000), "corrupt")
    put("nan.nii", nifti(np.full((16, 16, 8), np.nan, np.float32), gz=False), "nan_values")
    put("truncated.nii", nifti(smooth_volume(), gz=False)[:5000], "truncated")
    put("random.nii", rng.bytes(5000), "not_an_image")
    put("gzip_bomb.nii.gz", gzip.compress(b"\x00" * (24 * 1024 * 1024), mtime=0), "too_large")
    put("garbage.tif", b"II*\x00" + rng.bytes(500), "corrupt")
    return out
