"""``invoke status --host lab1,lab2``: each host's screen under its alias, once, as JSON, or
watched; the statuses come from the caller (provisioning fetches them over ssh)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from gafkd.experiments import status
from gafkd.experiments.screen import render_hosts
from gafkd.experiments.status import collect, show_hosts


def two_hosts(tmp_path: Path) -> dict[str, dict[str, Any]]:
    one = collect(tmp_path, nvml=None)
    return {"lab1": one, "lab2": one | {"host": "other-machine"}}


def test_each_host_screen_sits_under_its_alias(tmp_path: Path) -> None:
    console = Console(record=True, width=120)
    console.print(render_hosts(two_hosts(tmp_path)))
    text = console.export_text()
    assert text.index("lab1") < text.index("lab2") < text.index("other-machine")
    assert text.count("no batch under runs/*/.batch") == 2


def test_show_hosts_prints_json_or_one_screen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    statuses = two_hosts(tmp_path)
    show_hosts(lambda: statuses, as_json=True, watch=False)
    assert json.loads(capsys.readouterr().out) == statuses
    console = Console(record=True, width=120)
    show_hosts(lambda: statuses, as_json=False, watch=False, console=console)
    assert "other-machine" in console.export_text()


def test_watch_fetches_again_until_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statuses = two_hosts(tmp_path)
    fetched: list[int] = []
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    def fetch() -> dict[str, dict[str, Any]]:
        fetched.append(1)
        return statuses

    monkeypatch.setattr(status.time, "sleep", sleep)
    show_hosts(fetch, as_json=False, watch=True, interval=0.5, console=Console(file=io.StringIO()))
    assert sleeps == [0.5, 0.5, 0.5]
    assert len(fetched) == 3  # the first screen, then one per refresh before Ctrl-C
