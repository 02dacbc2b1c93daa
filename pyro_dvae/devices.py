"""The device a command runs on: ``--device auto`` resolved, and a device that is not there
refused in one line."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError, TrainingError
from .fileio import first_line

#: the device ``auto`` stands for, where set (a cluster job's, a CPU-only test run's)
ENV_DEVICE = "PYRO_DVAE_DEVICE"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is ``$PYRO_DVAE_DEVICE`` if set, else CUDA when available, else the CPU."""
    asked = f"--device {device}"
    env = os.environ.get(ENV_DEVICE, "auto") or "auto"
    if str(device) == "auto" and env != "auto":
        device, asked = env, f"{ENV_DEVICE}={env}"
    elif str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ConfigError(
            f"{asked}: give auto, cpu, cuda, cuda:N (or another torch device)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"{asked} was asked for, but no CUDA device is available")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:  # e.g. mps on a build without it
        why = first_line(err).split(". ")[0]  # torch goes on to list every backend it has
        raise TrainingError(f"{asked} is not available here: {why}") from None
    return device
