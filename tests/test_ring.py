"""The ring and adaptive-ring background of an image."""

import numpy as np
import pytest

from ringbg.kernels import ring_kernel, tophat_kernel
from ringbg.ring import (
    ObsImage,
    adaptive_ring_background,
    adaptive_ring_radii,
    ring_background,
)


def _image(counts, background, mask=None):
    mask = np.ones(counts.shape, bool) if mask is None else mask
    shape = counts.shape
    return ObsImage(1, (slice(0, shape[0]), slice(0, shape[1])), counts, background, mask,
                    np.ones((1,) + shape), 100.0)


def test_ring_background_flat_field_alpha():
    bkg = np.full((61, 61), 2.0)
    counts = np.full((61, 61), 3.0)
    excl = np.ones((61, 61), bool)
    onoff = ring_background(_image(counts, bkg), excl, 5.0, 3.0)
    n = ring_kernel(5.0, 3.0).sum()
    assert onoff.counts_off[30, 30] == 3.0 * n
    assert onoff.alpha[30, 30] == pytest.approx(1.0 / n)
    # background estimate alpha * off equals the counts in a flat field
    assert onoff.alpha[30, 30] * onoff.counts_off[30, 30] == pytest.approx(3.0)


def test_exclusion_removes_pixels_from_off_only():
    counts = np.zeros((61, 61))
    counts[30, 30] = 1000.0  # a bright source
    bkg = np.ones((61, 61))
    excl = np.ones((61, 61), bool)
    excl[28:33, 28:33] = False
    onoff = ring_background(_image(counts, bkg), excl, 5.0, 3.0)
    assert onoff.counts_off.sum() == 0
    assert onoff.counts[30, 30] == 1000.0
    onoff = ring_background(_image(counts, bkg), np.ones((61, 61), bool), 5.0, 3.0)
    assert onoff.counts_off.sum() == 1000.0 * ring_kernel(5.0, 3.0).sum()


def test_pixels_without_off_acceptance_leave_mask():
    bkg = np.ones((41, 41))
    excl = np.zeros((41, 41), bool)  # everything excluded: no off acceptance anywhere
    onoff = ring_background(_image(np.ones((41, 41)), bkg), excl, 5.0, 3.0)
    assert not onoff.mask.any()


def test_adaptive_ring_candidates():
    rings = adaptive_ring_radii(25, 15, 100, 1, "fixed_width")
    assert rings[0] == (25, 15) and rings[-1][0] == 84 and len(rings) == 60
    rings = adaptive_ring_radii(25, 15, 100, 5, "fixed_r_in")
    assert all(r == 25 for r, _ in rings) and rings[0][1] == 15 and rings[-1][1] == 70
    with pytest.raises(ValueError):
        adaptive_ring_radii(25, 15, 100, 5, "wrong")


def test_adaptive_ring_grows_where_exclusion_eats_the_ring():
    shape = (121, 121)
    bkg = np.ones(shape)
    counts = np.ones(shape)
    excl = np.ones(shape, bool)
    y, x = np.mgrid[0:121, 0:121]
    excl[(x - 60) ** 2 + (y - 60) ** 2 < 14**2] = False  # big excluded region
    rings = adaptive_ring_radii(5, 3, 40, 1, "fixed_width")
    theta = 2.0
    onoff = adaptive_ring_background(_image(counts, bkg), excl, rings, theta, 0.2)
    fixed = ring_background(_image(counts, bkg), excl, 5, 3)
    # at the centre the smallest ring lies inside the exclusion: the fixed ring has nothing
    assert fixed.acceptance_off[60, 60] == 0 and not fixed.mask[60, 60]
    assert onoff.mask[60, 60] and onoff.acceptance_off[60, 60] > 0
    tophat = tophat_kernel(theta).sum()
    assert tophat / onoff.acceptance_off[60, 60] <= 0.2
    # acceptance stays the per-pixel background
    assert np.array_equal(onoff.acceptance, bkg)
    # far from the exclusion the first ring qualifies, same as the fixed ring
    assert onoff.counts_off[60, 110] == fixed.counts_off[60, 110]
    # the ring taken: (5, 8) and nothing excluded far away; at the centre a ring reaching out
    # of the exclusion, the excluded fraction of its template by its definition
    np.testing.assert_allclose(onoff.ring_choice[:, 60, 110], [5, 8, 0], atol=1e-9)
    r_in, r_out, excluded = onoff.ring_choice[:, 60, 60]
    assert r_out - r_in == 3 and r_out > 14 and (r_in, 3) in rings
    kernel = ring_kernel(r_in, 3)
    assert 0 < excluded < 1
    inside = (x - 60) ** 2 + (y - 60) ** 2 < 14**2
    ky, kx = np.nonzero(kernel)
    c = kernel.shape[0] // 2
    in_ring = inside[ky - c + 60, kx - c + 60]
    assert excluded == pytest.approx(kernel[ky, kx][in_ring].sum() / kernel.sum(), rel=1e-9)
    assert fixed.ring_choice is None


def test_adaptive_ring_without_qualifying_ring_leaves_mask():
    shape = (41, 41)
    onoff = adaptive_ring_background(_image(np.ones(shape), np.ones(shape)), np.ones(shape, bool),
                                     [(3, 1)], 3.0, 1e-6)
    assert not onoff.mask.any() and np.isnan(onoff.counts_off).all()
    assert np.isnan(onoff.ring_choice).all()
