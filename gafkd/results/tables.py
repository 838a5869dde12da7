"""Results of a grid: one row per planned run, mean ± std over seeds, tables and figures.

`collect` reads a grid's ``.batch/plan.json`` and each run's ``result.json`` (the only reads
here; `curves.read_histories` reads the metrics.jsonl files); `aggregate`, `markdown` and
`to_csv` are pure; `write_all` writes results.md, results.csv and the PNG figures (`FIGURES`).
The std over seeds is the population std (ddof=0), as in the lab's notes, whose every recorded
mean and std checks out that way.

The rows and metric names live in `gafkd.results.rows`, reference files (`load_reference`,
`match_reference`, `LAB_REFERENCE`) in `gafkd.results.reference` and the figure (`plot`) in
`gafkd.results.figure`; the package `gafkd.results` names them all, the one entry point.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gafkd import rundir
from gafkd.config import ConfigError, dotted
from gafkd.experiments.batchdir import read_plan_file, read_state_file
from gafkd.results.curves import alpha_panels, epoch_panels, read_histories
from gafkd.results.figure import alpha_title, draw_alpha, draw_epochs, epochs_title, plot
from gafkd.results.reference import Reference, header, load_reference, match_reference
from gafkd.results.rows import (
    AXIS_LABELS,
    METRICS,
    AxisValue,
    GroupRow,
    Metric,
    RunRow,
    axis_names,
    axis_text,
    stage_names,
)

FIGURES = {  # kind -> (file name beside results.md, what it shows)
    "accuracy": ("results-accuracy.png", "accuracy per config: mean ± std over seeds"),
    "alpha": ("results-alpha.png", "accuracy against α, the teachers as horizontal lines"),  # noqa: RUF001
    "epochs": ("results-epochs.png", "test accuracy against epoch: mean ± std over seeds"),
}

# -- reading the runs ----------------------------------------------------------------------------


def collect(root: Path) -> list[RunRow]:
    """One row per run listed in the grid's plan.json, in plan order.

    `root` is the grid folder ``runs/<grid>`` or its ``.batch`` folder. A run is done when its
    ``result.json`` exists; failed when ``state.json`` says so, or when ``error.txt`` exists and
    the runner is not retrying it; missing otherwise.
    """
    grid_root, batch_dir = _locate(Path(root))
    plan = read_plan_file(batch_dir / "plan.json")
    state_path = batch_dir / "state.json"
    states = read_state_file(state_path)["runs"] if state_path.exists() else {}
    groups = {str(run["run_dir"]): str(run["group"]) for run in plan["runs"]}
    return [_run_row(run, grid_root, states.get(run["id"], {}), groups) for run in plan["runs"]]


def _locate(root: Path) -> tuple[Path, Path]:
    if (root / "plan.json").exists():
        return root.parent, root
    if (root / ".batch" / "plan.json").exists():
        return root, root / ".batch"
    raise ConfigError(
        f"{root} holds no .batch/plan.json; pass a grid folder runs/<grid> written by "
        "`invoke launch --grid NAME` (or its .batch folder)"
    )


def _run_row(
    run: Mapping[str, Any], grid_root: Path, state: Mapping[str, Any], groups: Mapping[str, str]
) -> RunRow:
    axes: dict[str, AxisValue] = dict(run.get("axes", {}))
    seed = int(axes.get("seed", run.get("config", {}).get("seed", 0)))
    settings = _flatten(run.get("config", {}))
    run_dir = _run_dir(grid_root, str(run["run_dir"]), str(run["id"]))
    teachers = _teachers(run.get("config", {}).get("teachers", {}), groups)
    row = partial(
        RunRow,
        run["id"],
        run["stage"],
        run["group"],
        axes,
        seed,
        settings=settings,
        run_dir=run_dir,
        teachers=teachers,
    )
    result = rundir.read_result(run_dir)
    if result is not None:
        metrics: dict[str, float] = {}
        for key in (k for k in METRICS if k in result):
            if not isinstance(result[key], int | float):
                path = run_dir / rundir.RESULT
                raise rundir.damaged(path, f"{key} is not a number", rundir.RESULT_FIX)
            metrics[key] = float(result[key])
        if "reported_acc" not in metrics:
            path = run_dir / rundir.RESULT
            raise rundir.damaged(path, "it has no reported_acc", rundir.RESULT_FIX)
        return row("done", metrics["reported_acc"], str(result.get("report", "")), metrics)
    runner = str(state.get("status", ""))  # queued | running | failed | ... ; "" without state
    error = rundir.error_line(run_dir)
    if runner == "failed" or (error is not None and runner not in ("queued", "running")):
        return row("failed", None, "", detail=str(state.get("error") or error or "failed"))
    return row("missing", None, "", detail=runner)


def _teachers(table: Any, groups: Mapping[str, str]) -> dict[str, str]:
    """Role -> the group of the teacher run a run learns from (config ``teachers.<role>.run``
    is the teacher's planned run_dir); a teacher from outside the grid is left out."""
    if not isinstance(table, Mapping):
        return {}
    runs = {role: str(t.get("run", "")) for role, t in table.items() if isinstance(t, Mapping)}
    return {role: groups[run] for role, run in runs.items() if run in groups}


def _run_dir(grid_root: Path, run_dir: str, run_id: str) -> Path:
    """Where a plan's run_dir is now: under `grid_root` when it ends with ``<grid>/<id>`` (so a
    grid folder copied elsewhere still reads), else as written."""
    path = Path(run_dir)
    tail = (grid_root.resolve().name, *Path(run_id).parts)
    if path.parts[-len(tail) :] == tail:
        return grid_root.joinpath(*tail[1:])
    return path


def _flatten(table: Mapping[str, Any]) -> dict[str, AxisValue]:
    """Scalar leaves of nested dicts under dotted keys: {"student": {"name": x}} -> student.name."""
    return {k: v for k, v in dotted(table).items() if isinstance(v, str | int | float)}


# -- aggregating ---------------------------------------------------------------------------------


def aggregate(rows: Sequence[RunRow], metric: Metric = "reported_acc") -> list[GroupRow]:
    """Mean and std (ddof=0, as the lab's notes) of `metric` over the seeds of each group.

    Groups keep the order of their first run. A done run without `metric` (e.g. best_val_acc of
    a run with no validation split) is listed as not averaged.

    >>> rows = [RunRow(f"s/a/seed{k}", "s", "s/a", {"seed": k}, k, "done", v, "final",
    ...                {"reported_acc": v}) for k, v in enumerate([63.0491, 63.3270, 62.9797])]
    >>> group = aggregate(rows)[0]
    >>> round(group.mean, 4), round(group.std, 4), group.flag
    (63.1186, 0.1501, '3/3 seeds')
    """
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r} is unknown; expected one of {', '.join(METRICS)}")
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    out = []
    for group, members in groups.items():
        done = [r for r in members if r.status == "done" and metric in r.metrics]
        values = np.array([r.metrics[metric] for r in done], dtype=np.float64)
        reports = {r.report for r in done}
        not_done = tuple((r.seed, _why(r, metric)) for r in members if r not in done)
        out.append(
            GroupRow(
                group=group,
                stage=members[0].stage,
                axes={k: v for k, v in members[0].axes.items() if k != "seed"},
                settings=members[0].settings,
                teachers=members[0].teachers,
                metric=metric,
                report=reports.pop() if len(reports) == 1 else ("mixed" if reports else ""),
                seeds=tuple(r.seed for r in done),
                values=tuple(float(v) for v in values),
                n_expected=len(members),
                not_done=not_done,
                mean=float(values.mean()) if len(values) else None,
                std=float(values.std(ddof=0)) if len(values) else None,
            )
        )
    return out


def _why(row: RunRow, metric: str) -> str:
    if row.status == "done":
        return f"has no {metric}"
    if row.status == "failed":
        return "failed"
    return row.detail if row.detail in ("queued", "running", "blocked", "cancelled") else "missing"


# -- tables --------------------------------------------------------------------------------------


def markdown(
    groups: Sequence[GroupRow],
    reference: Reference | None = None,
    title: str = "",
    figures: Sequence[tuple[str, str]] = (),
) -> str:
    """One table per stage, ready to paste into lab notes.

    With a reference, a stage with any matched row gets its mean ± std, the difference Δ and the
    row's label; reference rows beside no config are listed below the tables. `figures`,
    (caption, file name) pairs, are linked at the end.
    """
    chosen, unused = match_reference(groups, reference) if reference else ({}, ())
    lines = [f"# {title}", ""] if title else []
    lines += [header(groups, reference), ""]
    for stage in stage_names(groups):
        members = [g for g in groups if g.stage == stage]
        names = axis_names(members)
        compared = any(g.group in chosen for g in members)
        columns = [AXIS_LABELS.get(n, n) for n in names] + ["accuracy", "seeds"]
        columns += ["reference", "Δ", "reference row"] if compared else []
        lines += [f"## {stage}", "", _md_row(columns), _md_row(["---"] * len(columns))]
        for g in members:
            cells = [axis_text(g.axes[n]) if n in g.axes else "-" for n in names]
            cells += [_mean_std(g.mean, g.std), g.flag]
            ref = chosen.get(g.group)
            if ref is not None:
                delta = f"{g.mean - ref.mean:+.2f}" if g.mean is not None else ""
                cells += [_mean_std(ref.mean, ref.std), delta, ref.describe()]
            elif compared:
                cells += ["", "", ""]
            lines.append(_md_row(cells))
        lines.append("")
    if unused:
        lines += [f"Reference rows beside no config of this grid ({len(unused)}):", ""]
        lines += [f"- {r.describe()}" for r in unused] + [""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{caption}]({name})\n" for caption, name in figures]
    return "\n".join(lines)


def to_csv(groups: Sequence[GroupRow], reference: Reference | None = None) -> str:
    """One line per group: stage, group, axis values, metric, mean, std (ddof=0), counts, flag."""
    chosen, _ = match_reference(groups, reference) if reference else ({}, ())
    names = axis_names(groups)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = ["stage", "group", *names, "metric", "report", "mean", "std_ddof0"]
    columns += ["n_done", "n_expected", "flag", "values"]
    if reference:
        columns += ["ref_mean", "ref_std", "ref_n", "ref_row"]
    writer.writerow(columns)
    for g in groups:
        cells: list[object] = [g.stage, g.group, *(g.axes.get(n, "") for n in names)]
        cells += [g.metric, g.report, _blank(g.mean), _blank(g.std), g.n_done, g.n_expected]
        cells += [g.flag, " ".join(repr(v) for v in g.values)]
        if reference:
            ref = chosen.get(g.group)
            cells += [ref.mean, _blank(ref.std), _blank(ref.n), ref.describe()] if ref else [""] * 4
        writer.writerow(cells)
    return out.getvalue()


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _blank(value: object) -> object:
    return "" if value is None else value


# -- files ---------------------------------------------------------------------------------------


def write_all(
    root: Path, reference: Reference | Path | str | None = None, metric: Metric = "reported_acc"
) -> dict[str, Path]:
    """Write results.md, results.csv and the figures (`FIGURES`) into ``runs/<grid>/``.

    Returns their paths by kind: markdown, csv, accuracy, alpha (only for a grid with a
    ``train.alpha`` axis) and epochs. A done run whose metrics.jsonl is missing or damaged is
    left out of the epoch curves with one warning line on stderr naming the file.
    """
    grid_root, _ = _locate(Path(root))
    if reference is not None and not isinstance(reference, Reference):
        reference = load_reference(reference)
    runs = collect(grid_root)
    groups = aggregate(runs, metric)
    histories, warnings = read_histories(runs)
    for line in warnings:
        print(line, file=sys.stderr)
    alpha = alpha_panels(groups, reference)
    figures = {kind: grid_root / name for kind, (name, _) in FIGURES.items()}
    if not alpha:
        del figures["alpha"]
    paths = {"markdown": grid_root / "results.md", "csv": grid_root / "results.csv", **figures}
    title = f"Results: {grid_root.resolve().name}"
    links = [(FIGURES[kind][1], path.name) for kind, path in figures.items()]
    table = markdown(groups, reference, title=title, figures=links)
    with rundir.atomic_open(paths["markdown"]) as handle:  # a crash leaves the old or the new
        handle.write(table)
    with rundir.atomic_open(paths["csv"]) as handle:
        handle.write(to_csv(groups, reference))
    plot(groups, paths["accuracy"], reference)
    if alpha:
        draw_alpha(alpha, paths["alpha"], alpha_title(groups, reference))
    draw_epochs(epoch_panels(runs, histories), paths["epochs"], epochs_title())
    return paths
