"""Kernels and the zero-padded FFT convolution used by the ring, the correlated maps and the
dilation of exclusion masks.

Kernels are peak-normalised (ones inside, zeros outside) and centred on an odd-sized grid, as
astropy's ``Ring2DKernel`` and ``Tophat2DKernel`` with gammapy's ``normalize("peak")``.
Convolutions are 'same'-sized, zero-padded outside the image, done in float64.
"""

import numpy as np
from scipy import fft as sp_fft

__all__ = ["ring_kernel", "tophat_kernel", "convolve", "ring_sums", "nan_to_num"]


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


def nan_to_num(values):
    """`numpy.nan_to_num` of an array, which is returned as it is (no copy) when all its
    values are finite: one pass over a map instead of four and a copy. Not to be written
    into."""
    values = np.asarray(values)
    return values if np.isfinite(values).all() else np.nan_to_num(values)


def convolve(image, kernel, integer=False):
    """Zero-padded 'same' convolution with a centred kernel, in float64.

    ``integer=True`` rounds the result, exact for integer images and 0/1 kernels.
    """
    image = nan_to_num(np.asarray(image, dtype=np.float64))
    out = _fft_convolve_same(image, kernel)
    return np.rint(out) if integer else _clean(out, image, kernel)


def ring_sums(counts, background, kernel):
    """Kernel sums of an integer counts image and a background image, in one batched FFT."""
    images = nan_to_num(np.stack([counts, background]).astype(np.float64))
    out = _fft_convolve_same(images, kernel)
    return np.rint(out[0]), _clean(out[1], images[1], kernel)
