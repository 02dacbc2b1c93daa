"""The ``--help`` of every command as one Markdown page (``docs/commands.md``)."""

from __future__ import annotations

from click.testing import CliRunner

from .main import cli


def commands_markdown() -> str:
    out = [
        "# Every command and its options\n",
        "Generated from the command line itself (`python scripts/command_help.py >",
        "docs/commands.md`); a test keeps this page equal to `pyro-dvae COMMAND --help`.\n",
    ]
    runner = CliRunner()
    for name in sorted(cli.commands):
        result = runner.invoke(cli, [name, "--help"], prog_name="pyro-dvae", terminal_width=100)
        text = result.output
        out += [f"## pyro-dvae {name}\n", "```text", text.rstrip(), "```\n"]
    return "\n".join(out)
