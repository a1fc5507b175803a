"""libvirt's event loop for the whole process, and lifecycle events handed to asyncio loops.

libvirt delivers domain lifecycle events only through an event loop implementation registered
before connections open. ``libvirtaio`` registers one bound to a single asyncio loop, once per
process, which breaks as soon as a process runs several loops one after another (each test, each
``asyncio.run``). So corral runs libvirt's own default implementation in one daemon thread, and a
callback posts each event into the loop of the backend that registered it with
``call_soon_threadsafe``: the event loop never blocks and no loop is tied to libvirt.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import libvirt

log = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def _run() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # keep dispatching whatever one callback did
            log.exception("libvirt event loop iteration failed")


def _ignore(_ctx: object, _err: object) -> None:
    """libvirt's errors reach corral as exceptions; don't also print them."""


def ensure_event_thread() -> None:
    """Register libvirt's default event implementation and start its thread (once per process).

    Must run before the connections whose events are wanted are opened.
    """
    global _thread
    with _lock:
        if _thread is not None:
            return
        # libvirt prints every error to stderr unless a handler takes them; corral raises them
        libvirt.registerErrorHandler(_ignore, None)
        libvirt.virEventRegisterDefaultImpl()
        _thread = threading.Thread(target=_run, name="corral-libvirt-events", daemon=True)
        _thread.start()


LifecycleHandler = Callable[[str, str, int], None]
"""Called on the asyncio loop with (hypervisor id, domain name, event code)."""


def watch_lifecycle(
    conn: libvirt.virConnect,
    hypervisor: str,
    loop: asyncio.AbstractEventLoop,
    handler: LifecycleHandler,
) -> int:
    """Register ``handler`` for ``conn``'s domain lifecycle events; returns the callback id."""

    def relay(
        _conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, _detail: int, _opaque: object
    ) -> None:
        try:
            name = dom.name()
            loop.call_soon_threadsafe(handler, hypervisor, name, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    return int(
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, relay, None)
    )
