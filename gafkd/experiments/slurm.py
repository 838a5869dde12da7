"""The Slurm backend: each stage of a grid is one submitit job array, chained with ``afterok``.

``gafkd launch GRID --backend slurm`` plans the grid as the local runner does (same
``plan.json``), then submits, stage by stage, the runs that are not done yet as one job array
(``--array=0-N%parallel``, one GPU per run by default), each stage depending on the stages whose
runs it needs (``--dependency=afterok:...``, ``--kill-on-invalid-dep=yes``). The job ids go to
``runs/<grid>/.batch/slurm.json``; status and cancel read it (:mod:`gafkd.experiments.slurm_state`).

Each array task is a `gafkd.experiments.slurm_job.RunJob`: it trains one run in the job's process
from the run's own checkpoint, so a task that Slurm preempts or stops at its time limit is requeued
by submitit and resumes where its last epoch left off. Settings come from ``--set
slurm.KEY=VALUE`` (`SlurmOptions`), which a host's ``slurm:`` settings in invoke.yaml fill in.
submitit is imported only here, and only when something is submitted.
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any

from gafkd import rundir
from gafkd.config import ConfigError, check_override, check_text
from gafkd.experiments.batchdir import (
    CANCELLED,
    SLURM_FILE,
    batch_dir,
    is_locked,
    read_plan,
    read_slurm_record,
    request_cancel,
)
from gafkd.experiments.grid import check_name
from gafkd.experiments.plan import grid_name, plan_grid, plan_rows, set_aside_changed, write_plan
from gafkd.experiments.slurm_state import run_slurm

PREFIX = "slurm."  # --set slurm.partition=gpu


@dataclass(frozen=True)
class SlurmOptions:
    """What each run asks Slurm for; ``--set slurm.<field>=VALUE`` sets one."""

    partition: str = ""  # empty: the cluster's default partition
    account: str = ""
    qos: str = ""
    time_min: int = 24 * 60  # the time limit of one run; past it, the run is requeued
    mem_gb: float = 0.0  # 0: the partition's default
    gpus: int = 1  # GPUs per run (--gres=gpu:N); 0 for CPU-only runs
    gres: str = ""  # instead of `gpus`, a configured share, e.g. "shard:1" or "gpu:a100:1"
    cpus: int = 4  # CPU cores per run; torch uses this many threads
    parallel: int = 0  # at most this many runs of a stage at once (the array's %N); 0: no limit
    max_requeues: int = 3  # time-limit requeues per run (preemptions always requeue)


def split_options(
    overrides: Sequence[str], defaults: SlurmOptions = SlurmOptions()
) -> tuple[list[str], SlurmOptions]:
    """Separate ``slurm.KEY=VALUE`` settings from the grid's ``--set`` overrides.

    Each value becomes a line of the sbatch script, so a control character is refused here,
    before anything else, with one line naming the key.
    """
    kinds = {f.name: f.type for f in fields(SlurmOptions)}
    grid_sets: list[str] = []
    values: dict[str, Any] = asdict(defaults)
    for item in overrides:
        if not item.startswith(PREFIX):
            grid_sets.append(item)
            continue
        key, sep, text = item[len(PREFIX) :].partition("=")
        if not sep or key not in kinds:
            raise ConfigError(
                f"--set {item!r} is not a Slurm setting; expected slurm.KEY=VALUE with KEY one of "
                f"{', '.join(kinds)} (docs/scale-out.md)"
            )
        check_override(item)
        kind = {"int": int, "float": float}.get(str(kinds[key]), str)
        try:
            values[key] = kind(text)
        except ValueError:
            raise ConfigError(f"--set {item!r}: slurm.{key} takes a {kind.__name__}") from None
    options = SlurmOptions(**values)
    if options.gpus < 0 or options.cpus < 1 or options.time_min < 1 or options.parallel < 0:
        raise ConfigError(
            f"Slurm settings out of range: {options}; gpus >= 0, cpus >= 1, time_min >= 1, "
            "parallel >= 0"
        )
    return grid_sets, options


def check_host_settings(alias: str, items: Sequence[str]) -> None:
    """A lab host's ``slurm:`` settings in invoke.yaml, as ``slurm.KEY=VALUE`` items, checked as
    `split_options` checks ``--set`` ones, before they leave for the host; an error names it."""
    try:
        split_options(items)
    except ConfigError as error:
        raise ConfigError(f"invoke.yaml hosts.{alias}.slurm: {error}") from None


# -- submitting ----------------------------------------------------------------------------------


def submit(
    root: Path,
    grid: str,
    overrides: Sequence[str] = (),
    *,
    dry: bool = False,
    resume: bool = False,
    foreground: bool = False,
    rerun_changed: bool = False,
    defaults: SlurmOptions = SlurmOptions(),
    out: IO[str] = sys.stdout,
) -> dict[str, Any]:
    """Plan a grid and submit its stages as Slurm job arrays; return what ``slurm.json`` holds.

    Runs that are done (their result exists, made with the planned config) are not submitted;
    runs made with another config are refused, or with `rerun_changed` moved aside and
    submitted (:func:`gafkd.experiments.plan.set_aside_changed`). A stage whose runs are all done is
    skipped and nothing waits for it. With `resume` the batch already planned under `root` is
    submitted again as planned (after a cancel, or failures that are fixed now).
    """
    grid_sets, options = split_options(overrides, defaults)
    resolved = str(root.resolve())
    shown = resolved if resolved.isprintable() else repr(resolved)
    check_text(resolved, f"--root {shown}", "a folder that the sbatch script names")
    name = grid_name(grid)
    planned = None if resume else plan_grid(grid, grid_sets, root)
    runs = read_plan(root, name)["runs"] if planned is None else plan_rows(planned)
    for part, what in [(name, "grid name"), *((run["stage"], "stage name") for run in runs)]:
        check_name(part, what, "Slurm job name")  # gafkd-<grid>-<stage>: a line of the script
    _require_commands()
    _check_partition(options.partition)
    if not dry:
        _check_nothing_runs(root, name)
    changed = set_aside_changed(root, name, runs, rerun_changed, dry=dry, out=out)
    done = {
        run["id"]
        for run in runs
        if run["id"] not in changed and rundir.read_result(root / run["run_dir"]) is not None
    }
    stages = stage_order(runs, done)
    if dry:
        print_stages(name, stages, options, done, out)
        return {}
    if planned is not None:
        write_plan(root, name, planned, grid_sets)
    (batch_dir(root, name) / CANCELLED).unlink(missing_ok=True)
    record = _submit_stages(root, name, stages, done, options, out)
    folder = batch_dir(root, name)
    print(
        f"  job logs: {folder / 'slurm'}/<job>_<task>_log.out, run logs: <run dir>/log.txt",
        file=out,
    )
    print(f"  watch it: invoke status --watch    results: invoke results --grid {name}", file=out)
    if foreground:
        wait(root, name, out=out)
    return record


def _check_nothing_runs(root: Path, name: str) -> None:
    if is_locked(root, name):
        raise ConfigError(
            f"grid {name!r} is running on this machine's runner; `invoke cancel {name}` it or "
            "wait for it before submitting it to Slurm"
        )
    active = active_jobs(root, name)
    if active:
        raise ConfigError(
            f"grid {name!r} still has jobs in Slurm ({', '.join(active)}); `invoke status` "
            f"shows them. Wait for them, or `invoke cancel {name}` first"
        )


def stage_order(
    runs: Sequence[Mapping[str, Any]], done: set[str]
) -> list[tuple[str, list[Mapping[str, Any]], list[str]]]:
    """(stage, its runs, the stages it waits for), in an order where each stage comes after
    the stages it needs; a need that no run and no result can meet is an error."""
    stage_of = {run["id"]: run["stage"] for run in runs}
    order = list(dict.fromkeys(run["stage"] for run in runs))
    needs: dict[str, set[str]] = {stage: set() for stage in order}
    for run in runs:
        for need in run["needs"]:
            if need in done:
                continue
            if need not in stage_of:
                raise ConfigError(
                    f"run {run['id']} needs teacher run {need}, which is neither in this grid nor "
                    "done; add its stage to the grid or train it first"
                )
            if stage_of[need] == run["stage"]:
                raise ConfigError(
                    f"run {run['id']} needs {need} from its own stage {run['stage']!r}; a stage "
                    "is one job array and cannot wait for itself. Put the teacher in its own stage"
                )
            needs[run["stage"]].add(stage_of[need])
    placed: list[str] = []
    while len(placed) < len(order):
        ready = [s for s in order if s not in placed and needs[s] <= set(placed)]
        if not ready:
            stuck = [s for s in order if s not in placed]
            raise ConfigError(
                f"stages {', '.join(stuck)} wait for each other in a cycle; a grid's teachers "
                "must come from earlier stages"
            )
        placed.extend(ready)
    return [
        (stage, [r for r in runs if r["stage"] == stage], sorted(needs[stage], key=placed.index))
        for stage in placed
    ]


def _submit_stages(
    root: Path,
    grid: str,
    stages: Sequence[tuple[str, list[Mapping[str, Any]], list[str]]],
    done: set[str],
    options: SlurmOptions,
    out: IO[str],
) -> dict[str, Any]:
    from gafkd.experiments.slurm_job import RunJob

    job = RunJob(str(root.resolve()), grid)
    submitted: dict[str, dict[str, Any]] = {}
    record = {
        "backend": "slurm",
        "host": socket.gethostname(),
        "submitted": rundir.timestamp(),
        "options": asdict(options),
        "stages": submitted,
    }
    path = batch_dir(root, grid) / SLURM_FILE
    for stage, runs, waits_for in stages:
        todo = [run["id"] for run in runs if run["id"] not in done]
        if not todo:
            print(f"stage {stage}: all {len(runs)} runs done, nothing to submit", file=out)
            continue
        parents = [submitted[s]["job_id"] for s in waits_for if s in submitted]
        executor = _executor(root, grid, stage, options, parents)
        jobs = executor.map_array(job, todo)
        tasks = [str(j.job_id) for j in jobs]  # "12_0", "12_1", ... or "12" for a lone run
        job_id = tasks[0].split("_")[0]
        submitted[stage] = {"job_id": job_id, "runs": todo, "tasks": tasks, "after": parents}
        after = f" after job {', '.join(parents)}" if parents else ""
        print(f"stage {stage}: job array {job_id} of {len(todo)} runs{after}", file=out)
        rundir.save_json(record, path)  # after each stage: a later failure loses no job id
    rundir.save_json(record, path)
    return record


def _executor(
    root: Path, grid: str, stage: str, options: SlurmOptions, parents: Sequence[str]
) -> Any:
    import submitit

    folder = batch_dir(root, grid).resolve() / "slurm" / "%j"
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=options.max_requeues)
    parameters: dict[str, Any] = {
        "job_name": f"gafkd-{grid}-{stage}",
        "time": options.time_min,
        "cpus_per_task": options.cpus,
        "signal_delay_s": 120,  # USR2 two minutes before the limit: checkpoint and requeue
        "additional_parameters": {"kill-on-invalid-dep": "yes", "requeue": True},
    }
    gres = options.gres or (f"gpu:{options.gpus}" if options.gpus else "")
    optional = {
        "partition": options.partition,
        "account": options.account,
        "qos": options.qos,
        "gres": gres,
        "mem": f"{options.mem_gb:g}GB" if options.mem_gb else "",
        "array_parallelism": options.parallel,
        "dependency": "afterok:" + ":".join(parents) if parents else "",
    }
    parameters |= {key: value for key, value in optional.items() if value}
    executor.update_parameters(**parameters)
    return executor


def _require_commands() -> None:
    missing = [c for c in ("sbatch", "squeue", "sacct", "scancel") if shutil.which(c) is None]
    if missing:
        raise ConfigError(
            f"no {', '.join(missing)} on {socket.gethostname()}: this host is not a Slurm "
            "submit host. Launch without --backend slurm, or on the cluster's login node with "
            "--host (docs/scale-out.md)"
        )


def _check_partition(partition: str) -> None:
    if not partition:
        return
    found = run_slurm(["sinfo", "-h", "-o", "%P"]).split()
    known = [name.rstrip("*") for name in found]
    if partition not in known:
        raise ConfigError(
            f"Slurm partition {partition!r} does not exist on {socket.gethostname()}; "
            f"partitions: {', '.join(known) or 'none'}. Fix it with --set slurm.partition=NAME"
        )


def print_stages(
    grid: str,
    stages: Sequence[tuple[str, list[Mapping[str, Any]], list[str]]],
    options: SlurmOptions,
    done: set[str],
    out: IO[str],
) -> None:
    """The plan of a dry run: one job array per stage, what it waits for, what it asks for."""
    gres = options.gres or (f"gpu:{options.gpus}" if options.gpus else "no GPU")
    where = f"partition {options.partition}" if options.partition else "the default partition"
    print(
        f"grid {grid}: {len(stages)} job arrays on {where}, each run {gres}, "
        f"{options.cpus} CPUs, {options.time_min} min; nothing is submitted (--dry)",
        file=out,
    )
    for stage, runs, waits_for in stages:
        todo = [run for run in runs if run["id"] not in done]
        limit = f"%{options.parallel}" if options.parallel else ""
        after = f"afterok:{','.join(waits_for)}" if waits_for else "-"
        print(
            f"  {stage:<12} --array=0-{max(len(todo) - 1, 0)}{limit}  {len(todo)} runs "
            f"({len(runs) - len(todo)} done)  after: {after}",
            file=out,
        )


# -- watching and cancelling ---------------------------------------------------------------------


def read_record(root: Path, grid: str) -> dict[str, Any] | None:
    """What was submitted for a grid, or None for a grid the local runner runs."""
    return read_slurm_record(batch_dir(root, grid))


def active_jobs(root: Path, grid: str) -> list[str]:
    """The grid's job ids that Slurm still has pending or running."""
    from gafkd.experiments.slurm_state import squeue

    record = read_record(root, grid)
    if not record or shutil.which("squeue") is None:  # no Slurm here: nothing of it runs here
        return []
    ids = [stage["job_id"] for stage in record["stages"].values()]
    return sorted({str(row["job_id"]) for row in squeue(ids)}) if ids else []


def cancel(root: Path, grid: str, run_id: str | None, out: IO[str]) -> None:
    """scancel one run's array task, or every job of the grid; mark them cancelled."""
    record = read_record(root, grid)
    assert record is not None
    targets = []
    for stage in record["stages"].values():
        if run_id is None:
            targets.append(str(stage["job_id"]))
        elif run_id in stage["runs"]:
            targets.append(stage["tasks"][stage["runs"].index(run_id)])
    request_cancel(root, grid, run_id)
    if targets:
        run_slurm(["scancel", *targets])
    what = f"run {run_id}" if run_id else f"every job of {grid}"
    shown = ", ".join(targets) or "none: it was not submitted"
    print(f"cancelled {what} in Slurm (scancel {shown}); its last epoch is checkpointed", file=out)


def wait(root: Path, grid: str, poll: float = 2.0, out: IO[str] = sys.stdout) -> dict[str, Any]:
    """Block until no job of the grid is pending or running; return the final state."""
    from gafkd.experiments.slurm_state import batch_state

    folder = batch_dir(root, grid)
    settled = 0  # a requeue passes through states that look final for a moment: ask twice
    while True:
        state = batch_state(folder, root)
        settled = settled + 1 if state["runner"]["finished"] else 0
        if settled >= 2:
            counts: dict[str, int] = {}
            for run in state["runs"].values():
                counts[run["status"]] = counts.get(run["status"], 0) + 1
            print(f"grid {grid}: " + ", ".join(f"{n} {s}" for s, n in counts.items()), file=out)
            return state
        time.sleep(poll)
