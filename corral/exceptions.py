"""Every error corral raises on purpose, each with a stable machine-readable ``code``.

One module, one hierarchy: the HTTP API turns any :class:`CorralError` into
``{"error": {"code": ..., "message": ...}}`` with the class's ``http_status``, and the
client turns the code back into the same class (:func:`from_code`). Codes are part of the
public API: never rename one, only add new ones.

Third-party errors are translated where they enter corral, always with ``raise ... from exc``.
This module must not import anything from the rest of the package.
"""

from __future__ import annotations

from typing import ClassVar


class CorralError(Exception):
    """Something went wrong in corral."""

    code: ClassVar[str] = "corral_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        super().__init__(self.message)

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The JSON body the API returns for this error."""
        return {"error": {"code": self.code, "message": self.message}}


# --- input --------------------------------------------------------------------------------


class InvalidInput(CorralError):
    """The input is not valid."""

    code = "invalid_input"
    http_status = 422


class InvalidResourceKey(InvalidInput):
    """The resource key is not of the form namespace/name."""

    code = "invalid_resource_key"


class ConfigError(InvalidInput):
    """The configuration is not valid."""

    code = "config_error"


class NotFound(CorralError):
    """No such object."""

    code = "not_found"
    http_status = 404


class Conflict(CorralError):
    """The object is not in a state that allows this operation."""

    code = "conflict"
    http_status = 409


# --- auth ---------------------------------------------------------------------------------


class Unauthorized(CorralError):
    """A valid bearer token is required."""

    code = "unauthorized"
    http_status = 401


class Forbidden(CorralError):
    """The token's role does not allow this operation."""

    code = "forbidden"
    http_status = 403


# --- locks --------------------------------------------------------------------------------


class LockError(CorralError):
    """A lock operation failed."""

    code = "lock_error"
    http_status = 409


class LockTimeout(LockError):
    """The lock was not granted within the timeout."""

    code = "lock_timeout"
    http_status = 408


class LockCancelled(LockError):
    """The lock request was cancelled before it was granted."""

    code = "lock_cancelled"


class AlreadyHeld(LockError):
    """The owner already holds or waits for this resource."""

    code = "lock_already_held"


class NotHeld(LockError):
    """The owner does not hold this resource."""

    code = "lock_not_held"


class UpgradeConflict(LockError):
    """Another holder is already upgrading this shared lock; upgrading too would deadlock."""

    code = "lock_upgrade_conflict"


class LockReleased(LockError):
    """The lock guarding this object has been released."""

    code = "lock_released"


class ExclusiveLockRequired(LockError):
    """This operation requires an exclusive lock."""

    code = "lock_exclusive_required"


class StaleToken(LockError):
    """The fencing token is older than the resource's current one; the lock was lost."""

    code = "lock_stale_token"


class LeaseLost(LockError):
    """This host's cluster lease has lapsed: its locks were freed and it may not act on them."""

    code = "lease_lost"


class LeaseHeld(LockError):
    """The lease is held by another live host."""

    code = "lease_held"


class StaleEpoch(StaleToken):
    """A write on behalf of a leadership lease carried an epoch that is no longer the live one:
    another host leads now (this one was paused or cut off past its lease). Refused."""

    code = "stale_epoch"


class TaskTakenOver(StaleToken):
    """A write of a task this host no longer runs: another host took it over (this one was
    paused or cut off past its lease). Refused; the other host recovers the task."""

    code = "task_taken_over"


class StaleFence(StaleToken):
    """A backend call carried a fencing token older than the one the machine records: a newer
    holder of the VM's lock acted on it (this host was paused or cut off past its lease).
    Refused before the backend changed anything; never retried."""

    code = "backend_stale_fence"


# --- tasks --------------------------------------------------------------------------------


class TaskError(CorralError):
    """A task operation failed."""

    code = "task_error"
    http_status = 409


class TaskStateTransitionError(TaskError):
    """The task cannot move from its current state to the requested one."""

    code = "task_state_transition"


class TaskNotFound(NotFound):
    """No task with this id."""

    code = "task_not_found"


class UnknownStep(TaskError):
    """No job or recovery step is registered under this name."""

    code = "task_unknown_step"
    http_status = 422


class TaskAborted(TaskError):
    """The task was stopped."""

    code = "task_aborted"


class StoreError(CorralError):
    """The store failed."""

    code = "store_error"
    http_status = 503


# --- pools, VMs, tickets ------------------------------------------------------------------


class PoolNotFound(NotFound):
    """No pool with this name."""

    code = "pool_not_found"


class VMNotFound(NotFound):
    """No VM with this name."""

    code = "vm_not_found"


class TicketNotFound(NotFound):
    """No ticket with this id."""

    code = "ticket_not_found"


class NoMatchingPool(InvalidInput):
    """No pool matches the requested pool or tags."""

    code = "no_matching_pool"


class PoolRemoved(Conflict):
    """The pool was removed from the configuration and is draining: it takes no new tickets
    (its open tickets finish)."""

    code = "pool_removed"


class VMStateTransitionError(Conflict):
    """The VM cannot move from its current state to the requested one."""

    code = "vm_state_transition"


class VMStateMismatch(Conflict):
    """The VM is not in one of the states the request allowed (a conditional terminate); nothing
    was changed."""

    code = "vm_state_mismatch"


class TicketStateTransitionError(Conflict):
    """The ticket cannot move from its current state to the requested one."""

    code = "ticket_state_transition"


class TicketClosed(Conflict):
    """The ticket is already closed."""

    code = "ticket_closed"


class TicketTimeout(CorralError):
    """The ticket was not assigned within the timeout."""

    code = "ticket_timeout"
    http_status = 408


# --- backends -----------------------------------------------------------------------------


class BackendError(CorralError):
    """A backend operation failed."""

    code = "backend_error"
    http_status = 502


class BackendTimeout(BackendError):
    """A backend operation did not finish within its timeout."""

    code = "backend_timeout"
    http_status = 504


class BackendNotFound(ConfigError):
    """No backend is installed under this type."""

    code = "backend_not_found"


class CapabilityMissing(BackendError):
    """The backend does not support this operation."""

    code = "backend_capability_missing"
    http_status = 501


class CapacityExceeded(BackendError):
    """The host has no capacity left for this VM."""

    code = "backend_capacity_exceeded"
    http_status = 503


class MachineNotFound(NotFound):
    """No machine of this name is in the static inventory."""

    code = "machine_not_found"


class VMExists(Conflict):
    """A VM of this name is already recorded (alive, or a dead one's record: names are never
    reused)."""

    code = "vm_exists"


class VMInUse(Conflict):
    """The VM serves a ticket: the operation needs it free (or ``force``)."""

    code = "vm_in_use"


class MachineNotAlive(Conflict):
    """The machine failed its livecheck: it cannot join the pool."""

    code = "machine_not_alive"


def _all_subclasses(cls: type[CorralError]) -> list[type[CorralError]]:
    found: list[type[CorralError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def registry() -> dict[str, type[CorralError]]:
    """Every error class by its stable code (including subclasses defined elsewhere)."""
    classes: list[type[CorralError]] = [CorralError, *_all_subclasses(CorralError)]
    return {cls.code: cls for cls in classes}


def from_code(code: str, message: str) -> CorralError:
    """Rebuild the error a server sent: the same class when the code is known."""
    cls = registry().get(code, CorralError)
    return cls(message)


# --- HTTP ---------------------------------------------------------------------------------


class MethodNotAllowed(CorralError):
    """This HTTP method is not allowed on this endpoint."""

    code = "method_not_allowed"
    http_status = 405


class LockRequestProcessed(LockError):
    """The lock request was already submitted, granted, cancelled or released."""

    code = "lock_request_processed"


class TaskNotDone(TaskError):
    """The task is not done yet, so it cannot be cleaned."""

    code = "task_not_done"


class TaskWaitTimeout(TaskError):
    """The task did not settle within the timeout."""

    code = "task_wait_timeout"
    http_status = 408


class ServerUnreachable(CorralError):
    """The corral server cannot be reached (client side: connection refused, timeout)."""

    code = "server_unreachable"
    http_status = 503


class TaskBusy(TaskStateTransitionError):
    """Another operation on this task (a rollback, clean or force stop) is still starting."""

    code = "task_busy"


# --- HTTP hardening and shutdown (issue 8) ------------------------------------------------


class CrossOriginRefused(Forbidden):
    """A cross-origin request may not change anything."""

    code = "cross_origin"


class BodyTooLarge(InvalidInput):
    """The request body is larger than the server accepts."""

    code = "body_too_large"
    http_status = 413


class HeadersTooLarge(InvalidInput):
    """The request headers are larger than the server accepts."""

    code = "headers_too_large"
    http_status = 431


class RequestTimeout(CorralError):
    """The request was not received in time."""

    code = "request_timeout"
    http_status = 408


class ServerStopping(CorralError):
    """The server is stopping; retry in a moment (the ticket is kept)."""

    code = "server_stopping"
    http_status = 503


class ServerStarting(ServerStopping):
    """The server is recovering its tasks and reconciling its backends; retry in a moment."""

    code = "server_starting"
    http_status = 503


class StoreInUse(StoreError):
    """Another corral process serves this store (a SQLite store has one owner at a time)."""

    code = "store_in_use"
    http_status = 409


class AddressInUse(CorralError):
    """The address and port to listen on are taken (another server runs there)."""

    code = "address_in_use"
    http_status = 503
