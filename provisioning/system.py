"""System: the host is a Debian or Ubuntu machine, the only kind these steps know (check only).

The steps run apt-family tools, systemd, getent/useradd and Debian paths; on another system they
would plan wrong changes, so provisioning stops before any step when the host is something else.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator

from provisioning.core import Command, Connection, ProvisionError, read_file
from provisioning.hosts import Host

# --- constants ---------------------------------------------------------------------------------

SUPPORTED = ("debian", "ubuntu")
OS_RELEASE = "/etc/os-release"


# --- parse_* -----------------------------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    """``/etc/os-release`` (os-release(5): KEY=value lines, shell quoting) -> a dict.

    >>> parse_os_release('ID=ubuntu\\nVERSION_ID="24.04"\\n# comment\\n')["VERSION_ID"]
    '24.04'
    """
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError as error:
            raise ProvisionError(f"{OS_RELEASE}: cannot read the line {line!r} ({error})") from None
        fields[key] = words[0] if words else ""
    return fields


def family(fields: dict[str, str]) -> str | None:
    """'debian' or 'ubuntu' when the system is one of them or derives from one, else None."""
    for name in [fields.get("ID", ""), *fields.get("ID_LIKE", "").split()]:
        if name in SUPPORTED:
            return name
    return None


# --- read_* ------------------------------------------------------------------------------------


def read_os(connection: Connection) -> dict[str, str]:
    text = read_file(connection, OS_RELEASE)
    if text is None:
        raise ProvisionError(
            f"the host has no {OS_RELEASE}; provisioning supports Debian and Ubuntu hosts only"
        )
    return parse_os_release(text)


# --- check_* -----------------------------------------------------------------------------------


def check_os(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """Refuse a host that is not Debian or Ubuntu (or derived from them); never changes anything."""
    yield from ()  # check only
    fields = read_os(connection)
    name = fields.get("PRETTY_NAME") or fields.get("ID", "unknown")
    if family(fields) is None:
        raise ProvisionError(
            f"{host.alias} runs {name}; provisioning supports Debian and Ubuntu (and systems "
            "derived from them) only. Provision this host by hand (docs/provisioning.md lists "
            "what each step does), or leave it out of --host"
        )
    return f"{name}"
