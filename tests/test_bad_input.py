"""Bad input ends in one ``Error:`` line and changes nothing (issue 28, item 3).

A config.json that is not UTF-8, a sweep --out that cannot be a sweep folder, a figure
format that cannot be written, a run folder given where a sweep folder is meant, bad
--temperatures; and the ``.lock`` a refused command made is removed again, without
weakening the lock for processes that race for it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pyro_dvae.errors import LockError
from pyro_dvae.fileio import LOCK, FolderLock

from .helpers import assert_one_error_line, error_message, fit_args, invoke, run_ok

TINY = {"dataset": "digits", "hidden": 16, "latent_dim": 2, "epochs": 1}
SWEEP = ["sweep", "--family", "gaussian", "--dataset", "digits", "--hidden", "16"]
SWEEP += ["--epochs", "1", "--threads", "1", "--device", "cpu"]
NOT_UTF8 = b"\xff\xfe"  # a UTF-16 byte-order mark: what an editor's "Unicode" save writes


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYRO_DVAE_DATA", str(tmp_path / "no-data"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 1-epoch Logit-normal digits run, without its lock file."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run_ok(fit_args(out, **TINY))
    (out / LOCK).unlink()
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def files(folder: Path) -> dict[str, bytes]:
    """Every file and link below ``folder``, lock files and temporaries included."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<not a file>"
        for p in sorted(folder.rglob("*"))
    }


def refused(args: list[str], *unchanged: Path):
    """``args`` exits non-zero with one ``Error:`` line, and each folder of ``unchanged``
    holds the same files, byte for byte, with no lock file added."""
    before = [files(folder) for folder in unchanged]
    result = invoke(args)
    assert result.exit_code != 0, result.output
    assert_one_error_line(result)
    assert [files(folder) for folder in unchanged] == before
    return result


# --------------------------------------------------------------------------- lock files


@pytest.mark.parametrize("command", ["evaluate", "fit"])
def test_a_command_refused_after_taking_the_lock_leaves_no_lock_file(command, run):
    """The lock is taken before the checkpoint is read: a damaged one is refused after it."""
    (run / "checkpoint.pt").write_bytes(b"damaged")
    args = {
        "evaluate": ["evaluate", str(run), "--k", "2", "--no-progress"],
        "fit": ["fit", "--resume", str(run), "--epochs", "2", "--no-progress"],
    }[command]
    result = refused(args, run)
    assert "checkpoint" in error_message(result)
    assert not (run / LOCK).exists()


def test_a_failed_command_keeps_a_lock_file_it_did_not_make(tmp_path):
    (tmp_path / LOCK).write_bytes(b"")
    with pytest.raises(RuntimeError), FolderLock(tmp_path):
        raise RuntimeError("refused")
    assert (tmp_path / LOCK).read_bytes() == b""  # there before: kept, empty
    (tmp_path / LOCK).unlink()
    with FolderLock(tmp_path):
        pass
    assert (tmp_path / LOCK).read_bytes() == b""  # made by a command that succeeded: kept


def test_a_lock_file_removed_by_a_failed_holder_is_not_locked_by_a_waiter(tmp_path):
    """The race that removing a lock file opens: B opens ``.lock`` while A holds it, A fails
    and removes it, B then locks the removed file. B must notice and lock the new file, or
    a third process C would lock a new ``.lock`` beside B, and both would write."""
    a, b = FolderLock(tmp_path, "A").acquire(), FolderLock(tmp_path, "B")
    real_open, opened = b._open, []

    def open_then_a_fails():
        fd_created = real_open()
        if not opened:  # B has the old file open: now A fails, removing it
            opened.append(fd_created)
            a.release(discard=True)
        return fd_created

    b._open = open_then_a_fails
    b.acquire()
    try:
        assert opened, "B did not open the lock file while A held it"
        assert os.fstat(b._fd).st_ino == os.stat(tmp_path / LOCK).st_ino  # the file there
        with pytest.raises(LockError, match="C is in use by process"):
            FolderLock(tmp_path, "C").acquire()
    finally:
        b.release()


# --------------------------------------------------------------------------- config.json


def _spoil_config(run: Path) -> None:
    (run / "config.json").write_bytes(NOT_UTF8 + (run / "config.json").read_bytes())


@pytest.mark.parametrize(
    "command",
    [
        ["fit", "--resume", "{run}", "--epochs", "2", "--no-progress"],
        ["evaluate", "{run}", "--k", "2", "--no-progress"],
        ["show", "{run}", "--out", "{tmp}/pictures"],
        ["sample", "{run}", "--file", "{tmp}/grid.png"],
        ["compare-estimators", "{run}", "--repeats", "2", "--batch-size", "4"],
        ["curves", "{run}", "--file", "{tmp}/curves.png"],
    ],
    ids=lambda c: c[0],
)
def test_a_config_json_that_is_not_utf8_is_one_error_line(command, run, tmp_path):
    _spoil_config(run)
    args = [a.format(run=run, tmp=tmp_path) for a in command]
    result = refused(args, run)
    assert f"{run / 'config.json'}" in error_message(result)
    assert "not UTF-8 text (byte 0xff at position 0)" in error_message(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no pictures, no curves, no grid


@pytest.mark.slow
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "sweep"])
def test_a_sweep_reports_a_run_whose_config_is_not_utf8_and_runs_the_others(tmp_path, dry_run):
    sweep = tmp_path / "sw"
    damaged = sweep / "runs" / "gaussian-d2"
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_bytes(NOT_UTF8)
    args = [*SWEEP, "--latent-dim", "2", "--latent-dim", "3", "--out", str(sweep)]
    result = invoke([*args, "--dry-run"] if dry_run else args)
    lines = result.stderr.splitlines() if not dry_run else result.stdout.splitlines()
    reason = f"{damaged / 'config.json'} is not a valid config"
    if dry_run:
        assert result.exit_code == 0, result.output
        assert any(ln.startswith("conflict  gaussian-d2") and reason in ln for ln in lines)
        assert any(ln.startswith("new       gaussian-d3") for ln in lines)
    else:
        assert result.exit_code == 1, result.output  # a run failed: said, and the exit says so
        assert f"[skip] gaussian-d2: {reason}" in result.stderr
        assert "1 of 2 runs finished" in result.stderr
        summary = (sweep / "runs" / "gaussian-d3-digits" / "summary.json").read_text()
        assert '"status": "finished"' in summary
    assert "Traceback" not in result.output
    assert files(damaged) == {"config.json": NOT_UTF8}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("sweep") / "sw"
    run_ok([*SWEEP, "--latent-dim", "2", "--out", str(sweep)])
    return sweep


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["sweep.json", "runs/gaussian-d2-digits/summary.json", "runs/gaussian-d2-digits/metrics.jsonl"],
)
def test_the_other_json_files_of_a_sweep_may_be_damaged_too(name, finished_sweep, tmp_path):
    """Their readers fall back as they do for a file that is not JSON: the checkpoint is
    the run's truth, and sweep.json is written again."""
    sweep = tmp_path / "sw"
    shutil.copytree(finished_sweep, sweep)
    (sweep / name).write_bytes(NOT_UTF8 + (sweep / name).read_bytes())
    args = [*SWEEP, "--latent-dim", "2", "--out", str(sweep)]
    dry = run_ok([*args, "--dry-run"])
    assert "1 run in" in dry.output and "1 finished" in dry.output
    run_ok(["report", str(sweep), "--out", str(tmp_path / "report")])
    result = run_ok(args)
    assert "1 of 1 runs finished" in result.stderr
    assert (sweep / "sweep.json").read_bytes()[:1] == b"{"


# --------------------------------------------------------------------------- sweep --out


@pytest.mark.parametrize("dry_run", [False, True], ids=["sweep", "dry-run"])
@pytest.mark.parametrize("kind", ["empty-file", "link-loop", "link-to-nowhere", "run-folder"])
def test_a_sweep_out_that_cannot_be_a_sweep_folder_is_refused(kind, dry_run, run, tmp_path):
    out = tmp_path / "out"
    if kind == "empty-file":
        out.write_bytes(b"")
    elif kind == "link-loop":
        out.symlink_to(out.name)
    elif kind == "link-to-nowhere":
        out.symlink_to("missing")
    else:
        out = run
    before = files(tmp_path)
    args = [*SWEEP, "--latent-dim", "2", "--out", str(out)] + (["--dry-run"] if dry_run else [])
    result = refused(args)
    assert files(tmp_path) == before  # no sweep.json, runs/, logs/ or .lock in a run folder
    assert str(out) in error_message(result) and "--out" in error_message(result)
    if kind == "run-folder":
        assert "is a run folder" in error_message(result)


# --------------------------------------------------------------------------- curves --file


@pytest.mark.parametrize("name", ["c.txt", "c.JPG"])
def test_curves_refuses_a_figure_format_before_any_work(name, tmp_path):
    missing = tmp_path / "no-such-run"  # the format is refused before the runs are looked for
    result = refused(["curves", str(missing), "--file", str(tmp_path / name)], tmp_path)
    assert "--file" in error_message(result)
    assert ".png, .pdf or .svg" in error_message(result)


# --------------------------------------------------------------------------- one run folder


@pytest.mark.parametrize("command", ["report", "plot"])
def test_report_and_plot_refuse_a_run_folder(command, run):
    result = refused([command, str(run)], run)
    assert f"{run} is a run folder" in error_message(result)
    assert "takes a sweep folder" in error_message(result)


@pytest.mark.parametrize(
    "temperatures,why",
    [
        ("abc", "'abc' is not a comma-separated list of numbers"),
        ("0,1", "temperatures must be finite numbers > 0"),
        ("nan", "temperatures must be finite numbers > 0"),
        ("0.5", "--temperatures applies to categorical models; this is a logitnormal model"),
    ],
)
def test_compare_estimators_refuses_temperatures_it_would_ignore(temperatures, why, run):
    args = ["compare-estimators", str(run), "--temperatures", temperatures, "--repeats", "2"]
    result = refused(args, run)
    assert why in error_message(result)
    assert "--temperatures" in error_message(result)
