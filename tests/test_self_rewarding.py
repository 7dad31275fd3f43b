"""The self-rewarding family in the loop: the dpo rule, temporal anchoring, exact regularisers,
and the diagnostics every rule records."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine
from engine.core import exact
from engine.core.models import Policy
from engine.core.optim import adam_init, adam_update, params
from engine.core.state import PairStats, RunState
from engine.core.world import REFERENCE_WORLD as WORLD
from engine.core.world import reference_q_star
from engine.knobs import DEFAULTS, condition_arrays
from engine.mechanisms import preference
from engine.mechanisms.policy_rules import policy_dpo_loss

OLD_METRICS = ("policy_quality", "judge_alignment", "policy_entropy", "judge_perceived_quality")


def test_dpo_on_ground_truth_pairs_raises_real_quality():
    """With the judge replaced by q* itself (and never trained), DPO's best-vs-worst pairs
    and its loss against the iteration reference must push real quality up."""
    q_star = reference_q_star(WORLD)
    condition = jax.tree.map(lambda a: jnp.asarray(a[0]), condition_arrays([{**DEFAULTS, "update_rule": "dpo"}]))
    policy = Policy(key=jax.random.PRNGKey(3))
    initial = exact.policy_log_probs_tree(policy)
    state = RunState(
        policy=policy,
        policy_opt=adam_init(params(policy), jnp.float32(3e-3)),
        judges=None,
        judge_opt=None,
        meta_accuracy=jnp.float32(jnp.nan),
        initial_log_probs=initial,
        reference_log_probs=initial,
        pairs=PairStats.zero(),
        meta=None,
        policy_sums=None,
        oracle_spent=jnp.int32(0),
    )

    def step(state, key):
        tokens, _ = state.policy.sample(jax.random.uniform(key, (64, 4)))
        scores = q_star[exact.sequence_index(WORLD, tokens)]
        pairs = preference.gather_pairs(tokens, scores, preference.best_worst_pairs(scores, 4))
        grads = jax.grad(lambda p: policy_dpo_loss(p, state, condition, pairs))(state.policy)
        updates, opt = adam_update(grads, state.policy_opt)
        return eqx.tree_at(
            lambda s: (s.policy, s.policy_opt), state, (eqx.apply_updates(state.policy, updates), opt)
        ), None

    final, _ = jax.jit(lambda s: jax.lax.scan(step, s, jax.random.split(jax.random.PRNGKey(0), 150)))(state)
    quality = [float(jnp.sum(jnp.exp(exact.policy_log_probs_tree(p)) * q_star)) for p in (policy, final.policy)]
    assert quality[1] > quality[0] + 1.0, quality


@pytest.fixture(scope="module")
def ds(small):
    return engine.run_study(
        small(
            {
                "baseline": {},
                "zero_coefficients": {"kl_penalty": 0.0, "entropy_exact": 0.0, "judge_anchor": 0.0, "dpo_beta": 0.5},
                "kl_exact": {"kl_penalty": 0.5},
                "kl_k3": {"kl_penalty": 0.5, "kl_estimator": "k3"},
                "entropy_exact": {"entropy_exact": 0.5},
                "judge_anchor": {"judge_anchor": 10.0},
                "dpo": {"update_rule": "dpo"},
                "dpo_initial_ipo": {"update_rule": "dpo", "dpo_reference": "initial", "dpo_loss": "ipo"},
                "dpo_temporal": {"update_rule": "dpo", "anchored_rejection": True, "future_chosen": True},
            },
            steps_per_iter=10,
        )
    )


def test_coefficients_at_zero_are_bit_identical_to_the_baseline(ds):
    for metric in OLD_METRICS + ("kl_to_initial", "best_worst_gap_judge", "top_probability"):
        np.testing.assert_array_equal(
            ds[metric].sel(condition="zero_coefficients"), ds[metric].sel(condition="baseline")
        )


def test_every_rule_records_the_new_diagnostics(ds):
    # π = π₀ after pretraining; log π₀ comes from the `start` program and log π from `measure`, which
    # XLA compiles (fuses) apart, so their last bits may differ: the KL is 0 up to float32 rounding
    np.testing.assert_allclose(ds.kl_to_initial.isel(iteration=0), 0.0, atol=1e-6)
    assert (ds.kl_to_initial.isel(iteration=-1) > 0).all()
    assert (ds.best_worst_gap_judge >= 0).all() and (ds.top_probability <= 1).all()
    assert ds.top_sequence.dtype == object and len(ds.top_sequence.values[0, 0, 0].split()) == 4
    reinforce = ds.sel(condition=["baseline", "kl_exact"])
    assert np.isnan(reinforce.pair_keep_rate).all() and np.isnan(reinforce.train_pair_gap_judge).all()
    dpo = ds.sel(condition=["dpo", "dpo_initial_ipo", "dpo_temporal"]).isel(iteration=slice(1, None))
    assert ((dpo.pair_keep_rate > 0) & (dpo.pair_keep_rate <= 1)).all()
    assert (dpo.train_pair_gap_judge > 0).all()  # kept pairs are strictly ordered by the judge


def test_each_mechanism_changes_the_run(ds):
    final = ds.isel(iteration=-1)
    base = final.sel(condition="baseline")
    for condition in ["kl_exact", "kl_k3", "entropy_exact", "judge_anchor", "dpo", "dpo_initial_ipo", "dpo_temporal"]:
        assert not np.array_equal(final.policy_quality.sel(condition=condition), base.policy_quality), condition
    assert (final.kl_to_initial.sel(condition="kl_exact") < base.kl_to_initial).all()
    assert (final.policy_entropy.sel(condition="entropy_exact") > base.policy_entropy).all()
    start = ds.judge_alignment.isel(iteration=0)
    drift = lambda c: np.abs(final.judge_alignment.sel(condition=c) - start.sel(condition=c))  # noqa: E731
    assert (drift("judge_anchor") <= drift("baseline")).all()
