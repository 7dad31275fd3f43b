"""`coevo stability FILE`: a run rerun to its final state, the exact loop's map linearised there.

The products J·v are forward-mode derivatives of the whole inner step: they must agree with finite
differences of the step itself (which no `stop_gradient` can fool), and ARPACK's leading
eigenvalue with the dense Jacobian's."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import engine
import engine.host.stability as stability
from engine.cli.main import main
from engine.host.stability import (
    judges_move,
    linearise,
    moving_parts,
    one_step_map,
    parse_runs,
    period,
    rerun_to_end,
)
from engine.loop.batch import make_batch_run

# A tiny exact run whose dense Jacobian is affordable: a 2-unit policy and a 2-unit MLP judge.
TINY = {"gradient_estimator": "exact", "policy_hidden": 2, "judge_hidden": 2, "judge_arch": "mlp"}


@pytest.fixture(scope="module")
def tiny_end(tmp_path_factory):
    """A tiny exact study's file, and its run baseline:1 rerun to its final state."""
    from tests.conftest import small_study

    ds = engine.run_study(small_study({"baseline": TINY, "slow": {**TINY, "judge_update_every": 2}}))
    path = tmp_path_factory.mktemp("stability") / "tiny.nc"
    engine.save(ds, path)
    ds = engine.load(path)
    (end,) = rerun_to_end(ds, parse_runs("baseline:1", ds), jax.devices())
    return end


def finite_differences(the_map, key: int, h: float = 1e-3):
    """relative_mismatch(direction, entries): ‖J·v − (F(x + hv) − F(x − hv))/2h‖ / ‖J·v‖ over `entries`, with the
    map's directions ("policy", "judges": v restricted to each model's parts, "all") and entries ("policy", its
    Adam first moments "policy_m", the judges' "judges_m", "all"); v = x·N(0, 1) drawn from `key`."""
    x0 = the_map.x0
    jvp = jax.jit(lambda v: jax.jvp(the_map.step, (x0,), (v,))[1])
    step = jax.jit(the_map.step)
    offsets = np.cumsum((0,) + the_map.part_sizes)
    policy = np.arange(x0.size) < offsets[3]
    policy_m, judges_m = (np.arange(offsets[i], offsets[i + 1]) for i in (1, 4))  # Adam's first moments
    v = x0 * jax.random.normal(jax.random.key(key), x0.shape)

    def relative_mismatch(direction, entries):
        product = np.asarray(jvp(direction), np.float64)[entries]
        plus, minus = (np.asarray(step(x0 + sign * h * direction), np.float64)[entries] for sign in (1, -1))
        return np.linalg.norm(product - (plus - minus) / (2 * h)) / np.linalg.norm(product)

    direction = {"policy": jnp.where(policy, v, 0.0), "judges": jnp.where(policy, 0.0, v), "all": v}
    entries = {"policy": policy, "policy_m": policy_m, "judges_m": judges_m, "all": slice(None)}
    return relative_mismatch, direction, entries


def test_the_rerun_reaches_the_files_final_state_bit_for_bit(tiny_end):
    assert tiny_end.largest_difference == 0.0
    assert tiny_end.state.policy.head.bias.shape == (1, 8)


def test_a_product_is_the_central_finite_difference_of_the_step(tiny_end):
    """J·v against (F(x + hv) − F(x − hv))/2h, v a relative perturbation (Adam's v entries are ~1e-8:
    an absolute one would make them negative), block by block. The blocks that couple policy and
    judges are what a derivative blind to the coupling (a `stop_gradient` on J in the policy's step,
    on π or the score gradient in the judges') would miss: each must be matched. Only the judges'
    response to themselves is not smooth: their labels sign(J(a) − J(b)) flip where a perturbation
    reorders near-tied scores, so there the finite difference matches only to its step's order."""
    the_map = one_step_map(tiny_end, 1, True, tiny_end.sizes.n_iterations)
    relative_mismatch, direction, entries = finite_differences(the_map, 0)
    assert relative_mismatch(direction["policy"], entries["policy"]) < 1e-3
    # read in Adam's m, at the gradients' scale: a parameter's response is below float32's resolution of it
    # the judges' gradient's response to the policy (q = π), then the policy's gradient's response to the judges (J)
    assert relative_mismatch(direction["policy"], entries["judges_m"]) < 1e-2
    assert relative_mismatch(direction["judges"], entries["policy_m"]) < 1e-2
    assert relative_mismatch(direction["all"], entries["all"]) < 5e-3


def test_arpacks_leading_eigenvalue_is_the_dense_jacobians(tiny_end):
    result = linearise(tiny_end, k=2)
    the_map = one_step_map(tiny_end, 1, True, tiny_end.sizes.n_iterations)
    assert result.deflated and result.unread == 3  # the judge's head bias, its m and its v
    kept = ~the_map.unread
    dense = np.asarray(jax.jit(jax.jacfwd(the_map.step))(the_map.x0), np.float64)
    assert np.abs(dense[np.ix_(kept, ~kept)]).max() < 1e-8  # nothing reads the left-out entries but rounding
    eigenvalues = list(np.linalg.eigvals(dense[np.ix_(kept, kept)]))
    eigenvalues.pop(int(np.argmin(np.abs(np.asarray(eigenvalues) - 1))))  # the deflated head bias direction
    leading = max(eigenvalues, key=abs)
    found = result.eigenpairs[0]
    off = min(abs(found.value - leading), abs(found.value - np.conj(leading)))  # a complex pair: either
    assert off < 1e-5  # both from float32 products
    assert result.matvecs > 0 and result.spectral_radius == abs(found.value)


# The tiny run in the 4³ world (64 sequences, fewer than one tile of the pair sums) on an NK landscape,
# with q*-labelled pairs and held-out meta steps: the map's steps read that world's q*.
SMALL_WORLD = {"vocab": 4, "seq_len": 3, "bias_token": 1}
NK_GROUNDED = {
    **TINY,
    "landscape": "nk",
    "nk_k": 1,
    "anchor_fraction": 0.25,
    "meta_update_every": 2,
    "meta_holdout_fraction": 0.25,
}


@pytest.fixture(scope="module")
def small_world_end(tmp_path_factory):
    from tests.conftest import small_study

    ds = engine.run_study(small_study({"nk": NK_GROUNDED}, seeds=(0,), n_iterations=2, **SMALL_WORLD))
    path = tmp_path_factory.mktemp("stability") / "small_world.nc"
    engine.save(ds, path)
    ds = engine.load(path)
    (end,) = rerun_to_end(ds, parse_runs("nk:0", ds), jax.devices())
    return end


def test_in_another_world_the_map_is_the_programs_own_outer_iteration(small_world_end):
    """From the rerun's final state, the map over one outer iteration's inner steps equals the program's
    `advance` of that iteration (its q*, its world's pair sums), and the products of the one-step map
    match finite differences in the blocks that couple policy and judges (the judges' response to
    themselves is not smooth: see the test above)."""
    end = small_world_end
    assert end.largest_difference == 0.0 and end.state.policy.head.bias.shape == (1, 4)
    outer = end.sizes.n_iterations
    the_map = one_step_map(end, end.sizes.steps_per_iter, True, outer)
    advanced = jax.jit(make_batch_run(end.variant, end.sizes).advance)(end.state, end.inputs, outer, 0)
    want = np.asarray(ravel_pytree(moving_parts(advanced, True))[0])
    got = np.asarray(jax.jit(the_map.step)(the_map.x0))
    assert not np.allclose(want, the_map.x0)  # the iteration moved the state
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

    relative_mismatch, direction, entries = finite_differences(one_step_map(end, 1, True, outer), 1)
    assert relative_mismatch(direction["policy"], entries["policy"]) < 1e-3
    assert relative_mismatch(direction["policy"], entries["judges_m"]) < 1e-2
    assert relative_mismatch(direction["judges"], entries["policy_m"]) < 1e-2


def test_the_map_is_one_judge_period_and_a_frozen_judge_is_no_part_of_it():
    knobs = {"freeze_judge": False, "judge_update_every": 10, "meta_update_every": 0}
    assert period(knobs) == 10 and judges_move(knobs)
    assert period({**knobs, "meta_update_every": 4}) == 20
    frozen = {**knobs, "freeze_judge": True}
    assert period(frozen) == 1 and not judges_move(frozen)
    assert judges_move({**frozen, "meta_update_every": 5})  # meta steps still move a frozen judge


@pytest.fixture
def no_compiling(monkeypatch):
    """Compiling anything fails the test: bad input must be refused before."""
    monkeypatch.setattr(engine.cli.main, "use_all_cpu_cores", lambda: None)

    def refuse(*args, **kwargs):
        raise AssertionError("compiled")

    monkeypatch.setattr(stability, "compile_program", refuse)


def _file_with_study(path, results_file, **knobs):
    import xarray as xr

    from tests.conftest import small_study

    results_file(path)
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    ds.attrs["study"] = json.dumps(small_study({"baseline": {"gradient_estimator": "exact", **knobs}}))
    path.unlink()
    ds.to_netcdf(path)
    return path


@pytest.mark.parametrize(
    ("runs", "knobs", "message"),
    [
        ("baseline:7", {}, "seed 7 is not in the file"),
        ("nope:0", {}, "no condition 'nope' in the file"),
        ("baseline-0", {}, "expected condition:seed"),
        ("baseline:0", {"judge_data": "accumulate"}, "stability needs judge_data 'fresh'"),
        ("baseline:0", {"update_rule": "dpo"}, "dpo"),
    ],
)
def test_bad_input_is_one_line_before_compiling(runs, knobs, message, tmp_path, results_file, no_compiling, capsys):
    path = _file_with_study(tmp_path / "file.nc", results_file, **knobs)
    assert main(["stability", str(path), "--runs", runs]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_file_without_its_study_cannot_be_rerun(tmp_path, results_file, no_compiling, capsys):
    path = results_file(tmp_path / "bare.nc")
    assert main(["stability", str(path), "--runs", "baseline:0"]) == 2
    err = capsys.readouterr().err
    assert "records no study" in err and err.count("\n") == 1
