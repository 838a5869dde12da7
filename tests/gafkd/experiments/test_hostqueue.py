"""Host-wide slots in a queue folder: several runners (users) under one per-device limit."""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gafkd.config import ConfigError
from gafkd.experiments.batchdir import batch_dir
from gafkd.experiments.hostqueue import HostQueue, check_folder, holders
from gafkd.experiments.launch import launch
from gafkd.experiments.plan import plan_grid, write_plan
from gafkd.experiments.runner import Slots, run_batch

ONE_STAGE = """
name = "tiny"
[axes]
seed = [{seeds}]
[base]
data = {{ source = "npz", path = "{data}", test_subjects = [0], val_subjects = [1] }}
imaging = {{ image_size = 8 }}
train = {{ epochs = 1, batch_size = 16 }}
[[stages]]
name = "signal_teacher"
base = {{ student = {{ name = "wrn10_1", input = "signal" }} }}
"""
HOLDER = """
import sys, time
from pathlib import Path
from gafkd.experiments.hostqueue import HostQueue
queue = HostQueue(Path(sys.argv[1]), "held")
assert queue.take({"cpu": 1}, "holder/run") == "cpu"
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "queue"
    path.mkdir()
    return path


@pytest.fixture
def queues(folder: Path) -> Iterator[tuple[HostQueue, HostQueue]]:
    """Two runners' sides of one queue folder (one process: flock tells their opens apart)."""
    first, second = HostQueue(folder, "a"), HostQueue(folder, "b")
    yield first, second
    first.close()
    second.close()


def plan_tiny(root: Path, tiny_npz: Path, seeds: str) -> None:
    grid = root.parent / f"{root.name}.toml"
    grid.write_text(ONE_STAGE.format(seeds=seeds, data=tiny_npz.as_posix()))
    write_plan(root, "tiny", plan_grid(str(grid), [], root), [])


def intervals(root: Path) -> list[tuple[int, int]]:
    """(start, end) of each run in ns: its launch.toml is written once it holds a slot, its
    result.json before its process exits, so both lie inside the time it held the slot."""
    found = []
    for result in (root / "runs" / "tiny").rglob("result.json"):
        start = (result.parent / "launch.toml").stat().st_mtime_ns
        found.append((start, result.stat().st_mtime_ns))
    return found


def most_at_once(spans: list[tuple[int, int]]) -> int:
    """The most intervals that overlap at one moment (one ending as another starts: not)."""
    events = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def run_together(*batches: tuple[Path, int], queue: Path) -> None:
    """Each (root, CPU runs at a time) as its own runner, all at once, sharing ``queue``."""
    errors: list[BaseException] = []

    def runner(root: Path, limit: int) -> None:
        try:
            run_batch(root, "tiny", Slots({"cpu": limit}), log=io.StringIO(), queue=queue)
        except BaseException as error:  # failed in its thread: the test fails below
            errors.append(error)

    threads = [threading.Thread(target=runner, args=batch) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors


def statuses(root: Path) -> set[str]:
    state = json.loads((batch_dir(root, "tiny") / "state.json").read_text())
    return {run["status"] for run in state["runs"].values()}


def test_two_runners_with_limit_1_never_hold_the_cpu_slot_together(queues) -> None:  # type: ignore[no-untyped-def]
    first, second = queues
    assert first.take({"cpu": 1}, "a/0") == "cpu"
    assert second.take({"cpu": 1}, "b/0") is None
    first.keep(["a/0"])  # still running
    assert second.take({"cpu": 1}, "b/0") is None
    first.keep([])  # a/0 ended
    assert second.take({"cpu": 1}, "b/0") == "cpu"


def test_limits_2_and_1_together_never_exceed_2_and_the_1_uses_the_first_slot(queues) -> None:  # type: ignore[no-untyped-def]
    two, one = queues
    assert two.take({"cpu": 2}, "a/0") == "cpu"  # cpu.0
    assert two.take({"cpu": 2}, "a/1") == "cpu"  # cpu.1
    assert one.take({"cpu": 1}, "b/0") is None
    two.keep(["a/0"])  # cpu.1 is free, but the limit-1 runner uses cpu.0 only
    assert one.take({"cpu": 1}, "b/0") is None
    two.keep([])
    assert one.take({"cpu": 1}, "b/0") == "cpu"
    assert two.take({"cpu": 2}, "a/2") == "cpu"  # cpu.1: two runs in all
    assert two.take({"cpu": 2}, "a/3") is None
    assert sorted(slot["slot"] for slot in holders(one.folder)) == ["cpu.0", "cpu.1"]


def test_a_freed_slot_goes_to_the_runner_that_waited_longest(queues) -> None:  # type: ignore[no-untyped-def]
    first, second = queues
    assert first.take({"cpu": 1}, "a/0") == "cpu"
    assert second.take({"cpu": 1}, "b/0") is None  # second now waits
    first.keep([])
    assert first.take({"cpu": 1}, "a/1") is None  # not taken back at once
    assert second.take({"cpu": 1}, "b/0") == "cpu"
    second.keep([])
    assert first.take({"cpu": 1}, "a/1") == "cpu"


def test_a_waiter_holds_back_only_the_slots_it_may_use(queues) -> None:  # type: ignore[no-untyped-def]
    two, one = queues
    assert two.take({"cpu": 2, "0": 1}, "a/0") == "cpu"  # cpu.0
    assert one.take({"cpu": 1}, "b/0") is None  # waits for cpu.0
    assert two.take({"cpu": 2, "0": 1}, "a/1") == "cpu"  # cpu.1: the waiter cannot use it
    assert two.take({"cpu": 2, "0": 1}, "a/2") == "0"  # GPU 0: the waiter does not want it


def test_a_runner_with_nothing_ready_stops_waiting(queues) -> None:  # type: ignore[no-untyped-def]
    first, second = queues
    assert first.take({"cpu": 1}, "a/0") == "cpu"
    assert second.take({"cpu": 1}, "b/0") is None
    assert len(list(first.folder.glob("wait.*"))) == 1
    second.keep([])  # it asked for a slot since the last call: still waiting
    second.keep([])  # it did not: no run of its is ready any more
    assert list(first.folder.glob("wait.*")) == []
    first.keep([])
    assert first.take({"cpu": 1}, "a/1") == "cpu"


def test_the_slot_file_says_who_holds_it(queues) -> None:  # type: ignore[no-untyped-def]
    first, _ = queues
    first.take({"0": 1}, "student/alpha-0.3/seed0")
    (held,) = holders(first.folder)
    assert held["slot"] == "gpu0.0"
    assert held["run"] == "student/alpha-0.3/seed0"
    assert held["grid"] == "a"
    assert held["pid"] == os.getpid()
    assert held["user"]
    assert held["host"]
    first.keep([])
    assert holders(first.folder) == []


def test_files_in_the_queue_are_group_writable_whatever_the_umask(queues) -> None:  # type: ignore[no-untyped-def]
    first, second = queues
    old = os.umask(0o077)
    try:
        first.take({"cpu": 1}, "a/0")
        second.take({"cpu": 1}, "b/0")
    finally:
        os.umask(old)
    (wait,) = first.folder.glob("wait.*")
    for path in (first.folder / "cpu.0", wait):
        assert path.stat().st_mode & 0o777 == 0o660


def test_a_slot_is_free_again_once_its_holder_is_killed(folder: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        queue = HostQueue(folder, "b")
        assert queue.take({"cpu": 1}, "b/0") is None
        assert [slot["pid"] for slot in holders(folder)] == [holder.pid]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert queue.take({"cpu": 1}, "b/0") == "cpu"
    queue.close()


def test_the_wait_file_of_a_runner_that_died_is_removed_and_holds_nothing_back(
    queues: tuple[HostQueue, HostQueue],
) -> None:
    first, second = queues
    assert first.take({"cpu": 1}, "a/0") == "cpu"
    assert second.take({"cpu": 1}, "b/0") is None  # second waits
    stale = first.folder / "wait.ghost.1.dead"  # earlier, but no live process holds its lock
    stale.write_text(json.dumps({"since": 0, "wants": {"cpu": 1}}))
    first.keep([])
    assert second.take({"cpu": 1}, "b/0") == "cpu"
    assert not stale.exists()


def test_a_missing_queue_folder_is_one_error_that_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"queue folder .*nowhere does not exist; `invoke prov"):
        check_folder(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--only queue"):
        launch("kd_alpha", ["dataset=watch"], tmp_path, dry=True, queue=tmp_path / "nowhere")


def test_two_runners_sharing_a_queue_with_limit_1_never_run_at_once(
    tiny_npz: Path, tmp_path: Path, folder: Path
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    plan_tiny(alice, tiny_npz, "0")
    plan_tiny(bob, tiny_npz, "1")
    run_together((alice, 1), (bob, 1), queue=folder)
    assert statuses(alice) == statuses(bob) == {"done"}
    spans = intervals(alice) + intervals(bob)
    assert len(spans) == 2
    assert most_at_once(spans) == 1
    assert holders(folder) == []  # every slot released
    state = json.loads((batch_dir(alice, "tiny") / "state.json").read_text())
    assert state["runner"]["queue"] == str(folder)


def test_runners_with_limits_2_and_1_never_put_more_than_2_runs_on_the_cpu(
    tiny_npz: Path, tmp_path: Path, folder: Path
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    plan_tiny(alice, tiny_npz, "0, 1")
    plan_tiny(bob, tiny_npz, "2")
    run_together((alice, 2), (bob, 1), queue=folder)
    assert statuses(alice) == statuses(bob) == {"done"}
    assert most_at_once(intervals(alice) + intervals(bob)) <= 2


def test_launch_hands_the_queue_to_the_detached_runner(
    tiny_npz: Path, tmp_path: Path, folder: Path
) -> None:
    grid, root = tmp_path / "tiny.toml", tmp_path / "r"
    grid.write_text(ONE_STAGE.format(seeds="0", data=tiny_npz.as_posix()))
    out = io.StringIO()
    launch(str(grid), [], root, per_gpu=1, queue=folder, out=out)
    assert f"slots shared with other users' runners through {folder}" in out.getvalue()
    state_path = batch_dir(root, "tiny") / "state.json"
    deadline = time.monotonic() + 240
    while (
        not state_path.exists() or json.loads(state_path.read_text())["runner"]["finished"] is None
    ):
        assert time.monotonic() < deadline, "the runner did not finish"
        time.sleep(0.1)
    state: dict[str, Any] = json.loads(state_path.read_text())
    assert state["runner"]["queue"] == str(folder)
    assert statuses(root) == {"done"}
    assert (folder / "cpu.0").exists()


def test_status_shows_who_holds_the_shared_slots(queues, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json
    import socket

    from rich.console import Console

    from gafkd.experiments.screen import render
    from gafkd.experiments.status import collect

    first, _ = queues
    first.take({"cpu": 1}, "student/alpha-0.3/seed0")
    folder = tmp_path / "root" / "runs" / "a" / ".batch"
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"grid": "a", "runs": []}))
    runner = {"pid": os.getpid(), "host": socket.gethostname(), "queue": str(first.folder)}
    runner |= {"heartbeat": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "slots": {"cpu": 1}}
    runner |= {"waiting_for_slot": True}  # as a second runner of its user would write it
    (folder / "state.json").write_text(json.dumps({"grid": "a", "runner": runner, "runs": {}}))
    status = collect(tmp_path / "root", nvml=None)
    (slot,) = status["slots"]
    assert (slot["slot"], slot["run"]) == ("cpu.0", "student/alpha-0.3/seed0")
    console = Console(width=200, record=True)
    console.print(render(status))
    text = console.export_text()
    assert "shared slots: cpu.0 yours (student/alpha-0.3/seed0)" in text
    assert "running, waiting for a shared slot" in text
    first.keep([])


# -- planted files: a file a member puts in the shared folder costs only that member ---------------

VICTIM = "precious, not a slot\n"
OTHER_UID, PLANTER_UID = 4242, 4343  # two uids that are neither root nor each other
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two other users")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM)
    path.chmod(0o600)
    return path


def plant(folder: Path, kind: str, victim: Path) -> Path:
    """``cpu.0`` planted as a symlink, hard link, FIFO, folder or garbage holder record."""
    path = folder / "cpu.0"
    if kind == "symlink":
        path.symlink_to(victim)
    elif kind == "hard link":
        os.link(victim, path)
    elif kind == "FIFO":
        os.mkfifo(path, 0o666)
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["symlink", "hard link", "FIFO", "folder"])
def test_a_planted_slot_is_skipped_with_one_warning_and_its_target_is_untouched(
    folder: Path, victim: Path, kind: str
) -> None:
    planted = plant(folder, kind, victim)
    log = io.StringIO()
    queue = HostQueue(folder, "a", log=log)
    assert queue.take({"cpu": 1}, "a/0") == "cpu"  # on cpu.1: the first usable slot
    assert [slot["slot"] for slot in holders(folder) if "problem" not in slot] == ["cpu.1"]
    queue.keep([])
    assert queue.take({"cpu": 1}, "a/1") == "cpu"
    queue.close()
    assert victim.read_text() == VICTIM
    assert victim.stat().st_mode & 0o7777 == 0o600
    (line,) = log.getvalue().splitlines()  # once per file, not once per take
    assert line.startswith(f"gafkd: skipping queue slot {planted}: a {kind}")
    assert line.endswith("planted by root; ask them or root to remove it")


def test_planted_slots_never_hang_or_break_status(folder: Path, victim: Path) -> None:
    (folder / "cpu.0").symlink_to(victim)
    os.mkfifo(folder / "gpu0.0")
    (folder / "gpu1.0").mkdir()
    (folder / "gpu2.0").write_text("{not json")
    (folder / "gpu3.0").write_text("[" * 60000)  # deeper than json's recursion
    held = [os.open(folder / name, os.O_RDWR) for name in ("gpu2.0", "gpu3.0")]
    try:
        for fd in held:  # held by a runner gone wrong
            fcntl.flock(fd, fcntl.LOCK_EX)
        found = {slot["slot"]: slot["problem"] for slot in holders(folder)}
    finally:
        for fd in held:
            os.close(fd)
    assert found == {
        "cpu.0": "unusable: a symlink planted by root",
        "gpu0.0": "unusable: a FIFO planted by root",
        "gpu1.0": "unusable: a folder planted by root",
        "gpu2.0": "held, but its content is not a holder record (file of root)",
        "gpu3.0": "held, but its content is not a holder record (file of root)",
    }
    assert victim.read_text() == VICTIM
    from gafkd.experiments.screen import _slots_line

    line = _slots_line(holders(folder), "root")
    assert line.startswith("shared slots: cpu.0 unusable: a symlink planted by root, gpu0.0 ")


def test_a_planted_wait_file_is_neither_read_nor_removed(folder: Path) -> None:
    fifo = folder / "wait.mallory.1.fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # so that even a blocking open returns
    deep = folder / "wait.mallory.2.deep"
    deep.write_text("[" * 60000)
    held = os.open(deep, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # a live "waiter" whose file no JSON parser gets through
    try:
        first, second = HostQueue(folder, "a"), HostQueue(folder, "b")
        assert first.take({"cpu": 1}, "a/0") == "cpu"
        assert second.take({"cpu": 1}, "b/0") is None
        first.keep([])
        assert second.take({"cpu": 1}, "b/0") == "cpu"
        first.close()
        second.close()
    finally:
        os.close(writer)
        os.close(held)
    assert fifo.exists()


CHILD = """
import io, json, os, sys
from pathlib import Path
from gafkd.experiments.hostqueue import HostQueue, check_folder, holders
os.chdir(sys.argv[1])
os.setgroups([])
os.setresgid(int(sys.argv[2]), int(sys.argv[2]), int(sys.argv[2]))
os.setresuid(int(sys.argv[2]), int(sys.argv[2]), int(sys.argv[2]))
log = io.StringIO()
check_folder(Path("."))
queue = HostQueue(Path("."), "b", log=log)
taken = queue.take({"cpu": 1}, "b/0")
print(json.dumps({"taken": taken, "log": log.getvalue(), "slots": holders(Path("."))}))
queue.close()
"""


@needs_root
def test_a_slot_another_member_made_unreadable_costs_only_them(tmp_path: Path) -> None:
    folder = tmp_path / "queue"
    folder.mkdir(mode=0o1777)  # sticky, like the lab's queue folder (all uids: no group here)
    folder.chmod(0o1777)
    tmp_path.chmod(0o755)
    tmp_path.parent.chmod(0o755)  # pytest's own folders, so that the other uid gets in
    private = folder / "cpu.0"
    private.write_text("mine\n")
    private.chmod(0o600)
    os.chown(private, PLANTER_UID, PLANTER_UID)
    dead = folder / "wait.planter.1.dead"  # a dead waiter's file the other uid cannot remove
    dead.write_text(json.dumps({"since": 0, "wants": {"cpu": 1}}))
    os.chown(dead, PLANTER_UID, PLANTER_UID)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(OTHER_UID)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    found = json.loads(child.stdout)
    assert found["taken"] == "cpu"  # on cpu.1
    assert found["log"] == (
        f"gafkd: skipping queue slot cpu.0: a file {OTHER_UID} may not open (mode 600, group "
        f"{PLANTER_UID}) planted by {PLANTER_UID}; ask them or root to remove it\n"
    )
    assert [slot["slot"] for slot in found["slots"]] == ["cpu.0", "cpu.1"]
    assert private.read_text() == "mine\n"
    assert dead.exists()
