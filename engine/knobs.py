"""Every knob of a condition, its type, default and valid range, in one table.

Three kinds of knob:
- per-run values become array fields of `Condition`, so conditions are data;
- shape knobs (ensemble size, anchor pairs, holdout pairs) fix array shapes; runs are
  grouped by them inside the one compiled program, so a run pays only for its own shapes;
- study-wide knobs (batch size, loop lengths, pretraining budget) fix the program's
  shapes and must be equal in every condition of a study.
"""

from dataclasses import dataclass
from typing import NamedTuple

import equinox as eqx
import jax

from engine.world import N_SEQUENCES


@dataclass(frozen=True)
class Knob:
    kind: type  # float, int or bool
    default: float | int | bool
    low: float | None = None  # inclusive lower bound
    high: float | None = None  # inclusive upper bound
    positive: bool = False  # strictly > 0
    doc: str = ""


PER_RUN = {
    "lr_policy": Knob(float, 3e-4, positive=True, doc="Adam learning rate of the policy"),
    "lr_judge": Knob(float, 3e-4, positive=True, doc="Adam learning rate of the judge(s), pretraining too"),
    "entropy_bonus": Knob(float, 0.01, low=0.0, doc="reference 'entropy bonus' (zero-mean gradient: a quirk)"),
    "entropy_regulariser": Knob(float, 0.0, low=0.0, doc="coefficient of a real entropy regulariser (correction)"),
    "judge_update_every": Knob(int, 1, positive=True, doc="judge steps on inner steps where (inner+1) % k == 0"),
    "reset_every": Knob(int, 0, low=0, doc="reset judges to pretrained every k outer iterations (0: never)"),
    "freeze_judge": Knob(bool, False, doc="no judge updates at all"),
    "meta_update_every": Knob(int, 0, low=0, doc="meta check cadence in inner steps (0: off)"),
    "meta_accuracy_threshold": Knob(float, 0.75, low=0.0, high=1.0, doc="meta step when holdout accuracy is below"),
    "judge_init_alignment": Knob(float, 0.7, low=0.0, high=1.0, doc="pretraining stops at this Spearman"),
    "transition_alpha": Knob(float, 0.0, low=0.0, doc="weight of a genuine token-transition term in q* (correction)"),
}

SHAPE = {
    "n_judges": Knob(int, 1, low=1, doc="judges in the ensemble; reward is their mean score"),
    "anchor_fraction": Knob(
        float, 0.0, low=0.0, high=1.0, doc="q*-labelled anchor pairs per judge step, as a fraction of the batch"
    ),
    "meta_holdout_fraction": Knob(
        float, 0.0, low=0.0, high=1.0, doc="held-out q*-labelled pairs, as a fraction of 4096"
    ),
}

STUDY_WIDE = {
    "batch_size": Knob(int, 64, positive=True, doc="sequences per policy step, per judge batch, per pretraining step"),
    "steps_per_iter": Knob(int, 200, positive=True, doc="inner steps per outer iteration"),
    "n_iterations": Knob(int, 10, positive=True, doc="outer iterations"),
    "pretrain_check_every": Knob(int, 50, positive=True, doc="pretraining steps between Spearman checks"),
    "pretrain_max_steps": Knob(int, 5000, positive=True, doc="pretraining gives up (flagged, not fatal) after this"),
}

KNOBS = {**PER_RUN, **SHAPE, **STUDY_WIDE}
PRETRAIN_KNOBS = ("lr_judge", "judge_init_alignment", "transition_alpha")
DEFAULTS = {name: knob.default for name, knob in KNOBS.items()}


class Condition(eqx.Module):
    """Per-run knob values as arrays; vmapped over runs. Field names mirror PER_RUN."""

    lr_policy: jax.Array
    lr_judge: jax.Array
    entropy_bonus: jax.Array
    entropy_regulariser: jax.Array
    judge_update_every: jax.Array
    reset_every: jax.Array
    freeze_judge: jax.Array
    meta_update_every: jax.Array
    meta_accuracy_threshold: jax.Array
    judge_init_alignment: jax.Array
    transition_alpha: jax.Array


class Shape(NamedTuple):
    """Static shapes shared by a group of runs."""

    n_judges: int
    n_anchor: int
    n_holdout: int


class Spec(NamedTuple):
    """Study-wide static sizes of the compiled program."""

    batch_size: int
    steps_per_iter: int
    n_iterations: int
    pretrain_check_every: int
    pretrain_max_steps: int


def shape_of(knobs: dict) -> Shape:
    """Shape group of a resolved condition (reference rules for pair counts)."""
    anchor = knobs["anchor_fraction"]
    n_anchor = max(1, int(knobs["batch_size"] * anchor)) if anchor > 0 else 0
    meta_on = knobs["meta_update_every"] > 0
    n_holdout = int(N_SEQUENCES * knobs["meta_holdout_fraction"]) if meta_on else 0
    return Shape(knobs["n_judges"], n_anchor, n_holdout)


def spec_of(knobs: dict) -> Spec:
    return Spec(**{name: knobs[name] for name in Spec._fields})
