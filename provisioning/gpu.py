"""GPU stack check (read-only): driver and CUDA from NVML, cuDNN, the envs' torch wheels.

PyTorch wheels bundle their own CUDA runtime and cuDNN, so only the host's NVIDIA driver must be
recent enough for the wheel's CUDA version; a system toolkit or cuDNN is used only to build
extensions (reference/gpu-stack.md §3.2). This module never installs or changes a driver.

Longer than most modules (about 620 lines): the release tables with their sources, the one
rule of whether a wheel runs on a host (`wheel_fit`) and the two that apply it, the envs' wheel
choice (`choose_wheel`) and doctor's verdict (`explain`), are kept in one file so that they
cannot drift apart. The tables and `wheel_fit` are the part to move out first if it grows.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
# Stable CUDA variants of each torch minor (PyTorch RELEASE.md compatibility matrix, §3.1);
# experimental variants are never picked.
TORCH_STABLE_CUDA: dict[tuple[int, int], tuple[tuple[int, int], ...]] = {
    (2, 0): ((11, 7),), (2, 1): ((11, 8),), (2, 2): ((11, 8),), (2, 3): ((11, 8),),
    (2, 4): ((11, 8), (12, 1)), (2, 5): ((11, 8), (12, 1), (12, 4)), (2, 6): ((11, 8), (12, 4)),
    (2, 7): ((11, 8), (12, 6)), (2, 8): ((12, 6), (12, 8)), (2, 9): ((12, 6), (12, 8)),
    (2, 10): ((12, 6), (12, 8)), (2, 11): ((12, 6), (12, 8), (13, 0)),
    (2, 12): ((12, 6), (13, 0)), (2, 13): ((12, 6), (13, 0)), (2, 14): ((12, 6), (13, 0), (13, 2)),
}  # fmt: skip
# Native kernels (SASS) of each stable CUDA variant, by torch minor: PyTorch RELEASE.md, "PyTorch
# CUDA Support Matrix" for releases 2.12-2.14, Linux x86 (reference/gpu-stack.md §3.1): 12.6.3 ->
# 5.0, 6.0, 7.0, 7.5, 8.0, 8.6, 9.0; 13.0.2 and 13.2.1 -> 7.5, 8.0, 8.6, 9.0, 10.0, 12.0 (+PTX).
# Other releases' lists are not in the reference, so their wheels are never chosen under
# minor-version compatibility. A cubin for X.y runs on every GPU X.z with z >= y (CUDA
# Programming Guide, "Binary Compatibility"), so 8.6 kernels serve an 8.9 card natively.
CU126_SASS = ((5, 0), (6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (9, 0))
CU13_SASS = ((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0))
WHEEL_SASS: dict[tuple[int, int], dict[tuple[int, int], tuple[tuple[int, int], ...]]] = {
    (2, 12): {(12, 6): CU126_SASS, (13, 0): CU13_SASS},
    (2, 13): {(12, 6): CU126_SASS, (13, 0): CU13_SASS},
    (2, 14): {(12, 6): CU126_SASS, (13, 0): CU13_SASS, (13, 2): CU13_SASS},
}
TORCH_INDEX = "https://download.pytorch.org/whl"  # + "/cu126": the PyTorch CUDA wheel index
PYPI = "pypi"  # the wheel variant "plain PyPI, no index": the torch pin as the env file has it
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
class TorchPin:
    """An env file's ``torch==VERSION`` pin and the CUDA version of the wheel it names."""

    version: str  # e.g. "2.13.0", without a local +cuNNN label
    cuda: tuple[int, int] | None  # None: not known here (or a CPU index)
    own: bool  # the file names its variant (+cuNNN or its own index); else provisioning picks


@dataclass(frozen=True)
class WheelChoice:
    """The torch wheel variant the envs step installs on a host, and why in a few words."""

    variant: str  # "cu126" (from TORCH_INDEX/cu126), or PYPI: plain PyPI, as pinned
    cuda: tuple[int, int] | None  # the wheel's CUDA version; None: not known here
    why: str  # e.g. "driver 560.35.03 is below cu130's 580.65.06"


@dataclass(frozen=True)
class WheelFit:
    """How a torch wheel of one CUDA variant runs on a host (:func:`wheel_fit`)."""

    mode: Literal["strict", "minor-compat", "unproven", "no"]
    why: str  # e.g. "driver 535.104.05 is below cu126's 560.28.03 but meets CUDA 12's floor ..."


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


def parse_env_torch(text: str) -> TorchPin | None:
    """An env file's torch pin; ``own`` when the file fixes the variant (+cuNNN or an index)."""
    pin = re.search(r"^\s*-\s*torch==([0-9][\w.]*)(?:\+cu(\d+))?\s*$", text, re.M)
    if not pin:
        return None
    index = re.search(r"^\s*-\s*(?:--(?:extra-)?index-url|-i)[\s=]+(\S+)", text, re.M)
    where = re.search(r"/whl/(cu\d+|cpu)/?$", index[1]) if index else None
    variant = pin[2] or (where[1][2:] if where and where[1] != "cpu" else None)
    if variant:
        return TorchPin(pin[1], (int(variant[:-1]), int(variant[-1])), own=True)
    if index:  # its own index without a CUDA variant: the CPU index, or a mirror of PyPI
        return TorchPin(pin[1], None if where else pypi_cuda(pin[1]), own=True)
    return TorchPin(pin[1], None, own=False)


def pypi_cuda(version: str) -> tuple[int, int] | None:
    """The CUDA version of the wheel plain PyPI serves for torch ``version``, if known."""
    return PYPI_DEFAULT_CUDA.get(torch_minor(version))


def torch_minor(version: str) -> tuple[int, int]:
    """'2.13.0' -> (2, 13), the release whose variants the tables list."""
    major, minor = re.findall(r"\d+", version)[:2]
    return int(major), int(minor)


def cuda_label(cuda: tuple[int, int]) -> str:
    """(12, 6) -> 'cu126', the variant's name and its index suffix."""
    return f"cu{cuda[0]}{cuda[1]}"


def wheel_covers(cuda: tuple[int, int], capability: tuple[int, int] | None) -> bool:
    """Whether a wheel built for ``cuda`` has kernels for a GPU of compute ``capability``.

    PyTorch RELEASE.md's support matrix (§3.1): CUDA 13 wheels start at Turing 7.5 and reach
    newer GPUs through PTX; the 12.6 wheels cover Maxwell 5.0 to Hopper 9.0, and older toolkits
    reach no further. 12.8/12.9: no list in the reference, so no limit. Unknown GPU: no limit.
    """
    if capability is None:
        return True
    if cuda[0] >= 13:
        return capability >= CUDA13_MIN_CAPABILITY
    if cuda == (12, 6):
        return capability >= (5, 0) and capability[0] <= 9
    return cuda > (12, 6) or capability[0] <= 9


def capability_text(capability: tuple[int, int] | None) -> str:
    """(8, 6) -> '8.6'; None -> 'unknown'."""
    return ".".join(map(str, capability)) if capability else "unknown"


def native_kernels(
    version: str, cuda: tuple[int, int], capability: tuple[int, int] | None
) -> bool | None:
    """Whether torch ``version``'s wheel for ``cuda`` has SASS for a GPU; None: not known here.

    >>> native_kernels("2.13.0", (12, 6), (8, 9))  # the 8.6 kernels run on an 8.9 card
    True
    >>> native_kernels("2.13.0", (13, 0), (6, 1)), native_kernels("2.9.0", (12, 8), (8, 6))
    (False, None)
    """
    kernels = WHEEL_SASS.get(torch_minor(version), {}).get(cuda)
    if kernels is None or capability is None:
        return None
    return any(major == capability[0] and minor <= capability[1] for major, minor in kernels)


def wheel_fit(version: str, cuda: tuple[int, int], probe: Probe) -> WheelFit:
    """How torch ``version``'s wheel for ``cuda`` runs on the host's driver and GPUs.

    strict: the driver meets the Table 3 minimum of the wheel's CUDA minor (§1.2). minor-compat:
    below it but at or above the CUDA major's floor (§1.3), and the wheel has native kernels for
    every GPU, so nothing needs PTX JIT, which minor-version compatibility lacks. unproven: the
    same, but the wheel's kernel list is not in WHEEL_SASS. no: no kernels for a GPU, a driver
    below the floor, or a GPU that would need JIT. choose_wheel picks strict and minor-compat;
    doctor (:func:`explain_wheel`) accepts those and unproven, with a caveat.
    """
    label, driver = cuda_label(cuda), parse_driver_version(probe.driver)
    old = [f"{g.name} ({capability_text(g.compute_capability)})" for g in probe.gpus
           if not wheel_covers(cuda, g.compute_capability)]  # fmt: skip
    if old:
        return WheelFit("no", f"{label} has no kernels for {', '.join(sorted(set(old)))}")
    safe, floor = TOOLKIT_MIN_DRIVER.get(cuda), MINOR_COMPAT_MIN_DRIVER.get(cuda[0])
    if driver >= parse_driver_version(safe) if safe else cuda <= probe.cuda_driver:
        return WheelFit("strict", f"driver {probe.driver} meets {label}'s {safe or 'CUDA'}")
    below = f"driver {probe.driver} is below {label}'s {safe or 'minimum'}"
    if floor is None or driver < parse_driver_version(floor):
        extra = f" and CUDA {cuda[0]}'s floor {floor}" if floor and floor != safe else ""
        return WheelFit("no", below + extra)
    if cuda not in WHEEL_SASS.get(torch_minor(version), {}):
        return WheelFit(
            "unproven",
            f"{below} (torch {'.'.join(map(str, torch_minor(version)))}'s {label} kernel list "
            "is not known here, so minor-version compatibility is not assumed)",
        )
    jit = [f"{g.name} ({capability_text(g.compute_capability)})" for g in probe.gpus
           if not native_kernels(version, cuda, g.compute_capability)]  # fmt: skip
    if jit:
        return WheelFit(
            "no",
            f"{below}; under minor-version compatibility (>= {floor}) "
            f"{', '.join(sorted(set(jit)))} would need PTX JIT, which it lacks",
        )
    capabilities = sorted({g.compute_capability for g in probe.gpus if g.compute_capability})
    return WheelFit(
        "minor-compat",
        f"{below} but meets CUDA {cuda[0]}'s floor {floor}, and {label} has native kernels for "
        f"every GPU ({', '.join(map(capability_text, capabilities)) or 'none here'})",
    )


def choose_wheel(version: str, probe: Probe | None) -> WheelChoice:
    """The torch wheel variant for a host: the newest stable one its driver and GPUs run.

    A variant runs strictly when the driver meets the Table 3 minimum of the wheel's CUDA minor
    (e.g. cu126 -> 560.28.03), else under CUDA minor-version compatibility when the driver meets
    the CUDA major's floor (12.x: 525.60.13) and the wheel has native kernels for every GPU
    (:func:`wheel_fit`); the why says which. PYPI when plain PyPI's wheel is that variant, or when
    the host has no NVIDIA driver (then any wheel will do: torch runs on the CPU).
    ProvisionError, naming the driver needed, when none runs.
    """
    default = pypi_cuda(version)
    if probe is None:
        return WheelChoice(PYPI, default, "no NVIDIA driver on the host, so plain PyPI as pinned")
    stable = TORCH_STABLE_CUDA.get(torch_minor(version))
    if not stable:
        why = f"torch {version}'s CUDA variants are not in this check's table: plain PyPI as pinned"
        return WheelChoice(PYPI, default, why)
    misfits: list[str] = []
    for cuda in sorted(stable, reverse=True):
        label, fit = cuda_label(cuda), wheel_fit(version, cuda, probe)
        variant = PYPI if cuda == default else label
        if fit.mode == "minor-compat":
            how = f"{label} under CUDA minor-version compatibility: {fit.why}"
            return WheelChoice(variant, cuda, "; ".join([*misfits, how]))
        if fit.mode != "strict":
            misfits.append(fit.why)
        elif cuda == default:
            return WheelChoice(PYPI, cuda, f"plain PyPI's {label} suits driver {probe.driver}")
        else:
            why = "; ".join(misfits) or f"plain PyPI's variant of torch {version} is not known here"
            return WheelChoice(label, cuda, why)
    raise ProvisionError(no_wheel(version, probe, stable, misfits))


def needed_driver(version: str, cuda: tuple[int, int], probe: Probe) -> tuple[str, bool]:
    """The lowest driver on which the ``cuda`` wheel runs these GPUs; True: under minor compat."""
    floor = MINOR_COMPAT_MIN_DRIVER.get(cuda[0])
    if (
        floor
        and probe.gpus
        and all(native_kernels(version, cuda, g.compute_capability) for g in probe.gpus)
    ):
        return floor, floor != TOOLKIT_MIN_DRIVER[cuda]
    return TOOLKIT_MIN_DRIVER[cuda], False


def no_wheel(
    version: str, probe: Probe, stable: tuple[tuple[int, int], ...], misfits: list[str]
) -> str:
    """One paragraph: why no stable wheel of torch ``version`` runs here, and the driver needed."""
    *older, newest = (cuda_label(cuda) for cuda in stable)
    labels = f"{', '.join(older)} and {newest}" if older else newest
    text = f"torch {version} has stable wheels for {labels} only, and none runs here: "
    text += "; ".join(misfits) + "."
    usable = [c for c in stable if all(wheel_covers(c, g.compute_capability) for g in probe.gpus)]
    if not usable:
        return f"{text} Pin an older torch in envs/ whose wheels still cover these GPUs."
    lowest = min(usable, key=lambda c: parse_driver_version(needed_driver(version, c, probe)[0]))
    driver, compat = needed_driver(version, lowest, probe)
    how = f", under minor-version compatibility; {TOOLKIT_MIN_DRIVER[lowest]} strictly" * compat
    text += (
        f" It needs driver >= {driver} ({cuda_label(lowest)}{how}): upgrade the driver by hand "
        "(docs/provisioning.md, 'Driver changes', has the risks), or pin an older torch in envs/."
    )
    floor = MINOR_COMPAT_MIN_DRIVER.get(lowest[0], "")
    unknown = lowest not in WHEEL_SASS.get(torch_minor(version), {})
    if unknown and floor and parse_driver_version(probe.driver) >= parse_driver_version(floor):
        text += (
            f" {cuda_label(lowest)} would start on this driver under minor-version compatibility "
            f"(>= {floor}; JIT of newer PTX can fail): to accept that, pin torch=={version}+"
            f"{cuda_label(lowest)} with `--extra-index-url {TORCH_INDEX}/{cuda_label(lowest)}` "
            "in the env file."
        )
    return text


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


def read_env_pins(envs_dir: Path) -> dict[str, TorchPin]:
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


def explain_wheel(probe: Probe, label: str, cuda: tuple[int, int], version: str) -> str:
    """One sentence on whether the driver runs torch ``version``'s wheel built for ``cuda``; or
    raise. It agrees with :func:`choose_wheel`: both judge by :func:`wheel_fit`."""
    driver, wanted = parse_driver_version(probe.driver), f"{cuda[0]}.{cuda[1]}"
    supported = f"{probe.cuda_driver[0]}.{probe.cuda_driver[1]}"
    floor = MINOR_COMPAT_MIN_DRIVER.get(cuda[0])
    if floor is None:
        return f"{label} is built for CUDA {wanted}, which this check has no table for."
    if driver < parse_driver_version(floor):
        raise ProvisionError(
            f"driver {probe.driver} runs CUDA <= {supported}, but {label} is built for CUDA "
            f"{wanted} and needs driver >= {floor}. Let the envs step pick the variant (no "
            f"index of its own in the env file, then `invoke provision --only envs`), pin a "
            f"torch wheel built for CUDA <= {supported} in envs/ (pip --index-url {TORCH_INDEX}/"
            f"{cuda_label(probe.cuda_driver)}, if torch publishes that variant), or upgrade the "
            f"driver by hand; {DRIVER_RISKS}"
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
    fit, safe = wheel_fit(version, cuda, probe), TOOLKIT_MIN_DRIVER.get(cuda, "a newer one")
    if fit.mode == "no":
        raise ProvisionError(
            f"{label} cannot run here: {fit.why}. Let the envs step pick the variant (no index "
            f"of its own in the env file, then `invoke provision --only envs`), or upgrade the "
            f"driver to >= {safe} by hand; {DRIVER_RISKS}"
        )
    if fit.mode == "minor-compat":
        return (
            f"{label} bundles CUDA {wanted}, newer than the driver's {supported}: it runs under "
            f"minor-version compatibility, with native kernels for every GPU, so no PTX JIT is "
            f"needed; driver >= {safe} is the strict target."
        )
    if fit.mode == "unproven":
        return (
            f"{label} bundles CUDA {wanted}, newer than the driver's {supported}: it runs under "
            f"minor-version compatibility (prebuilt kernels work, JIT of newer PTX can fail; its "
            f"kernel list is not in this check's table); driver >= {safe} is the safe target."
        )
    return f"{label} bundles CUDA {wanted}, so only the driver matters, and it is new enough."


def explain(
    probe: Probe,
    torches: list[tuple[str, TorchBuild]],
    pins: dict[str, TorchPin],
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
        sentences.append(explain_wheel(probe, label, build.cuda, build.version))
    for env, pin in pins.items():
        label = f"envs' {env} pin torch=={pin.version}"
        if not pin.own:  # the envs step installs the variant choose_wheel picks: judge that one
            try:
                choice = choose_wheel(pin.version, probe)
            except ProvisionError as error:
                raise ProvisionError(f"envs' {env}: {error}") from None
            wheel = "plain PyPI's" if choice.variant == PYPI else f"the {choice.variant}"
            label = f"{label} (the envs step installs {wheel} wheel: {choice.why})"
            pin = TorchPin(pin.version, choice.cuda, own=False)
        if pin.cuda is None:
            sentences.append(f"{label} has no CUDA variant known here.")
        else:
            sentences.append(explain_wheel(probe, label, pin.cuda, pin.version))
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
