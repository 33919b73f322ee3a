"""The per-observation cache: reuse, invalidation, atomic entries."""

import os
import shutil

import numpy as np

from conftest import gammapy_data, msh_config
from ringbg import run


def _small_store(tmp_path):
    """A copy of three DR1 observations whose files the test may touch."""
    from astropy.table import Table

    src = gammapy_data() / "hess-dl3-dr1"
    dst = tmp_path / "store"
    (dst / "data").mkdir(parents=True)
    ids = [20136, 20137, 20151]
    obs = Table.read(src / "obs-index.fits.gz")
    hdu = Table.read(src / "hdu-index.fits.gz")
    obs[np.isin(obs["OBS_ID"], ids)].write(dst / "obs-index.fits.gz")
    hdu = hdu[np.isin(hdu["OBS_ID"], ids)]
    hdu.write(dst / "hdu-index.fits.gz")
    for name in set(hdu["FILE_NAME"]):
        shutil.copy(src / "data" / name, dst / "data" / name)
    return dst


def test_cache_reused_and_invalidated(tmp_path):
    store = _small_store(tmp_path)
    cfg = msh_config(tmp_path)
    cfg["datastore"] = str(store)
    cfg["observations"] = {"obs_ids": [20136, 20137]}
    cache = tmp_path / "cache"
    first = run(cfg, cache_dir=cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 2 and not any(p.startswith(".") for p in entries)
    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}

    # a rerun with one more observation reuses the two entries and adds one
    cfg["observations"] = {"obs_ids": [20136, 20137, 20151]}
    second = run(cfg, cache_dir=cache)
    assert len(list(cache.iterdir())) == 3
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    no_cache = run(cfg)
    for name in second.maps:
        np.testing.assert_array_equal(second.maps[name], no_cache.maps[name])

    # a cached entry is really used: corrupting its counts changes the result
    entry = next(p for p in cache.iterdir() if p.name.startswith("obs20136"))
    with np.load(entry) as f:
        arrays = dict(f)
    arrays["counts"] = arrays["counts"] * 0
    with open(entry, "wb") as f:
        np.savez(f, **arrays)
    assert run(cfg, cache_dir=cache).summary["totals"]["counts"] < second.summary["totals"]["counts"]

    # a changed config (energy binning) or input file makes new entries
    cfg["geom"]["energy"]["nbins"] = 5
    run(cfg, cache_dir=cache)
    assert len(list(cache.iterdir())) == 6
    path = store / "data" / "hess_dl3_dr1_obs_id_020137.fits.gz"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    run(cfg, cache_dir=cache)
    assert len(list(cache.iterdir())) == 7
    assert first.summary["n_obs"] == 2


def test_cache_key_covers_true_energy_and_edisp(tmp_path):
    """The true-energy axis and the energy-dispersion grid are part of the key; an entry keeps
    the observation's energy-dispersion response."""
    from ringbg.cache import cache_key, load, save
    from ringbg.config import load_config
    from ringbg.edisp import irf_grid
    from ringbg.geom import energy_edges_tev
    from ringbg.pipeline import make_geom, make_task, reduce_task

    config = load_config(msh_config())
    geom = make_geom(config)
    grid = irf_grid(geom, 0.5, 10.0)
    path = gammapy_data() / "hess-dl3-dr1" / "data" / "hess_dl3_dr1_obs_id_020136.fits.gz"
    args = (20136, [path], geom, 2.5, ("aeff-default",), {"aeff_percent": 10.0})
    true = energy_edges_tev(0.3, 30, 12)
    keys = {cache_key(*args), cache_key(*args, energy_true_edges_tev=true),
            cache_key(*args, irf=grid), cache_key(*args, irf=irf_grid(geom, 0.5, 10.0, 0.1))}
    assert len(keys) == 4
    assert cache_key(*args, irf=grid) == cache_key(*args, irf=irf_grid(geom, 0.5, 10.0))
    _, reduced, err = reduce_task(make_task(config, geom, 20136))
    assert reduced.edisp is not None and make_task(config, geom, 20136).irf.key == grid.key
    assert err is None and reduced.edisp is not None
    key = cache_key(*args, irf=grid)
    save(tmp_path, reduced, key)
    back = load(tmp_path, 20136, key)
    assert back.edisp.slices == reduced.edisp.slices and not back.edisp.diagonal
    for name in ("kernel", "exposure", "x", "y"):
        np.testing.assert_array_equal(getattr(back.edisp, name), getattr(reduced.edisp, name))
    reduced.edisp = None
    save(tmp_path, reduced, cache_key(*args))
    assert load(tmp_path, 20136, cache_key(*args)).edisp is None
