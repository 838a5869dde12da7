"""`gafkd launch`'s options on a command line: one writer (`launch_flags`), read back by the CLI.

The runner's flags, the ``@reboot`` line's and those ``invoke launch --host`` sends to a lab host
all come from `launch_flags`; these tests hold it to what ``gafkd launch`` parses.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gafkd import cli
from gafkd.config import ConfigError
from gafkd.experiments.launch import (
    LaunchOptions,
    check_for_host,
    for_host,
    launch_flags,
    parse_options,
)

EVERY_OPTION = LaunchOptions(
    overrides=("dataset=watch", "train.alpha=[0.3, 0.7]", "slurm.partition=gpu"),
    retries=5,
    per_gpu=3,
    gpus=(0, 2),
    queue=Path("/srv/lab/.gafkd-queue"),
    resume=True,
    backend="slurm",
    on_reboot=True,
    rerun_changed=True,
)


def read_back(flags: list[str]) -> LaunchOptions:
    return cli.launch_options(cli.parser().parse_args(["launch", "kd_alpha", *flags]))


@pytest.mark.parametrize(
    "options",
    [
        LaunchOptions(),
        EVERY_OPTION,
        *(
            replace(LaunchOptions(), **{name: getattr(EVERY_OPTION, name)})
            for name in LaunchOptions.__dataclass_fields__
        ),
        replace(EVERY_OPTION, gpus=None, backend="local", retries=0),
    ],
)
def test_every_launch_option_survives_the_round_trip_through_the_cli(
    options: LaunchOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GAFKD_QUEUE", raising=False)
    assert read_back(launch_flags(options)) == options


def test_the_flags_are_set_items_in_order_then_the_rest() -> None:
    assert launch_flags(LaunchOptions()) == ["--retries=2"]
    assert launch_flags(EVERY_OPTION) == [
        "--set=dataset=watch",
        "--set=train.alpha=[0.3, 0.7]",
        "--set=slurm.partition=gpu",
        "--retries=5",
        "--per-gpu=3",
        "--gpus=0,2",
        "--queue=/srv/lab/.gafkd-queue",
        "--resume",
        "--backend=slurm",
        "--on-reboot",
        "--rerun-changed",
    ]


def test_invoke_text_options_parse_into_launch_options() -> None:
    options = parse_options(["seed=[0]"], per_gpu="2", gpus="0, 1", resume=True)
    assert options == LaunchOptions(("seed=[0]",), per_gpu=2, gpus=(0, 1), resume=True, backend="")
    assert parse_options([]) == LaunchOptions(backend="")
    with pytest.raises(ConfigError, match=r"^--gpus takes GPU indices like 0,1; got '0,x'"):
        parse_options([], per_gpu="0", gpus="0,x")  # --gpus is read first, as before
    with pytest.raises(ConfigError, match=r"^--per-gpu takes a whole number of at least 1"):
        parse_options([], per_gpu="two")


def test_a_host_launch_takes_the_host_backend_and_its_slurm_settings_before_the_sets() -> None:
    options = LaunchOptions(("slurm.cpus=2",), backend="")
    settings = ("slurm.partition=gpu", "slurm.cpus=8")
    sent = for_host(options, "cluster", "slurm", settings)
    assert sent.backend == "slurm"
    assert sent.overrides == ("slurm.partition=gpu", "slurm.cpus=8", "slurm.cpus=2")
    local = for_host(replace(options, overrides=()), "cluster", "local", settings)
    assert (local.backend, local.overrides) == ("local", ())
    chosen = for_host(replace(options, backend="local"), "cluster", "slurm", settings)
    assert (chosen.backend, chosen.overrides) == ("local", ("slurm.cpus=2",))
    with pytest.raises(ConfigError, match=r"^invoke\.yaml hosts\.cluster\.slurm: .*slurm\.partion"):
        for_host(options, "cluster", "slurm", ("slurm.partion=gpu",))


def test_a_host_launch_refuses_foreground_and_a_control_character_first() -> None:
    with pytest.raises(ConfigError, match=r"^--foreground stays here; with --host the runner"):
        check_for_host(LaunchOptions(), foreground=True)
    with pytest.raises(ConfigError, match=r"^--set slurm\.account: a newline is not allowed"):
        check_for_host(LaunchOptions(("slurm.account=lab\ntouch x",)), foreground=False)
    check_for_host(EVERY_OPTION, foreground=False)
