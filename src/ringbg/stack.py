"""Streaming stack of per-observation on/off images onto the full geometry.

Only running sums are kept, so memory does not grow with the number of observations. The
stacked off acceptance follows gammapy's ``MapDatasetOnOff.stack``: the stacked alpha is the
off-counts-weighted mean of the observations' alphas, ``sum(alpha_i off_i) / sum(off_i)``.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["Stack", "StackTerms", "stack_terms", "gti_union"]


def gti_union(intervals):
    """Union of time intervals.

    Parameters
    ----------
    intervals : sequence of `~numpy.ndarray`
        (n_i, 2) start and stop times.

    Returns
    -------
    union : `~numpy.ndarray` or None
        (n, 2) sorted disjoint intervals; overlapping and touching ones are merged. None when
        ``intervals`` is empty.
    """
    if not len(intervals):
        return None
    times = np.concatenate([np.asarray(t, dtype=float).reshape(-1, 2) for t in intervals])
    times = times[np.argsort(times[:, 0], kind="stable")]
    # an interval starts a new run when it starts after every earlier one has stopped
    reach = np.maximum.accumulate(times[:, 1])
    new = np.ones(len(times), dtype=bool)
    new[1:] = times[1:, 0] > reach[:-1]
    starts = np.flatnonzero(new)
    stops = np.append(starts[1:], len(times)) - 1
    return np.column_stack([times[starts, 0], reach[stops]])


@dataclass
class StackTerms:
    """What one observation adds to a `Stack`, on its cutout ``slices``: every plane is zero
    where the observation adds nothing (outside its mask, or not finite), so stacking is a
    plain sum. Made by `stack_terms` where the observation was ringed (a worker), which
    leaves the process that stacks little to do per observation."""

    obs_id: int
    slices: tuple
    counts: np.ndarray
    counts_off: np.ndarray
    acceptance: np.ndarray
    alpha_off: np.ndarray  # alpha * counts_off
    exposure: np.ndarray  # (n_energy, ny, nx), m2 s
    mask: np.ndarray
    livetime_s: float
    gti_tt_s: object = None
    ring_choice: object = None  # (4, ny, nx): off acceptance x (r_in, r_out, excluded), weight


def stack_terms(onoff):
    """The `StackTerms` of an `~ringbg.ring.OnOffImage`."""
    m = onoff.mask

    def masked(values, where=m):
        return np.where(where & np.isfinite(values), values, 0.0)

    gti = None
    if onoff.gti_tt_s is not None:
        gti = np.asarray(onoff.gti_tt_s, dtype=float).reshape(-1, 2)
    choice = None
    if onoff.ring_choice is not None:
        weight = np.nan_to_num(onoff.acceptance_off)
        ok = m & np.isfinite(onoff.ring_choice).all(axis=0) & (weight > 0)
        choice = np.zeros((4,) + m.shape)
        for k in range(3):
            np.multiply(weight, onoff.ring_choice[k], out=choice[k], where=ok)
        np.copyto(choice[3], weight, where=ok)
    return StackTerms(
        onoff.obs_id, onoff.slices, masked(onoff.counts), masked(onoff.counts_off),
        masked(onoff.acceptance), masked(onoff.alpha * np.nan_to_num(onoff.counts_off)),
        masked(onoff.exposure, m[None]), m.copy(), float(onoff.livetime_s), gti, choice)


class Stack:
    """Running sums of on/off images on an image of ``shape`` with ``n_energy`` exposure bins."""

    def __init__(self, shape, n_energy):
        self.shape = tuple(shape)
        self.counts = np.zeros(shape)
        self.counts_off = np.zeros(shape)
        self.acceptance = np.zeros(shape)
        self.alpha_off = np.zeros(shape)  # sum alpha_i * off_i
        self.exposure = np.zeros((n_energy,) + self.shape)
        self.mask = np.zeros(shape, dtype=bool)
        self.livetime_map_s = np.zeros(shape)  # sum of live times where each run is safe
        self.n_obs_map = np.zeros(shape, dtype=np.int32)
        self.livetime_s = 0.0
        self.obs_ids = []
        self._gtis = []
        self._ring_choice = None  # sum of acceptance_off_i * ring_choice_i, and the weights

    def add(self, onoff):
        """Add one observation: its `~ringbg.ring.OnOffImage` or its `StackTerms`
        (pixels outside its mask add nothing)."""
        terms = onoff if isinstance(onoff, StackTerms) else stack_terms(onoff)
        sl = terms.slices
        # the terms are zero where the observation adds nothing: x + 0.0 is x
        self.counts[sl] += terms.counts
        self.counts_off[sl] += terms.counts_off
        self.acceptance[sl] += terms.acceptance
        self.alpha_off[sl] += terms.alpha_off
        self.exposure[(slice(None),) + tuple(sl)] += terms.exposure
        self.mask[sl] |= terms.mask
        lt_map = self.livetime_map_s[sl]
        np.add(lt_map, terms.livetime_s, out=lt_map, where=terms.mask)
        self.n_obs_map[sl] += terms.mask
        if terms.mask.any():  # as gammapy: a run that adds no pixel adds no live time
            self.livetime_s += terms.livetime_s
        self.obs_ids.append(terms.obs_id)
        if terms.gti_tt_s is not None:
            self._gtis.append(terms.gti_tt_s)
        if terms.ring_choice is not None:
            if self._ring_choice is None:
                self._ring_choice = np.zeros((4,) + self.shape)
            self._ring_choice[(slice(None),) + tuple(sl)] += terms.ring_choice

    @property
    def ring_choice(self):
        """With the adaptive ring: (3, ny, nx) inner and outer radius (pixels) of the ring
        taken and the fraction of its background template that the exclusion removed,
        each the mean over the observations weighted by their off acceptance (NaN where no
        observation has a ring); None for the fixed ring."""
        if self._ring_choice is None:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self._ring_choice[3] > 0,
                            self._ring_choice[:3] / self._ring_choice[3], np.nan)

    @property
    def gti_tt_s(self):
        """Union of the observations' GTIs, (n, 2) TT seconds since
        `ringbg.dl3.GTI_REF_MJD_TT`: sorted, overlapping and touching intervals merged (as
        gammapy's stacked ``GTI.union``); None when no observation has a known time."""
        return gti_union(self._gtis)

    @property
    def alpha(self):
        """Stacked alpha, ``sum(alpha_i off_i) / sum(off_i)`` (0 where there are no off counts)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.counts_off > 0, self.alpha_off / self.counts_off, 0.0)

    @property
    def acceptance_off(self):
        """Stacked off acceptance ``acceptance / alpha``.

        Where no off counts were stacked, the map-wide mean alpha is used (as gammapy).
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.acceptance * self.counts_off / self.alpha_off
            mean_alpha = self.alpha_off.sum() / self.counts_off.sum()
            return np.where(self.counts_off == 0, self.acceptance / mean_alpha, out)

    @property
    def background(self):
        """Stacked background estimate ``alpha * counts_off``."""
        return self.alpha * self.counts_off
