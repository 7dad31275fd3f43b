"""studies/generalise.py: the blog's conditions on cells one axis at a time from the reference point,
one study for the reference world and one per world size, each named by its wrapper file."""

import importlib

import engine
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
