"""Exclusion masks from circles, DS9 region files and FITS masks, as gammapy builds them."""

import numpy as np
import pytest
from astropy.io import fits

from ringbg.exclusion import (
    circles_mask,
    dilate,
    exclusion_mask,
    fits_mask,
    region_file_mask,
)
from ringbg.geom import Geom


def _geom(frame="icrs"):
    return Geom.create(228.32, -59.08, frame, 3.0, 0.02, "CAR", [0.5, 10])


def test_circle_as_gammapy_tutorial():
    # 0.4 deg at 0.02 deg/pixel around the map centre: 1264 pixels (ALGORITHMS.md)
    mask = circles_mask(_geom(), [(228.32, -59.08, "icrs", 0.4)])
    assert (~mask).sum() == 1264
    assert not mask[75, 75] and mask[0, 0]


def test_galactic_circle_on_icrs_map():
    from astropy.coordinates import SkyCoord

    gal = SkyCoord(228.32, -59.08, unit="deg").galactic
    mask = circles_mask(_geom(), [(gal.l.deg, gal.b.deg, "galactic", 0.4)])
    assert (~mask).sum() == 1264


def test_ds9_file_equals_circle(tmp_path):
    path = tmp_path / "excl.reg"
    path.write_text('# Region file format: DS9\nicrs\ncircle(228.32,-59.08,1440")\n'
                    "circle(227.5,-58.5,0.2d)\n")
    mask = region_file_mask(_geom(), path)
    expected = circles_mask(_geom(), [(228.32, -59.08, "icrs", 0.4), (227.5, -58.5, "icrs", 0.2)])
    assert np.array_equal(mask, expected)


def test_fits_mask_round_trip(tmp_path):
    g = _geom()
    mask = circles_mask(g, [(228.0, -59.3, "icrs", 0.3)])
    path = tmp_path / "mask.fits"
    fits.PrimaryHDU(mask.astype(np.uint8), header=g.image_header()).writeto(path)
    assert np.array_equal(fits_mask(g, path), mask)
    # on another geometry (galactic, other binning) the lookup is nearest-pixel
    other = Geom.create(320.33, -1.19, "galactic", 2.0, 0.05, "TAN", [0.5, 10])
    looked_up = fits_mask(other, path)
    assert 0 < (~looked_up).sum() < (~mask).sum()


def _mask_of(geom, circles, files=(), catalogs=()):
    """`exclusion_mask` of a config's exclusion section with these circles and files."""
    from ringbg.config import Exclusion

    section = Exclusion(regions=[{"frame": f, "lon": lon, "lat": lat, "radius": r}
                                 for lon, lat, f, r in circles],
                        files=[str(p) for p in files], catalogs=list(catalogs))
    mask, _ = exclusion_mask(geom, section)
    return mask


def test_combined_and_dilated(tmp_path):
    g = _geom()
    path = tmp_path / "a.reg"
    path.write_text("icrs\ncircle(227.5,-58.5,0.2d)\n")
    mask = _mask_of(g, [(228.32, -59.08, "icrs", 0.4)], [path])
    assert (~mask).sum() == (~circles_mask(g, [(228.32, -59.08, "icrs", 0.4)])).sum() + (
        ~region_file_mask(g, path)).sum()
    hot = np.zeros(g.shape, bool)
    hot[50, 50] = True
    grown = dilate(hot, 3)
    assert grown.sum() == 29 and grown[50, 53] and not grown[50, 54]


def test_circles_identical_to_regions_package():
    """circles_mask does without `regions`; it must give its pixel circles bit for bit
    (gammapy's region_mask goes through CircleSkyRegion.to_pixel(wcs).contains)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from regions import CircleSkyRegion, PixCoord

    rng = np.random.default_rng(11)
    for frame, projection, centre in (("icrs", "CAR", (228.32, -59.08)),
                                      ("galactic", "TAN", (320.3, -1.2)),
                                      ("icrs", "AIT", (83.6, 22.0)),
                                      ("galactic", "CAR", (0.0, 0.0))):
        geom = Geom.create(*centre, frame, (4.0, 3.0), 0.05, projection, [1, 10])
        ny, nx = geom.shape
        y, x = np.mgrid[0:ny, 0:nx]
        for _ in range(6):
            circle_frame = rng.choice(["icrs", "galactic"])
            sky = SkyCoord(centre[0] + rng.uniform(-2.5, 2.5), centre[1] + rng.uniform(-2, 2),
                           unit="deg", frame=frame).transform_to(circle_frame)
            lon, lat = sky.spherical.lon.deg, sky.spherical.lat.deg
            radius = rng.uniform(0.05, 1.5)
            region = CircleSkyRegion(SkyCoord(lon, lat, unit="deg", frame=circle_frame),
                                     radius * u.deg)
            theirs = region.to_pixel(geom.wcs).contains(PixCoord(x=x, y=y))
            ours = ~circles_mask(geom, [(lon, lat, circle_frame, radius)])
            assert np.array_equal(ours, theirs)


def _catalog(name):
    from conftest import gammapy_data

    return gammapy_data() / "catalogs" / name


def _circle_count(geom, circles):
    return (~circles_mask(geom, [c[:4] for c in circles])).sum()


def test_hgps_catalog_msh1552_field():
    """The HGPS catalogue over the MSH 15-52 field: its sources there, each excluded within
    max(min_radius, k x Size) + margin, with the frame of its GLON/GLAT columns."""
    from ringbg.exclusion import catalog_circles, read_catalog

    sources = read_catalog(_catalog("hgps_catalog_v1.fits.gz"))
    assert sources["frame"] == "galactic" and len(sources["name"]) == 78
    g = _geom()
    circles = catalog_circles(g, sources, min_radius_deg=0.3, size_factor=3.0, margin_deg=0.1)
    names = [c[4] for c in circles]
    assert "HESS J1514-591" in names  # MSH 15-52
    k = sources["name"].index("HESS J1514-591")
    size = sources["size_deg"][k]
    expected = max(0.3, 3.0 * (0.0 if np.isnan(size) else size)) + 0.1
    radius = dict((c[4], c[3]) for c in circles)["HESS J1514-591"]
    assert radius == expected
    # every source whose circle touches the map, and no other
    from ringbg.geom import angular_separation_deg, to_frame

    lon, lat = to_frame(sources["lon_deg"], sources["lat_deg"], "galactic", "icrs")
    ra, dec = g.radec_deg
    for n in range(len(sources["name"])):
        r = max(0.3, 3.0 * np.nan_to_num(sources["size_deg"][n])) + 0.1
        touches = np.any(angular_separation_deg(ra, dec, lon[n], lat[n]) < r)
        assert touches == (sources["name"][n] in names), sources["name"][n]


def test_gammacat_and_named_columns_agree(tmp_path):
    """gamma-cat by its built-in mapping, and the same table read as CSV with the columns
    named in the config, give the same circles on an RX J1713.7-3946 field."""
    from astropy.table import Table

    from ringbg.exclusion import catalog_circles, read_catalog

    g = Geom.create(347.3, -0.5, "galactic", 4.0, 0.05, "CAR", [0.5, 10])
    hgps = catalog_circles(g, read_catalog(_catalog("hgps_catalog_v1.fits.gz")))
    assert "HESS J1713-397" in [c[4] for c in hgps]
    cat = read_catalog(_catalog("gammacat.fits.gz"))
    circles = catalog_circles(g, cat)
    assert any("1713" in c[4] for c in circles)
    t = Table.read(_catalog("gammacat.fits.gz"))
    t[["common_name", "ra", "dec", "morph_sigma"]].write(tmp_path / "cat.csv")
    named = read_catalog(tmp_path / "cat.csv", "columns", {"lon": "ra", "lat": "dec",
                                                           "frame": "icrs",
                                                           "size": "morph_sigma",
                                                           "name": "common_name"})
    other = catalog_circles(g, named)
    assert [c[4] for c in other] == [c[4] for c in circles]
    assert _circle_count(g, other) <= _circle_count(g, circles)  # morph_sigma2 only widens


def test_hysteresis_grows_seeds_over_connected_pixels():
    from ringbg.exclusion import hot_pixels

    sig = np.zeros((20, 30))
    sig[5:9, 5:15] = 3.5      # an extended source, above 3 only
    sig[7, 10] = 6.0          # with a seed
    sig[15, 20:25] = 4.0      # above the grow threshold, no seed: stays
    assert hot_pixels(sig, 5.0).sum() == 1
    grown = hot_pixels(sig, 5.0, grow_threshold=3.0)
    assert grown[5:9, 5:15].all() and grown.sum() == 40
    assert not grown[15].any()


def test_catalog_combines_with_circles():
    g = _geom()
    catalog = {"file": str(_catalog("hgps_catalog_v1.fits.gz"))}
    with_catalog = _mask_of(g, [(227.5, -58.5, "icrs", 0.2)], catalogs=[catalog])
    only_circle = _mask_of(g, [(227.5, -58.5, "icrs", 0.2)])
    only_catalog = _mask_of(g, [], catalogs=[catalog])
    np.testing.assert_array_equal(with_catalog, only_circle & only_catalog)
    assert (~only_catalog).sum() > 0 and (~with_catalog).sum() > (~only_catalog).sum()


@pytest.mark.parametrize("radius_px", [0.5, 1, 1.5, 2.2, 3, 3.5, 7.07, 12.5])
def test_dilate_is_the_binary_dilation_with_the_tophat(radius_px):
    """The distance-transform dilation equals scipy's binary dilation with the top-hat kernel
    (edges included), in a time that does not grow with the radius."""
    from scipy.ndimage import binary_dilation

    from ringbg.kernels import tophat_kernel

    hot = np.random.default_rng(7).random((60, 45)) < 0.01
    hot[0, 0] = hot[-1, 20] = True
    expected = binary_dilation(hot, structure=tophat_kernel(radius_px).astype(bool))
    assert np.array_equal(dilate(hot, radius_px), expected)


def test_dilate_by_a_huge_radius_is_fast():
    import time

    hot = np.zeros((500, 5500), dtype=bool)
    hot[250, 100] = True
    t0 = time.perf_counter()
    grown = dilate(hot, 1e6)
    assert time.perf_counter() - t0 < 10 and grown.all()
    assert not dilate(np.zeros((5, 5), bool), 3).any()
