"""How issue 32 is judged: the README's offline first look learns. Its digits command is read
from the README (every digits example of the docs is the same string) and run briefly."""

import shlex
from pathlib import Path

from .helpers import read_json, run_ok

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "pyro-dvae fit --dataset digits"


def digits_commands(page: Path) -> set[str]:
    """The ``fit --dataset digits`` commands of a Markdown page, without their comments."""
    lines = page.read_text().splitlines()
    return {line.split("#")[0].strip() for line in lines if line.startswith(PREFIX)}


def readme_command() -> str:
    commands = digits_commands(ROOT / "README.md")
    assert len(commands) == 1, f"the README's digits commands differ: {sorted(commands)}"
    return commands.pop()


def test_every_digits_example_of_the_docs_is_the_readmes():
    command = readme_command()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "commands.md":  # --help text, no examples
            assert digits_commands(page) <= {command}, page.name


def test_the_readmes_digits_command_learns(tmp_path):
    """A few epochs of the README's command (its later --epochs and --out win): units active,
    no collapse sentence. The plain command without the remedy collapses (docs/collapse.md)."""
    out = tmp_path / "digits"
    args = shlex.split(readme_command())[1:]
    run_ok([*args, "--epochs", "5", "--out", str(out), "--no-progress", "--threads", "1"])
    summary = read_json(out / "summary.json")
    assert summary["final_test"]["test_active_units"] > 0
    assert summary["collapse"] is None
