"""studies/generalise.py: the blog's conditions on cells one axis at a time from the reference point,
one study for the reference world and one per world size, each named by its wrapper file."""

import importlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import engine
from analysis.generalise import (
    Cell,
    answers_markdown,
    axis_cells,
    axis_of,
    comparison,
    family_cells,
    generalise_outputs,
    on_reference_scale,
    position,
    quality_moments,
)
from analysis.report import write_all
from engine.host.results import load
from engine.knobs import DEFAULTS
from studies.generalise import CELLS, CONDITIONS, STUDIES, WORLDS


def test_every_cell_resolves_without_warnings_one_axis_from_the_reference_point():
    assert list(STUDIES) == ["reference", *WORLDS]
    for label, study in STUDIES.items():
        resolved = engine.resolve(study)
        assert resolved.warnings == (), (label, resolved.warnings)
        assert resolved.name == f"generalise_{label}" and len(resolved.seeds) == 30
        wrapper = "generalise" if label == "reference" else f"generalise_{label}"
        assert importlib.import_module(f"studies.{wrapper}").STUDY is study
    reference = engine.resolve(STUDIES["reference"])
    assert len(reference.conditions) == len(CELLS) * len(CONDITIONS) == 66
    for cell, cell_knobs in CELLS.items():
        for name, knobs in CONDITIONS.items():
            resolved = reference.conditions[f"{name}.{cell}"]
            moved = {knob for knob, value in resolved.items() if value != DEFAULTS[knob]}
            assert moved == set(knobs) | set(cell_knobs), (name, cell)
    for label, (vocab, seq_len) in WORLDS.items():
        resolved = engine.resolve(STUDIES[label])
        assert (resolved.sizes.vocab, resolved.sizes.seq_len) == (vocab, seq_len)
        assert resolved.conditions["baseline"] == {**DEFAULTS, "vocab": vocab, "seq_len": seq_len}


# ---------------------------------------------------------------- analysis.generalise on a small family

SHORT = {"steps_per_iter": 6, "n_iterations": 3, "batch_size": 32, "judge_init_alignment": 0.5}
SMALL_CONDITIONS = {"baseline": {}, "asymmetric_10": {"judge_update_every": 10}}
SMALL_CELLS = {"reference": {}, "nk_1": {"landscape": "nk", "nk_k": 1}}


def with_judge_cell(ds: xr.Dataset, width: int = 8, parameters: int = 681) -> xr.Dataset:
    """The reference world's file with a cell judge_<width> added: the reference cell's runs relabelled as
    if their judge had that width (a second judge shape would double the fixture's compile time)."""
    reference = [name for name in ds["condition"].values.tolist() if name.endswith(".reference")]
    cell = ds.sel(condition=reference)
    cell = cell.assign_coords(condition=[name.replace(".reference", f".judge_{width}") for name in reference])
    cell["judge_hidden"] = xr.full_like(cell["judge_hidden"], width)
    cell["judge_parameters"] = xr.full_like(cell["judge_parameters"], parameters)
    return xr.concat([ds, cell], dim="condition", data_vars="minimal", coords="different", compat="equals")


@pytest.fixture(scope="module")
def family():
    """A reference world of 4³ with two cells (a third, judge_8, relabelled from the reference cell) and a
    world-size cell of 3³, 3 seeds, 3 short iterations."""
    conditions = {
        f"{name}.{cell}": {**knobs, **cell_knobs}
        for cell, cell_knobs in SMALL_CELLS.items()
        for name, knobs in SMALL_CONDITIONS.items()
    }
    world = {"vocab": 4, "seq_len": 3}
    reference = {
        "name": "generalise_reference",
        "seeds": [0, 1, 2],
        "base": {**SHORT, **world},
        "conditions": conditions,
    }
    small_world = {
        **reference,
        "name": "generalise_n27",
        "base": {**SHORT, "vocab": 3, "seq_len": 3},
        "conditions": SMALL_CONDITIONS,
    }
    return [engine.run_study(small_world), with_judge_cell(engine.run_study(reference))]


def test_the_family_splits_into_cells_one_axis_from_the_reference(family):
    cells = family_cells(family)
    assert [(cell.name, cell.axis) for cell in cells] == [
        ("reference", None),
        ("n27", "world size"),
        ("nk_1", "ruggedness"),
        ("judge_8", "judge"),
    ]
    assert all(cell.ds["condition"].values.tolist() == ["baseline", "asymmetric_10"] for cell in cells)
    assert [cell.name for cell in axis_cells(cells, "judge")] == ["judge_8", "reference"]
    assert [position(cell, "world size") for cell in axis_cells(cells, "world size")] == [27, 64]
    two_axes = cells[3].ds.copy()
    two_axes["vocab"] = two_axes["vocab"] + 1
    with pytest.raises(ValueError, match="knobs of more than one axis"):
        axis_of(two_axes, cells[0].ds)
    with pytest.raises(ValueError, match="reference world's file"):
        family_cells(family[:1])


def test_qualities_move_onto_the_reference_scale_keeping_the_gap_share(family):
    cells = {cell.name: cell for cell in family_cells(family)}
    reference = quality_moments(cells["reference"].ds.sel(condition=["baseline"]))[0]
    same = on_reference_scale(cells["judge_8"].ds, reference)
    for name in ("policy_quality", "judge_perceived_quality"):
        np.testing.assert_array_equal(same[name].values, cells["judge_8"].ds[name].values)  # bit for bit
    for cell in ("n27", "nk_1"):
        moved = on_reference_scale(cells[cell].ds, reference)
        share = (moved["policy_quality"] - reference[0]) / (reference[1] - reference[0])
        np.testing.assert_allclose(share.values, cells[cell].ds["policy_quality_gap_share"].values, atol=1e-5)
        assert not np.allclose(moved["policy_quality"].values, cells[cell].ds["policy_quality"].values)


def test_the_answers_name_every_cell_and_read_planted_drifts(family):
    cells = family_cells(family)
    text = answers_markdown(cells)
    header = next(line for line in text.splitlines() if line.startswith("| claim |"))
    assert header.split(" | ")[1:] == ["reference", "n27", "nk_1", "judge_8 |"]
    assert "7. Meta helps" not in text  # n/a in every cell: no row
    assert "6. Slower judge updates help" in text and "Does a wider judge drift less?" in text
    # plant: the narrowest judge loses 0.3 of alignment more than any other by the end, in every seed
    narrow = next(cell for cell in cells if cell.name == "judge_8")
    drifted = narrow.ds.copy()
    drifted["judge_alignment"] = drifted["judge_alignment"].where(
        drifted["iteration"] < 3, drifted["judge_alignment"] - 0.3
    )
    planted = [Cell(c.name, drifted if c is narrow else c.ds, c.axis) for c in cells]
    for others in (cells, planted):
        widest_minus_narrowest = comparison(others, "reference", "judge_8", "drift")
        assert widest_minus_narrowest.n == 6
    shift = (
        comparison(planted, "reference", "judge_8", "drift").mean
        - comparison(cells, "reference", "judge_8", "drift").mean
    )
    assert shift == pytest.approx(0.3, abs=1e-6)
    assert "**Does a wider judge drift less?** yes" in answers_markdown(planted)


def test_the_family_outputs_are_written_together(family, tmp_path):
    written = generalise_outputs(family_cells(family), tmp_path)
    assert [Path(path).name for path in written] == ["generalise_answers.md", "generalise_cells.png"]
    assert Path(written[1]).stat().st_size > 10_000


def test_coevo_figures_on_the_reference_file_writes_the_family_outputs(family, tmp_path):
    for ds in family:
        ds.to_netcdf(tmp_path / f"{ds.attrs['study_name']}.nc", engine="netcdf4")
    reference = load(tmp_path / "generalise_reference.nc")
    written = {Path(path).name for path in write_all(reference, tmp_path, "generalise_reference")}
    assert {"generalise_answers.md", "generalise_cells.png"} <= written
    assert "| claim | reference | n27 | nk_1 | judge_8 |" in (tmp_path / "generalise_answers.md").read_text()
