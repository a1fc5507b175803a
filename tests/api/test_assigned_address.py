"""A ticket's answer gives its VM's address without reading the VM again when this process's
assignment just handed the VM out (issue 14: on a pool without reuse every warm ticket gets a new
VM, so the API's address memory never knows it, and the read was a store round trip per ticket).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from apitools import ALICE_TOKEN, auth

ALICE = auth(ALICE_TOKEN)


async def test_assigned_ticket_answer_needs_no_vm_read(
    controller: Any, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails when the answer reads the VM back from the store (the assignment's VM is not
    remembered, or not used): the create's answer then costs a ``get_vm`` read."""
    first = await http.post(
        "/v1/tickets", json={"pool": "small"}, params={"wait": 10}, headers=ALICE
    )
    assert first.json()["state"] == "assigned", first.text
    await http.post(f"/v1/tickets/{first.json()['id']}/close", headers=ALICE)
    reads: list[str] = []
    real = controller.store.pools.get_vm

    async def counted(name: str) -> Any:
        reads.append(name)
        return await real(name)

    monkeypatch.setattr(controller.store.pools, "get_vm", counted)
    created = await http.post(
        "/v1/tickets", json={"pool": "small"}, params={"wait": 10}, headers=ALICE
    )
    body = created.json()
    assert body["state"] == "assigned", created.text
    assert reads == []
    stored = await real(body["vm"])
    assert stored is not None and stored.address is not None
    assert (body["address"], body["addresses"]) == (stored.address, [stored.address])


async def test_a_vm_not_handed_out_here_is_read(controller: Any) -> None:
    """The memory holds only what the assignment handed out: another VM is ``None`` (read)."""
    assert controller.assigned_vm("no-such-vm") is None
