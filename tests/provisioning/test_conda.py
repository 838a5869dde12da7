"""Shared conda: group, install (fresh, adopted, moved, uploaded), .condarc and per-user envs.

The `conda info --json` outputs under outputs/conda-info/ follow conda 24.x's key set; they were
written for these tests, not captured from a host (no conda may be installed here). Replace them
with captures from the CI host when it has an installer.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from invoke.exceptions import UnexpectedExit
from invoke.runners import Result

from provisioning import conda, envs, gpu
from provisioning.conda import ANACONDA_NOTE, Account, Install
from provisioning.core import STDIN, Command, ProvisionError, SkipStep, write_file
from provisioning.envs import STAMP
from provisioning.hosts import Host, parse_host
from provisioning.runner import plan, run_host
from tests.provisioning.conftest import FakeConnection, output

LAB = Host("lab", users=("alice",))
LAB_ROOT = "/home/root/anaconda3"
ALICE_ENV = "/home/alice/.conda/envs/gafkd"
GAFKD_YML = (envs.ENVS_DIR / "gafkd.yml").read_text()


class CondaHost(FakeConnection):
    """The fake host, plus ``stat`` and ``find`` answers and paths that only root may read.

    ``stats`` maps a path to its recorded ``stat -c '%U %G %a'`` line; ``finds`` maps the find
    tests (shlex-joined, path included) to the first path found, and any other find finds
    nothing; a plain command naming a path under ``locked`` gets 'Permission denied'.
    """

    def __init__(
        self, stats: dict[str, str] | None = None, finds: dict[str, str] | None = None,
        locked: tuple[str, ...] = (), **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.stats, self.finds, self.locked = dict(stats or {}), dict(finds or {}), locked

    def run(self, command: str, *, warn: bool = False, **kwargs: Any) -> Result:
        argv = shlex.split(command)
        if argv[0] != "sudo" and any(part.startswith(self.locked) for part in argv):
            self.ran.append(command)
            result = Result(stderr=f"{argv[0]}: {argv[-1]}: Permission denied\n", exited=1)
            if not warn:
                raise UnexpectedExit(result)
            return result
        return super().run(command, warn=warn, **kwargs)

    def answer(self, argv: list[str]) -> tuple[str, str, int]:
        plain = argv[3:] if argv[:3] == ["sudo", "-n", "--"] else argv
        match plain:
            case ["stat", "-L", "-c", "%U %G %a", "--", path]:
                if path in self.stats:
                    return self.stats[path], "", 0
                return "", f"stat: cannot statx '{path}': No such file or directory\n", 1
            case ["find", *tests, "-print", "-quit"]:
                return self.finds.get(shlex.join(tests), ""), "", 0
            case ["install", "-D", "-o", owner, "-g", group, "-m", mode, source, target]:
                self.files[target] = self.files[source]
                self.stats[target] = f"{owner} {group} {int(mode, 8):o}"
                return "", "", 0
            case ["install", "-D", "-m", mode, _, target]:
                self.stats[target] = f"root root {int(mode, 8):o}"
        return super().answer(argv)


def getent(users: tuple[str, ...] = ("alice",), group: str | None = "lab-alice") -> dict:
    replies = {f"getent passwd {user}": (output("getent-passwd", user), 0) for user in users}
    replies["getent passwd mallory"] = ("", 2)
    replies["getent group lab"] = (output("getent-group", group), 0) if group else ("", 2)
    return replies


def conda_at(prefix: str, case: str) -> tuple[dict[str, str], dict]:
    """stats and replies for a conda install at ``prefix`` (conda info from outputs/)."""
    stats = {f"{prefix}/bin/conda": "root root 755", "/opt": "root root 755",
             "/home": "root root 755", "/home/root": output("stat", "root-755")}  # fmt: skip
    return stats, {f"{prefix}/bin/conda info --json": (output("conda-info", case), 0)}


def sudo(*argv: str, why: str = "", stdin: str | bytes | None = None) -> Command:
    return Command(argv, sudo=True, why=why, stdin=stdin)


def perms(prefix: str, world: bool = False) -> list[Command]:
    readers = "lab and others" if world else "lab (not others)"
    return [
        sudo("chown", "-R", "root:lab", prefix,
             why=f"root owns {prefix} with group lab, so no member can change it"),
        sudo("chmod", "-R", "go+rX,go-w,g-s" if world else "g+rX,g-ws,o-rwx", prefix,
             why=f"only root may write {prefix}; {readers} may read it; no setgid folders"),
    ]  # fmt: skip


NOT_ROOTS = ("(", "!", "-user", "root", "-o", "!", "-group", "lab", ")")


def offenders(prefix: str, found: str = "", world: bool = False) -> dict[str, str]:
    """finds that each report a path: not root:lab, a wrong mode (the lab's 700 install)."""
    tests = conda.WORLD_READABLE if world else conda.GROUP_ONLY
    return {
        shlex.join((prefix, *NOT_ROOTS)): found or prefix,
        shlex.join((prefix, *tests)): found or prefix,
    }


def has(*tools: str) -> dict[str, tuple[str, int]]:
    """Replies to the downloader look-up: the host has ``tools`` on its PATH, and nothing else."""
    return {
        shlex.join(("sh", "-c", conda.COMMAND_V, "sh", tool)): (
            (f"/usr/bin/{tool}\n", 0) if tool in tools else ("", 1)
        )
        for tool in conda.DOWNLOADERS
    }


ONLINE = {**has("curl"), "uname -m": ("x86_64\n", 0)}  # a host that can download Miniforge
VERSION = conda.MINIFORGE_VERSION
X86_64_SHA256 = "848194851a98903134187fbb4ab50efe87b003e0c0f808f97644b7524a62bf2c"  # 26.3.2-3
DOWNLOAD = [
    sudo("curl", "-fsSL", "-o", conda.INSTALLER,
         f"https://github.com/conda-forge/miniforge/releases/download/{VERSION}/"
         f"Miniforge3-{VERSION}-Linux-x86_64.sh",
         why=f"download Miniforge {VERSION} (conda-forge, BSD-3-Clause) for x86_64 with curl"),
    sudo("sh", "-c", conda.CHECK_AND_INSTALL, "sh", X86_64_SHA256, conda.INSTALLER, "/opt/conda",
         VERSION, why="install it only if its sha256 is the published one"),
    sudo("rm", "-f", conda.INSTALLER, why="remove the installer"),
]  # fmt: skip


# --- parse_* -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("miniforge", Install("/opt/conda", "24.11.3", "miniforge")),
        ("anaconda-home-root", Install(LAB_ROOT, "24.1.2", "anaconda")),
    ],
)
def test_parse_conda_info_reads_prefix_version_and_flavor(case, expected) -> None:
    assert conda.parse_conda_info(output("conda-info", case)) == expected


def test_parse_conda_info_refuses_output_without_a_prefix() -> None:
    with pytest.raises(ProvisionError, match="printed no root_prefix"):
        conda.parse_conda_info("CondaError: Run 'conda init' before 'conda activate'")


def test_parse_getent_and_stat_read_recorded_output() -> None:
    assert conda.parse_group(output("getent-group", "lab-alice")) == (1002, ("alice",))
    assert conda.parse_group(output("getent-group", "lab-empty")) == (1002, ())
    assert conda.parse_passwd(output("getent-passwd", "alice")) == Account(
        "alice", 1001, "/home/alice"
    )
    assert conda.parse_stat(output("stat", "lab-2775")) == conda.Stat("root", "lab", 0o2775)


# --- group -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("users", "group", "expected"),
    [
        (("alice",), None, [
            sudo("groupadd", "lab", why="group lab is missing"),
            sudo("usermod", "-aG", "lab", "alice",
                 why="alice is not in lab (effective at their next login)"),
        ]),
        (("alice", "bob"), "lab-alice", [
            sudo("usermod", "-aG", "lab", "bob",
                 why="bob is not in lab (effective at their next login)"),
        ]),
        (("alice",), "lab-alice", []),
    ],
)  # fmt: skip
def test_ensure_group_plans_only_what_is_missing(users, group, expected) -> None:
    connection = CondaHost(replies=getent(users, group))
    commands, reason = plan(conda.ensure_group, connection, Host("lab", users=users))
    assert commands == expected
    assert reason == f"group lab exists; members include {', '.join(users)}"


def test_a_user_that_does_not_exist_is_named_and_never_created() -> None:
    connection = CondaHost(replies=getent())
    with pytest.raises(ProvisionError, match=r"users mallory do not exist.*sudo adduser NAME"):
        plan(conda.ensure_group, connection, Host("lab", users=("alice", "mallory")))
    assert not any("useradd" in line or "adduser" in line for line in connection.ran)


@pytest.mark.parametrize("name", ["x; rm -rf /", "$(id)", "alice bob"])
def test_user_names_with_shell_metacharacters_are_refused(name) -> None:
    with pytest.raises(ProvisionError, match="not a plain name"):
        parse_host("lab", {"users": [name]})
    connection = CondaHost(replies=getent())
    with pytest.raises(ProvisionError, match="not a plain name"):
        plan(conda.ensure_group, connection, Host("lab", users=(name,)))
    assert connection.ran == []


def test_group_apply_is_verified_and_a_second_run_plans_nothing() -> None:
    connection = CondaHost(replies=getent(group=None))

    def add_group() -> None:
        connection.replies["getent group lab"] = (output("getent-group", "lab-empty"), 0)

    def add_alice() -> None:
        connection.replies["getent group lab"] = (output("getent-group", "lab-alice"), 0)

    connection.hooks = {"groupadd lab": add_group, "usermod -aG lab alice": add_alice}
    steps = [("group", conda.ensure_group)]
    assert [o.status for o in run_host(connection, LAB, steps, dry=False, echo=print)] == [
        "changed"
    ]
    assert [o.status for o in run_host(connection, LAB, steps, dry=False, echo=print)] == ["ok"]


# --- conda -------------------------------------------------------------------------------------


def test_a_fresh_host_downloads_miniforge_and_makes_it_the_groups() -> None:
    connection = CondaHost(stats={"/opt": "root root 755"}, replies={**getent(), **ONLINE})
    commands, reason = plan(conda.ensure_conda, connection, LAB)
    assert commands == [*DOWNLOAD, *perms("/opt/conda")]
    assert reason == "miniforge installed at /opt/conda"


def test_a_host_with_wget_only_downloads_miniforge_with_wget() -> None:
    replies = {**getent(), **has("wget"), "uname -m": ("aarch64\n", 0)}
    connection = CondaHost(stats={"/opt": "root root 755"}, replies=replies)
    commands, _ = plan(conda.ensure_conda, connection, LAB)
    url = conda.MINIFORGE_URL.format(version=VERSION, arch="aarch64")
    assert commands[0] == sudo("wget", "-q", "-O", conda.INSTALLER, url,
                               why=f"download Miniforge {VERSION} (conda-forge, BSD-3-Clause) "
                               "for aarch64 with wget")  # fmt: skip
    assert commands[1].argv[4] == conda.MINIFORGE_SHA256["aarch64"]


def test_a_host_that_cannot_download_skips_conda_and_the_steps_that_need_it() -> None:
    connection = CondaHost(stats={"/opt": "root root 755"}, replies={**getent(), **has()})
    with pytest.raises(
        SkipStep,
        match=r"^no conda installer: the host cannot download \(no "
        r"curl/wget\) — set conda_installer for lab in invoke\.yaml to upload",
    ):
        plan(conda.ensure_conda, connection, LAB)
    assert "uname -m" not in connection.ran
    steps = [(name, getattr(conda, f"ensure_{name}")) for name in ("group", "conda", "condarc")]
    outcomes = run_host(connection, LAB, [*steps, ("envs", envs.ensure_envs)], dry=True,
                        echo=print)  # fmt: skip
    assert [o.status for o in outcomes] == ["ok", "skipped", "skipped", "skipped"]
    assert outcomes[2].detail.startswith("no conda install at /opt/conda yet (nothing to config")
    assert outcomes[3].detail.startswith("no conda install at /opt/conda yet (the envs need it)")
    assert not [c for c in connection.ran if c.startswith("sudo -n -- install")]  # nothing written


def test_a_compliant_miniforge_plans_nothing_and_says_why() -> None:
    stats, replies = conda_at("/opt/conda", "miniforge")
    connection = CondaHost(stats=stats, replies={**replies, **getent()})
    assert plan(conda.ensure_conda, connection, LAB) == (
        [],
        "miniforge conda 24.11.3 at /opt/conda",
    )


@pytest.mark.parametrize(("home_root", "extra"), [
    ("root-755", []),
    ("root-700", [
        sudo("chgrp", "lab", "/home/root",
             why="members must pass through /home/root (700) to reach conda; its group had no "
             "rights"),
        sudo("chmod", "g+x", "/home/root",
             why="members must pass through /home/root (700) to reach conda; x only, for lab"),
    ]),
])  # fmt: skip
def test_the_labs_locked_anaconda_is_adopted_in_place_with_its_note(home_root, extra) -> None:
    stats, replies = conda_at(LAB_ROOT, "anaconda-home-root")
    stats["/home/root"] = output("stat", home_root)
    stats[LAB_ROOT] = output("stat", "root-700")
    connection = CondaHost(
        stats=stats, finds=offenders(LAB_ROOT), replies={**replies, **getent()}, locked=(LAB_ROOT,)
    )
    commands, reason = plan(conda.ensure_conda, connection, LAB)
    assert commands == perms(LAB_ROOT) + extra
    assert reason.startswith(f"anaconda conda 24.1.2 at {LAB_ROOT}; {ANACONDA_NOTE}; adopted")
    assert "--move-conda` installs a fresh one at /opt/conda" in reason
    assert f"sudo -n -- {LAB_ROOT}/bin/conda info --json" in connection.ran  # root had to look


def test_move_conda_installs_at_the_prefix_and_leaves_the_old_install() -> None:
    stats, replies = conda_at(LAB_ROOT, "anaconda-home-root")
    replies = {**replies, **getent(), **ONLINE}
    connection = CondaHost(stats=stats, finds=offenders(LAB_ROOT), replies=replies)
    commands, reason = plan(conda.ensure_conda_moved, connection, LAB)
    assert [c.argv[0] for c in commands] == ["curl", "sh", "rm", "chown", "chmod"]
    assert commands[1].why == (
        f"install it only if its sha256 is the published one; {LAB_ROOT} stays until you delete it"
    )
    assert not any(LAB_ROOT in str(command) for command in commands)
    assert reason == f"miniforge installed at /opt/conda; {LAB_ROOT} stays until you delete it"


def test_an_offline_host_gets_the_installer_uploaded_from_this_machine(tmp_path: Path) -> None:
    installer = tmp_path / "Miniforge3-Linux-x86_64.sh"
    installer.write_text("#!/bin/sh\necho installer\n")
    host = Host("lab", users=("alice",), conda_installer=str(installer))
    connection = CondaHost(stats={"/opt": "root root 755"}, replies=getent())
    commands, _ = plan(conda.ensure_conda, connection, host)
    assert commands[0] == sudo(
        "bash", STDIN, "-b", "-p", "/opt/conda", why=f"install miniforge from {installer} "
        "(uploaded)", stdin=installer.read_bytes()
    )  # fmt: skip
    assert commands[1:] == perms("/opt/conda")
    assert "uname -m" not in connection.ran  # nothing is downloaded


def test_anaconda_is_installed_only_from_a_given_installer_with_its_note(tmp_path: Path) -> None:
    connection = CondaHost(stats={"/opt": "root root 755"}, replies=getent())
    with pytest.raises(ProvisionError, match=r"set conda_installer in invoke\.yaml"):
        plan(conda.ensure_conda, connection, Host("lab", conda_flavor="anaconda"))
    installer = tmp_path / "Anaconda3.sh"
    installer.write_text("#!/bin/sh\n")
    host = Host("lab", conda_flavor="anaconda", conda_installer=str(installer))
    commands, reason = plan(conda.ensure_conda, connection, host)
    assert ANACONDA_NOTE in commands[0].why
    assert reason == "anaconda installed at /opt/conda"


def test_a_prefix_without_conda_is_not_overwritten() -> None:
    connection = CondaHost(stats={"/opt/conda": "root root 755"}, replies=getent())
    with pytest.raises(ProvisionError, match="exists but has no bin/conda"):
        plan(conda.ensure_conda, connection, LAB)


def test_the_downloaded_installer_runs_only_after_its_sha256_is_checked() -> None:
    connection = CondaHost(stats={"/opt": "root root 755"}, replies={**getent(), **ONLINE})
    commands, _ = plan(conda.ensure_conda, connection, LAB)
    ran = [c for c in commands if conda.INSTALLER in c.argv and c.argv[0] not in ("curl", "rm")]
    assert [c.argv[:3] for c in ran] == [("sh", "-c", conda.CHECK_AND_INSTALL)]
    assert ran[0].argv[3:] == ("sh", X86_64_SHA256, conda.INSTALLER, "/opt/conda", VERSION)
    script = conda.CHECK_AND_INSTALL
    assert script.index("sha256sum --check") < script.index('exec bash "$2"')
    assert "/latest/" not in str(commands[0])  # a pinned release, never "latest"


def check_and_install(tmp_path: Path, sha256: str) -> subprocess.CompletedProcess[str]:
    """Run CHECK_AND_INSTALL here on a stand-in installer that leaves a mark when it runs."""
    installer = tmp_path / "installer.sh"
    installer.write_text(f'#!/bin/sh\necho "$@" > {shlex.quote(str(tmp_path / "ran"))}\n')
    argv = ["sh", "-c", conda.CHECK_AND_INSTALL, "sh", sha256, str(installer),
            str(tmp_path / "conda"), VERSION]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_an_installer_whose_sha256_differs_is_deleted_and_nothing_runs(tmp_path: Path) -> None:
    done = check_and_install(tmp_path, X86_64_SHA256)
    assert done.returncode == 1
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "installer.sh").exists()
    [line] = done.stderr.splitlines()
    assert line == (
        f"{tmp_path}/installer.sh: its sha256 is not {X86_64_SHA256}, the published one of "
        f"Miniforge {VERSION}, so it was deleted and nothing was run; run provision again, or "
        "download it here and set conda_installer"
    )


def test_an_installer_with_the_published_sha256_runs_with_the_prefix(tmp_path: Path) -> None:
    text = f'#!/bin/sh\necho "$@" > {shlex.quote(str(tmp_path / "ran"))}\n'
    sha256 = hashlib.sha256(text.encode()).hexdigest()
    done = check_and_install(tmp_path, sha256)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ran").read_text() == f"-b -p {tmp_path}/conda\n"


def test_an_architecture_without_a_pinned_installer_is_refused_before_downloading() -> None:
    replies = {**getent(), **has("curl"), "uname -m": ("ppc64le\n", 0)}
    connection = CondaHost(stats={"/opt": "root root 755"}, replies=replies)
    with pytest.raises(ProvisionError, match=r"lab is ppc64le; gafkd pins Miniforge .* for "
                       r"x86_64 and aarch64 only: .* set conda_installer for lab"):  # fmt: skip
        plan(conda.ensure_conda, connection, LAB)


@pytest.mark.parametrize("world", [False, True])
def test_an_install_an_earlier_gafkd_left_group_writable_becomes_roots(world: bool) -> None:
    stats, replies = conda_at("/opt/conda", "miniforge")
    finds = offenders("/opt/conda", "/opt/conda/etc/profile.d/conda.sh", world)
    connection = CondaHost(stats=stats, finds=finds, replies={**replies, **getent()})
    host = Host("lab", users=("alice",), conda_world_readable=world)
    commands, _ = plan(conda.ensure_conda, connection, host)
    assert commands == perms("/opt/conda", world)
    connection.finds = {}  # as chown and chmod leave it
    assert plan(conda.ensure_conda, connection, host) == (
        [],
        "miniforge conda 24.11.3 at /opt/conda",
    )


@pytest.mark.parametrize(
    ("home_root", "world", "expected"),
    [
        ("root lab 710", False, []),  # this step's own: lab may pass, not list
        ("root root 701", False, []),  # an earlier gafkd's o+x: passable, left as it is
        ("root admin 750", False, ["chmod o+x /home/root"]),  # its group uses it: x for all
        ("root root 700", True, ["chmod o+x /home/root"]),
        ("root lab 710", True, ["chmod o+x /home/root"]),
    ],
)
def test_members_get_passage_through_the_folders_above_an_adopted_install(
    home_root: str, world: bool, expected: list[str]
) -> None:
    stats, replies = conda_at(LAB_ROOT, "anaconda-home-root")
    stats["/home/root"] = home_root
    connection = CondaHost(stats=stats, replies={**replies, **getent()})
    host = Host("lab", users=("alice",), conda_world_readable=world)
    commands, _ = plan(conda.ensure_conda, connection, host)
    assert [shlex.join(command.argv) for command in commands] == expected


@pytest.mark.parametrize("parent", ["alice alice 755", "root lab 775", "root root 777"])
def test_a_folder_above_the_install_that_a_member_could_write_is_refused(parent: str) -> None:
    stats, replies = conda_at("/opt/conda", "miniforge")
    stats["/opt"] = parent
    connection = CondaHost(stats=stats, replies={**replies, **getent()})
    with pytest.raises(ProvisionError, match=r"^/opt \(.*\) above the conda install lets someone "
                       r"other than root replace the install"):  # fmt: skip
        plan(conda.ensure_conda, connection, LAB)
    connection.stats["/opt"] = "root root 1777"  # sticky: only root may move root's install
    assert plan(conda.ensure_conda, connection, LAB)[0] == []


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_conda_world_readable_takes_true_or_false_only(value: object) -> None:
    with pytest.raises(ProvisionError, match=r"conda_world_readable is .*; expected true"):
        parse_host("lab", {"conda_world_readable": value})
    assert parse_host("lab", {"conda_world_readable": True}).conda_world_readable


def modes(command: Command) -> list[str]:
    """The mode a chmod, find -exec chmod or install -m sets, if any."""
    argv = list(command.argv)
    if "chmod" in argv:
        return [part for part in argv[argv.index("chmod") + 1 :] if not part.startswith("-")][:1]
    return [argv[argv.index("-m") + 1]] if "-m" in argv else []


def world_writable(command: Command) -> bool:
    """Whether a chmod, find -exec chmod or install -m mode lets others write."""
    return any(
        re.search(r"(^|,)[oa]*[+=][rwxXst]*w", mode) or (mode.isdigit() and int(mode[-1]) & 2)
        for mode in modes(command)
    )


def group_writable(command: Command) -> bool:
    """Whether a chmod or install -m mode lets the group write (a chmod that takes it is fine)."""
    return any(
        re.search(r"(^|,)[ug]*g[ugo]*[+=][rwxXst]*w", mode)
        or (mode.isdigit() and int(mode[-2]) & 2)
        for mode in modes(command)
    )


def test_no_plan_ever_makes_the_prefix_world_writable(tmp_path: Path) -> None:
    stats, replies = conda_at(LAB_ROOT, "anaconda-home-root")
    stats["/home/root"] = output("stat", "root-700")
    replies = {**replies, **getent(), **ONLINE}
    lab = CondaHost(stats=stats, finds=offenders(LAB_ROOT), replies=replies)
    fresh = CondaHost(stats={"/opt": "root root 755"}, replies=replies)
    plans = [
        plan(conda.ensure_conda, lab, LAB)[0],
        plan(conda.ensure_conda_moved, lab, LAB)[0],
        plan(conda.ensure_conda, fresh, LAB)[0],
        plan(conda.ensure_condarc, lab, LAB)[0],
        plan(envs.ensure_envs, envs_host(shared=False), TWO)[0],
    ]
    commands = [command for commands in plans for command in commands]
    assert any(c.argv[:2] == ("chmod", "-R") for c in commands)
    assert not [str(c) for c in commands if group_writable(c)]
    assert not [str(c) for c in commands if world_writable(c)]
    assert world_writable(sudo("chmod", "o+w", "/x"))
    assert world_writable(sudo("chmod", "-R", "777", "/x"))
    assert world_writable(sudo("install", "-d", "-m", "2777", "/x"))
    assert not world_writable(sudo("chmod", "-R", "g+rwX,o-w", "/x"))


# --- condarc -----------------------------------------------------------------------------------


def test_condarc_sends_envs_and_package_caches_home() -> None:
    assert conda.condarc_text("miniforge") == conda.HEADER + (
        "envs_dirs:\n  - ~/.conda/envs\npkgs_dirs:\n  - ~/.conda/pkgs\n"
        "channels:\n  - conda-forge\n"
    )  # fmt: skip
    anaconda = conda.condarc_text("anaconda")
    note = [line for line in anaconda.splitlines() if line.startswith("# ")][1:]
    assert " ".join(line[2:] for line in note) == ANACONDA_NOTE


def test_a_prefix_with_metacharacters_is_quoted_in_the_profile_hook() -> None:
    hook = conda.profile_hook_text("/opt/my conda;reboot")
    assert "'/opt/my conda;reboot/etc/profile.d/conda.sh'" in hook
    assert shlex.split(hook.splitlines()[1]) == [
        "if", "[", "-f", "/opt/my conda;reboot/etc/profile.d/conda.sh", "];", "then"
    ]  # fmt: skip


def condarc_host(stats: dict[str, str] | None = None, **files: str) -> CondaHost:
    found, replies = conda_at("/opt/conda", "miniforge")
    return CondaHost(stats={**found, **(stats or {})}, replies={**replies, **getent()}, files=files)


CONDARC = conda.condarc_text("miniforge")
HOOK = conda.profile_hook_text("/opt/conda")
CONDARC_REASON = (
    "/opt/conda/.condarc gives per-user envs and package caches in ~/.conda; "
    "/etc/profile.d/conda.sh loads conda; both root's, read-only to others"
)
WRITE_CONDARC = sudo(
    "install", "-D", "-o", "root", "-g", "lab", "-m", "0640", STDIN, "/opt/conda/.condarc",
    stdin=CONDARC,
    why="per-user envs and package cache in ~/.conda, conda-forge; only root may write it",
)  # fmt: skip
WRITE_HOOK = write_file(
    conda.PROFILE_HOOK, HOOK,
    why="login shells load conda from /opt/conda; only root may write the hook",
)  # fmt: skip


def test_condarc_and_hook_are_written_when_they_differ_then_nothing() -> None:
    connection = condarc_host(**{"/opt/conda/.condarc": "channels:\n  - conda-forge\n"})
    commands, reason = plan(conda.ensure_condarc, connection, LAB)
    assert commands == [WRITE_CONDARC, WRITE_HOOK]
    assert reason == CONDARC_REASON
    outcomes = run_host(connection, LAB, [("condarc", conda.ensure_condarc)], dry=False, echo=print)
    assert [o.status for o in outcomes] == ["changed"]
    assert connection.files["/opt/conda/.condarc"] == CONDARC
    assert connection.stats["/opt/conda/.condarc"] == "root lab 640"
    assert plan(conda.ensure_condarc, connection, LAB) == ([], CONDARC_REASON)


@pytest.mark.parametrize(
    ("condarc", "hook", "expected"),
    [
        ("root lab 664", "root root 644", [WRITE_CONDARC]),  # what an earlier gafkd left
        ("alice lab 640", "root root 644", [WRITE_CONDARC]),
        ("root lab 640", "alice lab 644", [WRITE_HOOK]),
        ("root lab 640", "root lab 664", [WRITE_HOOK]),
        ("root lab 640", "root root 644", []),
    ],
)
def test_a_condarc_or_hook_that_others_could_change_is_rewritten_as_roots(
    condarc: str, hook: str, expected: list[Command]
) -> None:
    stats = {"/opt/conda/.condarc": condarc, conda.PROFILE_HOOK: hook}
    files = {"/opt/conda/.condarc": CONDARC, conda.PROFILE_HOOK: HOOK}
    connection = condarc_host(stats, **files)
    assert plan(conda.ensure_condarc, connection, LAB)[0] == expected


def test_a_world_readable_install_gets_a_condarc_that_all_may_read() -> None:
    connection = condarc_host()
    commands, _ = plan(conda.ensure_condarc, connection, Host("lab", conda_world_readable=True))
    assert commands[0].argv[:8] == ("install", "-D", "-o", "root", "-g", "lab", "-m", "0644")


def test_the_adopted_anaconda_condarc_carries_the_tos_note() -> None:
    stats, replies = conda_at(LAB_ROOT, "anaconda-home-root")
    connection = CondaHost(stats=stats, replies={**replies, **getent()}, locked=(LAB_ROOT,))
    commands, reason = plan(conda.ensure_condarc, connection, LAB)
    assert commands[0].argv[-1] == f"{LAB_ROOT}/.condarc"
    assert "Anaconda's repository" in str(commands[0].stdin)
    assert [command.argv[-1] for command in commands] == [
        f"{LAB_ROOT}/.condarc",
        conda.PROFILE_HOOK,
    ]
    assert reason.endswith(ANACONDA_NOTE)


# --- envs --------------------------------------------------------------------------------------

SHARED_YML = f"{envs.ENV_FILES_DIR}/gafkd.yml"
SHA = envs.parse_env_file(GAFKD_YML, "envs/gafkd.yml").sha256


NO_GPU = "pypi: no NVIDIA driver on the host, so plain PyPI as pinned"


def probe_replies(case: str) -> dict[str, tuple[str, int]]:
    """The NVML probe's output (outputs/nvml-probe/<case>), in whichever mktemp -d folder."""
    return {f"python3 -E -s /tmp/tmp.fake{n}/nvml_probe.py": (output("nvml-probe", case), 0)
            for n in range(1, 40)}  # fmt: skip


def envs_host(
    users=("alice", "bob"), shared: bool = True, probe: str = "no-driver", **kwargs: Any
) -> CondaHost:
    stats, replies = conda_at("/opt/conda", "miniforge")
    connection = CondaHost(stats={**stats, **kwargs.pop("stats", {})},
                           replies={**replies, **getent(users), **probe_replies(probe)},
                           **kwargs)  # fmt: skip
    if shared:
        connection.files[SHARED_YML] = GAFKD_YML
    return connection


def built(connection: CondaHost, user: str, stamp: str = SHA) -> None:
    path = f"/home/{user}/.conda/envs/gafkd"
    connection.stats[f"{path}/conda-meta"] = f"{user} {user} 755"
    connection.files[f"{path}/{STAMP}"] = stamp + "\n"


def env_commands(user: str, gid: int, verb: str, why: str, sha: str = SHA) -> list[Command]:
    path = f"/home/{user}/.conda/envs/gafkd"
    prune = ("--prune",) if verb == "update" else ()
    return [
        sudo("sudo", "-u", user, "-H", "--", "sh", "-c", envs.UMASK_022, "sh",
             "/opt/conda/bin/conda", "env", verb, "-f", SHARED_YML, "-p", path, *prune,
             why=f"{why}: {verb} it as {user}"),
        sudo("install", "-o", user, "-g", str(gid), "-m", "0644", STDIN, f"{path}/{STAMP}",
             why="remember the env file it was built from", stdin=sha + "\n"),
        sudo("chmod", "-R", "go-w", path, why=f"only {user} may write {user}'s gafkd"),
    ]  # fmt: skip


def envs_reason(torch: str = NO_GPU) -> str:
    return (f"envs gafkd are current (gafkd torch {torch}), owned by each user and not writable "
            "by others (alice, bob)")  # fmt: skip


ENVS_REASON = envs_reason()
TWO = Host("lab", users=("alice", "bob"))


def test_each_user_gets_the_env_created_as_themselves() -> None:
    connection = envs_host(shared=False)
    commands, _ = plan(envs.ensure_envs, connection, TWO)
    assert commands == [
        write_file(SHARED_YML, GAFKD_YML, why=f"the host's copy of gafkd.yml, torch {NO_GPU}"),
        *env_commands("alice", 1001, "create", "alice's gafkd is missing"),
        *env_commands("bob", 1003, "create", "bob's gafkd is missing"),
    ]


def test_an_env_built_from_another_file_is_updated_with_prune() -> None:
    connection = envs_host()
    built(connection, "alice", stamp="0" * 64)
    built(connection, "bob")
    commands, _ = plan(envs.ensure_envs, connection, TWO)
    assert commands == env_commands(
        "alice", 1001, "update", "alice's gafkd was built from another gafkd.yml"
    )


def test_current_envs_plan_nothing_and_say_why() -> None:
    connection = envs_host()
    built(connection, "alice")
    built(connection, "bob")
    assert plan(envs.ensure_envs, connection, TWO) == ([], ENVS_REASON)


def test_one_users_env_writable_by_another_is_fixed() -> None:
    writable = shlex.join((ALICE_ENV, "!", "-type", "l", "-perm", "/022"))
    foreign = shlex.join((ALICE_ENV, "!", "-user", "alice", "!", "-user", "root"))
    connection = envs_host(finds={writable: f"{ALICE_ENV}/lib", foreign: f"{ALICE_ENV}/bin/x"})
    built(connection, "alice")
    built(connection, "bob")
    commands, _ = plan(envs.ensure_envs, connection, TWO)
    assert commands == [
        sudo(
            "find",
            ALICE_ENV,
            "!",
            "-user",
            "alice",
            "!",
            "-user",
            "root",
            "-exec",
            "chown",
            "-h",
            "alice",
            "{}",
            "+",
            why="alice owns alice's gafkd (root's files stay)",
        ),
        sudo("chmod", "-R", "go-w", ALICE_ENV, why="only alice may write alice's gafkd"),
    ]


def test_a_folder_in_the_envs_place_that_is_no_env_is_left_alone() -> None:
    connection = envs_host(stats={ALICE_ENV: "alice alice 755"})
    with pytest.raises(ProvisionError, match="exists but is no conda env"):
        plan(envs.ensure_envs, connection, TWO)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: gafkd\nchannels: [conda-forge\n", "not valid YAML"),
        ("- python=3.11\n", "expected a mapping"),
        ("channels: [conda-forge]\ndependencies: [python]\n", "name is None"),
        ("name: gafkd\ndependencies: [python]\n", "channels is None"),
        ("name: gafkd\nchannels: [conda-forge]\ndependencies: [{pip: torch}]\n",
         "dependency {'pip': 'torch'} is neither"),
    ],
)  # fmt: skip
def test_an_env_file_with_errors_is_one_clear_error_before_the_host_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    (tmp_path / "broken.yml").write_text(text)
    monkeypatch.setattr(envs, "ENVS_DIR", tmp_path)
    connection = envs_host()
    with pytest.raises(ProvisionError, match=re.escape(message)) as error:
        plan(envs.ensure_envs, connection, TWO)
    assert str(error.value).startswith(f"{tmp_path / 'broken.yml'}: ")
    assert connection.ran == []


def test_the_projects_env_file_parses_and_pins_torch_through_pip() -> None:
    env = envs.read_env_files(envs.ENVS_DIR)[0]
    assert (env.name, env.path.name) == ("gafkd", "gafkd.yml")
    assert "torch==" in env.text.split("- pip:")[1]


def test_envs_for_an_unknown_user_stop_with_the_fix() -> None:
    connection = envs_host()
    with pytest.raises(ProvisionError, match="users mallory do not exist"):
        plan(envs.ensure_envs, connection, Host("lab", users=("mallory",)))


# --- envs: torch's wheel variant for the host's driver ------------------------------------------

CU126_YML = envs.parse_host_text(GAFKD_YML, "cu126")
CU126_SHA = envs.digest(CU126_YML)
CU126 = "cu126: driver 560.35.03 is below cu130's 580.65.06"


def test_the_lab_rtx3080_on_driver_560_gets_torch_from_the_cu126_index() -> None:
    connection = envs_host(users=("alice",), shared=False, probe="rtx3080")
    commands, _ = plan(envs.ensure_envs, connection, LAB)
    assert commands == [
        write_file(SHARED_YML, CU126_YML, why=f"the host's copy of gafkd.yml, torch {CU126}"),
        *env_commands("alice", 1001, "create", "alice's gafkd is missing", sha=CU126_SHA),
    ]
    pins = "      - --extra-index-url https://download.pytorch.org/whl/cu126\n" \
           "      - torch==2.13.0+cu126\n"  # fmt: skip
    assert pins in CU126_YML
    assert CU126_YML.endswith(GAFKD_YML.split("      - torch==2.13.0\n")[1])  # the rest as is
    assert envs.parse_env_file(CU126_YML, "host copy").name == "gafkd"
    assert gpu.parse_env_torch(CU126_YML) == gpu.TorchPin("2.13.0", (12, 6), own=True)


def test_a_data_centre_card_on_driver_580_keeps_plain_pypi() -> None:
    connection = envs_host(users=("alice",), shared=False, probe="h100-580")
    commands, _ = plan(envs.ensure_envs, connection, LAB)
    why = "the host's copy of gafkd.yml, torch pypi: plain PyPI's cu130 suits driver 580.95.05"
    assert commands[0] == write_file(SHARED_YML, GAFKD_YML, why=why)
    assert commands[2].stdin == SHA + "\n"


def test_a_pre_turing_gpu_on_driver_580_gets_cu126_since_cuda_13_wheels_lack_it() -> None:
    connection = envs_host(users=("alice",), shared=False, probe="v100-580")
    commands, _ = plan(envs.ensure_envs, connection, LAB)
    why = "torch cu126: cu130 has no kernels for Tesla V100-SXM2-16GB (7.0)"
    assert commands[0] == write_file(
        SHARED_YML, CU126_YML, why=f"the host's copy of gafkd.yml, {why}"
    )


def test_driver_470_stops_the_step_naming_the_minimum_driver_before_anything_changes() -> None:
    connection = envs_host(users=("alice",), shared=False, probe="rtx3080-470")
    with pytest.raises(ProvisionError) as error:
        plan(envs.ensure_envs, connection, LAB)
    message = str(error.value)
    assert message.startswith("gafkd.yml: torch 2.13.0 has stable wheels for cu126 and cu130 only")
    assert "It needs driver >= 525.60.13 (cu126, under minor-version compatibility" in message
    assert SHARED_YML not in connection.files


def test_an_env_file_with_its_own_index_is_copied_as_it_is_without_a_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = GAFKD_YML.replace(
        "      - torch==2.13.0\n",
        "      - --index-url https://download.pytorch.org/whl/cu130\n      - torch==2.13.0\n",
    )
    (tmp_path / "gafkd.yml").write_text(own)
    monkeypatch.setattr(envs, "ENVS_DIR", tmp_path)
    connection = envs_host(users=("alice",), shared=False, probe="rtx3080")
    commands, reason = plan(envs.ensure_envs, connection, LAB)
    assert commands[0] == write_file(SHARED_YML, own, why="the host's copy of gafkd.yml")
    assert commands[2].stdin == envs.digest(own) + "\n"
    assert not [c for c in connection.ran if "nvml_probe" in c]
    assert "torch" not in reason


def test_the_lab_env_is_built_then_a_second_run_plans_nothing() -> None:
    connection = envs_host(users=("alice",), shared=False, probe="rtx3080")
    create = env_commands("alice", 1001, "create", "", sha=CU126_SHA)[0]
    conda_meta = f"{ALICE_ENV}/conda-meta"
    connection.hooks[shlex.join(create.argv)] = lambda: connection.stats.update(
        {conda_meta: "alice alice 755"}
    )
    connection.replies[shlex.join(("chmod", "-R", "go-w", ALICE_ENV))] = ("", 0)
    answer = connection.answer

    def install_stamp(argv: list[str]) -> tuple[str, str, int]:  # install -o U -g G -m M SRC DST
        if argv[3:5] == ["install", "-o"]:
            connection.files[argv[-1]] = connection.files[argv[-2]]
            return "", "", 0
        return answer(argv)

    connection.answer = install_stamp  # type: ignore[method-assign]
    first = run_host(connection, LAB, [("envs", envs.ensure_envs)], dry=False, echo=print)
    assert [(o.status, o.detail) for o in first] == [("changed", "applied 4, verified")]
    assert connection.files[SHARED_YML] == CU126_YML
    assert connection.files[f"{ALICE_ENV}/{STAMP}"] == CU126_SHA + "\n"
    again = run_host(connection, LAB, [("envs", envs.ensure_envs)], dry=False, echo=print)
    assert [(o.status, o.detail) for o in again] == [
        ("ok", f"envs gafkd are current (gafkd torch {CU126}), owned by each user and not "
               "writable by others (alice)")
    ]  # fmt: skip


def test_a_driver_upgrade_moves_a_cu126_env_to_plain_pypi_dropping_the_old_torch() -> None:
    connection = envs_host(users=("alice",), shared=False, probe="h100-580")
    connection.files[SHARED_YML] = CU126_YML
    built(connection, "alice", stamp=CU126_SHA)
    commands, _ = plan(envs.ensure_envs, connection, LAB)
    why = "alice's gafkd has torch cu126, this host now gets pypi"
    assert commands == [
        write_file(SHARED_YML, GAFKD_YML, why="the host's copy of gafkd.yml, torch pypi: plain "
                   "PyPI's cu130 suits driver 580.95.05"),
        sudo(*envs.as_user(Account("alice", 1001, "/home/alice"), f"{ALICE_ENV}/bin/python",
                           "-m", "pip", "uninstall", "-y", "torch"),
             why="drop alice's gafkd's torch cu126 first"),
        *env_commands("alice", 1001, "update", why),
    ]  # fmt: skip


def test_a_driver_upgrade_that_keeps_the_variant_plans_nothing() -> None:
    connection = envs_host(users=("alice",), probe="h100")  # driver 570: still cu126
    connection.files[SHARED_YML] = CU126_YML
    built(connection, "alice", stamp=CU126_SHA)
    commands, reason = plan(envs.ensure_envs, connection, LAB)
    assert commands == []
    assert "gafkd torch cu126: driver 570.124.06 is below cu130's 580.65.06" in reason


@pytest.mark.parametrize("case", ["rtx3080", "h100", "h100-580", "v100-580"])
def test_doctor_names_the_variant_the_envs_step_installs(case: str) -> None:
    probe = gpu.parse_probe(output("nvml-probe", case))
    env = envs.parse_host_env(envs.read_env_files(envs.ENVS_DIR)[0], probe)
    verdict = gpu.explain(probe, [], gpu.read_env_pins(envs.ENVS_DIR), Host("lab"))
    wheel = "plain PyPI's" if env.variant == "pypi" else f"the {env.variant}"
    assert f"(the envs step installs {wheel} wheel: {env.why})" in verdict
