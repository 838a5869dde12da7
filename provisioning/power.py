"""Power: the server never suspends on its own (reference/gpu-stack.md §8).

Masking the systemd sleep targets defeats every suspend request (logind, GNOME, a user's
``systemctl suspend``); logind's idle action and GNOME/GDM idle suspend are turned off as well
so nothing even tries. Undo: docs/provisioning.md.
"""

from __future__ import annotations

from collections.abc import Generator

from provisioning.core import (
    Command,
    Connection,
    ProvisionError,
    read_file,
    read_result,
    write_file,
)
from provisioning.hosts import Host

# --- constants ---------------------------------------------------------------------------------

SLEEP_TARGETS = ("sleep.target", "suspend.target", "hibernate.target", "hybrid-sleep.target")
UNIT_STATES = frozenset(  # systemctl(1), is-enabled
    ("enabled", "enabled-runtime", "linked", "linked-runtime", "alias", "masked",
     "masked-runtime", "static", "indirect", "disabled", "generated", "transient", "bad",
     "not-found")
)  # fmt: skip
HEADER = "# Written by gafkd provisioning (docs/provisioning.md): the lab server never suspends.\n"
LOGIND_DROP_IN = "/etc/systemd/logind.conf.d/60-gafkd-power.conf"
LOGIND_CONTENT = HEADER + "[Login]\nIdleAction=ignore\n"
GNOME_POWER_SCHEMA = (
    "/usr/share/glib-2.0/schemas/org.gnome.settings-daemon.plugins.power.gschema.xml"
)
GDM_GREETER_DEFAULTS = "/usr/share/gdm/greeter-dconf-defaults"
DCONF_KEYFILE = HEADER + (
    "[org/gnome/settings-daemon/plugins/power]\n"
    "sleep-inactive-ac-type='nothing'\n"
    "sleep-inactive-battery-type='nothing'\n"
)
# dconf profile -> (the system database it must list, the profile to write when it is missing)
DCONF_PROFILES = {
    "user": ("local", "user-db:user\nsystem-db:local\n"),
    "gdm": ("gdm", f"user-db:user\nsystem-db:gdm\nfile-db:{GDM_GREETER_DEFAULTS}\n"),
}


# --- parse_* -----------------------------------------------------------------------------------


def parse_unit_state(text: str) -> str:
    """``systemctl is-enabled UNIT`` -> its state ('masked', 'static', ...)."""
    state = text.strip()
    if state not in UNIT_STATES:
        raise ProvisionError(
            f"systemctl is-enabled printed {state!r}; expected one of {sorted(UNIT_STATES)}: "
            "this step needs a systemd host"
        )
    return state


def parse_dconf_profile(text: str) -> tuple[str, ...]:
    """The database lines of a dconf profile, comments and blank lines left out."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(line for line in lines if line)


# --- read_* ------------------------------------------------------------------------------------


def read_unit_state(connection: Connection, unit: str) -> str:
    """The unit file state; ``masked`` exits non-zero, so stdout is what counts."""
    result = read_result(connection, "systemctl", "is-enabled", unit)
    if not result.stdout.strip():
        raise ProvisionError(
            f"systemctl is-enabled {unit} printed nothing ({result.stderr.strip()}); "
            "this step needs a systemd host"
        )
    return parse_unit_state(result.stdout)


def read_exists(connection: Connection, path: str) -> bool:
    return read_result(connection, "test", "-e", path).ok


def read_dconf_stale(connection: Connection, keyfile: str, database: str) -> bool:
    """True when the compiled database is missing or older than the keyfile."""
    result = read_result(connection, "find", keyfile, "-newer", database)
    return not result.ok or bool(result.stdout.strip())


# --- ensure_* ----------------------------------------------------------------------------------


def ensure_sleep_masked(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """Mask the sleep targets that are not masked yet."""
    states = {unit: read_unit_state(connection, unit) for unit in SLEEP_TARGETS}
    unmasked = [unit for unit, state in states.items() if state != "masked"]
    if unmasked:
        found = ", ".join(f"{unit} is {states[unit]}" for unit in unmasked)
        yield Command(("systemctl", "mask", *unmasked), sudo=True, why=f"{found}: mask them")
    return "sleep, suspend, hibernate and hybrid-sleep targets are masked"


def ensure_logind_idle(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """A logind drop-in with IdleAction=ignore (read at logind's next start, e.g. a reboot)."""
    if read_file(connection, LOGIND_DROP_IN) != LOGIND_CONTENT:
        yield write_file(
            LOGIND_DROP_IN,
            LOGIND_CONTENT,
            why="logind IdleAction=ignore; applies at the next reboot (restarting logind now "
            "could end graphical sessions)",
        )
    return f"{LOGIND_DROP_IN} sets IdleAction=ignore"


def ensure_gnome_no_idle_suspend(
    connection: Connection, host: Host
) -> Generator[Command, None, str]:
    """System dconf defaults: no idle suspend in GNOME sessions and in the GDM greeter."""
    if not read_exists(connection, GNOME_POWER_SCHEMA):
        return "GNOME is not installed, so it cannot suspend on idle"
    if not read_exists(connection, "/usr/bin/dconf"):
        raise ProvisionError(
            "GNOME is installed but the dconf tool is missing (found no /usr/bin/dconf); "
            "install it with: sudo apt install dconf-cli, then run again"
        )
    profiles = ["user"] + (["gdm"] if read_exists(connection, GDM_GREETER_DEFAULTS) else [])
    update = False
    for profile in profiles:
        database, default = DCONF_PROFILES[profile]
        path = f"/etc/dconf/profile/{profile}"
        current = read_file(connection, path)
        if current is None:
            update = True
            why = f"dconf profile {profile} reads system-db:{database}"
            yield write_file(path, default, why=why)
        elif f"system-db:{database}" not in parse_dconf_profile(current):
            raise ProvisionError(
                f"{path} exists without the line system-db:{database}, so system defaults are "
                f"ignored; add that line to it (provisioning does not edit an admin's profile)"
            )
        keyfile = f"/etc/dconf/db/{database}.d/60-gafkd-power"
        if read_file(connection, keyfile) != DCONF_KEYFILE:
            update = True
            yield write_file(keyfile, DCONF_KEYFILE, why=f"no idle suspend for {profile} sessions")
        elif read_dconf_stale(connection, keyfile, f"/etc/dconf/db/{database}"):
            update = True
    if update:
        yield Command(("dconf", "update"), sudo=True, why="compile the dconf system databases")
    return f"GNOME idle suspend is off for: {', '.join(profiles)}"


def ensure_power(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """The power step: sleep targets masked, logind idle action off, GNOME idle suspend off."""
    reasons = [
        (yield from ensure_sleep_masked(connection, host)),
        (yield from ensure_logind_idle(connection, host)),
        (yield from ensure_gnome_no_idle_suspend(connection, host)),
    ]
    return "; ".join(reasons)
