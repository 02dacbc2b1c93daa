"""Everything ``pyro_dvae.__all__`` exports is documented, and docs/reference.md is the page
scripts/api_reference.py writes from those docstrings.

The checks run over ``__all__`` itself, so a name exported later is held to them too: a class
or function has a docstring of its own that names each parameter as ````name```` (a class:
its constructor's) and, for a function that returns a value, says what it ``Returns``; a data
export (a registry) has a ``#:`` comment where it is assigned.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import textwrap
from pathlib import Path

import pytest

import pyro_dvae

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _script():
    spec = importlib.util.spec_from_file_location(
        "api_reference", ROOT / "scripts" / "api_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _routines() -> list[str]:
    return [n for n in pyro_dvae.__all__ if callable(getattr(pyro_dvae, n))]


def _own_doc(obj) -> str:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return doc or ""


def _parameters(obj) -> list[str]:
    return [
        p.name
        for p in inspect.signature(obj).parameters.values()
        if p.kind not in SKIPPED_KINDS and p.name not in ("self", "cls")
    ]


def _returns_value(fn) -> bool:
    """Whether ``fn`` gives its caller something: by its annotation, else by its source (a
    ``return`` with a value, or a ``yield``, outside nested functions)."""
    annotation = inspect.signature(fn).return_annotation
    if annotation is not inspect.Signature.empty:
        return annotation not in (None, "None")
    body = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    todo = list(ast.iter_child_nodes(body))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Yield | ast.YieldFrom):
            return True
        if isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                return True
        todo.extend(ast.iter_child_nodes(node))
    return False


def test_the_checks_see_what_they_check():
    """The helpers tell a function that returns from one that does not, and find parameters."""

    def gives(a, *rest, b=1, **options):
        def inner():
            return 3

        return a + b

    def gives_nothing(a):
        def inner():
            return 3

        print(a)
        return

    def yields(a):
        yield a

    assert _returns_value(gives) and _returns_value(yields)
    assert not _returns_value(gives_nothing)
    assert _parameters(gives) == ["a", "b"]
    assert _parameters(pyro_dvae.Trainer)[:2] == ["config", "dataset"]  # no self


@pytest.mark.parametrize("name", _routines())
def test_every_exported_class_and_function_documents_its_arguments(name):
    obj = getattr(pyro_dvae, name)
    doc = _own_doc(obj)
    assert doc.strip(), f"pd.{name} has no docstring of its own"
    missing = [p for p in _parameters(obj) if f"``{p}``" not in doc]
    assert not missing, f"pd.{name}'s docstring does not name {', '.join(missing)} (as ``name``)"


@pytest.mark.parametrize(
    "name", [n for n in _routines() if not inspect.isclass(getattr(pyro_dvae, n))]
)
def test_every_exported_function_that_returns_says_what(name):
    fn = getattr(pyro_dvae, name)
    if _returns_value(fn):
        assert re.search(r"\b[Rr]eturns\b", _own_doc(fn)), f"pd.{name}'s docstring: Returns what?"


@pytest.mark.parametrize("name", [n for n in pyro_dvae.__all__ if n not in _routines()])
def test_every_exported_registry_has_a_comment_where_it_is_assigned(name):
    _, comment = _script().data_doc(name)
    assert comment, f"pd.{name}: write a #: comment above its assignment"


def test_the_reference_page_is_generated_from_the_docstrings():
    """docs/reference.md is what scripts/api_reference.py prints now (regenerate it with
    ``python scripts/api_reference.py > docs/reference.md``), and it has every export."""
    script = _script()
    page = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert page == script.reference_markdown()
    headings = re.findall(r"^### `([^`]+)`$", page, flags=re.M)
    assert sorted(headings) == sorted(pyro_dvae.__all__)
    for name in _routines():
        first = _own_doc(getattr(pyro_dvae, name)).strip().splitlines()[0]
        assert script.markdown(first.strip(), set(pyro_dvae.__all__)) in page
