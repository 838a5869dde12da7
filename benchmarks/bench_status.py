"""Latency of `invoke status --host`: one round trip on a kept connection vs. a new one each time.

`status --host` runs one command on the host (`python -m gafkd status --json`) and, with
`--watch`, keeps its connection open. The baseline is what a shell loop of `ssh lab ...` pays:
a new SSH connection (handshake, authentication) for every refresh.

    python benchmarks/bench_status.py --host lab [--n 10]

The host is an alias from invoke.yaml / ~/.ssh/config, as for the tasks. Any host with a launched
batch (or none: status then reports no batches) will do; nothing on it is changed.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from pathlib import Path

from provisioning import hosts, remote


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="an alias from invoke.yaml or ~/.ssh/config")
    parser.add_argument("--n", type=int, default=10, help="status calls per way")
    parser.add_argument("--config", default="invoke.yaml", help="the project's invoke.yaml")
    args = parser.parse_args()
    yaml = importlib.import_module("invoke.util").yaml  # PyYAML as invoke ships it
    configured = yaml.safe_load(Path(args.config).read_text()).get("hosts") or {}
    (host,) = hosts.select_hosts(args.host, configured, Path.home() / ".ssh" / "config")

    fresh = []
    for _ in range(args.n):
        started = time.perf_counter()
        connection = hosts.connect(host)
        remote.status(connection, host)
        getattr(connection, "close", lambda: None)()
        fresh.append(time.perf_counter() - started)

    connection = hosts.connect(host)
    remote.status(connection, host)  # open the connection outside the timing
    kept = []
    for _ in range(args.n):
        started = time.perf_counter()
        batches = remote.status(connection, host)["batches"]
        kept.append(time.perf_counter() - started)
    getattr(connection, "close", lambda: None)()

    a, b = statistics.median(fresh), statistics.median(kept)
    print(f"host {host.alias}: {len(batches)} batches, median of {args.n} status calls")
    print(f"{'way':<40}{'seconds':>10}{'ratio':>8}")
    print(f"{'new ssh connection per call (baseline)':<40}{a:>10.3f}{1.0:>8.2f}")
    print(f"{'one round trip on a kept connection':<40}{b:>10.3f}{a / b:>8.2f}")


if __name__ == "__main__":
    main()
