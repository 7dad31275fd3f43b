"""`coevo merge`: a study run in seed ranges and merged is the study run at once, bit for bit, and the
analysis reads it; files that are not parts of one study and engine, or whose seeds overlap, are
refused with one line, and nothing is written."""

import pytest
import xarray as xr

import engine
from engine.cli.main import main
from engine.host.merge import parts_of
from engine.host.output import leftover_temporaries
from engine.host.results import study_of

CONDITIONS = {"baseline": {}, "slow": {"judge_update_every": 2}}
# Chunks of one seed (two runs): every run sits in a sub-batch of two, in a part as in the whole
# study, so its bits are the same in both (docs/ARCHITECTURE.md, "Invariants").
MAX_RUNS = 2


@pytest.fixture(scope="module")
def parts(small, tmp_path_factory):
    """Results files of one study: all its seeds, its low seeds, its high seeds (run in another order),
    one more seed; and a study that differs from it in one knob of one condition."""
    folder = tmp_path_factory.mktemp("parts")
    study = small(CONDITIONS, seeds=[0, 1, 2, 3], name="parts", n_iterations=2)
    other = small({**CONDITIONS, "slow": {"judge_update_every": 2, "lr_policy": 1e-3}}, name="parts", n_iterations=2)
    for name, runs in {
        "whole": engine.run_study(study, max_runs_per_chunk=MAX_RUNS),
        "low": engine.run_study(study, seeds=[0, 1], max_runs_per_chunk=MAX_RUNS),
        "high": engine.run_study(study, seeds=[3, 2], max_runs_per_chunk=MAX_RUNS),
        "more": engine.run_study(study, seeds=[4], max_runs_per_chunk=MAX_RUNS),
        "other": engine.run_study(other, seeds=[4], max_runs_per_chunk=MAX_RUNS),
    }.items():
        engine.save(runs, folder / f"{name}.nc")
    return folder


def test_merged_seed_ranges_are_the_whole_study_bit_for_bit(parts, capsys):
    out = parts / "merged.nc"
    assert main(["merge", str(parts / "high.nc"), str(parts / "low.nc"), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"parts: 2 conditions x 4 seeds, 2 parts\nwrote {out}\n"
    merged, whole = engine.load(out), engine.load(parts / "whole.nc")
    xr.testing.assert_identical(merged.drop_attrs(), whole.drop_attrs())  # seeds sorted, summaries per run
    assert study_of(merged) == study_of(whole)
    recorded = parts_of(merged)
    assert [(part["path"], part["seeds"]) for part in recorded] == [
        (str(parts / "low.nc"), "0-1"),
        (str(parts / "high.nc"), "3,2"),
    ]
    for part, name in zip(recorded, ("low", "high"), strict=True):
        made = engine.load(parts / f"{name}.nc").attrs
        assert all(part[key] == made[key] for key in ("git_commit", "devices", "cpu_model", "sub_batch", "run_seconds"))
    assert merged.attrs["run_seconds"] == sum(part["run_seconds"] for part in recorded)
    assert "devices" not in merged.attrs  # a machine's fact is its part's

    again = parts / "merged_again.nc"  # a merged file merges on: its parts are carried over
    assert main(["merge", str(parts / "more.nc"), str(out), "--out", str(again)]) == 0
    more, merged_again = engine.load(parts / "more.nc"), engine.load(again)
    assert [part["seeds"] for part in parts_of(merged_again)] == ["0-1", "3,2", "4"]
    assert study_of(merged_again)["seeds"] == [0, 1, 2, 3, 4]
    xr.testing.assert_identical(merged_again.sel(seed=[0, 1, 2, 3]).drop_attrs(), whole.drop_attrs())
    xr.testing.assert_identical(merged_again.sel(seed=[4]).drop_attrs(), more.drop_attrs())


def test_figures_claims_and_verify_read_a_merged_file(parts, capsys):
    out = parts / "analysed.nc"
    assert main(["merge", str(parts / "low.nc"), str(parts / "high.nc"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["verify", str(out), "--iterations", "1"]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith(f"{out}, part 1 of 2 ({parts / 'low.nc'}, seeds 0-1): rerunning 2 conditions x 1 seeds")
    assert said[2].startswith(f"{out}, part 2 of 2 ({parts / 'high.nc'}, seeds 3,2): rerunning 2 conditions x 1 seeds")
    assert said[1].startswith("bit-identical") and said[3].startswith("bit-identical")
    assert main(["claims", str(out)]) == 0
    assert "| claim |" in capsys.readouterr().out
    assert main(["figures", str(out)]) == 0
    assert (parts / "analysed_table.md").is_file()


def _altered(parts, name: str, **attrs):
    """A copy of a part with some attrs changed."""
    ds = engine.load(parts / "low.nc")
    ds.attrs.update(attrs)
    return engine.save(ds, parts / name, force=True)


REFUSALS = {
    "another study": (
        lambda parts: ["low.nc", "other.nc"],
        "other.nc: condition 'slow' has lr_policy = 0.001, in {parts}/low.nc 0.0003: not one study",
    ),
    "another study name": (
        lambda parts: ["high.nc", _altered(parts, "renamed.nc", study_name="renamed").name],
        "renamed.nc: study 'renamed', {parts}/high.nc study 'parts': not one study",
    ),
    "another engine": (
        lambda parts: ["high.nc", _altered(parts, "old_jax.nc", jax_version="0.4.0").name],
        "old_jax.nc: made by another engine than {parts}/high.nc: jax_version '0.4.0', in {parts}/high.nc",
    ),
    "overlapping seeds": (lambda parts: ["low.nc", "whole.nc"], "whole.nc: seeds 0, 1 are also in {parts}/low.nc"),
    "a file given twice": (lambda parts: ["low.nc", "high.nc", "low.nc"], "low.nc: given twice"),
    "one file": (lambda parts: ["low.nc"], "merge needs at least two results files"),
    "not netCDF": (
        lambda parts: ["low.nc", (parts / "notes.nc").write_text("not a results file") and "notes.nc"],
        "notes.nc: not a readable netCDF file",
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_say_one_line_and_write_nothing(parts, capsys, case):
    files, said = REFUSALS[case]
    out = parts / "refused.nc"
    assert main(["merge", *(str(parts / name) for name in files(parts)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coevo: error: ") and err.count("\n") == 1, err
    assert said.format(parts=parts) in err
    assert not out.exists() and not leftover_temporaries(out)


def test_a_results_file_that_records_no_study_is_refused(parts, capsys, results_file):
    foreign = results_file(parts / "foreign.nc")
    out = parts / "refused.nc"
    assert main(["merge", str(parts / "low.nc"), str(foreign), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"coevo: error: {foreign}: does not record study_name, study, engine_version, jax_version, jaxlib_version, "
        "git_commit, isa_pin, xla_flags: cannot tell which study or engine made it\n"
    )
    assert not out.exists()
