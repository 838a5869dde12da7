"""`invoke provision` against the real Debian test host (testhost.py), verified from inside it.

The host is shared by the session, so each test first puts back the state it starts from, with
the undo commands of docs/provisioning.md run inside the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioning import code
from provisioning.core import run_host
from provisioning.hosts import Host, connect

pytestmark = pytest.mark.ssh

ROOT = Path(__file__).resolve().parents[2]
SLEEP_TARGETS = ("sleep.target", "suspend.target", "hibernate.target", "hybrid-sleep.target")
DROP_IN = "etc/systemd/logind.conf.d/60-gafkd-power.conf"
LAB_DIR = "srv/lab/root/gafkd"  # the default lab_dir for the root login


@pytest.fixture(scope="module")
def config(testhost: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runtime invoke config: the test host, plus aliases with a stranger key or no server."""
    folder = tmp_path_factory.mktemp("invoke")
    blocks = testhost.ssh_config.read_text()
    stranger = blocks.split("\n\n")[0].replace(f"Host {testhost.alias}\n", "Host stranger\n")
    closed = stranger.replace("Host stranger\n", "Host closed\n")
    closed = closed.replace(f"Port {testhost.port}\n", "Port 1\n")
    (folder / "ssh_config").write_text(f"{blocks}\n{stranger}\n{closed}")
    (folder / "empty_known_hosts").write_text("")
    own = {"ssh_config": str(folder / "ssh_config"), "known_hosts": str(testhost.known_hosts)}
    hosts = {
        testhost.alias: testhost.settings(),
        f"{testhost.alias}-sudo": testhost.settings(),
        "stranger": {**own, "known_hosts": str(folder / "empty_known_hosts")},
        "closed": own,
    }
    path = folder / "invoke.json"
    path.write_text(json.dumps({"hosts": hosts}))
    return path


def invoke(config: Path, *args: str, sudo_password: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INVOKE_RUNTIME_CONFIG": str(config)}
    env.pop("INVOKE_SUDO_PASSWORD", None)
    if sudo_password:
        env["INVOKE_SUDO_PASSWORD"] = sudo_password
    argv = [sys.executable, "-m", "invoke", *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def outcomes(done: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """``--json`` output -> {step: (status, detail)}."""
    return {o["step"]: (o["status"], o["detail"]) for o in json.loads(done.stdout)["outcomes"]}


def undo_power_and_sync(testhost: Any) -> None:
    """docs/provisioning.md's undo commands, run inside the host."""
    for argv in (("systemctl", "unmask", *SLEEP_TARGETS), ("rm", "-f", f"/{DROP_IN}")):
        assert testhost.inside(*argv).returncode == 0
    assert testhost.inside("rm", "-rf", "--", f"/{LAB_DIR}").returncode == 0


def host_state(testhost: Any) -> dict[str, object]:
    states = {
        unit: testhost.inside("systemctl", "is-enabled", unit).stdout.strip()
        for unit in SLEEP_TARGETS
    }
    return {
        **states,
        "drop-in": (testhost.root / DROP_IN).exists(),
        "lab": (testhost.root / LAB_DIR).exists(),
    }


def test_dry_run_plans_power_and_sync_and_changes_nothing(testhost: Any, config: Path) -> None:
    undo_power_and_sync(testhost)
    before = host_state(testhost)
    done = invoke(config, "provision", "--host", testhost.alias, "--dry", "--json")
    assert done.returncode == 0, done.stderr
    steps = outcomes(done)
    assert steps["gpu"][0] == "skipped"
    assert steps["gpu"][1].startswith("no NVIDIA driver on the host (NVML missing")
    assert steps["power"][0] == steps["sync"][0] == "planned"
    assert "testhost | power | sleep.target is static" in done.stderr
    assert host_state(testhost) == before
    assert before["sleep.target"] != "masked"


def test_sudo_with_a_wrong_password_is_one_error_and_changes_nothing(testhost, config) -> None:
    undo_power_and_sync(testhost)
    alias = f"{testhost.alias}-sudo"  # a member of group sudo, with a password
    done = invoke(config, "provision", "--host", alias, "--only", "power", sudo_password="wrong")
    assert done.returncode == 1
    assert "sudo rejected the password" in done.stderr
    assert "Traceback" not in done.stderr
    assert testhost.inside("systemctl", "is-enabled", "sleep.target").stdout.strip() == "static"


def test_sudo_without_a_password_says_to_ask_for_one(testhost, config) -> None:
    undo_power_and_sync(testhost)
    done = invoke(config, "provision", "--host", f"{testhost.alias}-sudo", "--only", "power")
    assert done.returncode == 1
    assert "rerun with --ask-sudo-password" in done.stderr


def test_sudo_with_the_password_applies(testhost, config) -> None:
    undo_power_and_sync(testhost)
    alias, password = f"{testhost.alias}-sudo", testhost.sudo_password
    done = invoke(config, "provision", "--host", alias, "--only", "power", sudo_password=password)
    assert done.returncode == 0, done.stderr
    assert testhost.inside("systemctl", "is-enabled", "sleep.target").stdout.strip() == "masked"


def test_each_step_applies_then_a_second_run_plans_nothing(testhost, config) -> None:
    undo_power_and_sync(testhost)
    # One step at a time: the conda steps need the internet, which the test host lacks.
    gpu = invoke(config, "provision", "--host", testhost.alias, "--only", "gpu", "--json")
    assert gpu.returncode == 0, gpu.stderr
    assert outcomes(gpu)["gpu"][0] == "skipped"
    for step in ("power", "sync"):
        done = invoke(config, "provision", "--host", testhost.alias, "--only", step, "--json")
        assert done.returncode == 0, done.stderr
        assert outcomes(done)[step][0] == "changed"
    # verified from inside the host
    for unit in SLEEP_TARGETS:
        assert os.readlink(testhost.root / "etc/systemd/system" / unit) == "/dev/null"
        assert testhost.inside("systemctl", "is-enabled", unit).stdout.strip() == "masked"
    assert "IdleAction=ignore" in (testhost.root / DROP_IN).read_text()
    synced = testhost.root / LAB_DIR
    ours = (ROOT / "tasks/provision.py").read_bytes()
    assert (synced / "tasks/provision.py").read_bytes() == ours
    assert not (synced / ".venv").exists()
    assert not (synced / ".git").exists()
    # the second run: every step planned nothing (a dry run still plans each step)
    second = invoke(config, "provision", "--host", testhost.alias, "--dry", "--json")
    steps = outcomes(second)
    assert steps["power"][0] == steps["sync"][0] == "ok"
    assert steps["gpu"][0] == "skipped"
    assert "testhost | power | ok: sleep, suspend" in second.stderr
    again = invoke(config, "sync", "--host", testhost.alias)
    assert again.returncode == 0, again.stderr
    assert "testhost | sync | ok: the " in again.stdout


def test_doctor_explains_that_the_host_has_no_driver(testhost, config) -> None:
    done = invoke(config, "doctor", "--host", testhost.alias)
    assert done.returncode == 0, done.stderr
    assert "testhost | gpu | skipped: no NVIDIA driver on the host (NVML missing" in done.stdout


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("nosuch", "unknown host 'nosuch'"),
        ("closed", "cannot reach closed (127.0.0.2:1)"),
        ("stranger", "the host key of stranger (127.0.0.2:"),
    ],
)
def test_a_bad_host_is_one_error_and_nothing_runs(testhost, config, alias, message) -> None:
    done = invoke(config, "provision", "--host", alias)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    if alias == "stranger":
        assert f"ssh-keyscan -t ed25519 -p {testhost.port} -H 127.0.0.2 >> " in done.stderr


# --- the sync step, in process, on a small checkout of its own ---------------------------------


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git checkout with a tracked file, an untracked one and ignored ones; sync copies it."""
    repo = tmp_path / "checkout"
    (repo / "runs/grid").mkdir(parents=True)
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "train.py").write_text("print('train')\n")
    (repo / "new.py").write_text("print('untracked, not ignored')\n")
    (repo / "debug.log").write_text("ignored by .gitignore\n")
    (repo / "runs/grid/result.json").write_text("{}\n")  # a run output: never copied
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", ".gitignore", "train.py"], check=True)
    monkeypatch.setattr(code, "PROJECT_ROOT", repo)
    return repo


def sync(testhost: Any, folder: str) -> tuple[str, list[str]]:
    """Run the sync step once; its status and printed lines."""
    host = Host(testhost.alias, lab_dir=folder, **testhost.settings())
    connection: Any = connect(host)
    lines: list[str] = []
    try:
        [outcome] = run_host(
            connection, host, [("sync", code.ensure_code)], dry=False, echo=lines.append
        )
    finally:
        connection.close()
    return outcome.status, lines


@pytest.fixture
def without_rsync(testhost: Any) -> Iterator[None]:
    rsync = testhost.root / "usr/bin/rsync"
    rsync.rename(rsync.with_name("rsync.away"))
    try:
        yield
    finally:
        rsync.with_name("rsync.away").rename(rsync)


@pytest.mark.parametrize("transport", ["rsync", "sftp"])
def test_sync_copies_the_checkout_less_ignored_files_then_only_changes(
    testhost, checkout: Path, transport: str, request: pytest.FixtureRequest
) -> None:
    if transport == "sftp":
        request.getfixturevalue("without_rsync")
    folder = f"/srv/lab/sync-{transport}"
    testhost.inside("rm", "-rf", "--", folder)
    assert sync(testhost, folder)[0] == "changed"
    copied = testhost.root / folder.lstrip("/")
    assert sorted(p.name for p in copied.iterdir()) == [".gitignore", "new.py", "train.py"]
    assert sync(testhost, folder)[0] == "ok"
    (checkout / "train.py").write_text("print('changed')\n")
    status, lines = sync(testhost, folder)
    assert status == "changed"
    assert any("train.py" in line for line in lines)
    assert (copied / "train.py").read_text() == "print('changed')\n"
    assert sync(testhost, folder)[0] == "ok"
