-- Capture from the write-ahead log (logical decoding), beside the row triggers of 0001.
--
-- One row says how this database's changes are captured, for every feedgate node: `mode` is
-- NULL until the first node decides (changefeed.capture), then 'trigger' or 'logical' for good.
-- In logical mode one elected node (the leader) consumes the replication slot and appends the
-- decoded changes to feedgate.changes; `generation` fences a deposed leader (each append
-- compare-and-sets `appended_lsn` under its generation), `appended_lsn` is the commit end of
-- the last transaction appended, and `watermark` is a snapshot whose every visible transaction
-- is in the log: readers poll up to it instead of pg_current_snapshot().
CREATE TABLE feedgate.capture (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    mode          text CHECK (mode IN ('trigger', 'logical')),
    slot_name     text,
    publication   text,
    generation    bigint NOT NULL DEFAULT 0,
    appended_lsn  pg_lsn,
    watermark     pg_snapshot,
    -- Set by switch_to_logical(): the leader drops every transaction before the switch marker
    -- (the row triggers logged them), then clears it.
    switching     boolean NOT NULL DEFAULT false,
    CHECK (mode IS DISTINCT FROM 'logical' OR (watermark IS NOT NULL AND slot_name IS NOT NULL))
);
-- A database that already watches tables captures with triggers.
INSERT INTO feedgate.capture (mode)
SELECT CASE WHEN EXISTS (SELECT 1 FROM feedgate.watched) THEN 'trigger' END;

-- The table's replica identity before watch() set it to FULL (logical mode), for unwatch().
ALTER TABLE feedgate.watched ADD COLUMN previous_identity "char";
-- Where the source transaction committed (logical mode; NULL for trigger-logged changes).
ALTER TABLE feedgate.changes ADD COLUMN commit_lsn pg_lsn;

-- Opt a table in (idempotent). Returns its name. Refuses tables without a primary key.
-- Trigger mode: row, TRUNCATE and wake-up triggers. Logical mode: the table joins feedgate's
-- publication and gets REPLICA IDENTITY FULL (each partition too), so that updates and deletes
-- carry the whole old row; its identity before is kept for unwatch().
CREATE OR REPLACE FUNCTION feedgate.watch(target regclass) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keys text[];
    display text;
    kind "char";
    capture_mode text;
    pub text;
    identity "char";
    part regclass;
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
    SELECT mode, publication INTO capture_mode, pub FROM feedgate.capture;
    SELECT relreplident INTO identity FROM pg_class WHERE oid = target;
    INSERT INTO feedgate.watched (table_oid, table_name, key_columns, previous_identity)
    VALUES (target, display, keys, CASE WHEN capture_mode = 'logical' THEN identity END)
    ON CONFLICT (table_oid) DO UPDATE
        SET table_name = EXCLUDED.table_name, key_columns = EXCLUDED.key_columns,
            previous_identity = coalesce(feedgate.watched.previous_identity,
                                         EXCLUDED.previous_identity);
    -- TRUNCATE of one partition fires no trigger of the parent, and logical decoding with
    -- publish_via_partition_root does not publish it: in both modes each partition gets a
    -- statement trigger logging a reset of the parent (partitions attached later need
    -- watch() again).
    FOR part IN SELECT t.relid FROM pg_partition_tree(target) t
                  JOIN pg_class c ON c.oid = t.relid
                 WHERE t.relid <> target AND c.relkind = 'r'
                   AND NOT EXISTS (SELECT 1 FROM pg_trigger
                                    WHERE tgrelid = t.relid AND tgname = 'feedgate_truncate') LOOP
        EXECUTE format(
            'CREATE TRIGGER feedgate_truncate AFTER TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION feedgate.capture_truncate(%L)', part, target::oid);
    END LOOP;
    IF capture_mode = 'logical' THEN
        IF NOT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
                        WHERE p.pubname = pub AND r.prrelid = target) THEN
            EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', pub, target);
        END IF;
        -- pg_partition_tree has no rows for a table that is not partitioned.
        FOR part IN SELECT c.oid FROM pg_class c
                     WHERE (c.oid = target OR c.oid IN (SELECT relid FROM pg_partition_tree(target)))
                       AND c.relkind IN ('r', 'p') AND c.relreplident <> 'f' LOOP
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', part);
        END LOOP;
        RETURN display;
    END IF;
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

-- Opt a table out (idempotent): drops the triggers, or leaves the publication and gets its
-- replica identity back; logged changes are pruned as usual.
CREATE OR REPLACE FUNCTION feedgate.unwatch(target regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pub text;
    identity "char";
    part regclass;
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS feedgate_capture ON %s', target);
    EXECUTE format('DROP TRIGGER IF EXISTS feedgate_truncate ON %s', target);
    EXECUTE format('DROP TRIGGER IF EXISTS feedgate_wakeup ON %s', target);
    FOR part IN SELECT relid FROM pg_partition_tree(target) WHERE relid <> target LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS feedgate_truncate ON %s', part);
    END LOOP;
    SELECT publication INTO pub FROM feedgate.capture;
    IF pub IS NOT NULL AND EXISTS (
            SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
             WHERE p.pubname = pub AND r.prrelid = target) THEN
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', pub, target);
    END IF;
    -- The parent's identity before watch() goes back to it and to its partitions (which
    -- watch() set FULL too); USING INDEX comes back as DEFAULT.
    SELECT previous_identity INTO identity FROM feedgate.watched WHERE table_oid = target;
    IF identity IS NOT NULL AND identity <> 'f' THEN
        FOR part IN SELECT c.oid FROM pg_class c
                     WHERE (c.oid = target OR c.oid IN (SELECT relid FROM pg_partition_tree(target)))
                       AND c.relkind IN ('r', 'p') LOOP
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY %s', part,
                           CASE identity WHEN 'n' THEN 'NOTHING' ELSE 'DEFAULT' END);
        END LOOP;
    END IF;
    DELETE FROM feedgate.watched WHERE table_oid = target;
END
$$;

-- Switches this database to logical capture in the caller's transaction (the first node that
-- may, at start-up; the slot exists). Dropping a watched table's capture triggers waits for the
-- transactions writing it and holds back new ones until this commits, so every change that
-- committed before it was logged by the triggers and every later one is decoded from the WAL:
-- the leader drops what the slot delivers before this transaction's `feedgate.switch` marker.
-- The first watermark is a snapshot taken after every lock was granted.
CREATE FUNCTION feedgate.switch_to_logical(slot text, pub text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regclass;
BEGIN
    UPDATE feedgate.capture
       SET mode = 'logical', slot_name = slot, publication = pub, switching = true,
           watermark = pg_current_snapshot(),
           appended_lsn = (SELECT confirmed_flush_lsn FROM pg_replication_slots
                            WHERE slot_name = slot);
    FOR t IN SELECT table_oid::regclass FROM feedgate.watched ORDER BY table_oid LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS feedgate_capture ON %s', t);
        EXECUTE format('DROP TRIGGER IF EXISTS feedgate_truncate ON %s', t);
        EXECUTE format('DROP TRIGGER IF EXISTS feedgate_wakeup ON %s', t);
        PERFORM feedgate.watch(t);
    END LOOP;
    UPDATE feedgate.capture SET watermark = pg_current_snapshot();
    PERFORM pg_logical_emit_message(true, 'feedgate.switch', pg_current_snapshot()::text);
END
$$;
