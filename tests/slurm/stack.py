"""A real single-node Slurm for the tests, from Debian packages, on loopback only.

Daemons, in start order: munged (reused when one already answers on its default socket),
mariadbd (unix socket only), slurmdbd, slurmctld (clean start) and slurmd, which advertises
CPUS CPUs and GPUS fake GPUs (clones of /dev/null). Every config, state, socket, pid and log
file lives in one state directory; nothing under /etc is written. Clients find the cluster
through ``SLURM_CONF`` (`Cluster.env`). The three Slurm daemons run in private UTS and mount
namespaces (`unshare`) whose host name is NODE and whose /etc/hosts maps it to 127.0.0.1, so
that they bind to loopback (with NoInAddrAny they bind to what the host name resolves to).
Whatever is missing (root, a package, a free port, a daemon that dies) becomes `Unavailable`
with the reason. docs/development.md, "Slurm test stack", has the rest.

Load it by path (tests/ is not a package), as tests/slurm/conftest.py does, and use
`running()`; it sets ``os.environ["SLURM_CONF"]`` while the cluster runs, for submitit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

NODE = "gafkd-ci"  # host name inside the daemons' namespaces, node and cluster name
PARTITION = "debug"
CPUS = 4  # advertised; more than the machine has, hence SlurmdParameters=config_overrides
GPUS = 2  # fake GPUs: character devices 1:3 (like /dev/null) in <state>/dev
DEFAULT_PORTS = (6817, 6818, 6819)  # slurmctld, slurmd, slurmdbd
STATE_PREFIX = "gafkd-slurm-"  # default state dirs: /var/tmp/gafkd-slurm-<pytest pid>
MUNGE_SOCKET = "/run/munge/munge.socket.2"  # the system munged's, reused when it answers
TOOLS = {  # command: the Debian package that has it
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "slurmdbd": "slurmdbd",
    "sbatch": "slurm-client",
    "munged": "munge",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-client",
    "unshare": "util-linux",
    "runuser": "util-linux",
}
PACKAGES = "slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
# In new UTS and mount namespaces: name the host, give it its own /etc/hosts, become the daemon
# (which forks into the background, so the launcher returns once it has started).
LAUNCH = 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"'
# MariaDB on a unix socket only, small redo log; the same options for install-db and the server.
MARIADB_OPTIONS = ("--skip-networking", "--innodb-log-file-size=8M", "--skip-name-resolve")


class Unavailable(Exception):
    """The Slurm stack cannot come up on this machine; the message says why."""


@dataclass(frozen=True)
class Daemon:
    """A daemon this stack started: its command name, pid file and log file."""

    name: str
    pid_file: Path
    log: Path


@dataclass(frozen=True)
class Cluster:
    """A running single-node cluster and the files and environment its clients need."""

    state: Path
    conf: Path  # slurm.conf
    env: dict[str, str]  # SLURM_CONF (and nothing else clients need)
    ports: tuple[int, int, int]  # slurmctld, slurmd, slurmdbd, all on 127.0.0.1
    daemons: tuple[Daemon, ...] = ()  # the ones this stack started, in start order
    partition: str = PARTITION
    node: str = NODE
    cpus: int = CPUS
    gpus: int = GPUS
    namespaces: tuple[str, ...] = field(default=(), compare=False)  # of the Slurm daemons

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A client command (sbatch, scancel, ...) against this cluster."""
        return run(argv, check=check, env={**os.environ, **self.env}, timeout=60)

    def controller_up(self) -> bool:
        return "is UP" in self.run("scontrol", "ping", check=False).stdout

    def node_idle(self) -> bool:
        return self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle"

    def scontrol(self, *args: str) -> str:
        return self.run("scontrol", *args).stdout

    def squeue_json(self) -> dict[str, Any]:
        return json.loads(self.run("squeue", "--json").stdout)  # type: ignore[no-any-return]

    def sacct_json(self, *args: str) -> dict[str, Any]:
        """``sacct --json`` over every job of this cluster (``-S 2000-01-01``), plus ``args``."""
        out = self.run("sacct", "--json", "-S", "2000-01-01", *args).stdout
        return json.loads(out)  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Cancel every job, then stop the daemons in reverse order; leave the state dir."""
        if any(d.name == "slurmctld" and command_name(read_pid(d.pid_file)) for d in self.daemons):
            self.run("scancel", "--quiet", f"--partition={self.partition}", check=False)
            wait_for(lambda: not self.run("squeue", "-h", check=False).stdout.strip(), 10)
        stop_daemons(self.daemons, self.namespaces)


def run(
    argv: Sequence[str], *, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run argv here; with ``check`` a failure becomes Unavailable with its output's end."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"`{' '.join(argv[:3])} ...` failed: {error}") from error
    if check and done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(
            f"`{' '.join(argv[:3])} ...` failed ({done.returncode}): {' / '.join(tail)}"
        )
    return done


def wait_for(ready: Callable[[], bool], seconds: float) -> bool:
    """Poll ``ready`` every 0.1 s until it is true (True) or ``seconds`` have passed (False)."""
    deadline = time.monotonic() + seconds
    while True:
        if ready():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def command_name(pid: int | None) -> str | None:
    """The process's command name, or None when it is gone or a zombie."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return None if state in "ZX" else name


def gone(pid: int) -> bool:
    return command_name(pid) is None


def log_tail(log: Path, lines: int = 5) -> str:
    if not log.is_file():
        return f"no log at {log}"
    return " / ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])


def check_tools() -> None:
    """Root and every command the stack runs, or Unavailable naming what is missing."""
    if os.geteuid() != 0:
        raise Unavailable("the Slurm test stack needs root (daemons, unshare, mknod)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise Unavailable(
            f"{', '.join(missing)} not found on PATH (/usr/sbin on it?); install the Debian "
            "packages: "
            f"apt-get install --no-install-recommends {PACKAGES}"
        )


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_ports() -> tuple[int, int, int]:
    """6817-6819 when all are free on 127.0.0.1, else three ports the kernel hands out."""
    if all(port_free(port) for port in DEFAULT_PORTS):
        return DEFAULT_PORTS
    probes = [socket.socket() for _ in range(3)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        ctld, slurmd, dbd = (int(probe.getsockname()[1]) for probe in probes)
    except OSError as error:
        raise Unavailable(f"no free ports on 127.0.0.1 for Slurm: {error}") from error
    finally:
        for probe in probes:
            probe.close()
    return ctld, slurmd, dbd


def listening(port: int) -> bool:
    with socket.socket() as client:
        client.settimeout(0.5)
        return client.connect_ex(("127.0.0.1", port)) == 0


def slurm_conf(state: Path, ports: tuple[int, int, int], munge: str, memory_mb: int) -> str:
    ctld, slurmd, dbd = ports
    return f"""ClusterName={NODE}
SlurmctldHost={NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge}
AccountingStoragePass={munge}
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SrunPortRange=60001-60100
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd}
JobCompType=jobcomp/none
SwitchType=switch/none
GresTypes=gpu
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/slurmd
SlurmctldPidFile={state}/run/slurmctld.pid
SlurmdPidFile={state}/run/slurmd.pid
SlurmctldLogFile={state}/log/slurmctld.log
SlurmdLogFile={state}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MinJobAge=300
KillWait=5
MaxArraySize=1001
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={memory_mb} Gres=gpu:{GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


def slurmdbd_conf(state: Path, port: int, munge: str) -> str:
    return f"""AuthType=auth/munge
AuthInfo=socket={munge}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={port}
CommunicationParameters=NoInAddrAny
SlurmUser=root
LogFile={state}/log/slurmdbd.log
PidFile={state}/run/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
"""


def memory_mb() -> int:
    """90 % of the memory slurmd detects (more would drain the node: Low RealMemory)."""
    out = run(["slurmd", "-C"]).stdout
    fields = dict(word.split("=", 1) for word in out.split() if "=" in word)
    return int(int(fields.get("RealMemory", "1000")) * 0.9)


def start_munge(state: Path) -> tuple[str, Daemon | None]:
    """The munged socket to use, and the daemon when this stack had to start one."""
    if run(["munge", "-n", "-S", MUNGE_SOCKET], check=False).returncode == 0:
        return MUNGE_SOCKET, None  # someone else's munged; reuse it, never stop it
    folder = state / "munge"
    folder.mkdir(mode=0o755)
    shutil.chown(folder, "munge", "munge")
    daemon = Daemon("munged", folder / "munged.pid", folder / "munged.log")
    sock = str(folder / "munge.socket.2")
    files = [f"--pid-file={daemon.pid_file}", f"--log-file={daemon.log}"]
    files += [f"--socket={sock}", f"--seed-file={folder / 'munged.seed'}"]
    run(["runuser", "-u", "munge", "--", "munged", *files], timeout=30)
    if not wait_for(lambda: run(["munge", "-n", "-S", sock], check=False).returncode == 0, 10):
        raise Unavailable(f"munged did not answer on {sock}: {log_tail(daemon.log)}")
    return sock, daemon


def start_mariadb(state: Path) -> Daemon:
    """A private MariaDB: own datadir, unix socket in the state dir, no TCP."""
    folder = state / "mysql"
    folder.mkdir(mode=0o755)
    shutil.chown(folder, "mysql", "mysql")
    daemon = Daemon("mariadbd", folder / "mariadbd.pid", folder / "mariadbd.log")
    data, sock = folder / "data", folder / "mysqld.sock"
    common = ["--no-defaults", "--user=mysql", f"--datadir={data}", *MARIADB_OPTIONS]
    install = ["mariadb-install-db", *common, "--auth-root-authentication-method=socket"]
    run([*install, "--skip-test-db"], timeout=120)
    server = ["mariadbd", *common, f"--socket={sock}", f"--pid-file={daemon.pid_file}"]
    with (folder / "mariadbd.out").open("w") as out:  # setsid -f: detached, reaped by init
        subprocess.run(
            ["setsid", "-f", *server, f"--log-error={daemon.log}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=False, timeout=30,
        )  # fmt: skip
    client = ["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root", "-e", "select 1"]
    if not wait_for(lambda: run(client, check=False).returncode == 0, 30):
        raise Unavailable(f"mariadbd did not answer on {sock}: {log_tail(daemon.log)}")
    return daemon


def launch(state: Path, env: dict[str, str], name: str, *argv: str) -> None:
    """Start a Slurm daemon in its own namespaces, named NODE, with NODE at 127.0.0.1."""
    unshare = ["unshare", "--uts", "--mount", "--propagation", "private", "--", "sh", "-c"]
    with (state / "log" / f"{name}.out").open("w") as out:
        done = subprocess.run(
            [*unshare, LAUNCH, "sh", NODE, str(state / "etc" / "hosts"), name, *argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, check=False, timeout=60,
        )  # fmt: skip
    if done.returncode != 0:
        raise Unavailable(
            f"{name} did not start ({done.returncode}): {log_tail(state / 'log' / f'{name}.out')}"
            f" / {log_tail(state / 'log' / f'{name}.log')}"
        )


def wait_daemon(daemon: Daemon, ready: Callable[[], bool], what: str, seconds: float) -> None:
    """Wait until ``ready``; fail early, with the log's end, when the daemon died."""

    def ready_or_dead() -> bool:
        pid = read_pid(daemon.pid_file)
        if pid is not None and command_name(pid) is None:
            raise Unavailable(f"{daemon.name} exited at start: {log_tail(daemon.log)}")
        return ready()

    if not wait_for(ready_or_dead, seconds):
        raise Unavailable(f"{daemon.name}: {what} after {seconds} s: {log_tail(daemon.log)}")


def namespaces_of(daemons: Sequence[Daemon]) -> tuple[str, ...]:
    """The private UTS namespaces of the running Slurm daemons among ``daemons``."""
    found = []
    for daemon in daemons:
        pid = read_pid(daemon.pid_file)
        if daemon.name.startswith("slurm") and command_name(pid) == daemon.name:
            with suppress(OSError):
                found.append(os.readlink(f"/proc/{pid}/ns/uts"))
    own = os.readlink("/proc/self/ns/uts")  # never this machine's own namespace
    return tuple(namespace for namespace in found if namespace != own)


def processes_in(namespaces: Sequence[str]) -> list[int]:
    """PIDs in these UTS namespaces: the Slurm daemons' and their jobs', nobody else's."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if os.readlink(entry / "ns" / "uts") in namespaces:
                    pids.append(int(entry.name))
    return pids


def stop_daemons(daemons: Sequence[Daemon], namespaces: Sequence[str] = ()) -> None:
    """Stop each daemon by its pid file (name checked), last first; SIGKILL after 10 s."""
    for daemon in reversed(daemons):
        pid = read_pid(daemon.pid_file)
        if pid is None or command_name(pid) != daemon.name:
            continue  # gone, or a stale pid file naming another process
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_for(partial(gone, pid), 10):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(partial(gone, pid), 5)
    left = [pid for pid in processes_in(namespaces) if command_name(pid)] if namespaces else []
    for pid in left:  # job steps that outlived slurmd
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(command_name(pid) for pid in left), 5)


def daemons_of(state: Path) -> tuple[Daemon, ...]:
    """The daemons a stack in ``state`` starts, in start order (munged only if it did)."""
    log = state / "log"
    daemons = [
        Daemon("mariadbd", state / "mysql" / "mariadbd.pid", state / "mysql" / "mariadbd.log"),
        Daemon("slurmdbd", state / "run" / "slurmdbd.pid", log / "slurmdbd.log"),
        Daemon("slurmctld", state / "run" / "slurmctld.pid", log / "slurmctld.log"),
        Daemon("slurmd", state / "run" / "slurmd.pid", log / "slurmd.log"),
    ]
    if (state / "munge").is_dir():
        daemons.insert(0, Daemon("munged", state / "munge/munged.pid", state / "munge/munged.log"))
    return tuple(daemons)


def clean_stale(parent: Path) -> None:
    """Stacks left by test sessions that died without their teardown (their PID is gone)."""
    for state in parent.glob(f"{STATE_PREFIX}*"):
        owner = state.name.removeprefix(STATE_PREFIX).split("-")[0]
        if owner.isdigit() and int(owner) != os.getpid() and command_name(int(owner)) is None:
            daemons = daemons_of(state)
            stop_daemons(daemons, namespaces_of(daemons))
            shutil.rmtree(state, ignore_errors=True)


def bring_up(state: Path) -> Cluster:
    """Start the whole stack with ``state`` (an empty or absent folder) holding its files.

    On failure whatever was started is stopped again before Unavailable is raised.
    """
    check_tools()
    ports = choose_ports()
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)  # munge and mysql reach their folders in it
    if any(state.iterdir()):
        raise Unavailable(f"state dir {state} is not empty; give an empty one")
    for folder in ("etc", "run", "log", "ctld", "slurmd", "dev"):
        (state / folder).mkdir()
    for index in range(GPUS):
        run(["mknod", str(state / "dev" / f"gpu{index}"), "c", "1", "3"])
    conf = state / "etc" / "slurm.conf"
    env = {"SLURM_CONF": str(conf)}
    started: list[Daemon] = []
    cluster = Cluster(state, conf, env, ports)
    try:
        munge, munged = start_munge(state)
        started += [munged] if munged else []
        (state / "etc" / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.0.1\t{NODE}\n")
        conf.write_text(slurm_conf(state, ports, munge, memory_mb()))
        gres = f"NodeName={NODE} Name=gpu File={state}/dev/gpu[0-{GPUS - 1}]\n"
        (state / "etc" / "gres.conf").write_text(gres)
        dbd_conf = state / "etc" / "slurmdbd.conf"  # slurmdbd reads it next to SLURM_CONF
        dbd_conf.write_text(slurmdbd_conf(state, ports[2], munge))
        dbd_conf.chmod(0o600)
        started.append(start_mariadb(state))
        daemon_env = {**os.environ, **env, "MYSQL_UNIX_PORT": str(state / "mysql/mysqld.sock")}
        slurmdbd, slurmctld, slurmd = daemons_of(state)[-3:]
        started.append(slurmdbd)
        launch(state, daemon_env, "slurmdbd")
        wait_daemon(slurmdbd, lambda: listening(ports[2]), "no listener on its port", 30)
        started.append(slurmctld)
        launch(state, daemon_env, "slurmctld", "-c", "-i", "-f", str(conf))
        wait_daemon(slurmctld, cluster.controller_up, "not UP", 30)
        started.append(slurmd)
        launch(state, daemon_env, "slurmd", "-f", str(conf))
        wait_daemon(slurmd, cluster.node_idle, "not idle", 30)
    except BaseException:
        stop_daemons(started, namespaces_of(started))
        raise
    return Cluster(state, conf, env, ports, tuple(started), namespaces=namespaces_of(started))


def default_state() -> Path:
    """/var/tmp/gafkd-slurm-<pid>-<time>: reachable by the munge and mysql users."""
    return Path("/var/tmp") / f"{STATE_PREFIX}{os.getpid()}-{time.time_ns() % 10**9}"


@contextmanager
def running(state: Path | None = None) -> Iterator[Cluster]:
    """A running cluster, with SLURM_CONF set in os.environ; afterwards stopped and restored.

    The default state dir (`default_state`) is removed afterwards; a given one is kept.
    """
    if state is None:
        clean_stale(Path("/var/tmp"))
    folder = state or default_state()
    previous = os.environ.get("SLURM_CONF")
    try:
        cluster = bring_up(folder)
        os.environ["SLURM_CONF"] = str(cluster.conf)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if state is None:
            shutil.rmtree(folder, ignore_errors=True)
