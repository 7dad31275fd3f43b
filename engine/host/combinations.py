"""Knob combinations of one resolved condition: an error where no study means them, else
warnings that say which knob became a no-op and why.

Cadences longer than a run are warnings, not errors: a shortened copy of a real study
(fewer steps or iterations, e.g. `coevo bench --steps-per-iter 20` on the blog study)
produces them legitimately. A knob that belongs to a mechanism (`Knob.mechanism`) and is
set while its mechanism is off is reported by one rule, derived from the declarations.
"""

from engine.core.world import N_SEQUENCES
from engine.knobs import DEFAULTS, KNOBS, MECHANISMS, has_meta_judge


class StudyError(ValueError):
    """A study that cannot run, with a message naming where the problem is."""


def where(study: str, condition: str | None, field: str) -> str:
    place = f"study {study!r}"
    if condition is not None:
        place += f", condition {condition!r}"
    return f"{place}, field {field!r}"


RESTARTS = "the count restarts every outer iteration"


def refuse_impossible(study: str, condition: str, knobs: dict) -> None:
    """Combinations that cannot run as written, whatever the study's length."""
    every, length = knobs["record_every"], knobs["steps_per_iter"]
    if every and length % every:
        raise StudyError(
            f"{where(study, condition, 'record_every')}: must divide steps_per_iter ({length}) so that every "
            f"outer iteration ends on a record, got {every}"
        )
    if has_meta_judge(knobs) and knobs["meta_pairs"] > knobs["batch_size"]:
        raise StudyError(
            f"{where(study, condition, 'meta_pairs')}: the meta-judge labels meta_pairs of batch_size fresh "
            f"pairs, so meta_pairs must be <= batch_size ({knobs['batch_size']}), got {knobs['meta_pairs']}"
        )
    if knobs["update_rule"] == "dpo" and knobs["batch_size"] % knobs["n_candidates"]:
        raise StudyError(
            f"{where(study, condition, 'n_candidates')}: the batch is read as groups of n_candidates, so it must "
            f"divide batch_size ({knobs['batch_size']}), got {knobs['n_candidates']}"
        )
    fraction = knobs["meta_holdout_fraction"]
    if MECHANISMS["holdout_meta"].on(knobs) and int(N_SEQUENCES * fraction) == 0:
        raise StudyError(
            f"{where(study, condition, 'meta_holdout_fraction')}: meta_update_every > 0 needs at least one "
            f"held-out pair, but int(4096 * {fraction}) = 0"
        )


def mechanism_off_warnings(knobs: dict) -> list[tuple[str, str]]:
    """(field, text) for every knob set away from its default while the mechanism that reads it is off."""
    found = []
    for name, knob in KNOBS.items():
        mechanism = MECHANISMS.get(knob.mechanism)
        if mechanism and knobs[name] != DEFAULTS[name] and not mechanism.on(knobs):
            found.append((name, f"has no effect: it is a knob of {mechanism.name}, and {mechanism.why_off}"))
    return found


def cadence_warning(field: str, every: int, steps: int, what: str, never: str) -> list[tuple[str, str]]:
    """A cadence longer than an outer iteration (it never fires), or one that does not divide it."""
    if every > steps:
        return [(field, f"{every} > steps_per_iter {steps} and {RESTARTS}, so {never}")]
    if steps % every:
        return [
            (
                field,
                f"steps_per_iter {steps} is not a multiple of {every} and {RESTARTS}, so {what} "
                f"{steps // every} times per iteration, not once every {every} inner steps throughout",
            )
        ]
    return []


def frozen_judge_warnings(knobs: dict) -> list[tuple[str, str]]:
    """What freeze_judge turns into no-ops, and what it leaves running."""
    found = []
    judge_every, reset_every = knobs["judge_update_every"], knobs["reset_every"]
    holdout_meta, meta_judge = MECHANISMS["holdout_meta"].on(knobs), MECHANISMS["meta_judge"].on(knobs)
    if judge_every != 1:
        found.append(("judge_update_every", f"{judge_every} has no effect with freeze_judge (the judge never updates)"))
    if knobs["anchor_fraction"] > 0:
        found.append(
            ("anchor_fraction", "has no effect with freeze_judge: oracle-pair steps are judge steps, which never run")
        )
    if reset_every > 0 and not holdout_meta and not knobs["meta_learns"]:
        found.append(
            ("reset_every", "has no effect with freeze_judge: the judges never change, so a reset changes nothing")
        )
    if holdout_meta:
        found.append(
            (
                "meta_update_every",
                "with freeze_judge the held-out meta step still updates the judge, as in the reference: "
                "the judge is frozen except for its meta corrections",
            )
        )
    if meta_judge:
        found.append(
            (
                "meta_update_every",
                "with freeze_judge the meta-judge's labels never update the judge: its meta steps only "
                "measure meta_agreement",
            )
        )
    return found


def cadence_warnings(knobs: dict) -> list[tuple[str, str]]:
    """Judge, meta and reset cadences that do not fit the run's length."""
    steps, iterations = knobs["steps_per_iter"], knobs["n_iterations"]
    judge_every, meta_every, reset_every = knobs["judge_update_every"], knobs["meta_update_every"], knobs["reset_every"]
    found = []
    if not knobs["freeze_judge"]:
        same_as_frozen = "" if has_meta_judge(knobs) else " (bit-identical to freeze_judge: true)"
        found += cadence_warning(
            "judge_update_every", judge_every, steps, "the judge steps", f"the judge never updates{same_as_frozen}"
        )
    if meta_every > 0:
        if has_meta_judge(knobs):
            never = "the meta step never runs (meta_agreement is NaN after iteration 0; the meta-judge never labels)"
        else:
            never = (
                "the meta check never runs (meta_judge_accuracy is NaN after iteration 0; the judge is never corrected)"
            )
        found += cadence_warning("meta_update_every", meta_every, steps, "the meta check runs", never)
    if reset_every > iterations:
        found.append(
            (
                "reset_every",
                f"{reset_every} > n_iterations {iterations}, so the judges are never reset (the same as reset_every 0)",
            )
        )
    return found


def check_combination(study: str, condition: str, knobs: dict) -> list[str]:
    """Refuse what cannot run; return one warning line per knob that runs, but not as written."""
    refuse_impossible(study, condition, knobs)
    found = frozen_judge_warnings(knobs) if knobs["freeze_judge"] else []
    found += cadence_warnings(knobs)
    found += mechanism_off_warnings(knobs)
    if MECHANISMS["holdout_meta"].on(knobs) and knobs["meta_accuracy_threshold"] == 0:
        found.append(
            ("meta_accuracy_threshold", "0: no accuracy is below it, so the meta step never runs (only measured)")
        )
    return [f"{where(study, condition, field)}: {text}" for field, text in found]
