"""What made a results file: the machine (CPU model and instruction sets, devices), the
numerics pin and XLA's flags, the library versions and the engine's commit. `coevo verify`
compares these with the machine it runs on to name the likely cause of a difference."""

import os
import platform
import subprocess
from pathlib import Path

import jax
import jaxlib

ENGINE_VERSION = "0.1.0"
# The instruction-set extensions that decide which vector code a CPU can run.
ISA_FEATURES = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile")
# What decides a run's bits apart from its machine and layout: the parts of a merged file agree on these.
ENGINE_FACTS = ("engine_version", "jax_version", "jaxlib_version", "git_commit", "isa_pin", "xla_flags")


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_features() -> str:
    """The instruction-set extensions of ISA_FEATURES this CPU has, space-separated ("unknown" off Linux)."""
    flags = _cpuinfo_field("flags")
    if flags is None:
        return "unknown"
    present = set(flags.split())
    return " ".join(feature for feature in ISA_FEATURES if feature in present)


def git_commit() -> str:
    """The engine's git commit, with '-dirty' when its working tree has uncommitted changes."""

    def git(*args):
        folder = Path(__file__).resolve().parent
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=folder, timeout=10).stdout

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "HEAD").strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def commit_is_uncertain(commit: str) -> bool:
    """A recorded commit that does not pin the engine's code: uncommitted changes ('-dirty'), or no git."""
    return commit == "unknown" or commit.endswith("-dirty")


def devices_text(devices) -> str:
    return ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in devices})) + f" x{len(devices)}"


def provenance(devices) -> dict:
    """The attrs a results file carries about what made it (all strings)."""
    from engine.numerics import isa_pin

    return {
        "engine_version": ENGINE_VERSION,
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "git_commit": git_commit(),
        "devices": devices_text(devices),
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "isa_pin": isa_pin() or "none (native instruction set)",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
