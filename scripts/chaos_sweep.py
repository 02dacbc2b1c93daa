"""Kill a sweep at random moments and check that nothing in its folder is damaged.

    python scripts/chaos_sweep.py --out /tmp/chaos --kills 20 --terms 5

Starts a small ``digits`` sweep (``--jobs 2``), stops it ``--kills`` times with SIGKILL
and ``--terms`` times with SIGTERM at random moments (in random order), starting it
again after each stop, then lets it finish. Checks, for every run: the checkpoint is
at the last epoch, ``metrics.jsonl`` holds each epoch once, the summary agrees, no
temporary file is left, no training process is left, and the final weights equal
those of the same sweep run without interruption. Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

GRID = ["--family", "gaussian", "--family", "logitnormal", "--alpha", "1", "--alpha", "1.78"]
GRID += ["--latent-dim", "2", "--latent-dim", "4", "--dataset", "digits", "--hidden", "32"]


def sweep_cmd(folder: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "pyro_dvae", "sweep", *GRID, "--epochs", str(epochs)] + [
        "--jobs",
        "2",
        "--threads",
        "1",
        "--out",
        str(folder),
    ]


def live_processes(text: str) -> list[int]:
    """pyro-dvae processes (sweeps, training runs) whose command line mentions ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (proc / "stat").read_text().split()[2]
            except OSError:
                continue
            if text in cmd and "pyro_dvae" in cmd and state != "Z":
                found.append(int(proc.name))
    return found


def check(folder: Path, epochs: int, reference: Path | None) -> list[str]:
    problems = []
    for run in sorted((folder / "runs").iterdir()):
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln]
        summary = json.loads((run / "summary.json").read_text())
        if state["epoch"] != epochs:
            problems.append(f"{run.name}: checkpoint at epoch {state['epoch']}, not {epochs}")
        if [r["epoch"] for r in rows] != list(range(1, epochs + 1)):
            problems.append(f"{run.name}: metric rows for epochs {[r['epoch'] for r in rows]}")
        if (summary["status"], summary["epochs_completed"]) != ("finished", epochs):
            problems.append(
                f"{run.name}: summary {summary['status']} {summary['epochs_completed']}"
            )
        tmp = [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
        if tmp:
            problems.append(f"{run.name}: temporaries {tmp}")
        if reference is not None:
            ref = torch.load(reference / "runs" / run.name / "checkpoint.pt", weights_only=True)
            if any(not torch.equal(ref["model"][k], state["model"][k]) for k in ref["model"]):
                problems.append(f"{run.name}: weights differ from the uninterrupted sweep")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="scratch folder (emptied first)")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--terms", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-wait", type=float, default=20.0, help="longest run between stops (s)")
    ap.add_argument("--no-reference", action="store_true", help="skip the uninterrupted sweep")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    folder, reference = args.out / "chaos", args.out / "reference"
    cmd = sweep_cmd(folder, args.epochs)

    t0 = time.time()
    stops = ["SIGKILL"] * args.kills + ["SIGTERM"] * args.terms
    rng.shuffle(stops)
    codes = []
    for i, name in enumerate(stops, 1):
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        time.sleep(rng.uniform(1.0, args.max_wait))
        if proc.poll() is not None:
            last = proc.stderr.read().decode().strip().splitlines()[-1:]
            print(f"stop {i}: the sweep had already ended (rc {proc.returncode}): {last}")
            codes.append(proc.returncode)
            continue
        proc.send_signal(getattr(signal, name))
        proc.communicate(timeout=180)
        codes.append(proc.returncode)
        deadline = time.time() + 60
        while live_processes(str(folder)) and time.time() < deadline:
            time.sleep(0.1)
        left = live_processes(str(folder))
        done = sorted(
            len((r / "metrics.jsonl").read_text().splitlines())
            for r in (folder / "runs").glob("*")
            if (r / "metrics.jsonl").exists()
        )
        print(f"stop {i:2d}: {name:7s} rc {proc.returncode:4d}  rows per run {done}  left {left}")
    final = subprocess.run(cmd, capture_output=True, text=True)
    print(f"final sweep: rc {final.returncode}; {final.stderr.strip().splitlines()[-1]}")
    print(f"chaos part: {time.time() - t0:.0f} s")

    if not args.no_reference:
        subprocess.run(sweep_cmd(reference, args.epochs), capture_output=True, check=True)
    problems = check(folder, args.epochs, None if args.no_reference else reference)
    left = live_processes(str(args.out))
    if left:
        problems.append(f"processes left: {left}")
    if final.returncode != 0:
        problems.append(f"the final sweep exited {final.returncode}")
    runs = len(list((folder / "runs").iterdir()))
    print(
        f"{runs} runs x {args.epochs} epochs; {len(stops)} stops; exit codes {sorted(set(codes))}"
    )
    print("\n".join(problems) if problems else "all checks passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
