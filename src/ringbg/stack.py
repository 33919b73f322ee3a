"""Streaming stack of per-observation on/off images onto the full geometry.

Only running sums are kept, so memory does not grow with the number of observations. The
stacked off acceptance follows gammapy's ``MapDatasetOnOff.stack``: the stacked alpha is the
off-counts-weighted mean of the observations' alphas, ``sum(alpha_i off_i) / sum(off_i)``.
"""

import numpy as np

__all__ = ["Stack"]


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
