"""The config contract: every bad value gets one line naming the key."""

from pathlib import Path

import pytest
import yaml
from conftest import msh_config

from ringbg.config import TEMPLATE, ConfigError, load_config


def _error(cfg):
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_tutorial_config_parses(data_dir):
    cfg = load_config(msh_config())
    assert cfg.geom.binsize == pytest.approx(0.02)
    assert cfg.geom.energy.max == pytest.approx(10.0)
    assert cfg.ring.r_in == pytest.approx(0.5)
    assert cfg.excess.correlation_radius == pytest.approx(0.04)


def test_units_are_converted(data_dir):
    cfg = msh_config()
    cfg["geom"]["binsize"] = "72 arcsec"
    cfg["geom"]["energy"]["min"] = "500 GeV"
    c = load_config(cfg)
    assert c.geom.binsize == pytest.approx(0.02) and c.geom.energy.min == pytest.approx(0.5)


def test_misspelt_key(data_dir):
    cfg = msh_config()
    cfg["ring"]["r_inn"] = "0.5 deg"
    assert "ring.r_inn" in _error(cfg)


def test_wrong_unit(data_dir):
    cfg = msh_config()
    cfg["geom"]["binsize"] = "0.02 TeV"
    msg = _error(cfg)
    assert "geom.binsize" in msg and "TeV" in msg and "angle" in msg


def test_negative_radius(data_dir):
    cfg = msh_config()
    cfg["exclusion"]["regions"][0]["radius"] = "-0.4 deg"
    msg = _error(cfg)
    assert "exclusion.regions.0.radius" in msg and "greater than 0" in msg


def test_ring_beyond_map(data_dir):
    cfg = msh_config()
    cfg["ring"]["width"] = "1.2 deg"
    msg = _error(cfg)
    assert "ring" in msg and "does not fit" in msg
    # a ring that reaches the map's edge (r_in + width = half the width) is allowed
    from ringbg.config import load_config

    cfg["ring"] = {"r_in": "1.0 deg", "width": "0.5 deg"}
    assert load_config(cfg).ring.width == pytest.approx(0.5)


def test_missing_datastore(data_dir, tmp_path):
    cfg = msh_config()
    cfg["datastore"] = str(tmp_path / "nowhere")
    msg = _error(cfg)
    assert "datastore" in msg and "nowhere" in msg


def test_missing_required_key(data_dir):
    cfg = msh_config()
    del cfg["geom"]
    assert "'geom' is required" in _error(cfg)


def test_bad_method_names_allowed(data_dir):
    cfg = msh_config()
    cfg["safe_mask"]["methods"] = ["aeff-defualt"]
    msg = _error(cfg)
    assert "safe_mask.methods" in msg and "aeff-default" in msg


def test_env_vars_expanded(data_dir, monkeypatch):
    monkeypatch.setenv("GAMMAPY_DATA", str(data_dir))
    cfg = msh_config()
    cfg["datastore"] = "$GAMMAPY_DATA/hess-dl3-dr1"
    assert load_config(cfg).datastore == str(data_dir / "hess-dl3-dr1")


def test_template_runs_as_is(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("GAMMAPY_DATA", str(data_dir))
    path = tmp_path / "my.yaml"
    path.write_text(TEMPLATE)
    cfg = load_config(str(path))
    assert yaml.safe_load(TEMPLATE)["geom"]["binsize"] == "0.02 deg"
    assert cfg.exclusion.regions[0].radius == pytest.approx(0.4)


def test_not_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("geom: [unclosed")
    assert "YAML" in _error(str(path))


def test_defaults_are_gammapy_analysis_defaults(data_dir):
    """Keys left out take gammapy 2.1's high-level Analysis defaults (the README's table),
    read from gammapy's own classes; the exceptions are those the contract sets: energy_true
    (the reconstructed axis, as in the tutorial) and the offset-max cut (geom.offset_max)."""
    import inspect

    import astropy.units as u
    from gammapy.analysis import AnalysisConfig
    from gammapy.estimators import ExcessMapEstimator
    from gammapy.makers import AdaptiveRingBackgroundMaker, SafeMaskMaker

    ours = load_config({"datastore": str(data_dir / "hess-dl3-dr1"),
                        "geom": {"skydir": {"lon": "0 deg", "lat": "0 deg"}},
                        "ring": {"adaptive": {}}})
    theirs = AnalysisConfig()
    geom = theirs.datasets.geom
    assert ours.geom.width_deg == (geom.wcs.width.width.to_value("deg"),
                                   geom.wcs.width.height.to_value("deg"))
    assert ours.geom.binsize == geom.wcs.binsize.to_value("deg")
    assert ours.geom.offset_max == geom.selection.offset_max.to_value("deg")
    energy = geom.axes.energy
    assert (ours.geom.energy.min, ours.geom.energy.max, ours.geom.energy.nbins) == (
        energy.min.to_value("TeV"), energy.max.to_value("TeV"), energy.nbins)
    assert ours.safe_mask.methods == list(theirs.datasets.safe_mask.methods)
    assert ours.excess.correlation_radius == theirs.excess_map.correlation_radius.to_value("deg")

    def default(cls, name):
        return inspect.signature(cls.__init__).parameters[name].default

    assert ours.excess.correlate_off == default(ExcessMapEstimator, "correlate_off")
    assert ours.excess.n_sigma_ul == default(ExcessMapEstimator, "n_sigma_ul")
    assert ours.excess.spectral_index == ExcessMapEstimator().spectral_model.index.value
    assert ours.safe_mask.parameters.aeff_percent == default(SafeMaskMaker, "aeff_percent")
    assert ours.safe_mask.parameters.irfs == default(SafeMaskMaker, "irfs")
    a = ours.ring.adaptive
    for key in ("stepsize", "theta"):  # r_out_max has no default in gammapy
        assert getattr(a, key) == u.Quantity(default(AdaptiveRingBackgroundMaker, key)).to_value(
            "deg"), key
    assert a.threshold_alpha == default(AdaptiveRingBackgroundMaker, "threshold_alpha")
    assert a.method == default(AdaptiveRingBackgroundMaker, "method")
    # the contract's choices
    assert ours.safe_mask.parameters.offset_max is None  # -> geom.offset_max


def test_template_is_the_tutorial(data_dir, monkeypatch):
    """`ringbg config` runs gammapy's tutorial: its settings, not the defaults."""
    monkeypatch.setenv("GAMMAPY_DATA", str(data_dir))
    c = load_config(TEMPLATE)
    assert c.excess.correlation_radius == pytest.approx(0.04)
    assert c.excess.correlate_off is False
    assert c.geom.width_deg == (3.0, 3.0)
    assert (c.geom.energy.min, c.geom.energy.max, c.geom.energy.nbins) == (0.5, 10.0, 10)
    assert c.exclusion.regions[0].radius == pytest.approx(0.4)


def test_energy_true_and_edisp(data_dir):
    """geom.energy_true defaults to geom.energy (the tutorial); excess.edisp to true."""
    c = load_config(msh_config())
    assert c.geom.energy_true is None and c.geom.energy_true_axis == c.geom.energy
    assert c.excess.edisp is True
    cfg = msh_config()
    cfg["geom"]["energy_true"] = {"min": "300 GeV", "max": "30 TeV", "nbins": 20}
    cfg["excess"]["edisp"] = False
    c = load_config(cfg)
    axis = c.geom.energy_true_axis
    assert (axis.min, axis.max, axis.nbins) == (pytest.approx(0.3), 30.0, 20)
    assert c.excess.edisp is False
    for bad, words in (({"min": "1 TeV", "max": "0.5 TeV"}, ["geom.energy_true", "above"]),
                       ({"min": "1 deg"}, ["geom.energy_true.min", "energy"]),
                       ({"nbins": 0}, ["geom.energy_true.nbins", "greater than or equal"]),
                       ({"nbin": 5}, ["geom.energy_true.nbin", "not known"])):
        cfg = msh_config()
        cfg["geom"]["energy_true"] = bad
        msg = _error(cfg)
        assert all(w in msg for w in words), msg
    cfg = msh_config()
    cfg["excess"]["edisp"] = "maybe"
    assert "excess.edisp" in _error(cfg)
    template = yaml.safe_load(TEMPLATE)
    assert template["geom"]["energy_true"] is None and template["excess"]["edisp"] is True


def _set(cfg, key, value):
    *path, last = key.split(".")
    node = cfg
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[last] = value
    return cfg


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("key, value, named", [
    # non-finite positions anywhere
    ("exclusion.regions.0.lon", NAN, "exclusion.regions.0.lon"),
    ("exclusion.regions.0.lat", "nan deg", "exclusion.regions.0.lat"),
    ("geom.skydir.lon", INF, "geom.skydir.lon"),
    ("observations.cone.lat", -INF, "observations.cone.lat"),
    ("observations.cone.radius", "inf deg", "observations.cone.radius"),
    # values that validated and crashed later
    ("geom.binsize", 1e-300, "geom.binsize"),
    ("geom.width", INF, "geom.width"),
    ("geom.width", 1e308, "geom.width"),
    ("geom.width", [1, 2, 3], "geom.width"),
    ("geom.width", NAN, "geom.width"),
    ("geom.width", ["3 deg", NAN], "geom.width"),
    ("geom.offset_max", INF, "geom.offset_max"),
    ("geom.energy.max", INF, "geom.energy.max"),
    ("geom.energy.min", 1e-300, "geom.energy.min"),
    ("excess.spectral_index", NAN, "excess.spectral_index"),
    ("excess.spectral_index", INF, "excess.spectral_index"),
    ("excess.spectral_index", 1e300, "excess.spectral_index"),
    ("excess.n_sigma_ul", INF, "excess.n_sigma_ul"),
    ("excess.correlation_radius", NAN, "excess.correlation_radius"),
    ("observations.obs_ids", [2**70], "observations.obs_ids.0"),
    ("exclusion.auto", {"dilate": "1e6 deg"}, "exclusion.auto.dilate"),
    ("exclusion.auto", {"dilate": "10 deg"}, "exclusion.auto.dilate"),
    ("exclusion.auto", {"threshold": INF}, "exclusion.auto.threshold"),
    ("geom.projection", "XYZ", "geom.projection"),
    ("geom.projection", "ZPN", "geom.projection"),
    ("ring.adaptive", {"stepsize": "1e-6 deg", "r_out_max": "1.4 deg"},
     "ring.adaptive.stepsize"),
    ("ring.adaptive", {"theta": "100 deg", "r_out_max": "1.4 deg"}, "ring.adaptive.theta"),
    ("ring.adaptive", {"threshold_alpha": NAN}, "ring.adaptive.threshold_alpha"),
    ("safe_mask.parameters", {"aeff_percent": NAN}, "safe_mask.parameters.aeff_percent"),
    ("safe_mask.parameters", {"offset_max": "inf deg"}, "safe_mask.parameters.offset_max"),
])
def test_bad_values_are_one_line_naming_the_key(data_dir, key, value, named):
    msg = _error(_set(msh_config(), key, value))
    assert f"{named}'" in msg or f"{named}:" in msg, msg
    assert "function-" not in msg and "validator" not in msg and "0x" not in msg


def test_width_errors_say_what_is_allowed(data_dir):
    assert "one angle or two ([width, height]), got 3" in _error(
        _set(msh_config(), "geom.width", [1, 2, 3]))
    assert "finite" in _error(_set(msh_config(), "geom.width", NAN))
    assert "at most 360 deg" in _error(_set(msh_config(), "geom.width", 1e308))


def test_map_size_limits_allow_a_galactic_plane_survey(data_dir):
    """The H.E.S.S. Galactic plane survey map (5500 x 500 pixels of 0.02 deg, 6 energy bins)
    is allowed; 100 times finer pixels are not."""
    cfg = msh_config()
    cfg["geom"].update(width=["110 deg", "10 deg"], binsize="0.02 deg",
                       skydir={"frame": "galactic", "lon": "0 deg", "lat": "0 deg"})
    cfg["geom"]["energy"]["nbins"] = 6
    assert load_config(cfg).geom.width_deg == (110.0, 10.0)
    cfg["geom"]["binsize"] = "0.0002 deg"
    msg = _error(cfg)
    assert "geom.binsize" in msg and "5.5e+05 x 5e+04 pixels" in msg


def test_every_usable_astropy_projection_is_accepted(data_dir):
    """Each code of astropy's list either makes the map or is a config error naming
    geom.projection (those needing projection parameters); lower case is taken."""
    from astropy.wcs import PRJ_CODES

    from ringbg.pipeline import make_geom

    refused = []
    for code in PRJ_CODES:
        cfg = _set(msh_config(), "geom.projection", code.lower())
        try:
            config = load_config(cfg)
        except ConfigError as exc:
            assert "geom.projection" in str(exc) and "\n" not in str(exc)
            refused.append(code)
            continue
        assert config.geom.projection == code
        make_geom(config).wcs.wcs.set()
    assert set(refused) == {"ZPN", "COP", "COE", "COD", "COO", "BON"}


def test_adaptive_ring_count_is_bounded(data_dir):
    from ringbg.config import MAX_ADAPTIVE_RINGS

    cfg = _set(msh_config(), "ring.adaptive", {"r_out_max": "1.4 deg", "stepsize": "0.02 deg"})
    load_config(cfg)
    # r_in + width = 0.8 deg: 0.6 deg of candidate rings
    cfg["ring"]["adaptive"]["stepsize"] = f"{0.6 / (MAX_ADAPTIVE_RINGS + 1)} deg"
    assert f"more than {MAX_ADAPTIVE_RINGS}" in _error(cfg)


def test_deeply_nested_yaml(tmp_path):
    assert "nested too deeply" in _error("a: " + "[" * 5000 + "]" * 5000)
    path = tmp_path / "deep.yaml"
    path.write_text("x:\n" + "".join(" " * i + "- \n" for i in range(3000)))
    assert "nested too deeply" in _error(str(path))


def test_config_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("datastore: /données\n".encode("latin-1"))
    msg = _error(str(path))
    assert str(path) in msg and "not UTF-8" in msg and "0xe9" in msg


def test_long_yaml_text_is_not_taken_for_a_path(data_dir):
    assert "YAML mapping" in _error("x" * 5000)


# --------------------------------------------------------------------------------------------
# issue 15: relative paths, missing files, $GAMMAPY_DATA, YAML syntax errors


@pytest.fixture
def config_folder(tmp_path, data_dir):
    """A config file in its own folder naming its data store, exclusion file, catalogue and
    output folder by relative paths (from that folder)."""
    folder = tmp_path / "analysis"
    folder.mkdir()
    (folder / "store").symlink_to(data_dir / "hess-dl3-dr1")
    (folder / "masks").mkdir()
    (folder / "masks" / "x.reg").write_text("icrs\ncircle(228.0, -59.0, 0.1)\n")
    (folder / "hgps.fits.gz").symlink_to(data_dir / "catalogs" / "hgps_catalog_v1.fits.gz")
    cfg = msh_config()
    cfg["datastore"] = "store"
    cfg["exclusion"]["files"] = ["masks/x.reg"]
    cfg["exclusion"]["catalogs"] = [{"file": "./hgps.fits.gz"}]
    cfg["output"]["dir"] = "../results"
    path = folder / "ringbg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return folder, path, cfg


def test_relative_paths_resolve_against_the_config_files_folder(config_folder, tmp_path,
                                                                monkeypatch):
    folder, path, _ = config_folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    c = load_config("../analysis/ringbg.yaml")  # a relative path to the file, too
    folder = folder.resolve()
    assert Path(c.datastore) == folder / "store"
    assert [Path(f) for f in c.exclusion.files] == [folder / "masks" / "x.reg"]
    assert Path(c.exclusion.catalogs[0].file) == folder / "hgps.fits.gz"
    assert Path(c.output.dir) == folder / ".." / "results"
    assert load_config(path).datastore == c.datastore


def test_left_out_output_dir_stays_in_the_current_folder(config_folder, monkeypatch, tmp_path):
    folder, path, cfg = config_folder
    del cfg["output"]["dir"]
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert load_config(path).output.dir == "results"


def test_dict_and_yaml_text_resolve_against_the_current_folder(config_folder, monkeypatch):
    folder, path, cfg = config_folder
    monkeypatch.chdir(folder)
    c = load_config(cfg)
    assert c.datastore == "store" and c.exclusion.files == ["masks/x.reg"]
    assert load_config(yaml.safe_dump(cfg)).datastore == "store"
    monkeypatch.chdir(folder.parent)
    cfg["exclusion"] = {}
    msg = _error(cfg)  # "store" is not in this folder
    assert "datastore" in msg and str(folder.parent / "store") in msg


@pytest.mark.parametrize("key", ["datastore", "files", "catalog"])
def test_missing_file_message_names_the_absolute_path(key, config_folder, tmp_path,
                                                      monkeypatch):
    folder, path, cfg = config_folder
    if key == "datastore":
        cfg["datastore"] = "nowhere"
    elif key == "files":
        cfg["exclusion"]["files"] = ["masks/none.reg"]
    else:
        cfg["exclusion"]["catalogs"] = [{"file": "none.fits"}]
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    msg = _error(str(path.relative_to(tmp_path)))
    folder = folder.resolve()
    looked_at = {"datastore": folder / "nowhere", "files": folder / "masks" / "none.reg",
                 "catalog": folder / "none.fits"}[key]
    assert str(looked_at) in msg and "does not exist" in msg


def test_missing_config_file_names_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = _error("missing.yaml")
    assert str(tmp_path / "missing.yaml") in msg


@pytest.mark.parametrize("state", ["unset", "empty"])
@pytest.mark.parametrize("key", ["datastore", "files", "output"])
def test_gammapy_data_not_set_is_said_plainly(state, key, data_dir, monkeypatch, tmp_path):
    cfg = msh_config()
    value = "$GAMMAPY_DATA/x"
    if key == "datastore":
        cfg["datastore"] = "${GAMMAPY_DATA}/hess-dl3-dr1"
    elif key == "files":
        cfg["exclusion"]["files"] = [value]
    else:
        cfg["output"]["dir"] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    if state == "unset":
        monkeypatch.delenv("GAMMAPY_DATA")
    else:
        monkeypatch.setenv("GAMMAPY_DATA", "")
    msg = _error(str(path))
    assert f"GAMMAPY_DATA is {'not set' if state == 'unset' else 'empty'}" in msg
    assert {"datastore": "datastore", "files": "exclusion.files", "output": "output.dir"}[key] \
        in msg
    assert str(tmp_path) not in msg  # not joined to the config's folder


@pytest.mark.parametrize("text, line, column", [
    ("geom: [unclosed", 1, 16),
    ("datastore: x\ngeom:\n  skydir: {lon: 1, lat: 2\n  width: 3\n", 4, 8),
    ("datastore: x\n ring: 1\n", 2, 6),
    ("datastore: x\nring:\n\t- 1\n", 3, 1),
])
def test_yaml_syntax_errors_give_line_and_column(text, line, column, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    msg = _error(str(path))
    assert f"config file {path} is not valid YAML at line {line}, column {column}:" in msg
    assert f"config is not valid YAML at line {line}, column {column}:" in _error(text)
