"""docs/tutorial.ipynb runs top to bottom in a fresh Jupyter kernel, at a tiny study size."""

import json
import os
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"

# Replaces the notebook's SEEDS and BASE (its cell tagged "parameters"): tests/conftest.py's small study.
TINY = 'SEEDS = [0, 1]\nBASE = {"steps_per_iter": 6, "n_iterations": 3, "batch_size": 32, "judge_init_alignment": 0.5}'

# Run last, in the notebook's kernel: its results, as one JSON line.
REPORT = """import json, math
print(json.dumps({
    "seeds": len(SEEDS),
    "conditions": list(ds.condition.values),
    "dims": dict(ds.policy_quality.sizes),
    "effect": [effect.mean, effect.ci_low, effect.ci_high, effect.n],
    "effect_100": [effect_100.mean, effect_100.ci_low, effect_100.ci_high, effect_100.n],
}))"""


def test_tutorial_runs_and_reports_finite_paired_differences():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit it without outputs"
    parameters = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1, "one cell tagged 'parameters'"
    nb.cells.insert(parameters[0] + 1, nbformat.v4.new_code_cell(TINY))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))

    # The kernel inherits this process's environment (conftest's private COEVO_CACHE_DIR) and starts in
    # the repository root; inline figures whatever backend the caller's shell chose.
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute(env=env)  # raises CellExecutionError on the first cell that fails

    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(figures) == 2, "the over-iterations plot and the 100-seed comparison"

    report = json.loads(nb.cells[-1].outputs[-1].text)
    assert report["seeds"] == 2
    assert report["conditions"] == ["baseline", "asymmetric_10"]
    assert report["dims"] == {"condition": 2, "seed": 2, "iteration": 4}
    mean, low, high, n = report["effect"]
    assert n == 2 and low <= mean <= high, report["effect"]
    mean, low, high, n = report["effect_100"]
    assert n == 100 and 0 < low <= mean <= high, report["effect_100"]  # the published +0.161 [0.095, 0.227]
