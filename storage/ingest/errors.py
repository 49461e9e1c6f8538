"""Why a file was refused. Reasons are ``<code>: <detail>``; the code groups the summary."""
from __future__ import annotations

# Reason codes (the part before ':' in quarantine.reason).
EMPTY_FILE = "empty_file"
TOO_LARGE = "too_large"
NOT_AN_IMAGE = "not_an_image"
EXTENSION_MISMATCH = "extension_mismatch"
CORRUPT = "corrupt"
TRUNCATED = "truncated"
NOT_DICOM = "not_dicom"
NO_PIXEL_DATA = "no_pixel_data"
UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
UNSUPPORTED_FORMAT = "unsupported_format"
DECOMPRESSION_BOMB = "decompression_bomb"
BURNED_IN_ANNOTATION = "burned_in_annotation"
NAN_VALUES = "nan_values"
TOO_SMALL = "too_small"
CONSTANT_IMAGE = "constant_image"
BAD_DIMENSIONS = "bad_dimensions"
READ_ERROR = "read_error"


class Rejected(Exception):
    """A file (or one frame/slice of it) cannot be ingested; `code` is one of the constants."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail

    @property
    def reason(self) -> str:
        return str(self)


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0].strip()
