"""Base images from the PyPI packages (offline) and their provenance."""
from __future__ import annotations

import numpy as np
import pytest

from medq.engine.taxonomy import MODALITIES
from medq.storage import base_images as sources


@pytest.mark.parametrize("modality", [m for m in MODALITIES if m != "MRI"])
def test_every_modality_has_varied_bases(modality):
    bases = sources.base_images(modality, 64)
    assert len(bases) >= 6
    for img, prov in bases:
        assert img.dtype == np.float32 and img.shape[:2] == (64, 64)
        assert img.ndim == 2 or img.shape[2] == 3
        assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.02
        assert prov["modality"] == modality and prov["package"] and prov["file"]
        assert prov["ref"].startswith(modality + "/")
    # Content variety: no two bases of a modality are (nearly) the same picture.
    flat = [np.asarray(i, np.float64).ravel() for i, _ in bases]
    for a in range(len(flat)):
        for b in range(a + 1, len(flat)):
            if flat[a].shape == flat[b].shape:
                assert np.abs(flat[a] - flat[b]).mean() > 0.01


def test_mri_slices_from_nilearn_and_pydicom():
    refs = sources.base_refs("MRI")
    assert sum(r.package == "nilearn" for r in refs) >= 20
    img, prov = sources.load_base("MRI/mni152/axial/z090", 64)
    assert prov["slice"] == "axial z=90" and prov["version"]
    assert img.shape == (64, 64) and img.mean() > 0.1


def test_cache_and_read_only():
    a, _ = sources.load_base("CT/skimage/shepp_logan_phantom", 48)
    b, _ = sources.load_base("CT/skimage/shepp_logan_phantom", 48)
    assert a is b
    with pytest.raises(ValueError):
        a[0, 0] = 1.0


def test_low_native_resolution_bases_can_be_left_out():
    all_mri = {r.ref for r in sources.base_refs("MRI")}
    sharp = {r.ref for r in sources.base_refs("MRI", min_native=128)}
    assert "MRI/pydicom/MR_small.dcm" in all_mri - sharp


def test_unknown_references():
    with pytest.raises(sources.SourceError, match="unknown base image"):
        sources.load_base("CT/nowhere", 32)
    with pytest.raises(sources.SourceError, match="modality"):
        sources.base_refs("PET")
