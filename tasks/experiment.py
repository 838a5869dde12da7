"""Experiment tasks: train one run, launch a grid, watch status, aggregate results.

Tasks only parse arguments, call one function in gafkd/, and print the result; ConfigError and
TrainingError become one-line errors here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

SET_HELP = "override a config field or a grid axis, e.g. --set train.epochs=5 (repeatable)"
ROOT_HELP = "the folder that holds runs/ (default: here)"


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input and failed runs end the task with one line, without a traceback."""
    from gafkd.config import ConfigError
    from gafkd.train import TrainingError

    try:
        yield
    except (ConfigError, TrainingError) as error:
        raise Exit(f"error: {error}", code=1) from None


@task(
    help={
        "config": "a .toml run config, or the name of a config shipped with gafkd",
        "set": SET_HELP,
    },
    iterable=["set"],
)
def train(c: Context, config: str, set: list[str] | None = None) -> None:
    """Train one run (and the teachers it names) on this machine, resuming if interrupted."""
    from gafkd.cli import resolve_config_path
    from gafkd.config import load_config
    from gafkd.run import train_run

    with user_errors():
        train_run(load_config(resolve_config_path(config), set or []))


@task(
    help={
        "grid": "a shipped grid (kd_alpha, kd_gaf, gaf_teachers) or a grid .toml file",
        "set": SET_HELP,
        "dry": "print the plan (runs, order, where each goes) and change nothing",
        "foreground": "stay attached until the batch is done, then print the results",
        "resume": "start an already planned batch again (after a reboot or a killed runner)",
        "per_gpu": "runs at a time per GPU (default: from free memory)",
        "gpus": "GPU indices to use, e.g. 0,1 (default: all)",
        "retries": "how often a failing run is retried before it is marked failed",
        "root": ROOT_HELP,
    },
    iterable=["set"],
)
def launch(
    c: Context,
    grid: str,
    set: list[str] | None = None,
    dry: bool = False,
    foreground: bool = False,
    resume: bool = False,
    per_gpu: int = 0,
    gpus: str = "",
    retries: int = 2,
    root: str = ".",
) -> None:
    """Run a whole experiment grid on this machine's GPUs (or CPU), detached and resumable."""
    from gafkd import launch as launcher

    with user_errors():
        gpu_list = [int(g) for g in gpus.split(",") if g.strip()] if gpus else None
        launcher.launch(
            grid,
            set or [],
            Path(root),
            dry=dry,
            foreground=foreground,
            resume=resume,
            per_gpu=per_gpu or None,
            gpus=gpu_list,
            retries=retries,
        )


@task(
    help={
        "grid": "only this grid's batch (default: every batch under runs/)",
        "watch": "refresh the screen until Ctrl-C",
        "json": "print JSON for scripts",
        "root": ROOT_HELP,
    }
)
def status(
    c: Context, grid: str = "", watch: bool = False, json: bool = False, root: str = "."
) -> None:
    """GPUs, their health and other users' processes, and each batch's progress, on one screen."""
    from gafkd.cli import show_status

    with user_errors():
        show_status(Path(root), grid or None, as_json=json, watch=watch)


@task(
    help={
        "grid": "the grid whose runs to aggregate",
        "reference": "a reference file of earlier numbers to show beside ours, or 'lab'",
        "root": ROOT_HELP,
    }
)
def results(c: Context, grid: str, reference: str = "", root: str = ".") -> None:
    """Mean ± std over seeds per config: a markdown table, CSV and a PNG plot."""
    from gafkd.launch import print_results
    from gafkd.results import LAB_REFERENCE

    with user_errors():
        chosen = LAB_REFERENCE if reference == "lab" else reference or None
        print_results(Path(root), grid, chosen)


@task(
    help={
        "grid": "the launched grid",
        "run": "one run id (default: every queued and running run of the grid)",
        "root": ROOT_HELP,
    }
)
def cancel(c: Context, grid: str, run: str = "", root: str = ".") -> None:
    """Stop a run, or a whole batch, cleanly: marked cancelled (not failed), resumable later."""
    from gafkd.control import cancel as cancel_runs

    with user_errors():
        cancel_runs(Path(root), grid, run or None)


@task(
    positional=["run"],
    help={
        "run": "a run id, e.g. student/dataset-watch_alpha-0.3/seed0",
        "grid": "the grid the run belongs to (default: search every launched grid)",
        "follow": "keep printing new lines until the run stops",
        "root": ROOT_HELP,
    },
)
def logs(c: Context, run: str, grid: str = "", follow: bool = False, root: str = ".") -> None:
    """Show a run's log (its training output), optionally following it."""
    from gafkd.control import show_log

    with user_errors():
        show_log(Path(root), run, grid or None, follow=follow)
