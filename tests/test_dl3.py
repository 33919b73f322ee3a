"""DL3 readers: events, GTI, effective area, energy dispersion and background, units, the
observation record and its consistency checks.

Real IRFs are compared with gammapy 2.1's own readers on the same files; small tables written
here with astropy check the unit conversions and the error messages.
"""

import io
import logging

import numpy as np
import pytest
from astropy.io import fits
from conftest import gammapy_data

from ringbg.dl3 import (
    Observation,
    gti_problem,
    header_number,
    impossible_events,
    read_aeff,
    read_bkg,
    read_edisp,
    read_event_times,
    read_events,
    read_gti,
)
from ringbg.errors import DL3Error, one_line
from ringbg.files import read_fits_tables
from ringbg.fitsfile import Table, read_tables
from ringbg.irf import Background, EffectiveArea, EnergyDispersion, IrfAxis

PATH = "somewhere/obs_42.fits"


def dr1_file(obs_id=20136):
    return gammapy_data() / "hess-dl3-dr1" / "data" / f"hess_dl3_dr1_obs_id_{obs_id:06d}.fits.gz"


def cta_irf_file():
    return gammapy_data() / "cta-1dc/caldb/data/cta/1dc/bcf/South_z20_50h/irf_file.fits"


def make_table(name, columns, header=None, parser="ringbg"):
    """A ringbg Table of ``{name: (format, array, unit)}`` written with astropy and parsed by
    ringbg's reader (or wrapped from astropy)."""
    cols = []
    for col, (fmt, array, unit) in columns.items():
        shape = np.shape(array)[1:]
        dim = "(" + ",".join(str(n) for n in reversed(shape)) + ")" if len(shape) > 1 else None
        cols.append(fits.Column(col, fmt, array=array, unit=unit, dim=dim))
    hdu = fits.BinTableHDU.from_columns(cols, name=name)
    for key, value in (header or {}).items():
        hdu.header[key] = value
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    if parser == "ringbg":
        return read_tables(buf.getvalue())[name]
    with fits.open(io.BytesIO(buf.getvalue())) as hdul:
        return Table.from_astropy(fits.BinTableHDU(hdul[name].data.copy(), hdul[name].header))


def events_table(energy_unit="TeV", ra_unit="deg", parser="ringbg"):
    return make_table("EVENTS", {
        "RA": ("E", np.array([10.0, 20.5, 359.0], np.float32), ra_unit),
        "DEC": ("E", np.array([-5.0, 0.25, 60.0], np.float32), "deg"),
        "ENERGY": ("D", np.array([0.5, 1500.0, 2.0]), energy_unit),
    }, header={"OBS_ID": 42, "RA_PNT": 15.0}, parser=parser)


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------------------------
# events and GTI


def test_read_events_dr1_as_astropy():
    ra, dec, energy, header = read_events(read_fits_tables(dr1_file())["EVENTS"], dr1_file())
    with fits.open(dr1_file()) as hdul:
        data = hdul["EVENTS"].data
        assert header["OBS_ID"] == hdul["EVENTS"].header["OBS_ID"] == 20136
        # in the file's float32 (gammapy bins them so)
        for ours, name in ((ra, "RA"), (dec, "DEC"), (energy, "ENERGY")):
            assert data[name].dtype == np.dtype(">f4")
            assert ours.dtype == np.float32
            assert np.array_equal(ours, data[name].astype(np.float64))


@pytest.mark.parametrize("parser", ["ringbg", "astropy"])
@pytest.mark.parametrize("energy_unit, ra_unit, energy_factor, ra_factor", [
    ("TeV", "deg", 1.0, 1.0),
    ("GeV", "deg", 1e-3, 1.0),
    ("MeV", "rad", 1e-6, 180 / np.pi),
    ("erg", "arcmin", 1 / 1.602176634, 1 / 60),
    ("", "", 1.0, 1.0),
])
def test_read_events_converts_units(parser, energy_unit, ra_unit, energy_factor, ra_factor):
    table = events_table(energy_unit, ra_unit, parser)
    ra, dec, energy, header = read_events(table, PATH)
    np.testing.assert_allclose(energy, np.array([0.5, 1500.0, 2.0]) * energy_factor, rtol=1e-12)
    np.testing.assert_allclose(
        ra, np.array([10.0, 20.5, 359.0], np.float32).astype(float) * ra_factor, rtol=1e-12)
    np.testing.assert_array_equal(dec, np.array([-5.0, 0.25, 60.0], np.float32))
    # float32 degrees and TeV stay float32 (gammapy bins them so); converted ones are float64
    assert ra.dtype == dec.dtype == (np.float32 if ra_factor == 1.0 else np.float64)
    assert energy.dtype == np.float64  # a D column
    assert header["OBS_ID"] == 42


def test_unknown_unit_warns_and_is_taken_as_the_default(caplog):
    caplog.set_level(logging.WARNING)
    _, _, energy, _ = read_events(events_table(energy_unit="bananas"), PATH)
    np.testing.assert_array_equal(energy, [0.5, 1500.0, 2.0])
    messages = warnings_of(caplog)
    assert any(PATH in m and "ENERGY" in m and "'bananas' not understood" in m and "TeV" in m
               for m in messages), messages


@pytest.mark.parametrize("unit", ["deg", "m", "s-1"])
def test_unconvertible_unit_raises_naming_the_file(unit):
    with pytest.raises(DL3Error) as info:
        read_events(events_table(energy_unit=unit), PATH)
    message = str(info.value)
    assert PATH in message and "ENERGY" in message
    assert f"'{unit}' cannot be converted to TeV" in message


def test_missing_or_text_column_raises_naming_the_file():
    table = make_table("EVENTS", {"RA": ("D", np.zeros(2), "deg"),
                                  "DEC": ("D", np.zeros(2), "deg")})
    with pytest.raises(DL3Error, match=f"{PATH}: HDU EVENTS has no column ENERGY"):
        read_events(table, PATH)
    table = make_table("EVENTS", {"RA": ("D", np.zeros(2), "deg"),
                                  "DEC": ("D", np.zeros(2), "deg"),
                                  "ENERGY": ("4A", np.array(["1", "2"]), "TeV")})
    with pytest.raises(DL3Error, match="ENERGY: not a numeric column"):
        read_events(table, PATH)


def test_read_gti_values_and_units():
    start = np.array([0.0, 100.0, 250.5])
    stop = np.array([50.0, 200.0, 251.0])
    table = make_table("GTI", {"START": ("D", start, "s"), "STOP": ("D", stop, "s")})
    got_start, got_stop = read_gti(table, PATH)
    np.testing.assert_array_equal(got_start, start)
    np.testing.assert_array_equal(got_stop, stop)
    for unit, factor in (("ks", 1000.0), ("min", 60.0)):
        table = make_table("GTI", {"START": ("D", start, unit), "STOP": ("D", stop, unit)})
        got_start, got_stop = read_gti(table, PATH)
        np.testing.assert_allclose(got_start, start * factor, rtol=1e-12)
        np.testing.assert_allclose(got_stop, stop * factor, rtol=1e-12)


def test_read_gti_stop_before_start_names_the_row():
    table = make_table("GTI", {"START": ("D", np.array([0.0, 10.0]), "s"),
                               "STOP": ("D", np.array([5.0, 9.0]), "s")})
    with pytest.raises(DL3Error, match="row 1 stops before it starts"):
        read_gti(table, PATH)


# --------------------------------------------------------------------------------------------
# IRF axes


def test_irf_axis_from_bin_edges():
    lo, hi = np.array([0.1, 1.0, 10.0]), np.array([1.0, 10.0, 100.0])
    axis = IrfAxis.from_lo_hi("energy", lo, hi, log=True)
    np.testing.assert_allclose(np.exp(axis.edges), [0.1, 1, 10, 100], rtol=1e-12)
    np.testing.assert_allclose(np.exp(axis.nodes), np.sqrt(lo * hi), rtol=1e-12)
    lin = IrfAxis.from_lo_hi("offset", [0.0, 0.5, 2.0], [0.5, 2.0, 2.5], log=False)
    np.testing.assert_array_equal(lin.edges, [0, 0.5, 2, 2.5])
    np.testing.assert_array_equal(lin.nodes, [0.25, 1.25, 2.25])


def test_irf_axis_from_nodes():
    """Equal LO and HI are nodes: edges half way between them, extrapolated at the ends."""
    axis = IrfAxis.from_lo_hi("energy", [1.0, 2.0, 4.0], [1.0, 2.0, 4.0], log=True)
    np.testing.assert_allclose(np.exp(axis.nodes), [1, 2, 4], rtol=1e-12)
    r = np.sqrt(2)
    np.testing.assert_allclose(np.exp(axis.edges), [1 / r, r, 2 * r, 4 * r], rtol=1e-12)
    lin = IrfAxis.from_lo_hi("offset", [0.0, 1.0, 3.0], [0.0, 1.0, 3.0], log=False)
    np.testing.assert_allclose(lin.edges, [-0.5, 0.5, 2.0, 4.0])
    one = IrfAxis.from_lo_hi("offset", [5.0], [5.0], log=False)
    np.testing.assert_array_equal(one.edges, [4.5, 5.5])


def test_irf_axis_scaled_and_padded():
    axis = IrfAxis.from_lo_hi("offset", [0.0, 1.0, 3.0], [1.0, 3.0, 4.0], log=False)
    padded = axis.padded()
    np.testing.assert_array_equal(padded.edges, [-1, 0, 1, 3, 4, 5])
    np.testing.assert_array_equal(padded.nodes, [-0.5, 0.5, 2, 3.5, 4.5])
    log_axis = IrfAxis.from_lo_hi("energy", [1.0], [10.0], log=True)
    np.testing.assert_allclose(log_axis.scaled([1.0, np.e]), [0.0, 1.0])
    np.testing.assert_array_equal(axis.scaled([2.0, -1.0]), [2.0, -1.0])


# --------------------------------------------------------------------------------------------
# effective area and background


def _gammapy_irfs(path, aeff_hdu, bkg_hdu):
    import warnings

    from gammapy.irf import Background3D, EffectiveAreaTable2D

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (EffectiveAreaTable2D.read(path, hdu=aeff_hdu),
                Background3D.read(path, hdu=bkg_hdu))


def _assert_axis_as_gammapy(ours, theirs, unit):
    edges = np.exp(ours.edges) if ours.log else ours.edges
    nodes = np.exp(ours.nodes) if ours.log else ours.nodes
    np.testing.assert_allclose(edges, theirs.edges.to_value(unit), rtol=1e-6)
    np.testing.assert_allclose(nodes, theirs.center.to_value(unit), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("source", ["hess-dr1", "cta-1dc"])
def test_irfs_as_gammapy(source):
    if source == "hess-dr1":
        path, aeff_hdu, bkg_hdu = dr1_file(), "AEFF", "BKG"
    else:
        path, aeff_hdu, bkg_hdu = cta_irf_file(), "EFFECTIVE AREA", "BACKGROUND"
    tables = read_fits_tables(path)
    aeff = read_aeff(tables[aeff_hdu], path)
    bkg = read_bkg(tables[bkg_hdu], path)
    g_aeff, g_bkg = _gammapy_irfs(path, aeff_hdu, bkg_hdu)

    assert aeff.values_m2.shape == g_aeff.data.shape
    np.testing.assert_allclose(aeff.values_m2, g_aeff.quantity.to_value("m2"), rtol=1e-6)
    _assert_axis_as_gammapy(aeff.energy, g_aeff.axes["energy_true"], "TeV")
    _assert_axis_as_gammapy(aeff.offset, g_aeff.axes["offset"], "deg")
    assert aeff.lo_thres_tev == g_aeff.meta.get("LO_THRES")
    assert aeff.hi_thres_tev == g_aeff.meta.get("HI_THRES")

    assert bkg.is_3d and bkg.values.shape == g_bkg.data.shape
    np.testing.assert_allclose(bkg.values, g_bkg.quantity.to_value("s-1 MeV-1 sr-1"), rtol=1e-6)
    _assert_axis_as_gammapy(bkg.energy, g_bkg.axes["energy"], "TeV")
    _assert_axis_as_gammapy(bkg.spatial[0], g_bkg.axes["fov_lon"], "deg")
    _assert_axis_as_gammapy(bkg.spatial[1], g_bkg.axes["fov_lat"], "deg")
    assert bkg.alignment == "RADEC"  # without the events header: no DR1 quirk


def test_dr1_background_orientation_quirk():
    """H.E.S.S. DR1 events (SASH writer, HDUVERS 0.2): the BKG_3D longitude is reversed."""
    tables = read_fits_tables(dr1_file())
    header = tables["EVENTS"].header
    assert header["CREATOR"] == "SASH FITS::EventListWriter" and header["HDUVERS"] == "0.2"
    assert read_bkg(tables["BKG"], dr1_file(), header).alignment == "REVERSE_LON_RADEC"
    other = dict(header, CREATOR="someone else")
    assert read_bkg(tables["BKG"], dr1_file(), other).alignment == "RADEC"


def _aeff_table(values, orientation, unit="m2", energy_unit="TeV", header=None):
    n_e, n_th = values.shape
    e_edges = np.geomspace(0.1, 100, n_e + 1)
    th_edges = np.linspace(0, 2.5, n_th + 1)
    # GADF: per-row array (n_theta, n_energy) in numpy order; gammapy also takes the transpose
    cell = values.T if orientation == "gadf" else values
    return make_table("AEFF", {
        "ENERG_LO": (f"{n_e}D", e_edges[None, :-1], energy_unit),
        "ENERG_HI": (f"{n_e}D", e_edges[None, 1:], energy_unit),
        "THETA_LO": (f"{n_th}D", th_edges[None, :-1], "deg"),
        "THETA_HI": (f"{n_th}D", th_edges[None, 1:], "deg"),
        "EFFAREA": (f"{values.size}D", cell[None], unit),
    }, header=header), e_edges, th_edges


@pytest.mark.parametrize("orientation", ["gadf", "transposed"])
def test_read_aeff_synthetic(orientation):
    values = np.arange(1.0, 5 * 3 + 1).reshape(5, 3) * 1e4
    table, e_edges, th_edges = _aeff_table(values, orientation,
                                           header={"LO_THRES": 0.3, "HI_THRES": 50})
    aeff = read_aeff(table, PATH)
    assert isinstance(aeff, EffectiveArea)
    np.testing.assert_array_equal(aeff.values_m2, values)
    np.testing.assert_allclose(np.exp(aeff.energy.edges), e_edges, rtol=1e-12)
    np.testing.assert_allclose(aeff.offset.edges, th_edges)
    assert aeff.lo_thres_tev == 0.3 and aeff.hi_thres_tev == 50.0


def test_read_aeff_units():
    """cm^2 ('^' as in some files) and GeV axes are converted; no thresholds: None."""
    values = np.arange(1.0, 5 * 3 + 1).reshape(5, 3) * 1e8
    table, e_edges, _ = _aeff_table(values, "gadf", unit="cm^2", energy_unit="GeV")
    aeff = read_aeff(table, PATH)
    np.testing.assert_allclose(aeff.values_m2, values * 1e-4, rtol=1e-12)
    np.testing.assert_allclose(np.exp(aeff.energy.edges), e_edges * 1e-3, rtol=1e-12)
    assert aeff.lo_thres_tev is None and aeff.hi_thres_tev is None


def test_read_aeff_wrong_shape():
    table = make_table("AEFF", {
        "ENERG_LO": ("3D", np.array([[1.0, 2.0, 3.0]]), "TeV"),
        "ENERG_HI": ("3D", np.array([[2.0, 3.0, 4.0]]), "TeV"),
        "THETA_LO": ("2D", np.array([[0.0, 1.0]]), "deg"),
        "THETA_HI": ("2D", np.array([[1.0, 2.0]]), "deg"),
        "EFFAREA": ("5D", np.ones((1, 5)), "m2"),
    })
    with pytest.raises(DL3Error, match=f"{PATH}: HDU AEFF values have shape"):
        read_aeff(table, PATH)


def test_read_bkg_2d_and_alignment():
    n_e, n_th = 4, 3
    e_edges = np.geomspace(0.1, 100, n_e + 1)
    th_edges = np.array([0.0, 1.0, 2.0, 3.0])
    values = np.arange(1.0, n_e * n_th + 1).reshape(n_e, n_th)
    columns = {
        "ENERG_LO": (f"{n_e}D", e_edges[None, :-1], "TeV"),
        "ENERG_HI": (f"{n_e}D", e_edges[None, 1:], "TeV"),
        "THETA_LO": (f"{n_th}D", th_edges[None, :-1], "deg"),
        "THETA_HI": (f"{n_th}D", th_edges[None, 1:], "deg"),
        "BKG": (f"{values.size}D", values.T[None], "s-1 MeV-1 sr-1"),
    }
    bkg = read_bkg(make_table("BKG", columns), PATH)
    assert isinstance(bkg, Background) and not bkg.is_3d and len(bkg.spatial) == 1
    np.testing.assert_array_equal(bkg.values, values)
    np.testing.assert_array_equal(bkg.spatial[0].edges, th_edges)
    assert bkg.alignment == "RADEC"
    # a rate per TeV is converted to per MeV
    columns["BKG"] = (f"{values.size}D", values.T[None], "s-1 TeV-1 sr-1")
    np.testing.assert_allclose(read_bkg(make_table("BKG", columns), PATH).values,
                               values * 1e-6, rtol=1e-12)
    altaz = read_bkg(make_table("BKG", columns, header={"FOVALIGN": "ALTAZ"}), PATH)
    assert altaz.alignment == "ALTAZ"
    with pytest.raises(DL3Error, match="FOVALIGN='CAMERA'"):
        read_bkg(make_table("BKG", columns, header={"FOVALIGN": "CAMERA"}), PATH)


def test_non_finite_aeff_values_warned(caplog):
    values = np.ones((5, 3))
    values[1, 2] = np.nan
    values[3, 0] = np.inf
    table, _, _ = _aeff_table(values, "gadf")
    caplog.set_level(logging.WARNING)
    aeff = read_aeff(table, PATH)
    assert np.isnan(aeff.values_m2[1, 2])  # kept: the interpolation takes it as zero
    assert any("2 of the 15 effective-area values are not finite" in m
               for m in warnings_of(caplog))


# --------------------------------------------------------------------------------------------
# small helpers


def test_observation_times():
    axis = IrfAxis.from_lo_hi("offset", [0.0], [1.0], log=False)
    obs = Observation(
        obs_id=1, ra_deg=np.zeros(0), dec_deg=np.zeros(0), energy_tev=np.zeros(0),
        pointing_ra_deg=0.0, pointing_dec_deg=0.0,
        gti_start_s=np.array([0.0, 100.0, 1000.0]), gti_stop_s=np.array([60.0, 130.0, 1010.0]),
        deadc=0.8, time_ref_mjd=51910.0, time_scale="tt", location=None,
        aeff=EffectiveArea(axis, axis, np.ones((1, 1)), None, None),
        bkg=Background(axis, (axis,), np.ones((1, 1))),
    )
    assert obs.ontime_s == 100.0
    assert obs.livetime_s == pytest.approx(80.0, rel=1e-15)
    # GTIs in TT seconds since MJD 51910.00074287 (2001-01-01 UTC): TT reference 51910.0
    # is 64.184 s before it; a UTC reference differs from TT by 32.184 s + leap seconds
    gti = obs.gti_tt_s()
    np.testing.assert_allclose(gti[:, 0] + 64.184, [0.0, 100.0, 1000.0], atol=1e-6)
    np.testing.assert_allclose(gti[:, 1] - gti[:, 0], [60.0, 30.0, 10.0], atol=1e-9)
    obs.time_scale, obs.time_ref_mjd = "utc", 51910.0 + 7.428703703703703e-4 - 64.184 / 86400
    np.testing.assert_allclose(obs.gti_tt_s()[:, 0], [0.0, 100.0, 1000.0], atol=1e-6)
    obs.time_scale = "local"  # no TT: unknown
    assert obs.gti_tt_s() is None
    obs.time_scale, obs.time_ref_mjd = "tt", float("nan")
    assert obs.gti_tt_s() is None


def test_header_number():
    header = {"A": 3, "B": 2.5, "C": "text", "D": True}
    assert header_number(header, "A", None, PATH) == 3.0
    assert isinstance(header_number(header, "A", None, PATH), float)
    assert header_number(header, "B", None, PATH) == 2.5
    assert header_number(header, "MISSING", 7.0, PATH) == 7.0
    assert header_number(header, "MISSING", None, PATH) is None
    for key in ("C", "D"):
        with pytest.raises(DL3Error, match=f"{PATH}: header keyword {key} = .* is not a number"):
            header_number(header, key, None, PATH)


def test_one_line():
    assert one_line(DL3Error("first line\nsecond")) == "first line"
    assert one_line(ValueError("  bad value  ")) == "bad value"
    assert one_line(KeyError("x")) == "KeyError: 'x'"
    assert one_line(RuntimeError()) == "RuntimeError"


# --------------------------------------------------------------------------------------------
# energy dispersion


def magic_file():
    return gammapy_data() / "magic-rad-max" / "20131004_05029747_DL3_CrabNebula-W0.40+035.fits"


@pytest.mark.parametrize("source", ["hess-dr1", "hess-dr1-crab", "cta-1dc", "magic"])
def test_read_edisp_as_gammapy(source):
    """EDISP_2D of H.E.S.S. DR1 (offset nodes), CTA 1DC (ETRUE columns, offset bins) and MAGIC
    (POINT-LIKE, one offset bin) against gammapy's ``EnergyDispersion2D.read``."""
    import warnings

    from gammapy.irf import EnergyDispersion2D

    path, hdu = {"hess-dr1": (dr1_file(), "EDISP"), "hess-dr1-crab": (dr1_file(23523), "EDISP"),
                 "cta-1dc": (cta_irf_file(), "ENERGY DISPERSION"),
                 "magic": (magic_file(), "ENERGY DISPERSION")}[source]
    edisp = read_edisp(read_fits_tables(path)[hdu], path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = EnergyDispersion2D.read(path, hdu=hdu)
    assert isinstance(edisp, EnergyDispersion)
    assert edisp.values.shape == theirs.data.shape
    np.testing.assert_allclose(edisp.values, theirs.data, rtol=1e-6)
    _assert_axis_as_gammapy(edisp.energy, theirs.axes["energy_true"], "TeV")
    _assert_axis_as_gammapy(edisp.migra, theirs.axes["migra"], "")
    _assert_axis_as_gammapy(edisp.offset, theirs.axes["offset"], "deg")
    assert edisp.point_like == theirs.is_pointlike == (source == "magic")
    if source == "magic":
        assert len(edisp.offset.nodes) == 1


def _edisp_table(values, energy_prefix="ENERG", header=None):
    n_e, n_m, n_th = values.shape
    e = np.geomspace(0.1, 100, n_e + 1)
    m = np.linspace(0.2, 3.0, n_m + 1)
    th = np.linspace(0, 2.5, n_th + 1)
    return make_table("EDISP", {
        f"{energy_prefix}_LO": (f"{n_e}D", e[None, :-1], "TeV"),
        f"{energy_prefix}_HI": (f"{n_e}D", e[None, 1:], "TeV"),
        "MIGRA_LO": (f"{n_m}D", m[None, :-1], ""),
        "MIGRA_HI": (f"{n_m}D", m[None, 1:], ""),
        "THETA_LO": (f"{n_th}D", th[None, :-1], "deg"),
        "THETA_HI": (f"{n_th}D", th[None, 1:], "deg"),
        # GADF: (offset, migra, energy) in numpy order
        "MATRIX": (f"{values.size}D", values.T[None], ""),
    }, header=header), e, m, th


@pytest.mark.parametrize("prefix", ["ENERG", "ETRUE"])
def test_read_edisp_synthetic(prefix):
    values = np.random.default_rng(2).uniform(0, 3, (4, 6, 3))
    table, e, m, th = _edisp_table(values, prefix, header={"HDUCLAS3": "POINT-LIKE"})
    edisp = read_edisp(table, PATH)
    np.testing.assert_array_equal(edisp.values, values)
    np.testing.assert_allclose(np.exp(edisp.energy.edges), e, rtol=1e-12)
    np.testing.assert_allclose(edisp.migra.edges, m)
    np.testing.assert_allclose(edisp.offset.edges, th)
    assert edisp.point_like


def test_read_edisp_problems_name_the_file(caplog):
    values = np.ones((4, 6, 3))
    values[1, 2, 0] = np.nan
    table, *_ = _edisp_table(values)
    with caplog.at_level(logging.WARNING):
        edisp = read_edisp(table, PATH)
    assert not edisp.point_like
    assert any(f"{PATH} [EDISP]: 1 of the 72 energy-dispersion values are not finite" in w
               for w in warnings_of(caplog))
    bad = make_table("EDISP", {
        "ENERG_LO": ("3D", np.array([[1.0, 2.0, 3.0]]), "TeV"),
        "ENERG_HI": ("3D", np.array([[2.0, 3.0, 4.0]]), "TeV"),
        "MIGRA_LO": ("2D", np.array([[0.5, 1.0]]), ""),
        "MIGRA_HI": ("2D", np.array([[1.0, 1.5]]), ""),
        "THETA_LO": ("1D", np.array([[0.0]]), "deg"),
        "THETA_HI": ("1D", np.array([[1.0]]), "deg"),
        "MATRIX": ("5D", np.ones((1, 5)), ""),
    })
    with pytest.raises(DL3Error, match=f"{PATH}: HDU EDISP values have shape"):
        read_edisp(bad, PATH)
    no_migra = make_table("EDISP", {"ENERG_LO": ("1D", np.array([[1.0]]), "TeV")})
    with pytest.raises(DL3Error, match=f"{PATH}: HDU EDISP has no column"):
        read_edisp(no_migra, PATH)


# --------------------------------------------------------------------------------------------
# input consistency: GTIs against the EVENTS header and the events


HEADER = {"ONTIME": 1800.0, "LIVETIME": 1620.0, "TSTART": 1e8, "TSTOP": 1e8 + 1800.0}


def _gti_problem(start, stop, header=HEADER, deadc=0.9, times=None):
    return gti_problem(np.array(start, float), np.array(stop, float), dict(header), deadc,
                       times, "x [EVENTS]")


def test_consistent_gtis_pass():
    t0 = 1e8
    assert _gti_problem([t0], [t0 + 1800]) is None
    # two intervals that touch, given in any order
    assert _gti_problem([t0 + 900, t0], [t0 + 1800, t0 + 900]) is None
    # within the tolerances: 1e-3 of ONTIME; TSTOP written in single precision (CTA 1DC)
    assert _gti_problem([t0], [t0 + 1801.5]) is None
    assert _gti_problem([6.645024e8], [6.645042e8], {"ONTIME": 1800.0, "TSTART": 6.645024e8,
                                                      "TSTOP": float(np.float32(6.645042e8))},
                        deadc=1.0) is None
    # keywords that are absent are not checked
    assert _gti_problem([0.0], [10.0], {}) is None


@pytest.mark.parametrize("start, stop, header, words", [
    ([1e8, 1e8], [1e8 + 1800, 1e8 + 1800], HEADER, "GTI rows 0 and 1 overlap by 1800 s (a "
                                                   "duplicated row)"),
    ([1e8, 1e8 + 800], [1e8 + 1000, 1e8 + 1800], HEADER, "GTI rows 0 and 1 overlap by 200 s"),
    ([1e8 - 2048], [1e8 + 1800], HEADER, "the GTIs sum to 3848 s but ONTIME = 1800 s"),
    ([-1e300], [1e8], HEADER, "sum to 1e+300 s but ONTIME"),
    ([1e8], [1e8 + 1800], dict(HEADER, LIVETIME=3240.0), "= 1620 s, but LIVETIME = 3240 s"),
    ([1e8 + 5000], [1e8 + 6800], HEADER, "outside TSTART = 100000000.0 to TSTOP"),
    ([1e8], [1e8 + 1800], dict(HEADER, ONTIME=float("nan")), "ONTIME = nan is not a finite"),
    ([1e8], [1e8 + 1800], dict(HEADER, TSTART=float("inf")), "TSTART = inf is not a finite"),
])
def test_inconsistent_gtis_are_named(start, stop, header, words):
    assert words in _gti_problem(start, stop, header)


def test_gtis_much_longer_than_the_events_span():
    times = np.linspace(1e8, 1e8 + 1000, 500)
    start, stop = [1e8], [1e8 + 1800]
    assert "more than 1.5 times the 1000 s its 500 events span" in _gti_problem(
        start, stop, {}, times=times)
    assert _gti_problem(start, stop, {}, times=np.linspace(1e8, 1e8 + 1200, 500)) is None
    # too few events to say anything; times outside the GTIs are not an inconsistency
    assert _gti_problem(start, stop, {}, times=times[:99]) is None
    assert _gti_problem(start, stop, {}, times=np.linspace(1e8, 1e8 + 1800, 500) + 1e7) is None


def test_impossible_events():
    ra = np.array([10.0, np.nan, 10.0, 10.0, 10.0, -400.0, 10.0])
    dec = np.array([0.0, 0.0, 200.0, -90.0, 0.0, 0.0, 0.0])
    energy = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, np.inf])
    assert impossible_events(ra, dec, energy).tolist() == [False, True, True, False, True,
                                                           False, True]


def test_event_times_and_vector_columns():
    table = make_table("EVENTS", {
        "RA": ("2E", np.ones((3, 2), np.float32), "deg"),
        "DEC": ("E", np.zeros(3, np.float32), "deg"),
        "ENERGY": ("E", np.ones(3, np.float32), "TeV"),
        "TIME": ("D", np.array([1.0, 2.0, 3.0]), "ms"),
    })
    assert read_event_times(table, PATH).tolist() == [1e-3, 2e-3, 3e-3]
    with pytest.raises(DL3Error, match="column RA holds 2 values per row, not one"):
        read_events(table, PATH)
    assert read_event_times(events_table(), PATH) is None


def test_missing_column_key_error_names_it():
    with pytest.raises(KeyError, match="HDU 'EVENTS' has no column 'TIME' \\(it has RA, DEC, "
                                       "ENERGY\\)"):
        events_table().column("TIME")
