"""The selftest's report, torch-free: its checks, the device judgement, the verdict, the screen.

`kernels_for`, `cuda_mode` and `judge_device` judge a GPU from what torch reports (its arch list,
the wheel's CUDA and the driver's): the device check uses them, and ``invoke doctor --selftest``
holds the same facts against provisioning's verdict (`provisioning.selftest.agreement`).
`screen` draws the reports of several hosts; ``invoke doctor`` imports it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kernels = Literal["native", "ptx", "none"]


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped, not a failure
    detail: str  # one line
    values: dict[str, Any] = field(default_factory=dict)


# --- the device check's judgement (pure) -------------------------------------------------------


def kernels_for(capability: tuple[int, int], arch_list: list[str]) -> Kernels:
    """How a wheel whose ``torch.cuda.get_arch_list()`` is ``arch_list`` runs a GPU.

    native: SASS for the GPU (sm_XY runs on X.z for z >= y, CUDA Programming Guide, "Binary
    Compatibility"); ptx: only PTX it can JIT (compute_XY with XY <= the GPU's); none.

    >>> kernels_for((8, 9), ["sm_80", "sm_86", "sm_90"]), kernels_for((10, 0), ["sm_90"])
    ('native', 'none')
    >>> kernels_for((12, 0), ["sm_90", "compute_90"])
    'ptx'
    """

    def version(arch: str) -> tuple[int, int]:  # "sm_86" -> (8, 6), "sm_90a" -> (9, 0)
        digits = arch.split("_", 1)[1].rstrip("af")
        return int(digits[:-1]), int(digits[-1])

    sass = [version(a) for a in arch_list if a.startswith("sm_")]
    if any(major == capability[0] and minor <= capability[1] for major, minor in sass):
        return "native"
    ptx = [version(a) for a in arch_list if a.startswith("compute_")]
    return "ptx" if any(arch <= capability for arch in ptx) else "none"


def cuda_mode(driver_cuda: tuple[int, int], wheel_cuda: tuple[int, int]) -> str:
    """'strict' when the driver runs the wheel's CUDA version, else 'minor-version compatibility'
    (same major) or 'too old' (an older major: the wheel cannot start)."""
    if driver_cuda >= wheel_cuda:
        return "strict"
    return "minor-version compatibility" if driver_cuda[0] == wheel_cuda[0] else "too old"


def judge_device(kernels: Kernels, mode: str) -> tuple[bool, str]:
    """Whether a GPU with these kernels runs under this CUDA mode, and why in a few words."""
    if mode == "too old":
        return False, "the driver's CUDA major is older than the wheel's: upgrade the driver"
    if kernels == "none":
        return False, "the wheel has no kernels for this GPU: pick another torch variant"
    if kernels == "ptx" and mode == "minor-version compatibility":
        return False, "only PTX for this GPU, and minor-version compatibility cannot JIT it"
    return True, f"{kernels} kernels, {mode}"


# --- the report ---------------------------------------------------------------------------------


def verdict(report: dict[str, Any], wanted: str) -> str:
    """The report in one paragraph."""
    parts = []
    if not report["gpu_tested"]:
        why = "--device cpu was asked for" if wanted == "cpu" else "torch sees no CUDA GPU"
        parts.append(f"No GPU was tested: {why}; these are the CPU checks only.")
    for entry in report["devices"]:
        failed = [c["name"] for c in entry["checks"] if c["ok"] is False]
        skipped = [c["name"] for c in entry["checks"] if c["ok"] is None]
        state = f"FAILED {', '.join(failed)}" if failed else "passed"
        extra = f" (skipped: {', '.join(skipped)})" if skipped else ""
        parts.append(f"{entry['device']} ({entry['name']}) {state}{extra} in {entry['seconds']} s.")
    if report["ok"]:
        parts.append(
            f"torch {report['torch']} trains gafkd's KD step here"
            + (f" on driver {report['driver']}." if report["driver"] else ".")
        )
    else:
        parts.append("gafkd does not work here as it should: see the failed checks above.")
    return " ".join(parts)


def render(report: dict[str, Any]) -> str:
    """The report as text: one line per check under each device, then the verdict."""
    marks = {True: "ok  ", False: "FAIL", None: "skip"}
    lines = [
        f"torch {report['torch']} (CUDA {report['torch_cuda'] or 'none'}), driver "
        f"{report['driver'] or 'none'} (CUDA {report['driver_cuda'] or 'none'})"
    ]
    for entry in report["devices"]:
        lines.append(f"{entry['device']}: {entry['name']} ({entry['seconds']} s)")
        lines += [f"  {marks[c['ok']]} {c['name']:<11} {c['detail']}" for c in entry["checks"]]
    return "\n".join([*lines, "", report["verdict"]])


def screen(reports: dict[str, dict[str, Any] | str], notes: dict[str, list[str]]) -> Any:
    """Each host's report (or its one-line error) under a heading, with the doctor's notes."""
    from rich.console import Group
    from rich.rule import Rule
    from rich.text import Text

    parts: list[Any] = []
    for alias, report in reports.items():
        parts.append(Rule(alias, align="left"))
        text = f"error: {report}" if isinstance(report, str) else render(report)
        parts += [Text(text), *(Text(f"doctor: {note}") for note in notes.get(alias, []))]
    return Group(*parts)
