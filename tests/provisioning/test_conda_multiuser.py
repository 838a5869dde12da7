"""The shared conda install on the real test host, tried by two real members, alice and bob.

The host has no internet and no conda. STAND_IN has the Miniforge installer's ``-b -p PREFIX``
interface and makes a small conda: ``bin/conda`` answers ``info --json`` and creates envs
(``env create -p PATH``, ``create -n NAME``) in the first ``envs_dirs`` of the system
``.condarc``, making its first ``pkgs_dirs``; ``etc/profile.d/conda.sh`` defines the ``conda``
shell function, with ``activate``. The permissions, the ``.condarc``, the login hook, the
members' logins (over ssh, as themselves) and ``invoke provision`` are real. Each test puts the
host back as it found it (the other ssh tests share it).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioning import conda

pytestmark = pytest.mark.ssh

ROOT = Path(__file__).resolve().parents[2]
USERS = ("alice", "bob")
PREFIX = "/opt/conda"
ADOPTED = "/home/root/anaconda3"  # the lab's install, found when the prefix has none
STAND_IN = r"""#!/bin/bash
set -e
[ "$1" = -b ] && [ "$2" = -p ] || { echo "usage: $0 -b -p PREFIX" >&2; exit 2; }
mkdir -p "$3/bin" "$3/etc/profile.d" "$3/pkgs"
sed "s|@PREFIX@|$3|g" > "$3/bin/conda" <<'CONDA'
#!/bin/sh
first() {  # the first entry of a list in the system .condarc, ~ expanded
    dir=$(sed -n "/^$1:/{n;s/^  - \"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p;}" "@PREFIX@/.condarc")
    case $dir in "~/"*) dir="$HOME/${dir#"~/"}" ;; esac
    printf '%s\n' "$dir"
}
[ "$1" = first ] && { first "$2"; exit; }
command=$1; [ "$1" = env ] && { shift; command="env-$1"; }; shift
path=
while [ $# -gt 0 ]; do
    case $1 in -p) path=$2; shift ;; -n) path="$(first envs_dirs)/$2"; shift ;; esac
    shift
done
case $command in
info) echo '{"root_prefix": "@PREFIX@", "conda_version": "24.11.3", "channels": ["conda-forge"]}' ;;
create|env-create|env-update)
    pkgs=$(first pkgs_dirs)
    mkdir -p "$pkgs" "$path/conda-meta" "$path/bin"
    printf '%s\n' "$pkgs" > "$path/conda-meta/pkgs_dirs" ;;
*) echo "stand-in conda: $command is not supported" >&2; exit 2 ;;
esac
CONDA
chmod 755 "$3/bin/conda"
sed "s|@PREFIX@|$3|g" > "$3/etc/profile.d/conda.sh" <<'HOOK'
conda() {
    if [ "$1" = activate ]; then
        env="$("@PREFIX@/bin/conda" first envs_dirs)/$2"
        [ -d "$env/conda-meta" ] || { echo "conda: no env $2" >&2; return 1; }
        CONDA_PREFIX=$env PATH="$env/bin:$PATH"
        export CONDA_PREFIX PATH
    else
        "@PREFIX@/bin/conda" "$@"
    fi
}
HOOK
"""
# What an earlier gafkd left on an adopted install: group-writable, setgid folders, a 0664
# .condarc with one shared package cache, a member's package in it; /home/root as the lab has it.
EARLIER_GAFKD = f"""set -e
mkdir -p -m 700 /home/root
bash /root/stand-in.sh -b -p {ADOPTED}
printf 'envs_dirs:\\n  - ~/.conda/envs\\npkgs_dirs:\\n  - "{ADOPTED}/pkgs"\\n' > {ADOPTED}/.condarc
install -d -o alice -g lab {ADOPTED}/pkgs/numpy-2.0
chgrp -R lab {ADOPTED}
chmod -R g+rwX,o-w {ADOPTED}
find {ADOPTED} -type d -exec chmod g+s {{}} +
chmod 0664 {ADOPTED}/.condarc
printf 'if [ -f {ADOPTED}/etc/profile.d/conda.sh ]; then\\n    . {ADOPTED}/etc/profile.d/conda.sh\\nfi\\n' > {conda.PROFILE_HOOK}
"""  # noqa: E501
# A download that is not Miniforge: if anything ran it, it would leave its mark.
FAKE_CURL = '#!/bin/sh\n# curl -fsSL -o FILE URL, offline: the "download" is a file here\ncp /var/tmp/gafkd-download "$3"\n'  # noqa: E501
NOT_MINIFORGE = "#!/bin/sh\ntouch /gafkd-installer-ran\n"


@pytest.fixture(scope="module")
def config(testhost: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """invoke.yaml hosts: testhost (alice and bob, the stand-in uploaded), testhost-download
    (no installer: it downloads), and testhost-alice, testhost-bob, testhost-sudo logins."""
    folder = tmp_path_factory.mktemp("conda")
    blocks = testhost.ssh_config.read_text()
    download = blocks.split("\n\n")[0].replace(
        f"Host {testhost.alias}\n", f"Host {testhost.alias}-download\n"
    )
    logins = [testhost.login(user) for user in USERS]
    (folder / "ssh_config").write_text("\n".join([blocks, download, *logins]))
    (folder / "stand-in.sh").write_text(STAND_IN)
    files = {"ssh_config": str(folder / "ssh_config"), "known_hosts": str(testhost.known_hosts)}
    installer = str(folder / "stand-in.sh")
    hosts = {
        testhost.alias: {**files, "users": list(USERS), "conda_installer": installer},
        f"{testhost.alias}-download": {**files, "users": list(USERS)},
    }
    path = folder / "invoke.json"
    path.write_text(json.dumps({"hosts": hosts}))
    return path


def invoke(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INVOKE_RUNTIME_CONFIG": str(config)}
    env.pop("INVOKE_SUDO_PASSWORD", None)
    argv = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def provision(config: Path, alias: str = "testhost") -> dict[str, str]:
    """``invoke provision --host ALIAS --json``: {step: status}; it must succeed."""
    done = invoke(config, "provision", "--host", alias, "--json")
    assert done.returncode == 0, done.stderr
    return {o["step"]: o["status"] for o in json.loads(done.stdout)["outcomes"]}


def ssh(config: Path, alias: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a bash script as ``alias``'s user over ssh; ``args`` are its $1, $2, ..."""
    line = shlex.join(("bash", "-c", script, "bash", *args))
    command = ["ssh", "-F", str(config.parent / "ssh_config"), "-o", "BatchMode=yes", alias, line]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def as_user(config: Path, user: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return ssh(config, f"testhost-{user}", script, *args)


def clean(testhost: Any) -> None:
    """No conda, hook, env files, lab group, members' ~/.conda, /home/root or stand-in tools."""
    paths = (PREFIX, "/home/root", conda.PROFILE_HOOK, "/usr/local/share/gafkd",
             "/root/stand-in.sh", "/usr/local/bin/curl", "/var/tmp/gafkd-download",
             "/gafkd-installer-ran", conda.INSTALLER,
             *(f"/home/{user}/.conda" for user in USERS))  # fmt: skip
    assert testhost.inside("rm", "-rf", "--", *paths).returncode == 0
    if testhost.inside("getent", "group", "lab").returncode == 0:
        assert testhost.inside("groupdel", "lab").returncode == 0


@pytest.fixture
def host(testhost: Any) -> Iterator[Any]:
    clean(testhost)
    try:
        yield testhost
    finally:
        clean(testhost)


def writable_by(config: Path, user: str, *paths: str) -> list[str]:
    """What ``user`` may write or append to under ``paths``, by the kernel's own check."""
    done = as_user(config, user, 'find "$@" -writable', *paths)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def appends(config: Path, user: str, *paths: str) -> dict[str, int]:
    """Each path: the exit status of ``user`` appending a line to it (0: the append worked)."""
    return {
        path: as_user(config, user, 'echo "echo owned by $USER" >> "$1"', path).returncode
        for path in paths
    }


def assert_roots(config: Path, prefix: str) -> None:
    """The member-side checks: no member can change what root and the others run or source."""
    targets = (f"{prefix}/bin/conda", f"{prefix}/etc/profile.d/conda.sh", f"{prefix}/.condarc",
               conda.PROFILE_HOOK)  # fmt: skip
    for user in USERS:
        assert writable_by(config, user, prefix, conda.PROFILE_HOOK) == []
        assert all(appends(config, user, *targets).values()), appends(config, user, *targets)
        made = as_user(config, user, 'touch "$1/bin/python3"', prefix)
        assert made.returncode != 0


def assert_own_envs(config: Path, host: Any) -> None:
    """Each member creates and activates their own env through the login hook, in their home."""
    for user in USERS:
        home = f"/home/{user}"
        login = as_user(config, user, "bash -lc 'conda activate gafkd && echo \"$CONDA_PREFIX\"'")
        assert login.returncode == 0, login.stderr
        assert login.stdout.split() == [f"{home}/.conda/envs/gafkd"]  # the envs step made it
        script = (
            'bash -lc \'conda create -n mine && conda activate mine && echo "$CONDA_PREFIX" && '
            'cat "$CONDA_PREFIX/conda-meta/pkgs_dirs"\''
        )
        mine = as_user(config, user, script)
        assert mine.returncode == 0, mine.stderr
        assert mine.stdout.split() == [f"{home}/.conda/envs/mine", f"{home}/.conda/pkgs"]
        owners = host.inside("stat", "-c", "%U", f"{home}/.conda/envs/gafkd", f"{home}/.conda/pkgs")
        assert owners.stdout.split() == [user, user]  # made as that user, by the envs step


def test_members_use_a_conda_install_that_none_of_them_can_change(host, config) -> None:
    first = provision(config)
    assert {first[step] for step in ("conda", "condarc", "envs")} == {"changed"}
    stat = host.inside("stat", "-c", "%U %G %a", PREFIX, f"{PREFIX}/.condarc", conda.PROFILE_HOOK)
    assert stat.stdout.splitlines() == ["root lab 750", "root lab 640", "root root 644"]
    assert_roots(config, PREFIX)
    assert_own_envs(config, host)
    # a user outside the group cannot read it; root's login shell loads it
    outsider = ssh(config, "testhost-sudo", 'cat "$1/.condarc"', PREFIX)
    assert outsider.returncode != 0
    assert "Permission denied" in outsider.stderr
    root = ssh(config, "testhost", "bash -lc 'type conda'")
    assert "conda is a function" in root.stdout
    # the run after plans nothing
    assert set(provision(config).values()) <= {"ok", "skipped"}


@pytest.mark.parametrize(
    ("home_root", "after"),
    [("701", "root root 701"), ("700", "root lab 710")],  # an earlier gafkd's o+x; the lab's own
)
def test_an_adopted_install_an_earlier_gafkd_left_group_writable_is_made_roots(
    host, config, home_root: str, after: str
) -> None:
    (host.root / "root/stand-in.sh").write_text(STAND_IN)
    group = invoke(config, "provision", "--host", "testhost", "--only", "group")
    assert group.returncode == 0, group.stderr  # alice and bob in lab, as an earlier run left
    earlier = host.inside("bash", "-c", EARLIER_GAFKD + f"chmod {home_root} /home/root\n")
    assert earlier.returncode == 0, earlier.stderr
    hook = f"{ADOPTED}/etc/profile.d/conda.sh"
    if home_root == "701":  # the hole: root's next login shell would run alice's line
        assert appends(config, "alice", hook) == {hook: 0}
        assert host.inside("sed", "-i", "/owned by/d", hook).returncode == 0
    steps = provision(config)
    assert steps["conda"] == steps["condarc"] == "changed"
    assert_roots(config, ADOPTED)
    found = host.inside("find", ADOPTED, "(", "!", "-user", "root", "-o", "!", "-group", "lab",
                        "-o", "-perm", "/2027", ")", "-print")  # fmt: skip
    assert found.stdout.split() == []  # the member's package too is root's now
    assert host.inside("stat", "-c", "%U %G %a", "/home/root").stdout.strip() == after
    assert as_user(config, "alice", "ls /home/root").returncode != 0  # pass through, not list
    condarc = (host.root / ADOPTED.lstrip("/") / ".condarc").read_text()
    assert "pkgs_dirs:\n  - ~/.conda/pkgs\n" in condarc
    assert_own_envs(config, host)
    assert set(provision(config).values()) <= {"ok", "skipped"}


def test_a_download_whose_sha256_differs_is_deleted_and_nothing_runs(host, config) -> None:
    arch = host.inside("uname", "-m").stdout.strip()
    if arch not in ("x86_64", "aarch64"):
        pytest.skip(f"Miniforge is pinned for x86_64 and aarch64 only, the test host is {arch}")
    (host.root / "var/tmp/gafkd-download").write_text(NOT_MINIFORGE)
    curl = host.root / "usr/local/bin/curl"
    curl.write_text(FAKE_CURL)
    curl.chmod(0o755)
    done = invoke(config, "provision", "--host", "testhost-download", "--only", "conda")
    assert not (host.root / "gafkd-installer-ran").exists()  # the download never ran
    assert not (host.root / conda.INSTALLER.lstrip("/")).exists()
    assert not (host.root / PREFIX.lstrip("/")).exists()
    assert done.returncode == 1
    [line] = [line for line in done.stdout.splitlines() if "| conda | failed" in line]
    sha256 = conda.MINIFORGE_SHA256[arch]
    assert f"its sha256 is not {sha256}, the published one of Miniforge " in line
    assert "so it was deleted and nothing was run" in line
    assert "Traceback" not in done.stdout + done.stderr
