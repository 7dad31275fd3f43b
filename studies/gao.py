"""Gao, Schulman & Hilton's overoptimisation laws, RL side: gold and judged score against exact √KL
at fine resolution, over judge width and judge quality, with the judge frozen and co-evolving.

Conditions: {frozen, coevolving} × {reinforce, dpo} × judge_hidden {8, 16, 32, 64, 128} at the
reference pretraining target (judge_init_alignment 0.7), plus judge_init_alignment {0.3, 0.5, 0.9}
at the reference width 32 under the same four loops: 32 conditions, 30 seeds, paired by seed (every
condition of a seed starts from the same π₀, and the conditions that share a judge width and
target start from the same pretrained judge). `frozen` is Gao's setting (a fixed proxy);
`coevolving` is the reference loop (the judge trains on its own labels every inner step).

Records every 4 inner steps: 50 records in each outer iteration of 200 steps, 250 after the 5
iterations, which are the rounds of the iterated analysis (docs/overoptimisation.md). The best-of-n
curves of the same π₀ and pretrained judges come from `studies/gao_best_of_n.py`.
"""

WIDTHS = (8, 16, 32, 64, 128)
ALIGNMENTS = (0.3, 0.5, 0.9)  # the reference's 0.7 is the width sweep's 32
REFERENCE_WIDTH = 32
JUDGES = {"frozen": {"freeze_judge": True}, "coevolving": {}}
RULES = {"reinforce": {"update_rule": "reinforce"}, "dpo": {"update_rule": "dpo"}}
SEEDS = list(range(30))

# Study knobs judge pretraining reads (besides the seed and the pretraining knobs of each condition):
# the best-of-n study takes them from here, so both start from the same π₀ and pretrained judges.
PRETRAINING_BASE = {"batch_size": 64, "pretrain_check_every": 50, "pretrain_max_steps": 5000}


def judge_sizes() -> dict:
    """The judge of each column of the study: {name: knobs}, widths at 0.7 then alignments at width 32."""
    return {
        **{f"width{width}": {"judge_hidden": width} for width in WIDTHS},
        **{
            f"align{alignment:g}": {"judge_hidden": REFERENCE_WIDTH, "judge_init_alignment": alignment}
            for alignment in ALIGNMENTS
        },
    }


STUDY = {
    "name": "gao",
    "description": "Gao's laws: {frozen, coevolving} x {reinforce, dpo} x judge_hidden 8-128 (alignment 0.7) "
    "and judge_init_alignment 0.3, 0.5, 0.9 (width 32); record_every 4, 5 outer iterations, seeds 0-29.",
    "seeds": SEEDS,
    "base": {**PRETRAINING_BASE, "n_iterations": 5, "steps_per_iter": 200, "record_every": 4},
    "conditions": {
        f"{judge}_{rule}_{size}": {**judge_knobs, **rule_knobs, **size_knobs}
        for judge, judge_knobs in JUDGES.items()
        for rule, rule_knobs in RULES.items()
        for size, size_knobs in judge_sizes().items()
    },
}
