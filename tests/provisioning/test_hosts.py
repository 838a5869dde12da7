"""Host records from invoke.yaml, --host resolution and connections."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from invoke.util import yaml

from provisioning import hosts
from provisioning.core import ProvisionError
from provisioning.hosts import Host, LocalConnection, connect, parse_host, select_hosts

ROOT = Path(__file__).resolve().parents[2]
SSH_CONFIG = "Host gpu2\n    HostName 127.0.0.1\n    Port 1\n\nHost *\n    ServerAliveInterval 30\n"


@pytest.fixture
def ssh_config(tmp_path: Path) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text(SSH_CONFIG)
    return path


def test_the_project_invoke_yaml_describes_the_lab_host() -> None:
    configured = yaml.safe_load((ROOT / "invoke.yaml").read_text())["hosts"]
    assert parse_host("lab", configured["lab"]) == Host(
        "lab", group="lab", conda_prefix="/opt/conda", users=(), data_paths=()
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"users": ["x; rm -rf /"]}, "user name 'x; rm -rf /' is not a plain name"),
        ({"users": ["$(id)"]}, "user name '$(id)' is not a plain name"),
        ({"group": "lab group"}, "group name 'lab group' is not a plain name"),
        ({"conda_prefix": "opt/conda"}, "must be absolute"),
        ({"data_paths": ["/srv/a\nb"]}, "must be absolute, on one line"),
        ({"expected_gpus": "two"}, "expected a count >= 0"),
        ({"prefix": "/opt/conda"}, "unknown keys ['prefix']"),
    ],
)
def test_bad_host_settings_are_refused_with_the_value(settings, message) -> None:
    with pytest.raises(ProvisionError, match=re.escape(message)):
        parse_host("lab", settings)


def test_a_path_with_metacharacters_is_kept_verbatim_for_quoting() -> None:
    host = parse_host("lab", {"data_paths": ["/srv/lab; rm -rf /"], "conda_prefix": "/opt/$(id)"})
    assert host.data_paths == ("/srv/lab; rm -rf /",)
    assert host.conda_prefix == "/opt/$(id)"


def test_local_and_invoke_yaml_hosts_and_comma_groups_resolve(ssh_config: Path) -> None:
    configured = {"lab": {"users": ["alice"]}}
    found = select_hosts("lab, local,gpu2", configured, ssh_config)
    assert [h.alias for h in found] == ["lab", "local", "gpu2"]
    assert found[0].users == ("alice",)
    assert found[2] == Host("gpu2")  # only in ~/.ssh/config: the lab's defaults


def test_an_unknown_alias_is_named_and_the_known_ones_listed(ssh_config: Path) -> None:
    with pytest.raises(ProvisionError, match=r"unknown host 'lba'.*known: gpu2, lab, local"):
        select_hosts("lba", {"lab": {}}, ssh_config)


def test_local_is_this_machine() -> None:
    assert isinstance(connect(Host("local")), LocalConnection)


def test_local_put_copies_a_file(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("probe")
    LocalConnection().put(str(source), str(tmp_path / "b.txt"))
    assert (tmp_path / "b.txt").read_text() == "probe"


def write_home_ssh_config() -> Path:
    ssh = Path.home() / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text(SSH_CONFIG)
    return ssh / "known_hosts"


def test_an_unreachable_host_is_one_clear_error() -> None:
    write_home_ssh_config()  # HOME is a temporary folder (tests/conftest.py)
    with pytest.raises(ProvisionError, match=r"cannot reach gpu2 \(127.0.0.1:1\)"):
        connect(Host("gpu2"))


def test_host_keys_are_checked_and_an_unknown_one_says_how_to_trust_it(monkeypatch) -> None:
    import paramiko
    from fabric import Connection

    known_hosts = write_home_ssh_config()
    known_hosts.write_text("")
    seen = {}

    def refuse(self) -> None:
        seen["policy"] = self.client._policy
        raise paramiko.SSHException("Server '[127.0.0.1]:1' not found in known_hosts")

    monkeypatch.setattr(Connection, "open", refuse)
    with pytest.raises(ProvisionError) as error:
        connect(Host("gpu2"))
    assert isinstance(seen["policy"], paramiko.RejectPolicy)
    assert "is not in" in str(error.value)
    assert f"ssh-keyscan -t ed25519 -p 1 -H 127.0.0.1 >> {known_hosts}" in str(error.value)


def test_the_ssh_config_reader_skips_patterns(ssh_config: Path) -> None:
    assert hosts.ssh_aliases(ssh_config) == {"gpu2"}
    assert hosts.ssh_aliases(ssh_config.parent / "missing") == set()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lab_dir": "srv/lab"}, "lab_dir is 'srv/lab'; expected an absolute path"),
        ({"lab_dir": "/srv/lab;id"}, "lab_dir is '/srv/lab;id'"),
        ({"lab_dir": "/srv/{host}/x"}, "lab_dir is '/srv/{host}/x'"),
        ({"ssh_config": "ssh_config"}, "ssh_config is 'ssh_config'; expected an absolute path"),
        ({"known_hosts": 1}, "known_hosts is 1; expected an absolute path"),
    ],
)
def test_bad_lab_dir_and_ssh_files_are_refused(settings, message) -> None:
    with pytest.raises(ProvisionError, match=re.escape(message)):
        parse_host("lab", settings)


def test_lab_dir_and_ssh_files_are_read() -> None:
    settings = {"lab_dir": "/data/{user}/code/", "ssh_config": "~/lab/ssh_config"}
    host = parse_host("lab", settings)
    assert host.lab_dir == "/data/{user}/code"
    assert hosts.ssh_files(host) == (
        Path.home() / "lab/ssh_config",
        Path.home() / ".ssh/known_hosts",
    )


def test_a_host_with_its_own_ssh_config_is_resolved_from_that_file(ssh_config: Path) -> None:
    host = Host("gpu2", ssh_config=str(ssh_config), known_hosts=str(ssh_config.parent / "kh"))
    with pytest.raises(
        ProvisionError, match=rf"cannot reach gpu2 \(127.0.0.1:1\).*in {ssh_config}"
    ):
        connect(host)  # ~/.ssh/config does not exist: the alias came from ssh_config
