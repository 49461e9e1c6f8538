"""DICOM de-identification (basic application level confidentiality profile, PS3.15 Annex E,
implemented conservatively) applied to every dataset before anything from it is stored.

What happens to a dataset, recursively through sequences and the file meta:

- removed: every element of VR PN (person names: patient, physicians, operators, ...), DA, DT,
  TM (all dates and times), AS (ages), AE (station AE titles), LT/ST/UT/UC/UR (free text and URLs),
  every LO/SH element not on a short allowlist of technical fields (this covers IDs, accession
  number, institution and department names, addresses, study/series/procedure descriptions,
  comments, device serial numbers, code sequences' meanings), listed patient traits (sex, size,
  weight, pregnancy, smoking, ...), sequences that keep original values or text
  (OriginalAttributesSequence, ContentSequence, ...), icon images, overlays (60xx) and curves (50xx),
  UN elements and all private tags;
- replaced: every UID that is not a registered DICOM UID (instance, series, study, frame of
  reference, ...) by ``2.25.<int>`` derived from a salted sha256, so that images of one series stay
  grouped without revealing the original UIDs;
- kept: pixel data and the technical elements needed to decode and display it.

Burned-in text in the pixels is not detected here; files flagged ``BurnedInAnnotation = YES`` are
refused by the DICOM decoder instead of being stored.

File paths are identifying too (exports are often organised by patient: ``DOE^JOHN_4711/CT/...``):
:func:`source_pseudonym` is what ingest records instead of the path (``ingest.source_refs``).
"""
from __future__ import annotations

import hashlib
import hmac

from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from medq.storage.ingest.sniff import image_extension

REMOVED_VRS = frozenset({"PN", "DA", "DT", "TM", "AS", "AE", "LT", "ST", "UT", "UC", "UR", "UN"})
TEXT_VRS = frozenset({"LO", "SH"})
SAFE_TEXT = frozenset({
    "Manufacturer", "ManufacturerModelName", "ConvolutionKernel", "WindowCenterWidthExplanation",
    "RescaleType", "LossyImageCompressionMethod", "DeidentificationMethod",
})
REMOVED_KEYWORDS = frozenset({
    "PatientSex", "PatientSize", "PatientWeight", "PregnancyStatus", "SmokingStatus",
    "PatientSexNeutered", "PatientAge", "PatientBirthDate", "PatientBirthTime",
    "OtherPatientIDsSequence", "ReferencedPatientSequence", "ReferencedStudySequence",
    "ReferencedPatientPhotoSequence", "PatientInsurancePlanCodeSequence",
    "PatientPrimaryLanguageCodeSequence", "OriginalAttributesSequence",
    "ModifiedAttributesSequence", "EncryptedAttributesSequence", "DigitalSignaturesSequence",
    "MACParametersSequence", "ContentSequence", "IconImageSequence", "RequestAttributesSequence",
    "PerformedProtocolCodeSequence", "ProcedureCodeSequence", "AdmittingDiagnosesCodeSequence",
    "PersonIdentificationCodeSequence", "ReferringPhysicianIdentificationSequence",
    "PerformingPhysicianIdentificationSequence", "OperatorIdentificationSequence",
    "PhysiciansOfRecordIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence",
    "InstitutionCodeSequence", "InstitutionalDepartmentTypeCodeSequence",
    "PatientBreedCodeSequence", "BreedRegistrationSequence", "ResponsiblePersonRole",
    "ReferencedImageSequence", "SourceImageSequence", "ReferencedPerformedProcedureStepSequence",
})


def hash_uid(uid: str, salt: str) -> str:
    """Stable replacement UID: ``2.25.`` + 120 bits of sha256(salt, uid) as a decimal."""
    digest = hashlib.sha256(f"{salt}|{uid}".encode()).hexdigest()[:30]
    return f"2.25.{int(digest, 16)}"


PSEUDONYM_PREFIX = "ingest:"


def source_pseudonym(root: str, rel: str, salt: str) -> str:
    """Stable keyed stand-in for the file `rel` under the source `root` (folder or s3 prefix):
    ``ingest:<16 hex HMAC-SHA256(salt, root)>/<24 hex HMAC-SHA256(salt, rel)><extension>``.
    Only a known image extension (lower case) is kept of the name. Same file, same salt: same
    pseudonym; without the salt it cannot be recomputed from guessed paths."""
    if not salt:
        raise ValueError("source pseudonyms need a non-empty de-identification salt")
    return (f"{PSEUDONYM_PREFIX}{_hmac_hex(salt, 'source-root', root)[:16]}/"
            f"{rel_pseudonym(rel, salt)}")


def rel_pseudonym(rel: str, salt: str) -> str:
    """The file part of :func:`source_pseudonym` (``<24 hex><extension>``), root left out."""
    return _hmac_hex(salt, "source-rel", rel)[:24] + image_extension(rel)


def _hmac_hex(salt: str, domain: str, value: str) -> str:
    return hmac.new(salt.encode(), f"{domain}|{value}".encode(), hashlib.sha256).hexdigest()


def deidentify(ds: Dataset, salt: str) -> Dataset:
    """De-identify `ds` in place (see module docstring) and return it."""
    _clean(ds, salt)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _clean(meta, salt, keep_private=True)  # group 0002 has no private tags
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "MedQ basic profile"
    return ds


def _clean(ds: Dataset, salt: str, *, keep_private: bool = False) -> None:
    if not keep_private:
        ds.remove_private_tags()
    doomed = []
    for elem in ds:
        tag = elem.tag
        group = tag.group
        keyword = elem.keyword
        if 0x6000 <= group <= 0x60FF or 0x5000 <= group <= 0x50FF:
            doomed.append(tag)  # overlays and curves can carry burned-in text/graphics
        elif keyword in REMOVED_KEYWORDS or elem.VR in REMOVED_VRS or elem.VR in TEXT_VRS and keyword not in SAFE_TEXT:
            doomed.append(tag)
        elif elem.VR == "UI":
            elem.value = _replace_uids(elem.value, salt)
        elif elem.VR == "SQ":
            for item in elem.value:
                _clean(item, salt)
    for tag in doomed:
        del ds[tag]


def _replace_uids(value, salt: str):
    if value is None or value == "":
        return value
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
        return [_one_uid(str(v), salt) for v in value]
    return _one_uid(str(value), salt)


def _one_uid(uid: str, salt: str) -> str:
    # Registered UIDs (SOP classes, transfer syntaxes, coding schemes) identify no one.
    return uid if uid in UID_dictionary else hash_uid(uid, salt)
