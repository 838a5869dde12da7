"""A run whose integration tests skip ends by saying how many and how to run them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SKIPPING = """
import pytest

@pytest.mark.ssh
def test_needs_a_host():
    pytest.skip("the test host needs root")

@pytest.mark.slurm
def test_needs_slurm():
    pytest.skip("slurmctld not found")

def test_plain():
    pass
"""


def run_inner(tmp_path: Path, body: str) -> list[str]:
    (tmp_path / "tests").mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_inner.py").write_text(body)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    ssh: x\n    slurm: y\n")
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()


def test_skipped_integration_tests_are_counted_in_the_last_lines(tmp_path: Path) -> None:
    last = run_inner(tmp_path, SKIPPING)[-2:]
    assert last[0] == "2 integration tests skipped (ssh 1, slurm 1): the test host needs root"
    assert "as root: bash .ci/run" in last[1]


def test_a_run_without_skips_says_nothing_more(tmp_path: Path) -> None:
    last = run_inner(tmp_path, "def test_plain():\n    pass\n")[-1]
    assert "passed" in last
