"""The best-of-n side of `studies/gao.py` and `studies/gao_alignment.py`: π₀ and the pretrained judge
of every seed and judge of those studies, saved over all 4096 sequences for the exact best-of-n
curves (analysis/best_of_n.py).

One condition per judge (width, pretraining target), with those studies' seeds and pretraining
study knobs, so the judges are theirs: pretraining reads only the seed, the knobs declared
`pretrain=True` and those study knobs (tests/test_gao_study.py checks record 0 against `gao`'s).
One outer iteration of one inner step with the judge frozen: record 0 (π₀, the pretrained J) is
what the analysis reads.
"""

from studies.gao import ALIGNMENT_JUDGES, PRETRAINING_BASE, SEEDS, WIDTH_JUDGES

STUDY = {
    "name": "gao_best_of_n",
    "description": "π₀ and the pretrained judges of the gao studies (judge_hidden 8-128 at alignment 0.7, "
    "judge_init_alignment 0.3, 0.5, 0.9 at width 32), saved over all 4096 sequences; seeds 0-29.",
    "seeds": SEEDS,
    "base": {**PRETRAINING_BASE, "n_iterations": 1, "steps_per_iter": 1, "save_distributions": "all"},
    "conditions": {
        size: {**knobs, "freeze_judge": True}
        for size, knobs in {**WIDTH_JUDGES, **ALIGNMENT_JUDGES}.items()
        if size != "align0.7"  # width32: the same judge
    },
}
