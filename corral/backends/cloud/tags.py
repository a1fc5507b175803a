"""What marks a cloud machine as corral's: the tags (or metadata) every instance is created with.

A machine belongs to a pool when it carries ``corral:namespace`` = the backend's namespace and
``corral:pool`` = the pool; ``corral:vm`` names the VM. ``list()`` returns only such machines,
so the leak sweep never touches an instance in the account that corral did not create for that
pool (an untagged machine, another pool's, another corral installation's with its own namespace).
``corral:fence`` and ``corral:fence-holder`` record the fencing token of the last lock grant acted
on the machine and its holder (:mod:`corral.backends.fencing`), when the caller gave one.

Pure: no SDK, no I/O. Shared by the EC2 and the libcloud backends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from corral import exceptions
from corral.backends import fencing
from corral.backends.base import Fence

PREFIX = "corral:"
NAMESPACE = "corral:namespace"
POOL = "corral:pool"
VM = "corral:vm"
ID_IN_POOL = "corral:id-in-pool"
FENCE = "corral:fence"
FENCE_HOLDER = "corral:fence-holder"
NAME = "Name"
"""EC2 consoles show this tag as the instance's name."""

MAX_TAGS = 50
"""EC2 allows 50 tags per resource."""
OWN_TAGS = 7
"""Tags corral adds: the name, namespace, pool, VM, id in pool, fence and its holder."""
_KEY = re.compile(r"^[\w .:/=+\-@]{1,128}$")
_VALUE = re.compile(r"^[\w .:/=+\-@]{0,256}$")
_NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_namespace(namespace: str) -> str:
    """Refuse a namespace that is not 1-63 lower-case letters, digits, ``_ . -``."""
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise exceptions.ConfigError(
            f"namespace {namespace!r}: use 1-63 lower-case letters, digits, '_', '.', '-'"
        )
    return namespace


def check_user_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The operator's extra tags, refused when they are malformed or use corral's own keys."""
    problems = []
    for key, value in tags.items():
        if key.startswith(PREFIX) or key == NAME:
            problems.append(f"{key!r} is reserved for corral")
        elif not _KEY.match(key):
            problems.append(f"key {key!r} must be 1-128 letters, digits, spaces or _.:/=+-@")
        elif not isinstance(value, str) or not _VALUE.match(value):
            problems.append(f"value of {key!r} must be 0-256 letters, digits, spaces or _.:/=+-@")
    if len(tags) + OWN_TAGS > MAX_TAGS:
        problems.append(f"at most {MAX_TAGS - OWN_TAGS} tags (corral adds {OWN_TAGS})")
    if problems:
        raise exceptions.ConfigError("tags: " + "; ".join(problems))
    return dict(tags)


def instance_tags(
    namespace: str,
    pool: str,
    name: str,
    id_in_pool: int,
    extra: Mapping[str, str],
    fence: Fence | None = None,
) -> dict[str, str]:
    """Every tag a new machine is created with: the operator's, then corral's (which win)."""
    return {
        **extra,
        NAME: name,
        NAMESPACE: namespace,
        POOL: pool,
        VM: name,
        ID_IN_POOL: str(id_in_pool),
        **(fence_tags(fence) if fence is not None else {}),
    }


def fence_tags(fence: Fence) -> dict[str, str]:
    """The tags recording ``fence`` on a machine."""
    return {FENCE: str(fence.token), FENCE_HOLDER: fence.holder}


def fence_of(tags: Mapping[str, str]) -> Fence | None:
    """The fence a machine's tags record (``None``: none, or unreadable)."""
    return fencing.parse(tags.get(FENCE), tags.get(FENCE_HOLDER))


def is_ours(tags: Mapping[str, str], namespace: str, pool: str) -> bool:
    """Whether a machine with these tags belongs to ``pool`` of this corral namespace."""
    return tags.get(NAMESPACE) == namespace and tags.get(POOL) == pool and bool(tags.get(VM, ""))


def vm_name(tags: Mapping[str, str]) -> str | None:
    """The corral VM name a machine carries, if any."""
    name = tags.get(VM)
    return name if name else None


def ec2_filters(namespace: str, pool: str) -> list[dict[str, object]]:
    """DescribeInstances filters selecting exactly the pool's machines (any state)."""
    return [
        {"Name": f"tag:{NAMESPACE}", "Values": [namespace]},
        {"Name": f"tag:{POOL}", "Values": [pool]},
    ]


def ec2_tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """Tags in EC2's ``[{"Key": ..., "Value": ...}]`` shape."""
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def from_ec2_tag_list(items: object) -> dict[str, str]:
    """EC2's tag list as a dict; anything malformed is skipped (never trust an answer's shape)."""
    out: dict[str, str] = {}
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                key, value = item.get("Key"), item.get("Value")
                if isinstance(key, str) and isinstance(value, str):
                    out[key] = value
    return out
