"""A cluster's login node over SSH: ``invoke launch --host login`` with ``backend: slurm``.

On a university cluster, the laptop reaches a login node by ssh; the code is synced to a shared
filesystem, the user's env lives there, and gafkd submits from the login node. Here the login
node is this machine itself, served by its own sshd on 127.0.0.5 (its own host key, config and
authorized key in a state folder; ``SetEnv SLURM_CONF`` points sessions at the test cluster),
in front of the real single-node Slurm of stack.py, whose slurmd sees the same files: the
"shared filesystem". The env on the login node is a venv whose ``.pth`` adds this interpreter's
site-packages (torch and the rest), as tests/test_remote.py does on the Debian test host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.ssh]

ROOT = Path(__file__).resolve().parent.parent.parent
ADDRESS = "127.0.0.5"  # loopback only
SETS = ["dataset=watch", "train.epochs=1", "seed=[0]", "train.alpha=[0.3]"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        return int(probe.getsockname()[1])


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)


@pytest.fixture(scope="module")
def login_node(slurm_cluster: Any) -> Iterator[dict[str, Any]]:
    """sshd on 127.0.0.5 serving this machine, and an invoke config naming it ``login``."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists() or os.geteuid() != 0:
        pytest.skip("a login node needs root and sshd here (apt-get install openssh-server)")
    state = Path(f"/var/tmp/gafkd-login-{os.getpid()}")
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(mode=0o700)
    port = free_port()
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(state / "host_key"))
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(state / "id_ed25519"))
    shutil.copy(state / "id_ed25519.pub", state / "authorized_keys")
    (state / "sshd_config").write_text(
        f"ListenAddress {ADDRESS}\nPort {port}\nHostKey {state / 'host_key'}\n"
        f"PidFile {state / 'sshd.pid'}\nAuthorizedKeysFile {state / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"SetEnv SLURM_CONF={slurm_cluster.conf}\n"
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    run(sshd, "-f", str(state / "sshd_config"), "-E", str(state / "sshd.log"))
    try:
        keys = ""
        for _ in range(50):
            keys = subprocess.run(
                ["ssh-keyscan", "-p", str(port), "-t", "ed25519", ADDRESS],
                capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            if keys.strip():
                break
            time.sleep(0.1)
        (state / "known_hosts").write_text(keys)
        (state / "ssh_config").write_text(
            f"Host login\n  HostName {ADDRESS}\n  Port {port}\n  User root\n"
            f"  IdentityFile {state / 'id_ed25519'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {state / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
        )
        env = state / "env"  # the user's env on the cluster's shared filesystem
        run(sys.executable, "-m", "venv", "--without-pip", str(env))
        packages = next(env.glob("lib/python*/site-packages"))
        (packages / "gafkd-shared.pth").write_text(site.getsitepackages()[0] + "\n")
        hosts = {
            "login": {
                "ssh_config": str(state / "ssh_config"),
                "known_hosts": str(state / "known_hosts"),
                "lab_dir": str(state / "scratch" / "{user}" / "gafkd"),
                "python": str(env / "bin" / "python"),
                "backend": "slurm",
                "slurm": {"partition": slurm_cluster.partition, "cpus": 1, "time_min": 60},
            }
        }
        (state / "invoke.json").write_text(json.dumps({"hosts": hosts}))
        yield {"state": state, "config": state / "invoke.json", "lab": state / "scratch/root/gafkd"}
    finally:
        pid = (state / "sshd.pid").read_text().strip() if (state / "sshd.pid").exists() else ""
        if pid.isdigit():
            os.kill(int(pid), signal.SIGTERM)
        shutil.rmtree(state, ignore_errors=True)


def invoke(config: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INVOKE_RUNTIME_CONFIG": str(config)}
    env.pop("SLURM_CONF", None)  # the laptop has no Slurm: only the login node's session does
    argv = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_launch_on_a_login_node_submits_there_and_results_come_back(
    login_node: dict[str, Any], tmp_path: Path
) -> None:
    config = login_node["config"]
    sets = [part for item in SETS for part in ("--set", item)]
    launched = invoke(config, "launch", "--grid", "kd_alpha", "--host", "login", *sets)
    assert launched.returncode == 0, launched.stderr + launched.stdout
    assert "stage gaf_teacher: job array" in launched.stdout
    assert "stage student: job array" in launched.stdout
    record = json.loads((login_node["lab"] / "runs/kd_alpha/.batch/slurm.json").read_text())
    assert record["options"]["partition"] == "debug"  # from the host's slurm: settings

    for _ in range(300):  # the laptop polls; each call is one ssh round trip
        done = invoke(config, "status", "--host", "login", "--json", "--grid", "kd_alpha")
        assert done.returncode == 0, done.stderr
        batch = json.loads(done.stdout)["login"]["batches"][0]
        if batch["runner"]["state"] == "finished":
            break
        time.sleep(1)
    assert batch["runner"]["backend"] == "slurm"
    assert batch["counts"]["done"] == 3, batch

    fetched = invoke(config, "results", "--grid", "kd_alpha", "--host", "login", "--root",
                     str(tmp_path))  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    assert "| watch | 0.3 |" in fetched.stdout
    copied = tmp_path / ".hosts" / "login" / "runs" / "kd_alpha"
    assert (copied / ".batch" / "slurm.json").is_file()
    assert not list(copied.rglob("*.pt"))  # no checkpoints come back
