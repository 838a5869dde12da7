"""Command line: ``gafkd train CONFIG`` (also ``python -m gafkd train CONFIG``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from gafkd.config import ConfigError, load_config
from gafkd.train import TrainingError


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gafkd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one run (and its teachers) from a TOML config")
    train.add_argument("config", help="path to a .toml run config, or a shipped config name")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.epochs=5 (repeatable)",
    )
    commands.add_parser("configs", help="list the configs shipped with gafkd")
    args = parser.parse_args(argv)

    from gafkd.run import train_run  # torch import only when needed

    try:
        if args.command == "configs":
            for name, path in builtin_configs().items():
                print(f"{name}\t{path}")
            return 0
        config = load_config(resolve_config_path(args.config), args.overrides)
        train_run(config)
    except (ConfigError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
