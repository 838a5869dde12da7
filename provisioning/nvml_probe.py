"""NVML probe, uploaded next to nvidia-ml-py's ``pynvml.py`` and run with the host's python3.

Prints one JSON object: ``{"driver": ..., "cuda_driver": 12060, "gpus": [...]}``, or
``{"error": "..."}`` when NVML cannot start (no driver, or a driver/library mismatch).
It imports nothing else from this project and keeps to Python 3.6 syntax (no
``from __future__ import annotations``, no ``dict[...]`` annotations).
"""

import json
import sys
from typing import Any


def optional(call: Any, *args: Any) -> Any:
    """NVML calls that GeForce boards or older drivers may not support give None."""
    import pynvml

    try:
        return call(*args)
    except pynvml.NVMLError:
        return None


def probe() -> Any:
    """Driver, CUDA driver version and GPUs as a JSON-ready dict, or {"error": ...}."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return {"error": f"{type(error).__name__}: {error}"}
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            capability = optional(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
            persistence = optional(pynvml.nvmlDeviceGetPersistenceMode, handle)
            gpus.append(
                {
                    "index": index,
                    "name": pynvml.nvmlDeviceGetName(handle),
                    "memory_total": pynvml.nvmlDeviceGetMemoryInfo(handle).total,
                    "persistence_mode": None if persistence is None else bool(persistence),
                    "compute_capability": None if capability is None else list(capability),
                }
            )
        return {
            "driver": pynvml.nvmlSystemGetDriverVersion(),
            "cuda_driver": pynvml.nvmlSystemGetCudaDriverVersion(),
            "gpus": gpus,
        }
    finally:
        pynvml.nvmlShutdown()


if __name__ == "__main__":
    json.dump(probe(), sys.stdout)
    sys.stdout.write("\n")
