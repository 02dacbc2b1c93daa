"""A table with a title and a note, written as Markdown or CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[tuple[str, list[str]]]
    note: str = ""
    first: str = "size"

    def markdown(self) -> str:
        out = [f"**{self.title}**", ""]
        out.append("| " + " | ".join([self.first, *self.columns]) + " |")
        out.append("|" + " --- |" * (len(self.columns) + 1))
        for label, cells in self.rows:
            out.append("| " + " | ".join([label, *cells]) + " |")
        if self.note:
            out += ["", self.note]
        return "\n".join(out) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow([self.first, *self.columns])
        for label, cells in self.rows:
            writer.writerow([label, *cells])
        return buf.getvalue()


def fmt(value: float | None, paper: float | None = None) -> str:
    """``value`` to two decimals ("–" if ``None``), then ``(paper)`` if given."""
    text = "–" if value is None else f"{value:.2f}"
    return f"{text} ({paper:.2f})" if paper is not None else text
