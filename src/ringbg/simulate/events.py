"""Event sampling: background events from the background table, source events thinned by
the effective area and smeared by the PSF and the energy dispersion."""

from __future__ import annotations

import functools
import math

import numpy as np

from .instrument import (
    _AEFF_OFFSET_EDGES_DEG,
    _BKG_ENERGY_EDGES_TEV,
    _BKG_FOV_EDGES_DEG,
    _BKG_OFFSET_EDGES_DEG,
    _EDISP_MIGRA_EDGES,
    _SAMPLER_BINSZ_DEG,
    ENERGY_MAX_TEV,
    ENERGY_MIN_TEV,
    FOV_MAX_DEG,
    _aeff_interp_m2,
    _bkg_spatial_ln,
    _edisp_sigma,
    _interp2d,
    _lin_centers,
    _log_centers,
    _psf_sigma_deg,
)
from .sky import _offset_to_sky, _separation_deg


class _PiecewisePowerLaw:
    """The log-log interpolation of tabulated values on log bin centres, up to the bin edges.

    This is how gammapy interpolates a background rate along energy; the function is a power
    law between consecutive break points, so it can be integrated and sampled exactly.
    """

    def __init__(self, edges, values):
        nodes = _log_centers(edges)
        lx = np.log(nodes)
        ly = np.log(values)
        lx_all = np.concatenate([[np.log(edges[0])], lx, [np.log(edges[-1])]])
        ly_lo = ly[0] + (ly[1] - ly[0]) / (lx[1] - lx[0]) * (lx_all[0] - lx[0])
        ly_hi = ly[-1] + (ly[-1] - ly[-2]) / (lx[-1] - lx[-2]) * (lx_all[-1] - lx[-1])
        ly_all = np.concatenate([[ly_lo], ly, [ly_hi]])
        self.x1 = np.exp(lx_all[:-1])
        self.x2 = np.exp(lx_all[1:])
        self.y1 = np.exp(ly_all[:-1])
        self.g1 = (ly_all[1:] - ly_all[:-1]) / (lx_all[1:] - lx_all[:-1]) + 1.0
        ratio = self.x2 / self.x1
        with np.errstate(divide="ignore", invalid="ignore"):
            seg = np.where(
                np.abs(self.g1) > 1e-10,
                self.y1 * self.x1 / self.g1 * (ratio**self.g1 - 1.0),
                self.y1 * self.x1 * np.log(ratio),
            )
        self.segment_integrals = seg
        self.integral = float(seg.sum())
        self._cdf = np.cumsum(seg) / self.integral

    def sample(self, rng, n):
        k = np.minimum(np.searchsorted(self._cdf, rng.random(n), side="right"), len(self.x1) - 1)
        v = rng.random(n)
        x1, x2, g1 = self.x1[k], self.x2[k], self.g1[k]
        ratio = x2 / x1
        with np.errstate(divide="ignore", invalid="ignore"):
            pl = x1 * (1.0 + v * (ratio**g1 - 1.0)) ** (1.0 / g1)
        return np.where(np.abs(g1) > 1e-10, pl, x1 * ratio**v)


@functools.lru_cache(maxsize=8)
def _bkg_spatial_sampler(bkg_format, gradient_per_deg):
    """Cumulative distribution of the background over a fine field-of-view grid.

    Returns ``(cdf, omega_sr, edges_deg)``: ``omega_sr`` is the integral over solid angle of
    the relative rate, interpolated from the table nodes as gammapy's ``MapDatasetMaker``
    does, and the grid has cells of ``_SAMPLER_BINSZ_DEG`` in (DETX, DETY).

    ``BKG_3D``: ln(rate) bilinear in (DETX, DETY), extrapolated up to the axis edges,
    zero outside the +-``FOV_MAX_DEG`` square. ``BKG_2D``: ``MapDatasetMaker`` pads the
    offset axis by one bin on each side with the edge values (``background_pad_offset=True``),
    so ln(rate) is linear in offset between the nodes, constant from 0 to the first node and
    from the last node to ``FOV_MAX_DEG`` + one bin width, and zero beyond.
    """
    if bkg_format == "BKG_3D":
        half_width = FOV_MAX_DEG
    else:
        half_width = _bkg_2d_max_offset_deg()
    n = int(math.ceil(2 * half_width / _SAMPLER_BINSZ_DEG - 1e-9))
    edges = np.linspace(-half_width, half_width, n + 1)
    centres = _lin_centers(edges)
    xc, yc = np.meshgrid(centres, centres, indexing="ij")
    if bkg_format == "BKG_3D":
        nodes = _lin_centers(_BKG_FOV_EDGES_DEG)
        xn, yn = np.meshgrid(nodes, nodes, indexing="ij")
        ln_table = _bkg_spatial_ln(xn, yn, gradient_per_deg)
        rel = np.exp(_interp2d(nodes, nodes, ln_table, xc, yc))
    else:
        nodes = _lin_centers(_BKG_OFFSET_EDGES_DEG)
        ln_table = _bkg_spatial_ln(nodes, 0.0, 0.0)
        theta = np.degrees(np.arccos(np.cos(np.radians(xc)) * np.cos(np.radians(yc))))
        rel = np.exp(np.interp(theta, nodes, ln_table))
        rel[theta > half_width] = 0.0
    dlon = np.radians(edges[1] - edges[0])
    dsinlat = np.diff(np.sin(np.radians(edges)))
    weight = rel * dlon * dsinlat[np.newaxis, :]
    cdf = np.cumsum(weight.ravel())
    omega = float(cdf[-1])
    return cdf / omega, omega, edges


def _bkg_2d_max_offset_deg():
    """Outer edge of the BKG_2D offset axis after gammapy's one-bin padding (float32)."""
    width = _BKG_OFFSET_EDGES_DEG[-1] - _BKG_OFFSET_EDGES_DEG[-2]
    return float(np.float32(_BKG_OFFSET_EDGES_DEG[-1]) + np.float32(width))


def _sample_bkg_fov(rng, bkg_format, gradient_per_deg, n):
    """Draw ``n`` background positions in field-of-view coordinates (DETX, DETY) [deg]."""
    cdf, _, edges = _bkg_spatial_sampler(bkg_format, gradient_per_deg)
    ncell = len(edges) - 1
    idx = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), ncell * ncell - 1)
    ix, iy = np.divmod(idx, ncell)
    h = edges[1] - edges[0]
    x = edges[ix] + h * rng.random(n)
    y = edges[iy] + h * rng.random(n)
    return x, y


# --------------------------------------------------------------------------------------------
# Event sampling
# --------------------------------------------------------------------------------------------
def _sample_source(rng, src, ra_pnt, dec_pnt, aeff_table_m2, aeff_max_m2, livetime_s):
    """Draw the events of one source in one observation: (ra, dec, energy) arrays."""
    ra0, dec0, sigma, amplitude, index = src
    empty = (np.empty(0), np.empty(0), np.empty(0))
    reach = _AEFF_OFFSET_EDGES_DEG[-1] + 6.0 * sigma
    if amplitude <= 0 or _separation_deg(ra0, dec0, ra_pnt, dec_pnt) > reach:
        return empty
    e1, e2 = ENERGY_MIN_TEV, ENERGY_MAX_TEV
    g1 = 1.0 - index
    if abs(g1) > 1e-10:
        flux_int = amplitude * (e2**g1 - e1**g1) / g1
    else:
        flux_int = amplitude * math.log(e2 / e1)
    mu = livetime_s * aeff_max_m2 * 1e4 * flux_int
    n = rng.poisson(mu)
    if n == 0:
        return empty
    v = rng.random(n)
    if abs(g1) > 1e-10:
        e_true = (e1**g1 + v * (e2**g1 - e1**g1)) ** (1.0 / g1)
    else:
        e_true = e1 * (e2 / e1) ** v
    dlon = sigma * rng.standard_normal(n)
    dlat = sigma * rng.standard_normal(n)
    ra_t, dec_t = _offset_to_sky(ra0, dec0, dlon, dlat)
    off_t = _separation_deg(ra_pnt, dec_pnt, ra_t, dec_t)
    keep = rng.random(n) * aeff_max_m2 < _aeff_interp_m2(aeff_table_m2, e_true, off_t)
    e_true, off_t, dlon, dlat = e_true[keep], off_t[keep], dlon[keep], dlat[keep]
    n = e_true.size
    psf = _psf_sigma_deg(e_true, off_t)
    ra, dec = _offset_to_sky(
        ra0, dec0, dlon + psf * rng.standard_normal(n), dlat + psf * rng.standard_normal(n)
    )
    migra = 1.0 + _edisp_sigma(e_true) * rng.standard_normal(n)
    lo, hi = _EDISP_MIGRA_EDGES[0], _EDISP_MIGRA_EDGES[-1]
    bad = (migra < lo) | (migra >= hi)
    while bad.any():
        migra[bad] = 1.0 + _edisp_sigma(e_true[bad]) * rng.standard_normal(bad.sum())
        bad = (migra < lo) | (migra >= hi)
    return ra, dec, e_true * migra


def _simulate_events(rng, obs, sources, bkg_format, gradient_per_deg):
    """All events of one observation as a dict of columns, sorted by time."""
    ra_pnt, dec_pnt = obs["ra_pnt"], obs["dec_pnt"]
    # background
    _, omega_sr, _ = _bkg_spatial_sampler(bkg_format, gradient_per_deg)
    energy_pl = _PiecewisePowerLaw(_BKG_ENERGY_EDGES_TEV, obs["bkg_energy_profile"])
    n_bkg = rng.poisson(obs["ontime"] * energy_pl.integral * omega_sr)
    x, y = _sample_bkg_fov(rng, bkg_format, gradient_per_deg, n_bkg)
    # gammapy's RADEC field-of-view frame has its longitude reversed w.r.t. SkyOffsetFrame
    ra_b, dec_b = _offset_to_sky(ra_pnt, dec_pnt, -x, y)
    parts = [(ra_b, dec_b, energy_pl.sample(rng, n_bkg), np.zeros(n_bkg, dtype=np.int32))]
    # sources
    for k, src in enumerate(sources, start=1):
        ra, dec, energy = _sample_source(
            rng, src, ra_pnt, dec_pnt, obs["aeff_table"], obs["aeff_max"], obs["livetime"]
        )
        parts.append((ra, dec, energy, np.full(ra.size, k, dtype=np.int32)))
    ra = np.concatenate([p[0] for p in parts])
    dec = np.concatenate([p[1] for p in parts])
    energy = np.concatenate([p[2] for p in parts])
    mc_id = np.concatenate([p[3] for p in parts])
    time = obs["tstart"] + obs["ontime"] * rng.random(ra.size)
    order = np.argsort(time, kind="stable")
    return {
        "EVENT_ID": np.arange(1, ra.size + 1, dtype=np.int64),
        "TIME": time[order],
        "RA": ra[order].astype(np.float32),
        "DEC": dec[order].astype(np.float32),
        "ENERGY": energy[order].astype(np.float32),
        "MC_ID": mc_id[order],
    }
