"""Ring and adaptive-ring background: one observation's image -> its on/off image.

The off counts and off acceptance of a pixel are the sums, over a ring around it, of the counts
and of the background template outside the exclusion regions. ``alpha`` (on/off exposure ratio)
is the template in the pixel over the template in its ring.
"""

from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft

__all__ = [
    "ring_kernel",
    "tophat_kernel",
    "convolve",
    "ObsImage",
    "OnOffImage",
    "to_image",
    "ring_background",
    "adaptive_ring_background",
    "adaptive_ring_radii",
]


def _odd_size(radius_px):
    """Smallest odd integer >= 2 * radius (astropy's default kernel size)."""
    size = int(np.ceil(2 * radius_px))
    return size + 1 if size % 2 == 0 else size


def ring_kernel(r_in_px, width_px):
    """Ring of ones where ``r_in <= d <= r_in + width`` (pixel-centre distance, both inclusive)."""
    r_out = r_in_px + width_px
    size = _odd_size(r_out)
    c = size // 2
    y, x = np.mgrid[0:size, 0:size] - c
    d2 = x.astype(float) ** 2 + y.astype(float) ** 2
    return ((d2 >= r_in_px**2) & (d2 <= r_out**2)).astype(float)


def tophat_kernel(radius_px):
    """Disk of ones where ``d <= radius`` (pixel-centre distance)."""
    size = _odd_size(radius_px)
    c = size // 2
    y, x = np.mgrid[0:size, 0:size] - c
    return ((x.astype(float) ** 2 + y.astype(float) ** 2) <= radius_px**2).astype(float)


_KERNEL_FFT = {}


def _kernel_fft(kernel, shape):
    """The kernel's padded FFT, kept for the next image of the same shape."""
    key = (kernel.shape, kernel.tobytes(), tuple(shape))
    if key not in _KERNEL_FFT:
        if len(_KERNEL_FFT) > 64:
            _KERNEL_FFT.clear()
        _KERNEL_FFT[key] = sp_fft.rfft2(kernel, shape)
    return _KERNEL_FFT[key]


def _fft_convolve_same(images, kernel):
    """Linear convolution of the last two axes, cropped to the image ('same'), via real FFTs
    of padded arrays; leading axes are a batch of images."""
    ny, nx = images.shape[-2:]
    start = [(k - 1) // 2 for k in kernel.shape]
    # the cyclic convolution of period L equals the linear one on the cropped window when
    # L >= n + k - 1 - start: what wraps around lands before the window, not in it
    shape = [sp_fft.next_fast_len(n + k - 1 - s, real=True)
             for n, k, s in zip((ny, nx), kernel.shape, start)]
    spectrum = sp_fft.rfft2(images, shape)
    spectrum *= _kernel_fft(kernel, shape)
    out = sp_fft.irfft2(spectrum, shape)
    return out[..., start[0]:start[0] + ny, start[1]:start[1] + nx]


def _clean(out, image, kernel):
    """Zero the FFT noise around exact zeros of a float convolution."""
    scale = np.abs(image).max() * kernel.sum() if image.size else 0.0
    out[np.abs(out) < 1e-12 * scale] = 0.0
    return out


def convolve(image, kernel, integer=False):
    """Zero-padded 'same' convolution with a centred kernel, in float64.

    ``integer=True`` rounds the result, exact for integer images and 0/1 kernels.
    """
    image = np.nan_to_num(np.asarray(image, dtype=np.float64))
    out = _fft_convolve_same(image, kernel)
    return np.rint(out) if integer else _clean(out, image, kernel)


def ring_sums(counts, background, kernel):
    """Kernel sums of an integer counts image and a background image, in one batched FFT."""
    images = np.nan_to_num(np.stack([counts, background]).astype(np.float64))
    out = _fft_convolve_same(images, kernel)
    return np.rint(out[0]), _clean(out[1], images[1], kernel)


@dataclass
class ObsImage:
    """One observation's images on its cutout ``slices``: counts and background template
    summed over the safe energy bins, the safe pixels, and the exposure cube (m2 s)."""

    obs_id: int
    slices: tuple
    counts: np.ndarray
    background: np.ndarray
    mask: np.ndarray
    exposure: np.ndarray
    livetime_s: float


@dataclass
class OnOffImage:
    """One observation's on/off image on its cutout ``slices`` of the full geometry.

    ``counts_off`` and ``acceptance_off`` are the ring sums; ``acceptance`` the per-pixel
    background template; ``mask`` the safe pixels; ``exposure`` (n_energy, ny, nx) in m2 s;
    ``background_cube`` and ``counts_cube`` keep the energy bins for per-band maps.
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
                    reduced.exposure, reduced.livetime_s)


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
                      acceptance_off, mask, image.exposure, image.livetime_s)


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
    Pixels where no ring qualifies get no off estimate and leave the mask.
    """
    counts, background, mask = image.counts, image.background, image.mask
    acceptance_theta = convolve(background, tophat_kernel(theta_px))
    shape = counts.shape
    counts_off = np.full(shape, np.nan)
    acceptance_off = np.full(shape, np.nan)
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
            todo &= ~take
        if not todo.any():
            break
    mask = mask & np.isfinite(acceptance_off) & (np.nan_to_num(acceptance_off) > 0)
    return OnOffImage(image.obs_id, image.slices, counts, counts_off, background,
                      acceptance_off, mask, image.exposure, image.livetime_s)
