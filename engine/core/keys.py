"""The random keys of a run. Every condition of a seed gets the same ones (a paired design)."""

import jax


def run_keys(seed):
    """Named keys of one seed: the policy's and the judges' initialisation, pretraining data, the loop."""
    policy, judges, pretrain, loop = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"policy": policy, "judges": judges, "pretrain": pretrain, "loop": loop}
