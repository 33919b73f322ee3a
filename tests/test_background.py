"""Background templates: the IRF's, a flat acceptance, the choice by name."""

import numpy as np
import pytest

from ringbg.background import TEMPLATES, background_template, flat_template, template_name
from ringbg.errors import DL3Error
from test_reduce import geom, observation, random_events


def _inputs(obs, g):
    slices = (slice(0, g.shape[0]), slice(0, g.shape[1]))
    frame = g.pointing_frame(slices, obs.pointing_ra_deg, obs.pointing_dec_deg)
    from ringbg.reduce import bin_events

    counts = bin_events(g, slices, obs.ra_deg, obs.dec_deg, obs.energy_tev)
    return slices, frame, counts


def test_flat_template_predicts_the_counts_outside_the_exclusion():
    """A constant density inside offset_max: in each energy bin, summed over the pixels
    outside the exclusion and inside offset_max, the template gives the counts there."""
    ra, dec, energy = random_events(n=20000, spread=1.0)
    obs = observation(ra, dec, energy)
    g = geom(width=2.0, binsize=0.05)
    slices, frame, counts = _inputs(obs, g)
    exclusion = np.ones(g.shape, bool)
    exclusion[15:25, 15:25] = False
    offset_max = 0.8
    cube = flat_template(obs, g, slices, frame, counts, exclusion, {"offset_max_deg": offset_max})
    inside = frame[2] < offset_max
    usable = inside & exclusion
    np.testing.assert_allclose(cube[:, usable].sum(axis=1), counts[:, usable].sum(axis=1),
                               rtol=1e-12)
    assert np.all(cube[:, ~inside] == 0)
    # constant per solid angle: the ratio to the pixel solid angle is one number per bin
    ratio = cube[:, inside] / g.solid_angle_sr[inside][None]
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-12)
    # the excluded pixels still get the template (the ring needs it there)
    assert np.all(cube[:, inside & ~exclusion] > 0)


def test_irf_template_needs_a_background_irf():
    obs = observation()
    obs.bkg = None
    g = geom()
    slices, frame, counts = _inputs(obs, g)
    with pytest.raises(DL3Error, match="no background IRF"):
        background_template("irf", obs, g, slices, frame, counts)


def test_auto_chooses_by_the_irf():
    assert template_name("auto", True) == "irf"
    assert template_name("auto", False) == "data"
    assert template_name("flat", True) == "flat"
    assert {"irf", "flat"} <= set(TEMPLATES)


def test_packed_mask_round_trip():
    from ringbg.pipeline import PackedMask

    rng = np.random.default_rng(2)
    mask = rng.random((37, 53)) > 0.3
    packed = PackedMask(mask)
    assert len(packed.data) < mask.size / 4
    np.testing.assert_array_equal(packed.unpack(), mask)
    assert PackedMask(mask).key == packed.key and PackedMask(~mask).key != packed.key
