"""Command line: ``gafkd train CONFIG``, ``gafkd launch GRID``, ``gafkd status``, ``gafkd results``.

Also ``python -m gafkd ...``. The invoke tasks call the same functions; this entry point needs
neither invoke nor fabric, so it is what runs on a server.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from gafkd.config import ConfigError, TrainingError, load_config

if TYPE_CHECKING:
    from gafkd.experiments.launch import LaunchOptions


def builtin_configs() -> dict[str, Path]:
    """Configs shipped with the package, by name (file name without .toml)."""
    folder = Path(str(resources.files("gafkd") / "configs"))
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}


def resolve_config_path(name: str) -> Path:
    """A config file path, or the name of a config shipped with the package."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return path
    shipped = builtin_configs()
    if name in shipped:
        return shipped[name]
    raise ConfigError(
        f"config {name!r} is neither a file nor a shipped config; shipped: {', '.join(shipped)}"
    )


def show_status(
    root: Path, grid: str | None, as_json: bool, watch: bool, frame: str | None = None
) -> None:
    """Print the status screen (or JSON, between two `frame` lines if given), once or refreshed."""
    import json

    from rich.console import Console

    from gafkd.experiments import status

    if grid is not None:
        from gafkd.experiments.batchdir import check_grid_name

        check_grid_name(grid)
    if watch:
        status.watch(root, grid=grid)
    elif as_json:
        text = json.dumps(status.collect(root, grid=grid), indent=2)
        print(f"{frame}\n{text}\n{frame}" if frame else text, flush=True)
    else:
        Console().print(status.render(status.collect(root, grid=grid)))


def gpu_list(text: str) -> list[int]:
    from gafkd.experiments.launch import parse_gpus

    try:
        return parse_gpus(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gafkd", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field or a grid axis, e.g. --set train.epochs=5 (repeatable)",
    )
    root = argparse.ArgumentParser(add_help=False)
    root.add_argument("--root", type=Path, default=Path("."), help="folder that holds runs/")
    runner = argparse.ArgumentParser(add_help=False)
    runner.add_argument("--per-gpu", type=int, default=None, help="runs at a time per GPU")
    runner.add_argument("--gpus", type=gpu_list, default=None, help="GPU indices to use, e.g. 0,1")
    runner.add_argument("--retries", type=int, default=2, help="retries of a failing run")
    runner.add_argument(
        "--queue",
        type=Path,
        default=os.environ.get("GAFKD_QUEUE") or None,
        help="host-wide slot folder shared with other users' runners (default: $GAFKD_QUEUE)",
    )

    train = commands.add_parser("train", parents=[overrides], help="train one run from a config")
    train.add_argument("config", help="path to a .toml run config, or a shipped config name")
    commands.add_parser("configs", help="list the configs shipped with gafkd")
    commands.add_parser("grids", help="list the grids shipped with gafkd")

    launch = commands.add_parser(
        "launch", parents=[overrides, root, runner], help="run a grid on this machine"
    )
    launch.add_argument("grid", help="a shipped grid name (gafkd grids) or a grid .toml file")
    launch.add_argument("--dry", action="store_true", help="print the plan, change nothing")
    launch.add_argument("--foreground", action="store_true", help="stay attached until done")
    launch.add_argument("--resume", action="store_true", help="restart a planned batch as is")
    launch.add_argument(
        "--on-reboot",
        action="store_true",
        help="resume the batch after a reboot (an @reboot line in your crontab, until it ends)",
    )
    launch.add_argument(
        "--rerun-changed",
        action="store_true",
        help="rerun runs made with another config (their old folders are moved aside)",
    )
    launch.add_argument(
        "--backend",
        choices=("local", "slurm"),
        default="local",
        help="local: this machine's runner; slurm: one job array per stage (docs/scale-out.md)",
    )
    status = commands.add_parser("status", parents=[root], help="GPUs, health and batches")
    status.add_argument("--grid", default=None, help="only this grid's batch")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    status.add_argument(
        "--frame",
        default=None,
        metavar="MARKER",
        help="with --json: a line MARKER before and after the JSON, so that a caller finds it "
        "among what a login banner or wrapper prints (invoke status --host)",
    )
    results = commands.add_parser(
        "results", parents=[root], help="mean ± std over seeds: markdown, CSV and a plot"
    )
    results.add_argument("grid", help="the grid's name (its folder under runs/)")
    results.add_argument(
        "--reference",
        default=None,
        help="a reference file of earlier numbers, or a shipped one: lab, wang_oates",
    )
    cancel = commands.add_parser("cancel", parents=[root], help="cancel a run or a whole batch")
    cancel.add_argument("grid", help="the launched grid")
    cancel.add_argument("--run", default=None, help="one run id (default: the whole batch)")
    logs = commands.add_parser("logs", parents=[root], help="show a run's log")
    logs.add_argument("run", help="a run id, e.g. student/dataset-watch_alpha-0.3/seed0")
    logs.add_argument("--grid", default=None, help="the grid (default: search all)")
    logs.add_argument("--follow", action="store_true", help="keep printing until it stops")
    batch_run = commands.add_parser(
        "batch-run", parents=[root, runner], help="(internal) the runner of a launched grid"
    )
    batch_run.add_argument("grid")
    batch_run.add_argument("--lock-fd", type=int, default=None, help="the grid's lock, inherited")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run_command(args)
    except (ConfigError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command: one function per command (`COMMANDS`), each importing what it
    needs, so that ``status`` and ``launch`` stay torch-free."""
    COMMANDS[args.command](args)
    return 0


def _configs(args: argparse.Namespace) -> None:
    for name, path in builtin_configs().items():
        print(f"{name}\t{path}")


def _grids(args: argparse.Namespace) -> None:
    from gafkd.experiments.grid import load_grid, shipped_grids

    for name in shipped_grids():
        print(f"{name}\t{load_grid(name).description}")


def _train(args: argparse.Namespace) -> None:
    from gafkd.run import train_run  # torch is imported only when needed

    train_run(load_config(resolve_config_path(args.config), args.overrides))


def _launch(args: argparse.Namespace) -> None:
    from gafkd.experiments.launch import launch_with

    options = launch_options(args)
    launch_with(args.grid, args.root, options, dry=args.dry, foreground=args.foreground)


def launch_options(args: argparse.Namespace) -> LaunchOptions:
    """The `LaunchOptions` of a parsed ``gafkd launch`` (what `launch_flags` wrote)."""
    from gafkd.experiments.launch import LaunchOptions

    return LaunchOptions(
        overrides=tuple(args.overrides),
        retries=args.retries,
        per_gpu=args.per_gpu,
        gpus=None if args.gpus is None else tuple(args.gpus),
        queue=args.queue,
        resume=args.resume,
        backend=args.backend,
        on_reboot=args.on_reboot,
        rerun_changed=args.rerun_changed,
    )


def _status(args: argparse.Namespace) -> None:
    show_status(args.root, args.grid, as_json=args.json, watch=args.watch, frame=args.frame)


def _results(args: argparse.Namespace) -> None:
    from gafkd.experiments.launch import print_results
    from gafkd.results import LAB_REFERENCE

    reference = LAB_REFERENCE if args.reference == "lab" else args.reference
    print_results(args.root, args.grid, reference)


def _cancel(args: argparse.Namespace) -> None:
    from gafkd.experiments.control import cancel

    cancel(args.root, args.grid, args.run)


def _logs(args: argparse.Namespace) -> None:
    from gafkd.experiments.control import show_log

    show_log(args.root, args.run, args.grid, follow=args.follow)


def _batch_run(args: argparse.Namespace) -> None:
    """The detached runner ``launch`` starts; when the batch ends, its @reboot line goes."""
    from gafkd.experiments.launch import choose_slots
    from gafkd.experiments.runner import run_batch

    slots, _ = choose_slots(args.per_gpu, args.gpus)
    states = run_batch(
        args.root, args.grid, slots, retries=args.retries, queue=args.queue, lock_fd=args.lock_fd
    )
    if not any(state.status in ("queued", "running") for state in states.values()):
        from gafkd.experiments import reboot

        reboot.remove(args.root, args.grid)  # the batch ended: nothing to resume at boot


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "configs": _configs,
    "grids": _grids,
    "train": _train,
    "launch": _launch,
    "status": _status,
    "results": _results,
    "cancel": _cancel,
    "logs": _logs,
    "batch-run": _batch_run,
}
