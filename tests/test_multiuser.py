"""Two lab hosts on one screen, and two users sharing one host's slots, against real test hosts.

``testhost`` (127.0.0.2) and ``testhost2`` (127.0.0.3) are two copies of the Debian test host
(tests/provisioning/testhost.py), each with its own hostname and lab folders, in one ssh_config.
On testhost, root provisions the lab group (alice and bob) and the run queue; alice and bob log
in with their own keys and envs (a venv on the host's python3 that sees this interpreter's
site-packages, as in tests/test_remote.py) and launch tiny CPU batches with ``--per-gpu 1``.
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

from tests.provisioning import testhost

pytestmark = pytest.mark.ssh

ROOT = Path(__file__).resolve().parent.parent
SHARED = "/opt/gafkd-shared/site-packages"  # inside each host
USERS = ("alice", "bob")
QUEUE = "/srv/lab/.gafkd-queue"  # the default queue_dir
SETS = ("dataset=watch", "train.epochs=1", "train.alpha=[0.3]", "student.name=wrn10_1",
        "imaging.image_size=8")  # fmt: skip
SEEDS = {"alice": 0, "bob": 1}  # so that alice's run ids are not bob's
RUN = "student/dataset-watch_alpha-0.3/seed{seed}"


def home(user: str) -> str:
    return "/root" if user == "root" else f"/home/{user}"


def add_env(host: Any, user: str) -> None:
    """``user``'s gafkd env on the host: a venv on its python3 over this site-packages."""
    here = sys.version_info[:2]
    env = host.root / home(user).lstrip("/") / ".conda/envs/gafkd"
    packages = env / "lib" / f"python{here[0]}.{here[1]}" / "site-packages"
    packages.mkdir(parents=True)
    (env / "bin").mkdir()
    (env / "bin" / "python").symlink_to("/usr/bin/python3")
    (env / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    (packages / "gafkd-shared.pth").write_text(f"{SHARED}\n")
    owner = host.inside("chown", "-R", f"{user}:", f"{home(user)}/.conda")
    assert owner.returncode == 0, owner.stderr


def prepare(host: Any, users: tuple[str, ...]) -> None:
    found = host.inside("python3", "-c", "import sys; print(*sys.version_info[:2])").stdout
    if tuple(int(part) for part in found.split()) != sys.version_info[:2]:
        raise testhost.Unavailable(f"the host's python3 is {found.strip()}, this one differs")
    host.bind(Path(site.getsitepackages()[0]), SHARED)
    for user in users:
        add_env(host, user)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """testhost and testhost2, running, with envs (root on both, alice and bob on testhost)."""
    hosts = testhost.bring_up_hosts(tmp_path_factory.mktemp("lab"), name="multiuser")
    try:
        found = next(hosts)
        prepare(found[0], ("root", *USERS))
        prepare(found[1], ("root",))
    except (testhost.Unavailable, OSError) as error:
        hosts.close()
        pytest.skip(f"two ssh test hosts with gafkd envs unavailable: {error}")
    yield found
    hosts.close()  # stops both sshd and everything that runs in the hosts, removes the copies


@pytest.fixture(scope="module")
def config(lab: list[Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """invoke.yaml hosts: both hosts as root, and testhost-alice, testhost-bob."""
    first = lab[0]
    folder = tmp_path_factory.mktemp("invoke")
    blocks = [first.ssh_config.read_text(), *(first.login(user) for user in USERS)]
    (folder / "ssh_config").write_text("\n".join(blocks))
    files = {"ssh_config": str(folder / "ssh_config"), "known_hosts": str(first.known_hosts)}
    hosts: dict[str, dict[str, object]] = {host.alias: dict(files) for host in lab}
    hosts[first.alias]["users"] = list(USERS)
    hosts |= {f"{first.alias}-{user}": dict(files) for user in USERS}
    return testhost.write_invoke_config(folder / "invoke.json", hosts)  # type: ignore[no-any-return]


def invoke(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INVOKE_RUNTIME_CONFIG": str(config)}
    argv = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def ssh(config: Path, alias: str, *argv: str) -> subprocess.CompletedProcess[str]:
    ssh_config = json.loads(config.read_text())["hosts"][alias]["ssh_config"]
    command = ["ssh", "-F", ssh_config, "-o", "BatchMode=yes", alias, shlex.join(argv)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def status(config: Path, alias: str) -> dict[str, Any]:
    done = invoke(config, "status", "--host", alias, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[alias]  # type: ignore[no-any-return]


def wait_finished(config: Path, alias: str) -> dict[str, Any]:
    for _ in range(300):
        found = status(config, alias)
        batch = found["batches"][0]
        if batch["runner"]["state"] != "running" and not batch["counts"].get("queued"):
            return found
        time.sleep(1)
    raise AssertionError(f"the batch on {alias} did not finish: {found}")


def spans(host: Any, user: str) -> list[tuple[int, int]]:
    """(start, end) in ns of each of the user's runs: launch.toml is written once the run holds
    its slot, result.json before its process exits, so both lie inside the time it held it."""
    runs = host.root / f"srv/lab/{user}/gafkd/runs/kd_alpha"
    found = []
    for result in runs.rglob("result.json"):
        start = (result.parent / "launch.toml").stat().st_mtime_ns
        found.append((start, result.stat().st_mtime_ns))
    return found


def writable_by_others(path: Path) -> list[str]:
    """Folders and files under ``path`` that the group or others may write to."""
    found = [path, *path.rglob("*")]
    return [str(p) for p in found if not p.is_symlink() and p.stat().st_mode & 0o022]


def test_status_of_two_hosts_shows_both_on_one_screen(lab: list[Any], config: Path) -> None:
    aliases = ",".join(host.alias for host in lab)
    synced = invoke(config, "sync", "--host", aliases)
    assert synced.returncode == 0, synced.stderr
    shown = invoke(config, "status", "--host", aliases, "--json")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert sorted(found) == ["testhost", "testhost2"]
    assert {alias: found[alias]["host"] for alias in found} == {
        "testhost": "testhost",  # each its own hostname (UTS namespace)
        "testhost2": "testhost2",
    }
    screen = invoke(config, "status", "--host", aliases)
    assert screen.returncode == 0, screen.stderr
    headings = [line.split()[0] for line in screen.stdout.splitlines() if "────" in line]
    assert headings[:2] == ["testhost", "testhost2"]  # one heading per host
    dry = invoke(config, "launch", "--grid", "kd_alpha", "--host", "testhost2", "--dry",
                 "--set", "dataset=watch")  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"testhost2 | queue | {QUEUE} is missing, so these runs are not counted" in dry.stdout
    marker = lab[0].root / "srv/lab/root/gafkd/only-on-testhost"
    marker.write_text("")
    assert not (lab[1].root / "srv/lab/root/gafkd/only-on-testhost").exists()  # own lab folders


def test_two_hosts_are_provisioned_together_each_verified_from_inside(
    lab: list[Any], config: Path
) -> None:
    aliases = ",".join(host.alias for host in lab)
    done = invoke(config, "provision", "--host", aliases, "--only", "power", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["outcomes"]
    assert sorted((row["host"], row["step"], row["status"]) for row in report) == [
        ("testhost", "power", "changed"),
        ("testhost2", "power", "changed"),
    ]
    for host in lab:  # each host's own root, changed by its own connection
        masked = host.inside("systemctl", "is-enabled", "suspend.target").stdout.strip()
        assert masked == "masked", host.alias
    again = invoke(config, "provision", "--host", aliases, "--only", "power", "--json")
    assert {row["status"] for row in json.loads(again.stdout)["outcomes"]} == {"ok"}


def test_two_users_share_the_cpu_slot_and_cannot_cancel_each_others_runs(
    lab: list[Any], config: Path
) -> None:
    host = lab[0]
    for step in ("group", "queue", "lab-folders"):  # as the admin (root): alice and bob join
        done = invoke(config, "provision", "--host", host.alias, "--only", step)  # lab, queue,
        assert done.returncode == 0, done.stderr  # and each member's lab folder (no sudo)
    assert host.inside("stat", "-c", "%U %G %a", QUEUE).stdout.split() == ["root", "lab", "3770"]
    for user in USERS:
        found = host.inside("stat", "-c", "%U", f"/srv/lab/{user}/gafkd").stdout.strip()
        assert found == user

    for user in USERS:
        sets = [*SETS, f"seed=[{SEEDS[user]}]"]
        args = [part for item in sets for part in ("--set", item)]
        done = invoke(config, "launch", "--grid", "kd_alpha", "--host", f"testhost-{user}",
                      "--per-gpu", "1", *args)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"slots shared with other users' runners through {QUEUE}" in done.stdout

    alices = RUN.format(seed=SEEDS["alice"])
    mistaken = invoke(config, "cancel", "--grid", "kd_alpha", "--run", alices,
                      "--host", "testhost-bob")  # fmt: skip
    assert mistaken.returncode == 1
    assert f"no run {alices!r} in the launched grids under /srv/lab/bob/gafkd/runs" in (
        mistaken.stderr
    )
    python = "~/.conda/envs/gafkd/bin/python -m gafkd"  # in bob's lab folder: bob's gafkd
    aimed = f"cancel kd_alpha --run {alices} --root /srv/lab/alice/gafkd"  # at alice's batch
    direct = ssh(config, "testhost-bob", "sh", "-c", f"cd /srv/lab/bob/gafkd && {python} {aimed}")
    assert direct.returncode == 1
    assert "belongs to alice, not to bob: only its owner can cancel its runs" in direct.stderr
    by_hand = ssh(config, "testhost-bob", "touch", "/srv/lab/alice/gafkd/runs/kd_alpha/.batch/x")
    assert "Permission denied" in by_hand.stderr

    for user in USERS:
        found = wait_finished(config, f"testhost-{user}")
        assert found["user"] == user
        (batch,) = found["batches"]  # only their own batch
        assert batch["counts"]["done"] == 3, batch
        assert not batch["counts"]["cancelled"]
        plan = host.root / f"srv/lab/{user}/gafkd/runs/kd_alpha/.batch/plan.json"
        ids = {run["id"] for run in json.loads(plan.read_text())["runs"]}
        assert RUN.format(seed=SEEDS[user]) in ids
    runs = spans(host, "alice") + spans(host, "bob")
    assert len(runs) == 6
    assert most_at_once(runs) == 1  # one CPU slot for both users
    assert writable_by_others(host.root / "srv/lab/alice/gafkd/runs") == []


def test_a_symlink_bob_plants_in_the_queue_costs_alice_nothing(
    lab: list[Any], config: Path
) -> None:
    host = lab[0]
    for step in ("group", "queue", "lab-folders"):
        done = invoke(config, "provision", "--host", host.alias, "--only", step)
        assert done.returncode == 0, done.stderr
    host.inside("find", QUEUE, "-mindepth", "1", "-delete")  # no runner is live: start empty
    host.inside("chmod", "2770", QUEUE)  # as an earlier gafkd made it: the next run fixes it
    for expected in ("changed", "ok"):
        done = invoke(config, "provision", "--host", host.alias, "--only", "queue", "--json")
        assert [row["status"] for row in json.loads(done.stdout)["outcomes"]] == [expected]
    assert host.inside("stat", "-c", "%a", QUEUE).stdout.strip() == "3770"
    notes = "/home/alice/notes.txt"
    ssh(config, "testhost-alice", "sh", "-c", f"echo mine > {notes} && chmod 644 {notes}")
    planted = ssh(config, "testhost-bob", "ln", "-s", notes, f"{QUEUE}/cpu.0")
    assert planted.returncode == 0, planted.stderr

    sets = ("dataset=watch", "seed=[2]", "student.name=[wrn10_1]", "train.epochs=1",
            "imaging.image_size=8")  # fmt: skip
    args = [part for item in sets for part in ("--set", item)]
    done = invoke(config, "launch", "--grid", "gaf_teachers", "--host", "testhost-alice",
                  "--per-gpu", "1", *args)  # fmt: skip
    assert done.returncode == 0, done.stderr
    batch = wait_finished(config, "testhost-alice")["batches"][0]  # gaf_teachers sorts first
    assert (batch["grid"], batch["counts"]["done"]) == ("gaf_teachers", 1), batch
    assert host.inside("stat", "-c", "%U %a %s", notes).stdout.split() == ["alice", "644", "5"]
    log = host.root / "srv/lab/alice/gafkd/runs/gaf_teachers/.batch/runner.log"
    warning = f"skipping queue slot {QUEUE}/cpu.0: a symlink planted by bob; ask them or root"
    assert log.read_text().count(warning) == 1
    assert invoke(config, "sync", "--host", "testhost-bob").returncode == 0
    assert status(config, "testhost-bob")["user"] == "bob"  # status works for both
    removed = ssh(config, "testhost-bob", "rm", "-f", f"{QUEUE}/cpu.1")  # alice's slot file
    assert "Operation not permitted" in removed.stderr
    assert host.inside("stat", "-c", "%U", f"{QUEUE}/cpu.1").stdout.strip() == "alice"


def most_at_once(intervals: list[tuple[int, int]]) -> int:
    """The most intervals that overlap at one moment (one ending as another starts: not)."""
    events = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak
