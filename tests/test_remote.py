"""``--host`` for launch, status, results, logs and cancel, against the real Debian test host.

The host (tests/provisioning/testhost.py, its own copy and port) gets a gafkd env without
internet: this interpreter's site-packages (torch, seglearn's ``watch`` data, pip, setuptools)
bind-mounted read-only inside the host's mount namespace, and a tiny venv at the default
``~/.conda/envs/gafkd`` on the host's own python3 whose ``.pth`` adds them. ``launch --host``
then syncs the checkout and ``pip install -e``'s it into that venv, as on a lab server.
"""

from __future__ import annotations

import json
import os
import shlex
import site
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioning import remote
from provisioning.core import ProvisionError
from provisioning.hosts import Host, LocalConnection, connect, parse_host
from tests.provisioning import testhost

ROOT = Path(__file__).resolve().parent.parent
SHARED = "/opt/gafkd-shared/site-packages"  # inside the host
ENV = "root/.conda/envs/gafkd"  # the default python setting, for the root login
SETS = ("dataset=watch", "train.epochs=1", "seed=[0]", "train.alpha=[0.3]")
STUDENT = "student/dataset-watch_alpha-0.3/seed0"


def prepare_env(host: Any) -> None:
    """A venv on the host's python3 that sees this interpreter's site-packages (read-only)."""
    here = sys.version_info[:2]
    found = host.inside("python3", "-c", "import sys; print(*sys.version_info[:2])").stdout
    if tuple(int(part) for part in found.split()) != here:
        raise testhost.Unavailable(f"the host's python3 is {found.strip()}, this one {here}")
    host.bind(Path(site.getsitepackages()[0]), SHARED)
    env = host.root / ENV
    packages = env / "lib" / f"python{here[0]}.{here[1]}" / "site-packages"
    packages.mkdir(parents=True)
    (env / "bin").mkdir()
    (env / "bin" / "python").symlink_to("/usr/bin/python3")
    (env / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    (packages / "gafkd-shared.pth").write_text(f"{SHARED}\n")
    probe = ssh(host, f"/{ENV}/bin/python", "-c", "import torch, numpy, scipy, pip, setuptools")
    if probe.returncode != 0:
        raise testhost.Unavailable(f"the env on the host cannot import torch: {probe.stderr}")


def ssh(host: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    command = ["ssh", "-F", str(host.ssh_config), "-o", "BatchMode=yes", host.alias]
    command.append(shlex.join(argv))  # ssh hands the remote shell one line
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def labhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The test host with a gafkd env; skips with the reason when either cannot be had."""
    hosts = testhost.bring_up(tmp_path_factory.mktemp("labhost"), name="remote")
    try:
        host = next(hosts)
        prepare_env(host)
    except (testhost.Unavailable, OSError) as error:
        hosts.close()
        pytest.skip(f"ssh test host with a gafkd env unavailable: {error}")
    yield host
    hosts.close()  # stops sshd, the runner and every other process in it, removes the copy


@pytest.fixture(scope="module")
def config(labhost: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """invoke.yaml hosts: the test host, and ``noenv`` (same host, an env that is not there)."""
    settings = labhost.settings()
    hosts = {labhost.alias: settings, "noenv": {**settings, "python": "/opt/none/bin/python"}}
    folder = tmp_path_factory.mktemp("invoke")
    text = labhost.ssh_config.read_text()
    first = text.split("\n\n")[0].replace(f"Host {labhost.alias}\n", "Host noenv\n")
    (folder / "ssh_config").write_text(text + "\n" + first)
    hosts["noenv"]["ssh_config"] = str(folder / "ssh_config")
    return testhost.write_invoke_config(folder / "invoke.json", hosts)  # type: ignore[no-any-return]


def invoke(config: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INVOKE_RUNTIME_CONFIG": str(config)}
    argv = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def sets() -> list[str]:
    return [part for item in SETS for part in ("--set", item)]


def wait_done(config: Path, alias: str, grid: str = "kd_alpha") -> dict[str, Any]:
    for _ in range(240):
        done = invoke(config, "status", "--host", alias, "--json", "--grid", grid)
        assert done.returncode == 0, done.stderr
        batch = json.loads(done.stdout)[alias]["batches"][0]
        if batch["runner"]["state"] != "running" and not batch["counts"].get("queued"):
            return batch  # type: ignore[no-any-return]
        time.sleep(1)
    raise AssertionError(f"the batch did not finish: {batch}")


class Counting:
    """A connection that counts the commands it runs (each one ssh round trip)."""

    def __init__(self, connection: Any) -> None:
        self.connection, self.commands = connection, 0

    def run(self, command: str, **kwargs: Any) -> Any:
        self.commands += 1
        return self.connection.run(command, **kwargs)


@pytest.mark.ssh
def test_launch_close_reconnect_status_then_results_and_logs(
    labhost: Any, config: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    done = invoke(config, "launch", "--grid", "kd_alpha", "--host", labhost.alias, *sets())
    assert done.returncode == 0, done.stderr
    assert "runner started in the background" in done.stdout
    assert "/srv/lab/root/gafkd/runs/kd_alpha/.batch/" in done.stdout  # where it all lives
    print(f"launch --host took {time.monotonic() - started:.1f} s")

    host = parse_host(labhost.alias, labhost.settings())  # a fresh connection: a reconnect
    counting = Counting(connect(host))
    found = remote.status(counting, host)  # type: ignore[arg-type]
    assert counting.commands == 1
    assert [batch["grid"] for batch in found["batches"]] == ["kd_alpha"]
    assert found["host"] == "testhost"

    batch = wait_done(config, labhost.alias)
    assert batch["counts"]["done"] == 3, batch
    shown = invoke(
        config, "results", "--grid", "kd_alpha", "--host", labhost.alias, "--root", str(tmp_path)
    )
    assert shown.returncode == 0, shown.stderr
    assert "| watch | 0.3 |" in shown.stdout
    copied = tmp_path / ".hosts" / labhost.alias / "runs" / "kd_alpha"
    assert (copied / ".batch" / "plan.json").is_file()
    assert not list(copied.rglob("*.pt"))  # no checkpoints come back

    log = invoke(config, "logs", STUDENT, "--host", labhost.alias)
    assert log.returncode == 0, log.stderr
    assert log.stdout.strip()


@pytest.mark.ssh
def test_launch_dry_on_a_synced_host_prints_the_plan_and_starts_nothing(
    labhost: Any, config: Path
) -> None:
    state = labhost.root / "srv/lab/root/gafkd/runs/kd_alpha/.batch/state.json"
    before = state.stat().st_mtime_ns
    args = ("launch", "--grid", "kd_alpha", "--host", labhost.alias, "--dry", *sets())
    done = invoke(config, *args)
    assert done.returncode == 0, done.stderr
    assert "| sync | ok:" in done.stdout
    assert "3 runs, in this order" in done.stdout
    assert "nothing is changed (--dry)" in done.stdout
    assert state.stat().st_mtime_ns == before


@pytest.mark.ssh
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("status", "--host", "nosuch"), "unknown host 'nosuch'"),
        (("status", "--host", "noenv"), "no python at /opt/none/bin/python"),
        (("launch", "--grid", "kd_beta", "--host", "testhost"), "unknown grid 'kd_beta'"),
        (
            ("launch", "--grid", "kd_alpha", "--host", "testhost", "--set", "data.path=/nope"),
            "dataset path /nope does not exist",
        ),
        (("logs", "nope/run", "--host", "testhost"), "no run 'nope/run'"),
        (  # a grid this module never launches: the case holds whatever ran before it
            ("cancel", "--grid", "kd_gaf", "--run", "nope", "--host", "testhost"),
            "no batch of grid 'kd_gaf'",
        ),
    ],
)
def test_a_bad_input_is_one_error_before_anything_runs(
    config: Path, args: tuple[str, ...], message: str
) -> None:
    done = invoke(config, *args)
    assert done.returncode == 1, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert message in lines[0]


@pytest.mark.ssh
def test_launch_resume_after_the_runner_was_killed_skips_done_runs(
    labhost: Any, config: Path
) -> None:
    again = [*sets()[:-4], "--set", "seed=[1]", "--set", "train.alpha=[0.3]"]
    launched = invoke(config, "launch", "--grid", "kd_alpha", "--host", labhost.alias, *again)
    assert launched.returncode == 0, launched.stderr
    for _ in range(240):  # until the two teachers are done
        shown = invoke(config, "status", "--host", labhost.alias, "--json")
        batch = json.loads(shown.stdout)[labhost.alias]["batches"][0]
        if batch["counts"]["done"] >= 2:
            break
        time.sleep(0.5)
    teacher = labhost.root / "srv/lab/root/gafkd/runs/kd_alpha/gaf_teacher/dataset-watch/seed1"
    finished = (teacher / "result.json").stat().st_mtime_ns
    kill = ssh(labhost, "kill", "-KILL", str(batch["runner"]["pid"]))  # the runner we started
    assert kill.returncode == 0, kill.stderr
    resumed = invoke(config, "launch", "--grid", "kd_alpha", "--host", labhost.alias, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    batch = wait_done(config, labhost.alias)
    assert batch["counts"]["done"] == 3, batch
    assert (teacher / "result.json").stat().st_mtime_ns == finished  # not run again


def test_the_remote_script_runs_gafkd_from_the_env_in_the_lab_folder(tmp_path: Path) -> None:
    host = Host("local", lab_dir=str(tmp_path), python=sys.executable)
    found = remote.status(LocalConnection(), host)
    assert found["batches"] == []


def test_a_missing_env_says_to_provision_and_expands_the_home(tmp_path: Path) -> None:
    host = Host("local", lab_dir=str(tmp_path), python="~/.nowhere/bin/python")
    with pytest.raises(ProvisionError, match="invoke provision --host local") as raised:
        remote.status(LocalConnection(), host)
    assert f"no python at {Path.home()}/.nowhere/bin/python" in str(raised.value)


def test_a_gafkd_error_comes_back_as_its_one_line(tmp_path: Path) -> None:
    host = Host("local", lab_dir=str(tmp_path), python=sys.executable)
    with pytest.raises(ProvisionError, match=r"^local: unknown grid 'kd_beta'"):
        remote.gafkd(LocalConnection(), host, "launch", "kd_beta", "--dry")


@pytest.mark.ssh
def test_on_reboot_puts_a_cron_line_that_resumes_the_batch_then_goes_away(
    labhost: Any, config: Path
) -> None:
    grid = ["--grid", "gaf_teachers", "--host", labhost.alias, "--per-gpu", "1"]
    grid += ["--set", "dataset=watch", "--set", "seed=[0, 1]", "--set", "train.epochs=2"]
    grid += ["--set", "student.name=[wrn16_1]"]
    launched = invoke(config, "launch", *grid, "--on-reboot")
    assert launched.returncode == 0, launched.stderr
    assert "after a reboot, cron resumes it" in launched.stdout
    (line,) = [row for row in crontab(labhost) if "gafkd-resume" in row]
    assert line.startswith("@reboot cd /srv/lab/root/gafkd && exec ")
    assert "gafkd launch gaf_teachers --resume --root /srv/lab/root/gafkd" in line
    for _ in range(480):  # the "reboot" comes once the first run is done
        shown = invoke(config, "status", "--host", labhost.alias, "--json", *grid[:2])
        batch = json.loads(shown.stdout)[labhost.alias]["batches"][0]
        assert not batch["counts"].get("failed"), batch
        if batch["counts"]["done"] >= 1:
            break
        time.sleep(0.25)
    assert batch["counts"]["done"] == 1, batch  # the second run is still to do
    kill = ssh(labhost, "kill", "-KILL", str(batch["runner"]["pid"]))  # the runner we started
    assert kill.returncode == 0, kill.stderr

    # At boot, cron runs the line with /bin/sh and its own minimal environment.
    cron_env = ["env", "-i", "HOME=/root", "LOGNAME=root", "PATH=/usr/bin:/bin", "SHELL=/bin/sh"]
    booted = ssh(labhost, *cron_env, "/bin/sh", "-c", line.removeprefix("@reboot "))
    assert booted.returncode == 0, booted.stderr
    batch = wait_done(config, labhost.alias, grid="gaf_teachers")
    assert batch["counts"]["done"] == 2, batch
    assert not [row for row in crontab(labhost) if "gafkd-resume" in row]  # gone at the end


def crontab(host: Any) -> list[str]:
    listed = ssh(host, "crontab", "-l")
    assert listed.returncode == 0 or "no crontab" in listed.stderr, listed.stderr
    return listed.stdout.splitlines()


def wrapper(folder: Path, before: str, after: str) -> Path:
    """A python that prints text around what gafkd prints, as a site's wrapper script may."""
    path = folder / "python"
    path.write_text(
        f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(before)}\n{shlex.quote(sys.executable)} \"$@\"\n"
        f"status=$?\nprintf '%s\\n' {shlex.quote(after)}\nexit $status\n"
    )
    path.chmod(0o755)
    return path


def test_status_finds_its_json_between_text_a_wrapper_prints_around_it(tmp_path: Path) -> None:
    python = wrapper(tmp_path, "Welcome to the lab {\n[motd]", "} bye")
    (tmp_path / "lab").mkdir()
    host = Host("local", lab_dir=str(tmp_path / "lab"), python=str(python))
    found = remote.status(LocalConnection(), host)
    assert found["batches"] == []


def test_status_json_is_read_between_its_markers_only() -> None:
    text = 'Welcome {"x": 1}\r\nMARK\r\n{"batches": []}\r\nMARK\r\n{ logout banner\n'
    assert remote.parse_status(text, "MARK", Host("lab")) == {"batches": []}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Welcome to the lab\n{}\n", "it printed 'Welcome to the lab' and no status"),
        ("", "it printed nothing"),
        ("MARK\n{not json\nMARK\n", "the status it printed between the markers is not JSON"),
    ],
)
def test_status_without_its_frame_is_one_line_naming_the_host(text: str, says: str) -> None:
    with pytest.raises(ProvisionError) as error:
        remote.parse_status(text, "MARK", Host("lab"))
    message = str(error.value)
    assert message.startswith("gafkd status on lab: "), message
    assert says in message
    assert "\n" not in message


def test_a_host_whose_gafkd_has_no_frame_says_to_update_it() -> None:
    from invoke.runners import Result

    class Old:
        def run(self, command: str, **_: Any) -> Result:
            stderr = "usage: gafkd ...\ngafkd: error: unrecognized arguments: --frame x\n"
            return Result(stdout="", stderr=stderr, exited=2, command=command)

    with pytest.raises(ProvisionError, match=r"^the gafkd on lab is older .*invoke sync --host"):
        remote.status(Old(), Host("lab"))  # type: ignore[arg-type]


@pytest.mark.ssh
def test_status_host_reads_through_a_login_banner(labhost: Any, config: Path) -> None:
    host = parse_host(labhost.alias, labhost.settings())
    connection = connect(host)
    remote.sync(connection, host, dry=False, echo=lambda line: None)  # this checkout, installed
    remote.ensure_project(connection, host, __import__("gafkd").__version__)
    bashrc = labhost.root / "root/.bashrc"
    kept = bashrc.read_text()
    bashrc.write_text('echo "Welcome to testhost {"\necho "[banner] }" >&2\n' + kept)
    try:
        assert "Welcome to testhost" in ssh(labhost, "true").stdout  # the banner reaches stdout
        shown = invoke(config, "status", "--host", labhost.alias, "--json")
    finally:
        bashrc.write_text(kept)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[labhost.alias]["host"] == "testhost"


@pytest.mark.ssh
def test_doctor_selftest_runs_gafkd_selftest_in_each_hosts_env_on_one_screen(
    labhost: Any, config: Path
) -> None:
    host = parse_host(labhost.alias, labhost.settings())
    connection = connect(host)
    remote.sync(connection, host, dry=False, echo=lambda line: None)  # this checkout, installed
    remote.ensure_project(connection, host, __import__("gafkd").__version__)
    done = invoke(config, "doctor", "--host", labhost.alias, "--selftest")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gpu | skipped: no NVIDIA driver on the host" in done.stdout  # the verdict first
    assert "No GPU was tested: torch sees no CUDA GPU" in done.stdout  # the host's CPU checks
    assert "ok   train fp32  float32: loss" in done.stdout
    assert "doctor: no GPU was tested" in done.stdout

    both = invoke(config, "doctor", "--host", f"{labhost.alias},noenv", "--selftest")
    assert both.returncode == 1, both.stdout
    assert both.stdout.index("No GPU was tested") < both.stdout.index("error: noenv has no python")
    assert both.stderr.strip() == (
        "error: noenv: noenv has no python at /opt/none/bin/python, the env that runs gafkd: run "
        "invoke provision --host noenv first, or set python: for noenv in invoke.yaml"
    )
