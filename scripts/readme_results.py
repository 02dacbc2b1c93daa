#!/usr/bin/env python
"""Put the headline tables of a report (``headline.md``) into the README's results block.

    pyro-dvae report results/paper --out results/paper
    python scripts/readme_results.py            # README.md <- results/paper/headline.md

The README's tables are then the report's, number for number (tests/test_docs.py checks it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

START, END = "<!-- results:start -->\n", "<!-- results:end -->"


def with_block(readme: str, block: str) -> str:
    """``readme`` with the text between its results markers replaced by ``block``."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + block + END + tail


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--headline", type=Path, default=root / "results/paper/headline.md")
    parser.add_argument("--readme", type=Path, default=root / "README.md")
    args = parser.parse_args()
    readme = args.readme.read_text()
    if START not in readme or END not in readme.split(START, 1)[-1]:
        raise SystemExit(f"error: {args.readme} has no {START.strip()} ... {END} block")
    args.readme.write_text(with_block(readme, args.headline.read_text()))
    print(f"{args.readme}: results block from {args.headline}")


if __name__ == "__main__":
    main()
