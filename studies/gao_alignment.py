"""Gao's laws over judge quality: `studies/gao.py` at the reference width 32 with the judge pretrained
to Spearman 0.3, 0.5, 0.7 (the reference) and 0.9 with q*, under the same four loops and records.

The reference cell (width 32, 0.7) is in both files, so each trend is read within one file; the two
copies start from the same π₀ and judge. Two more conditions make the outer iterations rounds with
a refreshed judge: the co-evolving judge reset to its pretrained weights after every outer
iteration (reset_every 1), under each rule. 18 conditions, 30 seeds.
"""

from studies.gao import ALIGNMENT_JUDGES, REFERENCE_WIDTH, RL_BASE, RULES, SEEDS, loops

RESET = {
    f"reset_{rule}_align0.7": {**rule_knobs, "judge_hidden": REFERENCE_WIDTH, "reset_every": 1}
    for rule, rule_knobs in RULES.items()
}

STUDY = {
    "name": "gao_alignment",
    "description": "Gao's laws over judge quality: {frozen, coevolving} x {reinforce, dpo} x judge_init_alignment "
    "0.3, 0.5, 0.7, 0.9 (width 32), and the co-evolving judge reset every outer iteration; record_every 4, "
    "5 outer iterations, seeds 0-29.",
    "seeds": SEEDS,
    "base": RL_BASE,
    "conditions": {**loops(ALIGNMENT_JUDGES), **RESET},
}
