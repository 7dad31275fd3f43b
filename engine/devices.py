"""Devices: on CPU every core is one XLA device, so the run axis can be sharded over cores."""

import os
import warnings

import jax
import numpy as np
from jax.experimental import multihost_utils


def use_all_cpu_cores(n_devices: int | None = None):
    """Expose `n_devices` (default: every core) CPU devices; must run before JAX starts its backends.

    COEVO_CPU_DEVICES overrides the count. If JAX is already initialised this warns and
    leaves the device count as it is.
    """
    n_devices = n_devices or int(os.environ.get("COEVO_CPU_DEVICES", 0)) or os.cpu_count() or 1
    try:
        jax.config.update("jax_num_cpu_devices", n_devices)
    except RuntimeError as error:
        warnings.warn(f"could not expose {n_devices} CPU devices: {error}", stacklevel=2)


def join_cluster(coordinator: str, num_processes: int, process_id: int):
    """Join a multi-host run: every process runs the same command with its own process_id.

    Devices of all hosts then form one mesh, and the run axis is sharded across them. CPU
    hosts exchange arrays through gloo collectives.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def fetch(tree):
    """Device arrays -> host numpy, gathering shards held by other hosts in a multi-host run."""
    if jax.process_count() > 1:
        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))
