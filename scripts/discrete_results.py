#!/usr/bin/env python
"""Issue 16's MNIST tables: the categorical VAE without relaxation beside the relaxed Concrete.

    python scripts/discrete_results.py --enum SWEEP --tracegraph SWEEP \\
        --paper results/paper-10-epochs --working results/concrete-working \\
        > results/discrete/README.md

``--enum``: a sweep of ``--family categorical --elbo enum --latent-dim 1 --categories K``;
``--tracegraph``: one of the 20×10 model by ``--elbo tracegraph``; both evaluated
(``pyro-dvae evaluate --k 1000 --images 1000``). ``--paper``: the sweep (or committed folder)
whose ``concrete-1xK`` and ``gaussian-dK`` runs were trained as long; ``--working``: the
``concrete-working`` preset's runs. Every number is read from the runs' files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _at(run: Path, epoch: int, key: str) -> float | None:
    return next((r[key] for r in _metrics(run) if r["epoch"] == epoch and key in r), None)


def _f(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def _seconds(run: Path) -> str:
    rows = _metrics(run)
    return f"{sum(r['seconds'] for r in rows) / len(rows):.0f}" if rows else "–"


def one_variable(enum: Path, paper: Path, sizes=(2, 4, 8, 20, 40)) -> str:
    head = (
        "| K | epochs | categorical by enum: exact −ELBO (all test images) | its −log p(x), IWAE "
        "(exact −ELBO), first 1000 | Concrete 1×K: relaxed −ELBO (all) | its one-hot model's "
        "−ELBO, first 1000 | Gaussian, size K (all) | s / epoch: enum, Concrete |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [head]
    for k in sizes:
        cat = enum / "runs" / f"categorical-1x{k}-elbo-enum"
        con, gau = paper / "runs" / f"concrete-1x{k}", paper / "runs" / f"gaussian-d{k}"
        ev_cat, ev_con, ev_gau = (_json(r / "evaluation.json") for r in (cat, con, gau))
        epochs = len(_metrics(cat))
        exact = _at(cat, epochs, "test_loss")  # summed over the K codes, all test images
        iwae = -ev_cat["test_log_likelihood"] if ev_cat else None
        exact_part = ev_cat.get("exact", {}).get("test_loss")
        rows.append(
            f"| {k} | {epochs} | {_f(exact)} | {_f(iwae)} ({_f(exact_part)}) "
            f"| {_f(_at(con, epochs, 'test_loss'))} "
            f"| {_f(ev_con.get('discrete', {}).get('test_loss'))} "
            f"| {_f(_at(gau, epochs, 'test_loss'))} | {_seconds(cat)}, {_seconds(con)} |"
        )
    return "\n".join(rows)


def twenty_by_ten(tracegraph: Path, working: Path) -> str:
    tg = next(iter(sorted((tracegraph / "runs").glob("categorical-20x10*"))), None)
    jang = next(iter(sorted((working / "runs").glob("*kl-discrete*"))), None)
    if tg is None or jang is None:
        return "(runs missing)"
    epochs = len(_metrics(tg))
    ev_tg, ev_jang = _json(tg / "evaluation.json"), _json(jang / "evaluation.json")
    return "\n".join(
        [
            "| model | epochs | test −ELBO per epoch (1 sample) | −ELBO, k = 1000 | "
            "−log p(x), IWAE | s / epoch |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| categorical 20×10, TraceGraph_ELBO, decaying baseline | {epochs} | "
            f"{_f(_at(tg, epochs, 'test_loss'))} | {_f(ev_tg.get('test_loss'))} | "
            f"{_f(-ev_tg['test_log_likelihood'] if ev_tg else None)} | {_seconds(tg)} |",
            f"| Concrete 20×10, Jang et al. (relaxed codes, discrete KL), at epoch {epochs} | "
            f"{epochs} | {_f(_at(jang, epochs, 'test_loss'))} | – | – | {_seconds(jang)} |",
            f"| the same Concrete run at its end, as its one-hot model | {len(_metrics(jang))} | "
            f"– | {_f(ev_jang.get('discrete', {}).get('test_loss'))} | "
            f"{_f(-ev_jang['discrete']['test_log_likelihood'] if 'discrete' in ev_jang else None)}"
            " | – |",
        ]
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--enum", type=Path, required=True)
    parser.add_argument("--tracegraph", type=Path, required=True)
    parser.add_argument("--paper", type=Path, default=Path("results/paper-10-epochs"))
    parser.add_argument("--working", type=Path, default=Path("results/concrete-working"))
    args = parser.parse_args(argv)
    for path in (args.enum, args.tracegraph, args.paper, args.working):
        if not (path / "runs").is_dir():
            print(f"error: {path} holds no runs/ folder", file=sys.stderr)
            return 1
    print(one_variable(args.enum, args.paper))
    print()
    print(twenty_by_ten(args.tracegraph, args.working))
    return 0


if __name__ == "__main__":
    sys.exit(main())
