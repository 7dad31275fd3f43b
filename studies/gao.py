"""Gao, Schulman & Hilton's overoptimisation laws, RL side, over judge width: gold and judged score
against exact √KL at fine resolution, with the judge frozen and co-evolving (docs/overoptimisation.md).

Conditions: {frozen, coevolving} × {reinforce, dpo} × judge_hidden {8, 16, 32, 64, 128} at the
reference pretraining target (judge_init_alignment 0.7): 20 conditions, 30 seeds, paired by seed
(every condition of a seed starts from the same π₀, and those of one width from the same
pretrained judge). `frozen` is Gao's setting (a fixed proxy); `coevolving` the reference loop (the
judge trains on its own labels every inner step).

Records every 4 inner steps: 50 in each outer iteration of 200 steps, 250 over the 5 iterations,
the rounds of the iterated analysis. Judge quality is `studies/gao_alignment.py` (the two are split
to keep each under ≈ 45 min on the 2-core CPU: a width-128 judge costs ≈ 3× the reference's per
step and record), and the best-of-n curves of the same π₀ and pretrained judges come from
`studies/gao_best_of_n.py`.
"""

WIDTHS = (8, 16, 32, 64, 128)
ALIGNMENTS = (0.3, 0.5, 0.7, 0.9)  # 0.7: the reference (knobs.py's default)
REFERENCE_WIDTH = 32
JUDGES = {"frozen": {"freeze_judge": True}, "coevolving": {}}
RULES = {"reinforce": {"update_rule": "reinforce"}, "dpo": {"update_rule": "dpo"}}
SEEDS = list(range(30))

# The study knobs judge pretraining reads (besides the seed and each condition's knobs declared
# pretrain=True): every gao study takes them from here, so all start from the same π₀ and judges.
PRETRAINING_BASE = {"batch_size": 64, "pretrain_check_every": 50, "pretrain_max_steps": 5000}
# Fine records (50 per outer iteration) over 5 outer iterations, the rounds of the iterated fits.
RL_BASE = {**PRETRAINING_BASE, "n_iterations": 5, "steps_per_iter": 200, "record_every": 4}

WIDTH_JUDGES = {f"width{width}": {"judge_hidden": width} for width in WIDTHS}
ALIGNMENT_JUDGES = {
    f"align{alignment:g}": {"judge_hidden": REFERENCE_WIDTH, "judge_init_alignment": alignment}
    for alignment in ALIGNMENTS
}


def loops(judges: dict) -> dict:
    """{judge}_{rule}_{size}: every judge size under the four loops, frozen and co-evolving × rule."""
    return {
        f"{judge}_{rule}_{size}": {**judge_knobs, **rule_knobs, **size_knobs}
        for judge, judge_knobs in JUDGES.items()
        for rule, rule_knobs in RULES.items()
        for size, size_knobs in judges.items()
    }


STUDY = {
    "name": "gao",
    "description": "Gao's laws over judge width: {frozen, coevolving} x {reinforce, dpo} x judge_hidden 8, 16, 32, "
    "64, 128 (alignment 0.7); record_every 4, 5 outer iterations, seeds 0-29.",
    "seeds": SEEDS,
    "base": RL_BASE,
    "conditions": loops(WIDTH_JUDGES),
}
