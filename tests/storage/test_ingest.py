"""`medq.storage.ingest`: formats, de-identification, quarantine of broken files, idempotence."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medq.storage.images import load_images
from medq.storage.ingest import deid_salt, deidentify, hash_uid, ingest, source_pseudonym
from medq.storage.workspace import Workspace
from tests.storage.ingest_corpus import (
    bad_files,
    dicom,
    dicom_bytes,
    good_files,
    nifti,
    png,
    smooth_volume,
)


@pytest.fixture
def ws(tmp_path):
    from medq.settings import load_settings
    s = load_settings(workspace=tmp_path / "ws", ingest={
        "max_file_bytes": 16 * 1024 * 1024, "max_frames": 4, "nifti_slices": 3})
    return Workspace.init(s)


def dump(workspace) -> dict[str, list[str]]:
    """Every row of every catalog table as text (order-independent)."""
    out = {}
    with workspace.catalog.connect():  # one connection for all tables
        for table in workspace.catalog.tables():
            rows = workspace.catalog.query(f"SELECT * FROM {table}")
            out[table] = sorted(json.dumps(r, default=str, sort_keys=True) for r in rows)
    return out


def objects_bytes(workspace) -> dict[str, bytes]:
    return {k: workspace.objects.get_bytes(k) for k in workspace.objects.list("")}


def uri_names(workspace, root: Path) -> dict[str, str]:
    """Recorded (pseudonymized) source uri -> path relative to `root`, for each file under it."""
    salt, base = deid_salt(workspace), str(root.resolve())
    rels = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    return {source_pseudonym(base, rel, salt): rel for rel in rels}


# Some broken files have two honest descriptions; any of them is right.
ALSO_OK = {"corrupt.jpg": {"truncated"}}


def test_bad_corpus_is_quarantined_and_good_files_stored(ws, tmp_path):
    src = tmp_path / "src"
    good = good_files(src / "good")
    bad = bad_files(src / "bad")
    assert len(bad) >= 15 and len(set(bad.values())) >= 12  # 15+ kinds of broken file
    summary = ingest(ws, str(src), "pool")

    quarantine = {Path(r["ref"]).name: r for r in ws.catalog.query("SELECT * FROM quarantine")}
    assert set(quarantine) == set(bad)
    for name, code in bad.items():
        row = quarantine[name]
        got = row["reason"].split(":")[0]
        assert got == code or got in ALSO_OK.get(name, ()), (name, row["reason"])
        assert row["stage"] == "ingest" and len(row["reason"]) > len(code)  # reason has detail
    assert summary.n_quarantined == len(bad)
    assert summary.ignored == 2  # README.txt and NOTES

    images = ws.catalog.query("SELECT * FROM images")
    names = uri_names(ws, src)
    per_file: dict[str, int] = {}
    for r in images:
        rel = names[r["source_uri"].split("#")[0]].removeprefix("good/")
        per_file[rel] = per_file.get(rel, 0) + 1
    assert per_file == good
    assert summary.ingested == sum(good.values()) == len(images)
    assert summary.files_ok == len(good)
    items = ws.catalog.query("SELECT * FROM items")
    assert {i["split"] for i in items} == {"pool"} and {i["kind"] for i in items} == {"image"}
    assert {i["image_id"] for i in items} == {r["image_id"] for r in images}
    for r in images:  # stored PNG and thumbnail exist, ids are the pixel hashes
        assert ws.objects.exists(r["object_key"]) and ws.objects.exists(r["thumb_key"])
    pixels = load_images(ws, [images[0]["image_id"]])[0]
    assert pixels.dtype == np.float32 and 0 <= pixels.min() and pixels.max() <= 1

    # re-ingesting the same source changes nothing at all
    before, objects_before = dump(ws), objects_bytes(ws)
    again = ingest(ws, str(src), "pool")
    assert again.ingested == 0 and again.skipped_existing == summary.ingested
    assert again.n_quarantined == summary.n_quarantined
    assert dump(ws) == before and objects_bytes(ws) == objects_before


def test_modalities_from_tags_and_folder_hints(ws, tmp_path):
    good_files(tmp_path / "src")
    ingest(ws, str(tmp_path / "src"), "train")
    names = uri_names(ws, tmp_path / "src")
    by_name = {Path(names[r["source_uri"].split("#")[0]]).name: r["modality"]
               for r in ws.catalog.query("SELECT source_uri, modality FROM images")}
    assert by_name["ct.dcm"] == "CT"           # Modality CT
    assert by_name["MRFILE"] == "MRI"          # Modality MR
    assert by_name["gray.png"] == "fundus"     # folder hint fundus/
    assert by_name["vol.nii.gz"] == "MRI"      # folder hint mri/
    assert by_name["rgb.png"] is None


def test_ct_rescale_and_window(ws, tmp_path):
    (tmp_path / "ct.dcm").write_bytes(dicom_bytes(dicom("CT_small.dcm")))
    s = ingest(ws, str(tmp_path / "ct.dcm"), "pool")
    stored = load_images(ws, s.image_ids)[0]
    ds = dicom("CT_small.dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    c, w = 40.0, 400.0  # CT default window: CT_small has none in its header
    expected = np.clip((hu - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    assert np.abs(stored - expected).max() <= 0.5 / 255 + 1e-6
    meta = json.loads(ws.catalog.scalar("SELECT metadata FROM images"))
    assert meta["window"] == {"center": 40.0, "width": 400.0}
    assert meta["rescale"] == {"slope": 1.0, "intercept": -1024.0}
    assert meta["rows"] == 128 and meta["dicom_modality"] == "CT"


def test_voi_lut_sequence_is_applied(ws, tmp_path):
    """pydicom's VOI LUT test file (vlut_04.dcm, pydicom-data) with a non-linear table (its own
    is linear, so a min-max would pass too): the table maps the stored values for display; no
    window, no min-max. The patient name never leaves ingest."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_voi_lut
    path = get_testdata_file("vlut_04.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data's vlut_04.dcm is not installed")
    ds = pydicom.dcmread(path)
    item = ds.VOILUTSequence[0]
    top = max(int(v) for v in item.LUTData)
    item.LUTData = [round(top * (int(v) / top) ** 2) for v in item.LUTData]  # a gamma of 2
    ds.save_as(tmp_path / "vlut.dcm")
    ds = pydicom.dcmread(tmp_path / "vlut.dcm")
    s = ingest(ws, str(tmp_path / "vlut.dcm"), "pool")
    stored = load_images(ws, s.image_ids)[0]
    table = np.asarray(ds.VOILUTSequence[0].LUTData, np.float64)
    expected = (apply_voi_lut(ds.pixel_array, ds).astype(np.float64) - table.min()) / np.ptp(table)
    assert np.abs(stored - expected).max() <= 0.5 / 255 + 1e-6
    plain = (ds.pixel_array - ds.pixel_array.min()) / np.ptp(ds.pixel_array)
    assert np.abs(stored - plain).max() > 0.1  # the LUT, not a min-max, made the picture
    meta = json.loads(ws.catalog.scalar("SELECT metadata FROM images"))
    assert meta["voi_lut"] == {"entries": 256, "first_mapped": 0} and "window" not in meta
    assert "VOI" not in json.dumps(meta)  # the test patient's name (VOI^LUT^Test)


def test_monochrome1_is_inverted(ws, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "m2.dcm").write_bytes(dicom_bytes(dicom("MR_small.dcm")))
    m1 = dicom("MR_small.dcm")
    m1.PhotometricInterpretation = "MONOCHROME1"
    (src / "m1.dcm").write_bytes(dicom_bytes(m1))
    ingest(ws, str(src), "pool")
    names = uri_names(ws, src)
    ids = {names[r["source_uri"]]: r["image_id"]
           for r in ws.catalog.query("SELECT source_uri, image_id FROM images")}
    a, b = load_images(ws, [ids["m2.dcm"], ids["m1.dcm"]])
    assert np.abs((a + b) - 1.0).max() <= 1.5 / 255


def test_nifti_axis_and_slice_count(ws, tmp_path):
    vol = smooth_volume((40, 36, 24))
    (tmp_path / "v.nii.gz").write_bytes(nifti(vol, gz=True))
    s = ingest(ws, str(tmp_path / "v.nii.gz"), "pool", nifti_axis=0, nifti_slices=2)
    assert s.ingested == 2
    shapes = {(r["height"], r["width"]) for r in ws.catalog.query("SELECT * FROM images")}
    assert shapes == {(24, 36)}  # slices of axis 0 are 36 x 24, rotated for display
    uris = sorted(r["source_uri"] for r in ws.catalog.query("SELECT source_uri FROM images"))
    assert all("#axis 0 slice" in u for u in uris)


def test_fixed_file_leaves_quarantine(ws, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.png").write_text("not a png")
    assert ingest(ws, str(src), "pool").n_quarantined == 1
    from tests.storage.ingest_corpus import noise
    (src / "x.png").write_bytes(png(noise((20, 20), 3)))
    s = ingest(ws, str(src), "pool")
    assert s.ingested == 1 and ws.catalog.scalar("SELECT count(*) FROM quarantine") == 0


def test_bad_split_and_missing_source(ws, tmp_path):
    from medq.storage.ingest import IngestError
    with pytest.raises(IngestError, match="split"):
        ingest(ws, str(tmp_path), "holdout")
    with pytest.raises(IngestError, match="does not exist"):
        ingest(ws, str(tmp_path / "nope"), "pool")


# -- de-identification -----------------------------------------------------------------------

PHI = {
    "PatientName": "Doe^Johnathan", "PatientID": "PHI-ID-884422", "PatientBirthDate": "19450317",
    "PatientAddress": "221B Bakerstreet London", "OtherPatientIDs": "OTHER-ID-31337",
    "PatientTelephoneNumbers": "555-0199-777", "InstitutionName": "St Elsewhere Hospital",
    "InstitutionAddress": "1 Hospital Plaza Springfield",
    "InstitutionalDepartmentName": "Cardiology Dept Xyz",
    "ReferringPhysicianName": "Strange^Stephen", "PerformingPhysicianName": "House^Gregory",
    "OperatorsName": "Operator^Olga", "AccessionNumber": "ACC99887766",
    "StudyDescription": "Secret study of Johnathan", "SeriesDescription": "Secret series xyz",
    "StudyDate": "20210704", "SeriesDate": "20210705", "ContentDate": "20210706",
    "StudyTime": "134501.123", "StudyID": "STUDYID-PHI", "StationName": "STATIONPHI",
    "DeviceSerialNumber": "SERIAL-PHI-4242", "ImageComments": "Patient Johnathan was anxious",
    "StudyInstanceUID": "1.2.826.0.1.3680043.9.7777.123456789",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.9.7777.987654321",
    "SOPInstanceUID": "1.2.826.0.1.3680043.9.7777.555555555",
    "PatientAge": "077Y", "EthnicGroup": "ETHNIC-PHI", "AdditionalPatientHistory": "HISTORY-PHI",
}


def _with_phi(name: str):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    ds = dicom(name)
    for k, v in PHI.items():
        setattr(ds, k, v)
    ds.file_meta.MediaStorageSOPInstanceUID = PHI["SOPInstanceUID"]
    ds.add_new(0x00110010, "LO", "ACME PRIVATE")
    ds.add_new(0x00111001, "LO", "PRIVATE-PHI-Johnathan")
    req = Dataset()
    req.RequestedProcedureID = "REQ-PHI-5555"
    req.ScheduledProcedureStepDescription = "STEP-PHI-desc"
    ds.RequestAttributesSequence = Sequence([req])
    region = Dataset()
    region.CodeValue = "T-KNEE"
    region.CodeMeaning = "Knee of Johnathan"
    ds.AnatomicRegionSequence = Sequence([region])
    return ds


def test_dicom_phi_reaches_neither_catalog_nor_object_store(ws, tmp_path):
    src = tmp_path / "dicoms"
    src.mkdir()
    for i, name in enumerate(["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "SC_rgb.dcm",
                              "RG3_UNCR.dcm"]):
        ds = _with_phi(name)
        (src / f"scan{i}.dcm").write_bytes(dicom_bytes(ds))
    summary = ingest(ws, str(src), "pool")
    assert summary.n_quarantined == 0 and summary.files_ok == 5
    modalities = {r["modality"] for r in ws.catalog.query("SELECT modality FROM images")}
    assert {"CT", "MRI", "X-ray"} <= modalities

    texts = [json.dumps(dump(ws))]
    blobs = list(objects_bytes(ws).values())
    blobs.append(ws.settings.catalog_path.read_bytes())  # raw DuckDB file, every page
    needles = [v for v in PHI.values() if len(v) >= 6] + [
        "Johnathan", "PRIVATE-PHI", "REQ-PHI-5555", "STEP-PHI", "ACME PRIVATE", "Bakerstreet",
        "9.7777."]
    for needle in needles:
        for text in texts:
            assert needle.lower() not in text.lower(), needle
        for blob in blobs:
            assert needle.encode() not in blob, needle
    meta = json.loads(ws.catalog.query("SELECT metadata FROM images WHERE modality = 'CT'")[0]
                      ["metadata"])
    assert meta["deidentified"] is True and meta["series"].startswith("2.25.")
    assert set(meta) <= {"format", "deidentified", "dicom_modality", "rows", "columns", "frames",
                         "bits_stored", "photometric", "pixel_spacing_mm", "slice_thickness_mm",
                         "header_window", "window", "voi_lut", "rescale", "manufacturer_model",
                         "manufacturer", "transfer_syntax", "series", "frame", "source"}


def test_deidentify_keeps_pixels_and_hashes_uids():
    ds = _with_phi("CT_small.dcm")
    pixels = ds.pixel_array.copy()
    out = deidentify(ds, salt="s1")
    assert "PatientName" not in out and "StudyDate" not in out and "PatientID" not in out
    assert "InstitutionName" not in out and "AccessionNumber" not in out
    assert out.get((0x0011, 0x1001)) is None  # private tags removed
    assert "CodeMeaning" not in out.AnatomicRegionSequence[0]
    assert out.StudyInstanceUID == hash_uid(PHI["StudyInstanceUID"], "s1") != \
        hash_uid(PHI["StudyInstanceUID"], "s2")
    assert out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # registered UIDs are kept
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(out.pixel_array, pixels)
    assert out.Modality == "CT" and out.PatientIdentityRemoved == "YES"


# -- S3 sources ------------------------------------------------------------------------------

@pytest.mark.services
def test_ingest_from_s3_prefix(tmp_path):
    from moto.server import ThreadedMotoServer

    from medq.settings import load_settings
    from medq.storage.objects import S3ObjectStore
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        settings = load_settings(workspace=tmp_path / "ws", objects={
            "s3_endpoint": f"{host}:{port}", "s3_access_key": "testing",
            "s3_secret_key": "testing"})
        bucket = S3ObjectStore(f"{host}:{port}", "scans", access_key="testing",
                               secret_key="testing")
        from tests.storage.ingest_corpus import noise
        bucket.put_bytes("site1/ct/a.dcm", dicom_bytes(dicom("CT_small.dcm")))
        bucket.put_bytes("site1/b.png", png(noise((24, 24), 9)))
        bucket.put_bytes("site1/bad.png", b"nope")
        bucket.put_bytes("other/c.png", png(noise((24, 24), 10)))
        ws = Workspace.init(settings)
        s = ingest(ws, "s3://scans/site1/", "pool")
        assert s.files == 3 and s.ingested == 2 and s.quarantined == {"not_an_image": 1}
        refs = {r["ref"] for r in ws.catalog.query("SELECT ref FROM quarantine")}
        assert refs == {"s3://scans/site1/bad.png"}  # quarantine names the object in place
        salt = deid_salt(ws)
        uris = {r["source_uri"] for r in ws.catalog.query("SELECT source_uri FROM images")}
        assert uris == {source_pseudonym("s3://scans/site1", rel, salt)
                        for rel in ("ct/a.dcm", "b.png")}
        assert ingest(ws, "s3://scans/site1/", "pool").ingested == 0
        assert ingest(ws, "s3://scans/site1", "pool").quarantined == {"not_an_image": 1}
        assert ws.catalog.scalar("SELECT count(*) FROM quarantine") == 1
    finally:
        server.stop()
    shutil.rmtree(tmp_path / "ws", ignore_errors=True)


# -- file paths: exports organised by patient ---------------------------------------------------

PATIENT_DIR = "DOE^JOHN_4711"
PATH_NEEDLES = ("doe^john", "john", "4711", PATIENT_DIR.lower())


def _patient_export(root: Path) -> Path:
    """A DICOM and a PNG (upper-case extension) in a folder named after the patient."""
    from tests.storage.ingest_corpus import noise
    (root / PATIENT_DIR / "CT").mkdir(parents=True)
    (root / PATIENT_DIR / "CT" / "IM0001.dcm").write_bytes(dicom_bytes(dicom("CT_small.dcm")))
    (root / PATIENT_DIR / "photo.PNG").write_bytes(png(noise((24, 20), 11)))
    return root


def _ws(tmp_path, name: str, **ingest_settings) -> Workspace:
    from medq.settings import load_settings
    return Workspace.init(load_settings(workspace=tmp_path / name, ingest=ingest_settings))


def _catalog_texts(workspace) -> list[str]:
    """Every value of every column of every catalog table, as text."""
    out = []
    with workspace.catalog.connect():
        cols = workspace.catalog.query("SELECT table_name, column_name FROM "
                                       "information_schema.columns WHERE table_schema = 'main'")
        assert {c["table_name"] for c in cols} >= {"images", "items", "quarantine"}
        for c in cols:
            out += [str(r["v"]) for r in workspace.catalog.query(
                f'SELECT CAST("{c["column_name"]}" AS VARCHAR) AS v FROM "{c["table_name"]}" '
                f'WHERE "{c["column_name"]}" IS NOT NULL')]
    return out


def _sources(workspace) -> dict[str, str]:
    """source_uri -> image_id."""
    return {r["source_uri"]: r["image_id"]
            for r in workspace.catalog.query("SELECT source_uri, image_id FROM images")}


def test_patient_named_paths_reach_neither_catalog_nor_metadata(tmp_path):
    ws = _ws(tmp_path, "ws", deid_salt="salt-a")  # fixed salt: a deterministic catalog
    src = _patient_export(tmp_path / "export")
    s = ingest(ws, str(src), "pool")
    assert s.ingested == 2 and s.n_quarantined == 0

    texts = _catalog_texts(ws)
    assert texts  # the query saw the rows
    for needle in PATH_NEEDLES + (str(tmp_path), "export/"):
        assert not [t for t in texts if needle in t.lower()], needle
    blobs = list(objects_bytes(ws).values()) + [ws.settings.catalog_path.read_bytes()]
    for needle in ("DOE^JOHN", "4711", str(src)):
        assert not [b for b in blobs if needle.encode() in b], needle

    root = str(src.resolve())
    expected = {source_pseudonym(root, f"{PATIENT_DIR}/CT/IM0001.dcm", "salt-a"),
                source_pseudonym(root, f"{PATIENT_DIR}/photo.PNG", "salt-a")}
    assert set(_sources(ws)) == expected
    assert {u.rsplit(".", 1)[-1] for u in expected} == {"dcm", "png"}  # format hint kept, lower
    assert all(u.startswith("ingest:") and len(u.split("/")[1].split(".")[0]) == 24
               for u in expected)
    for r in ws.catalog.query("SELECT source_uri, metadata FROM images"):
        meta = json.loads(r["metadata"])
        assert meta["source"] == {"uri": r["source_uri"], "part": None}
        assert not [n for n in PATH_NEEDLES if n in json.dumps(meta).lower()]


def test_source_pseudonym_is_keyed_and_stable(tmp_path):
    src = _patient_export(tmp_path / "export")
    a = _ws(tmp_path, "a", deid_salt="shared-salt")
    ingest(a, str(src), "pool")
    first, before = _sources(a), dump(a)
    assert ingest(a, str(src), "eval").ingested == 2  # another split: same image rows
    assert _sources(a) == first
    ingest(a, str(src), "pool")
    assert _sources(a) == first and dump(a)["images"] == before["images"]

    b = _ws(tmp_path, "b", deid_salt="shared-salt")  # same salt elsewhere: same pseudonyms
    ingest(b, str(src), "train")
    assert _sources(b) == first
    c = _ws(tmp_path, "c", deid_salt="shared-salt")  # a single file: as if its folder was given
    ingest(c, str(src / PATIENT_DIR / "photo.PNG"), "pool")
    ingest(c, str(src / PATIENT_DIR), "eval")
    single = source_pseudonym(str((src / PATIENT_DIR).resolve()), "photo.PNG", "shared-salt")
    assert single in _sources(c) and len(_sources(c)) == 2 and not set(_sources(c)) & set(first)
    d = _ws(tmp_path, "d", deid_salt="other-salt")  # another salt: unlinkable pseudonyms
    ingest(d, str(src), "pool")
    assert set(_sources(d).values()) == set(first.values())  # same pixels, same image ids
    assert not set(_sources(d)) & set(first)

    e = _ws(tmp_path, "e")  # no salt configured: the workspace's random deid_salt keys both
    ingest(e, str(src), "pool")
    salt = (tmp_path / "e" / "deid_salt").read_text().strip()
    assert set(_sources(e)) == {source_pseudonym(str(src.resolve()), rel, salt)
                                for rel in (f"{PATIENT_DIR}/CT/IM0001.dcm",
                                            f"{PATIENT_DIR}/photo.PNG")}
    # only a known image extension survives; an unknown "extension" may be an identifier
    assert source_pseudonym("/x", "DOE/IM0001.4711", "s").count(".") == 0
    assert source_pseudonym("/x", "DOE/VOL.NII.GZ", "s").endswith(".nii.gz")
    with pytest.raises(ValueError, match="salt"):
        source_pseudonym("/x", "a.png", "")


def test_path_mode_records_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDQ_INGEST__SOURCE_REFS", "path")
    ws = _ws(tmp_path, "ws")
    assert ws.settings.ingest.source_refs == "path"
    src = _patient_export(tmp_path / "export")
    ingest(ws, str(src), "pool")
    paths = {str((src / PATIENT_DIR / "CT" / "IM0001.dcm").resolve()),
             str((src / PATIENT_DIR / "photo.PNG").resolve())}
    assert set(_sources(ws)) == paths
    for r in ws.catalog.query("SELECT source_uri, metadata FROM images"):
        assert json.loads(r["metadata"])["source"]["uri"] == r["source_uri"]


@pytest.mark.parametrize("mode", ["pseudonymized", "path"])
def test_quarantine_names_the_real_path_and_reruns_resume(tmp_path, mode):
    from tests.storage.ingest_corpus import noise
    ws = _ws(tmp_path, "ws", source_refs=mode)
    src = _patient_export(tmp_path / "export")
    bad = src / PATIENT_DIR / "CT" / "IM0002.dcm"
    bad.write_bytes(b"\x00" * 64)
    s = ingest(ws, str(src), "pool")
    assert s.ingested == 2 and s.n_quarantined == 1
    rows = ws.catalog.query("SELECT ref, payload FROM quarantine")
    assert [r["ref"] for r in rows] == [str(bad.resolve())]  # the operator can find the file
    assert json.loads(rows[0]["payload"])["rel"] == f"{PATIENT_DIR}/CT/IM0002.dcm"
    before = dump(ws)
    again = ingest(ws, str(src), "pool")  # re-run: nothing new, the same quarantine row
    assert again.ingested == 0 and again.skipped_existing == 2 and again.n_quarantined == 1
    assert dump(ws) == before
    bad.write_bytes(png(noise((20, 20), 12)))  # fixed (a PNG named .dcm is still a mismatch)
    bad.rename(fixed := bad.with_suffix(".png"))
    third = ingest(ws, str(src), "pool")
    assert third.ingested == 1 and third.n_quarantined == 0
    # the renamed file is a new ref; the old row stays until its path is fixed or cleaned up
    fixed.rename(bad)
    bad.write_bytes(dicom_bytes(dicom("MR_small.dcm")))
    fourth = ingest(ws, str(src), "pool")
    assert fourth.ingested == 1 and ws.catalog.scalar("SELECT count(*) FROM quarantine") == 0
    uris = set(_sources(ws))
    if mode == "path":
        assert str(bad.resolve()) in uris
    else:
        assert source_pseudonym(str(src.resolve()), f"{PATIENT_DIR}/CT/IM0002.dcm",
                                deid_salt(ws)) in uris
        assert not [u for u in uris if "/" in u.removeprefix("ingest:").split("/", 1)[1]]


def test_oracle_labels_match_pseudonymized_files_by_relative_path(tmp_path):
    from medq.storage.annotation.simulated import file_truth
    ws = _ws(tmp_path, "ws")
    src = _patient_export(tmp_path / "export")
    ingest(ws, str(src), "pool")
    ids = _sources(ws)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"image": f"{PATIENT_DIR}/photo.PNG", "verdict": "good"}) + "\n")
    photo = next(i for u, i in ids.items() if u.endswith(".png"))
    assert file_truth(labels, ws.catalog)(list(ids.values())) == {}  # no salt: no path to match
    got = file_truth(labels, ws.catalog, salt=lambda: deid_salt(ws))(list(ids.values()))
    assert list(got) == [photo] and got[photo]["verdict"] == "good"
