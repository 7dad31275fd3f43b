"""The reference's named quirks against their corrections, 5 seeds."""

STUDY = {
    "name": "corrections",
    "description": "Reference quirks vs corrections: a real entropy regulariser, a q* with token interactions.",
    "seeds": [0, 1, 2, 3, 4],
    "base": {},
    "conditions": {
        "baseline": {},
        "entropy_reg_0.05": {"entropy_regulariser": 0.05},
        "entropy_reg_0.5": {"entropy_regulariser": 0.5},
        "transition_world": {"transition_alpha": 0.5},
        "transition_world_asym_10": {"transition_alpha": 0.5, "judge_update_every": 10},
    },
}
