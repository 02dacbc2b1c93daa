"""``scripts/background_queue.sh``: the long experiments one after another, each step on the
frozen copy of the code it started with, run here against stand-in copies whose
``pyro-dvae`` and ``reproduce_paper.sh`` only record how they were called."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "background_queue.sh"

FAKE_CLI = """#!/usr/bin/env bash
echo "{name} pyro-dvae $* avx=${{ATEN_CPU_CAPABILITY:-}}" >> "$CALLS"
# an evaluation leaves its file, as the real one does
[ "$1" = evaluate ] && [ -d "$2" ] && echo '{{}}' > "$2/evaluation.json"
# a sweep that ends with failed runs, or one that cannot start
if [ "$1" = sweep ] && [ "${{SWEEP_ENDS:-}}" = failed ]; then
    echo "[FAILED] r1: Error: the loss became nan" >&2
    echo "1 of 2 runs finished in $4" >&2
    exit 1
fi
[ "$1" = sweep ] && [ "${{SWEEP_ENDS:-}}" = error ] && echo "Error: busy" >&2 && exit 1
exit 0
"""
FAKE_PAPER = """#!/usr/bin/env bash
echo "{name} reproduce_paper.sh SWEEP=$SWEEP GROUP_SIZE=$GROUP_SIZE \\
avx=$ATEN_CPU_CAPABILITY" >> "$CALLS"
"""


def frozen_copy(work: Path, name: str) -> Path:
    """A stand-in for ``$WORK/code-<name>``: the queue script and recording commands."""
    code = work / f"code-{name}"
    for sub in (".venv/bin", "scripts"):
        (code / sub).mkdir(parents=True)
    files = {
        ".venv/bin/pyro-dvae": FAKE_CLI.format(name=name),
        "scripts/reproduce_paper.sh": FAKE_PAPER.format(name=name),
        ".venv/bin/activate": "",
    }
    for path, text in files.items():
        (code / path).write_text(text)
        (code / path).chmod(0o755)
    # the copy's queue script, saying whose it is when it runs
    text = SCRIPT.read_text().replace(
        "set -u\n", f'set -u\necho "{name} script $*" >> "$CALLS"\n', 1
    )
    (code / "scripts" / SCRIPT.name).write_text(text)
    (code / "scripts" / SCRIPT.name).chmod(0o755)
    return code


def queue(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def work(tmp_path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "data_dir").write_text(str(tmp_path / "data"))
    return work


def test_each_step_runs_the_frozen_copy_it_started_with(work, tmp_path):
    old, new = frozen_copy(work, "old"), frozen_copy(work, "new")
    (work / "code").symlink_to(new)
    # the leaderboard began on the older copy: it keeps it; two of its runs have trained
    (work / "queue" / "code").mkdir(parents=True)
    (work / "queue" / "code" / "leaderboard").symlink_to(old)
    runs = work / "discrete-benchmark" / "sweep" / "runs"
    for name in ("bernoulli-d200-nvil", "bernoulli-d200-concrete-anneal3e-05"):
        (runs / name).mkdir(parents=True)
        (runs / name / "summary.json").write_text('{"status": "finished"}')
    calls = tmp_path / "calls.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("WORK", "CODE")}
    env.update(CALLS=str(calls), POLL="0.1")
    # run from the frozen copy, which knows its WORK
    result = queue(work / "code" / "scripts" / SCRIPT.name, "run", env=env)
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    # each step runs its own copy's script and commands
    scripts = [line for line in lines if " script " in line]
    assert scripts == [
        "new script run",
        "old script leaderboard",
        "new script paper-rerun",
        "new script iwae-train",
        "new script iwae-evaluate",
    ]
    lines = [line for line in lines if " script " not in line]
    assert lines[0].startswith("old pyro-dvae sweep --preset discrete-benchmark")
    scored = {line.split()[3]: line for line in lines if " evaluate " in line and "runs/" in line}
    nvil, concrete = (
        str(runs / n) for n in ("bernoulli-d200-nvil", "bernoulli-d200-concrete-anneal3e-05")
    )
    # unbiased runs: one pass of k = 1000; a relaxation: k = 10 first, its hard codes k = 1000
    assert scored[nvil].startswith("old ") and "--k 1000 --discrete-k 1000" in scored[nvil]
    assert "--k 10 --discrete-k 1000" in scored[concrete] and scored[concrete].endswith("avx=avx2")
    paper = f"new reproduce_paper.sh SWEEP={work}/paper-rerun/sweep GROUP_SIZE=4 avx=avx2"
    assert paper in lines
    assert f"new pyro-dvae sweep --preset iwae-training --out {work}/iwae-training/sweep" in (
        " ".join(line.split()[:7]) for line in lines
    )
    assert any(
        line.startswith(f"new pyro-dvae evaluate {work}/iwae-training/sweep --k 5000")
        for line in lines
    )
    pinned = {p.name: p.resolve() for p in (work / "queue" / "code").iterdir()}
    assert pinned == {
        "leaderboard": old.resolve(),
        "paper-rerun": new.resolve(),
        "iwae-train": new.resolve(),
        "iwae-evaluate": new.resolve(),
    }
    assert sorted(p.name for p in (work / "queue" / "done").iterdir()) == sorted(pinned)
    assert (work / "queue" / "queue.log").read_text().splitlines()[-1].endswith("all done")
    # run again: every step is done, nothing is called
    before = calls.read_text()
    assert queue(work / "code" / "scripts" / SCRIPT.name, "run", env=env).returncode == 0
    assert calls.read_text() == before + "new script run\n"
    status = queue(work / "code" / "scripts" / SCRIPT.name, "status", env=env)
    assert "2 runs begun, 2 finished, 2 evaluated" in status.stdout


def test_freeze_refuses_a_code_folder_it_did_not_make(work):
    (work / "code").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CODE"}
    env["WORK"] = str(work)
    result = queue(SCRIPT, "freeze", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: {work}/code is a folder; stop the queue and move it away first"
    )
    assert not any(p.name.startswith("code-") for p in work.iterdir())


def test_a_paper_rerun_that_fails_after_its_sweeps_stops_the_queue(work, tmp_path):
    """The paper rerun is a script of several commands: its exit 1 after a sweep's
    "runs finished" line (a failed report, say) is an error, not a finished step."""
    code = frozen_copy(work, "c")
    (code / "scripts" / "reproduce_paper.sh").write_text(
        '#!/usr/bin/env bash\necho "2 of 2 runs finished in x" >&2\n'
        'echo "Error: no report" >&2\nexit 1\n'
    )
    (work / "code").symlink_to(code)
    (work / "queue" / "done").mkdir(parents=True)
    (work / "queue" / "done" / "leaderboard").touch()
    env = {k: v for k, v in os.environ.items() if k not in ("WORK", "CODE")}
    env.update(CALLS=str(tmp_path / "calls.txt"), POLL="0.1")
    result = queue(work / "code" / "scripts" / SCRIPT.name, "run", env=env)
    assert result.returncode == 1
    assert sorted(p.name for p in (work / "queue" / "done").iterdir()) == ["leaderboard"]


@pytest.mark.parametrize("ends", ["failed", "error"])
def test_a_sweep_with_failed_runs_is_done_and_any_other_error_stops_the_queue(work, tmp_path, ends):
    """A sweep that ran to its end with failed runs (a NaN fails again at the same step) lets
    the queue go on to its next steps; one that could not run stops it, its step not done."""
    (work / "code").symlink_to(frozen_copy(work, "c"))
    calls = tmp_path / "calls.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("WORK", "CODE")}
    env.update(CALLS=str(calls), POLL="0.1", SWEEP_ENDS=ends)
    result = queue(work / "code" / "scripts" / SCRIPT.name, "run", env=env)
    done = sorted(p.name for p in (work / "queue" / "done").glob("*"))
    log = (work / "queue" / "queue.log").read_text()
    if ends == "failed":
        assert result.returncode == 0
        assert done == ["iwae-evaluate", "iwae-train", "leaderboard", "paper-rerun"]
        assert "leaderboard: ran to its end, some runs failed" in log
    else:
        assert result.returncode == 1 and done == []
        assert "end leaderboard rc=1" in log and "paper-rerun" not in log
