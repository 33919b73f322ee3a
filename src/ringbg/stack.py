"""Streaming stack of per-observation on/off images onto the full geometry.

Only running sums are kept, so memory does not grow with the number of observations. The
stacked off acceptance follows gammapy's ``MapDatasetOnOff.stack``: the stacked alpha is the
off-counts-weighted mean of the observations' alphas, ``sum(alpha_i off_i) / sum(off_i)``.
"""

import numpy as np

__all__ = ["Stack", "gti_union"]


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
        """Add one observation's `~ringbg.ring.OnOffImage` (pixels outside its mask add nothing)."""
        sl = onoff.slices
        m = onoff.mask

        def add(total, values):
            np.add(total, values, out=total, where=m & np.isfinite(values))

        add(self.counts[sl], onoff.counts)
        add(self.counts_off[sl], onoff.counts_off)
        add(self.acceptance[sl], onoff.acceptance)
        add(self.alpha_off[sl], onoff.alpha * np.nan_to_num(onoff.counts_off))
        exposure = self.exposure[(slice(None),) + tuple(sl)]
        np.add(exposure, onoff.exposure, out=exposure,
               where=m[None] & np.isfinite(onoff.exposure))
        self.mask[sl] |= m
        np.add(self.livetime_map_s[sl], onoff.livetime_s, out=self.livetime_map_s[sl], where=m)
        np.add(self.n_obs_map[sl], 1, out=self.n_obs_map[sl], where=m)
        self.livetime_s += onoff.livetime_s
        self.obs_ids.append(onoff.obs_id)
        if onoff.gti_tt_s is not None:
            self._gtis.append(np.asarray(onoff.gti_tt_s, dtype=float).reshape(-1, 2))
        if onoff.ring_choice is not None:
            self._add_ring_choice(sl, m, onoff)

    def _add_ring_choice(self, sl, m, onoff):
        if self._ring_choice is None:
            self._ring_choice = np.zeros((4,) + self.shape)
        total = self._ring_choice[(slice(None),) + tuple(sl)]
        weight = np.nan_to_num(onoff.acceptance_off)
        ok = m & np.isfinite(onoff.ring_choice).all(axis=0) & (weight > 0)
        for k in range(3):
            np.add(total[k], weight * onoff.ring_choice[k], out=total[k], where=ok)
        np.add(total[3], weight, out=total[3], where=ok)

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
