"""End to end through invoke: launch the real kd_alpha grid on the bundled data, then results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke"]


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INVOKE, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_launch_then_results_on_the_bundled_dataset(tmp_path: Path) -> None:
    launched = invoke(
        "launch",
        "--grid",
        "kd_alpha",
        "--root",
        str(tmp_path),
        "--foreground",
        "--set",
        "dataset=watch",
        "--set",
        "train.epochs=1",
        "--set",
        "seed=[0]",
        "--set",
        "train.alpha=[0.3, 0.7]",
    )
    assert launched.returncode == 0, launched.stderr
    assert "grid kd_alpha: 4 done" in launched.stdout
    results = invoke("results", "--grid", "kd_alpha", "--root", str(tmp_path), "--reference", "lab")
    assert results.returncode == 0, results.stderr
    table = (tmp_path / "runs/kd_alpha/results.md").read_text()
    assert "| watch | 0.3 |" in table
    assert "| watch | 0.7 |" in table
    assert (tmp_path / "runs/kd_alpha/results.png").read_bytes()[:4] == b"\x89PNG"
    assert "plot: " in results.stdout


def test_unknown_grid_is_one_line_without_traceback(tmp_path: Path) -> None:
    done = invoke("launch", "--grid", "kd_beta", "--root", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: unknown grid 'kd_beta'")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_status_json_without_batches(tmp_path: Path) -> None:
    done = invoke("status", "--json", "--root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert '"batches": []' in done.stdout
