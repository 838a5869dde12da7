"""Slurm on the lab's servers: packages, munge key, gres.conf, slurm.conf, accounting, services.

``invoke provision --host lab --slurm`` (or ``--host gpu1,gpu2 --slurm``) makes the listed hosts
one Slurm cluster from Debian's packages (reference/orchestration.md §B). The first host is the
controller: it runs slurmctld, slurmdbd and MariaDB (unix socket only), and its munge key is
copied to the others. slurm.conf and gres.conf are generated from every host's ``slurmd -C`` and
the GPUs NVML reports, and are the same file on every host.

The steps need facts from the other hosts, so `run_cluster` runs them step by step: before each
step it reads the cluster (`read_cluster`), runs the step on the controller, reads again, then
runs it on the other hosts in parallel. Undo: docs/provisioning.md, "Slurm".

The files' texts are in `provisioning.slurm_conf`, the reads in `provisioning.slurm_facts`;
this module (about 410 lines) holds the steps, which are one ordered sequence.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Generator, Sequence

from provisioning.core import (
    STDIN,
    Command,
    Connection,
    ProvisionError,
    SkipStep,
    read_file,
    read_result,
    write_file,
)
from provisioning.hosts import Host
from provisioning.power import read_unit_state
from provisioning.runner import Outcome, Step, run_hosts
from provisioning.slurm_conf import (
    CONTROLLER_PACKAGES,
    CONTROLLER_UNITS,
    CREATE_DATABASE,
    DATABASE,
    DATABASE_QUERY,
    GRES_CONF,
    HEADER,
    MARIADB_CONF,
    MARIADB_CONTENT,
    MUNGE_KEY,
    NODE_PACKAGES,
    NODE_UNITS,
    PORTS,
    SLURM_CONF,
    SLURMD_SPOOL,
    SLURMDBD_CONF,
    SRUN_PORTS,
    STATE_SAVE,
    VERIFY_POLL,
    Cluster,
    conf_changes,
    gres_conf,
    parse_conf,
    parse_node_state,
    slurm_conf,
    slurmdbd_conf,
)
from provisioning.slurm_facts import (
    read_active,
    read_address,
    read_cluster,
    read_installed,
    read_key_digest,
    read_root,
    read_stat,
)

ClusterStep = Callable[[Connection, Host, Cluster], Generator[Command, None, str]]


# --- ensure_* ----------------------------------------------------------------------------------


def ensure_running(connection: Connection, unit: str) -> Generator[Command, None, str]:
    """A unit enabled at boot and running now."""
    enabled = read_unit_state(connection, unit) in ("enabled", "static", "alias")
    if not enabled:
        yield Command(("systemctl", "enable", "--now", unit), sudo=True, why=f"{unit} is off")
    elif not read_active(connection, unit):
        yield Command(("systemctl", "start", unit), sudo=True, why=f"{unit} is not running")
    return unit


def restarts(connection: Connection, units: Sequence[str], why: str) -> list[Command]:
    """Restart the running ones of ``units`` (a stopped one reads its config when it starts)."""
    return [
        Command(("systemctl", "restart", unit), sudo=True, why=why)
        for unit in units
        if read_active(connection, unit)
    ]


def ensure_packages(
    connection: Connection, host: Host, cluster: Cluster
) -> Generator[Command, None, str]:
    """Debian's slurm and munge packages, plus slurmdbd and MariaDB on the controller."""
    controller = host.alias == cluster.controller
    wanted = NODE_PACKAGES + (CONTROLLER_PACKAGES if controller else ())
    missing = [package for package in wanted if package not in read_installed(connection, wanted)]
    if missing:
        why = f"{', '.join(missing)} not installed"
        yield Command(("apt-get", "update"), sudo=True, why="refresh the package lists")
        env = ("env", "DEBIAN_FRONTEND=noninteractive")
        argv = (*env, "apt-get", "install", "-y", "--no-install-recommends", *missing)
        yield Command(argv, sudo=True, why=why)
    return f"{', '.join(wanted)} are installed"


def ensure_munge(
    connection: Connection, host: Host, cluster: Cluster
) -> Generator[Command, None, str]:
    """/etc/munge/munge.key (munge:munge, 0400; the controller's on every host), munge running."""
    cluster.node(host.alias)  # packages first
    stat = read_stat(connection, MUNGE_KEY)
    if host.alias == cluster.controller:
        source = "the controller's own key"
        if stat is None:
            create = ("mungekey", "--create", "--keyfile", MUNGE_KEY)
            yield Command(create, sudo=True, why=f"{MUNGE_KEY} is missing")
    elif cluster.key is None:
        raise SkipStep(f"the controller {cluster.controller} has no munge key yet")
    else:
        digest = hashlib.sha256(cluster.key).hexdigest()
        source = f"the controller {cluster.controller}'s key (sha256 {digest[:12]}...)"
        if read_key_digest(connection) != digest:
            argv = ("install", "-m", "0400", "-o", "munge", "-g", "munge", STDIN, MUNGE_KEY)
            yield Command(argv, sudo=True, why=f"copy {source}", stdin=cluster.key)
            yield from restarts(connection, ["munge"], "munged reads its key at start")
            stat = ("munge:munge", "400")  # what install gives it
    if stat is None or stat[0] != "munge:munge":
        yield Command(("chown", "munge:munge", MUNGE_KEY), sudo=True, why="munge owns its key")
    if stat is None or stat[1] != "400":
        yield Command(("chmod", "0400", MUNGE_KEY), sudo=True, why="only munge reads the key")
    yield from ensure_running(connection, "munge")
    return f"{MUNGE_KEY} is {source}, munge:munge 0400; munge is running"


def ensure_gres(
    connection: Connection, host: Host, cluster: Cluster
) -> Generator[Command, None, str]:
    """/etc/slurm/gres.conf from the GPUs NVML detects on every host; none without GPUs."""
    wanted = gres_conf(cluster)
    current = read_file(connection, GRES_CONF)
    gpus = ", ".join(f"{node.name}: {node.gpus}" for node in cluster.all_nodes())
    if wanted is None:
        if current is not None:
            yield Command(("rm", "-f", GRES_CONF), sudo=True, why="no host has a GPU")
        return f"NVML sees no GPU on any host ({gpus}): no gres.conf and no Gres"
    if current != wanted:
        yield write_file(GRES_CONF, wanted, why=f"GPUs per host: {gpus}")
    return f"{GRES_CONF} lists the GPUs NVML sees ({gpus})"


def ensure_conf(
    connection: Connection, host: Host, cluster: Cluster
) -> Generator[Command, None, str]:
    """/etc/slurm/slurm.conf, the same on every host; the spool folders; daemons re-read it."""
    wanted = slurm_conf(cluster)
    if not cluster.single:  # nodes reach each other by name: not at a loopback address
        for node in cluster.nodes:
            address = read_address(connection, node.name)
            if address is None or address.startswith("127.") or address == "::1":
                raise ProvisionError(
                    f"{node.name} resolves to {address or 'nothing'} on {host.alias}; the nodes "
                    f"of a cluster must reach each other: put `ADDRESS {node.name}` (its lab "
                    f"network address) in /etc/hosts on {host.alias}, or fix DNS"
                )
    current = read_file(connection, SLURM_CONF)
    if current is not None and not current.startswith(HEADER):
        others = sorted(set(parse_conf(current)) - set(parse_conf(wanted)))
        nodes = [key for key in others if key.startswith("NodeName=")]
        if nodes:
            raise ProvisionError(
                f"{SLURM_CONF} on {host.alias} was not written by provisioning and lists "
                f"{', '.join(nodes)}, which --host does not name; list every host of the "
                "cluster in --host (the controller first), or move that file away first"
            )
    folders = [(SLURMD_SPOOL, "0755")]
    if host.alias == cluster.controller:
        folders.insert(0, (STATE_SAVE, "0700"))
    for folder, mode in folders:
        if read_stat(connection, folder) != ("root:root", mode.lstrip("0")):
            argv = ("install", "-d", "-o", "root", "-g", "root", "-m", mode, folder)
            yield Command(argv, sudo=True, why=f"{folder} is missing or not root's {mode}")
    if current != wanted:
        yield write_file(SLURM_CONF, wanted, why=f"slurm.conf: {conf_changes(current, wanted)}")
        yield from restarts(connection, ["slurmctld", "slurmd"], "read the new slurm.conf")
    return f"{SLURM_CONF} describes {len(cluster.nodes)} nodes; state saved in {STATE_SAVE}"


def ensure_accounting(
    connection: Connection, host: Host, cluster: Cluster
) -> Generator[Command, None, str]:
    """MariaDB on its unix socket only, the slurm_acct_db database, slurmdbd.conf (0600 root)."""
    if host.alias != cluster.controller:
        raise SkipStep(
            f"accounting (slurmdbd, MariaDB) runs on the controller {cluster.controller}"
        )
    controller = cluster.node(host.alias).name
    if read_file(connection, MARIADB_CONF) != MARIADB_CONTENT:
        yield write_file(MARIADB_CONF, MARIADB_CONTENT, why="MariaDB: unix socket only")
        yield from restarts(connection, ["mariadb"], "MariaDB stops listening on TCP")
    running = read_active(connection, "mariadb")
    yield from ensure_running(connection, "mariadb")
    query = read_root(connection, "mariadb", "-N", "-B", "-e", DATABASE_QUERY) if running else None
    if query is None or query.stdout.strip() != "1":
        create = ("mariadb", "-e", CREATE_DATABASE)
        yield Command(create, sudo=True, why=f"the {DATABASE} database is missing")
    wanted = slurmdbd_conf(cluster, controller)
    current = read_root(connection, "cat", "--", SLURMDBD_CONF)
    text = current.stdout if current.ok else None
    if text != wanted or read_stat(connection, SLURMDBD_CONF) != ("root:root", "600"):
        argv = ("install", "-D", "-o", "root", "-g", "root", "-m", "0600", STDIN, SLURMDBD_CONF)
        why = f"slurmdbd.conf: {conf_changes(text, wanted)}"
        yield Command(argv, sudo=True, why=why, stdin=wanted)
        yield from restarts(connection, ["slurmdbd"], "read the new slurmdbd.conf")
    return f"MariaDB on its unix socket holds {DATABASE}; {SLURMDBD_CONF} is root's, mode 0600"


def check_node(connection: Connection, name: str) -> str:
    """The node's state from sinfo, polled while the daemons come up; down or drained raises."""
    tries, pause = VERIFY_POLL
    state = reason = ""
    for attempt in range(tries):
        result = read_result(connection, "sinfo", "-h", "-n", name, "-o", "%T|%E")
        state, reason = parse_node_state(result.stdout if result.ok else "")
        if state and not state.endswith("*") and state != "unknown":
            break
        if attempt + 1 < tries:
            time.sleep(pause)
    if not state or state.startswith(("down", "drain", "fail", "unknown")):
        raise ProvisionError(
            f"sinfo says node {name} is {state or 'unreachable'} ({reason or 'no reason'}); "
            f"check `journalctl -u slurmd -u slurmctld` there, fix the cause, then "
            f"`sudo scontrol update nodename={name} state=resume`"
        )
    return state


def check_accounting(connection: Connection, cluster: Cluster) -> None:
    """sacctmgr lists the cluster: slurmctld registered it with slurmdbd."""
    tries, pause = VERIFY_POLL
    found: list[str] = []
    for attempt in range(tries):
        result = read_result(
            connection, "sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"
        )
        found = result.stdout.split() if result.ok else []
        if cluster.name in found:
            return
        if attempt + 1 < tries:
            time.sleep(pause)
    raise ProvisionError(
        f"sacctmgr lists clusters {found or 'none'}, not {cluster.name}: slurmctld did not "
        "register with slurmdbd, so sacct (and submitit) cannot see jobs; check "
        "/var/log/slurm/slurmdbd.log and `journalctl -u slurmdbd -u slurmctld`"
    )


def ensure_services(
    connection: Connection, host: Host, cluster: Cluster
) -> Generator[Command, None, str]:
    """munge, MariaDB, slurmdbd, slurmctld (controller) and slurmd enabled and running; verified."""
    node = cluster.node(host.alias)
    controller = host.alias == cluster.controller
    planned = False
    for unit in CONTROLLER_UNITS if controller else NODE_UNITS:
        for command in ensure_running(connection, unit):
            planned = True
            yield command
    if planned:
        return "services started"
    state = check_node(connection, node.name)
    if controller:
        check_accounting(connection, cluster)
    accounting = f"; sacctmgr lists cluster {cluster.name}" if controller else ""
    return f"slurm daemons are running; sinfo: {node.name} is {state}{accounting}"


def check_ports(
    connection: Connection, host: Host, cluster: Cluster
) -> Generator[Command, None, str]:
    """Say which ports the cluster listens on; refuse a Slurm or MariaDB wildcard listener."""
    yield from ()  # check only
    node = cluster.node(host.alias)
    address = read_address(connection, node.name) or "unresolved"
    listing = read_result(connection, "ss", "-H", "-l", "-t", "-n")
    if listing.ok:
        watched = (*PORTS.values(), 3306)
        for line in listing.stdout.splitlines():
            local = line.split()[3] if len(line.split()) > 3 else ""
            bound, _, port = local.rpartition(":")
            if port.isdigit() and int(port) in watched and bound in ("0.0.0.0", "*", "[::]"):
                raise ProvisionError(
                    f"{host.alias} listens on {local} (port {port}) on every interface; it "
                    "should be bound to the host name's address only: run "
                    "`invoke provision --slurm` again (it restarts daemons after config changes)"
                )
    controller = host.alias == cluster.controller
    ports = [f"{PORTS['slurmd']} slurmd", f"srun {SRUN_PORTS}"]
    if controller:
        dbd = "localhost" if cluster.single else address
        ports = [
            f"{PORTS['slurmctld']} slurmctld",
            *ports,
            f"{PORTS['slurmdbd']} slurmdbd on {dbd}",
        ]
    checked = "" if listing.ok else " (ss is missing: listeners not checked)"
    sockets = "munge and MariaDB on unix sockets" if controller else "munge on a unix socket"
    return (
        f"ports: {', '.join(ports)}, bound to {address} ({node.name}); {sockets}; nothing "
        f"else is opened and no firewall rule is changed{checked}"
    )


STEPS: dict[str, ClusterStep] = {  # in this order
    "slurm-packages": ensure_packages,
    "slurm-munge": ensure_munge,
    "slurm-gres": ensure_gres,
    "slurm-conf": ensure_conf,
    "slurm-accounting": ensure_accounting,
    "slurm-services": ensure_services,
    "slurm-ports": check_ports,
}


def bind(step: ClusterStep, cluster: Cluster) -> Step:
    """A cluster step as a plain step of the runner, with the cluster read before it."""

    def bound(connection: Connection, host: Host) -> Generator[Command, None, str]:
        return step(connection, host, cluster)

    return bound


def run_cluster(
    hosts: Sequence[Host],
    connect: Callable[[Host], Connection],
    names: Sequence[str],
    *,
    dry: bool,
    echo: Callable[[str], None],
    sudo_password: str | None = None,
    failed: frozenset[str] = frozenset(),
) -> list[Outcome]:
    """Run the Slurm steps ``names`` step by step: on the controller, then on the others.

    Each host runs a step only after every host ran the one before, since a step reads the
    others (their ``slurmd -C``, the controller's key). A host in ``failed`` (an earlier step
    failed there) is skipped; once the controller fails, every host is.
    """
    controller = hosts[0]
    connections: dict[str, Connection] = {}
    outcomes: list[Outcome] = []
    broken, unreachable = set(failed), set()
    for host in hosts:  # connect once; a host that cannot be reached fails its first step
        if host.alias in broken:
            continue
        try:
            connections[host.alias] = connect(host)
        except ProvisionError as error:
            echo(f"{host.alias} | connect | failed: {error}")
            outcomes.append(Outcome(host.alias, names[0], "failed", f"cannot connect: {error}"))
            unreachable.add(host.alias)
    cluster: Cluster | None = None
    for index, name in enumerate(names):
        for group in ([controller], list(hosts[1:])):
            live = []
            for host in group:
                if host.alias in unreachable and index == 0:
                    broken.add(host.alias)  # its connect failure is this step's outcome
                elif host.alias in broken or controller.alias in broken:
                    mine = host.alias in broken or host is controller
                    why = (
                        "an earlier step failed"
                        if mine
                        else (f"the controller {controller.alias} failed an earlier step")
                    )
                    outcomes.append(Outcome(host.alias, name, "skipped", why))
                else:
                    live.append(host)
            if not live:
                continue
            try:
                facts = name != "slurm-packages"
                cluster = read_cluster(hosts, connections, cluster, facts=facts)
            except ProvisionError as error:
                for host in live:
                    echo(f"{host.alias} | {name} | failed: {error}")
                    outcomes.append(Outcome(host.alias, name, "failed", str(error)))
                broken |= {host.alias for host in live}
                continue
            done = run_hosts(
                live,
                lambda host: connections[host.alias],
                [(name, bind(STEPS[name], cluster))],
                dry=dry,
                echo=echo,
                sudo_password=sudo_password,
            )
            outcomes += done
            broken |= {outcome.host for outcome in done if outcome.status == "failed"}
    for connection in connections.values():
        close = getattr(connection, "close", None)
        if callable(close):
            close()
    order = {host.alias: index for index, host in enumerate(hosts)}
    return sorted(outcomes, key=lambda outcome: order[outcome.host])  # host by host, as run_hosts
