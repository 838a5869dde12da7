"""GPU health: NVML samples, the health rules and the monitor, against an NVML test double.

The double answers with the shapes real boards give: a GeForce RTX 3080 (no ECC, no XID events:
NotSupported) and an H100 (ECC and XID events supported). Its errors are pynvml's own exception
classes, which need no driver. The no-driver path uses the real pynvml (CI has no driver).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import psutil  # type: ignore[import-untyped, unused-ignore]
import pynvml
import pytest

from gafkd.gpu import (
    GpuSample,
    HealthMonitor,
    gpu_processes,
    judge,
    nvml_session,
    read_gpus,
    sample,
)

GIB = 1024**3
HEALTH_FIELDS = {
    "time", "gpu", "name", "temperature", "slowdown_temperature", "utilization", "memory_used",
    "memory_total", "clock_reasons", "ecc_uncorrected", "xid", "healthy", "reason",
}  # fmt: skip


def nvml_error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # pynvml maps the code to NVMLError_NotSupported etc.


@dataclass
class FakeGpu:
    name: str
    temperature: int = 45
    slowdown_temperature: int | None = 90
    memory_total: int = 10 * GIB
    memory_used: int = GIB
    utilization: int = 0
    clock_mask: int = 0x1  # GpuIdle
    ecc_uncorrected: int | None = None  # None: NotSupported (no ECC, as on GeForce)
    xid_events: bool = False  # XID events only on "fully supported" boards
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    lost: bool = False  # NVML answers GPU_IS_LOST


def rtx3080() -> FakeGpu:
    return FakeGpu("NVIDIA GeForce RTX 3080", 52, 97, 10 * GIB, 2 * GIB, 35, clock_mask=0x4)


def h100() -> FakeGpu:
    return FakeGpu("NVIDIA H100 80GB HBM3", 38, 93, 81559 * 1024**2, 4 * GIB, 0, 0x1, 0, True)


class FakeNvml:
    """The pynvml functions gafkd.gpu calls, over a list of FakeGpu."""

    NVMLError = pynvml.NVMLError

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.events: list[tuple[int, int]] = []  # queued (gpu index, XID)
        self.registered: set[int] = set()
        self.initialised = False

    def _gpu(self, handle: int) -> FakeGpu:
        assert self.initialised, "NVML call before nvmlInit"
        gpu = self.gpus[handle]
        if gpu.lost:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise nvml_error(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        return handle

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu(handle).temperature

    def nvmlDeviceGetTemperatureThreshold(self, handle: int, threshold: int) -> int:
        assert threshold == pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        value = self._gpu(handle).slowdown_temperature
        if value is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        return self._gpu(handle).clock_mask

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        gpu = self._gpu(handle)
        free = gpu.memory_total - gpu.memory_used
        return SimpleNamespace(total=gpu.memory_total, free=free, used=gpu.memory_used)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=self._gpu(handle).utilization, memory=0)

    def nvmlDeviceGetTotalEccErrors(self, handle: int, error_type: int, counter: int) -> int:
        assert error_type == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        assert counter == pynvml.NVML_VOLATILE_ECC
        value = self._gpu(handle).ecc_uncorrected
        if value is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        gpu = self._gpu(handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in gpu.processes]

    def nvmlEventSetCreate(self) -> str:
        return "event-set"

    def nvmlDeviceRegisterEvents(self, handle: int, mask: int, event_set: str) -> None:
        assert mask & pynvml.nvmlEventTypeXidCriticalError
        if not self._gpu(handle).xid_events:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self.registered.add(handle)

    def nvmlEventSetWait(self, event_set: str, timeout_ms: int) -> SimpleNamespace:
        assert timeout_ms == 0, "sampling must never block on events"
        while self.events:
            index, xid = self.events.pop(0)
            if index in self.registered:
                kind = pynvml.nvmlEventTypeXidCriticalError
                return SimpleNamespace(device=index, eventType=kind, eventData=xid)
        raise nvml_error(pynvml.NVML_ERROR_TIMEOUT)

    def nvmlEventSetFree(self, event_set: str) -> None:
        pass


class OldDriverNvml(FakeNvml):
    """A binding newer than the driver: only the old ThrottleReasons name works."""

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: int) -> int:
        return self._gpu(handle).clock_mask


class NoClockReasonsNvml(FakeNvml):
    """A board that reports no clock event reasons, under either name."""

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)


def nvml_works() -> bool:
    with nvml_session() as (session, _):
        return session is not None


needs_no_driver = pytest.mark.skipif(nvml_works(), reason="this machine has an NVIDIA driver")


def sampled(nvml: FakeNvml) -> list[GpuSample]:
    with nvml_session(nvml) as (session, reason):
        assert reason == ""
        return sample(session)


def test_geforce_sample_gives_none_for_ecc_and_xid() -> None:
    (point,) = sampled(FakeNvml([rtx3080()]))
    assert point.name == "NVIDIA GeForce RTX 3080"
    assert (point.temperature, point.slowdown_temperature, point.utilization) == (52, 97, 35)
    assert (point.memory_used, point.memory_total) == (2 * GIB, 10 * GIB)
    assert point.clock_reasons == ("sw_power_cap",)
    assert point.ecc_uncorrected is None
    assert point.xid is None
    assert point.error is None


def test_h100_sample_reads_ecc_and_watches_xid() -> None:
    with HealthMonitor(Path(os.devnull), nvml=FakeNvml([h100()]), interval=3600) as monitor:
        (line,) = monitor.poll()
    assert line["ecc_uncorrected"] == 0
    assert line["xid"] == ()
    assert line["memory_total"] == 81559 * 1024**2
    assert line["healthy"] is True


def test_missing_threshold_and_clock_reasons_are_none_not_errors() -> None:
    gpu = FakeGpu("NVIDIA GeForce GTX 1080", slowdown_temperature=None)
    (point,) = sampled(NoClockReasonsNvml([gpu]))
    assert point.slowdown_temperature is None
    assert point.clock_reasons is None
    assert judge([point] * 5) == (True, "")


def test_old_driver_clock_reasons_come_from_the_throttle_name() -> None:
    gpu = FakeGpu("Tesla V100-SXM2-16GB", clock_mask=0x20 | 0x40 | 0x4)
    (point,) = sampled(OldDriverNvml([gpu]))
    assert point.clock_reasons == ("sw_power_cap", "sw_thermal_slowdown", "hw_thermal_slowdown")


def test_xid_79_makes_the_gpu_unhealthy_for_the_rest_of_the_batch(tmp_path: Path) -> None:
    nvml = FakeNvml([h100(), h100()])
    monitor = HealthMonitor(tmp_path / "health.jsonl", nvml=nvml)
    monitor.poll()
    nvml.events.append((1, 79))
    monitor.poll()
    for _ in range(5):  # no new events: the verdict stays
        monitor.poll()
    monitor.stop()
    assert monitor.healthy(0) == (True, "")
    assert monitor.healthy(1) == (False, "gpu 1: XID 79 (fallen off the bus): needs a reboot")


def test_xid_that_needs_no_reset_keeps_the_gpu_healthy(tmp_path: Path) -> None:
    nvml = FakeNvml([h100()])
    nvml.events.append((0, 13))  # graphics engine exception: the app's problem
    monitor = HealthMonitor(tmp_path / "health.jsonl", nvml=nvml)
    (line,) = monitor.poll()
    monitor.stop()
    assert line["xid"] == (13,)
    assert monitor.healthy(0) == (True, "")


def test_gpu_over_its_slowdown_threshold_for_three_samples_is_unhealthy(tmp_path: Path) -> None:
    hot = FakeGpu("NVIDIA GeForce RTX 3090", temperature=91, slowdown_temperature=90)
    monitor = HealthMonitor(tmp_path / "health.jsonl", nvml=FakeNvml([h100(), hot]))
    verdicts = [monitor.poll()[1]["healthy"] for _ in range(3)]
    monitor.stop()
    assert verdicts == [True, True, False]
    assert monitor.healthy(1) == (
        False,
        "gpu 1: at 91 C, over its 90 C slowdown threshold for 3 samples",
    )
    assert monitor.healthy(0) == (True, "")


def test_thermal_slowdown_clock_reason_counts_as_hot_below_the_threshold() -> None:
    throttled = GpuSample("t", 0, "GPU", 84, 97, 100, 1, 2, ("hw_thermal_slowdown",), None, None)
    healthy, reason = judge([throttled] * 3)
    assert not healthy
    assert reason == "gpu 0: clocks slowed by hw_thermal_slowdown at 84 C for 3 samples"


def test_thermal_recovery_takes_three_good_samples(tmp_path: Path) -> None:
    gpu = FakeGpu("NVIDIA GeForce RTX 3080", temperature=98, slowdown_temperature=97)
    monitor = HealthMonitor(tmp_path / "health.jsonl", nvml=FakeNvml([gpu]))
    for _ in range(4):
        monitor.poll()
    gpu.temperature = 70
    cooling = [monitor.poll()[0] for _ in range(3)]
    monitor.stop()
    assert [line["healthy"] for line in cooling] == [False, False, True]
    assert cooling[0]["reason"].endswith("; cooling, 1 of 3 good samples")


def test_a_lost_gpu_is_recorded_and_unhealthy() -> None:
    gpu = h100()
    nvml = FakeNvml([gpu])
    gpu.lost = True
    (point,) = sampled(nvml)
    assert point.error == "GPU is lost"
    assert point.temperature is None
    assert judge([point]) == (False, "gpu 0: NVML says GPU is lost: needs a reset or reboot")


def test_poll_appends_one_line_per_gpu_with_the_spec_fields(tmp_path: Path) -> None:
    log = tmp_path / "batch" / "health.jsonl"
    monitor = HealthMonitor(log, nvml=FakeNvml([rtx3080(), h100()]))
    monitor.poll()
    monitor.poll()
    monitor.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["gpu"] for line in lines] == [0, 1, 0, 1]
    assert all(set(line) == HEALTH_FIELDS | {"error"} for line in lines)
    assert lines[0]["clock_reasons"] == ["sw_power_cap"]
    assert lines[1]["xid"] == []


def test_snapshot_is_shaped_like_state_json_gpus(tmp_path: Path) -> None:
    nvml = FakeNvml([rtx3080(), h100()])
    nvml.events.append((1, 48))
    with HealthMonitor(tmp_path / "health.jsonl", nvml=nvml, interval=3600) as monitor:
        snapshot = monitor.snapshot()
    assert snapshot == {
        "0": {"healthy": True, "reason": ""},
        "1": {"healthy": False, "reason": "gpu 1: XID 48 (double-bit ECC error): needs a reset"},
    }
    assert not nvml.initialised  # stop() shut NVML down


def test_start_samples_at_once_and_stop_ends_the_thread(tmp_path: Path) -> None:
    log = tmp_path / "health.jsonl"
    monitor = HealthMonitor(log, nvml=FakeNvml([h100()]), interval=3600).start()
    assert len(log.read_text().splitlines()) == 1
    monitor.stop()
    monitor.stop()


def test_gpu_processes_name_their_owner_and_tolerate_vanished_pids() -> None:
    gone = max(psutil.pids()) + 100_000
    gpu = FakeGpu("NVIDIA H100 80GB HBM3", processes=[(os.getpid(), 3 * GIB), (gone, None)])
    nvml = FakeNvml([rtx3080(), gpu])
    with nvml_session(nvml) as (session, _):
        rows = gpu_processes(session)
    me = psutil.Process()
    mine = {"user": me.username(), "name": me.name(), "gpu_memory": 3 * GIB}
    assert rows == [
        {"gpu": 1, "pid": os.getpid(), **mine},
        {"gpu": 1, "pid": gone, "user": None, "name": None, "gpu_memory": None},
    ]


def test_init_failure_of_the_double_gives_the_no_gpu_reason() -> None:
    samples, reason = read_gpus(FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert samples == []
    assert reason == "no NVIDIA GPU: Driver Not Loaded (NVMLError_DriverNotLoaded)"


@needs_no_driver
def test_read_gpus_without_a_driver_says_there_is_no_nvidia_gpu() -> None:
    samples, reason = read_gpus()
    assert samples == []
    assert reason.startswith("no NVIDIA GPU: ")
    assert "NVMLError_" in reason


@needs_no_driver
def test_monitor_without_a_driver_writes_nothing_and_blocks_no_gpu(tmp_path: Path) -> None:
    monitor = HealthMonitor(tmp_path / "health.jsonl").start()
    monitor.stop()
    assert monitor.reason.startswith("no NVIDIA GPU: ")
    assert monitor.snapshot() == {}
    assert monitor.healthy(0) == (True, "")
    assert not (tmp_path / "health.jsonl").exists()


def test_judge_rejects_a_window_below_one_sample() -> None:
    with pytest.raises(ValueError, match="slowdown_samples is 0"):
        judge([], slowdown_samples=0)
