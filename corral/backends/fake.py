"""The ``fake`` backend: an in-process simulation of VMs, for tests, demos and benchmarks.

A spawn returns at once and the VM comes up after a random latency; readiness is computed from
timestamps, so 10,000 VMs and 1,000 concurrent spawns cost no tasks and no timers. Faults are
injected with a seedable RNG: failures (the operation raises a non-corral exception, as a client
library would), hangs (the operation never returns; the guard's timeout must cut it off), boots
that fail, and garbage addresses. With ``state_file`` the inventory is written atomically after each
change and read back on start, so it survives a killed process (crash tests).

This module must not be used to hold real state: it simulates a host, nothing more.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import pydantic

from corral import exceptions
from corral.backends.base import (
    Backend,
    BackendOptions,
    Capability,
    Handle,
    PollResult,
    PollStatus,
    VMSpec,
)

Rate = Annotated[float, pydantic.Field(ge=0.0, le=1.0)]
STATE_VERSION = 1
GARBAGE_ADDRESS = "<<not an address>>"


class FakeFault(Exception):
    """An injected fault, as a third-party client library would raise it (not a CorralError)."""


class FakeOptions(BackendOptions):
    """Options of the ``fake`` backend. Latencies are seconds, ``x`` or ``[min, max]``."""

    spawn_latency: tuple[float, float] = (0.0, 0.0)
    """How long a VM takes to come up after ``spawn`` returned."""
    terminate_latency: tuple[float, float] = (0.0, 0.0)
    """How long ``terminate`` takes."""
    spawn_failure_rate: Rate = 0.0
    """Probability that ``spawn`` raises (no VM is created)."""
    boot_failure_rate: Rate = 0.0
    """Probability that a spawned VM never comes up (``poll`` answers ``FAILED``)."""
    poll_failure_rate: Rate = 0.0
    """Probability that one ``poll`` raises."""
    terminate_failure_rate: Rate = 0.0
    """Probability that one ``terminate`` raises (the VM stays)."""
    livecheck_failure_rate: Rate = 0.0
    """Probability that one ``livecheck`` of a healthy VM answers ``False``."""
    release_failure_rate: Rate = 0.0
    """Probability that one ``release`` raises."""
    hang_rate: Rate = 0.0
    """Probability that an operation in ``hang_operations`` never returns."""
    hang_operations: frozenset[str] = frozenset(
        {"spawn", "poll", "terminate", "livecheck", "list", "release"}
    )
    """Which operations may hang. A hanging ``spawn`` hangs after creating the VM."""
    garbage_rate: Rate = 0.0
    """Probability that a VM reports an invalid address when it comes up."""
    seed: int | None = None
    """Seed of the fault and latency RNG (``None``: unpredictable)."""
    state_file: str | None = None
    """JSON file keeping the inventory across process kills (relative to the config's folder)."""
    capabilities: frozenset[Capability] = frozenset(
        {Capability.LIVECHECK, Capability.RELEASE, Capability.LIST, Capability.REGISTER}
    )
    """Optional operations to offer (to test a controller against a less capable backend)."""

    @pydantic.field_validator("spawn_latency", "terminate_latency", mode="before")
    @classmethod
    def _latency(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (value, value)
        return value

    @pydantic.field_validator("spawn_latency", "terminate_latency")
    @classmethod
    def _latency_order(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if low < 0 or high < low:
            raise ValueError(f"must be [min, max] with 0 <= min <= max (got {list(value)})")
        return value

    @pydantic.field_validator("hang_operations")
    @classmethod
    def _operations(cls, value: frozenset[str]) -> frozenset[str]:
        known = {"spawn", "poll", "terminate", "livecheck", "list", "release"}
        unknown = value - known
        if unknown:
            raise ValueError(f"unknown operations {sorted(unknown)} (known: {sorted(known)})")
        return value

    @pydantic.field_validator("capabilities")
    @classmethod
    def _no_capacity(cls, value: frozenset[Capability]) -> frozenset[Capability]:
        if Capability.CAPACITY in value:
            raise ValueError("'capacity' is declared with the capacity option, not here")
        return value


@dataclass(slots=True)
class FakeVM:
    """One simulated VM (wall-clock timestamps, so the state file survives a restart)."""

    name: str
    id_in_pool: int
    address: str
    created_at: float
    ready_at: float
    boots: bool = True
    alive: bool = True
    releases: int = 0


class FakeBackend(Backend):
    """Simulated VMs with configurable latency and injected faults (type ``fake``)."""

    type_name: ClassVar[str] = "fake"
    options_model: ClassVar[type[BackendOptions]] = FakeOptions

    def __init__(
        self,
        options: BackendOptions,
        *,
        pool: str,
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create an empty simulated host (or the one in ``state_file``, read on first use)."""
        if not isinstance(options, FakeOptions):
            raise exceptions.ConfigError("FakeBackend needs FakeOptions")
        super().__init__(options, pool=pool, base_dir=base_dir)
        self._opts = options
        self.capabilities = self.capabilities | options.capabilities
        self._clock = clock
        self._rng = random.Random(options.seed)  # noqa: S311 - simulation, not cryptography
        self._vms: dict[str, FakeVM] = {}
        self._serial = 0
        self._state_path = (
            self.base_dir / options.state_file if options.state_file is not None else None
        )
        self._loaded = self._state_path is None
        self._load_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._generation = 0
        self._written = 0
        self.calls: dict[str, int] = {}
        """How often each operation was called (for tests)."""

    # --- test helpers ----------------------------------------------------------------------

    @property
    def vms(self) -> dict[str, FakeVM]:
        """The simulated inventory by name (read-only use; for tests and benchmarks)."""
        return self._vms

    async def names(self) -> set[str]:
        """The names of every VM the fake host has."""
        await self._ensure_loaded()
        return set(self._vms)

    async def kill(self, name: str) -> None:
        """Make a VM die: its livecheck fails from now on (the VM stays listed)."""
        await self._ensure_loaded()
        self._vm(name).alive = False
        await self._persist()

    async def forget(self, name: str) -> None:
        """Lose a VM behind the controller's back (reconciliation must notice)."""
        await self._ensure_loaded()
        self._vm(name)
        del self._vms[name]
        await self._persist()

    async def inject(self, name: str, *, id_in_pool: int = 0) -> Handle:
        """Create an up VM the controller never asked for (a leak reconciliation must sweep)."""
        await self._ensure_loaded()
        now = self._clock()
        self._vms[name] = FakeVM(name, id_in_pool, self._next_address(), now, now)
        await self._persist()
        return Handle(name)

    def adopt(self, name: str, address: str) -> Handle:
        """The handle of a machine made elsewhere: on the fake host, one made by :meth:`inject`
        (an unknown name fails its livecheck, so it cannot be registered)."""
        self._require(Capability.REGISTER)
        del address  # the fake host knows its machines by name
        return Handle(name)

    def _vm(self, name: str) -> FakeVM:
        try:
            return self._vms[name]
        except KeyError:
            raise exceptions.VMNotFound(f"fake host has no VM {name!r}") from None

    # --- faults ----------------------------------------------------------------------------

    def _chance(self, rate: float) -> bool:
        return rate > 0.0 and self._rng.random() < rate

    async def _maybe_fault(self, operation: str, rate: float, subject: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        if self._chance(rate):
            raise FakeFault(f"injected {operation} failure for {subject}")
        if operation in self._opts.hang_operations and self._chance(self._opts.hang_rate):
            await asyncio.Event().wait()  # hangs until cancelled, like a stuck client call

    def _latency(self, bounds: tuple[float, float]) -> float:
        low, high = bounds
        return low if high <= low else self._rng.uniform(low, high)

    def _next_address(self) -> str:
        self._serial += 1
        n = self._serial
        return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    # --- the interface ---------------------------------------------------------------------

    async def spawn(self, spec: VMSpec) -> Handle:
        """Create the VM at once; it comes up after ``spawn_latency`` (or never, if it fails)."""
        await self._ensure_loaded()
        self.calls["spawn"] = self.calls.get("spawn", 0) + 1
        if self._chance(self._opts.spawn_failure_rate):
            raise FakeFault(f"injected spawn failure for {spec.name}")
        if spec.name in self._vms:
            raise FakeFault(f"a VM named {spec.name!r} already exists")
        now = self._clock()
        vm = FakeVM(
            name=spec.name,
            id_in_pool=spec.id_in_pool,
            address=self._next_address(),
            created_at=now,
            ready_at=now + self._latency(self._opts.spawn_latency),
            boots=not self._chance(self._opts.boot_failure_rate),
        )
        if self._chance(self._opts.garbage_rate):
            vm.address = GARBAGE_ADDRESS
        self._vms[spec.name] = vm
        await self._persist()
        if "spawn" in self._opts.hang_operations and self._chance(self._opts.hang_rate):
            await asyncio.Event().wait()
        return Handle(spec.name)

    async def poll(self, handle: Handle) -> PollResult:
        """``PENDING`` until the VM's latency elapsed, then ``UP`` or ``FAILED``."""
        await self._ensure_loaded()
        await self._maybe_fault("poll", self._opts.poll_failure_rate, handle.name)
        vm = self._vms.get(handle.name)
        if vm is None:
            return PollResult(PollStatus.FAILED, reason=f"fake host has no VM {handle.name!r}")
        remaining = vm.ready_at - self._clock()
        if remaining > 0:
            return PollResult(PollStatus.PENDING, retry_after=remaining)
        if not vm.boots:
            return PollResult(PollStatus.FAILED, reason="the VM did not boot (injected)")
        return PollResult(PollStatus.UP, address=vm.address)

    async def terminate(self, handle: Handle) -> None:
        """Remove the VM after ``terminate_latency``; an unknown VM is already terminated."""
        await self._ensure_loaded()
        await self._maybe_fault("terminate", self._opts.terminate_failure_rate, handle.name)
        delay = self._latency(self._opts.terminate_latency)
        if delay > 0:
            await asyncio.sleep(delay)
        if self._vms.pop(handle.name, None) is not None:
            await self._persist()

    async def livecheck(self, handle: Handle) -> bool:
        """``True`` for an up, alive VM, except with ``livecheck_failure_rate``."""
        self._require(Capability.LIVECHECK)
        await self._ensure_loaded()
        await self._maybe_fault("livecheck", 0.0, handle.name)
        vm = self._vms.get(handle.name)
        if vm is None or not vm.alive or not vm.boots or vm.ready_at > self._clock():
            return False
        return not self._chance(self._opts.livecheck_failure_rate)

    async def list(self) -> list[Handle]:
        """Every VM on the simulated host."""
        self._require(Capability.LIST)
        await self._ensure_loaded()
        await self._maybe_fault("list", 0.0, f"pool {self.pool}")
        return [Handle(name) for name in self._vms]

    async def release(self, handle: Handle) -> None:
        """Count a cleanup of the VM; an unknown VM is an error."""
        self._require(Capability.RELEASE)
        await self._ensure_loaded()
        await self._maybe_fault("release", self._opts.release_failure_rate, handle.name)
        vm = self._vms.get(handle.name)
        if vm is None:
            raise FakeFault(f"cannot release unknown VM {handle.name!r}")
        vm.releases += 1
        await self._persist()

    def _require(self, capability: Capability) -> None:
        if capability not in self.capabilities:
            raise exceptions.CapabilityMissing(
                f"fake backend of pool {self.pool!r} is configured without {capability.value}"
            )

    # --- state file ------------------------------------------------------------------------

    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        async with self._load_lock:
            if self._loaded or self._state_path is None:
                return
            text = await self.run_blocking(_read_text, self._state_path)
            if text is not None:
                self._vms, self._serial = _parse_state(text, self._state_path)
            self._loaded = True

    async def _persist(self) -> None:
        """Write the inventory; concurrent changes are coalesced into one write that covers them."""
        if self._state_path is None:
            return
        self._generation += 1
        mine = self._generation
        async with self._write_lock:
            if self._written >= mine:
                return  # a write that started after our change already covered it
            generation = self._generation
            text = json.dumps(
                {
                    "version": STATE_VERSION,
                    "serial": self._serial,
                    "vms": {name: asdict(vm) for name, vm in self._vms.items()},
                }
            )
            await self.run_blocking(_write_atomically, self._state_path, text)
            self._written = generation


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, text: str) -> None:
    # Rename over the old file: a process killed mid-write leaves the previous inventory intact.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parse_state(text: str, path: Path) -> tuple[dict[str, FakeVM], int]:
    try:
        data = json.loads(text)
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported version {data.get('version')!r}")
        vms = {name: FakeVM(**fields) for name, fields in data["vms"].items()}
        serial = int(data.get("serial", len(vms)))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise exceptions.BackendError(f"fake state file {path} is corrupt: {exc}") from exc
    return vms, serial
