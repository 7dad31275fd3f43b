"""Every knob of a condition, declared once; everything else is derived from `KNOBS`.

A knob has a kind (float, int, bool, or a tuple of allowed strings: categorical), a
default (the reference configuration, docs/reference.md), a valid range, a unit and a
one-line meaning, and a scope:
- RUN: a per-run value, an array field of `Condition`, so conditions are data and every
  condition of a study runs in the same compiled program (categorical values travel as
  int32 codes: the index of the choice);
- GROUP: fixes the static structure of the program (array shapes, which update rule);
  runs are grouped by their `Variant`, so a run pays only for its own structure (a RUN knob
  may add a static flag or size to the Variant too: see `Knob.variant`);
- STUDY: fixes the loop's sizes (`Sizes`), equal in every condition of a study.
From the table come: `Condition`, `Variant`, `Sizes`, validation (`engine.host.study`), the
Dataset's knob coordinates (`engine.host.results`) and the README's knob table
(`coevo knobs --write README.md` rewrites it; a test fails when they disagree).
"""

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np

from engine.core.world import N_SEQUENCES, VOCAB

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
    # (Variant field, its value from the resolved knobs): a GROUP knob's static form (default: the value
    # itself), or a static flag a RUN knob adds so that runs not using it compile without its code
    variant: tuple[str, Callable] | None = None
    mechanism: str | None = None  # the MECHANISMS entry that reads it (None: read by every run)

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


def n_oracle_pairs(knobs: dict) -> int:
    """Reference rule: max(1, int(batch_size · anchor_fraction)) q*-labelled pairs, 0 when off."""
    fraction = knobs["anchor_fraction"]
    return max(1, int(knobs["batch_size"] * fraction)) if fraction > 0 else 0


def policy_regularised(knobs: dict) -> bool:
    """Does the policy loss carry a KL-to-initial or exact-entropy term? (Groups that do not skip the code.)"""
    return knobs["kl_penalty"] > 0 or knobs["entropy_exact"] > 0


def length_controlled(knobs: dict) -> bool:
    """Does a dpo run pick its pairs with Meta-Rewarding's length control? (ρ = 0: plain best vs worst.)"""
    return knobs["update_rule"] == "dpo" and knobs["length_control"] > 0


def judge_anchored(knobs: dict) -> bool:
    return knobs["judge_anchor"] > 0


def n_holdout_pairs(knobs: dict) -> int:
    """Reference rule: int(4096 · meta_holdout_fraction) held-out pairs, 0 when meta is off
    (or when the meta step comes from a meta-judge, `meta_source` `judge`)."""
    on = knobs["meta_update_every"] > 0 and knobs["meta_source"] == "holdout"
    return int(N_SEQUENCES * knobs["meta_holdout_fraction"]) if on else 0


def has_meta_judge(knobs: dict) -> bool:
    """A run carries (and pretrains) a meta-judge: meta_source `judge` with meta steps on."""
    return knobs["meta_source"] == "judge" and knobs["meta_update_every"] > 0


def meta_judge_pairs(knobs: dict) -> int:
    """Pairs the meta-judge labels per meta step (a static top_k size), 0 without a meta-judge."""
    return knobs["meta_pairs"] if has_meta_judge(knobs) else 0


@dataclass(frozen=True)
class Mechanism:
    """A rule or mechanism that some knobs belong to: a run reads them only where it is on."""

    name: str  # as docs/knobs.md and the warnings say it
    on: Callable[[dict], bool]  # is it on for these resolved knobs?
    why_off: str  # what turns it off, for the warning


MECHANISMS = {
    "dpo": Mechanism("update_rule dpo", lambda k: k["update_rule"] == "dpo", "this condition uses reinforce"),
    "kl_penalty": Mechanism("the KL penalty", lambda k: k["kl_penalty"] > 0, "kl_penalty is 0"),
    "holdout_meta": Mechanism(
        "the held-out meta-correction (meta_source holdout)",
        lambda k: k["meta_update_every"] > 0 and k["meta_source"] == "holdout",
        "meta is off (meta_update_every 0) or meta_source is judge",
    ),
    "meta_judge": Mechanism(
        "the meta-judge (meta_source judge)",
        has_meta_judge,
        "meta is off (meta_update_every 0) or meta_source is holdout",
    ),
}


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
    "update_rule": Knob(
        ("reinforce", "dpo"),
        "reinforce",
        "policy update: REINFORCE on the judge's score (reference), or DPO on the judge's best-vs-worst pairs",
        scope=GROUP,
    ),
    "n_candidates": Knob(
        int,
        4,
        "candidates per group: dpo pairs the best and worst of each group; the best/worst-of-N gaps use N = this",
        low=2,
        scope=GROUP,
    ),
    "score_grid": Knob(
        float,
        0.0,
        "dpo: a pair is dropped when its judge scores round to the same multiple of this (0: exact ties)",
        low=0.0,
        mechanism="dpo",
    ),
    "dpo_beta": Knob(float, 0.1, "dpo: β of the DPO loss", positive=True, mechanism="dpo"),
    "dpo_loss": Knob(
        ("sigmoid", "ipo"),
        "sigmoid",
        "dpo: −log σ(β·h) (DPO), or (h/4 − 1/(2β))² (IPO, per token as TRL)",
        mechanism="dpo",
    ),
    "dpo_reference": Knob(
        ("iteration", "initial"),
        "iteration",
        "dpo: π_ref is the policy at the start of each outer iteration (Self-Rewarding), or π₀ (online DPO)",
        mechanism="dpo",
    ),
    "anchored_rejection": Knob(
        bool,
        False,
        "dpo: the rejected is π₀'s worst of n_candidates draws when the judge scores it lower",
        scope=GROUP,
        mechanism="dpo",
    ),
    "future_chosen": Knob(
        bool,
        False,
        "dpo: the chosen is a one-step look-ahead policy's best when the judge prefers it",
        scope=GROUP,
        mechanism="dpo",
    ),
    "length_control": Knob(
        float,
        0.0,
        "dpo: Meta-Rewarding's length control ρ: chosen = the least verbose (bias_token count) with score "
        "≥ (1−ρ)·S_max + ρ·S_min, rejected = the most verbose with score ≤ (1−ρ)·S_min + ρ·S_max (0: best vs worst)",
        low=0.0,
        high=1.0,
        variant=("length_controlled", length_controlled),
        mechanism="dpo",
    ),
    "kl_penalty": Knob(
        float,
        0.0,
        "+ c·KL(π‖π₀) in the policy loss, estimated as kl_estimator says",
        low=0.0,
        variant=("policy_regularised", policy_regularised),
    ),
    "kl_estimator": Knob(
        ("exact", "k1", "k3"),
        "exact",
        "exact: the sum over all 4096; k1: score-function of log π/π₀ on the batch; k3: (r − 1) − log r on the batch",
        mechanism="kl_penalty",
    ),
    "entropy_exact": Knob(float, 0.0, "− c·H(π) in the policy loss, H exact over all 4096 outputs", low=0.0),
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
    "freeze_judge": Knob(
        bool, False, "no self-labelled or anchor judge steps (meta steps still run, as in the reference)"
    ),
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
    "judge_anchor": Knob(
        float,
        0.0,
        "+ c·‖θ_J − θ_J(pretrained)‖² in every judge step's loss",
        low=0.0,
        variant=("judge_anchored", judge_anchored),
    ),
    # oracle corrections of the judge
    "anchor_fraction": Knob(
        float,
        0.0,
        "extra judge step on max(1, int(batch·f)) uniform q*-labelled pairs (0: off)",
        unit="of the batch",
        low=0.0,
        high=1.0,
        variant=("n_oracle_pairs", n_oracle_pairs),
    ),
    "meta_holdout_fraction": Knob(
        float,
        0.0,
        "meta-correction: a fixed held-out set of int(4096·f) q*-labelled pairs",
        unit="of 4096",
        low=0.0,
        high=1.0,
        variant=("n_holdout", n_holdout_pairs),
        mechanism="holdout_meta",
    ),
    "meta_update_every": Knob(int, 0, "meta step cadence, both meta sources (0: off)", unit="inner steps", low=0),
    "meta_accuracy_threshold": Knob(
        float,
        0.75,
        "meta step when the held-out accuracy is below this (`holdout` only)",
        unit="fraction",
        low=0.0,
        high=1.0,
        mechanism="holdout_meta",
    ),
    # a meta-judge without ground truth (docs/bias.md)
    "meta_source": Knob(
        ("holdout", "judge"),
        "holdout",
        "who labels the meta step's pairs: q* on a fixed held-out set (`meta_holdout_fraction`, "
        "`meta_accuracy_threshold`), or a second pretrained judge that never sees q* (`meta_pairs`, "
        "`meta_select`, `meta_learns`)",
        scope=GROUP,
        variant=("meta_judge", has_meta_judge),
    ),
    "meta_pairs": Knob(
        int,
        16,
        "`judge` only: pairs the meta-judge labels per meta step, of batch_size fresh policy pairs",
        unit="pairs",
        positive=True,
        scope=GROUP,
        variant=("n_meta_pairs", meta_judge_pairs),
        mechanism="meta_judge",
    ),
    "meta_select": Knob(
        ("uncertain", "random"),
        "uncertain",
        "`judge` only: which fresh pairs it labels: the smallest |J(a) − J(b)|, or a uniform subset",
        mechanism="meta_judge",
    ),
    "meta_learns": Knob(
        bool,
        False,
        "`judge` only: the meta-judge also takes the judge's self-labelled steps (own labels, same pairs)",
        mechanism="meta_judge",
    ),
    # a planted bias (docs/bias.md)
    "bias_token": Knob(
        int,
        2,
        "the filler token of verbosity f(x) = #positions holding it (0 ↑ 1 ↗ 2 → 3 ↘ 4 ↓ 5 ↙ 6 ← 7 ↖)",
        unit="token id",
        low=0,
        high=VOCAB - 1,
        pretrain=True,
    ),
    "planted_bias": Knob(
        float,
        0.0,
        "judge pretraining targets q* + b·σ(q*)·f(x) (+ noise): a judge favouring verbosity by b",
        unit="σ(q*) per token",
        low=0.0,
        pretrain=True,
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

VARIANT_KNOBS = tuple(name for name, knob in KNOBS.items() if knob.scope == GROUP or knob.variant)
Variant = NamedTuple("Variant", [((KNOBS[name].variant or (name,))[0], Any) for name in VARIANT_KNOBS])
Variant.__doc__ = (
    "The static structure a group of runs shares (one field per GROUP knob, plus the static flags some RUN "
    "knobs add): hashable, a jit key."
)

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
    for name in VARIANT_KNOBS:
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


# ---------------------------------------------------------------- docs/knobs.md


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
    lines = [
        "| knob | scope | default | valid | unit | read by | meaning |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, knob in KNOBS.items():
        meaning = knob.doc.replace("|", "\\|")
        read_by = MECHANISMS[knob.mechanism].name if knob.mechanism else "every run"
        lines.append(
            f"| `{name}` | {knob.scope} | {_default_text(knob)} | {_range_text(knob)} | {knob.unit} | {read_by} "
            f"| {meaning} |"
        )
    return "\n".join(lines)


KNOBS_PAGE_INTRO = """# Knobs

Generated from the declarations in `engine/knobs.py` by `coevo knobs --write docs/knobs.md`
(a test fails when they disagree). Defaults are the reference configuration (docs/reference.md).

Scopes: `run` knobs are array data of each run, so any mix runs in one compiled call; `group`
knobs fix the program's structure (array shapes, an update rule), and runs are grouped by them;
`study` knobs fix the loop's sizes and go in the study's `base`. "read by" names the mechanism
that reads a knob: set away from its default while that mechanism is off, it has no effect,
and `coevo run` says so before compiling.
"""


def knobs_page() -> str:
    """The whole of docs/knobs.md."""
    return KNOBS_PAGE_INTRO + "\n" + knob_table() + "\n"
