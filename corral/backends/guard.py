"""The guard around every backend: what the controller actually calls (SPEC §2, §6, §10).

:class:`GuardedBackend` gives each call a timeout (``BackendTimeout``), bounds the calls in flight
per backend (a semaphore), translates every third-party exception into ``BackendError``
(``from exc``), refuses operations the backend lacks (``CapabilityMissing``), admits spawns
against the host's capacity, rejects garbage addresses, and counts calls, failures and timeouts
per operation. It also offers the two loops the controller needs: :meth:`GuardedBackend.wait_up`
(poll at an interval until the VM is up, failed, or the deadline passes) and
:meth:`GuardedBackend.terminate_until_confirmed` (retry with exponential backoff and jitter).

This module must not know about pools, tickets or the store; it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from corral import exceptions
from corral.backends.base import (
    Backend,
    Capability,
    Fence,
    FencedBackend,
    Handle,
    PollResult,
    PollStatus,
    VMSpec,
    is_valid_address,
)
from corral.backends.capacity import Admission, CapacityLedger, LedgerAdmission

T = TypeVar("T")
log = logging.getLogger(__name__)

MIN_POLL_INTERVAL = 0.001
"""The shortest pause between two polls of one VM, whatever the backend suggests."""


class Operation(StrEnum):
    """The backend operations the guard counts."""

    SPAWN = "spawn"
    POLL = "poll"
    TERMINATE = "terminate"
    LIVECHECK = "livecheck"
    LIST = "list"
    RELEASE = "release"


_REQUIRED: dict[Operation, Capability] = {
    Operation.LIVECHECK: Capability.LIVECHECK,
    Operation.LIST: Capability.LIST,
    Operation.RELEASE: Capability.RELEASE,
}


@dataclass(frozen=True, slots=True)
class OperationStats:
    """Counters of one operation since the guard was created."""

    calls: int = 0
    """Calls started (after waiting for a concurrency slot)."""
    failures: int = 0
    """Calls that raised, timeouts included, plus polls that returned a garbage address."""
    timeouts: int = 0
    """Calls cut off by the timeout."""
    seconds: float = 0.0
    """Total time spent in the backend (excluding the wait for a slot)."""


def reserved_slots(total: int) -> int:
    """Slots kept from spawns out of ``total``: a quarter, at least 1 (if total > 1), at most 8."""
    return 0 if total <= 1 else min(8, max(1, total // 4))


def backoff_delay(
    attempt: int, *, base: float, factor: float, maximum: float, jitter: float
) -> float:
    """The pause before retry number ``attempt`` (1-based): exponential, capped, with jitter.

    ``jitter`` in ``[0, 1]`` is a random draw: the delay is scaled into ``[cap / 2, cap]`` so that
    many VMs failing together do not retry in lockstep. Pure: the caller supplies the randomness.
    """
    if attempt < 1:
        raise exceptions.InvalidInput(f"attempt must be >= 1 (got {attempt})")
    cap = min(maximum, base * factor ** (attempt - 1))
    return cap * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


async def retry_with_backoff(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int | None,
    base_delay: float = 0.5,
    factor: float = 2.0,
    max_delay: float = 30.0,
    rng: random.Random | None = None,
    on_retry: Callable[[int, exceptions.BackendError], None] | None = None,
) -> tuple[T, int]:
    """Await ``fn()`` until it succeeds, retrying ``BackendError`` with backoff; (result, tries).

    ``attempts=None`` retries forever (wrap the call in ``asyncio.timeout`` for a deadline).
    ``CapabilityMissing`` and ``CapacityExceeded`` are not retried: retrying cannot help.
    """
    rand = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn(), attempt
        except (exceptions.CapabilityMissing, exceptions.CapacityExceeded):
            raise  # StaleFence is no BackendError: it is never retried either
        except exceptions.BackendError as exc:
            if attempts is not None and attempt >= attempts:
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            await asyncio.sleep(
                backoff_delay(
                    attempt, base=base_delay, factor=factor, maximum=max_delay, jitter=rand.random()
                )
            )


class _Counter:
    __slots__ = ("calls", "failures", "seconds", "timeouts")

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.timeouts = 0
        self.seconds = 0.0


class GuardedBackend:
    """A backend behind timeouts, a concurrency bound, error translation, capacity and counters."""

    def __init__(
        self,
        backend: Backend,
        *,
        call_timeout: float = 60.0,
        timeouts: Mapping[str, float] | None = None,
        max_concurrency: int = 16,
        max_spawns: int | None = None,
        poll_interval: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        """Wrap ``backend``.

        ``call_timeout`` bounds every call; ``timeouts`` overrides it per operation name (e.g.
        ``{"spawn": 600}`` for a script whose ``new`` waits for the VM). ``max_concurrency`` bounds
        the calls in flight (waiting for a slot is not part of the timeout); of those, at most
        ``max_spawns`` are spawns (default: all but :func:`reserved_slots`), so that long spawns
        never keep terminations, polls and livechecks waiting. ``poll_interval`` is the longest
        pause between two polls in :meth:`wait_up`.
        """
        if call_timeout <= 0 or max_concurrency < 1 or poll_interval <= 0:
            raise exceptions.InvalidInput(
                "call_timeout and poll_interval must be > 0 and max_concurrency >= 1"
            )
        if max_spawns is None:
            max_spawns = max(1, max_concurrency - reserved_slots(max_concurrency))
        if not 1 <= max_spawns <= max_concurrency:
            raise exceptions.InvalidInput(
                f"max_spawns must be between 1 and max_concurrency ({max_concurrency}), "
                f"got {max_spawns}"
            )
        self.backend = backend
        self.poll_interval = poll_interval
        self.max_concurrency = max_concurrency
        self.max_spawns = max_spawns
        self._timeouts: dict[Operation, float] = dict.fromkeys(Operation, call_timeout)
        for name, value in (timeouts or {}).items():
            try:
                op = Operation(name)
            except ValueError as exc:
                raise exceptions.InvalidInput(
                    f"timeouts: unknown operation {name!r} (known: {', '.join(Operation)})"
                ) from exc
            if value <= 0:
                raise exceptions.InvalidInput(f"timeouts.{name} must be > 0 (got {value})")
            self._timeouts[op] = value
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._spawn_slots = asyncio.Semaphore(max_spawns)
        self._counters = {op: _Counter() for op in Operation}
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        capacity = backend.options.capacity
        self.capacity: CapacityLedger | None = (
            CapacityLedger(capacity) if capacity is not None else None
        )
        """The host's committed resources, when the backend declares a capacity."""
        self.admission: Admission | None = backend.admission() or (
            LedgerAdmission(self.capacity) if self.capacity is not None else None
        )
        """What every spawn is admitted against: the backend's own (cloud quotas) or the
        capacity's ledger; ``None``: everything is admitted."""
        self.in_flight = 0
        """Backend calls running right now (never above ``max_concurrency``)."""

    # --- introspection ---------------------------------------------------------------------

    @property
    def pool(self) -> str:
        """The pool the backend serves."""
        return self.backend.pool

    @property
    def type_name(self) -> str:
        """The backend's type (``fake``, ``script``, ...)."""
        return self.backend.type_name

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The optional operations the backend supports."""
        return self.backend.capabilities

    def has(self, capability: Capability) -> bool:
        """Whether the backend supports ``capability``."""
        return capability in self.backend.capabilities

    def timeout_for(self, operation: Operation | str) -> float:
        """The timeout applied to one call of ``operation``."""
        return self._timeouts[Operation(operation)]

    def stats(self) -> dict[Operation, OperationStats]:
        """A snapshot of the counters of every operation."""
        return {
            op: OperationStats(c.calls, c.failures, c.timeouts, c.seconds)
            for op, c in self._counters.items()
        }

    # --- the guarded call ------------------------------------------------------------------

    async def _call(self, op: Operation, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        required = _REQUIRED.get(op)
        if required is not None and required not in self.backend.capabilities:
            raise exceptions.CapabilityMissing(
                f"backend {self.type_name!r} of pool {self.pool!r} does not support {op.value}"
            )
        if op is Operation.SPAWN:
            async with self._spawn_slots:  # taken first: a waiting spawn holds no shared slot
                return await self._guarded(op, what, fn)
        return await self._guarded(op, what, fn)

    async def _guarded(self, op: Operation, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        counter = self._counters[op]
        limit = self._timeouts[op]
        async with self._semaphore:
            counter.calls += 1
            self.in_flight += 1
            started = time.monotonic()
            scope = asyncio.timeout(limit)
            try:
                async with scope:
                    return await fn()
            except exceptions.StaleFence:
                counter.failures += 1  # the backend logged it; a newer holder acts on the VM
                raise
            except Exception as exc:
                error = self._failed(op, what, exc, expired=scope.expired(), limit=limit)
                if error is exc:
                    raise
                raise error from exc
            finally:
                self.in_flight -= 1
                counter.seconds += time.monotonic() - started

    def _failed(
        self, op: Operation, what: str, exc: Exception, *, expired: bool, limit: float
    ) -> exceptions.BackendError:
        """Count and log a failed call; return the corral error to raise for it."""
        counter = self._counters[op]
        counter.failures += 1
        error: exceptions.BackendError
        if isinstance(exc, TimeoutError) and expired:
            error = exceptions.BackendTimeout(
                f"{self.type_name} {op.value} {what}: no answer within {limit:g} s"
            )
        elif isinstance(exc, exceptions.BackendError):
            error = exc
        else:
            error = self._translate(op, what, exc)
        if isinstance(error, exceptions.BackendTimeout):
            counter.timeouts += 1
            log.warning("pool %s: %s", self.pool, error.message)
        else:
            log.info("pool %s: %s", self.pool, error.message)
        return error

    def _translate(self, op: Operation, what: str, exc: Exception) -> exceptions.BackendError:
        detail = str(exc) or type(exc).__name__
        return exceptions.BackendError(
            f"{self.type_name} {op.value} {what} failed: {type(exc).__name__}: {detail}"
        )

    # --- the operations --------------------------------------------------------------------

    def _fenced(self, fence: Fence | None) -> FencedBackend | None:
        """The backend, when ``fence`` is given and the backend checks fences."""
        backend = self.backend
        if fence is None or not isinstance(backend, FencedBackend):
            return None
        return backend if Capability.FENCING in backend.capabilities else None

    async def spawn(self, spec: VMSpec, *, fence: Fence | None = None) -> Handle:
        """Admit the VM against the capacity, then ask the backend to create it.

        ``fence``: the token of the caller's lock on the VM, handed to a backend that checks
        fences (``FENCING``) and ignored by the others. The capacity stays committed if the
        spawn fails (the VM may exist): the controller's rollback terminates it, which releases
        the capacity.
        """
        if self.admission is not None:
            await self.admission.admit(spec)
        fenced = self._fenced(fence)
        handle = await self._call(
            Operation.SPAWN,
            spec.name,
            (lambda: fenced.spawn(spec, fence=fence))
            if fenced is not None
            else (lambda: self.backend.spawn(spec)),
        )
        if not isinstance(handle, Handle) or handle.name != spec.name:
            self._counters[Operation.SPAWN].failures += 1
            raise exceptions.BackendError(
                f"{self.type_name} spawn {spec.name}: backend returned {handle!r}, "
                "not a Handle with the VM's name"
            )
        return handle

    async def poll(self, handle: Handle) -> PollResult:
        """Poll once; an ``UP`` without a valid address becomes ``FAILED`` (garbage output)."""
        result = await self._call(Operation.POLL, handle.name, lambda: self.backend.poll(handle))
        if not isinstance(result, PollResult):
            self._counters[Operation.POLL].failures += 1
            raise exceptions.BackendError(
                f"{self.type_name} poll {handle.name}: backend returned {result!r}"
            )
        if result.status is PollStatus.UP and not (
            result.address is not None and is_valid_address(result.address)
        ):
            self._counters[Operation.POLL].failures += 1
            return PollResult(
                PollStatus.FAILED,
                reason=f"backend reported an invalid address {str(result.address)[:100]!r}",
            )
        return result

    async def terminate(self, handle: Handle, *, fence: Fence | None = None) -> None:
        """Destroy the VM (idempotent); on success its capacity is released. ``fence``: as for
        :meth:`spawn` (a backend that checks it raises ``StaleFence``, which is not retried)."""
        fenced = self._fenced(fence)
        await self._call(
            Operation.TERMINATE,
            handle.name,
            (lambda: fenced.terminate(handle, fence=fence))
            if fenced is not None
            else (lambda: self.backend.terminate(handle)),
        )
        if self.admission is not None:
            await self.admission.release(handle.name)

    async def livecheck(self, handle: Handle) -> bool:
        """Whether the VM is alive (``CapabilityMissing`` if the backend cannot tell)."""
        alive = await self._call(
            Operation.LIVECHECK, handle.name, lambda: self.backend.livecheck(handle)
        )
        return bool(alive)

    async def list(self) -> list[Handle]:
        """Every VM the backend has for this pool (``CapabilityMissing`` if it cannot list)."""
        handles = await self._call(Operation.LIST, f"pool {self.pool}", self.backend.list)
        if not all(isinstance(h, Handle) for h in handles):
            self._counters[Operation.LIST].failures += 1
            raise exceptions.BackendError(f"{self.type_name} list: backend returned non-handles")
        return list(handles)

    async def release(self, handle: Handle, *, fence: Fence | None = None) -> None:
        """Clean a used VM for reuse (``CapabilityMissing`` if the backend cannot); ``fence``:
        as for :meth:`terminate`."""
        fenced = self._fenced(fence)
        await self._call(
            Operation.RELEASE,
            handle.name,
            (lambda: fenced.release(handle, fence=fence))
            if fenced is not None
            else (lambda: self.backend.release(handle)),
        )

    async def aclose(self) -> None:
        """Close the backend."""
        try:
            await self.backend.aclose()
        except exceptions.BackendError:
            raise
        except Exception as exc:
            raise exceptions.BackendError(
                f"{self.type_name} backend of pool {self.pool!r} failed to close: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    # --- loops the controller needs --------------------------------------------------------

    def recommit(self, spec: VMSpec) -> None:
        """Count an existing VM against the capacity (after a restart); no admission check."""
        if self.admission is not None:
            self.admission.recommit(spec)

    async def wait_up(self, handle: Handle, timeout: float) -> PollResult:
        """Poll until the VM is ``UP`` or ``FAILED`` and return that result.

        Pauses at most ``poll_interval`` between polls (less when the backend suggests it with
        ``retry_after``). A poll that raises is counted and polled again. After ``timeout`` seconds
        without an answer, raises ``BackendTimeout`` naming the last poll error, if any.
        """
        last_error: exceptions.BackendError | None = None
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                while True:
                    try:
                        result = await self.poll(handle)
                    except exceptions.CapabilityMissing:
                        raise
                    except exceptions.BackendError as exc:
                        last_error = exc
                        delay = self.poll_interval
                    else:
                        if result.status is not PollStatus.PENDING:
                            return result
                        delay = self.poll_interval
                        if result.retry_after is not None:
                            delay = min(delay, max(result.retry_after, MIN_POLL_INTERVAL))
                    await asyncio.sleep(delay)
        except TimeoutError as exc:
            if not scope.expired():
                raise self._translate(Operation.POLL, handle.name, exc) from exc
            suffix = f" (last poll error: {last_error.message})" if last_error else ""
            raise exceptions.BackendTimeout(
                f"{self.type_name} VM {handle.name} not up within {timeout:g} s{suffix}"
            ) from exc

    async def terminate_until_confirmed(
        self,
        handle: Handle,
        *,
        attempts: int | None = None,
        base_delay: float = 0.5,
        factor: float = 2.0,
        max_delay: float = 30.0,
        on_retry: Callable[[int, exceptions.BackendError], None] | None = None,
        fence: Fence | None = None,
    ) -> int:
        """Terminate, retrying failures with exponential backoff; returns the attempts it took.

        ``attempts=None`` retries until the backend confirms (SPEC §5: a VM is never forgotten
        while the backend may still have it); wrap in ``asyncio.timeout`` for a deadline. A
        ``StaleFence`` ends the retries at once: a newer holder of the VM's lock acts on it.
        """
        _, tries = await retry_with_backoff(
            lambda: self.terminate(handle, fence=fence),
            attempts=attempts,
            base_delay=base_delay,
            factor=factor,
            max_delay=max_delay,
            rng=self._rng,
            on_retry=on_retry,
        )
        return tries
