"""Devices: on CPU every core is one XLA device, so the run axis can be sharded over cores."""

import os
import socket
import time
import warnings

import jax
import numpy as np
from jax.experimental import multihost_utils

from engine.host.inputs import InputError

JOIN_TIMEOUT = 300  # seconds a process waits for the coordinator (JAX's own default)


def cpu_device_count() -> int:
    """COEVO_CPU_DEVICES if set (a positive integer), else every core."""
    text = os.environ.get("COEVO_CPU_DEVICES")
    if text is None:
        return os.cpu_count() or 1
    if not text.strip().isdecimal() or int(text) < 1:
        raise InputError(f"COEVO_CPU_DEVICES={text!r}: expected a positive integer (CPU devices to expose)")
    return int(text)


def use_all_cpu_cores(n_devices: int | None = None):
    """Expose `n_devices` (default: `cpu_device_count()`) CPU devices; must run before JAX starts
    its backends. If JAX is already initialised this warns and leaves the device count as it is.
    """
    n_devices = n_devices or cpu_device_count()
    try:
        jax.config.update("jax_num_cpu_devices", n_devices)
    except RuntimeError as error:
        warnings.warn(f"could not expose {n_devices} CPU devices: {error}", stacklevel=2)


def _host_and_port(coordinator: str) -> tuple[str, int]:
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdecimal() or not 0 < int(port) < 65536:
        raise InputError(f"--coordinator {coordinator!r}: expected HOST:PORT with a port in 1-65535")
    return host.strip("[]"), int(port)


def _check_can_serve(host: str, port: int):
    """Process 0 runs the coordinator: its address must be one of this machine's, the port free."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise InputError(
            f"--coordinator {host}:{port}: process 0 cannot serve there ({error.strerror}); "
            "it must be an address of this machine with a free port"
        ) from None


def _wait_for_coordinator(host: str, port: int, timeout: float):
    """Other processes wait until process 0's coordinator accepts connections, at most `timeout` s.

    JAX itself would abort the process with a C++ stack trace when the coordinator is
    unreachable; this turns that into one clear error.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise InputError(
                    f"--coordinator {host}:{port}: not reachable within {timeout:g} s "
                    "(is process 0 running? see --join-timeout)"
                ) from None
            time.sleep(0.2)


def join_cluster(coordinator: str, num_processes: int, process_id: int, timeout: float = JOIN_TIMEOUT):
    """Join a multi-host run: every process runs the same command with its own process_id.

    Devices of all hosts then form one mesh, and the run axis is sharded across them. CPU
    hosts exchange arrays through gloo collectives.
    """
    if num_processes < 1:
        raise InputError(f"--num-processes {num_processes}: must be at least 1")
    if not 0 <= process_id < num_processes:
        raise InputError(f"--process-id {process_id}: must be in 0..{num_processes - 1} (--num-processes)")
    if timeout <= 0:
        raise InputError(f"--join-timeout {timeout:g}: must be positive (seconds)")
    host, port = _host_and_port(coordinator)
    if process_id == 0:
        _check_can_serve(host, port)
    else:
        _wait_for_coordinator(host, port, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=int(max(1, timeout)),
    )


def fetch(tree):
    """Device arrays -> host numpy, gathering shards held by other hosts in a multi-host run."""
    if jax.process_count() > 1:
        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))
