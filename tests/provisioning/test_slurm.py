"""Slurm steps: plans from recorded dpkg-query, slurmd -C, NVML probe and systemctl outputs.

The real test host has no slurm packages and no internet, so there `provision --slurm --dry`
is checked to plan the install, skip the rest with a reason and change nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provisioning import slurm, slurm_conf
from provisioning.core import STDIN, Command, ProvisionError, SkipStep, write_file
from provisioning.hosts import Host, parse_host
from provisioning.runner import plan
from tests.provisioning.conftest import FakeConnection, output

ROOT = Path(__file__).resolve().parents[2]


LAB, GPU2 = Host("lab"), Host("gpu2")
KEY = bytes(range(128))  # stands for the controller's munge key
OTHER_KEY = bytes(128)
CONTROLLER_UNITS = slurm.CONTROLLER_UNITS
NOT_INSTALLED = (
    "slurm packages are not installed on lab yet (the slurm-packages step installs them)"
)


class SlurmHost(FakeConnection):
    """A Debian host for the Slurm steps: packages, slurmd -C, NVML, root-only files, units.

    ``replies`` and ``hooks`` still come first; ``sudo=False`` makes every ``sudo -n`` fail as
    on a host where sudo asks for a password.
    """

    def __init__(
        self,
        *,
        packages: str = "none",
        slurmd: str | None = None,
        probe: str = "no-driver",
        cgroup: str = "cgroup2fs",
        key: bytes | None = None,
        stats: dict[str, str] | None = None,
        active: tuple[str, ...] = (),
        enabled: tuple[str, ...] = (),
        sudo: bool = True,
        **kwargs: Any,
    ) -> None:
        units = {unit: "enabled" if unit in enabled else "disabled" for unit in CONTROLLER_UNITS}
        super().__init__(units=units, **kwargs)
        self.installed = slurm_conf.parse_installed(output("slurm_dpkg-query", packages))
        self.slurmd, self.probe, self.cgroup = slurmd, output("nvml-probe", probe), cgroup
        self.key, self.stats, self.active = key, dict(stats or {}), set(active)
        self.can_sudo = sudo

    def answer(self, argv: list[str]) -> tuple[str, str, int]:
        elevated = argv[:3] == ["sudo", "-n", "--"]
        if elevated and not self.can_sudo:
            return "", "sudo: a password is required\n", 1
        plain = argv[3:] if elevated else argv
        if shlex.join(plain) in self.replies or shlex.join(plain) in self.hooks:
            return super().answer(argv)
        match plain:
            case ["dpkg-query", "-W", "-f", _, *names]:
                return "".join(f"{n} ii \n" for n in names if n in self.installed), "", 0
            case ["/usr/sbin/slurmd", "-C"]:
                if self.slurmd is None:
                    return "", "bash: line 1: /usr/sbin/slurmd: No such file or directory\n", 127
                return self.slurmd, "", 0
            case ["python3", "-E", "-s", probe] if probe.endswith("/nvml_probe.py"):
                return self.probe, "", 0
            case ["stat", "-f", "-c", "%T", "/sys/fs/cgroup"]:
                return self.cgroup + "\n", "", 0
            case ["sha256sum", slurm.MUNGE_KEY] if self.key is not None:
                return f"{hashlib.sha256(self.key).hexdigest()}  {slurm.MUNGE_KEY}\n", "", 0
            case ["base64", "-w", "0", slurm.MUNGE_KEY] if self.key is not None:
                return base64.b64encode(self.key).decode(), "", 0
            case ["sha256sum" | "base64", *_]:
                return "", f"sha256sum: {slurm.MUNGE_KEY}: No such file or directory\n", 1
            case ["stat", "-c", "%U:%G %a", path]:
                if path in self.stats:
                    return self.stats[path] + "\n", "", 0
                return "", f"stat: cannot statx '{path}': No such file or directory\n", 1
            case ["systemctl", "is-active", unit]:
                state = "active" if unit in self.active else "inactive"
                return state + "\n", "", 0 if state == "active" else 3
        return self.change(plain) or super().answer(argv)

    def change(self, argv: list[str]) -> tuple[str, str, int] | None:
        """The effect of a change command on this host's state; None for other commands."""
        match argv:
            case ["install", "-D", "-o", owner, "-g", group, "-m", mode, source, target]:
                self.files[target] = self.files[source]
                self.stats[target] = f"{owner}:{group} {mode.lstrip('0')}"
            case ["install", "-d", "-o", owner, "-g", group, "-m", mode, folder]:
                self.stats[folder] = f"{owner}:{group} {mode.lstrip('0')}"
            case ["chmod", mode, path]:
                self.stats[path] = f"{self.stats[path].split()[0]} {mode.lstrip('0')}"
            case ["systemctl", "start" | "restart", unit]:
                self.active.add(unit)
            case ["systemctl", "enable", "--now", unit]:
                self.units[unit] = "enabled"
                self.active.add(unit)
            case ["mariadb", "-e", slurm.CREATE_DATABASE]:
                self.replies[shlex.join(("mariadb", "-N", "-B", "-e", slurm.DATABASE_QUERY))] = (
                    "1\n",
                    0,
                )
            case _:
                return None
        return "", "", 0


def vm(name: str = "vm") -> str:
    """The recorded `slurmd -C` (a 2-core VM with 24105 MiB), for a host called ``name``."""
    return output("slurm_slurmd-C", "vm").replace("NodeName=vm", f"NodeName={name}")


def cluster_of(*pairs: tuple[Host, SlurmHost]) -> slurm.Cluster:
    return slurm.read_cluster([h for h, _ in pairs], {h.alias: c for h, c in pairs})


def outcome(step: slurm.ClusterStep, connection: SlurmHost, host: Host, cluster: slurm.Cluster):
    """The step's plan, or 'skipped: REASON'."""
    try:
        return plan(slurm.bind(step, cluster), connection, host)
    except SkipStep as skipped:
        return f"skipped: {skipped}"


# --- parse_* -----------------------------------------------------------------------------------


def test_parse_slurmd_reads_the_recorded_output() -> None:
    node = slurm_conf.parse_slurmd(vm(), "lab", gpus=1, cgroup=True)
    assert node == slurm_conf.Node("lab", "vm", 2, 1, 1, 2, 1, 24105, 1, True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slurmd: error: Unable to initialize\n", "slurmd -C on lab printed 'slurmd: error"),
        ("", "slurmd -C on lab printed ''"),
        (vm("vm;touch /pwned"), "lab's host name is 'vm;touch'; Slurm's NodeName must be"),
        (vm("$(reboot)"), "lab's host name is '$(reboot)'; Slurm's NodeName must be a plain"),
    ],
)
def test_parse_slurmd_refuses_unparseable_output_and_odd_host_names(text, message) -> None:
    with pytest.raises(ProvisionError, match="^" + re.escape(message)):
        slurm_conf.parse_slurmd(text, "lab", gpus=0, cgroup=False)


def test_parse_installed_reads_dpkg_query() -> None:
    assert slurm_conf.parse_installed(output("slurm_dpkg-query", "controller")) == {
        *slurm.NODE_PACKAGES,
        *slurm.CONTROLLER_PACKAGES,
    }
    assert slurm_conf.parse_installed(output("slurm_dpkg-query", "none")) == set()


def test_conf_changes_names_changed_added_and_removed_keys() -> None:
    old = "ClusterName=lab\nMailProg=/bin/mail\nNodeName=vm CPUs=2\nTaskPlugin=task/none\n"
    new = "ClusterName=lab\nMailProg=/bin/true\nNodeName=vm CPUs=4\nGresTypes=gpu\n"
    assert slurm.conf_changes(old, new) == (
        "changed MailProg, NodeName=vm; added GresTypes; removed TaskPlugin"
    )
    assert slurm.conf_changes(None, new) == "new file, 4 keys"


@pytest.mark.parametrize(("count", "files"), [(1, "/dev/nvidia0"), (4, "/dev/nvidia[0-3]")])
def test_device_files_cover_every_gpu(count, files) -> None:
    assert slurm_conf.device_files(count) == files


def test_parse_node_state_splits_state_and_reason(recorded) -> None:
    assert slurm.parse_node_state(recorded("slurm_sinfo", "down")) == (
        "down*",
        "Not responding",
    )


# --- a fresh controller ------------------------------------------------------------------------


def test_a_fresh_host_plans_the_packages_and_skips_what_needs_them() -> None:
    host = SlurmHost()
    cluster = slurm.read_cluster([LAB], {"lab": host}, facts=False)
    assert outcome(slurm.ensure_packages, host, LAB, cluster) == (
        [
            Command(("apt-get", "update"), sudo=True, why="refresh the package lists"),
            Command(
                (
                    "env",
                    "DEBIAN_FRONTEND=noninteractive",
                    "apt-get",
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "slurmctld",
                    "slurmd",
                    "slurm-client",
                    "munge",
                    "slurmdbd",
                    "mariadb-server",
                ),
                sudo=True,
                why="slurmctld, slurmd, slurm-client, munge, slurmdbd, mariadb-server not "
                "installed",
            ),
        ],
        "slurmctld, slurmd, slurm-client, munge, slurmdbd, mariadb-server are installed",
    )
    cluster = cluster_of((LAB, host))
    assert cluster.nodes == ()
    for name, step in list(slurm.STEPS.items())[1:]:
        assert outcome(step, host, LAB, cluster) == f"skipped: {NOT_INSTALLED}", name


def just_installed(**kwargs: Any) -> SlurmHost:
    """A controller right after apt-get: munge's postinst made a 0600 key and started munge."""
    return SlurmHost(
        packages="controller",
        slurmd=vm(),
        probe="rtx3080",
        key=KEY,
        stats={slurm.MUNGE_KEY: "munge:munge 600"},
        enabled=("munge", "mariadb", "slurmctld", "slurmd", "slurmdbd"),
        active=("munge", "mariadb"),
        **kwargs,
    )


def test_a_controller_after_the_install_gets_exactly_these_changes() -> None:
    host = just_installed()
    host.replies[shlex.join(("mariadb", "-N", "-B", "-e", slurm.DATABASE_QUERY))] = ("0\n", 0)
    cluster = cluster_of((LAB, host))
    munge, _ = outcome(slurm.ensure_munge, host, LAB, cluster)
    assert munge == [
        Command(("chmod", "0400", slurm.MUNGE_KEY), sudo=True, why="only munge reads the key")
    ]
    gres, _ = outcome(slurm.ensure_gres, host, LAB, cluster)
    gres_conf = slurm.HEADER + "NodeName=vm Name=gpu File=/dev/nvidia0\n"
    assert gres == [write_file(slurm.GRES_CONF, gres_conf, why="GPUs per host: vm: 1")]
    conf, _ = outcome(slurm.ensure_conf, host, LAB, cluster)
    wanted = slurm.slurm_conf(cluster)
    assert conf == [
        Command(
            ("install", "-d", "-o", "root", "-g", "root", "-m", "0700", slurm.STATE_SAVE),
            sudo=True,
            why="/var/spool/slurmctld is missing or not root's 0700",
        ),
        Command(
            ("install", "-d", "-o", "root", "-g", "root", "-m", "0755", slurm.SLURMD_SPOOL),
            sudo=True,
            why="/var/spool/slurmd is missing or not root's 0755",
        ),
        write_file(slurm.SLURM_CONF, wanted, why="slurm.conf: new file, 37 keys"),
    ]
    accounting, _ = outcome(slurm.ensure_accounting, host, LAB, cluster)
    dbd = slurm.slurmdbd_conf(cluster, "vm")
    assert accounting == [
        write_file(slurm.MARIADB_CONF, slurm.MARIADB_CONTENT, why="MariaDB: unix socket only"),
        Command(("systemctl", "restart", "mariadb"), sudo=True,
                why="MariaDB stops listening on TCP"),
        Command(("mariadb", "-e", slurm.CREATE_DATABASE), sudo=True,
                why="the slurm_acct_db database is missing"),
        Command(("install", "-D", "-o", "root", "-g", "root", "-m", "0600", STDIN,
                 slurm.SLURMDBD_CONF), sudo=True, why="slurmdbd.conf: new file, 12 keys",
                stdin=dbd),
    ]  # fmt: skip
    services, _ = outcome(slurm.ensure_services, host, LAB, cluster)
    assert services == [
        Command(("systemctl", "start", unit), sudo=True, why=f"{unit} is not running")
        for unit in ("slurmdbd", "slurmctld", "slurmd")
    ]


def test_the_generated_slurm_conf_has_the_keys_the_reference_needs() -> None:
    cluster = cluster_of((LAB, just_installed()))
    keys = slurm.parse_conf(slurm.slurm_conf(cluster))
    assert keys["NodeName=vm"] == (
        "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=21694 "
        "Gres=gpu:1 State=UNKNOWN"
    )  # 90 % of slurmd -C's 24105 MiB
    assert keys["PartitionName=lab"] == "Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    expected = {
        "ClusterName": "lab", "SlurmctldHost": "vm", "StateSaveLocation": "/var/spool/slurmctld",
        "SlurmdSpoolDir": "/var/spool/slurmd", "ProctrackType": "proctrack/cgroup",
        "SelectType": "select/cons_tres", "GresTypes": "gpu", "MailProg": "/bin/true",
        "AccountingStorageType": "accounting_storage/slurmdbd", "AccountingStorageHost":
        "localhost", "JobAcctGatherType": "jobacct_gather/linux", "ReturnToService": "2",
        "SlurmctldParameters": "preempt_send_user_signal",
        "CommunicationParameters": "NoInAddrAny,NoCtldInAddrAny",
    }  # fmt: skip
    assert {key: keys[key] for key in expected} == expected
    dbd = slurm.parse_conf(slurm.slurmdbd_conf(cluster, "vm"))
    assert dbd["CommunicationParameters"] == "NoInAddrAny"
    assert (dbd["DbdHost"], dbd["StorageHost"]) == ("localhost", "localhost")


def test_without_cgroup_v2_processes_are_tracked_by_linuxproc(recorded) -> None:
    host = just_installed()
    host.cgroup = recorded("slurm_cgroup-fs", "tmpfs").strip()
    keys = slurm.parse_conf(slurm.slurm_conf(cluster_of((LAB, host))))
    assert keys["ProctrackType"] == "proctrack/linuxproc"


def test_a_host_without_a_gpu_gets_no_gres_and_says_so() -> None:
    host = just_installed()
    host.probe = output("nvml-probe", "no-driver")
    cluster = cluster_of((LAB, host))
    conf = slurm.slurm_conf(cluster)
    assert "Gres" not in conf
    assert outcome(slurm.ensure_gres, host, LAB, cluster) == (
        [],
        "NVML sees no GPU on any host (vm: 0): no gres.conf and no Gres",
    )
    host.files[slurm.GRES_CONF] = slurm.HEADER + "NodeName=vm Name=gpu File=/dev/nvidia0\n"
    assert outcome(slurm.ensure_gres, host, LAB, cluster)[0] == [
        Command(("rm", "-f", slurm.GRES_CONF), sudo=True, why="no host has a GPU")
    ]


def test_a_data_centre_server_lists_every_gpu() -> None:
    host = just_installed()
    host.probe = output("nvml-probe", "h100")
    cluster = cluster_of((LAB, host))
    assert slurm.gres_conf(cluster) == slurm.HEADER + "NodeName=vm Name=gpu File=/dev/nvidia[0-1]\n"
    assert "Gres=gpu:2 " in slurm.slurm_conf(cluster)


# --- a compliant controller --------------------------------------------------------------------


def compliant(**kwargs: Any) -> tuple[SlurmHost, slurm.Cluster]:
    host = just_installed(**kwargs)
    cluster = cluster_of((LAB, host))
    host.stats = {
        slurm.MUNGE_KEY: "munge:munge 400",
        slurm.STATE_SAVE: "root:root 700",
        slurm.SLURMD_SPOOL: "root:root 755",
        slurm.SLURMDBD_CONF: "root:root 600",
    }
    host.active = set(CONTROLLER_UNITS)
    host.files.update({
        slurm.GRES_CONF: slurm.gres_conf(cluster) or "",
        slurm.SLURM_CONF: slurm.slurm_conf(cluster),
        slurm.MARIADB_CONF: slurm.MARIADB_CONTENT,
        slurm.SLURMDBD_CONF: slurm.slurmdbd_conf(cluster, "vm"),
    })  # fmt: skip
    host.replies.update({
        shlex.join(("mariadb", "-N", "-B", "-e", slurm.DATABASE_QUERY)): ("1\n", 0),
        "sinfo -h -n vm -o '%T|%E'": (output("slurm_sinfo", "idle"), 0),
        "sacctmgr -n -P list cluster format=cluster": (output("slurm_sacctmgr", "lab"), 0),
        "getent hosts vm": (output("slurm_getent-hosts", "vm-loopback"), 0),
        "ss -H -l -t -n": ("LISTEN 0 4096 127.0.0.1:6817 0.0.0.0:*\n", 0),
    })  # fmt: skip
    return host, cluster


def test_a_compliant_controller_plans_nothing_and_says_why() -> None:
    host, cluster = compliant()
    reasons = {}
    for name, step in slurm.STEPS.items():
        commands, reasons[name] = outcome(step, host, LAB, cluster)
        assert commands == [], name
    assert reasons == {
        "slurm-packages": "slurmctld, slurmd, slurm-client, munge, slurmdbd, mariadb-server are "
        "installed",
        "slurm-munge": "/etc/munge/munge.key is the controller's own key, munge:munge 0400; "
        "munge is running",
        "slurm-gres": "/etc/slurm/gres.conf lists the GPUs NVML sees (vm: 1)",
        "slurm-conf": "/etc/slurm/slurm.conf describes 1 nodes; state saved in "
        "/var/spool/slurmctld",
        "slurm-accounting": "MariaDB on its unix socket holds slurm_acct_db; "
        "/etc/slurm/slurmdbd.conf is root's, mode 0600",
        "slurm-services": "slurm daemons are running; sinfo: vm is idle; sacctmgr lists "
        "cluster lab",
        "slurm-ports": "ports: 6817 slurmctld, 6818 slurmd, srun 60001-60100, 6819 slurmdbd "
        "on localhost, bound to 127.0.0.1 (vm); munge and MariaDB on unix sockets; nothing "
        "else is opened and no firewall rule is changed",
    }  # fmt: skip


def test_a_changed_slurm_conf_shows_the_changed_keys_and_restarts_the_daemons() -> None:
    host, cluster = compliant()
    old = host.files[slurm.SLURM_CONF]
    host.files[slurm.SLURM_CONF] = old.replace("MailProg=/bin/true", "MailProg=/usr/bin/mail")
    commands, _ = outcome(slurm.ensure_conf, host, LAB, cluster)
    assert [(c.why, str(c)) for c in commands] == [
        (
            "slurm.conf: changed MailProg",
            "sudo install -D -m 0644 /dev/stdin /etc/slurm/slurm.conf",
        ),
        ("read the new slurm.conf", "sudo systemctl restart slurmctld"),
        ("read the new slurm.conf", "sudo systemctl restart slurmd"),
    ]


def test_a_drained_node_is_one_error_naming_the_reason(monkeypatch) -> None:
    host, cluster = compliant()
    monkeypatch.setattr(slurm, "VERIFY_POLL", (1, 0.0))
    host.replies["sinfo -h -n vm -o '%T|%E'"] = ("drained|Low RealMemory\n", 0)
    with pytest.raises(ProvisionError, match=r"node vm is drained \(Low RealMemory\)"):
        outcome(slurm.ensure_services, host, LAB, cluster)


def test_a_wildcard_listener_is_refused() -> None:
    host, cluster = compliant()
    host.replies["ss -H -l -t -n"] = ("LISTEN 0 80 0.0.0.0:6819 0.0.0.0:*\n", 0)
    with pytest.raises(ProvisionError, match=r"listens on 0.0.0.0:6819 \(port 6819\)"):
        outcome(slurm.check_ports, host, LAB, cluster)


def test_an_admins_slurm_conf_with_other_nodes_is_not_overwritten() -> None:
    host, cluster = compliant()
    host.files[slurm.SLURM_CONF] = "ClusterName=hpc\nNodeName=node01 CPUs=64\n"
    with pytest.raises(ProvisionError, match="lists NodeName=node01, which --host does not name"):
        outcome(slurm.ensure_conf, host, LAB, cluster)


# --- two hosts ---------------------------------------------------------------------------------


def two_hosts() -> tuple[SlurmHost, SlurmHost, slurm.Cluster]:
    controller, _ = compliant()
    node = SlurmHost(packages="node", slurmd=vm("gpu2"), probe="h100", key=OTHER_KEY,
                     stats={slurm.MUNGE_KEY: "munge:munge 600"}, enabled=("munge",),
                     active=("munge",))  # fmt: skip
    for host in (controller, node):
        host.replies["getent hosts vm"] = ("10.0.0.1        vm\n", 0)
        host.replies["getent hosts gpu2"] = ("10.0.0.2        gpu2\n", 0)
    return controller, node, cluster_of((LAB, controller), (GPU2, node))


def test_the_second_host_gets_the_controllers_munge_key_and_restarts_munge() -> None:
    _, node, cluster = two_hosts()
    commands, _ = outcome(slurm.ensure_munge, node, GPU2, cluster)
    digest = hashlib.sha256(KEY).hexdigest()
    assert commands == [
        Command(
            ("install", "-m", "0400", "-o", "munge", "-g", "munge", STDIN, slurm.MUNGE_KEY),
            sudo=True,
            why=f"copy the controller lab's key (sha256 {digest[:12]}...)",
            stdin=KEY,
        ),
        Command(("systemctl", "restart", "munge"), sudo=True, why="munged reads its key at start"),
    ]
    assert KEY.hex() not in repr(cluster)
    assert str(list(KEY)) not in repr(cluster)
    assert all(KEY.hex() not in str(command) for command in commands)
    node.key, node.stats[slurm.MUNGE_KEY] = KEY, "munge:munge 400"
    assert outcome(slurm.ensure_munge, node, GPU2, cluster)[0] == []  # compared by sha256


def test_both_hosts_get_the_same_slurm_conf_and_gres_conf() -> None:
    controller, node, cluster = two_hosts()
    written = {}
    for host, connection in ((LAB, controller), (GPU2, node)):
        connection.files.pop(slurm.SLURM_CONF, None)
        connection.files.pop(slurm.GRES_CONF, None)
        for name in ("slurm-conf", "slurm-gres"):
            commands, _ = outcome(slurm.STEPS[name], connection, host, cluster)
            written[host.alias, name] = [c.stdin for c in commands if c.stdin]
    assert written["lab", "slurm-conf"] == written["gpu2", "slurm-conf"]
    assert (
        written["lab", "slurm-gres"]
        == written["gpu2", "slurm-gres"]
        == [
            slurm.HEADER + "NodeName=vm Name=gpu File=/dev/nvidia0\n"
            "NodeName=gpu2 Name=gpu File=/dev/nvidia[0-1]\n"
        ]
    )
    keys = slurm.parse_conf(written["lab", "slurm-conf"][0])
    assert keys["SlurmctldHost"] == "vm"
    assert keys["AccountingStorageHost"] == "vm"  # sacct works from every node
    assert "Gres=gpu:2" in keys["NodeName=gpu2"]
    assert outcome(slurm.ensure_accounting, node, GPU2, cluster) == (
        "skipped: accounting (slurmdbd, MariaDB) runs on the controller lab"
    )


def test_nodes_that_resolve_to_loopback_cannot_form_a_cluster() -> None:
    _, node, cluster = two_hosts()
    node.replies["getent hosts vm"] = (output("slurm_getent-hosts", "vm-loopback"), 0)
    with pytest.raises(ProvisionError, match=r"vm resolves to 127.0.0.1 on gpu2; .* /etc/hosts"):
        outcome(slurm.ensure_conf, node, GPU2, cluster)


def test_run_cluster_dry_plans_the_packages_on_both_and_skips_the_rest() -> None:
    hosts = {"lab": SlurmHost(), "gpu2": SlurmHost()}
    lines: list[str] = []
    outcomes = slurm.run_cluster([LAB, GPU2], lambda h: hosts[h.alias], list(slurm.STEPS),
                                 dry=True, echo=lines.append)  # fmt: skip
    assert [(o.host, o.step, o.status) for o in outcomes][:3] == [
        ("lab", "slurm-packages", "planned"),
        ("lab", "slurm-munge", "skipped"),
        ("lab", "slurm-gres", "skipped"),
    ]
    assert {o.step: o.status for o in outcomes if o.host == "gpu2"}["slurm-packages"] == "planned"
    assert "gpu2 | slurm-munge | skipped: slurm packages are not installed on gpu2 yet" in (
        "\n".join(lines)
    )
    assert not any(h.ran_local for h in hosts.values())


def test_run_cluster_on_compliant_hosts_is_all_ok_and_a_dead_controller_skips_the_rest() -> None:
    host, _ = compliant()
    outcomes = slurm.run_cluster([LAB], lambda h: host, list(slurm.STEPS), dry=False, echo=print)
    assert {o.status for o in outcomes} == {"ok"}

    def refuse(host: Host) -> Any:
        raise ProvisionError(f"cannot reach {host.alias}")

    outcomes = slurm.run_cluster([LAB, GPU2], refuse, ["slurm-packages", "slurm-munge"],
                                 dry=True, echo=print)  # fmt: skip
    assert [(o.host, o.step, o.status, o.detail) for o in outcomes] == [
        ("lab", "slurm-packages", "failed", "cannot connect: cannot reach lab"),
        ("lab", "slurm-munge", "skipped", "an earlier step failed"),
        ("gpu2", "slurm-packages", "failed", "cannot connect: cannot reach gpu2"),
        ("gpu2", "slurm-munge", "skipped", "an earlier step failed"),
    ]


def test_applied_on_a_controller_after_the_install_then_a_second_run_plans_nothing() -> None:
    host, _ = compliant()
    fresh = just_installed()  # the same host before provisioning, with its read replies
    fresh.replies.update(host.replies)
    fresh.replies[shlex.join(("mariadb", "-N", "-B", "-e", slurm.DATABASE_QUERY))] = ("0\n", 0)
    lines: list[str] = []
    first = slurm.run_cluster([LAB], lambda h: fresh, list(slurm.STEPS), dry=False,
                              echo=lines.append)  # fmt: skip
    assert {o.step: o.status for o in first} == {
        "slurm-packages": "ok", "slurm-munge": "changed", "slurm-gres": "changed",
        "slurm-conf": "changed", "slurm-accounting": "changed", "slurm-services": "changed",
        "slurm-ports": "ok",
    }  # fmt: skip
    assert fresh.stats[slurm.MUNGE_KEY] == "munge:munge 400"
    assert fresh.stats[slurm.SLURMDBD_CONF] == "root:root 600"
    assert fresh.files[slurm.SLURM_CONF] == host.files[slurm.SLURM_CONF]
    assert "lab | slurm-conf | slurm.conf: new file, 37 keys | sudo install -D" in "\n".join(lines)
    second = slurm.run_cluster([LAB], lambda h: fresh, list(slurm.STEPS), dry=False, echo=print)
    assert {o.status for o in second} == {"ok"}


# --- bad inputs --------------------------------------------------------------------------------


def test_without_passwordless_sudo_the_key_read_is_one_clear_error() -> None:
    host = just_installed(sudo=False)
    with pytest.raises(ProvisionError, match="allow passwordless sudo for the login user"):
        outcome(slurm.ensure_munge, host, LAB, cluster_of((LAB, just_installed())))


def test_a_host_without_sudo_is_told_to_install_it() -> None:
    host = just_installed()
    host.answer = lambda argv: ("", "bash: line 1: sudo: command not found\n", 127)  # type: ignore[method-assign]
    with pytest.raises(ProvisionError, match=r"the host has no sudo .*\(apt install sudo\)"):
        slurm.read_stat(host, slurm.MUNGE_KEY)


def test_an_unparseable_slurmd_output_is_one_error_naming_the_host() -> None:
    host = just_installed()
    host.slurmd = "slurmd: fatal: Unable to determine this slurmd's NodeName\n"
    with pytest.raises(ProvisionError, match=r"^slurmd -C on lab printed"):
        cluster_of((LAB, host))


def test_two_hosts_with_one_host_name_are_refused() -> None:
    with pytest.raises(ProvisionError, match="all report the host name vm"):
        cluster_of((LAB, just_installed()), (GPU2, just_installed()))


@pytest.mark.parametrize(
    ("key", "value"),
    [("slurm_cluster", "lab; rm -rf /"), ("slurm_cluster", "Lab"), ("slurm_partition", "a b")],
)
def test_cluster_and_partition_names_that_slurm_or_a_shell_would_misread_are_refused(
    key, value
) -> None:
    with pytest.raises(ProvisionError, match=f"hosts.lab.{key} is {value!r}"):
        parse_host("lab", {key: value})


def test_cluster_settings_default_to_lab() -> None:
    host = parse_host("lab", {})
    assert (host.slurm_cluster, host.slurm_partition) == ("lab", "lab")


# --- the real test host ------------------------------------------------------------------------


@pytest.mark.ssh
def test_a_dry_run_on_the_real_host_plans_the_install_and_changes_nothing(
    testhost, tmp_path
) -> None:
    config = tmp_path / "invoke.json"
    config.write_text(json.dumps({"hosts": {testhost.alias: testhost.settings()}}))
    watched = ("etc/slurm", "etc/munge", "etc/mysql", "var/spool/slurmctld")
    before = {path: (testhost.root / path).exists() for path in watched}
    env = {**os.environ, "INVOKE_RUNTIME_CONFIG": str(config)}
    env.pop("INVOKE_SUDO_PASSWORD", None)
    argv = [sys.executable, "-m", "invoke", "provision", "--host", testhost.alias, "--slurm",
            "--dry", "--json"]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    steps = {o["step"]: o for o in json.loads(done.stdout)["outcomes"]}
    assert steps["slurm-packages"]["status"] == "planned"
    assert any("--no-install-recommends" in c for c in steps["slurm-packages"]["commands"])
    skipped = NOT_INSTALLED.replace("lab", testhost.alias)
    for name in list(slurm.STEPS)[1:]:
        assert (steps[name]["status"], steps[name]["detail"]) == ("skipped", skipped), name
    assert f"{testhost.alias} | slurm-packages | " in done.stderr
    assert {path: (testhost.root / path).exists() for path in watched} == before
    installed = testhost.inside("dpkg-query", "-W", "slurmd")
    assert installed.returncode != 0  # still not installed
