"""No file is clobbered: outputs are checked first, written atomically, locked while a run computes."""

import os
import socket
import stat
import subprocess

import numpy as np
import pytest
import xarray as xr

import engine
import engine.host.runner
from engine.cli.main import SUMMARY_ROWS, main, summary_lines
from engine.host.output import OutputError, check_output, leftover_temporaries, reserve, write_atomically

GOOD_STUDY = "STUDY = {'name': 'goodfile', 'seeds': [0], 'conditions': {'ctrl': {}}}\n"


def write_text(text: str):
    return lambda temporary: open(temporary, "w").write(text)


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_new_files_get_the_umask_not_0600(tmp_path, umask_027):
    path = write_atomically(tmp_path / "new.md", write_text("x"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_forced_overwrite_keeps_the_old_mode(tmp_path):
    path = tmp_path / "old.md"
    path.write_text("old")
    path.chmod(0o604)
    with pytest.raises(FileExistsError):
        write_atomically(path, write_text("new"))
    write_atomically(path, write_text("new"), force=True)
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o604


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "kept.md"
    path.write_text("old")

    def fails(temporary):
        open(temporary, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OutputError, match="could not be written: disk full"):
        write_atomically(path, fails, force=True)
    assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_a_device_is_never_replaced_even_with_force():
    for attempt in (
        lambda: check_output("/dev/null", force=True),
        lambda: write_atomically("/dev/null", print, force=True),
    ):
        with pytest.raises(OutputError, match="is a character device, not a regular file"):
            attempt()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_or_a_directory_is_never_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="is a FIFO"):
        check_output(fifo, force=True)
    (tmp_path / "folder.nc").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path / "folder.nc", force=True)


def test_symlinks_out_of_the_folder_are_refused_and_within_it_followed(tmp_path):
    outside, inside = tmp_path / "elsewhere", tmp_path / "out"
    outside.mkdir()
    inside.mkdir()
    precious = outside / "precious.txt"
    precious.write_text("keep me")
    (inside / "escape.md").symlink_to(precious)
    with pytest.raises(OutputError, match="outside the output folder"):
        write_atomically(inside / "escape.md", write_text("x"), force=True)
    assert precious.read_text() == "keep me"
    (inside / "real.md").write_text("old")
    (inside / "link.md").symlink_to("real.md")
    write_atomically(inside / "link.md", write_text("new"), force=True)
    assert (inside / "link.md").is_symlink() and (inside / "real.md").read_text() == "new"


def test_inputs_are_never_outputs(tmp_path):
    source = tmp_path / "study.py"
    source.write_text("")
    (tmp_path / "alias.py").symlink_to(source)
    for output in (source, tmp_path / "alias.py", tmp_path / "sub" / ".." / "study.py"):
        with pytest.raises(OutputError, match="is the study, which is read, never written"):
            check_output(output, force=True, inputs={source: "the study"})


def test_a_second_run_to_the_same_output_stops_at_its_start(tmp_path):
    out = tmp_path / "r.nc"
    with reserve(out) as lock:
        assert lock.read_text().endswith(f" {os.getpid()}")
        with pytest.raises(OutputError, match=f"process {os.getpid()} on .* is already running to write it"):
            with reserve(out):
                pass
    assert not lock.exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "r.nc"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "r.nc.lock").write_text(f"{socket.gethostname()} {dead.pid}")
    with reserve(out):
        assert (tmp_path / "r.nc.lock").read_text().endswith(f" {os.getpid()}")


@pytest.fixture
def trapped_run(monkeypatch, tmp_path, capsys):
    """`coevo run` in-process with run_study replaced by a trap that records what the CLI saw."""
    seen = []

    def trap(*args, **kwargs):
        seen.append(sorted(path.name for path in tmp_path.iterdir()))
        raise KeyboardInterrupt

    for target in (engine, engine.host.runner):
        monkeypatch.setattr(target, "run_study", trap)
    monkeypatch.setattr(engine.cli.main, "use_all_cpu_cores", lambda *args, **kwargs: None)
    (tmp_path / "good.py").write_text(GOOD_STUDY)

    def run(*args):
        code = main(["run", str(tmp_path / "good.py"), "--out", str(tmp_path / "r.nc"), "--quiet", *args])
        return code, capsys.readouterr().err, seen

    return run


def test_a_run_holds_a_lock_and_names_leftover_temporaries(trapped_run, tmp_path):
    leftover = tmp_path / ".r.nc.k2j4_x.tmp"
    leftover.write_text("half a netCDF file")
    assert leftover_temporaries(tmp_path / "r.nc") == [leftover]
    code, err, seen = trapped_run()
    assert code == 130
    assert seen == [[".r.nc.k2j4_x.tmp", "good.py", "r.nc.lock"]]  # locked while computing
    assert f"temporary files left by an earlier save that was killed: {leftover}" in err
    assert "interrupted (Ctrl-C): nothing written to" in err.splitlines()[-1]
    assert not (tmp_path / "r.nc.lock").exists()  # released on the way out


def test_a_run_to_a_locked_output_is_refused(trapped_run, tmp_path):
    with reserve(tmp_path / "r.nc"):
        code, err, seen = trapped_run()
    assert code == 2 and not seen
    assert err.startswith("coevo: error: ") and "is already running to write it" in err


def test_claims_out_is_written_with_force_only(tmp_path, capsys, results_file):
    results = results_file(tmp_path / "r.nc")
    out = tmp_path / "claims.md"
    out.write_text("earlier claims")
    assert main(["claims", str(results), "--out", str(out)]) == 2
    assert out.read_text() == "earlier claims"
    assert main(["claims", str(results), "--out", str(out), "--force"]) == 0
    assert out.read_text().startswith("| claim |")
    assert "not enough seeds (n = 3; this claim needs at least 5)" in out.read_text()


@pytest.mark.skipif(
    not os.path.isdir("/proc/sys") or os.access("/proc/sys", os.W_OK), reason="needs read-only /proc/sys"
)
def test_claims_into_a_read_only_folder(tmp_path, capsys, results_file):
    assert main(["claims", str(results_file(tmp_path / "r.nc")), "--out", "/proc/sys/claims.md"]) == 2
    err = capsys.readouterr().err
    assert err == "coevo: error: /proc/sys/claims.md: directory /proc/sys is not writable\n"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to any directory")
def test_figures_into_a_read_only_folder(tmp_path, capsys, results_file):
    results_file(tmp_path / "r.nc")
    tmp_path.chmod(0o500)
    try:
        assert main(["figures", str(tmp_path / "r.nc")]) == 2
    finally:
        tmp_path.chmod(0o700)
    assert "is not writable" in capsys.readouterr().err


def test_save_refuses_to_clobber_and_writes_with_the_umask(tmp_path, umask_027):
    ds = xr.Dataset({"x": ("a", np.arange(3))})
    path = engine.save(ds, tmp_path / "r.nc")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with pytest.raises(FileExistsError):
        engine.save(ds, path)


def test_the_summary_of_thousands_of_runs_stays_short():
    n_conditions, n_seeds = 1000, 3
    shape = (n_conditions, n_seeds)
    curves = np.ones((*shape, 2))
    ds = xr.Dataset(
        {
            "policy_quality": (("condition", "seed", "iteration"), curves),
            "judge_alignment": (("condition", "seed", "iteration"), curves),
            "diverged": (("condition", "seed"), np.ones(shape, bool)),
            "pretrain_reached": (("condition", "seed"), np.zeros(shape, bool)),
        },
        coords={"condition": [f"c{i}" for i in range(n_conditions)], "seed": np.arange(n_seeds)},
        attrs={"compile_seconds": 1.0, "run_seconds": 2.0},
    )
    lines = summary_lines(ds)
    assert len(lines) == SUMMARY_ROWS + 5
    assert f"… {n_conditions - SUMMARY_ROWS} more conditions" in lines[SUMMARY_ROWS + 1]
    assert all(len(line) < 400 for line in lines)
    assert "3000 c0/seed 0" in lines[-3] and "… 2990 more" in lines[-3]
