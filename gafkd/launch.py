"""Launching a grid on this machine: plan it, check it, choose slots, start the runner.

``launch`` expands a grid, checks it before anything runs (dataset paths, GPU indices, an unknown
grid or key), writes ``runs/<grid>/.batch/plan.json`` and starts the runner of
:mod:`gafkd.batch`, detached by default so it outlives the terminal; ``--dry`` only prints the
plan. ``print_results`` aggregates a grid's results (:mod:`gafkd.results`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from gafkd import rundir
from gafkd.batch import (
    CANCELLED,
    SLURM_FILE,
    Slots,
    batch_dir,
    cancelled_ids,
    check_results,
    grid_lock,
    is_locked,
    keep_private,
    now,
    read_plan,
    run_batch,
)
from gafkd.config import ConfigError
from gafkd.grid import PlannedRun, expand, load_grid
from gafkd.health import GpuSample, read_gpus
from gafkd.hostqueue import check_folder

GIB = 1 << 30
MEMORY_PER_RUN = 3 * GIB  # a WRN run with data and images on the GPU, with room to spare


def plan_grid(grid_name: str, overrides: Sequence[str], root: Path) -> list[PlannedRun]:
    """Expand and check a grid before anything runs: dataset paths must exist."""
    runs = expand(load_grid(grid_name), overrides)
    for run in runs:
        data = run.config["data"]
        if data["source"] in ("geneactiv", "npz"):
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


def choose_slots(per_gpu: int | None, gpus: Sequence[int] | None) -> tuple[Slots, str]:
    """Slots per visible GPU (from free memory unless `per_gpu`), or the CPU without a GPU."""
    found, reason = read_gpus()
    if gpus is not None:
        missing = [g for g in gpus if g not in {gpu.gpu for gpu in found}]
        if missing:
            have = ", ".join(str(g.gpu) for g in found) or "none"
            raise ConfigError(f"GPU index {missing} does not exist on this machine (GPUs: {have})")
        found = [gpu for gpu in found if gpu.gpu in gpus]
    if not found:
        cores = os.cpu_count() or 1
        count = per_gpu or min(cores, max(2, cores // 4))  # start-up is single-threaded
        return Slots({"cpu": count}, threads=max(1, cores // count)), reason or "no NVIDIA GPU"
    per_device = {str(gpu.gpu): per_gpu or _runs_that_fit(gpu) for gpu in found}
    return Slots(per_device), ""


def _runs_that_fit(gpu: GpuSample) -> int:
    if gpu.memory_total is None or gpu.memory_used is None:
        return 1
    return max(1, min(4, (gpu.memory_total - gpu.memory_used) // MEMORY_PER_RUN))


def write_plan(root: Path, grid: str, runs: Sequence[PlannedRun], overrides: Sequence[str]) -> None:
    plan = {
        "grid": grid,
        "created": now(),
        "overrides": list(overrides),
        "stages": list(dict.fromkeys(r.stage for r in runs)),
        "runs": [asdict(r) | {"needs": list(r.needs)} for r in runs],
    }
    rundir.save_json(plan, batch_dir(root, grid) / "plan.json")


def start_detached(root: Path, grid: str, options: Sequence[str] = ()) -> int:
    """Start the runner in its own session, so it outlives the terminal; return its pid."""
    state_dir = batch_dir(root, grid)
    log = (state_dir / "runner.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "gafkd", "batch-run", grid, "--root", str(root), *options],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    return process.pid


def launch(
    grid: str,
    overrides: Sequence[str] = (),
    root: Path = Path("."),
    *,
    dry: bool = False,
    foreground: bool = False,
    resume: bool = False,
    per_gpu: int | None = None,
    gpus: Sequence[int] | None = None,
    retries: int = 2,
    backend: str = "local",
    queue: Path | None = None,
    on_reboot: bool = False,
    out: IO[str] = sys.stdout,
) -> None:
    """Plan a grid and run it on this machine: detached unless `foreground`, nothing under `dry`.

    With `resume`, the batch already planned under `root` is started again as it was planned
    (after a reboot, or after its runner was killed); runs that are done are not run again.
    With a `queue` folder, runs take host-wide slots there, shared with other users' runners.
    With `backend` ``"slurm"`` the stages go to Slurm as job arrays instead (:mod:`gafkd.slurm`).
    With `on_reboot`, an ``@reboot`` line in the user's crontab resumes the batch after the
    server restarts, until the batch finishes (:mod:`gafkd.reboot`).
    """
    if on_reboot and (foreground or backend != "local"):
        raise ConfigError(
            "--on-reboot is for a detached local runner; a --foreground batch stops with its "
            "terminal, and Slurm keeps its own queue across reboots"
        )
    if backend == "slurm":
        from gafkd import slurm

        slurm.submit(root, grid, overrides, dry=dry, resume=resume, foreground=foreground, out=out)
        if foreground and not dry:
            print_results(root, read_plan(root, Path(grid).stem)["grid"], out=out)
        return
    if backend != "local":
        raise ConfigError(f"backend {backend!r} is unknown; expected local or slurm")
    if any(item.startswith("slurm.") for item in overrides):
        raise ConfigError(
            f"{[o for o in overrides if o.startswith('slurm.')]} set Slurm options, but the "
            "backend is local; add --backend slurm"
        )
    if resume:
        name = read_plan(root, grid)["grid"]
        runs = None
    else:
        planned = plan_grid(grid, overrides, root)
        name = Path(grid).stem if grid.endswith(".toml") else grid
        runs = planned
    if runs is None:  # a damaged file stops the launch here, before anything is written
        check_results(root, (run["run_dir"] for run in read_plan(root, name)["runs"]))
        cancelled_ids(root, name)
    else:
        check_results(root, (run.run_dir for run in runs))
    slots, reason = choose_slots(per_gpu, gpus)
    if queue is not None:
        check_folder(queue)  # :mod:`gafkd.hostqueue`
    if dry:
        print_plan(name, runs if runs is not None else read_plan(root, name)["runs"], slots, out)
        return
    if is_locked(root, name):
        with grid_lock(root, name):  # raises, naming the runner that holds it
            pass
    slurm_record = batch_dir(root, name) / SLURM_FILE
    if slurm_record.exists():  # the grid went to Slurm before: this machine takes it over
        from gafkd.slurm import active_jobs

        active = active_jobs(root, name)
        if active:
            raise ConfigError(
                f"grid {name!r} still has jobs in Slurm ({', '.join(active)}); "
                f"`invoke cancel {name}` them first, or wait for them"
            )
        slurm_record.unlink()
    keep_private()
    if runs is not None:
        write_plan(root, name, runs, overrides)
        (batch_dir(root, name) / CANCELLED).unlink(missing_ok=True)  # a new launch runs them all
    where = ", ".join(
        f"{n} at a time on {'the CPU' if d == 'cpu' else f'GPU {d}'}"
        for d, n in slots.per_device.items()
    )
    print(
        f"grid {name}: {len(read_plan(root, name)['runs'])} runs, {where}"
        + (f" ({reason})" if reason else "")
        + (f"; slots shared with other users' runners through {queue}" if queue else ""),
        file=out,
    )
    options = [f"--retries={retries}"] + ([f"--per-gpu={per_gpu}"] if per_gpu else [])
    options += [f"--gpus={','.join(map(str, gpus))}"] if gpus else []
    options += [f"--queue={queue}"] if queue else []
    if foreground:
        run_batch(root, name, slots, retries=retries, log=out, queue=queue)
        print_results(root, name, out=out)
        return
    pid = start_detached(root, name, options)
    state_dir = batch_dir(root, name)
    print(
        f"runner started in the background (pid {pid}); it survives closing this terminal", file=out
    )
    if on_reboot:
        from gafkd import reboot

        reboot.install(root, name, options)
        print("  after a reboot, cron resumes it (@reboot in your crontab until it ends)", file=out)
    print(f"  state and logs: {state_dir}/ (runner.log), run logs: <run dir>/log.txt", file=out)
    print("  watch it: invoke status --watch    results: invoke results --grid " + name, file=out)


def print_results(
    root: Path, grid: str, reference: str | Path | None = None, out: IO[str] = sys.stdout
) -> dict[str, Path]:
    """Aggregate a grid's results over seeds; print the table and where the files are."""
    from gafkd import results

    if not (root / "runs" / grid).is_dir():
        raise ConfigError(f"no results of grid {grid!r} under {root / 'runs'}; launch it first")
    paths = results.write_all(root / "runs" / grid, reference)
    print(paths["markdown"].read_text(), file=out)
    print(f"table: {paths['markdown']}  csv: {paths['csv']}  plot: {paths['png']}", file=out)
    return paths


def print_plan(
    grid: str, runs: Sequence[PlannedRun] | Sequence[Mapping[str, Any]], slots: Slots, out: IO[str]
) -> None:
    """The plan of a dry run: runs in order, what each waits for, where each may go."""
    rows = [asdict(r) if isinstance(r, PlannedRun) else dict(r) for r in runs]
    where = ", ".join("cpu" if d == "cpu" else f"gpu{d}" for d in slots.per_device)
    print(
        f"grid {grid}: {len(rows)} runs, in this order, onto {where} "
        f"({slots.total} at a time); nothing is changed (--dry)",
        file=out,
    )
    width = max(len(r["id"]) for r in rows)
    for i, row in enumerate(rows, 1):
        needs = ", ".join(row["needs"]) if row["needs"] else "-"
        print(f"{i:4d}  {row['id']:<{width}}  {row['epochs']:>4} epochs  after: {needs}", file=out)
