"""One meaning per word: an option named by several commands means the same in each.

The test reads what ``--help`` shows (click's help records, hidden options left out) and
compares, for every option name that two or more commands take, the kind of value it takes
and the first clause of its help: the words before the first ". ", ": ", "; ", " [" or " (".
A command may add detail after that clause; the clause itself is the option's meaning.
"""

from __future__ import annotations

import re
from collections import defaultdict

import click
import pytest

from pyro_dvae.cli import cli

from .helpers import fit_args, invoke


def _shown_options() -> dict[str, list[tuple[str, click.Option, str]]]:
    """Option name -> (command, option, help as --help shows it) for every command."""
    seen: dict[str, list[tuple[str, click.Option, str]]] = defaultdict(list)
    for name, command in sorted(cli.commands.items()):
        ctx = click.Context(command, info_name=name)
        for param in command.params:
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is None:  # an argument, or a hidden option
                continue
            for flag in param.opts + param.secondary_opts:
                if flag.startswith("--"):
                    seen[flag].append((name, param, param.help or ""))
    return seen


def meaning(help_text: str) -> str:
    """The first clause of a help text."""
    return re.split(r"\. |: |; | \[| \(|\.$", help_text.strip(), maxsplit=1)[0].strip()


def kind(param: click.Option) -> str:
    """The kind of value an option takes: a file, a folder, a number, a choice, a flag."""
    t = param.type
    if param.is_flag:
        return "flag"
    if isinstance(t, click.Path):
        return {(True, False): "file", (False, True): "folder"}.get(
            (t.file_okay, t.dir_okay), "path"
        )
    if isinstance(t, click.Choice):
        return "choice"
    return {"integer range": "integer", "float range": "float"}.get(t.name, t.name)


def test_meaning_is_the_first_clause():
    assert meaning("Random seed: picks the prior draws.") == "Random seed"
    assert meaning("Prior draws.") == "Prior draws"
    assert meaning("Folder to write into [default: RUN_DIR/pictures].") == "Folder to write into"
    assert meaning("Your guide: package.module:factory (docs).") == "Your guide"


def test_every_option_has_help():
    missing = [
        f"{command} {flag}"
        for flag, uses in _shown_options().items()
        for command, _, text in uses
        if not text.strip()
    ]
    assert not missing, f"options without help: {missing}"


@pytest.mark.parametrize("flag", sorted(f for f, u in _shown_options().items() if len(u) > 1))
def test_an_option_named_twice_means_one_thing(flag):
    uses = _shown_options()[flag]
    meanings = {command: meaning(text) for command, _, text in uses}
    assert len(set(meanings.values())) == 1, f"{flag} means different things: {meanings}"
    kinds = {command: kind(param) for command, param, _ in uses}
    assert len(set(kinds.values())) == 1, f"{flag} takes different values: {kinds}"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A tiny digits run (two epochs; scikit-learn's 300 test images)."""
    out = tmp_path_factory.mktemp("words") / "run"
    assert invoke(fit_args(out)).exit_code == 0
    return out


def test_an_old_spelling_still_works_with_one_warning_line(digits_run, tmp_path):
    old = invoke(["curves", str(digits_run), "--out", str(tmp_path / "old.png")])
    new = invoke(["curves", str(digits_run), "--file", str(tmp_path / "new.png")])
    assert old.exit_code == new.exit_code == 0
    assert (tmp_path / "old.png").stat().st_size > 0 and (tmp_path / "new.png").is_file()
    warnings = [line for line in old.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--file" in warnings[0]
    assert "warning" not in new.stderr
    both = invoke(["curves", str(digits_run), "--out", "a.png", "--file", "b.png"])
    assert both.exit_code != 0 and "not both" in both.stderr
