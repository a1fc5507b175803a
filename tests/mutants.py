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
