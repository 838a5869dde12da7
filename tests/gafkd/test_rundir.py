"""Atomic writes of a run's and a batch's files: whole files, with the modes the umask gives."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gafkd import rundir


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore this process's umask after a test sets its own."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize(
    ("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640)], ids=["022", "077", "027"]
)
def test_atomic_writes_follow_the_umask_so_colleagues_can_read_them(
    tmp_path: Path, mask: int, mode: int
) -> None:
    os.umask(mask)
    rundir.save_json({"test_accuracy": 0.5}, tmp_path / "result.json")
    rundir.save_json({"runs": {}}, tmp_path / ".batch" / "state.json")
    rundir.write_error(tmp_path, "boom")
    for name in ("result.json", ".batch/state.json", "error.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    rundir.save_json({"old": True}, path)

    def killed_mid_write() -> None:
        with rundir.atomic_open(path) as handle:
            handle.write("{torn")
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        killed_mid_write()
    assert path.read_text() == '{\n  "old": true\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_busy_lock_names_its_holder_even_before_the_holder_has_written_it(
    tmp_path: Path,
) -> None:
    """The holder writes its line just after it locks: a launch that loses the race in between
    still names it (it waits briefly for the line) instead of saying "unknown"."""
    import fcntl
    import threading

    import pytest

    from gafkd.config import ConfigError

    path = tmp_path / "lock"
    holder = path.open("a+")
    fcntl.flock(holder, fcntl.LOCK_EX)  # held, and still empty

    def write_later() -> None:
        time.sleep(0.3)
        holder.write("pid 42 on lab since now\n")
        holder.flush()

    writer = threading.Thread(target=write_later)
    writer.start()
    try:
        with (
            pytest.raises(ConfigError, match=r"busy: pid 42 on lab since now"),
            rundir.exclusive(path, "busy: {holder}"),
        ):
            pass
    finally:
        writer.join()
        holder.close()


def test_a_run_killed_while_its_checkpoint_rotates_keeps_checkpoint_pt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """checkpoint.pt is never missing: killed mid-save, the last epoch's file is still there."""
    rundir.save_checkpoint({"epoch": 1}, tmp_path)

    def killed(obj: object, path: Path) -> None:
        raise KeyboardInterrupt  # the runner's cancel, between rotating and writing

    monkeypatch.setattr(rundir, "save_torch", killed)
    with pytest.raises(KeyboardInterrupt):
        rundir.save_checkpoint({"epoch": 2}, tmp_path)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        assert rundir.load_torch(tmp_path / name, "", weights_only=False) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]
