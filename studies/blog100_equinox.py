"""The published study at 100 seeds with Equinox's default initialisation instead of the
reference's (Flax) one: does anything we concluded depend on the initialisation?"""

from studies.blog import CONDITIONS

STUDY = {
    "name": "blog100_equinox",
    "description": "The 17 conditions of the published study, seeds 0-99, Equinox's default initialisation.",
    "seeds": list(range(100)),
    "base": {"init": "equinox"},
    "conditions": CONDITIONS,
}
