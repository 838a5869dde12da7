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
from provisioning.hosts import Host, connect
from provisioning.runner import run_host

pytestmark = pytest.mark.ssh

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("gpu", "group", "conda", "condarc", "envs", "power", "sync")
SLEEP_TARGETS = ("sleep.target", "suspend.target", "hibernate.target", "hybrid-sleep.target")
DROP_IN = "etc/systemd/logind.conf.d/60-gafkd-power.conf"
LAB_DIR = "srv/lab/root/gafkd"  # the default lab_dir for the root login
CONDA_PATHS = ("/opt/conda", "/etc/profile.d/conda.sh", "/usr/local/share/gafkd")
INSTALLER = os.environ.get("GAFKD_CONDA_INSTALLER", "")  # a real Miniforge installer, if any
NO_INSTALLER = "no conda installer: the host cannot download (no curl/wget) — set conda_installer"
# A stand-in for Miniforge's installer, with its `-b -p PREFIX` interface: it makes a conda that
# only answers `info --json`. The upload, permissions, .condarc and hook are then real.
STAND_IN = """#!/bin/bash
set -e
[ "$1" = -b ] && [ "$2" = -p ] || { echo "usage: $0 -b -p PREFIX" >&2; exit 2; }
mkdir -p "$3/bin" "$3/etc/profile.d" "$3/pkgs"
cat > "$3/bin/conda" <<CONDA
#!/bin/sh
echo '{"root_prefix": "$3", "conda_version": "24.11.3", "channels": ["conda-forge"]}'
CONDA
chmod 755 "$3/bin/conda"
echo 'conda() { :; }' > "$3/etc/profile.d/conda.sh"
"""


@pytest.fixture(scope="module")
def config(testhost: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runtime invoke config: the test host (with its lab users) and aliases for bad cases.

    ``stranger`` has a key we do not know, ``closed`` no server; ``nouser`` lists a user the
    host lacks, ``badname`` a name with shell metacharacters; ``installer`` uploads
    GAFKD_CONDA_INSTALLER, ``stand-in`` the STAND_IN installer.
    """
    folder = tmp_path_factory.mktemp("invoke")
    blocks = testhost.ssh_config.read_text()
    first = blocks.split("\n\n")[0]

    def alias(name: str) -> str:
        return first.replace(f"Host {testhost.alias}\n", f"Host {name}\n")

    closed = alias("closed").replace(f"Port {testhost.port}\n", "Port 1\n")
    names = ("stranger", "nouser", "badname", "installer", "stand-in")
    others = [alias(name) for name in names]
    (folder / "ssh_config").write_text("\n".join([blocks, *others, closed]))
    (folder / "empty_known_hosts").write_text("")
    own = {"ssh_config": str(folder / "ssh_config"), "known_hosts": str(testhost.known_hosts)}
    users = list(testhost.users)
    hosts = {
        testhost.alias: testhost.settings(users=users),
        f"{testhost.alias}-sudo": testhost.settings(),
        "stranger": {**own, "known_hosts": str(folder / "empty_known_hosts")},
        "closed": own,
        "nouser": {**own, "users": [*users, "nosuch"]},
        "badname": {**own, "users": ["alice;touch /gafkd-pwned"]},
        "installer": {**own, "users": users, "conda_installer": INSTALLER or "/nonexistent"},
        "stand-in": {**own, "users": users, "conda_installer": str(folder / "stand-in.sh")},
    }
    (folder / "stand-in.sh").write_text(STAND_IN)
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


def statuses(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """{step: status} for the steps in STEPS (a check step added later is left out)."""
    found = outcomes(done)
    return {step: found[step][0] for step in STEPS if step in found}


def undo_all(testhost: Any) -> None:
    """docs/provisioning.md's undo commands, run inside the host: back to the fresh host."""
    for argv in (("systemctl", "unmask", *SLEEP_TARGETS), ("rm", "-f", f"/{DROP_IN}")):
        assert testhost.inside(*argv).returncode == 0
    assert testhost.inside("rm", "-rf", "--", f"/{LAB_DIR}", *CONDA_PATHS).returncode == 0
    if testhost.inside("getent", "group", "lab").returncode == 0:
        assert testhost.inside("groupdel", "lab").returncode == 0


def host_state(testhost: Any) -> dict[str, object]:
    states = {
        unit: testhost.inside("systemctl", "is-enabled", unit).stdout.strip()
        for unit in SLEEP_TARGETS
    }
    return {
        **states,
        "group": testhost.inside("getent", "group", "lab").stdout,
        "drop-in": (testhost.root / DROP_IN).exists(),
        "lab": (testhost.root / LAB_DIR).exists(),
        **{path: (testhost.root / path.lstrip("/")).exists() for path in CONDA_PATHS},
    }


def world_writable(testhost: Any, *paths: str) -> list[str]:
    """Files and folders under ``paths`` (those that exist) that others may write to."""
    there = [path for path in paths if (testhost.root / path.lstrip("/")).exists()]
    if not there:
        return []
    found = testhost.inside("find", *there, "-xdev", "!", "-type", "l", "-perm", "-0002")
    assert found.returncode == 0, found.stderr
    return found.stdout.split()


def test_provision_applies_what_the_host_can_take_then_plans_nothing(testhost, config) -> None:
    undo_all(testhost)
    before = host_state(testhost)
    # --dry: the plan, and nothing changes
    dry = invoke(config, "provision", "--host", testhost.alias, "--dry", "--json")
    assert dry.returncode == 0, dry.stderr
    assert statuses(dry) == {
        "gpu": "skipped", "group": "planned", "conda": "skipped", "condarc": "skipped",
        "envs": "skipped", "power": "planned", "sync": "planned",
    }  # fmt: skip
    assert outcomes(dry)["conda"][1].startswith(NO_INSTALLER)
    assert "testhost | group | group lab is missing | sudo groupadd lab" in dry.stderr
    assert "testhost | power | sleep.target is static" in dry.stderr
    assert host_state(testhost) == before
    assert before["sleep.target"] != "masked"
    # the first run applies everything the host can take
    first = invoke(config, "provision", "--host", testhost.alias, "--json")
    assert first.returncode == 0, first.stderr
    steps = outcomes(first)
    assert statuses(first) == {
        "gpu": "skipped", "group": "changed", "conda": "skipped", "condarc": "skipped",
        "envs": "skipped", "power": "changed", "sync": "changed",
    }  # fmt: skip
    assert steps["gpu"][1].startswith("no NVIDIA driver on the host (NVML missing")
    assert steps["conda"][1].startswith(NO_INSTALLER)
    assert steps["condarc"][1].startswith("no conda install at /opt/conda yet")
    assert steps["envs"][1].startswith("no conda install at /opt/conda yet")
    # verified from inside the host
    group = testhost.inside("getent", "group", "lab").stdout.strip().split(":")
    assert sorted(group[3].split(",")) == sorted(testhost.users)
    for unit in SLEEP_TARGETS:
        assert os.readlink(testhost.root / "etc/systemd/system" / unit) == "/dev/null"
        assert testhost.inside("systemctl", "is-enabled", unit).stdout.strip() == "masked"
    assert "IdleAction=ignore" in (testhost.root / DROP_IN).read_text()
    synced = testhost.root / LAB_DIR
    ours = (ROOT / "tasks.py").read_bytes()
    assert (synced / "tasks.py").read_bytes() == ours
    assert not (synced / ".venv").exists()
    assert not (synced / ".git").exists()
    assert not any((testhost.root / path.lstrip("/")).exists() for path in CONDA_PATHS)
    assert world_writable(testhost, "/opt", "/srv/lab", "/usr/local/share") == []
    # the second run plans nothing: every step ok or skipped, and no command line printed
    second = invoke(config, "provision", "--host", testhost.alias, "--json")
    assert second.returncode == 0, second.stderr
    assert statuses(second) == {**dict.fromkeys(STEPS, "skipped"), **dict.fromkeys(
        ("group", "power", "sync"), "ok")}  # fmt: skip
    printed = [line.split(" | ") for line in second.stderr.splitlines()]
    assert [line[2].split(":")[0] for line in printed if len(line) != 3] == []  # no plan line
    assert all(line[2].startswith(("ok: ", "skipped: ")) for line in printed)
    assert "testhost | group | ok: group lab exists; members include alice, bob" in second.stderr
    assert "testhost | power | ok: sleep, suspend" in second.stderr
    again = invoke(config, "sync", "--host", testhost.alias)
    assert again.returncode == 0, again.stderr
    assert "testhost | sync | ok: the " in again.stdout


def test_a_user_that_does_not_exist_is_one_error_and_later_steps_are_left_alone(
    testhost, config
) -> None:
    undo_all(testhost)
    before = host_state(testhost)
    done = invoke(config, "provision", "--host", "nouser", "--json")
    assert done.returncode == 1
    steps = outcomes(done)
    assert steps["group"] == (
        "failed",
        "users nosuch do not exist on nouser; provisioning never creates accounts: create each "
        "with `sudo adduser NAME`, or remove them from hosts.nouser.users in invoke.yaml",
    )
    assert {steps[step] for step in STEPS[2:]} == {("skipped", "an earlier step failed")}
    assert "Traceback" not in done.stderr
    assert host_state(testhost) == before  # no group, nothing masked, nothing synced


def test_a_user_name_with_shell_metacharacters_is_refused_before_anything_runs(
    testhost, config
) -> None:
    undo_all(testhost)
    before = host_state(testhost)
    done = invoke(config, "provision", "--host", "badname")
    assert done.returncode == 1
    assert "user name 'alice;touch /gafkd-pwned' is not a plain name" in done.stderr
    assert "badname |" not in done.stdout + done.stderr  # no step was planned
    assert not (testhost.root / "gafkd-pwned").exists()
    assert host_state(testhost) == before


REAL_INSTALLER = pytest.mark.skipif(
    not Path(INSTALLER).is_file(),
    reason="GAFKD_CONDA_INSTALLER names no installer file here, and the test host has no "
    "internet: a real Miniforge install (upload path) is not tried",
)


@pytest.mark.parametrize("alias", ["stand-in", pytest.param("installer", marks=REAL_INSTALLER)])
def test_an_uploaded_installer_gives_a_root_owned_conda_the_group_reads_then_nothing(
    testhost, config, alias: str
) -> None:
    undo_all(testhost)
    try:
        for step in ("group", "conda", "condarc"):
            done = invoke(config, "provision", "--host", alias, "--only", step, "--json")
            assert done.returncode == 0, done.stderr
            assert statuses(done) == {step: "changed"}
        prefix = testhost.root / "opt/conda"
        assert (prefix / "bin/conda").is_file()
        owner = testhost.inside("stat", "-c", "%U %G %a", "/opt/conda").stdout.split()
        assert owner == ["root", "lab", "750"]  # root's; the group reads and enters it
        assert world_writable(testhost, "/opt/conda") == []
        condarc = (prefix / ".condarc").read_text()
        assert "envs_dirs:\n  - ~/.conda/envs\npkgs_dirs:\n  - ~/.conda/pkgs\n" in condarc
        login = testhost.inside("su", "-", "alice", "-c", "type conda && id -nG")
        assert login.returncode == 0, login.stderr
        assert "conda is a function" in login.stdout  # the hook loads it for a lab member
        assert "lab" in login.stdout.split()
        for step in ("conda", "condarc"):
            again = invoke(config, "provision", "--host", alias, "--only", step, "--json")
            assert statuses(again) == {step: "ok"}
    finally:
        undo_all(testhost)


def test_sudo_with_a_wrong_password_is_one_error_and_changes_nothing(testhost, config) -> None:
    undo_all(testhost)
    alias = f"{testhost.alias}-sudo"  # a member of group sudo, with a password
    done = invoke(config, "provision", "--host", alias, "--only", "power", sudo_password="wrong")
    assert done.returncode == 1
    assert "sudo rejected the password" in done.stderr
    assert "Traceback" not in done.stderr
    assert testhost.inside("systemctl", "is-enabled", "sleep.target").stdout.strip() == "static"


def test_sudo_without_a_password_says_to_ask_for_one(testhost, config) -> None:
    undo_all(testhost)
    done = invoke(config, "provision", "--host", f"{testhost.alias}-sudo", "--only", "power")
    assert done.returncode == 1
    assert "rerun with --ask-sudo-password" in done.stderr


def test_sudo_with_the_password_applies(testhost, config) -> None:
    undo_all(testhost)
    alias, password = f"{testhost.alias}-sudo", testhost.sudo_password
    done = invoke(config, "provision", "--host", alias, "--only", "power", sudo_password=password)
    assert done.returncode == 0, done.stderr
    assert testhost.inside("systemctl", "is-enabled", "sleep.target").stdout.strip() == "masked"


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
