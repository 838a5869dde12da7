"""System check: Debian and Ubuntu (and derivatives) pass; anything else stops provisioning."""

from __future__ import annotations

import pytest

from provisioning import system
from provisioning.core import ProvisionError
from provisioning.hosts import Host
from provisioning.runner import plan

LAB = Host("lab")


@pytest.mark.parametrize(
    ("case", "expected"), [("ubuntu-2404", "ubuntu"), ("debian-12", "debian"), ("rocky-9", None)]
)
def test_parse_os_release_reads_recorded_files(recorded, case: str, expected: str | None) -> None:  # type: ignore[no-untyped-def]
    assert system.family(system.parse_os_release(recorded("os-release", case))) == expected


def test_parse_os_release_names_a_broken_line() -> None:
    with pytest.raises(ProvisionError, match="cannot read the line"):
        system.parse_os_release('PRETTY_NAME="unterminated\n')


@pytest.mark.parametrize("case", ["ubuntu-2404", "debian-12"])
def test_check_os_passes_debian_and_ubuntu_with_an_ok_reason(fake, recorded, case: str) -> None:  # type: ignore[no-untyped-def]
    connection = fake(files={system.OS_RELEASE: recorded("os-release", case)})
    commands, reason = plan(system.check_os, connection, LAB)
    assert commands == []
    assert reason.startswith(("Ubuntu 24.04", "Debian GNU/Linux"))


def test_check_os_refuses_another_system(fake, recorded) -> None:  # type: ignore[no-untyped-def]
    connection = fake(files={system.OS_RELEASE: recorded("os-release", "rocky-9")})
    with pytest.raises(ProvisionError, match=r"lab runs Rocky Linux 9\.4.*Debian and Ubuntu"):
        plan(system.check_os, connection, LAB)


def test_check_os_refuses_a_host_without_os_release(fake) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProvisionError, match="has no /etc/os-release"):
        plan(system.check_os, fake(), LAB)
