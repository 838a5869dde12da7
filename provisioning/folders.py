"""The lab's shared folders on a host: the run queue (``queue`` step) and each member's lab
folder (``lab-folders`` step).

The run queue is the folder where every lab member's batch runner takes its GPU slots. gafkd's
runners keep their per-GPU limit across users by locking one file per slot in this folder
(gafkd/experiments/hostqueue.py), so it belongs to the lab group and to no one else: owned by
root and the group, mode 3770: setgid, so the files in it belong to the group too, and sticky,
so a member can remove or replace only their own files there, never another member's slot. A
folder an earlier gafkd made 2770 gets the sticky bit. ``invoke launch --host`` hands it to the
runner when it exists. Undo: docs/provisioning.md.
"""

from __future__ import annotations

from collections.abc import Generator

from provisioning.conda import read_group, read_stat
from provisioning.core import Command, Connection, SkipStep
from provisioning.hosts import Host

MODE = 0o3770  # setgid and sticky; owner and group read, write, enter; others nothing


def ensure_queue(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """The queue folder ``queue_dir`` exists, owned by root and the lab group, mode 3770
    (2770, as an earlier gafkd made it, lets a member replace another member's slot files)."""
    folder, group = host.queue_dir, host.group
    if read_group(connection, group) is None:
        raise SkipStep(
            f"group {group} does not exist yet (the group step makes it); it owns {folder}"
        )
    found = read_stat(connection, folder)
    if found is None:
        why = f"the run queue {folder} is missing: {group}'s runners share GPU slots in it"
        argv = ("install", "-d", "-o", "root", "-g", group, "-m", f"{MODE:o}", folder)
        yield Command(argv, sudo=True, why=why)
    else:
        if (found.owner, found.group) != ("root", group):
            why = f"{folder} belongs to {found.owner}:{found.group}; the queue is root:{group}'s"
            yield Command(("chown", f"root:{group}", folder), sudo=True, why=why)
        if found.mode != MODE:
            why = (
                f"{folder} has mode {found.mode:o}; {group} may lock files in it, others nothing; "
                "sticky, so only a file's owner may remove or replace it"
            )
            yield Command(("chmod", f"{MODE:o}", folder), sudo=True, why=why)
    return f"{folder} is the run queue of group {group} (root:{group}, mode {MODE:o})"


def ensure_lab_folders(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """Each listed user has their lab folder (``lab_dir`` with ``{user}``), owned by them.

    A lab member syncs and launches as themselves, usually without sudo, so their folder under
    the root-owned ``/srv/lab`` must exist before their first ``invoke launch --host``.
    """
    if "{user}" not in host.lab_dir or not host.users:
        raise SkipStep(
            "no per-user lab folders: "
            + ("lab_dir has no {user}" if host.users else "no users are listed in invoke.yaml")
        )
    for user in host.users:
        folder = host.lab_dir.replace("{user}", user)
        found = read_stat(connection, folder)
        if found is None:
            why = f"{user}'s lab folder {folder} is missing: they sync and launch into it"
            yield Command(("install", "-d", "-o", user, "-m", "0755", folder), sudo=True, why=why)
        elif found.owner != user:
            why = f"{folder} belongs to {found.owner}; {user} syncs their code into it"
            yield Command(("chown", user, folder), sudo=True, why=why)
    shown = host.lab_dir.replace("{user}", "<user>")
    return f"{len(host.users)} lab folders {shown} exist, each its user's"
