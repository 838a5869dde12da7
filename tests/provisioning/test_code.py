"""The sync step: parsers on recorded git/rsync/sha256sum outputs, and plans on a fake host."""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

import pytest

from provisioning import code
from provisioning.core import STDIN, Command, ProvisionError
from provisioning.hosts import Host
from provisioning.runner import plan

FOLDER = "/srv/lab/alice/gafkd"
LAB = Host("lab")  # lab_dir /srv/lab/{user}/gafkd; ~/.ssh files under the test's HOME
FILES = (".gitignore", "gafkd/imaging.py", "gafkd/models/wrn.py", "run.sh", "tasks.py")


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files of the recorded ``git ls-files`` output, as this machine's checkout."""
    for path in (*FILES, "runs/g/r.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(f"{path}\n")
    monkeypatch.setattr(code, "PROJECT_ROOT", tmp_path)
    return tmp_path


def dry_run_key(root: Path, host: Host = LAB) -> str:
    argv = code.rsync_argv(host, FOLDER, root)
    return shlex.join((argv[0], "--dry-run", "--itemize-changes", *argv[1:]))


def lab_host(
    fake, recorded, root: Path, *, folder: int = 0, rsync: int = 0, itemized: str = "", lab: int = 1
):
    """A fake host where alice logs in; ``folder``/``rsync``/``lab`` (is /srv/lab writable):
    exit codes of their checks."""
    local = {
        f"git -C {root} ls-files -z -co --exclude-standard": (
            recorded("git-ls-files", "checkout"),
            0,
        ),
        "rsync --version": ("rsync  version 3.2.7  protocol version 31\n", 0),
        dry_run_key(root): (itemized, 0),
    }
    replies = {
        "id -un": ("alice\n", 0),
        "id -u": ("1001\n", 0),
        "test -d /srv/lab/alice": ("", 1),
        "test -d /srv/lab": ("", 0),
        "test -w /srv/lab": ("", lab),
        f"test -d {FOLDER}": ("", folder),
        f"test -w {FOLDER}": ("", 0),
        "rsync --version": ("rsync  version 3.2.7  protocol version 31\n", rsync),
    }
    return fake(replies, local_replies=local)


# --- parse_* -----------------------------------------------------------------------------------


def test_parse_file_list_drops_run_outputs_and_sorts(recorded) -> None:
    assert code.parse_file_list(recorded("git-ls-files", "checkout")) == FILES


def test_parse_itemized_names_new_and_changed_files_not_folders(recorded) -> None:
    new = code.parse_itemized(recorded("rsync-itemize", "new-folder"))
    assert new == (".gitignore", "run.sh", "tasks.py", "gafkd/imaging.py", "gafkd/models/wrn.py")
    changed = code.parse_itemized(recorded("rsync-itemize", "changed"))
    assert changed == ("tasks.py", "gafkd/imaging.py")  # content+time, then mode only
    assert code.parse_itemized("") == ()


def test_parse_itemized_refuses_output_it_does_not_know() -> None:
    with pytest.raises(ProvisionError, match=re.escape("rsync --itemize-changes printed 'oops'")):
        code.parse_itemized("oops\n")


def test_parse_checksums_maps_paths_below_the_folder(recorded) -> None:
    found = code.parse_checksums(recorded("sha256sum", "partial"), "/srv/lab/root/gafkd")
    assert sorted(found) == ["run.sh", "tasks.py"]
    assert found["tasks.py"].startswith("73cb3858")


# --- the plan ----------------------------------------------------------------------------------


def test_rsync_argv_uses_the_hosts_ssh_files_and_checks_host_keys(tmp_path: Path) -> None:
    host = Host("lab", ssh_config="/keys/ssh_config", known_hosts="/keys/known hosts")
    assert code.rsync_argv(host, FOLDER, tmp_path) == (
        "rsync", "--links", "--times", "--perms", "--compress", "--from0", "--files-from", STDIN,
        "--rsh", "ssh -F /keys/ssh_config -o BatchMode=yes -o StrictHostKeyChecking=yes "
        "-o 'UserKnownHostsFile=/keys/known hosts'",
        f"{tmp_path}/", f"lab:{FOLDER}/",
    )  # fmt: skip
    assert code.rsync_argv(Host("local"), FOLDER, tmp_path)[-2:] == (f"{tmp_path}/", f"{FOLDER}/")


def test_a_fresh_host_gets_the_folder_then_every_file(fake, recorded, checkout) -> None:
    connection = lab_host(fake, recorded, checkout, folder=1)
    commands, reason = plan(code.ensure_code, connection, LAB)
    argv = code.rsync_argv(LAB, FOLDER, checkout)
    assert commands == [
        Command(
            ("install", "-d", "-o", "alice", "-m", "0755", FOLDER),
            sudo=True,
            why=f"the lab folder {FOLDER} is missing: create it for alice",
        ),
        Command(
            argv,
            sudo=False,
            why="5 of 5 project files differ: .gitignore, gafkd/imaging.py, "
            "gafkd/models/wrn.py, ...",
            stdin="\0".join(FILES),
            local=True,
        ),
    ]
    assert reason == f"the 5 project files in {FOLDER} match this checkout (rsync)"
    assert str(commands[1]).startswith("local: rsync --links")


def test_a_folder_the_user_may_create_is_made_without_sudo(fake, recorded, checkout) -> None:
    connection = lab_host(fake, recorded, checkout, folder=1, lab=0)  # like a cluster's scratch
    commands, _ = plan(code.ensure_code, connection, LAB)
    assert commands[0] == Command(
        ("mkdir", "-p", "-m", "0755", "--", FOLDER),
        sudo=False,
        why=f"the lab folder {FOLDER} is missing: create it for alice",
    )


def test_only_changed_files_are_named_when_the_folder_exists(fake, recorded, checkout) -> None:
    itemized = recorded("rsync-itemize", "changed")
    connection = lab_host(fake, recorded, checkout, itemized=itemized)
    [command], _ = plan(code.ensure_code, connection, LAB)
    assert command.why == "2 of 5 project files differ: tasks.py, gafkd/imaging.py"
    assert connection.ran_local[-1] == (dry_run_key(checkout), "\0".join(FILES))


def test_an_up_to_date_folder_plans_nothing(fake, recorded, checkout) -> None:
    connection = lab_host(fake, recorded, checkout)
    commands, reason = plan(code.ensure_code, connection, LAB)
    assert commands == []
    assert reason == f"the 5 project files in {FOLDER} match this checkout (rsync)"


def test_without_rsync_on_the_host_differing_files_go_by_sftp(fake, recorded, checkout) -> None:
    connection = lab_host(fake, recorded, checkout, rsync=127)
    same = hashlib.sha256(b"tasks.py\n").hexdigest()
    sums = f"{same}  {FOLDER}/tasks.py\n{64 * '0'}  {FOLDER}/run.sh\n"
    connection.replies[shlex.join(("sha256sum", "--", *(f"{FOLDER}/{f}" for f in FILES)))] = (
        sums,
        1,  # some are missing
    )
    commands, reason = plan(code.ensure_code, connection, LAB)
    assert [(c.argv[-1], c.why) for c in commands] == [
        (f"{FOLDER}/.gitignore", ".gitignore is missing (SFTP: no rsync)"),
        (f"{FOLDER}/gafkd/imaging.py", "gafkd/imaging.py is missing (SFTP: no rsync)"),
        (f"{FOLDER}/gafkd/models/wrn.py", "gafkd/models/wrn.py is missing (SFTP: no rsync)"),
        (f"{FOLDER}/run.sh", "run.sh is different (SFTP: no rsync)"),
    ]
    assert commands[0] == Command(
        ("install", "-D", "-m", "0644", STDIN, f"{FOLDER}/.gitignore"),
        sudo=False,
        why=".gitignore is missing (SFTP: no rsync)",
        stdin=b".gitignore\n",
    )
    assert reason.endswith("(SFTP, no rsync)")


def test_a_folder_the_user_cannot_write_is_an_error_with_the_fix(fake, recorded, checkout) -> None:
    connection = lab_host(fake, recorded, checkout)
    connection.replies[f"test -w {FOLDER}"] = ("", 1)
    with pytest.raises(ProvisionError, match=re.escape(f"sudo chown alice {FOLDER}")):
        plan(code.ensure_code, connection, LAB)


def test_a_login_name_that_is_not_plain_is_refused(fake, recorded, checkout) -> None:
    connection = lab_host(fake, recorded, checkout)
    connection.replies["id -un"] = ("al ice;rm\n", 0)
    with pytest.raises(ProvisionError, match="the login user is 'al ice;rm'"):
        plan(code.ensure_code, connection, LAB)


def test_outside_a_git_checkout_sync_says_so(fake, checkout) -> None:
    git = f"git -C {checkout} ls-files -z -co --exclude-standard"
    connection = fake(local_replies={git: ("", 128)})
    with pytest.raises(ProvisionError, match="sync copies a git checkout, but `git ls-files` fail"):
        plan(code.ensure_code, connection, LAB)
