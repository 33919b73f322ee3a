"""`Result`: what a run produced, with what a notebook needs to look at it.

The maps are 2D arrays on the run's geometry, keyed by the HDU names of
`ringbg.products.PRODUCTS` (which also gives their units).
"""

from dataclasses import dataclass, field

import numpy as np

from .geom import Geom
from .products import PRODUCTS
from .stack import Stack

__all__ = ["Result"]


@dataclass
class Result:
    """What a run produced: stacked images, maps (2D arrays on ``geom``), summary.

    Attributes
    ----------
    config : `~ringbg.config.Config`
        The validated configuration.
    geom : `~ringbg.geom.Geom`
        The map geometry (``wcs``, ``shape``, energy edges).
    stack : `~ringbg.stack.Stack`
        The stacked on/off images.
    maps : dict of `~numpy.ndarray`
        Product name (``SIGNIFICANCE``, ``EXCESS``, ...) -> 2D map; see `quantity`.
    exclusion : `~numpy.ndarray`
        The final exclusion mask (True = used for the background).
    summary : dict
        The content of ``summary.json``.
    observations : list of dict
        One row per observation, used or skipped.
    off_significance : `~numpy.ndarray`
        Significance of the run with the exclusion as fit mask (the off distribution's).
    band_maps : list of dict
        Per energy bin, the band products (``excess.energy_bands``).
    per_observation : list of `~ringbg.ring.OnOffImage`
        Per observation on/off images (``output.per_observation``).
    maps_by_radius : dict
        Correlation radius (deg) -> its product maps, for every radius of
        ``excess.correlation_radius``.
    """

    config: object
    geom: Geom
    stack: Stack
    maps: dict
    exclusion: np.ndarray
    summary: dict
    observations: list
    off_significance: np.ndarray | None = None
    band_maps: list = field(default_factory=list)
    per_observation: list = field(default_factory=list)
    #: correlation radius (deg) -> its product maps (``maps`` is the first radius')
    maps_by_radius: dict = field(default_factory=dict)
    #: correlation radius (deg) -> its off significance (``off_significance`` the first's)
    off_by_radius: dict = field(default_factory=dict)
    #: true-energy bin edges (TeV) of ``stack.exposure`` (None: the geometry's energy edges)
    energy_true_edges_tev: np.ndarray | None = None
    #: the response folded into the flux maps, per true-energy bin (None: one)
    flux_response: np.ndarray | None = None

    @property
    def wcs(self):
        """The celestial `~astropy.wcs.WCS` of the maps."""
        return self.geom.wcs

    def write(self, outdir=None, overwrite=None, figures=None):
        """Write all outputs into ``outdir`` (atomically: a temporary folder renamed at the
        end); returns the folder."""
        from .outputs import write_outputs

        return write_outputs(self, outdir, overwrite=overwrite, figures=figures)

    def quantity(self, name):
        """The map ``name`` as an `~astropy.units.Quantity` with its unit (``BUNIT``)."""
        import astropy.units as u

        if name not in self.maps:
            raise KeyError(f"no map {name!r}; the maps are {', '.join(self.maps)}")
        unit = PRODUCTS[name].unit if name in PRODUCTS else ""
        return u.Quantity(self.maps[name], unit or u.dimensionless_unscaled, copy=False)

    def plot(self, name="SIGNIFICANCE", ax=None, **kwargs):
        """Draw the map ``name`` on WCSAxes, with its unit on the colour bar and the
        exclusion contour, as the run's figure of it.

        Parameters
        ----------
        name : str
            A key of ``maps`` (``"SIGNIFICANCE"``, ``"FLUX"``, ``"EXCESS"``, ...).
        ax : `~astropy.visualization.wcsaxes.WCSAxes`, optional
            Axes made with ``projection=result.wcs``; default: new axes on the current
            pyplot figure.
        **kwargs
            ``cmap``, ``norm``: see `ringbg.figures.plot_product`.

        Returns
        -------
        ax : `~astropy.visualization.wcsaxes.WCSAxes`
        """
        from .figures import plot_product

        if name not in self.maps:
            raise KeyError(f"no map {name!r}; the maps are {', '.join(self.maps)}")
        if ax is None:
            import matplotlib.pyplot as plt

            ax = plt.gcf().add_subplot(projection=self.wcs)
        elif not hasattr(ax, "coords"):
            raise TypeError("Result.plot needs WCSAxes: make them with "
                            "fig.add_subplot(projection=result.wcs)")
        plot_product(ax, name, self.maps[name], self.wcs, exclusion=self.exclusion, **kwargs)
        return ax

    def _headline(self):
        s = self.summary
        edges = self.geom.energy_edges_tev
        ny, nx = self.geom.shape
        m = s.get("max_significance") or {}
        off = s.get("off_distribution") or {}
        parts = [f"{s.get('n_obs', 0)} observations", f"{nx} x {ny} px {self.geom.frame}",
                 f"{edges[0]:.3g}-{edges[-1]:.3g} TeV"]
        if m.get("value") is not None:
            parts.append(f"max significance {m['value']:.2f} at ({m['lon']:.3f}, "
                         f"{m['lat']:.3f})")
        if off.get("sigma") is not None and np.isfinite(off.get("sigma", np.nan)):
            parts.append(f"off distribution mean {off['mean']:.3f} sigma {off['sigma']:.3f}")
        return parts

    def __repr__(self):
        return "ringbg.Result(" + ", ".join(self._headline()) + ")"

    def _repr_html_(self):
        """Totals, the maximum, the off distribution and a small significance image."""
        from html import escape

        rows = "".join(f"<li>{escape(p)}</li>" for p in self._headline())
        totals = self.summary.get("totals", {})
        cells = "".join(f"<tr><td>{escape(k)}</td><td>{v:.6g}</td></tr>"
                        for k, v in totals.items() if isinstance(v, (int, float)))
        image = _thumbnail(self.maps["SIGNIFICANCE"])
        return (f"<div><b>ringbg.Result</b><ul>{rows}</ul>"
                f"<table>{cells}</table>{image}</div>")

    def to_gammapy(self):
        """The stacked on/off dataset and the maps as gammapy objects.

        Returns
        -------
        dataset : `gammapy.datasets.MapDatasetOnOff`
            Read back from the ``stacked_onoff.fits`` this result writes.
        maps : dict of `gammapy.maps.WcsNDMap`
            Each product map with its unit.

        Raises
        ------
        ImportError
            When gammapy is not installed (it is not a dependency of ringbg).
        """
        try:
            from gammapy.datasets import MapDatasetOnOff
            from gammapy.maps import WcsGeom, WcsNDMap
        except ImportError:
            raise ImportError("Result.to_gammapy needs gammapy (pip install gammapy); "
                              "ringbg itself does not use it") from None
        import tempfile
        from pathlib import Path

        from .outputs import write_onoff

        st, g = self.stack, self.geom
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "stacked_onoff.fits"
            write_onoff(path, st.counts, st.counts_off, st.acceptance, st.acceptance_off,
                        st.mask, st.exposure, g.image_header(), g.energy_edges_tev,
                        st.livetime_s, energy_true_edges_tev=self.energy_true_edges_tev,
                        gti_tt_s=st.gti_tt_s)
            dataset = MapDatasetOnOff.read(path, name="stacked")
        geom = WcsGeom(wcs=g.wcs, npix=(g.shape[1], g.shape[0]))
        maps = {name: WcsNDMap(geom, data=np.asarray(data, dtype=float),
                               unit=PRODUCTS[name].unit if name in PRODUCTS else "")
                for name, data in self.maps.items()}
        return dataset, maps


def _thumbnail(image, size=160):
    """A small PNG of a significance image as an HTML ``<img>`` (no axes)."""
    import base64
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ny, nx = image.shape
    scale = size / max(nx, ny)
    fig = Figure(figsize=(max(nx * scale, 8) / 100, max(ny * scale, 8) / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(image, origin="lower", cmap="RdBu_r", vmin=-5, vmax=5, interpolation="nearest")
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="significance" src="data:image/png;base64,{data}">'
