"""EC2's answers, interpreted: instances from DescribeInstances and errors from botocore.

Pure: no SDK import, no I/O, no clock (ages are passed in). The EC2 backend feeds it the parsed
JSON boto3 returns; everything here is testable with plain dictionaries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from corral.backends.base import PollResult, PollStatus, is_valid_address
from corral.backends.cloud import tags


class InstanceState(StrEnum):
    """EC2's instance states."""

    PENDING = "pending"
    RUNNING = "running"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    STOPPING = "stopping"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


GONE = frozenset({InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED})
"""States of an instance that is going away or gone: not listed, not terminated again."""
DESCRIBED_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
"""The states a describe asks for: terminated instances stay visible for about an hour and would
make every describe of a busy pool carry its whole recent history."""


@dataclass(frozen=True, slots=True)
class Instance:
    """One EC2 instance as corral needs it."""

    id: str
    state: InstanceState
    tags: Mapping[str, str] = field(default_factory=dict)
    private_ip: str | None = None
    public_ip: str | None = None
    reason: str = ""
    """EC2's state reason (e.g. a spot interruption), for a failed VM's message."""

    @property
    def vm(self) -> str | None:
        """The corral VM name the instance carries."""
        return tags.vm_name(self.tags)

    @property
    def alive(self) -> bool:
        """Neither shutting down nor terminated."""
        return self.state not in GONE


def _state(raw: object) -> InstanceState:
    name = raw.get("Name") if isinstance(raw, dict) else None
    try:
        return InstanceState(str(name))
    except ValueError:
        return InstanceState.UNKNOWN


def parse_instances(response: Mapping[str, object]) -> list[Instance]:
    """The instances of one DescribeInstances page (malformed entries are skipped)."""
    out: list[Instance] = []
    reservations = response.get("Reservations")
    for reservation in reservations if isinstance(reservations, list) else []:
        items = reservation.get("Instances") if isinstance(reservation, dict) else None
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or not isinstance(item.get("InstanceId"), str):
                continue
            reason = item.get("StateReason")
            message = reason.get("Message", "") if isinstance(reason, dict) else ""
            private, public = item.get("PrivateIpAddress"), item.get("PublicIpAddress")
            out.append(
                Instance(
                    id=item["InstanceId"],
                    state=_state(item.get("State")),
                    tags=tags.from_ec2_tag_list(item.get("Tags")),
                    private_ip=private if isinstance(private, str) else None,
                    public_ip=public if isinstance(public, str) else None,
                    reason=message if isinstance(message, str) else "",
                )
            )
    return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The pool's instances as one describe saw them."""

    instances: tuple[Instance, ...] = ()

    def by_id(self, instance_id: str) -> Instance | None:
        """The instance with this id, if the describe saw it."""
        for inst in self.instances:
            if inst.id == instance_id:
                return inst
        return None

    def by_vm(self, name: str) -> list[Instance]:
        """Every instance carrying the VM name ``name`` (more than one is a duplicate create)."""
        return [i for i in self.instances if i.vm == name]

    def alive(self) -> list[Instance]:
        """The instances that are not going away."""
        return [i for i in self.instances if i.alive]


def address_of(inst: Instance, which: str) -> str | None:
    """The instance's ``private`` or ``public`` address when it has a valid one."""
    value = inst.public_ip if which == "public" else inst.private_ip
    return value if value is not None and is_valid_address(value) else None


def poll_result(
    inst: Instance | None,
    *,
    address: str,
    age: float | None,
    grace: float,
    checks_ok: bool | None = None,
) -> PollResult:
    """What ``poll`` answers for the instance a describe found (or did not find).

    ``age`` is how long ago this process created it (``None``: not created by this process);
    an instance not found within ``grace`` seconds of its creation is still pending, since EC2's
    describes are eventually consistent. ``checks_ok`` is ``None`` when status checks are not
    required, else whether they passed.
    """
    if inst is None:
        if age is not None and age < grace:
            return PollResult(PollStatus.PENDING, retry_after=1.0)
        return PollResult(PollStatus.FAILED, reason="the instance does not exist (any more)")
    if inst.state in (InstanceState.PENDING, InstanceState.UNKNOWN):
        return PollResult(PollStatus.PENDING)
    if inst.state is not InstanceState.RUNNING:
        why = f": {inst.reason}" if inst.reason else ""
        return PollResult(PollStatus.FAILED, reason=f"instance {inst.id} is {inst.state}{why}")
    found = address_of(inst, address)
    if found is None or checks_ok is False:
        return PollResult(PollStatus.PENDING)
    return PollResult(PollStatus.UP, address=found)


class ErrorKind(StrEnum):
    """How the backend treats a failed call."""

    THROTTLED = "throttled"
    """The cloud refused the call for its rate: nothing happened; wait, then retry."""
    UNKNOWN_OUTCOME = "unknown_outcome"
    """No answer (connection lost, timeout, 5xx): the call may or may not have taken effect."""
    NOT_FOUND = "not_found"
    """The instance does not exist (terminating it is then done)."""
    FATAL = "fatal"
    """A definite refusal (bad AMI, no permission, quota): retrying will not help."""


THROTTLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
    }
)
UNAVAILABLE_CODES = frozenset(
    {"ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure"}
)
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})


def classify(code: str | None, http_status: int | None) -> ErrorKind:
    """The kind of a service error (``code`` from the answer) or transport error (``None``)."""
    if code in THROTTLE_CODES or http_status == 429:
        return ErrorKind.THROTTLED
    if code in NOT_FOUND_CODES:
        return ErrorKind.NOT_FOUND
    if code is None or code in UNAVAILABLE_CODES or (http_status or 0) >= 500:
        return ErrorKind.UNKNOWN_OUTCOME
    return ErrorKind.FATAL


_INSTANCE_ID = re.compile(r"\bi-[0-9a-f]{8,17}\b")


def ids_in_message(message: str) -> set[str]:
    """The instance ids an error message names (EC2 lists the ids it does not know)."""
    return set(_INSTANCE_ID.findall(message))


def chunks(items: Iterable[str], size: int) -> list[list[str]]:
    """``items`` sorted and cut into lists of at most ``size``."""
    ordered = sorted(items)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


class Ask(NamedTuple):
    """What a targeted describe asks about: a VM, by its instance's id when that is enough, else
    by its name (every instance carrying it: a duplicate create of the VM shows only this way)."""

    vm: str
    id: str | None = None
    """The instance's id when the VM may be asked for by id; ``None``: by name."""


def by_id(asks: Iterable[Ask]) -> bool:
    """Whether a round answers ``asks`` by instance id: only when every one of them may be (one
    filter per call, and filters are ANDed: a round by ids and names would be two calls)."""
    asks = list(asks)
    return bool(asks) and all(a.id is not None for a in asks)


def targeted_filters(asks: Iterable[Ask], size: int) -> list[dict[str, object]]:
    """The selecting filter of each DescribeInstances call answering ``asks``, in chunks of
    ``size`` values (EC2 takes at most 200 values in one filter): instance ids when every ask
    has one, else the VM names of all of them, so that a round is one call while at most
    ``size`` VMs are asked about (at most one describe per interval). The caller puts it *first*
    among the call's filters: a cloud that evaluates filters in order (moto, instance by
    instance, in Python) then looks at the tags of the selected instances only, where a tag
    filter first costs it a walk over every tag of the account per instance (about a second
    per call at 500 instances, whatever the answer's size)."""
    asks = list(asks)
    if by_id(asks):
        name, values = "instance-id", {str(a.id) for a in asks}
    else:
        name, values = f"tag:{tags.VM}", {a.vm for a in asks}
    return [{"Name": name, "Values": chunk} for chunk in chunks(values, size)]
