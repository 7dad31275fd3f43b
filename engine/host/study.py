"""A study dict, checked and resolved into runs before anything is compiled.

A study is `{"name", "seeds", "base", "conditions"}` (plus an optional "description").
`resolve` merges base and condition knobs over the defaults, checks every value, and
fails with a `StudyError` (a ValueError) that names the study, the condition and the
field. Nothing is traced until a study passes.

A combination that would silently run a different experiment than the one written is
refused (`StudyError`) when nothing legitimate produces it, and otherwise resolves with a
warning in `ResolvedStudy.warnings` (printed by `coevo run`, stored in the Dataset's attrs):
chiefly cadences longer than the run, which shortened copies of real studies produce.
"""

import difflib
import json
import math
import numbers
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from engine.core.world import MAX_SEQUENCES
from engine.host.combinations import StudyError, check_combination, where
from engine.knobs import DEFAULTS, KNOBS, RUN, STUDY_KNOBS, Sizes, Variant, sizes_of, variant_of, world_of

TOP_LEVEL_KEYS = ("name", "seeds", "base", "conditions", "description")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.+\-]+")  # used with fullmatch
MAX_NAME_LENGTH = 64
MAX_INT = 2**31 - 1  # int knobs and seeds become int32 arrays
_NAME_RULE = f"1-{MAX_NAME_LENGTH} characters of letters, digits, '_', '.', '+', '-'"


@dataclass(frozen=True)
class ResolvedStudy:
    """A checked study: resolved knobs per condition, seeds, the loop's sizes."""

    name: str
    seeds: tuple[int, ...]
    conditions: dict  # condition name -> full knob dict (defaults filled in)
    sizes: Sizes
    source: dict  # the study dict with checked values (plain Python scalars), JSON-safe
    warnings: tuple[str, ...] = ()  # combinations that run, but not quite as written (one line each)

    @property
    def condition_names(self) -> list[str]:
        return list(self.conditions)

    def variant(self, condition: str) -> Variant:
        return variant_of(self.conditions[condition])

    def to_json(self) -> str:
        return json.dumps(self.source, sort_keys=True)


SHOWN_DIGITS = 20  # integers longer than this are abbreviated in messages (10**400 has 401 digits)


def shown(value) -> str:
    """A value as a message shows it: repr, but an integer of more than SHOWN_DIGITS digits as its
    leading digits, exponent and length (Python refuses to print one of more than 4300 digits)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        size = abs(int(value))
        if size >= 10**SHOWN_DIGITS:
            exponent = math.floor(math.log10(size))  # then made exact: log10 of a huge int may round
            exponent += (10 ** (exponent + 1) <= size) - (10**exponent > size)
            leading = size // 10 ** (exponent - 2)
            sign = "-" if value < 0 else ""
            return f"{sign}{leading / 100:g}e+{exponent} (an integer of {exponent + 1} digits)"
    return repr(value)


def _check_value(name: str, value, where: str):
    """Type and range of one knob value; returns it as a plain Python scalar."""
    knob = KNOBS[name]
    if knob.choices:
        if not isinstance(value, str) or value not in knob.choices:
            choices = ", ".join(repr(c) for c in knob.choices)
            raise StudyError(f"{where}: expected one of {choices}, got {shown(value)} ({type(value).__name__})")
        return value
    if knob.kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise StudyError(f"{where}: expected true/false (bool), got {shown(value)} ({type(value).__name__})")
        return bool(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise StudyError(f"{where}: expected {knob.kind.__name__}, got {shown(value)} ({type(value).__name__})")
    if knob.kind is int:
        if not isinstance(value, numbers.Integral):
            raise StudyError(f"{where}: expected an integer, got {shown(value)} ({type(value).__name__})")
        value = int(value)
        if value > MAX_INT:
            raise StudyError(f"{where}: must be <= 2**31 - 1, got {shown(value)}")
    else:
        try:
            value = float(value)
        except OverflowError:
            raise StudyError(f"{where}: must be finite, got {shown(value)}") from None
        if not np.isfinite(value):
            raise StudyError(f"{where}: must be finite, got {shown(value)}")
        if knob.scope == RUN:
            _check_float32(value, where)
    if knob.positive and value <= 0:
        raise StudyError(f"{where}: must be > 0, got {shown(value)}")
    if knob.low is not None and value < knob.low:
        raise StudyError(f"{where}: must be >= {knob.low}, got {shown(value)}")
    if knob.high is not None and value > knob.high:
        raise StudyError(f"{where}: must be <= {knob.high}, got {shown(value)}")
    return value


FLOAT32 = np.finfo(np.float32)


def _check_float32(value: float, where: str):
    """A per-run float travels as float32: it must not become inf, or 0 (or a subnormal, which
    XLA flushes to 0) when it is not 0, while the Dataset records the float64 value."""
    with np.errstate(over="ignore"):
        single = np.float32(value)
    if not np.isfinite(single):
        raise StudyError(
            f"{where}: {shown(value)} overflows float32, in which the program computes (max {FLOAT32.max:.3g})"
        )
    if value != 0 and abs(single) < FLOAT32.tiny:
        raise StudyError(
            f"{where}: {shown(value)} rounds to 0 (or a subnormal, flushed to 0) in float32, in which the program "
            f"computes; a non-zero value must be at least {FLOAT32.tiny:.3g} in size"
        )


def _check_knobs(study: str, condition: str | None, knobs, field: str) -> dict:
    if not isinstance(knobs, dict):
        raise StudyError(f"{where(study, condition, field)}: expected a dict of knobs, got {type(knobs).__name__}")
    checked = {}
    for name, value in knobs.items():
        if name not in KNOBS:
            close = difflib.get_close_matches(str(name), KNOBS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid knobs: {', '.join(sorted(KNOBS))}"
            raise StudyError(f"{where(study, condition, name)}: unknown knob{hint}")
        checked[name] = _check_value(name, value, where(study, condition, name))
    return checked


def _check_condition_name(study: str, name) -> str:
    place = where(study, name, "conditions")
    if not isinstance(name, str):
        raise StudyError(f"{place}: condition names must be strings, got {type(name).__name__}")
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
        raise StudyError(f"{place}: a condition name must be {_NAME_RULE} (it becomes a netCDF coordinate value)")
    return name


MAX_SEEDS = 1_000_000  # per study: far beyond any useful study, small enough to check in a second


def _check_seeds(study: str, seeds) -> tuple[int, ...]:
    """Seeds as a tuple of distinct ints in [0, 2**31); linear in their number."""
    place = where(study, None, "seeds")
    if not isinstance(seeds, (list, tuple, range, np.ndarray)):
        raise StudyError(
            f"{place}: expected a list of non-negative integers, got {shown(seeds)} ({type(seeds).__name__})"
        )
    if isinstance(seeds, np.ndarray) and seeds.ndim != 1:
        raise StudyError(f"{place}: expected a 1-D list of seeds, got a {seeds.ndim}-D array of shape {seeds.shape}")
    if len(seeds) > MAX_SEEDS:
        raise StudyError(f"{place}: {len(seeds)} seeds; a study takes at most {MAX_SEEDS}")
    seeds = list(seeds)
    if not seeds:
        raise StudyError(f"{place}: the seed list is empty")
    for seed in seeds:
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
            raise StudyError(f"{place}: seeds must be integers, got {shown(seed)} ({type(seed).__name__})")
        if not 0 <= seed <= MAX_INT:
            raise StudyError(f"{place}: seeds must be in [0, 2**31), got {shown(seed)}")
    seeds = tuple(int(s) for s in seeds)
    if len(set(seeds)) < len(seeds):
        duplicates = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
        more = f", … ({len(duplicates)} in all)" if len(duplicates) > 10 else ""
        raise StudyError(f"{place}: duplicate seeds [{', '.join(map(str, duplicates[:10]))}{more}]")
    return seeds


def resolve(study: dict, seeds=None) -> ResolvedStudy:
    """Check a study dict and fill in defaults; `seeds` overrides the study's seeds."""
    if not isinstance(study, dict):
        raise StudyError(f"a study must be a dict, got {type(study).__name__}")
    name = study.get("name")
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
        raise StudyError(f"study {name!r}, field 'name': expected {_NAME_RULE}")
    unknown = [key for key in study if key not in TOP_LEVEL_KEYS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), TOP_LEVEL_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(TOP_LEVEL_KEYS)}"
        raise StudyError(f"{where(name, None, unknown[0])}: unknown top-level key{hint}")
    for key in ("seeds", "conditions"):
        if key not in study:
            raise StudyError(f"{where(name, None, key)}: missing")
    description = study.get("description", "")
    if not isinstance(description, str):
        raise StudyError(f"{where(name, None, 'description')}: expected a string, got {type(description).__name__}")
    seeds = _check_seeds(name, study["seeds"] if seeds is None else seeds)
    base = _check_knobs(name, None, study.get("base", {}), "base")

    conditions_in = study["conditions"]
    if not isinstance(conditions_in, dict):
        raise StudyError(f"{where(name, None, 'conditions')}: expected a dict of condition name -> knobs")
    if not conditions_in:
        raise StudyError(f"{where(name, None, 'conditions')}: no conditions")
    conditions, normalised, given = {}, {}, {}
    for condition, overrides in conditions_in.items():
        condition = _check_condition_name(name, condition)
        key = condition.casefold()
        if key in normalised:
            raise StudyError(
                f"{where(name, condition, 'conditions')}: duplicates condition {normalised[key]!r} "
                "(names are compared case-insensitively)"
            )
        normalised[key] = condition
        given[condition] = _check_knobs(name, condition, overrides if overrides is not None else {}, "conditions")
        knobs = {**DEFAULTS, **base, **given[condition]}
        conditions[condition] = knobs

    warnings = _check_study_wide(name, conditions)
    for condition, knobs in conditions.items():
        warnings += check_combination(name, condition, knobs)
    source = {key: study[key] for key in ("name", "description") if key in study}
    source.update(seeds=list(seeds), base=base, conditions=given)  # checked values: plain Python scalars
    sizes = sizes_of(next(iter(conditions.values())))
    return ResolvedStudy(name, seeds, conditions, sizes, source, tuple(warnings))


def _check_study_wide(study: str, conditions: dict) -> list[str]:
    """Study-wide knobs fix the program's shapes: one value across all conditions. Returns warnings."""
    first = next(iter(conditions))
    for knob in STUDY_KNOBS:
        values = {c: k[knob] for c, k in conditions.items()}
        odd = [c for c, value in values.items() if value != values[first]]
        if odd:
            raise StudyError(
                f"{where(study, odd[0], knob)}: fixes the program's shapes, so it must be equal in every condition "
                f"(set it in 'base'); got {values}"
            )
    sizes = sizes_of(conditions[first])
    vocab, seq_len = world_of(sizes)
    # vocab >= 2, so a seq_len beyond log2 of the limit is refused before vocab^seq_len is computed
    if seq_len > MAX_SEQUENCES.bit_length() - 1 or vocab**seq_len > MAX_SEQUENCES:
        raise StudyError(
            f"{where(study, None, 'seq_len')}: vocab^seq_len = {vocab}^{seq_len} sequences, more than the "
            f"{MAX_SEQUENCES:,} the lab enumerates (every diagnostic is an exact sum over all of them): "
            "16^4, 8^5, 4^8 and 2^16 fit"
        )
    every, length = sizes.record_every, sizes.steps_per_iter
    if every and length % every:
        raise StudyError(
            f"{where(study, None, 'record_every')}: must divide steps_per_iter ({length}) so that every "
            f"outer iteration ends on a record, got {every}"
        )
    # An error: with one sequence per batch the advantage r − mean(r) is exactly 0, so the policy
    # gradient never sees the judge; no study means that.
    if sizes.batch_size == 1:
        raise StudyError(
            f"{where(study, None, 'batch_size')}: 1 makes the policy's advantage r - mean(r) over the batch "
            "exactly 0, so the judge can never affect the policy; use at least 2"
        )
    check, budget = sizes.pretrain_check_every, sizes.pretrain_max_steps
    # An error: pretraining runs whole blocks of pretrain_check_every steps, so a block longer than the
    # budget always overruns it, however the study is shortened.
    if check > budget:
        raise StudyError(
            f"{where(study, None, 'pretrain_check_every')}: {check} > pretrain_max_steps {budget}; pretraining runs "
            f"in blocks of pretrain_check_every steps, so it would run {check} steps, past its budget of {budget}"
        )
    warnings = []
    # A warning: the overrun is less than one block and pretrain_steps records it.
    if budget % check:
        longest = -(-budget // check) * check
        warnings.append(
            f"{where(study, None, 'pretrain_max_steps')}: {budget} is not a multiple of pretrain_check_every "
            f"{check}; pretraining runs in blocks of {check} steps, so it may run up to {longest} steps"
        )
    return warnings
