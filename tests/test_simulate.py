"""Tests of ringbg.simulate: the synthetic GADF data store.

The physics checked: the simulated event lists are Poisson draws whose expectation is what the
IRFs in the same files predict, as gammapy 2.1 evaluates them (background IRF x observation time,
flux x effective area x live time), with the background oriented as gammapy's RADEC
field-of-view frame says, point-source events spread as the PSF table says, and energies
following the input spectra.
"""

import hashlib
import time
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table

from ringbg.simulate import (
    DEFAULT_CENTER,
    demo_sources,
    simulate_datastore,
    survey_pointings,
    wobble_pointings,
)

CENTER = DEFAULT_CENTER
GRADIENT = 0.4  # ln(bkg rate) slope along DETX [1/deg]: makes the FoV orientation testable
BRIGHT = {"lon_deg": CENTER[0], "lat_deg": CENTER[1], "frame": "icrs", "sigma_deg": 0.0,
          "amplitude": 3e-11, "index": 2.4}
EXTENDED_OFFSET_DEG = 1.2
EXTENDED_SIGMA_DEG = 0.3


def _extended_source():
    c = SkyCoord(*CENTER, unit="deg").directional_offset_by(
        180 * u.deg, EXTENDED_OFFSET_DEG * u.deg)
    return {"lon_deg": c.ra.deg, "lat_deg": c.dec.deg, "frame": "icrs",
            "sigma_deg": EXTENDED_SIGMA_DEG, "amplitude": 3e-11, "index": 2.4}


@pytest.fixture(scope="module")
def store3d(tmp_path_factory):
    """4 wobble observations, BKG_3D with a gradient, a bright point and an extended source."""
    path = tmp_path_factory.mktemp("sim3d")
    t0 = time.perf_counter()
    simulate_datastore(path, n_obs=4, seed=42, center=CENTER, sources=[BRIGHT, _extended_source()],
                       bkg_gradient_per_deg=GRADIENT, first_obs_id=100)
    return path, time.perf_counter() - t0


@pytest.fixture(scope="module")
def store2d(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim2d")
    simulate_datastore(path, n_obs=4, seed=7, center=CENTER, sources=[BRIGHT], bkg_format="BKG_2D",
                       gzip=False)
    return path


def _events(path, obs_id, gz=True):
    name = f"obs_{obs_id:06d}.fits" + (".gz" if gz else "")
    return Table.read(path / "data" / name, hdu="EVENTS")


def _datastore(path):
    from gammapy.data import DataStore

    return DataStore.from_dir(path)


def _digests(path):
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*.fits*"))}


# ---------------------------------------------------------------------------------------------
# Layout, metadata, reproducibility
# ---------------------------------------------------------------------------------------------
def test_file_layout(store3d):
    path, _ = store3d
    assert (path / "obs-index.fits.gz").is_file()
    assert (path / "hdu-index.fits.gz").is_file()
    obs = Table.read(path / "obs-index.fits.gz")
    hdus = Table.read(path / "hdu-index.fits.gz")
    assert list(obs["OBS_ID"]) == [100, 101, 102, 103]
    for col in ["OBS_ID", "RA_PNT", "DEC_PNT", "ZEN_PNT", "ALT_PNT", "AZ_PNT", "ONTIME",
                "LIVETIME", "DEADC", "TSTART", "TSTOP", "OBJECT", "N_TELS", "EVENT_COUNT"]:
        assert col in obs.colnames
    header = fits.getheader(path / "obs-index.fits.gz", "OBS_INDEX")
    assert header["HDUCLASS"] == "GADF" and header["HDUCLAS2"] == "OBS"
    assert list(hdus.colnames[:6]) == ["OBS_ID", "HDU_TYPE", "HDU_CLASS", "FILE_DIR", "FILE_NAME",
                                       "HDU_NAME"]
    assert len(hdus) == 6 * len(obs)
    expected = {("events", "events"), ("gti", "gti"), ("aeff", "aeff_2d"), ("edisp", "edisp_2d"),
                ("psf", "psf_table"), ("bkg", "bkg_3d")}
    for row in obs:
        rows = hdus[hdus["OBS_ID"] == row["OBS_ID"]]
        assert {(r["HDU_TYPE"], r["HDU_CLASS"]) for r in rows} == expected
        file = path / rows["FILE_DIR"][0] / rows["FILE_NAME"][0]
        assert file.name == f"obs_{row['OBS_ID']:06d}.fits.gz"
        with fits.open(file) as hdul:
            for r in rows:
                assert r["HDU_NAME"] in hdul
            ev = hdul["EVENTS"].header
            # the gammapy orientation quirk for old H.E.S.S. files must not trigger
            assert ev["CREATOR"] == "ringbg simulate"
            assert ev["HDUVERS"] != "0.2"
            assert hdul["BKG"].header["FOVALIGN"] == "RADEC"
            assert 0 < hdul["AEFF"].header["LO_THRES"] < 1 < hdul["AEFF"].header["HI_THRES"]
            for key in ("RA_PNT", "DEC_PNT", "ONTIME", "LIVETIME", "DEADC", "TSTART", "TSTOP",
                        "MJDREFI", "MJDREFF", "TIMESYS", "OBS_ID", "OBJECT", "GEOLON", "GEOLAT",
                        "ALTITUDE"):
                assert key in ev
            assert ev["RA_PNT"] == pytest.approx(row["RA_PNT"], abs=1e-9)
            assert ev["LIVETIME"] == pytest.approx(ev["ONTIME"] * ev["DEADC"])
            assert ev["LIVETIME"] == pytest.approx(1800.0)
            gti = hdul["GTI"].data
            assert gti["STOP"].sum() - gti["START"].sum() == ev["ONTIME"]
            data = hdul["EVENTS"].data
            assert len(data) == row["EVENT_COUNT"]
            assert np.all(np.diff(data["TIME"]) >= 0)
            assert data["TIME"].min() >= ev["TSTART"] and data["TIME"].max() <= ev["TSTOP"]


def test_observations_are_realistic(store3d):
    """~30-min runs one after the other, wobbles of 0.7 deg, sensible zenith angles."""
    path, _ = store3d
    obs = Table.read(path / "obs-index.fits.gz")
    assert np.all(obs["TSTART"][1:] >= obs["TSTOP"][:-1])
    assert np.all((obs["ONTIME"] > 1800) & (obs["ONTIME"] < 2100))
    assert np.allclose(obs["ZEN_PNT"] + obs["ALT_PNT"], 90, atol=1e-4)
    assert np.all((obs["ZEN_PNT"] > 30) & (obs["ZEN_PNT"] < 45))  # dec -59 from the H.E.S.S. site
    pointings = SkyCoord(obs["RA_PNT"], obs["DEC_PNT"], unit="deg")
    sep = pointings.separation(SkyCoord(*CENTER, unit="deg"))
    assert np.allclose(sep.deg, 0.7)


def test_reproducible(tmp_path):
    kwargs = dict(n_obs=2, center=CENTER, sources=demo_sources(CENTER))
    a = simulate_datastore(tmp_path / "a", seed=3, **kwargs)
    b = simulate_datastore(tmp_path / "b", seed=3, **kwargs)
    c = simulate_datastore(tmp_path / "c", seed=4, **kwargs)
    assert _digests(a) == _digests(b)
    ev_a, ev_c = _events(a, 1), _events(c, 1)
    assert len(ev_a) != len(ev_c) or not np.array_equal(ev_a["RA"], ev_c["RA"])


def test_refuses_to_overwrite(tmp_path):
    simulate_datastore(tmp_path, n_obs=1)
    with pytest.raises(FileExistsError, match="obs-index"):
        simulate_datastore(tmp_path, n_obs=1)
    simulate_datastore(tmp_path, n_obs=1, overwrite=True)


@pytest.mark.parametrize("kwargs, match", [
    ({"bkg_format": "BKG_4D"}, "bkg_format"),
    ({"sources": [{"lon_deg": 1.0, "lat_deg": 2.0, "index": 2}]}, "amplitude"),
    ({"sources": [{"lon_deg": 1.0, "lat_deg": 2.0, "amplitude": 1e-12, "index": 2,
                   "sigma": 0.1}]}, "sigma"),
    ({"livetime_s": 0}, "livetime_s"),
    ({"bkg_format": "BKG_2D", "bkg_gradient_per_deg": 0.1}, "BKG_3D"),
])
def test_bad_input(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_datastore(tmp_path, n_obs=1, **kwargs)


def test_wobble_pointings():
    p = wobble_pointings((83.63, 22.01), 4, wobble_deg=0.5)
    c = SkyCoord(83.63, 22.01, unit="deg")
    pc = SkyCoord([x[0] for x in p], [x[1] for x in p], unit="deg")
    assert np.allclose(pc.separation(c).deg, 0.5)
    assert np.allclose(c.position_angle(pc).deg, [0, 180, 90, 270])
    g = wobble_pointings((0.0, 0.0), 2, wobble_deg=0.7, frame="galactic")
    assert np.allclose(g, [(0.0, 0.7), (0.0, -0.7)])


def test_survey_pointings(tmp_path):
    p = np.array(survey_pointings(350, 370, 5, b_deg=0.2, b_offsets_deg=(-0.5, 0.5)))
    assert p[:, 0] == pytest.approx([350, 355, 0, 5, 10])
    assert p[:, 1] == pytest.approx([-0.3, 0.7, -0.3, 0.7, -0.3])
    path = simulate_datastore(tmp_path, pointings=list(map(tuple, p)), frame="galactic",
                              gzip=False, livetime_s=60.0)
    obs = Table.read(path / "obs-index.fits.gz")
    assert len(obs) == 5
    gal = SkyCoord(obs["RA_PNT"], obs["DEC_PNT"], unit="deg").galactic
    assert np.allclose(gal.l.wrap_at(180 * u.deg).deg, [-10, -5, 0, 5, 10], atol=1e-8)
    assert np.allclose(obs["GLAT_PNT"], p[:, 1], atol=1e-8)
    assert (path / "data" / "obs_000001.fits").is_file()


def test_demo_sources():
    point, gauss = demo_sources(CENTER)
    c = SkyCoord(*CENTER, unit="deg")
    assert point["sigma_deg"] == 0
    assert SkyCoord(point["lon_deg"], point["lat_deg"], unit="deg").separation(c).deg < 1e-9
    assert gauss["sigma_deg"] == 0.2
    assert SkyCoord(gauss["lon_deg"], gauss["lat_deg"], unit="deg").separation(c).deg == \
        pytest.approx(1.0)
    assert point["amplitude"] > gauss["amplitude"] > 0


# ---------------------------------------------------------------------------------------------
# gammapy reads the store; counts match what the IRFs predict
# ---------------------------------------------------------------------------------------------
def test_gammapy_makes_maps(store3d):
    """gammapy 2.1 reads the store and MapDatasetMaker makes every map for one observation."""
    from gammapy.datasets import MapDataset
    from gammapy.makers import MapDatasetMaker, SafeMaskMaker
    from gammapy.maps import MapAxis, WcsGeom

    path, _ = store3d
    ds = _datastore(path)
    assert list(ds.obs_table["OBS_ID"]) == [100, 101, 102, 103]
    obs = ds.obs(100)
    energy = MapAxis.from_energy_bounds(0.5, 10, 5, unit="TeV")
    energy_true = MapAxis.from_energy_bounds(0.3, 20, 8, unit="TeV", name="energy_true")
    geom = WcsGeom.create(skydir=CENTER, width=4, binsz=0.05, frame="icrs", axes=[energy])
    empty = MapDataset.create(geom, energy_axis_true=energy_true, binsz_irf=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = MapDatasetMaker().run(empty, obs)
        dataset = SafeMaskMaker(methods=["aeff-default"]).run(dataset, obs)
    assert dataset.counts.data.sum() > 1000
    assert np.all(np.isfinite(dataset.background.data))
    assert dataset.background.data.sum() > 1000
    # exposure: effective area of ~4e5 m2 times the live time on axis at high energy
    assert dataset.exposure.data.max() == pytest.approx(4.8e5 * 1800, rel=0.1)
    assert dataset.psf is not None and dataset.edisp is not None
    position = SkyCoord(*CENTER, unit="deg")
    psf = dataset.psf.get_psf_kernel(geom.as_energy_true, position=position)
    assert np.all(np.isfinite(psf.psf_kernel_map.data))
    edisp = dataset.edisp.get_edisp_kernel(position=position, energy_axis=energy)
    # the energy dispersion is ~diagonal: most of each true-energy bin lands in its reco bin
    assert np.all(edisp.pdf_matrix.sum(axis=1)[2:-2] > 0.9)
    assert dataset.mask_safe.data[0].all()  # 0.5 TeV is above LO_THRES here
    # counts in the map: the events inside the geometry
    ev = obs.events.select_energy([0.5, 10] * u.TeV)
    inside = geom.to_image().contains(ev.radec)
    assert dataset.counts.data.sum() == inside.sum()


@pytest.mark.parametrize("fmt", ["BKG_3D", "BKG_2D"])
def test_background_counts_match_irf(store3d, store2d, fmt):
    """Background events (MC_ID 0) are Poisson with the mean gammapy predicts from the BKG IRF.

    gammapy's MapDatasetMaker integrates the IRF x observation time over a CAR map centred on
    the pointing; its pixel rows and columns are then lines of constant FoV lat / lon, so a
    6 deg (BKG_3D) or 6.4 deg (BKG_2D, whose offset axis gammapy pads by one bin) map holds the
    whole IRF. With the BKG_3D gradient, the counts must also follow the predicted east / west
    asymmetry: a flipped DETX would swap the halves.
    """
    from gammapy.datasets import MapDataset
    from gammapy.makers import MapDatasetMaker
    from gammapy.maps import MapAxis, WcsGeom

    path = store3d[0] if fmt == "BKG_3D" else store2d
    width = 6.0 if fmt == "BKG_3D" else 6.4
    ds = _datastore(path)
    axis = MapAxis.from_energy_bounds(0.1, 100, 150, unit="TeV")
    n_tot, mu_tot = 0, 0.0
    for obs in ds.get_observations():
        assert type(obs.bkg).__name__ == {"BKG_3D": "Background3D", "BKG_2D": "Background2D"}[fmt]
        pointing = obs.get_pointing_icrs(obs.tmid)
        geom = WcsGeom.create(skydir=pointing, width=width, binsz=0.05, frame="icrs", axes=[axis])
        bkg = MapDatasetMaker(selection=["background"]).run(MapDataset.create(geom), obs)
        image = bkg.background.data.sum(axis=0)
        table = obs.events.table
        ev = table[table["MC_ID"] == 0]
        mu, n = image.sum(), len(ev)
        n_tot, mu_tot = n_tot + n, mu_tot + mu
        assert abs(n - mu) < 4 * np.sqrt(mu)
        if fmt == "BKG_3D":
            x, _ = geom.to_image().coord_to_pix(SkyCoord(ev["RA"], ev["DEC"], unit="deg"))
            half = image.shape[1] // 2
            east_mu, east_n = image[:, :half].sum(), np.sum(x < half - 0.5)
            assert east_mu < 0.75 * (mu - east_mu)  # the gradient is strong
            assert abs(east_n - east_mu) < 4 * np.sqrt(east_mu)
    assert abs(n_tot - mu_tot) < 4 * np.sqrt(mu_tot)


def test_background_spectrum(store3d):
    """Above the threshold the background follows its E^-2.7 power law (maximum likelihood)."""
    path, _ = store3d
    energies = np.concatenate([
        np.asarray(t["ENERGY"][t["MC_ID"] == 0], dtype=float)
        for t in (_events(path, i) for i in range(100, 104))])
    e_min = 5.0
    e = energies[energies > e_min]
    index = 1 + e.size / np.log(e / e_min).sum()
    assert abs(index - 2.7) < 4 * (index - 1) / np.sqrt(e.size)


def _expected_source_counts(obs, src, e_min=0.1, e_max=100.0):
    """LIVETIME * integral of dN/dE * Aeff(E, offset of the source) over true energy."""
    e = np.geomspace(e_min, e_max, 4001)
    offset = SkyCoord(src["lon_deg"], src["lat_deg"], unit="deg").separation(
        obs.get_pointing_icrs(obs.tmid))
    aeff = obs.aeff.evaluate(energy_true=e * u.TeV, offset=offset).to_value("cm2")
    flux = src["amplitude"] * e ** -src["index"]
    return obs.observation_live_time_duration.to_value("s") * np.trapezoid(flux * aeff, e)


@pytest.mark.gammapy
def test_point_source_counts_and_psf(store3d):
    """Point-source events (MC_ID 1): Poisson with mean flux x Aeff x livetime; centred on the
    source; their 68 % containment radius is the PSF table's."""
    path, _ = store3d
    ds = _datastore(path)
    src = SkyCoord(*CENTER, unit="deg")
    n_tot, mu_tot, offsets = 0, 0.0, []
    for obs in ds.get_observations():
        table = obs.events.table
        ev = table[table["MC_ID"] == 1]
        n, mu = len(ev), _expected_source_counts(obs, BRIGHT)
        n_tot, mu_tot = n_tot + n, mu_tot + mu
        sel = (ev["ENERGY"] > 1.0) & (ev["ENERGY"] < 2.0)
        offsets.append(SkyCoord(ev["RA"][sel], ev["DEC"][sel], unit="deg").separation(src).deg)
    assert mu_tot > 1000
    assert abs(n_tot - mu_tot) < 3 * np.sqrt(mu_tot)
    r = np.concatenate(offsets)
    r68 = np.quantile(r, 0.68)
    r68_irf = obs.psf.containment_radius(0.68, energy_true=1.4 * u.TeV, offset=0.7 * u.deg)
    assert r68 == pytest.approx(r68_irf.to_value("deg"), rel=0.15)
    # centred: the mean of the offset vectors is ~0
    ev_all = [t[t["MC_ID"] == 1] for t in (o.events.table for o in ds.get_observations())]
    ra = np.concatenate([e["RA"] for e in ev_all])
    dec = np.concatenate([e["DEC"] for e in ev_all])
    fov = SkyCoord(ra, dec, unit="deg").transform_to(src.skyoffset_frame())
    assert abs(np.mean(fov.lon.deg)) < 0.01 and abs(np.mean(fov.lat.deg)) < 0.01


def test_source_spectrum_and_edisp(store3d):
    """Where the effective area is ~flat, reconstructed energies keep the source index."""
    path, _ = store3d
    energies = np.concatenate([
        np.asarray(t["ENERGY"][t["MC_ID"] == 1], dtype=float)
        for t in (_events(path, i) for i in range(100, 104))])
    e_min = 3.0
    e = energies[energies > e_min]
    index = 1 + e.size / np.log(e / e_min).sum()
    # the effective area still rises by ~5 % from 3 to 30 TeV, hardening the index by < 0.05
    assert abs(index - BRIGHT["index"]) < 0.05 + 4 * (index - 1) / np.sqrt(e.size)


@pytest.mark.gammapy
def test_extended_source(store3d):
    """A Gaussian source: its events spread as sqrt(sigma^2 + sigma_psf^2) around its centre,
    in number as the flux x Aeff x livetime averaged over the source."""
    path, _ = store3d
    ds = _datastore(path)
    src = _extended_source()
    centre = SkyCoord(src["lon_deg"], src["lat_deg"], unit="deg")
    n_tot, mu_tot, lon, lat = 0, 0.0, [], []
    # expected counts: average Aeff over the Gaussian with a fixed quadrature sample
    rng = np.random.default_rng(0)
    d = rng.normal(0, EXTENDED_SIGMA_DEG, size=(2, 400))
    samples = SkyCoord(d[0], d[1], unit="deg", frame=centre.skyoffset_frame()).icrs
    for obs in ds.get_observations():
        table = obs.events.table
        ev = table[table["MC_ID"] == 2]
        n_tot += len(ev)
        mu_tot += np.mean([_expected_source_counts(obs, {**src, "lon_deg": s.ra.deg,
                                                         "lat_deg": s.dec.deg})
                           for s in samples[:: 8]])
        fov = SkyCoord(ev["RA"], ev["DEC"], unit="deg").transform_to(centre.skyoffset_frame())
        lon.append(fov.lon.deg)
        lat.append(fov.lat.deg)
    assert abs(n_tot - mu_tot) < 3 * np.sqrt(mu_tot) + 0.02 * mu_tot  # 2 %: quadrature error
    lon, lat = np.concatenate(lon), np.concatenate(lat)
    width = np.sqrt(0.5 * np.mean(lon**2 + lat**2))
    assert 0.97 * EXTENDED_SIGMA_DEG < width < 1.05 * np.hypot(EXTENDED_SIGMA_DEG, 0.1)


@pytest.fixture(scope="module")
def point_like_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("pointlike")
    simulate_datastore(path, n_obs=2, seed=3, sources=demo_sources(), bkg_irf=False,
                       point_like=True)
    return path


def test_point_like_store_without_background_irf(point_like_store):
    """A MAGIC-like store: no BKG HDU, RAD_MAX_2D, point-like AEFF/EDISP, no PSF; gammapy
    reads it; the point-like area is the full one times the fraction of a Gaussian PSF
    inside RAD_MAX."""
    from gammapy.data import DataStore

    from ringbg.simulate.instrument import _aeff_table_m2, _psf_sigma_deg, _rad_max_deg

    index = Table.read(point_like_store / "hdu-index.fits.gz")
    types = {str(t).strip() for t in index["HDU_TYPE"]}
    assert types == {"events", "gti", "aeff", "edisp", "rad_max"}
    ds = DataStore.from_dir(point_like_store)
    obs = ds.get_observations(required_irf="point-like")[0]
    assert obs.aeff.is_pointlike and obs.rad_max is not None
    with fits.open(next((point_like_store / "data").glob("*.fits*"))) as hdul:
        aeff = hdul["AEFF"]
        assert aeff.header["HDUCLAS3"] == "POINT-LIKE"
        assert hdul["EDISP"].header["HDUCLAS3"] == "POINT-LIKE"
        assert "BKG" not in hdul and "PSF" not in hdul
        e = np.sqrt(aeff.data["ENERG_LO"][0] * aeff.data["ENERG_HI"][0])
        o = 0.5 * (aeff.data["THETA_LO"][0] + aeff.data["THETA_HI"][0])
        full = _aeff_table_m2(float(aeff.header["ZENITH"]))  # (offset, energy)
        r, s = _rad_max_deg(e)[None, :], _psf_sigma_deg(e[None, :], o[:, None])
        np.testing.assert_allclose(aeff.data["EFFAREA"][0],
                                   full * (1 - np.exp(-0.5 * (r / s) ** 2)), rtol=1e-6)
        rad = hdul["RAD_MAX"].data["RAD_MAX"][0]
        assert 0.1 <= rad.min() and rad.max() <= 0.25
