"""Deliberate breakages, and the test suite that must catch each one (see ``docs/testing.md``).

Usage::

    python tests/mutants.py                 # every mutant, on a copy of the committed tree (HEAD)
    python tests/mutants.py --list          # what each mutant breaks, and its suite
    python tests/mutants.py spawn-no-write-ahead assign-unconditional
    python tests/mutants.py --worktree      # copy the working tree instead (uncommitted edits)
    python tests/mutants.py --check         # only check that every anchor is still found

For each mutant: the tree is copied to a temporary directory (never touching this checkout), the
mutant's patches are applied there, and the mutant's suite is run in the copy. A mutant is
*caught* when its suite fails. Before any mutant, each suite runs once on the unmutated copy: a
suite that fails without a mutant catches nothing (``baseline failed``). Prints a table and exits
non-zero if a mutant survives, a baseline fails, or an anchor is missing.

Each patch is located by an anchor: an exact string that must occur exactly once in its file.
When the code changes, the script stops before running anything ("anchor not found — update the
mutant"); it never guesses. Not part of CI: it takes minutes (the chaos test runs twice).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHAOS = ("tests/controller/test_chaos.py", "-m", "slow", "-k", "sigkill")
"""The controller's kill -9 chaos test (its kill count comes from ``CORRAL_CHAOS_KILLS``)."""


@dataclass(frozen=True)
class Patch:
    """Replace ``anchor`` (exactly one occurrence) in ``path`` with ``replacement``."""

    path: str
    anchor: str
    replacement: str


@dataclass(frozen=True)
class Mutant:
    """A named deliberate breakage and the pytest arguments of the suite meant to catch it.

    ``variants`` are alternative patch sets for the code before and after a refactoring: the first
    whose every anchor is found exactly once is applied; none found is an error."""

    name: str
    what: str
    variants: tuple[tuple[Patch, ...], ...]
    suite: tuple[str, ...]


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "task-write-unfenced",
        "a task's progress is written whatever host the row names now (a woken host overwrites "
        "the task a survivor took over; issue 11)",
        (
            (
                Patch(
                    "corral/store/sql/tasks.py",
                    "                written = UPDATE_PROGRESS_FENCED.write("
                    'conn, {**params, "b_host": host})',
                    "                written = UPDATE_PROGRESS.write(conn, params)  # MUTANT",
                ),
            ),
        ),
        ("tests/cluster/test_fencing_pg.py",),
    ),
    Mutant(
        "rejoin-keeps-old-key",
        "a host that rejoined after losing its lease records new tasks under its dead "
        "incarnation (a survivor would claim tasks a live host runs; issue 11)",
        ((Patch("corral/controller/takeover.py", "        self._follow_incarnation()\n", ""),),),
        ("tests/cluster/test_fencing_pg.py",),
    ),
    Mutant(
        "no-orphan-watch",
        "no leader terminates a VM row a dead host left without a task (issue 11)",
        (
            (
                Patch(
                    "corral/controller/controller.py",
                    "            cluster.member.observe("
                    "takeover.OrphanWatch(cluster.member, self).update)\n",
                    "",
                ),
            ),
        ),
        ("tests/cluster/test_orphans_pg.py", "-m", "slow"),
    ),
    Mutant(
        "heartbeat-revives-lease",
        "a heartbeat renews a lapsed host lease (a paused host wakes as if it never lost "
        "anything; issue 11)",
        (
            (
                Patch(
                    "corral/cluster/hosts.py",
                    "WHERE session = %s AND lease_expires_at >= corral_lock_now()\n",
                    "WHERE session = %s\n",
                ),
            ),
        ),
        ("tests/cluster/test_pause_serve.py", "-m", "slow"),
    ),
    Mutant(
        "takeover-before-deadline",
        "a survivor undoes a dead host's spawn at once, not after the operation's deadline "
        "(the dead host's script still creates the machine; issue 11)",
        (
            (
                Patch(
                    "corral/controller/takeover.py",
                    "        wait = deadline - await self._member.repo.now()\n",
                    "        wait = 0.0  # MUTANT\n",
                ),
            ),
        ),
        ("tests/cluster/test_chaos_serve.py", "-m", "slow"),
    ),
    Mutant(
        "cluster-repo-no-reconnect",
        "the cluster repository keeps a dead connection (pg_terminate_backend): no heartbeat, "
        "no leadership after the database dropped it (issue 11)",
        (
            (
                Patch(
                    "corral/cluster/pgrepo.py",
                    "                    if self._conn is None or self._conn.closed:\n",
                    "                    if self._conn is None:  # MUTANT\n",
                ),
                Patch(
                    "corral/cluster/pgrepo.py",
                    "                    if self._conn is not None:\n"
                    "                        await self._conn.close()\n"
                    "                    self._conn = None\n",
                    "",
                ),
            ),
        ),
        ("tests/cluster/test_pg_terminate_serve.py", "-m", "slow"),
    ),
    Mutant(
        "vm-row-unfenced",
        "the store writes a new VM row whatever the lease fence says (a stale leader spawns "
        "for a pool another host leads; issue 11)",
        (
            (
                Patch(
                    "corral/store/sql/pools.py",
                    '    if fence is not None and conn.dialect.name == "postgresql":\n',
                    "    if False:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/cluster/test_fencing_pg.py",),
    ),
    Mutant(
        "spawn-without-fence",
        "preallocation writes its VM row without its lease's fence (only the check before the "
        "write guards it; issue 11)",
        (
            (
                Patch(
                    "corral/controller/preallocation.py",
                    "pool, state=VM_INITIAL.value, now=ctl.clock(), fence=fence\n",
                    "pool, state=VM_INITIAL.value, now=ctl.clock()  # MUTANT\n",
                ),
            ),
        ),
        ("tests/cluster/test_fencing_pg.py",),
    ),
    Mutant(
        "spawn-no-write-ahead",
        "the spawn job no longer pushes its undo before asking the backend for a VM",
        (
            (
                Patch(
                    "corral/controller/steps.py",
                    '    await ctx.push_recovery("vm.spawn.undo", name=name)\n',
                    "",
                ),
            ),
        ),
        CHAOS,
    ),
    Mutant(
        "assign-unconditional",
        "the SQL assignment takes the ticket and the VM whatever their states",
        (
            (  # the conditions as state literals
                Patch(
                    "corral/store/sql/pools.py",
                    '.where(tickets.c.id == bindparam("b_id"), tickets.c.state == "waiting")',
                    '.where(tickets.c.id == bindparam("b_id"))',
                ),
                Patch(
                    "corral/store/sql/pools.py",
                    '.where(vms.c.name == bindparam("b_name"), vms.c.state == "ready", '
                    "vms.c.ticket.is_(None))",
                    '.where(vms.c.name == bindparam("b_name"))',
                ),
            ),
            (  # the conditions from the lifecycle table
                Patch(
                    "corral/store/sql/pools.py",
                    '.where(tickets.c.id == bindparam("b_id"), '
                    "_among(tickets.c.state, _TICKET_TAKE.sources))",
                    '.where(tickets.c.id == bindparam("b_id"))',
                ),
                Patch(
                    "corral/store/sql/pools.py",
                    '        vms.c.name == bindparam("b_name"),\n'
                    "        _among(vms.c.state, _VM_TAKE.sources),\n"
                    "        vms.c.ticket.is_(None),\n",
                    '        vms.c.name == bindparam("b_name"),\n',
                ),
            ),
        ),
        CHAOS,
    ),
    Mutant(
        "pop-recovery-first",
        "a rollback pops (and commits) each recovery before running it, not after",
        (
            (
                Patch(
                    "corral/tasks/driver.py",
                    "            step = stack[-1]\n",
                    "            step = stack[-1]\n"
                    "            task.truncate(len(stack) - 1)  # MUTANT: popped before it runs\n"
                    "            await self._commit(task)\n",
                ),
                Patch(
                    "corral/tasks/driver.py",
                    "            task.truncate(len(stack) - 1)  # popped only once it ran: a crash "
                    "re-runs it\n"
                    "            if stack:  # the last pop is committed with the end state, right "
                    "after\n"
                    "                await self._commit(task)\n",
                    "",
                ),
            ),
        ),
        ("tests/tasks/test_crash.py", "-m", "slow"),
    ),
    Mutant(
        "skip-reconcile-unknown",
        "reconciliation no longer sweeps the machines the store does not know",
        (
            (
                Patch(
                    "corral/controller/reconcile.py",
                    "        sweep=machines(restart.Action.SWEEP),\n",
                    "        sweep=(),  # MUTANT\n",
                ),
            ),
        ),
        ("tests/controller", "-m", "not slow"),
    ),
    Mutant(
        "sandbox-counted-ready",
        "VMs kept for a sandbox count as ready supply for min_ready and for other tickets",
        (
            (
                Patch(
                    "corral/pools/allocation.py",
                    "    fresh = max(0, counts.get(VMState.READY, 0) - len(idle_used))\n",
                    "    fresh = counts.get(VMState.READY, 0)  # MUTANT\n",
                ),
            ),
        ),
        ("tests/pools", "tests/controller", "-m", "not slow"),
    ),
    Mutant(
        "no-leftover-kill",
        "a restart no longer kills the commands its killed predecessor left running",
        (
            (
                Patch(
                    "corral/backends/leftovers.py",
                    "    killed = await asyncio.to_thread(kill_now, marker, deadline=deadline)\n",
                    "    killed: list[int] = []  # MUTANT\n",
                ),
            ),
        ),
        ("tests/controller/test_restart_leftovers.py", "-m", "slow"),
    ),
    Mutant(
        "unmarked-commands",
        "the script backend no longer marks its commands with the store they run for",
        (
            (
                Patch(
                    "corral/backends/script.py",
                    "        self._base_env[leftovers.OWNER_VARIABLE] = owner\n",
                    "        pass  # MUTANT\n",
                ),
            ),
        ),
        ("tests/controller/test_restart_leftovers.py", "-m", "slow"),
    ),
    Mutant(
        "no-store-lock",
        "a controller no longer takes its SQLite store's ownership before recovering",
        (
            (
                Patch(
                    "corral/controller/recovery.py",
                    '    if url.kind != "sqlite" or not url.path:\n',
                    "    if True:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/controller/test_restart_ownership.py", "-m", "not slow"),
    ),
    Mutant(
        "sweep-foreign",
        "reconciliation terminates machines whose names the store never issued",
        (
            (
                Patch(
                    "corral/pools/restart.py",
                    "        if s.record is Unrecorded.FOREIGN and not s.adopt:\n",
                    "        if False:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/controller/test_restart_reconcile.py", "-m", "not slow"),
    ),
    Mutant(
        "api-origin-unchecked",
        "the API gate lets another site's browser change state (a form POST terminates a VM)",
        (
            (
                Patch(
                    "corral/api/guard.py",
                    '            check_origin(scope["method"], headers)\n',
                    "",
                ),
            ),
        ),
        ("tests/api/test_hostile.py", "-k", "cross_origin"),
    ),
    Mutant(
        "api-body-before-auth",
        "the API gate no longer authenticates before the body (the routes do, after reading it)",
        (
            (
                Patch(
                    "corral/api/guard.py",
                    '            if needs_token(scope["path"]):\n',
                    "            if False:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/api/test_hostile.py", "-k", "large_body"),
    ),
    Mutant(
        "api-no-header-deadline",
        "a connection's request headers may take forever (slowloris)",
        (
            (
                Patch(
                    "corral/api/protocol.py",
                    "        self._header_timer = self.loop.call_later(",
                    "        return  # MUTANT\n        self._header_timer = self.loop.call_later(",
                ),
            ),
        ),
        ("tests/api/test_hostile.py", "-k", "slow_and_idle"),
    ),
    Mutant(
        "api-stop-cuts-long-polls",
        "a stopping server does not wake its long-polls (they are cancelled after the grace time)",
        (
            (
                Patch(
                    "corral/api/server.py",
                    "        self._stopping.set()\n",
                    "",
                ),
            ),
            (  # after "liveness before readiness": the uvicorn server holds the event
                Patch(
                    "corral/api/server.py",
                    "        self.stopping.set()\n",
                    "",
                ),
            ),
        ),
        ("tests/api/test_restart.py", "-m", "slow", "-k", "sigterm"),
    ),
    Mutant(
        "client-no-reconnect",
        "the client gives up at the first refused connection or 503 server_stopping",
        (
            (
                Patch(
                    "corral/client/flows.py",
                    "RECONNECT_FOR = 300.0\n",
                    "RECONNECT_FOR = 0.0  # MUTANT\n",
                ),
            ),
        ),
        ("tests/client/test_reconnect.py",),
    ),
    Mutant(
        "api-owner-read-no-renew",
        "the owner's GET of a ticket no longer renews its lease (it expires while waited for)",
        (
            (
                Patch(
                    "corral/api/routes.py",
                    "    if renew:\n        ticket = await _renew(ctx, ticket)\n",
                    "",
                ),
            ),
        ),
        ("tests/api/test_leases.py", "-k", "owner_reads"),
    ),
    Mutant(
        "api-foreign-ticket-403",
        "another owner's ticket answers 403, telling a user which ids exist",
        (
            (
                Patch(
                    "corral/api/routes.py",
                    '        raise exceptions.TicketNotFound(f"no ticket {ticket_id!r}")\n',
                    '        raise exceptions.Forbidden(f"no ticket {ticket_id!r}")  # MUTANT\n',
                ),
            ),
        ),
        ("tests/api/test_tickets.py", "-k", "other_owners"),
    ),
    Mutant(
        "static-free-before-cleanup",
        "the static backend frees a machine before its cleanup ran (handed out while cleaned)",
        (
            (
                Patch(
                    "corral/backends/static.py",
                    "        failure = None\n"
                    '        if reservation is not None and "cleanup" in self._commands:\n',
                    "        failure = None\n"
                    "        await self._run_transaction(  # MUTANT\n"
                    "            lambda state, machines, now: "
                    "inv.end(state, machines, handle.name, now)\n"
                    "        )\n"
                    '        if reservation is not None and "cleanup" in self._commands:\n',
                ),
            ),
        ),
        ("tests/backends/test_static_crash.py", "-m", "slow"),
    ),
    Mutant(
        "static-state-per-process",
        "the static backend's reservations do not outlive its process (a state file per pid)",
        (
            (
                Patch(
                    "corral/backends/static.py",
                    "        self.state_path = self.base_dir / state_file\n",
                    "        self.state_path = "
                    'self.base_dir / f"{state_file}.{os.getpid()}"  # MUTANT\n',
                ),
            ),
        ),
        ("tests/backends/test_static_crash.py", "-m", "slow"),
    ),
    Mutant(
        "static-failed-cleanup-frees",
        "a static machine whose cleanup failed goes back to the free set",
        (
            (
                Patch(
                    "corral/backends/static_inventory.py",
                    "        if cleanup_failure is not None:\n",
                    "        if cleanup_failure is not None and False:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/backends/test_static_pool.py",),
    ),
    Mutant(
        "external-vm-destroyed",
        "the termination task calls the backend for an external (registered or forgotten) VM",
        (
            (
                Patch(
                    "corral/controller/steps.py",
                    "    if external:\n        await h.apply_vm(name, VMEvent.FORGOTTEN,",
                    "    if False:  # MUTANT\n        await h.apply_vm(name, VMEvent.FORGOTTEN,",
                ),
            ),
        ),
        ("tests/controller/test_registry.py",),
    ),
    Mutant(
        "external-vm-args-dropped",
        "a termination submitted with the VM's row no longer says the VM is external",
        (
            (
                Patch(
                    "corral/controller/vmtasks.py",
                    "            if row.external:\n",
                    "            if False:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/controller/test_registry.py", "-k", "crash"),
    ),
    Mutant(
        "external-vm-lost",
        "reconciliation takes an external VM missing from the backend's list() as lost",
        (
            (
                Patch(
                    "corral/controller/reconcile.py",
                    "        if listed is None or (vm is not None and vm.external and vm.alive):\n",
                    "        if listed is None:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/controller/test_registry.py",),
    ),
    Mutant(
        "forgotten-swept",
        "the restart rules sweep a listed machine whose record is a forgotten VM's tombstone",
        (
            (
                Patch(
                    "corral/pools/restart.py",
                    "    if s.record is VMState.FORGOTTEN:\n",
                    "    if False:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/controller/test_registry.py", "tests/pools/test_restart.py"),
    ),
    Mutant(
        "tombstones-purged",
        "retention purges forgotten VMs' records with the terminated and failed ones",
        (
            (
                Patch(
                    "corral/store/memory/pools.py",
                    "if v.state in _PURGED and v.state_since < before",
                    "if v.state in _DEAD and v.state_since < before  # MUTANT",
                ),
            ),
        ),
        ("tests/pools/test_store_register_contract.py", "tests/controller/test_registry.py"),
    ),
    Mutant(
        "ticket-count-dropped",
        "POST /v1/tickets does not pass the body's count on (a multi-machine ticket gets one VM)",
        (
            (
                Patch(
                    "corral/api/routes.py",
                    "        count=body.count if single else 1,\n",
                    "        count=1,  # MUTANT\n",
                ),
            ),
        ),
        ("tests/api/test_multi_tickets.py",),
    ),
    Mutant(
        "ticket-first-address-only",
        "a multi-machine ticket's answer carries the first VM's address only",
        (
            (
                Patch(
                    "corral/api/convert.py",
                    "    return record.vms or (record.vm,)\n",
                    "    return (record.vm,)  # MUTANT\n",
                ),
            ),
        ),
        ("tests/api/test_multi_tickets.py",),
    ),
    Mutant(
        "client-count-dropped",
        "the clients' create_ticket/acquire do not send count (one VM whatever was asked)",
        (
            (
                Patch(
                    "corral/client/core.py",
                    "        count=count,\n        exclusive=exclusive,\n",
                    "        count=1,  # MUTANT\n        exclusive=exclusive,\n",
                ),
            ),
            (
                Patch(
                    "corral/client/core.py",
                    '        fields["count"] = count\n',
                    "        pass  # MUTANT\n",
                ),
            ),
        ),
        ("tests/client/test_client_multi.py", "tests/cli/test_cli_multi.py"),
    ),
    Mutant(
        "join-unconditional",
        "joining a shared VM is no longer conditional on the load the decision saw (racing "
        "assignments put a third ticket on a 2-slot VM); the shared-VM chaos test does not "
        "catch it (its two assigners rarely decide one join from different snapshots)",
        (
            (
                Patch(
                    "corral/store/sql/pools.py",
                    '            vms.c.load == bindparam("b_load"),\n'
                    "            vms.c.exclusive == False,",
                    "            vms.c.exclusive == False,  # MUTANT",
                ),
                Patch(
                    "corral/store/sql/pools.py",
                    "    if vm.load != load or vm.exclusive:\n",
                    "    if vm.exclusive:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/pools/test_store_shared.py",),
    ),
    Mutant(
        "ticket-meta-dropped",
        "POST /v1/tickets does not pass the body's metadata on (the ticket is not found by it)",
        (
            (
                Patch(
                    "corral/api/routes.py",
                    "        meta=body.meta or None,\n",
                    "        meta=None,  # MUTANT\n",
                ),
            ),
        ),
        ("tests/api/test_meta_and_conditional.py",),
    ),
    Mutant(
        "if-state-ignored",
        "POST /v1/vms/{name}/terminate ignores if_state (terminates whatever the VM's state)",
        (
            (
                Patch(
                    "corral/api/routes.py",
                    "terminate_vm(name, if_states=states, actor=who)",
                    "terminate_vm(name, actor=who)  # MUTANT",
                ),
            ),
        ),
        ("tests/api/test_meta_and_conditional.py",),
    ),
    Mutant(
        "shared-vm-freed-early",
        "closing a shared VM's first ticket frees the VM while other tickets still hold it",
        (
            (
                Patch(
                    "corral/store/sql/pools.py",
                    "        _among(vms.c.state, _VM_FREE),\n        vms.c.load <= 1,\n",
                    "        _among(vms.c.state, _VM_FREE),  # MUTANT\n",
                ),
            ),
        ),
        ("tests/controller/test_chaos.py", "-m", "slow", "-k", "shared_vms"),
    ),
    Mutant(
        "ec2-retry-without-lookup",
        "a create whose outcome is unknown (read timeout, lost answer) is retried without first "
        "looking the VM up by its tag (moto ignores ClientToken: a second instance)",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "                if kind is model.ErrorKind.UNKNOWN_OUTCOME:\n"
                    "                    found = await self._existing(spec.name)",
                    "                if False:  # MUTANT\n"
                    "                    found = await self._existing(spec.name)",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2_faults.py", "-k", "read_timeout"),
    ),
    Mutant(
        "ec2-leaks-blind",
        "list() returns nothing and a terminate by name finds nothing (only the handle's id): "
        "creates landing after their rollback stay in the cloud",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "        return sorted(\n            (Handle(name=i.vm, ref=i.id)",
                    "        return [] and sorted(  # MUTANT\n"
                    "            (Handle(name=i.vm, ref=i.id)",
                ),
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "        ids = {i.id for i in snapshot.by_vm(handle.name) if i.alive}",
                    "        ids: set[str] = set()  # MUTANT",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2_faults.py", "-k", "paused"),
    ),
    Mutant(
        "ec2-credentials-logged",
        "the EC2 client's credentials (secret included) written to a DEBUG log line",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "                session = _session(opts.profile, opts.region)\n",
                    "                session = _session(opts.profile, opts.region)\n"
                    "                creds = session.get_credentials()  # MUTANT\n"
                    "                log.debug('%r', creds.get_frozen_credentials())\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2_faults.py", "-k", "secret"),
    ),
    Mutant(
        "libcloud-credentials-file-ignored",
        "a libcloud credentials file is read but the environment's AWS keys sign the requests",
        (
            (
                Patch(
                    "corral/backends/cloud/libcloud.py",
                    "            self._key, self._secret = credentials.from_file(\n"
                    "                path if path.is_absolute() else self.base_dir / path\n"
                    "            )",
                    "            credentials.from_file(\n"
                    "                path if path.is_absolute() else self.base_dir / path\n"
                    "            )\n"
                    "            self._key, self._secret = credentials.from_environment(\n"
                    "                'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'\n"
                    "            )",
                ),
            ),
        ),
        ("tests/backends/cloud/test_libcloud_credentials.py",),
    ),
    Mutant(
        "cloud-bucket-no-horizon",
        "the PostgreSQL bucket row's reservation does not move its horizon (all go at once), "
        "seen from two connections",
        (
            (
                Patch(
                    "corral/backends/cloud/shared.py",
                    '"next_at": horizon + 1.0 / rate})',
                    '"next_at": horizon + 0.0 / rate})  # MUTANT',
                ),
            ),
        ),
        ("tests/backends/cloud/test_cloud_cluster.py", "-k", "spaces"),
    ),
    Mutant(
        "event-log-unguarded",
        "cluster event log appenders not serialised: ids commit out of order (issue 12)",
        (
            (
                Patch(
                    "corral/cluster/eventlog.py",
                    "    await conn.execute(_GUARD, (APPEND_GUARD,))\n",
                    "    pass  # MUTANT: no ordering guard\n",
                ),
            ),
        ),
        ("tests/cluster/test_events_log.py", "-k", "never_skips"),
    ),
    Mutant(
        "event-resume-memory-only",
        "in a cluster, Last-Event-ID answered from the hub's memory only, never the table",
        (
            (
                Patch(
                    "corral/api/stream.py",
                    "        if last_id is not None and self._log is not None and not "
                    "self._remembers(last_id):",
                    "        if False:  # MUTANT",
                ),
            ),
        ),
        ("tests/cluster/test_events_log.py", "-k", "resume_each_others or pruned_id"),
    ),
    # --- fencing tokens handed to the backends (issue 11, helper fence-backends) ---
    Mutant(
        "libvirt-fence-unchecked",
        "libvirt acts on a domain whose recorded fencing token is newer than the caller's",
        (
            (
                Patch(
                    "corral/backends/libvirt/backend.py",
                    "        fencing.admit(self.pool, operation, dom.name(), mark.fence, fence)\n",
                    "        pass  # MUTANT: the recorded token is not checked\n",
                ),
            ),
        ),
        ("tests/backends/libvirt/test_fencing_libvirt.py",),
    ),
    Mutant(
        "libvirt-fence-not-written",
        "libvirt's spawn does not record the caller's fence in the domain's corral metadata",
        (
            (
                Patch(
                    "corral/backends/libvirt/backend.py",
                    "mark=spec.Mark(self.pool, vm.name, hypervisor, vm.id_in_pool, fence),",
                    "mark=spec.Mark(self.pool, vm.name, hypervisor, vm.id_in_pool),  # MUTANT",
                ),
            ),
        ),
        ("tests/backends/libvirt/test_fencing_libvirt.py",),
    ),
    Mutant(
        "ec2-fence-unchecked",
        "ec2 terminates (or adopts) an instance whose fence tag is newer than the caller's",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "            fencing.admit(self.pool, operation, name, "
                    "cloud_tags.fence_of(inst.tags), fence)\n",
                    "            pass  # MUTANT: the fence tag is not checked\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2_fencing.py",),
    ),
    Mutant(
        "ec2-fence-not-tagged",
        "ec2's RunInstances does not tag the instance with the caller's fence",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "opts.namespace, self.pool, spec.name, spec.id_in_pool, opts.tags, fence\n",
                    "opts.namespace, self.pool, spec.name, spec.id_in_pool, opts.tags  # MUTANT\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2_fencing.py",),
    ),
    Mutant(
        "fence-survivor-no-retag",
        "a survivor taking over a cloud machine does not record its newer token before acting",
        (
            (
                Patch(
                    "corral/backends/fencing.py",
                    "    return every_grant or recorded.holder != caller.holder\n",
                    "    return every_grant  # MUTANT\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2_fencing.py",),
    ),
    Mutant(
        "fence-stale-retried",
        "the guard turns a backend's StaleFence into a BackendError (retried, not refused)",
        (
            (
                Patch(
                    "corral/backends/guard.py",
                    "            except exceptions.StaleFence:\n"
                    "                counter.failures += 1  # the backend logged it; "
                    "a newer holder acts on the VM\n"
                    "                raise\n",
                    "",
                ),
            ),
        ),
        ("tests/backends/libvirt/test_fencing_libvirt.py",),
    ),
    Mutant(
        "fence-not-passed",
        "the controller hands the backends no fence on PostgreSQL (the tokens go unchecked)",
        (
            (
                Patch(
                    "corral/controller/controller.py",
                    "        return Fence(token, self._fence_holder())\n",
                    "        return None  # MUTANT\n",
                ),
            ),
        ),
        ("tests/cluster/test_fence_backends_pg.py",),
    ),
    Mutant(
        "task-lock-token-stale",
        "a job's context reports the token of the task's first grant, not the current one",
        (
            (
                Patch(
                    "corral/tasks/driver.py",
                    "        task.tokens = locking.tokens_of(task.held, task.locks)\n"
                    "        task.holds_locks = True\n        return True\n",
                    "        task.tokens = task.tokens or locking.tokens_of(task.held, task.locks)"
                    "  # MUTANT\n        task.holds_locks = True\n        return True\n",
                ),
            ),
        ),
        ("tests/tasks/test_lock_tokens.py", "-k", "retaken"),
    ),
    Mutant(
        "fence-older-admitted",
        "the fencing rule compares the wrong way: an older fence passes, the same grant is refused",
        (
            (
                Patch(
                    "corral/backends/fencing.py",
                    "    if recorded is not None and recorded.token > caller.token:\n",
                    "    if recorded is not None and recorded.token <= caller.token:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/backends/test_fencing.py",),
    ),
    Mutant(
        "api-guard-del-allowed",
        "the guard's control-character check lets DEL (U+007F) through",
        (
            (
                Patch(
                    "corral/api/guard.py",
                    'CONTROL = re.compile("[\\x00-\\x1f\\x7f]")',
                    'CONTROL = re.compile("[\\x00-\\x1f]")',
                ),
            ),
        ),
        ("tests/api/test_guard_text.py",),
    ),
    Mutant(
        "api-guard-first-length-only",
        "a request is taken as bodiless from its first Content-Length (its body then unbounded)",
        (
            (
                Patch(
                    "corral/api/guard.py",
                    'lowered == b"content-length" and value != b"0"',
                    'lowered == b"content-length" and value != b"0" and False',
                ),
            ),
        ),
        ("tests/api/test_guard_text.py",),
    ),
    # --- fence-store (issue 11): every write on behalf of a lease or a lock is fenced ---
    Mutant(
        "vm-write-unfenced",
        "the store moves a VM whatever its lease or lock fence says (a stale leader's or a "
        "reaped job's write lands; issue 11)",
        (
            (
                Patch(
                    "corral/store/sql/pools.py",
                    "    fenced = _fence_of(conn, fence)\n    if changes:\n",
                    "    fenced = None  # MUTANT\n    if changes:\n",
                ),
            ),
        ),
        ("tests/cluster/test_fenced_writes_pg.py",),
    ),
    Mutant(
        "ticket-end-unfenced",
        "the store ends a ticket (and frees its VM) whatever the leader's lease fence says "
        "(issue 11)",
        (
            (
                Patch(
                    "corral/store/sql/pools.py",
                    "    fenced = _fence_of(conn, fence)\n"
                    '    params: dict[str, Any] = {"b_id": ticket_id,',
                    '    fenced = None  # MUTANT\n    params: dict[str, Any] = {"b_id": ticket_id,',
                ),
            ),
        ),
        ("tests/cluster/test_fenced_writes_pg.py", "-k", "ticket_end"),
    ),
    Mutant(
        "lock-fence-key-only",
        "a lock fence passes while any grant of the key at least as new holds it (an old "
        "token is not refused; issue 11)",
        (
            (
                Patch(
                    "corral/store/sql/pools.py",
                    'lock_grants.c.token == bindparam("f_token")',
                    'lock_grants.c.token >= bindparam("f_token")  # MUTANT',
                ),
            ),
        ),
        ("tests/cluster/test_fenced_writes_pg.py", "-k", "lock_grant"),
    ),
    Mutant(
        "retire-unfenced",
        "the maintenance round retires VMs without its lease's fence (issue 11)",
        (
            (
                Patch(
                    "corral/controller/maintenance.py",
                    "        fence = ctl.lease_fence(pool)  # a leader paused since its check "
                    "retires nothing\n",
                    "        fence = None  # MUTANT\n",
                ),
            ),
        ),
        ("tests/cluster/test_fenced_maintenance_pg.py", "-k", "maintenance_writes"),
    ),
    Mutant(
        "hold-expiry-unfenced",
        "the maintenance round ends holds without its lease's fence (issue 11)",
        (
            (
                Patch(
                    "corral/controller/maintenance.py",
                    "await ctl.operators.expire_holds(name, now, fence=fence)",
                    "await ctl.operators.expire_holds(name, now)  # MUTANT",
                ),
            ),
        ),
        ("tests/cluster/test_fenced_maintenance_pg.py", "-k", "maintenance_writes"),
    ),
    Mutant(
        "livecheck-unfenced",
        "livecheck results (and the tickets they fail) are written without the lease's "
        "fence (issue 11)",
        (
            (
                Patch(
                    "corral/controller/maintenance.py",
                    "            fence = ctl.lease_fence(pool)\n",
                    "            fence = None  # MUTANT\n",
                ),
            ),
        ),
        ("tests/cluster/test_fenced_maintenance_pg.py", "-k", "maintenance_writes"),
    ),
    Mutant(
        "ticket-expiry-unfenced",
        "lease expiry ends tickets without the pool leader's fence (issue 11)",
        (
            (
                Patch(
                    "corral/controller/maintenance.py",
                    "                fence = None if pool is None else "
                    "self._ctl.lease_fence(pool)\n",
                    "                fence = None  # MUTANT\n",
                ),
            ),
        ),
        ("tests/cluster/test_fenced_maintenance_pg.py", "-k", "maintenance_writes"),
    ),
    Mutant(
        "drain-unfenced",
        "a drain's retirements ignore the fence they are given (issue 11)",
        (
            (
                Patch(
                    "corral/controller/operators.py",
                    'vm.name, VMEvent.RETIRED, fence=fence, reason="pool draining"',
                    'vm.name, VMEvent.RETIRED, reason="pool draining"  # MUTANT',
                ),
            ),
        ),
        ("tests/cluster/test_fenced_maintenance_pg.py", "-k", "maintenance_writes"),
    ),
    Mutant(
        "orphan-unfenced",
        "reconciliation's orphan moves ignore the leader's fence (issue 11)",
        (
            (
                Patch(
                    "corral/controller/recovery.py",
                    "await ctl.apply_vm(vm.name, VMEvent.ORPHANED, current=vm.state, fence=fence)",
                    "await ctl.apply_vm(vm.name, VMEvent.ORPHANED, current=vm.state)  # MUTANT",
                ),
            ),
        ),
        ("tests/cluster/test_fenced_maintenance_pg.py", "-k", "maintenance_writes"),
    ),
    Mutant(
        "job-vm-write-unfenced",
        "a task's job moves its VM without its vm/<name> grant's token (a job whose lock "
        "was reaped still marks the VM ready; issue 11)",
        (
            (
                Patch(
                    "corral/controller/steps.py",
                    "    return h.lock_fence(key, ctx.lock_token(key))\n",
                    "    return None  # MUTANT\n",
                ),
            ),
        ),
        ("tests/cluster/test_fenced_maintenance_pg.py", "-k", "lock_grant"),
    ),
    Mutant(
        "fenced-task-after-check",
        "a host whose VM task was fenced off (its write refused) still moves the VM itself "
        "after the task ends (issue 11)",
        (
            (
                Patch(
                    "corral/controller/vmtasks.py",
                    "                and info.code not in FENCED\n",
                    "                and True  # MUTANT\n",
                ),
            ),
        ),
        ("tests/cluster/test_fenced_maintenance_pg.py", "-k", "lock_grant"),
    ),
    Mutant(
        "evict-unfenced",
        "preallocation evicts an idle used VM without its lease's fence (issue 11)",
        (
            (
                Patch(
                    "corral/controller/preallocation.py",
                    "                fence=ctl.lease_fence(pool),\n",
                    "                fence=None,  # MUTANT\n",
                ),
            ),
        ),
        ("tests/cluster/test_fenced_maintenance_pg.py", "-k", "eviction"),
    ),
    Mutant(
        "orphan-watch-unfenced",
        "the leader's orphan watch terminates rows without its lease's fence (issue 11)",
        (
            (
                Patch(
                    "corral/controller/takeover.py",
                    "await recovery.act(ctl, pool, plan, fence=ctl.lease_fence(pool))",
                    "await recovery.act(ctl, pool, plan)  # MUTANT",
                ),
            ),
        ),
        ("tests/cluster/test_fenced_maintenance_pg.py", "-k", "maintenance_writes"),
    ),
    Mutant(
        "job-tokens-dropped",
        "the engine does not keep a grant's fencing tokens for its jobs (ctx.lock_token is "
        "None: the steps' VM writes carry no fence; issue 11)",
        (
            (
                Patch(
                    "corral/tasks/driver.py",
                    "                task.tokens = locking.tokens_of(task.held, task.locks)\n",
                    "                pass  # MUTANT\n",
                ),
            ),
        ),
        ("tests/tasks/test_lock_tokens.py",),
    ),
    # --- cloud500 (issue 13: targeted describes by instance id) ---
    Mutant(
        "ec2-poll-by-name-always",
        "the readiness poll selects VMs this process made cleanly by a tag filter of their names "
        "(moto walks every tag of the account per instance: ~1 s per call at 500 VMs)",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "            clean = handle.ref in self._created and handle.name not in "
                    "self._by_name\n",
                    "            clean = False  # MUTANT\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2.py", "-k", "readiness"),
    ),
    Mutant(
        "ec2-selector-filter-last",
        "a targeted describe's selecting filter (ids, names) comes after the pool's tag filters",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "            *first,\n"
                    "            *cloud_tags.ec2_filters(self.opts.namespace, self.pool),\n"
                    '            {"Name": "instance-state-name", "Values": '
                    "list(model.DESCRIBED_STATES)},\n",
                    "            *cloud_tags.ec2_filters(self.opts.namespace, self.pool),\n"
                    '            {"Name": "instance-state-name", "Values": '
                    "list(model.DESCRIBED_STATES)},\n"
                    "            *first,  # MUTANT\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2.py", "-k", "readiness"),
    ),
    Mutant(
        "ec2-poll-by-id-after-restart",
        "a VM this process did not create (a restarted controller) is polled by id: its twin "
        "with the same name lives on",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "            clean = handle.ref in self._created and handle.name not in "
                    "self._by_name\n",
                    "            clean = handle.name not in self._by_name  # MUTANT\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2.py", "-k", "duplicate and another_process"),
    ),
    Mutant(
        "ec2-adopted-polled-by-id",
        "a VM whose spawn adopted an instance found by name is polled by id (a second twin lives)",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "        self._by_name[name] = None  # there may be more than the one "
                    "adopted\n",
                    "        pass  # MUTANT\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2.py", "-k", "duplicate and adopted"),
    ),
    Mutant(
        "ec2-lost-create-polled-by-id",
        "a VM whose create lost its answer is polled by id (the retry's twin lives on)",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "                    self._by_name[spec.name] = None  # it may have, not "
                    "visible yet: a twin\n",
                    "                    pass  # MUTANT\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2.py", "-k", "duplicate and lost_answer"),
    ),
    Mutant(
        "ec2-id-poll-never-gone",
        "an instance polled by id and terminated behind corral's back stays 'pending' for the "
        "not-found grace instead of failing",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2.py",
                    "            if (vm in names or inst_id in ids) and inst_id not in current:\n",
                    "            if vm in names and inst_id not in current:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2.py", "-k", "behind_our_back"),
    ),
    Mutant(
        "libcloud-deadline-gate-only",
        "the libcloud backend checks a call's cluster-slot deadline only at the gate in its worker "
        "thread, not where the driver's request leaves (a request built late leaves late)",
        (
            (
                Patch(
                    "corral/backends/cloud/libcloud.py",
                    "                self._hook_sending(driver)\n",
                    "                pass  # MUTANT\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_libcloud.py", "-k", "too_late"),
    ),
    Mutant(
        "libcloud-every-request-held",
        "every request of a libcloud driver call is checked against the call's slot (a second "
        "page, late by nature, misses the slot on every try: the listing never ends)",
        (
            (
                Patch(
                    "corral/backends/cloud/libcloud.py",
                    "            self._sending.permit = None\n            self.limiter.check_slot",
                    "            self.limiter.check_slot",
                ),
            ),
        ),
        ("tests/backends/cloud/test_libcloud.py", "-k", "first_request"),
    ),
    Mutant(
        "ec2-mixed-round-two-calls",
        "a targeted round with polls by id and a look-up by name makes two describes (ids, then "
        "names) instead of one by name",
        (
            (
                Patch(
                    "corral/backends/cloud/ec2_model.py",
                    "    if by_id(asks):\n"
                    '        name, values = "instance-id", {str(a.id) for a in asks}\n'
                    "    else:\n"
                    '        name, values = f"tag:{tags.VM}", {a.vm for a in asks}\n'
                    '    return [{"Name": name, "Values": chunk} '
                    "for chunk in chunks(values, size)]\n",
                    "    ids = {str(a.id) for a in asks if a.id is not None}  # MUTANT\n"
                    "    names = {a.vm for a in asks if a.id is None}\n"
                    '    pairs = (("instance-id", ids), (f"tag:{tags.VM}", names))\n'
                    '    return [{"Name": n, "Values": c} '
                    "for n, v in pairs for c in chunks(v, size)]\n",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ec2.py", "-k", "look_up_by_name"),
    ),
    Mutant(
        "cloud-gate-no-horizon",
        "the PostgreSQL bucket row's reservation does not move its horizon: every host's every "
        "call is granted at once",
        (
            (
                Patch(
                    "corral/backends/cloud/shared.py",
                    '"next_at": horizon + 1.0 / rate})',
                    '"next_at": horizon + 0.0 / rate})  # MUTANT',
                ),
            ),
        ),
        ("tests/backends/cloud/test_cluster_gate.py", "-k", "idle_bucket"),
    ),
    # --- the lock manager's SQL on the event loop (helper pglocks) ---
    Mutant(
        "loopsql-no-batching",
        "the loop batcher sends each command as its own transaction (no shared commit)",
        ((Patch("corral/cluster/loopsql.py", "BATCH = 64\n", "BATCH = 1  # MUTANT\n"),),),
        ("tests/locks/test_loopsql.py", "-k", "one_turn"),
    ),
    Mutant(
        "loopsql-call-jumps-queue",
        "the blocking call() runs before the commands submitted earlier (status() misses a "
        "release just sent)",
        (
            (
                Patch(
                    "corral/cluster/loopsql.py",
                    "            self._queue.append(command)\n            self._finish_blocking()",
                    "            self._queue.appendleft(command)  # MUTANT\n"
                    "            self._finish_blocking()",
                ),
            ),
        ),
        ("tests/locks/test_loopsql.py", "-k", "call_runs_after"),
    ),
    Mutant(
        "loopsql-unescaped",
        "parameters pasted between quotes without escaping",
        (
            (
                Patch(
                    "corral/cluster/loopsql.py",
                    "                out.append(esc.escape_literal(str(value).encode()))",
                    '                out.append(b"\'" + str(value).encode() + b"\'")  # MUTANT',
                ),
            ),
        ),
        ("tests/locks/test_loopsql.py", "-k", "parameters"),
    ),
    Mutant(
        "loopsql-lost-batch-dropped",
        "a batch in flight when its connection dies is dropped instead of sent again",
        (
            (
                Patch(
                    "corral/cluster/loopsql.py",
                    "            self._queue.extendleft(reversed(sent))",
                    "            pass  # MUTANT",
                ),
            ),
        ),
        ("tests/locks/test_loopsql.py", "-k", "terminated"),
    ),
    Mutant(
        "loopsql-no-relisten",
        "the batcher's new connection does not LISTEN again (grants notified after a reconnect "
        "go nowhere)",
        (
            (
                Patch(
                    "corral/cluster/loopsql.py",
                    '            self._queue.appendleft(Command(f"LISTEN {self._channel}", ()))',
                    "            pass  # MUTANT",
                ),
            ),
        ),
        ("tests/locks/test_pg.py", "-k", "heard_on_the_batchers_connection"),
    ),
    Mutant(
        "loopsql-no-resync",
        "no re-read of the session's rows after the batcher reconnects (a grant notified while "
        "it was down is lost)",
        (
            (
                Patch(
                    "corral/cluster/loopsql.py",
                    "                self._loop.call_soon(self.on_reconnect)",
                    "                pass  # MUTANT",
                ),
            ),
        ),
        ("tests/locks/test_pg.py", "-k", "notified_while_the_batcher_was_down"),
    ),
    Mutant(
        "loopsql-notes-before-results",
        "notifications collected only before a batch's results are taken (a NOTIFY read with "
        "the answer stays in libpq: a waiter's grant is never delivered)",
        (
            (
                Patch(
                    "corral/cluster/loopsql.py",
                    "        pgconn.consume_input()\n        finished = False\n",
                    "        pgconn.consume_input()\n"
                    "        self._collect_notes(pgconn)  # MUTANT\n"
                    "        finished = False\n",
                ),
                Patch(
                    "corral/cluster/loopsql.py",
                    "        # result is taken (is_busy/get_result), and the socket may have "
                    "nothing more to say\n        self._collect_notes(pgconn)\n",
                    "        pass  # MUTANT\n",
                ),
            ),
        ),
        ("tests/locks/test_loopsql.py", "-k", "notify_read_with"),
    ),
    Mutant(
        "assign-handed-forgotten",
        "the assignment does not give back the VMs it handed out (each answer reads its VM again)",
        (
            (
                Patch(
                    "corral/controller/assignment.py",
                    "return self._handed.get(name)",
                    "return None",
                ),
            ),
        ),
        ("tests/api/test_assigned_address.py",),
    ),
    Mutant(
        "convert-ignores-handed",
        "the ticket's answer ignores the VM the assignment handed out and reads it",
        (
            (
                Patch(
                    "corral/api/convert.py",
                    "if handed is not None:",
                    "if handed is not None and False:",
                ),
            ),
        ),
        ("tests/api/test_assigned_address.py",),
    ),
    # --- review fixes (issue 11): a backend's refusal ends the host's part; damaged records ---
    Mutant(
        "fenced-codes-miss-backend",
        "a task ended by a backend's refusal of its stale fence is followed by the host's own "
        "unfenced after-task check of the VM",
        (
            (
                Patch(
                    "corral/controller/vmtasks.py",
                    "        exceptions.StaleFence,\n",
                    "",
                ),
            ),
        ),
        ("tests/controller/test_fenced_task_end.py",),
    ),
    Mutant(
        "fence-parse-any-digit",
        "a recorded fence is parsed with str.isdigit alone: a damaged record raises ValueError",
        (
            (
                Patch(
                    "corral/backends/fencing.py",
                    "not (token.isascii() and token.isdigit())",
                    "not token.isdigit()  # MUTANT",
                ),
            ),
        ),
        ("tests/backends/test_fencing.py", "-k", "whole_records"),
    ),
    Mutant(
        "reconcile-stale-epoch-escapes",
        "a lease lost during start-up reconciliation fails the host's start",
        (
            (
                Patch(
                    "corral/controller/recovery.py",
                    "        except exceptions.StaleEpoch as exc:\n",
                    "        except ZeroDivisionError as exc:  # type: ignore[misc]  # MUTANT\n",
                ),
            ),
        ),
        ("tests/controller/test_restart_reconcile.py", "-k", "lease_lost"),
    ),
    Mutant(
        "loopsql-render-fails-batch",
        "a command that cannot be rendered takes the rest of its batch down with it",
        (
            (
                Patch(
                    "corral/cluster/loopsql.py",
                    "            except (ValueError, TypeError, UnicodeError, psycopg.DataError)"
                    " as exc:\n                _deliver_error([command], exc)\n"
                    "                continue\n",
                    "            except ZeroDivisionError:  # MUTANT\n                continue\n",
                ),
            ),
        ),
        ("tests/locks/test_loopsql.py", "-k", "rendered"),
    ),
    Mutant(
        "loopsql-bare-numbers",
        "numbers pasted bare into the SQL (a negative one after '-' starts a comment)",
        (
            (
                Patch(
                    "corral/cluster/loopsql.py",
                    '    return f"({value!r})".encode()\n',
                    "    return str(value).encode()  # MUTANT\n",
                ),
            ),
        ),
        ("tests/locks/test_loopsql.py", "-k", "unchanged"),
    ),
    Mutant(
        "api-guard-complete-body-waits",
        "a complete body sent for a head that declared none is read as a partial one (the guard "
        "waits for a message that never comes)",
        (
            (
                Patch(
                    "corral/api/guard.py",
                    '        if not message.get("more_body", False):\n'
                    "            self._check_size(len(chunk))",
                    '        if not message.get("more_body", False) and not chunk:  # MUTANT\n'
                    "            self._check_size(len(chunk))",
                ),
            ),
        ),
        ("tests/api/test_guard_text.py", "-k", "after_all"),
    ),
    # --- issue 14, fast CLI: a client command on plain http:// without httpx (h/clistart) ---
    Mutant(
        "cli-client-through-httpx",
        "the CLI's client sends through httpx again on a plain http:// URL (httpx imported)",
        (
            (
                Patch(
                    "corral/cli/common.py",
                    "http = plainhttp.PlainHTTP(url) if plainhttp.usable(url) else None",
                    "http = None  # MUTANT",
                ),
            ),
            (
                Patch(
                    "corral/client/sync.py",
                    "http = plainhttp.PlainHTTP(url) if plainhttp.usable(url) else "
                    "self._httpx_client()",
                    "http = self._httpx_client()  # MUTANT",
                ),
            ),
        ),
        ("tests/cli/test_cli_startup_imports.py", "-k", "plain_http_imports_no_httpx"),
    ),
    Mutant(
        "client-imports-httpx-eagerly",
        "import corral.client imports httpx at once again (every client command pays for it)",
        (
            (
                Patch(
                    "corral/client/__init__.py",
                    "from corral.client import httpxload\n",
                    "from corral.client import httpxload\n\nhttpxload.load()  # MUTANT\n",
                ),
            ),
        ),
        ("tests/cli/test_cli_startup_imports.py", "-k", "plain_http_imports_no_httpx"),
    ),
    Mutant(
        "plainhttp-query-python-bools",
        "the standard library transport writes a boolean query value as Python's True",
        (
            (
                Patch(
                    "corral/client/plainhttp.py",
                    'return "true"',
                    'return "True"  # MUTANT',
                ),
            ),
        ),
        ("tests/client/test_plainhttp.py", "-k", "query"),
    ),
    Mutant(
        "plainhttp-refused-escapes",
        "a refused connection escapes the standard library transport as ConnectionRefusedError",
        (
            (
                Patch(
                    "corral/client/plainhttp.py",
                    "except (OSError, http.client.HTTPException) as exc:",
                    "except http.client.HTTPException as exc:  # MUTANT",
                ),
            ),
            (
                Patch(
                    "corral/client/plainhttp.py",
                    "            except OSError as exc:\n"
                    "                raise TransportError(str(exc)) from exc\n",
                    "            except TransportError:  # MUTANT\n                raise\n",
                ),
            ),
        ),
        ("tests/client/test_plainhttp.py", "-k", "unreachable"),
    ),
    Mutant(
        "plainhttp-ignores-proxy",
        "a proxy set in the environment is bypassed by the standard library transport",
        (
            (
                Patch(
                    "corral/client/plainhttp.py",
                    "if any(env.get(name) for name in PROXY_VARIABLES):",
                    "if False:  # MUTANT",
                ),
            ),
        ),
        ("tests/client/test_plainhttp.py", "-k", "proxy"),
    ),
    Mutant(
        "ratelimit-no-slack",
        "a slot one float ulp past now + lead is refused with a wait of 0 (refused again after "
        "waiting as told)",
        (
            (
                Patch(
                    "corral/backends/cloud/ratelimit.py",
                    "if early > SLACK:",
                    "if horizon > now + lead:  # MUTANT",
                ),
            ),
        ),
        ("tests/backends/cloud/test_ratelimit.py", "-k", "conditional_reservations"),
    ),
    Mutant(
        "spawn-wakeup-echo",
        "a host that does not lead a pool relays the spawn wake-ups it hears (followers echo)",
        (
            (
                Patch(
                    "corral/controller/crosshost.py",
                    "if ctl.maintains and pool in ctl.pool_names() and ctl.leads(pool):",
                    "if ctl.maintains and pool in ctl.pool_names():  # MUTANT",
                ),
            ),
        ),
        ("tests/controller/test_crosshost_wakeups.py", "-k", "echo"),
    ),
    Mutant(
        "remote-assign-rounds",
        "another host's announcement makes this host run an assignment round (hosts race)",
        (
            (
                Patch(
                    "corral/controller/crosshost.py",
                    "on_ticket=self._ctl.ticket_ops.changed_elsewhere,",
                    "on_ticket=lambda t: (self._ctl.ticket_ops.changed_elsewhere(t), "
                    "self._ctl.kick_assign()) and None,  # MUTANT",
                ),
            ),
        ),
        ("tests/controller/test_crosshost_wakeups.py", "-k", "race"),
    ),
    Mutant(
        "event-log-reads-own-batch",
        "a host reads every batch it appended back from the table (a read per own batch)",
        (
            (
                Patch(
                    "corral/cluster/eventlog.py",
                    "if not await self._hand_own(batch, ids):",
                    "if True:  # MUTANT",
                ),
            ),
        ),
        ("tests/cluster/test_events_log.py", "-k", "own_batches"),
    ),
    Mutant(
        "event-log-reads-seen-notes",
        "a host reads on every notification, its own and those of ids it handed over already",
        (
            (
                Patch(
                    "corral/cluster/eventlog.py",
                    "if self._unseen(note.payload):",
                    "if True:  # MUTANT",
                ),
            ),
        ),
        ("tests/cluster/test_events_log.py", "-k", "own_batches"),
    ),
    Mutant(
        "plainhttp-no-keepalive",
        "the standard library transport closes its connection after every request (a new "
        "connection, accept and parser on the server per request; issue 14)",
        (
            (
                Patch(
                    "corral/client/plainhttp.py",
                    "        if will_close:\n            self._drop(connection)",
                    "        self._drop(connection)  # MUTANT",
                ),
            ),
        ),
        ("tests/client/test_plainhttp.py", "-k", "share_one_connection"),
    ),
    Mutant(
        "plainhttp-reuse-closed",
        "a kept-alive connection the server closed meanwhile is reused (the request fails as "
        "an unreachable server)",
        (
            (
                Patch(
                    "corral/client/plainhttp.py",
                    "if connection is not None and _closed(connection.sock):",
                    "if False:  # MUTANT",
                ),
            ),
        ),
        ("tests/client/test_plainhttp.py", "-k", "closed_meanwhile"),
    ),
    Mutant(
        "client-default-httpx",
        "the client sends to a plain http:// URL through httpx again (its import is most of a "
        "short client process's CPU; issue 14)",
        (
            (
                Patch(
                    "corral/client/sync.py",
                    "http = plainhttp.PlainHTTP(url) if plainhttp.usable(url) else "
                    "self._httpx_client()",
                    "http = self._httpx_client()  # MUTANT",
                ),
            ),
        ),
        ("tests/client/test_client_imports.py",),
    ),
    Mutant(
        "client-imports-wire",
        "the client imports corral.wire (pydantic and the models' build) at import again",
        (
            (
                Patch(
                    "corral/client/core.py",
                    "from corral.client import models, plainhttp, record\n",
                    "from corral.client import models, plainhttp, record\n"
                    "from corral import wire  # noqa: F401  # MUTANT\n",
                ),
            ),
        ),
        ("tests/client/test_client_imports.py",),
    ),
    Mutant(
        "record-integer-loose",
        "a record reads 2.5 as the integer 2 where the wire model refuses it",
        (
            (
                Patch(
                    "corral/client/record.py",
                    "if isinstance(value, float) and not value.is_integer():",
                    "if False:  # MUTANT",
                ),
            ),
        ),
        ("tests/client/test_records.py",),
    ),
    Mutant(
        "records-stale",
        "a wire model gains a field and corral.client.records is not regenerated (the client "
        "would drop it silently)",
        (
            (
                Patch(
                    "corral/wire.py",
                    '    meta: dict[str, str] = Field(default_factory=dict, description="Metadata '
                    'given at creation.")\n',
                    '    meta: dict[str, str] = Field(default_factory=dict, description="Metadata '
                    'given at creation.")\n    mutant: int = 0  # MUTANT\n',
                ),
            ),
        ),
        ("tests/client/test_records.py", "-k", "current"),
    ),
    Mutant(
        "plainhttp-reads-past-the-body",
        "the standard library transport reads an answer past its Content-Length (on a "
        "kept-alive connection it would wait for, or eat, what follows)",
        (
            (
                Patch(
                    "corral/client/plainhttp.py",
                    "    body = reader.read(int(length))\n",
                    "    body = reader.read()  # MUTANT\n",
                ),
            ),
        ),
        ("tests/client/test_plainhttp.py", "-k", "no_further"),
    ),
    # --- issue 14 (warm): the insert and the assignment round in one store unit ---
    Mutant(
        "insert-assign-separate",
        "a new ticket is only inserted; the round reads and writes in units of their own",
        (
            (
                Patch(
                    "corral/controller/assignment.py",
                    "if not quiet or self._starved or self._closed or "
                    "ctl.stopped or ctl.shared_store:",
                    "if True:  # MUTANT",
                ),
            ),
        ),
        ("tests/controller/test_insert_assigning.py", "-k", "one_store_unit"),
    ),
    Mutant(
        "insert-refused-no-round",
        "a refused conditional write (insert unit or round) kicks no round: the ticket waits "
        "beside a ready VM",
        (
            (
                Patch(
                    "corral/controller/assignment.py",
                    "            self.kick()  # someone else moved first: decide again\n",
                    "            pass  # MUTANT\n",
                ),
            ),
        ),
        ("tests/controller/test_insert_assigning.py", "-k", "refused"),
    ),
    Mutant(
        "insert-starved-reads-queue",
        "with tickets waiting, every create's unit reads the whole queue (issue 8 item 3)",
        (
            (
                Patch(
                    "corral/controller/assignment.py",
                    "if not quiet or self._starved or self._closed or "
                    "ctl.stopped or ctl.shared_store:",
                    "if self._closed or ctl.stopped or ctl.shared_store:  # MUTANT",
                ),
            ),
        ),
        ("tests/controller/test_insert_assigning.py", "-k", "only_inserts"),
    ),
    Mutant(
        "insert-assigns-when-closed",
        "a closed assigner (a host that must not assign) still assigns in a create's unit",
        (
            (
                Patch(
                    "corral/controller/assignment.py",
                    "if not quiet or self._starved or self._closed or "
                    "ctl.stopped or ctl.shared_store:",
                    "if not quiet or self._starved or ctl.stopped or ctl.shared_store:  # MUTANT",
                ),
            ),
        ),
        ("tests/controller/test_insert_assigning.py", "-k", "closed_assigner"),
    ),
    Mutant(
        "none-waiting-after-insert",
        "a create's unit records 'no ticket waits' even when its ticket waits: the VM made ready "
        "for it (and the close that frees one) runs no round",
        (
            (
                Patch(
                    "corral/controller/assignment.py",
                    "self._none_waiting = done == decided.queued and inserts == self._inserts "
                    "and busy == 0\n"
                    "        return mine",
                    "self._none_waiting = True  # MUTANT\n        return mine",
                ),
            ),
        ),
        ("tests/controller/test_insert_assigning.py", "-k", "after_a_close"),
    ),
    Mutant(
        "round-ignores-inserts",
        "a round that read before an insert records 'no ticket waits' when it ends",
        (
            (
                Patch(
                    "corral/controller/assignment.py",
                    "self._none_waiting = done == decided.queued and inserts == self._inserts "
                    "and busy == 0\n"
                    "        return done",
                    "self._none_waiting = done == decided.queued  # MUTANT\n        return done",
                ),
            ),
        ),
        ("tests/controller/test_insert_assigning.py", "-k", "hide"),
    ),
    Mutant(
        "skip-kicks-on-shared-store",
        "kicks are skipped on a store other controllers share (their tickets are unseen here)",
        (
            (
                Patch(
                    "corral/controller/assignment.py",
                    "if self._none_waiting and not self._ctl.shared_store:",
                    "if self._none_waiting:  # MUTANT",
                ),
            ),
        ),
        ("tests/controller/test_insert_assigning.py", "-k", "shared_store"),
    ),
    Mutant(
        "snapshot-ignores-unless",
        "a saturated pool's top-up reads (and converts) every waiting ticket anyway",
        (
            (
                Patch(
                    "corral/store/sql/pools.py",
                    "    if unless is not None and unless(counts):\n",
                    "    if False:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/pools/test_store_contract.py", "-k", "bounded_reads"),
    ),
    Mutant(
        "plainhttp-keeps-interrupted",
        "a request interrupted mid-answer keeps its connection: the next request reads its answer",
        (
            (
                Patch(
                    "corral/client/plainhttp.py",
                    "        except BaseException:\n",
                    "        except ZeroDivisionError:  # MUTANT\n",
                ),
            ),
        ),
        ("tests/client/test_plainhttp.py", "-k", "interrupted"),
    ),
    Mutant(
        "plainhttp-loose-numbers",
        "a Content-Length or status code checked with str.isdigit (takes '\u00b2')",
        (
            (
                Patch(
                    "corral/client/plainhttp.py",
                    "    if not _DIGITS.fullmatch(length):\n",
                    "    if not length.isdigit():  # MUTANT\n",
                ),
            ),
        ),
        ("tests/client/test_plainhttp.py", "-k", "broken_answer"),
    ),
    Mutant(
        "round-ignores-inserts-in-flight",
        "a round that began while an insert was in flight records 'no ticket waits'",
        (
            (
                Patch(
                    "corral/controller/assignment.py",
                    "inserts == self._inserts and busy == 0\n        return done",
                    "inserts == self._inserts  # MUTANT\n        return done",
                ),
            ),
        ),
        ("tests/controller/test_insert_assigning.py", "-k", "began_during"),
    ),
    Mutant(
        "insert-one-unit-on-shared-store",
        "a create inserts and assigns in one unit on a shared store (its read precedes its commit)",
        (
            (
                Patch(
                    "corral/controller/assignment.py",
                    "if not quiet or self._starved or self._closed or "
                    "ctl.stopped or ctl.shared_store:",
                    "if not quiet or self._starved or self._closed or ctl.stopped:  # MUTANT",
                ),
            ),
        ),
        ("tests/controller/test_insert_assigning.py", "-k", "unit_of_its_own"),
    ),
    Mutant(
        "insert-not-shielded",
        "a cancelled create cancels the work after its committed unit (an unannounced assignment)",
        (
            (
                Patch(
                    "corral/controller/assignment.py",
                    "return await asyncio.shield(task)",
                    "return await task  # MUTANT",
                ),
            ),
        ),
        ("tests/controller/test_insert_assigning.py", "-k", "cancelled_create"),
    ),
)


class AnchorMissing(Exception):
    """A mutant's anchor is not in the tree exactly once: the mutant must be updated."""


def _patched(patches: tuple[Patch, ...], tree: Path) -> dict[Path, str] | str:
    """The files as ``patches`` leave them, or why they do not apply."""
    edited: dict[Path, str] = {}
    for patch in patches:
        path = tree / patch.path
        text = edited.get(path)
        if text is None:
            if not path.is_file():
                return f"{patch.path} does not exist"
            text = path.read_text()
        found = text.count(patch.anchor)
        if found != 1:
            where = "not found" if found == 0 else f"found {found} times"
            return f"anchor {where} in {patch.path}:\n    {patch.anchor!r}"
        edited[path] = text.replace(patch.anchor, patch.replacement)
    return edited


def apply(mutant: Mutant, tree: Path) -> None:
    """Apply the first variant of ``mutant`` whose anchors all match, to the copy at ``tree``."""
    why = []
    for patches in mutant.variants:
        result = _patched(patches, tree)
        if isinstance(result, dict):
            for path, text in result.items():
                path.write_text(text)
            return
        why.append(result)
    raise AnchorMissing(f"{mutant.name}: " + "; or ".join(why) + "\n  — update the mutant")


def copy_tree(dest: Path, worktree: bool) -> None:
    """Copy the committed tree (``git archive HEAD``) or the working tree to ``dest``."""
    if worktree:
        shutil.copytree(
            ROOT,
            dest,
            ignore=shutil.ignore_patterns(
                ".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".corral"
            ),
            dirs_exist_ok=True,
        )
        return
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "HEAD"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def run_suite(tree: Path, suite: Sequence[str], verbose: bool) -> tuple[bool, float]:
    """Run pytest with ``suite`` in ``tree``; (passed, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("CORRAL_CHAOS_KILLS", "3")
    cmd = [sys.executable, "-m", "pytest", *suite, "-x", "-q", "-p", "no:cacheprovider"]
    started = time.monotonic()
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=not verbose, text=True)
    seconds = time.monotonic() - started
    if out.returncode not in (0, 1) and not verbose:  # 1: tests failed; anything else: broken
        tail = (out.stdout or "")[-2000:] + (out.stderr or "")[-2000:]
        print(f"pytest exited {out.returncode} in {tree}:\n{tail}", file=sys.stderr)
    return out.returncode == 0, seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Run the mutants named (all by default); print the table; non-zero if any survives."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--check", action="store_true", help="only check the anchors")
    parser.add_argument("--worktree", action="store_true", help="copy the working tree")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated runs")
    parser.add_argument("--verbose", action="store_true", help="show pytest's output")
    args = parser.parse_args(argv)
    by_name = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        parser.error(f"unknown mutant(s) {unknown}; known: {sorted(by_name)}")
    chosen = [by_name[n] for n in args.names] if args.names else list(MUTANTS)
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.what}\n    suite: pytest {' '.join(m.suite)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="corral-mutants-") as tmp:
        base = Path(tmp) / "base"
        copy_tree(base, args.worktree)
        missing = []
        for m in chosen:  # every anchor first: stop before spending minutes on a stale list
            probe = Path(tmp) / f"probe-{m.name}"
            shutil.copytree(base, probe)
            try:
                apply(m, probe)
            except AnchorMissing as exc:
                missing.append(str(exc))
            shutil.rmtree(probe)
        if missing:
            print("\n".join(missing), file=sys.stderr)
            return 2
        if args.check:
            print(f"all anchors of {len(chosen)} mutant(s) found exactly once")
            return 0
        rows: list[tuple[str, str, str, float]] = []
        baseline: dict[tuple[str, ...], bool] = {}
        if not args.no_baseline:
            for suite in dict.fromkeys(m.suite for m in chosen):
                ok, seconds = run_suite(base, suite, args.verbose)
                baseline[suite] = ok
                rows.append(("(none)", " ".join(suite), "passes" if ok else "FAILS", seconds))
        survivors = 0
        for m in chosen:
            suite_text = " ".join(m.suite)
            if baseline.get(m.suite) is False:
                rows.append((m.name, suite_text, "baseline failed", 0.0))
                survivors += 1
                continue
            tree = Path(tmp) / m.name
            shutil.copytree(base, tree)
            apply(m, tree)
            ok, seconds = run_suite(tree, m.suite, args.verbose)
            survivors += ok
            rows.append((m.name, suite_text, "NOT CAUGHT" if ok else "caught", seconds))
            shutil.rmtree(tree)
    width = max(len(r[0]) for r in rows)
    swidth = max(len(r[1]) for r in rows)
    print(f"\n{'mutant':<{width}}  {'suite':<{swidth}}  result           seconds")
    for name, suite_text, result, seconds in rows:
        print(f"{name:<{width}}  {suite_text:<{swidth}}  {result:<15}  {seconds:7.1f}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
