"""The GPU layer: the NVML boundary and the health monitor, without torch.

`nvml` opens an NVML session, samples every GPU and reads the driver (``GpuSample``,
``read_gpus``, ``sample``, ``gpu_processes``, ``read_driver``); `health` judges the samples
(``judge``) and, during a batch, appends them to
``health.jsonl`` (``HealthMonitor``); `healthlog` reads that log back for the status screens
(``health_log``, and ``last_lines`` for the end of any JSON-lines file). ``gafkd status``,
``launch`` and the runner import this package, so it imports neither torch nor anything heavy.
"""

from __future__ import annotations

from gafkd.gpu.health import (
    DRAIN_XIDS,
    HISTORY,
    SLOWDOWN_SAMPLES,
    THERMAL_REASONS,
    XIDS,
    HealthMonitor,
    judge,
)
from gafkd.gpu.healthlog import TAIL_BYTES, health_log, last_lines
from gafkd.gpu.nvml import (
    CLOCK_REASONS,
    GpuSample,
    Nvml,
    XidEvents,
    gpu_processes,
    nvml_session,
    read_driver,
    read_gpus,
    sample,
)

__all__ = [
    "CLOCK_REASONS",
    "DRAIN_XIDS",
    "HISTORY",
    "SLOWDOWN_SAMPLES",
    "TAIL_BYTES",
    "THERMAL_REASONS",
    "XIDS",
    "GpuSample",
    "HealthMonitor",
    "Nvml",
    "XidEvents",
    "gpu_processes",
    "health_log",
    "judge",
    "last_lines",
    "nvml_session",
    "read_driver",
    "read_gpus",
    "sample",
]
