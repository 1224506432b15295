-- pgcache's SQL: what pgcache_watch installs for a table, in either invalidation mode.
--
-- Install once per database:   psql -f examples/invalidation_trigger.sql
-- (and, as a superuser, examples/ddl_trigger.sql for DDL to be followed too)
-- Watch a table:               SELECT pgcache_watch('users');   -- or 'sales.orders'
-- Stop watching:               SELECT pgcache_unwatch('users');
--
-- Two ways to tell pgcache what changed (pgcache's `invalidation_source` setting):
--
-- * replication (recommended; needs wal_level = logical): pgcache_watch adds the table to
--   the publication pgcache streams (`pgcache`, or the database's setting
--   pgcache.publication), creating the publication if needed. No trigger: writers pay
--   nothing, pgcache reads the changes from PostgreSQL's log. A table without a primary key
--   gets REPLICA IDENTITY FULL (PostgreSQL refuses UPDATE and DELETE on a published table
--   without a replica identity); pgcache drops all of its rows on any change, as below.
-- * notify: statement triggers NOTIFY each change (details below). For servers without
--   logical replication.
--
-- pgcache_watch(table) picks the mode from the database's setting pgcache.invalidation_source
-- (ALTER DATABASE app SET pgcache.invalidation_source = 'notify'), else from wal_level
-- (logical: replication). pgcache_watch(table, 'replication' | 'notify') picks it outright.
-- Either way it removes what the other mode installed for the table.
--
-- Notify mode: after each INSERT, UPDATE, DELETE or TRUNCATE statement, PostgreSQL sends on
-- the channel `cache_invalidation` (change it with: ALTER DATABASE app SET pgcache.channel = 'other';
-- only that database-wide setting counts, not a role's or a session's)
-- only the table and the primary-key values of the changed rows, for example
--   {"table":"public.users","op":"UPDATE","keys":[{"id":7}]}
-- in as many notifications as needed to keep each one under 6000 bytes (PostgreSQL's limit
-- is 8000), so wide rows and bulk statements never fail their transaction. An UPDATE that
-- changes the primary key sends the old and the new key. Tables without a primary key and
-- TRUNCATE send {"table":..., "flush":true}: pgcache then drops all of that table's rows.
-- NOTIFY is transactional: nothing is sent for a transaction that rolls back.
--
-- Nothing a writing session sets can stop its own invalidations: the functions fix their
-- search_path (a session's schemas cannot stand in for pg_notify or jsonb_agg), and the
-- channel is read from the database's own setting in the catalog, which only the database
-- owner or a superuser can change, not from the session's value of pgcache.channel.

-- Drop every cached row of a table on every pgcache node, through PostgreSQL itself
-- (PGCACHE.FLUSH reaches the node it is sent to; on a cluster, this reaches every primary):
--   SELECT pgcache_flush('users');
CREATE OR REPLACE FUNCTION pgcache_flush(tbl regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- As in pgcache_notify: only the database's own setting names the channel.
    channel text := coalesce(
        (SELECT nullif(substr(setting, length('pgcache.channel=') + 1), '')
           FROM pg_db_role_setting AS s, unnest(s.setconfig) AS setting
          WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND s.setrole = 0
            AND setting LIKE 'pgcache.channel=%'),
        'cache_invalidation');
    name text;
BEGIN
    SELECT format('%I.%I', n.nspname, c.relname) INTO name
      FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
     WHERE c.oid = tbl;
    PERFORM pg_notify(channel, json_build_object('table', name, 'op', 'FLUSH', 'flush', true)::text);
    -- The replication source reads it from the log, at the transaction's commit.
    IF current_setting('wal_level') = 'logical' THEN
        PERFORM pg_logical_emit_message(true, 'pgcache.flush', name);
    END IF;
END
$$;

-- The keys' values are spelled by the settings below whatever the writing session set (a
-- float key rounded by extra_float_digits = 0 would name another row).
CREATE OR REPLACE FUNCTION pgcache_notify() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
SET IntervalStyle = postgres
SET bytea_output = hex
AS $$
DECLARE
    channel text := coalesce(
        (SELECT nullif(substr(setting, length('pgcache.channel=') + 1), '')
           FROM pg_db_role_setting AS s, unnest(s.setconfig) AS setting
          WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND s.setrole = 0
            AND setting LIKE 'pgcache.channel=%'),
        'cache_invalidation');
    tbl text := quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME);
    old_keys jsonb := '[]';
    new_keys jsonb := '[]';
    payload text;
BEGIN
    IF TG_OP = 'TRUNCATE' OR TG_NARGS = 0 THEN
        PERFORM pg_notify(channel, json_build_object('table', tbl, 'op', TG_OP, 'flush', true)::text);
        RETURN NULL;
    END IF;
    -- The transition tables hold the changed rows; only the key columns (the trigger's
    -- arguments) are sent. Each table is read only by the event that has it.
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        SELECT coalesce(jsonb_agg((SELECT jsonb_object_agg(c, to_jsonb(o) -> c) FROM unnest(TG_ARGV) AS c)), '[]')
          INTO old_keys FROM old_rows o;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT coalesce(jsonb_agg((SELECT jsonb_object_agg(c, to_jsonb(n) -> c) FROM unnest(TG_ARGV) AS c)), '[]')
          INTO new_keys FROM new_rows n;
    END IF;
    FOR payload IN
        WITH changed AS (
            SELECT DISTINCT value AS key FROM jsonb_array_elements(old_keys || new_keys)
        ),
        sized AS (
            SELECT key, sum(length(key::text) + 1) OVER (ORDER BY key::text) / 6000 AS chunk
            FROM changed
        )
        SELECT json_build_object('table', tbl, 'op', TG_OP, 'keys', json_agg(key))::text
        FROM sized GROUP BY chunk
    LOOP
        PERFORM pg_notify(channel, payload);
    END LOOP;
    RETURN NULL;
END;
$$;

-- The mode pgcache_watch installs when none is given: the database's own setting
-- pgcache.invalidation_source (as for the channel, only the database-wide value counts),
-- else replication where the log allows it.
CREATE OR REPLACE FUNCTION pgcache_mode(requested text) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mode text := lower(coalesce(nullif(requested, 'auto'),
        (SELECT nullif(substr(setting, length('pgcache.invalidation_source=') + 1), '')
           FROM pg_db_role_setting AS s, unnest(s.setconfig) AS setting
          WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND s.setrole = 0
            AND setting LIKE 'pgcache.invalidation_source=%'),
        'auto'));
BEGIN
    IF mode = 'auto' THEN
        mode := CASE WHEN current_setting('wal_level') = 'logical' THEN 'replication' ELSE 'notify' END;
    END IF;
    IF mode NOT IN ('replication', 'notify') THEN
        RAISE EXCEPTION 'pgcache: invalidation mode must be replication, notify or auto, not %', mode;
    END IF;
    RETURN mode;
END
$$;

-- The publication the replication source streams: the database's setting pgcache.publication,
-- else pgcache.
CREATE OR REPLACE FUNCTION pgcache_publication() RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT nullif(substr(setting, length('pgcache.publication=') + 1), '')
           FROM pg_db_role_setting AS s, unnest(s.setconfig) AS setting
          WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND s.setrole = 0
            AND setting LIKE 'pgcache.publication=%'),
        'pgcache')
$$;

-- Whether pgcache's publication covers `tbl`: it or one of its ancestors was added to it (a
-- partitioned table's partitions are published with it, later ones too), or it publishes
-- every table.
CREATE OR REPLACE FUNCTION pgcache_published(tbl regclass) RETURNS boolean
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    WITH RECURSIVE up(relid) AS (
        SELECT tbl::oid
      UNION
        SELECT i.inhparent FROM up JOIN pg_catalog.pg_inherits i ON i.inhrelid = up.relid
    )
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication p
                    WHERE p.pubname = pgcache_publication()
                      AND (p.puballtables
                           OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel r
                                       WHERE r.prpubid = p.oid
                                         AND r.prrelid IN (SELECT relid FROM up))))
$$;

-- What a table pgcache's publication covers needs so that it never makes PostgreSQL refuse
-- the application's writes, nor hides its changes: PostgreSQL refuses UPDATE and DELETE on a
-- published table without a replica identity, so every keyless one below `tbl` (its
-- partitions and inheritance children, at any depth) gets REPLICA IDENTITY FULL; and an
-- inheritance child is published only if added itself (a partition is with its root), so
-- children the publication misses are added. Runs for pgcache_watch and, through the DDL
-- event trigger, for a partition or child created or attached later: SECURITY DEFINER, as
-- whoever runs that DDL may not own the publication; it acts only on what the publication
-- covers already.
CREATE OR REPLACE FUNCTION pgcache_publish_below(tbl regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    publication text := pgcache_publication();
    rel regclass;
BEGIN
    IF NOT pgcache_published(tbl) THEN
        RETURN;
    END IF;
    FOR rel IN
        WITH RECURSIVE down(relid) AS (
            SELECT tbl::oid
          UNION
            SELECT i.inhrelid FROM down JOIN pg_catalog.pg_inherits i ON i.inhparent = down.relid
        )
        SELECT c.oid::regclass FROM down JOIN pg_catalog.pg_class c ON c.oid = down.relid
         WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND c.relreplident = 'd'
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = c.oid AND x.indisprimary)
    LOOP
        EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', rel);
    END LOOP;
    FOR rel IN
        WITH RECURSIVE down(relid) AS (
            SELECT tbl::oid
          UNION
            SELECT i.inhrelid FROM down JOIN pg_catalog.pg_inherits i ON i.inhparent = down.relid
        )
        SELECT c.oid::regclass FROM down JOIN pg_catalog.pg_class c ON c.oid = down.relid
         WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relpersistence = 'p'
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel r
                             JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid
                            WHERE p.pubname = publication AND r.prrelid = c.oid)
           AND NOT (SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = publication)
    LOOP
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE ONLY %s', publication, rel);
    END LOOP;
END
$$;

-- Before a mode could be chosen, pgcache_watch took the table alone.
DROP FUNCTION IF EXISTS pgcache_watch(regclass);

-- Statement-level triggers cannot name a transition table that their event does not have,
-- so each event gets its own trigger. The functions run with the search_path they were
-- installed with (FROM CURRENT), so the triggers call the pgcache_notify installed beside them
-- (named with its schema) whatever the caller's search_path is.
CREATE OR REPLACE FUNCTION pgcache_watch(tbl regclass, mode text DEFAULT 'auto') RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    key_columns text;
    notify text;
    publication text := pgcache_publication();
    part regclass;
BEGIN
    PERFORM pgcache_unwatch(tbl);
    IF pgcache_mode(mode) = 'replication' THEN
        IF (SELECT relpersistence FROM pg_catalog.pg_class WHERE oid = tbl) = 'u' THEN
            RAISE EXCEPTION 'pgcache: table % is UNLOGGED: PostgreSQL writes none of its changes to the log, so replication mode never sees them', tbl
                USING HINT = format('Make it logged (ALTER TABLE %s SET LOGGED), or watch it with pgcache_watch(%L, ''notify'') and run pgcache in notify mode.', tbl, tbl::text);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = publication) THEN
            EXECUTE format('CREATE PUBLICATION %I', publication);
        END IF;
        -- A keyless partitioned table's partitions created later have no key either: without
        -- the DDL event trigger to give them a replica identity, PostgreSQL would refuse
        -- their UPDATEs and DELETEs once published.
        IF (SELECT relkind FROM pg_catalog.pg_class WHERE oid = tbl) = 'p'
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index WHERE indrelid = tbl AND indisprimary)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger
                            WHERE evtname = 'pgcache_ddl' AND evtenabled <> 'D') THEN
            RAISE EXCEPTION 'pgcache: table % is partitioned and has no primary key: a partition created later would have no replica identity, and PostgreSQL would refuse its UPDATEs and DELETEs once published', tbl
                USING HINT = format('Install pgcache''s DDL event trigger first (run examples/ddl_trigger.sql as a superuser: it gives new partitions a replica identity), give %s a primary key, or watch it with pgcache_watch(%L, ''notify'').', tbl, tbl::text);
        END IF;
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', publication, tbl);
        -- Keyless tables, and inheritance children (which do not inherit their parent's
        -- primary key), get a replica identity, before any write can find them without.
        PERFORM pgcache_publish_below(tbl);
        RETURN;
    END IF;
    SELECT string_agg(quote_literal(a.attname), ', ' ORDER BY array_position(i.indkey, a.attnum))
      INTO key_columns
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = tbl AND i.indisprimary;
    key_columns := coalesce(key_columns, '');
    SELECT format('%I.%I', n.nspname, p.proname) INTO notify
      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE p.oid = 'pgcache_notify()'::pg_catalog.regprocedure;
    EXECUTE format('CREATE TRIGGER pgcache_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', tbl, notify, key_columns);
    EXECUTE format('CREATE TRIGGER pgcache_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', tbl, notify, key_columns);
    EXECUTE format('CREATE TRIGGER pgcache_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', tbl, notify, key_columns);
    EXECUTE format('CREATE TRIGGER pgcache_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', tbl, notify);
    -- A statement trigger fires only for the table a statement names: a write to a
    -- partition or an inheritance child directly needs triggers of its own (each names its
    -- own table; pgcache applies a child's changes to its ancestors too).
    FOR part IN SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = tbl LOOP
        PERFORM pgcache_watch(part, 'notify');
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION pgcache_unwatch(tbl regclass) RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    publication text := pgcache_publication();
    part regclass;
    trigger_name name;
BEGIN
    FOR part IN SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = tbl LOOP
        PERFORM pgcache_unwatch(part);
    END LOOP;
    -- Only the triggers that exist: DROP TRIGGER IF EXISTS would NOTICE each missing one to
    -- whoever runs the DDL that watches a new partition.
    FOR trigger_name IN
        SELECT tgname FROM pg_catalog.pg_trigger
         WHERE tgrelid = tbl
           AND tgname IN ('pgcache_insert', 'pgcache_update', 'pgcache_delete', 'pgcache_truncate')
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, tbl);
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel r
                 JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid
                WHERE p.pubname = publication AND r.prrelid = tbl) THEN
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', publication, tbl);
    END IF;
END;
$$;
