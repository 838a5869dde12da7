"""``gafkd selftest``: the device judgement as data, each check's CPU branch, the GPU branches of
health and packing on a fake NVML, the command's JSON and exit status; the whole run on CUDA
under the ``gpu`` marker."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest
import torch
from rich.console import Console

from gafkd import cli
from gafkd.gpu import read_driver
from gafkd.selftest import Check, cuda_mode, judge_device, kernels_for, screen
from gafkd.selftest import checks as selftest
from gafkd.selftest.checks import check_health, watching

GIB = 1024**3
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


@pytest.mark.parametrize(
    ("capability", "arch_list", "kernels"),
    [
        ((8, 6), CU126, "native"),
        ((8, 9), CU126, "native"),  # sm_86 SASS runs on 8.9 (same major, higher minor)
        ((10, 0), CU126, "none"),
        ((6, 1), CU130, "none"),  # no pre-Turing kernels on CUDA 13
        ((12, 1), CU130, "native"),
        ((12, 0), ["sm_90", "compute_90"], "ptx"),
        ((9, 0), ["sm_90a"], "native"),
    ],
)
def test_kernels_for_reads_the_wheels_arch_list(capability, arch_list, kernels) -> None:
    assert kernels_for(capability, arch_list) == kernels


@pytest.mark.parametrize(
    ("driver", "wheel", "kernels", "ok", "why"),
    [
        ((12, 2), (12, 6), "native", True, "native kernels, minor-version compatibility"),
        ((12, 8), (12, 6), "native", True, "native kernels, strict"),
        ((12, 8), (12, 6), "ptx", True, "ptx kernels, strict"),
        ((12, 2), (12, 6), "ptx", False, "minor-version compatibility cannot JIT"),
        (None, (12, 6), "ptx", True, "ptx kernels, unknown"),  # no NVML: the run decides
        ((12, 9), (13, 0), "native", False, "CUDA major is older"),
        ((13, 0), (13, 0), "none", False, "no kernels for this GPU"),
    ],
)
def test_the_device_judgement_refuses_jit_under_minor_version_compatibility(
    driver, wheel, kernels, ok, why
) -> None:
    mode = cuda_mode(driver, wheel) if driver else "unknown (no NVML)"
    passed, text = judge_device(kernels, mode)
    assert passed is ok
    assert why in text


class FakeNvml:
    """NVML with one GPU; `temperature` sets how hot it runs; no XID events (GeForce-like)."""

    NVMLError = pynvml.NVMLError

    def __init__(self, temperature: int = 55) -> None:
        self.temperature = temperature

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return "535.104.05"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12020

    def nvmlEventSetCreate(self) -> Any:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "NVIDIA A100-SXM4-40GB"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=40 * GIB, used=1 * GIB, free=39 * GIB)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return self.temperature

    def nvmlDeviceGetTemperatureThreshold(self, handle: int, threshold: int) -> int:
        return 90

    def nvmlDeviceGetTotalEccErrors(self, handle: int, kind: int, counter: int) -> int:
        return 0


class NoNvml(FakeNvml):
    def nvmlInit(self) -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)


def test_read_driver_gives_the_version_and_the_cuda_it_runs() -> None:
    assert read_driver(FakeNvml()) == ("535.104.05", (12, 2))
    assert read_driver(NoNvml()) is None


def test_health_takes_one_sample_and_judges_it_as_the_runner_does() -> None:
    gpu = torch.device("cuda", 0)  # a device object only: CUDA is not started
    with watching(FakeNvml()) as watch:
        check = check_health(gpu, 0, watch)
    assert check.ok is True
    assert "temperature 55 C of 90 C slowdown" in check.detail
    assert "ECC uncorrected 0; XIDs not watched" in check.detail
    with watching(FakeNvml(temperature=93)) as watch:
        hot = check_health(gpu, 0, watch)
    assert hot.ok is False
    assert "at 93 C, over its 90 C slowdown threshold" in hot.detail


class TwoGpusOneXid(FakeNvml):
    """Two GPUs whose XID events are watched; GPU 1 reports XID 79 once."""

    def __init__(self) -> None:
        super().__init__()
        self.queue = [SimpleNamespace(eventType=0x8, eventData=79, device=1)]

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlEventSetCreate(self) -> str:
        return "events"

    def nvmlDeviceRegisterEvents(self, handle: int, mask: int, events: str) -> None:
        pass

    def nvmlEventSetWait(self, events: str, timeout_ms: int) -> SimpleNamespace:
        if not self.queue:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        return self.queue.pop()

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        return handle

    def nvmlEventSetFree(self, events: str) -> None:
        pass


def test_an_xid_during_the_selftest_fails_its_gpus_health_not_the_first_gpus() -> None:
    with watching(TwoGpusOneXid()) as watch:
        first = check_health(torch.device("cuda", 0), 0, watch)  # drains GPU 1's event too
        second = check_health(torch.device("cuda", 1), 1, watch)
    assert (first.ok, "XIDs none" in first.detail) == (True, True)
    assert second.ok is False
    assert "XIDs [79]: gpu 1: XID 79 (fallen off the bus): needs a reboot" in second.detail


def test_health_says_no_nvml_without_a_driver() -> None:
    with watching(NoNvml()) as watch:
        check = check_health(torch.device("cpu"), None, watch)
    assert (check.ok, check.detail.startswith("no NVML: ")) == (None, True)


def test_nvml_indices_follow_cuda_visible_devices(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert selftest.nvml_indices(2) == [0, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert selftest.nvml_indices(2) == [2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    assert selftest.nvml_indices(1) == [None]


def test_a_check_that_raises_is_a_failed_check_with_its_last_line() -> None:
    def broken() -> Check:
        raise RuntimeError("CUDA error: no kernel image is available\nfor execution")

    check = selftest.guarded("imaging", broken)
    assert (check.ok, check.detail) == (False, "RuntimeError: for execution")
    assert "Traceback" in check.values["traceback"]


def test_selftest_on_the_cpu_says_no_gpu_was_tested_and_passes(capsys) -> None:
    assert cli.main(["selftest", "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["gpu_tested"]) == (True, False)
    assert report["verdict"].startswith("No GPU was tested: --device cpu was asked for")
    (entry,) = report["devices"]
    checks = {check["name"]: check for check in entry["checks"]}
    assert list(checks) == ["device", "imaging", "train fp32", "train amp", "health", "packing"]
    fp32 = checks["train fp32"]["values"]
    assert fp32["dtype"] == "float32"
    assert fp32["losses"][-1] < fp32["losses"][0]
    assert fp32["samples_per_s"] > 0
    assert fp32["peak_bytes"] > 0
    assert checks["train amp"]["ok"] is None
    assert "AMP on CUDA only" in checks["train amp"]["detail"]
    assert checks["packing"]["values"]["runs"] >= 1


def test_a_failed_check_prints_the_report_and_exits_1(capsys, monkeypatch) -> None:
    def off_the_bar(device: torch.device) -> Check:
        return Check("imaging", False, "gasf in torch.float32 on cpu is 1.00e-03 from the CPU")

    monkeypatch.setattr(selftest, "check_imaging", off_the_bar)
    monkeypatch.setattr(selftest, "CPU_SIZE", selftest.Size(train=64, test=32, epochs=2))
    assert cli.main(["selftest", "--device", "cpu", "--frame", "M"]) == 1
    text = capsys.readouterr().out
    assert "  FAIL imaging     gasf in torch.float32" in text
    assert "cpu (CPU) FAILED imaging (skipped: train amp, health)" in text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_selftest_passes_on_every_visible_gpu(capsys) -> None:
    assert cli.main(["selftest", "--json"]) == 0, capsys.readouterr().out
    report = json.loads(capsys.readouterr().out)
    assert report["gpu_tested"] is True
    for entry in report["devices"]:
        checks = {check["name"]: check for check in entry["checks"]}
        assert checks["train amp"]["values"]["dtype"] in ("bfloat16", "float16")
        assert checks["device"]["values"]["kernels"] in ("native", "ptx")


def test_the_selftest_package_and_its_report_import_without_torch() -> None:
    """`invoke doctor --selftest` draws the hosts' reports with `screen`, without torch."""
    code = "import sys, gafkd.selftest, gafkd.selftest.report\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_screen_shows_each_hosts_report_or_error_and_the_doctors_notes() -> None:
    report = {
        "torch": "2.13.0+cu126",
        "torch_cuda": "12.6",
        "driver": "535.104.05",
        "driver_cuda": "12.2",
        "devices": [
            {
                "device": "cuda:0",
                "name": "NVIDIA A100",
                "seconds": 31.0,
                "checks": [{"name": "device", "ok": True, "detail": "native kernels"}],
            }
        ],
        "verdict": "cuda:0 (NVIDIA A100) passed in 31.0 s.",
    }
    console = Console(record=True, width=120)
    reports = {"lab": report, "lab2": "lab2 has no python at /opt/x, the env that runs gafkd"}
    console.print(screen(reports, {"lab": ["agrees: cu126 under minor-version compatibility"]}))
    text = console.export_text()
    assert text.index("lab ") < text.index("ok   device      native kernels") < text.index("lab2")
    assert "doctor: agrees: cu126 under minor-version compatibility" in text
    assert "error: lab2 has no python at /opt/x" in text
