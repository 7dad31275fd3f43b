"""Adam with a learning rate per run, and updates kept only where they are due.

Every update in the lab is computed for every run of a batch (vmap) and then kept or
dropped per run: `tree_select` keeps it, `is_due` says when a periodic one is due.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

# The learning rate lives in the optimiser state, so it can differ per run.
ADAM = optax.inject_hyperparams(optax.adam, static_args=("b1", "b2", "eps", "eps_root"))


def adam_init(params, learning_rate):
    return ADAM(learning_rate).init(params)


def adam_update(grads, opt_state):
    """One Adam update; the learning rate is read from `opt_state` (set by `adam_init`)."""
    return ADAM(learning_rate=jnp.nan).update(grads, opt_state)


def params(module):
    """The trainable arrays of an Equinox module (what Adam sees)."""
    return eqx.filter(module, eqx.is_array)


def tree_select(mask, new, old):
    """`new` where mask (a scalar bool) is true, else `old`, leaf by leaf."""
    return jax.tree.map(lambda n, o: jnp.where(mask, n, o), new, old)


def is_due(every, index):
    """True at 0-based step or iteration `index` when (index + 1) % every == 0; never when every == 0."""
    return (every > 0) & ((index + 1) % jnp.maximum(every, 1) == 0)
