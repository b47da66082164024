"""The day as a picture: offered load per language and engines by tier, one panel per strategy.

matplotlib is optional (the `plot` extra); it is imported only when a plot is
asked for, with the Agg backend so no display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from loadtest.day.simulate import DayRun
from loadtest.day.traffic import LANGS, Trace

if TYPE_CHECKING:
    from matplotlib.axes import Axes

TIER_COLOURS = {"idc": "#8c8c8c", "cvm": "#4c72b0", "serverless": "#dd8452"}
LANG_COLOURS = {"zh": "#c44e52", "en": "#55a868"}


class PlotError(RuntimeError):
    """matplotlib is missing, or the file cannot be written."""


def draw_day(path: str | Path, trace: Trace, runs: Mapping[str, DayRun], title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise PlotError(f"needs matplotlib ({error}); pip install 'tidepool[plot]'") from None
    figure, axes = plt.subplots(len(runs), 1, figsize=(12, 3.6 * len(runs)), sharex=True)
    panels = [axes] if len(runs) == 1 else list(axes)
    hours = [minute / 60 for minute in range(len(trace.lang_rates("zh")))]
    top = max(
        (sum(size.values()) for run in runs.values() for size in run.timeline.sizes), default=1
    )
    for ax, (name, run) in zip(panels, runs.items(), strict=True):
        for lang in LANGS:
            ax.plot(hours, trace.lang_rates(lang), color=LANG_COLOURS[lang], lw=1.2,
                    label=f"offered {lang} (req/s)")  # fmt: skip
        ax.set_ylabel("offered load (req/s)")
        ax.set_title(f"{name}")
        sizes = ax.twinx()
        _engines(sizes, run)
        sizes.set_ylabel("engines")
        sizes.set_ylim(0, top * 1.15)
        ax.set_ylim(bottom=0)
        lines, labels = ax.get_legend_handles_labels()
        more, more_labels = sizes.get_legend_handles_labels()
        ax.legend(lines + more, labels + more_labels, loc="upper left", fontsize=8, ncol=2)
    panels[-1].set_xlabel("hour of the day")
    panels[-1].set_xticks(range(0, 25, 2))
    figure.suptitle(title)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as error:
        raise PlotError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        plt.close(figure)


def _engines(ax: Axes, run: DayRun) -> None:
    """Engines by tier, stacked, and each pool's size as a line."""
    hours = [minute / 60 for minute in run.timeline.minutes]
    stacks = [
        [sum(n for (_pool, t), n in sizes.items() if t == tier) for sizes in run.timeline.sizes]
        for tier in TIER_COLOURS
    ]
    ax.stackplot(
        hours, *stacks, colors=list(TIER_COLOURS.values()), alpha=0.25,
        labels=[f"engines {tier}" for tier in TIER_COLOURS], step="post",
    )  # fmt: skip
    for lang, pool in run.pools.items():
        counts = [sum(n for (p, _), n in size.items() if p == pool) for size in run.timeline.sizes]
        ax.step(hours, counts, where="post", color=LANG_COLOURS[lang], ls="--", lw=1,
                label=f"{pool} engines")  # fmt: skip
