"""A simulated Galactic-plane survey: time, observations per second and peak memory.

Run: ``python benchmarks/bench_survey.py [--preset survey|hgps] [--n-obs N] [--jobs 2]
[--workdir /tmp/ringbg-survey] [--gammapy 100,200] [--dask]``

- ``--preset survey`` (default): ``--n-obs`` (500) observations along l = -10..10 deg
  (wobbles at b = +-0.7 deg) on a 20 x 6 deg galactic CAR mosaic at 0.02 deg (1000 x 300 px),
  6 energy bins, figures off.
- ``--preset hgps``: 2700 observations along l = -70..+40 deg (wobbles at b = +-0.7 deg and a
  few at b = +-2 deg) on a 110 x 10 deg mosaic at 0.02 deg (5500 x 500 px), 6 energy bins,
  figures and report on.

The data are simulated once (kept in the work folder). ``ringbg run`` runs in a subprocess;
the summed resident memory (RSS) and proportional set size (PSS) of its whole process tree
are sampled every 0.1 s.
``--gammapy 100,200`` also runs gammapy 2.1's equivalent workflow (the reference tests'
``tests/gammapy_ref.py``: Analysis with stack=False, ring per observation, stack, estimator)
on that many observations of the survey geometry, ringbg on the same ones, and prints both.
``--dask`` compares a Dask LocalCluster of ``--jobs`` workers with ``--jobs`` processes on
the same runs: time, overhead per observation, and whether the maps are bit-identical.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

HERE = Path(__file__).parent

PRESETS = {
    "survey": {"l_deg": (-10.0, 10.0), "width_deg": (20.0, 6.0), "n_obs": 500,
               "wide_fraction": 0.0, "figures": False},
    "hgps": {"l_deg": (-70.0, 40.0), "width_deg": (110.0, 10.0), "n_obs": 2700,
             "wide_fraction": 0.1, "figures": True},
}


def tree_memory_bytes(root_pid):
    """Summed VmRSS and PSS of a process and its descendants (Linux /proc).

    RSS counts the pages that forked processes share (the renderers inherit the figure
    maps) once per process; PSS divides each shared page among its sharers, so it sums to
    the memory the tree really holds (0 where the kernel has no ``smaps_rollup``).
    """
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    rss = pss = 0
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        rss += _proc_kb(f"/proc/{pid}/status", "VmRSS:") * 1024
        pss += _proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:") * 1024
    return rss, pss


def _proc_kb(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measured(cmd, env=None):
    """Run a command; its wall time and the peak memory of its process tree: (rss, pss)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    peak = [0, 0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for k, value in enumerate(tree_memory_bytes(proc.pid)):
                peak[k] = max(peak[k], value)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    proc.wait()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed with exit code {proc.returncode}")
    return time.perf_counter() - t0, tuple(peak)


def pointings(preset, n_obs):
    """Wobble pointings along the plane; with ``wide_fraction``, some at b = +-2 deg."""
    from ringbg.simulate import survey_pointings

    l_min, l_max = preset["l_deg"]
    n_wide = int(round(preset["wide_fraction"] * n_obs)) // 2 * 2
    plane = survey_pointings(l_min, l_max, n_obs - n_wide)
    wide = survey_pointings(l_min, l_max, n_wide, b_offsets_deg=(-2.0, 2.0)) if n_wide else []
    return list(plane) + list(wide)


def simulated_store(work, preset_name, preset, n_obs):
    store = work / f"{preset_name}{n_obs}"
    if not (store / "obs-index.fits.gz").exists():
        from ringbg.simulate import simulate_datastore

        t0 = time.perf_counter()
        simulate_datastore(store, pointings=pointings(preset, n_obs), frame="galactic",
                           gzip=True, overwrite=True, seed=7, sources=[])
        print(f"simulated {n_obs} observations in {time.perf_counter() - t0:.1f} s")
    return store


def survey_config(store, preset, jobs, outdir, obs_ids=None):
    (l_min, l_max), (width, height) = preset["l_deg"], preset["width_deg"]
    config = {
        "datastore": str(store),
        "geom": {"skydir": {"frame": "galactic", "lon": f"{(l_min + l_max) / 2} deg",
                            "lat": "0 deg"},
                 "width": [f"{width} deg", f"{height} deg"], "binsize": "0.02 deg",
                 "projection": "CAR",
                 "energy": {"min": "0.5 TeV", "max": "20 TeV", "nbins": 6},
                 "offset_max": "2.5 deg"},
        "ring": {"r_in": "0.7 deg", "width": "0.3 deg"},
        "excess": {"correlation_radius": "0.1 deg", "correlate_off": False},
        "parallel": {"jobs": jobs},
        "output": {"dir": str(outdir), "figures": preset["figures"], "overwrite": True},
    }
    if obs_ids is not None:
        config["observations"] = {"obs_ids": [int(i) for i in obs_ids]}
    return config


def run_ringbg(config, work, name):
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    wall, peak = measured([sys.executable, "-m", "ringbg.cli", "run", str(path), "-q",
                           "--overwrite"])
    summary = json.loads((Path(config["output"]["dir"]) / "summary.json").read_text())
    return wall, peak, summary


GAMMAPY_SNIPPET = """
import json, sys
sys.path.insert(0, {tests!r})
from gammapy_ref import run_gammapy
cfg = json.load(open({path!r}))
run_gammapy(cfg, per_obs=False, selection_optional=())
"""


def run_gammapy(config, work, name):
    path = work / f"{name}.json"
    cfg = {k: v for k, v in config.items() if k not in ("parallel", "output")}
    path.write_text(json.dumps(cfg))
    code = GAMMAPY_SNIPPET.format(tests=str(HERE.parent / "tests"), path=str(path))
    return measured([sys.executable, "-c", code])


def compare_gammapy(work, preset, store, sizes, jobs):
    from ringbg.datastore import DataStore

    ids = DataStore.from_dir(store).obs_ids
    print("gammapy 2.1 side by side (same runs, same geometry; gammapy keeps every "
          "observation's dataset in memory with stack=False):")
    for n in sizes:
        config = survey_config(store, dict(preset, figures=False), 1, work / f"g{n}",
                               ids[:n])
        r_wall, r_peak, summary = run_ringbg(config, work, f"ringbg{n}")
        g_wall, g_peak = run_gammapy(config, work, f"gammapy{n}")
        print(f"  {n:5d} runs  ringbg {r_wall:7.1f} s {r_peak[0] / 1e9:5.2f} GB   gammapy "
              f"{g_wall:7.1f} s {g_peak[0] / 1e9:5.2f} GB   ratio {g_wall / r_wall:5.1f}x "
              f"time, {g_peak[0] / r_peak[0]:4.1f}x memory (peak RSS of the process trees)")


def compare_dask(work, preset, store, jobs, n_obs):
    """A LocalCluster of ``jobs`` workers against ``--jobs`` processes: time and bits."""
    import numpy as np
    from distributed import LocalCluster

    from ringbg import run

    config = survey_config(store, dict(preset, figures=False), jobs, work / "dask")
    t0 = time.perf_counter()
    local = run(config, jobs=jobs)
    t_local = time.perf_counter() - t0
    with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        config["parallel"] = {"address": cluster.scheduler_address}
        t0 = time.perf_counter()
        dask = run(config)
        t_dask = time.perf_counter() - t0
    same = all(np.array_equal(local.maps[k], dask.maps[k], equal_nan=True) for k in local.maps)
    print(f"Dask LocalCluster ({jobs} workers) vs --jobs {jobs}, {n_obs} runs: "
          f"{t_dask:.1f} s vs {t_local:.1f} s, overhead "
          f"{1e3 * (t_dask - t_local) / n_obs:+.1f} ms per observation, maps "
          f"{'bit-identical' if same else 'DIFFERENT'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="survey")
    parser.add_argument("--n-obs", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/ringbg-survey")
    parser.add_argument("--gammapy", default="",
                        help="comma-separated run counts for the gammapy comparison")
    parser.add_argument("--dask", action="store_true")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    n_obs = args.n_obs or preset["n_obs"]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    store = simulated_store(work, args.preset, preset, n_obs)
    config = survey_config(store, preset, args.jobs, work / "out")
    wall, peak, summary = run_ringbg(config, work, args.preset)
    n = summary["n_obs"]
    (l_min, l_max), (width, height) = preset["l_deg"], preset["width_deg"]
    print(f"{args.preset}: {n} observations, {int(width / 0.02)} x {int(height / 0.02)} pixels, "
          f"{args.jobs} jobs, figures {'on' if preset['figures'] else 'off'}")
    print(f"  whole process {wall:.1f} s, in-process total {summary['timings']['total']:.1f} s, "
          f"{n / summary['timings']['total']:.1f} observations/s")
    print(f"  peak memory (process tree) {peak[0] / 1e9:.2f} GB (summed RSS; PSS, shared "
          f"pages of forked processes counted once: {peak[1] / 1e9:.2f} GB)")
    print(f"  stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in summary["timings"].items()))
    if args.gammapy:
        compare_gammapy(work, preset, store, [int(s) for s in args.gammapy.split(",")],
                        args.jobs)
    if args.dask:
        compare_dask(work, preset, store, args.jobs, n)


if __name__ == "__main__":
    main()
