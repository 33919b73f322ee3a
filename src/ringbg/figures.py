"""Figures: significance and excess sky maps, and the significance distribution.

All figures are drawn on a `matplotlib.figure.Figure` attached to the Agg canvas
directly, so nothing here touches ``matplotlib.pyplot`` or the user's chosen
backend, and the functions are safe to call from worker processes and scripts.

Conventions
-----------
* Maps are 2D numpy arrays indexed ``[y, x]`` (FITS order), with a 2D celestial
  `astropy.wcs.WCS`.
* Exclusion masks follow gammapy: ``True`` (or 1) marks a pixel that may be used
  for the background estimate, ``False`` (0) a pixel inside an excluded region.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from .stats import fit_gaussian
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import PathPatch
from matplotlib.path import Path as MplPath

__all__ = [
    "make_figures",
    "plot_excess",
    "plot_significance",
    "plot_significance_distribution",
]

#: Resolution of all PNG figures, in dots per inch.
DPI = 120

_BAD_COLOR = "#d0d0d0"
_EXCLUSION_COLOR = "#1a1a1a"


# --------------------------------------------------------------------------- helpers


def _celestial(wcs):
    """Return the 2D celestial part of a WCS."""
    if wcs.naxis == 2:
        return wcs
    return wcs.celestial


def _frame_name(wcs):
    """Name of the sky frame of a WCS: ``"icrs"``, ``"galactic"``, ... ."""
    from astropy.wcs.utils import wcs_to_celestial_frame

    try:
        return wcs_to_celestial_frame(_celestial(wcs)).name
    except ValueError:
        ctype = wcs.wcs.ctype[0].upper()
        return "galactic" if ctype.startswith("GLON") else "icrs"


def _frame_labels(wcs):
    """Axis labels (longitude, latitude) for the sky frame of a WCS.

    Parameters
    ----------
    wcs : `~astropy.wcs.WCS`
        Celestial WCS.

    Returns
    -------
    labels : tuple of str
        ``("Right ascension (ICRS)", "Declination (ICRS)")`` for equatorial frames,
        ``("Galactic longitude l", "Galactic latitude b")`` for galactic.
    """
    frame = _frame_name(wcs)
    if frame == "galactic":
        return "Galactic longitude l", "Galactic latitude b"
    name = frame.upper() if frame in ("icrs", "fk5", "fk4") else frame
    return f"Right ascension ({name})", f"Declination ({name})"


def _new_map_figure(shape, wcs):
    """Create a figure with a WCSAxes sized for a map of ``shape`` (ny, nx)."""
    ny, nx = shape
    aspect = ny / max(nx, 1)
    width = 8.0
    height = float(np.clip(width * 0.85 * aspect + 0.9, 4.0, 11.0))
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection=_celestial(wcs))
    lon_label, lat_label = _frame_labels(wcs)
    lon, lat = ax.coords[0], ax.coords[1]
    lon.set_axislabel(lon_label)
    lat.set_axislabel(lat_label)
    if _frame_name(wcs) == "galactic":
        lon.set_major_formatter("d.d")
        lat.set_major_formatter("d.d")
    lon.set_ticks(color="#333333")
    lat.set_ticks(color="#333333")
    ax.coords.grid(color="#888888", alpha=0.35, linestyle=":", linewidth=0.6)
    return fig, ax


def _colorbar(fig, ax, image, label, extend="neither"):
    """Add a colour bar as tall as the map axes, on its right."""
    from matplotlib.axes import Axes
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.12, axes_class=Axes)
    cbar = fig.colorbar(image, cax=cax, extend=extend)
    cbar.set_label(label)
    return cbar


def _save(fig, path):
    """Write a figure to ``path`` as PNG and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # WCSAxes is not fully handled by tight_layout; bbox_inches="tight" is.
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight", pad_inches=0.12)
    return path


def _cmap(name):
    return colormaps[name].with_extremes(bad=_BAD_COLOR)


def _normal_pdf(x, mu, sigma):
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def _finite(values):
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def _draw_exclusion(ax, exclusion, shape, color=_EXCLUSION_COLOR):
    """Draw the outline of excluded regions (``exclusion == False``)."""
    if exclusion is None:
        return None
    exclusion = np.asarray(exclusion)
    if exclusion.shape != tuple(shape):
        raise ValueError(
            f"exclusion mask shape {exclusion.shape} differs from map shape {tuple(shape)}"
        )
    excluded = ~exclusion.astype(bool)
    if not excluded.any() or excluded.all():
        return None
    ax.contour(
        excluded.astype(float),
        levels=[0.5],
        colors=color,
        linewidths=1.1,
        linestyles="--",
    )
    return Line2D([], [], color=color, linestyle="--", linewidth=1.1,
                  label="excluded regions")


def _draw_ring_scale(ax, wcs, shape, r_in_deg, r_out_deg):
    """Draw the ring (inner and outer circle) once, in the lower-left corner, for scale."""
    from astropy import units as u
    from astropy.visualization.wcsaxes import SphericalCircle
    from astropy.wcs.utils import proj_plane_pixel_scales

    ny, nx = shape
    scale = float(np.mean(np.abs(proj_plane_pixel_scales(_celestial(wcs)))))
    r_out_pix = r_out_deg / scale
    pad = 0.05 * min(nx, ny)
    x0 = r_out_pix + pad
    y0 = r_out_pix + pad
    # If the ring is larger than the map, centre it instead: it still gives the scale.
    if 2 * x0 > nx:
        x0 = (nx - 1) / 2
    if 2 * y0 > ny:
        y0 = (ny - 1) / 2
    lon, lat = _celestial(wcs).wcs_pix2world([[x0, y0]], 0)[0]
    if not (np.isfinite(lon) and np.isfinite(lat)):
        return None
    transform = ax.get_transform("world")
    center = (lon * u.deg, lat * u.deg)
    outer = SphericalCircle(center, r_out_deg * u.deg, resolution=180)
    inner = SphericalCircle(center, r_in_deg * u.deg, resolution=180)
    # Shade the annulus only: outer boundary, then the inner one reversed (a hole).
    outer_xy, inner_xy = outer.get_xy(), inner.get_xy()[::-1]
    vertices = np.concatenate([outer_xy, inner_xy])
    codes = np.full(len(vertices), MplPath.LINETO, dtype=MplPath.code_type)
    codes[0] = codes[len(outer_xy)] = MplPath.MOVETO
    codes[len(outer_xy) - 1] = codes[-1] = MplPath.CLOSEPOLY
    ax.add_patch(PathPatch(
        MplPath(vertices, codes), transform=transform, facecolor="black", alpha=0.07,
        edgecolor="none", zorder=4,
    ))
    for circle in (outer, inner):
        circle.set(facecolor="none", edgecolor="black", linewidth=1.1, alpha=0.85,
                   transform=transform, zorder=5)
        ax.add_patch(circle)
    ax.text(
        x0, y0, f"ring\n{r_in_deg:.2g}\u00b0\u2013{r_out_deg:.2g}\u00b0",
        ha="center", va="center", fontsize=8.5, color="black", zorder=6,
        linespacing=1.3,
    )
    return outer


def _significance_limit(values):
    """Symmetric colour range for a significance map: at least 5, at most 10 sigma."""
    finite = _finite(values)
    if finite.size == 0:
        return 5.0
    peak = float(np.max(np.abs(finite)))
    return float(np.clip(math.ceil(peak), 5.0, 10.0))


# --------------------------------------------------------------------------- figures


def plot_significance(path, significance, wcs, exclusion=None, r_in_deg=None,
                      r_out_deg=None, *, title=None):
    """Plot a significance sky map to a PNG file.

    The map is drawn with a diverging colour map centred on 0, clipped symmetrically
    at the peak absolute significance rounded up, but within 5 to 10 sigma (values
    beyond are shown saturated; the colour bar is extended). Pixels without data
    (NaN) are grey.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Output PNG file.
    significance : `~numpy.ndarray`
        2D significance map, in units of sigma.
    wcs : `~astropy.wcs.WCS`
        Celestial WCS of the map.
    exclusion : `~numpy.ndarray` of bool, optional
        2D mask, True where the pixel is used for background (not excluded). The
        outlines of the excluded regions are drawn as dashed contours.
    r_in_deg, r_out_deg : float, optional
        Inner and outer ring radius in degrees. When both are given the ring is drawn
        once, in the lower-left corner, for scale.
    title : str, optional
        Figure title; a default is used when None.

    Returns
    -------
    path : `~pathlib.Path`
        The written file.
    """
    significance = np.asarray(significance, dtype=float)
    if significance.ndim != 2:
        raise ValueError(f"significance map must be 2D, got shape {significance.shape}")
    fig, ax = _new_map_figure(significance.shape, wcs)
    limit = _significance_limit(significance)
    image = ax.imshow(
        significance, origin="lower", cmap=_cmap("RdBu_r"),
        norm=Normalize(vmin=-limit, vmax=limit), interpolation="nearest",
    )
    handles = []
    handle = _draw_exclusion(ax, exclusion, significance.shape)
    if handle is not None:
        handles.append(handle)
    if r_in_deg is not None and r_out_deg is not None:
        _draw_ring_scale(ax, wcs, significance.shape, float(r_in_deg), float(r_out_deg))
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.8)

    finite = _finite(significance)
    extend = "neither"
    if finite.size:
        low, high = finite.min() < -limit, finite.max() > limit
        extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
            (bool(low), bool(high)), "neither"
        )
    _colorbar(fig, ax, image, r"Significance [$\sigma$]", extend)
    if title is None:
        title = "Significance (ring background)"
        if finite.size:
            title += f" \u2014 max {finite.max():.2f}\u03c3"
    ax.set_title(title, fontsize=12, pad=10)
    _save(fig, path)
    return Path(path)


def plot_excess(path, excess, wcs, exclusion=None, *, title=None):
    """Plot a correlated excess sky map (counts) to a PNG file.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Output PNG file.
    excess : `~numpy.ndarray`
        2D correlated excess map, in counts.
    wcs : `~astropy.wcs.WCS`
        Celestial WCS of the map.
    exclusion : `~numpy.ndarray` of bool, optional
        2D mask, True where the pixel is used for background (not excluded); the
        excluded regions are outlined.
    title : str, optional
        Figure title; a default is used when None.

    Returns
    -------
    path : `~pathlib.Path`
        The written file.
    """
    excess = np.asarray(excess, dtype=float)
    if excess.ndim != 2:
        raise ValueError(f"excess map must be 2D, got shape {excess.shape}")
    fig, ax = _new_map_figure(excess.shape, wcs)
    finite = _finite(excess)
    if finite.size:
        vmin = float(np.percentile(finite, 0.5))
        vmax = float(finite.max())
        if not vmax > vmin:
            vmin, vmax = vmin - 0.5, vmin + 0.5
    else:
        vmin, vmax = 0.0, 1.0
    image = ax.imshow(
        excess, origin="lower", cmap=_cmap("inferno"),
        norm=Normalize(vmin=vmin, vmax=vmax), interpolation="nearest",
    )
    handle = _draw_exclusion(ax, exclusion, excess.shape, color="#7fd7ff")
    if handle is not None:
        ax.legend(handles=[handle], loc="upper right", fontsize=8, framealpha=0.75,
                  facecolor="#202020", edgecolor="#606060", labelcolor="white")
    extend = "min" if finite.size and finite.min() < vmin else "neither"
    _colorbar(fig, ax, image, "Correlated excess [counts]", extend)
    if title is None:
        title = "Correlated excess"
        if finite.size:
            title += f" \u2014 peak {finite.max():.1f} counts"
    ax.set_title(title, fontsize=12, pad=10)
    _save(fig, path)
    return Path(path)


def plot_significance_distribution(path, significance, exclusion, fit, *, title=None,
                                   off_significance=None):
    """Plot the distribution of pixel significances to a PNG file.

    Shows, as probability densities on a logarithmic axis, the significances of all
    finite pixels and of the off pixels (not excluded and finite), the fitted Gaussian
    and the standard normal N(0, 1) expected for background-only pixels.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Output PNG file.
    significance : `~numpy.ndarray`
        2D significance map.
    exclusion : `~numpy.ndarray` of bool or None
        Mask, True where the pixel is used for background; None means all pixels.
    fit : dict
        Gaussian fit of the off pixels, as returned by `fit_gaussian` (keys ``mean``,
        ``sigma``, ``mean_err``, ``sigma_err``, ``n_pixels``).
    title : str, optional
        Figure title; a default is used when None.
    off_significance : `~numpy.ndarray`, optional
        The significance the fit was made on (the run with the exclusion as fit mask): its
        non-excluded pixels are the off histogram. Default: ``significance``.

    Returns
    -------
    path : `~pathlib.Path`
        The written file.
    """
    significance = np.asarray(significance, dtype=float)
    off_source = significance if off_significance is None else np.asarray(off_significance,
                                                                             dtype=float)
    values_all = _finite(significance)
    if exclusion is None:
        values_off = _finite(off_source)
    else:
        exclusion = np.asarray(exclusion).astype(bool)
        if exclusion.shape != significance.shape:
            raise ValueError(
                f"exclusion mask shape {exclusion.shape} differs from map shape "
                f"{significance.shape}"
            )
        values_off = _finite(off_source[exclusion])

    fig = Figure(figsize=(8.0, 5.2), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    if values_all.size:
        lo = min(float(values_all.min()), -5.0)
        hi = max(float(values_all.max()), 5.0)
    else:
        lo, hi = -5.0, 5.0
    bins = np.linspace(lo, hi, int(np.clip((hi - lo) / 0.2, 20, 200)) + 1)
    width = bins[1] - bins[0]

    floor = None
    if values_all.size:
        ax.hist(values_all, bins=bins, density=True, histtype="stepfilled",
                color="#9ecae1", alpha=0.7, edgecolor="#3182bd", linewidth=1.0,
                label=f"all pixels (N = {values_all.size:,})")
        floor = 1.0 / (values_all.size * width)
    if values_off.size:
        ax.hist(values_off, bins=bins, density=True, histtype="step",
                color="#d94801", linewidth=1.6,
                label=f"off pixels (N = {values_off.size:,})")
        off_floor = 1.0 / (values_off.size * width)
        floor = off_floor if floor is None else min(floor, off_floor)

    x = np.linspace(lo, hi, 1000)
    fit = dict(fit or {})
    mean, sigma = fit.get("mean", math.nan), fit.get("sigma", math.nan)
    mean_err, sigma_err = fit.get("mean_err", math.nan), fit.get("sigma_err", math.nan)
    if mean is not None and sigma is not None and np.isfinite(mean) and np.isfinite(sigma):
        label = (
            f"Gaussian fit to off pixels\n"
            f"$\\mu$ = {mean:.3f} \u00b1 {_fmt_err(mean_err)}\n"
            f"$\\sigma$ = {sigma:.3f} \u00b1 {_fmt_err(sigma_err)}"
        )
        ax.plot(x, _normal_pdf(x, mean, abs(sigma)), color="black", linewidth=1.8,
                label=label)
    else:
        ax.plot([], [], color="black", linewidth=1.8,
                label="Gaussian fit: not available")

    ax.plot(x, _normal_pdf(x, 0.0, 1.0), color="#31a354", linestyle="--", linewidth=1.4,
            label="N(0, 1) (no signal)", zorder=3)

    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5 * floor if floor else 1e-5, top=2.0)
    ax.set_xlim(lo, hi)
    ax.set_xlabel(r"Significance [$\sigma$]")
    ax.set_ylabel("Probability density [1 / $\\sigma$]")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right", fontsize=9, framealpha=0.9)
    ax.set_title(title or "Significance distribution", fontsize=12)
    fig.tight_layout()
    _save(fig, path)
    return Path(path)


def _fmt_err(value):
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if value >= 1e-3 else f"{value:.1e}"


def make_figures(outdir, maps, wcs, summary, r_in_deg, r_out_deg):
    """Write the three standard figures of a run.

    Parameters
    ----------
    outdir : str or `~pathlib.Path`
        Output folder (created if needed).
    maps : dict of `~numpy.ndarray`
        2D maps with keys ``"SIGNIFICANCE"``, ``"EXCESS"`` and ``"EXCLUSION"``
        (1 = pixel not excluded, 0 = excluded), optionally ``"OFF_SIGNIFICANCE"`` (the
        significance of the run with the exclusion as fit mask, histogrammed for the off
        pixels; default ``"SIGNIFICANCE"``).
    wcs : `~astropy.wcs.WCS`
        Celestial WCS of the maps.
    summary : dict
        The run summary (``summary.json`` content). ``summary["off_distribution"]`` is
        used as the Gaussian fit; when absent it is computed with `fit_gaussian`.
    r_in_deg, r_out_deg : float or None
        Inner and outer ring radius in degrees, drawn for scale on the significance map.

    Returns
    -------
    figures : dict of `~pathlib.Path`
        ``{"significance": ..., "excess": ..., "significance_distribution": ...}``.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    significance = np.asarray(maps["SIGNIFICANCE"], dtype=float)
    excess = np.asarray(maps["EXCESS"], dtype=float)
    exclusion = maps.get("EXCLUSION")
    if exclusion is not None:
        exclusion = np.nan_to_num(np.asarray(exclusion, dtype=float), nan=0.0) > 0.5

    off_significance = maps.get("OFF_SIGNIFICANCE")
    off_significance = (significance if off_significance is None
                        else np.asarray(off_significance, dtype=float))
    fit = (summary or {}).get("off_distribution")
    if not fit:
        fit = fit_gaussian(off_significance if exclusion is None
                           else off_significance[exclusion])

    n_obs = (summary or {}).get("n_obs")
    suffix = f" ({n_obs} observation{'s' if n_obs != 1 else ''})" if n_obs else ""
    finite = _finite(significance)
    sig_title = "Significance (ring background)"
    if finite.size:
        sig_title += f" \u2014 max {finite.max():.2f}\u03c3"

    return {
        "significance": plot_significance(
            outdir / "significance.png", significance, wcs, exclusion,
            r_in_deg, r_out_deg, title=sig_title + suffix,
        ),
        "excess": plot_excess(
            outdir / "excess.png", excess, wcs, exclusion,
            title="Correlated excess" + suffix,
        ),
        "significance_distribution": plot_significance_distribution(
            outdir / "significance_distribution.png", significance, exclusion, fit,
            title="Significance distribution" + suffix,
            off_significance=off_significance,
        ),
    }
