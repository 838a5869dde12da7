"""Every benchmark on one device in one go: the gpu tests, imaging, the KD step, the selftest, and
a kd_alpha-shaped grid run one at a time and then with the runner's packing.

    python benchmarks/all.py --device cuda          # one GPU: at most 8 minutes
    python benchmarks/all.py --device cpu --small   # CI (tests/test_benchmarks.py): small sizes

Each part runs as its own process, as a user would run it, with its output printed as it comes
and its wall time after it; a part that fails or runs past its time is reported and the others
still run; the exit status is 1 when any failed. The parts:

- ``gpu tests``: ``pytest -m gpu`` (skipped with --device cpu: nothing to test);
- ``bench_imaging`` and ``bench_train`` on the device (their own baselines: pyts on the CPU,
  and the lab's training step on the same device);
- ``selftest``: ``gafkd selftest`` (with --device cpu: the CPU only);
- ``grid``: a synthetic GENEActiv-shaped ``.npz`` (3 channels, 500 samples, 14 classes, 10
  subjects) and the shipped kd_alpha grid on it (two teachers per seed, then 5 alphas x the
  seeds: 15 students with 3 seeds), launched in the foreground twice: ``--per-gpu 1`` (the
  baseline, one run at a time), then the runner's own packing
  (``experiments.launch.choose_slots``: free memory per GPU, cores on the CPU).
  ratio = one-at-a-time wall time / packed wall time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # run from a checkout without installing gafkd
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Sizes:
    imaging: tuple[str, ...]  # bench_imaging's arguments
    train: tuple[str, ...]  # bench_train's arguments
    windows: int  # the grid's synthetic windows (8 of 10 subjects train, 2 test)
    epochs: int  # per grid run
    seeds: int  # kd_alpha's seed axis: 3 seeds -> 6 teachers, 15 students
    image_size: int  # the GAF teacher's images
    timeout: int  # seconds per part


FULL = Sizes(("--n", "4000"), ("--n", "2048", "--steps", "30"), 2000, 2, 3, 64, 240)
SMALL = Sizes(
    ("--n", "32", "--repeats", "1"),
    ("--n", "128", "--steps", "2", "--epochs", "2"),
    120,
    1,
    1,
    16,
    1200,  # CI machines may be loaded: generous, it only stops a hung part
)


def run_part(name: str, argv: list[str], timeout: int) -> tuple[bool, float]:
    """Run one part as a process, its output passed through; (passed, seconds)."""
    print(f"\n== {name}: {' '.join(argv[1:])}", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, timeout=timeout, check=False)
        passed = done.returncode == 0
        note = "" if passed else f" (exit status {done.returncode})"
    except subprocess.TimeoutExpired:
        passed, note = False, f" (stopped after its {timeout} s)"
    seconds = time.perf_counter() - started
    print(f"== {name}: {'done' if passed else 'FAILED'} in {seconds:.1f} s{note}", flush=True)
    return passed, seconds


def write_windows(path: Path, windows: int) -> None:
    """A learnable synthetic set shaped like GENEActiv's 500-sample windows, as an .npz file."""
    from gafkd.data import SignalSet
    from gafkd.data.sources import save_npz

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 14, windows).astype(np.int64)
    time_s = np.arange(500) / 100.0
    phase = rng.uniform(0, 2 * np.pi, (windows, 3, 1))
    signals = np.sin(2 * np.pi * (0.5 + 0.3 * labels)[:, None, None] * time_s + phase)
    signals += 0.3 * rng.standard_normal(signals.shape)
    names = tuple(f"class{k}" for k in range(14))
    subjects = np.arange(windows, dtype=np.int64) % 10
    dataset = SignalSet(signals.astype(np.float32), labels, subjects, names, ("x", "y", "z"))
    save_npz(dataset, path)


def grid(sizes: Sizes, folder: Path) -> list[tuple[str, bool, float]]:
    """kd_alpha on synthetic windows, one run at a time and then packed; prints the ratio."""
    data = folder / "synthetic-geneactiv.npz"
    write_windows(data, sizes.windows)
    seeds = ",".join(str(seed) for seed in range(sizes.seeds))
    sets = [
        "dataset=geneactiv14_500",
        "data.source=npz",
        f"data.path={data}",
        f"seed=[{seeds}]",
        f"train.epochs={sizes.epochs}",
        f"imaging.image_size={sizes.image_size}",
    ]
    launch = [sys.executable, "-m", "gafkd", "launch", "kd_alpha", "--foreground"]
    launch += [f"--set={item}" for item in sets]
    results = []
    for name, extra in (("grid one at a time", ["--per-gpu", "1"]), ("grid packed", [])):
        root = folder / name.replace(" ", "-")
        passed, seconds = run_part(name, [*launch, "--root", str(root), *extra], sizes.timeout)
        results.append((name, passed, seconds))
    (_, one_ok, one), (_, packed_ok, packed) = results
    runs = 5 * sizes.seeds
    print(f"\n{'kd_alpha, ' + str(runs) + ' students + teachers':<34}{'wall s':>10}{'ratio':>8}")
    print(f"{'one at a time (--per-gpu 1)':<34}{one:>10.1f}{1.0:>8.2f}")
    print(f"{'packed (the runner slots)':<34}{packed:>10.1f}{one / packed:>8.2f}")
    if not (one_ok and packed_ok):
        print("(a grid launch failed: the times above are not comparable)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--small", action="store_true", help="CI sizes: minutes on 2 cores")
    args = parser.parse_args(argv)
    sizes = SMALL if args.small else FULL
    python, device = sys.executable, ["--device", args.device]
    started, results = time.perf_counter(), []
    if args.device == "cuda":
        tests = [python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
        results.append(("gpu tests", *run_part("gpu tests", tests, sizes.timeout)))
    else:
        print("\n== gpu tests: skipped, --device cpu (they need CUDA)")
    for name, extra in (("bench_imaging", sizes.imaging), ("bench_train", sizes.train)):
        script = str(ROOT / "benchmarks" / f"{name}.py")
        results.append((name, *run_part(name, [python, script, *device, *extra], sizes.timeout)))
    selftest = [python, "-m", "gafkd", "selftest", "--device", "auto" if args.device == "cuda"
                else "cpu"]  # fmt: skip
    results.append(("selftest", *run_part("selftest", selftest, sizes.timeout)))
    with tempfile.TemporaryDirectory(prefix="gafkd-bench-") as folder:
        results += grid(sizes, Path(folder))
    total = time.perf_counter() - started
    failed = [name for name, passed, _ in results if not passed]
    print(f"\nall parts on {args.device}: {total:.0f} s; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
