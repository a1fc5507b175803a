"""The best durable, FIFO, fenced exclusive lock on one PostgreSQL, beside tooz and corral.

Run: ``python bench/lock_bound.py`` (about four minutes; ``--quick`` for one short run of each).
Needs PostgreSQL (``--pg``, default ``postgresql://root@127.0.0.1:5432/test``: a scratch
database is created next to it and dropped; tooz's advisory locks take no table) and Redis
(``--redis``).

Issue 11 asks for >= 10x tooz-postgresql with FIFO, fencing tokens and grants that survive a
PostgreSQL crash. This bench measures the *ideal* protocol for those guarantees, the minimum
any implementation could do, so the target can be judged against a measurement rather than
an argument. The ideal lock is one row per key, ``bound_lock(key, holder, token, waiters[])``,
driven by raw psycopg with server-side prepared statements, no PL/pgSQL, no Python lock layer:

- acquire: one ``UPDATE ... RETURNING``: free -> holder = me, token + 1; held -> me appended
  to ``waiters`` (the FIFO queue); the row lock serializes contenders and READ COMMITTED's
  re-check of an updated row makes each UPDATE see the latest queue;
- release: one ``UPDATE`` hands the key to ``waiters[1]`` with token + 1 and ``pg_notify``s
  it in the same transaction (delivered after the commit, so after the WAL flush); the
  releaser that wants the key again is appended to the queue in that same statement, or
  re-granted at once when nobody waits: one statement, one durable commit per pair;
- a waiter learns its grant either from the NOTIFY on its only connection (``notify``) or by
  re-reading the row in a loop (``poll``: a lower bound on wake-up latency that burns a core).
  A polled grant is durable too: a synchronous commit becomes visible only after its flush.

Each variant runs with ``synchronous_commit = on`` (grants and tokens survive a crash) and
``off`` (what durability costs). Uncontended is one process on one key; contended is 4
processes on one key in strict FIFO. Every process checks that its tokens strictly increase
and all tokens of a run are distinct. Printed as medians of ``--runs`` windows, with the
hand-over p50/mean in ms (releaser's send -> waiter's grant, one machine's monotonic clock),
the client and server-backend CPU per pair, tooz-pg, tooz-redis and corral's
``PgLockManager`` from the same run (through ``bench/cluster.py``), and each figure's ratio
to 10x tooz-pg.

Reading the figures: every durable figure is bound by the WAL flush (the ideal uncontended
pair is one durable commit round trip; the contended chain adds a flush to every hand-over),
while tooz-pg is bound by CPU (it opens a new connection, so a new server backend, for every
acquire). On a shared machine their ratio moves with what the neighbours load, the disk or the
CPU: compare per round, and look at the commit round trip of the same run.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import select
import statistics
import time
from dataclasses import dataclass
from typing import Any

import cluster  # bench/cluster.py: tooz and corral workers, scratch databases

KEY = "vm/bench"

_SCHEMA = """
CREATE TABLE bound_lock (
    key text PRIMARY KEY,
    holder int,
    token bigint NOT NULL DEFAULT 0,
    waiters int[] NOT NULL DEFAULT '{}',
    sent float8
)
"""
# Free: take it (token + 1). Held: join the queue. All SET expressions read the old row.
_ACQUIRE = """
UPDATE bound_lock SET
    token = token + (holder IS NULL)::int,
    waiters = CASE WHEN holder IS NULL THEN waiters ELSE waiters || $2::int END,
    holder = coalesce(holder, $2::int)
 WHERE key = $1::text
RETURNING holder = $2::int, token
"""
# The holder releases: the head of the queue gets the key (token + 1) and a NOTIFY; with
# ``again`` the releaser joins the tail, or keeps the key (token + 1) when nobody waits.
_RELEASE = """
WITH u AS (
  UPDATE bound_lock SET
      holder = CASE WHEN $3::bool THEN coalesce(waiters[1], $2::int) ELSE waiters[1] END,
      token = token + ($3::bool OR cardinality(waiters) > 0)::int,
      waiters = CASE WHEN $3::bool AND cardinality(waiters) > 0
                     THEN waiters[2:] || $2::int ELSE waiters[2:] END,
      sent = $5::float8
   WHERE key = $1::text AND holder = $2::int
  RETURNING holder, token)
SELECT holder, token,
       CASE WHEN $4::bool AND holder <> $2::int
            THEN pg_notify('bound_' || holder, token || ' ' || $5::float8) END
  FROM u
"""
_POLL = "SELECT holder, token, sent FROM bound_lock WHERE key = $1::text"
_STATEMENTS = {"acquire": _ACQUIRE, "release": _RELEASE, "poll": _POLL}
_COMMAND_OK, _TUPLES_OK = 1, 2  # libpq ExecStatus
_STALL = 10.0  # a waiter not granted within this is a protocol bug: fail loudly


@dataclass(frozen=True, slots=True)
class Result:
    """One process's window: pairs, tokens in grant order, hand-over latencies, CPU."""

    pairs: int
    tokens: list[int]
    handovers: list[float]
    client_cpu: float
    backend_cpu: float


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` from /proc (its server backend)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Raw:
    """One libpq connection driven directly (``PQexecPrepared``): no Python layer between the
    protocol and the loop, so the figures are the server's and the wire's, not a driver's."""

    def __init__(self, url: str, sync: str, me: int) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.pg = self.conn.pgconn
        self.run(f"SET synchronous_commit = {'on' if sync == 'on' else 'off'}")
        self.run(f"LISTEN bound_{me}")
        for name, sql in _STATEMENTS.items():
            res = self.pg.prepare(name.encode(), sql.encode())
            if res.status != _COMMAND_OK:
                raise RuntimeError(f"prepare {name}: {res.error_message.decode()}")
        self.backend = self.pg.backend_pid

    def run(self, sql: str) -> None:
        res = self.pg.exec_(sql.encode())
        if res.status != _COMMAND_OK:
            raise RuntimeError(f"{sql}: {res.error_message.decode()}")

    def row(self, name: bytes, params: list[bytes]) -> list[bytes | None] | None:
        """The first row of prepared statement ``name`` (None: no row)."""
        res = self.pg.exec_prepared(name, params)
        if res.status != _TUPLES_OK:
            raise RuntimeError(f"{name!r}: {res.error_message.decode()}")
        if not res.ntuples:
            return None
        return [res.get_value(0, i) for i in range(res.nfields)]

    def wait_notify(self, last: int) -> tuple[int, float]:
        """Block until a NOTIFY grants a token above ``last`` (older payloads are ignored)."""
        deadline = time.monotonic() + _STALL
        while True:
            note = self.pg.notifies()
            if note is None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.pg.socket], [], [], left)[0]:
                    raise RuntimeError(f"no grant within {_STALL}s: the hand-over stalled")
                self.pg.consume_input()
                continue
            token, sent = note.extra.split()
            if int(token) > last:
                return int(token), float(sent)

    def wait_poll(self, me: int, key: bytes, last: int) -> tuple[int, float]:
        """Re-read the row until it names this process the holder with a token above ``last``."""
        deadline = time.monotonic() + _STALL
        mine = str(me).encode()
        while time.monotonic() < deadline:
            row = self.row(b"poll", [key])
            assert row is not None and row[1] is not None
            if row[0] == mine and int(row[1]) > last:
                return int(row[1]), float(row[2] or 0)
        raise RuntimeError(f"no grant within {_STALL}s: the hand-over protocol stalled")


def _ideal_worker(
    url: str, idx: int, barrier: Any, duration: float, sync: str, wake: str
) -> Result:
    me = idx + 1
    raw = _Raw(url, sync, me)
    try:
        key, mine, notify = KEY.encode(), str(me).encode(), b"t" if wake == "notify" else b"f"
        tokens: list[int] = []
        lat: list[float] = []
        barrier.wait(300)
        cpu0, bcpu0 = time.process_time(), _proc_cpu(raw.backend)
        row = raw.row(b"acquire", [key, mine])
        assert row is not None and row[1] is not None
        granted, token = row[0] == b"t", int(row[1])
        end = time.time() + duration
        n = 0
        while True:
            if not granted:
                if wake == "notify":
                    token, sent = raw.wait_notify(token)
                else:
                    token, sent = raw.wait_poll(me, key, token)
                lat.append(time.perf_counter() - sent)
            tokens.append(token)
            n += 1
            # the critical section is empty; then release (and queue again while in the window)
            again = time.time() < end
            sent_now = repr(time.perf_counter()).encode()
            row = raw.row(b"release", [key, mine, b"t" if again else b"f", notify, sent_now])
            if row is None:
                raise RuntimeError(f"process {me} released a key it did not hold")
            if not again:
                break
            granted = row[0] == mine
            token = int(row[1] or 0) if granted else tokens[-1]
        return Result(n, tokens, lat, time.process_time() - cpu0, _proc_cpu(raw.backend) - bcpu0)
    finally:
        raw.conn.close()


def _corral_sql_worker(url: str, idx: int, barrier: Any, duration: float) -> Result:
    """corral's own lock SQL without its manager: the batch ``PgLockManager`` sends per
    uncontended pair (the previous grant's ``corral_lock_release`` and the next
    ``corral_lock_acquire``, one simple query, one implicit transaction) from a bare libpq
    connection. Splits corral's pair into its server part and its manager's part."""
    import psycopg

    from corral.cluster import hosts

    session = hosts.new_session()
    with psycopg.connect(url, autocommit=True) as conn:
        hosts.register(conn, f"bound-{idx}-{os.getpid()}", session, 600.0)
        pg, backend = conn.pgconn, conn.pgconn.backend_pid

        def batch(sql: str) -> str:
            pg.send_query(sql.encode())
            last = b""
            while (res := pg.get_result()) is not None:
                if res.status != _TUPLES_OK:
                    raise RuntimeError(f"{sql}: {res.error_message.decode()}")
                last = res.get_value(0, 0) or b""
            return last.decode()

        acquire = f"SELECT corral_lock_acquire('{session}', '{session}.%d', 'o', '{KEY}', 'x')"
        release = f"SELECT corral_lock_release('{session}.%d', NULL);"
        tokens: list[int] = []
        barrier.wait(300)
        cpu0, bcpu0 = time.process_time(), _proc_cpu(backend)
        answer = batch(acquire % 1)
        end = time.time() + duration
        n = 0
        while True:
            if not answer.startswith("g "):
                raise RuntimeError(f"uncontended acquire not granted: {answer!r}")
            tokens.append(int(answer[2:].rstrip("sx")))
            n += 1
            if time.time() >= end:
                batch(release % n)
                break
            answer = batch(release % n + acquire % (n + 1))
        return Result(n, tokens, [], time.process_time() - cpu0, _proc_cpu(backend) - bcpu0)


def _corral_worker(url: str, idx: int, barrier: Any, duration: float) -> Result:
    """corral's ``PgLockManager``, as in ``bench/cluster.py``, with the CPU of its process
    (every thread) and of its SQL connection's server backend."""
    import asyncio

    from corral.locks.pg import PgLockManager

    async def main() -> Result:
        async with PgLockManager(url, host_id=f"bound-{idx}-{os.getpid()}", lease=30.0) as locks:
            # a bench may look inside: the backend of the manager's one SQL connection
            backend = locks._batcher._conn.pgconn.backend_pid  # type: ignore[union-attr]
            owner = f"owner-{idx}"
            tokens: list[int] = []
            await asyncio.to_thread(barrier.wait, 300)
            cpu0, bcpu0 = time.process_time(), _proc_cpu(backend)
            end = time.time() + duration
            n = 0
            while time.time() < end:
                async with locks.acquire(KEY, owner=owner) as held:
                    tokens.append(held.token(KEY))
                n += 1
            cpu, bcpu = time.process_time() - cpu0, _proc_cpu(backend) - bcpu0
            return Result(n, tokens, [], cpu, bcpu)

    return asyncio.run(main())


def _run(url: str, idx: int, barrier: Any, duration: float, sync: str, wake: str, out: Any) -> None:
    try:
        if wake == "corral-sql":
            out.put(_corral_sql_worker(url, idx, barrier, duration))
        elif wake == "corral":
            out.put(_corral_worker(url, idx, barrier, duration))
        else:
            out.put(_ideal_worker(url, idx, barrier, duration, sync, wake))
    except BaseException as exc:
        out.put(exc)
        raise


@dataclass(frozen=True, slots=True)
class Window:
    """All processes of one window: pairs/s, hand-over latencies, CPU per pair."""

    rate: float
    handovers: list[float]
    client_us: float
    backend_us: float
    tokens_ok: bool


def measure_window(url: str, procs: int, duration: float, sync: str, wake: str) -> Window:
    """One window of ``procs`` processes on one key: the ideal protocol (``wake`` = notify or
    poll), corral's bare SQL (``corral-sql``) or its manager (``corral``)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE bound_lock SET holder = NULL, waiters = '{}' WHERE key = %s", (KEY,))
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [
        ctx.Process(target=_run, args=(url, i, barrier, duration, sync, wake, out))
        for i in range(procs)
    ]
    for proc in workers:
        proc.start()
    results = [out.get(True, 600) for _ in workers]
    for proc in workers:
        proc.join(60)
    for r in results:
        if isinstance(r, BaseException):
            raise RuntimeError("an ideal-lock worker failed") from r
    tokens = [t for r in results for t in r.tokens]
    ok = len(tokens) == len(set(tokens)) and all(
        all(a < b for a, b in zip(r.tokens, r.tokens[1:], strict=False)) for r in results
    )
    pairs = sum(r.pairs for r in results)
    return Window(
        pairs / duration,
        [x for r in results for x in r.handovers],
        sum(r.client_cpu for r in results) / pairs * 1e6,
        sum(r.backend_cpu for r in results) / pairs * 1e6,
        ok,
    )


# One round, in this order: each figure sits next to the tooz-pg figure it is compared with,
# since the load (other processes on the machine) moves within a minute. A step is
# (label, processes, how): "ideal <sync> <wake>", "corral-sql", or "cluster <kind> <url>".
STEPS = [
    ("tooz-pg", 1, "cluster tooz pg"),
    ("ideal durable", 1, "ideal on notify"),
    ("corral-pg", 1, "corral"),
    ("corral SQL, bare libpq", 1, "corral-sql"),
    ("ideal lazy", 1, "ideal off notify"),
    ("tooz-redis", 1, "cluster tooz redis"),
    ("tooz-pg", 4, "cluster tooz pg"),
    ("ideal durable notify", 4, "ideal on notify"),
    ("ideal durable poll", 4, "ideal on poll"),
    ("corral-pg", 4, "corral"),
    ("ideal lazy notify", 4, "ideal off notify"),
    ("ideal lazy poll", 4, "ideal off poll"),
    ("tooz-redis", 4, "cluster tooz redis"),
]


def _step(how: str, procs: int, seconds: float, urls: dict[str, str]) -> Window:
    what = how.split()
    if what[0] == "ideal":
        return measure_window(urls["scratch"], procs, seconds, what[1], what[2])
    if what[0] in ("corral-sql", "corral"):
        return measure_window(urls["scratch"], procs, seconds, "on", what[0])
    rate, ok = cluster.measure(what[1], urls[what[2]], procs, seconds)
    return Window(rate, [], math.nan, math.nan, ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="one run of 1.5 s per figure")
    args = parser.parse_args()
    if args.runs < 1 or args.seconds <= 0:
        raise SystemExit("--runs must be >= 1 and --seconds > 0")
    runs, seconds = (1, 1.5) if args.quick else (args.runs, args.seconds)
    name, url = cluster._scratch_db(args.pg)
    windows: dict[tuple[str, int], list[Window]] = {}
    loads: list[float] = []
    commits: list[tuple[float, float]] = []
    try:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(_SCHEMA)
            conn.execute("INSERT INTO bound_lock (key) VALUES (%s)", (KEY,))
        urls = {"pg": args.pg, "redis": args.redis, "scratch": url}
        for _ in range(runs):
            for label, procs, how in STEPS:
                windows.setdefault((label, procs), []).append(_step(how, procs, seconds, urls))
            commits.append(cluster.commit_costs(url))
            loads.append(os.getloadavg()[0])
    finally:
        cluster._drop_db(args.pg, name)
    _print(windows, commits, runs, seconds, loads)


def _print(
    windows: dict[tuple[str, int], list[Window]],
    commits: list[tuple[float, float]],
    runs: int,
    seconds: float,
    loads: list[float],
) -> None:
    tooz = {p: [w.rate for w in windows[("tooz-pg", p)]] for p in (1, 4)}
    print(
        f"exclusive acquire+release pairs/s on one key, median of {runs} x {seconds}s; "
        f"'/10x tooz' is the median over rounds of (figure / 10x tooz-pg of the same round); "
        f"load (1 min) after each round {[round(x, 1) for x in loads]}"
    )
    print(
        f"{'':22} {'procs':>5} {'pairs/s':>9} {'/10x tooz':>9} {'hand-over ms':>12} "
        f"{'client us/pair':>14} {'backend us/pair':>15}  runs"
    )
    for (label, procs), ws in windows.items():
        rate = statistics.median(w.rate for w in ws)
        ratio = statistics.median(w.rate / (10 * t) for w, t in zip(ws, tooz[procs], strict=True))
        lat = sorted(x for w in ws for x in w.handovers)
        p50 = f"{lat[len(lat) // 2] * 1e3:.2f}/{statistics.fmean(lat) * 1e3:.2f}" if lat else "-"
        cpu = [statistics.median(getattr(w, f) for w in ws) for f in ("client_us", "backend_us")]
        cells = [f"{c:.0f}" if not math.isnan(c) else "" for c in cpu]
        print(
            f"{label:22} {procs:5} {rate:9,.0f} {ratio:8.2f}x {p50:>12} {cells[0]:>14} "
            f"{cells[1]:>15}  {[round(w.rate) for w in ws]}"
        )
    durable = statistics.median(c[0] for c in commits)
    lazy = statistics.median(c[1] for c in commits)
    print(
        f"one-row commit round trip (median of {runs} x 300, end of each round): durable "
        f"{durable * 1e3:.3f} ms, lazy {lazy * 1e3:.3f} ms -> one durable grant per pair allows "
        f"at most {1 / durable:,.0f} pairs/s; runs {[round(c[0] * 1e3, 3) for c in commits]} ms"
    )
    ok = all(w.tokens_ok for ws in windows.values() for w in ws)
    print(f"fencing tokens (ideal, corral) distinct and increasing per process: {ok}")
    print(
        f"tooz-pg per round: uncontended {[round(x) for x in tooz[1]]}, "
        f"4 processes {[round(x) for x in tooz[4]]}"
    )


if __name__ == "__main__":
    main()
