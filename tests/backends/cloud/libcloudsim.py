"""Test-only helpers for the libcloud backend: the EC2 driver's namespace fix-up for moto, and a
dummy driver that honours node names and metadata.

**The namespace fix-up.** libcloud's EC2 driver finds elements in an answer by the namespace
``http://ec2.amazonaws.com/doc/2016-11-15/`` (with a trailing slash, as AWS writes it); moto's
server writes ``xmlns="http://ec2.amazonaws.com/doc/2016-11-15"`` without it, so every lookup
finds nothing: ``list_nodes`` answers ``[]`` and ``create_node`` returns an empty list. The fix-up
adds the slash to the answer's text before libcloud parses it. It only touches the test double's
answers; against AWS nothing changes. (libcloud must also sign with SigV4 —
``driver_args: {signature_version: "4"}`` — for moto's single server to route its GET requests to
EC2: with SigV2 there is no credential scope and moto takes them for S3.)

**The named dummy driver.** libcloud's ``DummyNodeDriver`` ignores the name given to
``create_node`` (its nodes are ``dummy-N``) and reuses ids after a destroy, so no backend could
find its own nodes there. This subclass keeps the driver's behaviour otherwise and its two
pre-existing nodes (``dummy-1``, ``dummy-2``: machines corral did not create, which must survive
every sweep). Registered under the provider name ``corral-dummy``.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from libcloud.compute.base import Node
from libcloud.compute.drivers import ec2 as libcloud_ec2
from libcloud.compute.drivers.dummy import DummyNodeDriver
from libcloud.compute.providers import set_driver
from libcloud.compute.types import NodeState

MOTO_NS = b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15"'
LIBCLOUD_NS = b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"'


def fix_moto_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make libcloud's EC2 driver read moto's answers (see the module docstring)."""
    original = libcloud_ec2.EC2Response.parse_body

    def parse_body(self: Any) -> Any:
        body = self.body
        if isinstance(body, str):
            self.body = body.replace(MOTO_NS.decode(), LIBCLOUD_NS.decode())
        elif isinstance(body, bytes):
            self.body = body.replace(MOTO_NS, LIBCLOUD_NS)
        return original(self)

    monkeypatch.setattr(libcloud_ec2.EC2Response, "parse_body", parse_body)


class NamedDummyDriver(DummyNodeDriver):  # type: ignore[misc]
    """libcloud's dummy driver, keeping the names and metadata it is given."""

    _ids = itertools.count(100)

    def create_node(self, name: str, size: Any, image: Any, **kwargs: Any) -> Node:
        node_id = next(self._ids)
        node = Node(
            id=str(node_id),
            name=name,
            state=NodeState.RUNNING,
            public_ips=[f"127.0.{node_id // 250}.{node_id % 250 + 1}"],
            private_ips=[],
            driver=self,
            extra={"metadata": dict(kwargs.get("ex_metadata") or {})},
        )
        self.nl.append(node)
        return node

    def destroy_node(self, node: Node) -> bool:
        self.nl = [n for n in self.nl if n.id != node.id]
        return True


set_driver("corral-dummy", __name__, "NamedDummyDriver")
