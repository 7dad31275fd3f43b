"""What a run is given (`RunInputs`) and what it carries from step to step (`RunState`).

Every mechanism reads and returns a `RunState`; a mechanism a run's variant lacks leaves its
part of the state at `None` (no meta-judge, fresh judge pairs) or at zero (no dpo pairs).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from engine.core import exact
from engine.core.keys import run_keys
from engine.core.models import DEFAULT_HIDDEN, JudgeModel, PolicyModel, policy_model, select_init
from engine.core.optim import adam_init, params
from engine.core.world import World
from engine.knobs import Condition, code


def initial_model(build, key, condition: Condition):
    """A fresh model from `build(key=...)` (a policy or judge of the run's architecture and width,
    say `policy_model("gru", 8, world)`), initialised as the run's `init` knob says (the
    reference's Flax defaults, or Equinox's); both draws come from the same key."""
    return select_init(build(key=key), key=key, reference=condition.init == code("init", "reference"))


def ensemble_size(judges: JudgeModel) -> int:
    return jax.tree.leaves(judges)[0].shape[0]


class RunInputs(eqx.Module):
    """Per-run constants: the condition, the seed, and the pretrained judges."""

    condition: Condition
    seed: jax.Array
    pretrained: JudgeModel  # stacked (n_judges, ...)
    meta_pretrained: JudgeModel | None  # the pretrained meta-judge (Variant.meta_judge), else None

    @property
    def world(self) -> World:
        """The run's world, a static field of its judges."""
        return self.pretrained.world


def make_run_inputs(
    condition: Condition, seed, pretrained_table: JudgeModel, pretrain_index, meta_pretrain_index=None
) -> RunInputs:
    """Runs' inputs with their judges taken out of the pretraining table.

    pretrain_index: (runs, n_judges) rows of `pretrained_table` (stacked judges, one per
    pretraining job); meta_pretrain_index: (runs,) the meta-judge's rows, or None for runs
    without one; works the same for one run or a batch.
    """

    def take(index):
        return jax.tree.map(lambda leaf: leaf[index], pretrained_table)

    meta = None if meta_pretrain_index is None else take(meta_pretrain_index)
    return RunInputs(condition, seed, take(pretrain_index), meta)


class PairStats(eqx.Module):
    """Sums over the current outer iteration's DPO training pairs (zeros under REINFORCE)."""

    offered: jax.Array  # pairs built
    kept: jax.Array  # pairs trained on
    judge_gap: jax.Array  # Σ over kept pairs of J(chosen) − J(rejected)
    true_gap: jax.Array  # Σ over kept pairs of q*(chosen) − q*(rejected)

    @staticmethod
    def zero():
        return PairStats(*(jnp.float32(0) for _ in range(4)))


class MetaJudgeState(eqx.Module):
    """The meta-judge a run carries (meta_source `judge`): a second pretrained judge that never sees q*."""

    judge: JudgeModel  # one judge (not stacked)
    opt: optax.OptState
    agreement_sum: jax.Array  # Σ judge–meta-judge agreement over this outer iteration's meta steps
    steps: jax.Array  # meta steps taken this outer iteration (int32)


class RunState(eqx.Module):
    """Everything a run carries from step to step."""

    policy: PolicyModel
    policy_opt: optax.OptState
    judges: JudgeModel  # stacked (n_judges, ...)
    judge_opt: optax.OptState  # stacked (n_judges, ...)
    meta_accuracy: jax.Array  # last held-out accuracy measured this outer iteration (NaN: none)
    initial_log_probs: jax.Array  # (N,) log π₀: the KL regularisers, dpo's `initial` reference, anchored rejection
    reference_log_probs: jax.Array  # (N,) log π at the start of this outer iteration: dpo's `iteration` reference
    pairs: PairStats  # this outer iteration's dpo training pairs
    meta: MetaJudgeState | None  # the meta-judge (meta_source `judge`), else None
    # (slots, N) Σ π over inner steps, slot j holding outer iteration t − j (judge_data `window`) or every
    # step since the start in slot 0 (`accumulate`); None where the judge's pairs are fresh (Variant.judge_data_slots 0)
    policy_sums: jax.Array | None
    oracle_spent: jax.Array  # q*-labelled comparisons the judges trained on this outer iteration (int32; oracle_budget)
    # (N,) the q* labeller's expected preference of each sequence over a uniform one, a constant of the run
    # (grounding.expected_label_sums); None unless the run's oracle-pair step is exact (gradient_estimator exact)
    oracle_label_sums: jax.Array | None = None

    @property
    def world(self) -> World:
        """The run's world, a static field of its policy."""
        return self.policy.world


def fresh_judge_opt(judges: JudgeModel, lr_judge):
    """A fresh Adam state for every judge of a stacked ensemble."""
    return eqx.filter_vmap(lambda judge: adam_init(params(judge), lr_judge))(judges)


def fresh_meta_judge(judge: JudgeModel, lr_judge) -> MetaJudgeState:
    return MetaJudgeState(judge, adam_init(params(judge), lr_judge), jnp.float32(0.0), jnp.int32(0))


def init_run(
    run: RunInputs, judge_data_slots: int = 0, policy_arch: str = "gru", policy_hidden: int = DEFAULT_HIDDEN
) -> RunState:
    """A run right after pretraining: a fresh policy (π₀) of architecture `policy_arch` and width
    `policy_hidden`, the pretrained judges, fresh optimisers; `judge_data_slots` empty slots of past
    policies' mass (none: 0)."""
    build = policy_model(policy_arch, policy_hidden, run.world)
    policy = initial_model(build, run_keys(run.seed)["policy"], run.condition)
    initial_log_probs = jax.lax.stop_gradient(exact.policy_log_probs_tree(policy))
    return RunState(
        policy=policy,
        policy_opt=adam_init(params(policy), run.condition.lr_policy),
        judges=run.pretrained,
        judge_opt=fresh_judge_opt(run.pretrained, run.condition.lr_judge),
        meta_accuracy=jnp.float32(jnp.nan),
        initial_log_probs=initial_log_probs,
        reference_log_probs=initial_log_probs,
        pairs=PairStats.zero(),
        meta=None if run.meta_pretrained is None else fresh_meta_judge(run.meta_pretrained, run.condition.lr_judge),
        policy_sums=jnp.zeros((judge_data_slots, run.world.n_sequences)) if judge_data_slots else None,
        oracle_spent=jnp.int32(0),
    )
