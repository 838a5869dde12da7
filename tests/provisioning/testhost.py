"""The real test host: a Debian bookworm root filesystem served by its own sshd on 127.0.0.2.

Built once per machine with debootstrap (about a minute) and cached in ``$GAFKD_TESTHOST_CACHE``
(default /var/tmp/gafkd-testhost). Each test session gets a fresh copy, served by the copy's own
``/usr/sbin/sshd`` under chroot, inside a private mount and UTS namespace: its ``/proc`` mount
and its hostname exist only for that daemon and vanish with it, so nothing stays mounted here.
Whatever is missing (root, debootstrap, a Debian mirror, unshare) becomes `Unavailable`, which
the fixture turns into a skip with that reason. docs/development.md, "Test host", has the rest.
`bring_up_hosts` brings up several at once (orchestration.md A.4): each its own copy (so its own
lab folders), loopback address and hostname, all in one ssh_config and known_hosts.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path

ALIAS = "testhost"
ADDRESS = "127.0.0.2"  # loopback only; any 127.x.y.z works on Linux without configuration
TWO_HOSTS = ((ALIAS, ADDRESS), ("testhost2", "127.0.0.3"))  # (alias and hostname, address)
SUITE = "bookworm"
PACKAGES = "openssh-server,sudo,rsync,systemd,python3,ca-certificates,procps,cron"
SUDO_USER, SUDO_PASSWORD = "labadmin", "lab-sudo-password"  # sudo with a password
LAB_USERS = ("alice", "bob")  # lab members with accounts on the host, for the group step
SSHD_CONFIG = "/etc/ssh/gafkd_sshd_config"  # inside the host
PID_FILE = "/run/gafkd-sshd.pid"  # inside the host
SSHD_LOG = "/var/log/gafkd-sshd.log"  # inside the host
# In the new namespaces: name the host, mount its own /proc, then become its sshd (it forks
# into the background once it listens, so the launcher returns when the port is open).
LAUNCH = (
    'hostname "$3" && mount -t proc proc "$1/proc" && '
    'exec chroot "$1" /usr/sbin/sshd -f "$2" -E "$4"'
)


class Unavailable(Exception):
    """The test host cannot come up on this machine; the message says why."""


@dataclass(frozen=True)
class SshHost:
    """A running test host: its alias, its files seen from here, and the client's files."""

    alias: str
    root: Path  # the host's / as seen from this machine
    port: int
    ssh_config: Path  # Host blocks: ALIAS (root) and ALIAS-sudo (SUDO_USER)
    known_hosts: Path
    identity: Path
    sudo_password: str = SUDO_PASSWORD  # of ALIAS-sudo's user
    users: tuple[str, ...] = LAB_USERS  # accounts on the host, not yet in any lab group
    address: str = ADDRESS  # the loopback address its sshd listens on

    def settings(self, **extra: object) -> dict[str, object]:
        """An invoke.yaml ``hosts:`` entry for this host, plus ``extra`` settings."""
        files = {"ssh_config": str(self.ssh_config), "known_hosts": str(self.known_hosts)}
        return {**files, **extra}

    def login(self, user: str) -> str:
        """Let ``user`` (an account on the host) log in with this session's key; returns their
        Host block, ``<alias>-<user>``, for an ssh_config."""
        public_key = self.identity.with_suffix(".pub").read_text()
        install_key(self.root, f"/home/{user}", user, public_key)
        run(["chroot", str(self.root), "usermod", "-p", "*", user])  # no password, not locked:
        # without PAM, sshd refuses any login, keys included, to an account locked with "!"
        alias = f"{self.alias}-{user}"
        return host_block(alias, self.address, self.port, user, self.identity, self.known_hosts)

    def inside(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host's root filesystem (to verify from inside)."""
        return run(["chroot", str(self.root), *argv], check=False)

    def bind(self, source: Path, target: str) -> None:
        """Mount ``source`` (a folder here) read-only at ``target`` inside the running host.

        The mount is made in the sshd's own mount namespace (nsenter), so it exists only for the
        host's processes and vanishes with them; nothing is mounted on this machine.
        """
        pid = int((self.root / PID_FILE.lstrip("/")).read_text())
        where = str(self.root / target.lstrip("/"))
        (self.root / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
        enter = ["nsenter", "--target", str(pid), "--mount", "--"]
        run([*enter, "mount", "--bind", str(source), where])
        run([*enter, "mount", "-o", "remount,bind,ro", where])


def run(
    argv: Sequence[str], *, check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run argv here; with ``check`` a failure becomes Unavailable with its output's end."""
    done = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if check and done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(
            f"`{' '.join(argv[:3])} ...` failed ({done.returncode}): {' / '.join(tail)}"
        )
    return done  # type: ignore[no-any-return]


def cache_dir() -> Path:
    return Path(os.environ.get("GAFKD_TESTHOST_CACHE") or "/var/tmp/gafkd-testhost")


def parse_debian_mirror(sources: Sequence[str], suite: str = SUITE) -> str | None:
    """The first apt source serving ``suite`` main, from deb822 (.sources) or one-line (.list).

    >>> parse_debian_mirror(["Types: deb\\nURIs: http://m.example/debian\\nSuites: bookworm\\n"
    ...                      "Components: main\\n"])
    'http://m.example/debian'
    >>> parse_debian_mirror(["deb [arch=amd64] http://m.example/debian bookworm main contrib\\n"])
    'http://m.example/debian'
    """
    for text in sources:
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
            values = {key: fields.get(key, "").split() for key in ("Types", "Suites", "Components")}
            wanted = "deb" in values["Types"] and suite in values["Suites"]
            if wanted and "main" in values["Components"] and fields.get("URIs"):
                return str(fields["URIs"].split()[0])
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 4 and words[0] == "deb" and words[2] == suite and "main" in words[3:]:
                return words[1]
    return None


def debian_mirror() -> str:
    """GAFKD_DEBIAN_MIRROR, else the Debian mirror in this machine's apt sources."""
    if os.environ.get("GAFKD_DEBIAN_MIRROR"):
        return os.environ["GAFKD_DEBIAN_MIRROR"]
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.sources"))]
    files += sorted((apt / "sources.list.d").glob("*.list"))
    mirror = parse_debian_mirror([f.read_text() for f in files if f.is_file()])
    if mirror is None:
        raise Unavailable(
            f"no apt source for Debian {SUITE} main here; set GAFKD_DEBIAN_MIRROR to a mirror"
        )
    return mirror


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """One test session at a time builds or copies the cached root filesystem."""
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def remove_tree(path: Path) -> None:
    """rm -rf that never crosses into another filesystem (a mount left inside, if any)."""
    if path.exists():
        run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)


def build_root(cache: Path) -> Path:
    """The cached root filesystem, built with debootstrap when missing or built differently."""
    root, stamp = cache / "rootfs", f"{SUITE} {PACKAGES} {SUDO_USER}\n"
    if (root / ".gafkd-testhost").is_file() and (root / ".gafkd-testhost").read_text() == stamp:
        return root
    for tool in ("debootstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is missing here (apt-get install debootstrap)")
    partial = cache / "rootfs.partial"
    remove_tree(partial)
    argv = ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(partial)]
    run([*argv, debian_mirror()], timeout=1800)
    for key in (partial / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # every session makes its own host key
    run(["chroot", str(partial), "useradd", "-m", "-s", "/bin/bash", "-G", "sudo", SUDO_USER])
    run(["chroot", str(partial), "chpasswd"], input=f"{SUDO_USER}:{SUDO_PASSWORD}\n")
    (partial / ".gafkd-testhost").write_text(stamp)
    remove_tree(root)
    partial.rename(root)
    return root


def free_port(address: str = ADDRESS) -> int:
    """22 when it is free on ``address``, else a free port there."""
    for port in (22, 0):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as sshd does
            try:
                probe.bind((address, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise Unavailable(f"cannot bind any port on {address}")


def install_key(root: Path, home: str, owner: str, public_key: str) -> None:
    ssh = root / home.lstrip("/") / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(public_key)
    (ssh / "authorized_keys").chmod(0o600)
    run(["chroot", str(root), "chown", "-R", f"{owner}:", f"{home}/.ssh"])


def sshd_config(port: int, address: str = ADDRESS) -> str:
    return (
        f"ListenAddress {address}\nPort {port}\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
        f"PidFile {PID_FILE}\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPrintMotd no\n"
        "Subsystem sftp internal-sftp\nLogLevel INFO\n"
    )


def host_block(
    alias: str, address: str, port: int, user: str, identity: Path, known_hosts: Path
) -> str:
    return (
        f"Host {alias}\n    HostName {address}\n    Port {port}\n    User {user}\n"
        f"    IdentityFile {identity}\n    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known_hosts}\n    StrictHostKeyChecking yes\n"
    )


def ssh_config(
    port: int, identity: Path, known_hosts: Path, alias: str = ALIAS, address: str = ADDRESS
) -> str:
    logins = ((alias, "root"), (f"{alias}-sudo", SUDO_USER))
    blocks = [host_block(name, address, port, user, identity, known_hosts) for name, user in logins]
    return "\n".join(blocks)


def start(root: Path, state: Path, alias: str = ALIAS, address: str = ADDRESS) -> SshHost:
    """Keys, configs and sshd for a fresh copy ``root``; the client's files go to ``state``."""
    for tool in ("ssh", "ssh-keygen", "ssh-keyscan"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is missing here (apt-get install openssh-client)")
    port, identity, known_hosts = free_port(address), state / "id_ed25519", state / "known_hosts"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", alias, "-f", str(identity)])
    public_key = identity.with_suffix(".pub").read_text()
    install_key(root, "/root", "root", public_key)
    install_key(root, f"/home/{SUDO_USER}", SUDO_USER, public_key)
    for user in LAB_USERS:  # in this session's copy only; the cached root stays as built
        run(["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", user])
    host_key = "/etc/ssh/ssh_host_ed25519_key"
    run(["chroot", str(root), "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key])
    (root / "run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    (root / "etc/hostname").write_text(f"{alias}\n")
    with (root / "etc/hosts").open("a") as hosts:
        hosts.write(f"127.0.1.1\t{alias}\n")  # sudo resolves the host name
    (root / SSHD_CONFIG.lstrip("/")).write_text(sshd_config(port, address))
    run(["chroot", str(root), "/usr/sbin/sshd", "-t", "-f", SSHD_CONFIG])
    launch = ["unshare", "--mount", "--uts", "--propagation", "private", "--", "sh", "-c"]
    run([*launch, LAUNCH, "sh", str(root), SSHD_CONFIG, alias, SSHD_LOG], timeout=30)
    scan = ["ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(port), address]
    for _ in range(50):  # sshd listens before it forks, so the first try normally answers
        keys = run(scan, check=False).stdout
        if keys.strip():
            break
        time.sleep(0.1)
    else:
        raise Unavailable(f"sshd on {address}:{port} did not answer: {log_tail(root)}")
    known_hosts.write_text(keys)
    config = state / "ssh_config"
    config.write_text(ssh_config(port, identity, known_hosts, alias, address))
    login = run(["ssh", "-F", str(config), "-o", "BatchMode=yes", alias, "true"], check=False)
    if login.returncode != 0:
        raise Unavailable(f"ssh login to the test host failed: {login.stderr.strip()}")
    return SshHost(alias, root, port, config, known_hosts, identity, address=address)


def log_tail(root: Path) -> str:
    log = root / SSHD_LOG.lstrip("/")
    return " / ".join(log.read_text().splitlines()[-3:]) if log.is_file() else "no sshd log"


def command_name(pid: int) -> str | None:
    """The process's command name, or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return None if state in "ZX" else name


def processes_in(root: Path) -> list[int]:
    """PIDs whose root directory is ``root``: the host's sshd and its sessions."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "root")) == root:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def stop(root: Path) -> None:
    """Stop the host's sshd by its PID, then whatever still runs in it; then remove the copy."""
    pid_file = root / PID_FILE.lstrip("/")
    pids = [int(pid_file.read_text())] if pid_file.is_file() else []
    pids = [pid for pid in pids if command_name(pid) == "sshd"]  # not a stale pid file
    for pid in pids + [pid for pid in processes_in(root.resolve()) if pid not in pids]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not any(command_name(pid) for pid in processes_in(root.resolve()) + pids):
            break
        time.sleep(0.1)
    remove_tree(root)


def clean_stale(hosts: Path) -> None:
    """Copies left by sessions that died without their teardown (their pytest PID is gone)."""
    for copy in hosts.glob("session-*"):
        owner = int(copy.name.removeprefix("session-").split("-")[0])
        if owner != os.getpid() and command_name(owner) is None:
            stop(copy)


def bring_up(
    state: Path, name: str = "", alias: str = ALIAS, address: str = ADDRESS
) -> Iterator[SshHost]:
    """Build (once), copy, start; yield the running host; stop it and remove the copy.

    ``name`` tells apart several hosts of one test session (each its own copy and port);
    ``alias`` is its ssh alias and hostname, ``address`` the loopback address it listens on.
    """
    if os.geteuid() != 0:
        raise Unavailable("the test host needs root (debootstrap, chroot, unshare)")
    cache = cache_dir()
    (cache / "hosts").mkdir(parents=True, exist_ok=True)
    copy = cache / "hosts" / (f"session-{os.getpid()}" + (f"-{name}" if name else ""))
    try:
        with locked(cache / "lock"):
            clean_stale(cache / "hosts")
            run(["cp", "-a", "--", str(build_root(cache)), str(copy)])
        yield start(copy, state, alias, address)
    finally:
        stop(copy)


def bring_up_hosts(
    state: Path, hosts: Sequence[tuple[str, str]] = TWO_HOSTS, name: str = "hosts"
) -> Iterator[list[SshHost]]:
    """Several test hosts, each with its own copy (and so its own lab folders), loopback address
    and hostname; yields them, each naming one ssh_config and one known_hosts for them all.

    ``hosts`` is (alias, address) pairs; ``name`` tells this group apart from other hosts of the
    session. Every host is stopped and its copy removed at the end, or when one cannot start.
    """
    running: list[Iterator[SshHost]] = []
    started: list[SshHost] = []
    try:
        for alias, address in hosts:
            (state / alias).mkdir(parents=True, exist_ok=True)
            running.append(bring_up(state / alias, f"{name}-{alias}", alias, address))
            started.append(next(running[-1]))
        config, known_hosts = state / "ssh_config", state / "known_hosts"
        known_hosts.write_text("".join(host.known_hosts.read_text() for host in started))
        blocks = [host.ssh_config.read_text() for host in started]
        for host in started:
            blocks = [block.replace(str(host.known_hosts), str(known_hosts)) for block in blocks]
        config.write_text("\n".join(blocks))
        yield [replace(host, ssh_config=config, known_hosts=known_hosts) for host in started]
    finally:
        for generator in reversed(running):
            generator.close()  # type: ignore[attr-defined]


def write_invoke_config(path: Path, hosts: dict[str, dict[str, object]]) -> Path:
    """A runtime invoke config (INVOKE_RUNTIME_CONFIG, a .json file) adding ``hosts``."""
    path.write_text(json.dumps({"hosts": hosts}, indent=2))
    return path
