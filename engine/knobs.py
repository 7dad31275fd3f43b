"""Every knob of a condition, declared once; everything else is derived from `KNOBS`.

A knob has a kind (float, int, bool, or a tuple of allowed strings: categorical), a
default (the reference configuration of REFERENCE.md), a valid range, a unit and a
one-line meaning, and a scope:
- RUN: a per-run value, an array field of `Condition`, so conditions are data and every
  condition of a study runs in the same compiled program (categorical values travel as
  int32 codes: the index of the choice);
- GROUP: fixes the static structure of the program (array shapes, which update rule);
  runs are grouped by their `Variant`, so a run pays only for its own structure;
- STUDY: fixes the loop's sizes (`Sizes`), equal in every condition of a study.
From the table come: `Condition`, `Variant`, `Sizes`, validation (`engine.study`), the
Dataset's knob coordinates (`engine.results`) and the README's knob table
(`coevo knobs --write README.md` rewrites it; a test fails when they disagree).
"""

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np

from engine.world import N_SEQUENCES

RUN, GROUP, STUDY = "run", "group", "study"


@dataclass(frozen=True)
class Knob:
    kind: type | tuple  # float, int, bool, or the allowed strings of a categorical knob
    default: Any
    doc: str
    unit: str = ""
    scope: str = RUN
    low: float | None = None  # inclusive lower bound
    high: float | None = None  # inclusive upper bound
    positive: bool = False  # strictly > 0
    pretrain: bool = False  # changes judge pretraining (pretrained judges are shared only across equal values)
    variant: tuple[str, Callable] | None = None  # GROUP scope: (Variant field, its value from the resolved knobs)

    @property
    def choices(self) -> tuple[str, ...] | None:
        return self.kind if isinstance(self.kind, tuple) else None

    def code(self, choice: str) -> int:
        """The int32 code a categorical value travels as: its index among the choices."""
        return self.choices.index(choice)

    def encode(self, value):
        return self.code(value) if self.choices else value

    @property
    def array_dtype(self):
        """dtype inside the program (float32 arithmetic, int32 counts and codes)."""
        return np.int32 if self.choices else {float: np.float32, int: np.int32, bool: np.bool_}[self.kind]

    @property
    def coordinate_dtype(self):
        """dtype of the Dataset coordinate (the value as given, categorical as its string)."""
        return object if self.choices else {float: np.float64, int: np.int64, bool: np.bool_}[self.kind]


def anchor_pairs(knobs: dict) -> int:
    """Reference rule: max(1, int(batch_size · anchor_fraction)) q*-labelled pairs, 0 when off."""
    fraction = knobs["anchor_fraction"]
    return max(1, int(knobs["batch_size"] * fraction)) if fraction > 0 else 0


def holdout_pairs(knobs: dict) -> int:
    """Reference rule: int(4096 · meta_holdout_fraction) held-out pairs, 0 when meta is off."""
    return int(N_SEQUENCES * knobs["meta_holdout_fraction"]) if knobs["meta_update_every"] > 0 else 0


KNOBS = {
    # both models
    "init": Knob(
        ("reference", "equinox"),
        "reference",
        "initial weights of policy and judges: the reference's Flax defaults, or Equinox's",
        pretrain=True,
    ),
    # the policy
    "lr_policy": Knob(float, 3e-4, "Adam learning rate of the policy", positive=True),
    "entropy_bonus": Knob(
        float, 0.01, "reference 'entropy bonus' + c·mean(log π): zero expected gradient (a quirk)", low=0.0
    ),
    "entropy_regulariser": Knob(
        float, 0.0, "correction: a real entropy regulariser (score-function gradient of −H, sampled)", low=0.0
    ),
    # the judge(s)
    "lr_judge": Knob(float, 3e-4, "Adam learning rate of the judge(s), pretraining too", positive=True, pretrain=True),
    "lr_judge_pretrain": Knob(
        float,
        0.0,
        "Adam learning rate of judge pretraining when > 0, so lr_judge changes only co-evolution "
        "(0: lr_judge, the reference)",
        low=0.0,
        pretrain=True,
    ),
    "judge_update_every": Knob(
        int, 1, "judge steps on inner steps where (inner+1) % k == 0", unit="inner steps", positive=True
    ),
    "freeze_judge": Knob(bool, False, "no judge updates at all"),
    "n_judges": Knob(int, 1, "judges in the ensemble; reward is their mean score", low=1, scope=GROUP),
    "reset_every": Knob(
        int, 0, "judges back to pretrained every k outer iterations (0: never)", unit="outer iterations", low=0
    ),
    "judge_init_alignment": Knob(
        float,
        0.7,
        "pretraining stops at this Spearman (checked every pretrain_check_every steps)",
        unit="Spearman ρ",
        low=0.0,
        high=1.0,
        pretrain=True,
    ),
    # oracle corrections of the judge
    "anchor_fraction": Knob(
        float,
        0.0,
        "extra judge step on max(1, int(batch·f)) uniform q*-labelled pairs (0: off)",
        unit="of the batch",
        low=0.0,
        high=1.0,
        scope=GROUP,
        variant=("n_anchor", anchor_pairs),
    ),
    "meta_holdout_fraction": Knob(
        float,
        0.0,
        "meta-correction: a fixed held-out set of int(4096·f) q*-labelled pairs",
        unit="of 4096",
        low=0.0,
        high=1.0,
        scope=GROUP,
        variant=("n_holdout", holdout_pairs),
    ),
    "meta_update_every": Knob(int, 0, "meta check cadence (0: off)", unit="inner steps", low=0),
    "meta_accuracy_threshold": Knob(
        float, 0.75, "meta step when the held-out accuracy is below this", unit="fraction", low=0.0, high=1.0
    ),
    # the world
    "transition_alpha": Knob(
        float,
        0.0,
        "correction: q* gains a genuine token-transition term w_trans[x_i, x_{i+1}]",
        low=0.0,
        pretrain=True,
    ),
    # the loop's sizes
    "batch_size": Knob(
        int, 64, "sequences per policy step, per judge batch, per pretraining step", positive=True, scope=STUDY
    ),
    "steps_per_iter": Knob(int, 200, "inner steps per outer iteration", positive=True, scope=STUDY),
    "n_iterations": Knob(int, 10, "outer iterations", positive=True, scope=STUDY),
    "pretrain_check_every": Knob(
        int, 50, "pretraining steps between Spearman checks", unit="steps", positive=True, scope=STUDY
    ),
    "pretrain_max_steps": Knob(
        int, 5000, "pretraining gives up (flagged, not fatal) after this", unit="steps", positive=True, scope=STUDY
    ),
    # what is recorded (never changes the dynamics)
    "record_every": Knob(
        int,
        0,
        "exact diagnostics every k inner steps (must divide steps_per_iter); 0 or steps_per_iter: once per "
        "outer iteration, the Dataset over `iteration`; otherwise over `step` (global inner step)",
        unit="inner steps",
        low=0,
        scope=STUDY,
    ),
    "save_distributions": Knob(
        ("none", "final", "all"),
        "none",
        "also store π(x) and the ensemble-mean J(x) of all 4096 sequences: at the last record, or at every record",
        scope=STUDY,
    ),
}

DEFAULTS = {name: knob.default for name, knob in KNOBS.items()}
RUN_KNOBS = tuple(name for name, knob in KNOBS.items() if knob.scope == RUN)
GROUP_KNOBS = tuple(name for name, knob in KNOBS.items() if knob.scope == GROUP)
STUDY_KNOBS = tuple(name for name, knob in KNOBS.items() if knob.scope == STUDY)
PRETRAIN_KNOBS = tuple(name for name, knob in KNOBS.items() if knob.pretrain)


def _condition_body(namespace):
    namespace["__annotations__"] = {name: jax.Array for name in RUN_KNOBS}
    namespace["__doc__"] = "Per-run knob values as arrays (one field per RUN knob of `KNOBS`); vmapped over runs."
    namespace["__module__"] = __name__


Condition = types.new_class("Condition", (eqx.Module,), exec_body=_condition_body)

Variant = NamedTuple(
    "Variant", [((knob.variant or (name,))[0], Any) for name, knob in KNOBS.items() if knob.scope == GROUP]
)
Variant.__doc__ = "The static structure a group of runs shares (one field per GROUP knob): hashable, a jit key."

Sizes = NamedTuple("Sizes", [(name, str if KNOBS[name].choices else KNOBS[name].kind) for name in STUDY_KNOBS])
Sizes.__doc__ = "The study-wide sizes of the compiled loop (one field per STUDY knob)."


def record_interval(sizes: Sizes) -> int:
    """Inner steps between two records: `record_every`, where 0 means once per outer iteration."""
    return sizes.record_every or sizes.steps_per_iter


def records_per_iteration(sizes: Sizes) -> int:
    """Records taken in one outer iteration (the last one at its end, after any reset); 1 by default."""
    return sizes.steps_per_iter // record_interval(sizes)


def code(name: str, choice: str) -> int:
    """The int32 code of a categorical knob's choice, for comparisons inside the program."""
    return KNOBS[name].code(choice)


def variant_of(knobs: dict) -> Variant:
    """The Variant of one resolved condition (full knob dict)."""
    values = []
    for name in GROUP_KNOBS:
        derive = KNOBS[name].variant
        values.append(derive[1](knobs) if derive else knobs[name])
    return Variant(*values)


def sizes_of(knobs: dict) -> Sizes:
    return Sizes(*(knobs[name] for name in STUDY_KNOBS))


def condition_arrays(rows: list[dict]) -> Condition:
    """Host arrays of the RUN knobs of resolved conditions, one row per run."""
    return Condition(
        **{
            name: np.asarray([KNOBS[name].encode(row[name]) for row in rows], KNOBS[name].array_dtype)
            for name in RUN_KNOBS
        }
    )


# ---------------------------------------------------------------- the README's knob table

TABLE_START, TABLE_END = "<!-- knobs: start (coevo knobs --write README.md) -->", "<!-- knobs: end -->"


def _range_text(knob: Knob) -> str:
    if knob.choices:
        return " \\| ".join(f"`{choice}`" for choice in knob.choices)
    if knob.kind is bool:
        return "true \\| false"
    low = "> 0" if knob.positive else f"≥ {knob.low:g}" if knob.low is not None else ""
    high = f"≤ {knob.high:g}" if knob.high is not None else ""
    return ", ".join(part for part in (low, high) if part) or "any"


def _default_text(knob: Knob) -> str:
    if knob.choices:
        return f"`{knob.default}`"
    if knob.kind is bool:
        return str(knob.default).lower()
    return f"{knob.default:g}"


def knob_table() -> str:
    """The markdown table of every knob, straight from the declarations."""
    lines = ["| knob | scope | default | valid | unit | meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for name, knob in KNOBS.items():
        meaning = knob.doc.replace("|", "\\|")
        lines.append(
            f"| `{name}` | {knob.scope} | {_default_text(knob)} | {_range_text(knob)} | {knob.unit} | {meaning} |"
        )
    return "\n".join(lines)


def with_knob_table(text: str) -> str:
    """`text` (the README) with the block between the table markers replaced by `knob_table()`."""
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    return text[:start] + "\n" + knob_table() + "\n" + text[end:]
