"""How a sweep runs (not what it trains): one frozen value the scheduler and the task
command lines read."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_evaluation(k: int, images: int, discrete_k: int | None) -> None:
    """Raise :class:`ConfigError` unless a sweep's evaluation settings make sense."""
    if k < 0 or images < 0:
        raise ConfigError("--evaluate and its number of images must be >= 0")
    if discrete_k is not None:
        if discrete_k < 1:
            raise ConfigError(f"--discrete-k must be >= 1, got {discrete_k}")
        if not k:
            raise ConfigError("--discrete-k goes with --evaluate K (the runs' evaluation)")


@dataclass(frozen=True)
class SweepSettings:
    """``jobs``: runs (or groups) at a time, None: as many as the launcher has room for;
    ``threads``: torch threads per run, None: the cores shared out among the jobs;
    ``data_dir``: where every run reads its data (None: the default); ``device``: each
    run's; ``evaluate_k``/``evaluate_images``: evaluate each finished run with this many
    IWAE samples on this many test images (0: none / all), and ``evaluate_discrete_k``
    samples for the hard codes' IWAE (None: evaluate's default); ``group_size``: runs of
    one shape trained as one group in one process; ``poll``: seconds between looks at the
    children (a look is a few cheap calls, so a run that ends is followed by the next
    within 0.1 s)."""

    jobs: int | None = 1
    threads: int | None = None
    data_dir: Path | None = None
    device: str = "auto"
    evaluate_k: int = 0
    evaluate_images: int = 0
    evaluate_discrete_k: int | None = None
    group_size: int = 1
    poll: float = 0.1

    def __post_init__(self) -> None:
        for name, low in (("jobs", 1), ("threads", 1), ("group_size", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be >= {low}, got {value}")
        check_evaluation(self.evaluate_k, self.evaluate_images, self.evaluate_discrete_k)

    def resolved(self, slots: int | None) -> SweepSettings:
        """Every choice made: jobs (``slots``: the launcher's room, if it knows), threads,
        and the data folder as an absolute path (a child may run elsewhere)."""
        jobs = self.jobs or slots or 1
        return dataclasses.replace(
            self,
            jobs=jobs,
            threads=self.threads or max(1, available_cores() // jobs),
            data_dir=Path(self.data_dir).resolve() if self.data_dir is not None else None,
        )
