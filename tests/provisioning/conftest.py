"""A fake host behind the Connection protocol, fed with recorded outputs from outputs/."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from invoke.exceptions import AuthFailure, UnexpectedExit
from invoke.runners import Result

from provisioning.core import LOCAL_STDIN_PREFIX, STDIN

OUTPUTS = Path(__file__).parent / "outputs"


def output(fact: str, case: str) -> str:
    """A recorded command output: outputs/<fact>/<case>.txt."""
    return (OUTPUTS / fact / f"{case}.txt").read_text()


class FakeConnection:
    """A tiny host: files, paths, unit states and canned replies; it records what ran.

    ``cat``, ``test -e/-x``, ``systemctl is-enabled/mask``, ``mktemp``, ``rm`` and
    ``install SRC DST`` act on that state; any other command must be in ``replies``
    (``(stdout, exit code)``), so an unexpected command fails the test.
    """

    def __init__(
        self,
        replies: dict[str, tuple[str, int]] | None = None,
        files: dict[str, str] | None = None,
        paths: set[str] | None = None,
        units: dict[str, str] | None = None,
        sudo_password: str | None = None,
        local_replies: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self.replies = dict(replies or {})
        self.files = dict(files or {})
        self.paths = set(paths or ()) | set(self.files)
        self.units = dict(units or {})
        self.sudo_password = sudo_password
        self.ran: list[str] = []
        self.puts: list[tuple[Any, str]] = []
        self.temp = 0
        self.hooks: dict[str, Callable[[], None]] = {}
        self.local_replies = dict(local_replies or {})  # commands run on this machine
        self.ran_local: list[tuple[str, str]] = []  # (command, its standard input)

    def run(self, command: str, *, hide: bool = False, warn: bool = False, **_: Any) -> Result:
        self.ran.append(command)
        stdout, stderr, code = self.answer(shlex.split(command))
        result = Result(stdout=stdout, stderr=stderr, exited=code, command=command)
        if code and not warn:
            raise UnexpectedExit(result)
        return result

    def sudo(self, command: str, *, password: str | None = None, **kwargs: Any) -> Result:
        if password != self.sudo_password:
            result = Result(command=command, exited=-1)
            raise AuthFailure(result, "[sudo] password: ")
        return self.run(shlex.join(("sudo", "-n", "--", *shlex.split(command))), **kwargs)

    def put(self, local: Any, remote: str) -> object:
        self.puts.append((local, remote))
        content = Path(local).read_text() if isinstance(local, str) else local.read().decode()
        self.files[remote] = content
        self.paths.add(remote)
        return None

    def local(self, command: str, *, warn: bool = False, **_: Any) -> Result:
        """This machine's side (git, rsync): ``local_replies`` or a hook, else the test fails.

        A temporary file standing for STDIN is recorded with its content and keyed as STDIN.
        """
        argv, stdin = shlex.split(command), ""
        for index, part in enumerate(argv):
            if Path(part).name.startswith(LOCAL_STDIN_PREFIX):
                argv[index], stdin = STDIN, Path(part).read_text()
        command = shlex.join(argv)
        self.ran_local.append((command, stdin))
        if command in self.hooks:
            self.hooks[command]()
            stdout, code = "", 0
        elif command in self.local_replies:
            stdout, code = self.local_replies[command]
        else:
            raise AssertionError(f"unexpected command on this machine: {command!r}")
        result = Result(stdout=stdout, stderr="", exited=code, command=command)
        if code and not warn:
            raise UnexpectedExit(result)
        return result

    def answer(self, argv: list[str]) -> tuple[str, str, int]:
        if argv[:3] == ["sudo", "-n", "--"]:
            argv = argv[3:]
        key = shlex.join(argv)
        if key in self.hooks:  # a change command: apply its effect to the fake state
            self.hooks[key]()
            return "", "", 0
        if key in self.replies:
            stdout, code = self.replies[key]
            return stdout, "", code
        match argv:
            case ["cat", "--", path]:
                if path in self.files:
                    return self.files[path], "", 0
                return "", f"cat: {path}: No such file or directory\n", 1
            case ["test", "-e" | "-x", path]:
                return "", "", 0 if path in self.paths else 1
            case ["systemctl", "is-enabled", unit]:
                state = self.units[unit]
                return state + "\n", "", 0 if state in ("enabled", "static") else 1
            case ["systemctl", "mask", *units]:
                self.units.update(dict.fromkeys(units, "masked"))
                return "", "", 0
            case ["mktemp", *_]:
                self.temp += 1
                return f"/tmp/tmp.fake{self.temp}\n", "", 0
            case ["rm", *_]:
                return "", "", 0
            case ["install", "-D", "-m", _, source, target]:
                self.files[target] = self.files[source]
                self.paths.add(target)
                return "", "", 0
        raise AssertionError(f"unexpected command on the fake host: {key!r}")


@pytest.fixture
def fake() -> Callable[..., FakeConnection]:
    return FakeConnection


@pytest.fixture
def recorded() -> Callable[[str, str], str]:
    return output


from tests.provisioning import testhost as testhost_module  # noqa: E402


@pytest.fixture(scope="session")
def testhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real Debian test host (testhost.py), once per session; skips when it cannot start."""
    hosts = testhost_module.bring_up(tmp_path_factory.mktemp("testhost"))
    try:
        host = next(hosts)
    except testhost_module.Unavailable as error:
        pytest.skip(f"ssh test host unavailable: {error}")
    yield host
    hosts.close()  # stops its sshd by PID and removes the copy
