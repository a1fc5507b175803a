"""Cluster: hosts with leases, and the distributed lock table with its PL/pgSQL functions.

The tables exist on every dialect (the schema check compares them); the functions, which hold
every lock semantic of SPEC §3 for :mod:`corral.locks.pg`, are created on PostgreSQL only.
Every function takes one transaction-level advisory lock, so lock operations of the whole
cluster are serialised and never deadlock; each is one round trip.

Results are text: ``g <token><mode> ...`` granted (tokens in key order), ``w`` waiting,
``c`` cancelled, ``ok``, ``gone`` (no such request), ``E <kind> <message>`` a refusal.
A grant is always committed durably; a transaction that granted nothing (a release nobody was
waiting behind, a cancellation, a request that queued) commits with ``synchronous_commit =
off``: losing it in a server crash only brings back a lock its holder releases again, or drops
a queued request whose waiter is cancelled, when the manager re-reads its state.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION corral_lock_now() RETURNS double precision
LANGUAGE sql AS $$ SELECT extract(epoch FROM clock_timestamp())::double precision $$;

CREATE OR REPLACE FUNCTION corral_lock_tokens(p_id text) RETURNS text
LANGUAGE sql AS $$
  SELECT coalesce(string_agg(g.token::text || g.mode, ' ' ORDER BY u.i), '')
  FROM lock_requests r
  CROSS JOIN LATERAL unnest(string_to_array(r.keys, chr(31))) WITH ORDINALITY AS u(k, i)
  JOIN lock_grants g ON g.key = u.k AND g.owner = r.owner
  WHERE r.id = p_id
$$;

CREATE OR REPLACE FUNCTION corral_lock_durable() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('corral.granted', 'on', true);
  PERFORM set_config('synchronous_commit', 'on', true);
END $$;

CREATE OR REPLACE FUNCTION corral_lock_lazy() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(current_setting('corral.granted', true), '') <> 'on' THEN
    PERFORM set_config('synchronous_commit', 'off', true);
  END IF;
END $$;

CREATE OR REPLACE FUNCTION corral_lock_notify(p_session text, p_id text, p_what text)
RETURNS void LANGUAGE sql AS $$ SELECT pg_notify('cl_' || p_session, p_id || ' ' || p_what) $$;

-- Take the request's keys from its position on until one must queue; true once all granted.
CREATE OR REPLACE FUNCTION corral_lock_advance(p_id text, p_now double precision)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  r lock_requests%ROWTYPE;
  ks text[];
  k text;
  m text;
  res lock_resources%ROWTYPE;
  n_hold integer;
  any_x boolean;
BEGIN
  SELECT * INTO r FROM lock_requests WHERE id = p_id;
  ks := string_to_array(r.keys, chr(31));
  LOOP
    k := ks[r.pos + 1];
    m := substr(r.modes, r.pos + 1, 1);
    SELECT * INTO res FROM lock_resources WHERE key = k;
    IF NOT FOUND THEN
      INSERT INTO lock_resources (key, token, seq, upgrader) VALUES (k, 0, 0, NULL)
      RETURNING * INTO res;
    END IF;
    SELECT count(*), coalesce(bool_or(g.mode = 'x'), false) INTO n_hold, any_x
      FROM lock_grants g WHERE g.key = k;
    IF EXISTS (SELECT 1 FROM lock_requests q WHERE q.wait_key = k)
       OR (n_hold > 0 AND (res.upgrader IS NOT NULL OR m = 'x' OR any_x)) THEN
      UPDATE lock_resources SET seq = seq + 1 WHERE key = k RETURNING seq INTO res.seq;
      UPDATE lock_requests SET wait_key = k, seq = res.seq, pos = r.pos, state = 'waiting'
        WHERE id = p_id;
      RETURN false;
    END IF;
    UPDATE lock_resources SET seq = seq + 1, token = token + 1 WHERE key = k
      RETURNING seq, token INTO res.seq, res.token;
    INSERT INTO lock_grants (key, owner, request_id, mode, token, since, seq)
      VALUES (k, r.owner, p_id, m, res.token, p_now, res.seq);
    PERFORM corral_lock_durable();
    r.pos := r.pos + 1;
    IF r.pos = cardinality(ks) THEN
      UPDATE lock_requests SET state = 'granted', pos = r.pos, wait_key = NULL WHERE id = p_id;
      RETURN true;
    END IF;
  END LOOP;
END $$;

-- Grant what the head of a key's queue (or a pending upgrade) allows.
CREATE OR REPLACE FUNCTION corral_lock_dispatch(p_key text, p_now double precision)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  res lock_resources%ROWTYPE;
  head lock_requests%ROWTYPE;
  up lock_requests%ROWTYPE;
  m text;
  n_hold integer;
  any_x boolean;
  done boolean;
BEGIN
  SELECT * INTO res FROM lock_resources WHERE key = p_key;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  IF res.upgrader IS NOT NULL THEN
    SELECT count(*) INTO n_hold FROM lock_grants WHERE key = p_key;
    IF n_hold = 1 THEN
      UPDATE lock_resources SET token = token + 1, upgrader = NULL WHERE key = p_key
        RETURNING token INTO res.token;
      UPDATE lock_grants SET mode = 'x', token = res.token WHERE key = p_key;
      UPDATE lock_requests SET upgrading = upgrading - 1 WHERE id = res.upgrader
        RETURNING * INTO up;
      PERFORM corral_lock_durable();
      IF up.upgrading = 0 THEN
        PERFORM corral_lock_notify(up.session, up.id, 'u ' || corral_lock_tokens(up.id));
      END IF;
    END IF;
    RETURN;
  END IF;
  LOOP
    SELECT * INTO head FROM lock_requests WHERE wait_key = p_key ORDER BY seq LIMIT 1;
    EXIT WHEN NOT FOUND;
    m := substr(head.modes, head.pos + 1, 1);
    SELECT count(*), coalesce(bool_or(g.mode = 'x'), false) INTO n_hold, any_x
      FROM lock_grants g WHERE g.key = p_key;
    IF n_hold > 0 AND (m = 'x' OR any_x) THEN
      RETURN;
    END IF;
    UPDATE lock_resources SET token = token + 1 WHERE key = p_key RETURNING token INTO res.token;
    INSERT INTO lock_grants (key, owner, request_id, mode, token, since, seq)
      VALUES (p_key, head.owner, head.id, m, res.token, p_now, head.seq);
    UPDATE lock_requests SET wait_key = NULL, pos = pos + 1 WHERE id = head.id;
    PERFORM corral_lock_durable();
    IF head.pos + 1 = cardinality(string_to_array(head.keys, chr(31))) THEN
      UPDATE lock_requests SET state = 'granted' WHERE id = head.id;
      done := true;
    ELSE
      done := corral_lock_advance(head.id, p_now);
    END IF;
    IF done THEN
      PERFORM corral_lock_notify(head.session, head.id, 'g ' || corral_lock_tokens(head.id));
    END IF;
    IF m = 'x' THEN
      RETURN;
    END IF;
  END LOOP;
END $$;

-- Release every grant of a request, key by key in order, re-evaluating each queue.
CREATE OR REPLACE FUNCTION corral_lock_release_grants(p_id text, p_now double precision)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  k text;
BEGIN
  FOR k IN SELECT key FROM lock_grants WHERE request_id = p_id ORDER BY key COLLATE "C" LOOP
    DELETE FROM lock_grants WHERE key = k AND request_id = p_id;
    PERFORM corral_lock_dispatch(k, p_now);
  END LOOP;
END $$;

CREATE OR REPLACE FUNCTION corral_lock_acquire(
  p_session text, p_id text, p_owner text, p_keys text, p_modes text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  now double precision := corral_lock_now();
  ks text[] := string_to_array(p_keys, chr(31));
  r lock_requests%ROWTYPE;
  res lock_resources%ROWTYPE;
  k text;
BEGIN
  PERFORM pg_advisory_xact_lock(7363200);
  IF NOT EXISTS (
    SELECT 1 FROM cluster_hosts WHERE session = p_session AND lease_expires_at >= now
  ) THEN
    RETURN 'E lease the lease of session ' || p_session || ' has expired';
  END IF;
  IF cardinality(ks) = 1 THEN
    -- Fast path: one key that nobody holds or waits for. The owner can then neither hold it
    -- nor wait for it, and a retried call (whose request would hold it) is not taken here.
    UPDATE lock_resources SET token = token + 1, seq = seq + 1
      WHERE key = p_keys
        AND NOT EXISTS (SELECT 1 FROM lock_grants g WHERE g.key = p_keys)
        AND NOT EXISTS (SELECT 1 FROM lock_requests q WHERE q.wait_key = p_keys)
      RETURNING * INTO res;
    IF FOUND THEN
      PERFORM corral_lock_durable();
      INSERT INTO lock_requests (id, session, owner, keys, modes, state, pos, wait_key, seq,
                                 since, upgrading)
        VALUES (p_id, p_session, p_owner, p_keys, p_modes, 'granted', 1, NULL, res.seq, now, 0);
      INSERT INTO lock_grants (key, owner, request_id, mode, token, since, seq)
        VALUES (p_keys, p_owner, p_id, p_modes, res.token, now, res.seq);
      RETURN 'g ' || res.token || p_modes;
    END IF;
  END IF;
  SELECT * INTO r FROM lock_requests WHERE id = p_id;
  IF FOUND THEN  -- a retried call (the connection died after the commit): say what happened
    IF r.state = 'granted' THEN
      RETURN 'g ' || corral_lock_tokens(p_id);
    END IF;
    RETURN 'w';
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
BEGIN
  PERFORM pg_advisory_xact_lock(7363200);
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
  IF NOT FOUND OR r.state <> 'granted' THEN
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
      SELECT 1 FROM cluster_hosts h WHERE h.session = q.session AND h.lease_expires_at >= now));
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

DROP_FUNCTIONS = """
DROP FUNCTION IF EXISTS corral_lock_reap();
DROP FUNCTION IF EXISTS corral_lock_release_all(text);
DROP FUNCTION IF EXISTS corral_lock_downgrade(text);
DROP FUNCTION IF EXISTS corral_lock_cancel_upgrade(text);
DROP FUNCTION IF EXISTS corral_lock_upgrade(text);
DROP FUNCTION IF EXISTS corral_lock_cancel(text);
DROP FUNCTION IF EXISTS corral_lock_release(text, text);
DROP FUNCTION IF EXISTS corral_lock_acquire(text, text, text, text, text);
DROP FUNCTION IF EXISTS corral_lock_release_grants(text, double precision);
DROP FUNCTION IF EXISTS corral_lock_dispatch(text, double precision);
DROP FUNCTION IF EXISTS corral_lock_advance(text, double precision);
DROP FUNCTION IF EXISTS corral_lock_notify(text, text, text);
DROP FUNCTION IF EXISTS corral_lock_lazy();
DROP FUNCTION IF EXISTS corral_lock_durable();
DROP FUNCTION IF EXISTS corral_lock_tokens(text);
DROP FUNCTION IF EXISTS corral_lock_now();
"""


def upgrade() -> None:
    """Create the cluster tables (and, on PostgreSQL, the lock functions)."""
    op.create_table(
        "cluster_hosts",
        sa.Column("host_id", sa.String(255), nullable=False),
        sa.Column("incarnation", sa.Integer(), nullable=False),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("lease", sa.Float(), nullable=False),
        sa.Column("lease_expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("host_id", name="pk_cluster_hosts"),
        sa.UniqueConstraint("session", name="uq_cluster_hosts_session"),
    )
    op.create_table(
        "lock_resources",
        sa.Column("key", sa.String(320), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("upgrader", sa.String(96), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_lock_resources"),
    )
    op.create_table(
        "lock_requests",
        sa.Column("id", sa.String(96), nullable=False),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("keys", sa.Text(), nullable=False),
        sa.Column("modes", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pos", sa.Integer(), nullable=False),
        sa.Column("wait_key", sa.String(320), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("upgrading", sa.Integer(), nullable=False),
        sa.Column("upgrade_keys", sa.Text(), nullable=True),
        sa.Column("upgrade_since", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_lock_requests"),
    )
    op.create_index("ix_lock_requests_wait_key_seq", "lock_requests", ["wait_key", "seq"])
    op.create_index("ix_lock_requests_session", "lock_requests", ["session"])
    op.create_index("ix_lock_requests_owner", "lock_requests", ["owner"])
    op.create_table(
        "lock_grants",
        sa.Column("key", sa.String(320), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("request_id", sa.String(96), nullable=False),
        sa.Column("mode", sa.String(1), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", "owner", name="pk_lock_grants"),
    )
    op.create_index("ix_lock_grants_request_id", "lock_grants", ["request_id"])
    op.create_index("ix_lock_grants_owner", "lock_grants", ["owner"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTIONS)


def downgrade() -> None:
    """Drop the lock functions and the cluster tables."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP_FUNCTIONS)
    for index, table in [
        ("ix_lock_grants_owner", "lock_grants"),
        ("ix_lock_grants_request_id", "lock_grants"),
        ("ix_lock_requests_owner", "lock_requests"),
        ("ix_lock_requests_session", "lock_requests"),
        ("ix_lock_requests_wait_key_seq", "lock_requests"),
    ]:
        op.drop_index(index, table_name=table)
    for table in ["lock_grants", "lock_requests", "lock_resources", "cluster_hosts"]:
        op.drop_table(table)
