"""Ring and adaptive-ring background: one observation's image -> its on/off image.

The off counts and off acceptance of a pixel are the sums, over a ring around it, of the counts
and of the background template outside the exclusion regions. ``alpha`` (on/off exposure ratio)
is the template in the pixel over the template in its ring.
"""

from dataclasses import dataclass

import numpy as np

from .kernels import convolve, ring_kernel, ring_sums, tophat_kernel

__all__ = [
    "ObsImage",
    "OnOffImage",
    "to_image",
    "ring_background",
    "adaptive_ring_background",
    "adaptive_ring_radii",
]


@dataclass
class ObsImage:
    """One observation's images on its cutout ``slices``: counts and background template
    summed over the safe energy bins, the safe pixels, and the exposure cube (m2 s); its
    GTIs (`ringbg.reduce.ReducedObservation`)."""

    obs_id: int
    slices: tuple
    counts: np.ndarray
    background: np.ndarray
    mask: np.ndarray
    exposure: np.ndarray
    livetime_s: float
    gti_tt_s: object = None


@dataclass
class OnOffImage:
    """One observation's on/off image on its cutout ``slices`` of the full geometry.

    ``counts_off`` and ``acceptance_off`` are the ring sums; ``acceptance`` the per-pixel
    background template; ``mask`` the safe pixels; ``exposure`` (n_energy, ny, nx) in m2 s;
    ``gti_tt_s`` the GTIs. With the adaptive ring, ``ring_choice`` (3, ny, nx) holds the ring
    taken in each pixel: inner and outer radius (pixels) and the fraction of its background
    template that the exclusion removed (NaN where no ring qualified).
    """

    obs_id: int
    slices: tuple
    counts: np.ndarray
    counts_off: np.ndarray
    acceptance: np.ndarray
    acceptance_off: np.ndarray
    mask: np.ndarray
    exposure: np.ndarray
    livetime_s: float
    gti_tt_s: object = None
    ring_choice: object = None

    @property
    def alpha(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.nan_to_num(self.acceptance / self.acceptance_off)


def to_image(reduced, band=None):
    """`ObsImage` of a reduced observation: sums over the safe energy bins (gammapy's
    ``to_image``); ``band`` restricts the sum to one energy bin index."""
    mask = reduced.mask_safe
    if band is not None:
        sel = np.zeros(mask.shape[0], dtype=bool)
        sel[band] = True
        mask = mask & sel[:, None, None]
    # bin by bin, in order: the same bits whatever the memory layout of the cubes
    counts = np.zeros(mask.shape[1:])
    background = np.zeros(mask.shape[1:])
    for k in range(mask.shape[0]):
        np.add(counts, reduced.counts[k], out=counts, where=mask[k])
        np.add(background, reduced.background[k], out=background, where=mask[k])
    return ObsImage(reduced.obs_id, reduced.slices, counts, background, mask.any(axis=0),
                    reduced.exposure, reduced.livetime_s, reduced.gti_tt_s)


def ring_background(image, exclusion, r_in_px, width_px):
    """Fixed ring background of one observation.

    Parameters
    ----------
    image : `ObsImage`
        The observation's images.
    exclusion : `~numpy.ndarray`
        Boolean image on the cutout, True where a pixel may be used for the background.
    r_in_px, width_px : float
        Inner radius and width in pixels.
    """
    counts, background, mask = image.counts, image.background, image.mask
    kernel = ring_kernel(r_in_px, width_px)
    counts_off, acceptance_off = ring_sums(counts * exclusion, background * exclusion, kernel)
    mask = mask & (acceptance_off > 0)
    return OnOffImage(image.obs_id, image.slices, counts, counts_off, background,
                      acceptance_off, mask, image.exposure, image.livetime_s, image.gti_tt_s)


def adaptive_ring_radii(r_in_px, width_px, r_out_max_px, stepsize_px, method):
    """Candidate rings ``[(r_in, width), ...]`` in pixels, smallest first (as gammapy)."""
    if method == "fixed_width":
        return [(r, width_px) for r in np.arange(r_in_px, r_out_max_px - width_px, stepsize_px)]
    if method == "fixed_r_in":
        return [(r_in_px, w) for w in np.arange(width_px, r_out_max_px - r_in_px, stepsize_px)]
    raise ValueError(f"adaptive ring method must be fixed_width or fixed_r_in, got {method!r}")


def adaptive_ring_background(image, exclusion, rings, theta_px, threshold_alpha):
    """Adaptive ring background (H.E.S.S. Galactic Plane Survey method).

    For each pixel the smallest candidate ring is taken whose approximate alpha, the template
    summed in a disk of radius ``theta_px`` over the template summed in the ring, is at most
    ``threshold_alpha``. The acceptance stays the per-pixel template, as for the fixed ring.
    Pixels where no ring qualifies get no off estimate and leave the mask. The ring taken in
    each pixel is in ``ring_choice`` (see `OnOffImage`).
    """
    counts, background, mask = image.counts, image.background, image.mask
    acceptance_theta = convolve(background, tophat_kernel(theta_px))
    shape = counts.shape
    counts_off = np.full(shape, np.nan)
    acceptance_off = np.full(shape, np.nan)
    choice = np.full((3,) + shape, np.nan)
    todo = np.ones(shape, dtype=bool)
    counts_excl = counts * exclusion
    background_excl = background * exclusion
    for r_in, width in rings:
        kernel = ring_kernel(r_in, width)
        acc_off = convolve(background_excl, kernel)
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha_approx = np.where(acc_off > 0, acceptance_theta / acc_off, np.inf)
        take = todo & (alpha_approx <= threshold_alpha)
        if take.any():
            off = convolve(counts_excl, kernel, integer=True)
            counts_off[take] = off[take]
            acceptance_off[take] = acc_off[take]
            acc_all = convolve(background, kernel)[take]
            with np.errstate(divide="ignore", invalid="ignore"):
                choice[2][take] = np.where(acc_all > 0, 1 - acc_off[take] / acc_all, np.nan)
            choice[0][take], choice[1][take] = r_in, r_in + width
            todo &= ~take
        if not todo.any():
            break
    mask = mask & np.isfinite(acceptance_off) & (np.nan_to_num(acceptance_off) > 0)
    return OnOffImage(image.obs_id, image.slices, counts, counts_off, background,
                      acceptance_off, mask, image.exposure, image.livetime_s, image.gti_tt_s,
                      np.clip(choice, 0, None, out=choice))
