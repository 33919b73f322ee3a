"""The config contract: every bad value gets one line naming the key."""

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
