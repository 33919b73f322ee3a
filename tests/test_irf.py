"""IRF evaluation: multilinear interpolation against scipy, power-law integration against the
analytic integral and numerical quadrature, and the missing-value fill worked out by hand."""

import numpy as np
import pytest
from conftest import gammapy_data
from scipy.integrate import quad
from scipy.interpolate import RegularGridInterpolator

from ringbg.dl3 import read_aeff, read_edisp
from ringbg.files import read_fits_tables
from ringbg.irf import (
    Background,
    EffectiveArea,
    EnergyDispersion,
    IrfAxis,
    aeff_values_m2,
    bkg_log_rate_at_edges,
    edisp_kernel,
    integrate_power_law_log,
    interp_missing_energy,
    log_values,
)

TINY = float(np.finfo(np.float32).tiny)


def energy_axis(edges_tev):
    edges = np.asarray(edges_tev, float)
    return IrfAxis.from_lo_hi("energy", edges[:-1], edges[1:], log=True)


def linear_axis(edges, name="offset"):
    edges = np.asarray(edges, float)
    return IrfAxis.from_lo_hi(name, edges[:-1], edges[1:], log=False)


def reference(axes, values, points):
    """scipy's multilinear interpolation on the axis nodes, extrapolating linearly."""
    rgi = RegularGridInterpolator([a.nodes for a in axes], values, method="linear",
                                  bounds_error=False, fill_value=None)
    return rgi(points)


def inside(axis, scaled):
    return (scaled >= axis.edges[0]) & (scaled <= axis.edges[-1])


@pytest.fixture
def synthetic_aeff():
    rng = np.random.default_rng(3)
    energy = energy_axis(np.geomspace(0.05, 80, 13))
    offset = linear_axis([0.0, 0.3, 0.7, 1.0, 1.6, 2.0, 2.5])
    values = rng.uniform(-2e3, 1e5, (12, 6))  # some negative: clipped after interpolation
    values[4, 2] = np.nan
    return EffectiveArea(energy, offset, values, None, None)


def _aeff_reference(aeff, energy_tev, offset_deg):
    values = np.nan_to_num(aeff.values_m2, nan=0.0, posinf=0.0, neginf=0.0)
    log_e = np.log(energy_tev)
    le, off = np.meshgrid(log_e, offset_deg, indexing="ij")
    out = reference((aeff.energy, aeff.offset), values, np.stack([le, off], axis=-1))
    out[~(inside(aeff.energy, le) & inside(aeff.offset, off))] = 0.0
    return np.clip(out, 0.0, None)


def test_aeff_against_scipy(synthetic_aeff):
    rng = np.random.default_rng(4)
    # through, between and beyond the nodes and the edges
    energy = np.geomspace(0.03, 120, 57)
    offset = np.concatenate([rng.uniform(-0.2, 2.8, 200), [0.0, 0.15, 2.5, 2.6]])
    ours = aeff_values_m2(synthetic_aeff, energy, offset)
    assert ours.shape == (57, 204)
    np.testing.assert_allclose(ours, _aeff_reference(synthetic_aeff, energy, offset),
                               rtol=1e-12, atol=1e-9)
    assert np.all(ours >= 0) and np.all(np.isfinite(ours))
    # beyond the edges: zero, within the end half-bins: extrapolated (nonzero somewhere)
    assert np.all(ours[:, offset > 2.5] == 0) and np.all(ours[:, offset < 0] == 0)
    assert np.all(ours[energy > 80] == 0) and np.all(ours[energy < 0.05] == 0)
    assert np.any(ours[:, offset > synthetic_aeff.offset.nodes[-1]] > 0)


def test_aeff_offset_shape_is_kept(synthetic_aeff):
    energy = np.array([0.2, 1.0, 7.0])
    offset = np.linspace(0, 2.4, 20).reshape(4, 5)
    ours = aeff_values_m2(synthetic_aeff, energy, offset)
    assert ours.shape == (3, 4, 5)
    np.testing.assert_allclose(ours.reshape(3, 20),
                               _aeff_reference(synthetic_aeff, energy, offset.ravel()),
                               rtol=1e-12, atol=1e-9)


def test_aeff_nodes_are_exact(synthetic_aeff):
    """At the nodes the table values come back (NaN as zero, negatives as zero)."""
    energy = np.exp(synthetic_aeff.energy.nodes)
    ours = aeff_values_m2(synthetic_aeff, energy, synthetic_aeff.offset.nodes)
    expected = np.clip(np.nan_to_num(synthetic_aeff.values_m2), 0, None)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("obs_id", [20136, 20282])
def test_aeff_dr1_against_scipy_and_gammapy(obs_id):
    """H.E.S.S. DR1 tables (some hold negative values at low energies, e.g. run 20282)."""
    import astropy.units as u
    from gammapy.irf import EffectiveAreaTable2D

    path = gammapy_data() / f"hess-dl3-dr1/data/hess_dl3_dr1_obs_id_{obs_id:06d}.fits.gz"
    aeff = read_aeff(read_fits_tables(path)["AEFF"], path)
    energy = np.geomspace(0.1, 100, 60)
    offset = np.linspace(0, 2.5, 51)
    ours = aeff_values_m2(aeff, energy, offset)
    np.testing.assert_allclose(ours, _aeff_reference(aeff, energy, offset), rtol=1e-10,
                               atol=1e-6)
    theirs = EffectiveAreaTable2D.read(path, hdu="AEFF").evaluate(
        energy_true=energy[:, None] * u.TeV, offset=offset[None, :] * u.deg).to_value("m2")
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_single_node_axis_is_constant_along_it():
    energy = energy_axis([0.1, 1.0, 10.0])
    offset = IrfAxis.from_lo_hi("offset", [0.0], [2.0], log=False)
    aeff = EffectiveArea(energy, offset, np.array([[10.0], [30.0]]), None, None)
    ours = aeff_values_m2(aeff, np.array([np.sqrt(0.1), np.sqrt(10.0)]), np.array([0.1, 1.9]))
    np.testing.assert_allclose(ours, [[10.0, 10.0], [30.0, 30.0]])
    assert np.all(aeff_values_m2(aeff, np.array([1.0]), np.array([2.1])) == 0)


# --------------------------------------------------------------------------------------------
# background


def test_log_values():
    values = np.array([[1.0, 0.0, -3.0], [np.e, 1e-50, 1e30]])
    logv = log_values(values)
    assert logv.dtype == np.float32
    expected = np.log(np.maximum(values.astype(np.float32), np.float32(TINY)))
    np.testing.assert_array_equal(logv, expected)
    assert logv[0, 1] == logv[0, 2] == np.float32(np.log(np.float32(TINY)))


def test_bkg_3d_log_rate_against_scipy():
    rng = np.random.default_rng(6)
    energy = energy_axis(np.geomspace(0.1, 100, 9))
    lon = linear_axis(np.linspace(-3, 3, 7), "fov_lon")
    lat = linear_axis(np.linspace(-3, 3, 9), "fov_lat")
    values = rng.uniform(1e-6, 1e-3, (8, 6, 8))
    values[2, 1, 1] = 0.0
    bkg = Background(energy, (lon, lat), values)
    logv = log_values(values)
    edges = np.geomspace(0.05, 150, 12)
    coords = (rng.uniform(-3.5, 3.5, (5, 7)), rng.uniform(-3.5, 3.5, (5, 7)))
    log_rate, ok = bkg_log_rate_at_edges(bkg, logv, edges, coords)
    assert log_rate.shape == ok.shape == (12, 5, 7)
    le = np.broadcast_to(np.log(edges)[:, None, None], log_rate.shape)
    x = np.broadcast_to(coords[0], log_rate.shape)
    y = np.broadcast_to(coords[1], log_rate.shape)
    expected = reference((energy, lon, lat), logv.astype(float), np.stack([le, x, y], axis=-1))
    np.testing.assert_allclose(log_rate, expected, rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(ok, inside(energy, le) & inside(lon, x) & inside(lat, y))
    assert ok.any() and not ok.all()


def test_bkg_2d_log_rate_against_scipy():
    energy = energy_axis(np.geomspace(0.1, 100, 6))
    offset = linear_axis([0.0, 0.5, 1.0, 2.0, 3.0])
    values = np.outer(np.geomspace(1.0, 1e-5, 5), [1.0, 0.9, 0.6, 0.2])
    bkg = Background(energy, (offset,), values)
    logv = log_values(values)
    edges = np.geomspace(0.2, 50, 7)
    off = np.linspace(-0.2, 3.3, 15)
    log_rate, ok = bkg_log_rate_at_edges(bkg, logv, edges, (off,))
    le, oo = np.meshgrid(np.log(edges), off, indexing="ij")
    expected = reference((energy, offset), logv.astype(float), np.stack([le, oo], axis=-1))
    np.testing.assert_allclose(log_rate, expected, rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(ok, inside(offset, oo) & inside(energy, le))


# --------------------------------------------------------------------------------------------
# integration


@pytest.mark.parametrize("index", [2.7, 2.0, 1.0, 0.0, -0.5])
def test_integral_of_an_exact_power_law(index):
    amplitude = 3.5e-4
    edges = np.geomspace(0.3, 80, 9)
    log_y = np.log(amplitude * edges ** -index)
    ok = np.ones(len(edges), dtype=bool)
    ours = integrate_power_law_log(log_y, ok, edges)
    lo, hi = edges[:-1], edges[1:]
    if index == 1.0:
        expected = amplitude * np.log(hi / lo)
    else:
        expected = amplitude * (hi ** (1 - index) - lo ** (1 - index)) / (1 - index)
    np.testing.assert_allclose(ours, expected, rtol=1e-10)


def test_integral_of_a_broken_spectrum_against_quadrature():
    """Each bin is the power law through its two end values: quad of that power law."""
    rng = np.random.default_rng(7)
    edges = np.geomspace(0.1, 100, 8)
    y = rng.uniform(1e-3, 1.0, len(edges))
    ours = integrate_power_law_log(np.log(y), np.ones(len(edges), bool), edges)
    for k in range(len(edges) - 1):
        e0, e1, y0, y1 = edges[k], edges[k + 1], y[k], y[k + 1]
        slope = np.log(y1 / y0) / np.log(e1 / e0)
        exact, _ = quad(lambda e: y0 * (e / e0) ** slope, e0, e1, epsrel=1e-13)
        assert ours[k] == pytest.approx(exact, rel=1e-9)


def test_integral_zero_unless_both_edges_inside_and_shape_kept():
    edges = np.geomspace(1, 10, 5)
    log_y = np.log(np.outer(edges ** -2.0, np.ones(6))).reshape(5, 2, 3)
    ok = np.ones((5, 2, 3), dtype=bool)
    ok[2, 0, 1] = False  # edge 2 of pixel (0, 1): bins 1 and 2 vanish there
    ok[4, 1, 2] = False  # last edge of pixel (1, 2): the last bin vanishes there
    ours = integrate_power_law_log(log_y, ok, edges)
    assert ours.shape == (4, 2, 3)
    full = edges[:-1] ** -1.0 - edges[1:] ** -1.0
    expected = np.broadcast_to(full[:, None, None], (4, 2, 3)).copy()
    expected[1:3, 0, 1] = 0.0
    expected[3, 1, 2] = 0.0
    np.testing.assert_allclose(ours, expected, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# missing background values


def test_interp_missing_energy_by_hand():
    values = np.array([
        [1.0, 0.0, 5.0, -1.0],
        [0.0, 2.0, 5.0, 0.0],
        [0.0, np.nan, 0.0, 4.0],
        [8.0, 8.0, 0.0, 3.0],
        [2.0, 0.0, 0.0, 0.0],
    ])
    before = values.copy()
    filled = interp_missing_energy(values)
    assert np.array_equal(values, before, equal_nan=True)  # input untouched
    # column 0: 1, _, _, 8 -> log-linear in the bin index: 2 and 4
    np.testing.assert_allclose(filled[:, 0], [1, 2, 4, 8, 2], rtol=1e-12)
    # column 1: missing at the start and the end: left as they are, the middle filled
    np.testing.assert_allclose(filled[:, 1], [0, 2, 4, 8, 0], rtol=1e-12)
    # column 2: nothing valid after: nothing filled
    np.testing.assert_array_equal(filled[:, 2], [5, 5, 0, 0, 0])
    # column 3: a negative value is valid and counts as float32 tiny in the log
    np.testing.assert_allclose(filled[1, 3], np.sqrt(TINY * 4.0), rtol=1e-6)
    np.testing.assert_array_equal(filled[[0, 2, 3, 4], 3], [-1, 4, 3, 0])


def test_interp_missing_energy_multidimensional():
    rng = np.random.default_rng(8)
    values = rng.uniform(0.1, 1.0, (6, 3, 4))
    holes = values.copy()
    holes[2:4, 1, 2] = 0.0
    filled = interp_missing_energy(holes)
    assert filled.shape == values.shape
    mask = np.ones(values.shape, bool)
    mask[2:4, 1, 2] = False
    np.testing.assert_array_equal(filled[mask], values[mask])
    lo, hi = np.log(values[1, 1, 2]), np.log(values[4, 1, 2])
    np.testing.assert_allclose(filled[2:4, 1, 2], np.exp(lo + np.array([1, 2]) / 3 * (hi - lo)),
                               rtol=1e-12)


def test_aeff_as_gammapy_in_the_end_half_bins(synthetic_aeff):
    """gammapy 2.1's own evaluation, energies and offsets across the whole axes, the half bins
    between the outer nodes and the edges included (extrapolated, clipped at zero at the end)."""
    import astropy.units as u
    from gammapy.irf import EffectiveAreaTable2D
    from gammapy.maps import MapAxis

    e_axis = MapAxis.from_edges(np.exp(synthetic_aeff.energy.edges), unit="TeV",
                                name="energy_true", interp="log")
    o_axis = MapAxis.from_edges(synthetic_aeff.offset.edges, unit="deg", name="offset")
    theirs = EffectiveAreaTable2D(axes=[e_axis, o_axis], unit="m2",
                                  data=np.nan_to_num(synthetic_aeff.values_m2))
    energy = np.geomspace(0.051, 79, 41)
    offset = np.linspace(0.0, 2.5, 26)
    expected = theirs.evaluate(energy_true=energy[:, None] * u.TeV,
                               offset=offset[None, :] * u.deg).to_value("m2")
    np.testing.assert_allclose(aeff_values_m2(synthetic_aeff, energy, offset), expected,
                               rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("nodes", [
    np.linspace(-2.45, 2.45, 50).astype(np.float32).astype(float),  # H.E.S.S. FoV nodes
    np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5]),
    np.log(np.geomspace(0.1, 100, 24)),
    np.array([0.0, 0.1, 0.5, 2.0, 2.1]),  # uneven: binary search
    np.array([1.0, 3.0]),
])
def test_bracket_is_searchsorted(nodes):
    from ringbg.irf import _bracket

    rng = np.random.default_rng(2)
    span = nodes[-1] - nodes[0]
    x = np.concatenate([rng.uniform(nodes[0] - 0.2 * span, nodes[-1] + 0.2 * span, 5000),
                        nodes, np.nextafter(nodes, -np.inf), np.nextafter(nodes, np.inf),
                        [np.inf, -np.inf]])
    idx, t, single = _bracket(nodes, x)
    expected = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, len(nodes) - 2)
    assert not single
    np.testing.assert_array_equal(idx, expected)
    lo, hi = nodes[expected], nodes[expected + 1]
    np.testing.assert_array_equal(t, (x - lo) / (hi - lo))


# --------------------------------------------------------------------------------------------
# energy dispersion


def _edisp_reference(edisp, offset, true_edges, reco_edges, threshold=1e-8):
    """The kernel step by step as gammapy's make_edisp_kernel_map: scipy's trilinear
    interpolation of the density (zero beyond the offset edges, clipped), normalised by its
    integral over migration, cumulated, interpolated at E_reco / E_true (np.interp clamps)."""
    centers = np.sqrt(true_edges[:-1] * true_edges[1:])
    axes = [edisp.energy, edisp.migra, edisp.offset]
    keep = [len(a.nodes) > 1 for a in axes]
    rgi = RegularGridInterpolator([a.nodes for a, k in zip(axes, keep) if k],
                                  np.squeeze(edisp.values), bounds_error=False, fill_value=None)
    le, mi, of = np.meshgrid(np.log(centers), edisp.migra.nodes, offset, indexing="ij")
    points = np.stack([c for c, k in zip((le, mi, of), keep) if k], axis=-1)
    density = np.clip(np.nan_to_num(rgi(points)), 0, None)  # (true, migra, offset)
    density[:, :, ~inside(edisp.offset, offset)] = 0.0
    width = np.diff(edisp.migra.edges)[None, :, None]
    with np.errstate(all="ignore"):
        density = np.nan_to_num(density / np.sum(density * width, axis=1, keepdims=True))
    cum = np.concatenate([np.zeros((len(centers), 1, len(offset))),
                          np.cumsum(density * width, axis=1)], axis=1)
    kernel = np.zeros((len(offset), len(centers), len(reco_edges) - 1))
    for p in range(len(offset)):
        for k in range(len(centers)):
            cdf = np.interp(reco_edges / centers[k], edisp.migra.edges, cum[k, :, p])
            kernel[p, k] = np.clip(np.diff(cdf), 0, None)
    kernel[kernel < threshold] = 0.0
    return kernel


def _gaussian_edisp(offset_edges, sigma0=0.15, negative=False):
    energy = energy_axis(np.geomspace(0.1, 100, 16))
    migra = linear_axis(np.linspace(0.2, 3.0, 57), "migra")
    offset = linear_axis(offset_edges)
    e = np.exp(energy.nodes)[:, None, None]
    sigma = sigma0 * (1 + 0.3 * offset.nodes[None, None, :]) * (1 + 0.2 / np.sqrt(e))
    bias = 1 + 0.05 * np.log10(e)
    values = np.exp(-0.5 * ((migra.nodes[None, :, None] - bias) / sigma) ** 2)
    values = values / (np.sqrt(2 * np.pi) * sigma)
    if negative == "many":
        # as in H.E.S.S. DR1 (half its runs): small negative entries at every offset node,
        # some at both nodes of an interval
        rng = np.random.default_rng(11)
        pick = rng.random(values.shape) < 0.05
        values[pick] = -rng.uniform(0, 0.05, pick.sum()) * values.max()
        values[5:9, 30:33, 2:4] = -0.2
    elif negative:
        values[3, 20:25, 1] = -0.4  # as in real tables: clipped after the interpolation
    return EnergyDispersion(energy, migra, offset, values)


@pytest.mark.parametrize("negative", [False, True, "many"])
def test_edisp_kernel_against_the_step_by_step_reference(negative):
    """Between the offset nodes the kernel is interpolated from the nodes' integrals; beyond
    them, and wherever clipping happens, it is computed at the offset: both as the reference."""
    edisp = _gaussian_edisp([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], negative=negative)
    offset = np.concatenate([np.linspace(0, 2.6, 40), [0.25, 2.25, 2.49, 2.5, 2.51]])
    true = np.geomspace(0.05, 200, 14)  # beyond the IRF's energies: extrapolated
    reco = np.geomspace(0.3, 30, 7)
    ours = edisp_kernel(edisp, offset, true, reco)
    np.testing.assert_allclose(ours, _edisp_reference(edisp, offset, true, reco),
                               rtol=1e-10, atol=1e-12)
    assert np.all(ours[offset > 2.5] == 0)
    # a wide reconstructed range catches nearly all events of the true energies inside it
    wide = edisp_kernel(edisp, offset[offset < 2.5], true, np.geomspace(0.01, 1e4, 9))
    np.testing.assert_allclose(wide.sum(axis=-1)[:, 3:-3], 1.0, atol=1e-6)


def test_edisp_kernel_keeps_the_offset_shape():
    edisp = _gaussian_edisp([0.0, 1.0, 2.0, 3.0])
    offset = np.linspace(0, 2.9, 12).reshape(3, 4)
    ours = edisp_kernel(edisp, offset, np.geomspace(0.5, 10, 5), np.geomspace(0.5, 10, 4))
    assert ours.shape == (3, 4, 4, 3)
    np.testing.assert_array_equal(
        ours.reshape(12, 4, 3),
        edisp_kernel(edisp, offset.ravel(), np.geomspace(0.5, 10, 5), np.geomspace(0.5, 10, 4)))


def test_edisp_kernel_one_offset_bin_is_constant_inside_it():
    """POINT-LIKE tables with one offset bin (MAGIC): the same kernel inside the bin, zero
    outside it (gammapy's interpolator drops the axis and masks outside its edges)."""
    path = gammapy_data() / "magic-rad-max" / "20131004_05029747_DL3_CrabNebula-W0.40+035.fits"
    edisp = read_edisp(read_fits_tables(path)["ENERGY DISPERSION"], path)
    true, reco = np.geomspace(0.05, 30, 9), np.geomspace(0.1, 10, 6)
    ours = edisp_kernel(edisp, np.array([0.3, 0.391, 0.4, 0.409, 0.5]), true, reco)
    assert np.all(ours[[0, 4]] == 0) and ours[2].max() > 0.3
    np.testing.assert_array_equal(ours[1], ours[2])
    np.testing.assert_array_equal(ours[3], ours[2])
    np.testing.assert_allclose(ours[2], _edisp_reference(edisp, np.array([0.4]), true,
                                                         reco)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("source", ["hess-dr1", "cta-1dc"])
def test_edisp_kernel_as_gammapys_kernel_map(source):
    """gammapy's ``make_edisp_kernel_map`` on a 0.2 deg grid around the pointing: DR1 out to
    beyond its offset nodes (the extrapolated end half-bin and zero beyond), CTA 1DC from the
    centre (extrapolated below its first node)."""
    import warnings

    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gammapy.irf import EnergyDispersion2D
    from gammapy.makers.utils import make_edisp_kernel_map
    from gammapy.maps import MapAxis, WcsGeom

    if source == "hess-dr1":
        path = gammapy_data() / "hess-dl3-dr1/data/hess_dl3_dr1_obs_id_020136.fits.gz"
        hdu, width, true, reco = "EDISP", 6, (0.3, 30, 14), (0.5, 10, 10)
    else:
        path = gammapy_data() / "cta-1dc/caldb/data/cta/1dc/bcf/South_z20_50h/irf_file.fits"
        hdu, width, true, reco = "ENERGY DISPERSION", 5, (0.05, 20, 12), (0.1, 10, 5)
    edisp = read_edisp(read_fits_tables(path)[hdu], path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_irf = EnergyDispersion2D.read(path, hdu=hdu)
    e_true = MapAxis.from_energy_bounds(true[0] * u.TeV, true[1] * u.TeV, true[2],
                                        name="energy_true")
    e_reco = MapAxis.from_energy_bounds(reco[0] * u.TeV, reco[1] * u.TeV, reco[2])
    pointing = SkyCoord(228.6125, -58.771667, unit="deg")
    geom = WcsGeom.create(skydir=pointing, binsz=0.2, width=width, axes=[e_reco, e_true])
    theirs = make_edisp_kernel_map(theirs_irf, pointing, geom).edisp_map.data
    offset = geom.to_image().get_coord().skycoord.separation(pointing).deg
    ours = edisp_kernel(edisp, offset, e_true.edges.to_value("TeV"),
                        e_reco.edges.to_value("TeV"))
    np.testing.assert_allclose(np.moveaxis(ours, (-2, -1), (0, 1)), theirs, atol=1e-12)
    assert theirs.max() > 0.3
    if source == "hess-dr1":
        assert np.any(offset > edisp.offset.edges[-1])
    else:
        assert np.any(offset < edisp.offset.nodes[0])
