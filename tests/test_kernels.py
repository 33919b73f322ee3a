"""Ring and top-hat kernels and the FFT convolution, against direct sums."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.ndimage import convolve as nd_convolve

from ringbg.kernels import convolve, ring_kernel, tophat_kernel


def test_ring_kernel_tutorial_size():
    # r_in = 0.5 deg, width = 0.3 deg at 0.02 deg/pixel: 81 x 81, 3084 pixels (ALGORITHMS.md)
    k = ring_kernel(25.0, 15.0)
    assert k.shape == (81, 81)
    assert k.sum() == 3084
    assert k[40, 40] == 0 and k[40, 40 + 25] == 1 and k[40, 40 + 40] == 1 and k[40, 40 + 24] == 0


def test_tophat_kernel():
    k = tophat_kernel(2.0)
    assert k.shape == (5, 5) and k.sum() == 13


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(23, 31), (3, 40), (1, 1), (9, 2)]).flatmap(
           lambda shape: arrays(np.int64, shape, elements=st.integers(0, 50))),
       st.floats(1.0, 12.0), st.floats(0.5, 4.0))
def test_convolve_equals_direct_sum(image, r_in, width):
    # includes images smaller than the kernel (a cutout at the map's edge)
    kernel = ring_kernel(r_in, width)
    direct = nd_convolve(image.astype(float), kernel, mode="constant", cval=0.0)
    assert np.array_equal(convolve(image, kernel, integer=True), direct)
    assert np.allclose(convolve(image.astype(float) * 0.37, kernel), direct * 0.37, rtol=1e-10)
