"""The script that measures issue 30's GPU numbers (scripts/gpu_check.py), run on the CPU so
that it is known to work before a GPU is lent: its checks pass, and its benchmarks print the
three steps (hand-written eager, hand-written compiled, pyro-dvae) and the groups."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


@pytest.mark.slow
def test_the_gpu_script_checks_and_measures_on_the_cpu():
    env = {**os.environ, "PYRO_DVAE_COMPILE_BACKEND": "aot_eager", "PYRO_DVAE_COMPILE_MODE": ""}
    args = ["--device", "cpu", "--members", "1,2", "--rounds", "1", "--sweep-epochs", "0"]
    args += ["--hidden", "64", "--images", "500"]  # small: the checks, not the timings
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "0 failure(s)" in out and "FAIL" not in out
    # every family's compiled step against its eager one, and the group checks
    for family in ("gaussian", "logitnormal", "beta", "concrete"):
        assert re.search(rf"PASS {family}: compiled [\d.]+, eager [\d.]+", out)
    assert "PASS group of 4 vs alone" in out and "PASS group of one == solo run" in out
    # the solo benchmark's three variants, each with a time and the compiled ones a compile time
    for variant in ("(a) hand-written", "(c) (a) with its loss", "(b) pyro-dvae"):
        assert re.search(re.escape(variant) + r".*:\s+[\d.]+ ms/step", out), variant
    assert len(re.findall(r"compile [\d.]+ s", out)) >= 2
    assert "solo pyro-dvae step" in out  # the groups' benchmark
