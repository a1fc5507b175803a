"""The backend interface (SPEC §6): the values a backend exchanges and the abstract ``Backend``.

A backend drives one kind of machine. It is asynchronous: ``spawn`` may return before the VM is
up and the controller ``poll``s it. Blocking client libraries must go through
:meth:`Backend.run_blocking` (a bounded thread pool per backend), so the event loop never blocks.

This module must not know about pools, the store or the controller, and must not apply timeouts,
retries or concurrency limits: :mod:`corral.backends.guard` wraps every backend with those.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

import pydantic

from corral import exceptions
from corral.backends import connection

if TYPE_CHECKING:
    from corral.backends.capacity import Admission

T = TypeVar("T")

_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def is_valid_address(text: str) -> bool:
    """Whether ``text`` is an IPv4/IPv6 address or an RFC 1123 host name (what ``poll`` returns)."""
    return _valid_address(text) if isinstance(text, str) else False


@functools.lru_cache(maxsize=4096)  # the same few addresses are checked on every poll
def _valid_address(text: str) -> bool:
    if not text or len(text) > 253 or text != text.strip():
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return True
    labels = text.rstrip(".").split(".")
    if all(label.isdigit() for label in labels):
        return False  # "300.1.2.3" is a broken IP address, not a host name
    return all(_HOSTNAME_LABEL.match(label) for label in labels)


@dataclass(frozen=True, slots=True)
class VMSpec:
    """What the controller asks a backend to create."""

    name: str
    """Unique VM name, e.g. ``fedora-x86-0007``: the key for reconciliation."""
    pool: str
    """The pool the VM belongs to."""
    id_in_pool: int
    """A small number unique among the pool's living VMs (resalloc's ``RESALLOC_ID_IN_POOL``)."""
    template: Mapping[str, object]
    """The pool's VM template: ``memory_mib``, ``vcpus``, ``disks``, ``nics``, ..."""


@dataclass(frozen=True, slots=True)
class Handle:
    """A backend's reference to one VM; the controller persists it as JSON."""

    name: str
    """The VM's name (== ``VMSpec.name``)."""
    ref: str = ""
    """The backend's own identifier or data for the VM, opaque to the controller."""
    connection: tuple[tuple[str, str], ...] = ()
    """How to reach the VM beyond its address (``user``, ``port``, ``host_key``...), as sorted
    pairs checked by :func:`corral.backends.connection.check`; shown on the VM and its ticket."""

    def to_json(self) -> str:
        """The handle as a JSON object text, for the store."""
        data: dict[str, object] = {"name": self.name, "ref": self.ref}
        if self.connection:  # left out when empty: older handles read back the same
            data["connection"] = dict(self.connection)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Handle:
        """Rebuild a handle from :meth:`to_json`'s output; bad input raises ``InvalidInput``."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise exceptions.InvalidInput(f"backend handle is not JSON: {text[:100]!r}") from exc
        if not isinstance(data, dict):
            raise exceptions.InvalidInput("backend handle must be a JSON object")
        name, ref = data.get("name"), data.get("ref", "")
        if not isinstance(name, str) or not name:
            raise exceptions.InvalidInput("backend handle: 'name' must be a non-empty string")
        if not isinstance(ref, str):
            raise exceptions.InvalidInput("backend handle: 'ref' must be a string")
        unknown = set(data) - {"name", "ref", "connection"}
        if unknown:
            raise exceptions.InvalidInput(f"backend handle: unknown keys {sorted(unknown)}")
        details = data.get("connection", {})
        if not isinstance(details, dict):
            raise exceptions.InvalidInput("backend handle: 'connection' must be a JSON object")
        return cls(name=name, ref=ref, connection=connection.check(details))


@dataclass(frozen=True, slots=True)
class Fence:
    """The fencing token a backend call is made under: the token of the task's ``vm/<name>``
    lock grant (strictly increasing per VM across hosts and restarts), and who holds it.

    Given only to a :class:`FencedBackend`, and only where tokens are durable and cluster-wide
    (the PostgreSQL lock manager); an in-process lock manager's tokens restart with the process.
    """

    token: int
    """The grant's fencing token (> 0)."""
    holder: str
    """Who acts under it: the host incarnation (``host_id#incarnation``)."""

    def __post_init__(self) -> None:
        if isinstance(self.token, bool) or not isinstance(self.token, int) or self.token <= 0:
            raise exceptions.InvalidInput(f"fence token must be a positive integer: {self.token!r}")
        if (
            not isinstance(self.holder, str)
            or not 0 < len(self.holder) <= 200
            or not self.holder.isprintable()
            or self.holder != self.holder.strip()
        ):
            raise exceptions.InvalidInput(
                f"fence holder must be 1-200 printable characters: {self.holder!r}"
            )


class PollStatus(StrEnum):
    """Where a spawned VM is on its way up."""

    PENDING = "pending"
    UP = "up"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PollResult:
    """The answer to ``poll``: pending, up at an address, or failed with a reason."""

    status: PollStatus
    address: str | None = None
    """The VM's address when ``status`` is ``UP``."""
    reason: str | None = None
    """Why the VM failed, when ``status`` is ``FAILED``."""
    retry_after: float | None = None
    """For ``PENDING``: the backend's estimate (seconds) of when polling again is useful."""


class Capability(StrEnum):
    """Optional operations a backend may support (spawn, poll and terminate are mandatory)."""

    LIVECHECK = "livecheck"
    RELEASE = "release"
    LIST = "list"
    CAPACITY = "capacity"
    REGISTER = "register"
    """Machines made elsewhere may join the pool (``corral vm add``): :meth:`Backend.adopt`
    builds their handle, and the backend can livecheck them."""
    FENCING = "fencing"
    """The backend records on each machine the fencing token of the lock under which it was
    last acted on, and refuses a call carrying an older one (:class:`FencedBackend`)."""


class CapacityOptions(pydantic.BaseModel):
    """A host's capacity (vdsm's memory commit): spawns are admitted only while they fit."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    memory_mib: int = pydantic.Field(gt=0, description="memory the VMs may commit, in MiB")
    vcpus: int = pydantic.Field(gt=0, description="virtual CPUs the VMs may commit")
    overhead_mib: int = pydantic.Field(0, ge=0, description="per-VM memory overhead, in MiB")


class BackendOptions(pydantic.BaseModel):
    """Options every backend accepts; each backend's options model extends this one."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    capacity: CapacityOptions | None = None
    """Optional host capacity; when set the guard refuses spawns that do not fit."""
    blocking_workers: int = pydantic.Field(4, ge=1, le=256)
    """Threads available to :meth:`Backend.run_blocking` (blocking client libraries)."""

    def max_vms(self, base_dir: Path | None) -> int | None:
        """The most VMs the backend can hold at once, when its options fix it (a static
        inventory's size), which bounds the pool's ``max``; ``None``: no bound (the default)."""
        del base_dir
        return None


class Backend(ABC):
    """Drives one kind of machine for one pool. Subclasses register under ``corral.backends``.

    ``spawn``, ``poll`` and ``terminate`` are mandatory; ``livecheck``, ``release`` and ``list`` are
    optional and announced in ``capabilities``. The controller never calls a backend directly but
    through :class:`corral.backends.guard.GuardedBackend` (timeouts, concurrency, error mapping).
    """

    type_name: ClassVar[str]
    """The ``type`` under which the backend is configured (its entry-point name)."""
    options_model: ClassVar[type[BackendOptions]] = BackendOptions
    """The pydantic model validating the backend's options."""

    capabilities: frozenset[Capability]
    """The optional operations this instance supports."""

    def __init__(self, options: BackendOptions, *, pool: str, base_dir: Path | None = None) -> None:
        """Bind the backend to its validated options and pool.

        ``base_dir`` is the folder relative paths in the options resolve against (the config file's
        folder); ``None`` means the current directory.
        """
        self.options = options
        self.pool = pool
        self.base_dir = base_dir if base_dir is not None else Path.cwd()
        caps: set[Capability] = set()
        if options.capacity is not None:
            caps.add(Capability.CAPACITY)
        self.capabilities = frozenset(caps)
        self._executor: ThreadPoolExecutor | None = None

    # --- mandatory -------------------------------------------------------------------------

    @abstractmethod
    async def spawn(self, spec: VMSpec) -> Handle:
        """Start creating the VM; may return before it is up (then ``poll`` tells)."""

    @abstractmethod
    async def poll(self, handle: Handle) -> PollResult:
        """Whether the VM is still coming up, up (with its address), or failed."""

    @abstractmethod
    async def terminate(self, handle: Handle) -> None:
        """Destroy the VM. Idempotent: terminating an unknown or already gone VM succeeds."""

    # --- optional --------------------------------------------------------------------------

    async def livecheck(self, handle: Handle) -> bool:
        """Whether the VM is alive and usable (``LIVECHECK`` capability)."""
        raise exceptions.CapabilityMissing(f"backend {self.type_name!r} has no livecheck")

    async def list(self) -> list[Handle]:
        """Every VM of this pool the backend has, for reconciliation (``LIST`` capability)."""
        raise exceptions.CapabilityMissing(f"backend {self.type_name!r} cannot list VMs")

    async def release(self, handle: Handle) -> None:
        """Clean a used VM so it can serve another ticket (``RELEASE`` capability)."""
        raise exceptions.CapabilityMissing(f"backend {self.type_name!r} cannot release VMs")

    def admission(self) -> Admission | None:
        """The backend's own admission of spawns (the cloud backends' quotas), which the guard
        uses instead of the ``capacity`` option's ledger; ``None`` (the default): the ledger."""
        return None

    def attach_store(self, url: str) -> None:
        """Told the store's URL once, before the first operation. A backend that coordinates
        with the other hosts of a cluster through PostgreSQL (the cloud backends' rate limits
        and quotas) connects here; the default ignores it."""
        del url

    def adopt(self, name: str, address: str) -> Handle:
        """The handle of machine ``name`` at ``address``, made elsewhere, that an operator
        registers (``REGISTER`` capability). Pure: no I/O (the controller livechecks the handle
        before the machine serves). Corral never terminates an adopted machine."""
        raise exceptions.CapabilityMissing(
            f"backend {self.type_name!r} cannot take machines made elsewhere"
        )

    def machine_state(self, name: str) -> str | None:
        """The backend's own name for VM ``name``'s state on its machine (libvirt's vdsm-style
        ``Up``, ``Paused``, ...), kept current from pushed events, for display beside corral's
        pool state; ``None`` when the backend tracks none (the default)."""
        return None

    async def aclose(self) -> None:
        """Free the backend's resources (its thread pool); the backend is unusable afterwards."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # --- helpers for drivers ---------------------------------------------------------------

    async def run_blocking(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking call in this backend's bounded thread pool, without blocking the loop.

        A cancelled or timed-out caller stops waiting, but the thread finishes its call: the pool's
        bound (``blocking_workers``) is what keeps hung calls from piling up unboundedly.
        """
        return await asyncio.wrap_future(self.submit_blocking(fn, *args))

    def submit_blocking(self, fn: Callable[..., T], *args: object) -> Future[T]:
        """Start a blocking call in the backend's thread pool and return its thread future.

        For a driver that must know when the call really ended even after its caller stopped
        waiting (a cloud create whose answer was lost): :meth:`run_blocking` is this, awaited.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.options.blocking_workers,
                thread_name_prefix=f"corral-{self.type_name}-{self.pool}",
            )
        return self._executor.submit(functools.partial(fn, *args))


class FencedBackend(Backend):
    """A backend that checks fencing tokens (``FENCING`` capability): the guard hands it the
    :class:`Fence` of the task's lock on the VM with every state-changing call.

    Contract: ``spawn`` records ``fence`` on the machine it creates, in the same call where the
    API allows it; before ``terminate`` or ``release`` changes an existing machine, the backend
    reads the token the machine records and raises ``StaleFence`` (changing nothing) when it is
    newer than ``fence.token``; otherwise it records ``fence`` first when the machine's token is
    older and another holder's (a survivor taking over), then acts. ``fence`` is ``None`` when
    the caller has no durable token (a single host): then nothing is checked or recorded.
    """

    def __init__(self, options: BackendOptions, *, pool: str, base_dir: Path | None = None) -> None:
        """As :class:`Backend`; the instance announces ``FENCING``."""
        super().__init__(options, pool=pool, base_dir=base_dir)
        self.capabilities = self.capabilities | {Capability.FENCING}

    @abstractmethod
    async def spawn(self, spec: VMSpec, *, fence: Fence | None = None) -> Handle:
        """As :meth:`Backend.spawn`, recording ``fence`` on the machine."""

    @abstractmethod
    async def terminate(self, handle: Handle, *, fence: Fence | None = None) -> None:
        """As :meth:`Backend.terminate`; ``StaleFence`` if the machine records a newer token."""

    async def release(self, handle: Handle, *, fence: Fence | None = None) -> None:
        """As :meth:`Backend.release`; ``StaleFence`` if the machine records a newer token."""
        del fence
        raise exceptions.CapabilityMissing(f"backend {self.type_name!r} cannot release VMs")
