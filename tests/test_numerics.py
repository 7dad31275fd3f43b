"""`import engine` pins XLA's CPU numerics (engine/numerics.py) unless COEVO_NATIVE_CPU=1 opts out."""

import os
import subprocess
import sys

from engine.numerics import ENGINE_XLA_FLAGS, PORTABLE_XLA_FLAGS, isa_pin

SHOW = "import os, engine; print(os.environ.get('XLA_FLAGS', '')); print(engine.numerics.isa_pin())"


def flags_after_import(**env) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "COEVO_NATIVE_CPU")} | env
    out = subprocess.run([sys.executable, "-c", SHOW], env=environment, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_this_session_runs_pinned():
    assert all(flag in os.environ["XLA_FLAGS"].split() for flag in ENGINE_XLA_FLAGS + PORTABLE_XLA_FLAGS)
    assert isa_pin() == "AVX2"


def test_a_fresh_process_is_pinned_a_users_flag_is_kept_and_the_switch_opts_out():
    flags, pin = flags_after_import()
    assert flags.split() == list(ENGINE_XLA_FLAGS + PORTABLE_XLA_FLAGS) and pin == "AVX2"
    flags, pin = flags_after_import(XLA_FLAGS="--xla_cpu_max_isa=AVX512 --xla_dump_to=/tmp/x")
    assert flags.split()[:2] == ["--xla_cpu_max_isa=AVX512", "--xla_dump_to=/tmp/x"] and pin == "AVX512"
    assert set(PORTABLE_XLA_FLAGS[1:]) <= set(flags.split())  # the others are still added
    flags, pin = flags_after_import(COEVO_NATIVE_CPU="1")
    assert flags.split() == list(ENGINE_XLA_FLAGS) and pin == "None"  # the optimisation level stays


def test_the_pin_warns_when_a_backend_already_runs():
    code = "import jax; jax.numpy.zeros(1); import warnings, engine"
    environment = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "COEVO_NATIVE_CPU")}
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], env=environment, capture_output=True, text=True)
    assert out.returncode == 0 and "flags do not apply in this process" in out.stderr
