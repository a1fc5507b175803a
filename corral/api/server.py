"""Running the controller and the API in one process: what ``corral serve`` does.

:func:`serve` creates the controller from the config, starts it, serves the API with uvicorn until
SIGINT/SIGTERM (or :meth:`Server.shutdown`), then stops the controller gracefully (in-flight tasks
persisted, recovered on the next start). :class:`BackgroundServer` runs the same in a thread, for
tests and for embedding in another program.

This module must not implement controller or API behaviour; it only wires and runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Protocol, TypeVar

import uvicorn

from corral import exceptions
from corral import wire as models
from corral.api import guard, protocol, starting
from corral.api.app import create_app
from corral.api.facade import ControllerFacade
from corral.config import CorralConfig

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

T = TypeVar("T")


class ManagedController(ControllerFacade, Protocol):
    """A controller whose life the server manages."""

    async def start(self) -> None:
        """Start preallocating, assigning, checking."""

    async def stop(self) -> None:
        """Stop gracefully; in-flight tasks are persisted."""


ControllerFactory = Callable[[CorralConfig], Awaitable[ManagedController]]


async def _create_controller(config: CorralConfig) -> ManagedController:
    # Imported at call time: importing the API must not pull in the store and backends.
    from corral.controller import Controller

    return await Controller.create(config)


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_host(config: CorralConfig, host: str) -> tuple[str, str | None]:
    """The host to bind and, without tokens, the notice to print about it.

    With no tokens configured anyone reaching the port could take and terminate VMs, so the server
    binds loopback only (whatever host was asked for) and says so.
    """
    if config.api.tokens:
        return host, None
    bound = host if is_loopback(host) else LOOPBACK
    notice = f"no api.tokens configured: open to local users, listening on {bound} only"
    if bound != host:
        notice += f", not {host} (configure tokens to listen on other interfaces)"
    return bound, notice


FULL_COLLECTION_EVERY = 1000
"""Collections of the middle generation between two full collections once the server runs
(CPython's default is 10)."""


def freeze_startup_objects() -> None:
    """Collect, then move every object alive now (modules, routes, configuration, the controller)
    out of the garbage collector's reach (:func:`gc.freeze`), and make full collections rare.

    A full collection walks every tracked object, about 150,000 in the server of bench/events.py:
    0.1 to 0.15 s of the event loop on the development machine, a stall that every stream and
    ticket felt (the p99 of event delivery). Objects made later are collected as before.

    Once the start-up objects are frozen, CPython's rule for a full collection (a tenth of the
    middle generation's collections, when the objects added since the last full one exceed a
    quarter of those it kept) is met all the time: the frozen objects no longer count. Under a
    burst of 1,000 long-polls that meant three or four full collections of 25-110 ms each within
    the second the requests arrived, each one delaying every request read meanwhile
    (docs/performance.md, "Round 4"). The young generations are collected as before (cheap: they
    hold only what was made since); a full collection comes after :data:`FULL_COLLECTION_EVERY`
    middle ones instead of 10, i.e. after about 7 million allocations with the default
    thresholds: long-lived cyclic garbage waits longer, young garbage does not.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed, else asyncio's default one.

    uvloop (libuv) runs the loop itself, its transports, timers and subprocess pipes in C: a
    burst of 1,000 long-polls is answered far sooner, at a little less CPU per request
    (docs/performance.md, "Round 3"). It does not exist on Windows, so it is optional.
    """
    try:
        import uvloop
    except ImportError:
        log.debug("event loop: asyncio's default (uvloop is not installed)")
        return asyncio.new_event_loop()
    log.debug("event loop: uvloop")
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion in a new event loop of :func:`new_event_loop`, as
    :func:`asyncio.run` does (what ``corral serve`` runs the server in)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """The controller and its API under uvicorn, in the running event loop."""

    def __init__(
        self,
        config: CorralConfig,
        *,
        host: str | None = None,
        port: int | None = None,
        factory: ControllerFactory = _create_controller,
        install_signal_handlers: bool = True,
        access_log: bool = False,
        header_timeout: float = protocol.HEADER_TIMEOUT,
        body_timeout: float = guard.BODY_TIMEOUT,
        keep_alive: int = 5,
        parser: protocol.Parser = "auto",
        reload_source: Callable[[], CorralConfig] | None = None,
        freeze_gc: bool = True,
    ) -> None:
        self.config = config
        self._freeze_gc = freeze_gc
        self._reload_source = reload_source
        """Reads and validates the configuration file again (SIGHUP, ``corral config reload``)."""
        self._controller: ManagedController | None = None
        self._hangups: set[asyncio.Task[None]] = set()
        self.host, self.warning = listen_host(config, host or config.api.host)
        self.port = config.api.port if port is None else port
        self._factory = factory
        self._signals = install_signal_handlers
        self._access_log = access_log
        self._limits = (header_timeout, body_timeout, keep_alive)
        self._parser: protocol.Parser = parser
        self._uvicorn: uvicorn.Server | None = None
        self.started = asyncio.Event()

    @property
    def url(self) -> str:
        """The base URL clients use."""
        return f"http://{self.host}:{self.port}"

    async def run(self) -> None:
        """Listen, create and start the controller (``/healthz`` answers while it recovers,
        everything else 503 ``server_starting``), serve until told to stop, stop the
        controller."""
        header_timeout, body_timeout, keep_alive = self._limits
        gate = starting.Gate()
        config = uvicorn.Config(
            gate,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=self._access_log,
            lifespan="off",
            timeout_graceful_shutdown=5,
            http=protocol.limited(header_timeout, self._parser),
            h11_max_incomplete_event_size=protocol.MAX_HEADER_BYTES,
            timeout_keep_alive=keep_alive,
        )
        self._uvicorn = _Uvicorn(config, asyncio.Event())
        serving = asyncio.create_task(self._serve(self._uvicorn))
        while not self._uvicorn.started and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():
            await serving  # it could not listen: AddressInUse
            return
        creating: asyncio.Task[ManagedController] = asyncio.create_task(self._create())
        await asyncio.wait({creating, serving}, return_when=asyncio.FIRST_COMPLETED)
        if not creating.done():  # told to stop while recovering: recovery resumes next start
            creating.cancel()
            await asyncio.gather(creating, return_exceptions=True)
            await serving
            return
        try:
            controller = creating.result()
        except BaseException:
            self._uvicorn.should_exit = True
            await asyncio.gather(serving, return_exceptions=True)
            raise
        try:
            await controller.start()
            app = create_app(controller, self.config, body_timeout=body_timeout)
            self._controller = controller
            app.state.reload = self.reload  # POST /v1/config/reload (corral.api.operate)
            self._uvicorn.stopping = app.state.corral.stopping
            gate.open(app)
            if self._freeze_gc:
                freeze_startup_objects()
            self.started.set()
            await serving
        finally:
            await controller.stop()

    async def _create(self) -> ManagedController:
        return await self._factory(self.config)

    async def _serve(self, server: uvicorn.Server) -> None:
        loop = asyncio.get_running_loop()
        if self._signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal)
            loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits when it cannot bind: a corral error instead
            raise exceptions.AddressInUse(f"cannot listen on {self.host}:{self.port}") from exc
        finally:
            if self._signals:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
        if not server.started:
            raise exceptions.CorralError(f"cannot listen on {self.host}:{self.port}")

    def _on_signal(self) -> None:
        server = self._uvicorn
        if server is None:
            return
        if server.should_exit:
            server.force_exit = True  # a second signal: stop waiting for open connections
        server.should_exit = True

    async def reload(self, actor: str) -> models.ReloadResult:
        """Read the configuration file again and apply it (``ConfigError`` naming every problem
        when it is invalid or cannot apply: the running configuration stays)."""
        if self._reload_source is None or self._controller is None:
            raise exceptions.ConfigError(
                "this server has no configuration file to reload (it was started without --config)"
            )
        new = await asyncio.to_thread(self._reload_source)
        report = await self._controller.reload(new, actor=actor)
        return models.ReloadResult(
            added=list(report.added),
            changed=list(report.changed),
            removed=list(report.removed),
            restart_needed=list(report.restart_needed),
        )

    def _on_hangup(self) -> None:
        job = asyncio.get_running_loop().create_task(self._reload_on_signal())
        self._hangups.add(job)
        job.add_done_callback(self._hangups.discard)

    async def _reload_on_signal(self) -> None:
        try:
            result = await self.reload("SIGHUP")
        except exceptions.CorralError as exc:
            log.error("configuration reload refused, the running one stays: %s", exc.message)
            return
        log.info(
            "configuration reloaded on SIGHUP: added %s, changed %s, removed %s%s",
            result.added or "none",
            result.changed or "none",
            result.removed or "none",
            f"; after a restart only: {', '.join(result.restart_needed)}"
            if result.restart_needed
            else "",
        )

    def shutdown(self) -> None:
        """Ask the server to stop (thread-safe flag; the controller stops after the API)."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: :class:`Server` handles SIGINT/SIGTERM itself.

    uvicorn re-raises the captured signal once it has shut down, which would kill the process
    before the controller is stopped; corral must stop the controller first. Its shutdown first
    tells the app it is stopping, so long-polls answer at once (retryably) instead of being
    cancelled after the grace period.
    """

    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self.stopping = stopping
        """The app's event (set once the app serves: :meth:`Server.run`)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Wake the long-polls, then shut down as uvicorn does."""
        self.stopping.set()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Do not touch signal handlers."""
        yield


class BackgroundServer:
    """A :class:`Server` on a free loopback port, in a thread with its own event loop.

    ``with BackgroundServer(config) as server: Client(server.url)...`` — the controller is created
    and started in the thread, and stopped gracefully on exit.
    """

    def __init__(
        self,
        config: CorralConfig,
        *,
        factory: ControllerFactory = _create_controller,
        startup_timeout: float = 30.0,
        header_timeout: float = protocol.HEADER_TIMEOUT,
        body_timeout: float = guard.BODY_TIMEOUT,
        parser: protocol.Parser = "auto",
    ) -> None:
        self.server = Server(
            config,
            host=LOOPBACK,
            port=free_port(),
            factory=factory,
            install_signal_handlers=False,
            freeze_gc=False,  # a test process: what it freezes would never be collected
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            parser=parser,
        )
        self._timeout = startup_timeout
        self._thread = threading.Thread(target=self._main, name="corral-server", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL of the running server."""
        return self.server.url

    def _main(self) -> None:
        async def main() -> None:
            watcher = asyncio.create_task(self._signal_ready())
            try:
                await self.server.run()
            finally:
                watcher.cancel()

        try:
            run(main())
        except BaseException as exc:  # reported to the thread that waits for startup
            self._error = exc
        finally:
            self._ready.set()

    async def _signal_ready(self) -> None:
        await self.server.started.wait()
        self._ready.set()

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        if not self._ready.wait(self._timeout):
            self.server.shutdown()
            raise exceptions.CorralError(f"the server did not start within {self._timeout:g} s")
        if self._error is not None:
            raise exceptions.CorralError(f"the server failed to start: {self._error}") from (
                self._error
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self._thread.join(self._timeout)
        if self._thread.is_alive():
            raise exceptions.CorralError("the server did not stop in time")
