"""``GET /v1/hosts`` on a single-host store: this host alone, alive, leading every pool; the
route needs an admin; the client parses it."""

from __future__ import annotations

import httpx
from apitools import ADMIN_TOKEN, ALICE_TOKEN, auth

from corral import wire

ADMIN = auth(ADMIN_TOKEN)
ALICE = auth(ALICE_TOKEN)


async def test_a_single_host_lists_itself_alive_leading_every_pool(
    http: httpx.AsyncClient, controller: object
) -> None:
    """Breakages caught: the route not wired (404); the host not registered at start (empty
    list); leadership not shown (``leads`` empty on the only host)."""
    response = await http.get("/v1/hosts", headers=ADMIN)
    assert response.status_code == 200
    hosts = [wire.Host.model_validate(h) for h in response.json()]
    assert len(hosts) == 1
    (host,) = hosts
    assert host.alive and host.this and host.incarnation == 1
    pools = [p["name"] for p in (await http.get("/v1/pools", headers=ADMIN)).json()]
    assert sorted(host.leads) == sorted(pools) and pools
    assert host.version and host.config_hash


async def test_hosts_need_an_admin(http: httpx.AsyncClient) -> None:
    """Breakage caught: the host list (addresses, versions) shown to any user."""
    assert (await http.get("/v1/hosts", headers=ALICE)).status_code == 403
    assert (await http.get("/v1/hosts")).status_code == 401
