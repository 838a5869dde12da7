"""End to end through invoke: launch the real kd_alpha grid on the bundled data, then results."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke"]


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INVOKE, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_launch_then_results_on_the_bundled_dataset(tmp_path: Path) -> None:
    launched = invoke(
        "launch",
        "--grid",
        "kd_alpha",
        "--root",
        str(tmp_path),
        "--foreground",
        "--set",
        "dataset=watch",
        "--set",
        "train.epochs=1",
        "--set",
        "seed=[0]",
        "--set",
        "train.alpha=[0.3, 0.7]",
    )
    assert launched.returncode == 0, launched.stderr
    assert "grid kd_alpha: 4 done" in launched.stdout
    results = invoke("results", "--grid", "kd_alpha", "--root", str(tmp_path), "--reference", "lab")
    assert results.returncode == 0, results.stderr
    table = (tmp_path / "runs/kd_alpha/results.md").read_text()
    assert "| watch | 0.3 |" in table
    assert "| watch | 0.7 |" in table
    for name in ("results-accuracy.png", "results-alpha.png", "results-epochs.png"):
        assert (tmp_path / "runs/kd_alpha" / name).read_bytes()[:4] == b"\x89PNG"
    assert "plots: " in results.stdout


def test_unknown_grid_is_one_line_without_traceback(tmp_path: Path) -> None:
    done = invoke("launch", "--grid", "kd_beta", "--root", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: unknown grid 'kd_beta'")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_status_json_without_batches(tmp_path: Path) -> None:
    done = invoke("status", "--json", "--root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert '"batches": []' in done.stdout


def test_launch_on_a_slurm_host_passes_its_settings_then_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from invoke import Context

    import tasks
    from provisioning import hosts, remote
    from provisioning.hosts import parse_host

    host = parse_host("cluster", {"backend": "slurm", "slurm": {"partition": "gpu", "cpus": 8}})
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(hosts, "connect_one", lambda name, configured: (host, None))
    monkeypatch.setattr(
        remote, "launch", lambda conn, lab, grid, options, **kw: calls.append((grid, options))
    )
    tasks.launch.body(Context(), "kd_alpha", set=["slurm.cpus=2"], host="cluster")
    ((grid, options),) = calls
    assert grid == "kd_alpha"
    sets = [o for o in options if o.startswith("--set=")]
    assert sets == ["--set=slurm.partition=gpu", "--set=slurm.cpus=8", "--set=slurm.cpus=2"]
    assert "--backend=slurm" in options  # the host's default backend

    calls.clear()
    tasks.launch.body(Context(), "kd_alpha", host="cluster", backend="local")
    ((_, options),) = calls
    assert not [o for o in options if "slurm" in o]  # --backend local: no Slurm settings


def test_a_bad_slurm_setting_in_invoke_yaml_names_the_host_and_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from invoke import Context
    from invoke.exceptions import Exit

    import tasks
    from provisioning import hosts, remote
    from provisioning.core import ProvisionError
    from provisioning.hosts import parse_host

    host = parse_host("cluster", {"backend": "slurm", "slurm": {"partion": "gpu"}})
    calls: list[str] = []
    monkeypatch.setattr(hosts, "connect_one", lambda name, configured: (host, None))
    monkeypatch.setattr(remote, "launch", lambda conn, lab, grid, options, **kw: calls.append(grid))
    with pytest.raises(Exit) as error:
        tasks.launch.body(Context(), "kd_alpha", host="cluster")
    message = str(error.value.message)
    assert re.match(r"error: invoke\.yaml hosts\.cluster\.slurm: .*slurm\.partion", message)
    assert "\n" not in message
    assert calls == []  # nothing was synced, nothing ran on the host
    with pytest.raises(ProvisionError, match=r"hosts\.cluster\.backend is 'k8s'"):
        parse_host("cluster", {"backend": "k8s"})


def test_a_control_character_in_a_set_for_a_host_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from invoke import Context
    from invoke.exceptions import Exit

    import tasks
    from provisioning import hosts

    connected: list[str] = []
    monkeypatch.setattr(hosts, "connect_one", lambda name, configured: connected.append(name))
    with pytest.raises(Exit) as error:
        tasks.launch.body(
            Context(), "kd_alpha", set=["slurm.account=lab\ntouch x"], host="cluster", dry=True
        )
    message = str(error.value.message)
    assert message.startswith("error: --set slurm.account: a newline is not allowed"), message
    assert "\n" not in message
    assert connected == []  # nothing was synced, nothing ran on the host


@pytest.mark.parametrize(
    ("task", "options", "message"),
    [
        ("launch", {"gpus": "x"}, "error: --gpus takes GPU indices like 0,1; got 'x'"),
        ("launch", {"gpus": ","}, "error: --gpus ',' names no GPU; give indices like 0,1"),
        ("launch", {"backend": "k8s", "host": "lab"}, "error: backend 'k8s' is unknown"),
        ("launch", {"gpus": "0,x", "host": "lab"}, "error: --gpus takes GPU indices like 0,1"),
        ("launch", {"per_gpu": "0"}, "error: --per-gpu takes a whole number of at least 1"),
        ("launch", {"per_gpu": "two", "host": "lab"}, "error: --per-gpu takes a whole number"),
        ("launch", {"grid": "../x", "resume": True}, "error: grid name '../x' is not a folder"),
        ("results", {"grid": "../x", "host": "lab"}, "error: grid name '../x' is not a folder"),
        ("cancel", {"grid": "a/b", "host": "lab"}, "error: grid name 'a/b' is not a folder"),
        ("status", {"grid": "..", "host": "lab"}, "error: grid name '..' is not a folder"),
        ("logs", {"run": "r", "grid": "../x"}, "error: grid name '../x' is not a folder"),
    ],
)
def test_bad_task_options_are_one_line_before_any_connection(
    task: str, options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    from invoke import Context
    from invoke.exceptions import Exit

    import tasks

    arguments = {"grid": "kd_alpha"} if task != "logs" else {}
    with pytest.raises(Exit) as error:
        getattr(tasks, task).body(Context(), **(arguments | options), root=str(tmp_path))
    assert str(error.value.message).startswith(message)
    assert not (tmp_path / "runs").exists()


def test_a_damaged_state_file_is_one_line_in_each_task(tmp_path: Path) -> None:
    """The invoke tasks report a damaged batch file like the CLI (tests/gafkd/test_damaged.py)."""
    batch = tmp_path / "runs/g/.batch"
    batch.mkdir(parents=True)
    run = {"id": "s/a/seed0", "stage": "s", "group": "s/a", "run_dir": "runs/g/s/a/seed0"}
    (batch / "plan.json").write_text(json.dumps({"grid": "g", "runs": [run | {"needs": []}]}))
    (batch / "state.json").write_text('{"grid": "g", "runs": {"s/a/seed0": {"stat')
    shown = invoke("status", "--root", str(tmp_path))
    assert shown.returncode == 0, shown.stderr
    assert "damaged" in shown.stdout
    assert "not started" not in shown.stdout
    for args in (("cancel", "--grid", "g"), ("results", "--grid", "g")):
        done = invoke(*args, "--root", str(tmp_path))
        assert done.returncode == 1
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: {batch / 'state.json'} is damaged (not valid JSON")
        assert line.endswith(
            "delete it; `gafkd launch g --resume` writes it anew (finished runs are kept)"
        )
    assert sorted(path.name for path in batch.iterdir()) == ["plan.json", "state.json"]
