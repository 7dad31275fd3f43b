"""Bias amplification: a planted bias towards the surface feature verbosity
(`engine.core.world.verbosity`), and the exact bias diagnostics.

Every function here is a per-run function of arrays (no models, no loop state), exact over
all N outputs where it is a diagnostic, jittable and vmappable with traced knobs
(`bias_token`, `planted_bias`). Definitions and the reference-world facts are in
docs/bias.md; `python -m engine.mechanisms.bias` prints those facts.

Shapes: "(N,)" is over `engine.core.world.all_sequences(world)` in its lexicographic order;
"(B,)" is over a batch of fresh policy samples.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from engine.core.exact import spearman
from engine.core.world import ARROWS, REFERENCE_WORLD, World, all_sequences, reference_q_star, render, verbosity

DEFAULT_BIAS_TOKEN = 2  # `→`


# ----------------------------------------------------------------------------------------
# The surface feature and the planted bias.


def biased_target(q_star, verbosity, planted_bias) -> jax.Array:
    """The pretraining target q*(x) + b·σ(q*)·f(x), (N,), dtype of q_star.

    σ(q*) is the population standard deviation of q* over the N outputs (ddof 0), so b is
    in units of σ(q*) per filler token. With b = 0 the added term is exactly +0.0 (σ and f are
    finite), and q + 0.0 == q bit for bit for every finite q, so b = 0 reproduces today's
    targets exactly (tests check it eagerly, under jit and under vmap).
    """
    scale = jnp.asarray(planted_bias, q_star.dtype) * jnp.std(q_star)
    return q_star + scale * verbosity.astype(q_star.dtype)


# ----------------------------------------------------------------------------------------
# Exact bias diagnostics.


class JudgeFit(NamedTuple):
    """The least-squares fit J ≈ intercept + quality_weight·q* + bias·σ(q*)·f over all N.

    intercept: in J units; quality_weight: J units per unit of q*; bias: J units per filler
    token, divided by σ(q*) (so a judge that scores exactly q* + b·σ(q*)·f has bias b).
    """

    intercept: jax.Array
    quality_weight: jax.Array
    bias: jax.Array


def judge_fit(scores, q_star, verbosity) -> JudgeFit:
    """Least squares of J on [1, q*, f], exact over the N outputs, in float32.

    Computed by Frisch–Waugh–Lovell on centred data rather than by the raw 3×3 normal
    equations: centre J, q*, f (this removes the intercept column, whose large cross terms
    with f make the raw system ill-conditioned); residualise f on q*; the coefficient of f is
    Σ r_f·J_c / Σ r_f², that of q* is Σ q_c·(J_c − β_f f_c) / Σ q_c². Every sum is over
    centred, O(1) values, so float32 loses nothing that matters (≈1e-6 relative; tests check
    1e-4 against float64 numpy). Needs f not constant and not collinear with q* (true for any
    token: see docs/bias.md).
    """
    j_c = scores - scores.mean()
    q_c = q_star - q_star.mean()
    f_c = verbosity - verbosity.mean()
    sum_qq = jnp.sum(q_c * q_c)
    r_f = f_c - (jnp.sum(q_c * f_c) / sum_qq) * q_c  # f with its q*-explained part removed
    beta_f = jnp.sum(r_f * j_c) / jnp.sum(r_f * r_f)
    beta_q = jnp.sum(q_c * (j_c - beta_f * f_c)) / sum_qq
    intercept = scores.mean() - beta_q * q_star.mean() - beta_f * verbosity.mean()
    return JudgeFit(intercept, beta_q, beta_f / jnp.std(q_star))


def judge_bias(scores, q_star, verbosity) -> jax.Array:
    """The judge's preference for verbosity with true quality held fixed, scalar.

    The coefficient of f in the least-squares fit of J on [1, q*, f] over all N outputs,
    divided by σ(q*). Invariant to adding a constant to J; proportional to J's scale (a judge
    whose scores grow ×c shows ×c the bias — see `JudgeFit.quality_weight` and docs/bias.md).
    """
    return judge_fit(scores, q_star, verbosity).bias


def policy_verbosity(probs, verbosity) -> jax.Array:
    """E_π[f] = Σ_x π(x) f(x), scalar; L/V for the uniform policy (0.5 at 8⁴: 4 positions × 1/8)."""
    return jnp.sum(probs * verbosity)  # elementwise then sum, as in engine.loop.diagnostics


def level_ceiling(world: World, q_star, verbosity) -> jax.Array:
    """m(v) = max{q*(y) : f(y) = v} for v = 0..L, (L + 1,). Every level is non-empty."""
    return jax.ops.segment_max(q_star, verbosity.astype(jnp.int32), num_segments=world.seq_len + 1)


def bias_cost(world: World, probs, q_star, verbosity) -> jax.Array:
    """The quality ceiling the policy loses by the verbosity it chose, scalar, ≥ 0, q* units.

    bias_cost = E_{x~π}[ max q* − m(f(x)) ], m(v) = the best q* among sequences of verbosity v.

    Why this is the harm caused by verbosity: the regret max q* − E_π[q*] splits exactly into
      bias_cost    = E_π[max q* − m(f(x))]   (what the chosen verbosity levels cap),
      within_level = E_π[m(f(x)) − q*(x)]    (what the policy misses inside its levels),
    both ≥ 0. The first depends on π only through its distribution over verbosity levels: it
    is 0 whenever the policy sits at the level of the global best, however poor it is
    otherwise, and it grows with every unit of mass moved to a level whose best sequence is
    worse. The second ("the quality given up relative to the best sequence of its own
    verbosity", the issue's first suggestion) is ordinary sub-optimality that a policy with
    no verbosity at all also has, so it is not a harm of verbosity; `within_level_gap`
    returns it.
    """
    levels = verbosity.astype(jnp.int32)
    return jnp.sum(probs * (jnp.max(q_star) - level_ceiling(world, q_star, verbosity)[levels]))


def within_level_gap(world: World, probs, q_star, verbosity) -> jax.Array:
    """E_π[m(f(x)) − q*(x)], scalar ≥ 0: the regret left once verbosity is accounted for.

    bias_cost + within_level_gap = max q* − policy_quality (exactly, up to rounding).
    """
    levels = verbosity.astype(jnp.int32)
    return jnp.sum(probs * (level_ceiling(world, q_star, verbosity)[levels] - q_star))


def bias_metrics(world: World, probs, scores, q_star, verbosity) -> dict:
    """The per-iteration bias records of one run (`engine.loop.diagnostics.BIAS_METRICS`), scalars.

    probs: π over the N; scores: J over the N (the ensemble mean); q_star, verbosity:
    the run's. judge_bias and judge_quality_weight come from one `judge_fit`.
    """
    fit = judge_fit(scores, q_star, verbosity)
    return {
        "judge_bias": fit.bias,
        "judge_quality_weight": fit.quality_weight,
        "policy_verbosity": policy_verbosity(probs, verbosity),
        "bias_cost": bias_cost(world, probs, q_star, verbosity),
    }


# ----------------------------------------------------------------------------------------
# Reference-world facts (docs/bias.md quotes them; `python -m engine.mechanisms.bias` prints them).


class VerbosityFacts(NamedTuple):
    """How a filler token relates to q*: correlations, per-level ceilings, the best's verbosity."""

    pearson: jax.Array  # corr(f, q*) over the N
    spearman: jax.Array  # rank corr(f, q*), average ranks (f has L + 1 tied levels)
    level_ceiling: jax.Array  # (L + 1,) best q* at verbosity 0..L
    best_verbosity: jax.Array  # f of the global best sequence


def verbosity_facts(world: World, q_star, bias_token) -> VerbosityFacts:
    f = verbosity(world, bias_token)
    return VerbosityFacts(
        pearson=jnp.corrcoef(f, q_star)[0, 1],
        spearman=spearman(f, q_star),
        level_ceiling=level_ceiling(world, q_star, f),
        best_verbosity=f[jnp.argmax(q_star)],
    )


def main():
    world = REFERENCE_WORLD
    q_star = reference_q_star(world)
    facts = jax.vmap(verbosity_facts, in_axes=(None, None, 0))(world, q_star, jnp.arange(world.vocab))
    best = render(all_sequences(world)[int(jnp.argmax(q_star))])
    print(f"reference world: σ(q*) = {float(jnp.std(q_star)):.4f}, global best {best} (q* {float(q_star.max()):.3f})")
    print("| token | Pearson(f, q*) | Spearman(f, q*) | best q* at f = 0, 1, 2, 3, 4 | f(best) |")
    print("|---|---|---|---|---|")
    for token in range(world.vocab):
        ceiling = ", ".join(f"{float(c):.3f}" for c in np.asarray(facts.level_ceiling[token]))
        print(
            f"| {token} `{ARROWS[token]}` | {float(facts.pearson[token]):+.4f} | {float(facts.spearman[token]):+.4f} "
            f"| {ceiling} | {int(facts.best_verbosity[token])} |"
        )


if __name__ == "__main__":
    main()
