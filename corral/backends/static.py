"""The ``static`` backend: pools of machines that exist before anyone asks for them.

A static machine (a bare-metal builder, a long-lived VM) is never created nor destroyed. A corral
VM of a static pool is one *reservation* of a machine: ``spawn`` reserves a free, in-service
machine (or queues the reservation until one frees up: ``poll`` answers ``pending`` meanwhile),
``poll`` gives its address, ``release`` runs the optional ``cleanup`` command between tickets,
``terminate`` runs ``cleanup`` and returns the machine to the free set (idempotent), and ``list``
is the reservations in force, so reconciliation works as for any backend. A failed cleanup, or
a reservation whose latest ``livecheck`` failed, puts the machine in *maintenance* with the
reason; it is not reserved again until an operator returns it
(:meth:`StaticBackend.return_machine`).

The inventory comes from the config (``machines:``) or from a YAML file (``inventory:``) that is
re-read whenever it changes: added machines become available, removed ones retire once their
reservation ends. Reservations and maintenance live in the backend's state file, rewritten
atomically under a lock file at every change, so they survive ``kill -9`` and two processes
sharing the file never reserve one machine twice. Commands follow the ``script`` backend's
conventions (argv lists without a shell, timeouts that kill the process group, the environment,
the store's ``CORRAL_OWNER`` marker) and run through :mod:`corral.backends.process`.

The decisions are in :mod:`corral.backends.static_inventory` (pure); this module does the I/O.
It must not create or destroy machines, nor pass a command through a shell.
"""

from __future__ import annotations

import asyncio
import builtins
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Protocol, TypeVar, runtime_checkable

import pydantic

from corral import exceptions
from corral.backends import leftovers, process
from corral.backends import static_inventory as inv
from corral.backends.base import (
    Backend,
    BackendOptions,
    Capability,
    Handle,
    PollResult,
    PollStatus,
    VMSpec,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Argv = Annotated[list[str], pydantic.Field(min_length=1)]
Seconds = Annotated[float, pydantic.Field(gt=0)]
STDERR_IN_REASONS = 500
"""Characters of a command's stderr (its end) kept in a maintenance reason."""


class StaticTimeouts(pydantic.BaseModel):
    """Seconds each command may run before its process group is killed.

    The guard bounds the calls too: ``release`` and ``livecheck`` by the pool's ``call_timeout``
    (default 60 s), ``terminate`` by its ``terminate_timeout``. A cleanup cut off by the guard is
    killed and run again by the next termination, so the defaults stay below ``call_timeout``.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    cleanup: Seconds = 50.0
    livecheck: Seconds = 30.0


class StaticOptions(BackendOptions):
    """Options of the ``static`` backend: the inventory, the commands, the state file."""

    machines: list[inv.MachineEntry] | None = pydantic.Field(default=None, min_length=1)
    """The machines, inline: ``[{name, address, attrs: {...}}]`` (or ``inventory``)."""
    inventory: str | None = pydantic.Field(default=None, min_length=1)
    """A YAML file listing the machines (relative to the config's folder), re-read on change."""
    cleanup: Argv | None = None
    """Cleans a machine between tickets and before it returns to the free set (enables
    ``release``); a non-zero exit puts the machine in maintenance."""
    livecheck: Argv | None = None
    """Exits 0 when a reserved machine is usable (enables ``livecheck``)."""
    workdir: str | None = None
    """Where commands run and relative command paths resolve (relative to the config's folder)."""
    env: dict[str, str] = pydantic.Field(default_factory=dict)
    """Extra environment variables for every command."""
    timeouts: StaticTimeouts = StaticTimeouts()
    """Per-command timeouts in seconds."""
    max_processes: int = pydantic.Field(16, ge=1, le=1024)
    """Commands running at once for this pool; the others wait for a slot."""
    state_file: str | None = None
    """Reservations and maintenance (relative to the config's folder); default
    ``.corral/static-<pool>.json``, beside the default store."""

    @pydantic.field_validator("cleanup", "livecheck")
    @classmethod
    def _argv(cls, value: Argv | None) -> Argv | None:
        if value is not None and (not value[0] or any("\0" in arg for arg in value)):
            raise ValueError("the command must be a non-empty program name without NUL bytes")
        return value

    @pydantic.field_validator("machines")
    @classmethod
    def _unique(cls, value: list[inv.MachineEntry] | None) -> list[inv.MachineEntry] | None:
        if value is not None:
            inv.check_unique(value)
        return value

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> StaticOptions:
        if (self.machines is None) == (self.inventory is None):
            raise ValueError("give exactly one of 'machines' (inline) or 'inventory' (a file)")
        return self

    def max_vms(self, base_dir: Path | None) -> int | None:
        """An inline inventory bounds the VMs (reservations) the pool can have at once; an
        inventory file can grow while corral runs, so it bounds nothing at load."""
        del base_dir
        return len(self.machines) if self.machines is not None else None


@runtime_checkable
class OperatesMachines(Protocol):
    """What an operator surface (CLI, API) calls on a backend of pre-existing machines."""

    async def inventory(self) -> list[inv.MachineStatus]:
        """Every machine and what it does (free, reserved by a VM, maintenance, retiring)."""
        ...

    async def maintenance(self, name: str, reason: str) -> inv.MachineStatus:
        """Take machine ``name`` out of service with ``reason``."""
        ...

    async def return_machine(self, name: str) -> inv.MachineStatus:
        """Put machine ``name`` back in service."""
        ...


@dataclass(frozen=True, slots=True)
class _Outcome:
    returncode: int | None
    stderr: str
    timed_out: float | None = None

    def reason(self, key: str) -> str | None:
        """Why the command failed, or ``None`` when it exited 0."""
        if self.returncode == 0:
            return None
        text = self.stderr.strip()
        tail = text[-STDERR_IN_REASONS:] if text else "(no stderr)"
        if self.timed_out is not None:
            return f"{key} killed after {self.timed_out:g} s; stderr: {tail}"
        code = self.returncode or 0
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        return f"{key} {how}; stderr: {tail}"


class StaticBackend(Backend):
    """Reservations of machines that exist before corral (type ``static``)."""

    type_name: ClassVar[str] = "static"
    options_model: ClassVar[type[BackendOptions]] = StaticOptions

    def __init__(
        self,
        options: BackendOptions,
        *,
        pool: str,
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Resolve commands and files; a missing program or a bad inventory is a ``ConfigError``."""
        if not isinstance(options, StaticOptions):
            raise exceptions.ConfigError("StaticBackend needs StaticOptions")
        super().__init__(options, pool=pool, base_dir=base_dir)
        self._opts = options
        self._clock = clock
        workdir = Path(options.workdir) if options.workdir is not None else Path()
        self.workdir = (self.base_dir / workdir).resolve()
        if not self.workdir.is_dir():
            raise exceptions.ConfigError(f"static backend: workdir {self.workdir} is not a folder")
        self._commands: dict[str, list[str]] = {}
        for key in ("cleanup", "livecheck"):
            argv = getattr(options, key)
            if argv is not None:
                self._commands[key] = self._resolve(key, argv)
        caps = {Capability.LIST}
        if "cleanup" in self._commands:
            caps.add(Capability.RELEASE)
        if "livecheck" in self._commands:
            caps.add(Capability.LIVECHECK)
        self.capabilities = self.capabilities | caps
        state_file = options.state_file or f".corral/static-{pool}.json"
        self.state_path = self.base_dir / state_file
        self._lock_path = self.state_path.with_name(self.state_path.name + ".lock")
        self.inventory_path = (
            self.base_dir / options.inventory if options.inventory is not None else None
        )
        self._machines: tuple[inv.MachineEntry, ...] = tuple(options.machines or ())
        self._seen: tuple[int, int, int] | None = None
        self._bad: tuple[int, int, int] | None = None
        self._pruned = False
        if self.inventory_path is not None:
            self._machines = self._read_inventory(self.inventory_path)
            self._seen = _signature(self.inventory_path)
        self._base_env = {**os.environ, **options.env}
        self._base_env.pop(leftovers.OWNER_VARIABLE, None)
        self._slots = asyncio.Semaphore(options.max_processes)

    def mark(self, owner: str) -> None:
        """Start every later command with ``CORRAL_OWNER=<owner>`` (see the script backend)."""
        self._base_env[leftovers.OWNER_VARIABLE] = owner

    def _resolve(self, key: str, argv: list[str]) -> list[str]:
        program = argv[0]
        if os.sep in program:
            path = Path(program)
            if not path.is_absolute():
                path = self.workdir / path
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise exceptions.ConfigError(
                    f"static backend: {key}: {path} is not an executable file"
                )
            return [str(path), *argv[1:]]
        if shutil.which(program) is None:
            raise exceptions.ConfigError(f"static backend: {key}: program {program!r} not on PATH")
        return list(argv)

    # --- the inventory file and the state file (blocking; run in the backend's threads) -----

    @staticmethod
    def _read_inventory(path: Path) -> tuple[inv.MachineEntry, ...]:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise exceptions.ConfigError(
                f"static backend: cannot read inventory {path}: {exc}"
            ) from exc
        return inv.parse_inventory(text, str(path))

    def _refresh(self) -> bool:
        """Re-read the inventory file if it changed; whether the inventory changed. A file that
        became unreadable or invalid is logged once and the last good inventory kept."""
        path = self.inventory_path
        if path is None:
            return False
        signature = _signature(path)
        if signature == self._seen or signature == self._bad:
            return False
        try:
            machines = self._read_inventory(path)
        except exceptions.ConfigError as exc:
            self._bad = signature
            log.error("pool %s: keeping the last good inventory: %s", self.pool, exc)
            return False
        self._seen, self._bad = signature, None
        changed = machines != self._machines
        self._machines = machines
        return changed

    def _transact(self, decide: Callable[[inv.State, Sequence[inv.MachineEntry], float], T]) -> T:
        """Under the lock file: refresh the inventory, read the state, ``decide``, write the
        state back (atomically, only if it changed)."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                changed = self._refresh()
                try:
                    before = self.state_path.read_text(encoding="utf-8")
                except FileNotFoundError:
                    before = inv.State().to_json()
                state = inv.State.from_json(before, str(self.state_path))
                if changed or not self._pruned:  # the file may have changed while corral was down
                    inv.prune(state, self._machines)
                    self._pruned = True
                result = decide(state, self._machines, self._clock())
                after = state.to_json()
                if after != before:
                    _write_atomically(self.state_path, after)
                return result
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    async def _run_transaction(
        self, decide: Callable[[inv.State, Sequence[inv.MachineEntry], float], T]
    ) -> T:
        return await self.run_blocking(self._transact, decide)

    # --- commands ---------------------------------------------------------------------------

    def _environment(self, vm: str, reservation: inv.Reservation) -> dict[str, str]:
        env = dict(self._base_env)
        env["CORRAL_POOL"] = env["RESALLOC_POOL_ID"] = self.pool
        env["CORRAL_VM_NAME"] = env["RESALLOC_NAME"] = vm
        machine = reservation.machine or ""
        env["CORRAL_MACHINE"] = machine
        if reservation.address is not None:
            env["CORRAL_VM_ADDRESS"] = reservation.address
        entry = inv.by_name(self._machines).get(machine)
        env["CORRAL_MACHINE_ATTRS"] = json.dumps(
            dict(entry.attrs) if entry is not None else {}, sort_keys=True
        )
        return env

    async def _command(self, key: str, reservation: inv.Reservation) -> _Outcome:
        """Run ``key`` for the reservation's machine; a timeout is an outcome, not an error."""
        argv = self._commands[key]
        limit: float = getattr(self._opts.timeouts, key)
        out, err = process.Capture(keep_tail=False), process.Capture(keep_tail=True)
        async with self._slots:
            try:
                code = await process.run_command(
                    argv,
                    cwd=self.workdir,
                    env=self._environment(reservation.vm, reservation),
                    timeout=limit,
                    out=out,
                    err=err,
                )
            except TimeoutError:
                return _Outcome(None, err.text(), timed_out=limit)
            except OSError as exc:
                raise exceptions.BackendError(
                    f"static {key} for machine {reservation.machine}: cannot start {argv[0]}: {exc}"
                ) from exc
        return _Outcome(code, err.text())

    # --- the interface ----------------------------------------------------------------------

    async def spawn(self, spec: VMSpec) -> Handle:
        """Reserve a free machine for the VM, or queue the reservation until one frees up."""

        def decide(state: inv.State, machines: Sequence[inv.MachineEntry], now: float) -> str:
            return _ref(inv.reserve(state, machines, spec.name, now))

        return Handle(spec.name, ref=await self._run_transaction(decide))

    async def _reservation(self, name: str) -> inv.Reservation | None:
        def decide(
            state: inv.State, machines: Sequence[inv.MachineEntry], now: float
        ) -> inv.Reservation | None:
            return state.reservations.get(name)

        return await self._run_transaction(decide)

    async def poll(self, handle: Handle) -> PollResult:
        """``up`` at the machine's address once the reservation holds one; ``pending`` while it
        waits for a machine; ``failed`` when there is no such reservation.

        With a ``livecheck`` command, a machine is checked once before it serves (a machine may
        have died while free): a failed check puts it in maintenance, and the reservation waits
        for the next machine (``pending``, to be polled again at once).
        """
        reservation = await self._reservation(handle.name)
        if reservation is None:
            return PollResult(PollStatus.FAILED, reason=f"no reservation {handle.name!r}")
        machine, address = reservation.machine, reservation.address
        if machine is None or address is None:
            return PollResult(PollStatus.PENDING)
        if reservation.checked or "livecheck" not in self._commands:
            return PollResult(PollStatus.UP, address=address)
        failure = (await self._command("livecheck", reservation)).reason("livecheck")
        await self._run_transaction(
            lambda state, machines, now: inv.first_check(
                state, machines, handle.name, machine, failure, now
            )
        )
        if failure is not None:
            log.warning(
                "pool %s: machine %s in maintenance: livecheck failed before serving: %s",
                self.pool,
                machine,
                failure,
            )
            return PollResult(PollStatus.PENDING, retry_after=0.0)
        return PollResult(PollStatus.UP, address=address)

    async def terminate(self, handle: Handle) -> None:
        """Run ``cleanup`` (if the machine returns to service) and end the reservation: the
        machine is free again, or in maintenance with the cleanup's failure. Idempotent."""
        reservation = await self._run_transaction(
            lambda state, machines, _now: inv.needs_cleanup(state, machines, handle.name)
        )
        failure = None
        if reservation is not None and "cleanup" in self._commands:
            failure = (await self._command("cleanup", reservation)).reason("cleanup")
        ended = await self._run_transaction(
            lambda state, machines, now: inv.end(
                state, machines, handle.name, now, cleanup_failure=failure
            )
        )
        if failure is not None and ended is not None:
            log.warning(
                "pool %s: machine %s in maintenance: cleanup failed: %s",
                self.pool,
                ended.machine,
                failure,
            )

    async def release(self, handle: Handle) -> None:
        """Run ``cleanup`` between tickets; a failure puts the machine in maintenance (the
        reservation stays until its VM is terminated) and raises ``BackendError``."""
        self._require("cleanup")
        reservation = await self._run_transaction(
            lambda state, machines, _now: inv.needs_cleanup(state, machines, handle.name)
        )
        if reservation is None:
            raise exceptions.BackendError(
                f"static: {handle.name} holds no machine in service to clean"
            )
        failure = (await self._command("cleanup", reservation)).reason("cleanup")
        if failure is None:
            return
        machine = reservation.machine or ""

        def hold(state: inv.State, machines: Sequence[inv.MachineEntry], now: float) -> None:
            inv.put_in_maintenance(state, machine, f"cleanup failed: {failure}", now)

        await self._run_transaction(hold)
        log.warning("pool %s: machine %s in maintenance: cleanup failed", self.pool, machine)
        raise exceptions.BackendError(f"static cleanup of machine {machine}: {failure}")

    async def livecheck(self, handle: Handle) -> bool:
        """Run ``livecheck`` on the reserved machine; no reservation (or no machine yet) is not
        alive. The result is remembered: a reservation ending after a failed check sends its
        machine to maintenance."""
        self._require("livecheck")
        reservation = await self._reservation(handle.name)
        if reservation is None or reservation.machine is None:
            return False
        failure = (await self._command("livecheck", reservation)).reason("livecheck")
        if failure != reservation.livecheck_failure:

            def note(state: inv.State, machines: Sequence[inv.MachineEntry], now: float) -> None:
                current = state.reservations.get(handle.name)
                if current is not None and current.machine == reservation.machine:
                    current.livecheck_failure = failure

            await self._run_transaction(note)
        return failure is None

    async def list(self) -> list[Handle]:
        """The reservations in force (waiting ones included), for reconciliation."""
        reservations = await self._run_transaction(
            lambda state, machines, _now: list(state.reservations.values())
        )
        return [Handle(r.vm, ref=_ref(r)) for r in reservations]

    def _require(self, key: str) -> None:
        if key not in self._commands:
            raise exceptions.CapabilityMissing(
                f"static backend of pool {self.pool!r} has no {key!r} command"
            )

    # --- operators --------------------------------------------------------------------------

    async def inventory(self) -> builtins.list[inv.MachineStatus]:
        """Every machine and what it does: free, reserved (by which VM), maintenance (why,
        since when), retiring (left the inventory, still reserved)."""
        return await self._run_transaction(
            lambda state, machines, _now: inv.statuses(state, machines)
        )

    async def maintenance(self, name: str, reason: str) -> inv.MachineStatus:
        """Take machine ``name`` out of service with ``reason`` (``MachineNotFound``,
        ``InvalidInput`` for an empty reason; nothing changes then). A reserved machine stays
        with its VM until released, and is then not reserved again until returned."""

        def decide(
            state: inv.State, machines: Sequence[inv.MachineEntry], now: float
        ) -> inv.MachineStatus:
            inv.maintenance(state, machines, name, reason, now)
            return _status(state, machines, name)

        status = await self._run_transaction(decide)
        log.warning("pool %s: machine %s put in maintenance: %s", self.pool, name, reason)
        return status

    async def return_machine(self, name: str) -> inv.MachineStatus:
        """Put machine ``name`` back in service (``MachineNotFound``; ``Conflict`` when it is
        not in maintenance). A reservation waiting for a machine may take it at once."""

        def decide(
            state: inv.State, machines: Sequence[inv.MachineEntry], now: float
        ) -> inv.MachineStatus:
            inv.return_machine(state, machines, name)
            return _status(state, machines, name)

        status = await self._run_transaction(decide)
        log.info("pool %s: machine %s returned to service", self.pool, name)
        return status


async def find_machine(
    backends: Mapping[str, Backend], name: str
) -> tuple[str, OperatesMachines, inv.MachineStatus]:
    """The pool, backend and status of machine ``name`` among pools of pre-existing machines
    (what ``corral vm return NAME`` needs: the operator names a machine, not a pool).

    ``backends`` maps pool names to backends (a ``GuardedBackend``'s ``.backend``). Raises
    ``MachineNotFound`` naming the pools searched when no pool has it.
    """
    searched = []
    for pool, backend in sorted(backends.items()):
        if not isinstance(backend, OperatesMachines):
            continue
        searched.append(pool)
        for status in await backend.inventory():
            if status.name == name:
                return pool, backend, status
    where = ", ".join(searched) if searched else "none: no pool has pre-existing machines"
    raise exceptions.MachineNotFound(f"no machine {name!r} in any static pool (pools: {where})")


def _status(state: inv.State, machines: Sequence[inv.MachineEntry], name: str) -> inv.MachineStatus:
    return next(s for s in inv.statuses(state, machines) if s.name == name)


def _ref(reservation: inv.Reservation) -> str:
    """A handle's ``ref``: the machine a reservation holds (empty while it waits)."""
    if reservation.machine is None:
        return ""
    return json.dumps({"machine": reservation.machine}, sort_keys=True)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _write_atomically(path: Path, text: str) -> None:
    # Rename over the old file: a process killed mid-write leaves the previous state intact;
    # fsync first, so that the rename never exposes an empty file after a crash of the host.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
