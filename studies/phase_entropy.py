"""Second phase diagram: judge update interval × a real entropy regulariser, 10 seeds.

The question: is the judge's loss of alignment a consequence of the policy's entropy collapse
(the judge self-labels only the few sequences a collapsed policy still samples)? If it is, a
policy kept diverse by the entropy regulariser (the correction `entropy_regulariser`, a
score-function estimate of −∇H) should keep its judge aligned at any update interval, and
slower judge updates should matter less as the regulariser grows. 7 × 4 = 28 cells plus a
frozen-judge control, 290 runs, one Variant (one compiled program). The `corrections` study
found 0.05 and 0.5 still collapse by iteration 10, hence the larger values here.
"""

from engine import grid

STUDY = {
    "name": "phase_entropy",
    "description": "judge_update_every x entropy_regulariser + frozen control, 10 seeds",
    "seeds": list(range(10)),
    "base": {},
    "conditions": grid(
        judge_update_every=[1, 2, 5, 10, 20, 50, 100],
        entropy_regulariser=[0.0, 0.5, 2.0, 8.0],
        controls={"frozen": {"freeze_judge": True}},
    ),
}
