"""Inside the first two outer iterations: baseline and asymmetric_10, a record every 10 steps.

Everything decisive in the baseline happens in the first two outer iterations (400 inner steps);
recording every 10 inner steps shows the order of events: does the judge's alignment fall before
the policy's entropy collapses, or after? 40 seeds per condition; the final distributions (π and
J over the 4096 sequences, at step 400) are saved too. Same knobs as the blog study's two
conditions except n_iterations (2) and the recording knobs.
"""

STUDY = {
    "name": "within",
    "description": "baseline and asymmetric_10, record_every 10 over 2 outer iterations, 40 seeds",
    "seeds": list(range(40)),
    "base": {"n_iterations": 2, "record_every": 10, "save_distributions": "final"},
    "conditions": {
        "baseline": {},
        "asymmetric_10": {"judge_update_every": 10},
    },
}
