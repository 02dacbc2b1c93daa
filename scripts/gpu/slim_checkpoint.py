"""Copy finished runs into .gpu/runs for a device call, with the optimiser state dropped
(evaluation never reads it; the checkpoint shrinks from 16 to 5 MB, the carry is capped)."""

import shutil
import sys
from pathlib import Path

import torch

for src in map(Path, sys.argv[1:]):
    dst = Path(".gpu/runs") / src.name
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        shutil.copy2(src / name, dst / name)
    state = torch.load(src / "checkpoint.pt", map_location="cpu", weights_only=True)
    state["optim"] = {}
    torch.save(state, dst / "checkpoint.pt")
    print(dst, state["epoch"])
