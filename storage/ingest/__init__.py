"""File ingest: DICOM / NIfTI / PNG / JPEG / TIFF folders or S3 prefixes into the workspace.

Public API: :func:`ingest`, :class:`IngestSummary`, :class:`IngestOptions`, :func:`decode_file`,
:func:`deidentify`, :class:`Rejected`. See :mod:`medq.storage.ingest.pipeline`.
"""
from medq.storage.ingest.deid import deidentify, hash_uid, source_pseudonym
from medq.storage.ingest.errors import Rejected, reason_code
from medq.storage.ingest.pipeline import (
    IngestError,
    IngestOptions,
    IngestSummary,
    decode_file,
    deid_salt,
    image_item_id,
    ingest,
    prepare,
    quarantine_id,
)

__all__ = [
    "IngestError",
    "IngestOptions",
    "IngestSummary",
    "Rejected",
    "decode_file",
    "deid_salt",
    "deidentify",
    "hash_uid",
    "image_item_id",
    "ingest",
    "prepare",
    "quarantine_id",
    "reason_code",
    "source_pseudonym",
]
