-- feedgate's changefeed schema: a durable change log filled by row triggers on watched tables.
--
-- The capture trigger does one INSERT per changed row and nothing else. NOTIFY is only a wake-up
-- for an idle reader: a statement-level trigger sends it only while some reader has asked for it
-- (readers.wants_wakeup), so busy writers do not take the commit-time NOTIFY lock.

CREATE SCHEMA IF NOT EXISTS feedgate;

-- One row per changed row, in the writing transaction. Readers take the changes whose transaction
-- became visible between two snapshots (xid8 + pg_visible_in_snapshot), ordered by id.
CREATE TABLE feedgate.changes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_oid  oid NOT NULL,
    op         "char" NOT NULL CHECK (op IN ('I', 'U', 'D', 'T')),
    old_row    jsonb,
    new_row    jsonb,
    logged_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_xid_idx ON feedgate.changes (xid);

-- Tables whose changes are captured, with their primary key columns.
CREATE TABLE feedgate.watched (
    table_oid    oid PRIMARY KEY,
    table_name   text NOT NULL,
    key_columns  text[] NOT NULL,
    watched_at   timestamptz NOT NULL DEFAULT now()
);

-- Each running feedgate node's reader: how far it has read (pruning never removes what a live
-- reader has not read) and whether it is idle and wants a NOTIFY on the next change.
CREATE TABLE feedgate.readers (
    node_id       uuid PRIMARY KEY,
    wants_wakeup  boolean NOT NULL DEFAULT false,
    position      pg_snapshot NOT NULL,
    seen_at       timestamptz NOT NULL DEFAULT now()
);

-- Row trigger: one log insert. TG_ARGV[0] is the watched table's oid (so partitions of a watched
-- partitioned table log under their parent). SECURITY DEFINER: writers need no privileges on the
-- feedgate schema.
CREATE FUNCTION feedgate.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO feedgate.changes (table_oid, op, new_row)
        VALUES (TG_ARGV[0]::oid, 'I', to_jsonb(NEW));
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO feedgate.changes (table_oid, op, old_row, new_row)
        VALUES (TG_ARGV[0]::oid, 'U', to_jsonb(OLD), to_jsonb(NEW));
    ELSE
        INSERT INTO feedgate.changes (table_oid, op, old_row)
        VALUES (TG_ARGV[0]::oid, 'D', to_jsonb(OLD));
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE removes rows without row triggers: log it, so subscribers are told rather than left
-- with rows that no longer exist.
CREATE FUNCTION feedgate.capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO feedgate.changes (table_oid, op) VALUES (TG_ARGV[0]::oid, 'T');
    RETURN NULL;
END
$$;

-- Statement trigger: wake idle readers, and only them. A constant payload folds to one
-- notification per transaction.
CREATE FUNCTION feedgate.wakeup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM feedgate.readers WHERE wants_wakeup) THEN
        PERFORM pg_notify('feedgate_changes', '');
    END IF;
    RETURN NULL;
END
$$;

-- Opt a table in (idempotent). Returns its name. Refuses tables without a primary key.
CREATE FUNCTION feedgate.watch(target regclass) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keys text[];
    display text;
    kind "char";
BEGIN
    SELECT c.relkind, n.nspname || '.' || c.relname INTO kind, display
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = target;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'feedgate: % is not a table', target USING ERRCODE = 'wrong_object_type';
    END IF;
    SELECT array_agg(a.attname::text ORDER BY k.ord) INTO keys
      FROM pg_index i
      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = target AND i.indisprimary;
    IF keys IS NULL THEN
        RAISE EXCEPTION 'feedgate: table % has no primary key; a changefeed needs one to identify rows', target
            USING ERRCODE = 'invalid_table_definition';
    END IF;
    INSERT INTO feedgate.watched (table_oid, table_name, key_columns)
    VALUES (target, display, keys)
    ON CONFLICT (table_oid) DO UPDATE
        SET table_name = EXCLUDED.table_name, key_columns = EXCLUDED.key_columns;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'feedgate_capture') THEN
        EXECUTE format(
            'CREATE TRIGGER feedgate_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
            'FOR EACH ROW EXECUTE FUNCTION feedgate.capture(%L)', target, target::oid);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'feedgate_truncate') THEN
        EXECUTE format(
            'CREATE TRIGGER feedgate_truncate AFTER TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION feedgate.capture_truncate(%L)', target, target::oid);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'feedgate_wakeup') THEN
        EXECUTE format(
            'CREATE TRIGGER feedgate_wakeup AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION feedgate.wakeup()', target);
    END IF;
    RETURN display;
END
$$;

-- Opt a table out (idempotent): drops the triggers; logged changes are pruned as usual.
CREATE FUNCTION feedgate.unwatch(target regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS feedgate_capture ON %s', target);
    EXECUTE format('DROP TRIGGER IF EXISTS feedgate_truncate ON %s', target);
    EXECUTE format('DROP TRIGGER IF EXISTS feedgate_wakeup ON %s', target);
    DELETE FROM feedgate.watched WHERE table_oid = target;
END
$$;
