"""corral: pools of ready virtual machines, handed out safely under concurrency and crashes.

The package is organised by concept; each subpackage is one layer of the architecture:

- ``corral.locks``     — shared/exclusive resource locks (pure table + asyncio/thread shells)
- ``corral.tasks``     — durable multi-step operations with rollback (pure state machine + engine)
- ``corral.store``     — persistence (memory, SQLite, PostgreSQL) behind one interface
- ``corral.pools``     — pool configuration, VM and ticket lifecycles, allocation (pure)
- ``corral.backends``  — drivers that create and destroy machines (fake, script, ...)
- ``corral.controller``— the daemon tying it together
- ``corral.api`` / ``corral.cli`` / ``corral.client`` — the surfaces
- ``corral.testing``   — in-memory implementations and helpers for users' own tests
"""

__version__ = "0.1.0"
