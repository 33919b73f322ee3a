"""A simulated Galactic-plane survey: time, observations per second and peak memory.

Run: ``python benchmarks/bench_survey.py [--n-obs 500] [--jobs 2] [--workdir /tmp/ringbg-survey]``

Simulates ``n_obs`` observations along l = -10..10 deg (wobbles at b = +-0.7 deg) once (kept
in the work folder), then runs ``ringbg run`` on a 20 x 6 deg galactic CAR mosaic at 0.02 deg
in a subprocess, sampling the summed resident memory of its whole process tree.
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


def tree_rss_bytes(root_pid):
    """Summed VmRSS of a process and its descendants (Linux /proc)."""
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
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/ringbg-survey")
    args = parser.parse_args()
    work = Path(args.workdir)
    store = work / f"store{args.n_obs}"
    if not (store / "obs-index.fits.gz").exists():
        from ringbg.simulate import simulate_datastore, survey_pointings

        t0 = time.perf_counter()
        simulate_datastore(store, pointings=survey_pointings(-10, 10, args.n_obs),
                           frame="galactic", gzip=True, overwrite=True, seed=7, sources=[])
        print(f"simulated {args.n_obs} observations in {time.perf_counter() - t0:.1f} s")
    config = {
        "datastore": str(store),
        "geom": {"skydir": {"frame": "galactic", "lon": "0 deg", "lat": "0 deg"},
                 "width": ["20 deg", "6 deg"], "binsize": "0.02 deg", "projection": "CAR",
                 "energy": {"min": "0.5 TeV", "max": "20 TeV", "nbins": 6},
                 "offset_max": "2.5 deg"},
        "ring": {"r_in": "0.7 deg", "width": "0.3 deg"},
        "excess": {"correlation_radius": "0.1 deg", "correlate_off": False},
        "parallel": {"jobs": args.jobs},
        "output": {"dir": str(work / "out"), "figures": False, "overwrite": True},
    }
    cfg_path = work / "survey.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ringbg.cli", "run", str(cfg_path), "-q",
                             "--overwrite"])
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    proc.wait()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"ringbg failed with exit code {proc.returncode}")
    summary = json.loads((work / "out" / "summary.json").read_text())
    n = summary["n_obs"]
    print(f"survey: {n} observations, 1000 x 300 pixels, {args.jobs} jobs")
    print(f"  whole process {wall:.1f} s, in-process total {summary['timings']['total']:.1f} s, "
          f"{n / summary['timings']['total']:.1f} observations/s")
    print(f"  peak memory (process tree) {peak / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
