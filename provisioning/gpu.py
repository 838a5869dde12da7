"""GPU stack check (read-only): driver and CUDA from NVML, cuDNN, the envs' torch wheels.

PyTorch wheels bundle their own CUDA runtime and cuDNN, so only the host's NVIDIA driver must be
recent enough for the wheel's CUDA version; a system toolkit or cuDNN is used only to build
extensions (reference/gpu-stack.md §3.2). This module never installs or changes a driver.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from provisioning import nvml_probe
from provisioning.core import Command, Connection, ProvisionError, SkipStep, read_result
from provisioning.hosts import Host

# --- constants ---------------------------------------------------------------------------------

Version = tuple[int, ...]

# Minimum Linux driver of each CUDA toolkit minor's GA release: CUDA Toolkit release notes,
# Table 3 (reference/gpu-stack.md §1.2, §1.4). The safe target for a wheel of that CUDA version.
TOOLKIT_MIN_DRIVER: dict[tuple[int, int], str] = {
    (11, 0): "450.51.05", (11, 1): "455.23", (11, 2): "460.27.03", (11, 3): "465.19.01",
    (11, 4): "470.42.01", (11, 5): "495.29.05", (11, 6): "510.39.01", (11, 7): "515.43.04",
    (11, 8): "520.61.05", (12, 0): "525.60.13", (12, 1): "530.30.02", (12, 2): "535.54.03",
    (12, 3): "545.23.06", (12, 4): "550.54.14", (12, 5): "555.42.02", (12, 6): "560.28.03",
    (12, 8): "570.26", (12, 9): "575.51.03", (13, 0): "580.65.06", (13, 1): "590.44.01",
    (13, 2): "595.45.04",
}  # fmt: skip
# Absolute floor per CUDA major under minor-version compatibility (§1.3, §3.2): below it a wheel
# of that major cannot start.
MINOR_COMPAT_MIN_DRIVER: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# CUDA 13 wheels have no pre-Turing kernels (PyTorch RELEASE.md support matrix, §3.1).
CUDA13_MIN_CAPABILITY = (7, 5)
# CUDA variant that plain PyPI serves per torch minor (§3.1). 2.13 is inferred from 2.12 (same
# stable variants); it is not stated separately. Other minors: pin a variant with --index-url.
PYPI_DEFAULT_CUDA: dict[tuple[int, int], tuple[int, int]] = {
    (2, 8): (12, 8), (2, 9): (12, 8), (2, 12): (13, 0), (2, 13): (13, 0), (2, 14): (13, 2),
}  # fmt: skip
ENVS_DIR = Path(__file__).resolve().parent.parent / "envs"
CUDNN_HEADERS = (
    "/usr/include/cudnn_version.h",
    "/usr/include/x86_64-linux-gnu/cudnn_version_v9.h",
    "/usr/local/cuda/include/cudnn_version.h",
)
NVCC = "/usr/local/cuda/bin/nvcc"
TORCH_QUERY = (
    "import torch; print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())"
)
DRIVER_RISKS = (
    "changing the driver stops running GPU jobs, needs the display manager stopped and a reboot, "
    "and a wrong open/proprietary flavour or unsigned module under Secure Boot leaves no GPU "
    "(docs/provisioning.md, 'Driver changes')"
)


# NVML errors that mean "no NVIDIA driver here" rather than a broken one.
NO_DRIVER_ERRORS = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded")


class NoDriver(ProvisionError):
    """NVML is missing or no driver is loaded: skipped on a host that expects no GPU."""


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total: int  # bytes
    persistence_mode: bool | None  # None: not reported
    compute_capability: tuple[int, int] | None


@dataclass(frozen=True)
class Probe:
    driver: str  # e.g. "560.35.03"
    cuda_driver: tuple[int, int]  # highest CUDA version the driver supports
    gpus: tuple[Gpu, ...]


@dataclass(frozen=True)
class TorchBuild:
    version: str  # e.g. "2.3.0+cu121"
    cuda: tuple[int, int] | None  # None: a CPU build
    cudnn: int | None  # CUDNN_VERSION encoding, e.g. 8902


# --- parse_* -----------------------------------------------------------------------------------


def parse_driver_version(text: str) -> Version:
    """'560.35.03' -> (560, 35, 3)."""
    return tuple(int(part) for part in text.split("."))


def parse_probe(text: str) -> Probe:
    """Read the NVML probe's JSON; ``{"error": ...}`` (no driver) raises ProvisionError."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ProvisionError(f"the NVML probe printed no JSON: {text.strip()[:200]!r}") from None
    if "error" in data:
        error = str(data["error"])
        remedy = "no NVIDIA driver is loaded: install one by hand"
        if "Mismatch" in error:
            remedy = "the driver was upgraded but the old kernel module is still loaded: reboot"
        if error.startswith(NO_DRIVER_ERRORS):
            raise NoDriver(f"NVML cannot start on the host ({error}); {remedy}")
        raise ProvisionError(f"NVML cannot start on the host ({error}); {remedy}")
    gpus = tuple(
        Gpu(
            index=gpu["index"],
            name=gpu["name"],
            memory_total=gpu["memory_total"],
            persistence_mode=gpu["persistence_mode"],
            compute_capability=tuple(gpu["compute_capability"] or ()) or None,
        )
        for gpu in data["gpus"]
    )
    cuda = int(data["cuda_driver"])  # 1000 * major + 10 * minor, e.g. 12060
    return Probe(str(data["driver"]), (cuda // 1000, cuda % 1000 // 10), gpus)


def parse_cudnn_header(text: str) -> str:
    """The cuDNN version in a ``cudnn_version.h``, e.g. '9.1.0'."""
    found = dict(re.findall(r"#define CUDNN_(MAJOR|MINOR|PATCHLEVEL)\s+(\d+)", text))
    if len(found) != 3:
        raise ProvisionError("cudnn_version.h has no CUDNN_MAJOR/MINOR/PATCHLEVEL defines")
    return f"{found['MAJOR']}.{found['MINOR']}.{found['PATCHLEVEL']}"


def parse_cudnn_number(number: int) -> str:
    """CUDNN_VERSION as torch reports it -> 'major.minor.patch' (90100 -> 9.1.0, 8902 -> 8.9.2)."""
    major, rest = divmod(number, 10000 if number >= 90000 else 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def parse_nvcc(text: str) -> tuple[int, int]:
    """``nvcc --version`` -> the toolkit's (major, minor)."""
    match = re.search(r"release (\d+)\.(\d+)", text)
    if not match:
        raise ProvisionError(f"nvcc --version printed no release: {text.strip()[-200:]!r}")
    return int(match[1]), int(match[2])


def parse_torch(text: str) -> TorchBuild:
    """The env's ``torch.__version__ torch.version.cuda cudnn-version`` line."""
    fields = text.split()
    if len(fields) != 3:
        raise ProvisionError(f"torch's version query printed {text.strip()!r}; expected 3 fields")
    version, cuda, cudnn = fields
    major_minor = None if cuda == "None" else parse_driver_version(cuda)[:2]
    return TorchBuild(version, major_minor, None if cudnn == "None" else int(cudnn))  # type: ignore[arg-type]


def parse_recommended_driver(text: str) -> str | None:
    """The package ``ubuntu-drivers devices`` marks 'recommended', or None."""
    for package, flags in re.findall(r"^driver\s*:\s*(\S+) - (.*)$", text, re.M):
        if "recommended" in flags.split():
            return str(package)
    return None


def parse_env_torch(text: str) -> tuple[str, tuple[int, int] | None] | None:
    """An env file's torch pin and the CUDA version of the wheel pip will pick, if known."""
    pin = re.search(r"^\s*-\s*torch==([0-9][\w.]*)(?:\+cu(\d+))?\s*$", text, re.M)
    if not pin:
        return None
    index = re.search(r"--(?:extra-)?index-url\s+\S*/whl/cu(\d+)", text)
    variant = pin[2] or (index[1] if index else None)
    if variant:
        return pin[1], (int(variant[:-1]), int(variant[-1]))
    return pin[1], PYPI_DEFAULT_CUDA.get(parse_driver_version(pin[1])[:2])  # type: ignore[arg-type]


# --- read_* ------------------------------------------------------------------------------------


def read_probe(connection: Connection) -> Probe:
    """Upload the NVML probe beside nvidia-ml-py's pure-Python pynvml.py and run it."""
    spec = importlib.util.find_spec("pynvml")
    if spec is None or spec.origin is None:
        raise ProvisionError("nvidia-ml-py is not installed here; pip install nvidia-ml-py")
    folder = read_result(connection, "mktemp", "-d").stdout.strip()
    if not folder:
        raise ProvisionError("mktemp -d failed on the host; is /tmp writable?")
    try:
        connection.put(spec.origin, f"{folder}/pynvml.py")
        connection.put(nvml_probe.__file__, f"{folder}/nvml_probe.py")
        result = read_result(connection, "python3", "-E", "-s", f"{folder}/nvml_probe.py")
    finally:
        read_result(connection, "rm", "-rf", "--", folder)
    if not result.ok:
        raise ProvisionError(
            f"the NVML probe failed (exit {result.return_code}): {result.stderr.strip()[-300:]}; "
            "the host needs python3 (apt install python3)"
        )
    return parse_probe(result.stdout)


def read_host_cudnn(connection: Connection) -> str | None:
    """A system cuDNN: version from its header, else the library names ldconfig knows."""
    for header in CUDNN_HEADERS:
        result = read_result(connection, "cat", "--", header)
        if result.ok:
            return f"{parse_cudnn_header(result.stdout)} ({header})"
    result = read_result(connection, "/sbin/ldconfig", "-p")
    libraries = sorted(set(re.findall(r"\blibcudnn\.so\.\d+", result.stdout)))
    return ", ".join(libraries) or None


def read_toolkit(connection: Connection) -> tuple[int, int] | None:
    """The system CUDA toolkit's version, or None when /usr/local/cuda has no nvcc."""
    result = read_result(connection, NVCC, "--version")
    return parse_nvcc(result.stdout) if result.ok else None


def read_torch(connection: Connection, python: str) -> TorchBuild | None:
    """torch as the env's python reports it; None when that python does not exist."""
    if not read_result(connection, "test", "-x", python).ok:
        return None
    result = read_result(connection, python, "-c", TORCH_QUERY)
    if not result.ok:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProvisionError(f"{python} cannot import torch ({last}); recreate that env from envs/")
    return parse_torch(result.stdout)


def read_env_pythons(connection: Connection, host: Host, env: str) -> list[str]:
    """Where env ``env`` may live: under the shared prefix, and in each lab user's home."""
    pythons = [f"{host.conda_prefix}/envs/{env}/bin/python"]
    for user in host.users:
        result = read_result(connection, "getent", "passwd", user)
        if result.ok and result.stdout.count(":") >= 6:
            pythons.append(f"{result.stdout.split(':')[5]}/.conda/envs/{env}/bin/python")
    return pythons


def read_recommended_driver(connection: Connection) -> str | None:
    """ubuntu-drivers' recommended package, or None (not Ubuntu, or nothing recommended)."""
    result = read_result(connection, "ubuntu-drivers", "devices")
    return parse_recommended_driver(result.stdout) if result.ok else None


def read_env_pins(envs_dir: Path) -> dict[str, tuple[str, tuple[int, int] | None]]:
    """Each project env file's torch pin, by env name (local files; provisioning never edits)."""
    pins = {}
    for path in sorted(envs_dir.glob("*.yml")):
        text = path.read_text()
        name = re.search(r"^name:\s*(\S+)", text, re.M)
        pin = parse_env_torch(text)
        if pin:
            pins[name[1] if name else path.stem] = pin
    return pins


# --- check_* -----------------------------------------------------------------------------------


def explain_wheel(probe: Probe, label: str, cuda: tuple[int, int]) -> str:
    """One sentence on whether the driver runs a torch wheel built for ``cuda``; or raise."""
    driver, wanted = parse_driver_version(probe.driver), f"{cuda[0]}.{cuda[1]}"
    supported = f"{probe.cuda_driver[0]}.{probe.cuda_driver[1]}"
    floor = MINOR_COMPAT_MIN_DRIVER.get(cuda[0])
    if floor is None:
        return f"{label} is built for CUDA {wanted}, which this check has no table for."
    if driver < parse_driver_version(floor):
        raise ProvisionError(
            f"driver {probe.driver} runs CUDA <= {supported}, but {label} is built for CUDA "
            f"{wanted} and needs driver >= {floor}. Pin a torch wheel built for CUDA <= "
            f"{supported} in envs/ (pip --index-url https://download.pytorch.org/whl/cu"
            f"{probe.cuda_driver[0]}{probe.cuda_driver[1]}, if torch publishes that variant), or "
            f"upgrade the driver by hand; {DRIVER_RISKS}"
        )
    capabilities = {gpu.name: gpu.compute_capability or (99, 0) for gpu in probe.gpus}
    old = sorted(
        name for name, capability in capabilities.items() if capability < CUDA13_MIN_CAPABILITY
    )
    if cuda[0] >= 13 and old:
        raise ProvisionError(
            f"{label} is built for CUDA {wanted}, whose wheels need compute capability >= "
            f"{CUDA13_MIN_CAPABILITY[0]}.{CUDA13_MIN_CAPABILITY[1]}, but the host has {old}; "
            "pin a CUDA 12 wheel (cu126) in envs/"
        )
    if cuda > probe.cuda_driver:
        safe = TOOLKIT_MIN_DRIVER.get(cuda, "a newer one")
        return (
            f"{label} bundles CUDA {wanted}, newer than the driver's {supported}: it runs under "
            f"minor-version compatibility (prebuilt kernels work, JIT of newer PTX can fail); "
            f"driver >= {safe} is the safe target."
        )
    return f"{label} bundles CUDA {wanted}, so only the driver matters, and it is new enough."


def explain(
    probe: Probe,
    torches: list[tuple[str, TorchBuild]],
    pins: dict[str, tuple[str, tuple[int, int] | None]],
    host: Host,
    toolkit: tuple[int, int] | None = None,
    host_cudnn: str | None = None,
    recommended: str | None = None,
) -> str:
    """The verdict in one short paragraph, or a ProvisionError on a mismatch."""
    if host.expected_gpus is not None and len(probe.gpus) != host.expected_gpus:
        raise ProvisionError(
            f"NVML sees {len(probe.gpus)} GPUs, invoke.yaml expects {host.expected_gpus}: "
            "reseat or check the missing card (nvidia-smi, dmesg | grep NVRM), or fix expected_gpus"
        )
    names = sorted({gpu.name for gpu in probe.gpus})
    cards = ", ".join(f"{sum(g.name == n for g in probe.gpus)} x {n}" for n in names) or "no GPU"
    supported = f"{probe.cuda_driver[0]}.{probe.cuda_driver[1]}"
    sentences = [f"{cards} on driver {probe.driver}, which runs CUDA <= {supported}."]
    for python, build in torches:
        if build.cuda is None:
            sentences.append(f"torch {build.version} in {python} is a CPU build: no GPU use.")
            continue
        cudnn = f" and cuDNN {parse_cudnn_number(build.cudnn)}" if build.cudnn else ""
        label = f"torch {build.version} in {python}{cudnn}"
        sentences.append(explain_wheel(probe, label, build.cuda))
    for env, (version, cuda) in pins.items():
        if cuda is None:
            sentences.append(f"envs' {env} pins torch {version} without a CUDA variant known here.")
        else:
            sentences.append(explain_wheel(probe, f"envs' {env} pin torch=={version}", cuda))
    if toolkit or host_cudnn:
        found = [f"CUDA {toolkit[0]}.{toolkit[1]} toolkit" if toolkit else "", host_cudnn or ""]
        sentences.append(
            f"The system {' and cuDNN '.join(filter(None, found))} only matter for building "
            "extensions; keep them off LD_LIBRARY_PATH of the envs."
        )
    if any(gpu.persistence_mode is False for gpu in probe.gpus):
        sentences.append("Persistence mode is off: nvidia-persistenced would speed up CUDA starts.")
    branch = probe.driver.split(".")[0]
    if recommended and not recommended.endswith(f"-{branch}"):
        sentences.append(
            f"ubuntu-drivers recommends {recommended}; the installed {branch} branch is kept, "
            f"since {DRIVER_RISKS}."
        )
    return " ".join(sentences)


def check_compat(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """Check the driver against the envs' torch wheels and the GPUs; never changes anything."""
    yield from ()  # check only: this step never plans a command
    recommended = read_recommended_driver(connection)
    try:
        probe = read_probe(connection)
    except ProvisionError as error:
        advice = f"ubuntu-drivers recommends {recommended}" if recommended else "no recommendation"
        if isinstance(error, NoDriver) and not host.expected_gpus:  # the other steps still apply
            raise SkipStep(
                f"no NVIDIA driver on the host (NVML missing; {advice}). Set expected_gpus for "
                f"{host.alias} in invoke.yaml to make this an error"
            ) from None
        raise ProvisionError(
            f"{error} ({advice}). Provisioning never installs drivers, because {DRIVER_RISKS}"
        ) from None
    pins = read_env_pins(ENVS_DIR)
    torches = []
    for env in pins:
        for python in read_env_pythons(connection, host, env):
            build = read_torch(connection, python)
            if build:
                torches.append((python, build))
    toolkit, cudnn = read_toolkit(connection), read_host_cudnn(connection)
    return explain(probe, torches, pins, host, toolkit, cudnn, recommended)
