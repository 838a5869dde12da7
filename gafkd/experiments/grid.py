"""Named experiment grids: ordered stages, each a base config times its axes.

A grid file (TOML, shipped in ``gafkd/experiments/grids/`` or given by path) looks like::

    name = "kd_alpha"
    [axes]                       # shared by every stage
    dataset = ["geneactiv14_500", "geneactiv7_500"]   # presets: grids/datasets.toml
    seed = [0, 1, 2]
    [base]                       # run-config keys for every stage
    train.epochs = 200

    [[stages]]
    name = "gaf_teacher"
    base = { student = { name = "wrn16_1", input = "image" } }

    [[stages]]
    name = "student"
    axes = { "train.alpha" = [0.1, 0.3, 0.5] }
    teachers = { image = "gaf_teacher" }      # role -> an earlier stage

A student run takes, for each role, the teacher run of that stage whose axis values agree on
every axis the two share (so seed k learns from teacher seed k); axes only the teacher stage has
become axes of the student (one student per teacher variant), named ``teacher.<role>.<axis>``.
Expanding a grid gives runs with stable, readable ids ``<stage>/<slug>/seed<k>``.
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gafkd.config import (
    ConfigError,
    apply_overrides,
    apply_values,
    check_override,
    from_dict,
    read_toml,
    to_dict,
)

AXIS_DATASET = (
    "dataset"  # an axis of preset names, merged from gafkd/experiments/grids/datasets.toml
)
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # grid and stage names: no leading dot


@dataclass(frozen=True)
class Stage:
    name: str
    base: Mapping[str, Any] = field(default_factory=dict)
    axes: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    teachers: Mapping[str, str] = field(default_factory=dict)  # role -> stage name


@dataclass(frozen=True)
class Grid:
    name: str
    stages: tuple[Stage, ...]
    base: Mapping[str, Any] = field(default_factory=dict)
    axes: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class PlannedRun:
    id: str  # <stage>/<slug>/seed<k>
    stage: str
    group: str  # the id without the seed: what results aggregate over
    axes: Mapping[str, Any]
    run_dir: str  # relative to the batch root
    needs: tuple[str, ...]
    epochs: int
    config: Mapping[str, Any]  # resolved RunConfig as nested dicts


# -- loading -------------------------------------------------------------------------------------


def shipped_grids() -> dict[str, Path]:
    folder = Path(str(resources.files("gafkd.experiments") / "grids"))
    return {p.stem: p for p in sorted(folder.glob("*.toml")) if p.stem not in _NOT_GRIDS}


def load_grid(name_or_path: str) -> Grid:
    """A shipped grid by name, or a grid file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        shipped = shipped_grids()
        if name_or_path not in shipped:
            raise ConfigError(
                f"unknown grid {name_or_path!r}; shipped grids: {', '.join(shipped)} "
                "(or give the path of a grid .toml file)"
            )
        path = shipped[name_or_path]
    return parse_grid(read_toml(path, "grid file"), str(path))


def parse_grid(table: Mapping[str, Any], where: str = "grid") -> Grid:
    unknown = sorted(set(table) - {"name", "description", "axes", "base", "stages"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; a grid has name, axes, base, stages"
        )
    name = check_name(table.get("name", Path(where).stem), "grid name", where)
    stages = []
    for i, stage in enumerate(table.get("stages", [])):
        bad = sorted(set(stage) - {"name", "base", "axes", "teachers"})
        if bad or "name" not in stage:
            raise ConfigError(f"{where}: stage {i + 1} needs a name and only base, axes, teachers")
        stages.append(
            Stage(
                name=check_name(stage["name"], "stage name", where),
                base=stage.get("base", {}),
                axes=_axes(stage.get("axes", {}), f"{where}: stage {stage['name']}"),
                teachers=dict(stage.get("teachers", {})),
            )
        )
    if not stages:
        raise ConfigError(f"{where}: a grid needs at least one [[stages]] entry")
    names = [s.name for s in stages]
    for i, stage in enumerate(stages):
        for role, teacher in stage.teachers.items():
            if teacher not in names[:i]:
                raise ConfigError(
                    f"{where}: stage {stage.name!r} names teacher stage {teacher!r} for role "
                    f"{role!r}, which is not an earlier stage (stages: {', '.join(names)})"
                )
    return Grid(
        name=name,
        stages=tuple(stages),
        base=table.get("base", {}),
        axes=_axes(table.get("axes", {}), where),
        description=str(table.get("description", "")),
    )


def check_name(name: Any, what: str, where: str = "") -> str:
    """A grid or stage name: it becomes a folder (``runs/<grid>/<stage>``) and a Slurm job name
    (``gafkd-<grid>-<stage>``), so only letters, digits, '_', '-' and '.', not starting with '.'.

    >>> check_name("kd_alpha", "grid name")
    'kd_alpha'
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        at = f"{where}: " if where else ""
        raise ConfigError(
            f"{at}{what} {name!r} is not a plain name; use letters, digits, '_', '-' and '.' "
            "(not first), e.g. kd_alpha: it names folders and Slurm jobs"
        )
    return name


def dataset_presets() -> dict[str, dict[str, Any]]:
    path = Path(str(resources.files("gafkd.experiments") / "grids" / "datasets.toml"))
    return tomllib.loads(path.read_text())


# -- expansion -----------------------------------------------------------------------------------


def expand(grid: Grid, overrides: Sequence[str] = (), root: str = "runs") -> list[PlannedRun]:
    """All runs of a grid, in dependency order, each config validated.

    ``overrides`` are ``key=value``: a key that names an axis replaces that axis' values (a
    list or one value); any other key is set in every run's config.
    """
    axis_overrides, config_overrides = _split_overrides(grid, overrides)
    presets = dataset_presets()
    grid_axes = {**grid.axes, **{k: v for k, v in axis_overrides.items() if k in grid.axes}}
    runs: list[PlannedRun] = []
    by_stage: dict[str, list[PlannedRun]] = {}
    for stage in grid.stages:
        stage_axes = {**stage.axes, **{k: v for k, v in axis_overrides.items() if k in stage.axes}}
        axes = {**grid_axes, **stage_axes}
        planned = []
        for values in itertools.product(*axes.values()):
            own = dict(zip(axes, values, strict=True))
            for picks in _teacher_choices(stage, own, by_stage):
                planned.append(_plan_run(grid, stage, own, picks, presets, config_overrides, root))
        by_stage[stage.name] = planned
        runs.extend(planned)
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"grid {grid.name!r}: two runs get the id {duplicate!r}; add an axis")
    return runs


def _plan_run(
    grid: Grid,
    stage: Stage,
    own: dict[str, Any],
    picks: dict[str, tuple[PlannedRun, dict[str, Any]]],
    presets: Mapping[str, Any],
    config_overrides: Sequence[str],
    root: str,
) -> PlannedRun:
    axes = dict(own)
    for role, (_, teacher_only) in picks.items():
        axes |= {f"teacher.{role}.{k}": v for k, v in teacher_only.items()}
    seed = axes.get("seed", 0)
    slug = _slug({k: v for k, v in axes.items() if k != "seed"})
    run_id = f"{stage.name}/{slug}/seed{seed}"
    table = _merge(grid.base, stage.base)
    if AXIS_DATASET in own:
        name = own[AXIS_DATASET]
        if name not in presets:
            raise ConfigError(
                f"grid {grid.name!r}: unknown dataset {name!r}; presets: {', '.join(presets)}"
            )
        table = _merge(table, presets[name])
    table = apply_values(table, {k: v for k, v in own.items() if k not in (AXIS_DATASET, "seed")})
    table = apply_overrides(table, config_overrides)
    run_dir = f"{root}/{grid.name}/{run_id}"
    table |= {"name": f"{grid.name}/{run_id}", "seed": seed, "out_dir": run_dir}
    table["teachers"] = {role: {"run": run.run_dir} for role, (run, _) in picks.items()}
    try:
        config = from_dict(table)
    except ConfigError as error:
        raise ConfigError(f"grid {grid.name!r}, run {run_id}: {error}") from None
    return PlannedRun(
        id=run_id,
        stage=stage.name,
        group=f"{stage.name}/{slug}",
        axes=axes,
        run_dir=run_dir,
        needs=tuple(run.id for run, _ in picks.values()),
        epochs=config.train.epochs,
        config=to_dict(config),
    )


def _teacher_choices(
    stage: Stage, own: Mapping[str, Any], by_stage: Mapping[str, list[PlannedRun]]
) -> list[dict[str, tuple[PlannedRun, dict[str, Any]]]]:
    """For each role, the teacher runs that agree with `own` on shared axes; their product."""
    options: list[list[tuple[str, PlannedRun, dict[str, Any]]]] = []
    for role, teacher_stage in stage.teachers.items():
        matches = []
        for run in by_stage[teacher_stage]:
            shared = {k for k in run.axes if k in own}
            if all(run.axes[k] == own[k] for k in shared):
                matches.append((role, run, {k: v for k, v in run.axes.items() if k not in own}))
        if not matches:
            raise ConfigError(
                f"stage {stage.name!r} needs a {role} teacher from stage {teacher_stage!r} "
                f"with {dict(own)}, and that stage has none; align their axes"
            )
        options.append(matches)
    return [
        {role: (run, only) for role, run, only in combo} for combo in itertools.product(*options)
    ]


def _split_overrides(
    grid: Grid, overrides: Sequence[str]
) -> tuple[dict[str, tuple[Any, ...]], list[str]]:
    axis_names = set(grid.axes) | {k for s in grid.stages for k in s.axes}
    axis_overrides: dict[str, tuple[Any, ...]] = {}
    config_overrides = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        key = key.strip()
        if sep and key in axis_names:
            value = check_override(item)
            if value == []:
                axes = (grid.axes, *(stage.axes for stage in grid.stages))
                example = next(a[key][0] for a in axes if key in a)
                shown = example if isinstance(example, str) else json.dumps(example)
                raise ConfigError(
                    f"--set {item!r} leaves axis {key!r} of grid {grid.name!r} without values; "
                    f"give at least one, e.g. --set {key}={shown}"
                )
            axis_overrides[key] = tuple(value) if isinstance(value, list) else (value,)
        elif sep and key == AXIS_DATASET:
            raise ConfigError(f"grid {grid.name!r} has no dataset axis; set data.* keys instead")
        else:
            config_overrides.append(item)
    from_dict(apply_overrides({}, config_overrides))  # an unknown key is an error before any run
    return axis_overrides, config_overrides


def _axes(table: Mapping[str, Any], where: str) -> dict[str, tuple[Any, ...]]:
    axes = {}
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: axis {key!r} must be a non-empty list, got {values!r}")
        axes[key] = tuple(values)
    return axes


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _slug(axes: Mapping[str, Any]) -> str:
    parts = []
    for key, value in axes.items():
        if key.startswith("teacher."):  # teacher.<role>.<axis>: the role names it
            short = key.split(".")[1]
        else:
            short = _SHORT.get(key, key.rsplit(".", 1)[-1])
        parts.append(f"{short}-{value}")
    return re.sub(r"[^A-Za-z0-9.+=_-]", "-", "_".join(parts)) or "default"


_NOT_GRIDS = {"datasets"}
_SHORT = {"student.name": "model"}
