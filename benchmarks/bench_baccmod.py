"""ringbg's data template against BAccMod 0.4.1's radial acceptance (MSH 15-52, 20 runs).

Run (BAccMod is a benchmark-only dependency; it needs astropy < 8, so use its own venv with
gammapy 2.1 and ringbg's dependencies):
``GAMMAPY_DATA=... PYTHONPATH=src python benchmarks/bench_baccmod.py [--repeats 1]``

Both build the radial acceptance of the tutorial's 20 H.E.S.S. DR1 runs with the same
exclusion (0.4 deg around MSH 15-52), 10 energy bins from 0.5 to 10 TeV:

- BAccMod: ``RadialAcceptanceMapCreator(...).create_acceptance_map_per_observation`` (one
  radial model from all runs, normalised run by run), from the data store to the models;
- ringbg: the whole in-process run with the data template (data store -> final maps), and
  the template functions alone on the reduced cubes.

Prints the times, the ratio, and the largest relative difference of the two radial
profiles (density summed over energy and runs, both normalised to the same total inside
2 deg) in the 0.1 deg offset bins holding more than 100 counts outside the exclusion.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import MSH_CENTER, msh_config  # noqa: E402

OFFSET_EDGES_DEG = np.round(np.arange(0.0, 2.51, 0.1), 6)
EXCLUSION_RADIUS_DEG = 0.4


def ringbg_run(cfg):
    """ringbg's whole in-process run with the data template; returns the seconds."""
    from ringbg import run

    cfg = dict(cfg, background={"template": "data"})
    t0 = time.perf_counter()
    run(cfg)
    return time.perf_counter() - t0


def ringbg_templates(cfg):
    """The reduced cubes and ringbg's per-run templates; returns (seconds of the template
    functions, [(template, offset_deg, solid_angle_sr, counts)] per run)."""
    from ringbg.config import load_config
    from ringbg.datastore import DataStore
    from ringbg.pipeline import initial_exclusion, make_geom, make_task, reduce_task

    from ringbg import acceptance as dt
    config = load_config(cfg)
    geom = make_geom(config)
    exclusion, _ = initial_exclusion(config, geom)
    store = DataStore.from_dir(config.datastore)
    ids = store.select(None, (MSH_CENTER[0], MSH_CENTER[1], "icrs", 2.5))
    out, seconds, pooled = [], 0.0, []
    for obs_id in ids:
        _, red, err = reduce_task(make_task(config, geom, obs_id, exclusion))
        if err is not None:
            raise RuntimeError(f"observation {obs_id}: {err}")
        obs = store.load(obs_id)
        offset = geom.pointing_frame(red.slices, obs.pointing_ra_deg, obs.pointing_dec_deg)[2]
        omega = geom.solid_angle_sr[red.slices]
        t0 = time.perf_counter()
        template = dt.radial_data_template(red.counts, offset, omega, exclusion[red.slices])
        seconds += time.perf_counter() - t0
        out.append((template, offset, omega, red.counts, obs.livetime_s, exclusion[red.slices]))
        pooled.append((red.counts, offset, omega, exclusion[red.slices]))
    return seconds, ids, out, pooled


def ringbg_pooled_templates(pooled):
    """One shape from all runs (as BAccMod's model), each run normalised to its counts;
    returns (seconds, runs as `ringbg_templates`)."""
    from ringbg import acceptance as dt
    t0 = time.perf_counter()
    edge = max(float(o.max()) for _, o, _, _ in pooled) * (1 + 1e-9)
    edges = dt.fine_offset_edges_deg(edge)
    hists = [dt.radial_histograms(c, o, w, e, edges) for c, o, w, e in pooled]
    shape = dt.radial_shape(np.stack([h[0] for h in hists]), np.stack([h[1] for h in hists]),
                            edges)
    templates = [dt.radial_data_template(c, o, w, e, shape=shape) for c, o, w, e in pooled]
    seconds = time.perf_counter() - t0
    return seconds, [(t, o, w, c, None, e) for t, (c, o, w, e) in zip(templates, pooled)]


def baccmod_models(cfg, ids):
    """BAccMod's per-run radial models; returns (seconds, {obs_id: Background2D})."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from baccmod import RadialAcceptanceMapCreator
    from gammapy.data import DataStore
    from gammapy.maps import MapAxis
    from regions import CircleSkyRegion

    g = cfg["geom"]["energy"]
    t0 = time.perf_counter()
    store = DataStore.from_dir(cfg["datastore"])
    observations = store.get_observations(ids)
    energy_axis = MapAxis.from_energy_bounds(float(g["min"].split()[0]),
                                             float(g["max"].split()[0]), g["nbins"],
                                             unit="TeV", name="energy")
    offset_axis = MapAxis.from_edges(OFFSET_EDGES_DEG, unit="deg", name="offset")
    region = CircleSkyRegion(SkyCoord(*MSH_CENTER, unit="deg", frame="icrs"),
                             EXCLUSION_RADIUS_DEG * u.deg)
    creator = RadialAcceptanceMapCreator(energy_axis, offset_axis, exclude_regions=[region])
    models = creator.create_acceptance_map_per_observation(observations)
    return time.perf_counter() - t0, models


def ringbg_profile(runs):
    """Density per sr (counts) in the offset bins, summed over energy and runs; and the
    counts per bin outside the exclusion (what both methods build the shape from)."""
    n = len(OFFSET_EDGES_DEG) - 1
    density, counts = np.zeros(n), np.zeros(n)
    for template, offset, omega, cube, _, usable in runs:
        idx = np.digitize(offset, OFFSET_EDGES_DEG) - 1
        ok = (idx >= 0) & (idx < n)
        area = np.bincount(idx[ok], weights=omega[ok], minlength=n)
        pred = np.bincount(idx[ok], weights=template.sum(axis=0)[ok], minlength=n)
        with np.errstate(divide="ignore", invalid="ignore"):
            density += np.where(area > 0, pred / area, 0.0)
        outside = cube.sum(axis=0) * usable
        counts += np.bincount(idx[ok], weights=outside[ok], minlength=n)
    return density, counts


def baccmod_profile(models, runs, ids):
    """BAccMod's density per sr in the offset bins: its rate x energy-bin width x live
    time, summed over energy bins and runs."""
    density = 0.0
    for obs_id, (_, _, _, _, livetime_s, _) in zip(ids, runs):
        model = models[obs_id]
        e_edges = model.axes["energy"].edges.to_value("MeV")
        rate = model.quantity.to_value("s-1 MeV-1 sr-1")  # (energy, offset)
        density = density + (rate * np.diff(e_edges)[:, None]).sum(axis=0) * livetime_s
    return np.asarray(density)


def compare(ours, theirs, counts):
    """Largest relative difference where the bins hold > 100 counts, both profiles scaled
    to the same total inside 2 deg (weighted by the annulus solid angle)."""
    lo, hi = np.radians(OFFSET_EDGES_DEG[:-1]), np.radians(OFFSET_EDGES_DEG[1:])
    annulus = 2 * np.pi * (np.cos(lo) - np.cos(hi))
    inner = OFFSET_EDGES_DEG[1:] <= 2.0 + 1e-9
    theirs = theirs * np.sum((ours * annulus)[inner]) / np.sum((theirs * annulus)[inner])
    ok = counts > 100
    rel = np.abs(ours[ok] / theirs[ok] - 1)
    return float(rel.max()), rel, ok, theirs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cfg = msh_config()
    t_templates, ids, runs, pooled = ringbg_templates(cfg)  # also warms the page cache
    t_pooled, pooled_runs = ringbg_pooled_templates(pooled)
    ringbg_run(cfg)  # first-call costs (imports, cached geometry) out of the timing
    t_run, t_bacc = [], []
    for _ in range(args.repeats):
        t_run.append(ringbg_run(cfg))
        seconds, models = baccmod_models(cfg, ids)
        t_bacc.append(seconds)
    ours, counts = ringbg_profile(runs)
    bacc = baccmod_profile(models, runs, ids)
    worst, _, ok, theirs = compare(ours, bacc, counts)
    ours_pooled, _ = ringbg_profile(pooled_runs)
    worst_pooled, _, _, theirs_pooled = compare(ours_pooled, bacc, counts)
    run_s, bacc_s = statistics.median(t_run), statistics.median(t_bacc)
    print(f"time ringbg (whole run, data template, median of {args.repeats}): {run_s:.3f} s")
    print(f"time ringbg (template functions alone, 20 runs): {t_templates:.4f} s per-run "
          f"templates, {t_pooled:.4f} s pooled")
    print(f"time BAccMod (data store -> per-run radial models): {bacc_s:.3f} s")
    print(f"ratio BAccMod / ringbg whole run: {bacc_s / run_s:.1f}")
    print(f"ratio BAccMod / ringbg template functions: {bacc_s / t_templates:.0f}")
    print(f"max relative profile difference (bins > 100 counts outside the exclusion): {worst:.3f} per-run "
          f"templates, {worst_pooled:.3f} pooled (one shape, as BAccMod)")
    print("offset_lo_deg counts ringbg/BAccMod (per run, pooled)")
    for k in np.flatnonzero(ok):
        print(f"  {OFFSET_EDGES_DEG[k]:.1f} {counts[k]:8.0f} {ours[k] / theirs[k]:.3f} "
              f"{ours_pooled[k] / theirs_pooled[k]:.3f}")


if __name__ == "__main__":
    main()
