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
    np.testing.assert_array_equal(second.stack.gti_tt_s, no_cache.stack.gti_tt_s)
    assert len(second.stack.gti_tt_s) == 3

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
    rows = {"obs-index": [], "hdu-index": []}
    args = (20136, rows, [path], geom, 2.5, ("aeff-default",), {"aeff_percent": 10.0})
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


def _cached_run(store, tmp_path, cache):
    cfg = msh_config(tmp_path)
    cfg["datastore"] = str(store)
    cfg["observations"] = {"obs_ids": [20136, 20137, 20151]}
    return run(cfg, cache_dir=cache), run(cfg)


def test_hdu_index_edit_is_seen_by_a_cached_rerun(tmp_path):
    """A bkg HDU renamed in the HDU index: the cached rerun skips that observation, as an
    uncached run does, instead of reusing the old reduction."""
    from astropy.table import Table

    store = _small_store(tmp_path)
    cache = tmp_path / "cache"
    first, _ = _cached_run(store, tmp_path, cache)
    assert first.summary["n_obs"] == 3
    index = Table.read(store / "hdu-index.fits.gz")
    row = np.flatnonzero((index["OBS_ID"] == 20137)
                         & (np.char.strip(index["HDU_TYPE"].astype(str)) == "bkg"))[0]
    index["HDU_NAME"] = index["HDU_NAME"].astype("U20")
    index["HDU_NAME"][row] = "BKG_RENAMED"
    index.write(store / "hdu-index.fits.gz", overwrite=True)
    cached, uncached = _cached_run(store, tmp_path, cache)
    assert cached.summary["obs_ids"] == uncached.summary["obs_ids"] == [20136, 20151]
    assert cached.summary["skipped"] == uncached.summary["skipped"]
    assert "BKG_RENAMED" in cached.summary["skipped"][0]["reason"]
    assert cached.summary["totals"] == uncached.summary["totals"]


def test_obs_index_row_is_part_of_the_key(tmp_path):
    """Any column of the observation's obs-index row changes its key (and only its key)."""
    from ringbg.cache import cache_key
    from ringbg.config import load_config
    from ringbg.datastore import DataStore
    from ringbg.pipeline import make_geom

    store_dir = _small_store(tmp_path)
    geom = make_geom(load_config(msh_config(tmp_path)))

    def keys():
        store = DataStore.from_dir(store_dir)
        return {i: cache_key(i, store.index_rows(i), [], geom, 2.5, ["aeff-default"], {})
                for i in (20136, 20137)}

    before = keys()
    from astropy.table import Table

    table = Table.read(store_dir / "obs-index.fits.gz")
    table["ZEN_PNT"][table["OBS_ID"] == 20137] += 1.0
    table.write(store_dir / "obs-index.fits.gz", overwrite=True)
    after = keys()
    assert after[20136] == before[20136] and after[20137] != before[20137]


def test_file_identity_includes_the_inode(tmp_path):
    """The same bytes, size and modification time in a new file (a new inode): a new key."""
    from ringbg.cache import file_identity

    path = tmp_path / "f.fits"
    path.write_bytes(b"x" * 100)
    first = file_identity(path)
    stamp = path.stat().st_mtime_ns
    copy = tmp_path / "g.fits"
    shutil.copyfile(path, copy)
    path.unlink()
    copy.rename(path)
    os.utime(path, ns=(stamp, stamp))
    second = file_identity(path)
    assert first[:3] == second[:3] and first[3] != second[3]
    assert file_identity(tmp_path / "missing") == [str(tmp_path / "missing"), None, None, None]


def test_key_takes_any_parameter_value(tmp_path):
    """Non-numeric safe-mask (or other) parameters do not crash the key and change it."""
    from ringbg.cache import cache_key
    from ringbg.config import load_config
    from ringbg.pipeline import make_geom

    geom = make_geom(load_config(msh_config(tmp_path)))
    rows = {"obs-index": [], "hdu-index": []}

    def key(**parameters):
        return cache_key(1, rows, [], geom, 2.5, ["aeff-max"], parameters)

    assert key(irfs="DL4") != key(irfs="DL3")
    assert key(a=None, b=[1, "x"], c=np.float32(2.5), d=tmp_path) == key(
        a=None, b=[1, "x"], c=np.float32(2.5), d=tmp_path)
    assert key(aeff_percent=float("nan")) != key(aeff_percent=10.0)
