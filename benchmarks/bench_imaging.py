"""Time gafkd.imaging against pyts 0.14.1 (the baseline) on 3-axis windows -> 3x64x64 images.

    python benchmarks/bench_imaging.py [--n 10000] [--length 500] [--device cpu|cuda] [--threads T]

Data: N standard-normal float32 windows of shape (3, length), imaged per axis (pyts sees the
(3N, length) reshape). pyts is imported and warmed up before any timing (0.14.1 compiles its
numba kernels at import, ~25 s); each transform is timed 3 times, pyts and gafkd runs
interleaved so that both see the same machine load, and the median is reported. ratio =
pyts s / gafkd s (the speed-up); max diff = max |gafkd - pyts| on the benchmark data. pyts
runs single-threaded (its numba kernels are not parallel); torch uses --threads threads.
Both sides page-fault their fresh output arrays (pyts 983 MB float64, gafkd 491 MB float32 at
N = 10000); on Linux, THP_MEM_ALLOC_ENABLE=1 lets torch use huge pages and cuts that cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]  # run from a checkout without installing gafkd
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def timed(function: Callable[[], Any], device: str) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="number of 3-axis windows")
    parser.add_argument("--length", type=int, default=500, help="timestamps per window")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    from pyts.image import GramianAngularField, MarkovTransitionField

    print(f"import pyts.image: {time.perf_counter() - start:.1f} s (not timed below)")
    from gafkd import imaging

    windows = np.random.default_rng(0).standard_normal((args.n, 3, args.length), np.float32)
    flat = windows.reshape(-1, args.length)
    size = 64
    pyts_gasf = GramianAngularField(image_size=size)
    pyts_mtf = MarkovTransitionField(image_size=size, n_bins=8)
    devices = ["cpu"] + (["cuda"] if args.device == "cuda" else [])
    inputs = {device: torch.from_numpy(windows).to(device) for device in devices}

    def ours(transform: Callable[..., torch.Tensor], device: str) -> Callable[[], torch.Tensor]:
        return lambda: transform(inputs[device], size)

    cases = [
        ("GASF", lambda: pyts_gasf.transform(flat), {d: ours(imaging.gasf, d) for d in devices}),
        ("MTF", lambda: pyts_mtf.transform(flat), {d: ours(imaging.mtf, d) for d in devices}),
    ]
    for device in devices:  # warm-up: kernels, allocator, CUDA context
        imaging.gasf(inputs[device][:8], size)
        imaging.mtf(inputs[device][:8], size)
    pyts_gasf.transform(flat[:8])
    pyts_mtf.transform(flat[:8])

    print(
        f"data: ({args.n}, 3, {args.length}) float32 -> (N, 3, {size}, {size}); "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
        f"median of {args.repeats}"
    )
    print(f"{'transform':<16}{'pyts s':>10}{'gafkd s':>10}{'ratio':>9}{'max diff':>12}")
    for name, theirs, ours_by_device in cases:
        pyts_times: list[float] = []
        our_times: dict[str, list[float]] = {device: [] for device in devices}
        for _ in range(args.repeats):
            elapsed, expected = timed(theirs, "cpu")
            pyts_times.append(elapsed)
            for device, transform in ours_by_device.items():
                elapsed, images = timed(transform, device)
                our_times[device].append(elapsed)
                del images
        pyts_s = statistics.median(pyts_times)
        for device, transform in ours_by_device.items():
            images = transform().cpu().reshape(expected.shape).numpy()
            diff = float(np.abs(images - expected).max())
            del images
            ours_s = statistics.median(our_times[device])
            label = f"{name} ({device})"
            print(f"{label:<16}{pyts_s:>10.3f}{ours_s:>10.3f}{pyts_s / ours_s:>8.1f}x{diff:>12.2e}")
        del expected


if __name__ == "__main__":
    main()
