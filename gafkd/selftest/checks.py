"""The selftest's checks, with torch: per visible GPU (or the CPU), then the report.

Each device gets six checks, each through gafkd's own code paths: the device (torch sees it,
its compute capability against the wheel's kernels, the driver against the wheel's CUDA, a
kernel that runs), imaging (GASF, GADF and MTF on the device against float64 on the CPU, with
the imaging tests' parity bars), training (`train.fit` on synthetic GENEActiv-shaped windows,
two frozen teachers and a 1-D WRN16-1 student, in fp32 and with AMP), health (one NVML sample
through `gafkd.gpu`) and packing (how many runs the local runner puts on the device, from
`experiments.launch.choose_slots`). A check that raises is a failed check with its one-line
error, so the report says where gafkd breaks. The device check's judgement is torch-free, in
`gafkd.selftest.report`, with the verdict and the text.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gafkd import imaging
from gafkd.config import RunConfig, TrainConfig
from gafkd.data import SignalSet
from gafkd.data.split import Split
from gafkd.gpu import last_lines
from gafkd.memory import format_bytes
from gafkd.rundir import METRICS
from gafkd.selftest.report import Check, cuda_mode, judge_device, kernels_for, verdict

# Parity bars of tests/gafkd/imaging/test_imaging.py::test_cuda_output_matches_cpu_output.
FLOAT64_BAR = 1e-10  # float64 on the device against float64 on the CPU
FLOAT32_BAR = 1e-5  # float32 on the device against float32 on the CPU
CLASSES, CHANNELS, LENGTH = 14, 3, 500  # GENEActiv windows: 14 classes, 3 axes, 5 s at 100 Hz


@dataclass(frozen=True)
class Size:
    """How much work the training check does: windows in train and test, and epochs."""

    train: int
    test: int
    epochs: int


GPU_SIZE = Size(train=4096, test=512, epochs=4)
CPU_SIZE = Size(train=512, test=128, epochs=3)


# --- the checks ---------------------------------------------------------------------------------


def check_device(device: torch.device, driver: tuple[str, tuple[int, int]] | None) -> Check:
    """Torch sees the device, the wheel has kernels for it and the driver runs them."""
    if device.type != "cuda":
        found = torch.version.cuda
        build = f"a CUDA {found} build, but torch sees no GPU" if found else "a CPU build"
        return Check("device", True, f"CPU only: torch {torch.__version__} is {build}")
    props = torch.cuda.get_device_properties(device)
    capability, arch_list = (props.major, props.minor), torch.cuda.get_arch_list()
    kernels = kernels_for(capability, arch_list)
    wheel = tuple(int(part) for part in (torch.version.cuda or "0.0").split(".")[:2])
    mode = cuda_mode(driver[1], (wheel[0], wheel[1])) if driver else "unknown (no NVML)"
    ok, why = judge_device(kernels, mode)
    a = torch.randn(512, 512, device=device)
    ran = torch.nn.functional.conv1d(a[None], a[:8, :, None]).sum().item() + (a @ a).sum().item()
    values = {
        "name": props.name,
        "capability": f"{capability[0]}.{capability[1]}",
        "arch_list": arch_list,
        "kernels": kernels,
        "cuda_mode": mode,
        "memory_total": props.total_memory,
        "cudnn": torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
    }
    detail = (
        f"{props.name}, compute capability {values['capability']}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}) on driver {driver[0] if driver else 'unknown'}: {why}; "
        f"a matmul and a conv ran ({'finite' if np.isfinite(ran) else 'NOT finite'})"
    )
    return Check("device", ok and bool(np.isfinite(ran)), detail, values)


def check_imaging(device: torch.device) -> Check:
    """GASF, GADF and MTF on the device against the CPU: float64 and float32, at the bars."""
    X = torch.randn(16, CHANNELS, LENGTH, generator=torch.Generator().manual_seed(0)).double()
    worst: dict[str, float] = {}
    for name, function in (("gasf", imaging.gasf), ("gadf", imaging.gadf), ("mtf", imaging.mtf)):
        for dtype, bar in ((torch.float64, FLOAT64_BAR), (torch.float32, FLOAT32_BAR)):
            if name == "mtf" and dtype == torch.float32:
                continue  # MTF bins at full resolution in float64 whatever the input
            cpu = function(X.to(dtype), 64)
            on_device = function(X.to(dtype).to(device), 64)
            diff = float((on_device.cpu().double() - cpu.double()).abs().max())
            worst[f"{name} {str(dtype).removeprefix('torch.')}"] = diff
            if not diff <= bar:
                detail = f"{name} in {dtype} on {device} is {diff:.2e} from the CPU (bar {bar})"
                return Check("imaging", False, detail, {"max_diff": worst})
    detail = ", ".join(f"{key} {diff:.1e}" for key, diff in worst.items())
    where = "" if device.type == "cuda" else " (the CPU against itself: no GPU path)"
    return Check("imaging", True, f"max diff {detail}{where}", {"max_diff": worst})


def synthetic_split(size: Size, seed: int = 0) -> Split:
    """GENEActiv-shaped windows whose class sets a sine's frequency: learnable, 10 subjects."""
    rng = np.random.default_rng(seed)

    def windows(n: int, subjects: np.ndarray) -> SignalSet:
        labels = rng.integers(0, CLASSES, n).astype(np.int64)
        time_s = np.arange(LENGTH) / 100.0
        phase = rng.uniform(0, 2 * np.pi, (n, CHANNELS, 1))
        hz = (0.5 + 0.3 * labels)[:, None, None]
        clean = np.sin(2 * np.pi * hz * time_s + phase)
        noisy = clean + 0.3 * rng.standard_normal((n, CHANNELS, LENGTH))
        names = tuple(f"class{k}" for k in range(CLASSES))
        return SignalSet(noisy.astype(np.float32), labels, subjects, names, ("x", "y", "z"))

    train = windows(size.train, np.arange(size.train) % 8)
    test = windows(size.test, 8 + np.arange(size.test) % 2)
    return Split(train=train, val=None, test=test)


def check_training(device: torch.device, size: Size, amp: bool) -> Check:
    """A short KD run through `train.fit`: finite and falling loss, samples/s, peak memory."""
    from gafkd.models import build
    from gafkd.run import to_device
    from gafkd.train import amp_mode, fit

    name = "train amp" if amp else "train fp32"
    use_amp, dtype = amp_mode(device, amp)
    if amp and not use_amp:
        why = "skipped: gafkd's fit uses AMP on CUDA only (train.amp has no effect on the CPU)"
        return Check(name, None, why)
    train = TrainConfig(
        epochs=size.epochs, lr_values=(0.05,), lr_steps=(), amp=amp, eval_batch_size=256
    )
    config = RunConfig(name=f"selftest-{name.split()[1]}", train=train)
    torch.manual_seed(0)
    image_channels = imaging.n_image_channels(CHANNELS, config.imaging.layout)
    teachers = {
        "signal": build("wrn16_1", dim=1, in_channels=CHANNELS, n_classes=CLASSES),
        "image": build("wrn16_1", dim=2, in_channels=image_channels, n_classes=CLASSES),
    }
    student = build("wrn16_1", dim=1, in_channels=CHANNELS, n_classes=CLASSES)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(sys.stderr):
        data = to_device(synthetic_split(size), config, device, images=True)  # stdout: JSON
        started = time.perf_counter()
        fit(student, data, config, teachers=teachers, run_dir=Path(folder))  # checkpoints too
        seconds = time.perf_counter() - started
        losses = [row["train_loss"] for row in last_lines(Path(folder) / METRICS)]
    peak = (
        torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    falling = bool(np.isfinite(losses).all()) and losses[-1] < losses[0]
    rate = size.train * size.epochs / seconds
    ran = str(dtype).removeprefix("torch.") if use_amp else "float32"
    values = {"losses": losses, "samples_per_s": rate, "dtype": ran, "peak_bytes": peak}
    what = "peak allocated" if device.type == "cuda" else "peak RSS of this process"
    detail = (
        f"{ran}: loss {' -> '.join(f'{x:.3f}' for x in losses)} "
        f"({'falling' if falling else 'NOT falling'}), {rate:.0f} samples/s over "
        f"{size.epochs} epochs of {size.train} windows, {what} {format_bytes(peak)}"
    )
    return Check(name, falling, detail, values)


@dataclass
class Watch:
    """NVML for the whole selftest, with XID events registered before the first check."""

    nvml: Any  # an initialised NVML, or None
    reason: str  # why there is none
    events: Any = None  # gafkd.gpu.XidEvents
    xids: dict[int, list[int]] = field(default_factory=dict)  # seen so far, by NVML index


@contextlib.contextmanager
def watching(nvml: Any = None) -> Iterator[Watch]:
    """A `Watch` for the block; XIDs any check causes are queued from here on."""
    from gafkd.gpu import XidEvents, nvml_session

    with nvml_session(nvml) as (session, reason):
        events = XidEvents(session) if session is not None else None
        try:
            yield Watch(session, reason, events)
        finally:
            if events is not None:
                events.close()


def check_health(device: torch.device, nvml_index: int | None, watch: Watch) -> Check:
    """One NVML sample through gafkd's monitor code: temperature against the slowdown threshold,
    clock event reasons, ECC, and XIDs seen while the selftest ran; judged as the runner does."""
    from gafkd.gpu import judge, sample

    if watch.nvml is None:
        return Check("health", None, f"no NVML: {watch.reason}")
    if device.type != "cuda" or nvml_index is None:
        return Check("health", None, f"skipped: {device} is not a GPU that NVML indexes")
    points = sample(watch.nvml, watch.events)
    for point in points:  # a drain takes every GPU's events: keep the others' for their turn
        watch.xids.setdefault(point.gpu, []).extend(point.xid or ())
    point = points[nvml_index]
    if point.xid is not None:
        point = replace(point, xid=tuple(watch.xids[nvml_index]))
    healthy, why = judge([point], slowdown_samples=1)
    fields = {
        "temperature": f"{point.temperature} C of {point.slowdown_temperature} C slowdown",
        "clock reasons": ", ".join(point.clock_reasons or ()) or "none",
        "ECC uncorrected": "N/A" if point.ecc_uncorrected is None else point.ecc_uncorrected,
        "XIDs": "not watched" if point.xid is None else list(point.xid) or "none",
    }
    detail = "; ".join(f"{key} {value}" for key, value in fields.items())
    return Check("health", healthy, f"{detail}{f': {why}' if why else ''}", asdict(point))


def check_packing(device: torch.device, nvml_index: int | None) -> Check:
    """How many kd_alpha students the local runner would put on the device at once, and why."""
    from gafkd.experiments.launch import MEMORY_PER_RUN, choose_slots

    if device.type == "cuda":
        torch.cuda.empty_cache()  # the training checks' cached blocks are not another run's
    slots, reason = choose_slots(None, [nvml_index] if nvml_index is not None else None)
    if device.type != "cuda" or nvml_index is None:
        count = slots.per_device.get("cpu", 1)
        detail = (
            f"{count} at a time on the CPU ({reason or 'no GPU'}; {os.cpu_count()} cores, "
            f"{slots.threads} torch threads each)"
        )
        return Check("packing", True, detail, {"runs": count, "threads": slots.threads})
    count = slots.per_device[str(nvml_index)]
    free = torch.cuda.mem_get_info(device)[0]  # after empty_cache below, as a fresh runner sees
    detail = (
        f"{count} at a time on GPU {nvml_index}: {format_bytes(free)} free, "
        f"{format_bytes(MEMORY_PER_RUN)} per run (experiments.launch.MEMORY_PER_RUN), capped per "
        "GPU; --per-gpu overrides it"
    )
    return Check("packing", True, detail, {"runs": count, "free_bytes": free})


# --- the whole selftest -------------------------------------------------------------------------


def guarded(name: str, check: Callable[[], Check]) -> Check:
    """Run one check; an exception is a failed check with its last line (and the traceback)."""
    try:
        return check()
    except Exception as error:  # the selftest's purpose: say where gafkd breaks, keep going
        line = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[-1]}"
        return Check(name, False, line, {"traceback": traceback.format_exc()})


def nvml_indices(count: int) -> list[int | None]:
    """NVML's index of each CUDA device: CUDA_VISIBLE_DEVICES when it lists indices, else the
    same order (the selftest sets CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML's order)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    parts = [part.strip() for part in visible.split(",")]
    return [int(p) if p.isdigit() else None for p in parts[:count]]


def selftest_device(
    device: torch.device, nvml_index: int | None, driver: Any, size: Size, watch: Watch
) -> dict[str, Any]:
    """All checks on one device; a report entry."""
    started = time.perf_counter()
    checks = [
        guarded("device", lambda: check_device(device, driver)),
        guarded("imaging", lambda: check_imaging(device)),
        guarded("train fp32", lambda: check_training(device, size, amp=False)),
        guarded("train amp", lambda: check_training(device, size, amp=True)),
        guarded("health", lambda: check_health(device, nvml_index, watch)),
        guarded("packing", lambda: check_packing(device, nvml_index)),
    ]
    name = checks[0].values.get("name", "CPU")
    return {
        "device": str(device),
        "nvml_index": nvml_index,
        "name": name,
        "ok": all(check.ok is not False for check in checks),
        "seconds": round(time.perf_counter() - started, 1),
        "checks": [asdict(check) for check in checks],
    }


def run_selftest(device: str = "auto", size: Size | None = None) -> dict[str, Any]:
    """The selftest of every visible GPU (``device="auto"``), or of the CPU only; the report."""
    from gafkd.gpu import read_driver

    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # before CUDA starts: NVML order
    cuda = device != "cpu" and torch.cuda.is_available()
    driver = read_driver() if cuda else None
    if cuda:
        indices = nvml_indices(torch.cuda.device_count())
        devices = [(torch.device("cuda", i), n) for i, n in enumerate(indices)]
    else:
        devices = [(torch.device("cpu"), None)]
    chosen = size or (GPU_SIZE if cuda else CPU_SIZE)
    with watching() as watch:
        tested = [selftest_device(d, n, driver, chosen, watch) for d, n in devices]
    report: dict[str, Any] = {
        "ok": all(entry["ok"] for entry in tested),
        "gpu_tested": cuda,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "driver": driver[0] if driver else None,
        "driver_cuda": ".".join(map(str, driver[1])) if driver else None,
        "devices": tested,
    }
    report["verdict"] = verdict(report, device)
    return report
