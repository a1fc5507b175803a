"""``corral hosts``: the hosts of the cluster, alive or dead, and the pools each one leads.

Imports only the client side at module level (``corral --version`` must start fast).
"""

from __future__ import annotations

import time

from corral.cli import common, output
from corral.cli.common import Json, Token, Url, handle_errors
from corral.client import core, models


@handle_errors
def hosts(url: Url = core.DEFAULT_URL, token: Token = None, json: Json = False) -> None:
    """Show the cluster's hosts: alive or dead, incarnation, what each leads (admin)."""
    common.show(url, token, json, lambda c: c.list_hosts(), _hosts_table)


def _hosts_table(found: list[models.Host]) -> None:
    now = time.time()
    output.table(
        "Hosts",
        ["host", "state", "incarnation", "leads", "tasks", "heartbeat", "address", "version"],
        [
            [
                h.host_id + (" (this)" if h.this else ""),
                "alive" if h.alive else "dead",
                h.incarnation,
                ", ".join(h.leads) or "-",
                h.tasks,
                f"{max(0.0, now - h.heartbeat_at):.1f} s ago",
                h.address,
                h.version,
            ]
            for h in found
        ],
    )
    hashes = {h.config_hash for h in found if h.alive}
    if len(hashes) > 1:
        output.console.print(
            "warning: the live hosts disagree on the pool configuration (see config_hash)"
        )
