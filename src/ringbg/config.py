"""The YAML configuration contract (``DESIGN.md``), validated before any work starts.

Angles and energies are strings with units (``"0.5 deg"``, ``"10 TeV"``) and are stored as
plain floats in degrees and TeV. ``$VARS`` in paths are expanded. Relative paths in a config
*file* (``datastore``, ``exclusion.files``, ``exclusion.catalogs[].file``, ``output.dir``)
resolve against the file's folder; a config given as a dict or YAML text resolves them
against the current folder. Every error names the key, the bad value and what is allowed, in
one line (`ConfigError`).
"""

import math
import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)

from .background import TEMPLATES, Background
from .configtypes import (  # noqa: F401 (the contract's types, also for other modules)
    _VARIABLE,
    ENERGY_LIMITS_TEV,
    MAX_ADAPTIVE_RINGS,
    MAX_MAP_AXIS_PIXELS,
    MAX_MAP_PIXELS,
    MAX_N_SIGMA,
    OBS_ID_LIMITS,
    SPECTRAL_INDEX_LIMITS,
    Angle,
    Circle,
    Cone,
    Energy,
    Frame,
    NonNegativeAngle,
    PathStr,
    PositiveAngle,
    Radius,
    SkyDir,
    Width,
    _absolute,
    _angle,
    _expand,
    _Model,
    _unset_variables,
)
from .errors import ConfigError
from .exclusion import Exclusion
from .safemask import METHODS as SAFE_MASK_METHODS
from .safemask import SafeMask

__all__ = ["Config", "ConfigError", "load_config", "read_config", "TEMPLATE"]


class Observations(_Model):
    obs_ids: list[Annotated[int, Field(ge=OBS_ID_LIMITS[0], le=OBS_ID_LIMITS[1])]] | None = None
    cone: Cone | None = None


class EnergyAxis(_Model):
    # gammapy's AnalysisConfig datasets.geom.axes.energy defaults
    min: Energy = 1.0
    max: Energy = 10.0
    nbins: int = Field(5, ge=1, le=1000)

    @model_validator(mode="after")
    def _ordered(self):
        if self.max <= self.min:
            raise ValueError(f"max ({self.max} TeV) must be above min ({self.min} TeV)")
        return self


def _projection(value):
    """A projection code of astropy's WCS (``astropy.wcs.PRJ_CODES``), upper-cased."""
    from astropy.wcs import PRJ_CODES

    code = str(value).strip().upper()
    if code not in PRJ_CODES:
        raise ValueError(f"not a WCS projection code (astropy's are {', '.join(PRJ_CODES)})")
    return code


class GeomConfig(_Model):
    skydir: SkyDir
    width: Width = 5.0
    binsize: PositiveAngle = 0.02
    projection: Annotated[str, PlainValidator(_projection)] = "CAR"
    energy: EnergyAxis = EnergyAxis()
    #: true-energy axis of the exposure and energy dispersion; null: the same as ``energy``
    energy_true: EnergyAxis | None = None
    offset_max: Annotated[float, BeforeValidator(_angle), Field(gt=0, le=90)] = 2.5

    @property
    def energy_true_axis(self):
        """The true-energy axis in effect (``energy`` when ``energy_true`` is not set)."""
        return self.energy if self.energy_true is None else self.energy_true

    @property
    def width_deg(self):
        w = self.width
        return (w, w) if isinstance(w, float) else tuple(w)

    @model_validator(mode="after")
    def _bounded(self):
        nx, ny = (w / self.binsize for w in self.width_deg)
        if max(nx, ny) > MAX_MAP_AXIS_PIXELS or nx * ny > MAX_MAP_PIXELS:
            raise ValueError(
                f"geom.width / geom.binsize: a map of {nx:.4g} x {ny:.4g} pixels is beyond "
                f"ringbg's limits ({MAX_MAP_AXIS_PIXELS} pixels a side, {MAX_MAP_PIXELS:.0e} "
                "in all); use a larger geom.binsize or a smaller geom.width")
        _check_wcs(self)
        return self


def _check_wcs(geom):
    """`ValueError` naming geom.projection when astropy cannot build the map's WCS (the
    projections that need parameters, ZPN, the conics, BON, have none in ringbg)."""
    from .geom import Geom

    try:
        Geom.create(geom.skydir.lon, geom.skydir.lat, geom.skydir.frame, geom.width_deg,
                    geom.binsize, geom.projection, [1.0, 10.0]).wcs.wcs.set()
    except Exception:  # wcslib's errors (ValueError, InvalidPrjParametersError...)
        raise ValueError(f"geom.projection: astropy's WCS cannot make a {geom.projection} map "
                         "centred on geom.skydir without projection parameters (PVi_m), which "
                         "ringbg does not set; use e.g. CAR, TAN or AIT") from None


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


class Sensitivity(_Model):
    """The SENSITIVITY map: gammapy 2.1's ExcessMapEstimator sensitivity options."""

    n_sigma: float = Field(5.0, gt=0)
    gamma_min: float = Field(10.0, ge=0)
    bkg_syst_fraction: float = Field(0.05, ge=0)
    #: use gamma_min and bkg_syst_fraction (gammapy's default: no, as the HGPS)
    apply_threshold: bool = False


class Excess(_Model):
    #: one radius or a list: the first gives maps.fits, each further r maps_<r>deg.fits
    correlation_radius: PositiveAngle | list[PositiveAngle] = 0.1
    correlate_off: bool = True
    n_sigma_ul: float = Field(2.0, gt=0, le=MAX_N_SIGMA)
    spectral_index: float = Field(2.0, ge=SPECTRAL_INDEX_LIMITS[0], le=SPECTRAL_INDEX_LIMITS[1])
    energy_bands: bool = False
    sensitivity: Sensitivity = Sensitivity()
    edisp: bool = True

    @model_validator(mode="after")
    def _radii(self):
        radii = self.radii_deg
        if not radii:
            raise ValueError("correlation_radius: give at least one radius")
        if len(set(radii)) != len(radii):
            raise ValueError(f"correlation_radius: a radius is listed twice ({radii})")
        return self

    @property
    def radii_deg(self):
        """The correlation radii (deg), the first one that of maps.fits."""
        r = self.correlation_radius
        return [r] if isinstance(r, float) else list(r)


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
    background: Background = Background()
    exclusion: Exclusion = Exclusion()
    ring: Ring = Ring()
    excess: Excess = Excess()
    parallel: Parallel = Parallel()
    output: Output = Output()

    @model_validator(mode="after")
    def _consistent(self):
        store = Path(self.datastore)
        if not store.is_dir():
            raise ValueError(f"datastore: folder {_absolute(self.datastore)} does not exist")
        half = min(self.geom.width_deg) / 2
        r_out = self.ring.r_in + self.ring.width
        if self.ring.adaptive is not None:
            r_out = max(r_out, self.ring.adaptive.r_out_max)
        if r_out > half * (1 + 1e-9):  # reaching the map's edge is allowed, as in gammapy
            raise ValueError(
                f"ring: r_in + width (or r_out_max) = {r_out:g} deg does not fit in the map "
                f"(half width {half:g} deg); use a smaller ring or a wider map"
            )
        if self.geom.binsize > half:
            raise ValueError(f"geom.binsize: {self.geom.binsize:g} deg is larger than the map")
        if max(self.excess.radii_deg) >= half:
            raise ValueError(
                f"excess.correlation_radius: {max(self.excess.radii_deg):g} deg does not "
                f"fit in the map (half width {half:g} deg)"
            )
        self._check_sizes(half)
        return self

    def _check_sizes(self, half):
        """Kernels and loops the config sets the size of: bounded before any work."""
        adaptive = self.ring.adaptive
        if adaptive is not None:
            if adaptive.theta >= half:
                raise ValueError(f"ring.adaptive.theta: {adaptive.theta:g} deg does not fit in "
                                 f"the map (half width {half:g} deg)")
            span = adaptive.r_out_max - self.ring.r_in - self.ring.width
            n_rings = math.ceil(span / adaptive.stepsize) if span > 0 else 0
            if n_rings > MAX_ADAPTIVE_RINGS:
                raise ValueError(
                    f"ring.adaptive.stepsize: {adaptive.stepsize:g} deg gives {n_rings} "
                    f"candidate rings up to r_out_max, more than {MAX_ADAPTIVE_RINGS}; use a "
                    "larger stepsize")
        auto = self.exclusion.auto
        if auto is not None and auto.dilate > max(self.geom.width_deg):
            raise ValueError(f"exclusion.auto.dilate: {auto.dilate:g} deg is larger than the "
                             f"map ({max(self.geom.width_deg):g} deg)")


#: pydantic's names of the members of a union of types, in error locations
_TYPE_TAGS = {"float", "int", "str", "bool", "list", "tuple", "dict", "none"}


def _is_type_tag(part):
    return isinstance(part, str) and (part in _TYPE_TAGS or any(c in part for c in "[(-<"))


def _format_error(exc):
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not _is_type_tag(p))
    msg = " ".join(err["msg"].removeprefix("Value error, ").split())
    if err["type"] == "extra_forbidden":
        return f"config key '{loc}' is not known (misspelt?); see 'ringbg config' for the keys"
    if err["type"] == "missing":
        return f"config key '{loc}' is required"
    value = err.get("input")
    if loc and msg.startswith(f"{loc}."):  # a check of several keys, named in the message
        return f"config: {msg}"
    if loc:
        if isinstance(value, (dict, list, tuple)) or value is None:
            return f"config key '{loc}': {msg}"
        return f"config key '{loc}' = {_short_repr(value)}: {msg}"
    return f"config: {msg}"


def _short_repr(value, size=80):
    text = " ".join(repr(value).split())
    return text if len(text) <= size else text[:size - 3] + "..."


def _read_text(text):
    """``(yaml_text, path)``: the content of the file ``text`` names and its path, or ``text``
    itself (YAML text) and None."""
    if "\n" in text or len(text) > 4096:
        return text, None
    path = Path(text)
    try:
        is_file = path.suffix in (".yaml", ".yml") or path.exists()
    except (OSError, ValueError):  # a name too long, a NUL in it: YAML text
        return text, None
    if not is_file:
        return text, None
    if not path.is_file():
        raise ConfigError(f"config file {_absolute(path)} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {_absolute(path)} cannot be read "
                          f"({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8"), path
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {_absolute(path)} is not UTF-8 text (byte "
                          f"{raw[exc.start]:#04x} at position {exc.start}); save it as "
                          "UTF-8") from None


def _yaml_error(exc, where):
    """One line for a YAML syntax error: where (line and column, 1-based) and what."""
    mark = getattr(exc, "problem_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    if mark is None:
        return f"{where} is not valid YAML: {_short_repr(problem, 200)}"
    text = f"{where} is not valid YAML at line {mark.line + 1}, column {mark.column + 1}: " \
           f"{problem}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line != mark.line:
        text += (f" ({' '.join(str(context).split())} that starts at line "
                 f"{context_mark.line + 1}, column {context_mark.column + 1})")
    return text


def _parse_yaml(text, where):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(exc, where)) from None
    except RecursionError:
        raise ConfigError(f"{where} is not valid YAML: it is nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date that is not one
        raise ConfigError(f"{where} is not valid YAML: {_short_repr(str(exc))}") from None


def _resolve_path(value, folder):
    """A relative path (after expanding ``~`` and ``$VARS``) joined to ``folder``; anything
    else (absolute, unset variables, not text) is returned as given, for validation."""
    if not isinstance(value, str) or not value.strip() or _unset_variables(value):
        return value
    expanded = _expand(value)
    return expanded if os.path.isabs(expanded) else str(folder / expanded)


def _resolve_paths(data, folder):
    """The relative paths of a config file's mapping (``datastore``, ``exclusion.files``,
    ``exclusion.catalogs[].file``, ``output.dir``) made absolute against ``folder``, in place.
    Keys left out keep their defaults (``output.dir``: ``results`` in the current folder)."""
    if "datastore" in data:
        data["datastore"] = _resolve_path(data["datastore"], folder)
    exclusion = data.get("exclusion")
    if isinstance(exclusion, dict):
        if isinstance(exclusion.get("files"), list):
            exclusion["files"] = [_resolve_path(f, folder) for f in exclusion["files"]]
        for catalog in exclusion.get("catalogs") or []:
            if isinstance(catalog, dict) and "file" in catalog:
                catalog["file"] = _resolve_path(catalog["file"], folder)
    output = data.get("output")
    if isinstance(output, dict) and "dir" in output:
        output["dir"] = _resolve_path(output["dir"], folder)


def read_config(source):
    """The mapping of a config before validation: a YAML file (its relative paths made
    absolute against the file's folder), YAML text, or a dict (returned as given).

    Raises
    ------
    ConfigError
        A file that cannot be read, YAML that cannot be parsed (with line and column), or
        YAML that is not a mapping.
    """
    if isinstance(source, dict):
        return source
    text, path = _read_text(str(source))
    where = "config" if path is None else f"config file {_absolute(path)}"
    data = _parse_yaml(text, where)
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a YAML mapping of keys (see 'ringbg config')")
    if path is not None:  # the folder the file is in, as the system finds it
        _resolve_paths(data, Path(os.path.realpath(_absolute(path).parent)))
    return data


def load_config(source):
    """Validated `Config` from a YAML file path, a YAML string or a dict.

    Relative paths in a YAML *file* resolve against the file's folder; in YAML text or a
    dict, against the current folder.

    Raises
    ------
    ConfigError
        With one line naming the key, the value and what is allowed.
    """
    if isinstance(source, Config):
        return source
    data = read_config(source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None
    except RecursionError:
        raise ConfigError("config is nested too deeply to be a ringbg config") from None


TEMPLATE = """\
# ringbg configuration: ring-background excess and significance maps.
# Angles and energies take units ("0.5 deg", "10 TeV"); $VARS in paths are expanded, and
# relative paths (datastore, exclusion files and catalogs, output.dir) are taken from the
# folder of this file. Any key can be changed on the command line: ringbg run my.yaml
# --set excess.correlation_radius=0.1deg --set 'observations.obs_ids=[20136,20137]'
# As written, this template reproduces gammapy's "Ring background map" tutorial (MSH 15-52,
# H.E.S.S. DL3 DR1) when GAMMAPY_DATA points at the folder holding hess-dl3-dr1: the keys
# marked "tutorial" are its settings; a key left out takes gammapy's Analysis default (the
# value after "default:").

datastore: $GAMMAPY_DATA/hess-dl3-dr1      # folder with obs-index.fits.gz and hdu-index.fits.gz

observations:
  obs_ids: null                             # list of ids; null: all observations
  cone: {frame: icrs, lon: 228.32 deg, lat: -59.08 deg, radius: 2.5 deg}   # tutorial; on the pointing

geom:
  skydir: {frame: icrs, lon: 228.32 deg, lat: -59.08 deg}   # tutorial; map centre, icrs or galactic
  width: 3 deg                              # tutorial (default: 5 deg); or [width, height]
  binsize: 0.02 deg                         # tutorial (default: 0.02 deg)
  projection: CAR                           # default: CAR; any WCS projection code (TAN, AIT, ...)
  energy: {min: 0.5 TeV, max: 10 TeV, nbins: 10}   # tutorial (default: 1-10 TeV, 5 bins), log-spaced
  energy_true: null                         # default: null (the same as energy, as the
                                            #  tutorial); e.g. {min: 0.3 TeV, max: 20 TeV,
                                            #  nbins: 20}: true energy of exposure and edisp
  offset_max: 2.5 deg                       # tutorial (default: 2.5 deg); cutout half-width

safe_mask:
  methods: [aeff-default]                   # default; any of {methods}
  parameters: {}                            # aeff_percent: 10, offset_max: geom.offset_max,
                                            # irfs: DL4 (aeff-max / bkg-peak from the reduced
                                            # cubes, as gammapy) or DL3 (from the IRFs)

background:
  template: auto                            # default: auto (irf where the observation has a
                                            #  background IRF, else data); {templates}
  data:                                     # the template built from the events (defaults):
    group: run                              #  run, zenith (bins of zenith_bin) or all
    zenith_bin: 10 deg
    off_obs_ids: []                         #  runs whose events give the shape (not stacked)
    min_counts_node: 200                    #  counts per radial node
    min_counts_group: 2000                  #  counts per group of energy bins
    fine_width: 0.02 deg                    #  offset bins of the histograms
    smoothing: fit                          #  fit (Poisson fit of the nodes) or nodes
    interpolation: log                      #  log or lin, between nodes

exclusion:
  regions:                                  # tutorial: circles excluded from the background
    - {frame: icrs, lon: 228.32 deg, lat: -59.08 deg, radius: 0.4 deg}
  files: []                                 # DS9 region files, or FITS masks (1 = usable)
  catalogs: []                              # e.g. [{file: $GAMMAPY_DATA/catalogs/hgps_catalog_v1.fits.gz}]:
                                            #  each source in the map excluded within
                                            #  max(min_radius: 0.3 deg, size_factor: 3 x size)
                                            #  + margin: 0.1 deg (format: auto|hgps|gammacat|columns)
  auto: null                                # e.g. {threshold: 5, grow_threshold: 3, iterations: 3,
                                            #  dilate: 0.1 deg}

ring:
  r_in: 0.5 deg                             # tutorial
  width: 0.3 deg                            # tutorial
  adaptive: null                            # e.g. {r_out_max: 2 deg, stepsize: 0.02 deg,
                                            #  threshold_alpha: 0.1, theta: 0.22 deg,
                                            #  method: fixed_width}   (or fixed_r_in)

excess:
  correlation_radius: 0.04 deg              # tutorial (default: 0.1 deg); top-hat radius, or a
                                            #  list [0.1 deg, 0.2 deg]: maps.fits, maps_0.2deg.fits
  correlate_off: false                      # tutorial (default: true); false: n_off is the ring
  n_sigma_ul: 2                             # default: 2; upper limits at this many sigma
  spectral_index: 2                         # default: 2; power law assumed for flux maps
  energy_bands: false                       # default: false; also write maps per energy bin
  sensitivity: {n_sigma: 5, gamma_min: 10, bkg_syst_fraction: 0.05, apply_threshold: false}
                                            # default; the SENSITIVITY map (gammapy's options)
  edisp: true                               # default: true; fold the energy dispersion into
                                            #  the flux maps (as gammapy)

parallel:
  jobs: 1                                   # local worker processes
  address: null                             # a Dask scheduler address -> run on that cluster

output:
  dir: results                              # next to this file (relative to its folder)
  per_observation: false                    # also write each observation's on/off dataset
  figures: true                             # false: FITS and summary.json only
  overwrite: false
""".replace("{methods}", ", ".join(SAFE_MASK_METHODS)).replace("{templates}", ", ".join(TEMPLATES))
