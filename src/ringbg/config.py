"""The YAML configuration contract (``DESIGN.md``), validated before any work starts.

Angles and energies are strings with units (``"0.5 deg"``, ``"10 TeV"``) and are stored as
plain floats in degrees and TeV. ``$VARS`` in paths are expanded. Every error names the key,
the bad value and what is allowed, in one line (`ConfigError`).
"""

import os
from pathlib import Path
from typing import Annotated, Literal

import astropy.units as u
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

__all__ = ["Config", "ConfigError", "load_config", "TEMPLATE"]


def _quantity(value, unit, what):
    if isinstance(value, bool):
        raise ValueError(f"expected {what} such as '1 {unit}'")
    if isinstance(value, (int, float)):
        return float(value)  # a bare number is taken in the default unit
    try:
        q = u.Quantity(str(value))
    except (TypeError, ValueError):
        raise ValueError(f"expected {what} such as '1 {unit}'") from None
    if q.unit == u.dimensionless_unscaled:
        return float(q.value)
    try:
        return float(q.to_value(unit))
    except u.UnitConversionError:
        raise ValueError(f"unit '{q.unit}' is not {what} (use e.g. '1 {unit}')") from None


def _angle(value):
    return _quantity(value, "deg", "an angle")


def _energy(value):
    return _quantity(value, "TeV", "an energy")


def _path(value):
    return os.path.expandvars(os.path.expanduser(str(value)))


Angle = Annotated[float, BeforeValidator(_angle)]
PositiveAngle = Annotated[float, BeforeValidator(_angle), Field(gt=0)]
NonNegativeAngle = Annotated[float, BeforeValidator(_angle), Field(ge=0)]
Energy = Annotated[float, BeforeValidator(_energy), Field(gt=0)]
PathStr = Annotated[str, BeforeValidator(_path)]
Frame = Literal["icrs", "galactic"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class SkyDir(_Model):
    frame: Frame = "icrs"
    lon: Angle
    lat: Annotated[float, BeforeValidator(_angle), Field(ge=-90, le=90)]


class Cone(SkyDir):
    radius: PositiveAngle


class Circle(SkyDir):
    radius: PositiveAngle


class Observations(_Model):
    obs_ids: list[int] | None = None
    cone: Cone | None = None


class EnergyAxis(_Model):
    min: Energy = 0.5
    max: Energy = 10.0
    nbins: int = Field(10, ge=1, le=1000)

    @model_validator(mode="after")
    def _ordered(self):
        if self.max <= self.min:
            raise ValueError(f"max ({self.max} TeV) must be above min ({self.min} TeV)")
        return self


class GeomConfig(_Model):
    skydir: SkyDir
    width: PositiveAngle | tuple[PositiveAngle, PositiveAngle] = 3.0
    binsize: PositiveAngle = 0.02
    projection: str = Field("CAR", pattern=r"^[A-Z]{3}$")
    energy: EnergyAxis = EnergyAxis()
    #: true-energy axis of the exposure and energy dispersion; null: the same as ``energy``
    energy_true: EnergyAxis | None = None
    offset_max: PositiveAngle = 2.5

    @property
    def energy_true_axis(self):
        """The true-energy axis in effect (``energy`` when ``energy_true`` is not set)."""
        return self.energy if self.energy_true is None else self.energy_true

    @property
    def width_deg(self):
        w = self.width
        return (w, w) if isinstance(w, float) else tuple(w)


class SafeMaskParameters(_Model):
    aeff_percent: float = Field(10.0, gt=0, le=100)
    offset_max: PositiveAngle = 3.0


class SafeMask(_Model):
    methods: list[Literal["aeff-default", "offset-max", "aeff-max", "bkg-peak"]] = [
        "aeff-default"
    ]
    parameters: SafeMaskParameters = SafeMaskParameters()


class AutoExclusion(_Model):
    threshold: float = Field(5.0, gt=0)
    iterations: int = Field(3, ge=1, le=50)
    dilate: NonNegativeAngle = 0.1


class Exclusion(_Model):
    regions: list[Circle] = []
    files: list[PathStr] = []
    auto: AutoExclusion | None = None

    @model_validator(mode="after")
    def _files_exist(self):
        for path in self.files:
            if not Path(path).is_file():
                raise ValueError(f"file {path} does not exist")
        return self


class Adaptive(_Model):
    r_out_max: PositiveAngle = 2.0
    stepsize: PositiveAngle = 0.02
    threshold_alpha: float = Field(0.1, gt=0)
    theta: PositiveAngle = 0.22
    method: Literal["fixed_width", "fixed_r_in"] = "fixed_width"


class Ring(_Model):
    r_in: NonNegativeAngle = 0.5
    width: PositiveAngle = 0.3
    adaptive: Adaptive | None = None


class Excess(_Model):
    correlation_radius: PositiveAngle = 0.1
    correlate_off: bool = True
    n_sigma_ul: float = Field(2.0, gt=0)
    spectral_index: float = 2.3
    energy_bands: bool = False
    edisp: bool = True


class Parallel(_Model):
    jobs: int = Field(1, ge=1, le=1024)
    address: str | None = None


class Output(_Model):
    dir: PathStr = "results"
    per_observation: bool = False
    figures: bool = True
    overwrite: bool = False


class Config(_Model):
    """The whole configuration; see ``ringbg config`` for the annotated template."""

    datastore: PathStr
    observations: Observations = Observations()
    geom: GeomConfig
    safe_mask: SafeMask = SafeMask()
    exclusion: Exclusion = Exclusion()
    ring: Ring = Ring()
    excess: Excess = Excess()
    parallel: Parallel = Parallel()
    output: Output = Output()

    @model_validator(mode="after")
    def _consistent(self):
        store = Path(self.datastore)
        if not store.is_dir():
            raise ValueError(f"datastore: folder {self.datastore} does not exist")
        half = min(self.geom.width_deg) / 2
        r_out = self.ring.r_in + self.ring.width
        if self.ring.adaptive is not None:
            r_out = max(r_out, self.ring.adaptive.r_out_max)
        if r_out >= half:
            raise ValueError(
                f"ring: r_in + width (or r_out_max) = {r_out:g} deg does not fit in the map "
                f"(half width {half:g} deg); use a smaller ring or a wider map"
            )
        if self.geom.binsize > half:
            raise ValueError(f"geom.binsize: {self.geom.binsize:g} deg is larger than the map")
        if self.excess.correlation_radius >= half:
            raise ValueError(
                f"excess.correlation_radius: {self.excess.correlation_radius:g} deg does not "
                f"fit in the map (half width {half:g} deg)"
            )
        return self


def _format_error(exc):
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or True)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"config key '{loc}' is not known (misspelt?); see 'ringbg config' for the keys"
    if err["type"] == "missing":
        return f"config key '{loc}' is required"
    value = err.get("input")
    if loc:
        if isinstance(value, (dict, list)) or value is None:
            return f"config key '{loc}': {msg}"
        return f"config key '{loc}' = {value!r}: {msg}"
    return f"config: {msg}"


def load_config(source):
    """Validated `Config` from a YAML file path, a YAML string or a dict.

    Raises
    ------
    ConfigError
        With one line naming the key, the value and what is allowed.
    """
    if isinstance(source, Config):
        return source
    if isinstance(source, dict):
        data = source
    else:
        text = str(source)
        path = Path(text)
        if "\n" not in text and (path.suffix in (".yaml", ".yml") or path.exists()):
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist")
            text = path.read_text()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError("config must be a YAML mapping of keys (see 'ringbg config')")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


TEMPLATE = """\
# ringbg configuration: ring-background excess and significance maps.
# Angles and energies take units ("0.5 deg", "10 TeV"); $VARS in paths are expanded.
# This template runs as is on the H.E.S.S. DL3 DR1 (MSH 15-52, the gammapy tutorial)
# when GAMMAPY_DATA points at the folder holding hess-dl3-dr1.

datastore: $GAMMAPY_DATA/hess-dl3-dr1      # folder with obs-index.fits.gz and hdu-index.fits.gz

observations:
  obs_ids: null                             # list of ids; null: all observations
  cone: {frame: icrs, lon: 228.32 deg, lat: -59.08 deg, radius: 2.5 deg}   # on the pointing

geom:
  skydir: {frame: icrs, lon: 228.32 deg, lat: -59.08 deg}   # map centre; icrs or galactic
  width: 3 deg                              # or [width, height]
  binsize: 0.02 deg
  projection: CAR                           # any WCS projection code (CAR, TAN, AIT, ...)
  energy: {min: 0.5 TeV, max: 10 TeV, nbins: 10}   # log-spaced reconstructed energy
  energy_true: null                         # e.g. {min: 0.3 TeV, max: 20 TeV, nbins: 20}: the
                                            # true energy of exposure and energy dispersion;
                                            # null: the same as energy (as the tutorial)
  offset_max: 2.5 deg                       # cutout half-width around each pointing

safe_mask:
  methods: [aeff-default]                   # aeff-default, offset-max, aeff-max, bkg-peak
  parameters: {}                            # aeff_percent: 10, offset_max: 3 deg

exclusion:
  regions:                                  # circles excluded from the background estimate
    - {frame: icrs, lon: 228.32 deg, lat: -59.08 deg, radius: 0.4 deg}
  files: []                                 # DS9 region files, or FITS masks (1 = usable)
  auto: null                                # e.g. {threshold: 5, iterations: 3, dilate: 0.1 deg}

ring:
  r_in: 0.5 deg
  width: 0.3 deg
  adaptive: null                            # e.g. {r_out_max: 1.5 deg, stepsize: 0.02 deg,
                                            #  threshold_alpha: 0.1, theta: 0.22 deg,
                                            #  method: fixed_width}   (or fixed_r_in)

excess:
  correlation_radius: 0.1 deg               # top-hat radius of the correlated maps
  correlate_off: true                       # also sum the off counts in the top-hat (gammapy default)
  n_sigma_ul: 2                             # upper limits at this many sigma
  spectral_index: 2.3                       # power law assumed for flux maps
  energy_bands: false                       # also write maps per energy bin
  edisp: true                               # fold the energy dispersion into the flux maps
                                            # (as gammapy); false: true = reconstructed energy

parallel:
  jobs: 1                                   # local worker processes
  address: null                             # a Dask scheduler address -> run on that cluster

output:
  dir: results
  per_observation: false                    # also write each observation's on/off dataset
  figures: true                             # false: FITS and summary.json only
  overwrite: false
"""
