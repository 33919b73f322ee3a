"""The simulated instrument: site, time origin, the H.E.S.S.-like response model, its
GADF IRF tables and their evaluation as gammapy 2.1 evaluates them."""

from __future__ import annotations

import functools
import math
from datetime import datetime

import numpy as np
from astropy.io import fits

# --------------------------------------------------------------------------------------------
# Site, time origin, instrument model
# --------------------------------------------------------------------------------------------
SITE_LON_DEG = 16.5002222222222
SITE_LAT_DEG = -23.2717777777778
SITE_ALTITUDE_M = 1835.0

#: Time origin: MJDREF in TT of 2001-01-01T00:00:00 UTC (the H.E.S.S. convention).
MJDREFI = 51910
MJDREFF = 0.000742870370370241
_EPOCH_UTC = datetime(2001, 1, 1)
#: Leap seconds added between 2001 and the simulated dates (TAI-UTC 32 s -> 37 s).
_LEAP_SECONDS_SINCE_EPOCH = 5
#: Date of the first simulated night (UTC).
FIRST_NIGHT_UTC = datetime(2024, 3, 1)
#: Runs per night; each night's runs are centred on the culmination of its first pointing.
RUNS_PER_NIGHT = 4
_RUN_GAP_S = 120.0

ENERGY_MIN_TEV = 0.1
ENERGY_MAX_TEV = 100.0
FOV_MAX_DEG = 3.0

_AEFF_MAX_M2 = 4.8e5
_AEFF_OFFSET_SIGMA_DEG = 1.6
_THRESHOLD_ZENITH0_TEV = 0.35
_BKG_RATE_1TEV = 800.0  # TeV-1 s-1 sr-1, on axis, before the low-energy roll-off
_BKG_INDEX = 2.7
_BKG_OFFSET_SIGMA_DEG = 1.4
_BKG_FLOOR = 1e-12  # relative floor of the energy profile (no zeros in the table)
_ZENITH_MAX_IRF_DEG = 70.0

# IRF axes (edges)
_AEFF_ENERGY_EDGES_TEV = np.logspace(-1, 2, 61)
_AEFF_OFFSET_EDGES_DEG = np.linspace(0.0, FOV_MAX_DEG, 13)
_BKG_ENERGY_EDGES_TEV = np.logspace(-1, 2, 21)
_BKG_FOV_EDGES_DEG = np.linspace(-FOV_MAX_DEG, FOV_MAX_DEG, 61)
_BKG_OFFSET_EDGES_DEG = np.linspace(0.0, FOV_MAX_DEG, 31)
_PSF_ENERGY_EDGES_TEV = np.logspace(-1, 2, 31)
_PSF_OFFSET_EDGES_DEG = np.linspace(0.0, FOV_MAX_DEG, 7)
_PSF_RAD_EDGES_DEG = np.linspace(0.0, 1.0, 101)
_EDISP_ENERGY_EDGES_TEV = np.logspace(-1, 2, 31)
_EDISP_OFFSET_EDGES_DEG = np.linspace(0.0, FOV_MAX_DEG, 4)
_EDISP_MIGRA_EDGES = np.linspace(0.2, 3.0, 141)

_SAMPLER_BINSZ_DEG = 0.01
_GZIP_LEVEL = 1  # the event lists hardly compress; level 1 is as small and fastest

_GADF = {
    "HDUCLASS": ("GADF", "Signal conformance with the GADF format"),
    "HDUDOC": ("https://github.com/open-gamma-ray-astro/gamma-astro-data-formats", ""),
    "HDUVERS": ("0.3", "GADF version"),
}
_CREATOR = "ringbg simulate"
_TELESCOP = "RINGBG-SIM"
_INSTRUME = "H.E.S.S.-like 4-telescope array (simulated)"


def _threshold_tev(zenith_deg):
    """Energy scale of the low-energy roll-off, rising with zenith angle."""
    zen = np.minimum(np.asarray(zenith_deg, dtype=float), _ZENITH_MAX_IRF_DEG)
    return _THRESHOLD_ZENITH0_TEV * np.cos(np.radians(zen)) ** -1.5


def _aeff_model_m2(energy_tev, offset_deg, zenith_deg):
    """Analytic effective area [m2] used to fill the AEFF_2D table."""
    e_th = _threshold_tev(zenith_deg) * (1.0 + 0.1 * offset_deg**2)
    return (
        _AEFF_MAX_M2
        * np.exp(-0.5 * (offset_deg / _AEFF_OFFSET_SIGMA_DEG) ** 2)
        * np.exp(-((e_th / energy_tev) ** 1.5))
    )


def _aeff_lo_thres_tev(zenith_deg):
    """Safe low-energy threshold: on-axis effective area at 25 % of its maximum."""
    return float(_threshold_tev(zenith_deg) / np.log(4.0) ** (2.0 / 3.0))


def _bkg_energy_profile(energy_tev, zenith_deg):
    """Background rate on axis [TeV-1 s-1 sr-1] versus reconstructed energy."""
    e_th = _threshold_tev(zenith_deg)
    rate = _BKG_RATE_1TEV * energy_tev**-_BKG_INDEX * np.exp(-((e_th / energy_tev) ** 2))
    return np.maximum(rate, _BKG_FLOOR * rate.max())


def _bkg_spatial_ln(x_deg, y_deg, gradient_per_deg):
    """ln of the relative background rate at field-of-view position (DETX, DETY)."""
    return -0.5 * (x_deg**2 + y_deg**2) / _BKG_OFFSET_SIGMA_DEG**2 + gradient_per_deg * x_deg


def _psf_sigma_deg(energy_tev, offset_deg):
    """Gaussian PSF width [deg] versus true energy and offset."""
    sigma = np.sqrt(0.04**2 + (0.05 * energy_tev**-0.5) ** 2)
    return sigma * (1.0 + 0.02 * offset_deg**2)


def _edisp_sigma(energy_tev):
    """Relative energy resolution (sigma of E_reco / E_true) versus true energy."""
    return np.sqrt(0.08**2 + (0.07 * energy_tev**-0.5) ** 2)


# --------------------------------------------------------------------------------------------
# Interpolation mirroring gammapy 2.1 IRF evaluation
# --------------------------------------------------------------------------------------------
def _interp_index(nodes, x):
    """Cell index and linear weight on ``nodes``; linear extrapolation outside the nodes."""
    i = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, len(nodes) - 2)
    t = (x - nodes[i]) / (nodes[i + 1] - nodes[i])
    return i, t


def _interp2d(nodes_a, nodes_b, table, a, b):
    """Bilinear interpolation of ``table[ia, ib]`` with linear extrapolation."""
    i, s = _interp_index(nodes_a, a)
    j, t = _interp_index(nodes_b, b)
    return (
        table[i, j] * (1 - s) * (1 - t)
        + table[i + 1, j] * s * (1 - t)
        + table[i, j + 1] * (1 - s) * t
        + table[i + 1, j + 1] * s * t
    )


def _log_centers(edges):
    return np.sqrt(edges[:-1] * edges[1:])


def _lin_centers(edges):
    return 0.5 * (edges[:-1] + edges[1:])


def _aeff_interp_m2(aeff_table_m2, energy_tev, offset_deg):
    """Effective area [m2] from the AEFF_2D table (shape (offset, energy)), as gammapy has it.

    Bilinear in (ln E, offset) on the bin centres, linear values, extrapolated up to the
    axis edges, zero outside them and clipped at zero.
    """
    ln_nodes = np.log(_log_centers(_AEFF_ENERGY_EDGES_TEV))
    off_nodes = _lin_centers(_AEFF_OFFSET_EDGES_DEG)
    value = _interp2d(ln_nodes, off_nodes, aeff_table_m2.T, np.log(energy_tev), offset_deg)
    inside = (
        (energy_tev >= _AEFF_ENERGY_EDGES_TEV[0])
        & (energy_tev <= _AEFF_ENERGY_EDGES_TEV[-1])
        & (offset_deg >= _AEFF_OFFSET_EDGES_DEG[0])
        & (offset_deg <= _AEFF_OFFSET_EDGES_DEG[-1])
    )
    return np.where(inside, np.maximum(value, 0.0), 0.0)


def _aeff_interp_max_m2(aeff_table_m2):
    """Maximum of the interpolated effective area (reached at a node or an edge)."""
    e_edges, o_edges = _AEFF_ENERGY_EDGES_TEV, _AEFF_OFFSET_EDGES_DEG
    e = np.concatenate([e_edges[:1], _log_centers(e_edges), e_edges[-1:]])
    o = np.concatenate([o_edges[:1], _lin_centers(o_edges), o_edges[-1:]])
    ee, oo = np.meshgrid(e, o, indexing="ij")
    return float(_aeff_interp_m2(aeff_table_m2, ee, oo).max())


# --------------------------------------------------------------------------------------------
# IRF tables and HDUs
# --------------------------------------------------------------------------------------------
def _header(extname, hduclas, obs_id, extra=()):
    header = fits.Header()
    header["EXTNAME"] = extname
    for key, (value, comment) in _GADF.items():
        header[key] = (value, comment)
    for i, value in enumerate(hduclas, start=1):
        header[f"HDUCLAS{i}"] = value
    header["OBS_ID"] = (obs_id, "Observation ID")
    header["TELESCOP"] = _TELESCOP
    header["INSTRUME"] = _INSTRUME
    header["CREATOR"] = _CREATOR
    for key, value in extra:
        header[key] = value
    return header


def _table_hdu(columns, header, single_row=False):
    """Binary table HDU from ``(name, array, unit)`` columns, stored big-endian.

    With ``single_row``, each array is one vector cell (numpy shape = cell shape, the FITS
    ``TDIM`` is the reversed shape) and floats are written as float32 (``E``). Building the
    table from a big-endian record array lets astropy write it without its slow per-element
    byte swapping of vector columns.
    """
    fields, values = [], []
    for name, array, _ in columns:
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(">f4" if single_row or array.dtype.itemsize == 4 else ">f8")
        elif array.dtype.kind in "iu":
            array = array.astype(f">i{max(array.dtype.itemsize, 4)}")
        elif array.dtype.kind == "U":
            array = array.astype("S")
        shape = array.shape if single_row else array.shape[1:]
        fields.append((name, array.dtype, shape))
        values.append(array)
    nrows = 1 if single_row else len(values[0])
    data = np.zeros(nrows, dtype=fields)
    for (name, _, _), array in zip(fields, values):
        data[name] = array
    hdu = fits.BinTableHDU(data=data.view(np.recarray).view(fits.FITS_rec), header=header)
    for name, _, unit in columns:
        if unit:
            hdu.columns[name].unit = unit
    return hdu


def _axis_cols(prefix, edges, unit):
    return [(f"{prefix}_LO", edges[:-1], unit), (f"{prefix}_HI", edges[1:], unit)]


def _aeff_table_m2(zenith_deg):
    """AEFF_2D values, numpy shape (offset, energy), float32-rounded, as float64."""
    e = _log_centers(_AEFF_ENERGY_EDGES_TEV)
    o = _lin_centers(_AEFF_OFFSET_EDGES_DEG)
    table = _aeff_model_m2(e[np.newaxis, :], o[:, np.newaxis], zenith_deg)
    return table.astype(np.float32).astype(np.float64)


def _rad_max_deg(energy_tev):
    """The point-like IRFs' directional cut: twice the PSF width at the wobble offset
    (0.7 deg), between 0.1 and 0.25 deg (86 % of a Gaussian PSF inside, where unclipped)."""
    return np.clip(2.0 * _psf_sigma_deg(energy_tev, 0.7), 0.1, 0.25)


def _point_like_fraction(energy_tev, offset_deg):
    """Fraction of a point source's events within RAD_MAX of it (Gaussian PSF)."""
    r, sigma = _rad_max_deg(energy_tev), _psf_sigma_deg(energy_tev, offset_deg)
    return 1.0 - np.exp(-0.5 * (r / sigma) ** 2)


def _point_like_aeff_m2(table_m2):
    """The point-like effective area: the full-enclosure one (numpy shape (offset, energy))
    times the fraction inside RAD_MAX, on the same nodes."""
    e = _log_centers(_AEFF_ENERGY_EDGES_TEV)[None, :]
    o = _lin_centers(_AEFF_OFFSET_EDGES_DEG)[:, None]
    return table_m2 * _point_like_fraction(e, o)


def _rad_max_hdu(obs_id):
    """RAD_MAX_2D: the cut versus reconstructed energy, one offset bin over the field."""
    edges = _PSF_ENERGY_EDGES_TEV
    cols = _axis_cols("ENERG", edges, "TeV")
    cols += _axis_cols("THETA", np.array([0.0, FOV_MAX_DEG]), "deg")
    cols.append(("RAD_MAX", _rad_max_deg(_log_centers(edges))[None, :], "deg"))
    header = _header("RAD_MAX", ["RESPONSE", "RAD_MAX", "POINT-LIKE", "RAD_MAX_2D"], obs_id)
    return _table_hdu(cols, header, single_row=True)


def _aeff_hdu(table_m2, obs_id, zenith_deg, point_like=False):
    cols = _axis_cols("ENERG", _AEFF_ENERGY_EDGES_TEV, "TeV")
    cols += _axis_cols("THETA", _AEFF_OFFSET_EDGES_DEG, "deg")
    values = _point_like_aeff_m2(table_m2) if point_like else table_m2
    cols.append(("EFFAREA", values, "m2"))
    extra = [
        ("ZENITH", (float(zenith_deg), "Mean zenith (deg)")),
        ("LO_THRES", (_aeff_lo_thres_tev(zenith_deg), "[TeV]")),
        ("HI_THRES", (ENERGY_MAX_TEV, "[TeV]")),
    ]
    enclosure = "POINT-LIKE" if point_like else "FULL-ENCLOSURE"
    header = _header("AEFF", ["RESPONSE", "EFF_AREA", enclosure, "AEFF_2D"], obs_id, extra)
    return _table_hdu(cols, header, single_row=True)


def _bkg_table(energy_profile, bkg_format, gradient_per_deg):
    """BKG values [s-1 MeV-1 sr-1]: numpy shape (energy, DETX, DETY) for BKG_3D (as in the
    H.E.S.S. DL3 DR1 files and as gammapy reads them), (offset, energy) for BKG_2D."""
    if bkg_format == "BKG_3D":
        nodes = _lin_centers(_BKG_FOV_EDGES_DEG)
        xn, yn = np.meshgrid(nodes, nodes, indexing="ij")
        spatial = np.exp(_bkg_spatial_ln(xn, yn, gradient_per_deg))
        return energy_profile[:, np.newaxis, np.newaxis] * spatial[np.newaxis] * 1e-6
    nodes = _lin_centers(_BKG_OFFSET_EDGES_DEG)
    spatial = np.exp(_bkg_spatial_ln(nodes, 0.0, 0.0))
    return spatial[:, np.newaxis] * energy_profile[np.newaxis, :] * 1e-6


def _bkg_hdu(energy_profile, bkg_format, gradient_per_deg, obs_id):
    """BKG_3D or BKG_2D HDU."""
    if bkg_format == "BKG_3D":
        cols = _axis_cols("DETX", _BKG_FOV_EDGES_DEG, "deg")
        cols += _axis_cols("DETY", _BKG_FOV_EDGES_DEG, "deg")
        cols += _axis_cols("ENERG", _BKG_ENERGY_EDGES_TEV, "TeV")
        extra = [("FOVALIGN", ("RADEC", "Field-of-view alignment"))]
    else:
        cols = _axis_cols("ENERG", _BKG_ENERGY_EDGES_TEV, "TeV")
        cols += _axis_cols("THETA", _BKG_OFFSET_EDGES_DEG, "deg")
        extra = []
    data = _bkg_table(energy_profile, bkg_format, gradient_per_deg)
    cols.append(("BKG", data, "s-1 MeV-1 sr-1"))
    header = _header("BKG", ["RESPONSE", "BKG", "FULL-ENCLOSURE", bkg_format], obs_id, extra)
    return _table_hdu(cols, header, single_row=True)


@functools.lru_cache(maxsize=1)
def _psf_columns():
    e = _log_centers(_PSF_ENERGY_EDGES_TEV)
    o = _lin_centers(_PSF_OFFSET_EDGES_DEG)
    r = _lin_centers(_PSF_RAD_EDGES_DEG)
    sigma = np.radians(_psf_sigma_deg(e[np.newaxis, :], o[:, np.newaxis]))  # (offset, energy)
    rad = np.radians(r)[:, np.newaxis, np.newaxis]
    rpsf = np.exp(-0.5 * (rad / sigma) ** 2) / (2 * np.pi * sigma**2)  # (rad, offset, energy)
    cols = _axis_cols("ENERG", _PSF_ENERGY_EDGES_TEV, "TeV")
    cols += _axis_cols("THETA", _PSF_OFFSET_EDGES_DEG, "deg")
    cols += _axis_cols("RAD", _PSF_RAD_EDGES_DEG, "deg")
    cols.append(("RPSF", rpsf, "sr-1"))
    return cols


@functools.lru_cache(maxsize=1)
def _edisp_columns():
    e = _log_centers(_EDISP_ENERGY_EDGES_TEV)
    sigma = _edisp_sigma(e)  # (energy,)
    erf = np.vectorize(math.erf)
    z = (_EDISP_MIGRA_EDGES[:, np.newaxis] - 1.0) / (np.sqrt(2.0) * sigma[np.newaxis, :])
    cdf = 0.5 * (1.0 + erf(z))  # (migra edges, energy)
    pdf = np.diff(cdf, axis=0) / np.diff(_EDISP_MIGRA_EDGES)[:, np.newaxis]
    n_off = len(_EDISP_OFFSET_EDGES_DEG) - 1
    matrix = np.broadcast_to(pdf[np.newaxis], (n_off,) + pdf.shape)  # (offset, migra, energy)
    cols = _axis_cols("ENERG", _EDISP_ENERGY_EDGES_TEV, "TeV")
    cols += _axis_cols("MIGRA", _EDISP_MIGRA_EDGES, None)
    cols += _axis_cols("THETA", _EDISP_OFFSET_EDGES_DEG, "deg")
    cols.append(("MATRIX", matrix, None))
    return cols


def _psf_hdu(obs_id):
    extra = [("LO_THRES", (ENERGY_MIN_TEV, "[TeV]")), ("HI_THRES", (ENERGY_MAX_TEV, "[TeV]"))]
    header = _header("PSF", ["RESPONSE", "RPSF", "FULL-ENCLOSURE", "PSF_TABLE"], obs_id, extra)
    return _table_hdu(_psf_columns(), header, single_row=True)


def _edisp_hdu(obs_id, point_like=False):
    enclosure = "POINT-LIKE" if point_like else "FULL-ENCLOSURE"
    header = _header("EDISP", ["RESPONSE", "EDISP", enclosure, "EDISP_2D"], obs_id)
    return _table_hdu(_edisp_columns(), header, single_row=True)
