"""The batch folder's format, ``runs/<grid>/.batch/``, shared by every backend and reader.

The local runner (:mod:`gafkd.experiments.runner`), the Slurm backend, ``launch``, ``status``,
``control`` and the results tables all read and write a batch through this module: its paths
(``batch_dir``, and the file names below), the plan and state files checked as they are read
(``read_plan``, ``read_state``, ``read_slurm_record``), the grid's lock (``grid_lock``),
cancellations (``request_cancel``), a run's ``launch.toml`` (``write_run_config``) and the done
check (``config_changes``: was a run's result made with its planned config?). Formats:
docs/experiments.md, "Batch state".
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gafkd import rundir
from gafkd.config import HOW_KEYS, ConfigError, dotted, dump_toml, from_dict, to_dict

STATE_DIR = ".batch"  # runs/<grid>/.batch/, the batch folder
PLAN_FILE = "plan.json"  # the planned runs (gafkd.experiments.plan writes it)
STATE_FILE = "state.json"  # the local runner's state, rewritten whole after every change
LOCK_FILE = "lock"  # held by the grid's launcher, then its runner
RUNNER_LOG = "runner.log"  # a detached runner's output
SUPERSEDED = "superseded"  # runs of another config, set aside by --rerun-changed
CANCELLED = "cancelled.json"
SLURM_FILE = "slurm.json"  # what --backend slurm submitted (gafkd.experiments.slurm)


def batch_dir(root: Path, grid: str) -> Path:
    return root / "runs" / check_grid_name(grid) / STATE_DIR


def check_grid_name(name: str) -> str:
    """A grid's name is one folder under ``runs/``: a name with ``/`` or ``..`` is refused."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ConfigError(
            f"grid name {name!r} is not a folder name under runs/ (no '/', not '.' or '..'); "
            "give the grid's `name`, as `invoke status` lists it"
        )
    return name


def read_plan(root: Path, grid: str) -> dict[str, Any]:
    path = batch_dir(root, grid) / PLAN_FILE
    if not path.exists():
        raise ConfigError(f"no batch of grid {grid!r} under {root / 'runs'}; launch it first")
    return read_plan_file(path)


def read_plan_file(path: Path) -> dict[str, Any]:
    """A batch's plan.json, checked to list runs; a damaged one is one ConfigError."""
    fix = "launch the grid again without --resume to plan it anew (finished runs are kept)"
    plan: dict[str, Any] = rundir.read_json(path, fix)
    runs = plan.get("runs")
    if not isinstance(runs, list) or not isinstance(plan.get("grid"), str):
        raise rundir.damaged(path, "it has no grid name or no list of runs", fix)
    for index, run in enumerate(runs):
        if not (isinstance(run, dict) and isinstance(run.get("id"), str)):
            raise rundir.damaged(path, f"run {index + 1} has no id", fix)
        if not isinstance(run.get("run_dir"), str) or not isinstance(run.get("needs", []), list):
            raise rundir.damaged(path, f"run {run['id']} has no run_dir or a bad needs", fix)
    return plan


def read_state(root: Path, grid: str) -> dict[str, Any] | None:
    """The runner's state.json (None before the runner first wrote it), checked; a damaged one
    is one ConfigError (the runner rewrites it whole, so deleting it loses only old errors)."""
    path = batch_dir(root, grid) / STATE_FILE
    return read_state_file(path) if path.exists() else None


def read_state_file(path: Path) -> dict[str, Any]:
    grid = path.parent.parent.name
    fix = f"delete it; `gafkd launch {grid} --resume` writes it anew (finished runs are kept)"
    state: dict[str, Any] = rundir.read_json(path, fix)
    runs, runner = state.setdefault("runs", {}), state.get("runner", {})
    if not isinstance(runs, dict) or not isinstance(runner, dict):
        raise rundir.damaged(path, "its runner or runs are not objects", fix)
    for run_id, run in runs.items():
        if not isinstance(run, dict) or not isinstance(run.get("status"), str):
            raise rundir.damaged(path, f"run {run_id} has no status", fix)
    return state


def read_slurm_record(folder: Path) -> dict[str, Any] | None:
    """What ``--backend slurm`` submitted (``slurm.json``), None for a local batch; checked."""
    path = folder / SLURM_FILE
    if not path.exists():
        return None
    fix = (
        "scancel the grid's jobs that `squeue --me` still lists, delete it and launch the grid "
        "again"
    )
    record: dict[str, Any] = rundir.read_json(path, fix)
    stages = record.get("stages")
    if not isinstance(stages, dict) or not all(
        isinstance(stage, dict)
        and "job_id" in stage
        and isinstance(stage.get("runs"), list)
        and isinstance(stage.get("tasks"), list)
        for stage in stages.values()
    ):
        raise rundir.damaged(path, "its stages lack job_id, runs or tasks", fix)
    return record


def check_results(root: Path, run_dirs: Iterable[str]) -> None:
    """Read every planned run's result.json, so that a damaged one stops a launch or a runner
    with one line before anything is written."""
    for run_dir in run_dirs:
        rundir.read_result(root / run_dir)


def grid_lock(
    root: Path, grid: str, fd: int | None = None
) -> contextlib.AbstractContextManager[int]:
    """Hold the grid's lock (yield its descriptor); a second launch or runner of the same grid is
    refused, saying who holds it. With `fd`, the lock that the launcher took and passed to this
    runner is taken over, so no other launch can come in between."""
    return rundir.exclusive(
        batch_dir(root, grid) / LOCK_FILE,
        f"grid {grid!r} is already running (runner {{holder}}); `invoke status` shows it. "
        "Wait for it to finish or stop that runner first",
        fd=fd,
    )


def is_locked(root: Path, grid: str) -> bool:
    return rundir.is_held(batch_dir(root, grid) / LOCK_FILE)


def cancelled_ids(root: Path, grid: str) -> set[str]:
    """Runs the user asked to cancel ("*" for the whole batch)."""
    path = batch_dir(root, grid) / CANCELLED
    if not path.exists():
        return set()
    fix = "delete it, then cancel the runs again (`gafkd cancel`)"
    return {str(run_id) for run_id in rundir.read_json(path, fix, expect=list)}


def request_cancel(root: Path, grid: str, run_id: str | None) -> None:
    """Record a cancellation; the runner stops the run at once and marks it cancelled."""
    wanted = cancelled_ids(root, grid) | {run_id or "*"}
    rundir.save_json(sorted(wanted), batch_dir(root, grid) / CANCELLED)


def keep_private() -> None:
    """What this process creates (run folders, batch state) is not writable by the group or
    others, so on a shared server only a batch's owner can change or cancel its runs."""
    os.umask(os.umask(0o022) | 0o022)


def write_run_config(root: Path, run: Mapping[str, Any]) -> Path:
    """Write a planned run's config, with absolute paths, to ``<run dir>/launch.toml``."""
    run_dir = Path(root / run["run_dir"]).resolve()
    config = dict(run["config"]) | {"out_dir": str(run_dir)}
    config["teachers"] = {
        role: {"run": str((root / t["run"]).resolve()), "config": ""}
        for role, t in run["config"]["teachers"].items()
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    with rundir.atomic_open(run_dir / "launch.toml") as handle:
        handle.write(dump_toml(config))
    return run_dir / "launch.toml"


# -- was a run made with the planned config? -----------------------------------------------------

WHERE_KEYS = ("name", "out_dir")  # where a run is, not what it was trained with
PATH_KEYS = ("data.path", "data.mapping", "train.init_from")  # compared as the folders they name
_NONE = object()  # a key one side does not have


def config_changes(root: Path, run: Mapping[str, Any]) -> list[str]:
    """How the config saved in a run's folder differs from its planned config, one
    ``key: saved -> planned`` each; empty when they agree or nothing was trained there yet."""
    run_dir = root / run["run_dir"]
    path = run_dir / rundir.CONFIG
    if not path.exists():
        return [] if rundir.read_result(run_dir) is None else [f"{rundir.CONFIG}: missing"]
    try:
        table = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return [f"{rundir.CONFIG}: not valid TOML"]
    with contextlib.suppress(ConfigError):  # one of an older gafkd: compare what it holds
        table = to_dict(from_dict(table))  # defaults written out, as in the plan
    moved_from = _root_of(table.get("out_dir"), run["run_dir"])
    saved = _comparable(root, table, moved_from)
    planned = _comparable(root, run["config"])
    keys = dict.fromkeys([*planned, *saved])
    return [
        f"{key}: {_shown(saved, key)} -> {_shown(planned, key)}"
        for key in keys
        if saved.get(key, _NONE) != planned.get(key, _NONE)
    ]


def _root_of(out_dir: Any, run_dir: str) -> Path | None:
    """The root a run was made under, from the run folder its saved config names; None when
    that folder does not end with the planned ``run_dir``."""
    if not isinstance(out_dir, str) or not out_dir:
        return None
    tail, parts = Path(run_dir).parts, Path(out_dir).parts
    return (
        Path(*parts[: -len(tail)])
        if len(parts) > len(tail) and parts[-len(tail) :] == tail
        else None
    )


def _comparable(
    root: Path, config: Mapping[str, Any], moved_from: Path | None = None
) -> dict[str, Any]:
    """A config as dotted keys, without where the run is, with paths resolved against `root`;
    a path under `moved_from` (the root the run was made under, when the lab folder has moved
    since) counts as the same path under `root`."""
    flat = {k: list(v) if isinstance(v, tuple) else v for k, v in dotted(config).items()}
    for key in (*WHERE_KEYS, *HOW_KEYS):
        flat.pop(key, None)
    for key, value in flat.items():
        is_path = key in PATH_KEYS or (key.startswith("teachers.") and key.endswith(".run"))
        if is_path and isinstance(value, str) and value:
            path = Path(value)
            if moved_from is not None and path.is_absolute() and path.is_relative_to(moved_from):
                path = root / path.relative_to(moved_from)
            flat[key] = str((root / path).resolve())
    return flat


def _shown(flat: Mapping[str, Any], key: str) -> str:
    return "(none)" if key not in flat else json.dumps(flat[key])
