"""benchmarks/all.py at small sizes on the CPU: every part runs and the grid prints its ratio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_all_benchmarks_run_small_on_the_cpu() -> None:
    argv = [sys.executable, str(ROOT / "benchmarks" / "all.py"), "--device", "cpu", "--small"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "== gpu tests: skipped, --device cpu" in out
    for part in ("bench_imaging", "bench_train", "selftest", "grid one at a time", "grid packed"):
        assert f"== {part}: done in " in out, part
    assert "No GPU was tested: --device cpu was asked for" in out
    assert "grid kd_alpha: 7 runs, 1 at a time on the CPU" in out  # the baseline
    one = next(line for line in out.splitlines() if line.startswith("one at a time (--per-gpu 1)"))
    packed = next(line for line in out.splitlines() if line.startswith("packed (the runner"))
    assert float(one.split()[-1]) == 1.0
    assert float(packed.split()[-1]) > 0
    assert out.rstrip().endswith("failed: none")
