"""Judge pretraining: one judge regressed on noisy targets (q*, or q* with a planted bias), on
batches of `pretrain_batch_size` sequences (0: `batch_size`), until its Spearman with q* reaches
`judge_init_alignment`, checked every `pretrain_check_every` steps, or `pretrain_max_steps` pass
(flagged by the host, not fatal)."""

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.core.exact import judge_scores_all, spearman
from engine.core.keys import run_keys
from engine.core.models import JudgeModel
from engine.core.optim import adam_init, adam_update, params
from engine.core.state import initial_model
from engine.core.world import all_sequences, run_q_star, verbosity
from engine.knobs import Condition, Sizes, pretrain_batch
from engine.mechanisms.bias import biased_target

PRETRAIN_TARGET_NOISE = 0.1  # σ of the Gaussian noise on every regression target


class PretrainResult(eqx.Module):
    judge: JudgeModel
    steps: jax.Array
    alignment: jax.Array


class PretrainInputs(eqx.Module):
    """One judge to pretrain: its seed, its ensemble member index, and a condition that
    uses it (only the knobs declared `pretrain=True` are read)."""

    seed: jax.Array
    member: jax.Array
    condition: Condition


def pretrain_judge(job: PretrainInputs, sizes: Sizes, build) -> PretrainResult:
    """Pretrain member `job.member` of seed `job.seed`, a judge `build(key=...)` (the run's
    architecture and width: `engine.core.models.judge_model`); stops at the first check >= target."""
    keys = run_keys(job.seed)
    judge = initial_model(build, jax.random.fold_in(keys["judges"], job.member), job.condition)
    data_key = jax.random.fold_in(keys["pretrain"], job.member)
    world = judge.world
    sequences = jnp.asarray(all_sequences(world))
    q_star = run_q_star(world, job.condition)
    # q* + b·σ(q*)·f(x), exactly q* (bit for bit) at planted_bias 0; the stop rule below still
    # measures Spearman against q* itself.
    target = biased_target(q_star, verbosity(world, job.condition.bias_token), job.condition.planted_bias)

    batch_size = pretrain_batch(sizes)

    def train_step(carry, step):
        judge, opt_state = carry
        key_index, key_noise = jax.random.split(jax.random.fold_in(data_key, step))
        index = jax.random.randint(key_index, (batch_size,), 0, world.n_sequences)
        targets = target[index] + PRETRAIN_TARGET_NOISE * jax.random.normal(key_noise, (batch_size,))

        def loss_fn(judge):
            return jnp.mean((judge.scores(sequences[index]) - targets) ** 2)

        grads = eqx.filter_grad(loss_fn)(judge)
        updates, opt_state = adam_update(grads, opt_state)
        return (eqx.apply_updates(judge, updates), opt_state), None

    def train_until_check(carry):
        judge, opt_state, steps, _ = carry
        (judge, opt_state), _ = jax.lax.scan(
            train_step, (judge, opt_state), steps + jnp.arange(sizes.pretrain_check_every)
        )
        alignment = spearman(judge_scores_all(jax.tree.map(lambda a: a[None], judge)), q_star)
        return judge, opt_state, steps + sizes.pretrain_check_every, alignment

    def below_target(carry):
        _, _, steps, alignment = carry
        return (alignment < job.condition.judge_init_alignment) & (steps < sizes.pretrain_max_steps)

    rate = jnp.where(job.condition.lr_judge_pretrain > 0, job.condition.lr_judge_pretrain, job.condition.lr_judge)
    start = (judge, adam_init(params(judge), rate), jnp.int32(0), jnp.float32(-jnp.inf))
    judge, _, steps, alignment = jax.lax.while_loop(below_target, train_until_check, start)
    return PretrainResult(judge, steps, alignment)
