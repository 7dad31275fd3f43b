"""The published study's 17 conditions with 100 seeds, for confidence intervals."""

from studies.blog import CONDITIONS

STUDY = {
    "name": "blog100",
    "description": "The 17 conditions of the published study, seeds 0-99 (paired by seed).",
    "seeds": list(range(100)),
    "base": {},
    "conditions": CONDITIONS,
}
