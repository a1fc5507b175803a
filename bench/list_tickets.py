"""Cost of one allocation round with list tickets (issue 15), pure planner, no I/O.

Usage: python bench/list_tickets.py [--waiting N] [--lists L] [--entries E] [--pools P] [--reps R]

A round over N one-machine tickets, L list tickets of E entries each (alternately by pool and by
tag) and P pools of free VMs, none of which is enough for the list tickets to be served at once
(the worst case: every list ticket searches and then reserves). Prints the median round time over
R repetitions, and the same round without the list tickets for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time

from corral.pools import allocation
from corral.pools.allocation import PoolLimits
from corral.pools.model import VM, Request, Ticket, TicketState, VMState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=1000)
    parser.add_argument("--lists", type=int, default=50)
    parser.add_argument("--entries", type=int, default=8)
    parser.add_argument("--pools", type=int, default=8)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    pools = {
        f"p{i}": PoolLimits(name=f"p{i}", tags=frozenset({"t"}), max=50, reserve_after=0.0)
        for i in range(args.pools)
    }
    vms = [
        VM(name=f"p{i}-{k}", pool=f"p{i}", state=VMState.READY, created_at=0.0, state_since=0.0)
        for i in range(args.pools)
        for k in range(4)
    ]
    singles = [
        Ticket(f"s{n}", f"o{n % 7}", TicketState.WAITING, 1.0, None, pool=f"p{n % args.pools}",
               seq=args.lists + n)
        for n in range(args.waiting)
    ]  # fmt: skip
    lists = []
    for n in range(args.lists):
        parts = tuple(
            Request(pool=f"p{e % args.pools}", count=5) if e % 2 else Request(tags=("t",), count=5)
            for e in range(args.entries)
        )
        lists.append(
            Ticket(f"l{n}", "big", TicketState.WAITING, 0.0, None, seq=n,
                   count=sum(p.count for p in parts), requests=parts)
        )  # fmt: skip
    for label, tickets in (("with lists", lists + singles), ("singles only", singles)):
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            allocation.allocate(tickets, vms, pools, {}, now=10.0)
            times.append(time.perf_counter() - start)
        print(
            f"{label:>13}: {len(tickets)} tickets, median {statistics.median(times) * 1e3:.2f} ms"
        )
    # the search's worst case: no solution, every try used (SEARCH_LIMIT)
    parts = [Request(tags=("t",)) for _ in range(16)]
    options = [["a", "b", "c"]] * 16
    times = []
    for _ in range(args.reps):
        start = time.perf_counter()
        assert allocation.fit_requests(parts, options, {"a": 5, "b": 5, "c": 5}) is None
        times.append(time.perf_counter() - start)
    print(
        f"worst search: {allocation.SEARCH_LIMIT} tries, median "
        f"{statistics.median(times) * 1e3:.2f} ms per list ticket and round"
    )


if __name__ == "__main__":
    main()
