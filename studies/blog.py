"""The published study: 17 conditions x seeds 0-4 (REFERENCE.md, 'Conditions')."""

HOLDOUT = 0.05

CONDITIONS = {
    "baseline": {},
    "asymmetric_2": {"judge_update_every": 2},
    "asymmetric_5": {"judge_update_every": 5},
    "asymmetric_10": {"judge_update_every": 10},
    "ensemble_3": {"n_judges": 3},
    "ensemble_5": {"n_judges": 5},
    "reinit_3": {"reset_every": 3},
    "reinit_5": {"reset_every": 5},
    "anchor_0.05": {"anchor_fraction": 0.05},
    "anchor_0.1": {"anchor_fraction": 0.1},
    "meta_200": {"meta_holdout_fraction": HOLDOUT, "meta_update_every": 200},
    "meta_10": {"meta_holdout_fraction": HOLDOUT, "meta_update_every": 10},
    "meta_1": {"meta_holdout_fraction": HOLDOUT, "meta_update_every": 1},
    "asym_meta_1": {"meta_holdout_fraction": HOLDOUT, "meta_update_every": 1, "judge_update_every": 1},
    "asym_meta_10": {"meta_holdout_fraction": HOLDOUT, "meta_update_every": 10, "judge_update_every": 10},
    "asym_meta_200": {"meta_holdout_fraction": HOLDOUT, "meta_update_every": 200, "judge_update_every": 200},
    "frozen": {"freeze_judge": True},
}

STUDY = {
    "name": "blog",
    "description": "The published study: 17 conditions of REFERENCE.md, seeds 0-4.",
    "seeds": [0, 1, 2, 3, 4],
    "base": {},
    "conditions": CONDITIONS,
}
