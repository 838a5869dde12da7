"""Experiment tasks: train one run, launch a grid, watch status, aggregate results.

Tasks only parse arguments, call one function in gafkd/, and print the result; ConfigError and
TrainingError become one-line errors here. With ``--host`` the same tasks act on lab hosts over
ssh (provisioning/remote.py), and ProvisionError becomes a one-line error too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

if TYPE_CHECKING:
    from provisioning.core import Connection
    from provisioning.hosts import Host

SET_HELP = "override a config field or a grid axis, e.g. --set train.epochs=5 (repeatable)"
ROOT_HELP = "the folder that holds runs/ (default: here)"
HOST_HELP = "run it on this lab host (ssh alias under hosts: in invoke.yaml) instead of here"
WATCH_SECONDS = 2.0


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input and failed runs end the task with one line, without a traceback."""
    from gafkd.config import ConfigError, TrainingError
    from provisioning.core import ProvisionError

    try:
        yield
    except (ConfigError, TrainingError, ProvisionError) as error:
        raise Exit(f"error: {error}", code=1) from None


def connect_hosts(c: Context, names: str) -> list[tuple[Host, Connection]]:
    """``--host lab`` or ``lab1,lab2`` -> (Host, open connection) pairs."""
    from provisioning import hosts

    chosen = hosts.select_hosts(names, c.config.get("hosts") or {}, Path.home() / ".ssh/config")
    return [(host, hosts.connect(host)) for host in chosen]


def connect_one(c: Context, name: str) -> tuple[Host, Connection]:
    if "," in name:
        raise Exit(f"error: --host {name!r} names several hosts; this task takes one", code=1)
    return connect_hosts(c, name)[0]


def host_screen(statuses: dict[str, dict[str, Any]]) -> Any:
    """Each host's status screen under a heading with its alias."""
    from rich.console import Group
    from rich.rule import Rule

    from gafkd.experiments.screen import render

    parts = [(Rule(alias, align="left"), render(status)) for alias, status in statuses.items()]
    return Group(*(part for pair in parts for part in pair))


def show_host_status(c: Context, names: str, grid: str, as_json: bool, watch: bool) -> None:
    """Status of lab hosts: one `gafkd status --json` per host and refresh, on kept connections."""
    import json as json_module
    import time

    from rich.console import Console
    from rich.live import Live

    from provisioning import remote

    opened = connect_hosts(c, names)

    def fetch() -> dict[str, dict[str, Any]]:
        return {host.alias: remote.status(conn, host, grid or None) for host, conn in opened}

    if as_json:
        print(json_module.dumps(fetch(), indent=2))
    elif not watch:
        Console().print(host_screen(fetch()))
    else:
        with Live(host_screen(fetch()), auto_refresh=False) as live:
            try:
                while True:
                    time.sleep(WATCH_SECONDS)
                    live.update(host_screen(fetch()), refresh=True)
            except KeyboardInterrupt:
                pass


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
        "per_gpu": "runs at a time per GPU, at least 1 (default: from free memory)",
        "gpus": "GPU indices to use, e.g. 0,1 (default: all)",
        "retries": "how often a failing run is retried before it is marked failed",
        "root": ROOT_HELP,
        "host": HOST_HELP + "; syncs the code and installs it into the env there first",
        "backend": "local (default) or slurm: one job array per stage (docs/scale-out.md); "
        "with --host, the host's `backend` setting is the default",
        "on_reboot": "resume the batch after the server reboots (an @reboot line in your crontab, "
        "removed when the batch ends)",
        "rerun_changed": "rerun the runs that were made with another config (other --set values "
        "or grid file); their old folders are moved aside, under the batch's superseded/",
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
    per_gpu: str = "",
    gpus: str = "",
    retries: int = 2,
    root: str = ".",
    host: str = "",
    backend: str = "",
    on_reboot: bool = False,
    rerun_changed: bool = False,
) -> None:
    """Run a whole experiment grid on this machine's GPUs (or CPU), detached and resumable."""
    from gafkd import __version__
    from gafkd.experiments import launch as launcher

    with user_errors():
        gpu_list = launcher.parse_gpus(gpus) if gpus else None
        per_gpu_count = launcher.parse_count("--per-gpu", per_gpu) if per_gpu else None
        if host:
            if foreground:
                raise Exit("error: --foreground stays here; with --host the runner detaches", 1)
            from gafkd.config import check_override
            from gafkd.experiments.slurm import check_host_settings
            from provisioning import remote

            for item in set or []:
                check_override(item)  # before anything is synced or runs on the host
            lab, connection = connect_one(c, host)
            backend = backend or lab.backend
            if backend == "slurm":  # before anything is synced or runs on the host
                check_host_settings(lab.alias, lab.slurm)
            sets = [*(lab.slurm if backend == "slurm" else ()), *(set or [])]  # --set wins
            options = [f"--set={item}" for item in sets] + [f"--retries={retries}"]
            options += [f"--per-gpu={per_gpu}"] * bool(per_gpu) + [f"--gpus={gpus}"] * bool(gpus)
            options += ["--resume"] * resume + [f"--backend={backend}"] * (backend == "slurm")
            options += ["--on-reboot"] * on_reboot + ["--rerun-changed"] * rerun_changed
            remote.launch(connection, lab, grid, options, version=__version__, dry=dry, echo=print)
            return
        launcher.launch(
            grid,
            set or [],
            Path(root),
            dry=dry,
            foreground=foreground,
            resume=resume,
            per_gpu=per_gpu_count,
            gpus=gpu_list,
            retries=retries,
            backend=backend or "local",
            on_reboot=on_reboot,
            rerun_changed=rerun_changed,
        )


@task(
    help={
        "grid": "only this grid's batch (default: every batch under runs/)",
        "watch": "refresh the screen until Ctrl-C",
        "json": "print JSON for scripts (with --host: {alias: status})",
        "root": ROOT_HELP,
        "host": "show these lab hosts instead of here: an alias from invoke.yaml, or lab1,lab2",
    }
)
def status(
    c: Context,
    grid: str = "",
    watch: bool = False,
    json: bool = False,
    root: str = ".",
    host: str = "",
) -> None:
    """GPUs, their health and other users' processes, and each batch's progress, on one screen."""
    from gafkd.cli import show_status
    from gafkd.experiments.batchdir import check_grid_name

    with user_errors():
        if grid:
            check_grid_name(grid)
        if host:
            show_host_status(c, host, grid, json, watch)
            return
        show_status(Path(root), grid or None, as_json=json, watch=watch)


@task(
    help={
        "grid": "the grid whose runs to aggregate",
        "reference": "a reference file of earlier numbers to show beside ours, or 'lab'",
        "root": ROOT_HELP + "; with --host, the copy goes to <root>/.hosts/<host>/runs/",
        "host": HOST_HELP + ": its results are copied here (rsync, no checkpoints) first",
    }
)
def results(c: Context, grid: str, reference: str = "", root: str = ".", host: str = "") -> None:
    """Mean ± std over seeds per config: a markdown table, CSV and a PNG plot."""
    from gafkd.experiments.batchdir import check_grid_name
    from gafkd.experiments.launch import print_results
    from gafkd.results import LAB_REFERENCE

    with user_errors():
        check_grid_name(grid)
        chosen = LAB_REFERENCE if reference == "lab" else reference or None
        local = Path(root)
        if host:
            from provisioning import remote

            lab, connection = connect_one(c, host)
            local = remote.results(connection, lab, grid, local / ".hosts" / lab.alias)
        print_results(local, grid, chosen)


@task(
    help={
        "grid": "the launched grid",
        "run": "one run id (default: every queued and running run of the grid)",
        "root": ROOT_HELP,
        "host": HOST_HELP,
    }
)
def cancel(c: Context, grid: str, run: str = "", root: str = ".", host: str = "") -> None:
    """Stop a run, or a whole batch, cleanly: marked cancelled (not failed), resumable later."""
    from gafkd.experiments.batchdir import check_grid_name
    from gafkd.experiments.control import cancel as cancel_runs

    with user_errors():
        check_grid_name(grid)
        if host:
            from provisioning import remote

            lab, connection = connect_one(c, host)
            args = ("cancel", grid, *(("--run", run) if run else ()))
            print(remote.gafkd(connection, lab, *args, what="gafkd cancel").stdout, end="")
            return
        cancel_runs(Path(root), grid, run or None)


@task(
    positional=["run"],
    help={
        "run": "a run id, e.g. student/dataset-watch_alpha-0.3/seed0",
        "grid": "the grid the run belongs to (default: search every launched grid)",
        "follow": "keep printing new lines until the run stops",
        "root": ROOT_HELP,
        "host": HOST_HELP,
    },
)
def logs(
    c: Context, run: str, grid: str = "", follow: bool = False, root: str = ".", host: str = ""
) -> None:
    """Show a run's log (its training output), optionally following it."""
    from gafkd.experiments.batchdir import check_grid_name
    from gafkd.experiments.control import show_log

    with user_errors():
        if grid:
            check_grid_name(grid)
        if host:
            from provisioning import remote

            lab, connection = connect_one(c, host)
            args = ("logs", run, *(("--grid", grid) if grid else ()), *(("--follow",) * follow))
            remote.gafkd(connection, lab, *args, stream=True, what="gafkd logs")
            return
        show_log(Path(root), run, grid or None, follow=follow)
