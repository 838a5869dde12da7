"""Atomic writes of a run's and a batch's files: whole files, with the modes the umask gives."""

from __future__ import annotations

import os
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
