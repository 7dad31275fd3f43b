"""The self-rewarding family: REINFORCE against preference-pair (DPO) training.

Every condition keeps the reference loop's judge, co-evolving on its own labels as in the
baseline, except the one frozen-judge control. All dpo conditions use the defaults of the
dpo knobs (n_candidates 4, so 16 groups of 4 per batch of 64; dpo_beta 0.1; sigmoid loss;
score_grid 0: only exact ties are dropped):

- baseline: the reference loop, REINFORCE on the judge's score;
- dpo_iteration: Self-Rewarding (Yuan et al. 2024): best-vs-worst of 4, π_ref = the policy
  at the start of each outer iteration (M_t → M_{t+1});
- dpo_initial: online DPO (Guo et al. 2024): the same pairs, π_ref = π₀;
- dpo_anchored: Temporal Self-Rewarding's anchored rejection (Wang et al. 2025): the
  rejected is π₀'s worst of 4 when the judge scores it lower; π_ref as dpo_iteration;
- dpo_anchored_future: anchored rejection plus future-guided chosen (a one-step DPO
  look-ahead policy's best replaces the chosen when the judge prefers it);
- dpo_frozen: dpo_iteration with the judge never updated (the control: what the pairs do
  when the judge cannot drift).

Seeds 0–99: conditions are paired by seed (same pretrained judge, same initial policy, same
keys), so every comparison is a paired difference. Analyse with
`analysis.self_rewarding.answers(ds)`; figures with `coevo figures data/self_rewarding.nc`.
"""

DPO = {"update_rule": "dpo"}

CONDITIONS = {
    "baseline": {},
    "dpo_iteration": {**DPO, "dpo_reference": "iteration"},
    "dpo_initial": {**DPO, "dpo_reference": "initial"},
    "dpo_anchored": {**DPO, "anchored_rejection": True},
    "dpo_anchored_future": {**DPO, "anchored_rejection": True, "future_chosen": True},
    "dpo_frozen": {**DPO, "freeze_judge": True},
}

STUDY = {
    "name": "self_rewarding",
    "description": "REINFORCE vs DPO on self-labelled pairs: iteration/initial reference, "
    "anchored rejection, future chosen, frozen-judge control; seeds 0-99.",
    "seeds": list(range(100)),
    "base": {},
    "conditions": CONDITIONS,
}
