"""gammapy 2.1's reflected-regions significance of a point-like source (test helper).

The reference for point-like IRFs with an energy-dependent directional cut (RAD_MAX_2D),
as gammapy's tutorial "Spectral analysis with energy-dependent directional cuts" does it:
an on region given as a `~regions.PointSkyRegion` (so that its radius is RAD_MAX at each
reconstructed energy and at the observation's offset), off regions from a
`~gammapy.makers.WobbleRegionsFinder` (fixed positions, the same RAD_MAX sizes), the safe
mask from the DL3 thresholds (``aeff-default``), the observations stacked
(`~gammapy.datasets.Datasets.stack_reduce`), and the WStat significance of the stacked
counts summed over the safe energy bins.

Test-only: it imports gammapy (ringbg never does).
"""

import numpy as np

__all__ = ["reflected_significance"]


def _datastore(datastore):
    from gammapy.data import DataStore

    return datastore if isinstance(datastore, DataStore) else DataStore.from_dir(datastore)


def _position(position):
    from astropy.coordinates import SkyCoord

    if isinstance(position, SkyCoord):
        return position.icrs
    ra_deg, dec_deg = position
    return SkyCoord(ra_deg, dec_deg, unit="deg", frame="icrs")


def reflected_significance(datastore, obs_ids, position, energy_min_tev, energy_max_tev,
                           n_off_regions=3, bins_per_decade=5):
    """WStat significance of the stacked reflected-regions counts at ``position``.

    Parameters
    ----------
    datastore : str, path or `~gammapy.data.DataStore`
        A data store with point-like IRFs (AEFF_2D with HDUCLAS3 = POINT-LIKE, RAD_MAX_2D
        or a RAD_MAX keyword).
    obs_ids : list of int
        The observations.
    position : `~astropy.coordinates.SkyCoord` or (ra_deg, dec_deg)
        The source (ICRS).
    energy_min_tev, energy_max_tev : float
        Reconstructed-energy range (TeV); ``bins_per_decade`` bins per decade inside it.
    n_off_regions : int
        Off regions per observation (the tutorial's 3).

    Returns
    -------
    result : dict
        ``significance`` (WStat ``sqrt_ts``, signed), ``n_on``, ``n_off``, ``alpha``
        (stacked background over n_off) and ``excess``.
    """
    from gammapy.datasets import Datasets, SpectrumDataset
    from gammapy.makers import (
        ReflectedRegionsBackgroundMaker,
        SafeMaskMaker,
        SpectrumDatasetMaker,
        WobbleRegionsFinder,
    )
    from gammapy.maps import MapAxis, RegionGeom
    from gammapy.stats import WStatCountsStatistic
    from regions import PointSkyRegion

    store = _datastore(datastore)
    observations = store.get_observations([int(i) for i in obs_ids],
                                          required_irf="point-like")
    decades = np.log10(energy_max_tev / energy_min_tev)
    energy_axis = MapAxis.from_energy_bounds(
        energy_min_tev, energy_max_tev, nbin=max(round(decades * bins_per_decade), 1),
        unit="TeV", name="energy")
    energy_axis_true = MapAxis.from_energy_bounds(0.01, 100, nbin=10, per_decade=True,
                                                  unit="TeV", name="energy_true")
    geom = RegionGeom.create(region=PointSkyRegion(_position(position)), axes=[energy_axis])
    empty = SpectrumDataset.create(geom=geom, energy_axis_true=energy_axis_true)
    maker = SpectrumDatasetMaker(containment_correction=False,
                                 selection=["counts", "exposure", "edisp"])
    bkg_maker = ReflectedRegionsBackgroundMaker(
        region_finder=WobbleRegionsFinder(n_off_regions=n_off_regions))
    safe = SafeMaskMaker(methods=["aeff-default"])
    datasets = Datasets()
    for obs in observations:
        dataset = maker.run(empty.copy(name=str(obs.obs_id)), obs)
        datasets.append(safe.run(bkg_maker.run(dataset, obs), obs))
    stacked = datasets.stack_reduce()
    mask = stacked.mask_safe.data.ravel().astype(bool)
    n_on = float(stacked.counts.data.ravel()[mask].sum())
    n_off_e = stacked.counts_off.data.ravel()[mask]
    alpha_e = stacked.alpha.data.ravel()[mask]
    n_off = float(n_off_e.sum())
    background = float(np.sum(alpha_e * n_off_e))
    alpha = background / n_off if n_off > 0 else float(np.mean(alpha_e))
    stat = WStatCountsStatistic(n_on, n_off, alpha)
    return {"significance": float(stat.sqrt_ts), "n_on": n_on, "n_off": n_off,
            "alpha": alpha, "excess": float(stat.n_sig)}
