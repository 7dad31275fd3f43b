"""The full exact loop against its reduced two-timescale dynamics, across timescale ratios
(docs/mean_field.md §9, analysis/two_timescale.py).

Each timescale setting runs twice, paired by seed (the same π₀ and pretrained judge): the policy
trained (`trained`), and the policy replaced at every step by its exact best response to the judges
(`best_response`), the slow player's reduced ODE. The ratio ε = (lr_judge / judge_update_every) /
lr_policy runs over 0.01 … 1 along judge_update_every ∈ {1, 3, 10, 30, 100} at lr_judge 3e-4, to 3.3
with lr_judge 1e-3, and 0.33 once more with lr_judge 1e-4 at every step (the same ε as
judge_update_every 3); a frozen judge is ε = 0, the trained policy's floor (how close the GRU gets to
π* of a judge that never moves). Judge pretraining is held at 3e-4 (`lr_judge_pretrain`), so every
condition of a seed starts from the same judge.

kl_penalty β = 0.1 (kl_estimator exact): π* of the pretrained judges at seeds 0-2 has entropy 4.1-4.3
nats (of ln 4096 = 8.3) and its mode probability 0.09-0.14, neither uniform nor a point mass (β 0.05:
1.8-2.4 nats, mode 0.24-0.52; β 0.2: 5.8-6.2 nats, mode 0.02). steps_per_iter 300 is a multiple of
every cadence; the records every 50 inner steps (19 per run) time-average the policy's distance from π*
(`best_response_kl`) over the run, the initial transient included.

Cost: 16 conditions × 10 seeds × 900 inner steps. At 2 seeds × 600 steps the study ran 172 s (compile
66 s) on the lab's 2-core CPU while another study shared it (load ≈ 2.7, about 40% of both cores
ours), so 10 seeds × 900 steps come to about 21 minutes at that load; `coevo run` prints its
estimate. At 3 outer iterations a frozen judge's trained policy is still closing in on π* (its
KL 0.12 nats after 600 steps from 11.8 at π₀), which the frozen control measures.
"""

LR_JUDGE = 3e-4
EVERY = (1, 3, 10, 30, 100)
OTHER_RATES = (1e-4, 1e-3)  # at judge_update_every 1
RESPONSES = ("trained", "best_response")


def timescales() -> dict:
    """The timescale settings, by name: the cadences at LR_JUDGE, the other rates every step, a frozen judge."""
    settings = {f"every{k}": {"judge_update_every": k} for k in EVERY}
    settings |= {f"lr{rate:g}": {"lr_judge": rate} for rate in OTHER_RATES}
    return settings | {"frozen": {"freeze_judge": True}}


STUDY = {
    "name": "two_timescale",
    "description": "trained vs best-response policy, paired, over timescale ratios, exact, kl_penalty 0.1, 10 seeds",
    "seeds": list(range(10)),
    "base": {
        "gradient_estimator": "exact",
        "kl_penalty": 0.1,
        "lr_judge": LR_JUDGE,
        "lr_judge_pretrain": 3e-4,
        "steps_per_iter": 300,
        "n_iterations": 3,
        "record_every": 50,
    },
    "conditions": {
        f"{response}_{name}": {"policy_response": response, **knobs}
        for name, knobs in timescales().items()
        for response in RESPONSES
    },
}
