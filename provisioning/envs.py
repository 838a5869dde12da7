"""Per-user envs: each listed user gets each env of ``envs/*.yml`` in ``~/.conda/envs``.

The env is created by that user with the shared conda (:mod:`provisioning.conda`), its packages
cached in their own ``~/.conda/pkgs``; updated when its file changed (a stamp in the env holds
the sha256 of the host's copy of the file); owned by the user and not writable by others. The
env files install the torch wheels with pip inside the conda env: the wheels bundle their own
CUDA runtime and cuDNN, so only the driver matters (gpu-stack.md §3.2). A ``torch==VERSION`` pin
without an index of the file's own gets the newest stable CUDA variant the host's driver and GPUs
run (:func:`provisioning.gpu.choose_wheel`): the host's copy pins ``torch==VERSION+cuNNN`` from
the PyTorch wheel index. Undo: docs/provisioning.md.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning import gpu
from provisioning.conda import (
    Account,
    no_conda,
    read_accounts,
    read_first,
    read_install,
    read_stat,
    read_text,
)
from provisioning.core import (
    STDIN,
    Command,
    Connection,
    ProvisionError,
    SkipStep,
    read_file,
    write_file,
)
from provisioning.hosts import USER_NAME, Host

# --- constants ---------------------------------------------------------------------------------

yaml: Any = importlib.import_module("invoke.util").yaml  # PyYAML, or the copy invoke vendors

ENVS_DIR = Path(__file__).resolve().parent.parent / "envs"
ENV_FILES_DIR = "/usr/local/share/gafkd/envs"  # the project's env files, readable by all users
STAMP = ".gafkd-env.sha256"  # in each env: the sha256 of the env file it was built from
UMASK_022 = 'umask 022 && exec "$@"'  # a user's envs and package cache: theirs alone to write
# Pins of the torch family that the host's copy moves to the chosen variant (+cuNNN), together.
TORCH_PINS = re.compile(r"^(\s*-\s*)(torch|torchvision|torchaudio)==([0-9][\w.]*)\s*$", re.M)


@dataclass(frozen=True)
class EnvFile:
    path: Path  # on this machine
    name: str  # the env's name: ~/.conda/envs/<name>
    text: str
    sha256: str


@dataclass(frozen=True)
class HostEnv:
    """An env file as a host gets it: torch's wheel variant picked for the host's driver."""

    env_file: EnvFile
    text: str  # the host's copy of the file
    sha256: str  # of ``text``: the stamp of an env built from it
    variant: str = ""  # torch's wheel variant, e.g. "cu126" or PYPI; "": the file fixes it
    why: str = ""  # why that variant, in a few words
    torches: tuple[str, ...] = ()  # the torch-family packages the variant applies to
    variants: tuple[tuple[str, str], ...] = ()  # (sha256, variant) of this file's other copies


# --- parse_* -----------------------------------------------------------------------------------


def parse_env_file(text: str, label: str) -> EnvFile:
    """An ``envs/*.yml`` file: name, channels and dependencies; any problem names the file."""

    def bad(problem: str) -> ProvisionError:
        return ProvisionError(f"{label}: {problem}; fix the file (provisioning never edits it)")

    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise bad(f"not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(data, dict):
        raise bad(f"expected a mapping with name, channels and dependencies, got {data!r:.60}")
    name, channels, dependencies = (data.get(k) for k in ("name", "channels", "dependencies"))
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        raise bad(f"name is {name!r}; expected a plain name such as gafkd")
    if not channels or not all(isinstance(c, str) for c in channels):
        raise bad(f"channels is {channels!r}; expected a list of channel names")
    if not dependencies or not isinstance(dependencies, list):
        raise bad(f"dependencies is {dependencies!r}; expected a non-empty list")
    for item in dependencies:
        pip = item.get("pip") if isinstance(item, dict) and list(item) == ["pip"] else None
        if not isinstance(item, str) and not (isinstance(pip, list) and pip):
            raise bad(f"dependency {item!r} is neither a package spec nor a pip: list")
    return EnvFile(Path(label), name, text, digest(text))


def parse_host_text(text: str, variant: str) -> str:
    """The env file's text with its torch-family pins on ``variant``'s wheels (PYPI: as it is)."""
    if variant == gpu.PYPI:
        return text
    first = TORCH_PINS.search(text)
    assert first, "only an env file with a torch pin gets a variant"
    index = f"{first[1]}--extra-index-url {gpu.TORCH_INDEX}/{variant}\n"
    pinned = TORCH_PINS.sub(lambda pin: f"{pin[1]}{pin[2]}=={pin[3]}+{variant}", text)
    header = (
        f"# Written by gafkd provisioning: torch's {variant} wheels, the newest variant this "
        "host's driver runs\n# (docs/provisioning.md, envs). The project's file is the source.\n"
    )
    return header + pinned[: first.start()] + index + pinned[first.start() :]


def parse_host_env(env_file: EnvFile, probe: gpu.Probe | None) -> HostEnv:
    """The host's copy of ``env_file``: a torch pin without the file's own index gets a variant."""
    pin = gpu.parse_env_torch(env_file.text)
    if pin is None or pin.own:
        return HostEnv(env_file, env_file.text, env_file.sha256, "")
    try:
        choice = gpu.choose_wheel(pin.version, probe)
    except ProvisionError as error:
        raise ProvisionError(f"{env_file.path.name}: {error}") from None
    stable = gpu.TORCH_STABLE_CUDA.get(gpu.torch_minor(pin.version), ())
    variants = (gpu.PYPI, *(gpu.cuda_label(cuda) for cuda in stable))
    copies = {variant: parse_host_text(env_file.text, variant) for variant in variants}
    text = copies.get(choice.variant) or parse_host_text(env_file.text, choice.variant)
    return HostEnv(
        env_file,
        text,
        digest(text),
        choice.variant,
        choice.why,
        tuple(match[2] for match in TORCH_PINS.finditer(env_file.text)),
        tuple((digest(copy), v) for v, copy in copies.items() if v != choice.variant),
    )


def digest(text: str) -> str:
    """The sha256 of ``text``, as a stamp holds it."""
    return hashlib.sha256(text.encode()).hexdigest()


# --- read_* ------------------------------------------------------------------------------------


def read_env_files(envs_dir: Path) -> list[EnvFile]:
    """The project's env files, parsed (local files; provisioning never edits them)."""
    return [parse_env_file(path.read_text(), str(path)) for path in sorted(envs_dir.glob("*.yml"))]


def read_wheel_probe(connection: Connection) -> gpu.Probe | None:
    """The host's NVML probe; None without an NVIDIA driver (plain PyPI's torch then will do)."""
    try:
        return gpu.read_probe(connection)
    except gpu.NoDriver:
        return None
    except ProvisionError as error:
        raise ProvisionError(
            f"{error}; the envs step picks torch's wheel for the driver, so it needs a working "
            "one (`invoke doctor` explains)"
        ) from None


# --- ensure_* ----------------------------------------------------------------------------------


def as_user(account: Account, *argv: str) -> tuple[str, ...]:
    """``argv`` run as ``account``, with its HOME (so ~/.conda/pkgs is theirs) and umask 022."""
    return ("sudo", "-u", account.name, "-H", "--", "sh", "-c", UMASK_022, "sh", *argv)


def ensure_envs(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """Each listed user's env from each envs/*.yml: created, or updated when the file changed."""
    env_files = read_env_files(ENVS_DIR)
    accounts = read_accounts(connection, host)
    install = read_install(connection, host)
    if install is None:
        raise SkipStep(no_conda(host, "the envs need it"))
    conda = f"{install.prefix}/bin/conda"
    pins = [gpu.parse_env_torch(env_file.text) for env_file in env_files]
    probe = read_wheel_probe(connection) if any(pin and not pin.own for pin in pins) else None
    host_envs = [parse_host_env(env_file, probe) for env_file in env_files]
    for host_env in host_envs:
        name = host_env.env_file.path.name
        shared = f"{ENV_FILES_DIR}/{name}"
        if read_file(connection, shared) != host_env.text:
            torch = f", torch {host_env.variant}: {host_env.why}" if host_env.variant else ""
            yield write_file(shared, host_env.text, why=f"the host's copy of {name}{torch}")
        for account in accounts:
            yield from ensure_env(connection, account, host_env, conda, shared)
    names = ", ".join(env.name for env in env_files) or "none"
    torches = "; ".join(
        f"{e.env_file.name} torch {e.variant}: {e.why}" for e in host_envs if e.variant
    )
    current = f"envs {names} are current" + (f" ({torches})" if torches else "")
    users = ", ".join(host.users) or "no users listed"
    return f"{current}, owned by each user and not writable by others ({users})"


def ensure_env(
    connection: Connection, account: Account, host_env: HostEnv, conda: str, shared: str
) -> Generator[Command, None, None]:
    """One user's env: create or update it as that user, stamp it, keep others from writing."""
    env_file = host_env.env_file
    path = f"{account.home}/.conda/envs/{env_file.name}"
    user, label = account.name, f"{account.name}'s {env_file.name}"
    stamp = ""
    if read_stat(connection, f"{path}/conda-meta") is None:
        if read_stat(connection, path) is not None:
            raise ProvisionError(
                f"{path} exists but is no conda env (no conda-meta); ask {user} to move it away"
            )
        verb, why = "create", f"{label} is missing"
    else:
        stamp = (read_text(connection, f"{path}/{STAMP}") or "").strip()
        if stamp == host_env.sha256:
            # root's files are hard links into the install's package cache (an env made by an
            # earlier gafkd, with one shared cache): only root writes them; chown would hand the
            # install's files to the user, and the conda step would take them back.
            foreign = ("!", "-user", user, "!", "-user", "root")
            if read_first(connection, path, *foreign):
                chown = ("find", path, *foreign, "-exec", "chown", "-h", user, "{}", "+")
                yield Command(chown, sudo=True, why=f"{user} owns {label} (root's files stay)")
            if read_first(connection, path, "!", "-type", "l", "-perm", "/022"):
                why = f"only {user} may write {label}"
                yield Command(("chmod", "-R", "go-w", path), sudo=True, why=why)
            return
        verb, why = "update", f"{label} was built from another {env_file.path.name}"
    earlier = dict(host_env.variants).get(stamp)
    if earlier:  # an installed 2.13.0+cu126 satisfies torch==2.13.0, so pip would keep it
        why = f"{label} has torch {earlier}, this host now gets {host_env.variant}"
        uninstall = (f"{path}/bin/python", "-m", "pip", "uninstall", "-y", *host_env.torches)
        drop = f"drop {label}'s torch {earlier} first"
        yield Command(as_user(account, *uninstall), sudo=True, why=drop)
    prune = ("--prune",) if verb == "update" else ()
    argv = as_user(account, conda, "env", verb, "-f", shared, "-p", path, *prune)
    yield Command(argv, sudo=True, why=f"{why}: {verb} it as {user}")
    stamp_argv = (
        "install", "-o", user, "-g", str(account.gid), "-m", "0644", STDIN, f"{path}/{STAMP}"
    )  # fmt: skip
    yield Command(
        stamp_argv,
        sudo=True,
        why="remember the env file it was built from",
        stdin=host_env.sha256 + "\n",
    )
    yield Command(("chmod", "-R", "go-w", path), sudo=True, why=f"only {user} may write {label}")
