"""Launching a grid on this machine: plan it, check it, choose slots, start the runner.

``launch`` expands a grid, checks it before anything runs (dataset paths, GPU indices, an unknown
grid or key, cron for ``--on-reboot``), takes the grid's lock, checks that the runs already in their
folders were made with the planned config, writes ``runs/<grid>/.batch/plan.json`` (the plan,
:mod:`gafkd.experiments.plan`, is the Slurm backend's too) and starts the runner of
:mod:`gafkd.experiments.runner`, which takes the lock over; detached by default so it outlives the
terminal. ``--dry`` only prints the plan. ``print_results`` aggregates a grid's results
(:mod:`gafkd.results`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

from gafkd.config import ConfigError, check_override
from gafkd.experiments.batchdir import (
    CANCELLED,
    RUNNER_LOG,
    SLURM_FILE,
    batch_dir,
    cancelled_ids,
    check_grid_name,
    check_results,
    grid_lock,
    keep_private,
    read_plan,
)
from gafkd.experiments.grid import PlannedRun
from gafkd.experiments.hostqueue import check_folder
from gafkd.experiments.plan import grid_name, plan_grid, plan_rows, set_aside_changed, write_plan
from gafkd.experiments.runner import Slots, run_batch
from gafkd.gpu import GpuSample, read_gpus

GIB = 1 << 30
MEMORY_PER_RUN = 3 * GIB  # a WRN run with data and images on the GPU, with room to spare


def parse_gpus(text: str) -> list[int]:
    """``--gpus 0,2`` -> [0, 2]."""
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus takes GPU indices like 0,1; got {text!r}") from None
    if not gpus:  # planned as no GPU here, the runner would have taken every GPU
        raise ConfigError(f"--gpus {text!r} names no GPU; give indices like 0,1, or leave it out")
    return gpus


def parse_count(option: str, text: str) -> int:
    """A whole number of at least 1 given as text (an invoke option), e.g. ``--per-gpu 2``."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"{option} takes a whole number of at least 1, e.g. 2; got {text!r}")
    return count


@dataclass(frozen=True)
class LaunchOptions:
    """What ``gafkd launch GRID`` is told besides the grid, ``--root``, ``--dry`` and
    ``--foreground``: the options that travel on a command line, to the detached runner
    (``gafkd batch-run``), into the ``@reboot`` line and to a lab host (``invoke launch
    --host``). `launch_flags` writes them; ``gafkd launch`` (:mod:`gafkd.cli`) reads them back.
    An empty `backend` leaves the choice to the host (its ``backend`` setting) or to local."""

    overrides: tuple[str, ...] = ()
    retries: int = 2
    per_gpu: int | None = None
    gpus: tuple[int, ...] | None = None
    queue: Path | None = None
    resume: bool = False
    backend: str = "local"
    on_reboot: bool = False
    rerun_changed: bool = False


def launch_flags(options: LaunchOptions) -> list[str]:
    """The one writer of ``gafkd launch``'s flags: ``--set`` items in order, then the rest.

    >>> launch_flags(LaunchOptions(("seed=[0]",), per_gpu=2, gpus=(0, 1), backend="slurm"))
    ['--set=seed=[0]', '--retries=2', '--per-gpu=2', '--gpus=0,1', '--backend=slurm']
    """
    flags = [f"--set={item}" for item in options.overrides] + [f"--retries={options.retries}"]
    flags += [f"--per-gpu={options.per_gpu}"] if options.per_gpu else []
    flags += [f"--gpus={','.join(map(str, options.gpus))}"] if options.gpus is not None else []
    flags += [f"--queue={options.queue}"] if options.queue else []
    flags += ["--resume"] if options.resume else []
    flags += ["--backend=slurm"] if options.backend == "slurm" else []  # local is the default
    flags += ["--on-reboot"] if options.on_reboot else []
    return flags + (["--rerun-changed"] if options.rerun_changed else [])


def parse_options(
    overrides: Sequence[str],
    *,
    retries: int = 2,
    per_gpu: str = "",
    gpus: str = "",
    resume: bool = False,
    backend: str = "",
    on_reboot: bool = False,
    rerun_changed: bool = False,
) -> LaunchOptions:
    """`LaunchOptions` from ``invoke launch``'s text (``--per-gpu 2 --gpus 0,1``); a bad
    number or an unknown backend is one ConfigError."""
    if backend not in ("", "local", "slurm"):  # with --host it would have run as local there
        raise ConfigError(f"backend {backend!r} is unknown; expected local or slurm")
    gpu_list = tuple(parse_gpus(gpus)) if gpus else None
    count = parse_count("--per-gpu", per_gpu) if per_gpu else None
    return LaunchOptions(
        tuple(overrides), retries, count, gpu_list, None, resume, backend, on_reboot, rerun_changed
    )


def check_for_host(options: LaunchOptions, *, foreground: bool) -> None:
    """What ``invoke launch --host`` refuses before anything is synced or runs on the host."""
    if foreground:
        raise ConfigError("--foreground stays here; with --host the runner detaches")
    for item in options.overrides:
        check_override(item)


def for_host(
    options: LaunchOptions, alias: str, backend: str, slurm_settings: Sequence[str]
) -> LaunchOptions:
    """The options a launch on lab host `alias` sends: the host's `backend` unless one was
    given, and with Slurm its ``slurm:`` settings from invoke.yaml, checked, before the
    ``--set`` items (which win)."""
    chosen = options.backend or backend
    if chosen != "slurm":
        return replace(options, backend=chosen)
    from gafkd.experiments.slurm import check_host_settings

    check_host_settings(alias, slurm_settings)
    return replace(options, backend=chosen, overrides=(*slurm_settings, *options.overrides))


def launch_with(
    grid: str, root: Path, options: LaunchOptions, *, dry: bool, foreground: bool
) -> None:
    """`launch` told by `LaunchOptions` (``gafkd launch``, ``invoke launch``)."""
    launch(
        grid,
        options.overrides,
        root,
        dry=dry,
        foreground=foreground,
        resume=options.resume,
        per_gpu=options.per_gpu,
        gpus=options.gpus,
        retries=options.retries,
        backend=options.backend or "local",
        queue=options.queue,
        on_reboot=options.on_reboot,
        rerun_changed=options.rerun_changed,
    )


def choose_slots(per_gpu: int | None, gpus: Sequence[int] | None) -> tuple[Slots, str]:
    """Slots per visible GPU (from free memory unless `per_gpu`), or the CPU without a GPU."""
    if per_gpu is not None and per_gpu < 1:
        raise ConfigError(
            f"--per-gpu is {per_gpu}; give at least 1 run at a time, or leave it out to fit "
            "the runs into each GPU's free memory"
        )
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


def start_detached(root: Path, grid: str, options: Sequence[str], lock_fd: int) -> int:
    """Start the runner in its own session, so it outlives the terminal; return its pid.

    The runner inherits `lock_fd`, the grid's lock that the caller holds, and takes it over:
    no other launch of the grid can come in between."""
    state_dir = batch_dir(root, grid)
    log = (state_dir / RUNNER_LOG).open("ab")
    argv = [sys.executable, "-m", "gafkd", "batch-run", grid, "--root", str(root), *options]
    process = subprocess.Popen(
        [*argv, f"--lock-fd={lock_fd}"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
        pass_fds=(lock_fd,),
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
    rerun_changed: bool = False,
    out: IO[str] = sys.stdout,
) -> None:
    """Plan a grid and run it on this machine: detached unless `foreground`, nothing under `dry`.

    With `resume`, the batch already planned under `root` is started again as it was planned
    (after a reboot, or after its runner was killed); runs that are done are not run again.
    Runs whose folder holds a run of another config are refused, or with `rerun_changed` moved
    aside and run again. With a `queue` folder, runs take host-wide slots there, shared with
    other users' runners. With `backend` ``"slurm"`` the stages go to Slurm as job arrays
    instead (:mod:`gafkd.experiments.slurm`). With `on_reboot`, an ``@reboot`` line in the user's
    crontab resumes the batch after the server restarts, until the batch finishes
    (:mod:`gafkd.experiments.reboot`).
    """
    if gpus is not None and not gpus:  # here the CPU, the runner would take every GPU
        raise ConfigError("--gpus names no GPU; give indices like 0,1, or leave it out")
    if on_reboot and (foreground or backend != "local"):
        raise ConfigError(
            "--on-reboot is for a detached local runner; a --foreground batch stops with its "
            "terminal, and Slurm keeps its own queue across reboots"
        )
    if backend == "slurm":
        from gafkd.experiments import slurm

        slurm.submit(
            root,
            grid,
            overrides,
            dry=dry,
            resume=resume,
            foreground=foreground,
            rerun_changed=rerun_changed,
            out=out,
        )
        if foreground and not dry:
            print_results(root, grid_name(grid), out=out)
        return
    if backend != "local":
        raise ConfigError(f"backend {backend!r} is unknown; expected local or slurm")
    if any(item.startswith("slurm.") for item in overrides):
        raise ConfigError(
            f"{[o for o in overrides if o.startswith('slurm.')]} set Slurm options, but the "
            "backend is local; add --backend slurm"
        )
    name = grid_name(grid)
    planned = None if resume else plan_grid(grid, overrides, root)
    rows = read_plan(root, name)["runs"] if planned is None else plan_rows(planned)
    check_results(root, (run["run_dir"] for run in rows))  # a damaged file stops it here
    if resume:
        cancelled_ids(root, name)
    slots, reason = choose_slots(per_gpu, gpus)
    if queue is not None:
        check_folder(queue)  # :mod:`gafkd.experiments.hostqueue`
    chosen = tuple(gpus) if gpus is not None else None
    runner = LaunchOptions(retries=retries, per_gpu=per_gpu, gpus=chosen, queue=queue)
    options = launch_flags(runner)  # the runner's, and the @reboot line's after --resume
    crontab = None
    if on_reboot:  # cron is checked and the line built before anything starts
        from gafkd.experiments import reboot

        crontab = reboot.prepare(root, name, options)
    if dry:
        set_aside_changed(root, name, rows, rerun_changed, dry=True, out=out)
        print_plan(name, rows, slots, out)
        return
    keep_private()
    with grid_lock(root, name) as lock_fd:  # from the checks until the runner holds it
        _take_over_from_slurm(root, name)
        set_aside_changed(root, name, rows, rerun_changed, out=out)
        if planned is not None:
            write_plan(root, name, planned, overrides)
            (batch_dir(root, name) / CANCELLED).unlink(missing_ok=True)  # a new launch runs all
        where = ", ".join(
            f"{n} at a time on {'the CPU' if d == 'cpu' else f'GPU {d}'}"
            for d, n in slots.per_device.items()
        )
        print(
            f"grid {name}: {len(rows)} runs, {where}"
            + (f" ({reason})" if reason else "")
            + (f"; slots shared with other users' runners through {queue}" if queue else ""),
            file=out,
        )
        if foreground:  # a duplicate of the descriptor shares the lock; the runner closes it
            lock = os.dup(lock_fd)
            run_batch(root, name, slots, retries=retries, log=out, queue=queue, lock_fd=lock)
        else:
            pid = start_detached(root, name, options, lock_fd)
    if foreground:
        print_results(root, name, out=out)
        return
    print(
        f"runner started in the background (pid {pid}); it survives closing this terminal", file=out
    )
    if crontab is not None:
        reboot.write(crontab)
        print("  after a reboot, cron resumes it (@reboot in your crontab until it ends)", file=out)
    print(
        f"  state and logs: {batch_dir(root, name)}/ (runner.log), run logs: <run dir>/log.txt",
        file=out,
    )
    print("  watch it: invoke status --watch    results: invoke results --grid " + name, file=out)


def _take_over_from_slurm(root: Path, grid: str) -> None:
    """A grid that went to Slurm before moves to this machine's runner once nothing of it runs
    there."""
    slurm_record = batch_dir(root, grid) / SLURM_FILE
    if slurm_record.exists():
        from gafkd.experiments.slurm import active_jobs

        active = active_jobs(root, grid)
        if active:
            raise ConfigError(
                f"grid {grid!r} still has jobs in Slurm ({', '.join(active)}); "
                f"`invoke cancel {grid}` them first, or wait for them"
            )
        slurm_record.unlink()


def print_results(
    root: Path, grid: str, reference: str | Path | None = None, out: IO[str] = sys.stdout
) -> dict[str, Path]:
    """Aggregate a grid's results over seeds; print the table and where the files are."""
    from gafkd import results

    if not (root / "runs" / check_grid_name(grid)).is_dir():
        raise ConfigError(f"no results of grid {grid!r} under {root / 'runs'}; launch it first")
    paths = results.write_all(root / "runs" / grid, reference)
    print(paths["markdown"].read_text(), file=out)
    plots = ", ".join(str(path) for path in paths.values() if path.suffix == ".png")
    print(f"table: {paths['markdown']}  csv: {paths['csv']}  plots: {plots}", file=out)
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
