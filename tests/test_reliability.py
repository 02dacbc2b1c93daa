"""A run folder is never corrupted: locks, stop signals, disk full, folders from others.

Numbered as the items of the reliability issue. The lock and signal tests start real
``pyro-dvae`` processes on the offline ``digits`` data and are bounded in time.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pyro_dvae as pd
from pyro_dvae.rundir import RunDir
from pyro_dvae.signals import Stopped, deferred_stop, signal_of, stop_on_signals

from .helpers import (
    assert_one_error_line,
    error_message,
    fit_args,
    invoke,
    load_checkpoint,
    read_json,
    read_metrics,
    run_ok,
)

TINY = ["--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--device", "cpu"]
LONG = 100_000  # epochs: a run that is stopped long before it ends
#: where a test is not about the compiled step: a LONG run would compile its step first
#: (``--compile auto``), seconds each test spends before its run trains
EAGER = ["--compile", "off"]
#: the sweeps' one-run grid (``--family gaussian --latent-dim 2`` on TINY), as a config
GAUSSIAN = dict(family="gaussian", latent_dim=2, dataset="digits", hidden=16)
#: a failed run's files (the .lock its fit made is removed when the fit fails)
RUN_FILES = {"config.json", "metrics.jsonl", "checkpoint.pt", "summary.json"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYRO_DVAE_DATA", str(tmp_path / "no-data"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 2-epoch Logit-normal digits run; tests copy it before touching it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run_ok(fit_args(out, family="logitnormal", hidden=16))
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def _default_stop_signals() -> None:
    """In the child: SIGINT and SIGHUP at their defaults, as in a terminal. A suite started in
    the background (``&``) passes SIGINT on ignored, one under ``nohup`` (some CI runners too)
    SIGHUP; the program rightly keeps an inherited ignore, which is not what is tested here."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def start(*args: str) -> subprocess.Popen:
    """``pyro-dvae ARGS`` as its own process group, stop signals at their defaults."""
    return subprocess.Popen(
        [sys.executable, "-m", "pyro_dvae", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_default_stop_signals,
    )


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop_all(*procs: subprocess.Popen, leftovers: Path, within: float = 60.0) -> list[str]:
    """A test's clean-up: SIGTERM to each process still running; one not gone within
    ``within`` seconds is killed with its group, and so is any process left that mentions
    ``leftovers`` (a sweep's runs). It raises nothing, so a test's own failure is what is
    reported; it returns the commands that had to be killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline, killed = time.monotonic() + within, []
    for proc in procs:
        try:
            proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(f"{proc.args[3]} (process {proc.pid})")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    for pid in processes_mentioning(str(leftovers)):
        killed.append(f"process {pid}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


def epochs_saved(path: Path) -> int:
    return RunDir(path).checkpoint_epoch() or 0


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (proc / "stat").read_text().split()[2]
            except OSError:
                continue
            if text in cmdline and state != "Z":
                pids.append(int(proc.name))
    return pids


def assert_consistent(path: Path, status: str | None = None) -> int:
    """Checkpoint, metrics and summary agree; no temporaries; return the epoch."""
    epoch = load_checkpoint(path)["epoch"]
    assert [r["epoch"] for r in read_metrics(path)] == list(range(1, epoch + 1))
    summary = read_json(path / "summary.json")
    assert summary["epochs_completed"] == epoch
    if status:
        assert summary["status"] == status
    assert not list(path.glob("*.tmp")), "temporaries left behind"
    return epoch


def assert_error_after_progress(result) -> None:
    """Training's progress lines, then one ``Error:`` line, last; no traceback."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: ") and "Traceback" not in result.stderr
    assert sum(ln.startswith("Error: ") for ln in lines) == 1


needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")


# --------------------------------------------------------------------------- 1. two writers


@pytest.mark.slow
@needs_proc
def test_a_run_and_a_sweep_folder_have_one_writer(tmp_path):
    out, sweep = tmp_path / "busy", tmp_path / "sw"
    args = ["sweep", "--family", "gaussian", "--latent-dim", "2", "--out", str(sweep)]
    args += ["--dataset", "digits", "--hidden", "16", "--threads", "1", *EAGER]
    # a fit and a sweep, started together (their seconds of start-up overlap)
    first = start("fit", *TINY, *EAGER, "--epochs", str(LONG), "--out", str(out), "--no-progress")
    sweeping = start(*args, "--epochs", str(LONG))
    try:
        wait_for(lambda: epochs_saved(out) >= 1, "the first run's first epoch")
        for cmd in (fit_args(out), ["fit", "--resume", str(out), "--no-progress"]):
            result = invoke(cmd)
            assert result.exit_code != 0
            assert_one_error_line(result)
            assert f"in use by process {first.pid}" in error_message(result)
        assert "pyro-dvae fit" in (out / ".lock").read_text()
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
        assert first.returncode == 143
        assert_consistent(out, "interrupted")  # one writer's files, whole

        wait_for(
            lambda: epochs_saved(sweep / "runs" / "gaussian-d2-digits") >= 1, "the sweep's run"
        )
        result = invoke([*args, "--epochs", str(LONG + 1)])
        assert result.exit_code != 0
        assert_one_error_line(result)
        assert f"sweep folder {sweep} is in use by process {sweeping.pid}" in error_message(result)
    finally:
        killed = stop_all(first, sweeping, leftovers=tmp_path)
    assert not killed, f"still running 60 s after SIGTERM: {killed}"
    assert_consistent(sweep / "runs" / "gaussian-d2-digits", "interrupted")


@pytest.mark.slow
def test_two_fits_racing_for_one_out_folder_leave_one_run(tmp_path):
    """Two ``fit --out`` started together: one trains, the other is refused; the folder is
    one run's (before the lock: config of one, metrics of both)."""
    out = tmp_path / "race"
    procs = [
        start("fit", *TINY, "--epochs", "3", "--out", str(out), "--no-progress", "--seed", str(s))
        for s in (1, 2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    loser = next(err for rc, err in results if rc != 0)
    assert "in use by process" in loser or "not empty" in loser
    seed = read_json(out / "config.json")["seed"]
    assert load_checkpoint(out)["config"]["seed"] == seed
    assert_consistent(out, "finished")


# --------------------------------------------------------------------------- 2. stop signals


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name
)
def test_a_stop_signal_stops_fit_at_a_resumable_checkpoint(tmp_path, sig):
    out = tmp_path / "run"
    # SIGTERM stops a run as a long one trains by default, compiled; the others step eagerly
    eager = EAGER if sig != signal.SIGTERM else []
    proc = start("fit", *TINY, *eager, "--epochs", str(LONG), "--out", str(out), "--no-progress")
    wait_for(lambda: epochs_saved(out) >= 2, "two epochs")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err.decode()
    assert f"--resume {out}" in err.decode() and "Traceback" not in err.decode()
    if sig != signal.SIGINT:
        assert f"Stopped by {signal.Signals(sig).name} after epoch" in err.decode()
    done = assert_consistent(out, "interrupted")
    assert {p.name for p in out.iterdir()} == RUN_FILES
    if sig == signal.SIGTERM:
        # resumed once: every signal leaves the same files (asserted above), which is all
        # that `fit --resume` reads; only the summary's `stopped_by` names the signal
        run_ok(["fit", "--resume", str(out), "--epochs", str(done + 1), "--no-progress"])
        assert assert_consistent(out, "finished") == done + 1


@pytest.mark.slow
@needs_proc
# SIGHUP stops a sweep as SIGTERM does (the same handler; LocalLauncher.stop sends each run
# SIGTERM): tests/test_sweep.py stops an in-process sweep by SIGHUP, and the fit test above
# stops a process by SIGHUP
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_stopping_a_sweep_stops_every_run_and_leaves_no_process(tmp_path, sig):
    if sig == signal.SIGKILL and not sys.platform.startswith("linux"):
        pytest.skip("runs outlive a SIGKILLed sweep where there is no PR_SET_PDEATHSIG")
    sweep = tmp_path / "sw"
    args = ["sweep", "--family", "gaussian", "--family", "logitnormal", "--latent-dim", "2"]
    args += ["--out", str(sweep), "--dataset", "digits", "--hidden", "16", "--jobs", "2", *EAGER]
    proc = start(*args, "--threads", "1", "--epochs", str(LONG))
    runs = [sweep / "runs" / n for n in ("gaussian-d2-digits", "logitnormal-d2-a1-digits")]
    wait_for(lambda: all(epochs_saved(r) >= 1 for r in runs), "both runs going")
    proc.send_signal(sig)  # to the sweep alone, as a scheduler or `kill` would
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (128 + sig, -sig), err.decode()
    wait_for(lambda: not processes_mentioning(str(sweep)), "the runs to stop", timeout=60)
    done = {r.name: assert_consistent(r, "interrupted") for r in runs}
    # running the sweep again resumes each run where it stopped, no row twice
    result = run_ok([*args, "--threads", "1", "--epochs", str(max(done.values()) + 1)])
    for r in runs:
        assert f"{r.name}: resume from epoch {done[r.name]}" in result.stderr
        assert_consistent(r, "finished")


def test_signals_at_the_epoch_end_writes_are_held_until_they_are_done():
    done = []
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as stopped:
        with deferred_stop():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("checkpoint")
            done.append("metrics")
    assert done == ["checkpoint", "metrics"] and stopped.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_signal_survives_a_library_that_raises_its_own_keyboardinterrupt():
    """Ray's ``ray.wait`` turns the exception our handler raises into a bare
    ``KeyboardInterrupt`` (its C++ wait checks signals and reports 'interrupted'): the stop
    is still told as SIGTERM (exit 143), not as a Ctrl-C; a bare one outside is SIGINT."""

    def blocking_call_of_a_library():
        interrupted = False
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here and raises Stopped
        except KeyboardInterrupt:
            interrupted = True  # a status code, as Ray's C++ wait returns
        if interrupted:
            raise KeyboardInterrupt  # what Ray raises then: no signal, no cause, no context

    with pytest.raises(KeyboardInterrupt) as caught:
        with stop_on_signals():
            blocking_call_of_a_library()
    assert type(caught.value) is KeyboardInterrupt
    assert signal_of(caught.value) == signal.SIGTERM
    with stop_on_signals():  # a new block forgets the last one's signal
        assert signal_of(KeyboardInterrupt()) == signal.SIGINT


class _Noted:
    """An object that runs ``on_free`` when it is freed (a ``__del__`` or a weakref callback,
    where Python prints and drops an exception instead of raising it)."""

    def __init__(self, on_free=None):
        self.on_free = on_free

    def __del__(self):
        if self.on_free:
            self.on_free()


@pytest.mark.parametrize("where", ["weakref callback", "__del__"])
def test_a_stop_signal_handled_where_python_drops_exceptions_still_stops(where, capsys):
    """Python runs a signal's handler between any two bytecodes, also those of a weakref
    callback or a ``__del__`` (torch's compile frees tensors with such callbacks all the
    time), where the exception it raises is printed and dropped: the stop comes again."""
    import weakref

    signalled = lambda *_: signal.raise_signal(signal.SIGTERM)  # noqa: E731 (the handler runs now)
    with pytest.raises(Stopped) as stopped:
        with stop_on_signals():
            if where == "__del__":
                _Noted(signalled)  # freed at once
            else:
                freed = _Noted()
                ref = weakref.ref(freed, signalled)
                del freed
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the work that the stop must still cut short
                pass
    assert stopped.value.exit_code == 143 and time.monotonic() < deadline
    assert where == "__del__" or ref() is None
    assert "Exception ignored" not in capsys.readouterr().err


# --------------------------------------------------------------------------- 3. disk full


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written."""

    def __init__(self, fh, room: int):
        self._fh, self._room = fh, room

    def write(self, data) -> int:
        self._room -= len(data)
        if self._room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def _fail_write(monkeypatch, name: str, on_call: int) -> None:
    """The ``on_call``-th write of file ``name`` runs out of disk halfway through, as a full
    disk does (``torch.save`` then fails inside its zip writer)."""
    import pyro_dvae.fileio as fileio

    real_fdopen, calls = os.fdopen, {"n": 0}

    def fdopen(fd, *args, **kwargs):
        fh = real_fdopen(fd, *args, **kwargs)
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}."):
            calls["n"] += 1
            if calls["n"] == on_call:
                return _FullDisk(fh, room=2000)
        return fh

    monkeypatch.setattr(fileio.os, "fdopen", fdopen)


@needs_proc
def test_disk_full_at_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _fail_write(monkeypatch, "checkpoint.pt", on_call=3)  # the start's, epoch 1's, epoch 2's
    result = invoke(fit_args(out, epochs=4))
    assert result.exit_code == 1
    assert_error_after_progress(result)
    assert "No space left on device" in error_message(result)
    assert assert_consistent(out, "failed") == 1
    assert {p.name for p in out.iterdir()} == RUN_FILES  # the half-written temporary is gone
    monkeypatch.undo()
    run_ok(["fit", "--resume", str(out), "--no-progress"])
    assert assert_consistent(out, "finished") == 4


def test_disk_full_after_the_checkpoint_is_repaired_from_it(tmp_path, monkeypatch):
    """The checkpoint landed, the metrics row did not: readers and resume go by the checkpoint."""
    import pyro_dvae.rundir as rundir
    from pyro_dvae.errors import StorageError

    out = tmp_path / "run"
    real, calls = rundir.append_text, {"n": 0}

    def append_text(path, text):
        calls["n"] += 1
        if calls["n"] == 2:
            raise StorageError(f"cannot write {path}: No space left on device")
        return real(path, text)

    monkeypatch.setattr(rundir, "append_text", append_text)
    result = invoke(fit_args(out, epochs=3))
    assert result.exit_code == 1
    assert_error_after_progress(result)
    assert load_checkpoint(out)["epoch"] == 2
    assert [r["epoch"] for r in RunDir(out).read_metrics(trusted=False)] == [1]
    assert RunDir(out).read_summary()["epochs_completed"] == 2
    monkeypatch.undo()
    run_ok(["fit", "--resume", str(out), "--no-progress"])
    assert assert_consistent(out, "finished") == 3


def _disk_full_from(monkeypatch, name: str, on_call: int) -> None:
    """From the ``on_call``-th write of file ``name`` on, the disk is full, as a tmpfs that
    another writer filled: every new byte fails with ENOSPC (the temporaries of whole-file
    writes, appends), while bytes a file already has can still be written over."""
    import pyro_dvae.fileio as fileio
    import pyro_dvae.rundir as rundir
    from pyro_dvae.errors import StorageError

    real_fdopen, real_append, state = os.fdopen, rundir.append_text, {"n": 0, "full": False}

    def fdopen(fd, *args, **kwargs):
        fh = real_fdopen(fd, *args, **kwargs)
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}."):
            state["n"] += 1
            state["full"] |= state["n"] == on_call
        return _FullDisk(fh, room=0) if state["full"] else fh

    def append_text(path, text):
        if state["full"]:
            raise StorageError(f"cannot write {path}: {os.strerror(errno.ENOSPC)}")
        return real_append(path, text)

    monkeypatch.setattr(fileio.os, "fdopen", fdopen)
    monkeypatch.setattr(rundir, "append_text", append_text)


@needs_proc
def test_a_disk_that_fills_during_training_leaves_a_failed_summary(tmp_path, monkeypatch):
    """The 'failed' summary needs no new space: it is written over the last one's bytes
    (before, it could not be written at all and the summary said 'running')."""
    out = tmp_path / "run"
    _disk_full_from(monkeypatch, "checkpoint.pt", on_call=3)  # the start's, epoch 1's, epoch 2's
    result = invoke(fit_args(out, epochs=4))
    assert result.exit_code == 1
    assert_error_after_progress(result)
    assert "No space left on device" in error_message(result)
    assert assert_consistent(out, "failed") == 1  # the file itself says so, not only readers
    assert RunDir(out).read_summary()["status"] == "failed"
    monkeypatch.undo()  # space again: the run resumes from its last checkpoint
    run_ok(["fit", "--resume", str(out), "--no-progress"])
    assert assert_consistent(out, "finished") == 4


def test_overwriting_in_place_keeps_the_length_and_refuses_what_does_not_fit(tmp_path):
    from pyro_dvae.errors import StorageError
    from pyro_dvae.fileio import overwrite_in_place

    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"status": "running", "epochs": 12}, indent=2) + "\n")
    size = path.stat().st_size
    overwrite_in_place(path, json.dumps({"status": "interrupted", "epochs": 12}) + "\n")
    assert path.stat().st_size == size and path.read_text().endswith(" \n")
    assert json.loads(path.read_text()) == {"status": "interrupted", "epochs": 12}
    with pytest.raises(StorageError, match="in place"):
        overwrite_in_place(path, json.dumps({"status": "x" * size}))
    assert json.loads(path.read_text()) == {"status": "interrupted", "epochs": 12}  # untouched
    with pytest.raises(StorageError, match="cannot write"):
        overwrite_in_place(tmp_path / "missing.json", "{}")


# --------------------------------------------------------------------------- 4. code in a run


GUIDE_FILE = """
from pathlib import Path

Path(__file__).with_name("imported").write_text("the guide file ran")
from pyro_dvae.guides import load_factory

make_guide = load_factory("{flow}:make_guide")
"""


def test_a_run_folder_never_imports_its_guide_unless_the_command_names_it(tmp_path):
    flow = Path(__file__).resolve().parents[1] / "scripts" / "guides" / "flow.py"
    guide = tmp_path / "theirs" / "guide.py"
    guide.parent.mkdir()
    guide.write_text(GUIDE_FILE.format(flow=flow))
    spec, marker = f"{guide}:make_guide", guide.with_name("imported")
    out = tmp_path / "sweep" / "run"  # in a folder of runs, for plot
    run_ok(fit_args(out, guide=spec, epochs=1, hidden=16))
    assert read_json(out / "summary.json")["guide"] == spec
    marker.unlink()
    for args in (
        ["evaluate", str(out), "--k", "2", "--no-progress"],
        ["fit", "--resume", str(out), "--epochs", "2", "--no-progress"],
        ["compare-estimators", str(out), "--repeats", "2", "--batch-size", "4"],
        ["plot", str(out.parent), "--figure", "fig3", "--out", str(tmp_path / "fig")],
    ):
        result = invoke(args)
        assert result.exit_code != 0, args
        assert_one_error_line(result)
        assert f"--guide {spec}" in error_message(result), args
        assert not marker.exists(), f"{args[0]} imported the run's guide"
    run_ok(["evaluate", str(out), "--k", "2", "--no-progress", "--guide", spec])
    assert marker.exists()


# --------------------------------------------------------------------------- 5. other checkpoint


def test_evaluate_refuses_a_checkpoint_of_another_configuration(run, tmp_path):
    other = tmp_path / "gaussian"
    run_ok(fit_args(other, family="gaussian", hidden=16, epochs=1))
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    result = invoke(["evaluate", str(run), "--k", "2", "--no-progress"])
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert "another configuration" in error_message(result) and "family" in error_message(result)
    assert not (run / "evaluation.json").exists()


# --------------------------------------------------------------------------- 6. killed at start


def test_a_run_killed_before_its_first_checkpoint_resumes_from_epoch_zero(run, tmp_path):
    for name in ("checkpoint.pt", "metrics.jsonl", "summary.json"):
        (run / name).unlink()
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    fresh = tmp_path / "fresh"
    run_ok(fit_args(fresh, family="logitnormal", hidden=16))
    result = run_ok(["fit", "--resume", str(run), "--no-progress"])
    assert "starting it from epoch 0" in result.stderr
    assert assert_consistent(run, "finished") == 2
    losses = [r["train_loss"] for r in read_metrics(run)]
    assert losses == pytest.approx([r["train_loss"] for r in read_metrics(fresh)], rel=1e-6)
    # `--out` still refuses it (it is somebody's run), and says how to continue it
    result = invoke(fit_args(run))
    assert result.exit_code != 0 and f"--resume {run}" in error_message(result)


@pytest.mark.slow
def test_a_sweep_resumes_a_run_killed_before_its_first_checkpoint(tmp_path):
    sweep = tmp_path / "sw"
    args = ["sweep", "--family", "gaussian", "--latent-dim", "2", "--out", str(sweep)]
    args += ["--dataset", "digits", "--hidden", "16", "--threads", "1", "--epochs", "2"]
    run = sweep / "runs" / "gaussian-d2-digits"
    # the sweep's run, trained here (no process to start): its config.json is all it keeps
    pd.fit(pd.FitConfig(**GAUSSIAN, epochs=2), out=run, progress=False, log=lambda m: None)
    for name in ("checkpoint.pt", "metrics.jsonl", "summary.json"):
        (run / name).unlink()
    result = run_ok(args)
    assert "gaussian-d2-digits: resume from epoch 0" in result.stderr
    assert assert_consistent(run, "finished") == 2


# --------------------------------------------------------------------------- 7. leftovers


def test_files_left_ahead_or_behind_the_checkpoint_are_read_through_it(run, tmp_path):
    rows = read_metrics(run)
    ahead = {**rows[-1], "epoch": 3, "train_loss": 1.0}
    with open(run / "metrics.jsonl", "a") as fh:  # a kill after the metrics, before the checkpoint
        fh.write(json.dumps(ahead) + "\n")
    summary = read_json(run / "summary.json")
    stale = {**summary, "epochs_completed": 1, "status": "running"}
    (run / "summary.json").write_text(json.dumps(stale))
    (run / ".checkpoint.pt.x1y2z3.tmp").write_bytes(b"\0" * 1000)

    reader = RunDir(run)
    assert [r["epoch"] for r in reader.read_metrics()] == [1, 2]
    assert reader.epochs_completed() == 2
    assert reader.read_summary()["epochs_completed"] == 2
    assert reader.read_summary()["final"]["train_loss"] == rows[-1]["train_loss"]
    report = run_ok(["report", str(run.parent), "--out", str(tmp_path / "report")])
    assert "1.00" not in (tmp_path / "report" / "report.md").read_text(), report.output

    run_ok(["evaluate", str(run), "--k", "2", "--no-progress"])
    assert read_json(run / "evaluation.json")["epoch"] == 2
    assert not list(run.glob("*.tmp")), "the writer's lock clears stale temporaries"
    run_ok(["fit", "--resume", str(run), "--epochs", "3", "--no-progress"])
    assert assert_consistent(run, "finished") == 3
    assert read_metrics(run)[-1]["train_loss"] != 1.0


def test_a_running_summary_nobody_holds_reads_as_interrupted(run, tmp_path):
    """A run killed outright (SIGKILL, a lost node) leaves 'running' at its checkpoint's
    epoch; the run directory's reader, which every status reader goes through (results,
    report, show, sweep), calls it interrupted unless a process holds the run."""
    from pyro_dvae.fileio import FolderLock
    from pyro_dvae.results import collect

    summary = read_json(run / "summary.json")
    (run / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    assert RunDir(run).read_summary()["status"] == "interrupted"
    assert [r.status for r in collect(tmp_path)] == ["interrupted"]
    run_ok(["report", str(tmp_path), "--out", str(tmp_path / "report")])
    assert "| interrupted |" in (tmp_path / "report" / "report.md").read_text()
    with FolderLock(run, "a fit"):  # somebody is training it: it is running
        assert RunDir(run).read_summary()["status"] == "running"
        assert [r.status for r in collect(tmp_path)] == ["running"]
    assert read_json(run / "summary.json")["status"] == "running"  # readers change nothing


def test_a_summary_a_killed_run_left_running_is_written_as_readers_read_it(run):
    """What a stopped sweep does for each of its runs (one killed past the grace, or by Ray
    with its worker, never wrote its last summary): the file itself then says what every
    reader reads, unless a process holds the run (then its own summary is the news)."""
    from pyro_dvae.fileio import FolderLock

    summary = read_json(run / "summary.json")
    stale = {**summary, "epochs_completed": 1, "status": "running"}  # killed in epoch 2
    (run / "summary.json").write_text(json.dumps(stale))
    with FolderLock(run, "a fit"):
        assert not RunDir(run).settle_summary()
    assert read_json(run / "summary.json") == stale
    read = RunDir(run).read_summary()
    assert RunDir(run).settle_summary()
    settled = read_json(run / "summary.json")
    assert settled == read and settled["status"] == "interrupted"
    assert settled["epochs_completed"] == RunDir(run).checkpoint_epoch() == 2
    assert settled["final"] == summary["final"]  # the numbers of the checkpoint's epoch
    assert not RunDir(run).settle_summary()  # final now
    assert RunDir(run).holder() is None


# --------------------------------------------------------------------------- 8. one error line


def _guide_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "g.py"
    path.write_text(body)
    return f"{path}:make_guide"


def _edit_config(run: Path, **changes) -> None:
    config = {**read_json(run / "config.json"), **changes}
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "case",
    [
        "seed-negative",
        "seed-huge",
        "guide-wrong-signature",
        "guide-factory-raises",
        "guide-module-exits",
        "config-family-list-resume",
        "config-family-list-evaluate",
        "config-epochs-true",
        "neighbors-too-many",
        "checkpoint-wrong-shape",
    ],
)
def test_bad_input_is_one_error_line(case, run, tmp_path):
    if case == "seed-negative":
        args = fit_args(tmp_path / "new", seed=-1)
    elif case == "seed-huge":
        args = fit_args(tmp_path / "new", seed=2**64)
    elif case == "guide-wrong-signature":
        args = fit_args(tmp_path / "new", guide="os:getcwd")
    elif case == "guide-factory-raises":
        spec = _guide_file(tmp_path, "def make_guide(family, d, h):\n    raise ValueError('no')\n")
        args = fit_args(tmp_path / "new", guide=spec)
    elif case == "guide-module-exits":
        spec = _guide_file(tmp_path, "import sys\nsys.exit(3)\n")
        args = fit_args(tmp_path / "new", guide=spec)
    elif case.startswith("config-family-list"):
        _edit_config(run, family=["x"])
        resume = ["fit", "--resume", str(run), "--no-progress"]
        args = resume if case.endswith("resume") else ["evaluate", str(run), "--k", "2"]
    elif case == "config-epochs-true":
        _edit_config(run, epochs=True)
        args = ["fit", "--resume", str(run), "--no-progress"]
    elif case == "neighbors-too-many":
        args = ["evaluate", str(run), "--neighbors", "100000", "--k", "2", "--no-progress"]
    else:  # the weights of a wider network under this run's config
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        state["model"] = {
            k: torch.zeros(*(32 if s == 16 else s for s in v.shape))
            for k, v in state["model"].items()
        }
        torch.save(state, run / "checkpoint.pt")
        args = ["evaluate", str(run), "--k", "2", "--no-progress"]
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}
    t0 = time.perf_counter()
    result = invoke(args)
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"} == before
    if case == "neighbors-too-many":  # refused before the evaluation, not after it
        assert "--neighbors" in error_message(result) and time.perf_counter() - t0 < 10


# --------------------------------------------------------------------------- 9. evaluate a sweep


@pytest.mark.slow
def test_evaluate_of_a_sweep_goes_past_a_damaged_run(tmp_path):
    sweep = tmp_path / "sw"
    args = ["sweep", "--family", "gaussian", "--family", "logitnormal", "--latent-dim", "2"]
    run_ok(
        [*args, "--out", str(sweep), *TINY[:4], "--threads", "1", "--epochs", "1", "--jobs", "2"]
    )
    broken, whole = (
        sweep / "runs" / "gaussian-d2-digits",
        sweep / "runs" / "logitnormal-d2-a1-digits",
    )
    (broken / "checkpoint.pt").write_bytes(b"damaged")
    result = invoke(["evaluate", str(sweep), "--k", "2", "--no-progress"])
    assert result.exit_code != 0
    assert "1 of 2 runs could not be evaluated: gaussian-d2-digits" in error_message(result)
    assert not (broken / "evaluation.json").exists()
    evaluation = read_json(whole / "evaluation.json")
    assert evaluation["run"] == "logitnormal-d2-a1-digits"  # the name, not a path of this machine


@pytest.mark.slow
def test_a_sweep_waits_for_a_run_that_another_process_is_finishing(tmp_path):
    """A killed sweep's run may still be saving when the sweep is started again."""
    from pyro_dvae.fileio import FolderLock

    sweep = tmp_path / "sw"
    args = ["sweep", "--family", "gaussian", "--latent-dim", "2", "--out", str(sweep)]
    args += ["--dataset", "digits", "--hidden", "16", "--threads", "1"]
    run = sweep / "runs" / "gaussian-d2-digits"
    # the sweep's run at epoch 1, trained here (no process to start)
    pd.fit(pd.FitConfig(**GAUSSIAN, epochs=1), out=run, progress=False, log=lambda m: None)
    lock = FolderLock(run).acquire()  # this process stands for the run still saving
    proc = start(*args, "--epochs", "2")
    said = []
    for line in proc.stderr:  # until the sweep says it waits (stderr is line-buffered)
        said.append(line.decode())
        if said[-1].startswith("[wait] gaussian-d2-digits"):
            break
    assert proc.poll() is None, "the sweep did not wait for the run"
    assert epochs_saved(run) == 1
    lock.release()
    proc.wait(timeout=120)  # (its few lines fit in the pipe)
    err = "".join(said) + proc.stderr.read().decode()
    assert proc.returncode == 0, err
    assert f"[wait] gaussian-d2-digits: in use by process {os.getpid()}" in err
    assert assert_consistent(run, "finished") == 2


def test_a_second_signal_while_saving_after_a_stop_changes_nothing(tmp_path, monkeypatch):
    """Supervisors signal every process: the sweep's SIGTERM may follow the scheduler's."""
    from pyro_dvae.train import Trainer

    real_epoch, real_summary, calls = Trainer.train_epoch, Trainer.summary, []

    def train_epoch(self):
        if self.epoch == 1:
            raise KeyboardInterrupt  # Ctrl-C in the second epoch
        return real_epoch(self)

    def summary(self, status):
        if status == "interrupted" and not calls:
            calls.append(1)
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal, while saving
        return real_summary(self, status)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    monkeypatch.setattr(Trainer, "summary", summary)
    out = tmp_path / "run"
    result = invoke(fit_args(out, epochs=3))
    assert calls and result.exit_code == 130, result.output
    assert f"--resume {out}" in result.stderr
    assert assert_consistent(out, "interrupted") == 1


@pytest.mark.slow
@needs_proc
def test_a_stop_signal_outside_training_exits_with_its_own_code(run):
    proc = start("evaluate", str(run), "--k", "100000", "--no-progress", "--threads", "1")
    wait_for(lambda: f"process {proc.pid}" in (run / ".lock").read_text(), "evaluate to start")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert "Stopped by SIGTERM." in err.decode()
    assert not (run / "evaluation.json").exists()
