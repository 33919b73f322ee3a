"""Exclusion masks: circles, DS9 region files, FITS mask maps, and automatic exclusion.

Masks follow gammapy's convention: True where a pixel may be used for the background estimate,
False inside excluded regions. Sky regions become pixel regions as gammapy's
``WcsGeom.region_mask`` makes them with the ``regions`` package (circles with its arithmetic
written out, DS9 files through ``regions`` itself).
"""

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from .geom import to_frame
from .kernels import tophat_kernel

__all__ = ["circles_mask", "region_file_mask", "fits_mask", "exclusion_mask", "dilate",
           "grow_exclusion"]


def _excluded_by_regions(geom, sky_regions):
    from regions import PixCoord

    ny, nx = geom.shape
    y, x = np.mgrid[0:ny, 0:nx]
    pix = PixCoord(x=x, y=y)
    inside = np.zeros(geom.shape, dtype=bool)
    for region in sky_regions:
        inside |= region.to_pixel(geom.wcs).contains(pix)
    return inside


def circles_mask(geom, circles):
    """Mask excluding circles ``[(lon_deg, lat_deg, frame, radius_deg), ...]``.

    A circle becomes a pixel circle as ``regions`` makes one (``CircleSkyRegion.to_pixel``):
    centred on the centre's pixel position, with the radius divided by the pixel scale
    measured along the local north over one arcsecond; pixel centres strictly closer than
    the radius are inside. The same astropy operations in the same order give the same
    bits, without importing ``regions`` for the common case.
    """
    import astropy.units as u

    ny, nx = geom.shape
    y, x = np.mgrid[0:ny, 0:nx]
    inside = np.zeros(geom.shape, dtype=bool)
    offset = 1 * u.arcsec
    for lon, lat, frame, radius_deg in circles:
        centre = SkyCoord(lon, lat, unit="deg", frame=frame)
        cx, cy = geom.wcs.world_to_pixel(centre)
        north_x, north_y = geom.wcs.world_to_pixel(centre.directional_offset_by(0.0, offset))
        scale = offset.to(u.arcsec) / (np.hypot(north_x - cx, north_y - cy) * u.pixel)
        radius_px = ((radius_deg * u.deg) / scale).to(u.pixel).value
        inside |= np.hypot(x - cx, y - cy) < radius_px
    return ~inside


def region_file_mask(geom, path):
    """Mask excluding the sky regions of a DS9 region file."""
    from regions import Regions, SkyRegion

    try:
        regions = Regions.read(str(path), format="ds9")
    except Exception as exc:  # regions raises its own parser errors
        raise ValueError(f"{path}: cannot be read as a DS9 region file ({exc})") from exc
    sky = [r for r in regions if isinstance(r, SkyRegion)]
    if len(sky) != len(regions):
        raise ValueError(f"{path}: only sky regions (fk5, icrs, galactic) can be used")
    return ~_excluded_by_regions(geom, sky)


def fits_mask(geom, path):
    """Mask from a FITS image (first image HDU; nonzero = usable), nearest-pixel lookup.

    Pixels of ``geom`` outside the file's image are kept usable.
    """
    with fits.open(path) as hdul:
        hdu = next((h for h in hdul if h.is_image and h.data is not None), None)
        if hdu is None:
            raise ValueError(f"{path}: no image HDU with data")
        data = np.asarray(hdu.data)
        wcs = WCS(hdu.header).celestial
    while data.ndim > 2:
        data = data[0]
    frame = "galactic" if wcs.wcs.ctype[0].startswith("GLON") else "icrs"
    lon, lat = geom.lonlat_deg
    lon, lat = to_frame(lon, lat, geom.frame, frame)
    x, y = wcs.wcs_world2pix(lon, lat, 0)
    ix, iy = np.floor(x + 0.5), np.floor(y + 0.5)
    ok = np.isfinite(ix) & np.isfinite(iy)
    ok &= (ix >= 0) & (ix < data.shape[1]) & (iy >= 0) & (iy < data.shape[0])
    mask = np.ones(geom.shape, dtype=bool)
    mask[ok] = data[iy[ok].astype(int), ix[ok].astype(int)] != 0
    return mask


def dilate(excluded, radius_px):
    """Grow an excluded-pixels image by a disk of ``radius_px``."""
    from scipy.ndimage import binary_dilation

    if radius_px <= 0:
        return excluded
    return binary_dilation(excluded, structure=tophat_kernel(radius_px).astype(bool))


def exclusion_mask(geom, circles=(), files=()):
    """The combined mask of circles and files (DS9 ``.reg`` or FITS masks)."""
    mask = np.ones(geom.shape, dtype=bool)
    if circles:
        mask &= circles_mask(geom, circles)
    for path in files:
        name = str(path).lower()
        if name.endswith((".fits", ".fits.gz", ".fit", ".fts")):
            mask &= fits_mask(geom, path)
        else:
            mask &= region_file_mask(geom, path)
    return mask


def grow_exclusion(auto, exclusion, state, binsize_deg, significance, restack):
    """Automatic exclusion: exclude every pixel above ``auto.threshold``, dilated by
    ``auto.dilate``, and redo the background with the grown mask, until it stops changing
    or after ``auto.iterations`` rounds.

    Parameters
    ----------
    auto : `~ringbg.config.AutoExclusion`
        ``threshold``, ``iterations`` and ``dilate`` (deg).
    exclusion : `~numpy.ndarray`
        The starting mask (True = usable).
    state : object
        What ``significance`` takes: the current stack(s).
    binsize_deg : float
        Pixel size, for the dilation radius.
    significance : callable
        ``significance(state)`` -> significance image.
    restack : callable
        ``restack(mask)`` -> the new state with that mask.

    Returns
    -------
    state, exclusion, iterations
        The last state, its mask and the number of rounds made.
    """
    iterations = 0
    for _ in range(auto.iterations):
        hot = np.nan_to_num(significance(state), nan=0.0) > auto.threshold
        new = exclusion & ~dilate(hot, auto.dilate / binsize_deg)
        iterations += 1
        if np.array_equal(new, exclusion):
            break
        exclusion = new
        state = restack(exclusion)
    return state, exclusion, iterations
