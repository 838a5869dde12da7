"""The NVML boundary (nvidia-ml-py's ``pynvml``): open a session, sample every GPU, read XIDs.

Every NVML call goes through one object, ``nvml``: the ``pynvml`` module by default (imported
lazily, so gafkd imports without a driver), or a test double with the same function names. It
raises ``nvml.NVMLError`` instances whose ``.value`` is an NVML error code, as pynvml does.

What is sampled per GPU (one `GpuSample`, one line of ``health.jsonl``): temperature and the
board's own slowdown threshold, clock event reasons, memory, utilisation, volatile uncorrected
ECC errors and XID critical-error events. Consumer GeForce boards answer NotSupported for some
of these (ECC, XID events); such a field is None ("N/A"), never an error. What the samples mean
for scheduling is `gafkd.gpu.health`'s business.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from gafkd.rundir import timestamp

# The NVML boundary: the pynvml module or a test double with the same names (see module doc).
Nvml = Any

# NVML constants (stable C ABI values, also pynvml's names)
NVML_TEMPERATURE_GPU = 0
NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_EVENT_TYPE_XID = 0x8  # nvmlEventTypeXidCriticalError
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
# "this board or driver cannot tell": the field is None
UNAVAILABLE = frozenset(
    {NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NO_PERMISSION, NVML_ERROR_FUNCTION_NOT_FOUND}
)
# the GPU itself is gone: the sample records the error and the GPU is unhealthy
FATAL = {NVML_ERROR_GPU_IS_LOST: "GPU is lost", NVML_ERROR_RESET_REQUIRED: "GPU requires reset"}

# Clock event reason bits (nvmlClocksEventReason*)
CLOCK_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one time. None means the board or driver cannot report the field."""

    time: str  # ISO-8601 local time with offset
    gpu: int  # NVML index (PCI bus order)
    name: str
    temperature: int | None  # C
    slowdown_temperature: int | None  # C, the board's own threshold
    utilization: int | None  # percent
    memory_used: int | None  # bytes
    memory_total: int | None  # bytes
    clock_reasons: tuple[str, ...] | None  # set bits of CLOCK_REASONS
    ecc_uncorrected: int | None  # volatile (since driver load); None without ECC
    xid: tuple[int, ...] | None  # XIDs since the previous sample; None when not watched
    error: str | None = None  # a FATAL NVML error: the GPU could not be read


class _Lost(Exception):
    """Raised inside `sample` when NVML answers with a FATAL error for a device."""


def _optional(nvml: Nvml, function: str, *args: Any) -> Any:
    """`nvml.<function>(*args)`, or None when the board, driver or binding cannot tell.

    NotSupported, NoPermission and FunctionNotFound (and a binding without the function) give
    None; a FATAL error raises `_Lost`; any other NVML error propagates.
    """
    call = getattr(nvml, function, None)
    if call is None:
        return None
    try:
        return call(*args)
    except nvml.NVMLError as error:
        code = getattr(error, "value", None)
        if code in FATAL:
            raise _Lost(FATAL[code]) from error
        if code in UNAVAILABLE:
            return None
        raise


def _clock_reasons(nvml: Nvml, handle: Any) -> tuple[str, ...] | None:
    mask = _optional(nvml, "nvmlDeviceGetCurrentClocksEventReasons", handle)
    if mask is None:  # drivers and bindings before the rename only have the old name
        mask = _optional(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", handle)
    if mask is None:
        return None
    return tuple(name for bit, name in CLOCK_REASONS.items() if int(mask) & bit)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


class XidEvents:
    """XID critical-error events of every GPU, registered once and drained without waiting.

    NVML queues events only after registration, so one set lives as long as the NVML session.
    Boards that cannot deliver XID events (not "fully supported", e.g. GeForce) are not watched.
    """

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml
        self.watched: set[int] = set()
        self._set: Any = None
        try:
            self._set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError:
            return
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                nvml.nvmlDeviceRegisterEvents(handle, NVML_EVENT_TYPE_XID, self._set)
            except nvml.NVMLError:
                continue  # NotSupported: the set stays usable for the other GPUs
            self.watched.add(index)

    def drain(self) -> dict[int, list[int]]:
        """XIDs per watched GPU index since the last drain (an empty list when none)."""
        found: dict[int, list[int]] = {index: [] for index in self.watched}
        if self._set is None:
            return found
        for _ in range(1000):  # bounded: an event storm must not stall sampling
            try:
                data = self._nvml.nvmlEventSetWait(self._set, 0)  # 0 ms: never blocks
            except self._nvml.NVMLError:
                break  # Timeout: the queue is empty
            if not data.eventType & NVML_EVENT_TYPE_XID:
                continue
            try:
                index = int(self._nvml.nvmlDeviceGetIndex(data.device))
            except self._nvml.NVMLError:
                continue
            found.setdefault(index, []).append(int(data.eventData))
        return found

    def close(self) -> None:
        if self._set is not None:
            with suppress(self._nvml.NVMLError):
                self._nvml.nvmlEventSetFree(self._set)
            self._set = None


@contextmanager
def nvml_session(nvml: Nvml | None = None) -> Iterator[tuple[Nvml | None, str]]:
    """NVML initialised for the block: yields ``(nvml, "")`` or ``(None, "no NVIDIA GPU: why")``.

    ``nvml`` defaults to the ``pynvml`` module. Without a driver (CI), ``nvmlInit`` raises
    LibraryNotFound or DriverNotLoaded, and the reason names it.
    """
    if nvml is None:
        try:
            import pynvml
        except ImportError as error:
            yield None, f"no NVIDIA GPU: nvidia-ml-py is not installed ({error})"
            return
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as error:
        yield None, f"no NVIDIA GPU: {error} ({type(error).__name__})"
        return
    try:
        yield nvml, ""
    finally:
        with suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def sample(nvml: Nvml, events: XidEvents | None = None) -> list[GpuSample]:
    """One `GpuSample` per GPU from an initialised NVML; XIDs come from `events` when given."""
    now = timestamp()
    xids = events.drain() if events is not None else {}
    count = nvml.nvmlDeviceGetCount()
    return [_sample_one(nvml, index, now, xids.get(index)) for index in range(count)]


def _sample_one(nvml: Nvml, index: int, now: str, xid: list[int] | None) -> GpuSample:
    xid_seen = None if xid is None else tuple(xid)
    name = "unknown"
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        raw_name = _optional(nvml, "nvmlDeviceGetName", handle)
        if raw_name is not None:
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        memory = _optional(nvml, "nvmlDeviceGetMemoryInfo", handle)
        rates = _optional(nvml, "nvmlDeviceGetUtilizationRates", handle)
        return GpuSample(
            time=now,
            gpu=index,
            name=name,
            temperature=_int(
                _optional(nvml, "nvmlDeviceGetTemperature", handle, NVML_TEMPERATURE_GPU)
            ),
            slowdown_temperature=_int(
                _optional(
                    nvml,
                    "nvmlDeviceGetTemperatureThreshold",
                    handle,
                    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
                )
            ),
            utilization=None if rates is None else int(rates.gpu),
            memory_used=None if memory is None else int(memory.used),
            memory_total=None if memory is None else int(memory.total),
            clock_reasons=_clock_reasons(nvml, handle),
            ecc_uncorrected=_int(
                _optional(
                    nvml,
                    "nvmlDeviceGetTotalEccErrors",
                    handle,
                    NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                    NVML_VOLATILE_ECC,
                )
            ),
            xid=xid_seen,
        )
    except nvml.NVMLError as error:
        if getattr(error, "value", None) not in FATAL:
            raise
        lost = FATAL[error.value]
    except _Lost as error:
        lost = str(error)
    return GpuSample(now, index, name, None, None, None, None, None, None, None, xid_seen, lost)


def read_gpus(nvml: Nvml | None = None) -> tuple[list[GpuSample], str]:
    """One sample of every GPU, or ``([], "no NVIDIA GPU: <why>")`` (no driver, as in CI)."""
    with nvml_session(nvml) as (session, reason):
        if session is None:
            return [], reason
        samples = sample(session)
    if not samples:
        return [], "no NVIDIA GPU: NVML sees no devices"
    return samples, ""


def read_driver(nvml: Nvml | None = None) -> tuple[str, tuple[int, int]] | None:
    """The driver's version and the highest CUDA version it runs, e.g. ("535.104.05", (12, 2));
    None without a driver. NVML encodes the CUDA version as 1000 * major + 10 * minor."""
    with nvml_session(nvml) as (session, _reason):
        if session is None:
            return None
        raw = session.nvmlSystemGetDriverVersion()
        cuda = int(session.nvmlSystemGetCudaDriverVersion())
    version = raw.decode() if isinstance(raw, bytes) else str(raw)
    return version, (cuda // 1000, cuda % 1000 // 10)


def gpu_processes(nvml: Nvml) -> list[dict[str, Any]]:
    """Compute processes on every GPU: gpu, pid, user, name and gpu_memory (bytes or None).

    PIDs are host PIDs; user and name are None when the process vanished or is not ours to see.
    """
    import psutil  # type: ignore[import-untyped, unused-ignore]

    rows: list[dict[str, Any]] = []
    for index in range(nvml.nvmlDeviceGetCount()):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            processes = _optional(nvml, "nvmlDeviceGetComputeRunningProcesses", handle) or []
        except (nvml.NVMLError, _Lost):
            continue
        for process in processes:
            user = name = None
            with suppress(psutil.Error):
                owner = psutil.Process(int(process.pid))
                name = owner.name()
                user = owner.username()
            used = getattr(process, "usedGpuMemory", None)
            rows.append(
                {
                    "gpu": index,
                    "pid": int(process.pid),
                    "user": user,
                    "name": name,
                    "gpu_memory": None if used is None else int(used),
                }
            )
    return rows
