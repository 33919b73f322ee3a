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
    # the GTI: the 20 runs' union; the DR1 runs do not overlap, so its sum is their on time
    assert dataset.gti is not None and len(dataset.gti.table) >= 20
    ontime_s = sum(float(np.sum(t[:, 1] - t[:, 0])) for t in msh_result.stack._gtis)
    assert dataset.gti.time_sum.to_value("s") == pytest.approx(ontime_s, rel=1e-9)
    assert ontime_s == pytest.approx(msh_result.stack.livetime_s, rel=0.2)  # dead time < 20%
    start = dataset.gti.time_start[0]
    assert start.scale == "tt" and 53000 < start.mjd < 53400  # 2004 (MSH 15-52 in DR1)
    assert maps["FLUX"].unit == u.Unit("cm-2 s-1")
    np.testing.assert_array_equal(maps["SIGNIFICANCE"].data, msh_result.maps["SIGNIFICANCE"])
    assert maps["SIGNIFICANCE"].geom.wcs.wcs.compare(msh_result.wcs.wcs)


def test_public_api():
    for name in ("run", "Result", "load_config", "Config", "RingbgError", "ConfigError",
                 "DataError", "OutputError", "RunError"):
        assert name in ringbg.__all__ and getattr(ringbg, name) is not None
    assert issubclass(ringbg.ConfigError, ringbg.RingbgError)
    assert "Parameters" in ringbg.run.__doc__  # help(ringbg.run) shows the whole docstring


def test_plot_draws_the_map_with_its_unit(msh_result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization.wcsaxes import WCSAxes

    fig = plt.figure()
    try:
        ax = msh_result.plot("FLUX")
        assert isinstance(ax, WCSAxes) and ax.figure is fig
        image = ax.get_images()[0]
        labels = [a.get_ylabel() for a in ax.child_axes]  # the colour bar is an inset
        assert any("cm" in label and "s" in label for label in labels), labels
        # the image is the map in its display unit, scaled: finite where the map is
        shown = np.asarray(image.get_array(), dtype=float)
        assert np.isfinite(shown).sum() > 0
        ax2 = fig.add_subplot(1, 2, 2, projection=msh_result.wcs)
        msh_result.plot("SIGNIFICANCE", ax=ax2)
        norm = ax2.get_images()[0].norm
        assert norm.vmin == pytest.approx(-norm.vmax) and norm.vmax >= 10  # symmetric, max 10.05
        with pytest.raises(KeyError, match="no map 'NOPE'"):
            msh_result.plot("NOPE")
        with pytest.raises(TypeError, match="WCSAxes"):
            msh_result.plot("EXCESS", ax=fig.add_subplot(2, 2, 1))
    finally:
        plt.close(fig)
