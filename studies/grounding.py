"""Grounding: what the judge trains on, and an imperfect oracle (docs/grounding.md), 100 seeds,
paired by seed.

Part 1, where the judge's self-labelled pairs come from (`judge_data`): fresh from the current
policy (the reference: data replaced every step), from the mixture of every policy since the
start (accumulate, as Gerstgrasser et al. 2024), or of the last 2 outer iterations (window),
under three loops: the reference (baseline), the slow judge (asymmetric_10) and the policy
trained by DPO on the judge's best-vs-worst pairs (dpo).

Part 2, an imperfect q* labeller for the two grounded corrections, the q* anchor (anchor_0.1:
6 oracle pairs after every judge step) and the slow judge with held-out meta-correction
(asym_meta_10: 204 held-out pairs, checked every 10 steps): label noise of 0, 0.5, 1, 2 σ(q*)
per comparison (mean flip rates 0, 0.15, 0.25, 0.35 over uniform pairs; the held-out labels are
drawn once per run), a labeller biased towards verbosity by 1 σ(q*) per filler token `→`, and a
scarce budget of 204 q*-labelled comparisons per outer iteration, the same for both: 34 of the
anchor's 200 steps (1200 comparisons unlimited), one held-out correction (of at most 20).
"""

JUDGE_DATA = {
    "fresh": {"judge_data": "fresh"},
    "accumulate": {"judge_data": "accumulate"},
    "window2": {"judge_data": "window", "judge_data_window": 2},
}
LOOPS = {
    "baseline": {},
    "asymmetric_10": {"judge_update_every": 10},
    "dpo": {"update_rule": "dpo"},
}
GROUNDED = {
    "anchor_0.1": {"anchor_fraction": 0.1},
    "asym_meta_10": {"meta_holdout_fraction": 0.05, "meta_update_every": 10, "judge_update_every": 10},
}
LABELLERS = {
    **{f"noise{noise:g}": {"oracle_noise": noise} for noise in (0.0, 0.5, 1.0, 2.0)},
    "bias1": {"oracle_bias": 1.0},
    "budget204": {"oracle_budget": 204},
}

CONDITIONS = {
    **{
        f"{data}_{loop}": {**knobs, **loop_knobs}
        for data, knobs in JUDGE_DATA.items()
        for loop, loop_knobs in LOOPS.items()
    },
    **{
        f"{grounded}_{labeller}": {**knobs, **labeller_knobs}
        for grounded, knobs in GROUNDED.items()
        for labeller, labeller_knobs in LABELLERS.items()
    },
}

STUDY = {
    "name": "grounding",
    "description": "judge_data fresh / accumulate / window 2 x baseline, asymmetric_10, dpo; anchor_0.1 and "
    "asym_meta_10 with oracle_noise 0, 0.5, 1, 2, oracle_bias 1, oracle_budget 204; seeds 0-99.",
    "seeds": list(range(100)),
    "base": {"bias_token": 2},
    "conditions": CONDITIONS,
}
