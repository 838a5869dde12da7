"""GPU stack check: parsers on recorded outputs, the wheel choice, the verdict, the read-only step.

outputs/nvml-probe/{h100-580,v100-580,rtx3080-470}.txt were written for these tests in the
probe's format (driver versions from NVIDIA's release tables), not captured from a host: a
data-centre card on an R580 driver, a pre-Turing card on R580, and the lab's card on R470.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning import gpu, nvml_probe
from provisioning.core import ProvisionError, SkipStep
from provisioning.gpu import Gpu, Probe, TorchBuild, TorchPin, WheelChoice
from provisioning.hosts import Host
from provisioning.runner import plan

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
        ("      - torch==2.13.0\n", TorchPin("2.13.0", None, own=False)),  # provisioning picks
        ("      - torch==2.3.0+cu121\n", TorchPin("2.3.0", (12, 1), own=True)),
        ("      - --index-url https://download.pytorch.org/whl/cu126\n      - torch==2.13.0\n",
         TorchPin("2.13.0", (12, 6), own=True)),
        ("      - --extra-index-url https://download.pytorch.org/whl/cu126/\n"
         "      - torch==2.13.0+cu126\n", TorchPin("2.13.0", (12, 6), own=True)),
        ("      - --index-url https://download.pytorch.org/whl/cpu\n      - torch==2.13.0\n",
         TorchPin("2.13.0", None, own=True)),
        ("      - -i https://mirror.example/simple\n      - torch==2.13.0\n",
         TorchPin("2.13.0", (13, 0), own=True)),  # a mirror of PyPI: PyPI's default variant
        ("      - --index-url https://mirror.example/simple\n      - torch==2.10.0\n",
         TorchPin("2.10.0", None, own=True)),  # PyPI's variant of 2.10 is not known here
        ("      - numpy\n", None),
    ],
)  # fmt: skip
def test_parse_env_torch(pip_lines, pin) -> None:
    text = f"name: gafkd\ndependencies:\n  - pip\n  - pip:\n{pip_lines}"
    assert gpu.parse_env_torch(text) == pin


def test_the_project_env_pins_torch_without_an_index_so_provisioning_picks_the_variant() -> None:
    assert gpu.read_env_pins(ROOT / "envs") == {"gafkd": TorchPin("2.13.0", None, own=False)}


# --- the wheel variant for a host ----------------------------------------------------------------


def gpus(driver: str, *capabilities: tuple[int, int] | None) -> Probe:
    cards = (Gpu(i, f"GPU{i}", 8 << 30, True, c) for i, c in enumerate(capabilities))
    return Probe(driver, (12, 0), tuple(cards))


@pytest.mark.parametrize(
    ("case", "choice"),
    [
        ("rtx3080", WheelChoice("cu126", (12, 6), "driver 560.35.03 is below cu130's 580.65.06")),
        ("h100", WheelChoice("cu126", (12, 6), "driver 570.124.06 is below cu130's 580.65.06")),
        ("h100-580", WheelChoice("pypi", (13, 0), "plain PyPI's cu130 suits driver 580.95.05")),
        ("v100-580", WheelChoice("cu126", (12, 6),
                                 "cu130 has no kernels for Tesla V100-SXM2-16GB (7.0)")),
    ],
)  # fmt: skip
def test_choose_wheel_picks_the_newest_stable_variant_the_recorded_host_runs(
    recorded, case, choice
) -> None:
    assert gpu.choose_wheel("2.13.0", gpu.parse_probe(recorded("nvml-probe", case))) == choice


@pytest.mark.parametrize(
    ("torch", "probe", "variant", "why"),
    [
        ("2.14.0", gpus("585.05.10", (6, 1)), "cu126",
         "cu132 has no kernels for GPU0 (6.1); cu130 has no kernels for GPU0 (6.1)"),
        ("2.14.0", gpus("595.45.04", (8, 6)), "pypi", "plain PyPI's cu132 suits driver 595.45.04"),
        ("2.9.1", gpus("570.26", (8, 9)), "pypi", "plain PyPI's cu128 suits driver 570.26"),
        ("2.9.1", gpus("560.28.03", (8, 9)), "cu126", "driver 560.28.03 is below cu128's 570.26 "
         "(torch 2.9's cu128 kernel list is not known here, so minor-version compatibility is "
         "not assumed)"),
        ("2.11.0", gpus("590.44.01", (8, 6)), "cu130",
         "plain PyPI's variant of torch 2.11.0 is not known here"),
        ("2.13.0", gpus("580.65.06", (12, 0), None), "pypi", "plain PyPI's cu130 suits driver "
         "580.65.06"),  # Blackwell: CUDA 13 only; a GPU without a reported capability: no limit
        ("2.13.0", None, "pypi", "no NVIDIA driver on the host, so plain PyPI as pinned"),
        ("2.99.0", gpus("560.35.03", (8, 6)), "pypi",
         "torch 2.99.0's CUDA variants are not in this check's table: plain PyPI as pinned"),
    ],
)  # fmt: skip
def test_choose_wheel_follows_the_release_table(torch, probe, variant, why) -> None:
    choice = gpu.choose_wheel(torch, probe)
    assert (choice.variant, choice.why) == (variant, why)


MVC = "under CUDA minor-version compatibility"


@pytest.mark.parametrize(
    ("torch", "probe", "variant", "how"),
    [  # the newest stable variant that runs: strictly, else under minor-version compatibility
        ("2.13.0", gpus("535.104.05", (8, 0), (9, 0)), "cu126", MVC),  # Ubuntu 22.04's driver
        ("2.13.0", gpus("525.60.13", (8, 6)), "cu126", MVC),  # exactly CUDA 12's floor
        ("2.13.0", gpus("550.54.15", (8, 9)), "cu126", MVC),  # Ada: cu126's 8.6 kernels run
        ("2.13.0", gpus("560.28.03", (8, 6)), "cu126", "below cu130's"),  # strictly
        ("2.14.0", gpus("585.05.10", (8, 6)), "pypi", MVC),  # cu132 (PyPI's) under compat
        ("2.14.0", gpus("590.44.01", (12, 0)), "pypi", MVC),  # Blackwell: cu132 has sm_120
        ("2.9.1", gpus("560.28.03", (8, 9)), "cu126", "below cu128's 570.26"),  # no 2.9 list
    ],
)  # fmt: skip
def test_choose_wheel_accepts_minor_version_compatibility_only_with_native_kernels(
    torch, probe, variant, how
) -> None:
    choice = gpu.choose_wheel(torch, probe)
    assert (choice.variant, how in choice.why) == (variant, True), choice.why


def test_driver_535_gets_cu126_under_minor_version_compatibility_and_says_why() -> None:
    choice = gpu.choose_wheel("2.13.0", gpus("535.104.05", (8, 0), (9, 0)))
    assert choice == WheelChoice(
        "cu126",
        (12, 6),
        "driver 535.104.05 is below cu130's 580.65.06; cu126 under CUDA minor-version "
        "compatibility: driver 535.104.05 is below cu126's 560.28.03 but meets CUDA 12's floor "
        "525.60.13, and cu126 has native kernels for every GPU (8.0, 9.0)",
    )


@pytest.mark.parametrize(
    ("torch", "probe", "found", "needs"),
    [  # refused: below the major's floor, or a GPU would need PTX JIT
        ("2.13.0", gpus("520.61.05", (8, 6)),
         "driver 520.61.05 is below cu126's 560.28.03 and CUDA 12's floor 525.60.13",
         "needs driver >= 525.60.13 (cu126, under minor-version compatibility; 560.28.03 "
         "strictly)"),
        ("2.13.0", gpus("535.104.05", (9, 0), (10, 0)),
         "cu126 has no kernels for GPU1 (10.0)", "needs driver >= 580.65.06 (cu130)"),
        ("2.13.0", gpus("535.104.05", (8, 6), None),
         "GPU1 (unknown) would need PTX JIT", "needs driver >= 560.28.03 (cu126)"),
    ],
)  # fmt: skip
def test_choose_wheel_refuses_below_the_floor_or_where_jit_would_be_needed(
    torch, probe, found, needs
) -> None:
    with pytest.raises(ProvisionError) as error:
        gpu.choose_wheel(torch, probe)
    assert found in str(error.value)
    assert needs in str(error.value)
    assert "\n" not in str(error.value)


def test_a_torch_without_a_kernel_list_is_offered_minor_compat_only_as_a_pin() -> None:
    with pytest.raises(ProvisionError) as error:
        gpu.choose_wheel("2.9.1", gpus("550.54.15", (8, 6)))
    message = str(error.value)
    assert "driver 550.54.15 is below cu126's 560.28.03 (torch 2.9's cu126 kernel list" in message
    index = "`--extra-index-url https://download.pytorch.org/whl/cu126`"
    assert f"torch==2.9.1+cu126 with {index} in the env file" in message


def test_native_kernels_follow_the_sourced_table_and_binary_compatibility() -> None:
    assert gpu.native_kernels("2.13.0", (12, 6), (8, 6)) is True
    assert gpu.native_kernels("2.13.0", (12, 6), (8, 9)) is True  # X.y SASS runs on X.z, z >= y
    assert gpu.native_kernels("2.13.0", (12, 6), (10, 0)) is False
    assert gpu.native_kernels("2.13.0", (13, 0), (7, 0)) is False  # no pre-Turing on CUDA 13
    assert gpu.native_kernels("2.11.0", (12, 6), (8, 6)) is None  # no list for 2.11


def test_doctor_agrees_with_choose_wheel_on_minor_version_compatibility() -> None:
    lab535 = gpus("535.104.05", (8, 0), (9, 0))
    text = gpu.explain(lab535, [], {"gafkd": TorchPin("2.13.0", None, own=False)}, LAB)
    assert "the envs step installs the cu126 wheel" in text
    assert "runs under minor-version compatibility, with native kernels for every GPU" in text
    blackwell = gpus("535.104.05", (8, 0), (10, 0))
    no_kernels = r"pin torch==2\.13\.0 cannot run here: cu126 has no kernels for GPU1 \(10\.0\)"
    with pytest.raises(ProvisionError, match=no_kernels):
        gpu.explain(blackwell, [], {"gafkd": TorchPin("2.13.0", (12, 6), own=True)}, LAB)
    with pytest.raises(ProvisionError, match=r"needs driver >= 525\.60\.13"):
        gpu.explain(gpus("520.61.05", (8, 6)), [], {"g": TorchPin("2.13.0", (12, 6), True)}, LAB)


def test_a_blackwell_gpu_on_driver_570_needs_the_cuda_13_driver() -> None:
    with pytest.raises(ProvisionError) as error:
        gpu.choose_wheel("2.13.0", gpus("570.124.06", (12, 0)))
    assert "cu126 has no kernels for GPU0 (12.0)" in str(error.value)
    assert "It needs driver >= 580.65.06 (cu130)" in str(error.value)


def test_a_gpu_no_variant_covers_asks_for_an_older_torch() -> None:
    with pytest.raises(
        ProvisionError, match="Pin an older torch in envs/ whose wheels still cover"
    ):
        gpu.choose_wheel("2.13.0", gpus("580.95.05", (3, 7)))  # Kepler


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


def test_driver_560_refuses_a_cuda_13_wheel_the_env_file_fixes_itself() -> None:
    own = TorchPin("2.13.0", (13, 0), own=True)  # e.g. its own --index-url .../cu130
    with pytest.raises(ProvisionError) as error:
        gpu.explain(RTX3080, [], {"gafkd": own}, LAB)
    message = str(error.value)
    assert "driver 560.35.03 runs CUDA <= 12.6" in message
    assert "needs driver >= 580.65.06" in message
    assert "https://download.pytorch.org/whl/cu126" in message


def test_a_newer_minor_wheel_runs_under_minor_version_compatibility() -> None:
    text = gpu.explain(RTX3080, [], {"gafkd": TorchPin("2.9.0", (12, 8), own=True)}, LAB)
    assert "minor-version compatibility" in text
    assert "driver >= 570.26 is the safe target" in text


def test_h100_on_driver_570_runs_cu128(recorded) -> None:
    probe = gpu.parse_probe(recorded("nvml-probe", "h100"))
    pins = {"gafkd": TorchPin("2.9.0", (12, 8), own=True)}
    text = gpu.explain(probe, [], pins, Host("dgx", expected_gpus=2))
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
        gpu.explain(pascal, [], {"gafkd": TorchPin("2.13.0", (13, 0), own=True)}, LAB)


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


def test_doctor_on_the_lab_server_says_the_env_gets_the_cu126_wheel_and_it_is_fine(
    fake, recorded
) -> None:
    connection = fake(lab_host_replies(recorded))  # envs/gafkd.yml: torch==2.13.0, no index
    commands, reason = plan(gpu.check_compat, connection, LAB)
    assert commands == []
    assert (
        "envs' gafkd pin torch==2.13.0 (the envs step installs the cu126 wheel: driver 560.35.03 "
        "is below cu130's 580.65.06) bundles CUDA 12.6, so only the driver matters, and it is new "
        "enough." in reason
    )
    assert "580.65.06 is the safe target" not in reason


def test_doctor_on_a_data_centre_card_with_driver_580_keeps_plain_pypi(fake, recorded) -> None:
    connection = fake(lab_host_replies(recorded, probe="h100-580"))
    _, reason = plan(gpu.check_compat, connection, Host("dgx", expected_gpus=2))
    assert (
        "envs' gafkd pin torch==2.13.0 (the envs step installs plain PyPI's wheel: plain PyPI's "
        "cu130 suits driver 580.95.05) bundles CUDA 13.0, so only the driver matters" in reason
    )


def test_doctor_on_driver_470_fails_naming_the_driver_the_projects_torch_needs(
    fake, recorded
) -> None:
    connection = fake(lab_host_replies(recorded, probe="rtx3080-470"))
    with pytest.raises(
        ProvisionError,
        match=r"^envs. gafkd: torch 2\.13\.0 .* needs driver >= 525\.60\.13 \(cu126, under minor",
    ):
        plan(gpu.check_compat, connection, LAB)
