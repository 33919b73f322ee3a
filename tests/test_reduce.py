"""One observation -> counts, exposure, background and safe mask on its cutout.

Counts are checked against numpy.histogramdd of the pixel coordinates astropy gives; exposure
and background against values computed from the IRF definition (an effective area linear in
ln E, a background that is an exact power law, so interpolation and integration are exact);
the safe-mask energy thresholds against gammapy's rule (energy bins fully inside the range).
"""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from conftest import gammapy_data
from scipy.interpolate import RegularGridInterpolator

from ringbg.datastore import DataStore
from ringbg.dl3 import Observation
from ringbg.edisp import IrfGrid, diagonal_kernel, irf_grid
from ringbg.geom import Geom, energy_edges_tev
from ringbg.irf import (
    Background,
    EffectiveArea,
    EnergyDispersion,
    IrfAxis,
    edisp_kernel,
)
from ringbg.reduce import ReducedObservation, bin_events, reduce_observation

CENTER = (83.6, 22.0)
EDGES = energy_edges_tev(0.5, 20.0, 6)
LIVETIME_FRACTION = 0.9
BKG_AMPLITUDE = 2e-8  # s-1 MeV-1 sr-1 at 1 TeV
BKG_INDEX = 2.5


def geom(frame="icrs", width=2.0, binsize=0.05, center=CENTER, edges=EDGES):
    lon, lat = center
    if frame == "galactic":
        c = SkyCoord(lon, lat, unit="deg").galactic
        lon, lat = c.l.deg, c.b.deg
    return Geom.create(lon, lat, frame, width, binsize, "CAR", edges)


def log_axis(edges, name="energy"):
    edges = np.asarray(edges, float)
    return IrfAxis.from_lo_hi(name, edges[:-1], edges[1:], log=True)


def lin_axis(edges, name="offset"):
    edges = np.asarray(edges, float)
    return IrfAxis.from_lo_hi(name, edges[:-1], edges[1:], log=False)


def aeff_linear_in_log_e(a=2e4, b=1.5e4, lo=None, hi=None):
    """Effective area ``a + b ln(E/TeV)`` (m2), the same at all offsets up to 3 deg."""
    energy = log_axis(np.geomspace(0.1, 100, 16))
    offset = lin_axis(np.linspace(0, 3, 7))
    values = np.repeat((a + b * energy.nodes)[:, None], 6, axis=1)
    return EffectiveArea(energy, offset, values, lo, hi)


def bkg_power_law():
    """BKG_2D ``A (E/TeV)**-index``, flat in offset up to 3 deg."""
    energy = log_axis(np.geomspace(0.1, 100, 13))
    offset = lin_axis(np.linspace(0, 3, 4))
    rate = BKG_AMPLITUDE * np.exp(energy.nodes) ** -BKG_INDEX
    return Background(energy, (offset,), np.repeat(rate[:, None], 3, axis=1))


def observation(ra=(), dec=(), energy=(), aeff=None, bkg=None, pointing=CENTER,
                gti=((0.0, 1000.0), (2000.0, 2600.0)), edisp=None):
    gti = np.asarray(gti, float)
    return Observation(
        obs_id=7, ra_deg=np.asarray(ra, float), dec_deg=np.asarray(dec, float),
        energy_tev=np.asarray(energy, float), pointing_ra_deg=pointing[0],
        pointing_dec_deg=pointing[1], gti_start_s=gti[:, 0], gti_stop_s=gti[:, 1],
        deadc=LIVETIME_FRACTION, time_ref_mjd=51910.0, time_scale="tt", location=None,
        aeff=aeff or aeff_linear_in_log_e(), bkg=bkg or bkg_power_law(), edisp=edisp,
    )


def gaussian_edisp():
    """A Gaussian migration of width 0.2 (0.3 at 2 deg) around 1, known to 2 deg offset."""
    energy = log_axis(np.geomspace(0.1, 100, 13))
    migra = lin_axis(np.linspace(0.2, 2.5, 47), "migra")
    offset = lin_axis([0.0, 1.0, 2.0])
    sigma = np.array([0.2, 0.3])[None, None, :]
    values = np.exp(-0.5 * ((migra.nodes[None, :, None] - 1) / sigma) ** 2)
    values = np.repeat(values / (np.sqrt(2 * np.pi) * sigma), 12, axis=0)
    return EnergyDispersion(energy, migra, offset, values)


def random_events(n=4000, seed=0, spread=1.3):
    rng = np.random.default_rng(seed)
    # float32 values, as event lists store them
    ra = (CENTER[0] + rng.uniform(-spread, spread, n)).astype(np.float32).astype(float)
    dec = (CENTER[1] + rng.uniform(-spread, spread, n)).astype(np.float32).astype(float)
    energy = np.exp(rng.uniform(np.log(0.3), np.log(40), n))
    return ra, dec, energy


def histogram_counts(g, slices, ra, dec, energy):
    """numpy.histogramdd of (energy, y, x) with astropy's pixel coordinates."""
    x, y = g.wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg", frame="icrs"))
    sy, sx = slices
    bins = [g.energy_edges_tev, np.arange(sy.start, sy.stop + 1) - 0.5,
            np.arange(sx.start, sx.stop + 1) - 0.5]
    counts, _ = np.histogramdd(np.stack([energy, y, x], axis=1), bins=bins)
    return counts


# --------------------------------------------------------------------------------------------
# counts


@pytest.mark.parametrize("frame", ["icrs", "galactic"])
def test_bin_events_full_image_as_histogramdd(frame):
    g = geom(frame)
    ra, dec, energy = random_events()
    full = (slice(0, g.shape[0]), slice(0, g.shape[1]))
    counts = bin_events(g, full, ra, dec, energy)
    expected = histogram_counts(g, full, ra, dec, energy)
    assert counts.dtype == np.float32 and counts.shape == (g.n_energy,) + g.shape
    np.testing.assert_array_equal(counts, expected)
    # some events were outside the map or the energy range, the rest all counted
    assert 0 < counts.sum() < len(ra)


def test_bin_events_on_a_cutout():
    g = geom()
    ra, dec, energy = random_events(seed=1)
    slices = (slice(5, 23), slice(17, 40))
    counts = bin_events(g, slices, ra, dec, energy)
    assert counts.shape == (g.n_energy, 18, 23)
    np.testing.assert_array_equal(counts, histogram_counts(g, slices, ra, dec, energy))
    full = bin_events(g, (slice(0, 40), slice(0, 40)), ra, dec, energy)
    np.testing.assert_array_equal(counts, full[:, 5:23, 17:40])


@pytest.mark.parametrize("frame", ["icrs", "galactic"])
def test_bin_events_wraps_float32_ra_as_gammapy(frame):
    """CTA 1DC event lists have RA in [-180, 180) as float32: gammapy (``SkyCoord``) wraps it
    into [0, 360) in float32, which moves an event by up to 1.5e-5 deg, and bins that. So does
    bin_events, in ICRS maps too (before, an ICRS map took the unwrapped values: an event of
    CTA run 111159 on a pixel border landed one pixel away from gammapy's)."""
    g = geom(frame, center=(266.0, -29.0), binsize=0.02)
    rng = np.random.default_rng(3)
    ra = (266.0 + rng.uniform(-0.9, 0.9, 20000) - 360).astype(np.float32)
    dec = (-29.0 + rng.uniform(-0.9, 0.9, 20000)).astype(np.float32)
    energy = np.full(len(ra), 1.0)
    full = (slice(0, g.shape[0]), slice(0, g.shape[1]))
    counts = bin_events(g, full, ra, dec, energy)
    # astropy's SkyCoord on the float32 values: gammapy's binning
    np.testing.assert_array_equal(counts, histogram_counts(g, full, ra, dec, energy))
    assert counts.sum() > 0.9 * len(ra)
    # the same values in float64 are wrapped in float64: some events land elsewhere
    wide = bin_events(g, full, ra.astype(float), dec.astype(float), energy)
    assert not np.array_equal(wide, counts)


def test_bin_events_without_events():
    g = geom()
    counts = bin_events(g, (slice(2, 6), slice(0, 3)), np.zeros(0), np.zeros(0), np.zeros(0))
    assert counts.shape == (g.n_energy, 4, 3) and counts.dtype == np.float32
    assert not counts.any()


def test_bin_events_energy_edges():
    """An event on an inner energy edge goes to the bin above; outside the axis: dropped."""
    g = geom()
    ra = np.full(4, CENTER[0])
    dec = np.full(4, CENTER[1])
    energy = np.array([EDGES[2], EDGES[0] * 0.999, EDGES[-1] * 1.001, EDGES[0]])
    counts = bin_events(g, (slice(0, 40), slice(0, 40)), ra, dec, energy)
    assert counts.sum() == 2
    assert counts[2].sum() == 1 and counts[0].sum() == 1


# --------------------------------------------------------------------------------------------
# exposure and background


def test_reduce_observation_synthetic():
    g = geom()
    ra, dec, energy = random_events(seed=2)
    obs = observation(ra, dec, energy)
    red = reduce_observation(obs, g, offset_max_deg=0.6)
    assert isinstance(red, ReducedObservation) and red.obs_id == 7
    assert red.slices == g.cutout_slices(*CENTER, 1.2)
    sy, sx = red.slices
    assert (sy.stop - sy.start, sx.stop - sx.start) == (24, 24)
    shape = (g.n_energy, 24, 24)
    assert red.counts.shape == red.exposure.shape == red.background.shape == shape
    assert red.mask_safe.shape == shape and red.mask_safe.dtype == bool

    ontime = 1000.0 + 600.0
    assert red.ontime_s == ontime
    assert red.livetime_s == pytest.approx(ontime * LIVETIME_FRACTION, rel=1e-15)

    np.testing.assert_array_equal(red.counts, histogram_counts(g, red.slices, ra, dec, energy))

    # exposure: a + b ln(E_centre) times the live time in every pixel
    e_center = np.sqrt(EDGES[:-1] * EDGES[1:])
    aeff = 2e4 + 1.5e4 * np.log(e_center)
    expected = np.broadcast_to((aeff * red.livetime_s)[:, None, None], shape)
    np.testing.assert_allclose(red.exposure, expected, rtol=1e-10)

    # background: the power law integrated over each bin (TeV -> MeV), x solid angle x on-time
    # (within float32 precision: the log of the template is taken in float32, as gammapy)
    g_ = 1 - BKG_INDEX
    per_tev = BKG_AMPLITUDE * (EDGES[1:] ** g_ - EDGES[:-1] ** g_) / g_
    solid_angle = g.solid_angle_sr[sy, sx]
    expected = per_tev[:, None, None] * 1e6 * solid_angle[None] * ontime
    np.testing.assert_allclose(red.background, expected, rtol=2e-6)

    # aeff-default without thresholds: everything with background is safe
    assert red.mask_safe.all()


def test_exposure_zero_beyond_the_aeff_offset_axis():
    """Effective area known to 0.5 deg: exposure zero further out, aeff x livetime within."""
    aeff = aeff_linear_in_log_e()
    short = EffectiveArea(aeff.energy, lin_axis([0.0, 0.25, 0.5]), aeff.values_m2[:, :2],
                          None, None)
    g = geom()
    red = reduce_observation(observation(aeff=short), g, offset_max_deg=1.0)
    sy, sx = red.slices
    sep = SkyCoord(*g.radec_deg, unit="deg")[sy, sx].separation(
        SkyCoord(*CENTER, unit="deg")).deg
    assert (sep > 0.5).any() and (sep < 0.5).any()
    assert np.all(red.exposure[:, sep > 0.5 + 1e-9] == 0)
    e_center = np.sqrt(EDGES[:-1] * EDGES[1:])
    expected = (2e4 + 1.5e4 * np.log(e_center)) * red.livetime_s
    within = red.exposure[:, sep < 0.5 - 1e-9]
    np.testing.assert_allclose(within, np.broadcast_to(expected[:, None], within.shape),
                               rtol=1e-10)


def test_background_lon_reversal_mirrors_the_template():
    """A BKG_3D read as REVERSE_LON_RADEC is the RADEC one mirrored in FoV longitude."""
    rng = np.random.default_rng(3)
    energy = log_axis(np.geomspace(0.1, 100, 9))
    lon = lin_axis(np.linspace(-3, 3, 13), "fov_lon")
    lat = lin_axis(np.linspace(-3, 3, 13), "fov_lat")
    values = rng.uniform(1e-9, 1e-7, (8, 12, 12))
    radec = Background(energy, (lon, lat), values, "RADEC")
    reverse = Background(energy, (lon, lat), values[:, ::-1, :].copy(), "REVERSE_LON_RADEC")
    g = geom()
    a = reduce_observation(observation(bkg=radec), g, 1.0).background
    b = reduce_observation(observation(bkg=reverse), g, 1.0).background
    np.testing.assert_allclose(a, b, rtol=1e-9)
    # and the template is not symmetric: the mirroring matters
    c = reduce_observation(observation(bkg=Background(energy, (lon, lat), values[:, ::-1, :]
                                                      .copy(), "RADEC")), g, 1.0).background
    assert not np.allclose(a, c, rtol=1e-3)


def test_reduce_observation_off_the_map_is_none():
    g = geom()
    assert reduce_observation(observation(pointing=(CENTER[0] + 10, CENTER[1])), g, 1.0) is None


# --------------------------------------------------------------------------------------------
# a real observation


def test_dr1_run_counts_and_on_axis_exposure():
    """H.E.S.S. DR1 run 20136 on a map centred on its pointing (odd pixel count: one pixel
    centre on the pointing): counts as numpy.histogramdd, exposure there = aeff x livetime,
    both computed from the file with astropy and scipy."""
    obs_id = 20136
    store = DataStore.from_dir(gammapy_data() / "hess-dl3-dr1")
    obs = store.load(obs_id)
    path = store.hdu_locations(obs_id)["events"][0]
    with fits.open(path) as hdul:
        events = hdul["EVENTS"].data
        header = hdul["EVENTS"].header
        gti = hdul["GTI"].data
        aeff = hdul["AEFF"].data
        e_lo, e_hi = (aeff[c][0].astype(float) for c in ("ENERG_LO", "ENERG_HI"))
        th_lo, th_hi = (aeff[c][0].astype(float) for c in ("THETA_LO", "THETA_HI"))
        area = np.asarray(aeff["EFFAREA"][0], float)  # (n_theta, n_energy)
        ra, dec = events["RA"].astype(float), events["DEC"].astype(float)
        energy = events["ENERGY"].astype(float)
        pointing = (header["RA_PNT"], header["DEC_PNT"])
        livetime = float(np.sum(gti["STOP"] - gti["START"])) * header["DEADC"]
    edges = energy_edges_tev(0.3, 10, 5)
    g = Geom.create(pointing[0], pointing[1], "icrs", 2.02, 0.02, "CAR", edges)
    assert g.shape == (101, 101)
    x, y = g.world_to_pix(*pointing)
    assert x[0] == pytest.approx(50, abs=1e-9) and y[0] == pytest.approx(50, abs=1e-9)
    red = reduce_observation(obs, g, offset_max_deg=1.01)
    assert red.livetime_s == pytest.approx(livetime, rel=1e-12)
    np.testing.assert_array_equal(red.counts, histogram_counts(g, red.slices, ra, dec, energy))
    assert red.counts.sum() > 1000

    rgi = RegularGridInterpolator((np.log(np.sqrt(e_lo * e_hi)), (th_lo + th_hi) / 2), area.T)
    e_center = np.sqrt(edges[:-1] * edges[1:])
    expected = rgi(np.stack([np.log(e_center), np.zeros(5)], axis=1)) * livetime
    sy, sx = red.slices
    np.testing.assert_allclose(red.exposure[:, 50 - sy.start, 50 - sx.start], expected,
                               rtol=1e-9)
    # the safe energy threshold of the file (LO_THRES) masks the lowest bin
    lo = fits.getheader(path, "AEFF")["LO_THRES"]
    keep = edges[:-1] >= lo
    assert not keep[0] and keep[1:].all()
    np.testing.assert_array_equal(red.mask_safe.any(axis=(1, 2)), keep)



# --------------------------------------------------------------------------------------------
# true-energy axis and energy dispersion


def test_exposure_on_a_true_energy_axis():
    """The exposure lives on its own true-energy axis (bin centres); counts, background and
    safe mask stay on the reconstructed one."""
    g = geom()
    true = energy_edges_tev(0.2, 50.0, 9)
    red = reduce_observation(observation(*random_events(seed=4)), g, 0.6,
                             energy_true_edges_tev=true)
    assert red.exposure.shape == (9, 24, 24) and red.counts.shape == (6, 24, 24)
    assert red.mask_safe.shape == red.background.shape == (6, 24, 24)
    centers = np.sqrt(true[:-1] * true[1:])
    expected = (2e4 + 1.5e4 * np.log(centers)) * red.livetime_s
    np.testing.assert_allclose(red.exposure[:, 12, 12], expected, rtol=1e-10)
    assert red.edisp is None
    same = reduce_observation(observation(*random_events(seed=4)), g, 0.6)
    np.testing.assert_array_equal(same.exposure, reduce_observation(
        observation(*random_events(seed=4)), g, 0.6, energy_true_edges_tev=EDGES).exposure)


def test_edisp_response_of_an_observation():
    """The kernel on the observation's cutout of the IRF grid: EDISP at each IRF pixel's
    offset, zero in the reconstructed-energy bins the safe mask excludes there; the exposure
    there; where each IRF pixel lies in the fine cutout."""
    g = geom(width=3.0)
    lo_thres = EDGES[1] * 0.99  # the first reconstructed-energy bin is not safe
    aeff = aeff_linear_in_log_e(lo=lo_thres)
    obs = observation(*random_events(seed=5), aeff=aeff, edisp=gaussian_edisp(),
                      pointing=(CENTER[0] + 0.3, CENTER[1] - 0.2))
    grid = irf_grid(g, EDGES[0], EDGES[-1])
    grid = IrfGrid(grid.geom, np.arange(6.0))  # bin indices without gammapy's rounding
    true = energy_edges_tev(0.3, 30.0, 8)
    red = reduce_observation(obs, g, 1.0, ("aeff-default",), energy_true_edges_tev=true,
                             irf=grid)
    r = red.edisp
    assert not r.diagonal
    assert r.slices == grid.geom.cutout_slices(*obs_pointing(obs), 2.0)
    sy, sx = r.slices
    assert r.kernel.shape == (8, 6, sy.stop - sy.start, sx.stop - sx.start)
    offset = grid.geom.pointing_frame(r.slices, *obs_pointing(obs))[2]
    kernel = np.moveaxis(edisp_kernel(obs.edisp, offset, true, EDGES), (-2, -1), (0, 1))
    # inside the fine cutout every bin but the first is safe
    lon, lat = (a[sy, sx] for a in grid.geom.lonlat_deg)
    x, y = g.world_to_pix(lon.ravel(), lat.ravel())
    np.testing.assert_allclose(r.x, x.reshape(lon.shape) - red.slices[1].start, atol=1e-9)
    np.testing.assert_allclose(r.y, y.reshape(lon.shape) - red.slices[0].start, atol=1e-9)
    n = red.counts.shape[1]
    inner = (r.x > 0.5) & (r.x < n - 1.5) & (r.y > 0.5) & (r.y < n - 1.5)
    assert inner.sum() >= 4
    np.testing.assert_array_equal(r.kernel[:, 0][:, inner], 0.0)
    np.testing.assert_array_equal(r.kernel[:, 1:][:, :, inner], kernel[:, 1:][:, :, inner])
    assert r.kernel[:, 1:][:, :, inner].max() > 0.5
    centers = np.sqrt(true[:-1] * true[1:])
    np.testing.assert_allclose(r.exposure, np.broadcast_to(
        ((2e4 + 1.5e4 * np.log(centers)) * red.livetime_s)[:, None, None], r.exposure.shape),
        rtol=1e-10)
    # without an energy dispersion: the diagonal kernel, flagged
    obs.edisp = None
    red = reduce_observation(obs, g, 1.0, ("aeff-default",), energy_true_edges_tev=true,
                             irf=grid)
    assert red.edisp.diagonal
    np.testing.assert_array_equal(red.edisp.kernel[:, 1:][:, :, inner],
                                  np.broadcast_to(diagonal_kernel(true, EDGES)[:, 1:, None],
                                                  (8, 5, inner.sum())))


def obs_pointing(obs):
    return obs.pointing_ra_deg, obs.pointing_dec_deg
