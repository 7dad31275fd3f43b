"""Traced per-run updates, one module per family: the policy rules, the preference pairs,
the judge steps, the held-out meta-correction, the meta-judge, the planted bias, judge
pretraining and judge resets. Each reads only `engine.core` and the knobs."""
