"""`ingest(workspace, source, split)`: files -> de-identified, normalized PNGs + catalog rows.

Per file: read -> classify (extension vs magic bytes) -> decode (DICOM is de-identified before its
pixels or metadata are looked at) -> normalize to the stored 8/16-bit image -> content id
(sha256 of the pixels) -> PNG + thumbnail in the object store under content keys -> one
``images`` row and one ``items`` row (kind 'image') per frame/slice. A batch of files is recorded
in one catalog transaction after its objects are written (objects first: a crash leaves at most
unreferenced content-addressed objects, never a row without its image).

Any failure of one file is recorded in ``quarantine`` (stage 'ingest', ref = path or URI,
reason ``code: detail``) and never stops the run. Re-ingesting is a no-op: existing items are
skipped (by pixel content id) and quarantine rows are keyed by (stage, real path), whatever
``ingest.source_refs`` says.

Paths identify patients as well as headers do (``/export/DOE^JOHN_4711/CT/IM0001.dcm``). With
``ingest.source_refs = pseudonymized`` (the default) an image's ``source_uri`` and its
``metadata.source.uri`` hold :func:`medq.storage.ingest.deid.source_pseudonym` (keyed with the
de-identification salt: stable across re-runs and workspaces sharing the salt; only the image
extension and the ``#frame``/``#slice`` part survive), never the path; ``path`` records the
absolute path or s3 URI. Quarantine is an operator table that points at the files in place (the
operator must find a bad file, and a quarantined file was never de-identified nor stored), so
its ``ref``/``payload`` keep the real path; images/datasets never hold a path in pseudonymized
mode. The progress callback gets the real path too (a local progress bar for the operator).
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medq.errors import MedQError
from medq.storage.ingest import sniff as sn
from medq.storage.ingest.deid import source_pseudonym
from medq.storage.ingest.dicom import Frame, decode_dicom
from medq.storage.ingest.errors import (
    EMPTY_FILE,
    EXTENSION_MISMATCH,
    NOT_AN_IMAGE,
    READ_ERROR,
    TOO_LARGE,
    UNSUPPORTED_FORMAT,
    Rejected,
    reason_code,
)
from medq.storage.ingest.nifti import decode_nifti
from medq.storage.ingest.raster import decode_pil, decode_tiff
from medq.storage.ingest.sources import SourceFile, list_source, modality_hint
from medq.storage.ingest.store import ImageWriter, image_id_of

SPLITS = ("pool", "eval", "train")
MAX_IDS_IN_SUMMARY = 10_000  # a million-file run must not keep every id in memory
STAGE = "ingest"
Progress = Callable[[int, int, str], None]  # (files done, files total, current ref)


class IngestError(MedQError):
    """The ingest run itself cannot proceed (bad split, unreadable source, catalog failure)."""


@dataclass
class IngestOptions:
    """Decoding options; defaults come from ``settings.ingest``."""

    nifti_axis: int = 2
    nifti_slices: int = 5
    max_frames: int = 16
    max_pixels: int = 100_000_000
    max_file_bytes: int = 2 * 1024**3
    min_side: int = 8
    bits: int = 8
    thumb_size: int = 128
    batch_size: int = 64
    strict_extensions: bool = True
    salt: str = ""
    modality: str | None = None  # forced modality (else DICOM tag, then folder hint)
    source_refs: str = "pseudonymized"  # or "path": what images.source_uri records

    @classmethod
    def from_settings(cls, settings, salt: str, **overrides) -> IngestOptions:
        s = settings.ingest
        opts = cls(nifti_axis=s.nifti_axis, nifti_slices=s.nifti_slices, max_frames=s.max_frames,
                   max_pixels=s.max_pixels, max_file_bytes=s.max_file_bytes, min_side=s.min_side,
                   bits=s.bits, thumb_size=s.thumb_size, batch_size=s.batch_size,
                   strict_extensions=s.strict_extensions, salt=salt,
                   source_refs=s.source_refs)
        for k, v in overrides.items():
            if v is not None:
                setattr(opts, k, v)
        if opts.nifti_axis not in (0, 1, 2):
            raise IngestError(f"nifti axis must be 0, 1 or 2, got {opts.nifti_axis}")
        if opts.source_refs not in ("pseudonymized", "path"):
            raise IngestError(f"source_refs must be 'pseudonymized' or 'path', got "
                              f"{opts.source_refs!r}")
        return opts


@dataclass
class IngestSummary:
    """Counts of one run. `ingested` and `skipped_existing` count images (a NIfTI file gives
    several); `quarantined` counts files per reason code; `ignored` counts non-image files.
    `image_ids` lists the ids ingested by this run (the first 10 000)."""

    source: str
    split: str
    files: int = 0
    files_ok: int = 0
    ingested: int = 0
    skipped_existing: int = 0
    ignored: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    modalities: dict[str, int] = field(default_factory=dict)
    image_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_quarantined(self) -> int:
        return sum(self.quarantined.values())

    def to_dict(self, *, with_ids: bool = False) -> dict:
        d = asdict(self)
        d["n_quarantined"] = self.n_quarantined
        if not with_ids:
            d.pop("image_ids")
        return d


@dataclass
class Prepared:
    """One decoded frame ready to be written (pixels are the stored uint8/uint16 image)."""

    image_id: str
    pixels: object
    ref: str
    source_format: str
    modality: str | None
    metadata: dict


def quarantine_id(stage: str, ref: str) -> str:
    return hashlib.sha256(f"{stage}|{ref}".encode()).hexdigest()[:32]


def image_item_id(split: str, image_id: str) -> str:
    """Item id of a plain image item: one per (split, image)."""
    return f"{split}:image:{image_id}"


def deid_salt(workspace, *, create: bool = True) -> str:
    """The salt of hashed DICOM UIDs and source pseudonyms: the setting, else a random one kept
    in the workspace (made on first use; with ``create=False`` "" when there is none yet)."""
    configured = workspace.settings.ingest.deid_salt.get_secret_value()
    if configured:
        return configured
    path = Path(workspace.root) / "deid_salt"
    if not path.is_file():
        if not create:
            return ""
        import secrets
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.replace(path)
    return path.read_text().strip()


# -- decoding one file --------------------------------------------------------------------------

def decode_file(data: bytes, rel: str, opts: IngestOptions) -> list[Frame]:
    """Frames of one file (raises :class:`Rejected`). `rel` gives the extension and hints."""
    claimed = sn.kind_from_name(rel)
    if claimed is None:
        raise Rejected(UNSUPPORTED_FORMAT, "not an image file type")
    if len(data) == 0:
        raise Rejected(EMPTY_FILE, "file has 0 bytes")
    if len(data) > opts.max_file_bytes:
        raise Rejected(TOO_LARGE, f"{len(data)} bytes, over the limit of {opts.max_file_bytes}")
    actual = sn.sniff(data[:sn.HEAD_BYTES])
    kind = _resolve_kind(claimed, actual, rel, opts)
    hint = opts.modality or modality_hint(rel)
    if kind == sn.DICOM:
        frames = decode_dicom(data, forced=actual != sn.DICOM, salt=opts.salt,
                              max_frames=opts.max_frames, max_pixels=opts.max_pixels,
                              bits=opts.bits, min_side=opts.min_side)
        if opts.modality:
            for f in frames:
                f.modality = opts.modality
        elif hint:
            for f in frames:
                f.modality = f.modality or hint
        return frames
    if kind == sn.NIFTI:
        return decode_nifti(data, gz=actual == sn.GZIP, axis=opts.nifti_axis,
                            n_slices=opts.nifti_slices, modality=hint, max_pixels=opts.max_pixels,
                            max_bytes=opts.max_file_bytes, bits=opts.bits, min_side=opts.min_side)
    if kind == sn.TIFF:
        frames = decode_tiff(data, max_pixels=opts.max_pixels, max_frames=opts.max_frames,
                             bits=opts.bits, min_side=opts.min_side)
    else:
        frames = decode_pil(data, kind, max_pixels=opts.max_pixels, bits=opts.bits,
                            min_side=opts.min_side)
    for f in frames:
        f.modality = hint
    return frames


def _resolve_kind(claimed: str, actual: str | None, rel: str, opts: IngestOptions) -> str:
    if claimed == "":  # no extension: trust recognisable content, ignore the rest
        if actual in sn.IMAGE_KINDS:
            return actual
        if actual == sn.GZIP:
            raise Rejected(UNSUPPORTED_FORMAT, "gzip file without a .nii.gz name")
        raise Rejected(UNSUPPORTED_FORMAT, "no extension and no recognisable image content")
    if claimed == sn.NIFTI:
        gz = sn.is_gzip_name(rel)
        if gz and actual != sn.GZIP:
            raise Rejected(NOT_AN_IMAGE if actual is None else EXTENSION_MISMATCH,
                           f"named .nii.gz but the content is {actual or 'not gzip'}")
        if not gz and actual != sn.NIFTI:
            raise Rejected(NOT_AN_IMAGE if actual is None else EXTENSION_MISMATCH,
                           f"named .nii but the content is {actual or 'not a NIfTI header'}")
        return sn.NIFTI
    if actual == claimed:
        return claimed
    if actual is None:
        if claimed == sn.DICOM:
            return sn.DICOM  # DICOM without preamble: parsed with force, checked for pixels
        raise Rejected(NOT_AN_IMAGE, f"named as {claimed.upper()} but the bytes are not an image")
    if actual in (sn.OTHER_IMAGE, sn.GZIP):
        raise Rejected(EXTENSION_MISMATCH if opts.strict_extensions else UNSUPPORTED_FORMAT,
                       f"named as {claimed.upper()} but the content is {actual}")
    if opts.strict_extensions:
        raise Rejected(EXTENSION_MISMATCH, f"named as {claimed.upper()} but the content is "
                       f"{actual.upper()}")
    return actual


def source_ref(src: SourceFile, opts: IngestOptions) -> str:
    """What the catalog records as the source of `src` (see module docstring)."""
    if opts.source_refs == "path":
        return src.ref
    return source_pseudonym(src.root, src.rel, opts.salt)


def prepare(frames: list[Frame], src: SourceFile, source_format: str,
            uri: str | None = None) -> list[Prepared]:
    """Frames as :class:`Prepared`; `uri` is the recorded source (default: the real ref)."""
    uri = src.ref if uri is None else uri
    out = []
    for f in frames:
        ref = uri + (f"#{f.part}" if f.part else "")
        meta = dict(f.metadata)
        meta["source"] = {"uri": uri, "part": f.part}
        out.append(Prepared(image_id_of(f.pixels), f.pixels, ref,
                            meta.get("format", source_format), f.modality, meta))
    return out


# -- the run ------------------------------------------------------------------------------------

def ingest(workspace, source: str, split: str, progress: Progress | None = None, *,
           nifti_axis: int | None = None, nifti_slices: int | None = None,
           modality: str | None = None, item_source: str = "ingest") -> IngestSummary:
    """Ingest every file under `source` (folder, file or ``s3://bucket/prefix``) into `split`.

    Returns an :class:`IngestSummary`. Failures of single files are quarantined, not raised;
    :class:`IngestError` only when the run cannot start (bad split, missing source)."""
    from medq.storage.ingest.sources import SourceError
    if split not in SPLITS:
        raise IngestError(f"split must be one of {SPLITS}, got {split!r}")
    started = time.perf_counter()
    opts = IngestOptions.from_settings(workspace.settings, deid_salt(workspace),
                                       nifti_axis=nifti_axis, nifti_slices=nifti_slices,
                                       modality=modality)
    try:
        files = list_source(source, workspace.settings)
    except SourceError as exc:
        raise IngestError(str(exc)) from exc
    summary = IngestSummary(source=source, split=split, files=len(files))
    reasons: Counter = Counter()
    modalities: Counter = Counter()
    batch: list[tuple[SourceFile, list[Prepared] | None, str | None]] = []
    for n, src in enumerate(files, start=1):
        batch.append(_process(src, opts))
        if progress:
            progress(n, len(files), src.ref)
        if len(batch) >= opts.batch_size:
            _flush(workspace, batch, split, summary, reasons, modalities, item_source,
                   opts.thumb_size)
            batch = []
    if batch:
        _flush(workspace, batch, split, summary, reasons, modalities, item_source,
                   opts.thumb_size)
    summary.quarantined = dict(sorted(reasons.items()))
    summary.modalities = dict(sorted(modalities.items()))
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _process(src: SourceFile, opts: IngestOptions):
    """(file, prepared frames or None, reason or None); None/None means ignored."""
    claimed = sn.kind_from_name(src.rel)
    if claimed is None:
        return src, None, None
    if src.size > opts.max_file_bytes:  # refuse before reading it into memory
        return src, None, f"{TOO_LARGE}: {src.size} bytes, over the limit of {opts.max_file_bytes}"
    try:
        data = src.read()
    except Exception as exc:  # noqa: BLE001
        return src, None, f"{READ_ERROR}: {type(exc).__name__}: {str(exc)[:160]}"
    if claimed == "" and sn.sniff(data[:sn.HEAD_BYTES]) not in sn.IMAGE_KINDS:
        return src, None, None  # extensionless non-image (README, LICENSE, ...): not ours
    try:
        frames = decode_file(data, src.rel, opts)
        kind = sn.kind_from_name(src.rel) or sn.sniff(data[:sn.HEAD_BYTES]) or "unknown"
        return src, prepare(frames, src, kind, source_ref(src, opts)), None
    except Rejected as exc:
        return src, None, exc.reason
    except MemoryError:
        return src, None, f"{TOO_LARGE}: ran out of memory decoding it"
    except Exception as exc:  # a decoder bug must not stop the run; record it  # noqa: BLE001
        return src, None, f"decode_error: {type(exc).__name__}: {str(exc)[:160]}"


def _flush(workspace, batch, split, summary, reasons, modalities, item_source, thumb_size) -> None:
    # One catalog connection per batch (opening one is the slow part); none held between
    # batches, so other processes can use the catalog during a long ingest.
    with workspace.catalog.connect():
        _flush_batch(workspace, batch, split, summary, reasons, modalities, item_source,
                     thumb_size)


def _flush_batch(workspace, batch, split, summary, reasons, modalities, item_source,
                 thumb_size) -> None:
    prepared = [p for _, ps, _ in batch if ps for p in ps]
    item_ids = sorted({image_item_id(split, p.image_id) for p in prepared})
    existing_items = set()
    if item_ids:
        existing_items = {r["item_id"] for r in workspace.catalog.query(
            "SELECT item_id FROM items WHERE item_id IN (SELECT unnest(?::VARCHAR[]))", [item_ids])}
    writer = ImageWriter(workspace, thumb_size)
    item_rows, seen = [], set()
    for p in prepared:
        item_id = image_item_id(split, p.image_id)
        if item_id in existing_items or p.image_id in seen:
            summary.skipped_existing += 1  # same pixels already in this split (or twice here)
            continue
        seen.add(p.image_id)
        writer.add(p.pixels, source_uri=p.ref, source_format=p.source_format,
                   modality=p.modality, metadata=p.metadata)
        item_rows.append({"item_id": item_id, "split": split, "kind": "image",
                          "image_id": p.image_id, "modality": p.modality, "source": item_source})
        summary.ingested += 1
        if len(summary.image_ids) < MAX_IDS_IN_SUMMARY:
            summary.image_ids.append(p.image_id)
        modalities[p.modality or "unknown"] += 1
    image_rows = writer.commit_objects()
    quarantine_rows, cleared = [], []
    for src, ps, reason in batch:
        if reason:
            quarantine_rows.append({"quarantine_id": quarantine_id(STAGE, src.ref), "stage": STAGE,
                                    "ref": src.ref, "reason": reason,
                                    "payload": {"size": src.size, "rel": src.rel}})
            reasons[reason_code(reason)] += 1
        elif ps is None:
            summary.ignored += 1
        else:
            summary.files_ok += 1
            cleared.append(quarantine_id(STAGE, src.ref))
    with workspace.catalog.transaction() as tx:
        tx.upsert("images", image_rows)
        tx.upsert("items", item_rows)
        tx.upsert("quarantine", quarantine_rows)
        if cleared:  # a file that failed before and ingests now is no longer quarantined
            tx.execute("DELETE FROM quarantine WHERE stage = ? AND quarantine_id IN "
                       "(SELECT unnest(?::VARCHAR[]))", [STAGE, cleared])
