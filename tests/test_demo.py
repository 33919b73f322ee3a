"""The config of ``ringbg demo``: valid YAML, a valid config naming the given store, centre and
output folder, and a run on a small simulated store finds the demo's central source."""

import numpy as np
import pytest
import yaml
from astropy.coordinates import SkyCoord

from ringbg import run
from ringbg.config import load_config
from ringbg.demo import demo_config


@pytest.mark.parametrize("center", [(83.63, 22.01), (228.32, -59.08), (0.0, 0.0),
                                    (359.5, 75.25)])
def test_demo_config_validates(tmp_path, center):
    store = tmp_path / "data"
    store.mkdir()
    out = tmp_path / "results"
    text = demo_config(store, center, out)
    assert isinstance(yaml.safe_load(text), dict)
    config = load_config(text)
    assert config.datastore == str(store)
    assert config.output.dir == str(out)
    assert config.output.overwrite and config.output.figures
    lon, lat = center
    assert (config.geom.skydir.frame, config.geom.skydir.lon, config.geom.skydir.lat) == (
        "icrs", lon, lat)
    cone = config.observations.cone
    assert (cone.frame, cone.lon, cone.lat) == ("icrs", lon, lat) and cone.radius > 0
    assert config.observations.obs_ids is None
    # the source at the centre is excluded from the background estimate
    region = config.exclusion.regions[0]
    assert (region.frame, region.lon, region.lat) == ("icrs", lon, lat)
    assert config.ring.r_in > region.radius
    assert config.exclusion.auto is not None
    assert config.geom.energy.min < config.geom.energy.max


def test_demo_config_accepts_string_paths(tmp_path):
    store = tmp_path / "data"
    store.mkdir()
    config = load_config(demo_config(str(store), (10.0, -10.0), str(tmp_path / "out")))
    assert config.datastore == str(store) and config.output.dir == str(tmp_path / "out")


@pytest.mark.parametrize("folder", ["demo #1", "run: two", "it's here"])
def test_demo_config_paths_with_yaml_special_characters(tmp_path, folder):
    """``ringbg demo -o FOLDER`` writes the data to FOLDER/data: any folder name must give a
    config naming that folder."""
    store = tmp_path / folder / "data"
    store.mkdir(parents=True)
    out = tmp_path / folder / "results"
    config = load_config(demo_config(store, (83.63, 22.01), out))
    assert config.datastore == str(store)
    assert config.output.dir == str(out)


def test_demo_run_on_a_small_simulated_store(tmp_path):
    """Two simulated observations of the demo field: the brightest pixel is the demo's
    central point source."""
    from ringbg.simulate import demo_sources, simulate_datastore

    center = (83.63, 22.01)
    store = simulate_datastore(tmp_path / "data", n_obs=2, seed=1, center=center,
                               frame="icrs", sources=demo_sources(center, frame="icrs"))
    config = load_config(demo_config(store, center, tmp_path / "results"))
    config.output.figures = False
    result = run(config)
    assert result.summary["obs_ids"] == [1, 2]
    peak = result.summary["max_significance"]
    assert peak["value"] > 5
    sep = SkyCoord(peak["ra"], peak["dec"], unit="deg").separation(
        SkyCoord(*center, unit="deg")).deg
    assert sep < 2 * config.geom.binsize
    assert np.isfinite(result.maps["SIGNIFICANCE"]).any()


def test_the_demo_command_writes_every_output(tmp_path):
    """``ringbg demo``, the README's first command, as a user runs it (its own process, the
    figure renderer, figures and report on): every output, in a bounded time (a deadlock
    between the run and the renderer once hung it)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ringbg.cli", "demo", "-o", str(tmp_path),
                           "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = tmp_path / "results"
    for name in ("maps.fits", "stacked_onoff.fits", "summary.json", "report.html",
                 "significance.png", "exposure.png", "significance_distribution.png"):
        assert (results / name).is_file(), name
    assert "fig-exposure" in (results / "report.html").read_text()
