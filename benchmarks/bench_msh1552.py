"""Speed of ringbg against gammapy 2.1 on the MSH 15-52 tutorial config (20 runs, one worker).

Run: ``GAMMAPY_DATA=... python benchmarks/bench_msh1552.py [--repeats 3]``

Measures, alternating the two tools, several times, and prints medians and ratios:

- in-process: data store opened -> final maps (gammapy: its leanest path to the same
  result, counts/exposure/background/edisp maps (the flux with energy dispersion, as
  ringbg's), then ring, stack and excess map without the optional errors, upper limits and
  sensitivity, which ringbg computes too);
- in-process with 2 local workers (ringbg's ``--jobs 2``; gammapy's path has no
  equivalent: the ratio is against its one process);
- whole process: interpreter start -> outputs written (figures off);
- the floor: reading and decompressing the input HDUs ringbg needs.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import msh_config  # noqa: E402


def ringbg_in_process(cfg, jobs=1):
    from ringbg import run

    t0 = time.perf_counter()
    run(cfg, jobs=jobs)
    return time.perf_counter() - t0


def gammapy_in_process(cfg):
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gammapy.analysis import Analysis, AnalysisConfig
    from gammapy.datasets import MapDatasetOnOff
    from gammapy.estimators import ExcessMapEstimator
    from gammapy.makers import RingBackgroundMaker
    from regions import CircleSkyRegion

    t0 = time.perf_counter()
    config = AnalysisConfig()
    config.observations.datastore = cfg["datastore"]
    config.observations.obs_cone = {"frame": "icrs", "lon": "228.32 deg",
                                    "lat": "-59.08 deg", "radius": "2.5 deg"}
    config.datasets.type = "3d"
    config.datasets.geom.wcs.skydir = {"lon": "228.32 deg", "lat": "-59.08 deg",
                                       "frame": "icrs"}
    config.datasets.geom.wcs.width = {"width": "3 deg", "height": "3 deg"}
    config.datasets.geom.wcs.binsize = "0.02 deg"
    config.datasets.geom.selection.offset_max = 2.5 * u.deg
    config.datasets.geom.axes.energy.min = "0.5 TeV"
    config.datasets.geom.axes.energy.max = "10 TeV"
    config.datasets.geom.axes.energy.nbins = 10
    config.datasets.stack = False
    config.datasets.map_selection = ["counts", "exposure", "background", "edisp"]
    analysis = Analysis(config)
    analysis.config.datasets.geom.axes.energy_true = analysis.config.datasets.geom.axes.energy
    analysis.get_observations()
    analysis.get_datasets()
    geom = analysis.datasets[0].counts.geom
    energy_axis = geom.axes["energy"]
    geom_image = geom.to_image().to_cube([energy_axis.squash()])
    region = CircleSkyRegion(SkyCoord(228.32, -59.08, unit="deg"), 0.4 * u.deg)
    exclusion = ~geom_image.region_mask([region])
    maker = RingBackgroundMaker(r_in="0.5 deg", width="0.3 deg", exclusion_mask=exclusion)
    stacked = MapDatasetOnOff.create(geom=geom_image,
                                     energy_axis_true=analysis.datasets[0].exposure.geom.axes[
                                         "energy_true"], name="stacked")
    for dataset in analysis.datasets:
        stacked.stack(maker.run(dataset.to_image()))
    ExcessMapEstimator("0.04 deg", correlate_off=False, selection_optional=[]).run(stacked)
    return time.perf_counter() - t0


def read_floor(cfg, inflate="zlib"):
    """Time to read and decompress the files of the 20 runs (the floor of any tool), with
    zlib (Python's gzip module) or ISA-L's inflate (what ringbg uses)."""
    import zlib

    from isal import isal_zlib

    from ringbg.datastore import DataStore

    lib = {"zlib": zlib, "isal": isal_zlib}[inflate]
    store = DataStore.from_dir(cfg["datastore"])
    ids = store.select(cone=(228.32, -59.08, "icrs", 2.5))
    paths = {loc[0] for obs_id in ids for loc in store.hdu_locations(obs_id).values()}
    t0 = time.perf_counter()
    for path in paths:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            lib.decompress(raw, 31)
    return time.perf_counter() - t0


def whole_process(tool, cfg, workdir):
    if tool == "ringbg":
        path = Path(workdir) / "c.yaml"
        cfg = dict(cfg, output={"dir": str(Path(workdir) / "out"), "figures": False,
                                "overwrite": True})
        path.write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "ringbg.cli", "run", str(path), "-q", "--overwrite"]
    else:
        code = ("import sys; sys.path.insert(0, %r); import bench_msh1552 as b; "
                "from conftest import msh_config; b.gammapy_in_process(msh_config())"
                % str(HERE))
        cmd = [sys.executable, "-c", code]
    env = dict(os.environ, PYTHONPATH=f"{HERE}:{HERE.parent / 'tests'}")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = msh_config()
    ringbg_in_process(cfg)  # warm caches (imports, page cache) for both
    ringbg_in_process(cfg, jobs=2)
    gammapy_in_process(cfg)
    times = {"ringbg": [], "gammapy": [], "ringbg_process": [], "gammapy_process": [],
             "read_floor": [], "read_floor_isal": [], "ringbg_jobs2": []}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.repeats):
            times["ringbg"].append(ringbg_in_process(cfg))
            times["gammapy"].append(gammapy_in_process(cfg))
            times["ringbg_jobs2"].append(ringbg_in_process(cfg, jobs=2))
            times["read_floor"].append(read_floor(cfg))
            times["read_floor_isal"].append(read_floor(cfg, "isal"))
            times["ringbg_process"].append(whole_process("ringbg", cfg, workdir))
            times["gammapy_process"].append(whole_process("gammapy", cfg, workdir))
    med = {k: statistics.median(v) for k, v in times.items()}

    def spread(tool):
        # ratio of each repeat's pair (the two tools ran back to back): the machine's drift
        ratios = [g / r for r, g in zip(times[tool], times[tool.replace("ringbg", "gammapy")])]
        return f"(repeats {min(ratios):.1f}-{max(ratios):.1f}x)"

    print(f"MSH 15-52, 20 runs, one worker, {args.repeats} repeats (medians, s)")
    print(f"  in-process     ringbg {med['ringbg']:7.3f}   gammapy {med['gammapy']:7.3f}   "
          f"ratio {med['gammapy'] / med['ringbg']:5.1f}x {spread('ringbg')}")
    print(f"  in-process, ringbg --jobs 2 {med['ringbg_jobs2']:7.3f}   ratio to gammapy's one "
          f"process {med['gammapy'] / med['ringbg_jobs2']:5.1f}x")
    print(f"  whole process  ringbg {med['ringbg_process']:7.3f}   gammapy "
          f"{med['gammapy_process']:7.3f}   ratio "
          f"{med['gammapy_process'] / med['ringbg_process']:5.1f}x {spread('ringbg_process')}")
    for key, name in (("read_floor", "zlib"), ("read_floor_isal", "isal")):
        print(f"  read floor     {med[key]:7.3f}   ringbg / floor "
              f"{med['ringbg'] / med[key]:5.1f}x   (read + inflate with {name})")


if __name__ == "__main__":
    main()
