"""GPU stack check: parsers on recorded outputs, the verdict, and the read-only step."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning import gpu, nvml_probe
from provisioning.core import ProvisionError, SkipStep, plan
from provisioning.gpu import Gpu, Probe, TorchBuild
from provisioning.hosts import Host

ROOT = Path(__file__).resolve().parents[2]
LAB = Host("lab")
RTX3080 = Probe(
    "560.35.03", (12, 6), (Gpu(0, "NVIDIA GeForce RTX 3080", 10737418240, False, (8, 6)),)
)
CU121 = TorchBuild("2.3.0+cu121", (12, 1), 8902)


# --- parse_* -------------------------------------------------------------------------------------


def test_parse_probe_reads_a_geforce_rtx_3080(recorded) -> None:
    assert gpu.parse_probe(recorded("nvml-probe", "rtx3080")) == RTX3080


def test_parse_probe_reads_a_data_centre_h100_pair(recorded) -> None:
    probe = gpu.parse_probe(recorded("nvml-probe", "h100"))
    assert (probe.driver, probe.cuda_driver, len(probe.gpus)) == ("570.124.06", (12, 8), 2)
    assert probe.gpus[1] == Gpu(1, "NVIDIA H100 80GB HBM3", 85520809984, True, (9, 0))


@pytest.mark.parametrize(
    ("case", "message"),
    [("no-driver", "no NVIDIA driver is loaded"), ("version-mismatch", "reboot")],
)
def test_parse_probe_turns_nvml_errors_into_a_remedy(recorded, case, message) -> None:
    with pytest.raises(ProvisionError, match=message):
        gpu.parse_probe(recorded("nvml-probe", case))


def test_parse_probe_refuses_output_that_is_not_json() -> None:
    with pytest.raises(ProvisionError, match="printed no JSON"):
        gpu.parse_probe("Traceback (most recent call last):\n")


def test_the_probe_script_runs_beside_pynvml_with_a_bare_python(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("pynvml")
    assert spec is not None
    assert spec.origin is not None
    shutil.copy(spec.origin, tmp_path / "pynvml.py")
    shutil.copy(nvml_probe.__file__, tmp_path / "nvml_probe.py")
    out = subprocess.run(
        [sys.executable, "-E", "-s", str(tmp_path / "nvml_probe.py")],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    if '"error"' in out.stdout:  # no GPU here: {"error": ...}; on a GPU machine: a full probe
        with pytest.raises(ProvisionError, match="no NVIDIA driver is loaded"):
            gpu.parse_probe(out.stdout)
    else:
        assert gpu.parse_probe(out.stdout).driver


@pytest.mark.parametrize(("case", "version"), [("v9", "9.1.0"), ("v8", "8.9.7")])
def test_parse_cudnn_header(recorded, case, version) -> None:
    assert gpu.parse_cudnn_header(recorded("cudnn-header", case)) == version


def test_parse_cudnn_header_refuses_a_header_without_version_defines() -> None:
    with pytest.raises(ProvisionError, match="no CUDNN_MAJOR"):
        gpu.parse_cudnn_header("#define CUDNN_H_\n")


@pytest.mark.parametrize(
    ("number", "version"), [(90100, "9.1.0"), (91002, "9.10.2"), (8902, "8.9.2"), (92000, "9.20.0")]
)
def test_parse_cudnn_number_uses_the_scheme_of_its_major(number, version) -> None:
    assert gpu.parse_cudnn_number(number) == version


def test_parse_nvcc(recorded) -> None:
    assert gpu.parse_nvcc(recorded("nvcc", "11.8")) == (11, 8)
    with pytest.raises(ProvisionError, match="no release"):
        gpu.parse_nvcc("bash: nvcc: command not found\n")


@pytest.mark.parametrize(
    ("case", "build"),
    [
        ("cu121", CU121),
        ("cu130", TorchBuild("2.13.0", (13, 0), 92000)),
        ("cpu", TorchBuild("2.13.0+cpu", None, None)),
    ],
)
def test_parse_torch(recorded, case, build) -> None:
    assert gpu.parse_torch(recorded("torch", case)) == build


def test_parse_torch_refuses_a_traceback() -> None:
    with pytest.raises(ProvisionError, match="expected 3 fields"):
        gpu.parse_torch("ModuleNotFoundError: No module named 'torch'\n")


def test_parse_recommended_driver(recorded) -> None:
    devices = recorded("ubuntu-drivers-devices", "rtx3080")
    assert gpu.parse_recommended_driver(devices) == "nvidia-driver-570"
    other = recorded("ubuntu-drivers-devices", "no-recommendation")
    assert gpu.parse_recommended_driver(other) is None


@pytest.mark.parametrize(
    ("pip_lines", "pin"),
    [
        ("      - torch==2.13.0\n", ("2.13.0", (13, 0))),  # PyPI's default variant
        ("      - torch==2.3.0+cu121\n", ("2.3.0", (12, 1))),
        ("      - --index-url https://download.pytorch.org/whl/cu126\n      - torch==2.13.0\n",
         ("2.13.0", (12, 6))),
        ("      - torch==2.10.0\n", ("2.10.0", None)),  # variant not known here
        ("      - numpy\n", None),
    ],
)  # fmt: skip
def test_parse_env_torch(pip_lines, pin) -> None:
    text = f"name: gafkd\ndependencies:\n  - pip\n  - pip:\n{pip_lines}"
    assert gpu.parse_env_torch(text) == pin


def test_the_project_env_pins_a_cuda_13_wheel() -> None:
    assert gpu.read_env_pins(ROOT / "envs") == {"gafkd": ("2.13.0", (13, 0))}


# --- the verdict ---------------------------------------------------------------------------------


def test_driver_560_runs_torch_cu121_whatever_the_system_toolkit() -> None:
    text = gpu.explain(
        RTX3080, [("/opt/conda/envs/gafkd/bin/python", CU121)], {}, LAB, toolkit=(11, 8)
    )
    assert "1 x NVIDIA GeForce RTX 3080 on driver 560.35.03, which runs CUDA <= 12.6." in text
    assert "bundles CUDA 12.1, so only the driver matters, and it is new enough" in text
    assert "cuDNN 8.9.2" in text
    assert "The system CUDA 11.8 toolkit only matter" in text
    assert "\n" not in text


def test_driver_560_refuses_the_cuda_13_wheel_with_found_required_and_remedy() -> None:
    with pytest.raises(ProvisionError) as error:
        gpu.explain(RTX3080, [], {"gafkd": ("2.13.0", (13, 0))}, LAB)
    message = str(error.value)
    assert "driver 560.35.03 runs CUDA <= 12.6" in message
    assert "needs driver >= 580.65.06" in message
    assert "https://download.pytorch.org/whl/cu126" in message


def test_a_newer_minor_wheel_runs_under_minor_version_compatibility() -> None:
    text = gpu.explain(RTX3080, [], {"gafkd": ("2.9.0", (12, 8))}, LAB)
    assert "minor-version compatibility" in text
    assert "driver >= 570.26 is the safe target" in text


def test_h100_on_driver_570_runs_cu128(recorded) -> None:
    probe = gpu.parse_probe(recorded("nvml-probe", "h100"))
    text = gpu.explain(probe, [], {"gafkd": ("2.9.0", (12, 8))}, Host("dgx", expected_gpus=2))
    assert text.startswith("2 x NVIDIA H100 80GB HBM3 on driver 570.124.06")
    assert "Persistence mode" not in text


def test_a_missing_gpu_is_reported_against_the_expected_count() -> None:
    with pytest.raises(ProvisionError, match=r"NVML sees 1 GPUs, invoke\.yaml expects 2"):
        gpu.explain(RTX3080, [], {}, Host("lab", expected_gpus=2))


def test_cuda_13_wheels_refuse_pre_turing_gpus() -> None:
    pascal = Probe(
        "580.95.05", (13, 0), (Gpu(0, "NVIDIA GeForce GTX 1080", 8 << 30, False, (6, 1)),)
    )
    with pytest.raises(ProvisionError, match=r"compute capability >= 7\.5"):
        gpu.explain(pascal, [], {"gafkd": ("2.13.0", (13, 0))}, LAB)


def test_a_different_recommended_driver_is_shown_with_its_risks() -> None:
    text = gpu.explain(RTX3080, [], {}, LAB, recommended="nvidia-driver-570")
    assert "ubuntu-drivers recommends nvidia-driver-570; the installed 560 branch is kept" in text
    assert "stops running GPU jobs" in text
    assert "recommends" not in gpu.explain(RTX3080, [], {}, LAB, recommended="nvidia-driver-560")


# --- the step on a fake host ----------------------------------------------------------------------


def lab_host_replies(recorded, probe: str = "rtx3080") -> dict[str, tuple[str, int]]:
    python = "/opt/conda/envs/gafkd/bin/python"
    return {
        "ubuntu-drivers devices": (recorded("ubuntu-drivers-devices", "rtx3080"), 0),
        "python3 -E -s /tmp/tmp.fake1/nvml_probe.py": (recorded("nvml-probe", probe), 0),
        shlex.join([python, "-c", gpu.TORCH_QUERY]): (recorded("torch", "cu121"), 0),
        "getent passwd alice": (recorded("getent-passwd", "alice"), 0),
        "/usr/local/cuda/bin/nvcc --version": (recorded("nvcc", "11.8"), 0),
        "/sbin/ldconfig -p": (recorded("ldconfig", "none"), 0),
    }


def test_check_compat_plans_nothing_and_explains_the_lab_server(
    fake, recorded, monkeypatch
) -> None:
    monkeypatch.setattr(gpu, "ENVS_DIR", ROOT / "tests" / "missing-envs")  # no env files at all
    connection = fake(lab_host_replies(recorded), paths={"/opt/conda/envs/gafkd/bin/python"})
    commands, reason = plan(gpu.check_compat, connection, Host("lab", users=("alice",)))
    assert commands == []
    assert reason.startswith("1 x NVIDIA GeForce RTX 3080 on driver 560.35.03")
    assert "torch" not in reason  # no env file names an env to look at
    assert [remote for _, remote in connection.puts] == [
        "/tmp/tmp.fake1/pynvml.py",
        "/tmp/tmp.fake1/nvml_probe.py",
    ]
    assert "rm -rf -- /tmp/tmp.fake1" in connection.ran
    assert not [c for c in connection.ran if c.startswith("sudo")]


def test_check_compat_reads_the_installed_torch_of_each_env(fake, recorded, monkeypatch, tmp_path):
    (tmp_path / "gafkd.yml").write_text(
        "name: gafkd\ndependencies:\n  - pip:\n    - torch==2.3.0+cu121\n"
    )
    monkeypatch.setattr(gpu, "ENVS_DIR", tmp_path)
    connection = fake(lab_host_replies(recorded), paths={"/opt/conda/envs/gafkd/bin/python"})
    _, reason = plan(gpu.check_compat, connection, Host("lab", users=("alice",)))
    assert "torch 2.3.0+cu121 in /opt/conda/envs/gafkd/bin/python and cuDNN 8.9.2" in reason
    assert "test -x /home/alice/.conda/envs/gafkd/bin/python" in connection.ran


def test_check_compat_without_a_driver_names_the_recommendation(fake, recorded) -> None:
    connection = fake(lab_host_replies(recorded, probe="no-driver"))
    with pytest.raises(ProvisionError) as error:
        plan(gpu.check_compat, connection, Host("lab", expected_gpus=1))
    assert "ubuntu-drivers recommends nvidia-driver-570" in str(error.value)
    assert "never installs drivers" in str(error.value)


def test_check_compat_skips_a_host_without_a_driver_that_expects_no_gpu(fake, recorded) -> None:
    connection = fake(lab_host_replies(recorded, probe="no-driver"))
    with pytest.raises(SkipStep, match=r"^no NVIDIA driver on the host \(NVML missing; "):
        plan(gpu.check_compat, connection, LAB)


def test_a_driver_mismatch_fails_even_when_no_gpu_is_expected(fake, recorded) -> None:
    connection = fake(lab_host_replies(recorded, probe="version-mismatch"))
    with pytest.raises(ProvisionError, match="reboot"):
        plan(gpu.check_compat, connection, LAB)


def test_a_prefix_with_metacharacters_reaches_the_host_as_one_argument(fake, recorded, tmp_path):
    prefix = "/opt/x; rm -rf /"
    (tmp_path / "gafkd.yml").write_text("name: gafkd\n")
    connection = fake(lab_host_replies(recorded))
    gpu.read_torch(connection, f"{prefix}/envs/gafkd/bin/python")
    assert shlex.split(connection.ran[-1]) == ["test", "-x", f"{prefix}/envs/gafkd/bin/python"]


def test_the_lab_driver_cannot_run_the_projects_pinned_torch(fake, recorded) -> None:
    connection = fake(lab_host_replies(recorded))  # envs/gafkd.yml: torch==2.13.0 from PyPI
    with pytest.raises(
        ProvisionError, match=re.escape("envs' gafkd pin torch==2.13.0 is built for CUDA 13.0")
    ):
        plan(gpu.check_compat, connection, LAB)
