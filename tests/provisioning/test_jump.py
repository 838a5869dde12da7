"""ProxyJump hops check host keys like the final host, against two real test hosts.

``testhost2`` (127.0.0.3) is reached through ``testhost`` (127.0.0.2) with ``ProxyJump
testhost`` (tests/provisioning/testhost.py ``bring_up_hosts``; the test sshd keeps
AllowTcpForwarding's default, yes). Fabric opens the hop with its own paramiko client, which
accepts any key (AutoAddPolicy) unless ``connect`` gives it known_hosts and RejectPolicy too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioning.core import ProvisionError
from provisioning.hosts import Host, connect
from tests.provisioning import testhost

pytestmark = pytest.mark.ssh

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """testhost and testhost2, running, in one ssh_config and one known_hosts."""
    running = testhost.bring_up_hosts(tmp_path_factory.mktemp("jump"), name="jump")
    try:
        found = next(running)
    except (testhost.Unavailable, OSError) as error:
        running.close()
        pytest.skip(f"two ssh test hosts unavailable: {error}")
    yield found
    running.close()


def jump_files(hosts: list[Any], folder: Path, gateway_key: str | None) -> Host:
    """testhost2 behind ``ProxyJump testhost``; the gateway's known_hosts line is kept, left
    out (None) or replaced by another key."""
    gateway, target = hosts
    config = gateway.ssh_config.read_text()
    config = config.replace("Host testhost2\n", "Host testhost2\n    ProxyJump testhost\n", 1)
    assert "ProxyJump testhost" in config
    lines = gateway.known_hosts.read_text().splitlines()
    mine = [line for line in lines if gateway.address in line.split()[0]]
    theirs = [line for line in lines if line not in mine]
    assert mine
    assert theirs
    if gateway_key == "other":
        theirs += [f"{line.split()[0]} {OTHER_KEY}" for line in mine]
    elif gateway_key == "kept":
        theirs += mine
    folder.mkdir()
    (folder / "ssh_config").write_text(config)
    (folder / "known_hosts").write_text("\n".join(theirs) + "\n")
    known = str(folder / "known_hosts")
    return Host(target.alias, ssh_config=str(folder / "ssh_config"), known_hosts=known)


def test_a_jump_host_with_a_known_key_takes_us_to_the_host(
    hosts: list[Any], tmp_path: Path
) -> None:
    connection = connect(jump_files(hosts, tmp_path / "ok", "kept"))
    try:
        assert connection.gateway.is_connected  # type: ignore[attr-defined]
        done = connection.run("hostname", hide=True, in_stream=False)
        assert done.stdout.strip() == "testhost2"
    finally:
        connection.close()  # type: ignore[attr-defined]
        connection.gateway.close()  # type: ignore[attr-defined]


def test_a_jump_host_whose_key_is_not_known_is_refused_in_one_line(
    hosts: list[Any], tmp_path: Path
) -> None:
    host = jump_files(hosts, tmp_path / "unknown", None)
    with pytest.raises(ProvisionError) as error:
        connect(host)
    message = str(error.value)
    assert message.startswith("the host key of jump host testhost (127.0.0.2:"), message
    assert "on the way to testhost2" in message
    assert f"is not in {host.known_hosts}, so it is refused" in message
    assert "ssh-keyscan -t ed25519 -p" in message
    assert "127.0.0.2" in message
    assert "\n" not in message


def test_a_jump_host_whose_key_changed_is_refused_in_one_line(
    hosts: list[Any], tmp_path: Path
) -> None:
    host = jump_files(hosts, tmp_path / "changed", "other")
    with pytest.raises(ProvisionError) as error:
        connect(host)
    message = str(error.value)
    assert message.startswith("the host key of jump host testhost (127.0.0.2:"), message
    assert f"differs from the one in {host.known_hosts}" in message
    assert "\n" not in message
