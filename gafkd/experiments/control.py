"""What a user does to a launched batch: cancel runs, read a run's log.

Both look runs up by their id (``student/dataset-watch_alpha-0.3/seed0``) in the plans under
``<root>/runs/*/.batch/``; an id that is in no plan is an error that suggests close ones.
"""

from __future__ import annotations

import difflib
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

from gafkd.config import ConfigError
from gafkd.experiments.batchdir import (
    STATE_DIR,
    batch_dir,
    cancelled_ids,
    is_locked,
    read_plan,
    read_slurm_record,
    read_state,
    request_cancel,
)
from gafkd.experiments.hostqueue import user_name


def find_run(root: Path, run_id: str, grid: str | None = None) -> tuple[str, dict[str, Any]]:
    """(grid, planned run) of a run id, searching one grid or every launched grid."""
    grids = (
        [grid] if grid else sorted(p.parent.name for p in (root / "runs").glob(f"*/{STATE_DIR}"))
    )
    known: list[str] = []
    damaged: list[ConfigError] = []
    for name in grids:
        try:
            plan = read_plan(root, name)
        except ConfigError as error:  # another grid's damaged plan: only if the run is not found
            if grid:
                raise
            damaged.append(error)
            continue
        for run in plan["runs"]:
            if run["id"] == run_id:
                return name, run
            known.append(run["id"])
    if damaged:
        raise damaged[0]
    close = difflib.get_close_matches(run_id, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `invoke status` lists runs"
    raise ConfigError(f"no run {run_id!r} in the launched grids under {root / 'runs'}{hint}")


def cancel(root: Path, grid: str, run_id: str | None = None, out: IO[str] = sys.stdout) -> None:
    """Cancel one run, or the whole batch: running runs stop (their last epoch is checkpointed)
    and are marked cancelled, not failed; launching the grid again resumes them."""
    check_owner(root, grid)
    read_plan(root, grid)  # the grid must have been launched
    if run_id is not None:
        find_run(root, run_id, grid)
    cancelled_ids(root, grid)  # read everything first: a damaged file stops before any write
    if read_slurm_record(batch_dir(root, grid)) is not None:
        from gafkd.experiments import slurm

        slurm.cancel(root, grid, run_id, out)
        return
    state = read_state(root, grid)
    request_cancel(root, grid, run_id)
    if run_id is None:
        from gafkd.experiments import reboot

        reboot.remove(root, grid)  # a cancelled batch is not resumed at boot
    what = f"run {run_id}" if run_id else f"every queued and running run of {grid}"
    if is_locked(root, grid):
        print(f"cancelling {what}; the runner stops it within a second", file=out)
    else:
        print(f"{what} marked cancelled; no runner is live, so nothing was running", file=out)
        if state is not None:
            _mark_cancelled(root, grid, run_id, state)


def check_owner(root: Path, grid: str) -> None:
    """Only the user who launched a batch (or root) may cancel its runs: a batch folder of
    another user, or a live runner of another user, is refused before anything is touched."""
    me, folder = os.geteuid(), batch_dir(root, grid)
    if me == 0 or not folder.is_dir():
        return  # root may; a grid that was never launched is read_plan's error
    owner = folder.stat().st_uid
    runner = _runner_owner(root, grid) if owner == me else None
    owner = runner if runner is not None else owner
    if owner != me:
        raise ConfigError(
            f"the batch of grid {grid!r} under {root} belongs to {user_name(owner)}, not to "
            f"{user_name(me)}: only its owner can cancel its runs. Your own batches are in your "
            "lab folder (invoke status --host lists them)"
        )


def _runner_owner(root: Path, grid: str) -> int | None:
    """The uid of the grid's live runner on this machine, or None when none runs here."""
    import psutil  # type: ignore[import-untyped, unused-ignore]

    state = read_state(root, grid) if is_locked(root, grid) else None
    if state is None:
        return None
    runner = state.get("runner") or {}
    if runner.get("host") != socket.gethostname():
        return None
    try:
        return int(psutil.Process(int(runner["pid"])).uids().real)
    except (psutil.Error, TypeError, ValueError):
        return None


def show_log(
    root: Path,
    run_id: str,
    grid: str | None = None,
    follow: bool = False,
    out: IO[str] = sys.stdout,
) -> None:
    """Print a run's log; with `follow`, keep printing until the run stops running."""
    name, run = find_run(root, run_id, grid)
    path = root / run["run_dir"] / "log.txt"
    position = 0
    while True:
        if path.exists():
            with path.open("rb") as handle:
                handle.seek(position)
                chunk = handle.read()
                position += len(chunk)
            out.write(chunk.decode(errors="replace"))
            out.flush()
        if not follow or not _running(root, name, run_id):
            break
        time.sleep(0.5)
    if not path.exists():
        print(f"run {run_id} has no log yet (it has not started)", file=out)


def _running(root: Path, grid: str, run_id: str) -> bool:
    state = read_state(root, grid) if is_locked(root, grid) else None
    if state is None:
        return False
    return bool(state["runs"].get(run_id, {}).get("status") in ("running", "queued"))


def _mark_cancelled(root: Path, grid: str, run_id: str | None, state: dict[str, Any]) -> None:
    from gafkd import rundir

    path = batch_dir(root, grid) / "state.json"
    for key, run in state["runs"].items():
        if run["status"] == "queued" and run_id in (None, key):
            run.update(status="cancelled", finished=rundir.timestamp())
    rundir.save_json(state, path)
