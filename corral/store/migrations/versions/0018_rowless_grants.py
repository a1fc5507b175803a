"""Lock functions: a one-key grant made at once writes no ``lock_requests`` row (issue 11).

A one-key request granted on arrival (nobody holds or waits for the key) was three writes
(the resource's counters, a request row and a grant row: heap plus seven index entries) and
three more to release. Such a request is now only its grant: ``lock_grants.request_id`` names
it, and the request's session is the part of its id before the first ``.`` (the manager names
requests ``<session>.<n>``). Its request row is made only if it is ever needed (an upgrade or a
downgrade: ``corral_lock_materialize``). Every function that looked a request up by id also
knows such a grant: the tokens, a retried acquire, a release (the new fast path), a
cancellation (answers the grant), ``release_all`` and the reaper (by the id's session). A key
seen for the first time also takes the fast path (its resource row is inserted with token 1)
instead of the general one. Nothing else changes: tokens, FIFO, durability (the grant still
makes the transaction durable unless covered) and NOTIFYs are as in migration 0007.

Revision ID: 0018_rowless_grants
Revises: 0017_cluster_events
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0018_rowless_grants"
down_revision = "0017_cluster_events"
branch_labels = None
depends_on = None

FUNCTIONS = r"""
-- A grant made without a request row: make its row (one key, granted), for the functions
-- that keep per-request state there (upgrade, downgrade). Does nothing if the row exists.
CREATE OR REPLACE FUNCTION corral_lock_materialize(p_id text) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO lock_requests (id, session, owner, keys, modes, state, pos, wait_key, seq, since,
                             upgrading)
  SELECT g.request_id, split_part(g.request_id, '.', 1), g.owner, g.key, g.mode, 'granted', 1,
         NULL, g.seq, g.since, 0
    FROM lock_grants g
   WHERE g.request_id = p_id
     AND NOT EXISTS (SELECT 1 FROM lock_requests q WHERE q.id = p_id)
$$;

CREATE OR REPLACE FUNCTION corral_lock_tokens(p_id text) RETURNS text
LANGUAGE sql AS $$
  SELECT coalesce(
    (SELECT string_agg(g.token::text || g.mode, ' ' ORDER BY u.i)
       FROM lock_requests r
      CROSS JOIN LATERAL unnest(string_to_array(r.keys, chr(31))) WITH ORDINALITY AS u(k, i)
       JOIN lock_grants g ON g.key = u.k AND g.owner = r.owner
      WHERE r.id = p_id),
    -- a grant without a request row: one key
    (SELECT string_agg(g.token::text || g.mode, ' ') FROM lock_grants g WHERE g.request_id = p_id),
    '')
$$;

CREATE OR REPLACE FUNCTION corral_lock_acquire(
  p_session text, p_id text, p_owner text, p_keys text, p_modes text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  now double precision := corral_lock_now();
  ks text[];
  r lock_requests%ROWTYPE;
  tok bigint;
  sq bigint;
  k text;
BEGIN
  PERFORM pg_advisory_xact_lock(7363200);
  IF NOT EXISTS (
    SELECT 1 FROM cluster_hosts WHERE session = p_session AND lease_expires_at >= now
  ) THEN
    RETURN 'E lease the lease of session ' || p_session || ' has expired';
  END IF;
  IF strpos(p_keys, chr(31)) = 0 THEN
    -- Fast path: one key that nobody holds or waits for, or a key never seen. The owner can
    -- then neither hold it nor wait for it, and a retried call (whose grant would hold it) is
    -- not taken here. Only the grant is written: no request row.
    UPDATE lock_resources SET token = token + 1, seq = seq + 1
      WHERE key = p_keys
        AND NOT EXISTS (SELECT 1 FROM lock_grants g WHERE g.key = p_keys)
        AND NOT EXISTS (SELECT 1 FROM lock_requests q WHERE q.wait_key = p_keys)
      RETURNING token, seq INTO tok, sq;
    IF NOT FOUND THEN
      -- the advisory lock is held: a conflict means the key exists (held or awaited)
      INSERT INTO lock_resources (key, token, seq, upgrader) VALUES (p_keys, 1, 1, NULL)
        ON CONFLICT (key) DO NOTHING RETURNING token, seq INTO tok, sq;
    END IF;
    IF tok IS NOT NULL THEN
      PERFORM set_config('corral.granted', 'on', true),
              set_config('synchronous_commit', 'on', true);
      INSERT INTO lock_grants (key, owner, request_id, mode, token, since, seq)
        VALUES (p_keys, p_owner, p_id, p_modes, tok, now, sq);
      RETURN 'g ' || tok || p_modes;
    END IF;
  END IF;
  ks := string_to_array(p_keys, chr(31));
  SELECT * INTO r FROM lock_requests WHERE id = p_id;
  IF FOUND THEN  -- a retried call (the connection died after the commit): say what happened
    IF r.state = 'granted' THEN
      RETURN 'g ' || corral_lock_tokens(p_id);
    END IF;
    RETURN 'w';
  END IF;
  IF EXISTS (SELECT 1 FROM lock_grants WHERE request_id = p_id) THEN  -- retried, fast path
    RETURN 'g ' || corral_lock_tokens(p_id);
  END IF;
  SELECT g.key INTO k FROM lock_grants g WHERE g.owner = p_owner AND g.key = ANY (ks) LIMIT 1;
  IF FOUND THEN
    RETURN 'E held owner ' || quote_literal(p_owner) || ' already holds ' || quote_literal(k);
  END IF;
  SELECT u.k INTO k FROM lock_requests q
    CROSS JOIN LATERAL unnest(string_to_array(q.keys, chr(31))) AS u(k)
    WHERE q.owner = p_owner AND q.state = 'waiting' AND u.k = ANY (ks) LIMIT 1;
  IF FOUND THEN
    RETURN 'E held owner ' || quote_literal(p_owner) || ' already waits for ' || quote_literal(k);
  END IF;
  INSERT INTO lock_requests (id, session, owner, keys, modes, state, pos, wait_key, seq, since,
                             upgrading)
    VALUES (p_id, p_session, p_owner, p_keys, p_modes, 'waiting', 0, NULL, 0, now, 0);
  IF corral_lock_advance(p_id, now) THEN
    RETURN 'g ' || corral_lock_tokens(p_id);
  END IF;
  -- Queued without any grant: a lazy commit is enough. A queue entry lost in a server crash
  -- is found missing when the manager re-reads its state, and its waiter is cancelled.
  PERFORM corral_lock_lazy();
  RETURN 'w';
END $$;

CREATE OR REPLACE FUNCTION corral_lock_release(p_id text, p_key text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  now double precision := corral_lock_now();
  r lock_requests%ROWTYPE;
  k text;
BEGIN
  PERFORM pg_advisory_xact_lock(7363200);
  -- Fastest path: a grant without a request row (one key, never upgraded).
  DELETE FROM lock_grants g WHERE g.request_id = p_id AND (p_key IS NULL OR g.key = p_key)
    AND NOT EXISTS (SELECT 1 FROM lock_requests q WHERE q.id = p_id)
    RETURNING g.key INTO k;
  IF FOUND THEN
    IF EXISTS (SELECT 1 FROM lock_requests q WHERE q.wait_key = k)
       OR EXISTS (SELECT 1 FROM lock_resources x WHERE x.key = k AND x.upgrader IS NOT NULL) THEN
      PERFORM corral_lock_dispatch(k, now);
    END IF;
    IF coalesce(current_setting('corral.granted', true), '') <> 'on' THEN
      PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    RETURN 'ok';
  END IF;
  IF p_key IS NULL THEN
    -- Fast path: a one-key request with no upgrade pending, nobody behind it.
    DELETE FROM lock_requests WHERE id = p_id AND state = 'granted' AND upgrading = 0
      AND strpos(keys, chr(31)) = 0 RETURNING * INTO r;
    IF FOUND THEN
      DELETE FROM lock_grants WHERE key = r.keys AND owner = r.owner;
      IF EXISTS (SELECT 1 FROM lock_requests q WHERE q.wait_key = r.keys)
         OR EXISTS (SELECT 1 FROM lock_resources x WHERE x.key = r.keys
                    AND x.upgrader IS NOT NULL) THEN
        PERFORM corral_lock_dispatch(r.keys, now);
      END IF;
      PERFORM corral_lock_lazy();
      RETURN 'ok';
    END IF;
  END IF;
  SELECT * INTO r FROM lock_requests WHERE id = p_id;
  IF NOT FOUND AND EXISTS (SELECT 1 FROM lock_grants WHERE request_id = p_id) THEN
    RETURN 'E notheld request ' || p_id || ' does not hold ' || quote_literal(p_key);
  END IF;
  IF NOT FOUND OR r.state <> 'granted' THEN
    RETURN 'gone';
  END IF;
  IF p_key IS NULL THEN
    IF r.upgrading > 0 THEN
      UPDATE lock_resources SET upgrader = NULL WHERE upgrader = p_id;
    END IF;
    DELETE FROM lock_requests WHERE id = p_id;
    PERFORM corral_lock_release_grants(p_id, now);
  ELSE
    IF NOT EXISTS (SELECT 1 FROM lock_grants WHERE request_id = p_id AND key = p_key) THEN
      RETURN 'E notheld ' || quote_literal(r.owner) || ' does not hold ' || quote_literal(p_key);
    END IF;
    IF EXISTS (SELECT 1 FROM lock_resources WHERE key = p_key AND upgrader = p_id) THEN
      UPDATE lock_resources SET upgrader = NULL WHERE key = p_key;
      UPDATE lock_requests SET upgrading = upgrading - 1 WHERE id = p_id RETURNING * INTO r;
    END IF;
    DELETE FROM lock_grants WHERE request_id = p_id AND key = p_key;
    IF NOT EXISTS (SELECT 1 FROM lock_grants WHERE request_id = p_id) THEN
      DELETE FROM lock_requests WHERE id = p_id;
    ELSIF r.upgrading = 0 AND r.upgrade_keys IS NOT NULL THEN
      PERFORM corral_lock_notify(r.session, p_id, 'u ' || corral_lock_tokens(p_id));
    END IF;
    PERFORM corral_lock_dispatch(p_key, now);
  END IF;
  PERFORM corral_lock_lazy();
  RETURN 'ok';
END $$;

CREATE OR REPLACE FUNCTION corral_lock_cancel(p_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  now double precision := corral_lock_now();
  r lock_requests%ROWTYPE;
BEGIN
  PERFORM pg_advisory_xact_lock(7363200);
  SELECT * INTO r FROM lock_requests WHERE id = p_id;
  IF NOT FOUND THEN
    IF EXISTS (SELECT 1 FROM lock_grants WHERE request_id = p_id) THEN
      RETURN 'g ' || corral_lock_tokens(p_id);  -- granted on arrival, without a row
    END IF;
    RETURN 'gone';
  ELSIF r.state = 'granted' THEN
    RETURN 'g ' || corral_lock_tokens(p_id);
  END IF;
  DELETE FROM lock_requests WHERE id = p_id;
  PERFORM corral_lock_release_grants(p_id, now);
  PERFORM corral_lock_dispatch(r.wait_key, now);
  PERFORM corral_lock_lazy();
  RETURN 'c';
END $$;

CREATE OR REPLACE FUNCTION corral_lock_upgrade(p_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  now double precision := corral_lock_now();
  r lock_requests%ROWTYPE;
  ks text[];
  k text;
  other text;
BEGIN
  PERFORM pg_advisory_xact_lock(7363200);
  PERFORM corral_lock_durable();
  PERFORM corral_lock_materialize(p_id);
  SELECT * INTO r FROM lock_requests WHERE id = p_id;
  IF NOT FOUND OR r.state <> 'granted' THEN
    RETURN 'E released the lock of request ' || p_id || ' was released';
  ELSIF r.upgrading > 0 THEN
    RETURN 'w';
  END IF;
  ks := ARRAY(SELECT key FROM lock_grants WHERE request_id = p_id AND mode = 's'
              ORDER BY key COLLATE "C");
  IF cardinality(ks) = 0 THEN
    RETURN 'g ' || corral_lock_tokens(p_id);
  END IF;
  SELECT q.owner, res.key INTO other, k FROM lock_resources res
    JOIN lock_requests q ON q.id = res.upgrader WHERE res.key = ANY (ks) LIMIT 1;
  IF FOUND THEN
    RETURN 'E conflict owner ' || quote_literal(other) || ' is already upgrading '
      || quote_literal(k) || '; ' || quote_literal(r.owner) || ' upgrading too would deadlock';
  END IF;
  UPDATE lock_requests SET upgrading = cardinality(ks),
    upgrade_keys = array_to_string(ks, chr(31)), upgrade_since = now WHERE id = p_id;
  FOREACH k IN ARRAY ks LOOP
    UPDATE lock_resources SET upgrader = p_id WHERE key = k;
    PERFORM corral_lock_dispatch(k, now);
  END LOOP;
  SELECT * INTO r FROM lock_requests WHERE id = p_id;
  IF r.upgrading = 0 THEN
    RETURN 'g ' || corral_lock_tokens(p_id);
  END IF;
  RETURN 'w';
END $$;

CREATE OR REPLACE FUNCTION corral_lock_cancel_upgrade(p_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  now double precision := corral_lock_now();
  r lock_requests%ROWTYPE;
  k text;
BEGIN
  PERFORM pg_advisory_xact_lock(7363200);
  SELECT * INTO r FROM lock_requests WHERE id = p_id;
  IF NOT FOUND AND EXISTS (SELECT 1 FROM lock_grants WHERE request_id = p_id) THEN
    RETURN 'g ' || corral_lock_tokens(p_id);  -- a grant without a row was never upgrading
  ELSIF NOT FOUND OR r.state <> 'granted' THEN
    RETURN 'gone';
  ELSIF r.upgrading = 0 THEN
    RETURN 'g ' || corral_lock_tokens(p_id);
  END IF;
  UPDATE lock_requests SET upgrading = 0 WHERE id = p_id;
  UPDATE lock_resources SET upgrader = NULL WHERE upgrader = p_id;
  FOREACH k IN ARRAY string_to_array(r.upgrade_keys, chr(31)) LOOP
    IF EXISTS (SELECT 1 FROM lock_grants WHERE key = k AND request_id = p_id) THEN
      UPDATE lock_grants SET mode = 's' WHERE key = k AND request_id = p_id;
      PERFORM corral_lock_dispatch(k, now);
    END IF;
  END LOOP;
  PERFORM corral_lock_lazy();
  RETURN 'c';
END $$;

CREATE OR REPLACE FUNCTION corral_lock_downgrade(p_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  now double precision := corral_lock_now();
  r lock_requests%ROWTYPE;
  k text;
BEGIN
  PERFORM pg_advisory_xact_lock(7363200);
  PERFORM corral_lock_materialize(p_id);
  SELECT * INTO r FROM lock_requests WHERE id = p_id;
  IF NOT FOUND OR r.state <> 'granted' THEN
    RETURN 'gone';
  ELSIF r.upgrading > 0 THEN
    RETURN 'E conflict request ' || p_id || ' is being upgraded; cannot downgrade now';
  END IF;
  FOR k IN SELECT key FROM lock_grants WHERE request_id = p_id AND mode = 'x'
           ORDER BY key COLLATE "C" LOOP
    UPDATE lock_grants SET mode = 's' WHERE key = k AND request_id = p_id;
    PERFORM corral_lock_dispatch(k, now);
  END LOOP;
  PERFORM corral_lock_lazy();
  RETURN 'ok';
END $$;

-- Cancel everything the owner waits for, then release everything it holds (on any host).
CREATE OR REPLACE FUNCTION corral_lock_release_all(p_owner text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  now double precision := corral_lock_now();
  r lock_requests%ROWTYPE;
  g lock_grants%ROWTYPE;
  wk text;
  n integer := 0;
BEGIN
  PERFORM pg_advisory_xact_lock(7363200);
  FOR r IN SELECT * FROM lock_requests WHERE owner = p_owner AND state = 'waiting'
           ORDER BY since, id LOOP
    DELETE FROM lock_requests WHERE id = r.id AND state = 'waiting' RETURNING wait_key INTO wk;
    IF FOUND THEN
      PERFORM corral_lock_release_grants(r.id, now);
      PERFORM corral_lock_dispatch(wk, now);
      PERFORM corral_lock_notify(r.session, r.id, 'c was cancelled by release_all');
      n := n + 1;
    END IF;
  END LOOP;
  FOR r IN SELECT * FROM lock_requests WHERE owner = p_owner AND state = 'granted' LOOP
    UPDATE lock_resources SET upgrader = NULL WHERE upgrader = r.id;
    DELETE FROM lock_requests WHERE id = r.id;
    PERFORM corral_lock_release_grants(r.id, now);
    PERFORM corral_lock_notify(r.session, r.id, 'r');
    n := n + 1;
  END LOOP;
  FOR g IN SELECT * FROM lock_grants x WHERE x.owner = p_owner
             AND NOT EXISTS (SELECT 1 FROM lock_requests q WHERE q.id = x.request_id)
           ORDER BY x.key COLLATE "C" LOOP
    DELETE FROM lock_grants WHERE key = g.key AND owner = g.owner;
    PERFORM corral_lock_dispatch(g.key, now);
    PERFORM corral_lock_notify(split_part(g.request_id, '.', 1), g.request_id, 'r');
    n := n + 1;
  END LOOP;
  PERFORM corral_lock_lazy();
  RETURN n::text;
END $$;

-- Free every request of a session whose host lease has lapsed (or was superseded).
CREATE OR REPLACE FUNCTION corral_lock_reap() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  now double precision := corral_lock_now();
  dead text[];
  ks text[];
  k text;
BEGIN
  PERFORM pg_advisory_xact_lock(7363200);
  dead := ARRAY(
    SELECT q.id FROM lock_requests q WHERE NOT EXISTS (
      SELECT 1 FROM cluster_hosts h WHERE h.session = q.session AND h.lease_expires_at >= now)
    UNION ALL
    SELECT g.request_id FROM lock_grants g
     WHERE NOT EXISTS (SELECT 1 FROM lock_requests q WHERE q.id = g.request_id)
       AND NOT EXISTS (
         SELECT 1 FROM cluster_hosts h
          WHERE h.session = split_part(g.request_id, '.', 1) AND h.lease_expires_at >= now));
  IF cardinality(dead) = 0 THEN
    RETURN 0;
  END IF;
  ks := ARRAY(
    SELECT DISTINCT t.k COLLATE "C" FROM (
      SELECT wait_key AS k FROM lock_requests WHERE id = ANY (dead) AND wait_key IS NOT NULL
      UNION SELECT key FROM lock_grants WHERE request_id = ANY (dead)) t
    ORDER BY 1);
  UPDATE lock_resources SET upgrader = NULL WHERE upgrader = ANY (dead);
  DELETE FROM lock_requests WHERE id = ANY (dead);
  DELETE FROM lock_grants WHERE request_id = ANY (dead);
  FOREACH k IN ARRAY ks LOOP
    PERFORM corral_lock_dispatch(k, now);
  END LOOP;
  RETURN cardinality(dead);
END $$;
"""

# Back to migration 0007's functions: every grant gets its request row first.
MATERIALIZE_ALL = """
INSERT INTO lock_requests (id, session, owner, keys, modes, state, pos, wait_key, seq, since,
                           upgrading)
SELECT g.request_id, split_part(g.request_id, '.', 1), g.owner, g.key, g.mode, 'granted', 1,
       NULL, g.seq, g.since, 0
  FROM lock_grants g
 WHERE NOT EXISTS (SELECT 1 FROM lock_requests q WHERE q.id = g.request_id);
DROP FUNCTION IF EXISTS corral_lock_materialize(text);
"""


def upgrade() -> None:
    """Replace the lock functions (PostgreSQL only; no table changes)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTIONS)


def downgrade() -> None:
    """Give every grant its request row, then restore migration 0007's functions."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT pg_advisory_xact_lock(7363200)")
        op.execute(MATERIALIZE_ALL)
        path = Path(__file__).with_name("0007_cluster.py")
        spec = importlib.util.spec_from_file_location("corral_migration_0007", path)
        assert spec is not None and spec.loader is not None  # noqa: S101 - a file of this tree
        previous = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(previous)
        op.execute(previous.FUNCTIONS)
