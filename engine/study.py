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
import numbers
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from engine.knobs import DEFAULTS, KNOBS, RUN, STUDY_KNOBS, Sizes, Variant, has_meta_judge, sizes_of, variant_of
from engine.world import N_SEQUENCES

TOP_LEVEL_KEYS = ("name", "seeds", "base", "conditions", "description")
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.+\-]+")  # used with fullmatch
MAX_NAME_LENGTH = 64
MAX_INT = 2**31 - 1  # int knobs and seeds become int32 arrays
_NAME_RULE = f"1-{MAX_NAME_LENGTH} characters of letters, digits, '_', '.', '+', '-'"


class StudyError(ValueError):
    """A study that cannot run, with a message naming where the problem is."""


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


def _where(study: str, condition: str | None, field: str) -> str:
    place = f"study {study!r}"
    if condition is not None:
        place += f", condition {condition!r}"
    return f"{place}, field {field!r}"


def _check_value(name: str, value, where: str):
    """Type and range of one knob value; returns it as a plain Python scalar."""
    knob = KNOBS[name]
    if knob.choices:
        if not isinstance(value, str) or value not in knob.choices:
            choices = ", ".join(repr(c) for c in knob.choices)
            raise StudyError(f"{where}: expected one of {choices}, got {value!r} ({type(value).__name__})")
        return value
    if knob.kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise StudyError(f"{where}: expected true/false (bool), got {value!r} ({type(value).__name__})")
        return bool(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise StudyError(f"{where}: expected {knob.kind.__name__}, got {value!r} ({type(value).__name__})")
    if knob.kind is int:
        if not isinstance(value, numbers.Integral):
            raise StudyError(f"{where}: expected an integer, got {value!r} ({type(value).__name__})")
        value = int(value)
        if value > MAX_INT:
            raise StudyError(f"{where}: must be <= 2**31 - 1, got {value!r}")
    else:
        try:
            value = float(value)
        except OverflowError:
            raise StudyError(f"{where}: must be finite, got {value!r}") from None
        if not np.isfinite(value):
            raise StudyError(f"{where}: must be finite, got {value!r}")
        if knob.scope == RUN:
            _check_float32(value, where)
    if knob.positive and value <= 0:
        raise StudyError(f"{where}: must be > 0, got {value!r}")
    if knob.low is not None and value < knob.low:
        raise StudyError(f"{where}: must be >= {knob.low}, got {value!r}")
    if knob.high is not None and value > knob.high:
        raise StudyError(f"{where}: must be <= {knob.high}, got {value!r}")
    return value


FLOAT32 = np.finfo(np.float32)


def _check_float32(value: float, where: str):
    """A per-run float travels as float32: it must not become inf, or 0 (or a subnormal, which
    XLA flushes to 0) when it is not 0, while the Dataset records the float64 value."""
    with np.errstate(over="ignore"):
        single = np.float32(value)
    if not np.isfinite(single):
        raise StudyError(f"{where}: {value!r} overflows float32, in which the program computes (max {FLOAT32.max:.3g})")
    if value != 0 and abs(single) < FLOAT32.tiny:
        raise StudyError(
            f"{where}: {value!r} rounds to 0 (or a subnormal, flushed to 0) in float32, in which the program "
            f"computes; a non-zero value must be at least {FLOAT32.tiny:.3g} in size"
        )


def _check_knobs(study: str, condition: str | None, knobs, field: str) -> dict:
    if not isinstance(knobs, dict):
        raise StudyError(f"{_where(study, condition, field)}: expected a dict of knobs, got {type(knobs).__name__}")
    checked = {}
    for name, value in knobs.items():
        if name not in KNOBS:
            close = difflib.get_close_matches(str(name), KNOBS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid knobs: {', '.join(sorted(KNOBS))}"
            raise StudyError(f"{_where(study, condition, name)}: unknown knob{hint}")
        checked[name] = _check_value(name, value, _where(study, condition, name))
    return checked


def _check_condition_name(study: str, name) -> str:
    where = _where(study, name, "conditions")
    if not isinstance(name, str):
        raise StudyError(f"{where}: condition names must be strings, got {type(name).__name__}")
    if len(name) > MAX_NAME_LENGTH or not _NAME_PATTERN.fullmatch(name):
        raise StudyError(f"{where}: a condition name must be {_NAME_RULE} (it becomes a netCDF coordinate value)")
    return name


MAX_SEEDS = 1_000_000  # per study: far beyond any useful study, small enough to check in a second


def _check_seeds(study: str, seeds) -> tuple[int, ...]:
    """Seeds as a tuple of distinct ints in [0, 2**31); linear in their number."""
    where = _where(study, None, "seeds")
    if not isinstance(seeds, (list, tuple, range, np.ndarray)):
        raise StudyError(f"{where}: expected a list of non-negative integers, got {seeds!r} ({type(seeds).__name__})")
    if isinstance(seeds, np.ndarray) and seeds.ndim != 1:
        raise StudyError(f"{where}: expected a 1-D list of seeds, got a {seeds.ndim}-D array of shape {seeds.shape}")
    if len(seeds) > MAX_SEEDS:
        raise StudyError(f"{where}: {len(seeds)} seeds; a study takes at most {MAX_SEEDS}")
    seeds = list(seeds)
    if not seeds:
        raise StudyError(f"{where}: the seed list is empty")
    for seed in seeds:
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
            raise StudyError(f"{where}: seeds must be integers, got {seed!r} ({type(seed).__name__})")
        if not 0 <= seed <= MAX_INT:
            raise StudyError(f"{where}: seeds must be in [0, 2**31), got {seed!r}")
    seeds = tuple(int(s) for s in seeds)
    if len(set(seeds)) < len(seeds):
        duplicates = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
        more = f", … ({len(duplicates)} in all)" if len(duplicates) > 10 else ""
        raise StudyError(f"{where}: duplicate seeds [{', '.join(map(str, duplicates[:10]))}{more}]")
    return seeds


def resolve(study: dict, seeds=None) -> ResolvedStudy:
    """Check a study dict and fill in defaults; `seeds` overrides the study's seeds."""
    if not isinstance(study, dict):
        raise StudyError(f"a study must be a dict, got {type(study).__name__}")
    name = study.get("name")
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _NAME_PATTERN.fullmatch(name):
        raise StudyError(f"study {name!r}, field 'name': expected {_NAME_RULE}")
    unknown = [key for key in study if key not in TOP_LEVEL_KEYS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), TOP_LEVEL_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(TOP_LEVEL_KEYS)}"
        raise StudyError(f"{_where(name, None, unknown[0])}: unknown top-level key{hint}")
    for key in ("seeds", "conditions"):
        if key not in study:
            raise StudyError(f"{_where(name, None, key)}: missing")
    description = study.get("description", "")
    if not isinstance(description, str):
        raise StudyError(f"{_where(name, None, 'description')}: expected a string, got {type(description).__name__}")
    seeds = _check_seeds(name, study["seeds"] if seeds is None else seeds)
    base = _check_knobs(name, None, study.get("base", {}), "base")

    conditions_in = study["conditions"]
    if not isinstance(conditions_in, dict):
        raise StudyError(f"{_where(name, None, 'conditions')}: expected a dict of condition name -> knobs")
    if not conditions_in:
        raise StudyError(f"{_where(name, None, 'conditions')}: no conditions")
    conditions, normalised, given = {}, {}, {}
    for condition, overrides in conditions_in.items():
        condition = _check_condition_name(name, condition)
        key = condition.casefold()
        if key in normalised:
            raise StudyError(
                f"{_where(name, condition, 'conditions')}: duplicates condition {normalised[key]!r} "
                "(names are compared case-insensitively)"
            )
        normalised[key] = condition
        given[condition] = _check_knobs(name, condition, overrides if overrides is not None else {}, "conditions")
        knobs = {**DEFAULTS, **base, **given[condition]}
        conditions[condition] = knobs

    warnings = _check_study_wide(name, conditions)
    for condition, knobs in conditions.items():
        warnings += _check_combination(name, condition, knobs)
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
                f"{_where(study, odd[0], knob)}: fixes the program's shapes, so it must be equal in every condition "
                f"(set it in 'base'); got {values}"
            )
    sizes = sizes_of(conditions[first])
    # An error: with one sequence per batch the advantage r − mean(r) is exactly 0, so the policy
    # gradient never sees the judge; no study means that.
    if sizes.batch_size == 1:
        raise StudyError(
            f"{_where(study, None, 'batch_size')}: 1 makes the policy's advantage r - mean(r) over the batch "
            "exactly 0, so the judge can never affect the policy; use at least 2"
        )
    check, budget = sizes.pretrain_check_every, sizes.pretrain_max_steps
    # An error: pretraining runs whole blocks of pretrain_check_every steps, so a block longer than the
    # budget always overruns it, however the study is shortened.
    if check > budget:
        raise StudyError(
            f"{_where(study, None, 'pretrain_check_every')}: {check} > pretrain_max_steps {budget}; pretraining runs "
            f"in blocks of pretrain_check_every steps, so it would run {check} steps, past its budget of {budget}"
        )
    warnings = []
    # A warning: the overrun is less than one block and pretrain_steps records it.
    if budget % check:
        longest = -(-budget // check) * check
        warnings.append(
            f"{_where(study, None, 'pretrain_max_steps')}: {budget} is not a multiple of pretrain_check_every "
            f"{check}; pretraining runs in blocks of {check} steps, so it may run up to {longest} steps"
        )
    return warnings


def _check_combination(study: str, condition: str, knobs: dict) -> list[str]:
    """Knob combinations of one condition: an error when no study means them, else warnings.

    Cadences longer than a run are warnings, not errors: a shortened copy of a real study
    (fewer steps or iterations, e.g. `coevo bench --steps-per-iter 20` on the blog study)
    produces them legitimately; the warning says which knob became a no-op.
    """
    every, length = knobs["record_every"], knobs["steps_per_iter"]
    if every and length % every:
        raise StudyError(
            f"{_where(study, condition, 'record_every')}: must divide steps_per_iter ({length}) so that every "
            f"outer iteration ends on a record, got {every}"
        )
    if has_meta_judge(knobs) and knobs["meta_pairs"] > knobs["batch_size"]:
        raise StudyError(
            f"{_where(study, condition, 'meta_pairs')}: the meta-judge labels meta_pairs of batch_size fresh "
            f"pairs, so meta_pairs must be <= batch_size ({knobs['batch_size']}), got {knobs['meta_pairs']}"
        )
    if knobs["update_rule"] == "dpo" and knobs["batch_size"] % knobs["n_candidates"]:
        raise StudyError(
            f"{_where(study, condition, 'n_candidates')}: the batch is read as groups of n_candidates, so it must "
            f"divide batch_size ({knobs['batch_size']}), got {knobs['n_candidates']}"
        )
    fraction = knobs["meta_holdout_fraction"]
    if knobs["meta_update_every"] > 0 and knobs["meta_source"] == "holdout" and int(N_SEQUENCES * fraction) == 0:
        raise StudyError(
            f"{_where(study, condition, 'meta_holdout_fraction')}: meta_update_every > 0 needs at least one "
            f"held-out pair, but int(4096 * {fraction}) = 0"
        )
    warnings = []

    def warn(field: str, text: str):
        warnings.append(f"{_where(study, condition, field)}: {text}")

    steps, iterations = knobs["steps_per_iter"], knobs["n_iterations"]
    frozen, meta_on = knobs["freeze_judge"], knobs["meta_update_every"] > 0
    judge_every, meta_every, reset_every = knobs["judge_update_every"], knobs["meta_update_every"], knobs["reset_every"]
    restarts = "the count restarts every outer iteration"
    if frozen:
        if judge_every != 1:
            warn("judge_update_every", f"{judge_every} has no effect with freeze_judge (the judge never updates)")
        if knobs["anchor_fraction"] > 0:
            warn("anchor_fraction", "has no effect with freeze_judge: anchor steps are judge steps, which never run")
        if reset_every > 0 and not meta_on:
            warn("reset_every", "has no effect with freeze_judge: the judges never change, so a reset changes nothing")
        if meta_on:
            warn(
                "meta_update_every",
                "with freeze_judge the meta step still updates the judge, as in the reference: "
                "the judge is frozen except for its meta corrections",
            )
    elif judge_every > steps:
        warn(
            "judge_update_every",
            f"{judge_every} > steps_per_iter {steps} and {restarts}, so the judge never updates "
            "(bit-identical to freeze_judge: true)",
        )
    elif steps % judge_every:
        warn(
            "judge_update_every",
            f"steps_per_iter {steps} is not a multiple of {judge_every} and {restarts}, so the judge steps "
            f"{steps // judge_every} times per iteration, not once every {judge_every} inner steps throughout",
        )
    if meta_on and meta_every > steps:
        warn(
            "meta_update_every",
            f"{meta_every} > steps_per_iter {steps} and {restarts}, so the meta check never runs "
            "(meta_judge_accuracy is NaN after iteration 0; the judge is never corrected)",
        )
    elif meta_on and steps % meta_every:
        warn(
            "meta_update_every",
            f"steps_per_iter {steps} is not a multiple of {meta_every} and {restarts}, so the meta check runs "
            f"{steps // meta_every} times per iteration, not once every {meta_every} inner steps throughout",
        )
    if knobs["update_rule"] == "reinforce":
        for name in (
            "score_grid",
            "dpo_beta",
            "dpo_loss",
            "dpo_reference",
            "anchored_rejection",
            "future_chosen",
            "length_control",
        ):
            if knobs[name] != DEFAULTS[name]:
                warn(name, "has no effect: it is a knob of update_rule dpo, and this condition uses reinforce")
    if meta_on and knobs["meta_accuracy_threshold"] == 0:
        warn("meta_accuracy_threshold", "0: no accuracy is below it, so the meta step never runs (only measured)")
    if not meta_on and fraction > 0:
        # A warning, not an error: a sweep over meta_update_every that includes 0 (off) keeps one holdout.
        warn("meta_holdout_fraction", f"{fraction} has no effect: meta is off (meta_update_every 0)")
    if not meta_on and knobs["meta_accuracy_threshold"] != DEFAULTS["meta_accuracy_threshold"]:
        warn("meta_accuracy_threshold", "has no effect: meta is off (meta_update_every 0)")
    if reset_every > iterations:
        warn(
            "reset_every",
            f"{reset_every} > n_iterations {iterations}, so the judges are never reset (the same as reset_every 0)",
        )
    return warnings
