"""Preference pairs built by the judge, and the DPO losses trained on them.

One run's batch of `batch_size` samples is read as G = batch_size // n_candidates groups of
`n_candidates` consecutive samples (group g = samples g·n .. g·n + n − 1); each group gives
at most one pair, so every function returns G pairs and a keep mask: static shapes, never
a dynamic number of pairs. Everything handles ONE run; batching over runs is vmap's job.
docs/self_rewarding.md defines each mechanism with its paper.

- `best_worst_pairs`: Self-Rewarding's pairs (chosen = the judge's best, rejected = its
  worst; ties on the `score_grid` dropped), as flat indices into the batch;
- `length_controlled_pairs`: Meta-Rewarding's length control (ρ = 0: best vs worst);
- `gather_pairs` turns indices into `Pairs` (tokens, scores, sources, keep);
- `anchored_rejection`, `future_chosen`: Temporal Self-Rewarding's two fixes, on `Pairs`;
- `dpo_loss`: TRL's `sigmoid` and `ipo` losses, mean over kept pairs.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Where a pair member was sampled from.
POLICY = 0  # the current policy's batch
INITIAL = 1  # π₀'s draws (anchored rejection)
LOOKAHEAD = 2  # the look-ahead policy's draws (future-guided chosen)


class PairIndex(NamedTuple):
    """G pairs as flat indices into one batch: chosen (G,) int32, rejected (G,) int32, keep (G,) bool."""

    chosen: jax.Array
    rejected: jax.Array
    keep: jax.Array


class Pairs(NamedTuple):
    """G preference pairs with their tokens, judge scores, sources and keep mask.

    chosen, rejected: (G, 4) int32 tokens; chosen_score, rejected_score: (G,) judge scores;
    chosen_source, rejected_source: (G,) int32, POLICY | INITIAL | LOOKAHEAD; keep: (G,) bool.
    The DPO loss needs log π and log π_ref of both members; a member that did not come
    from the policy's own batch (source ≠ POLICY) has no log π from the sampling pass, so
    the simplest wiring teacher-forces `policy.log_prob` on `chosen` and `rejected`.
    """

    chosen: jax.Array
    rejected: jax.Array
    chosen_score: jax.Array
    rejected_score: jax.Array
    chosen_source: jax.Array
    rejected_source: jax.Array
    keep: jax.Array


def strictly_better(score_a, score_b, score_grid):
    """score_a > score_b on the grid: raw scores when score_grid == 0, else round(s / grid).

    A pair is kept iff its chosen is strictly better than its rejected: for best vs worst
    (chosen ≥ rejected) that is exactly "the two scores differ on the grid", the paper's
    tie rule. score_grid may be traced (a per-run knob).
    """
    on_grid = score_grid > 0
    grid = jnp.where(on_grid, score_grid, 1.0)
    return jnp.where(on_grid, jnp.round(score_a / grid) > jnp.round(score_b / grid), score_a > score_b)


def _groups(values, n_candidates: int):
    """(batch, ...) -> (G, n_candidates, ...), dropping a remainder batch % n_candidates."""
    n_groups = values.shape[0] // n_candidates
    return values[: n_groups * n_candidates].reshape(n_groups, n_candidates, *values.shape[1:])


def _flat(index_in_group, n_candidates: int):
    return (jnp.arange(index_in_group.shape[0]) * n_candidates + index_in_group).astype(jnp.int32)


def best_worst_pairs(scores, n_candidates: int, score_grid=0.0) -> PairIndex:
    """Self-Rewarding pairs: per group, chosen = argmax score, rejected = argmin score.

    scores: (batch,) judge scores of the batch. Ties inside a group go to the first
    candidate (argmax/argmin). keep iff the two scores differ on `score_grid`.
    """
    grouped = _groups(scores, n_candidates)
    best, worst = jnp.argmax(grouped, axis=1), jnp.argmin(grouped, axis=1)
    best_score = jnp.take_along_axis(grouped, best[:, None], axis=1)[:, 0]
    worst_score = jnp.take_along_axis(grouped, worst[:, None], axis=1)[:, 0]
    return PairIndex(
        _flat(best, n_candidates), _flat(worst, n_candidates), strictly_better(best_score, worst_score, score_grid)
    )


def length_controlled_pairs(scores, verbosity, n_candidates: int, rho, score_grid=0.0) -> PairIndex:
    """Meta-Rewarding's length control: short chosen, long rejected, within a quality window.

    Per group with S_max, S_min: chosen = the least verbose candidate with score ≥
    (1 − ρ)·S_max + ρ·S_min; rejected = the most verbose with score ≤ (1 − ρ)·S_min +
    ρ·S_max. Ties in verbosity go to the higher score (chosen) or the lower score
    (rejected), then to the first candidate. keep iff chosen is strictly better than
    rejected on `score_grid` (for ρ > 1/2 the windows overlap and a pair may be one
    candidate twice: dropped). ρ = 0 gives best vs worst: the same pairs whenever a
    group's extreme scores are attained once; with exactly tied extremes it takes the
    least (most) verbose of the tied, with the same scores and the same keep decision.
    scores, verbosity: (batch,); rho in [0, 1], may be traced.
    """
    grouped = _groups(scores, n_candidates)
    wordiness = _groups(verbosity, n_candidates).astype(grouped.dtype)
    high, low = grouped.max(axis=1, keepdims=True), grouped.min(axis=1, keepdims=True)
    chosen_window = grouped >= (1 - rho) * high + rho * low
    rejected_window = grouped <= (1 - rho) * low + rho * high
    # Lexicographic choice (verbosity, then score, then position) by two masked passes.
    least = jnp.min(jnp.where(chosen_window, wordiness, jnp.inf), axis=1, keepdims=True)
    chosen = jnp.argmax(jnp.where(chosen_window & (wordiness == least), grouped, -jnp.inf), axis=1)
    most = jnp.max(jnp.where(rejected_window, wordiness, -jnp.inf), axis=1, keepdims=True)
    rejected = jnp.argmin(jnp.where(rejected_window & (wordiness == most), grouped, jnp.inf), axis=1)
    chosen_score = jnp.take_along_axis(grouped, chosen[:, None], axis=1)[:, 0]
    rejected_score = jnp.take_along_axis(grouped, rejected[:, None], axis=1)[:, 0]
    return PairIndex(
        _flat(chosen, n_candidates),
        _flat(rejected, n_candidates),
        strictly_better(chosen_score, rejected_score, score_grid),
    )


def gather_pairs(tokens, scores, index: PairIndex) -> Pairs:
    """The pairs' tokens and scores from the batch (tokens (batch, 4), scores (batch,))."""
    source = jnp.full(index.keep.shape, POLICY, jnp.int32)
    return Pairs(
        tokens[index.chosen],
        tokens[index.rejected],
        scores[index.chosen],
        scores[index.rejected],
        source,
        source,
        index.keep,
    )


def anchored_rejection(pairs: Pairs, initial_tokens, initial_scores, n_candidates: int, score_grid=0.0) -> Pairs:
    """Temporal Self-Rewarding's anchored rejection: reject π₀'s worst when it is worse.

    initial_tokens (batch, 4), initial_scores (batch,): n_candidates draws from the initial
    policy π₀ per group, in the same group layout. Per group the rejected becomes π₀'s
    worst (by the judge) where the judge scores it strictly below the current rejected
    (raw scores), else stays. keep iff J(chosen) > J(rejected) on `score_grid`: a group
    whose own candidates tie is kept when π₀'s worst is lower.
    """
    grouped = _groups(initial_scores, n_candidates)
    worst = _flat(jnp.argmin(grouped, axis=1), n_candidates)
    use_initial = initial_scores[worst] < pairs.rejected_score
    rejected = jnp.where(use_initial[:, None], initial_tokens[worst], pairs.rejected)
    rejected_score = jnp.where(use_initial, initial_scores[worst], pairs.rejected_score)
    source = jnp.where(use_initial, INITIAL, pairs.rejected_source).astype(jnp.int32)
    keep = strictly_better(pairs.chosen_score, rejected_score, score_grid)
    return pairs._replace(rejected=rejected, rejected_score=rejected_score, rejected_source=source, keep=keep)


def future_chosen(pairs: Pairs, lookahead_tokens, lookahead_scores, n_candidates: int, score_grid=0.0) -> Pairs:
    """Temporal Self-Rewarding's future-guided chosen: a look-ahead policy's best, when better.

    lookahead_tokens (batch, 4), lookahead_scores (batch,): n_candidates draws per group from
    a look-ahead copy of the policy (one DPO step on the current pairs). Per group the
    chosen becomes the look-ahead's best where the judge scores it strictly above the
    current chosen (raw scores), else stays. keep iff J(chosen) > J(rejected) on `score_grid`.
    """
    grouped = _groups(lookahead_scores, n_candidates)
    best = _flat(jnp.argmax(grouped, axis=1), n_candidates)
    use_lookahead = lookahead_scores[best] > pairs.chosen_score
    chosen = jnp.where(use_lookahead[:, None], lookahead_tokens[best], pairs.chosen)
    chosen_score = jnp.where(use_lookahead, lookahead_scores[best], pairs.chosen_score)
    source = jnp.where(use_lookahead, LOOKAHEAD, pairs.chosen_source).astype(jnp.int32)
    keep = strictly_better(chosen_score, pairs.rejected_score, score_grid)
    return pairs._replace(chosen=chosen, chosen_score=chosen_score, chosen_source=source, keep=keep)


# ----------------------------------------------------------------------------------------
# Losses.


def masked_mean(values, mask):
    """Mean of values where mask is true; 0 (with zero gradient) where no entry is."""
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def dpo_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected):
    """h = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r)), per pair."""
    return (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)


DPO_LOSSES = ("sigmoid", "ipo")


def dpo_loss(
    policy_chosen, policy_rejected, reference_chosen, reference_rejected, keep, beta, loss_type="sigmoid", *, seq_len
):
    """DPO loss over G pairs, mean over kept pairs (0 and zero gradient when none is kept).

    Inputs are (G,) sequence log-probabilities (summed over the 4 tokens) under the policy
    (differentiable) and the reference (constants); beta may be traced; loss_type is static.
    As TRL's DPOTrainer defines them, with h = `dpo_margin`:
    - `sigmoid` (DPO, Rafailov et al. 2023): −log σ(β·h); h = 0 gives ln 2;
    - `ipo` (Azar et al. 2023, eq. 17): (h/4 − 1/(2β))². TRL divides each response's
      log-ratio by its number of completion tokens for IPO (the IPO authors' normalisation);
      every response here has `seq_len` tokens, so h/L (h/4 in the reference world).
    """
    margin = dpo_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    if loss_type == "sigmoid":
        per_pair = -jax.nn.log_sigmoid(beta * margin)
    elif loss_type == "ipo":
        per_pair = (margin / seq_len - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {loss_type!r}; expected one of {DPO_LOSSES}")
    return masked_mean(per_pair, keep)
