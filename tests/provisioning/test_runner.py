"""The step runner and its reports, and the Command record it applies."""

from __future__ import annotations

import json
import shlex
from collections.abc import Generator

import pytest

from provisioning.core import Command, ProvisionError, SkipStep, write_file
from provisioning.hosts import Host
from provisioning.runner import Outcome, plan, report_json, report_table, run_host, run_hosts

HOST = Host("lab")


def ensure_marker(connection, host) -> Generator[Command, None, str]:
    if connection.run("test -e /srv/marker", warn=True, hide=True).ok:
        return "marker present"
    yield Command(("touch", "/srv/marker"), sudo=True, why="the marker is missing")
    return "marker present"


def failing_check(connection, host) -> Generator[Command, None, str]:
    yield from ()
    raise ProvisionError("driver 535 allows CUDA <= 12.2 but the env needs 12.4")


@pytest.mark.parametrize(
    "argv",
    [("useradd", "x; rm -rf /"), ("chown", "$(id)", "/srv/lab data"), ("echo", "`reboot`")],
)
def test_command_quotes_metacharacters_as_single_argv_elements(argv) -> None:
    rendered = str(Command(argv, sudo=False, why="test"))
    assert shlex.split(rendered) == list(argv)


def test_command_shows_sudo_as_a_prefix_only_when_asked() -> None:
    assert str(Command(("systemctl", "mask", "sleep.target"), sudo=True, why="")).startswith(
        "sudo systemctl"
    )
    assert str(Command(("true",), sudo=False, why="")) == "true"


def test_plan_collects_commands_and_the_ok_reason(fake) -> None:
    commands, reason = plan(ensure_marker, fake(), HOST)
    assert commands == [Command(("touch", "/srv/marker"), sudo=True, why="the marker is missing")]
    assert reason == "marker present"
    assert plan(ensure_marker, fake(paths={"/srv/marker"}), HOST) == ([], "marker present")


def test_run_host_prints_plan_applies_then_verifies(fake) -> None:
    connection, lines = fake(), []
    connection.hooks["touch /srv/marker"] = lambda: connection.paths.add("/srv/marker")
    outcomes = run_host(connection, HOST, [("marker", ensure_marker)], dry=False, echo=lines.append)
    assert lines == ["lab | marker | the marker is missing | sudo touch /srv/marker"]
    assert connection.ran.count("sudo -n -- touch /srv/marker") == 1
    assert outcomes == [
        Outcome("lab", "marker", "changed", "applied 1, verified", ("sudo touch /srv/marker",))
    ]
    second = run_host(connection, HOST, [("marker", ensure_marker)], dry=False, echo=lines.append)
    assert second == [Outcome("lab", "marker", "ok", "marker present")]
    assert lines[-1] == "lab | marker | ok: marker present"


def test_dry_run_applies_nothing_and_reports_planned(fake) -> None:
    connection = fake()
    outcomes = run_host(connection, HOST, [("marker", ensure_marker)], dry=True, echo=print)
    assert [o.status for o in outcomes] == ["planned"]
    assert connection.ran == ["test -e /srv/marker"]


def test_a_change_that_does_not_stick_is_failed_not_ok(fake) -> None:
    connection = fake()  # touch "succeeds" but the marker never appears
    connection.replies["touch /srv/marker"] = ("", 0)
    outcomes = run_host(connection, HOST, [("marker", ensure_marker)], dry=False, echo=print)
    assert outcomes[0].status == "failed"
    assert "still differs" in outcomes[0].detail


def test_a_failed_step_skips_the_later_steps_untouched(fake) -> None:
    connection = fake()
    steps = [("gpu", failing_check), ("marker", ensure_marker)]
    outcomes = run_host(connection, HOST, steps, dry=False, echo=print)
    assert [(o.step, o.status) for o in outcomes] == [("gpu", "failed"), ("marker", "skipped")]
    assert "needs 12.4" in outcomes[0].detail
    assert outcomes[1].detail == "an earlier step failed"
    assert connection.ran == []


def no_gpu_here(connection, host) -> Generator[Command, None, str]:
    yield from ()
    raise SkipStep("no NVIDIA driver on the host (NVML missing)")


def test_a_skipped_step_is_reported_and_the_later_steps_run(fake) -> None:
    connection, lines = fake(paths={"/srv/marker"}), []
    steps = [("gpu", no_gpu_here), ("marker", ensure_marker)]
    outcomes = run_host(connection, HOST, steps, dry=False, echo=lines.append)
    assert [(o.step, o.status) for o in outcomes] == [("gpu", "skipped"), ("marker", "ok")]
    assert outcomes[0].detail == "no NVIDIA driver on the host (NVML missing)"
    assert lines[0] == "lab | gpu | skipped: no NVIDIA driver on the host (NVML missing)"


def test_a_local_command_runs_here_with_its_stdin_in_a_private_file(fake) -> None:
    rsync = "rsync --files-from /dev/stdin /src/ lab:/dst/"
    copied: list[bool] = []

    def ensure_copy(connection, host) -> Generator[Command, None, str]:
        if not copied:
            yield Command(tuple(shlex.split(rsync)), False, "copy", stdin="a\0b", local=True)
        return "copied"

    connection = fake()
    connection.hooks[rsync] = lambda: copied.append(True)
    outcomes = run_host(connection, HOST, [("sync", ensure_copy)], dry=False, echo=print)
    assert outcomes[0].status == "changed"
    assert connection.ran_local == [(rsync, "a\0b")]  # the file's content, read by the fake
    assert connection.ran == []  # nothing ran on the host


def test_a_failing_command_stops_the_host_and_names_the_command(fake) -> None:
    connection = fake(replies={"touch /srv/marker": ("", 1)})
    outcomes = run_host(connection, HOST, [("marker", ensure_marker)], dry=False, echo=print)
    assert outcomes[0].status == "failed"
    assert "`sudo touch /srv/marker` failed with exit status 1" in outcomes[0].detail
    assert "(after 0 of 1 commands)" in outcomes[0].detail


def test_sudo_with_a_password_goes_through_fabric_sudo(fake) -> None:
    connection = fake(sudo_password="s3cret")
    connection.hooks["touch /srv/marker"] = lambda: connection.paths.add("/srv/marker")
    outcomes = run_host(
        connection, HOST, [("marker", ensure_marker)], dry=False, echo=print, sudo_password="s3cret"
    )
    assert outcomes[0].status == "changed"


def test_a_wrong_sudo_password_is_one_clear_error(fake) -> None:
    connection = fake(sudo_password="right")
    outcomes = run_host(
        connection, HOST, [("marker", ensure_marker)], dry=False, echo=print, sudo_password="wrong"
    )
    assert outcomes[0].status == "failed"
    assert "sudo rejected the password" in outcomes[0].detail


def test_sudo_needing_a_password_says_how_to_give_one(fake) -> None:
    connection = fake()
    connection.answer = lambda argv: ("", "sudo: a password is required\n", 1)
    connection.paths = set()
    outcomes = run_host(connection, HOST, [("marker", ensure_marker)], dry=False, echo=print)
    assert "--ask-sudo-password" in outcomes[0].detail


def test_file_content_is_uploaded_and_never_part_of_a_command_line(fake) -> None:
    content = "[Login]\nIdleAction=ignore\n$(reboot)\n"

    def ensure_file(connection, host) -> Generator[Command, None, str]:
        if connection.run("cat -- /etc/x.conf", warn=True, hide=True).stdout != content:
            yield write_file("/etc/x.conf", content, why="write x")
        return "x written"

    connection = fake()
    outcomes = run_host(connection, HOST, [("file", ensure_file)], dry=False, echo=print)
    assert outcomes[0].status == "changed"
    assert connection.files["/etc/x.conf"] == content
    assert not any("reboot" in command for command in connection.ran)
    assert "sudo -n -- install -D -m 0644 /tmp/tmp.fake1 /etc/x.conf" in connection.ran
    assert "rm -f -- /tmp/tmp.fake1" in connection.ran


def test_hosts_run_in_parallel_and_a_connect_failure_skips_that_host(fake) -> None:
    good = fake(paths={"/srv/marker"})

    def connect(host):
        if host.alias == "lab2":
            raise ProvisionError("cannot reach lab2")
        return good

    steps = [("marker", ensure_marker), ("gpu", failing_check)]
    outcomes = run_hosts([Host("lab1"), Host("lab2")], connect, steps, dry=True, echo=print)
    assert [(o.host, o.step, o.status) for o in outcomes] == [
        ("lab1", "marker", "ok"),
        ("lab1", "gpu", "failed"),
        ("lab2", "marker", "failed"),
        ("lab2", "gpu", "skipped"),
    ]


def test_reports_carry_host_step_status_and_why() -> None:
    outcomes = [
        Outcome("lab", "gpu", "ok", "driver fine"),
        Outcome("lab", "power", "planned", "dry run: 1 to apply", ("sudo systemctl mask x",)),
    ]
    data = json.loads(report_json(outcomes, dry=True))
    assert data["dry"] is True
    assert data["outcomes"][1] == {
        "host": "lab",
        "step": "power",
        "status": "planned",
        "detail": "dry run: 1 to apply",
        "commands": ["sudo systemctl mask x"],
    }
    assert report_table(outcomes).row_count == 2
