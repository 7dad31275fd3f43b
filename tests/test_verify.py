"""`coevo verify FILE` reruns part of a results file and says whether it is bit-identical,
or where it differs and which recorded facts differ (the likely causes)."""

import engine
from engine.cli.main import main
from engine.host.provenance import provenance
from engine.host.verify import compare, file_layouts, likely_causes, rerun

CONDITIONS = {"baseline": {}, "slow": {"judge_update_every": 2}}


def test_a_fresh_file_verifies_bit_identical_and_a_changed_one_does_not(small, tmp_path, capsys):
    import jax

    ds = engine.run_study(small(CONDITIONS, seeds=[3, 4, 5]))
    (layout,) = file_layouts(ds)
    assert layout.seeds == [3, 4, 5] and layout.n_devices == len(jax.devices()) and layout.sub_batch >= 2
    again = rerun(ds, layout, jax.devices(), iterations=2)
    assert again.sizes["iteration"] == 3
    assert compare(ds, again).identical

    changed = ds.copy(deep=True)
    changed["judge_alignment"][1, 2, 2] = changed["judge_alignment"][1, 2, 2] + 1e-7
    verdict = compare(changed, again)
    assert not verdict.identical and verdict.differing_runs == 1
    assert verdict.first == "judge_alignment at condition slow, seed 5, iteration 2"

    path = tmp_path / "small.nc"
    engine.save(ds, path)
    assert main(["verify", str(path)]) == 0
    assert "bit-identical" in capsys.readouterr().out
    engine.save(changed, path, force=True)
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "differs: 1 runs" in out and "likely cause: none recorded differs" in out

    # a file from an engine that made fewer records: compared on those it has
    engine.save(ds.drop_vars(["q_star_max", "policy_quality_gap_share"]), path, force=True)
    assert main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "not in the file, so not compared: q_star_max, policy_quality_gap_share" in out
    assert "bit-identical" in out


def test_likely_causes_name_each_recorded_fact_that_differs():
    import jax

    here = provenance(jax.devices())
    assert likely_causes(here, here) == []
    other = {**here, "git_commit": "0" * 40, "isa_pin": "SSE4_2"}
    causes = likely_causes(other, here)
    assert causes[0].startswith("another engine commit") and any("instruction-set pin" in c for c in causes)
    old = {key: value for key, value in here.items() if key not in ("cpu_model", "cpu_features")}
    assert any("does not record cpu_model" in cause for cause in likely_causes(old, here))
