"""Devices: on CPU every core is one XLA device, so the run axis can be sharded over cores."""

import os
import warnings

import jax


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
