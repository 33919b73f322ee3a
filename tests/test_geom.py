"""Geometry: gammapy's WCS conventions, pixel solid angles, aligned cutouts."""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from ringbg.geom import (
    Geom,
    angular_separation_deg,
    energy_edges_tev,
    offset_frame_lonlat,
)


def test_tutorial_geometry():
    g = Geom.create(228.32, -59.08, "icrs", 3.0, 0.02, "CAR", energy_edges_tev(0.5, 10, 10))
    assert g.shape == (150, 150)
    assert tuple(g.wcs.wcs.crpix) == (75.5, 75.5)
    assert tuple(g.wcs.wcs.cdelt) == (-0.02, 0.02)
    assert g.image_header()["LATPOLE"] == pytest.approx(30.92)
    # solid angles from ALGORITHMS.md (gammapy's corner formula)
    assert g.solid_angle_sr[75, 75] == pytest.approx(1.2184695e-7, rel=1e-7)
    assert g.solid_angle_sr[0, 0] == pytest.approx(1.2180576e-7, rel=1e-7)
    assert g.energy_edges_tev[0] == pytest.approx(0.5) and g.energy_edges_tev[-1] == pytest.approx(10)


@pytest.mark.parametrize("projection", ["CAR", "TAN", "AIT"])
@pytest.mark.parametrize("frame", ["icrs", "galactic"])
def test_pixel_centres_match_astropy(projection, frame):
    g = Geom.create(10.0, 40.0, frame, (4.0, 2.0), 0.05, projection, [1, 10])
    assert g.shape == (40, 80)
    lon, lat = g.lonlat_deg
    sky = g.wcs.pixel_to_world(np.arange(80)[None, :].repeat(40, 0),
                               np.arange(40)[:, None].repeat(80, 1))
    assert np.allclose(lon, sky.spherical.lon.deg) and np.allclose(lat, sky.spherical.lat.deg)
    ra, dec = g.radec_deg
    icrs = sky.icrs
    assert np.allclose(ra, icrs.ra.deg) and np.allclose(dec, icrs.dec.deg)
    # solid angles add up to the map area
    assert g.solid_angle_sr.sum() == pytest.approx(np.radians(4.0) * np.radians(2.0), rel=2e-3)


def test_cutout_slices_trim():
    g = Geom.create(0.0, 0.0, "icrs", 3.0, 0.02, "CAR", [1, 10])
    sy, sx = g.cutout_slices(0.0, 0.0, 1.0)
    assert (sy.stop - sy.start, sx.stop - sx.start) == (50, 50)
    sy, sx = g.cutout_slices(1.4, 0.0, 1.0)  # near the left edge (RA grows to the left)
    assert sx.start == 0 and sx.stop < 50 and sy.stop - sy.start == 50
    assert g.cutout_slices(30.0, 0.0, 1.0) is None


def test_separation_and_offset_frame():
    a = SkyCoord(228.6, -58.8, unit="deg")
    b = SkyCoord(228.3, -59.1, unit="deg")
    assert angular_separation_deg(228.6, -58.8, 228.3, -59.1) == pytest.approx(
        a.separation(b).deg, abs=1e-12)
    off = b.transform_to(a.skyoffset_frame())
    lon, lat = offset_frame_lonlat(228.3, -59.1, 228.6, -58.8)
    assert lon == pytest.approx(off.lon.wrap_at("180d").deg, abs=1e-10)
    assert lat == pytest.approx(off.lat.deg, abs=1e-10)


@pytest.mark.parametrize("frame", ["icrs", "galactic"])
def test_pointing_frame_matches_offset_frame_and_separation(frame):
    g = Geom.create(350.0, 88.0 if frame == "icrs" else -5.0, frame, 6.0, 0.1, "TAN", [1, 10])
    ra0, dec0 = (a[20, 35] + d for a, d in zip(g.radec_deg, (0.013, -0.021)))
    slices = g.cutout_slices(ra0, dec0, 4.0)
    lon, lat, offset = g.pointing_frame(slices, ra0, dec0)
    ra, dec = (a[slices[0], slices[1]] for a in g.radec_deg)
    ref_lon, ref_lat = offset_frame_lonlat(ra, dec, ra0, dec0)
    assert lon.shape == ra.shape
    assert np.allclose(lon, ref_lon, rtol=0, atol=1e-9)
    assert np.allclose(lat, ref_lat, rtol=0, atol=1e-9)
    assert np.allclose(offset, angular_separation_deg(ra, dec, ra0, dec0), rtol=0, atol=1e-9)
    # and against astropy's SkyOffsetFrame
    centre = SkyCoord(ra0, dec0, unit="deg")
    off = SkyCoord(ra.ravel(), dec.ravel(), unit="deg").transform_to(centre.skyoffset_frame())
    assert np.allclose(lon.ravel(), off.lon.wrap_at("180d").deg, atol=1e-9)
    assert np.allclose(lat.ravel(), off.lat.deg, atol=1e-9)


@pytest.mark.parametrize("frames", [("icrs", "galactic"), ("galactic", "icrs")])
def test_to_frame_is_astropys_transform(frames):
    """The fixed rotation gives astropy's coordinates to 1e-11 deg, for float64 values and for
    float32 ones (gammapy's event lists, with their float32 rounding); scalars stay scalars."""
    from astropy.coordinates import SkyCoord

    from ringbg.geom import to_frame

    rng = np.random.default_rng(5)
    lon = rng.uniform(0, 360, 10000)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 10000)))
    lon[:3], lat[:3] = [0.0, 359.9999999, 120.0], [90.0, -89.99999, 0.0]
    ours = to_frame(lon, lat, *frames)
    theirs = SkyCoord(lon, lat, unit="deg", frame=frames[0]).transform_to(frames[1]).spherical
    dlon = (ours[0] - theirs.lon.deg + 180) % 360 - 180
    assert np.all(np.abs(dlon * np.cos(np.radians(theirs.lat.deg))) < 1e-12)
    assert np.all(np.abs(ours[1] - theirs.lat.deg) < 1e-12)
    assert np.all((ours[0] >= 0) & (ours[0] < 360))
    f32 = (lon.astype(np.float32), lat.astype(np.float32))
    theirs32 = SkyCoord(*f32, unit="deg", frame=frames[0]).transform_to(frames[1]).spherical
    ours32 = to_frame(*f32, *frames)
    sep = angular_separation_deg(*ours32, theirs32.lon.deg, theirs32.lat.deg)
    assert sep.max() < 1e-11  # deg: 5e-10 of a 0.02 deg pixel
    # (the float32 rounding matters: converted in float64 they would be 1e-5 deg away)
    wide = to_frame(*(v.astype(float) for v in f32), *frames)
    assert angular_separation_deg(*wide, *ours32).max() > 1e-7
    # negative longitudes (CTA 1DC event lists) are wrapped in float32 as astropy does
    neg = (np.float32(-92.63541) + np.zeros(3, np.float32), np.float32(-30.5) + f32[1][:3] * 0)
    theirs_neg = SkyCoord(*neg, unit="deg", frame=frames[0]).transform_to(frames[1]).spherical
    assert angular_separation_deg(*to_frame(*neg, *frames), theirs_neg.lon.deg,
                                  theirs_neg.lat.deg).max() < 1e-11
    scalar = to_frame(83.633, 22.014, *frames)
    assert all(np.ndim(v) == 0 for v in scalar)


def test_unpickled_geometry_is_shared_by_key():
    """A worker unpickles each task's geometry: it gets one object per geometry, with the
    same WCS, shape, energy edges and frame (its cached pixel coordinates are reused)."""
    import pickle

    import ringbg.geom as geom_module

    geom = Geom.create(266.4, -28.9, "galactic", (3.0, 2.0), 0.05, "TAN", [1.0, 3.0, 10.0])
    geom_module._UNPICKLED.clear()
    first = pickle.loads(pickle.dumps(geom))
    second = pickle.loads(pickle.dumps(geom))
    assert first is second and first is not geom
    assert first.key == geom.key and first.shape == geom.shape and first.frame == "galactic"
    assert first.wcs.to_header() == geom.wcs.to_header()
    np.testing.assert_array_equal(first.energy_edges_tev, geom.energy_edges_tev)
    np.testing.assert_array_equal(first.lonlat_deg[0], geom.lonlat_deg[0])
    other = Geom.create(266.4, -28.9, "galactic", (3.0, 2.0), 0.05, "CAR", [1.0, 3.0, 10.0])
    assert pickle.loads(pickle.dumps(other)) is not first
