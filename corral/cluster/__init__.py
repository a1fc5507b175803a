"""Several hosts on one PostgreSQL (SPEC §8): the building blocks.

- :mod:`corral.cluster.hosts`: registering a host (incarnation, session, lease) and renewing it.
- :mod:`corral.cluster.batcher`: one thread that runs SQL commands in order, several per
  transaction (commits shared between contenders), reconnecting after a lost connection.
- :mod:`corral.cluster.notify`: one thread that LISTENs, heartbeats, and reconnects.

The distributed lock manager built on them is :mod:`corral.locks.pg`. The controller does not
use any of this yet (see ``docs/cluster.md``).
"""
