"""Where files come from: a local file or folder, or an S3 bucket/prefix (``s3://bucket/prefix``).

Listing is done first (so a progress bar knows the total) and in a stable order; bytes are read
one file at a time when the file is processed.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from medq.errors import MedQError


class SourceError(MedQError):
    """The ingest source cannot be listed (missing folder, bad URI, unreachable bucket)."""


@dataclass
class SourceFile:
    """One file to ingest. `ref` is the absolute path or s3 URI (what quarantine records, and
    images.source_uri with ``ingest.source_refs = path``); `rel` is the path relative to the
    source root (for extension and folder hints); `root` is that root (the folder, or the parent
    of a single file; ``s3://bucket/prefix``): (root, rel) is what a source pseudonym hashes."""

    ref: str
    rel: str
    size: int
    read: Callable[[], bytes]
    root: str = ""


def list_source(source: str, settings) -> list[SourceFile]:
    """Every regular file under `source`, sorted by relative path."""
    if source.startswith("s3://"):
        return _list_s3(source, settings)
    root = Path(source).expanduser()
    if not root.exists():
        raise SourceError(f"ingest source {source!r} does not exist")
    if root.is_file():  # same root and rel as when its folder is the source
        return [_local(root, root.name, str(root.parent.resolve()))]
    root_ref = str(root.resolve())
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():
                files.append(_local(path, path.relative_to(root).as_posix(), root_ref))
    files.sort(key=lambda f: f.rel)
    return files


def _local(path: Path, rel: str, root: str) -> SourceFile:
    size = path.stat().st_size
    return SourceFile(ref=str(path.resolve()), rel=rel, size=size, read=path.read_bytes,
                      root=root)


def _list_s3(uri: str, settings) -> list[SourceFile]:
    m = re.match(r"^s3://([^/]+)/?(.*)$", uri)
    if not m:
        raise SourceError(f"ingest source {uri!r} is not s3://bucket[/prefix]")
    bucket, prefix = m.group(1), m.group(2)
    from medq.storage.objects import ObjectStoreError, S3ObjectStore
    o = settings.objects
    try:
        store = S3ObjectStore(o.s3_endpoint, bucket, access_key=o.s3_access_key,
                              secret_key=o.s3_secret_key, region=o.s3_region, secure=o.s3_secure,
                              create_bucket=False)
        keys = list(store.list(prefix))
        files = []
        for key in keys:
            size = store.stat(key).size
            rel = key[len(prefix):].lstrip("/") or key.rsplit("/", 1)[-1]
            ref = f"s3://{bucket}/{key}"
            files.append(SourceFile(ref=ref, rel=rel, size=size,
                                    read=partial(store.get_bytes, key),
                                    root=ref[:len(ref) - len(rel)].rstrip("/")))
    except ObjectStoreError as exc:
        raise SourceError(f"cannot list {uri} at {o.s3_endpoint} (objects.s3_* settings): "
                          f"{exc}") from exc
    return sorted(files, key=lambda f: f.rel)


_HINTS = [
    ("CT", {"ct", "cta", "hrct", "lowdose"}),
    ("MRI", {"mri", "mr", "t1", "t2", "flair", "dwi", "mprage"}),
    ("X-ray", {"xray", "cxr", "radiograph", "radiography", "dx", "cr", "chestxray"}),
    ("fundus", {"fundus", "retina", "retinal", "oct"}),
    ("histopathology", {"histopathology", "histology", "pathology", "wsi", "he", "ihc"}),
    ("endoscopy", {"endoscopy", "colonoscopy", "gastroscopy", "endoscopic"}),
    ("ultrasound", {"ultrasound", "us", "sonography", "echo"}),
]


def modality_hint(rel: str) -> str | None:
    """Modality guessed from the folder names of `rel` (deepest folder first), or None."""
    parts = rel.replace("\\", "/").split("/")[:-1]
    for part in reversed(parts):
        text = re.sub(r"x[-_ ]?ray", "xray", part.lower())
        tokens = {t for t in re.split(r"[^a-z0-9]+", text) if t}
        for modality, words in _HINTS:
            if tokens & words:
                return modality
    return None
