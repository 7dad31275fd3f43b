"""Portable float bits: a study gives the same bits on every x86-64 CPU with AVX2.

Left to itself XLA makes the lab's numbers depend on the machine: float32 products on GPUs
in TF32 (10-bit mantissa); on CPUs, code generated for the host's widest vector instructions
(AVX-512 where there is one), library kernels (YNNPACK) and approximations (rsqrt) chosen by
the CPU at run time, and matmuls split by the number of threads. Training is chaotic, so a
last-bit difference moves seeds between modes. The lab therefore asks for full float32
products everywhere and sets PORTABLE_XLA_FLAGS before JAX starts its backends (`pin`, called
on `import engine`); docs/numerics.md shows what each flag removes.

`COEVO_NATIVE_CPU=1` opts out of the CPU pin: XLA then generates code for this CPU's widest
instructions (faster on some CPUs), and the bits hold only on CPUs of the same kind. Every
results file records the pin and XLA's flags it ran under (`engine.host.provenance`).
"""

import os
import sys
import warnings

NATIVE_SWITCH = "COEVO_NATIVE_CPU"
PORTABLE_XLA_FLAGS = (
    "--xla_cpu_max_isa=AVX2",  # generated code: no wider vectors than AVX2, whatever the CPU has
    "--xla_cpu_experimental_ynn_fusion_type=",  # no YNNPACK kernels: they pick their code by the CPU at run time
    "--xla_cpu_enable_platform_dependent_math=false",  # no CPU-specific approximations (rsqrt)
    "--xla_cpu_multi_thread_eigen=false",  # Eigen's matmuls split by thread count; runs are sharded over cores anyway
)
# Always set, pinned or not: LLVM's optimisation level 1 instead of 2 compiles a study ≈ 35% faster
# and its code runs as fast (docs/performance.md); the level changes rounding, so it is fixed too.
# The collective timeouts: on CPU the devices of a sharded program are threads of one process, and
# each starts a program's shard as soon as its own inputs are ready, so one device can wait at a
# gather for the other's longer shard (judges pretrained to a higher target alignment, a busy core).
# XLA's defaults (a warning after 20 s, the process killed after 40 s) then end a healthy study.
ENGINE_XLA_FLAGS = (
    "--xla_backend_optimization_level=1",
    "--xla_cpu_collective_call_warn_stuck_timeout_seconds=600",
    "--xla_cpu_collective_call_terminate_timeout_seconds=86400",
)
ISA_FLAG = "--xla_cpu_max_isa="


def native_requested() -> bool:
    return os.environ.get(NATIVE_SWITCH, "").strip().lower() in ("1", "true", "yes")


def isa_pin() -> str | None:
    """The instruction set XLA's CPU code is pinned to in this process (None: the host's own).
    Read from XLA_FLAGS, where the last occurrence of a flag wins."""
    pins = [flag[len(ISA_FLAG) :] for flag in os.environ.get("XLA_FLAGS", "").split() if flag.startswith(ISA_FLAG)]
    return pins[-1] if pins else None


def full_precision_matmuls() -> None:
    """float32 products in float32 on every device (JAX's GPU default is TF32)."""
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_default_matmul_precision", "highest")
    else:
        os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"


def pin() -> None:
    """Full float32 matmuls, and ENGINE_XLA_FLAGS and (unless opted out) PORTABLE_XLA_FLAGS added
    to XLA_FLAGS.

    A flag the user already set in XLA_FLAGS is left as given. If JAX's backends already run,
    XLA has read its flags: they cannot apply to this process, and a warning says so.
    """
    full_precision_matmuls()
    wanted = ENGINE_XLA_FLAGS + (() if native_requested() else PORTABLE_XLA_FLAGS)
    given = os.environ.get("XLA_FLAGS", "").split()
    names = {flag.split("=", 1)[0] for flag in given}
    missing = [flag for flag in wanted if flag.split("=", 1)[0] not in names]
    if not missing:
        return
    if "jax" in sys.modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            warnings.warn(
                "JAX's backends started before `import engine`: the lab's XLA flags do not apply in this process, "
                f"so its bits may differ from a study's (import engine first, or set {NATIVE_SWITCH}=1)",
                stacklevel=3,
            )
            return
    os.environ["XLA_FLAGS"] = " ".join([*given, *missing])
