"""The results figure: one matplotlib panel per stage, our accuracies beside the reference's.

`plot` writes a PNG (the only effect). A stage with a ``train.alpha`` axis is drawn as accuracy
against alpha, one line per combination of the other axes; any other stage as bars. matplotlib
is imported inside `plot`, so gafkd imports without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gafkd.results.reference import Reference, ReferenceRow, header, match_reference
from gafkd.results.rows import AXIS_LABELS, GroupRow, axis_names, axis_text, stage_names


def plot(groups: Sequence[GroupRow], path: Path, reference: Reference | None = None) -> Path:
    """A PNG with one panel per stage: accuracy against alpha with error bars (std) for a stage with
    a train.alpha axis, one line per other-axis combination; bars with error bars otherwise.
    Reference numbers are drawn beside: hollow markers on dashed lines, hatched bars."""
    from matplotlib.figure import Figure  # lazily: only plots need matplotlib; Agg renders PNG

    chosen, _ = match_reference(groups, reference) if reference else ({}, ())
    stages = stage_names(groups) or ["no runs"]
    ncols = min(len(stages), 2)
    nrows = math.ceil(len(stages) / ncols)
    figure = Figure(figsize=(6.4 * ncols, 4.4 * nrows), layout="constrained")
    panels = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in panels[len(stages) :]:
        ax.set_axis_off()
    for ax, stage in zip(panels, stages, strict=False):
        members = [g for g in groups if g.stage == stage]
        if any("train.alpha" in g.axes for g in members):
            _alpha_panel(ax, members, chosen)
        else:
            _bar_panel(ax, members, chosen)
        ax.set_title(stage)
        ax.set_ylabel("accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    title = header(groups).replace(". ", ".\n", 1)  # the source may hold glyphs fonts lack
    figure.suptitle(title + (f"\nReference: {reference.title}" if reference else ""), fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)
    return path


def _alpha_panel(ax: Any, members: Sequence[GroupRow], chosen: Mapping[str, ReferenceRow]) -> None:
    lines: dict[str, list[GroupRow]] = {}
    for g in members:
        other = [
            f"{AXIS_LABELS.get(k, k)}={axis_text(v)}"
            for k, v in g.axes.items()
            if k != "train.alpha"
        ]
        lines.setdefault(", ".join(other) or "ours", []).append(g)
    for label, line in lines.items():
        done = sorted((g for g in line if g.mean is not None), key=_alpha)
        x, y, err = [_alpha(g) for g in done], [g.mean for g in done], [g.std for g in done]
        drawn = ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        refs = sorted((g for g in line if g.group in chosen), key=_alpha)
        if refs:  # hollow markers, dashed, a little to the right
            ax.errorbar(
                [_alpha(g) + 0.01 for g in refs],
                [chosen[g.group].mean for g in refs],
                yerr=[chosen[g.group].std or 0.0 for g in refs],
                marker="o",
                mfc="none",
                linestyle="--",
                capsize=3,
                color=drawn[0].get_color(),
                label=f"{label} (reference)",
            )
    ax.set_xlabel("alpha (weight of the image teacher)")
    ax.legend(fontsize=7)


def _alpha(group: GroupRow) -> float:
    return float(group.axes["train.alpha"])


def _bar_panel(ax: Any, members: Sequence[GroupRow], chosen: Mapping[str, ReferenceRow]) -> None:
    shift = 0.2 if chosen else 0.0
    width = 0.4 if chosen else 0.8
    legend = {"ours": "ours", "reference": "reference"}  # each label once
    lows: list[float] = []
    for i, g in enumerate(members):
        if g.mean is not None:
            ax.bar(
                i - shift,
                g.mean,
                width,
                yerr=g.std,
                capsize=3,
                color="tab:blue",
                label=legend.pop("ours", None),
            )
            lows.append(g.mean - (g.std or 0.0))
            if g.n_done < g.n_expected:  # flag seeds not averaged
                text = f"{g.n_done}/{g.n_expected}"
                top = g.mean + (g.std or 0.0)
                ax.annotate(text, (i - shift, top), ha="center", va="bottom", fontsize=7)
        ref = chosen.get(g.group)
        if ref is not None:
            ax.bar(
                i + shift,
                ref.mean,
                width,
                yerr=ref.std,
                capsize=3,
                fill=False,
                hatch="//",
                edgecolor="tab:gray",
                label=legend.pop("reference", None),
            )
            lows.append(ref.mean - (ref.std or 0.0))
    varying = [
        n for n in axis_names(members) if len({axis_text(g.axes.get(n, "-")) for g in members}) > 1
    ]
    ticks = [", ".join(axis_text(g.axes.get(n, "-")) for n in varying) for g in members]
    ax.set_xticks(range(len(members)), ticks, fontsize=7, rotation=30, ha="right")
    if lows:  # accuracies differ by tenths: do not start the bars at 0
        ax.set_ylim(bottom=max(0.0, min(lows) - 5.0))
        ax.legend(fontsize=7)
