"""The server-side commands of ``corral``: ``serve``, ``config check`` and ``db upgrade``.

They run in the operator's process (no ``--url``): ``serve`` runs the controller and the API,
``config check`` validates a file and prints every problem, ``db upgrade`` migrates a SQL store.
``config check`` and ``db upgrade`` print JSON with ``--json``; ``serve`` does not (it runs until
stopped and logs). Third-party failures met here (the database driver's, a taken port) become
one ``error: code: message`` line, never a traceback. This module must not implement
controller, API or store behaviour; it wires and reports.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from corral import exceptions
from corral.cli import output

if TYPE_CHECKING:
    from corral.api.server import ManagedController
    from corral.config import CorralConfig

# The configuration, the store and logging are imported inside the commands that use them: a
# client command ('corral tickets') loads this module too and must not pay for them.

config_app = typer.Typer(help="Work with configuration files.", no_args_is_help=True)
db_app = typer.Typer(help="Work with the store's database.", no_args_is_help=True)

ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="CORRAL_CONFIG",
        show_envvar=True,
        help="The corral.yaml to use (none: the demo setup under ./.corral/).",
    ),
]
Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="CORRAL_STORE",
        show_envvar=True,
        help="Store URL (sqlite:///path, postgresql://...), overriding the config's.",
    ),
]


def _fail(error: exceptions.CorralError) -> typer.Exit:
    """Print ``error`` and return the exit to raise. One line, except a configuration's list of
    problems (one per line below it): a driver's multi-line text is cut to its first line."""
    message = error.message
    if not isinstance(error, exceptions.ConfigError):
        message = next((line for line in message.splitlines() if line.strip()), error.code)
    output.line(f"error: {error.code}: {message}", stderr=True)
    return typer.Exit(output.exit_code(error))


Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def load(config_file: Path | None, db: str | None) -> tuple[CorralConfig, bool]:
    """The configuration to serve, and whether it is the built-in demo.

    The store's folder is prepared as everywhere (:func:`corral.store.url.prepare`): created for
    the default store only, refused when a configured store's folder is missing.
    """
    from corral import config as corral_config
    from corral.store import url as store_url

    demo = config_file is None
    if config_file is None:
        cfg = corral_config.default_config()
    else:
        cfg = corral_config.load_config(config_file)
    if db is not None:
        store_url.parse(db)
        cfg = cfg.model_copy(update={"store": db})
    store_url.prepare(cfg.store)
    return cfg, demo


def _database_error(store: str, exc: Exception) -> exceptions.StoreError:
    """The database driver's failure as one line (its first), naming the store."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return exceptions.StoreError(f"store {store}: {detail[0] if detail else type(exc).__name__}")


MAX_PORT = 65535
"""The highest TCP port (``api.port`` has the same bound in the configuration)."""


def _check_port(host: str, port: int) -> None:
    """Refuse a taken port before anything starts (recovery included); ``AddressInUse``.

    A port out of range (``--port 99999``, which the configuration's own check never sees) is
    ``InvalidInput``: the socket's bind would raise ``OverflowError``, a traceback.
    """
    if not 0 <= port <= MAX_PORT:
        raise exceptions.InvalidInput(f"--port: must be 0 to {MAX_PORT}, not {port}")
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return  # let the server report an address it cannot resolve
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise exceptions.AddressInUse(
                    f"{host}:{port} is in use (another corral serve?); "
                    "choose another with --port or CORRAL_API_PORT"
                ) from exc
            raise exceptions.AddressInUse(
                f"cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc


async def _adopting(config: CorralConfig) -> ManagedController:
    """The controller of ``serve --adopt`` (see docs/backends.md, Restarts)."""
    from corral.controller import Controller

    return await Controller.create(config, adopt=True)


def serve(
    config: ConfigFile = None,
    db: Db = None,
    host: Annotated[
        str | None,
        typer.Option(envvar="CORRAL_API_HOST", show_envvar=True, help="Address to listen on."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(envvar="CORRAL_API_PORT", show_envvar=True, help="Port to listen on."),
    ] = None,
    adopt: Annotated[
        bool,
        typer.Option(
            "--adopt",
            envvar="CORRAL_ADOPT",
            show_envvar=True,
            help="Terminate the machines the backends list whose names this store never issued "
            "(default: report them and leave them alone).",
        ),
    ] = False,
    log_level: Annotated[
        str,
        typer.Option(
            envvar="CORRAL_LOG_LEVEL", show_envvar=True, help="debug, info, warning or error."
        ),
    ] = "info",
    log_format: Annotated[
        str,
        typer.Option(
            envvar="CORRAL_LOG_FORMAT", show_envvar=True, help="text, or json (one object a line)."
        ),
    ] = "text",
) -> None:
    """Run the controller and the HTTP API in this process until SIGINT/SIGTERM.

    The one command without --json: it runs until stopped and reports on stderr.
    """
    import asyncio

    from corral import logs
    from corral.api.server import Server, run

    try:
        logs.configure(log_level, log_format)  # timestamps, levels, access and decision lines
        cfg, demo = load(config, db)
        # SIGHUP and 'corral config reload' read the file again with the same checks
        source = None if config is None else lambda: load(config, db)[0]
        if adopt:
            server = Server(cfg, host=host, port=port, factory=_adopting, reload_source=source)
        else:
            server = Server(cfg, host=host, port=port, reload_source=source)
        _check_port(server.host, server.port)
    except exceptions.CorralError as exc:
        raise _fail(exc) from None
    if server.warning:
        output.errors.print(f"note: {server.warning}", markup=False)

    async def announce() -> None:
        await server.started.wait()
        output.console.print(
            f"corral serving on {server.url} (store {cfg.store}); stop with Ctrl-C",
            markup=False,
        )
        if demo:
            output.console.print(
                "no --config given: demo pool 'demo' on the fake backend. Try:\n"
                f"  corral acquire --pool demo --url {server.url}\n"
                f"  corral pools --url {server.url}",
                markup=False,
            )

    async def main() -> None:
        announcer = asyncio.create_task(announce())
        try:
            await server.run()
        finally:
            announcer.cancel()

    try:
        run(main())  # on uvloop when it is installed (docs/performance.md, "Round 3")
    except exceptions.CorralError as exc:
        raise _fail(exc) from None
    except Exception as exc:
        if _is_database_error(exc):
            raise _fail(_database_error(cfg.store, exc)) from None
        raise
    output.console.print("corral stopped", markup=False)


def _is_database_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError)


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The corral.yaml to validate.")],
    json: Json = False,
) -> None:
    """Validate a configuration file as 'corral serve' would, and print every problem at once.

    Checks types (no silent coercion), unknown and repeated keys, every pool's backend options,
    the scripts it runs (they must exist and be executable) and the SQLite store's folder. Exit
    code 3 when there is any problem. Environment overrides (CORRAL_STORE, ...) apply.
    """
    from corral import config as corral_config

    try:
        cfg = corral_config.load_config(file)
    except exceptions.CorralError as exc:
        if json:
            output.print_json(
                {"file": str(file), "valid": False, "code": exc.code, "problems": _lines(exc)}
            )
            raise typer.Exit(output.exit_code(exc)) from None
        raise _fail(exc) from None
    if json:
        output.print_json(
            {
                "file": str(file),
                "valid": True,
                "store": cfg.store,
                "pools": list(cfg.pools),
                "tokens": len(cfg.api.tokens),
            }
        )
        return
    output.console.print(
        f"{file}: valid — {output.count(len(cfg.pools), 'pool')} "
        f"({', '.join(cfg.pools) or 'none'}), store {cfg.store}, "
        f"{output.count(len(cfg.api.tokens), 'token')}",
        markup=False,
    )


def _lines(error: exceptions.CorralError) -> list[str]:
    """The problems of a ``ConfigError`` (its indented lines), else its message."""
    lines = [line.strip() for line in error.message.splitlines()[1:] if line.startswith("  ")]
    return lines or [error.message]


@db_app.command("upgrade")
def db_upgrade(config: ConfigFile = None, db: Db = None, json: Json = False) -> None:
    """Migrate the store's database to the newest schema ('corral serve' also does on start)."""
    from sqlalchemy.exc import SQLAlchemyError

    from corral.store import migrate

    try:
        cfg, _ = load(config, db)
        try:
            revision = migrate.upgrade(cfg.store)
        except SQLAlchemyError as exc:
            raise _database_error(cfg.store, exc) from exc
    except exceptions.CorralError as exc:
        raise _fail(exc) from None
    if json:
        output.print_json({"store": cfg.store, "revision": revision})
    elif revision is None:
        output.console.print(f"{cfg.store}: nothing to migrate", markup=False)
    else:
        output.console.print(f"{cfg.store}: at revision {revision}", markup=False)
