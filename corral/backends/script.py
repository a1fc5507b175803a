"""The ``script`` backend: the operator's own commands create and destroy VMs (resalloc's model).

Commands are argv lists run WITHOUT a shell by :mod:`corral.backends.process` (the event loop
does their I/O and watches their exit; nothing blocks), each in its own process group with a
timeout after which the whole group is killed. The VM's identity is in environment variables,
resalloc's included, so resalloc scripts work unchanged. ``new`` prints the VM's address on its
first line; anything else there, or a non-zero exit, is a failure whose message carries the
script's stderr. Once the controller owns its store, every command also carries
``CORRAL_OWNER`` (:meth:`ScriptBackend.mark`): after a ``kill -9`` the next owner kills what is
left of them before undoing their work (:mod:`corral.backends.leftovers`). A semaphore bounds
the processes running at once, so hundreds of spawns never exhaust file descriptors (resalloc
issues #173/#178).

This module must not interpret the operator's commands beyond that protocol, and must never pass
them through a shell.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import pydantic

from corral import exceptions
from corral.backends import connection, leftovers, process
from corral.backends.base import (
    Backend,
    BackendOptions,
    Capability,
    Handle,
    PollResult,
    PollStatus,
    VMSpec,
    is_valid_address,
)
from corral.backends.guard import reserved_slots

Argv = Annotated[list[str], pydantic.Field(min_length=1)]
Seconds = Annotated[float, pydantic.Field(gt=0)]

CAPTURE_LIMIT = process.CAPTURE_LIMIT
"""Bytes of each output stream kept (stdout's head, stderr's tail); the rest is read and dropped."""
STDERR_IN_ERRORS = 2000
"""Characters of stderr (its end) quoted in an error message."""


EXAMPLES_DIR = Path(__file__).parent / "examples"
"""Shipped example commands that keep each "VM" as a file in a folder (for docs, tests, demos)."""


def example_options(vm_dir: Path | str, *, boot_seconds: float | None = None) -> dict[str, object]:
    """Raw ``script`` options using the shipped example commands, with the "VMs" in ``vm_dir``.

    ``boot_seconds`` makes ``new`` wait that long after creating the VM's file, like a real boot.
    """
    folder = str(vm_dir)
    new = [str(EXAMPLES_DIR / "new.sh"), folder]
    if boot_seconds is not None:
        new.append(f"{boot_seconds:g}")
    options: dict[str, object] = {"new": new}
    for key in ("delete", "list", "livecheck", "release"):
        options[key] = [str(EXAMPLES_DIR / f"{key}.sh"), folder]
    return options


class ScriptTimeouts(pydantic.BaseModel):
    """Seconds each command may run before its process group is killed."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    new: Seconds = 600.0
    delete: Seconds = 300.0
    livecheck: Seconds = 60.0
    release: Seconds = 300.0
    list: Seconds = 60.0


class ScriptOptions(BackendOptions):
    """Options of the ``script`` backend: the commands (argv lists) and how to run them."""

    new: Argv
    """Creates a VM and prints its address (IP or host name) on the first line of stdout."""
    delete: Argv
    """Destroys a VM; must succeed for a VM that does not exist (idempotent)."""
    livecheck: Argv | None = None
    """Exits 0 when the VM is alive (enables the ``livecheck`` capability)."""
    release: Argv | None = None
    """Cleans a used VM for reuse (enables ``release``)."""
    list: Argv | None = None
    """Prints the name of every VM of the pool, one per line (enables ``list``)."""
    workdir: str | None = None
    """Where commands run and relative command paths resolve (relative to the config's folder)."""
    env: dict[str, str] = pydantic.Field(default_factory=dict)
    """Extra environment variables for every command."""
    timeouts: ScriptTimeouts = ScriptTimeouts()
    """Per-command timeouts in seconds."""
    max_processes: int = pydantic.Field(64, ge=1, le=1024)
    """Commands running at once for this pool; the others wait for a slot. Some slots
    (:func:`corral.backends.guard.reserved_slots`) are kept from ``new``, so that slow spawns
    never hold up ``delete`` and ``livecheck``."""

    @pydantic.field_validator("new", "delete", "livecheck", "release", "list")
    @classmethod
    def _argv(cls, value: Argv | None) -> Argv | None:
        if value is not None and (not value[0] or any("\0" in arg for arg in value)):
            raise ValueError("the command must be a non-empty program name without NUL bytes")
        return value


@dataclass(frozen=True, slots=True)
class CommandOutput:
    """What one command run for a VM printed (handed to :attr:`ScriptBackend.on_output`);
    ``exit_status`` is ``None`` when it was killed on its timeout or could not start."""

    command: str
    vm: str
    argv: tuple[str, ...]
    exit_status: int | None
    duration: float
    stdout: str
    stderr: str


OutputHook = Callable[[CommandOutput], None]
"""A callback that must not block (it runs on the event loop after each command)."""


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """What one command run produced."""

    returncode: int
    stdout: str
    stderr: str


def stderr_excerpt(stderr: str) -> str:
    """The end of a script's stderr, trimmed for an error message."""
    text = stderr.strip()
    if not text:
        return "(no stderr)"
    if len(text) > STDERR_IN_ERRORS:
        return f"[...{len(text) - STDERR_IN_ERRORS} chars cut] " + text[-STDERR_IN_ERRORS:]
    return text


def encode_ref(address: str, id_in_pool: int) -> str:
    """A script VM's handle ``ref``: the address ``new`` printed and the VM's id in its pool."""
    return json.dumps({"address": address, "id_in_pool": id_in_pool}, sort_keys=True)


def decode_ref(ref: str) -> tuple[str | None, int | None]:
    """Read :func:`encode_ref`'s output; anything else yields ``(None, None)`` (never raises)."""
    try:
        data = json.loads(ref) if ref else {}
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    address, id_in_pool = data.get("address"), data.get("id_in_pool")
    return (
        address if isinstance(address, str) else None,
        id_in_pool if isinstance(id_in_pool, int) and not isinstance(id_in_pool, bool) else None,
    )


def _valid_name(line: str) -> bool:
    return 0 < len(line) <= 255 and line.isprintable() and not any(c.isspace() for c in line)


class ScriptBackend(Backend):
    """VMs made and destroyed by the operator's commands (type ``script``)."""

    type_name: ClassVar[str] = "script"
    options_model: ClassVar[type[BackendOptions]] = ScriptOptions

    def __init__(self, options: BackendOptions, *, pool: str, base_dir: Path | None = None) -> None:
        """Resolve the working folder and the commands; a missing program is a ``ConfigError``."""
        if not isinstance(options, ScriptOptions):
            raise exceptions.ConfigError("ScriptBackend needs ScriptOptions")
        super().__init__(options, pool=pool, base_dir=base_dir)
        self._opts = options
        workdir = Path(options.workdir) if options.workdir is not None else Path()
        self.workdir = (self.base_dir / workdir).resolve()
        if not self.workdir.is_dir():
            raise exceptions.ConfigError(f"script backend: workdir {self.workdir} is not a folder")
        self._commands: dict[str, list[str]] = {}
        for key in ("new", "delete", "livecheck", "release", "list"):
            argv = getattr(options, key)
            if argv is not None:
                self._commands[key] = self._resolve(key, argv)
        self.capabilities = self.capabilities | {
            cap
            for cap in (Capability.LIVECHECK, Capability.RELEASE, Capability.LIST)
            if cap.value in self._commands
        }
        if "livecheck" in self._commands:  # a machine made elsewhere is checked before it serves
            self.capabilities = self.capabilities | {Capability.REGISTER}
        # the daemon's environment as the backend is loaded, plus ``env``: copying os.environ
        # (decoding every variable) for each command would cost more than the rest of a start
        self._base_env = {**os.environ, **options.env}
        # only the store's owner names the store its commands run for (see mark()): a marker
        # inherited from the daemon's own environment would make them someone else's leftovers
        self._base_env.pop(leftovers.OWNER_VARIABLE, None)
        self._slots = asyncio.Semaphore(options.max_processes)
        total = options.max_processes
        self._new_slots = asyncio.Semaphore(max(1, total - reserved_slots(total)))
        self.running = 0
        """Commands running right now (never above ``max_processes``)."""
        self.on_output: OutputHook | None = None
        """Called after every command run for a VM with what it printed (command logs)."""

    def mark(self, owner: str) -> None:
        """Start every later command with ``CORRAL_OWNER=<owner>`` (the store it runs for), so
        that the store's next owner finds and kills what this process leaves running when it is
        killed (:mod:`corral.backends.leftovers`)."""
        self._base_env[leftovers.OWNER_VARIABLE] = owner

    def _resolve(self, key: str, argv: list[str]) -> list[str]:
        program = argv[0]
        if os.sep in program:
            path = Path(program)
            if not path.is_absolute():
                path = self.workdir / path
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise exceptions.ConfigError(
                    f"script backend: {key}: {path} is not an executable file"
                )
            return [str(path), *argv[1:]]
        if shutil.which(program) is None:
            raise exceptions.ConfigError(f"script backend: {key}: program {program!r} not on PATH")
        return list(argv)

    # --- running commands ------------------------------------------------------------------

    def _environment(
        self,
        name: str | None,
        id_in_pool: int | None,
        address: str | None,
        extra: Mapping[str, str],
    ) -> dict[str, str]:
        env = dict(self._base_env)
        env["CORRAL_POOL"] = env["RESALLOC_POOL_ID"] = self.pool
        if name is not None:
            env["CORRAL_VM_NAME"] = env["RESALLOC_NAME"] = name
        if id_in_pool is not None:
            env["CORRAL_ID_IN_POOL"] = env["RESALLOC_ID_IN_POOL"] = str(id_in_pool)
        if address is not None:
            env["CORRAL_VM_ADDRESS"] = address
        env.update(extra)
        return env

    async def run(self, key: str, env: Mapping[str, str], subject: str) -> ScriptResult:
        """Run command ``key`` with ``env``; kill its process group on timeout or cancellation."""
        argv = self._commands[key]
        limit: float = getattr(self._opts.timeouts, key)
        if key == "new":
            async with self._new_slots:
                return await self._bounded(key, argv, env, limit, subject)
        return await self._bounded(key, argv, env, limit, subject)

    async def _bounded(
        self, key: str, argv: list[str], env: Mapping[str, str], limit: float, subject: str
    ) -> ScriptResult:
        async with self._slots:
            self.running += 1
            try:
                return await self._run_process(key, argv, env, limit, subject)
            finally:
                self.running -= 1

    async def _run_process(
        self, key: str, argv: list[str], env: Mapping[str, str], limit: float, subject: str
    ) -> ScriptResult:
        out, err = process.Capture(keep_tail=False), process.Capture(keep_tail=True)
        started = time.monotonic()
        returncode: int | None = None
        try:
            code = await process.run_command(
                argv, cwd=self.workdir, env=env, timeout=limit, out=out, err=err
            )
            returncode = code
        except TimeoutError as exc:
            raise exceptions.BackendTimeout(
                f"script {key} for {subject} killed after {limit:g} s; "
                f"stderr: {stderr_excerpt(err.text())}"
            ) from exc
        except OSError as exc:
            raise exceptions.BackendError(
                f"script {key} for {subject}: cannot start {argv[0]}: {exc}"
            ) from exc
        finally:
            vm = env.get("CORRAL_VM_NAME")
            if self.on_output is not None and vm:
                self.on_output(
                    CommandOutput(
                        key,
                        vm,
                        tuple(argv),
                        returncode,
                        time.monotonic() - started,
                        out.text(),
                        err.text(),
                    )
                )
        return ScriptResult(code, out.text(), err.text())

    def _failure(self, key: str, subject: str, result: ScriptResult) -> exceptions.BackendError:
        code = result.returncode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        return exceptions.BackendError(
            f"script {key} for {subject} {how}; stderr: {stderr_excerpt(result.stderr)}"
        )

    # --- the interface ---------------------------------------------------------------------

    async def spawn(self, spec: VMSpec) -> Handle:
        """Run ``new``; its first stdout line must be the VM's address (optionally followed by
        ``connection: {...}`` lines), or its stdout one JSON object with an ``address`` and the
        connection details (:mod:`corral.backends.connection`). Returns when it is up."""
        template = json.dumps(dict(spec.template), sort_keys=True, default=str)
        env = self._environment(spec.name, spec.id_in_pool, None, {"CORRAL_TEMPLATE": template})
        subject = f"VM {spec.name}"
        result = await self.run("new", env, subject)
        if result.returncode != 0:
            raise self._failure("new", subject, result)
        try:
            address, details = connection.parse_new_output(result.stdout)
        except exceptions.InvalidInput as exc:
            raise exceptions.BackendError(
                f"script new for {subject}: {exc.message}; stderr: {stderr_excerpt(result.stderr)}"
            ) from exc
        if not is_valid_address(address):
            raise exceptions.BackendError(
                f"script new for {subject} printed {address[:100]!r} on its first line, "
                f"not an IP address or host name; stderr: {stderr_excerpt(result.stderr)}"
            )
        ref = encode_ref(address, spec.id_in_pool)
        return Handle(spec.name, ref=ref, connection=details)

    async def poll(self, handle: Handle) -> PollResult:
        """``new`` only returns once the VM is up, so a handle with an address is ``UP``."""
        address, _ = decode_ref(handle.ref)
        if address is None:
            return PollResult(PollStatus.FAILED, reason=f"no address known for {handle.name}")
        return PollResult(PollStatus.UP, address=address)

    def adopt(self, name: str, address: str) -> Handle:
        """The handle of a machine made elsewhere: its commands see its name and address (no
        ``RESALLOC_ID_IN_POOL``: corral did not number it). Needs a ``livecheck`` command."""
        self._require("livecheck")
        return Handle(name, ref=json.dumps({"address": address}, sort_keys=True))

    def _handle_env(self, handle: Handle) -> dict[str, str]:
        address, id_in_pool = decode_ref(handle.ref)
        return self._environment(handle.name, id_in_pool, address, {})

    async def terminate(self, handle: Handle) -> None:
        """Run ``delete``; a non-zero exit is a failure (the VM may still exist)."""
        subject = f"VM {handle.name}"
        result = await self.run("delete", self._handle_env(handle), subject)
        if result.returncode != 0:
            raise self._failure("delete", subject, result)

    async def livecheck(self, handle: Handle) -> bool:
        """Run ``livecheck``: alive when it exits 0. A timeout raises ``BackendTimeout``."""
        self._require("livecheck")
        result = await self.run("livecheck", self._handle_env(handle), f"VM {handle.name}")
        return result.returncode == 0

    async def release(self, handle: Handle) -> None:
        """Run ``release``; a non-zero exit is a failure."""
        self._require("release")
        subject = f"VM {handle.name}"
        result = await self.run("release", self._handle_env(handle), subject)
        if result.returncode != 0:
            raise self._failure("release", subject, result)

    async def list(self) -> list[Handle]:
        """Run ``list``: one VM name per line (blank lines ignored, a malformed one is an error)."""
        self._require("list")
        subject = f"pool {self.pool}"
        result = await self.run("list", self._environment(None, None, None, {}), subject)
        if result.returncode != 0:
            raise self._failure("list", subject, result)
        names: dict[str, None] = {}
        for number, raw in enumerate(result.stdout.splitlines(), start=1):
            line = raw.strip()
            if not line:
                continue
            if not _valid_name(line):
                raise exceptions.BackendError(
                    f"script list for {subject}: line {number} {line[:100]!r} is not a VM name"
                )
            names[line] = None
        return [Handle(name) for name in names]

    def _require(self, key: str) -> None:
        if key not in self._commands:
            raise exceptions.CapabilityMissing(
                f"script backend of pool {self.pool!r} has no {key!r} command"
            )
