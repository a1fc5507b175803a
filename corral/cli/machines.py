"""Commands for machines corral did not make and the pools' info (issue 15): ``corral vm add``,
``corral vm forget``, ``corral vm maintenance``, ``corral vm return`` and
``corral pool info P [KEY [VALUE]]``.

Each calls one endpoint through the client and prints one line per result (JSON with
``--json``); bad input is one ``error:`` line before anything is sent. This module must not
decide anything the server decides, nor import the server's packages at module level.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable
from typing import Annotated

import typer

from corral import exceptions
from corral.cli import common, output
from corral.cli.common import Json, Token, Url, handle_errors
from corral.client import core, models
from corral.types import JSON


def _vm_line(verb: str) -> Callable[[models.VM], str]:
    return lambda vm: f"VM {vm.name} ({vm.pool}) at {vm.address or '-'}: {verb} ({vm.state})"


@handle_errors
def vm_add(
    name: Annotated[
        str, typer.Argument(help="The machine's name (not in a pool's <pool>-<n> form).")
    ],
    address: Annotated[str, typer.Argument(help="Its IP address or host name.")],
    pool: Annotated[str, typer.Option("--pool", help="The pool it joins.", show_default=False)],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Add a machine made elsewhere to a pool whose backend allows it: it is livechecked first
    and serves only if the check passes. corral never destroys it: when it retires it is
    forgotten (admin)."""
    common.show(
        url,
        token,
        json,
        lambda c: c.register_vm(pool, name, address),
        common.say(_vm_line("registered, external")),
    )


def _forgotten(vm: models.VM) -> str:
    return f"VM {vm.name} ({vm.pool}): forgotten, the machine is left as it is ({vm.state})"


@handle_errors
def vm_forget(
    name: Annotated[str, typer.Argument(help="The VM's name.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Also a VM in use: its ticket fails (the machine stays)."),
    ] = False,
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Stop tracking a VM without touching it: corral never terminates it, and the leak sweep
    leaves it alone. A VM in use is refused unless --force (admin)."""
    common.show(url, token, json, lambda c: c.forget_vm(name, force=force), common.say(_forgotten))


def _returned(machine: models.Machine) -> str:
    return f"machine {machine.name} ({machine.pool}) at {machine.address}: {machine.state}"


@handle_errors
def vm_return(
    name: Annotated[str, typer.Argument(help="The machine's name, or the VM that reserved it.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Put a static pool's machine back in service after maintenance (a failed cleanup or
    livecheck, or an operator's): waiting tickets may get it at once (admin)."""
    common.show(url, token, json, lambda c: c.return_machine(name), common.say(_returned))


@handle_errors
def vm_maintenance(
    name: Annotated[str, typer.Argument(help="The machine's name, or the VM that reserved it.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why it leaves service.", show_default=False)
    ],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Take a static pool's machine out of service with a reason: it is reserved no more until
    'corral vm return'; a reserved one leaves service once its VM is released (admin)."""
    if not reason.strip():
        raise exceptions.InvalidInput("--reason: must not be empty")
    common.show(
        url,
        token,
        json,
        lambda c: c.machine_maintenance(name, reason),
        common.say(lambda m: f"{_returned(m)} ({m.reason})"),
    )


def parse_value(text: str) -> JSON:
    """A ``pool info`` VALUE: JSON (``12``, ``true``, ``{"a": 1}``, ``"text"``), or else the
    text itself as a string."""
    try:
        value: JSON = jsonlib.loads(text)
    except ValueError:
        return text
    return value


def _info_lines(pool: str, info: dict[str, JSON]) -> None:
    if not info:
        output.console.print(f"pool {pool} has no info", markup=False)
    for key, value in sorted(info.items()):
        output.console.print(f"{key} = {jsonlib.dumps(value, sort_keys=True)}", markup=False)


@handle_errors
def pool_info(
    pool: Annotated[str, typer.Argument(help="The pool's name.")],
    key: Annotated[str | None, typer.Argument(help="One key (all keys without).")] = None,
    value: Annotated[
        str | None,
        typer.Argument(help="Set KEY to this JSON value (text that is not JSON: a string)."),
    ] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove KEY.")] = False,
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """List a pool's key/value info, show one key, or set (admin) or --delete (admin) one."""
    if delete and (key is None or value is not None):
        raise exceptions.InvalidInput("--delete takes a KEY and no VALUE")
    if key is None:
        with common.client(url, token) as c:
            info = c.pool_info(pool)
        if json:
            output.print_json(dict(info))
        else:
            _info_lines(pool, info)
        return
    if delete or value is not None:
        new = None if delete else parse_value(value or "")
        with common.client(url, token) as c:
            c.set_pool_info(pool, key, new)
        if json:
            output.print_json(models.PoolInfoEntry(pool=pool, key=key, value=new))
        else:
            shown = "removed" if new is None else f"= {jsonlib.dumps(new, sort_keys=True)}"
            output.console.print(f"pool {pool}: {key} {shown}", markup=False)
        return
    with common.client(url, token) as c:
        found = c.get_pool_info(pool, key)
    if json:
        output.print_json(models.PoolInfoEntry(pool=pool, key=key, value=found))
    else:
        output.console.print(jsonlib.dumps(found, sort_keys=True), markup=False)


def register(*, vm: typer.Typer, pool: typer.Typer) -> None:
    """Add these commands to the ``corral vm`` and ``corral pool`` groups."""
    vm.command("add")(vm_add)
    vm.command("forget")(vm_forget)
    vm.command("return")(vm_return)
    vm.command("maintenance")(vm_maintenance)
    pool.command("info")(pool_info)
