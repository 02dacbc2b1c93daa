"""One meaning per word: an option named by several commands means the same in each.

The test reads what ``--help`` shows (click's help records, hidden options left out) and
compares, for every option name that two or more commands take, the kind of value it takes
and the first clause of its help: the words before the first ". ", ": ", "; ", " [" or " (".
A command may add detail after that clause; the clause itself is the option's meaning.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import replace

import click
import pytest

from pyro_dvae.cli import cli
from pyro_dvae.config import FitConfig
from pyro_dvae.errors import ConfigError
from pyro_dvae.naming import named_grid, run_name

from .helpers import fit_args, invoke, read_metrics


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


def test_a_count_that_cannot_be_met_is_said_in_one_line(digits_run):
    result = invoke(["evaluate", str(digits_run), "--k", "2", "--images", "1000", "--no-progress"])
    assert result.exit_code == 0, result.output
    scored = json.loads((digits_run / "evaluation.json").read_text())["test_images"]
    assert scored < 1000  # scikit-learn's digits hold far fewer test images
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "--images 1000" in notes[0] and f"all {scored}" in notes[0]
    quiet = invoke(["evaluate", str(digits_run), "--k", "2", "--images", "10", "--no-progress"])
    assert "note:" not in quiet.stderr


def test_run_names_name_a_dataset_other_than_mnist_and_keep_older_folders(tmp_path):
    mnist = FitConfig(family="gaussian", latent_dim=2)
    digits = FitConfig(family="gaussian", latent_dim=2, dataset="digits")
    assert run_name(mnist) == "gaussian-d2"  # unchanged: committed results still resume
    assert run_name(digits) == "gaussian-d2-digits"
    assert run_name(replace(digits, seed=3), {"seed"}) == "gaussian-d2-digits-seed3"
    assert list(named_grid([digits], tmp_path)) == ["gaussian-d2-digits"]
    (tmp_path / "runs" / "gaussian-d2").mkdir(parents=True)  # a digits sweep made before
    assert list(named_grid([digits], tmp_path)) == ["gaussian-d2"]


def _base(name: str) -> str:
    """An estimator's name without its temperature or particles (``concrete-0.5``)."""
    return re.sub(r"-[0-9.]+$", "", name)


@pytest.mark.parametrize("family", ["bernoulli", "categorical"])
def test_one_name_per_estimator_in_fit_and_compare_estimators(family):
    from pyro_dvae.discrete_gradients import discrete_estimators
    from pyro_dvae.families import FAMILIES, make_family
    from pyro_dvae.vae import VAE

    own = {"categories": 2} if family == "categorical" else {}
    config = FitConfig(family=family, latent_dim=2, elbo="enum", **own)
    vae = VAE(make_family(config), 64, 8)
    compared = {_base(e.name) for e in discrete_estimators(vae, (0.5,))}
    # every estimator compared is one fit trains under the same name (--estimator NAME), or
    # the score function without baseline, which fit names so too
    assert compared <= {*FAMILIES[family].estimators, "score-function"}
    assert {"score-function", "reinforce"} <= compared

    def described(**fields) -> str:
        c = FitConfig(family=family, latent_dim=2, **own, **fields).validate(new=True)
        return make_family(c).describe()

    # two spellings of one estimator: one name; the estimator's name, not the ELBO's
    assert described(estimator="reinforce") == described(elbo="tracegraph")
    assert "reinforce" in described(elbo="tracegraph")
    assert described(elbo="trace") == described(elbo="tracegraph", baseline="none")
    assert "score-function" in described(elbo="trace")
    assert "tracegraph" not in described(elbo="tracegraph")


def test_the_group_refusal_names_what_may_differ():
    from pyro_dvae.families import FAMILIES
    from pyro_dvae.group import check_group

    with pytest.raises(ConfigError) as err:
        check_group([FitConfig(), FitConfig(family="gaussian")])
    message = str(err.value)
    assert "these differ in --family" in message
    for family in FAMILIES.values():  # as docs/groups.md: the seed and each family's own
        if family.groupable:
            for name in family.member_params:
                assert "--" + name.replace("_", "-") in message


def test_a_concrete_run_is_one_size_in_show_and_evaluate(tmp_path):
    from pyro_dvae.run_pictures import run_title
    from pyro_dvae.rundir import RunDir

    out = tmp_path / "cc"
    args = fit_args(out, family="concrete", latent_dim=1, categories=20, epochs=1)
    done = invoke(args)
    assert done.exit_code == 0 and "done: 1 epoch," in done.stderr  # one epoch, not "1 epochs"
    # the last evaluation's active units, of the 1 x 20 one-hot units the decoder reads
    last = read_metrics(out)[-1]
    assert f", {last['test_active_units']} of 20 units active;" in done.stderr
    title = run_title(RunDir(out), 1)
    assert "20 units" in title and "digits" in title  # the paper's "dimension 20"
    assert title.lower().count("concrete") == 1  # the family is named once
    result = invoke(["evaluate", str(out), "--k", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["latent_units"] == 20
    assert f"{ev['active_units']}/20" in result.stdout


@pytest.mark.slow
def test_show_says_a_count_it_cut_only_when_asked_for_it(digits_run, tmp_path):
    # the default --activity-images 1000 is more than digits' test set: not asked for, not said
    def notes(result) -> list[str]:  # a collapsed run's note (docs/collapse.md) aside
        lines = result.stderr.splitlines()
        said = [line for line in lines if line.startswith(("note:", "warning:"))]
        return [line for line in said if not line.startswith("note: posterior collapse")]

    quiet = invoke(["show", str(digits_run), "--out", str(tmp_path / "a")])
    assert quiet.exit_code == 0 and notes(quiet) == []
    asked = invoke(["show", str(digits_run), "--out", str(tmp_path / "b"), "--images", "500"])
    notes = notes(asked)
    assert len(notes) == 2, asked.stderr  # the old spelling's warning, and the cut count
    assert "--reconstructions 500" in notes[1]
