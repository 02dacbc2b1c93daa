"""Words that messages share, so that every command says a thing the same way: a count and
its noun (``1 epoch``, ``2 epochs``), a duration, and a request that could only be met in
part (``--images 1000`` on a test set of 300)."""

from __future__ import annotations


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``; ``many`` where the plural is not ``noun + "s"``."""
    return f"{n} {noun if n == 1 else many or noun + 's'}"


def capped(flag: str, asked: int, available: int, whose: str, noun: str) -> str | None:
    """The one line that says a count was cut to what there is, or ``None`` if it was not:
    ``note: --images 1000 asks for more than the digits test set's 300 images: using all 300``."""
    if asked <= available:
        return None
    using = "it" if available == 1 else f"all {available}"
    return (
        f"note: {flag} {asked} asks for more than {whose} {plural(available, noun)}: using {using}"
    )


def duration(seconds: float) -> str:
    """``4.2 s``, ``42 s``, ``3.5 min``, ``2.25 h``: a time in the unit that reads."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
