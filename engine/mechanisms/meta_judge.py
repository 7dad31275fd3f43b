"""The meta-judge without ground truth (meta_source `judge`; docs/bias.md): a second
pretrained judge that never sees q*. Every `meta_update_every` inner steps it labels the
judge's least certain (or random) fresh policy pairs and every judge takes one step on its
labels; with `meta_learns` it also takes the judge's self-labelled steps.

The pure pieces (which pairs, their labels, the agreement) are functions of arrays; the
updates handle ONE run.
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.core.exact import judge_scores_all, spearman
from engine.core.models import ensemble_scores
from engine.core.optim import tree_select
from engine.core.state import MetaJudgeState, RunInputs, RunState, ensemble_size
from engine.knobs import Condition, code
from engine.mechanisms.judge_data import fresh_pairs, self_labelled_pairs
from engine.mechanisms.judge_steps import PullToPretrained, ensemble_pair_step, judge_pair_step

# The meta-judge is pretrained as ensemble member META_JUDGE_MEMBER ("meta" in ASCII, far above
# any ensemble size) and draws its meta steps' pairs from the step key folded with META_KEY_TAG:
# keys of its own, and every other key unchanged.
META_JUDGE_MEMBER = 0x6D657461
META_KEY_TAG = 0x6D657461


def least_certain_pairs(scores_a, scores_b, n_pairs: int) -> jax.Array:
    """Indices (n_pairs,) int32 of the pairs with the smallest |J(a) − J(b)|, smallest first.

    scores_a, scores_b: (B,) judge scores of B fresh pairs; n_pairs ≤ B is static. Ties in
    the gap go to the lower index (`lax.top_k`).
    """
    _, index = jax.lax.top_k(-jnp.abs(scores_a - scores_b), n_pairs)
    return index


def meta_select(scores_a, scores_b, n_pairs: int, uncertain) -> jax.Array:
    """Indices (n_pairs,) int32 of the pairs the meta-judge labels.

    uncertain (bool, possibly traced per run): true — `least_certain_pairs` (meta_select
    `uncertain`); false — the first n_pairs (meta_select `random`: fresh policy pairs are
    i.i.d., so the first n are a uniform random subset). Switched by `jnp.where`, so a vmap
    over runs mixing both costs one top_k.
    """
    return jnp.where(uncertain, least_certain_pairs(scores_a, scores_b, n_pairs), jnp.arange(n_pairs))


def meta_labels(meta_scores_a, meta_scores_b) -> jax.Array:
    """The meta-judge's labels y = [M(a) > M(b)], (n,) bool (the judge's pair-loss labels)."""
    return meta_scores_a > meta_scores_b


def meta_agreement(scores_a, scores_b, meta_scores_a, meta_scores_b) -> jax.Array:
    """Share of pairs on which judge and meta-judge prefer the same side, scalar in [0, 1].

    A pair's preference is [score(a) > score(b)] for each; a tie counts as preferring b.
    """
    return jnp.mean((scores_a > scores_b) == meta_labels(meta_scores_a, meta_scores_b))


class MetaPairs(NamedTuple):
    """What one meta step hands to the judge: selected pairs, their labels, the agreement."""

    tokens_a: jax.Array  # (n_pairs, 4)
    tokens_b: jax.Array  # (n_pairs, 4)
    labels: jax.Array  # (n_pairs,) bool, the meta-judge's
    agreement: jax.Array  # scalar, judge vs meta-judge on the selected pairs


def meta_pairs(tokens_a, tokens_b, scores_a, scores_b, meta_scores_a, meta_scores_b, n_pairs: int, uncertain):
    """Select n_pairs of B fresh pairs, label them by the meta-judge, measure agreement.

    tokens_*: (B, 4); scores_*: (B,) the judge's (ensemble mean) scores; meta_scores_*: (B,)
    the meta-judge's. Returns `MetaPairs`; its tokens and labels go to the judge's pair step.
    """
    index = meta_select(scores_a, scores_b, n_pairs, uncertain)
    agreement = meta_agreement(scores_a[index], scores_b[index], meta_scores_a[index], meta_scores_b[index])
    labels = meta_labels(meta_scores_a[index], meta_scores_b[index])
    return MetaPairs(tokens_a[index], tokens_b[index], labels, agreement)


def meta_judge_update(
    state: RunState, run: RunInputs, key, due, batch_size: int, n_pairs: int, pull: PullToPretrained | None = None
) -> RunState:
    """The meta step: the meta-judge labels n_pairs of batch_size fresh policy pairs
    (`meta_select`: the judge's least certain, or a uniform subset); every judge takes one step
    on its labels (unless frozen), with the run's pull to its pretrained weights (`judge_anchor`,
    as every judge step; None: no such term); the agreement is accumulated for the record."""
    condition = run.condition
    tokens_a, tokens_b = fresh_pairs(state.policy, key, batch_size)
    tokens = jnp.concatenate([tokens_a, tokens_b])
    scores = ensemble_scores(state.judges, tokens).mean(axis=0)
    meta_scores = state.meta.judge.scores(tokens)
    uncertain = condition.meta_select == code("meta_select", "uncertain")
    pairs = meta_pairs(
        tokens_a,
        tokens_b,
        scores[:batch_size],
        scores[batch_size:],
        meta_scores[:batch_size],
        meta_scores[batch_size:],
        n_pairs,
        uncertain,
    )
    mask = jnp.full((ensemble_size(state.judges),), due & ~condition.freeze_judge)
    state = ensemble_pair_step(state, pairs.tokens_a, pairs.tokens_b, pairs.labels, mask, pull)
    record = (state.meta.agreement_sum + jnp.where(due, pairs.agreement, 0.0), state.meta.steps + due)
    return eqx.tree_at(lambda s: (s.meta.agreement_sum, s.meta.steps), state, record)


def meta_judge_self_labelled_update(state: RunState, condition: Condition, key, due, batch_size: int) -> RunState:
    """meta_learns: the meta-judge takes the judge's self-labelled step, on the same pairs (same
    key, same policy or mixture: `judge_data`), labelled by itself; kept where `due`."""
    new_judge, new_opt, _ = judge_pair_step(
        state.meta.judge, state.meta.opt, *self_labelled_pairs(state, condition, key, batch_size)
    )
    judge, opt = tree_select(due, (new_judge, new_opt), (state.meta.judge, state.meta.opt))
    return eqx.tree_at(lambda s: (s.meta.judge, s.meta.opt), state, (judge, opt))


def meta_judge_metrics(meta: MetaJudgeState | None, q_star) -> dict:
    """meta_judge_alignment (Spearman of the meta-judge with q*) and meta_agreement (mean over
    this outer iteration's meta steps); NaN without a meta-judge or without a meta step."""
    if meta is None:
        return {"meta_judge_alignment": jnp.float32(jnp.nan), "meta_agreement": jnp.float32(jnp.nan)}
    alignment = spearman(judge_scores_all(jax.tree.map(lambda a: a[None], meta.judge)), q_star)
    agreement = jnp.where(meta.steps > 0, meta.agreement_sum / jnp.maximum(meta.steps, 1), jnp.nan)
    return {"meta_judge_alignment": alignment, "meta_agreement": agreement}
