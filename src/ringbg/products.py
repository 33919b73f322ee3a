"""The map products: one table of name (the FITS HDU name and the key in `Result.maps`),
unit (BUNIT), comment and where each map comes from.

The writers, the figures, the report and `Result` all take names, units and comments from
`PRODUCTS`; a new map is a row here (and, when it is not one of `excess_maps`' outputs or a
stack image, a line in `assemble`).
"""

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["Product", "PRODUCTS", "BAND_PRODUCTS", "ADAPTIVE_RING_PRODUCTS", "assemble",
           "band_products"]


@dataclass(frozen=True)
class Product:
    """A map product.

    ``source``: the key of `ringbg.excess.excess_maps`' output it is taken from, or
    ``"stack"`` for the stacked images and other maps made in `assemble`.
    ``band``: also written per energy bin in ``maps_bands.fits``.
    """

    name: str
    unit: str
    comment: str
    source: str = "stack"
    band: bool = False


PRODUCTS = {p.name: p for p in (
    Product("SIGNIFICANCE", "", "Li & Ma significance (signed sqrt TS) of the correlated counts",
            "significance", True),
    Product("EXCESS", "count", "correlated excess counts", "excess", True),
    Product("BACKGROUND", "count", "correlated background counts alpha * n_off", "background",
            True),
    Product("COUNTS", "count", "correlated counts n_on", "counts", True),
    Product("ALPHA", "", "on/off exposure ratio of the correlated counts", "alpha", True),
    Product("FLUX", "cm-2 s-1", "integral flux in the energy range for the power law", "flux",
            True),
    Product("FLUX_ERR", "cm-2 s-1", "symmetric error of FLUX", "flux_err", True),
    Product("FLUX_UL", "cm-2 s-1", "upper limit of FLUX at n_sigma_ul", "flux_ul", True),
    Product("SENSITIVITY", "cm-2 s-1", "flux of the power law detected at n_sigma "
            "(excess.sensitivity) given the background", "flux_sensitivity", True),
    Product("EXPOSURE", "m2 s", "stacked exposure averaged over true-energy bins"),
    Product("EXCLUSION", "", "1 = used for the background estimate, 0 = excluded (gammapy "
            "convention)"),
    Product("EXCESS_ERRN", "count", "negative error of EXCESS (profile likelihood)",
            "excess_errn"),
    Product("EXCESS_ERRP", "count", "positive error of EXCESS (profile likelihood)",
            "excess_errp"),
    Product("EXCESS_UL", "count", "upper limit of the signal counts at n_sigma_ul", "excess_ul"),
    Product("TS", "", "test statistic of the correlated excess", "ts"),
    Product("ACCEPTANCE", "count", "stacked background template (acceptance) of each pixel",
            band=True),
    Product("ACCEPTANCE_OFF", "count", "stacked background template summed over the ring",
            band=True),
    Product("COUNTS_OFF", "count", "stacked counts in the ring outside the exclusion",
            band=True),
    Product("LIVETIME", "s", "live time of the observations whose safe region covers the pixel",
            band=True),
    Product("N_OBS", "", "number of observations whose safe region covers the pixel",
            band=True),
    Product("RING_R_IN", "deg", "inner radius of the adaptive ring taken (mean over the "
            "observations weighted by their off acceptance; adaptive ring only)"),
    Product("RING_R_OUT", "deg", "outer radius of the adaptive ring taken (as RING_R_IN)"),
    Product("RING_EXCLUDED", "", "fraction of the ring's background template in the "
            "exclusion mask (as RING_R_IN)"),
)}

#: the products only made with the adaptive ring
ADAPTIVE_RING_PRODUCTS = ("RING_R_IN", "RING_R_OUT", "RING_EXCLUDED")

#: the products written per energy bin
BAND_PRODUCTS = [p.name for p in PRODUCTS.values() if p.band]


def assemble(maps, stack, exclusion, n_energy_true, binsize_deg):
    """The product maps (HDU name -> 2D array) of a run's correlated maps and stack.

    Parameters
    ----------
    maps : dict
        Output of `ringbg.excess.excess_maps`.
    stack : `~ringbg.stack.Stack`
        The stacked images.
    exclusion : `~numpy.ndarray`
        The final exclusion mask (True = usable).
    n_energy_true : int
        Bins of the exposure cube (EXPOSURE is their mean).
    binsize_deg : float
        Pixel size (the adaptive ring's radii are in pixels in the stack).
    """
    choice = stack.ring_choice
    from_stack = {name: functools.partial(image, stack) for name, image in _STACK_IMAGES.items()}
    from_stack.update({
        "EXPOSURE": lambda: stack.exposure.sum(axis=0) / n_energy_true,
        "EXCLUSION": lambda: exclusion.astype(np.uint8),
        "RING_R_IN": lambda: None if choice is None else choice[0] * binsize_deg,
        "RING_R_OUT": lambda: None if choice is None else choice[1] * binsize_deg,
        "RING_EXCLUDED": lambda: None if choice is None else choice[2],
    })
    out = {}
    for name, product in PRODUCTS.items():
        if product.source == "stack":
            data = from_stack[name]()
            if data is not None:
                out[name] = data
        elif product.source in maps:
            out[name] = maps[product.source]
    return out


#: the diagnostic maps that are images of a stack (the whole range's or a band's)
_STACK_IMAGES = {
    "ACCEPTANCE": lambda stack: np.where(stack.mask, stack.acceptance, np.nan),
    "ACCEPTANCE_OFF": lambda stack: np.where(stack.mask, stack.acceptance_off, np.nan),
    "COUNTS_OFF": lambda stack: np.where(stack.mask, stack.counts_off, np.nan),
    "LIVETIME": lambda stack: stack.livetime_map_s,
    "N_OBS": lambda stack: stack.n_obs_map,
}


def band_products(maps, stack):
    """The per-band products (HDU name -> 2D array) of one band's correlated maps and its
    stack (the observations for which the band is safe)."""
    out = {}
    for name in BAND_PRODUCTS:
        if name in _STACK_IMAGES:
            out[name] = _STACK_IMAGES[name](stack)
        elif PRODUCTS[name].source in maps:
            out[name] = maps[PRODUCTS[name].source]
    return out
