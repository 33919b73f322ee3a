"""Figures: sky maps of a run's products and the significance distribution.

All figures are drawn on a `matplotlib.figure.Figure` attached to the Agg canvas
directly, so nothing here touches ``matplotlib.pyplot`` or the user's chosen
backend. matplotlib is imported on first use: importing this module is cheap, and a
run without figures never loads it.

`draw_map` draws one map on a WCSAxes (image, colour bar with the unit, exclusion
contour), for notebooks. The run's map figures (`map_figure`) draw the same on plain axes
in pixel coordinates and lay over them the WCSAxes frame (ticks, labels, grid) of their
geometry, drawn once per process and geometry (`prepare_frames`): WCSAxes' drawing was
about a third of each figure's time. `make_figures` writes the figures of a run,
rendered in worker processes (`start_renderer` starts them early, so that they import
matplotlib and draw the frames while the run computes).

Conventions
-----------
* Maps are 2D numpy arrays indexed ``[y, x]`` (FITS order), with a 2D celestial
  `astropy.wcs.WCS`.
* Exclusion masks follow gammapy: ``True`` (or 1) marks a pixel that may be used
  for the background estimate, ``False`` (0) a pixel inside an excluded region.
* Wide maps (longer than 4:1, e.g. a Galactic-plane survey) are drawn as several
  strips stacked vertically, each at most 4:1, sharing one colour bar.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .products import PRODUCTS
from .stats import fit_gaussian

__all__ = [
    "FIGURES",
    "draw_map",
    "figure_tasks",
    "make_figures",
    "make_figure_tasks",
    "start_render",
    "PendingFigures",
    "plot_product",
    "plot_excess",
    "plot_exclusion",
    "plot_map",
    "plot_significance",
    "plot_significance_distribution",
    "product_label",
    "render",
    "start_renderer",
    "stop_renderer",
]

log = logging.getLogger(__name__)

#: Resolution of all PNG figures, in dots per inch.
DPI = 120
#: Deflate of the PNG files: ISA-L's level 2 (a dependency, for reading) encodes a figure
#: ~5x faster than zlib's level 1 for about as many bytes; zlib's level 1 if isal is missing.
try:
    from isal import isal_zlib as _deflate_lib

    PNG_COMPRESS_LEVEL = 2
except ImportError:  # pragma: no cover (isal is a dependency)
    import zlib as _deflate_lib

    PNG_COMPRESS_LEVEL = 1
#: Most pixels of a figure (a big one gets a lower resolution than `DPI`).
MAX_PIXELS = 1.5e6
#: Longest aspect ratio (width / height) drawn as one map; longer maps are cut into strips.
MAX_STRIP_RATIO = 4.0

_BAD_COLOR = "#d0d0d0"
_CYLINDRICAL = ("CAR", "CEA", "MER", "CYP")
_EXCLUSION_COLOR = "#1a1a1a"

# layout of a map figure, in inches
_LEFT_IN, _BOTTOM_IN, _TOP_IN = 0.95, 0.62, 0.72
_STRIP_GAP_IN = 0.42
_CBAR_PAD_IN, _CBAR_W_IN, _CBAR_TEXT_IN = 0.14, 0.17, 1.0
_PANEL_PAD_IN, _PANEL_MIN_IN, _PANEL_MAX_IN = 0.2, 1.6, 3.5


# --------------------------------------------------------------------------- labels

#: Display names of the map products (others: their HDU name in words).
_NAMES = {
    "SIGNIFICANCE": "Significance",
    "EXCESS": "Correlated excess",
    "BACKGROUND": "Correlated background",
    "COUNTS": "Correlated counts",
    "ALPHA": "\u03b1 (on/off exposure ratio)",
    "FLUX": "Integral flux",
    "FLUX_ERR": "Flux error",
    "FLUX_UL": "Flux upper limit",
    "SENSITIVITY": "Sensitivity",
    "EXPOSURE": "Exposure",
    "EXCLUSION": "Exclusion mask",
    "EXCESS_ERRN": "Excess error (\u2212)",
    "EXCESS_ERRP": "Excess error (+)",
    "EXCESS_UL": "Excess upper limit",
    "ACCEPTANCE": "Acceptance",
    "ACCEPTANCE_OFF": "Acceptance (off)",
    "COUNTS_OFF": "Counts (off)",
    "LIVETIME": "Live time",
    "N_OBS": "Observations",
    "RING_R_IN": "Ring inner radius",
    "RING_R_OUT": "Ring outer radius",
}

#: Units shown instead of the stored one: (factor applied to the data, unit).
_DISPLAY_UNITS = {"LIVETIME": (1 / 3600, "h"), "SIGNIFICANCE": (1.0, "\u03c3"),
                  "TS": (1.0, "")}

_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075"
                             "\u2076\u2077\u2078\u2079")


def format_unit(unit):
    """A unit string of the product table for a label: ``"cm-2 s-1"`` -> ``"cm⁻² s⁻¹"``.

    ``count`` becomes ``counts``; exponents become Unicode superscripts (no mathtext).
    """
    words = []
    for word in str(unit or "").split():
        letters = word.rstrip("-0123456789")
        power = word[len(letters):]
        if letters == "count":
            letters = "counts"
        words.append(letters + power.translate(_SUPERSCRIPT))
    return " ".join(words)


def _display(name, unit=None):
    """(factor, unit) of a product as shown in figures."""
    if name in _DISPLAY_UNITS:
        return _DISPLAY_UNITS[name]
    if unit is None:
        product = PRODUCTS.get(name)
        unit = product.unit if product else ""
    return 1.0, unit


def product_label(name, exponent=0):
    """Colour-bar label of a product: its display name and unit, e.g. ``"Integral flux
    [10⁻¹² cm⁻² s⁻¹]"``; ``exponent``: a power of ten the data were divided by."""
    title = _NAMES.get(name, str(name).replace("_", " ").capitalize())
    unit = format_unit(_display(name)[1])
    if exponent:
        unit = f"10{str(exponent).translate(_SUPERSCRIPT)} {unit}".strip()
    return f"{title} [{unit}]" if unit else title


def _power_of_ten(values):
    """Exponent to divide by for readable colour-bar ticks (0 when already readable)."""
    span = _range(values)
    if span is None:
        return 0
    peak = max(abs(span[0]), abs(span[1]))
    if peak == 0 or 1e-2 <= peak < 1e4:
        return 0
    return int(math.floor(math.log10(peak)))


def _frame_name(wcs):
    """Name of the sky frame of a WCS: ``"icrs"``, ``"galactic"``, ... ."""
    ctype = str(wcs.wcs.ctype[0]).upper()
    if ctype.startswith("GLON"):
        return "galactic"
    radesys = str(wcs.wcs.radesys or "ICRS").strip().lower()
    return radesys or "icrs"


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


def _celestial(wcs):
    """The 2D celestial part of a WCS."""
    return wcs if wcs.naxis == 2 else wcs.celestial


def _as_image(values):
    """A map as a floating-point array, without copying float32 or float64 data."""
    values = np.asarray(values)
    return values if values.dtype in (np.float32, np.float64) else values.astype(np.float32)


def _finite(values):
    values = _as_image(values)
    return values[np.isfinite(values)]


def _range(values):
    """(min, max) of the finite values, or None (fast path without copies)."""
    values = np.asarray(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN
        low, high = np.nanmin(values), np.nanmax(values)
    if not (np.isfinite(low) and np.isfinite(high)):  # all NaN, or infinities
        finite = _finite(values)
        if finite.size == 0:
            return None
        low, high = finite.min(), finite.max()
    return float(low), float(high)


def _energy_text(energy_range_tev):
    if energy_range_tev is None:
        return None
    lo, hi = (float(e) for e in energy_range_tev)
    return f"{lo:.3g}\u2013{hi:.3g} TeV"


def _subtitle(energy_range_tev=None, correlation_radius_deg=None, n_obs=None):
    """The second title line: energy range, correlation radius, observations."""
    parts = []
    if energy_range_tev is not None:
        parts.append(_energy_text(energy_range_tev))
    if correlation_radius_deg is not None:
        parts.append(f"correlation radius {float(correlation_radius_deg):g}\u00b0")
    if n_obs:
        parts.append(f"{n_obs} observation{'s' if n_obs != 1 else ''}")
    return " \u00b7 ".join(parts)


# --------------------------------------------------------------------------- layout


@dataclass
class Layout:
    """Where the parts of a map figure go, as figure fractions ``[left, bottom, w, h]``.

    ``strips``: the x pixel ranges ``(x0, x1)`` drawn by each map axes (one unless the map
    is wider than `MAX_STRIP_RATIO`), top to bottom, with their axes rectangles in
    ``axes``; ``colorbar``: the colour bar beside them; ``panel``: the scale panel (or
    None); ``size_in``: the figure size; ``inch_per_deg``: map scale on the page.
    """

    size_in: tuple
    axes: list
    strips: list
    colorbar: list
    panel: list | None = None
    inch_per_deg: float = 1.0
    panel_in: float = 0.0


def _strips(nx, ny):
    """x pixel ranges cutting a map into strips of at most `MAX_STRIP_RATIO`."""
    n = max(1, math.ceil(nx / max(ny, 1) / MAX_STRIP_RATIO - 1e-9))
    edges = np.linspace(0, nx, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def map_layout(shape, binsize_deg=None, panel_deg=None):
    """The `Layout` of a figure of a map of ``shape`` (ny, nx).

    Parameters
    ----------
    shape : tuple of int
        Map shape (ny, nx).
    binsize_deg : float, optional
        Pixel size, for the map scale (``inch_per_deg``).
    panel_deg : float, optional
        Diameter in degrees of what the scale panel shows (the ring); the panel is drawn at
        the map's scale when that fits in `_PANEL_MAX_IN` inches, smaller otherwise.
    """
    ny, nx = (max(int(n), 1) for n in shape)
    strips = _strips(nx, ny)
    widest = max(b - a for a, b in strips)
    ratio = widest / ny
    if ratio >= 1:
        width = float(np.clip(5.4 * math.sqrt(ratio), 5.4, 12.0))
        height = width / ratio
    else:
        height = min(5.4 / math.sqrt(ratio), 7.5)
        width = max(height * ratio, 0.6)
    n = len(strips)
    maps_h = n * height + (n - 1) * _STRIP_GAP_IN
    inch_per_deg = width / (widest * binsize_deg) if binsize_deg else 1.0
    panel_in = 0.0
    if panel_deg:
        panel_in = float(np.clip(panel_deg * inch_per_deg, _PANEL_MIN_IN, _PANEL_MAX_IN))
    fig_w = (_LEFT_IN + width + _CBAR_PAD_IN + _CBAR_W_IN + _CBAR_TEXT_IN
             + (_PANEL_PAD_IN + panel_in if panel_in else 0.0))
    fig_h = _BOTTOM_IN + max(maps_h, panel_in) + _TOP_IN
    axes = []
    for k, (x0, x1) in enumerate(strips):
        bottom = _BOTTOM_IN + (n - 1 - k) * (height + _STRIP_GAP_IN)
        strip_w = width * (x1 - x0) / widest  # square pixels in every strip
        axes.append([_LEFT_IN / fig_w, bottom / fig_h, strip_w / fig_w, height / fig_h])
    cbar_x = _LEFT_IN + width + _CBAR_PAD_IN
    colorbar = [cbar_x / fig_w, _BOTTOM_IN / fig_h, _CBAR_W_IN / fig_w, maps_h / fig_h]
    panel = None
    if panel_in:
        panel_x = cbar_x + _CBAR_W_IN + _CBAR_TEXT_IN + _PANEL_PAD_IN
        panel = [panel_x / fig_w, _BOTTOM_IN / fig_h, panel_in / fig_w, panel_in / fig_h]
    return Layout((fig_w, fig_h), axes, strips, colorbar, panel, inch_per_deg, panel_in)


# --------------------------------------------------------------------------- drawing


def _cmap(name):
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad=_BAD_COLOR)


def _block_mean(data, factor):
    """Mean over ``factor x factor`` blocks, ignoring NaN (edge blocks padded with NaN)."""
    if factor <= 1:
        return data
    ny, nx = data.shape
    py, px = -ny % factor, -nx % factor
    padded = np.pad(np.asarray(data, float), ((0, py), (0, px)), constant_values=np.nan)
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
        return np.nanmean(blocks, axis=(1, 3))


def _block_fraction(mask, factor):
    """Fraction of True pixels in ``factor x factor`` blocks (edge blocks: of those there)."""
    if factor <= 1:
        return mask.astype(np.float32)
    ny, nx = mask.shape
    py, px = -ny % factor, -nx % factor
    count = np.pad(mask, ((0, py), (0, px))).astype(np.float32)
    present = np.pad(np.ones(mask.shape, np.float32), ((0, py), (0, px)))
    shape = (count.shape[0] // factor, factor, count.shape[1] // factor, factor)
    return count.reshape(shape).sum(axis=(1, 3)) / present.reshape(shape).sum(axis=(1, 3))


def _pixels_per_screen_pixel(ax, shape):
    """Map pixels per pixel of the axes on the page (the smaller of x and y)."""
    fig = ax.figure
    box = ax.get_position()
    width_px = box.width * fig.get_figwidth() * fig.dpi
    height_px = box.height * fig.get_figheight() * fig.dpi
    ny, nx = shape
    return min(nx / max(width_px, 1.0), ny / max(height_px, 1.0))


def _display_factor(ax, shape):
    """Integer downsampling that brings the map to about the axes' pixel resolution."""
    return max(int(_pixels_per_screen_pixel(ax, shape)), 1)


def _style_axes(ax, wcs, lon_label=True, grid=True):
    """Frame labels, degree tick labels (no mathtext) and the coordinate grid."""
    if not hasattr(ax, "coords"):
        return
    lon_text, lat_text = _frame_labels(wcs)
    lon, lat = ax.coords[0], ax.coords[1]
    lon.set_axislabel(lon_text if lon_label else "")
    lat.set_axislabel(lat_text)
    lon.set_major_formatter("d.d")
    lat.set_major_formatter("d.d")
    lon.set_ticks(color="#333333")
    lat.set_ticks(color="#333333")
    if str(wcs.wcs.ctype[0])[-3:].upper() in _CYLINDRICAL:
        # meridians only cross the bottom and top of a cylindrical map, parallels only its
        # sides: looking for the ticks on the other two is half of WCSAxes' drawing time
        lon.set_ticks_position("bt")
        lat.set_ticks_position("lr")
    if grid:
        ax.coords.grid(color="#888888", alpha=0.35, linestyle=":", linewidth=0.6)


def _check_exclusion(exclusion, shape):
    if exclusion is None:
        return None
    exclusion = np.asarray(exclusion)
    if exclusion.shape != tuple(shape):
        raise ValueError(
            f"exclusion mask shape {exclusion.shape} differs from map shape {tuple(shape)}"
        )
    if exclusion.dtype == bool:
        return exclusion
    return np.nan_to_num(exclusion.astype(np.float32), nan=0.0) > 0.5


def _draw_exclusion(ax, exclusion, x_range, factor, color=_EXCLUSION_COLOR):
    """Dashed outline of the excluded regions (``exclusion == False``) in a pixel range."""
    if exclusion is None:
        return None
    x0, x1 = x_range
    excluded = ~exclusion[:, x0:x1]
    if not excluded.any() or excluded.all():
        return None
    # the outline needs no more than the page's resolution
    factor = max(factor, math.ceil(_pixels_per_screen_pixel(ax, excluded.shape) - 1e-9))
    z = _block_fraction(excluded, factor)
    xs = x0 + factor * np.arange(z.shape[1]) + (factor - 1) / 2
    ys = factor * np.arange(z.shape[0]) + (factor - 1) / 2
    ax.contour(xs, ys, z, levels=[0.5], colors=color, linewidths=1.1, linestyles="--")
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, linestyle="--", linewidth=1.1, label="excluded regions")


def _draw_image(ax, data, x_range, cmap, norm):
    """The map's pixels ``x_range`` as an image, downsampled to the axes' resolution.

    On plain axes (`map_figure`), a map not downsampled is coloured at its own resolution
    and drawn as a `_pixel_image`; the returned image is then a
    `~matplotlib.cm.ScalarMappable` of ``cmap`` and ``norm`` (for the colour bar)."""
    x0, x1 = x_range
    ny = data.shape[0]
    part = data[:, x0:x1]
    factor = _display_factor(ax, part.shape)
    if factor == 1 and not hasattr(ax, "coords") and _pixel_images_match_imshow():
        from matplotlib.cm import ScalarMappable

        _pixel_image(ax, cmap(norm(part), bytes=True), x0)
        ax.set_xlim(x0 - 0.5, x1 - 0.5)
        ax.set_ylim(-0.5, ny - 0.5)
        return ScalarMappable(norm=norm, cmap=cmap), factor
    shown = _block_mean(part, factor)
    image = ax.imshow(
        shown, origin="lower", cmap=cmap, norm=norm,
        extent=(x0 - 0.5, x0 - 0.5 + shown.shape[1] * factor, -0.5,
                -0.5 + shown.shape[0] * factor),
        interpolation="nearest" if factor == 1 else "antialiased",
        interpolation_stage="data",  # resample the values, colour the (smaller) result
    )
    ax.set_xlim(x0 - 0.5, x1 - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    return image, factor


def _pixel_images_match_imshow():
    """`_pixel_image` places and samples the screen pixels as matplotlib 3.11's imshow
    ("nearest"); older versions placed images otherwise, and get imshow itself."""
    import matplotlib

    try:
        version = tuple(int(part) for part in matplotlib.__version__.split(".")[:2])
    except ValueError:
        return False
    return version >= (3, 11)


def _pixel_image(ax, rgba, x0):
    """Draw ``rgba`` (``(ny, nx, 4)`` uint8, one entry per map pixel, row 0 at the bottom,
    column 0 at map pixel ``x0``) on plain axes in pixel coordinates, one colour per screen
    pixel: the map pixel under its centre (as imshow's "nearest", without its resampling
    of the whole screen area, which was most of a map figure's image time)."""
    from matplotlib.artist import Artist

    class PixelImage(Artist):
        zorder = 0

        def draw(self, renderer):
            if not self.get_visible():
                return
            box = ax.bbox
            if box.width <= 0 or box.height <= 0:
                return
            # as imshow places its output: the axes' box rounded to whole screen pixels,
            # each the colour at its centre
            left, bottom = math.floor(box.x0 + 0.5), math.ceil(box.y0 - 0.5 - 1e-8)
            width = math.floor(box.x1 + 0.5 + 1e-8) - left
            height = math.ceil(box.y1 - 0.5) - bottom
            if width <= 0 or height <= 0:
                return
            inverse = ax.transData.inverted()
            xs = inverse.transform(np.column_stack([left + np.arange(width) + 0.5,
                                                    np.full(width, bottom)]))[:, 0]
            ys = inverse.transform(np.column_stack([np.full(height, left),
                                                    bottom + np.arange(height) + 0.5]))[:, 1]
            ny, nx = rgba.shape[:2]
            cols = np.ceil(xs - (x0 - 0.5)).astype(np.intp) - 1
            rows = np.ceil(ys + 0.5).astype(np.intp) - 1
            cols, rows = np.clip(cols, 0, nx - 1), np.clip(rows, 0, ny - 1)
            screen = rgba[rows][:, cols]  # (Agg's draw_image: bottom row first)
            gc = renderer.new_gc()
            gc.set_clip_rectangle(box.frozen())
            renderer.draw_image(gc, left, bottom, np.ascontiguousarray(screen))
            gc.restore()
            self.stale = False

    image = PixelImage()
    image.set_clip_on(False)
    ax.add_artist(image)
    return image


def _extend(data, norm):
    span = _range(data)
    if span is None or norm is None or norm.vmin is None:
        return "neither"
    low, high = bool(span[0] < norm.vmin), bool(span[1] > norm.vmax)
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (low, high), "neither")


def _colorbar(ax, image, label, data, cax=None):
    """A colour bar with ``label`` in ``cax`` (default: an inset right of ``ax``)."""
    if cax is None:
        cax = ax.inset_axes([1.03, 0.0, 0.035, 1.0])
    cbar = ax.figure.colorbar(image, cax=cax, extend=_extend(data, image.norm))
    cbar.set_label(label)
    return cbar


#: the colour bar's extensions (triangles), as a fraction of its length (matplotlib's)
_EXTEND_FRACTION = 0.05


def colourbar_ticks(vmin, vmax, length_pt):
    """The ticks of a linear colour bar from ``vmin`` to ``vmax`` that is ``length_pt``
    points long, as matplotlib's `~matplotlib.colorbar.Colorbar` chooses and labels them
    (its axis' `~matplotlib.ticker.AutoLocator` and
    `~matplotlib.ticker.ScalarFormatter`).

    Returns
    -------
    values : `~numpy.ndarray`
        Tick values within ``[vmin, vmax]``.
    labels : list of str
    offset : str
        The formatter's offset or power of ten ('' if none).
    """
    from matplotlib import rcParams
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    vmin, vmax = _nonsingular(vmin, vmax)
    size_pt = _font_size_pt(rcParams["ytick.labelsize"]) * 2
    nbins = max(min(int(math.floor(length_pt / size_pt)) if size_pt > 0 else 9, 9), 1)
    locator = MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10])
    values = np.asarray(locator.tick_values(vmin, vmax), float)
    formatter = ScalarFormatter()
    formatter.create_dummy_axis()
    formatter.axis.set_view_interval(vmin, vmax)
    formatter.axis.set_data_interval(vmin, vmax)
    labels = formatter.format_ticks(values)  # all of them: they set the precision
    # as an axis draws the ticks within its view (up to rounding)
    span = vmax - vmin
    inside = (values >= vmin - 1e-10 * span) & (values <= vmax + 1e-10 * span)
    return values[inside], [t for t, k in zip(labels, inside) if k], formatter.get_offset()


def _nonsingular(vmin, vmax, expander=0.1, tiny=1e-15):
    """The range a colour bar shows for ``(vmin, vmax)``: widened by ``expander`` (relative,
    or absolute around 0) where it is empty, (-expander, expander) where not finite (as
    matplotlib's colour bars do)."""
    vmin, vmax = float(vmin), float(vmax)
    if not (math.isfinite(vmin) and math.isfinite(vmax)):
        return -expander, expander
    vmin, vmax = min(vmin, vmax), max(vmin, vmax)
    largest = max(abs(vmin), abs(vmax))
    if largest < 1e6 / tiny * np.finfo(float).tiny:
        return -expander, expander
    if vmax - vmin <= largest * tiny:
        if vmin == 0 and vmax == 0:
            return -expander, expander
        return vmin - expander * abs(vmin), vmax + expander * abs(vmax)
    return vmin, vmax


def _font_size_pt(size):
    from matplotlib.font_manager import FontProperties

    return FontProperties(size=size).get_size_in_points()


def _colour_bar(fig, rect, cmap, norm, label, extend="neither"):
    """A vertical colour bar in ``rect`` (figure fraction) drawn straight onto the figure,
    as matplotlib's `~matplotlib.colorbar.Colorbar` draws one in axes there (same ticks,
    labels, extensions and colours) without its axes: their ticks were a third of a map
    figure's time. Linear norms only (`_colorbar` otherwise). Returns the artist."""
    from matplotlib import rcParams
    from matplotlib.artist import Artist
    from matplotlib.path import Path as MPath
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox, IdentityTransform

    vmin, vmax = _nonsingular(norm.vmin, norm.vmax)
    lower, upper = extend in ("both", "min"), extend in ("both", "max")
    n_ext = _EXTEND_FRACTION * (lower + upper)
    inner_pt = rect[3] * fig.get_figheight() * 72 / (1 + n_ext)
    values, tick_labels, offset = colourbar_ticks(vmin, vmax, inner_pt)
    lut = np.rint(cmap(np.arange(cmap.N)) * 255).astype(np.uint8)  # as Agg rounds them
    under, over = cmap(-np.inf), cmap(np.inf)
    identity = IdentityTransform()

    def text(string, **kwargs):
        t = Text(0, 0, string, transform=identity, **kwargs)
        t.set_figure(fig)
        return t

    tick_size = rcParams["ytick.labelsize"]
    tick_color = rcParams["ytick.labelcolor"]
    if tick_color == "inherit":
        tick_color = rcParams["ytick.color"]
    texts = [text(t, fontsize=tick_size, color=tick_color, ha="left", va="center_baseline")
             for t in tick_labels]
    label_text = text(label, fontsize=rcParams["axes.labelsize"], rotation=90,
                      rotation_mode="anchor", ha="center", va="top",
                      color=rcParams["axes.labelcolor"])
    offset_text = text(offset, fontsize=tick_size, color=tick_color, ha="right",
                       va="baseline") if offset else None

    def corners():
        """``rect`` in display pixels: ``(x0, y0), (x1, y1)``."""
        return fig.transFigure.transform(
            [(rect[0], rect[1]), (rect[0] + rect[2], rect[1] + rect[3])])

    class ColourBar(Artist):
        zorder = 3

        def get_window_extent(self, renderer=None):
            """The bar with its extensions, and its texts once drawn."""
            boxes = [Bbox(corners())]
            if self._drawn_by is not None:
                boxes += [t.get_window_extent(self._drawn_by) for t in texts + [label_text]]
            return Bbox.union(boxes)

        def draw(self, renderer):
            self._drawn_by = renderer
            if not self.get_visible():
                return
            (x0, y0), (x1, y1) = corners()
            length = (y1 - y0) / (1 + n_ext)
            b0 = y0 + (_EXTEND_FRACTION * length if lower else 0.0)
            b1 = b0 + length
            bot = b0 - (_EXTEND_FRACTION * length if lower else 0.0)
            top = b1 + (_EXTEND_FRACTION * length if upper else 0.0)
            xm = 0.5 * (x0 + x1)
            px = renderer.points_to_pixels
            # the colours: one band per colour map entry; each screen pixel takes the band
            # under its centre (the mesh matplotlib draws, not antialiased)
            left, right = math.ceil(x0 - 0.5), math.ceil(x1 - 0.5)
            bottom, height = math.ceil(b0 - 0.5), math.ceil(b1 - 0.5) - math.ceil(b0 - 0.5)
            if right > left and height > 0:
                centres = bottom + np.arange(height) + 0.5
                band = np.clip(np.floor((centres - b0) / length * cmap.N).astype(np.intp),
                               0, cmap.N - 1)
                column = lut[band][:, None, :]
                image = np.ascontiguousarray(np.broadcast_to(
                    column, (height, right - left, 4)))
                gc = renderer.new_gc()
                renderer.draw_image(gc, left, bottom, image)
                gc.restore()
            fill = renderer.new_gc()
            fill.set_antialiased(False)
            fill.set_linewidth(0)
            for on, base, tip, color in ((lower, b0, bot, under), (upper, b1, top, over)):
                if on:
                    triangle = MPath([(x0, base), (xm, tip), (x1, base), (x0, base)],
                                     closed=True)
                    renderer.draw_path(fill, triangle, identity, tuple(color))
            fill.restore()
            outline = [(x0, b0), (xm, bot), (x1, b0), (x1, b1), (xm, top), (x0, b1)]
            outline = [p for k, p in enumerate(outline) if k not in (
                () if lower and upper else (1,) if upper else (4,) if lower else (1, 4))]
            edge = renderer.new_gc()
            edge.set_linewidth(rcParams["axes.linewidth"])
            edge.set_foreground(rcParams["axes.edgecolor"])
            edge.set_joinstyle("miter")
            edge.set_capstyle("projecting")
            renderer.draw_path(edge, MPath(outline + [outline[0]], closed=True), identity)
            edge.restore()
            size, pad = px(rcParams["ytick.major.size"]), px(rcParams["ytick.major.pad"])
            ys = b0 + (values - vmin) / (vmax - vmin) * length
            if ys.size:
                ticks = MPath(np.column_stack([np.tile([x1, x1 + size], ys.size),
                                               np.repeat(ys, 2)]),
                              np.tile([MPath.MOVETO, MPath.LINETO], ys.size))
                mark = renderer.new_gc()
                mark.set_linewidth(rcParams["ytick.major.width"])
                mark.set_foreground(rcParams["ytick.color"])
                mark.set_capstyle("butt")
                mark.set_snap(True)
                renderer.draw_path(mark, ticks, identity)
                mark.restore()
            right_edge = x1
            for t, y in zip(texts, ys):
                t.set_position((x1 + size + pad, y))
                t.draw(renderer)
                right_edge = max(right_edge, t.get_window_extent(renderer).x1)
            if offset_text is not None:
                offset_text.set_position((x1, top + px(3)))  # ending above the bar's edge
                offset_text.draw(renderer)
            label_text.set_position((right_edge + px(rcParams["axes.labelpad"]),
                                     0.5 * (b0 + b1)))
            label_text.draw(renderer)
            self.stale = False

    bar = ColourBar()
    bar._drawn_by = None
    bar.label = label
    bar.ticks = (values, tick_labels, offset)
    fig.add_artist(bar)
    return bar


def draw_map(ax, data, wcs, *, label, cmap="viridis", norm=None, exclusion=None, cax=None,
             colorbar=True):
    """Draw a sky map on a WCSAxes: the image, the colour bar and the exclusion contour.

    The image is drawn at the axes' resolution: a map with more pixels than the axes is
    averaged over blocks first (NaN ignored), so big maps draw fast. NaN pixels are grey.

    Parameters
    ----------
    ax : `~astropy.visualization.wcsaxes.WCSAxes`
        Axes made with ``projection=wcs`` (a plain Axes draws in pixel coordinates).
    data : `~numpy.ndarray`
        2D map, indexed ``[y, x]``.
    wcs : `~astropy.wcs.WCS`
        Celestial WCS of the map.
    label : str
        Colour-bar label, with the unit (see `product_label`).
    cmap : str
        Name of a matplotlib colour map.
    norm : `~matplotlib.colors.Normalize`, optional
        Colour scale; default: the data's 0.5 to 99.9 percentiles.
    exclusion : `~numpy.ndarray` of bool, optional
        Same shape as ``data``, True where the pixel is used for the background; the
        excluded regions are outlined with a dashed contour.
    cax : `~matplotlib.axes.Axes`, optional
        Axes for the colour bar; default: an inset on the right of ``ax``.
    colorbar : bool
        Draw the colour bar.

    Returns
    -------
    image : `~matplotlib.image.AxesImage`
    """
    data = _as_image(data)
    if data.ndim != 2:
        raise ValueError(f"map must be 2D, got shape {data.shape}")
    exclusion = _check_exclusion(exclusion, data.shape)
    if norm is None:
        norm = _percentile_norm(data)
    _style_axes(ax, _celestial(wcs))
    image, factor = _draw_image(ax, data, (0, data.shape[1]), _cmap(cmap), norm)
    _draw_exclusion(ax, exclusion, (0, data.shape[1]), factor)
    if colorbar:
        _colorbar(ax, image, label, data, cax)
    return image


def _percentile_norm(data, low=0.5, high=99.9, symmetric=False, zero_floor=False):
    """Colour scale from percentiles (of a subsample of at most ~1e6 pixels)."""
    from matplotlib.colors import Normalize

    data = np.asarray(data)
    step = max(1, data.size // 1_000_000)
    finite = _finite(data.ravel()[::step])
    if finite.size == 0:
        return Normalize(0.0, 1.0)
    if symmetric:
        limit = float(np.percentile(np.abs(finite), high)) or 1.0
        return Normalize(-limit, limit)
    vmin, vmax = (float(v) for v in np.percentile(finite, [low, high]))
    if zero_floor:
        vmin = min(0.0, _range(data)[0])
    if not vmax > vmin:
        vmin, vmax = vmin - 0.5, vmin + 0.5
    return Normalize(vmin, vmax)


def _significance_limit(values):
    """Symmetric colour range for a significance map: at least 5, at most 10 sigma."""
    span = _range(values)
    if span is None:
        return 5.0
    peak = max(abs(span[0]), abs(span[1]))
    return float(np.clip(math.ceil(peak), 5.0, 10.0))


def _new_figure(size_in):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width_in, height_in = size_in
    dpi = min(DPI, math.sqrt(MAX_PIXELS / (width_in * height_in)))  # big survey figures
    fig = Figure(figsize=size_in, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Render ``fig`` once and write it as an RGB PNG to ``path`` (see `write_png`)."""
    canvas = fig.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return write_png(path, rgba[..., :3])


def write_png(path, rgb):
    """Write an ``(ny, nx, 3)`` uint8 image as PNG to ``path`` (a file name, whose folder
    must exist, or a binary file object): rows unfiltered, deflated by ISA-L (zlib format,
    `PNG_COMPRESS_LEVEL`).

    About ten times as fast as Pillow's encoder at its fastest level, and smaller for noisy
    sky maps (whose pixels the PNG row filters only make less compressible).
    """
    import struct
    import zlib

    from .version import __version__

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    ny, nx, _ = rgb.shape
    raw = np.zeros((ny, 3 * nx + 1), np.uint8)  # filter byte 0 (none) per row
    raw[:, 1:] = rgb.reshape(ny, -1)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    png = b"".join([
        b"\x89PNG\r\n\x1a\n",
        chunk(b"IHDR", struct.pack(">IIBBBBB", nx, ny, 8, 2, 0, 0, 0)),
        chunk(b"tEXt", b"Software\x00" + f"ringbg {__version__}".encode()),
        chunk(b"IDAT", _deflate_lib.compress(raw.tobytes(), PNG_COMPRESS_LEVEL)),
        chunk(b"IEND", b""),
    ])
    if hasattr(path, "write"):
        path.write(png)
        return path
    path = Path(path)
    path.write_bytes(png)
    return path


# --------------------------------------------------------------------------- figures


@dataclass
class MapFigure:
    """A map figure being built: the figure, its map axes (one per strip, plain axes in
    pixel coordinates), its layout, and what its coordinate frame is drawn from (the
    arguments of `_frame_layer`), which `_save_map` lays over the drawing."""

    fig: object
    axes: list
    layout: Layout
    images: list = field(default_factory=list)
    factors: list = field(default_factory=list)
    frame: tuple | None = None
    colorbar: object = None


def map_figure(data, wcs, *, label, cmap, norm, exclusion=None, title=None, subtitle=None,
               panel_deg=None, grid=True, exclusion_color=_EXCLUSION_COLOR):
    """A figure of one map (`Layout`: strips for wide maps), with colour bar and contour.

    The map is drawn on plain axes in pixel coordinates; its coordinate frame (WCSAxes'
    ticks, labels and grid, which depend on the geometry only) is drawn once per process
    and geometry and laid over it when the figure is saved (`_save_map`).

    Returns a `MapFigure`; its ``layout.panel`` (when ``panel_deg`` is given) is free for
    a scale panel. See `draw_map` for the parameters.
    """
    from matplotlib.colors import Normalize

    data = _as_image(data)
    if data.ndim != 2:
        raise ValueError(f"map must be 2D, got shape {data.shape}")
    exclusion = _check_exclusion(exclusion, data.shape)
    wcs = _celestial(wcs)
    layout = _wcs_layout(wcs, data.shape, panel_deg)
    fig = _new_figure(layout.size_in)
    out = MapFigure(fig, [], layout, frame=(wcs, data.shape, layout, bool(grid)))
    cmap = _cmap(cmap)
    for rect, x_range in zip(layout.axes, layout.strips):
        ax = fig.add_axes(rect)
        ax.set_axis_off()
        ax.set_aspect("equal")
        image, factor = _draw_image(ax, data, x_range, cmap, norm)
        _draw_exclusion(ax, exclusion, x_range, factor, exclusion_color)
        out.axes.append(ax)
        out.images.append(image)
        out.factors.append(factor)
    if type(out.images[0].norm) is Normalize:
        out.colorbar = _colour_bar(fig, layout.colorbar, cmap, out.images[0].norm, label,
                                   _extend(data, out.images[0].norm))
    else:
        out.colorbar = _colorbar(out.axes[0], out.images[0], label, data,
                                 fig.add_axes(layout.colorbar))
    if title:
        top = layout.axes[0][1] + layout.axes[0][3]
        text_y = top + 0.12 / layout.size_in[1]
        if subtitle:
            fig.text(layout.axes[0][0], text_y, subtitle, fontsize=9, color="#444444",
                     ha="left", va="bottom")
            text_y += 0.24 / layout.size_in[1]
        fig.text(layout.axes[0][0], text_y, title, fontsize=12, ha="left", va="bottom")
    return out


#: The coordinate frames of map figures drawn so far in this process (`_frame_layer`)
_FRAMES = {}
_FRAMES_MAX = 8


def _wcs_layout(wcs, shape, panel_deg=None):
    """The `map_layout` of a map of ``shape`` with the (celestial) ``wcs``."""
    return map_layout(shape, float(np.mean(np.abs(wcs.wcs.cdelt[:2]))), panel_deg)


def _frame_key(wcs, shape, layout, grid):
    # (the figure's resolution follows from its size, see _new_figure)
    return (wcs.to_header_string(relax=True), tuple(shape), tuple(layout.size_in),
            tuple(tuple(r) for r in layout.axes), tuple(layout.strips), grid)


def _frame_layer(wcs, shape, layout, grid):
    """The coordinate frame of a map figure: WCSAxes' frame, ticks, tick and axis labels
    and grid, drawn alone on a transparent figure of the map figure's layout.

    Returns ``(index, rgb, alpha)``: the flat indices of the figure's pixels that the frame
    covers, their colours (float32, ``(n, 3)``) and opacities (float32, 0-1). Drawn once
    per geometry and process (`_FRAMES`).
    """
    key = _frame_key(wcs, shape, layout, grid)
    layer = _FRAMES.get(key)
    if layer is not None:
        return layer
    _import_wcsaxes()
    fig = _new_figure(layout.size_in)
    fig.patch.set_alpha(0.0)
    ny = shape[0]
    last = len(layout.strips) - 1
    for k, (rect, (x0, x1)) in enumerate(zip(layout.axes, layout.strips)):
        ax = fig.add_axes(rect, projection=wcs)
        ax.patch.set_visible(False)
        _style_axes(ax, wcs, lon_label=k == last, grid=grid)
        ax.set_xlim(x0 - 0.5, x1 - 0.5)
        ax.set_ylim(-0.5, ny - 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba()).reshape(-1, 4)
    index = np.flatnonzero(rgba[:, 3])
    rgb = rgba[index, :3].astype(np.float32)
    alpha = rgba[index, 3].astype(np.float32) / np.float32(255)
    if len(_FRAMES) >= _FRAMES_MAX:
        _FRAMES.pop(next(iter(_FRAMES)))
    _FRAMES[key] = layer = (index, rgb, alpha)
    return layer


def prepare_frames(wcs, shape, panel_degs=(None,)):
    """Draw the coordinate frames of the map figures of a geometry ahead of the maps
    (`_frame_layer`): with and without the grid, for each scale panel size in
    ``panel_degs`` (None: no panel)."""
    wcs = _celestial(wcs)
    for panel_deg in panel_degs:
        layout = _wcs_layout(wcs, shape, panel_deg)
        for grid in (True, False) if panel_deg is None else (True,):
            _frame_layer(wcs, shape, layout, grid)


def _save_map(m, path):
    """Render a `MapFigure`, lay its coordinate frame over it (under the legends, as a
    WCSAxes draws it) and write the PNG (see `write_png`)."""
    canvas = m.fig.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    height, width = rgba.shape[:2]
    rgb = np.array(rgba[..., :3])
    index, color, alpha = _frame_layer(*m.frame)
    legends = [ax.get_legend() for ax in m.axes if ax.get_legend() is not None]
    if legends:
        rows, cols = np.divmod(index, width)
        y = height - rows  # display y of the pixels' top edges
        keep = np.ones(index.size, bool)
        for legend in legends:
            box = legend.get_window_extent(canvas.get_renderer())
            keep &= ~((cols >= math.floor(box.x0)) & (cols < math.ceil(box.x1))
                      & (y > math.floor(box.y0)) & (y <= math.ceil(box.y1)))
        index, color, alpha = index[keep], color[keep], alpha[keep]
    flat = rgb.reshape(-1, 3)
    under = flat[index].astype(np.float32)
    a = alpha[:, None]
    flat[index] = np.rint(color * a + under * (1 - a)).astype(np.uint8)
    return write_png(path, rgb)


def _legend(ax, handles, dark=False):
    if not handles:
        return
    if dark:
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.75,
                  facecolor="#202020", edgecolor="#606060", labelcolor="white")
    else:
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.8)


def _exclusion_handle(exclusion, color=_EXCLUSION_COLOR):
    exclusion = None if exclusion is None else np.asarray(exclusion).astype(bool)
    if exclusion is None or exclusion.all() or not exclusion.any():
        return []
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=color, linestyle="--", linewidth=1.1,
                   label="excluded regions")]


def _ring_panel(fig, rect, panel_in, inch_per_deg, r_in_deg, r_out_deg,
                correlation_radius_deg=None, r_out_max_deg=None):
    """The ring (and the correlation circle) in a panel beside the map, at the map scale
    when it fits (else smaller, and said so)."""
    from matplotlib.patches import Circle, Wedge

    ax = fig.add_axes(rect)
    ax.set_axis_off()
    outer = max(r_out_deg, r_out_max_deg or 0.0)
    half_deg = 0.5 * panel_in / inch_per_deg
    scale = 1.0
    if half_deg < 1.08 * outer:  # does not fit at the map scale
        scale = half_deg / (1.08 * outer)
    half = half_deg / scale
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_aspect("equal")
    ax.add_patch(Wedge((0, 0), r_out_deg, 0, 360, width=r_out_deg - r_in_deg,
                       facecolor="black", alpha=0.12, edgecolor="none"))
    for radius in (r_in_deg, r_out_deg):
        ax.add_patch(Circle((0, 0), radius, facecolor="none", edgecolor="black",
                            linewidth=1.1, alpha=0.85))
    if r_out_max_deg:
        ax.add_patch(Circle((0, 0), r_out_max_deg, facecolor="none", edgecolor="black",
                            linewidth=0.9, linestyle=":", alpha=0.8))
    if correlation_radius_deg:
        ax.add_patch(Circle((0, 0), correlation_radius_deg, facecolor="#d94801",
                            edgecolor="#d94801", alpha=0.8))
    note = "to map scale" if scale == 1.0 else f"{scale:.2g} \u00d7 map scale"
    lines = [f"ring {r_in_deg:.3g}\u00b0\u2013{r_out_deg:.3g}\u00b0"]
    if r_out_max_deg:
        lines.append(f"adaptive: \u2264 {r_out_max_deg:.3g}\u00b0 (dotted)")
    if correlation_radius_deg:
        lines += [f"correlation {correlation_radius_deg:.3g}\u00b0", "(orange disc)"]
    lines.append(f"({note})")
    ax.text(0.5, 1.0, "\n".join(lines), transform=ax.transAxes, ha="center", va="bottom",
            fontsize=8.5, linespacing=1.3)
    return ax


def plot_map(path, data, wcs, *, label, title=None, subtitle=None, cmap="viridis", norm=None,
             exclusion=None, exclusion_color=_EXCLUSION_COLOR, dark_legend=False, grid=True):
    """Plot one sky map to a PNG file (see `draw_map`); returns the path."""
    data = _as_image(data)
    if norm is None:
        norm = _percentile_norm(data)
    m = map_figure(data, wcs, label=label, cmap=cmap, norm=norm, exclusion=exclusion,
                   title=title, subtitle=subtitle, grid=grid, exclusion_color=exclusion_color)
    _legend(m.axes[0], _exclusion_handle(exclusion, exclusion_color), dark=dark_legend)
    return _save_map(m, path)


def ring_panel_deg(r_out_deg, r_out_max_deg=None):
    """What the ring panel beside the significance map shows, in degrees (its width)."""
    return 2.16 * max(float(r_out_deg), float(r_out_max_deg or 0))


def significance_figure(significance, wcs, exclusion=None, r_in_deg=None, r_out_deg=None, *,
                        title=None, subtitle=None, correlation_radius_deg=None,
                        r_out_max_deg=None):
    """The significance `MapFigure` (with the ring panel when the ring radii are given)."""
    from matplotlib.colors import Normalize

    significance = np.asarray(significance, dtype=np.float32)
    if significance.ndim != 2:
        raise ValueError(f"significance map must be 2D, got shape {significance.shape}")
    limit = _significance_limit(significance)
    ring = r_in_deg is not None and r_out_deg is not None
    panel_deg = ring_panel_deg(r_out_deg, r_out_max_deg) if ring else None
    if title is None:
        title = _significance_title(significance)
    m = map_figure(significance, wcs, label=product_label("SIGNIFICANCE"),
                   cmap=FIGURES["significance"].cmap,
                   norm=Normalize(-limit, limit), exclusion=exclusion, title=title,
                   subtitle=subtitle, panel_deg=panel_deg)
    _legend(m.axes[0], _exclusion_handle(exclusion))
    if ring:
        _ring_panel(m.fig, m.layout.panel, m.layout.panel_in, m.layout.inch_per_deg,
                    float(r_in_deg), float(r_out_deg), correlation_radius_deg, r_out_max_deg)
    return m


def plot_significance(path, significance, wcs, exclusion=None, r_in_deg=None,
                      r_out_deg=None, *, title=None, subtitle=None, correlation_radius_deg=None,
                      r_out_max_deg=None):
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
        for scale in a panel beside the map (never over the data), with the correlation
        circle (``correlation_radius_deg``) and the adaptive ring's largest outer radius
        (``r_out_max_deg``) when given.
    title, subtitle : str, optional
        Title lines; a default title is used when None.
    correlation_radius_deg, r_out_max_deg : float, optional
        Drawn in the ring panel.

    Returns
    -------
    path : `~pathlib.Path`
        The written file.
    """
    m = significance_figure(significance, wcs, exclusion, r_in_deg, r_out_deg, title=title,
                            subtitle=subtitle, correlation_radius_deg=correlation_radius_deg,
                            r_out_max_deg=r_out_max_deg)
    return _save_map(m, path)


def plot_excess(path, excess, wcs, exclusion=None, *, title=None, subtitle=None):
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
    title, subtitle : str, optional
        Title lines; a default title is used when None.

    Returns
    -------
    path : `~pathlib.Path`
        The written file.
    """
    from matplotlib.colors import Normalize

    excess = _as_image(excess)
    if excess.ndim != 2:
        raise ValueError(f"excess map must be 2D, got shape {excess.shape}")
    span = _range(excess)
    if span is not None:
        vmin, vmax = _percentile_norm(excess).vmin, span[1]
        if not vmax > vmin:
            vmin, vmax = vmin - 0.5, vmin + 0.5
    else:
        vmin, vmax = 0.0, 1.0
    if title is None:
        title = "Correlated excess"
        if span is not None:
            title += f" \u2014 peak {span[1]:.1f} counts"
    return plot_map(path, excess, wcs, label=product_label("EXCESS"), title=title,
                    subtitle=subtitle, cmap=FIGURES["excess"].cmap,
                    norm=Normalize(vmin, vmax),
                    exclusion=exclusion, exclusion_color="#7fd7ff", dark_legend=True)


def plot_exclusion(path, significance, exclusion, wcs, *, sources=None, title=None,
                   subtitle=None):
    """The exclusion mask over the significance map, with the catalogue sources excluded.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Output PNG file.
    significance : `~numpy.ndarray`
        2D significance map (drawn in grey).
    exclusion : `~numpy.ndarray`
        2D mask, True (1) where the pixel is used for the background; excluded pixels are
        shaded orange and outlined.
    wcs : `~astropy.wcs.WCS`
        Celestial WCS of the maps.
    sources : list of dict, optional
        Catalogue sources excluded (``summary["excluded_sources"]``: ``name``, ``lon``,
        ``lat``, ``frame``, ``radius_deg``): marked, and named when at most 40.
    title, subtitle : str, optional
        Title lines.
    """
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    significance = _as_image(significance)
    mask = _check_exclusion(exclusion, significance.shape)
    limit = _significance_limit(significance)
    m = map_figure(significance, wcs, label=product_label("SIGNIFICANCE"), cmap="Greys",
                   norm=Normalize(-limit, limit), exclusion=mask,
                   title=title or "Exclusion mask over the significance", subtitle=subtitle,
                   exclusion_color="#b34700")
    shade = ListedColormap([(1.0, 0.55, 0.1, 0.0), (1.0, 0.55, 0.1, 0.45)])
    for ax, x_range, factor in zip(m.axes, m.layout.strips, m.factors):
        x0, x1 = x_range
        excluded = _block_fraction(~mask[:, x0:x1], factor) > 0.5
        if factor == 1 and _pixel_images_match_imshow():
            _pixel_image(ax, shade(excluded.astype(np.float32), bytes=True), x0)
            continue
        ax.imshow(excluded.astype(np.float32), origin="lower", cmap=shade,
                  norm=Normalize(0, 1), interpolation="nearest", interpolation_stage="data",
                  extent=(x0 - 0.5, x0 - 0.5 + excluded.shape[1] * factor, -0.5,
                          -0.5 + excluded.shape[0] * factor))
        ax.set_xlim(x0 - 0.5, x1 - 0.5)
        ax.set_ylim(-0.5, significance.shape[0] - 0.5)
    handles = [Patch(facecolor=(1.0, 0.55, 0.1, 0.45), edgecolor="#b34700",
                     label=f"excluded ({100 * (~mask).mean():.1f}% of the map)")]
    n_sources = _draw_sources(m, wcs, sources or [])
    if n_sources:
        handles.append(Line2D([], [], marker="+", color="#0b3d91", linestyle="none",
                              label=f"catalogue sources excluded ({n_sources})"))
    _legend(m.axes[0], handles)
    return _save_map(m, path)


def _draw_sources(m, wcs, sources):
    """Mark catalogue sources (in any sky frame) on the strips that show them: one marker
    artist per strip, names when there are at most 40."""
    sources = [s for s in sources if s.get("lon") is not None and s.get("lat") is not None]
    if not sources:
        return 0
    from .geom import to_frame

    frame = _frame_name(wcs)
    frame = frame if frame in ("icrs", "galactic") else "icrs"
    xy = np.empty((len(sources), 2))
    for source_frame in {str(s.get("frame", "icrs")) for s in sources}:
        index = [k for k, s in enumerate(sources) if str(s.get("frame", "icrs")) == source_frame]
        lon, lat = to_frame(np.array([float(sources[k]["lon"]) for k in index]),
                            np.array([float(sources[k]["lat"]) for k in index]),
                            source_frame, frame)
        xy[index] = wcs.wcs_world2pix(np.column_stack([lon, lat]), 0)
    named = len(sources) <= 40
    for ax, (x0, x1) in zip(m.axes, m.layout.strips):
        inside = np.flatnonzero((xy[:, 0] >= x0 - 0.5) & (xy[:, 0] < x1 - 0.5))
        if inside.size == 0:
            continue
        ax.plot(xy[inside, 0], xy[inside, 1], marker="+", color="#0b3d91", markersize=7,
                linestyle="none")
        for k in inside if named else ():
            if sources[k].get("name"):
                ax.annotate(str(sources[k]["name"]), tuple(xy[k]), xytext=(4, 4),
                            textcoords="offset points", fontsize=7, color="#0b3d91")
    return len(sources)


def _normal_pdf(x, mu, sigma):
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def _fmt_err(value):
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if value >= 1e-3 else f"{value:.1e}"


def plot_significance_distribution(path, significance, exclusion, fit, *, title=None,
                                   off_significance=None, subtitle=None):
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
    subtitle : str, optional
        Second title line.

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

    fig = _new_figure((8.0, 5.2))
    ax = fig.add_axes([0.1, 0.11, 0.86, 0.74 if subtitle else 0.79])
    lo, hi = -5.0, 5.0
    if values_all.size:
        lo, hi = min(float(values_all.min()), -5.0), max(float(values_all.max()), 5.0)
    bins = np.linspace(lo, hi, int(np.clip((hi - lo) / 0.2, 20, 200)) + 1)
    floor = _histograms(ax, values_all, values_off, bins)
    _fit_curves(ax, fit, lo, hi)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_power_label)  # Unicode superscripts, no mathtext
    ax.set_ylim(bottom=0.5 * floor if floor else 1e-5, top=2.0)
    _log_minor_ticks(ax)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("Significance [\u03c3]")
    ax.set_ylabel("Probability density [1/\u03c3]")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right", fontsize=9, framealpha=0.9)
    fig.text(0.1, 0.93 if subtitle else 0.9, title or "Significance distribution",
             fontsize=12, ha="left", va="bottom")
    if subtitle:
        fig.text(0.1, 0.88, subtitle, fontsize=9, color="#444444", ha="left", va="bottom")
    return _save(fig, path)


def _power_label(value, position=None):
    """``10⁻³`` for the decades of a log axis (empty elsewhere)."""
    if value <= 0:
        return ""
    exponent = math.log10(value)
    if abs(exponent - round(exponent)) > 1e-6:
        return ""
    return "10" + str(int(round(exponent))).translate(_SUPERSCRIPT)


def _log_minor_ticks(ax):
    """The minor ticks of a log y axis (2-9 times each decade) drawn as one line of tick
    markers, as matplotlib draws a tick: its ~50 Tick objects are a third of the figure's
    drawing time."""
    from matplotlib import rcParams
    from matplotlib.lines import TICKLEFT, TICKRIGHT
    from matplotlib.ticker import NullLocator

    ax.yaxis.set_minor_locator(NullLocator())
    low, high = ax.get_ylim()
    decades = np.arange(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ys = (np.arange(2, 10)[None, :] * 10.0 ** decades[:, None]).ravel()
    ys = ys[(ys >= low) & (ys <= high)]
    inward = rcParams["ytick.direction"] == "in"
    ax.plot(np.zeros(ys.size), ys, linestyle="none", marker=TICKRIGHT if inward else TICKLEFT,
            markersize=rcParams["ytick.minor.size"], markeredgewidth=rcParams["ytick.minor.width"],
            color=rcParams["ytick.color"], transform=ax.get_yaxis_transform(), clip_on=False,
            zorder=2.01)


def _histograms(ax, values_all, values_off, bins):
    """The all-pixel and off-pixel histograms; returns the lowest non-zero density."""
    width = bins[1] - bins[0]
    span = (bins[0], bins[-1])
    floor = None
    if values_all.size:
        # np.histogram with a range (its fast path for equal bins) + stairs: no patches
        counts, _ = np.histogram(values_all, len(bins) - 1, span)
        ax.stairs(counts / (values_all.size * width), bins, fill=True, color="#9ecae1",
                  alpha=0.7, label=f"all pixels (N = {values_all.size:,})")
        ax.stairs(counts / (values_all.size * width), bins, color="#3182bd", linewidth=1.0)
        floor = 1.0 / (values_all.size * width)
    if values_off.size:
        counts, _ = np.histogram(values_off, len(bins) - 1, span)
        ax.stairs(counts / (values_off.size * width), bins, color="#d94801", linewidth=1.6,
                  label=f"off pixels (N = {values_off.size:,})")
        off_floor = 1.0 / (values_off.size * width)
        floor = off_floor if floor is None else min(floor, off_floor)
    return floor


def _fit_curves(ax, fit, lo, hi):
    x = np.linspace(lo, hi, 1000)
    fit = dict(fit or {})
    mean, sigma = fit.get("mean", math.nan), fit.get("sigma", math.nan)
    mean_err, sigma_err = fit.get("mean_err", math.nan), fit.get("sigma_err", math.nan)
    if mean is not None and sigma is not None and np.isfinite(mean) and np.isfinite(sigma):
        label = (
            "Gaussian fit to off pixels\n"
            f"\u03bc = {mean:.3f} \u00b1 {_fmt_err(mean_err)}\n"
            f"\u03c3 = {sigma:.3f} \u00b1 {_fmt_err(sigma_err)}"
        )
        ax.plot(x, _normal_pdf(x, mean, abs(sigma)), color="black", linewidth=1.8,
                label=label)
    else:
        ax.plot([], [], color="black", linewidth=1.8, label="Gaussian fit: not available")
    ax.plot(x, _normal_pdf(x, 0.0, 1.0), color="#31a354", linestyle="--", linewidth=1.4,
            label="N(0, 1) (no signal)", zorder=3)


# --------------------------------------------------------------------------- a run's figures


@dataclass(frozen=True)
class FigureSpec:
    """A figure of a run: its file stem, the product it shows and how.

    ``kind``: ``"map"`` (the product with ``cmap`` and ``scale``: ``"zero"`` from 0 (or
    the minimum when negative) to the 99.9 percentile, ``"percentile"`` from the 0.5 to
    the 99.9 percentile), or one of the special figures ``"significance"``, ``"excess"``,
    ``"exclusion"``, ``"distribution"`` (the first two drawn with ``cmap`` too).
    """

    name: str
    product: str
    kind: str = "map"
    cmap: str = "viridis"
    scale: str = "zero"

    @property
    def per_radius(self):
        """The figure changes with the correlation radius (its map is a correlated one)."""
        return self.kind in ("significance", "excess", "exclusion", "distribution") or (
            PRODUCTS[self.product].source != "stack" if self.product in PRODUCTS else False)


#: The figures of a run, in the report's order (each when its product is in the maps).
FIGURES = {s.name: s for s in (
    FigureSpec("significance", "SIGNIFICANCE", "significance", cmap="RdBu_r"),
    FigureSpec("excess", "EXCESS", "excess", cmap="inferno"),
    FigureSpec("significance_distribution", "SIGNIFICANCE", "distribution"),
    FigureSpec("exclusion", "EXCLUSION", "exclusion"),
    FigureSpec("counts", "COUNTS", cmap="magma"),
    FigureSpec("background", "BACKGROUND", cmap="magma"),
    FigureSpec("flux", "FLUX", cmap="inferno", scale="percentile"),
    FigureSpec("exposure", "EXPOSURE"),
    FigureSpec("alpha", "ALPHA", cmap="cividis"),
    FigureSpec("livetime", "LIVETIME"),
)}

#: rough relative cost, to hand the slow figures out first
_COST = {"significance": 3, "exclusion": 3, "distribution": 3, "excess": 2, "map": 2}


def _scaled(product, data):
    """``(data, label)`` of a product in its display unit, divided by a readable power of
    ten (float32)."""
    factor, _ = _display(product)
    data = np.asarray(data, dtype=np.float32)
    if factor != 1:
        data = data * np.float32(factor)
    exponent = _power_of_ten(data)
    if exponent:
        data = data / np.float32(10.0 ** exponent)
    return data, product_label(product, exponent)


def _plot_map_task(path, data, wcs, *, product, cmap, scale, subtitle=None, exclusion=None):
    """`plot_map` of a product: its display unit, a readable power of ten, its colour scale."""
    data, label = _scaled(product, data)
    norm = _percentile_norm(data, zero_floor=scale == "zero")
    return plot_map(path, data, wcs, label=label,
                    title=_NAMES.get(product, product), subtitle=subtitle, cmap=cmap, norm=norm,
                    exclusion=exclusion, grid=False)


def plot_product(ax, product, data, wcs, *, exclusion=None, cmap=None, norm=None):
    """Draw the map of a product as the run's figure of it does, on a WCSAxes.

    Its display unit and a readable power of ten on the colour bar, its colour map
    (`FIGURES`), a symmetric scale for significances; see `draw_map`.

    Parameters
    ----------
    ax : `~astropy.visualization.wcsaxes.WCSAxes`
        Axes made with ``projection=wcs``.
    product : str
        Product name (``"SIGNIFICANCE"``, ``"FLUX"``, ... ; `ringbg.products.PRODUCTS`).
    data : `~numpy.ndarray`
        2D map of the product in its unit (``BUNIT``).
    wcs : `~astropy.wcs.WCS`
        Celestial WCS of the map.
    exclusion : `~numpy.ndarray` of bool, optional
        True where the pixel is used for the background (outlined where not).
    cmap, norm : optional
        Colour map name and `~matplotlib.colors.Normalize`; default: those of the figure.

    Returns
    -------
    image : `~matplotlib.image.AxesImage`
    """
    from matplotlib.colors import Normalize

    data, label = _scaled(product, data)
    significance = product in ("SIGNIFICANCE", "OFF_SIGNIFICANCE")
    spec = FIGURES["significance"] if significance else next(
        (f for f in FIGURES.values() if f.product == product and f.kind in ("map", "excess")),
        None)
    if cmap is None:
        cmap = spec.cmap if spec else "viridis"
    if norm is None:
        if significance:
            limit = _significance_limit(data)
            norm = Normalize(-limit, limit)
        else:
            zero = spec is not None and spec.kind == "map" and spec.scale == "zero"
            norm = _percentile_norm(data, zero_floor=zero)
    return draw_map(ax, data, wcs, label=label, cmap=cmap, norm=norm, exclusion=exclusion)


def _as32(values):
    return None if values is None else np.asarray(values, dtype=np.float32)


def figure_tasks(maps, wcs, *, summary=None, fit=None, energy_range_tev=None,
                 correlation_radius_deg=None, ring=None, suffix="", per_radius_only=False,
                 names=None):
    """The figures of a run as tasks for `render`: ``[(name, function, file name, kwargs)]``
    (the file name ``<name><suffix>.png``).

    Parameters
    ----------
    maps : dict
        Product maps (``Result.maps`` keys), ``"EXCLUSION"`` (1 = used for the
        background) and optionally ``"OFF_SIGNIFICANCE"`` (histogrammed for the off pixels).
    wcs : `~astropy.wcs.WCS`
        Celestial WCS of the maps.
    summary : dict, optional
        The run summary: ``n_obs`` and ``excluded_sources`` are shown.
    fit : dict
        The Gaussian fit of the off distribution.
    energy_range_tev : (float, float), optional
        Shown in the titles.
    correlation_radius_deg : float, optional
        Shown in the titles of the figures of correlated maps, and in the ring panel.
    ring : dict, optional
        ``r_in_deg``, ``r_out_deg`` (and ``r_out_max_deg`` for the adaptive ring): drawn
        beside the significance map for scale.
    suffix : str
        Appended to the file stems (e.g. ``"_0.2deg"`` for a further correlation radius).
    per_radius_only : bool
        Only the figures that change with the correlation radius.
    names : list of str, optional
        Only these figures (names of `FIGURES`).
    """
    summary = summary or {}
    n_obs = summary.get("n_obs")
    exclusion = maps.get("EXCLUSION")
    exclusion = None if exclusion is None else (
        np.nan_to_num(np.asarray(exclusion, dtype=float), nan=0.0) > 0.5)
    tasks = []
    for spec in FIGURES.values():
        if names is not None and spec.name not in names:
            continue
        if per_radius_only and not spec.per_radius:
            continue
        if spec.product not in maps or (spec.kind == "exclusion" and "SIGNIFICANCE" not in maps):
            continue
        radius = correlation_radius_deg if spec.per_radius else None
        subtitle = _subtitle(energy_range_tev, radius, n_obs)
        kwargs = _special_task(spec, maps, wcs, exclusion, fit, subtitle, summary, ring,
                               correlation_radius_deg)
        if kwargs is None:
            kwargs = {"data": _as32(maps[spec.product]), "wcs": wcs, "product": spec.product,
                      "cmap": spec.cmap, "scale": spec.scale, "subtitle": subtitle,
                      "exclusion": exclusion}
            function = _plot_map_task
        else:
            function = kwargs.pop("function")
        tasks.append((spec.name + suffix, function, f"{spec.name}{suffix}.png", kwargs))
    return tasks


def _special_task(spec, maps, wcs, exclusion, fit, subtitle, summary, ring, radius):
    significance = _as32(maps.get("SIGNIFICANCE"))
    if spec.kind == "significance":
        ring = ring or {}
        return {"function": plot_significance, "significance": significance, "wcs": wcs,
                "exclusion": exclusion, "r_in_deg": ring.get("r_in_deg"),
                "r_out_deg": ring.get("r_out_deg"), "r_out_max_deg": ring.get("r_out_max_deg"),
                "correlation_radius_deg": radius, "subtitle": subtitle,
                "title": _significance_title(significance)}
    if spec.kind == "excess":
        return {"function": plot_excess, "excess": _as32(maps["EXCESS"]), "wcs": wcs,
                "exclusion": exclusion, "subtitle": subtitle}
    if spec.kind == "exclusion":
        return {"function": plot_exclusion, "significance": significance,
                "exclusion": exclusion if exclusion is not None else
                np.ones(significance.shape, bool), "wcs": wcs, "subtitle": subtitle,
                "sources": summary.get("excluded_sources") or []}
    if spec.kind == "distribution":
        off = maps.get("OFF_SIGNIFICANCE")
        return {"function": plot_significance_distribution, "significance": significance,
                "exclusion": exclusion, "fit": fit, "subtitle": subtitle,
                "off_significance": significance if off is None else _as32(off)}
    return None


def _significance_title(significance):
    span = _range(significance)
    title = "Significance (ring background)"
    if span is not None:
        title += f" \u2014 max {span[1]:.2f}\u03c3"
    return title


def _run_task(task):
    """Render one task; returns ``(name, file name, PNG bytes, (wall s, CPU s))``."""
    import io

    name, function, file_name, kwargs = task
    t0, c0 = time.perf_counter(), time.process_time()
    kwargs = dict(kwargs)
    png = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if function is plot_significance_distribution:
            function(png, kwargs.pop("significance"), kwargs.pop("exclusion"),
                     kwargs.pop("fit"), **kwargs)
        else:
            function(png, **kwargs)
    return name, file_name, png.getvalue(), (time.perf_counter() - t0,
                                             time.process_time() - c0)


def make_figures(outdir, maps, wcs, summary, r_in_deg=None, r_out_deg=None, *,
                 energy_range_tev=None, correlation_radius_deg=None, r_out_max_deg=None,
                 suffix="", per_radius_only=False, names=None, workers=None):
    """Write the figures of a run (`FIGURES` whose products are in ``maps``).

    Parameters
    ----------
    outdir : str or `~pathlib.Path`
        Output folder (created if needed).
    maps : dict of `~numpy.ndarray`
        2D maps keyed as ``Result.maps`` (at least ``"SIGNIFICANCE"``), ``"EXCLUSION"``
        (1 = pixel not excluded, 0 = excluded), optionally ``"OFF_SIGNIFICANCE"`` (the
        significance of the run with the exclusion as fit mask, histogrammed for the off
        pixels; default ``"SIGNIFICANCE"``).
    wcs : `~astropy.wcs.WCS`
        Celestial WCS of the maps.
    summary : dict
        The run summary (``summary.json`` content). ``summary["off_distribution"]`` is
        used as the Gaussian fit; when absent it is computed with `fit_gaussian`.
    r_in_deg, r_out_deg : float or None
        Inner and outer ring radius in degrees, drawn for scale beside the significance map.
    energy_range_tev : (float, float), optional
        Energy range, shown in the titles.
    correlation_radius_deg : float, optional
        The correlation radius of ``maps``, shown in the titles.
    r_out_max_deg : float, optional
        The adaptive ring's largest outer radius (drawn dotted in the ring panel).
    suffix, per_radius_only, names
        See `figure_tasks`.
    workers : int, optional
        Processes rendering the figures (default: the started renderer, or up to 2 new
        ones); 1: in this process.

    Returns
    -------
    figures : dict of `~pathlib.Path`
        Figure name -> PNG file, in `FIGURES` order.
    """
    tasks = make_figure_tasks(maps, wcs, summary, r_in_deg, r_out_deg,
                              energy_range_tev=energy_range_tev,
                              correlation_radius_deg=correlation_radius_deg,
                              r_out_max_deg=r_out_max_deg, suffix=suffix,
                              per_radius_only=per_radius_only, names=names)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    return render(tasks, outdir, workers=workers)


def make_figure_tasks(maps, wcs, summary, r_in_deg=None, r_out_deg=None, *,
                      energy_range_tev=None, correlation_radius_deg=None, r_out_max_deg=None,
                      suffix="", per_radius_only=False, names=None):
    """The `figure_tasks` of `make_figures` (same parameters, but ``outdir`` and
    ``workers``), to render later or alongside other work (`start_render`)."""
    summary = summary or {}
    exclusion = maps.get("EXCLUSION")
    fit = summary.get("off_distribution")
    wanted = names is None or "significance_distribution" in names
    if not fit and wanted and "SIGNIFICANCE" in maps:
        off = maps.get("OFF_SIGNIFICANCE", maps["SIGNIFICANCE"])
        off = np.asarray(off, dtype=float)
        if exclusion is not None:
            off = off[np.nan_to_num(np.asarray(exclusion, dtype=float), nan=0.0) > 0.5]
        fit = fit_gaussian(off)
    ring = None
    if r_in_deg is not None and r_out_deg is not None:
        ring = {"r_in_deg": float(r_in_deg), "r_out_deg": float(r_out_deg),
                "r_out_max_deg": r_out_max_deg}
    return figure_tasks(maps, wcs, summary=summary, fit=fit,
                        energy_range_tev=energy_range_tev,
                        correlation_radius_deg=correlation_radius_deg, ring=ring,
                        suffix=suffix, per_radius_only=per_radius_only, names=names)


# --------------------------------------------------------------------------- rendering

_renderer = None

#: The renderer (and its workers) give the CPUs to the run they draw for first, but not
#: all of them: at niceness 10 (a tenth of the run's share of a CPU they both want) a 2-CPU
#: machine left its warm-up for when the run's threads paused, and the figures came ~0.1 s
#: later (the tutorial's default run 1.40x the one without figures; 1.30-1.33x at 0-4)
_RENDERER_NICENESS = 4


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _default_workers():
    return max(1, min(_cpu_count(), 4))


def _die_with_parent():
    """Linux: be sent SIGTERM when the parent process dies (no orphaned renderers)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _import_wcsaxes():
    """Import astropy's WCSAxes without the test runner: its package imports pytest when
    pytest is installed (to skip its own tests without matplotlib), a tenth of a second
    of a renderer's start-up for nothing."""
    if "astropy.visualization.wcsaxes" in sys.modules or "pytest" in sys.modules:
        import astropy.visualization.wcsaxes  # noqa: F401
        return
    sys.modules["pytest"] = None  # "import pytest" raises ImportError, which it catches
    try:
        import astropy.visualization.wcsaxes  # noqa: F401
    finally:
        del sys.modules["pytest"]


#: resolution of the warm-up's figures (`warm_up`)
_WARM_UP_DPI = 12


def warm_up():
    """Import matplotlib and draw a small map figure and a log-axis plot once (fonts,
    glyphs, colour maps): what makes the first figure of a process slow. (WCSAxes is
    imported, not drawn: the coordinate frames of the run's geometry are drawn next, see
    `Renderer.prepare`.)"""
    _import_wcsaxes()
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---CAR", "DEC--CAR"]
    wcs.wcs.cdelt = [-0.1, 0.1]
    wcs.wcs.crpix = [8.5, 8.5]
    y, x = np.mgrid[:16, :16]
    data = np.hypot(x - 8, y - 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = significance_figure(data, wcs, data > 3, 0.2, 0.4, correlation_radius_deg=0.1,
                                subtitle=_subtitle((1, 10), 0.1, 2))
        _legend(m.axes[0], _exclusion_handle(data > 3))
        # at a low resolution: what is loaded and cached once per process is, without
        # rasterising a whole figure for nothing
        m.fig.set_dpi(_WARM_UP_DPI)
        m.fig.canvas.draw()
        fig = _new_figure((3, 2))
        fig.set_dpi(_WARM_UP_DPI)
        ax = fig.add_axes([0.2, 0.2, 0.7, 0.7])
        ax.stairs([1, 2], [0, 1, 2], fill=True, label="x")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_power_label)
        # as the distribution figure draws its log axis: its default minor tick labels
        # would build matplotlib's mathtext parser, which no figure uses (~50 ms)
        _log_minor_ticks(ax)
        ax.legend()
        fig.canvas.draw()


def _zygote(conn, workers, parent_end):
    """A warmed-up process that forks the renderers of each job (`Renderer`)."""
    import signal

    parent_end.close()  # forked with both ends: the parent's closing must reach us as EOF

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    signal.signal(signal.SIGTERM, _stop_workers)
    _die_with_parent()
    try:
        os.nice(_RENDERER_NICENESS)
    except (AttributeError, OSError):
        pass
    from .parallel import keep_freed_memory

    keep_freed_memory()  # a figure's buffers are reused, not faulted in again, by the next
    warm_up()
    try:
        while True:
            try:
                job, tasks = conn.recv()
            except (EOFError, OSError):
                return
            if job == "prepare":
                _prepare_quietly(*tasks)
                continue
            jobs, deferred = [(job, tasks)], []
            # the jobs that came in meanwhile are drawn with this one, by the same workers
            # (the tutorial's second job is there before its first starts: drawn one job
            # after the other, the workers waited for the slower figure of each)
            while conn.poll(0):
                job, tasks = conn.recv()
                if job == "prepare":
                    _prepare_quietly(*tasks)
                else:
                    jobs.append((job, tasks))

            def arrived():
                # jobs that come while the workers draw join them (not a round of their
                # own after it: a run's correlated maps' figures can come while its stack's
                # are drawn, when the off distribution's fit is slow to import scipy); frames
                # to draw wait for the end of the round
                new = []
                while conn.poll(0):
                    job, tasks = conn.recv()
                    if job == "prepare":
                        deferred.append(tasks)
                    else:
                        jobs.append((job, tasks))
                        new += tasks
                return new

            try:
                results = _render_job([t for _, tasks in jobs for t in tasks], workers,
                                      arrived)
            except (BrokenPipeError, EOFError):
                raise
            except Exception as exc:  # noqa: BLE001 - sent back and raised by the parent
                results = exc
            for job, tasks in jobs:
                if isinstance(results, Exception):
                    conn.send(("error", job, results))
                    continue
                conn.send(("done", job, results[:len(tasks)]))
                results = results[len(tasks):]
            for frames in deferred:
                _prepare_quietly(*frames)
    except (BrokenPipeError, EOFError, OSError):
        return  # the parent is gone (interrupted, or done): nothing to say


def _prepare_quietly(wcs, shape, panel_degs):
    """`prepare_frames` in the renderer: a frame it cannot draw ahead is drawn with its
    figure (where the error, if any, is reported)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepare_frames(wcs, shape, panel_degs)
    except Exception:  # noqa: BLE001
        _FRAMES.clear()


def _stop_workers(signum, frame):
    """SIGTERM in the renderer: kill its workers and wait for them, then exit."""
    for child in _mp().active_children():
        child.kill()
        child.join(timeout=5)
    os._exit(1)


_JOB = []


def _job_task(item):
    """A task in a forked worker (``item``: its index in the inherited job, or the task
    itself, pickled): the collector runs once after the figure (on what the figure left:
    the inherited objects are frozen), not every few hundred allocations."""
    import gc

    gc.disable()
    try:
        return _run_task(_JOB[item] if isinstance(item, int) else item)
    finally:
        gc.enable()
        gc.collect()


def _worker_init():
    """A figure worker: Ctrl-C is the parent's business; die with the parent."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()


def _render_job(tasks, workers, arrived=None):
    """Render ``tasks`` in up to ``workers`` processes forked from this one (which they
    inherit the tasks from: nothing is pickled); in this process when one is enough.

    ``arrived``: called while the workers draw; returns further tasks (a list, maybe
    empty), which the workers draw after the others (pickled to them). The results are
    those of ``tasks``, then of the further tasks in their order of arrival.
    """
    global _JOB
    n = min(workers, len(tasks))
    if n <= 1 or not _can_fork():
        return [_run_task(t) for t in tasks]
    import gc
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    _JOB = tasks
    gc.freeze()  # the workers' collector leaves the inherited objects (and their pages) alone
    pool = ProcessPoolExecutor(n, mp_context=_mp().get_context("fork"),
                               initializer=_worker_init)
    try:
        order = sorted(range(len(tasks)), key=lambda i: -_task_cost(tasks[i]))
        futures = [None] * len(tasks)
        for i in order:  # (the workers are forked at the first: they inherit _JOB)
            futures[i] = pool.submit(_job_task, i)
        running = set(futures)
        while running:
            finished, running = wait(running, timeout=None if arrived is None else 0.005,
                                     return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()  # a failed figure ends the round (raised here)
            late = arrived() if arrived is not None else []
            first = len(futures)
            futures += [None] * len(late)
            for k in sorted(range(len(late)), key=lambda k: -_task_cost(late[k])):
                futures[first + k] = pool.submit(_job_task, late[k])
            running.update(futures[first:])
        done = [future.result() for future in futures]
    except BaseException:
        # interrupted (or a task failed): the tasks not started are dropped and the running
        # ones finish (a figure at most each: they write no file). Killed, a worker could die
        # halfway through writing its PNG into the executor's pipe, which then waits for the
        # rest of the message for ever.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        _JOB = []
        gc.unfreeze()
    pool.shutdown(wait=True)
    return done


def _task_cost(task):
    function = task[1]
    kind = {plot_significance: "significance", plot_exclusion: "exclusion",
            plot_excess: "excess", plot_significance_distribution: "distribution"}
    return _COST.get(kind.get(function, "map"), 2)


def _mp():
    import multiprocessing

    return multiprocessing


def _can_fork():
    """Renderer processes are forked (instant, and they inherit the warm matplotlib of the
    renderer); only on Linux, where fork is the usual start method. Elsewhere the figures
    are drawn in the calling process."""
    return sys.platform.startswith("linux") and "fork" in _mp().get_all_start_methods()


class Renderer:
    """A process that imports matplotlib and warms up at once, then renders the figures
    of each job in processes forked from it (already warm). See `start_renderer`."""

    def __init__(self, workers=None):
        if not _can_fork():
            raise OSError("figure renderer processes need fork (Linux)")
        self.workers = workers or _default_workers()
        context = _mp().get_context("fork")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_zygote, args=(child, self.workers, self._conn),
                                        name="ringbg-figures")
        self._process.start()
        child.close()
        self._pid = os.getpid()
        self._jobs = 0
        self._outbox = None  # messages for the sending thread (`_post`)
        self._send_errors = []

    @property
    def usable(self):
        return self._pid == os.getpid() and self._process.is_alive()

    def submit(self, tasks):
        """Send ``tasks`` (see `figure_tasks`) to be rendered and return at once (a thread
        writes them into the pipe while the renderer may still be warming up); returns
        the job's number for `collect`."""
        self._jobs += 1
        self._post((self._jobs, tasks))
        return self._jobs

    def prepare(self, wcs, shape, panel_degs=(None,)):
        """Have the renderer draw the coordinate frames of the map figures of a geometry
        now (`prepare_frames`), before their maps exist; returns at once."""
        self._post(("prepare", (wcs, tuple(shape), tuple(panel_degs))))

    def _post(self, message):
        """Queue ``message`` for the pipe and return at once: one thread writes the
        messages in order (the renderer reads a job only once it has drawn the one
        before, so a job may wait in the pipe for a while; the caller does not)."""
        import pickle
        import queue
        import threading

        self._raise_send_error()
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if self._outbox is None:
            self._outbox = queue.SimpleQueue()
            threading.Thread(target=self._send_loop, args=(self._outbox,), daemon=True,
                             name="ringbg-figures-send").start()
        self._outbox.put(data)

    def _send_loop(self, outbox):
        while True:
            data = outbox.get()
            if data is None:
                return
            try:
                self._conn.send_bytes(data)
            except BaseException as exc:  # noqa: BLE001 - raised by collect
                self._send_errors.append(exc)
                return

    def _raise_send_error(self):
        """Raise what stopped a message getting into the pipe (the renderer gone)."""
        if self._send_errors:
            raise self._send_errors[0]

    def collect(self, job=None):
        """The results of job ``job`` (default: the last submitted), waiting for them:
        ``[(name, file name, PNG bytes, (wall, CPU seconds))]``. Results of earlier jobs
        that nobody collected are dropped."""
        job = self._jobs if job is None else job
        try:
            while True:
                # read while later jobs may still be on their way in: with both directions
                # of the pipe full, each end would otherwise wait for the other for ever
                while not self._conn.poll(0.05):
                    self._raise_send_error()
                kind, number, value = self._conn.recv()
                if number == job:
                    break
        except BaseException:
            self.close(kill=True)
            raise
        if kind == "error":
            raise value
        return value

    def close(self, kill=False):
        """Stop the renderer process (``kill``: at once, with the figures in progress)."""
        if self._outbox is not None:
            self._outbox.put(None)  # the sending thread ends (or fails on the closed pipe)
        if kill and self._process.is_alive():
            self._process.terminate()  # its workers follow (parent-death signal)
        try:
            self._conn.close()
        except OSError:
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)


def start_renderer(workers=None):
    """Start the figure renderer now, so that it imports matplotlib while the caller
    works; `make_figures` then uses it.

    Returns the `Renderer` (one per process), or None where processes cannot be forked
    (not Linux) or with one CPU: the figures are then drawn in the calling process.
    """
    global _renderer
    if _renderer is not None and _renderer.usable:
        return _renderer
    if not _can_fork() or _cpu_count() < 2:
        return None
    import atexit

    _renderer = Renderer(workers)
    atexit.register(stop_renderer)
    return _renderer


def stop_renderer(kill=False):
    """Stop the renderer started by `start_renderer` (if any); ``kill``: at once, with the
    figures in progress."""
    global _renderer
    renderer, _renderer = _renderer, None
    if renderer is not None and renderer._pid == os.getpid():
        renderer.close(kill=kill)


def _renderer_failed(exc):
    log.warning("figure renderer failed (%s); drawing the figures without it", exc)
    stop_renderer()


class PendingFigures:
    """Figures being rendered while the caller goes on (`start_render`): `result` waits
    for them and writes them, `cancel` stops them."""

    def __init__(self, tasks, workers, renderer=None, job=None):
        self.tasks, self.workers, self.renderer, self.job = tasks, workers, renderer, job
        self._t0 = time.perf_counter()

    @property
    def names(self):
        """The names of the figures drawn (`FIGURES`, with their suffixes)."""
        return [task[0] for task in self.tasks]

    def result(self, folder):
        """Write the figures into ``folder`` (which must exist); returns ``{name: path}``."""
        results = None
        if self.renderer is not None:
            renderer, self.renderer = self.renderer, None
            try:
                results = renderer.collect(self.job)
            except (EOFError, OSError) as exc:  # the renderer died: draw without it
                _renderer_failed(exc)
        if results is None:
            results = _render_without_renderer(self.tasks, self.workers)
        log.debug("%d figures in %.3f s", len(results), time.perf_counter() - self._t0)
        return _write(results, Path(folder))

    def cancel(self):
        """Stop figures in progress at once."""
        if self.renderer is not None:
            renderer, self.renderer = self.renderer, None
            if renderer is _renderer:
                stop_renderer(kill=True)
            else:
                renderer.close(kill=True)


def _use_processes(tasks, workers):
    return workers != 1 and len(tasks) > 1 and _cpu_count() > 1 and _can_fork()


def start_render(tasks, workers=None):
    """Start rendering ``tasks`` in the warm renderer (`start_renderer`) and return at once:
    a `PendingFigures`, whose ``result(folder)`` writes them.

    Without a renderer they are drawn when the result is asked for, as `render` draws them
    (for big maps: processes forked then inherit them, instead of a pipe carrying them).
    """
    renderer = _renderer if _renderer is not None and _renderer.usable else None
    if renderer is not None and tasks and workers != 1:  # (even one: not drawn here)
        try:
            return PendingFigures(tasks, workers, renderer, renderer.submit(tasks))
        except (EOFError, OSError) as exc:
            _renderer_failed(exc)
    return PendingFigures(tasks, workers)


def _write(results, folder):
    paths = {}
    for name, file_name, png, (wall, cpu) in results:
        log.debug("figure %s: %.3f s (%.3f s CPU)", name, wall, cpu)
        path = folder / file_name
        path.write_bytes(png)
        paths[name] = path
    return paths


def render(tasks, folder, workers=None):
    """Render figure tasks (`figure_tasks`) into ``folder``; returns ``{name: path}``.

    In the renderer of `start_renderer` when it runs (warm: no import on the way), else in
    up to ``workers`` (default: CPUs, at most 4) processes forked now, else (one task, one
    CPU, no fork, ``workers=1``) in this process.
    """
    return start_render(tasks, workers).result(folder)


def _render_without_renderer(tasks, workers):
    """`render` without the warm renderer: ``[(name, file name, PNG, (wall, CPU s))]``."""
    if _use_processes(tasks, workers):
        from concurrent.futures.process import BrokenProcessPool

        try:
            return _render_job(tasks, workers or _default_workers())
        except BrokenProcessPool as exc:
            log.warning("figure workers failed (%s); drawing the figures in this "
                        "process", exc)
    return [_run_task(task) for task in tasks]
