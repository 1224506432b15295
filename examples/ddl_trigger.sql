-- pgcache's DDL event trigger: run once per database, as a superuser (event triggers need
-- one), beside examples/invalidation_trigger.sql:
--
--   psql -U postgres -d app -f examples/ddl_trigger.sql
--
-- What a statement reads, and what a row looks like, change without any row change (a
-- partition created or attached, a view replaced, a column added or retyped, a policy or a
-- function changed). This event trigger tells pgcache, through the same feed as the rows'
-- changes and at the same point in commit order (a logical message in replication mode, a
-- notification in notify mode): pgcache then learns its QUERY statements again and drops the
-- rows and results of the relations the DDL touched and of their ancestors (every QUERY
-- result when a function, type or domain changed). A new partition or inheritance child of
-- a table watched with triggers gets triggers of its own. Run by anyone but a superuser, this
-- file changes nothing and says so (a NOTICE); DDL then needs PGCACHE.FLUSH of the tables it
-- changed.
DO $install$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE NOTICE 'pgcache: DDL is not followed: its event trigger needs a superuser to install (run examples/ddl_trigger.sql as one); until then, run PGCACHE.FLUSH <table> after DDL that changes a table''s rows or what a statement reads';
        RETURN;
    END IF;
    EXECUTE $function$
CREATE OR REPLACE FUNCTION pgcache_ddl() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    -- As in pgcache_notify: only the database's own setting names the channel.
    channel text := coalesce(
        (SELECT nullif(substr(setting, length('pgcache.channel=') + 1), '')
           FROM pg_db_role_setting AS s, unnest(s.setconfig) AS setting
          WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND s.setrole = 0
            AND setting LIKE 'pgcache.channel=%'),
        'cache_invalidation');
    relids oid[] := '{}';
    relations text[] := '{}';
    results boolean := false;
    child regclass;
    watch text;
    publish text;
    before text;
    shadows boolean := false;
    payload text;
BEGIN
    IF TG_EVENT = 'sql_drop' THEN
        -- The dropped objects are gone from the catalog: named as they were.
        SELECT coalesce(array_agg(DISTINCT CASE
                   WHEN d.object_type IN ('policy', 'rule')
                       THEN substr(d.object_identity, strpos(d.object_identity, ' on ') + 4)
                   ELSE d.object_identity END)
                 FILTER (WHERE d.object_type IN ('table', 'view', 'materialized view',
                                                 'foreign table', 'policy', 'rule')), '{}'),
               coalesce(bool_or(d.object_type IN ('function', 'type', 'domain', 'table', 'view')
                                AND d.original), false)
          INTO relations, results
          FROM pg_event_trigger_dropped_objects() AS d
         WHERE NOT d.is_temporary;
    ELSE
        WITH RECURSIVE touched(relid, other) AS (
            SELECT CASE
                       WHEN c.classid = 'pg_catalog.pg_class'::regclass THEN c.objid
                       WHEN c.classid = 'pg_catalog.pg_policy'::regclass
                           THEN (SELECT p.polrelid FROM pg_catalog.pg_policy p WHERE p.oid = c.objid)
                       WHEN c.classid = 'pg_catalog.pg_rewrite'::regclass
                           THEN (SELECT w.ev_class FROM pg_catalog.pg_rewrite w WHERE w.oid = c.objid)
                   END,
                   -- Functions, types, operators, casts and text search: anything a
                   -- result may be computed with.
                   -- (A type, domain, operator, cast or text search object just created
                   -- is nothing a result was computed with: CREATE cannot replace one.)
                   c.classid IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_type'::regclass,
                                 'pg_catalog.pg_operator'::regclass, 'pg_catalog.pg_cast'::regclass,
                                 'pg_catalog.pg_ts_config'::regclass, 'pg_catalog.pg_ts_dict'::regclass)
                   AND c.command_tag NOT IN ('CREATE TYPE', 'CREATE DOMAIN', 'CREATE OPERATOR',
                                             'CREATE CAST', 'CREATE TEXT SEARCH CONFIGURATION',
                                             'CREATE TEXT SEARCH DICTIONARY', 'CREATE TABLE',
                                             'CREATE VIEW', 'CREATE SEQUENCE')
              FROM pg_event_trigger_ddl_commands() AS c
             WHERE NOT c.in_extension
               AND c.command_tag NOT IN ('COMMENT', 'CREATE INDEX', 'ALTER INDEX', 'CREATE TRIGGER',
                                         'ALTER TRIGGER', 'CREATE STATISTICS', 'ALTER STATISTICS',
                                         'SECURITY LABEL', 'CREATE PUBLICATION', 'ALTER PUBLICATION',
                                         'CREATE SEQUENCE', 'ALTER SEQUENCE', 'GRANT', 'REVOKE')
               AND coalesce(c.object_type, '') NOT IN ('index', 'sequence', 'trigger', 'toast table')
               AND coalesce(c.schema_name, '') NOT LIKE 'pg\_temp%'
          UNION
            -- A partition's or child's rows are its ancestors' too.
            SELECT i.inhparent, false FROM touched t
              JOIN pg_catalog.pg_inherits i ON i.inhrelid = t.relid
        ), typed(relid) AS (
            -- A type changed (an enum value renamed, say): the rows of the tables with a
            -- column of it (or of an array of it) read differently.
            SELECT a.attrelid FROM pg_event_trigger_ddl_commands() AS c
              JOIN pg_catalog.pg_type t ON t.oid = c.objid
              JOIN pg_catalog.pg_attribute a ON a.atttypid IN (t.oid, t.typarray)
             WHERE c.classid = 'pg_catalog.pg_type'::regclass AND a.attnum > 0
               AND NOT a.attisdropped
        ), below(relid) AS (
            -- ALTER TABLE of a parent changes its partitions and children too.
            SELECT i.inhrelid FROM pg_event_trigger_ddl_commands() AS c
              JOIN pg_catalog.pg_inherits i ON i.inhparent = c.objid
             WHERE c.classid = 'pg_catalog.pg_class'::regclass AND c.command_tag = 'ALTER TABLE'
          UNION
            SELECT i.inhrelid FROM below b JOIN pg_catalog.pg_inherits i ON i.inhparent = b.relid
        ), every(relid, other) AS (
            SELECT relid, other FROM touched UNION SELECT relid, false FROM below
          UNION SELECT relid, false FROM typed
        )
        -- A view changed: the QUERY results that read it are not told apart from the
        -- others (they are stored under its tables' generations), so all of them go.
        SELECT coalesce(array_agg(DISTINCT t.relid) FILTER (WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
                                                              AND c.relpersistence <> 't'), '{}'),
               coalesce(bool_or(t.other OR c.relkind = 'v'), false)
          INTO relids, results
          FROM every t LEFT JOIN pg_catalog.pg_class c ON c.oid = t.relid;
        SELECT coalesce(array_agg(format('%I.%I', n.nspname, c.relname)), '{}') INTO relations
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = ANY (relids);
        -- A new table (a new partition or child too) holds no row anyone cached, and rows
        -- written to it are reported under its name and applied to its ancestors: nothing
        -- to drop.
        IF NOT EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() AS c
                        WHERE c.command_tag NOT IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO',
                                                    'CREATE INDEX', 'CREATE SEQUENCE',
                                                    'ALTER SEQUENCE', 'COMMENT')) THEN
            relations := '{}';
        END IF;
        -- But a new relation named as one in another schema may now be what a statement's
        -- unqualified name resolves to (an earlier schema on the search_path): pgcache then
        -- learns its statements again.
        shadows := EXISTS (
            SELECT 1 FROM pg_event_trigger_ddl_commands() AS c
              JOIN pg_catalog.pg_class r ON r.oid = c.objid
              JOIN pg_catalog.pg_class o ON o.relname = r.relname AND o.relnamespace <> r.relnamespace
             WHERE c.classid = 'pg_catalog.pg_class'::regclass AND c.command_tag LIKE 'CREATE %'
               AND r.relkind IN ('r', 'p', 'v', 'm', 'f') AND o.relkind IN ('r', 'p', 'v', 'm', 'f'));
        -- A relation renamed, or moved to another schema (itself or its schema): its rows
        -- and results were cached under its old name, which pgcache_ddl_start noted.
        before := nullif(current_setting('pgcache.names_before', true), '');
        IF before IS NOT NULL THEN
            PERFORM set_config('pgcache.names_before', '', true);
            relations := relations || coalesce((
                SELECT array_agg(DISTINCT name)
                  FROM json_each_text(before::json) AS b
                  JOIN pg_catalog.pg_class c ON c.oid = b.key::oid
                  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
                       LATERAL (VALUES (b.value), (format('%I.%I', n.nspname, c.relname))) AS v(name)
                 WHERE format('%I.%I', n.nspname, c.relname) <> b.value), '{}');
        END IF;
        -- A partition or child, new or attached, of a table pgcache's triggers watch.
        -- pgcache_watch of the schema this trigger's function was installed in, nobody
        -- else's: it runs as whoever ran the DDL.
        SELECT format('%I.%I', n.nspname, 'pgcache_watch') INTO watch
          FROM pg_catalog.pg_event_trigger e
          JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE e.evtname = 'pgcache_ddl';
        IF watch IS NULL OR pg_catalog.to_regproc(watch) IS NULL THEN
            watch := NULL;  -- invalidation_trigger.sql not installed (yet): nothing to watch
        END IF;
        FOR child IN
            SELECT DISTINCT i.inhrelid::regclass FROM pg_catalog.pg_inherits i
             WHERE i.inhparent = ANY (relids)
               AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                            WHERE t.tgrelid = i.inhparent AND t.tgname = 'pgcache_update')
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                                WHERE t.tgrelid = i.inhrelid AND t.tgname = 'pgcache_update')
        LOOP
            IF watch IS NOT NULL THEN
                EXECUTE format('SELECT %s(%L::regclass, %L)', watch, child, 'notify');
            END IF;
        END LOOP;
        -- A partition or child, new or attached, of a table pgcache's publication covers:
        -- a replica identity if it has no key (or PostgreSQL refuses its UPDATEs and
        -- DELETEs), and published if an inheritance child (pgcache_publish_below, beside
        -- pgcache_watch).
        IF watch IS NOT NULL THEN
            publish := pg_catalog.replace(watch, 'pgcache_watch', 'pgcache_publish_below');
            IF pg_catalog.to_regproc(publish) IS NOT NULL THEN
                FOR child IN
                    SELECT DISTINCT i.inhrelid::regclass FROM pg_catalog.pg_inherits i
                     WHERE i.inhparent = ANY (relids)
                LOOP
                    EXECUTE format('SELECT %s(%L::regclass)', publish, child);
                END LOOP;
            END IF;
        END IF;
    END IF;
    IF cardinality(relations) = 0 AND NOT results AND NOT shadows THEN
        RETURN;
    END IF;
    payload := json_build_object('ddl', TG_TAG, 'relations', to_json(relations),
                                 'results', results)::text;
    -- NOTIFY takes at most 8000 bytes (and failing would abort the DDL): a longer list of
    -- relations (hundreds of partitions) becomes "everything".
    PERFORM pg_notify(channel, CASE WHEN octet_length(payload) <= 6000 THEN payload
        ELSE json_build_object('ddl', TG_TAG, 'relations', '[]'::json, 'results', true,
                               'everything', true)::text END);
    IF current_setting('wal_level') = 'logical' THEN
        PERFORM pg_logical_emit_message(true, 'pgcache.ddl', payload);
    END IF;
END
$body$
$function$;
    -- Before a relation or a schema can be renamed: every relation's name by its oid, for
    -- pgcache_ddl to report the old names of those whose name the DDL changed. For this
    -- transaction only.
    EXECUTE $function$
CREATE OR REPLACE FUNCTION pgcache_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    PERFORM set_config('pgcache.names_before', coalesce((
        SELECT json_object_agg(c.oid, format('%I.%I', n.nspname, c.relname))
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'), '{}')::text, true);
END
$body$
$function$;
    DROP EVENT TRIGGER IF EXISTS pgcache_ddl;
    DROP EVENT TRIGGER IF EXISTS pgcache_ddl_drop;
    DROP EVENT TRIGGER IF EXISTS pgcache_ddl_start;
    CREATE EVENT TRIGGER pgcache_ddl ON ddl_command_end EXECUTE FUNCTION pgcache_ddl();
    CREATE EVENT TRIGGER pgcache_ddl_drop ON sql_drop EXECUTE FUNCTION pgcache_ddl();
    CREATE EVENT TRIGGER pgcache_ddl_start ON ddl_command_start
        WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE',
                     'ALTER SCHEMA')
        EXECUTE FUNCTION pgcache_ddl_start();
END
$install$;
