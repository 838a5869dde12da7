"""Power step: plans from recorded systemctl, logind and dconf state; apply, verify; dry run."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from provisioning import power
from provisioning.core import Command, ProvisionError, write_file
from provisioning.hosts import Host, LocalConnection
from provisioning.runner import plan, run_host

LAB = Host("lab")
MASK_ALL = Command(
    ("systemctl", "mask", *power.SLEEP_TARGETS),
    sudo=True,
    why="sleep.target is static, suspend.target is static, hibernate.target is static, "
    "hybrid-sleep.target is static: mask them",
)
LOGIND = write_file(
    power.LOGIND_DROP_IN,
    power.LOGIND_CONTENT,
    why="logind IdleAction=ignore; applies at the next reboot (restarting logind now could end "
    "graphical sessions)",
)
GDM_DEFAULTS = power.GDM_GREETER_DEFAULTS
USER_KEYFILE = "/etc/dconf/db/local.d/60-gafkd-power"
GDM_KEYFILE = "/etc/dconf/db/gdm.d/60-gafkd-power"


def units(recorded, **states: str) -> dict[str, str]:
    """Unit states read from recorded `systemctl is-enabled` outputs (default: static)."""
    return {
        unit: recorded(
            "systemctl-is-enabled", states.get(unit.split(".")[0].replace("-", "_"), "static")
        ).strip()
        for unit in power.SLEEP_TARGETS
    }


@pytest.mark.parametrize("case", ["masked", "enabled", "static"])
def test_parse_unit_state_reads_recorded_output(recorded, case) -> None:
    assert power.parse_unit_state(recorded("systemctl-is-enabled", case)) == case


def test_parse_unit_state_refuses_a_host_without_systemd() -> None:
    with pytest.raises(ProvisionError, match="needs a systemd host"):
        power.parse_unit_state("System has not been booted with systemd as init system (PID 1).")


def test_parse_dconf_profile_drops_comments(recorded) -> None:
    profile = recorded("dconf-profile", "user-without-local")
    assert power.parse_dconf_profile(profile) == ("user-db:user", "system-db:site")


def test_a_fresh_server_without_gnome_gets_masks_and_the_logind_drop_in(fake, recorded) -> None:
    connection = fake(units=units(recorded))
    assert plan(power.ensure_power, connection, LAB)[0] == [MASK_ALL, LOGIND]


def test_only_the_targets_not_yet_masked_are_masked(fake, recorded) -> None:
    connection = fake(units=units(recorded, suspend="masked", sleep="masked", hibernate="enabled"))
    commands, _ = plan(power.ensure_sleep_masked, connection, LAB)
    assert commands == [
        Command(
            ("systemctl", "mask", "hibernate.target", "hybrid-sleep.target"),
            sudo=True,
            why="hibernate.target is enabled, hybrid-sleep.target is static: mask them",
        )
    ]


def test_a_hand_written_logind_drop_in_is_replaced(fake, recorded) -> None:
    connection = fake(files={power.LOGIND_DROP_IN: recorded("logind", "foreign")})
    assert plan(power.ensure_logind_idle, connection, LAB)[0] == [LOGIND]


def test_a_compliant_server_plans_nothing_and_says_why(fake, recorded) -> None:
    connection = fake(
        units=units(recorded, sleep="masked", suspend="masked", hibernate="masked",
                    hybrid_sleep="masked"),
        files={power.LOGIND_DROP_IN: power.LOGIND_CONTENT},
    )  # fmt: skip
    assert plan(power.ensure_power, connection, LAB) == (
        [],
        "sleep, suspend, hibernate and hybrid-sleep targets are masked; "
        f"{power.LOGIND_DROP_IN} sets IdleAction=ignore; "
        "GNOME is not installed, so it cannot suspend on idle",
    )


GNOME = {power.GNOME_POWER_SCHEMA, "/usr/bin/dconf", GDM_DEFAULTS}


PROFILES = {"/etc/dconf/profile/user": "user-db:user\nsystem-db:local\n"}
KEYFILES = {USER_KEYFILE: power.DCONF_KEYFILE, GDM_KEYFILE: power.DCONF_KEYFILE}
UPDATE = Command(("dconf", "update"), sudo=True, why="compile the dconf system databases")


def gdm_profile(recorded) -> dict[str, str]:
    return {"/etc/dconf/profile/gdm": recorded("dconf-profile", "gdm-ubuntu")}


@pytest.mark.parametrize(
    ("case", "paths", "stale", "expected"),
    [
        ("fresh-desktop", GNOME, False, [
            write_file("/etc/dconf/profile/user", "user-db:user\nsystem-db:local\n",
                       why="dconf profile user reads system-db:local"),
            write_file(USER_KEYFILE, power.DCONF_KEYFILE, why="no idle suspend for user sessions"),
            write_file("/etc/dconf/profile/gdm", power.DCONF_PROFILES["gdm"][1],
                       why="dconf profile gdm reads system-db:gdm"),
            write_file(GDM_KEYFILE, power.DCONF_KEYFILE, why="no idle suspend for gdm sessions"),
            UPDATE,
        ]),
        ("compliant-desktop", GNOME, False, []),
        ("compliant-desktop", GNOME - {GDM_DEFAULTS}, True, [UPDATE]),  # never compiled
    ],
)  # fmt: skip
def test_gnome_idle_suspend_plans(fake, recorded, case, paths, stale, expected) -> None:
    files = {} if case == "fresh-desktop" else {**PROFILES, **gdm_profile(recorded), **KEYFILES}
    connection = fake(files=files, paths=paths)
    for database in ("local", "gdm"):
        keyfile = f"/etc/dconf/db/{database}.d/60-gafkd-power"
        newer = (keyfile + "\n", 0) if stale else ("", 0)
        connection.replies[f"find {keyfile} -newer /etc/dconf/db/{database}"] = newer
    commands, reason = plan(power.ensure_gnome_no_idle_suspend, connection, LAB)
    assert commands == expected
    assert reason == "GNOME idle suspend is off for: " + (
        "user, gdm" if GDM_DEFAULTS in paths else "user"
    )


def test_the_gdm_profile_written_is_ubuntus(recorded) -> None:
    assert power.DCONF_PROFILES["gdm"][1] == recorded("dconf-profile", "gdm-ubuntu")


def test_gnome_without_dconf_says_which_package_to_install(fake) -> None:
    connection = fake(paths={power.GNOME_POWER_SCHEMA})
    with pytest.raises(ProvisionError, match="apt install dconf-cli"):
        plan(power.ensure_gnome_no_idle_suspend, connection, LAB)


def test_an_admins_dconf_profile_is_not_edited(fake, recorded) -> None:
    profile = recorded("dconf-profile", "user-without-local")
    connection = fake(files={"/etc/dconf/profile/user": profile}, paths=GNOME)
    with pytest.raises(ProvisionError, match="without the line system-db:local"):
        plan(power.ensure_gnome_no_idle_suspend, connection, LAB)


def test_apply_is_verified_by_systemctl_and_a_second_run_plans_nothing(fake, recorded) -> None:
    connection = fake(units=units(recorded))
    first = run_host(connection, LAB, [("power", power.ensure_power)], dry=False, echo=print)
    assert [(o.status, len(o.commands)) for o in first] == [("changed", 2)]
    assert set(connection.units.values()) == {"masked"}
    assert connection.files[power.LOGIND_DROP_IN] == power.LOGIND_CONTENT
    second = run_host(connection, LAB, [("power", power.ensure_power)], dry=False, echo=print)
    assert [o.status for o in second] == ["ok"]


def systemd_answers() -> bool:
    if not shutil.which("systemctl"):
        return False
    out = subprocess.run(
        ["systemctl", "is-enabled", "sleep.target"], capture_output=True, text=True
    )
    return bool(out.stdout.strip())


class ReadOnly(LocalConnection):
    """This machine, refusing anything but the power step's read commands."""

    def run(self, command, **kwargs):
        assert command.split()[0] in {"systemctl", "cat", "test", "find"}, command
        assert not command.startswith("systemctl mask"), command
        return super().run(command, **kwargs)

    def sudo(self, command, **kwargs):
        raise AssertionError(f"a dry run must not sudo: {command}")

    def put(self, local, remote):
        raise AssertionError(f"a dry run must not upload: {remote}")


@pytest.mark.skipif(not systemd_answers(), reason="systemctl is-enabled gives no answer here")
def test_a_local_dry_run_only_reads_this_machine() -> None:
    lines: list[str] = []
    outcomes = run_host(ReadOnly(), Host("local"), [("power", power.ensure_power)], dry=True,
                        echo=lines.append)  # fmt: skip
    assert outcomes[0].status in {"ok", "planned"}
    assert all(line.startswith("local | power | ") for line in lines)
