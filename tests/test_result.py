"""`Result` in a notebook: its repr, quantities with units, gammapy objects."""

import astropy.units as u
import numpy as np
import pytest

import ringbg


def test_repr_and_html(msh_result):
    text = repr(msh_result)
    assert text.startswith("ringbg.Result(") and "20 observations" in text
    assert "max significance 10.05" in text and "\n" not in text
    html = msh_result._repr_html_()
    assert "<img" in html and "data:image/png;base64," in html and "counts" in html


def test_quantity_has_the_product_unit(msh_result):
    flux = msh_result.quantity("FLUX")
    assert flux.unit == u.Unit("cm-2 s-1")
    np.testing.assert_array_equal(flux.value, msh_result.maps["FLUX"])
    assert msh_result.quantity("EXCESS").unit == u.count
    assert msh_result.quantity("SIGNIFICANCE").unit == u.dimensionless_unscaled
    with pytest.raises(KeyError, match="no map 'NOPE'"):
        msh_result.quantity("NOPE")


def test_to_gammapy(msh_result):
    dataset, maps = msh_result.to_gammapy()
    np.testing.assert_allclose(dataset.counts.data[0], msh_result.stack.counts)
    assert dataset.gti is not None or dataset.exposure.meta.get("livetime") is not None
    assert maps["FLUX"].unit == u.Unit("cm-2 s-1")
    np.testing.assert_array_equal(maps["SIGNIFICANCE"].data, msh_result.maps["SIGNIFICANCE"])
    assert maps["SIGNIFICANCE"].geom.wcs.wcs.compare(msh_result.wcs.wcs)


def test_public_api():
    for name in ("run", "Result", "load_config", "Config", "RingbgError", "ConfigError",
                 "DataError", "OutputError", "RunError"):
        assert name in ringbg.__all__ and getattr(ringbg, name) is not None
    assert issubclass(ringbg.ConfigError, ringbg.RingbgError)
    assert "Parameters" in ringbg.run.__doc__  # help(ringbg.run) shows the whole docstring
