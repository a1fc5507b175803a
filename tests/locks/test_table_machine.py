"""A hypothesis state machine over the pure lock table: random requests, releases, cancels,
timeouts, upgrades and downgrades across several owners and keys, with the SPEC §3 invariants
checked after every step."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from corral import exceptions
from corral.locks.keys import EXCLUSIVE, SHARED
from corral.locks.table import (
    G_MODE,
    G_SEQ,
    G_TOKEN,
    GRANTED,
    WAITING,
    LockTable,
    Request,
)

OWNERS = ["t1", "t2", "t3", "t4"]
KEYS = ["vm/a", "vm/b", "vm/c", "pool/x"]
modes = st.sampled_from([SHARED, EXCLUSIVE])


class LockTableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = LockTable()
        self.now = 0.0
        self.requests: list[Request] = []
        self.tokens_seen: dict[str, int] = {}  # newest token observed per key
        self.grant_tokens: dict[tuple[int, str], int] = {}  # (request, key) -> token observed

    def _with(self, state: object) -> list[Request]:
        return [r for r in self.requests if r.state is state]

    def _claims(self, owner: str) -> set[str]:
        claimed: set[str] = set()
        for r in self.requests:
            if r.owner == owner and r.state is WAITING:
                claimed.update(r.keys)
            if r.owner == owner and r.state is GRANTED:
                claimed.update(r.grants)
        return claimed

    @rule(
        owner=st.sampled_from(OWNERS),
        wanted=st.dictionaries(st.sampled_from(KEYS), modes, min_size=1, max_size=3),
        timeout=st.one_of(st.none(), st.floats(0.0, 5.0)),
    )
    def submit(self, owner: str, wanted: dict[str, object], timeout: float | None) -> None:
        keys = tuple(sorted(wanted))
        r = Request(owner, keys, tuple(wanted[k] for k in keys), timeout)  # type: ignore[misc]
        conflict = bool(self._claims(owner) & set(keys))
        try:
            self.table.submit(r, self.now)
        except exceptions.AlreadyHeld:
            assert conflict
            return
        assert not conflict
        self.requests.append(r)

    @precondition(lambda self: self._with(GRANTED))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from(self._with(GRANTED)))
        self.table.release(r, self.now)

    @precondition(lambda self: self._with(WAITING))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from(self._with(WAITING)))
        self.table.cancel(r, self.now)

    @rule(step=st.floats(0.0, 3.0))
    def tick_and_expire(self, step: float) -> None:
        self.now += step
        timed_out, woken = self.table.expire(self.now)
        for r in timed_out:
            assert r.deadline is not None and r.deadline <= self.now
        assert all(r.state is GRANTED for r in woken)
        for r in self._with(WAITING):
            assert r.deadline is None or r.deadline > self.now

    @precondition(lambda self: self._with(GRANTED))
    @rule(data=st.data())
    def upgrade(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from(self._with(GRANTED)))
        shared = [k for k, g in r.grants.items() if g[G_MODE] is SHARED]
        others = [
            o
            for o in self._with(GRANTED)
            if o is not r and o.upgrading and set(shared) & set(o.upgrade_keys)
        ]
        try:
            done = self.table.upgrade(r, self.now)
        except exceptions.UpgradeConflict:
            assert others or r.upgrading
            return
        assert not others
        if done:
            assert all(g[G_MODE] is EXCLUSIVE for g in r.grants.values())

    @precondition(lambda self: [r for r in self._with(GRANTED) if r.upgrading])
    @rule(data=st.data())
    def cancel_upgrade(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from([r for r in self._with(GRANTED) if r.upgrading]))
        self.table.cancel_upgrade(r, self.now)
        assert r.upgrading == 0

    @precondition(lambda self: [r for r in self._with(GRANTED) if not r.upgrading])
    @rule(data=st.data())
    def downgrade(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from([r for r in self._with(GRANTED) if not r.upgrading]))
        self.table.downgrade(r, self.now)
        assert all(g[G_MODE] is SHARED for g in r.grants.values())

    @rule(owner=st.sampled_from(OWNERS), key=st.sampled_from(KEYS))
    def release_key(self, owner: str, key: str) -> None:
        holds = any(r.owner == owner and key in r.grants for r in self._with(GRANTED))
        try:
            self.table.release_key(owner, key, self.now)
        except exceptions.NotHeld:
            assert not holds
        else:
            assert holds

    @rule(owner=st.sampled_from(OWNERS))
    def release_all(self, owner: str) -> None:
        self.table.release_all(owner, self.now)
        assert not self._claims(owner)

    @rule()
    def release_everything(self) -> None:
        for owner in OWNERS:
            self.table.release_all(owner, self.now)
        assert not self._with(GRANTED) and not self._with(WAITING)

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def exclusive_is_alone(self) -> None:
        for key in KEYS:
            grants = self.table.grants_of(key)
            if any(g[G_MODE] is EXCLUSIVE for g in grants):
                assert len(grants) == 1, f"{key}: exclusive holder alongside others: {grants}"

    @invariant()
    def strict_fifo(self) -> None:
        for key in KEYS:
            grants = self.table.grants_of(key)
            queue = self.table.queue_of(key)
            for waiter in queue:
                wmode = waiter.modes[waiter.pos]
                assert waiter.keys[waiter.pos] == key
                for g in grants:
                    if g[G_SEQ] > waiter.seq:
                        assert wmode is SHARED and g[G_MODE] is SHARED, (
                            f"{key}: granted {g[0]!r} while earlier {waiter!r} waits"
                        )
            if queue:  # no missed wake-up: the head is really blocked
                head = queue[0]
                hmode = head.modes[head.pos]
                assert grants, f"{key}: waiters but no holder"
                upgrading = any(g[0].upgrading and key in g[0].upgrade_keys for g in grants)
                assert (
                    hmode is EXCLUSIVE or any(g[G_MODE] is EXCLUSIVE for g in grants) or upgrading
                ), f"{key}: head {head!r} could be granted"

    @invariant()
    def tokens_strictly_increase(self) -> None:
        fresh: dict[str, list[int]] = {}
        for r in self._with(GRANTED) + self._with(WAITING):
            for key, g in r.grants.items():
                ident = (id(r), key)
                if self.grant_tokens.get(ident) != g[G_TOKEN]:
                    fresh.setdefault(key, []).append(g[G_TOKEN])
                    self.grant_tokens[ident] = g[G_TOKEN]
        for key in KEYS:
            last = self.table.last_token(key)
            assert last >= self.tokens_seen.get(key, 0), f"{key}: token went back"
            new = fresh.get(key, [])
            assert len(set(new)) == len(new)
            assert all(t > self.tokens_seen.get(key, 0) and t <= last for t in new)
            self.tokens_seen[key] = last

    @invariant()
    def released_means_empty_queues(self) -> None:
        if not any(self.table.grants_of(k) for k in KEYS):
            assert not self.table.waiting()
            assert all(not self.table.queue_of(k) for k in KEYS)
            assert self.table.status() == []

    @invariant()
    def table_agrees_with_requests(self) -> None:
        waiting = self._with(WAITING)
        assert set(self.table.waiting()) == set(waiting)
        for key in KEYS:
            holders = {g[0] for g in self.table.grants_of(key)}
            expected = {
                r for r in self.requests if r.state in (GRANTED, WAITING) and key in r.grants
            }
            assert holders == expected


LockTableMachine.TestCase.settings = settings(
    max_examples=75,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLockTable = LockTableMachine.TestCase
