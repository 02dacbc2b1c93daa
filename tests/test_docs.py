"""The documentation that is generated from the code stays equal to it."""

from pathlib import Path

from pyro_dvae.cli.options import markdown_table
from pyro_dvae.config import PARAMS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_options_table_of_the_docs_is_the_generated_one():
    text = (DOCS / "cli.md").read_text()
    table = text.split("<!-- options:start -->\n")[1].split("<!-- options:end -->")[0]
    assert table == markdown_table()
    assert all(p.flag in table for p in PARAMS.values())


def test_every_docs_page_is_linked_from_the_readme():
    readme = (DOCS.parent / "README.md").read_text()
    assert sorted(f"docs/{p.name}" for p in DOCS.glob("*.md") if f"docs/{p.name}" in readme) == (
        sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))
    )


def test_the_commands_page_is_every_commands_help():
    from pyro_dvae.cli.help import commands_markdown

    assert (DOCS / "commands.md").read_text() == commands_markdown()


def test_every_relative_link_of_the_markdown_resolves():
    """A moved file or folder leaves no dead link behind (a fresh clone has only tracked files)."""
    import re
    import subprocess

    root = DOCS.parent
    try:
        listed = subprocess.run(
            ["git", "ls-files", "*.md"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # an unpacked sdist: no git
        listed = [str(p.relative_to(root)) for p in root.rglob("*.md") if ".venv" not in p.parts]
    dead = []
    for name in listed:
        page = root / name
        if not page.is_file():  # tracked but deleted in this working tree
            continue
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if not target.startswith(("http:", "https:", "mailto:")):
                if not (page.parent / target).exists():
                    dead.append(f"{name}: {target}")
    assert listed and dead == []


def test_the_readmes_results_are_the_reports_of_the_committed_runs(tmp_path):
    """README's results block is results/paper/headline.md, which a report of the committed
    runs makes again byte for byte (refresh: see scripts/readme_results.py)."""
    import importlib.util

    from pyro_dvae.report import build_report

    root = DOCS.parent
    results = root / "results" / "paper"
    build_report(results, tmp_path)
    assert (tmp_path / "headline.md").read_text() == (results / "headline.md").read_text()
    path = root / "scripts" / "readme_results.py"
    spec = importlib.util.spec_from_file_location("readme_results", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = (root / "README.md").read_text()
    assert script.with_block(readme, (results / "headline.md").read_text()) == readme
