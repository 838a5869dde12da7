"""Experiment tasks: train one run (grids, launch, status and results come next).

Tasks only parse arguments, call one function in gafkd/ or provisioning/, and print the result;
ConfigError and ProvisionError become one-line errors here, and nowhere else.
"""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task


@task(
    help={
        "config": "a .toml run config, or the name of a config shipped with gafkd (gafkd configs)",
        "set": "override a config field, e.g. --set train.epochs=5 (repeatable)",
    },
    iterable=["set"],
)
def train(c: Context, config: str, set: list[str] | None = None) -> None:
    """Train one run (and the teachers it names) on this machine, resuming if interrupted."""
    from gafkd.cli import resolve_config_path
    from gafkd.config import ConfigError, load_config
    from gafkd.run import train_run
    from gafkd.train import TrainingError

    try:
        train_run(load_config(resolve_config_path(config), set or []))
    except (ConfigError, TrainingError) as error:
        raise Exit(f"error: {error}", code=1) from None
