"""The data behind each figure: plain numbers per panel and line, ready to draw, tested as data.

`point_panels` gives one point ± std per config and stage (results-accuracy.png),
`alpha_panels` accuracy against alpha per teacher set with the teachers as levels
(results-alpha.png), `epoch_panels` each config's test accuracy per epoch, mean ± std over
seeds (results-epochs.png). All three are pure; `read_histories` is the one read (each done
run's metrics.jsonl). `axis_range` chooses where an accuracy axis starts and says so in its
label. `gafkd.results.figure` draws these; nothing here imports matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gafkd import rundir
from gafkd.config import ConfigError
from gafkd.results.reference import Reference, ReferenceRow, match_reference
from gafkd.results.rows import AXIS_LABELS, AxisValue, GroupRow, RunRow, axis_text, stage_names

ALPHA = "train.alpha"
DATASET = "dataset"  # the grid's dataset axis: one panel per value
CUT_BELOW = 20.0  # an axis that would start at or below this starts at 0 instead


@dataclass(frozen=True)
class AxisRange:
    """Where an accuracy axis starts and ends, and its label, which says where it starts."""

    bottom: float
    top: float
    label: str  # "test accuracy (%)", or "test accuracy (%), axis from 60"


@dataclass(frozen=True)
class Point:
    """One config: mean ± std over its seeds, and the reference number beside it, if any."""

    group: str
    label: str  # the values of the axes that vary within its stage
    mean: float | None  # None: no seed done
    std: float | None
    n_done: int
    n_expected: int
    reference: float | None = None
    reference_std: float | None = None


@dataclass(frozen=True)
class PointPanel:
    stage: str
    points: tuple[Point, ...]
    y: AxisRange


@dataclass(frozen=True)
class AlphaLine:
    """Accuracy against alpha of the students of one teacher set (done configs only)."""

    label: str
    alpha: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_done: tuple[int, ...]
    n_expected: tuple[int, ...]
    reference: tuple[tuple[float, float, float | None], ...] = ()  # (alpha, mean, std) beside


@dataclass(frozen=True)
class TeacherLevel:
    """A teacher config's mean accuracy, drawn as a horizontal line."""

    group: str
    label: str  # "image teacher (gaf_teacher): 85.31 ± 0.42"
    mean: float
    std: float | None


@dataclass(frozen=True)
class AlphaPanel:
    stage: str
    title: str  # "student, dataset=watch"
    lines: tuple[AlphaLine, ...]
    teachers: tuple[TeacherLevel, ...]
    y: AxisRange


@dataclass(frozen=True)
class EpochCurve:
    """One config's test accuracy per epoch: mean and std (ddof=0) over the seeds read."""

    group: str
    label: str
    epochs: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n: tuple[int, ...]  # seeds at each epoch
    seeds: tuple[int, ...]  # the seeds whose metrics.jsonl was read


@dataclass(frozen=True)
class EpochPanel:
    stage: str
    title: str
    row: int  # the stage's place in the grid
    col: int  # the dataset's place, the same column in every row
    curves: tuple[EpochCurve, ...]
    y: AxisRange


# -- the axis ------------------------------------------------------------------------------------


def axis_range(lows: Iterable[float], highs: Iterable[float], what: str) -> AxisRange:
    """An accuracy axis (%) from 0, or from the ten below the lowest value when that is above
    `CUT_BELOW`, which the label then says; it ends at the next ten above the highest, at most
    100.

    >>> axis_range([63.1, 70.2], [64.0, 71.5], "test accuracy")
    AxisRange(bottom=60.0, top=80.0, label='test accuracy (%), axis from 60')
    >>> axis_range([12.0], [40.0], "test accuracy")
    AxisRange(bottom=0.0, top=50.0, label='test accuracy (%)')
    """
    low, high = min(lows, default=0.0), max(highs, default=100.0)
    bottom = 10.0 * math.floor((low - 1.0) / 10.0)
    bottom = bottom if bottom > CUT_BELOW else 0.0
    top = min(100.0, 10.0 * math.ceil((high + 1.0) / 10.0))
    top = max(top, bottom + 10.0)
    label = f"{what} (%)" + (f", axis from {bottom:g}" if bottom else "")
    return AxisRange(bottom, top, label)


def accuracy_name(metric: str) -> str:
    """What a metric's numbers are, for an axis label."""
    return "validation accuracy" if metric == "best_val_acc" else "test accuracy"


# -- one point per config ------------------------------------------------------------------------


def point_panels(
    groups: Sequence[GroupRow], reference: Reference | None = None
) -> list[PointPanel]:
    """One panel per stage, one point per config (in table order), with its reference number;
    all panels share one axis, so teachers and students compare at a glance."""
    chosen, _ = match_reference(groups, reference) if reference else ({}, ())
    what = accuracy_name(groups[0].metric) if groups else "test accuracy"
    stages = []
    for stage in stage_names(groups):
        members = [g for g in groups if g.stage == stage]
        points = tuple(
            Point(g.group, label, g.mean, g.std, g.n_done, g.n_expected, *_reference_of(g, chosen))
            for g, label in zip(members, _varying_labels(members), strict=True)
        )
        stages.append((stage, points))
    every = [p for _, points in stages for p in points]
    lows, highs = _spans((p.mean, p.std) for p in every)
    ref_lows, ref_highs = _spans((p.reference, p.reference_std) for p in every)
    y = axis_range(lows + ref_lows, highs + ref_highs, what)
    return [PointPanel(stage, points, y) for stage, points in stages]


def _varying_labels(members: Sequence[GroupRow]) -> list[str]:
    """Tick labels: the axes whose values differ within the stage, else all its axes."""
    names = list(dict.fromkeys(n for g in members for n in g.axes))
    varying = [n for n in names if len({axis_text(g.axes.get(n, "-")) for g in members}) > 1]
    shown = varying or names
    return [
        ", ".join(_axis_pair(n, g.axes[n]) for n in shown if n in g.axes) or g.stage
        for g in members
    ]


def _reference_of(
    group: GroupRow, chosen: Mapping[str, ReferenceRow]
) -> tuple[float | None, float | None]:
    row = chosen.get(group.group)
    return (None, None) if row is None else (row.mean, row.std)


def _spans(pairs: Iterable[tuple[float | None, float | None]]) -> tuple[list[float], list[float]]:
    done = [(mean, std or 0.0) for mean, std in pairs if mean is not None]
    return [m - s for m, s in done], [m + s for m, s in done]


# -- accuracy against alpha ----------------------------------------------------------------------


def alpha_panels(
    groups: Sequence[GroupRow], reference: Reference | None = None
) -> list[AlphaPanel]:
    """For each stage with a ``train.alpha`` axis, one panel per dataset: accuracy against alpha,
    one line per teacher set (and any other axis), the teachers' means as levels."""
    chosen, _ = match_reference(groups, reference) if reference else ({}, ())
    by_group = {g.group: g for g in groups}
    what = accuracy_name(groups[0].metric) if groups else "test accuracy"
    panels = []
    for stage in stage_names(groups):
        members = [g for g in groups if g.stage == stage and ALPHA in g.axes]
        by_dataset: dict[str, list[GroupRow]] = {}
        for g in members:
            by_dataset.setdefault(axis_text(g.axes.get(DATASET, "")), []).append(g)
        for dataset, panel in by_dataset.items():
            lines = _alpha_lines(panel, chosen)
            levels = _teacher_levels(panel, by_group)
            lows, highs = _spans(
                (m, s) for line in lines for m, s in zip(line.mean, line.std, strict=True)
            )
            more = [(r[1], r[2]) for line in lines for r in line.reference]
            more += [(t.mean, t.std) for t in levels]
            ref_lows, ref_highs = _spans(more)
            title = stage + (f", {DATASET}={dataset}" if dataset else "")
            y = axis_range(lows + ref_lows, highs + ref_highs, what)
            panels.append(AlphaPanel(stage, title, tuple(lines), tuple(levels), y))
    return panels


def _alpha_lines(
    members: Sequence[GroupRow], chosen: Mapping[str, ReferenceRow]
) -> list[AlphaLine]:
    keyed: dict[tuple[Any, ...], list[GroupRow]] = {}
    for g in members:
        keyed.setdefault(_line_key(g), []).append(g)
    lines = []
    for key, line in keyed.items():
        done = sorted((g for g in line if g.mean is not None), key=_alpha)
        refs = sorted((g for g in line if g.group in chosen), key=_alpha)
        lines.append(
            AlphaLine(
                label=_line_label(line[0], several=len(keyed) > 1, key=key),
                alpha=tuple(_alpha(g) for g in done),
                mean=tuple(float(g.mean or 0.0) for g in done),
                std=tuple(float(g.std or 0.0) for g in done),
                n_done=tuple(g.n_done for g in done),
                n_expected=tuple(g.n_expected for g in done),
                reference=tuple(
                    (_alpha(g), chosen[g.group].mean, chosen[g.group].std) for g in refs
                ),
            )
        )
    return lines


def _line_key(group: GroupRow) -> tuple[Any, ...]:
    others = tuple((k, axis_text(v)) for k, v in group.axes.items() if k not in (ALPHA, DATASET))
    return (tuple(sorted(group.teachers.items())), others)


def _line_label(group: GroupRow, several: bool, key: tuple[Any, ...]) -> str:
    """Its teachers' roles ("image + signal teachers"), and the axes that tell it apart from the
    panel's other lines when there are several."""
    roles = sorted(group.teachers)
    if not roles:
        text = "no teacher"
    else:
        text = " + ".join(roles) + (" teachers" if len(roles) > 1 else " teacher")
    if several:
        others = [_axis_pair(k, v) for k, v in key[1]]
        text = ", ".join([text, *others])
    return text


def _teacher_levels(
    members: Sequence[GroupRow], by_group: Mapping[str, GroupRow]
) -> list[TeacherLevel]:
    levels: dict[str, TeacherLevel] = {}
    for g in members:
        for role, name in sorted(g.teachers.items()):
            teacher = by_group.get(name)
            if name in levels or teacher is None or teacher.mean is None:
                continue
            extra = [
                _axis_pair(k, v)
                for k, v in teacher.axes.items()
                if k != DATASET and _varies(k, members, role)
            ]
            what = ", ".join([teacher.stage, *extra])
            spread = f" ± {teacher.std:.2f}" if teacher.std is not None else ""
            label = f"{role} teacher ({what}): {teacher.mean:.2f}{spread}"
            levels[name] = TeacherLevel(name, label, teacher.mean, teacher.std)
    return list(levels.values())


def _varies(axis: str, members: Sequence[GroupRow], role: str) -> bool:
    """Whether students of the panel learn from teachers that differ on `axis`."""
    return len({axis_text(g.axes.get(f"teacher.{role}.{axis}", "")) for g in members}) > 1


def _alpha(group: GroupRow) -> float:
    return float(group.axes[ALPHA])


def _axis_pair(name: str, value: AxisValue) -> str:
    return f"{AXIS_LABELS.get(name, name)}={axis_text(value)}"


# -- accuracy against epoch ----------------------------------------------------------------------


def read_histories(rows: Sequence[RunRow]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Each done run's metrics.jsonl by run id, and one warning line per run left out.

    A run is left out when its metrics.jsonl is missing, damaged (`rundir.read_metrics`) or ends
    before the run's ``train.epochs``; the warning names the file and what is wrong.
    """
    histories: dict[str, list[dict[str, Any]]] = {}
    warnings: list[str] = []
    fix = "that run is left out of the epoch curves"
    for row in rows:
        if row.status != "done" or row.run_dir is None:
            continue
        path = row.run_dir / rundir.METRICS
        try:
            history = rundir.read_metrics(row.run_dir, fix)
        except FileNotFoundError:
            warnings.append(f"warning: {path} is missing; {fix}")
            continue
        except ConfigError as error:
            warnings.append(f"warning: {error}")
            continue
        planned = row.settings.get("train.epochs")
        if isinstance(planned, int) and len(history) < planned:
            problem = f"it ends at epoch {len(history)} of {planned}"
            warnings.append(f"warning: {rundir.damaged(path, problem, fix)}")
            continue
        histories[row.id] = history
    return histories, warnings


def epoch_panels(
    rows: Sequence[RunRow], histories: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[EpochPanel]:
    """One panel per stage and dataset (rows: stages, columns: datasets), one curve per config:
    test accuracy per epoch, mean and std (ddof=0) over the seeds in `histories`. The panels of
    one dataset share their accuracy axis, so its teachers and students compare at a glance."""
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    stages = list(dict.fromkeys(r.stage for r in rows))
    datasets = list(dict.fromkeys(axis_text(r.axes.get(DATASET, "")) for r in rows))
    panels: dict[tuple[str, str], list[EpochCurve]] = {}
    for members in groups.values():
        first = members[0]
        key = (first.stage, axis_text(first.axes.get(DATASET, "")))
        curves = panels.setdefault(key, [])
        read = [r for r in members if r.id in histories]
        if read:
            curves.append(_epoch_curve(members, read, histories))
    spans: dict[str, tuple[list[float], list[float]]] = {}  # dataset -> its panels' extent
    for (_, dataset), curves in panels.items():
        lows, highs = spans.setdefault(dataset, ([], []))
        lows += [m - s for c in curves for m, s in zip(c.mean, c.std, strict=True)]
        highs += [m + s for c in curves for m, s in zip(c.mean, c.std, strict=True)]
    out = []
    for (stage, dataset), curves in panels.items():
        title = stage + (f", {DATASET}={dataset}" if dataset else "")
        y = axis_range(*spans[dataset], "test accuracy")  # one axis per column: teacher vs student
        place = stages.index(stage), datasets.index(dataset)
        out.append(EpochPanel(stage, title, *place, tuple(curves), y))
    return out


def _epoch_curve(
    members: Sequence[RunRow],
    read: Sequence[RunRow],
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
) -> EpochCurve:
    by_epoch: dict[int, list[float]] = {}
    for run in read:
        for line in histories[run.id]:
            by_epoch.setdefault(int(line["epoch"]), []).append(float(line["test_acc"]))
    epochs = sorted(by_epoch)
    values = [np.array(by_epoch[e], dtype=np.float64) for e in epochs]
    first = members[0]
    others = [_axis_pair(k, v) for k, v in first.axes.items() if k not in ("seed", DATASET)]
    label = ", ".join(others) or first.stage
    if len(read) < len(members):
        label += f" ({len(read)}/{len(members)} seeds)"
    return EpochCurve(
        group=first.group,
        label=label,
        epochs=tuple(epochs),
        mean=tuple(float(v.mean()) for v in values),
        std=tuple(float(v.std(ddof=0)) for v in values),
        n=tuple(len(v) for v in values),
        seeds=tuple(r.seed for r in read),
    )
