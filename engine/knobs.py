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

from engine.core.models import DEFAULT_HIDDEN, JUDGE_ARCHITECTURES, POLICY_ARCHITECTURES
from engine.core.world import LANDSCAPES, WORLD_KEY, World

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
    """Reference rule: int(N · meta_holdout_fraction) held-out pairs, 0 when meta is off
    (or when the meta step comes from a meta-judge, `meta_source` `judge`)."""
    on = knobs["meta_update_every"] > 0 and knobs["meta_source"] == "holdout"
    return int(world_of(knobs).n_sequences * knobs["meta_holdout_fraction"]) if on else 0


def has_meta_judge(knobs: dict) -> bool:
    """A run carries (and pretrains) a meta-judge: meta_source `judge` with meta steps on."""
    return knobs["meta_source"] == "judge" and knobs["meta_update_every"] > 0


def meta_judge_pairs(knobs: dict) -> int:
    """Pairs the meta-judge labels per meta step (a static top_k size), 0 without a meta-judge."""
    return knobs["meta_pairs"] if has_meta_judge(knobs) else 0


def imperfect_labeller(knobs: dict) -> bool:
    """Does the run's q* labeller add noise or bias? (Runs whose labeller is q* itself compile without it.)"""
    return knobs["oracle_noise"] > 0 or knobs["oracle_bias"] != 0


def oracle_budgeted(knobs: dict) -> bool:
    """Does a budget cap the run's q*-labelled comparisons? (Runs without one compile without the count.)"""
    return knobs["oracle_budget"] > 0


def judge_data_slots(knobs: dict) -> int:
    """Slots of past policies' mass a run keeps (engine.mechanisms.judge_data): 0 where its judges'
    self-labelled pairs are fresh or no such step runs (no code at all), 1 under `accumulate`, one per
    outer iteration of its window under `window` (at most n_iterations: older slots would stay empty)."""
    if knobs["judge_data"] == "fresh" or not MECHANISMS["judge_steps"].on(knobs):
        return 0
    if knobs["judge_data"] == "accumulate":
        return 1
    return min(knobs["judge_data_window"], knobs["n_iterations"])


@dataclass(frozen=True)
class Mechanism:
    """A rule or mechanism that some knobs belong to: a run reads them only where it is on.

    `why_off` is the one source of truth: for resolved knobs it returns None where the mechanism
    runs, else what keeps it from running (a clause, for the warning), derived from what the
    code does (engine/loop/step.py, engine/loop/batch.py).
    """

    name: str  # as docs/knobs.md and the warnings say it
    why_off: Callable[[dict], str | None]

    def on(self, knobs: dict) -> bool:
        return self.why_off(knobs) is None


RESTARTS = "the count restarts every outer iteration"


def never_fires(knobs: dict, field: str) -> str | None:
    """A cadence longer than an outer iteration: `is_due` counts inner steps from 0 in every
    outer iteration, so it is never due."""
    every, steps = knobs[field], knobs["steps_per_iter"]
    return f"{field} {every} > steps_per_iter {steps} and {RESTARTS}" if every > steps else None


def _dpo_off(k):
    return None if k["update_rule"] == "dpo" else "this condition uses reinforce"


def _dpo_reference_off(k):
    if _dpo_off(k):
        return _dpo_off(k)
    if k["n_iterations"] == 1:
        return "n_iterations is 1, so the policy at the start of the only outer iteration is π₀: both references are π₀"
    return None


def _frozen(k):
    return "freeze_judge is true" if k["freeze_judge"] else None


def _sampled_off(k):
    """A term only the sampled estimator reads: `exact` takes its expected gradient, which is 0."""
    exact = k["gradient_estimator"] == "exact"
    return "gradient_estimator is exact (the term's expected gradient is 0)" if exact else None


def _best_response(k):
    """Under policy_response best_response the policy is the closed-form best response: it takes no step."""
    responds = k["policy_response"] == "best_response"
    return "policy_response is best_response (the policy takes no step)" if responds else None


def _judge_steps_off(k):
    """The self-labelled and oracle-pair steps run where the judge is not frozen and its cadence fires."""
    return _frozen(k) or never_fires(k, "judge_update_every")


def _judge_data_window_off(k):
    return _judge_steps_off(k) or (None if k["judge_data"] == "window" else f"judge_data is {k['judge_data']}")


def _oracle_pairs_off(k):
    """The oracle-pair step runs with the self-labelled step, where anchor_fraction > 0."""
    return _judge_steps_off(k) or ("anchor_fraction is 0" if k["anchor_fraction"] == 0 else None)


def _meta_off(k):
    return "meta is off (meta_update_every 0)" if k["meta_update_every"] == 0 else None


def _holdout_off(k):
    return _meta_off(k) or ("meta_source is judge" if k["meta_source"] == "judge" else None)


def _holdout_steps_off(k):
    return _holdout_off(k) or never_fires(k, "meta_update_every")


def _meta_judge_off(k):
    return _meta_off(k) or ("meta_source is holdout" if k["meta_source"] == "holdout" else None)


def _meta_judge_steps_off(k):
    return _meta_judge_off(k) or never_fires(k, "meta_update_every")


def _meta_selection_off(k):
    if _meta_judge_steps_off(k):
        return _meta_judge_steps_off(k)
    if k["meta_pairs"] >= k["batch_size"]:
        return f"meta_pairs {k['meta_pairs']} equals batch_size, so every fresh pair is labelled whichever is selected"
    return None


def _meta_judge_learning_off(k):
    """meta_learns: the meta-judge's step rides on the judge's self-labelled step (same cadence, not when frozen)."""
    return _meta_judge_off(k) or _judge_steps_off(k)


def _meta_step_trains_no_judge(k) -> str | None:
    """Why no meta step trains the judges (None: some do)."""
    if _meta_off(k) or never_fires(k, "meta_update_every"):
        return _meta_off(k) or never_fires(k, "meta_update_every")
    if k["meta_source"] == "holdout":
        return (
            "meta_accuracy_threshold is 0 (no held-out accuracy is below it)"
            if k["meta_accuracy_threshold"] == 0
            else None
        )
    return "a frozen judge takes no meta-judge-labelled step" if k["freeze_judge"] else None


def _labeller_off(k):
    """The q* labeller labels the oracle pairs and the held-out set (measured at the start, and at every meta check)."""
    pairs, holdout = _oracle_pairs_off(k), _holdout_off(k)
    return f"no comparison is q*-labelled: {pairs}, and {holdout}" if pairs and holdout else None


def _oracle_training_off(k):
    """The q*-labelled judge steps: oracle pairs, and held-out corrections (never below a threshold of 0)."""
    pairs = _oracle_pairs_off(k)
    holdout = _holdout_steps_off(k) or (
        "meta_accuracy_threshold is 0 (the held-out step never trains)" if k["meta_accuracy_threshold"] == 0 else None
    )
    return f"no q*-labelled judge step runs: {pairs}, and {holdout}" if pairs and holdout else None


def _no_judge_step(k):
    """Every judge step: self-labelled, oracle-pair, held-out meta and meta-judge-labelled."""
    own, meta = _judge_steps_off(k), _meta_step_trains_no_judge(k)
    return f"no judge step ever runs: {own}, and {meta}" if own and meta else None


def _judges_never_change(k):
    """Neither the judges nor a learning meta-judge ever take a step."""
    meta_learns = k["meta_learns"] and _meta_judge_learning_off(k) is None
    return None if meta_learns else _no_judge_step(k)


def _lr_judge_unused(k):
    """lr_judge: judge pretraining's rate when lr_judge_pretrain is 0; always the judges' and the meta-judge's Adam."""
    if k["lr_judge_pretrain"] == 0:
        return None
    never = _judges_never_change(k)
    return f"lr_judge_pretrain sets pretraining's rate and {never}" if never else None


MECHANISMS = {
    "dpo": Mechanism("update_rule dpo", _dpo_off),
    "dpo_reference": Mechanism("dpo's reference policy", _dpo_reference_off),
    "kl_penalty": Mechanism("the KL penalty", lambda k: None if k["kl_penalty"] > 0 else "kl_penalty is 0"),
    "sampled": Mechanism("the sampled gradient estimator", _sampled_off),
    "policy_steps": Mechanism("the policy's Adam steps (policy_response trained)", _best_response),
    "unfrozen": Mechanism("a judge that is not frozen", _frozen),
    "judge_steps": Mechanism("the judges' self-labelled and oracle-pair steps", _judge_steps_off),
    "judge_data_window": Mechanism("judge_data window", _judge_data_window_off),
    "labeller": Mechanism("the q* labeller (oracle pairs, held-out set)", _labeller_off),
    "oracle_training": Mechanism(
        "the q*-labelled judge steps (oracle pairs, held-out corrections)", _oracle_training_off
    ),
    "judge_training": Mechanism("every judge step (self-labelled, oracle-pair, meta)", _no_judge_step),
    "judge_changes": Mechanism("the judges' resets (and a learning meta-judge's)", _judges_never_change),
    "judge_rate": Mechanism(
        "the judges' Adam steps (and judge pretraining when lr_judge_pretrain is 0)", _lr_judge_unused
    ),
    "meta": Mechanism("the meta step (meta_update_every > 0)", _meta_off),
    "holdout_meta": Mechanism("the held-out meta-correction (meta_source holdout)", _holdout_off),
    "holdout_steps": Mechanism("the held-out meta step", _holdout_steps_off),
    "meta_judge": Mechanism("the meta-judge (meta_source judge)", _meta_judge_off),
    "meta_judge_steps": Mechanism("the meta-judge's meta steps", _meta_judge_steps_off),
    "meta_judge_selection": Mechanism("the meta-judge's choice of pairs", _meta_selection_off),
    "meta_judge_learning": Mechanism(
        "the meta-judge's own self-labelled steps (taken with the judge's)", _meta_judge_learning_off
    ),
    "nk": Mechanism(
        "the NK landscape (landscape nk)", lambda k: None if k["landscape"] == "nk" else "landscape is reference"
    ),
}


# Model widths: from a GRU of 2 units (≈ 200 parameters) to one of 512 (≈ 800K, 160× the reference's).
WIDTH_MIN, WIDTH_MAX = 2, 512

# Upper bounds of values far beyond sense, each well inside float32 (max 3.4e38), where the program computes:
# - a loss weight (or dpo's β, which scales the DPO loss's gradient) above 1e6 puts the rest of the loss,
#   O(1) gradients, below float32's resolution (ε ≈ 1.2e-7) next to its own term, and its square, which
#   Adam keeps, overflows float32 from ≈ 1e19 on;
# - a scale of q* (planted_bias, transition_alpha) above 1e3 makes q*'s own spread (≈ 6 σ(q*)) a part
#   in a thousand or less of the target, and overflows the regression's squared error from ≈ 1e18 on.
LOSS_WEIGHT_MAX = 1e6
Q_STAR_SCALE_MAX = 1e3

KNOBS = {
    # both models
    "init": Knob(
        ("reference", "equinox"),
        "reference",
        "initial weights of policy and judges: the reference's Flax defaults, or Equinox's",
        pretrain=True,
    ),
    # how every step's gradient is taken (docs/mean_field.md)
    "gradient_estimator": Knob(
        ("sampled", "exact"),
        "sampled",
        "sampled: every step's gradient from its batch (reference); exact: its expectation, summed over all "
        "N outputs (all N² pairs for the judges): the loop's large-batch limit, no sampling noise",
        scope=GROUP,
    ),
    # the policy
    "policy_arch": Knob(
        tuple(POLICY_ARCHITECTURES),
        "gru",
        "the policy's architecture (docs/models.md): a GRU (the reference), an MLP giving each next token's "
        "logits from the one-hot prefix, or a one-block causal transformer",
        scope=GROUP,
    ),
    "policy_hidden": Knob(
        int,
        DEFAULT_HIDDEN,
        "width of the policy's GRU, MLP layer or transformer (d_model) (the reference's 32: ≈ 5K parameters)",
        unit="units",
        low=WIDTH_MIN,
        high=WIDTH_MAX,
        scope=GROUP,
    ),
    "lr_policy": Knob(float, 3e-4, "Adam learning rate of the policy", positive=True, mechanism="policy_steps"),
    "policy_response": Knob(
        ("trained", "best_response"),
        "trained",
        "trained: the policy takes its steps (reference); best_response: at every step the policy is the exact "
        "best response π* ∝ π₀^(β/(β+c))·exp(J/(β+c)) to the judges now (gradient_estimator exact, kl_penalty "
        "β > 0, kl_estimator exact or k1; c the exact entropy weights): the judges' reduced two-timescale dynamics",
        scope=GROUP,
    ),
    "entropy_bonus": Knob(
        float,
        0.01,
        "reference 'entropy bonus' + c·mean(log π): zero expected gradient (a quirk)",
        low=0.0,
        high=LOSS_WEIGHT_MAX,
        mechanism="sampled",
    ),
    "entropy_regulariser": Knob(
        float,
        0.0,
        "correction: a real entropy regulariser (score-function gradient of −H, sampled)",
        low=0.0,
        high=LOSS_WEIGHT_MAX,
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
    "dpo_beta": Knob(float, 0.1, "dpo: β of the DPO loss", positive=True, high=LOSS_WEIGHT_MAX, mechanism="dpo"),
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
        mechanism="dpo_reference",
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
        high=LOSS_WEIGHT_MAX,
        variant=("policy_regularised", policy_regularised),
    ),
    "kl_estimator": Knob(
        ("exact", "k1", "k3"),
        "exact",
        "exact: the sum over all N sequences; k1: score-function of log π/π₀ on the batch; k3: (r − 1) − log r "
        "on the batch",
        mechanism="kl_penalty",
    ),
    "entropy_exact": Knob(
        float, 0.0, "− c·H(π) in the policy loss, H exact over all N outputs", low=0.0, high=LOSS_WEIGHT_MAX
    ),
    # the judge(s)
    "judge_arch": Knob(
        tuple(JUDGE_ARCHITECTURES),
        "gru",
        "every judge's architecture, the meta-judge's too (docs/models.md): a GRU read over the tokens (the "
        "reference), an MLP over the one-hot sequence with one tanh layer of judge_hidden units, or a one-block "
        "causal transformer scoring from its last position",
        scope=GROUP,
        pretrain=True,
    ),
    "judge_hidden": Knob(
        int,
        DEFAULT_HIDDEN,
        "width of every judge's GRU, MLP layer or transformer (d_model), the meta-judge's too (the reference's "
        "32: ≈ 5K parameters)",
        unit="units",
        low=WIDTH_MIN,
        high=WIDTH_MAX,
        scope=GROUP,
        pretrain=True,
    ),
    "lr_judge": Knob(
        float,
        3e-4,
        "Adam learning rate of the judge(s), pretraining too",
        positive=True,
        pretrain=True,
        mechanism="judge_rate",
    ),
    "lr_judge_pretrain": Knob(
        float,
        0.0,
        "Adam learning rate of judge pretraining when > 0, so lr_judge changes only co-evolution "
        "(0: lr_judge, the reference)",
        low=0.0,
        pretrain=True,
    ),
    "judge_update_every": Knob(
        int,
        1,
        "judge steps on inner steps where (inner+1) % k == 0",
        unit="inner steps",
        positive=True,
        mechanism="unfrozen",
    ),
    "freeze_judge": Knob(
        bool, False, "no self-labelled or anchor judge steps (meta steps still run, as in the reference)"
    ),
    "judge_data": Knob(
        ("fresh", "accumulate", "window"),
        "fresh",
        "the self-labelled step's pairs: fresh from the current policy (reference), or drawn from the mixture of "
        "the policies of every inner step so far (accumulate) or of the last judge_data_window outer iterations' "
        "(window); the judge still labels them",
        variant=("judge_data_slots", judge_data_slots),
        mechanism="judge_steps",
    ),
    "judge_data_window": Knob(
        int,
        1,
        "`window` only: the mixture holds the current outer iteration's inner steps and all of the k − 1 before",
        unit="outer iterations",
        positive=True,
        mechanism="judge_data_window",
    ),
    "n_judges": Knob(int, 1, "judges in the ensemble; reward is their mean score", low=1, scope=GROUP),
    "reset_every": Knob(
        int,
        0,
        "judges back to pretrained every k outer iterations (0: never)",
        unit="outer iterations",
        low=0,
        mechanism="judge_changes",
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
        high=LOSS_WEIGHT_MAX,
        variant=("judge_anchored", judge_anchored),
        mechanism="judge_training",
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
        mechanism="judge_steps",
    ),
    "meta_holdout_fraction": Knob(
        float,
        0.0,
        "meta-correction: a fixed held-out set of int(N·f) q*-labelled pairs",
        unit="of N",
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
        mechanism="holdout_steps",
    ),
    "oracle_noise": Knob(
        float,
        0.0,
        "the q* labeller compares q*(a) + s·σ(q*)·ε_a with q*(b) + s·σ(q*)·ε_b, ε ~ N(0,1) fresh per comparison "
        "(oracle pairs at every step; the held-out set's labels once per run)",
        unit="σ(q*)",
        low=0.0,
        high=Q_STAR_SCALE_MAX,
        variant=("imperfect_labeller", imperfect_labeller),
        mechanism="labeller",
    ),
    "oracle_bias": Knob(
        float,
        0.0,
        "the q* labeller's q* gains b·σ(q*)·f(x), f = verbosity of bias_token (as planted_bias for the judge)",
        unit="σ(q*) per token",
        low=-Q_STAR_SCALE_MAX,
        high=Q_STAR_SCALE_MAX,
        mechanism="labeller",
    ),
    "oracle_budget": Knob(
        int,
        0,
        "q*-labelled comparisons the judges may train on per outer iteration: an oracle-pair step costs its pairs, "
        "a held-out correction all held-out pairs; a step that does not fit what is left is skipped (0: unlimited)",
        unit="comparisons per outer iteration",
        low=0,
        variant=("oracle_budgeted", oracle_budgeted),
        mechanism="oracle_training",
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
        mechanism="meta",
    ),
    "meta_pairs": Knob(
        int,
        16,
        "`judge` only: pairs the meta-judge labels per meta step, of batch_size fresh policy pairs",
        unit="pairs",
        positive=True,
        scope=GROUP,
        variant=("n_meta_pairs", meta_judge_pairs),
        mechanism="meta_judge_steps",
    ),
    "meta_select": Knob(
        ("uncertain", "random"),
        "uncertain",
        "`judge` only: which fresh pairs it labels: the smallest |J(a) − J(b)|, or a uniform subset",
        mechanism="meta_judge_selection",
    ),
    "meta_learns": Knob(
        bool,
        False,
        "`judge` only: the meta-judge also takes the judge's self-labelled steps (own labels, same pairs)",
        mechanism="meta_judge_learning",
    ),
    # a planted bias (docs/bias.md)
    "bias_token": Knob(
        int,
        2,
        "the filler token of verbosity f(x) = #positions holding it (0 ↑ 1 ↗ 2 → 3 ↘ 4 ↓ 5 ↙ 6 ← 7 ↖)",
        unit="token id (< vocab)",
        low=0,
        pretrain=True,
    ),
    "planted_bias": Knob(
        float,
        0.0,
        "judge pretraining targets q* + b·σ(q*)·f(x) (+ noise): a judge favouring verbosity by b",
        unit="σ(q*) per token",
        low=0.0,
        high=Q_STAR_SCALE_MAX,
        pretrain=True,
    ),
    # the world
    "transition_alpha": Knob(
        float,
        0.0,
        "correction: q* gains a genuine token-transition term w_trans[x_i, x_{i+1}]",
        low=0.0,
        high=Q_STAR_SCALE_MAX,
        pretrain=True,
    ),
    # the world (docs/worlds.md)
    "landscape": Knob(
        LANDSCAPES,
        "reference",
        "the ground truth's family: the published recipe (additive over positions), or Kauffman's NK "
        "landscape, each position's U(0, 1) contribution a random function of its token and the next nk_k",
        pretrain=True,
    ),
    "nk_k": Knob(
        int,
        0,
        "nk: K, the neighbours each position's contribution reads (0 additive .. seq_len − 1)",
        low=0,
        pretrain=True,
        mechanism="nk",
    ),
    "world_seed": Knob(
        int,
        WORLD_KEY,
        "the key q* (and the transition term) is drawn from: another seed, another world of the same family",
        low=0,
        pretrain=True,
    ),
    "vocab": Knob(int, 8, "tokens in the vocabulary, V: the world is all V^L sequences", low=2, scope=STUDY),
    "seq_len": Knob(int, 4, "tokens per sequence, L", low=1, scope=STUDY),
    # the loop's sizes
    "batch_size": Knob(
        int,
        64,
        "sequences per policy step, per judge batch, per pretraining step (unless pretrain_batch_size)",
        positive=True,
        scope=STUDY,
    ),
    "steps_per_iter": Knob(int, 200, "inner steps per outer iteration", positive=True, scope=STUDY),
    "n_iterations": Knob(int, 10, "outer iterations", positive=True, scope=STUDY),
    "pretrain_batch_size": Knob(
        int,
        0,
        "sequences per judge pretraining step (0: batch_size), so studies of several batch sizes can share "
        "their pretrained judges",
        low=0,
        scope=STUDY,
    ),
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
        "also store π(x) and the ensemble-mean J(x) of all N sequences: at the last record, or at every record",
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


def world_of(knobs: dict | Sizes) -> World:
    """The world of a study, from its resolved knobs or its `Sizes`."""
    values = knobs if isinstance(knobs, dict) else knobs._asdict()
    return World(values["vocab"], values["seq_len"])


def pretrain_batch(sizes: Sizes) -> int:
    """Sequences per judge pretraining step: `pretrain_batch_size`, where 0 means `batch_size`."""
    return sizes.pretrain_batch_size or sizes.batch_size


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
