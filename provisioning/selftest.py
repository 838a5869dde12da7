"""``invoke doctor --selftest``: ``gafkd selftest --json`` on lab hosts, held against the verdict.

The selftest runs in the host's gafkd env through the one remote script (`remote.remote_command`).
It exits 1 when a check fails but still prints its report between two marker lines, so the
report comes back either way. What it found on each GPU (compute capability, the wheel's CUDA
and kernels, the driver) is then judged by this package's own rule (`gpu.wheel_fit`, the rule
of ``invoke doctor`` and of the envs step's wheel choice): the two must agree. This module never
imports gafkd; the report is plain JSON (docs/provisioning.md, "doctor --selftest").
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from provisioning import gpu, remote
from provisioning.core import Connection, ProvisionError
from provisioning.hosts import Host, connect, select_hosts

MODES = {  # gpu.wheel_fit's mode -> the mode the selftest's device check reports
    "strict": "strict",
    "minor-compat": "minor-version compatibility",
    "unproven": "minor-version compatibility",
}


def read_selftest(connection: Connection, host: Host) -> dict[str, Any]:
    """The host's ``gafkd selftest --json`` report, passed or failed; ProvisionError if none."""
    marker = f"gafkd-selftest-{secrets.token_hex(8)}"
    command = remote.remote_command(host, "gafkd", "selftest", "--json", "--frame", marker)
    result = connection.run(command, hide=True, warn=True, in_stream=False)
    if marker in result.stdout:
        return remote.parse_status(result.stdout, marker, host, what="gafkd selftest")
    if "invalid choice: 'selftest'" in result.stderr:
        raise ProvisionError(
            f"the gafkd on {host.alias} is older than this one (it has no selftest); update it: "
            f"invoke launch --host {host.alias} syncs and installs this checkout"
        )
    if "No module named gafkd" in result.stderr:
        raise ProvisionError(
            f"the env on {host.alias} ({host.python}) has no gafkd: invoke launch --host "
            f"{host.alias} syncs and installs this checkout there"
        )
    remote.check(result, host, "gafkd selftest")
    raise ProvisionError(
        f"gafkd selftest on {host.alias} printed no report; run gafkd selftest there to see why"
    )


def agreement(report: Mapping[str, Any]) -> list[str]:
    """Whether the GPUs the selftest tested ran as `gpu.wheel_fit` judges their driver and
    wheel; lines starting with 'DISAGREES' mean one of the two is wrong."""
    if not report.get("gpu_tested"):
        return ["no GPU was tested, so there is nothing to hold against the driver verdict"]
    if not report.get("driver") or not report.get("torch_cuda"):
        return ["the selftest read no driver version (no NVML), so nothing to compare"]
    version = str(report["torch"]).split("+")[0]
    cuda = gpu.parse_driver_version(str(report["torch_cuda"]))[:2]
    wheel = (cuda[0], cuda[1])
    devices = [
        (check["ok"], check.get("values") or {})
        for entry in report["devices"]
        for check in entry["checks"]
        if check["name"] == "device"
    ]
    gpus = tuple(
        gpu.Gpu(index, str(values.get("name", "GPU")), int(values.get("memory_total", 0)), None,
                _capability(values.get("capability")))
        for index, (_ok, values) in enumerate(devices)
    )  # fmt: skip
    driver_cuda = gpu.parse_driver_version(str(report.get("driver_cuda") or "0.0"))[:2]
    probe = gpu.Probe(str(report["driver"]), (driver_cuda[0], driver_cuda[1]), gpus)
    fit = gpu.wheel_fit(version, wheel, probe)
    label = f"torch {report['torch']} ({gpu.cuda_label(wheel)}) on driver {report['driver']}"
    ran = all(ok for ok, _values in devices)
    modes = {values.get("cuda_mode") for _ok, values in devices}
    lines = []
    if fit.mode == "no" and ran:
        lines.append(f"DISAGREES: doctor refuses {label} ({fit.why}), yet it ran every check")
    elif fit.mode != "no" and not ran:
        lines.append(f"DISAGREES: doctor accepts {label} ({fit.why}), yet a device check failed")
    elif fit.mode != "no" and modes != {MODES[fit.mode]}:
        lines.append(
            f"DISAGREES: doctor runs {label} {MODES[fit.mode]}, the selftest found "
            f"{', '.join(sorted(map(str, modes)))}"
        )
    kernels = {values.get("kernels") for _ok, values in devices}
    if fit.mode == "minor-compat" and kernels != {"native"}:
        lines.append(
            f"DISAGREES: provisioning's kernel table (gpu.WHEEL_SASS) says {label} has native "
            f"kernels for every GPU; torch's arch list says {', '.join(map(str, kernels))}"
        )
    return lines or [f"agrees: {label} runs {MODES[fit.mode]} ({fit.why})" if fit.mode != "no"
                     else f"agrees: {label} does not run here ({fit.why})"]  # fmt: skip


def _capability(text: Any) -> tuple[int, int] | None:
    if not text:
        return None
    major, minor = str(text).split(".")
    return int(major), int(minor)


def selftest_hosts(
    names: str, configured: Mapping[str, Any], ssh_config: Path
) -> tuple[dict[str, dict[str, Any] | str], dict[str, list[str]]]:
    """Each host's report (or its one-line error) and the doctor's notes on it; hosts at once."""
    hosts = select_hosts(names, configured, ssh_config)

    def one(host: Host) -> dict[str, Any] | str:
        try:
            return read_selftest(connect(host), host)
        except ProvisionError as error:
            return str(error)

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        reports = dict(zip([host.alias for host in hosts], pool.map(one, hosts), strict=True))
    notes = {
        alias: agreement(report) for alias, report in reports.items() if isinstance(report, dict)
    }
    return reports, notes


def selftest_failed(
    reports: Mapping[str, dict[str, Any] | str], notes: Mapping[str, list[str]]
) -> list[str]:
    """One line per host whose selftest failed, did not run, or disagrees with the verdict."""
    failed = []
    for alias, report in reports.items():
        if isinstance(report, str):
            failed.append(f"{alias}: {report}")
        elif not report.get("ok"):
            failed.append(f"{alias}: the selftest failed: {report.get('verdict', '')}")
        failed += [f"{alias}: {note}" for note in notes.get(alias, []) if note.startswith("DIS")]
    return failed
