"""Grid studies: the conditions of a study built from a product of knob values.

    from engine.host.grid import grid

    STUDY = {
        "name": "phase",
        "seeds": list(range(10)),
        "base": {},
        "conditions": grid(
            judge_update_every=[1, 2, 5, 10, 20, 50, 100],
            lr_judge=[1e-4, 3e-4, 1e-3, 3e-3],
            controls={"frozen": {"freeze_judge": True}},
        ),
    }

gives 28 grid conditions in product order (the first knob varies slowest, like
`itertools.product`), then the controls.

Naming. A grid condition is named `<knob>_<value>` per grid knob, joined by `+`, in the
order the knobs were given: `judge_update_every_10+lr_judge_0.0003`. Values are written
compactly but exactly: integers as digits, booleans as `true`/`false`, floats with `%g`
when that reads back as the same float (`0.0003`, `1e-05`) and with `repr` otherwise, so
two different cells never share a name. When any full name of a grid would exceed the
64-character limit of condition names, every name of that grid uses the knobs'
abbreviations instead (initials of their words, `ABBREVIATIONS`: `jue_10+lj_0.0003`).
The names are only labels: analysis finds a cell by its knob coordinates
(`analysis.grid.unstack_grid`), never by parsing its name.
"""

import itertools
import numbers
from collections.abc import Sequence

import numpy as np

from engine.host.study import MAX_NAME_LENGTH, NAME_PATTERN, shown
from engine.knobs import KNOBS

KNOB_SEPARATOR = "+"  # between the knobs of one name; never part of a knob name or a finite value < 1e16
VALUE_SEPARATOR = "_"  # between a knob and its value; never part of a value


def _abbreviations(names) -> dict:
    """Initials of each name's words; where two would clash, the later one takes more letters of
    its last word (`meta_source` → ms, `meta_select` → mse), then a number."""
    out: dict[str, str] = {}
    for name in names:
        words = name.split("_")
        stem = "".join(word[0] for word in words[:-1])
        candidates = [stem + words[-1][:n] for n in range(1, len(words[-1]) + 1)]
        candidates += [f"{name}{n}" for n in range(2, 2 + len(out) + 1)]
        out[name] = next(c for c in candidates if c not in out.values())
    return out


ABBREVIATIONS = _abbreviations(KNOBS)


def format_value(value) -> str:
    """A knob value as it appears in a condition name: compact, and read back exactly."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        if abs(int(value)) >= 2**63:  # no knob takes it (resolve refuses it), and its name would be huge
            raise ValueError(f"a grid knob value must be an int below 2**63 in size, got {shown(value)}")
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    raise TypeError(f"a grid knob value must be a bool, int or float, got {value!r} ({type(value).__name__})")


def cell_name(cell: dict, abbreviate: bool = False) -> str:
    """The name of one grid cell `{knob: value}` (knobs in the given order)."""
    return KNOB_SEPARATOR.join(
        f"{ABBREVIATIONS[knob] if abbreviate else knob}{VALUE_SEPARATOR}{format_value(value)}"
        for knob, value in cell.items()
    )


def _described(values) -> str:
    """What a grid axis was given, for a message: its type, shape or length, never a huge repr."""
    if isinstance(values, np.ndarray):
        return f"a {values.ndim}-D array of shape {values.shape}"
    if isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
        return f"an empty {type(values).__name__}" if not len(values) else f"a {type(values).__name__}"
    text = shown(values)
    return f"{text[:60]}… ({type(values).__name__})" if len(text) > 60 else f"{text} ({type(values).__name__})"


def axis_values(knob: str, values) -> list:
    """One grid axis's values as a list: a list, tuple, range or 1-D numpy array (numpy scalars
    become Python ones), non-empty, with no two equal values (-0.0 is 0.0: the same experiment)."""
    listed = values.tolist() if isinstance(values, np.ndarray) and values.ndim == 1 else values
    if isinstance(listed, (str, bytes)) or not isinstance(listed, Sequence) or not len(listed):
        raise ValueError(f"grid(): {knob} needs a non-empty list (or 1-D array) of values, got {_described(values)}")
    values = [v.item() if isinstance(v, np.generic) else v for v in listed]
    for value in values:
        try:
            format_value(value)  # a bool, int or float that can name a condition
        except (TypeError, ValueError) as error:
            raise type(error)(f"grid(): {knob}: {error}") from None
    seen, duplicates = set(), []
    for value in values:  # numbers that compare equal hash equal: 1 and 1.0, -0.0 and 0.0
        if value in seen:
            duplicates.append(value)
        seen.add(value)
    if duplicates:
        raise ValueError(
            f"grid(): {knob} has duplicate values {', '.join(shown(v) for v in duplicates[:10])} in "
            f"{len(values)} values (equal numbers, -0.0 and 0.0 included, are the same experiment)"
        )
    return values


def _check_axes(axes: dict) -> dict:
    if not axes:
        raise ValueError("grid() needs at least one knob with a list of values, e.g. grid(lr_judge=[1e-4, 3e-4])")
    for knob in axes:
        if knob not in KNOBS:
            raise ValueError(f"grid(): unknown knob {knob!r}; valid knobs: {', '.join(sorted(KNOBS))}")
    return {knob: axis_values(knob, values) for knob, values in axes.items()}


def grid(*, fixed: dict | None = None, controls: dict | None = None, **axes) -> dict:
    """The conditions dict of a study: one condition per combination of the `axes` values.

    axes: knob -> list (or 1-D array) of values (keyword order = name order; the first knob varies slowest).
    fixed: knobs set in every grid condition (not in the controls); use the study's `base`
        for knobs that every condition, controls included, shares.
    controls: extra named conditions `{name: knobs}` appended after the grid as they are,
        e.g. `{"frozen": {"freeze_judge": True}}`.
    Returns `{name: knobs}`; values are checked later by `engine.resolve`, like any study.
    """
    axes = _check_axes(axes)
    fixed = dict(fixed or {})
    controls = dict(controls or {})
    overlap = sorted(set(fixed) & set(axes))
    if overlap:
        raise ValueError(f"grid(): {overlap} is both a grid axis and fixed")
    cells = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    abbreviate = any(len(cell_name(cell)) > MAX_NAME_LENGTH for cell in cells)
    conditions = {}
    for cell in cells:
        name = cell_name(cell, abbreviate)
        if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"grid(): condition name {name[:80]!r}{'…' if len(name) > 80 else ''} is not 1-{MAX_NAME_LENGTH} "
                "characters of letters, digits, '_', '.', '+', '-' even abbreviated; use fewer knobs or build the "
                "conditions by hand"
            )
        conditions[name] = {**fixed, **cell}
    taken = {name.casefold() for name in conditions}
    clashes = [name for name in controls if name.casefold() in taken]
    if clashes:
        raise ValueError(f"grid(): control names {clashes} clash with grid condition names")
    return {**conditions, **controls}
