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
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not (start and end):
        raise ValueError(f"no {START.strip()} ... {END} block")
    return head + START + block + END + tail


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--headline", type=Path, default=root / "results/paper/headline.md")
    parser.add_argument("--readme", type=Path, default=root / "README.md")
    args = parser.parse_args()
    try:
        text = with_block(args.readme.read_text(), args.headline.read_text())
    except ValueError as err:
        raise SystemExit(f"error: {args.readme}: {err}") from None
    args.readme.write_text(text)
    print(f"{args.readme}: results block from {args.headline}")


if __name__ == "__main__":
    main()
