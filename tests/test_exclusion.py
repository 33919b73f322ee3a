"""Exclusion masks from circles, DS9 region files and FITS masks, as gammapy builds them."""

import numpy as np
from astropy.io import fits

from ringbg.exclusion import circles_mask, dilate, exclusion_mask, fits_mask, region_file_mask
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


def test_combined_and_dilated(tmp_path):
    g = _geom()
    path = tmp_path / "a.reg"
    path.write_text("icrs\ncircle(227.5,-58.5,0.2d)\n")
    mask = exclusion_mask(g, [(228.32, -59.08, "icrs", 0.4)], [path])
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
