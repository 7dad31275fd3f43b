"""Phase diagram: judge update interval × judge learning rate, 10 seeds, one compiled call.

7 × 4 = 28 grid cells plus a frozen-judge control (the `healthy` threshold of analysis.phase),
290 runs. Judge pretraining is held at the reference rate (lr_judge_pretrain 3e-4) in every
cell, so a cell's lr_judge changes only the co-evolution updates and every cell of a seed
starts from the same pretrained judge: the paired differences along lr_judge pair the judge too.
The cell judge_update_every 1, lr_judge 3e-4 is the reference configuration (the blog baseline).
"""

from engine import grid

STUDY = {
    "name": "phase",
    "description": "judge_update_every x lr_judge (pretraining at 3e-4 throughout) + frozen control, 10 seeds",
    "seeds": list(range(10)),
    "base": {"lr_judge_pretrain": 3e-4},
    "conditions": grid(
        judge_update_every=[1, 2, 5, 10, 20, 50, 100],
        lr_judge=[1e-4, 3e-4, 1e-3, 3e-3],
        controls={"frozen": {"freeze_judge": True}},
    ),
}
