"""The sparse projector of the CT simulators against skimage.transform.radon (the reference it
replaces for speed): same geometry, angles and units, on a Shepp-Logan phantom."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.data import shepp_logan_phantom
from skimage.transform import radon, resize

from medq.engine.degrade import _radon


@pytest.mark.parametrize("n_views", [45, 180])
def test_forward_projection_matches_skimage_radon(n_views):
    size = 129  # odd: skimage's rotation centre and our detector centre fall on the same bin
    img = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    img[(yy - c) ** 2 + (xx - c) ** 2 > (size / 2 - 2) ** 2] = 0  # inside skimage's circle
    img[20:26, 86:92] += 1.0  # an off-centre block: catches a flipped or rotated angle axis
    ours = _radon.forward(img, n_views)  # (views, detectors over the diagonal)
    theta = np.arange(n_views) * 180.0 / n_views
    ref = radon(img, theta=theta, circle=True).T  # (views, size)
    off = (ours.shape[1] - size) // 2
    assert ours[:, :off].max() < 1e-6 and ours[:, off + size:].max() < 1e-6  # nothing outside
    ours = ours[:, off:off + size]
    scale = np.abs(ref).max()
    # pixel-driven interpolation vs image rotation differ only at sharp edges (measured: rms
    # 0.5-0.7 % of the peak, correlation 0.9996-0.9998); line integrals keep the mass
    assert np.sqrt(np.mean((ours - ref) ** 2)) / scale < 0.015
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.999
    assert ours.sum() == pytest.approx(ref.sum(), rel=1e-3)
