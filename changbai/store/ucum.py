"""UCUM canonical forms for quantity search, so that 1 g and 1000 mg compare equal.

Only units that differ from a base unit by a scale factor are converted (mass, length, volume, time,
amount of substance, and their common concentrations); anything else keeps its own code and is compared
as written. The table is data: unit code -> (factor to the base unit, base unit).
"""

from __future__ import annotations

SYSTEM = "http://unitsofmeasure.org"

_PREFIX = {"": 1.0, "k": 1e3, "d": 1e-1, "c": 1e-2, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12}
_BASES = {"g": "g", "m": "m", "L": "L", "l": "L", "mol": "mol", "s": "s", "eq": "eq", "U": "U"}

_TABLE: dict[str, tuple[float, str]] = {}
for _unit, _base in _BASES.items():
    for _p, _f in _PREFIX.items():
        _TABLE[_p + _unit] = (_f, _base)
# concentrations per litre / decilitre
for _num in ("g", "mol", "eq", "U"):
    for _p, _f in _PREFIX.items():
        for _vol, _vf in (("L", 1.0), ("dL", 1e-1), ("mL", 1e-3)):
            _TABLE[f"{_p}{_num}/{_vol}"] = (_f / _vf, f"{_num}/L")
_TABLE.update(
    {
        "min": (60.0, "s"),
        "h": (3600.0, "s"),
        "d": (86400.0, "s"),
        "wk": (604800.0, "s"),
        "[lb_av]": (453.59237, "g"),
        "[oz_av]": (28.349523125, "g"),
        "[in_i]": (0.0254, "m"),
        "[ft_i]": (0.3048, "m"),
        "mm[Hg]": (1.0, "mm[Hg]"),
        "%": (1.0, "%"),
        "/min": (1.0, "/min"),
        "kg/m2": (1.0, "kg/m2"),
        "Cel": (1.0, "Cel"),
    }
)


def canonical(value: float, code: str) -> tuple[float, str] | None:
    """(value in the base unit, base unit code), or None when the unit is not in the table."""
    found = _TABLE.get(code)
    if found is None:
        return None
    factor, base = found
    return value * factor, base
