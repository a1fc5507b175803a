"""Configuration reload without a restart (SIGHUP, ``corral config reload``): issue 12.

:func:`plan` is pure: it compares the running configuration with a new, already validated one
and says which pools are added, changed and removed, and what only a restart applies (the store,
the API, a pool's backend or its backend guard's timeouts). :class:`Reloader` applies a plan: an
added pool gets its backend and starts preallocating; a changed pool's limits and template apply
to the decisions and VMs from now on; a removed pool is drained
(:meth:`corral.controller.Controller.drain_pool`) and stays known, serving nobody new, until its
last VM is gone, then disappears. A pool whose backend changed refuses the whole reload (its VMs
belong to the old backend): nothing is applied. This module must not validate files (that is
:mod:`corral.config`'s job) nor call backends other than to build and close them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from corral import exceptions
from corral.backends import load_backend
from corral.backends.guard import GuardedBackend
from corral.config import CorralConfig
from corral.controller import wiring
from corral.pools.config import PoolConfig
from corral.pools.lifecycle import ALIVE_VM_STATES

if TYPE_CHECKING:
    from corral.controller.controller import Controller

log = logging.getLogger(__name__)

RELOAD_ACTOR = "reload"
"""The actor the audit trail records for a drain that a reload started (after the caller)."""

_GUARD_KEYS = (
    "call_timeout",
    "poll_interval",
    "backend_concurrency",
    "spawn_timeout",
    "terminate_timeout",
)
"""Pool keys the backend guard was built with: a change applies after a restart."""


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a new configuration changes (pool names, sorted)."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    """Why the reload cannot be applied at all (one line each)."""
    restart_needed: tuple[str, ...] = ()
    """Keys whose new value applies only after a restart."""


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What a reload did."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()


def _guard_changes(name: str, old: PoolConfig, new: PoolConfig) -> list[str]:
    return [f"pools.{name}.{key}" for key in _GUARD_KEYS if getattr(old, key) != getattr(new, key)]


def plan(
    running: CorralConfig, new: CorralConfig, *, removing: frozenset[str] = frozenset()
) -> ReloadPlan:
    """Compare ``running`` (whose pools in ``removing`` are already being drained away) with
    ``new``."""
    old_pools = {n: p for n, p in running.pools.items() if n not in removing}
    added = sorted(set(new.pools) - set(old_pools))
    removed = sorted(set(old_pools) - set(new.pools))
    changed: list[str] = []
    refused: list[str] = []
    restart: list[str] = []
    for name in sorted(set(old_pools) & set(new.pools)):
        before, after = old_pools[name], new.pools[name]
        if before == after:
            continue
        if before.backend != after.backend:
            refused.append(
                f"pools.{name}.backend: a pool's backend cannot change while it runs; remove "
                f"the pool (reload: it drains), then add it back, or restart"
            )
            continue
        changed.append(name)
        restart.extend(_guard_changes(name, before, after))
    for name in added:
        if name in removing and running.pools[name].backend != new.pools[name].backend:
            refused.append(
                f"pools.{name}.backend: the pool is still draining with its old backend; "
                "wait until it is gone, then add it with the new one"
            )
    if running.store != new.store:
        restart.append("store")
    if running.api != new.api:
        restart.append("api")
    return ReloadPlan(
        added=tuple(added),
        changed=tuple(changed),
        removed=tuple(removed),
        refused=tuple(refused),
        restart_needed=tuple(restart),
    )


class Reloader:
    """Applies new configurations to one controller, one reload at a time."""

    def __init__(self, controller: Controller) -> None:
        self._ctl = controller
        self._lock = asyncio.Lock()
        self.removing: set[str] = set()
        """Pools removed from the configuration, draining until their last VM is gone."""

    async def apply(self, new: CorralConfig, *, actor: str) -> ReloadReport:
        """Apply ``new`` (validated by :func:`corral.config.load_config`); ``ConfigError`` and
        nothing changed when it cannot be applied."""
        async with self._lock:
            ctl = self._ctl
            steps = plan(ctl.config, new, removing=frozenset(self.removing))
            if steps.refused:
                raise exceptions.ConfigError(
                    "the new configuration cannot be applied without a restart:\n"
                    + "\n".join(f"  {line}" for line in steps.refused)
                )
            backends = ctl.backends()
            built: dict[str, GuardedBackend] = {}
            try:
                for name in steps.added:
                    if name in self.removing:
                        continue  # back before it was gone: keep its backend and VMs
                    built[name] = self._build(new, new.pools[name])
            except BaseException:
                for backend in built.values():
                    await backend.aclose()
                raise
            pools = dict(new.pools)
            for name in self.removing | set(steps.removed):
                if name not in new.pools:
                    pools[name] = ctl.config.pools[name]  # kept while it drains
            ctl.replace_pools(
                new.model_copy(
                    update={"pools": pools, "store": ctl.config.store, "api": ctl.config.api}
                ),
                {**backends, **built},
            )
            for name in steps.added:
                if name in self.removing:
                    self.removing.discard(name)
                    await ctl.resume_pool(name, actor=actor)
                await ctl.operators.audit(actor, "reload: added", "pool", name)
                ctl.kick_spawn(name)
            for name in steps.changed:
                await ctl.operators.audit(actor, "reload: changed", "pool", name)
                ctl.kick_spawn(name)
            for name in steps.removed:
                self.removing.add(name)
                await ctl.operators.audit(actor, "reload: removed", "pool", name)
                await ctl.drain_pool(name, actor=actor)
                ctl.background(self._forget_when_empty(name))
            ctl.kick_assign()
            ctl.wake_maintenance()
            log.info(
                "configuration reloaded by %s: added %s, changed %s, removed %s",
                actor,
                list(steps.added) or "none",
                list(steps.changed) or "none",
                list(steps.removed) or "none",
            )
            return ReloadReport(
                added=steps.added,
                changed=steps.changed,
                removed=steps.removed,
                restart_needed=steps.restart_needed,
            )

    def _build(self, config: CorralConfig, pool: PoolConfig) -> GuardedBackend:
        base = config.base_dir if config.base_dir is not None else Path.cwd()
        raw = load_backend(pool.backend.type, pool.backend.options, pool=pool.name, base_dir=base)
        raw.attach_store(self._ctl.store.url)
        return wiring.guard(pool, raw)

    async def _forget_when_empty(self, name: str) -> None:
        """Wait until the removed pool ``name`` has no VM alive, then drop it (unless it was
        added back meanwhile)."""
        ctl = self._ctl
        while not ctl.stopped:
            if name not in self.removing:
                return
            counts = await ctl.store.pools.count_vms(name)
            if not any(counts.get(state.value, 0) for state in ALIVE_VM_STATES):
                break
            await asyncio.sleep(ctl.tick)
        else:
            return
        async with self._lock:
            if name not in self.removing:
                return
            self.removing.discard(name)
            backends = ctl.backends()
            gone = backends.pop(name)
            pools = {n: p for n, p in ctl.config.pools.items() if n != name}
            ctl.replace_pools(ctl.config.model_copy(update={"pools": pools}), backends)
            await ctl.store.pools.set_pool_mode(name, None)
            await ctl.operators.load()
            await ctl.operators.audit(RELOAD_ACTOR, "removed", "pool", name, "drained")
            log.info("pool %s: drained after its removal from the configuration: gone", name)
        await gone.aclose()
