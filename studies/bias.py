"""Bias amplification: a planted verbosity bias of three sizes × the mechanisms that
might amplify or stop it, 100 seeds, paired by seed. docs/bias.md defines every record.

Planted bias b (σ(q*) per filler token `→`, the judge's pretraining target q* + b·σ·f):
- 0: no planted bias (amplification is undefined there: compare judge_bias(t) − judge_bias(0));
- 0.3: small: Spearman(target, q*) = 0.978, the stop rule barely notices it; pretrained judges
  show judge_bias ≈ 0.07–0.23 (the unbiased judge's own is ≈ −0.03 to −0.17);
- 1.0: large: Spearman(target, q*) = 0.80, pretraining still reaches 0.7 (≈ 550–650 steps, against
  ≈ 300–400 unbiased); judge_bias ≈ 0.95 at iteration 0. Above b ≈ 1.3 the target itself ranks
  below 0.7 and pretraining would give up (`pretrain_reached` false): do not go there.

Mechanisms: the reference baseline (self-labelled judge), the slow judge (asymmetric_10), the
frozen judge (no co-evolution: the bias stays planted, does the policy exploit it?), the
q*-anchor oracle (anchor_0.1), and the ground-truth-free meta-judge, a second judge pretrained
with the same planted bias, frozen or learning on its own labels (the three-player loop). It
labels the judge's 16 least certain of 64 fresh policy pairs every inner step. kl_0.1: the
exact KL(π‖π₀) penalty at 0.1 (`kl_penalty`; the middle coefficient of the regularisers
study). dpo and dpo_lc0.4: the policy trained on the judge's best-vs-worst pairs of 4
(Self-Rewarding), plainly or with Meta-Rewarding's length control at ρ = 0.4.
"""

PLANTED_BIAS = {"b0": 0.0, "b0.3": 0.3, "b1": 1.0}

META_JUDGE = {"meta_source": "judge", "meta_update_every": 1, "meta_pairs": 16, "meta_select": "uncertain"}

MECHANISMS = {
    "baseline": {},
    "asymmetric_10": {"judge_update_every": 10},
    "frozen": {"freeze_judge": True},
    "anchor_0.1": {"anchor_fraction": 0.1},
    "meta_frozen_judge": {**META_JUDGE, "meta_learns": False},
    "meta_learning_judge": {**META_JUDGE, "meta_learns": True},
    "kl_0.1": {"kl_penalty": 0.1},
    "dpo": {"update_rule": "dpo"},
    "dpo_lc0.4": {"update_rule": "dpo", "length_control": 0.4},
}

CONDITIONS = {
    f"{bias_name}_{mechanism}": {"planted_bias": bias, **knobs}
    for bias_name, bias in PLANTED_BIAS.items()
    for mechanism, knobs in MECHANISMS.items()
}

STUDY = {
    "name": "bias",
    "description": "Planted verbosity bias b in {0, 0.3, 1} x baseline, asymmetric_10, frozen, "
    "anchor_0.1, meta-judge (frozen / learning), KL 0.1, dpo with length control 0 / 0.4; seeds 0-99.",
    "seeds": list(range(100)),
    "base": {"bias_token": 2},
    "conditions": CONDITIONS,
}
