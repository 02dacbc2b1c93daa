"""Helpers shared by the command-line tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from pyro_dvae.cli import cli

SMALL = {
    "--dataset": "digits",
    "--hidden": "32",
    "--latent-dim": "2",
    "--epochs": "2",
    "--device": "cpu",
    "--threads": "1",  # tiny matrices: one thread is several times faster on a busy machine
}


def fit_args(out: Path | None = None, **options: object) -> list[str]:
    """``fit`` arguments: the small defaults above, overridden by ``options``.

    ``latent_dim=2`` becomes ``--latent-dim 2``; a value of ``None`` drops the option.
    """
    opts: dict[str, object] = dict(SMALL)
    for key, value in options.items():
        opts["--" + key.replace("_", "-")] = value
    args = ["fit", "--no-progress"]
    for flag, value in opts.items():
        if value is not None:
            args += [flag, str(value)]
    if out is not None:
        args += ["--out", str(out)]
    return args


def invoke(args: list[str]):
    """Run the CLI in-process; an exception that escaped the CLI (a traceback) fails the test."""
    result = CliRunner().invoke(cli, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"`pyro-dvae {' '.join(args)}` raised instead of printing an error line; "
            f"stderr:\n{result.stderr}"
        ) from result.exception
    return result


def run_ok(args: list[str]):
    result = invoke(args)
    assert result.exit_code == 0, result.output
    return result


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def error_message(result) -> str:
    """The text of the (last) ``Error:`` line on stderr."""
    errors = [line for line in stderr_lines(result) if line.startswith("Error: ")]
    assert errors, f"no 'Error: ...' line on stderr:\n{result.stderr}"
    return errors[-1][len("Error: ") :]


def assert_one_error_line(result) -> None:
    """The whole of stderr is one non-empty line, ``Error: <something>``."""
    lines = stderr_lines(result)
    assert len(lines) == 1, (
        f"expected exactly one line on stderr, got {len(lines)}:\n{result.stderr}"
    )
    assert lines[0].startswith("Error: ") and len(lines[0]) > len("Error: ")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def read_metrics(run: Path) -> list[dict]:
    """The records of metrics.jsonl; none if there is no such file (no epoch finished)."""
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def load_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


def assert_steps_agree(eager: list[tuple], compiled: list[tuple]) -> None:
    """Compiled steps equal eager ones to rounding (float64): each (loss, reconstruction,
    gradients) of one list against the same step of the other."""
    import pytest

    for (l0, r0, g0), (l1, r1, g1) in zip(eager, compiled, strict=True):
        assert l1 == pytest.approx(l0, rel=1e-9)
        assert r1 == pytest.approx(r0, rel=1e-9)
        for a, b in zip(g0, g1, strict=True):
            assert torch.allclose(a, b, rtol=1e-7, atol=1e-10)
