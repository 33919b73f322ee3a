"""Field types of the YAML contract: angles and energies with units, paths with ``$VARS``,
sky directions, and the base model (unknown keys, NaN and infinity refused).

The config's sections use them, those of `ringbg.config` and those defined beside the
functions they configure (`ringbg.safemask`, `ringbg.background`, `ringbg.exclusion`).
"""

import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import astropy.units as u
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator

#: limits of the config (README "Input checks"), generous for real surveys: the H.E.S.S.
#: Galactic plane survey map is 5500 x 500 pixels of 0.02 deg with 6 energy bins
MAX_MAP_AXIS_PIXELS = 100_000
MAX_MAP_PIXELS = 10**9
#: energies (TeV) of the map axis: 1 MeV to 1 EeV
ENERGY_LIMITS_TEV = (1e-6, 1e6)
#: power-law index of the flux maps
SPECTRAL_INDEX_LIMITS = (-10.0, 10.0)
#: candidate rings of the adaptive ring, (r_out_max - r_in - width) / stepsize
MAX_ADAPTIVE_RINGS = 1000
#: upper limits at most this many sigma
MAX_N_SIGMA = 100.0
#: observation ids are 64-bit integers (the FITS column type K)
OBS_ID_LIMITS = (-(2**63), 2**63 - 1)



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


_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _unset_variables(value):
    """The names of the ``$VARS`` of ``value`` that are not set or empty."""
    names = (m.group(1) or m.group(2) for m in _VARIABLE.finditer(value))
    return [name for name in names if not os.environ.get(name)]


def _expand(value):
    """``~`` and ``$VARS`` of a path expanded (unset variables are left as written)."""
    return os.path.expandvars(os.path.expanduser(str(value)))


def _path(value):
    """A path with ``~`` and ``$VARS`` expanded; `ValueError` when a variable it uses is not
    set (or empty), rather than a path that still holds ``$NAME``."""
    for name in _unset_variables(str(value)):
        state = "is empty" if name in os.environ else "is not set"
        hint = (" to the folder of the gammapy-data sets (README 'Test data')"
                if name == "GAMMAPY_DATA" else "")
        raise ValueError(f"{name} {state}; set it{hint} or write the path in full")
    return _expand(value)


def _absolute(path):
    """The absolute path ``path`` names (relative to the current folder), for messages."""
    return Path(path).absolute()


def _checked_angle(value, low=0.0, high=360.0):
    """An angle in (low, high] (deg), finite."""
    angle = _angle(value)
    if not math.isfinite(angle):
        raise ValueError("Input should be a finite number")
    if not low < angle <= high:
        raise ValueError(f"must be above {low:g} deg and at most {high:g} deg")
    return angle


def _width(value):
    """geom.width: one angle, or [width, height] (two angles), each in (0, 360] deg."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"expected one angle or two ([width, height]), got {len(value)} "
                             "values")
        return (_checked_angle(value[0]), _checked_angle(value[1]))
    return _checked_angle(value)


Angle = Annotated[float, BeforeValidator(_angle)]
PositiveAngle = Annotated[float, BeforeValidator(_angle), Field(gt=0, le=360)]
NonNegativeAngle = Annotated[float, BeforeValidator(_angle), Field(ge=0, le=360)]
Energy = Annotated[float, BeforeValidator(_energy),
                   Field(ge=ENERGY_LIMITS_TEV[0], le=ENERGY_LIMITS_TEV[1])]
#: one validator (no union of types): errors name the key, not pydantic's union members
Width = Annotated[object, PlainValidator(_width)]
PathStr = Annotated[str, BeforeValidator(_path)]
Frame = Literal["icrs", "galactic"]


class _Model(BaseModel):
    # no NaN or infinity in any number of the config
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class SkyDir(_Model):
    frame: Frame = "icrs"
    lon: Annotated[float, BeforeValidator(_angle), Field(ge=-360, le=360)]
    lat: Annotated[float, BeforeValidator(_angle), Field(ge=-90, le=90)]


Radius = Annotated[float, BeforeValidator(_angle), Field(gt=0, le=180)]


class Cone(SkyDir):
    radius: Radius


class Circle(SkyDir):
    radius: Radius
