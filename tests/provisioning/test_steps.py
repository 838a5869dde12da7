"""What the tasks call in provisioning: choosing and running steps, the report, connecting hosts,
and the requests ``status``, ``cancel`` and ``logs --host`` send to a host."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from provisioning import hosts, remote, steps
from provisioning.core import ProvisionError
from provisioning.hosts import Host, LocalConnection
from provisioning.runner import DRY_NOTE, Outcome, fail_on_errors, print_report

FAILED = [
    Outcome("lab", "system", "ok", "Ubuntu 24.04"),
    Outcome("lab", "gpu", "failed", "no driver"),
    Outcome("lab2", "sync", "failed", "rsync: denied"),
]


def test_the_steps_run_in_their_order_and_only_one_is_checked() -> None:
    assert steps.choose_steps("", slurm=False) == list(steps.STEPS)
    assert steps.choose_steps("", slurm=True) == list(steps.ALL_STEPS)
    assert steps.choose_steps("slurm-conf", slurm=False) == ["slurm-conf"]
    assert list(steps.STEPS)[:2] == ["system", "gpu"]
    with pytest.raises(ProvisionError, match=r"^--only 'gpus' is not a step; choose one of sys"):
        steps.choose_steps("gpus", slurm=False)


def test_an_unknown_host_is_one_error_before_the_password_is_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(steps, "getpass", lambda prompt: pytest.fail("asked for a password"))
    with pytest.raises(ProvisionError, match=r"^unknown host 'nowhere-xyz'"):
        steps.run_steps("nowhere-xyz", {}, ["gpu"], dry=True, echo=print, ask_password=True)


def test_the_doctor_step_runs_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    (outcome,) = steps.run_steps("local", {}, ["gpu"], dry=True, echo=print)
    assert (outcome.host, outcome.step) == ("local", "gpu")
    assert outcome.status in ("ok", "skipped", "failed", "planned")
    assert "local | gpu | " in capsys.readouterr().out


def test_fail_on_errors_names_every_failed_step_one_line_each() -> None:
    fail_on_errors(FAILED[:1])
    with pytest.raises(ProvisionError) as error:
        fail_on_errors(FAILED)
    shown = f"error: {error.value}"  # as the tasks print it
    assert shown.splitlines() == ["error: lab gpu: no driver", "error: lab2 sync: rsync: denied"]


@pytest.mark.parametrize("as_json", [False, True])
def test_the_report_and_the_dry_run_caveat(
    as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    planned = [*FAILED, Outcome("lab", "envs", "planned", "1 env to create")]
    print_report(planned, as_json=as_json, dry=True)
    out, err = capsys.readouterr()
    if as_json:
        assert json.loads(out)["outcomes"][3]["status"] == "planned"
        assert err.strip() == DRY_NOTE  # stdout stays JSON
    else:
        assert "1 env to create" in out
        assert out.rstrip().endswith(DRY_NOTE)
    print_report(FAILED, as_json=False, dry=True)
    assert DRY_NOTE not in capsys.readouterr().out  # nothing planned, nothing to caveat


def test_a_task_for_one_host_refuses_several_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hosts, "connect", lambda host: pytest.fail("connected"))
    with pytest.raises(ProvisionError, match=r"^--host 'a,b' names several hosts; this task"):
        hosts.connect_one("a,b", {"a": {}, "b": {}})


def test_connect_hosts_pairs_each_host_with_its_connection(tmp_path: Path) -> None:
    opened = hosts.connect_hosts("local", {}, tmp_path / "no-ssh-config")
    ((host, connection),) = opened
    assert host == Host("local")
    assert isinstance(connection, LocalConnection)
    with pytest.raises(ProvisionError, match=r"^unknown host 'lab'"):
        hosts.connect_hosts("local,lab", {}, tmp_path / "no-ssh-config")


def test_statuses_cancel_and_logs_ask_gafkd_on_the_host(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    host = Host("local", lab_dir=str(tmp_path), python=sys.executable)
    opened: list[tuple[Host, Any]] = [(host, LocalConnection())]
    assert remote.statuses(opened)["local"]["batches"] == []
    with pytest.raises(ProvisionError, match=r"^local: no batch of grid 'kd_alpha'"):
        remote.cancel(LocalConnection(), host, "kd_alpha", "teacher/x/seed0")
    with pytest.raises(ProvisionError, match=r"^local: .*student/x/seed0"):
        remote.logs(LocalConnection(), host, "student/x/seed0", grid=None)


class Recorder:
    """A connection that records each command's argv after ``gafkd`` and prints `stdout`."""

    def __init__(self, stdout: str = "") -> None:
        self.argv: list[list[str]] = []
        self.stdout = stdout

    def run(self, command: str, **kwargs: Any) -> Any:
        from invoke.runners import Result

        words = shlex.split(command)
        self.argv.append(words[words.index("gafkd", 4) + 1 :])
        return Result(stdout=self.stdout, stderr="", exited=0, command=command)


def test_cancel_and_logs_send_their_options() -> None:
    fake = Recorder("cancelled 2 runs\n")
    host = Host("lab")
    assert remote.cancel(fake, host, "kd_alpha") == "cancelled 2 runs\n"  # type: ignore[arg-type]
    remote.cancel(fake, host, "kd_alpha", "s/a/seed0")  # type: ignore[arg-type]
    remote.logs(fake, host, "s/a/seed0")  # type: ignore[arg-type]
    remote.logs(fake, host, "s/a/seed0", grid="kd_alpha", follow=True)  # type: ignore[arg-type]
    assert fake.argv == [
        ["cancel", "kd_alpha"],
        ["cancel", "kd_alpha", "--run", "s/a/seed0"],
        ["logs", "s/a/seed0"],
        ["logs", "s/a/seed0", "--grid", "kd_alpha", "--follow"],
    ]
