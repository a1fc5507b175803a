"""The server-side commands of ``corral``: ``serve``, ``config check`` and ``db upgrade``.

They run in the operator's process (no ``--url``): ``serve`` runs the controller and the API,
``config check`` validates a file and prints every problem, ``db upgrade`` migrates a SQL store.
This module must not implement controller, API or store behaviour; it wires and reports.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from corral import config as corral_config
from corral import exceptions
from corral.cli import output
from corral.config import CorralConfig

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
    output.errors.print(f"error: {error.code}: {error.message}", markup=False)
    return typer.Exit(output.exit_code(error))


def load(config_file: Path | None, db: str | None) -> tuple[CorralConfig, bool]:
    """The configuration to serve, and whether it is the built-in demo."""
    demo = config_file is None
    if config_file is None:
        cfg = corral_config.default_config()
    else:
        cfg = corral_config.load_config(config_file)
    if db is not None:
        from corral.store import parse

        parse(db)
        cfg = cfg.model_copy(update={"store": db})
    if cfg.store.startswith("sqlite:///") and not cfg.store.startswith("sqlite:////"):
        # A relative SQLite path (the demo's .corral/corral.db): create its folder.
        Path(cfg.store.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return cfg, demo


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
) -> None:
    """Run the controller and the HTTP API in this process until SIGINT/SIGTERM."""
    from corral.api.server import Server

    try:
        cfg, demo = load(config, db)
        server = Server(cfg, host=host, port=port)
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
        asyncio.run(main())
    except exceptions.CorralError as exc:
        raise _fail(exc) from None
    output.console.print("corral stopped", markup=False)


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The corral.yaml to validate.")],
) -> None:
    """Validate a configuration file and print every problem (exit 3 when it has any)."""
    try:
        cfg = corral_config.load_config(file)
    except exceptions.CorralError as exc:
        raise _fail(exc) from None
    tokens = len(cfg.api.tokens)
    output.console.print(
        f"{file}: valid — {len(cfg.pools)} pools ({', '.join(cfg.pools) or 'none'}), "
        f"store {cfg.store}, {tokens} tokens",
        markup=False,
    )


@db_app.command("upgrade")
def db_upgrade(config: ConfigFile = None, db: Db = None) -> None:
    """Migrate the store's database to the newest schema."""
    from corral.store import migrate

    try:
        cfg, _ = load(config, db)
        revision = migrate.upgrade(cfg.store)
    except exceptions.CorralError as exc:
        raise _fail(exc) from None
    if revision is None:
        output.console.print(f"{cfg.store}: nothing to migrate", markup=False)
    else:
        output.console.print(f"{cfg.store}: at revision {revision}", markup=False)
