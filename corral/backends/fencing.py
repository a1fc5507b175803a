"""The fencing rule a :class:`~corral.backends.base.FencedBackend` applies to one machine.

A machine records the :class:`~corral.backends.base.Fence` of the last lock grant acted on it
(libvirt: in corral's domain metadata; clouds: in instance tags). Before a call changes it, the
backend compares the caller's fence with the recorded one (:func:`admit`): an older caller is
refused with ``StaleFence`` and logged; a newer one records its own fence first where
:func:`must_record` says so, then acts.

Pure: no I/O, no SDK. Shared by the libvirt and the cloud backends.
"""

from __future__ import annotations

import logging

from corral import exceptions
from corral.backends.base import Fence

log = logging.getLogger(__name__)


def parse(token: str | None, holder: str | None) -> Fence | None:
    """The fence recorded as text (a tag, a metadata element); ``None`` when absent or
    malformed (a machine from before fencing, or a record someone damaged: nothing to honour)."""
    if not token or not holder or not (token.isascii() and token.isdigit()):
        return None
    try:
        return Fence(int(token), holder)
    except exceptions.InvalidInput:
        return None


def admit(pool: str, operation: str, name: str, recorded: Fence | None, caller: Fence) -> None:
    """Refuse (``StaleFence``, logged at warning) a call whose fence is older than the
    machine's; a call with the same or a newer token goes ahead."""
    if recorded is not None and recorded.token > caller.token:
        error = exceptions.StaleFence(
            f"pool {pool}: {operation} {name} refused: fencing token {caller.token} of "
            f"{caller.holder} is older than the machine's {recorded.token} of {recorded.holder}"
        )
        log.warning("%s", error.message)
        raise error


def must_record(recorded: Fence | None, caller: Fence, *, every_grant: bool) -> bool:
    """Whether an admitted caller records its fence on the machine before acting.

    ``every_grant``: on every newer token (a cheap, local write: libvirt). Otherwise only when
    another holder recorded the machine's token, or none is recorded: a survivor taking over
    (or a machine from before fencing), which keeps a cloud's API calls per VM unchanged on the
    path where one host spawns and terminates.
    """
    if recorded is None:
        return True
    if recorded.token >= caller.token:
        return False
    return every_grant or recorded.holder != caller.holder
