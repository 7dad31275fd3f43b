"""Regularisers against entropy collapse and judge drift, REINFORCE loop.

Conditions (all otherwise the reference loop, the judge co-evolving as in the baseline):
- baseline;
- entropy_exact_c: − c·H(π), H exact over the 4096 outputs, c ∈ {0.01, 0.1, 1};
- kl_exact_c: + c·KL(π‖π₀), exact, c ∈ {0.01, 0.1, 1}; kl_k1_0.1 and kl_k3_0.1: the same
  penalty at the middle coefficient through the sampled estimators k1 and k3;
- judge_anchor_c: + c·‖θ_J − θ_J(pretrained)‖² in every judge step, c ∈ {0.01, 0.1};
- entropy_sampled_c: the sampled (score-function) entropy regulariser at the same three c.
Sampled entropy comes last because it is the known-weak correction (README, "quirks"), and
the overoptimisation figure draws only the first 12 conditions of a Dataset.

Why these coefficients. A probe at 2 seeds with short loops (steps_per_iter 50, 4
iterations; c ∈ {0.001, 0.01, 0.1, 1} for every regulariser) gave, at iteration 4
(baseline: entropy 3.98 nats, KL(π‖π₀) 4.25 nats, real quality 1.14, alignment 0.454):
- c = 0.001: no visible effect anywhere (every number within 0.003 of the baseline);
- c = 0.01: none visible for the policy regularisers (entropy +0.01 nats), already visible
  for the judge anchor (alignment 0.530);
- c = 0.1: a small effect (entropy 4.17 exact / 4.11 sampled / 4.15 KL; KL 4.06–4.12;
  quality −0.02); judge anchor: alignment 0.658, nearly the pretrained 0.717;
- c = 1: a strong effect (entropy 6.6 / 6.4 / 6.6 nats, KL 1.7–1.9, real quality about
  halved: 0.58–0.66); judge anchor: alignment 0.706, a judge as good as frozen.
So {0.01, 0.1, 1} spans "no visible effect" to "strong effect" for the three policy
regularisers, and {0.01, 0.1} spans "partial" to "nearly frozen" for the judge anchor (1 would
duplicate the frozen-judge condition of the blog study). The short loop stops before the
collapse (the full loop collapses by iteration ≈ 3 = 600 steps); after it, the REINFORCE
gradient of a batch of one repeated sequence is zero while the exact entropy and KL
gradients are not, so the small coefficients may matter more in the full loop than here.

Seeds 0–99, paired by seed. Analyse with `analysis.self_rewarding.answers(ds)`.
"""

COEFFICIENTS = (0.01, 0.1, 1.0)
MIDDLE = COEFFICIENTS[1]
JUDGE_ANCHORS = (0.01, 0.1)

CONDITIONS = {
    "baseline": {},
    **{f"entropy_exact_{c:g}": {"entropy_exact": c} for c in COEFFICIENTS},
    **{f"kl_exact_{c:g}": {"kl_penalty": c} for c in COEFFICIENTS},
    f"kl_k1_{MIDDLE:g}": {"kl_penalty": MIDDLE, "kl_estimator": "k1"},
    f"kl_k3_{MIDDLE:g}": {"kl_penalty": MIDDLE, "kl_estimator": "k3"},
    **{f"judge_anchor_{c:g}": {"judge_anchor": c} for c in JUDGE_ANCHORS},
    **{f"entropy_sampled_{c:g}": {"entropy_regulariser": c} for c in COEFFICIENTS},
}

STUDY = {
    "name": "regularisers",
    "description": "Exact entropy, sampled entropy and KL-to-initial at 0.01/0.1/1 (k1, k3 at 0.1), "
    "judge anchor at 0.01/0.1, against the reinforce baseline; seeds 0-99.",
    "seeds": list(range(100)),
    "base": {},
    "conditions": CONDITIONS,
}
