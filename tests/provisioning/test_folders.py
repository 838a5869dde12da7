"""The queue step: the host-wide run queue folder, root and the lab group's, mode 3770."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from provisioning.core import Command, ProvisionError, SkipStep
from provisioning.folders import ensure_queue
from provisioning.hosts import Host, parse_host
from provisioning.runner import plan
from tests.provisioning.conftest import FakeConnection

QUEUE = "/srv/lab/.gafkd-queue"
STAT = f"stat -L -c '%U %G %a' -- {QUEUE}"
LAB_GROUP = {"getent group lab": ("lab:x:1002:alice,bob\n", 0)}
MODE_WHY = (
    "lab may lock files in it, others nothing; sticky, so only a file's owner may remove or "
    "replace it"
)


def sudo(*argv: str, why: str) -> Command:
    return Command(argv, sudo=True, why=why)


def test_a_missing_queue_folder_is_made_for_root_and_the_group(
    fake: Callable[..., FakeConnection],
) -> None:
    connection = fake(replies={**LAB_GROUP, STAT: ("", 1)})
    commands, reason = plan(ensure_queue, connection, Host("lab"))
    assert commands == [
        sudo("install", "-d", "-o", "root", "-g", "lab", "-m", "3770", QUEUE,
             why=f"the run queue {QUEUE} is missing: lab's runners share GPU slots in it"),
    ]  # fmt: skip
    assert reason == f"{QUEUE} is the run queue of group lab (root:lab, mode 3770)"


def test_a_queue_folder_with_the_wrong_owner_and_mode_is_fixed(
    fake: Callable[..., FakeConnection],
) -> None:
    connection = fake(replies={**LAB_GROUP, STAT: ("alice alice 775\n", 0)})
    commands, _ = plan(ensure_queue, connection, Host("lab"))
    assert commands == [
        sudo("chown", "root:lab", QUEUE,
             why=f"{QUEUE} belongs to alice:alice; the queue is root:lab's"),
        sudo("chmod", "3770", QUEUE, why=f"{QUEUE} has mode 775; {MODE_WHY}"),
    ]  # fmt: skip


def test_a_queue_folder_an_earlier_gafkd_made_2770_becomes_sticky(
    fake: Callable[..., FakeConnection],
) -> None:
    connection = fake(replies={**LAB_GROUP, STAT: ("root lab 2770\n", 0)})
    commands, _ = plan(ensure_queue, connection, Host("lab"))
    assert commands == [sudo("chmod", "3770", QUEUE, why=f"{QUEUE} has mode 2770; {MODE_WHY}")]


def test_a_compliant_queue_folder_plans_nothing(fake: Callable[..., FakeConnection]) -> None:
    connection = fake(replies={**LAB_GROUP, STAT: ("root lab 3770\n", 0)})
    commands, reason = plan(ensure_queue, connection, Host("lab"))
    assert commands == []
    assert reason == f"{QUEUE} is the run queue of group lab (root:lab, mode 3770)"


def test_without_the_group_the_queue_step_is_skipped(fake: Callable[..., FakeConnection]) -> None:
    connection = fake(replies={"getent group lab": ("", 2)})
    with pytest.raises(SkipStep, match="group lab does not exist yet"):
        plan(ensure_queue, connection, Host("lab"))
    assert STAT not in connection.ran


def test_queue_dir_is_a_host_setting_with_a_default() -> None:
    assert parse_host("lab", {}).queue_dir == QUEUE
    assert parse_host("lab", {"queue_dir": "/data/queue/"}).queue_dir == "/data/queue"


@pytest.mark.parametrize("value", ["queue", "/srv/lab/{user}/queue", "/srv/$(id)", "/"])
def test_a_queue_dir_that_is_not_one_plain_absolute_folder_is_refused(value: str) -> None:
    with pytest.raises(ProvisionError, match=r"hosts\.lab\.queue_dir is .*expected an absolute"):
        parse_host("lab", {"queue_dir": value})


def folder_stat(user: str) -> str:
    return f"stat -L -c '%U %G %a' -- /srv/lab/{user}/gafkd"


def test_each_listed_user_gets_their_own_lab_folder(fake: Callable[..., FakeConnection]) -> None:
    from provisioning.folders import ensure_lab_folders

    host = parse_host("lab", {"users": ["alice", "bob", "carol"]})
    replies = {
        folder_stat("alice"): ("", 1),
        folder_stat("bob"): ("root root 755\n", 0),
        folder_stat("carol"): ("carol carol 755\n", 0),
    }
    commands, reason = plan(ensure_lab_folders, fake(replies=replies), host)
    assert commands == [
        sudo("install", "-d", "-o", "alice", "-m", "0755", "/srv/lab/alice/gafkd",
             why="alice's lab folder /srv/lab/alice/gafkd is missing: they sync and launch "
             "into it"),
        sudo("chown", "bob", "/srv/lab/bob/gafkd",
             why="/srv/lab/bob/gafkd belongs to root; bob syncs their code into it"),
    ]  # fmt: skip
    assert reason == "3 lab folders /srv/lab/<user>/gafkd exist, each its user's"


def test_without_listed_users_there_are_no_lab_folders_to_make(
    fake: Callable[..., FakeConnection],
) -> None:
    from provisioning.folders import ensure_lab_folders

    with pytest.raises(SkipStep, match="no users are listed"):
        plan(ensure_lab_folders, fake(replies={}), Host("lab"))
