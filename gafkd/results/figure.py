"""The results figures: draw the panels of `gafkd.results.curves` into PNG files.

`draw_points` (one point ± std per config, results-accuracy.png), `draw_alpha` (accuracy
against alpha, teachers as horizontal lines, results-alpha.png) and `draw_epochs` (test accuracy
against epoch, mean line and ± std band, results-epochs.png) only draw: what to draw is decided
by the pure functions in `curves`, which the tests check. `plot` is the accuracy figure from
groups. Each accuracy axis starts where its label says. matplotlib is imported inside the
drawing functions, so gafkd imports without it; the PNGs carry no version or date, so the same
results give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gafkd import rundir
from gafkd.results.curves import (
    AlphaPanel,
    AxisRange,
    EpochPanel,
    PointPanel,
    point_panels,
)
from gafkd.results.reference import Reference, header
from gafkd.results.rows import GroupRow

DPI = 110
OURS = "tab:blue"
REFERENCE = "tab:gray"
TEACHER_STYLES = ("--", ":", "-.")


def plot(groups: Sequence[GroupRow], path: Path, reference: Reference | None = None) -> Path:
    """The accuracy figure of `groups`: one panel per stage, one point ± std per config."""
    return draw_points(point_panels(groups, reference), path, _title(groups, reference))


def draw_points(panels: Sequence[PointPanel], path: Path, title: str) -> Path:
    """One panel per stage: each config's mean with a ± std error bar, the reference beside it
    as a hollow grey marker; configs with fewer seeds than planned are marked ``2/3``."""
    widths = [max(4.8, 0.5 * len(p.points) + 1.5) for p in panels] or [4.8]
    ncols = 1 if max(widths) > 6.4 else min(len(panels), 2) or 1  # many configs: one a row
    nrows = math.ceil(max(len(panels), 1) / ncols)
    figure, axes = _figure(nrows, ncols, max(widths), 4.2)
    for ax in axes[len(panels) :]:
        _empty(ax, "no runs" if not panels else "")
    for ax, panel in zip(axes, panels, strict=False):
        legend = {"ours": "ours: mean ± std over seeds", "reference": "reference"}
        for x, point in enumerate(panel.points):
            if point.mean is None:
                ax.annotate("not done", (x, panel.y.bottom), ha="center", va="bottom", fontsize=7)
            else:
                ax.errorbar(
                    x,
                    point.mean,
                    yerr=point.std or 0.0,
                    fmt="o",
                    capsize=4,
                    color=OURS,
                    clip_on=False,
                    label=legend.pop("ours", None),
                )
                if point.n_done < point.n_expected:
                    top = point.mean + (point.std or 0.0)
                    text = f"{point.n_done}/{point.n_expected}"
                    ax.annotate(text, (x, top), ha="center", va="bottom", fontsize=7)
            if point.reference is not None:
                ax.errorbar(
                    x + 0.25,
                    point.reference,
                    yerr=point.reference_std or 0.0,
                    fmt="o",
                    mfc="none",
                    capsize=4,
                    color=REFERENCE,
                    clip_on=False,
                    label=legend.pop("reference", None),
                )
        rotate = sum(len(p.label) for p in panel.points) > 40
        ax.set_xticks(
            range(len(panel.points)),
            [p.label for p in panel.points],
            fontsize=7,
            rotation=30 if rotate else 0,
            ha="right" if rotate else "center",
        )
        ax.set_xlim(-0.6, len(panel.points) - 0.4)
        _accuracy_axis(ax, panel.y, panel.stage)
    return _save(figure, path, title)


def draw_alpha(panels: Sequence[AlphaPanel], path: Path, title: str) -> Path:
    """One panel per stage and dataset: mean ± std against alpha, one line per teacher set, each
    teacher's mean as a labelled horizontal line; reference numbers dashed with hollow markers."""
    ncols = min(len(panels), 2) or 1
    nrows = math.ceil(max(len(panels), 1) / ncols)
    figure, axes = _figure(nrows, ncols, 6.4, 4.4)
    for ax in axes[len(panels) :]:
        _empty(ax, "")
    for ax, panel in zip(axes, panels, strict=False):
        alphas = sorted({a for line in panel.lines for a in line.alpha})
        for line in panel.lines:
            drawn = ax.errorbar(
                line.alpha,
                line.mean,
                yerr=line.std,
                marker="o",
                capsize=4,
                clip_on=False,
                label=f"{line.label}: mean ± std",
            )
            for a, m, s, done, expected in zip(
                line.alpha, line.mean, line.std, line.n_done, line.n_expected, strict=True
            ):
                if done < expected:
                    ax.annotate(f"{done}/{expected}", (a, m + s), ha="center", va="bottom", size=7)
            if line.reference:
                ax.errorbar(
                    [r[0] for r in line.reference],
                    [r[1] for r in line.reference],
                    yerr=[r[2] or 0.0 for r in line.reference],
                    marker="o",
                    mfc="none",
                    linestyle="--",
                    capsize=4,
                    color=drawn[0].get_color(),
                    label=f"{line.label}: reference",
                )
        for i, level in enumerate(panel.teachers):
            style = TEACHER_STYLES[i % len(TEACHER_STYLES)]
            ax.axhline(level.mean, color="0.35", linestyle=style, linewidth=1.2, label=level.label)
        if not panel.lines:
            _note(ax, "no run done")
        ax.set_xticks(alphas or [0.0, 1.0])
        ax.set_xlabel("α (weight of the image teacher)")  # noqa: RUF001
        _accuracy_axis(ax, panel.y, panel.title)
    return _save(figure, path, title)


def draw_epochs(panels: Sequence[EpochPanel], path: Path, title: str) -> Path:
    """Rows: stages, columns: datasets; in each panel one line per config (mean test accuracy
    over seeds per epoch) with a band of ± std."""
    from matplotlib.ticker import MaxNLocator

    nrows = max((p.row for p in panels), default=0) + 1
    ncols = max((p.col for p in panels), default=0) + 1
    figure, axes = _figure(nrows, ncols, 4.6 if ncols > 1 else 6.4, 3.6)
    used = {p.row * ncols + p.col for p in panels}
    for i, ax in enumerate(axes):
        if i not in used:
            _empty(ax, "no runs" if not panels else "")
    for panel in panels:
        ax = axes[panel.row * ncols + panel.col]
        for curve in panel.curves:
            low = [m - s for m, s in zip(curve.mean, curve.std, strict=True)]
            high = [m + s for m, s in zip(curve.mean, curve.std, strict=True)]
            marker = "o" if len(curve.epochs) <= 20 else None
            (line,) = ax.plot(curve.epochs, curve.mean, marker=marker, markersize=3)
            ax.fill_between(curve.epochs, low, high, color=line.get_color(), alpha=0.15, lw=0)
            if len(panel.curves) > 1 or curve.label != panel.stage:  # else the title says it
                line.set_label(curve.label)
        if not panel.curves:
            _note(ax, "no run done")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        _accuracy_axis(ax, panel.y, panel.title)
    return _save(figure, path, title)


def epochs_title() -> str:
    return (
        "Test accuracy after each epoch (metrics.jsonl).\n"
        "Line: mean over seeds; band: ± std (ddof=0); one accuracy axis per dataset."
    )


def alpha_title(groups: Sequence[GroupRow], reference: Reference | None) -> str:
    return _title(groups, reference) + "\nHorizontal lines: the teachers' mean accuracy."


def _title(groups: Sequence[GroupRow], reference: Reference | None) -> str:
    title = header(groups).replace(". ", ".\n", 1)  # the source may hold glyphs fonts lack
    return title + (f"\nReference: {reference.title}" if reference else "")


def _figure(nrows: int, ncols: int, width: float, height: float) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure  # lazily: only drawing needs matplotlib; Agg renders

    figure = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return figure, list(figure.subplots(nrows, ncols, squeeze=False).ravel())


def _accuracy_axis(ax: Any, y: AxisRange, title: str) -> None:
    ax.set_ylim(y.bottom, y.top)
    ax.set_ylabel(y.label)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def _empty(ax: Any, text: str) -> None:
    """A grid cell without a panel: no axes, `text` if any."""
    _note(ax, text)
    ax.set_axis_off()


def _note(ax: Any, text: str) -> None:
    if text:
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _save(figure: Any, path: Path, title: str) -> Path:
    figure.suptitle(title, fontsize=8)
    path = Path(path)
    with rundir.atomic_open(path, "wb") as handle:  # a crash leaves the old or the new
        figure.savefig(handle, format="png", dpi=DPI, metadata={"Software": None})
    return path
