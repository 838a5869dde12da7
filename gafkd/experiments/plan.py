"""A grid's plan: its runs expanded and checked, ``plan.json`` written, changed runs set aside.

Both backends plan the same way before they start anything: the local runner's
(:mod:`gafkd.experiments.launch`) and Slurm's (:mod:`gafkd.experiments.slurm`). ``plan_grid``
expands a grid and checks its dataset paths; ``write_plan`` writes ``runs/<grid>/.batch/plan.json``;
``set_aside_changed`` refuses the runs whose folder holds a run of another config, or moves them
aside to run again.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from gafkd import rundir
from gafkd.config import ConfigError
from gafkd.experiments.batchdir import batch_dir, check_grid_name, config_changes
from gafkd.experiments.grid import PlannedRun, expand, load_grid


def plan_grid(grid_name: str, overrides: Sequence[str], root: Path) -> list[PlannedRun]:
    """Expand and check a grid before anything runs: dataset paths must exist."""
    runs = expand(load_grid(grid_name), overrides)
    for run in runs:
        data = run.config["data"]
        needs_path = data["source"] in ("geneactiv", "npz", "pamap2")
        if needs_path or (data["source"] == "ucr" and data["path"]):
            if not data["path"]:
                raise ConfigError(
                    f"run {run.id} reads {data['source']} data but data.path is empty; "
                    "launch with --set data.path=<folder or file>"
                )
            if not (root / data["path"]).exists():
                raise ConfigError(
                    f"dataset path {data['path']} does not exist (run {run.id}); "
                    "fix it with --set data.path=<folder or file>"
                )
    return runs


def grid_name(grid: str) -> str:
    """The batch folder's name of `grid`: a grid file's ``name`` key (its runs go there too),
    else the name given (a shipped grid, or a launched grid to resume)."""
    return check_grid_name(load_grid(grid).name if grid.endswith(".toml") else grid)


def plan_rows(runs: Sequence[PlannedRun]) -> list[dict[str, Any]]:
    """Planned runs as ``plan.json`` holds them."""
    return [asdict(r) | {"needs": list(r.needs)} for r in runs]


def write_plan(root: Path, grid: str, runs: Sequence[PlannedRun], overrides: Sequence[str]) -> None:
    plan = {
        "grid": grid,
        "created": rundir.timestamp(),
        "overrides": list(overrides),
        "stages": list(dict.fromkeys(r.stage for r in runs)),
        "runs": plan_rows(runs),
    }
    rundir.save_json(plan, batch_dir(root, grid) / "plan.json")


def changed_runs(root: Path, runs: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Runs whose folder holds a run of another config, with how it differs; a run trained
    from a teacher run that is rerun is stale too."""
    changed: dict[str, list[str]] = {}
    for run in runs:  # in plan order: teachers first
        changes = config_changes(root, run)
        if not changes and (root / run["run_dir"] / rundir.CONFIG).exists():
            changes = [f"teacher {need}: rerun" for need in run["needs"] if need in changed]
        if changes:
            changed[run["id"]] = changes
    return changed


def set_aside_changed(
    root: Path,
    grid: str,
    runs: Sequence[Mapping[str, Any]],
    rerun: bool,
    *,
    dry: bool = False,
    out: IO[str] = sys.stdout,
) -> set[str]:
    """Runs made with another config never count as done: refuse them, or with `rerun` move
    their folders under ``.batch/superseded/<time>/`` so that they run again; return their ids."""
    changed = changed_runs(root, runs)
    if not changed:
        return set()
    keys = list(dict.fromkeys(change for changes in changed.values() for change in changes))
    what = (
        f"{len(changed)} run{'s' * (len(changed) > 1)} of grid {grid!r} ({_some(list(changed))}) "
        f"{'were' if len(changed) > 1 else 'was'} made with another config ({_some(keys)})"
    )
    if not rerun:
        raise ConfigError(
            f"{what}: rerun them with --rerun-changed (the old runs are moved to "
            f"{batch_dir(root, grid) / 'superseded'}/), or launch under another grid name"
        )
    folder = batch_dir(root, grid) / "superseded" / time.strftime("%Y%m%d-%H%M%S")
    while folder.exists():  # a second rerun within the second
        folder = folder.with_name(folder.name + "+")
    if dry:
        print(f"{what}; launching moves them to {folder}/ and reruns them", file=out)
        return set(changed)
    by_id = {run["id"]: run for run in runs}
    for run_id in changed:
        (folder / run_id).parent.mkdir(parents=True, exist_ok=True)
        (root / by_id[run_id]["run_dir"]).rename(folder / run_id)
    print(f"{what}; moved them to {folder}/ to run them again", file=out)
    return set(changed)


def _some(items: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
