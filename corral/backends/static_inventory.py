"""The static backend's bookkeeping, pure: machines, reservations, maintenance, and their rules.

A static pool's machines exist before anyone asks for them; a corral VM of such a pool is one
*reservation* of a machine. This module holds the inventory entries (validated), the state the
backend keeps in its state file (reservations in force, machines in maintenance) and the decisions
on it: reserve a machine for a VM (or queue the reservation until one is free, first come first
served), end a reservation (the machine goes back to the free set, to maintenance, or away when
it left the inventory), take a machine out of service and return it. Time is passed in.

This module must not do I/O: no files, no commands, no clock (:mod:`corral.backends.static` does).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import pydantic
import yaml

from corral import exceptions
from corral.backends.base import is_valid_address

STATE_VERSION = 1
MAX_REASON = 2000
"""Characters of a maintenance reason kept (a command's stderr is cut to fit)."""

Scalar = str | int | float | bool


def valid_name(name: str) -> bool:
    """Machine names: 1-255 printable characters, no white space (they appear in commands)."""
    return 0 < len(name) <= 255 and name.isprintable() and not any(c.isspace() for c in name)


class MachineEntry(pydantic.BaseModel):
    """One machine of the inventory: its name, its address and free-form attributes."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    """Unique in the pool; what ``maintenance``/``return_machine`` and the operator use."""
    address: str
    """The IP address or host name a ticket gets."""
    attrs: dict[str, Scalar] = pydantic.Field(default_factory=dict)
    """Attributes such as ``arch: s390x`` (shown, and passed to commands as JSON)."""

    @pydantic.field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not valid_name(value):
            raise ValueError("must be 1-255 printable characters without spaces")
        return value

    @pydantic.field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not is_valid_address(value):
            raise ValueError(f"{value[:100]!r} is not an IP address or host name")
        return value


def check_unique(machines: Sequence[MachineEntry]) -> Sequence[MachineEntry]:
    """Refuse two machines of one name (``ValueError`` naming them)."""
    counts = Counter(m.name for m in machines)
    twice = sorted(name for name, n in counts.items() if n > 1)
    if twice:
        raise ValueError(f"machine names must be unique: {', '.join(twice)} appear more than once")
    return machines


_MACHINES = pydantic.TypeAdapter(list[MachineEntry])


def parse_inventory(text: str, source: str) -> tuple[MachineEntry, ...]:
    """Read an inventory file's YAML: a list of machines, or a mapping with ``machines:``.

    Every problem is named with its place in one ``ConfigError``; nothing is kept half-read.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise exceptions.ConfigError(f"inventory {source}: not valid YAML: {exc}") from exc
    if data is None:
        data = []
    if isinstance(data, Mapping):
        unknown = sorted(str(k) for k in data if k != "machines")
        if unknown:
            raise exceptions.ConfigError(
                f"inventory {source}: unknown keys {unknown} (only 'machines' is allowed)"
            )
        data = data.get("machines") or []
    if not isinstance(data, list):
        raise exceptions.ConfigError(
            f"inventory {source}: must be a list of machines or a mapping with 'machines'"
        )
    try:
        machines = _MACHINES.validate_python(data)
        check_unique(machines)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"machines.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise exceptions.ConfigError(f"inventory {source}: {problems}") from exc
    except ValueError as exc:
        raise exceptions.ConfigError(f"inventory {source}: {exc}") from exc
    return tuple(machines)


# --- state ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Reservation:
    """A VM of the pool: the machine it holds, or ``None`` while it waits for one."""

    vm: str
    since: float
    machine: str | None = None
    address: str | None = None
    """The machine's address when it was reserved (an edited inventory changes later ones)."""
    livecheck_failure: str | None = None
    """Why the latest livecheck failed; ``None`` once one passed again."""
    checked: bool = False
    """Whether the machine passed a livecheck since this reservation got it (before serving)."""


@dataclass(slots=True)
class Hold:
    """Why and since when a machine is out of service."""

    reason: str
    since: float


@dataclass(slots=True)
class State:
    """What the state file keeps: reservations in force (oldest first) and maintenance."""

    reservations: dict[str, Reservation] = field(default_factory=dict)
    maintenance: dict[str, Hold] = field(default_factory=dict)

    def to_json(self) -> str:
        """The state as the state file's text."""
        return json.dumps(
            {
                "version": STATE_VERSION,
                "reservations": [asdict(r) for r in self.reservations.values()],
                "maintenance": {name: asdict(h) for name, h in self.maintenance.items()},
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, source: str) -> State:
        """Read :meth:`to_json`'s output; anything else is a ``BackendError`` naming ``source``."""
        try:
            data = json.loads(text)
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"unsupported version {data.get('version')!r}")
            reservations = [Reservation(**r) for r in data["reservations"]]
            maintenance = {name: Hold(**h) for name, h in data["maintenance"].items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise exceptions.BackendError(f"static state file {source} is corrupt: {exc}") from exc
        return cls({r.vm: r for r in reservations}, maintenance)

    def holder(self, machine: str) -> Reservation | None:
        """The reservation holding ``machine``, if any."""
        for reservation in self.reservations.values():
            if reservation.machine == machine:
                return reservation
        return None


class MachineState(StrEnum):
    """Where a machine is, as an operator sees it."""

    FREE = "free"
    """In service and not reserved: the next reservation may take it."""
    RESERVED = "reserved"
    """Held by a VM of the pool (a ``reason`` means it goes to maintenance when released)."""
    MAINTENANCE = "maintenance"
    """Out of service until an operator returns it."""
    RETIRING = "retiring"
    """Removed from the inventory but still reserved: it leaves when its reservation ends."""


@dataclass(frozen=True, slots=True)
class MachineStatus:
    """One machine of the inventory and what it is doing."""

    name: str
    address: str
    attrs: Mapping[str, Scalar]
    state: MachineState
    vm: str | None = None
    """The VM (reservation) holding it."""
    reason: str | None = None
    """Why it is (or will be, once released) in maintenance."""
    since: float | None = None
    """Since when it is reserved or in maintenance."""


# --- decisions ------------------------------------------------------------------------------


def by_name(inventory: Sequence[MachineEntry]) -> dict[str, MachineEntry]:
    """The inventory as a mapping, in inventory order."""
    return {m.name: m for m in inventory}


def hand_out(state: State, inventory: Sequence[MachineEntry]) -> list[str]:
    """Give free machines to waiting reservations, oldest first; the VMs that got one.

    Machines are taken in inventory order, so an operator lists the preferred ones first.
    """
    waiting = [r for r in state.reservations.values() if r.machine is None]
    if not waiting:
        return []
    held = {r.machine for r in state.reservations.values() if r.machine is not None}
    free = [m for m in inventory if m.name not in held and m.name not in state.maintenance]
    served = []
    for reservation, machine in zip(waiting, free, strict=False):
        reservation.machine, reservation.address = machine.name, machine.address
        served.append(reservation.vm)
    return served


def reserve(state: State, inventory: Sequence[MachineEntry], vm: str, now: float) -> Reservation:
    """Reserve a machine for ``vm``: a free one now, or the first to free up (it waits in line).

    Reserving for a VM that already has a reservation returns that one (a retried spawn).
    """
    existing = state.reservations.get(vm)
    if existing is not None:
        return existing
    reservation = Reservation(vm=vm, since=now)
    state.reservations[vm] = reservation
    hand_out(state, inventory)
    return reservation


def first_check(
    state: State,
    inventory: Sequence[MachineEntry],
    vm: str,
    machine: str,
    failure: str | None,
    now: float,
) -> None:
    """Record the livecheck a reservation's machine gets before it serves. A failed one puts the
    machine in maintenance and sends the reservation back in line (it keeps its age, so it takes
    the next free machine). Nothing happens when the reservation no longer holds ``machine``."""
    reservation = state.reservations.get(vm)
    if reservation is None or reservation.machine != machine:
        return
    if failure is None:
        reservation.checked = True
        return
    put_in_maintenance(state, machine, f"livecheck failed before serving: {failure}", now)
    reservation.machine = reservation.address = None
    hand_out(state, inventory)


def needs_cleanup(state: State, inventory: Sequence[MachineEntry], vm: str) -> Reservation | None:
    """The reservation of ``vm`` when ending it returns its machine to service (then its
    ``cleanup`` runs first); ``None`` when there is nothing to clean: no reservation or no
    machine yet, a machine in maintenance or whose latest livecheck failed (it is not coming
    back into service), or one that left the inventory (retired, not corral's to clean)."""
    reservation = state.reservations.get(vm)
    if reservation is None or reservation.machine is None:
        return None
    if reservation.machine in state.maintenance or reservation.livecheck_failure is not None:
        return None
    if reservation.machine not in by_name(inventory):
        return None
    return reservation


def clip(reason: str) -> str:
    """A reason cut to :data:`MAX_REASON` characters (its end kept: stderr ends with the cause)."""
    reason = reason.strip() or "no reason given"
    return reason if len(reason) <= MAX_REASON else "..." + reason[-(MAX_REASON - 3) :]


def end(
    state: State,
    inventory: Sequence[MachineEntry],
    vm: str,
    now: float,
    *,
    cleanup_failure: str | None = None,
) -> Reservation | None:
    """End ``vm``'s reservation (the ended one; ``None`` when there was none: idempotent).

    Its machine goes to maintenance when the cleanup failed or the latest livecheck did, stays
    there when it already was, leaves when it is no longer in the inventory, and otherwise is
    free again, handed at once to the oldest waiting reservation.
    """
    reservation = state.reservations.pop(vm, None)
    if reservation is None:
        return None
    machine = reservation.machine
    if machine is not None and machine in by_name(inventory):
        if cleanup_failure is not None:
            put_in_maintenance(state, machine, f"cleanup failed: {cleanup_failure}", now)
        elif reservation.livecheck_failure is not None and machine not in state.maintenance:
            put_in_maintenance(
                state, machine, f"livecheck failed: {reservation.livecheck_failure}", now
            )
    hand_out(state, inventory)
    return reservation


def put_in_maintenance(state: State, machine: str, reason: str, now: float) -> None:
    """Take ``machine`` out of service (a second reason replaces the first)."""
    state.maintenance[machine] = Hold(clip(reason), now)


def _known(state: State, inventory: Sequence[MachineEntry], machine: str) -> None:
    if machine not in by_name(inventory) and state.holder(machine) is None:
        names = ", ".join(m.name for m in inventory[:20]) or "none"
        raise exceptions.MachineNotFound(
            f"no machine {machine!r} in the static inventory (machines: {names})"
        )


def maintenance(
    state: State, inventory: Sequence[MachineEntry], machine: str, reason: str, now: float
) -> None:
    """The operator takes ``machine`` out of service. A reserved machine stays with its VM
    until that VM is released; it is not reserved again until returned."""
    _known(state, inventory, machine)
    if not reason.strip() or not reason.isprintable():
        raise exceptions.InvalidInput("a maintenance reason must be non-empty printable text")
    put_in_maintenance(state, machine, reason, now)


def return_machine(state: State, inventory: Sequence[MachineEntry], machine: str) -> None:
    """The operator puts ``machine`` back in service; a waiting reservation may take it."""
    _known(state, inventory, machine)
    if machine not in state.maintenance:
        raise exceptions.Conflict(f"machine {machine!r} is not in maintenance")
    del state.maintenance[machine]
    holder = state.holder(machine)
    if holder is not None:
        holder.livecheck_failure = None  # the operator vouches for it
    hand_out(state, inventory)


def prune(state: State, inventory: Sequence[MachineEntry]) -> None:
    """After the inventory changed: forget maintenance of machines that left it and are held
    by no reservation, and hand added machines to waiting reservations."""
    names = by_name(inventory)
    for machine in list(state.maintenance):
        if machine not in names and state.holder(machine) is None:
            del state.maintenance[machine]
    hand_out(state, inventory)


def statuses(state: State, inventory: Sequence[MachineEntry]) -> list[MachineStatus]:
    """Every machine of the inventory (in its order), then the retiring ones."""
    holders = {r.machine: r for r in state.reservations.values() if r.machine is not None}
    result = []
    for m in inventory:
        hold = state.maintenance.get(m.name)
        reservation = holders.pop(m.name, None)
        if reservation is not None:
            reason = hold.reason if hold is not None else None
            result.append(
                MachineStatus(
                    m.name, m.address, m.attrs, MachineState.RESERVED, reservation.vm, reason,
                    reservation.since,
                )
            )  # fmt: skip
        elif hold is not None:
            result.append(
                MachineStatus(
                    m.name, m.address, m.attrs, MachineState.MAINTENANCE, None, hold.reason,
                    hold.since,
                )
            )  # fmt: skip
        else:
            result.append(MachineStatus(m.name, m.address, m.attrs, MachineState.FREE))
    for name, reservation in holders.items():
        hold = state.maintenance.get(name)
        result.append(
            MachineStatus(
                name, reservation.address or "", {}, MachineState.RETIRING, reservation.vm,
                hold.reason if hold is not None else None, reservation.since,
            )
        )  # fmt: skip
    return result
