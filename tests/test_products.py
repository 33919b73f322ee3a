"""The map-product table and the diagnostic maps, by their definitions."""

import numpy as np
import pytest
from astropy.io import fits

from ringbg.products import ADAPTIVE_RING_PRODUCTS, BAND_PRODUCTS, PRODUCTS


def test_every_product_in_a_run_and_in_maps_fits(msh_result, tmp_path):
    """Result.maps holds every product of the table; maps.fits has each as an HDU with the
    table's BUNIT, `count` for the counts-like maps."""
    assert set(msh_result.maps) == set(PRODUCTS) - set(ADAPTIVE_RING_PRODUCTS)  # fixed ring
    for name in ("EXCESS", "BACKGROUND", "COUNTS", "ACCEPTANCE", "ACCEPTANCE_OFF",
                 "COUNTS_OFF"):
        assert PRODUCTS[name].unit == "count"
    out = msh_result.write(tmp_path / "out", figures=False)
    with fits.open(out / "maps.fits") as hdul:
        for name in msh_result.maps:
            product = PRODUCTS[name]
            assert hdul[name].header["BUNIT"] == product.unit, name
            assert hdul[name].data.shape == msh_result.geom.shape


def test_livetime_and_n_obs_maps(msh_result):
    """LIVETIME: the live times of the observations whose safe region covers a pixel;
    N_OBS: their number. All 20 tutorial runs cover the map centre."""
    m = msh_result.maps
    stack = msh_result.stack
    assert m["N_OBS"][75, 75] == 20
    assert m["LIVETIME"][75, 75] == pytest.approx(stack.livetime_s, rel=1e-12)
    assert m["N_OBS"].max() == 20 and m["N_OBS"].min() >= 0
    # pixels covered by fewer runs have less live time, never more
    fewer = m["N_OBS"] < 20
    assert np.all(m["LIVETIME"][fewer] < stack.livetime_s)


def test_stacked_images_are_the_stack(msh_result):
    m, st = msh_result.maps, msh_result.stack
    safe = st.mask
    np.testing.assert_array_equal(m["COUNTS_OFF"][safe], st.counts_off[safe])
    np.testing.assert_array_equal(m["ACCEPTANCE"][safe], st.acceptance[safe])
    assert np.all(np.isnan(m["ACCEPTANCE_OFF"][~safe]))
    assert m["COUNTS_OFF"][safe].sum() == pytest.approx(87621188, rel=1e-9)


def test_band_products_are_a_subset():
    assert {"SIGNIFICANCE", "EXCESS", "FLUX"} <= set(BAND_PRODUCTS) <= set(PRODUCTS)
    assert "EXCLUSION" not in BAND_PRODUCTS
