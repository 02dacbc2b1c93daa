"""Training curves of runs: −ELBO, reconstruction and KL per epoch, and the temperature of a
run that anneals it, as ``metrics.jsonl`` holds them. ``curve_series`` reads the numbers apart
from the drawing, so a test can check that the figure holds exactly them."""

from __future__ import annotations

from .plotting import epoch_axis, figure, point_marker

#: the per-epoch numbers a curve figure draws: (metric suffix, panel title)
CURVE_PANELS = (
    ("loss", "−ELBO (nats)"),
    ("recon", "reconstruction −log p(x|z) (nats)"),
    ("kl", "KL(q‖p) (nats)"),
)


def curve_series(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Per metric (``train_loss``, ``test_kl``, ``temperature``, ...): epochs and values,
    as ``metrics.jsonl`` holds them (an epoch without the metric is skipped)."""
    names = [f"{split}_{part}" for part, _ in CURVE_PANELS for split in ("train", "test")]
    series = {}
    for name in [*names, "temperature"]:
        rows = [r for r in records if name in r]
        if rows:
            series[name] = ([r["epoch"] for r in rows], [float(r[name]) for r in rows])
    return series


def draw_curves(runs: list[tuple[str, list[dict]]], title: str, splits=("train", "test")):
    """−ELBO, reconstruction and KL per epoch of each run (train dashed, test solid; on a
    short curve, train's markers hollow, test's filled), and the temperature where a run
    anneals it. A run that trains an importance-weighted bound has no train KL; its train
    loss is that bound, and its legend says so."""
    series = [(label, curve_series(records)) for label, records in runs]
    tempered = any(len(set(s.get("temperature", ((), ()))[1])) > 1 for _, s in series)
    fig, axes = figure(1, 3 + tempered, figsize=(4.6 * (3 + tempered), 4.0), squeeze=False)
    axes = axes[0]
    from matplotlib import colormaps

    colours = colormaps["tab10"]
    for i, (label, s) in enumerate(series):
        for ax, (part, name) in zip(axes, CURVE_PANELS, strict=False):
            for split, style in (("train", "--"), ("test", "-")):
                key = f"{split}_{part}"
                if split in splits and key in s:
                    bound = key == "train_loss" and "train_kl" not in s  # train_parts
                    ax.plot(
                        *s[key],
                        style,
                        marker=point_marker(len(s[key][0])),
                        ms=4,
                        mfc="none" if split == "train" else None,
                        color=colours(i % 10),
                        label=f"{label}, {split}" + (" (IWAE bound)" if bound else ""),
                    )
            ax.set_title(name, fontsize=10)
        if tempered and "temperature" in s:
            marker = point_marker(len(s["temperature"][0]))
            axes[3].plot(*s["temperature"], color=colours(i % 10), label=label, marker=marker, ms=4)
            axes[3].set_title("posterior temperature τ", fontsize=10)
    for ax in axes:
        epoch_axis(ax)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
