"""GPU health: judge NVML samples and monitor the GPUs during a batch.

The samples come from `gafkd.gpu.nvml` (the NVML boundary); `gafkd.gpu` exports both.
A GPU is unhealthy (`judge`) when it reported an XID whose action is a reset or a reboot (it
stays unhealthy for the rest of the batch), when NVML says the GPU is lost, or when it sat at or
over its slowdown temperature, or had a thermal slowdown clock reason, for `SLOWDOWN_SAMPLES`
samples in a row (it recovers after as many good samples).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gafkd.gpu.nvml import GpuSample, Nvml, XidEvents, nvml_session, sample
from gafkd.rundir import timestamp

__all__ = [
    "DRAIN_XIDS",
    "HISTORY",
    "SLOWDOWN_SAMPLES",
    "THERMAL_REASONS",
    "XIDS",
    "HealthMonitor",
    "judge",
]

SLOWDOWN_SAMPLES = 3  # consecutive hot samples before a GPU counts as unhealthy (and to recover)
HISTORY = 64  # recent samples kept per GPU by HealthMonitor; must stay well above SLOWDOWN_SAMPLES
# clock event reasons (names from gafkd.gpu.nvml.CLOCK_REASONS) that mean thermal throttling
THERMAL_REASONS = frozenset({"sw_thermal_slowdown", "hw_thermal_slowdown"})

# XID code -> (name, action), from NVIDIA's XID catalog. DRAIN_XIDS get no new runs.
XIDS = {
    13: ("graphics engine exception", "restart the app"),
    31: ("GPU memory page fault", "restart the app"),
    43: ("GPU stopped processing", "none, the GPU is fine"),
    48: ("double-bit ECC error", "needs a reset"),
    62: ("internal micro-controller halt", "needs a reset"),
    63: ("ECC page retirement or row remap recorded", "reset when convenient"),
    64: ("ECC page retirement or row remap failure", "needs a reset; RMA candidate"),
    74: ("NVLink error", "needs a reset or reboot"),
    79: ("fallen off the bus", "needs a reboot"),
    92: ("high single-bit ECC error rate", "monitor"),
    94: ("contained ECC error", "restart the app"),
    95: ("uncontained ECC error", "needs a reset"),
    119: ("GSP RPC timeout", "needs a reset"),
    120: ("GSP error", "needs a reset"),
    140: ("unrecoverable ECC error escape", "needs a reset"),
    154: ("GPU recovery action changed", "see the kernel log (dmesg) for the action"),
}
DRAIN_XIDS = frozenset({48, 62, 64, 74, 79, 95, 119, 120, 140})


def _fatal_reasons(history: Sequence[GpuSample]) -> list[str]:
    reasons: list[str] = []
    for point in history:
        found = []
        if point.error:
            found.append(f"gpu {point.gpu}: NVML says {point.error}: needs a reset or reboot")
        for code in point.xid or ():
            if code in DRAIN_XIDS:
                name, action = XIDS[code]
                found.append(f"gpu {point.gpu}: XID {code} ({name}): {action}")
        reasons.extend(reason for reason in found if reason not in reasons)
    return reasons


def _hot(point: GpuSample) -> str:
    """Why this sample is thermally throttled, or "" when it is not."""
    limit, temperature = point.slowdown_temperature, point.temperature
    if limit is not None and temperature is not None and temperature >= limit:
        return f"at {temperature} C, over its {limit} C slowdown threshold"
    reasons = [reason for reason in point.clock_reasons or () if reason in THERMAL_REASONS]
    if reasons:
        at = "" if temperature is None else f" at {temperature} C"
        return f"clocks slowed by {', '.join(reasons)}{at}"
    return ""


def judge(
    history: Sequence[GpuSample], slowdown_samples: int = SLOWDOWN_SAMPLES
) -> tuple[bool, str]:
    """Whether one GPU may take new runs, and why not, from its samples (oldest first).

    Unhealthy for good after an XID in `DRAIN_XIDS` or a lost GPU anywhere in `history`;
    unhealthy while hot (at or over the slowdown threshold, or a thermal slowdown clock
    reason) for `slowdown_samples` samples in a row, until as many good samples follow.

    >>> hot = GpuSample("t", 1, "GPU", 91, 90, 100, 0, 1, (), None, ())
    >>> judge([hot] * 3)
    (False, 'gpu 1: at 91 C, over its 90 C slowdown threshold for 3 samples')
    >>> judge([hot] * 2)
    (True, '')
    """
    if slowdown_samples < 1:
        raise ValueError(f"slowdown_samples is {slowdown_samples}; expected 1 or more")
    fatal = _fatal_reasons(history)
    if fatal:
        return False, "; ".join(fatal)
    throttled, hot_run, good_run, why = False, 0, 0, ""
    for point in history:
        now_hot = _hot(point)
        if now_hot:
            hot_run = 1 if good_run else hot_run + 1  # a new streak after good samples
            good_run, why = 0, now_hot
        else:
            good_run += 1
        if hot_run >= slowdown_samples and not good_run:
            throttled = True
        if good_run >= slowdown_samples:
            throttled, hot_run = False, 0
    if not throttled:
        return True, ""
    reason = f"gpu {history[-1].gpu}: {why} for {_samples(hot_run)}"
    if good_run:
        reason += f"; cooling, {good_run} of {slowdown_samples} good samples"
    return False, reason


def _samples(count: int) -> str:
    return f"{count} sample" if count == 1 else f"{count} samples"


class HealthMonitor:
    """The runner's GPU health: samples every `interval` seconds and appends ``health.jsonl``.

    `start` takes a first sample at once, then samples in a daemon thread; `poll` takes one
    sample synchronously (tests). `healthy(gpu)` is the scheduler's question. Without NVML,
    `reason` says ``"no NVIDIA GPU: ..."`` and every GPU index answers healthy (none is seen).
    """

    def __init__(
        self,
        log_path: Path,
        nvml: Nvml | None = None,
        interval: float = 10.0,
        slowdown_samples: int = SLOWDOWN_SAMPLES,
    ) -> None:
        self.log_path = Path(log_path)
        self.interval = interval
        self.slowdown_samples = slowdown_samples
        self.reason = ""  # why there is no GPU to watch, once NVML was tried
        self._given = nvml
        self._session: ExitStack | None = None
        self._nvml: Nvml | None = None
        self._events: XidEvents | None = None
        self._recent: dict[int, deque[GpuSample]] = {}
        self._fatal: dict[int, GpuSample] = {}  # first sample with a drain XID: sticky
        self._verdicts: dict[int, tuple[bool, str]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _open(self) -> None:
        if self._session is not None:
            return
        self._session = ExitStack()
        nvml, self.reason = self._session.enter_context(nvml_session(self._given))
        if nvml is None:
            return
        if nvml.nvmlDeviceGetCount() == 0:
            self.reason = "no NVIDIA GPU: NVML sees no devices"
        self._nvml = nvml
        self._events = XidEvents(nvml)

    def poll(self) -> list[dict[str, Any]]:
        """Sample every GPU once, judge it, append and return the health.jsonl lines."""
        with self._lock:
            self._open()
            if self._nvml is None:
                return []
            try:
                samples = sample(self._nvml, self._events)
            except self._nvml.NVMLError as error:
                failed = [{"time": timestamp(), "error": f"NVML: {error} ({type(error).__name__})"}]
                self._append(failed)
                return failed
            lines: list[dict[str, Any]] = []
            for point in samples:
                recent = self._recent.setdefault(point.gpu, deque(maxlen=HISTORY))
                recent.append(point)
                if point.gpu not in self._fatal and _fatal_reasons([point]):
                    self._fatal[point.gpu] = point
                history = [self._fatal[point.gpu], *recent] if point.gpu in self._fatal else recent
                healthy, reason = judge(history, self.slowdown_samples)
                self._verdicts[point.gpu] = (healthy, reason)
                lines.append({**asdict(point), "healthy": healthy, "reason": reason})
            self._append(lines)
            return lines

    def _append(self, lines: list[dict[str, Any]]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as handle:
            handle.writelines(json.dumps(line) + "\n" for line in lines)

    def start(self) -> HealthMonitor:
        """First sample now, then one every `interval` seconds in a daemon thread."""
        self.poll()
        if self._nvml is not None and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="gafkd-health", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            self.poll()

    def healthy(self, gpu_index: int) -> tuple[bool, str]:
        """(may this GPU take new runs, why not); a GPU never sampled counts as healthy."""
        with self._lock:
            return self._verdicts.get(gpu_index, (True, ""))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{"0": {"healthy": true, "reason": ""}}``: state.json's "gpus"."""
        with self._lock:
            return {
                str(gpu): {"healthy": healthy, "reason": reason}
                for gpu, (healthy, reason) in sorted(self._verdicts.items())
            }

    def stop(self) -> None:
        """Stop sampling and release NVML; safe to call twice."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._events is not None:
                self._events.close()
                self._events = None
            if self._session is not None:
                self._session.close()
            self._nvml = None

    def __enter__(self) -> HealthMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
