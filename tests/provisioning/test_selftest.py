"""``invoke doctor --selftest``'s provisioning side: the report read back through the remote
script (here on this machine, as the host ``local``), and the selftest's GPUs held against
`gpu.wheel_fit` as data. The ssh run against the real test host is in tests/test_remote.py."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from provisioning.core import ProvisionError
from provisioning.hosts import Host, LocalConnection
from provisioning.selftest import agreement, read_selftest, selftest_failed


def report(
    torch: str, driver: str, driver_cuda: str, *devices: tuple[str, str, str, bool]
) -> dict[str, Any]:
    """A selftest report: each device as (capability, kernels, cuda_mode, device check ok)."""
    entries = [
        {
            "device": f"cuda:{index}",
            "checks": [
                {
                    "name": "device",
                    "ok": ok,
                    "values": {
                        "name": f"GPU{index}",
                        "capability": capability,
                        "kernels": kernels,
                        "cuda_mode": mode,
                        "memory_total": 40 << 30,
                    },
                }
            ],
        }
        for index, (capability, kernels, mode, ok) in enumerate(devices)
    ]
    cuda = torch.split("+cu")[1]
    return {
        "ok": all(device[3] for device in devices),
        "gpu_tested": True,
        "torch": torch,
        "torch_cuda": f"{cuda[:-1]}.{cuda[-1]}",
        "driver": driver,
        "driver_cuda": driver_cuda,
        "devices": entries,
    }


MVC = "minor-version compatibility"


@pytest.mark.parametrize(
    ("found", "says"),
    [
        (report("2.13.0+cu126", "535.104.05", "12.2", ("8.0", "native", MVC, True)),
         f"agrees: torch 2.13.0+cu126 (cu126) on driver 535.104.05 runs {MVC}"),
        (report("2.13.0+cu126", "560.35.03", "12.6", ("8.6", "native", "strict", True)),
         "agrees: torch 2.13.0+cu126 (cu126) on driver 560.35.03 runs strict"),
        (report("2.13.0+cu126", "535.104.05", "12.2", ("10.0", "none", MVC, False)),
         "agrees: torch 2.13.0+cu126 (cu126) on driver 535.104.05 does not run here"),
        (report("2.13.0+cu126", "535.104.05", "12.2", ("8.0", "native", MVC, False)),
         "DISAGREES: doctor accepts torch 2.13.0+cu126"),
        (report("2.13.0+cu126", "535.104.05", "12.2", ("10.0", "none", MVC, True)),
         "DISAGREES: doctor refuses torch 2.13.0+cu126"),
        (report("2.13.0+cu126", "535.104.05", "12.2", ("8.0", "ptx", MVC, True)),
         "DISAGREES: provisioning's kernel table (gpu.WHEEL_SASS) says"),
        (report("2.13.0+cu126", "560.35.03", "12.6", ("8.6", "native", MVC, True)),
         f"DISAGREES: doctor runs torch 2.13.0+cu126 (cu126) on driver 560.35.03 strict, the "
         f"selftest found {MVC}"),
        ({"gpu_tested": False}, "no GPU was tested, so there is nothing to hold against"),
    ],
)  # fmt: skip
def test_the_selftests_gpus_are_held_against_the_wheel_verdict(found, says) -> None:
    assert any(line.startswith(says) for line in agreement(found)), agreement(found)


def test_a_failed_or_disagreeing_or_missing_report_fails_doctor() -> None:
    good = report("2.13.0+cu126", "560.35.03", "12.6", ("8.6", "native", "strict", True))
    bad = {**good, "ok": False, "verdict": "cuda:0 FAILED train amp."}
    reports = {"lab": good, "lab2": bad, "lab3": "lab3 has no python at /x"}
    notes = {"lab": ["DISAGREES: something"], "lab2": ["agrees: fine"]}
    assert selftest_failed(reports, notes) == [
        "lab: DISAGREES: something",
        "lab2: the selftest failed: cuda:0 FAILED train amp.",
        "lab3: lab3 has no python at /x",
    ]


def test_the_report_comes_back_through_the_remote_script(tmp_path: Path) -> None:
    host = Host("local", lab_dir=str(tmp_path), python=sys.executable)
    found = read_selftest(LocalConnection(), host)
    assert found["gpu_tested"] is False  # this machine has no GPU
    assert found["verdict"].startswith("No GPU was tested: torch sees no CUDA GPU")
    assert agreement(found) == [
        "no GPU was tested, so there is nothing to hold against the driver verdict"
    ]


def test_an_env_without_gafkd_says_how_to_install_it(tmp_path: Path) -> None:
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        pytest.skip("no /usr/bin/python3 without gafkd to run")
    host = Host("local", lab_dir=str(tmp_path), python=python)
    with pytest.raises(
        ProvisionError, match=r"^the env on local \(/usr/bin/python3\) has no gafkd"
    ):
        read_selftest(LocalConnection(), host)
