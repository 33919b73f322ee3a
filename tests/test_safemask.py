"""Safe masks as gammapy 2.1's SafeMaskMaker makes them, method by method.

Energy thresholds against gammapy's rule (bins fully inside the range), computed from IRFs
whose values are known in closed form; the per-observation masks on real data against gammapy
itself are in test_reference.py.
"""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from test_reduce import (
    CENTER,
    EDGES,
    aeff_linear_in_log_e,
    geom,
    lin_axis,
    log_axis,
    observation,
)

from ringbg.geom import Geom
from ringbg.irf import Background, EffectiveArea
from ringbg.safemask import METHODS, Cutout, cutout_center_pixel, safe_mask


def _mask(obs, methods, parameters=None, background=None, g=None):
    g = g or geom()
    slices = (slice(0, g.shape[0]), slice(0, g.shape[1]))
    if background is None:
        background = np.ones((g.n_energy,) + g.shape)
    offset = g.pointing_frame(slices, obs.pointing_ra_deg, obs.pointing_dec_deg)[2]
    return safe_mask(obs, Cutout(g, slices, offset, background), methods, parameters or {})


def _fully_inside(lo=None, hi=None):
    """gammapy's energy mask: bins fully inside [lo, hi]."""
    keep = np.ones(len(EDGES) - 1, bool)
    if lo is not None:
        keep &= EDGES[:-1] >= lo
    if hi is not None:
        keep &= EDGES[1:] <= hi
    return keep


@pytest.mark.parametrize("lo, hi", [
    (float(EDGES[2]), None),                   # exactly on an edge: that bin is kept
    (float(EDGES[2]) * 1.0001, None),          # just above: that bin goes
    (0.6, float(EDGES[4])),
    (None, float(EDGES[4]) * 0.9999),
    (0.01, 1000.0),
])
def test_aeff_default_thresholds(lo, hi):
    obs = observation(aeff=aeff_linear_in_log_e(lo=lo, hi=hi))
    mask = _mask(obs, ["aeff-default"])
    expected = _fully_inside(lo, hi)
    assert 0 < expected.sum() <= len(expected)
    np.testing.assert_array_equal(mask, np.broadcast_to(expected[:, None, None], mask.shape))


def test_no_background_is_not_safe():
    obs = observation()
    g = geom()
    background = np.ones((g.n_energy,) + g.shape)
    background[0, 3, 4] = 0.0
    background[2, 5, 6] = np.nan
    background[1, 0, 0] = -1.0
    mask = _mask(obs, ["aeff-default"], background=background, g=g)
    assert mask.sum() == mask.size - 3
    assert not mask[0, 3, 4] and not mask[2, 5, 6] and not mask[1, 0, 0]


def test_offset_max_mask():
    obs = observation(pointing=(CENTER[0] + 0.4, CENTER[1] - 0.2))
    g = geom()
    mask = _mask(obs, ["offset-max"], {"offset_max_deg": 0.7}, g=g)
    sep = SkyCoord(*g.radec_deg, unit="deg").separation(
        SkyCoord(CENTER[0] + 0.4, CENTER[1] - 0.2, unit="deg")).deg
    np.testing.assert_array_equal(mask, np.broadcast_to(sep < 0.7, mask.shape))
    assert 0 < mask[0].sum() < mask[0].size


def test_aeff_max_threshold_dl3():
    """irfs="DL3": the lowest IRF energy edge where the on-axis area exceeds the percentage of its max."""
    energy = log_axis(np.geomspace(0.1, 100, 10))
    offset = lin_axis([0.0, 1.5, 3.0])
    # values at the nodes; at the inner edges (half way in ln E) the mean of two nodes
    nodes = np.array([0.0, 0.0, 1.0, 10.0, 100.0, 200.0, 200.0, 200.0, 200.0])
    aeff = EffectiveArea(energy, offset, np.repeat(nodes[:, None], 2, axis=1), None, None)
    edges = np.exp(energy.edges)
    edge_values = np.concatenate([[0.0], (nodes[:-1] + nodes[1:]) / 2, [200.0]])
    for percent in (2.0, 10.0, 50.0):
        threshold = edges[np.argmax(edge_values > percent / 100 * 200.0)]
        g = geom(edges=np.geomspace(0.2, 50, 9))
        mask = _mask(observation(aeff=aeff), ["aeff-max"],
                     {"aeff_percent": percent, "irfs": "DL3"}, g=g)
        keep = g.energy_edges_tev[:-1] >= threshold
        assert 0 < keep.sum() < len(keep), percent
        np.testing.assert_array_equal(mask, np.broadcast_to(keep[:, None, None], mask.shape))


def test_bkg_peak_threshold_dl3():
    """irfs="DL3": the lower edge of the IRF energy bin where the offset-integrated background peaks."""
    energy = log_axis(np.geomspace(0.1, 100, 9))
    offset = lin_axis([0.0, 1.0, 2.0, 3.0])
    spectrum = np.array([1.0, 3.0, 7.0, 9.0, 4.0, 2.0, 1.0, 0.5])
    bkg = Background(energy, (offset,), np.outer(spectrum, [1.0, 0.8, 0.3]))
    threshold = np.exp(energy.edges[3])
    g = geom(edges=np.geomspace(0.3, 60, 9))
    mask = _mask(observation(bkg=bkg), ["bkg-peak"], {"irfs": "DL3"}, g=g)
    keep = g.energy_edges_tev[:-1] >= threshold
    assert 0 < keep.sum() < len(keep)
    np.testing.assert_array_equal(mask, np.broadcast_to(keep[:, None, None], mask.shape))


def test_aeff_max_threshold_dl4():
    """irfs="DL4" (the default): the energy where the effective area at the cutout centre,
    interpolated log-log between the true-energy centres, crosses the percentage of its max;
    bins whose lower edge is below it leave the mask."""
    a, b = 2e4, 1.5e4
    aeff = aeff_linear_in_log_e(a, b)
    g = geom(edges=np.geomspace(0.2, 50, 13))
    centres = g.energy_center_tev
    area = a + b * np.log(centres)  # exact at the centres: the area is linear in ln E
    for percent in (10.0, 30.0, 60.0):
        level = percent / 100 * area.max()
        k = int(np.argmax(area > level))  # first centre above the level
        # the crossing of ln(area) (linear in ln E between centres) with ln(level)
        t = (np.log(level) - np.log(area[k - 1])) / (np.log(area[k]) - np.log(area[k - 1]))
        crossing = np.exp(np.log(centres[k - 1]) + t * np.log(centres[k] / centres[k - 1]))
        mask = _mask(observation(aeff=aeff), ["aeff-max"], {"aeff_percent": percent}, g=g)
        keep = g.energy_edges_tev[:-1] >= crossing
        assert 0 < keep.sum() < len(keep), percent
        np.testing.assert_array_equal(mask, np.broadcast_to(keep[:, None, None], mask.shape))


def test_aeff_max_dl4_no_area_at_centre_masks_all():
    """No effective area at the cutout centre (its offset beyond the IRF): nothing is safe."""
    aeff = aeff_linear_in_log_e()
    g = geom()
    obs = observation(aeff=aeff, pointing=(CENTER[0] + 4.0, CENTER[1]))
    assert not _mask(obs, ["aeff-max"], g=g).any()


def test_bkg_peak_threshold_dl4():
    """irfs="DL4": the lower edge of the reconstructed-energy bin where the cutout's
    background cube, summed over pixels, peaks."""
    g = geom()
    background = np.ones((g.n_energy,) + g.shape)
    background *= np.array([1.0, 4.0, 6.0, 5.0, 2.0, 1.0])[:, None, None]
    background[1, :3, :3] = 1000.0  # a few bright pixels move the peak to bin 1
    mask = _mask(observation(), ["bkg-peak"], background=background, g=g)
    keep = np.arange(g.n_energy) >= 1
    np.testing.assert_array_equal(mask, np.broadcast_to(keep[:, None, None], mask.shape))
    mask = _mask(observation(), ["bkg-peak"], background=np.where(background == 1000, 1.0,
                                                                   background), g=g)
    keep = np.arange(g.n_energy) >= 2
    np.testing.assert_array_equal(mask, np.broadcast_to(keep[:, None, None], mask.shape))


@pytest.mark.parametrize("shape", [(40, 40), (41, 39), (25, 60)])
def test_cutout_center_pixel_as_gammapy(shape):
    """The pixel gammapy's DL4 aeff-max reads: nearest to the cutout's centre_skydir."""
    from gammapy.maps import WcsGeom

    g = geom(width=3.0, binsize=0.05)
    slices = (slice(3, 3 + shape[0]), slice(7, 7 + shape[1]))
    wcs = g.sub_wcs(slices)
    gp = WcsGeom(wcs, npix=(shape[1], shape[0]))
    idx = gp.coord_to_idx(gp.center_skydir)
    assert cutout_center_pixel(g, slices) == (int(idx[1][0]), int(idx[0][0]))


def test_methods_combine_as_and():
    obs = observation(pointing=(CENTER[0] + 0.3, CENTER[1]),
                      aeff=aeff_linear_in_log_e(lo=float(EDGES[1]), hi=float(EDGES[5])))
    params = {"offset_max_deg": 0.8, "aeff_percent": 60.0, "irfs": "DL3"}
    single = {m: _mask(obs, [m], params) for m in METHODS}
    both = _mask(obs, list(METHODS), params)
    expected = np.logical_and.reduce(list(single.values()))
    np.testing.assert_array_equal(both, expected)
    assert both.sum() < min(m.sum() for m in single.values())


def test_unknown_safe_mask_method():
    with pytest.raises(ValueError, match="unknown safe mask methods"):
        _mask(observation(), ["aeff-default", "edisp-bias"])


@pytest.mark.parametrize("centre, width, binsize, proj", [
    ((228.32, -59.08, "icrs"), 3.0, 0.02, "CAR"), ((228.32, -59.08, "icrs"), 3.02, 0.02, "CAR"),
    ((83.63, 22.01, "icrs"), 4.8, 0.05, "TAN"), ((184.56, -5.78, "galactic"), 4.0, 0.04, "AIT"),
    # found by a randomized comparison with gammapy: a 96-pixel QSC cutout whose centre comes
    # back from the sky a hair off its pixel corner (the aeff-max threshold a bin lower)
    ((17.64, -51.7487, "galactic"), 4.8, 0.05, "QSC"), ((6.72, -71.62, "icrs"), 3.84, 0.02, "SZP"),
])
def test_cutout_center_pixel_is_where_gammapy_reads_the_exposure(centre, width, binsize, proj):
    """aeff-max (DL4) reads the exposure at the cutout centre with ``get_spectrum``: the same
    pixel, for cutouts of even size (centre on a pixel corner) and odd size, whole or trimmed."""
    from gammapy.maps import Map, MapAxis, WcsGeom

    lon, lat, frame = centre
    g = Geom.create(lon, lat, frame, width, binsize, proj, EDGES)
    ny, nx = g.shape
    for slices in ((slice(0, ny), slice(0, nx)), (slice(3, ny), slice(0, nx - 2)),
                   (slice(1, ny - 2), slice(4, nx - 1))):
        shape = (slices[0].stop - slices[0].start, slices[1].stop - slices[1].start)
        axis = MapAxis.from_energy_bounds(1, 10, 1, unit="TeV", name="energy_true")
        wcs = WcsGeom(g.sub_wcs(slices), npix=shape[::-1]).to_cube([axis])
        exposure = Map.from_geom(wcs, data=np.arange(shape[0] * shape[1], dtype=float)
                                 .reshape((1,) + shape))
        read = int(exposure.get_spectrum(wcs.center_skydir).data.ravel()[0])
        assert cutout_center_pixel(g, slices) == divmod(read, shape[1]), (slices, shape)
