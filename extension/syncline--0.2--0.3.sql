-- Syncline 0.2 -> 0.3: a client batch's write checkpoint is resolved when it
-- is asked for, from the transaction that applied the batch and the snapshot
-- of the last flush, instead of being stamped on its record by the flusher
-- (one index lookup and heap update per batch, ~40% of the flusher's time
-- under gateway write load).
\echo Use "ALTER EXTENSION syncline UPDATE TO '0.3'" to load this file. \quit

-- Every batch recorded so far gets this transaction's id. One whose write
-- marker is still staged (not stamped yet) is published by the first flush
-- that sees this transaction committed, and resolves from then on; a flusher
-- still running 0.2's code stamps it as before.
ALTER TABLE syncline_internal.client_batches
  ADD COLUMN txid xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id();
ALTER TABLE syncline_internal.state ADD COLUMN flushed_snapshot pg_snapshot;

-- A client batch's write checkpoint: NULL until a flush has published it;
-- then the op log's head in the caller's snapshot (any op id at or past the
-- flush that published the batch is one: its effects are in every checkpoint
-- from there on), or the op id a flusher before 0.3 stamped on the record.
-- A flush publishes every transaction committed in its snapshot, write
-- marker included, so no per-batch write is needed to know.
CREATE FUNCTION syncline_internal.published_write_checkpoint(recorded bigint, txid xid8)
RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce($1, (SELECT s.last_op_id FROM syncline_internal.state s
                        WHERE pg_catalog.pg_visible_in_snapshot($2, s.flushed_snapshot)))
$$;
ALTER FUNCTION syncline_internal.published_write_checkpoint(bigint, xid8) OWNER TO syncline_engine;
REVOKE ALL ON FUNCTION syncline_internal.published_write_checkpoint(bigint, xid8) FROM PUBLIC;

CREATE OR REPLACE FUNCTION syncline.write_checkpoint(client_id text, seq bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  checkpoint bigint;
BEGIN
  IF seq IS NULL THEN
    -- The newest published batch's (all unstamped ones resolve to the head).
    SELECT n.w INTO checkpoint
      FROM (SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid) AS w
              FROM syncline_internal.client_batches b
             WHERE b.client_id = $1 ORDER BY b.seq DESC) n
     WHERE n.w IS NOT NULL LIMIT 1;
    RETURN checkpoint;
  END IF;
  SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid) INTO checkpoint
    FROM syncline_internal.client_batches b
   WHERE b.client_id = $1 AND b.seq = $2;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF checkpoint IS NULL THEN
    -- Not flushed yet. Wait for a flush in progress (the flush lock), which
    -- often publishes it; flush ourselves only if it still has no checkpoint.
    -- Many callers at once thus share flushes instead of queueing one each.
    PERFORM pg_catalog.pg_advisory_xact_lock(1398361667, 1);
    SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid) INTO checkpoint
      FROM syncline_internal.client_batches b
     WHERE b.client_id = $1 AND b.seq = $2;
    IF checkpoint IS NULL THEN
      PERFORM syncline.flush();
      SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid) INTO checkpoint
        FROM syncline_internal.client_batches b
       WHERE b.client_id = $1 AND b.seq = $2;
    END IF;
  END IF;
  RETURN checkpoint;
END
$$;
COMMENT ON FUNCTION syncline.write_checkpoint(text, bigint) IS
  'An op id whose checkpoint includes the client''s batch seq (or its newest published batch): the op log''s head once the batch is published; NULL for an unknown batch';

CREATE OR REPLACE FUNCTION syncline.write_checkpoints(client_ids text[], seqs bigint[],
                                           force boolean DEFAULT false)
RETURNS TABLE (client_id text, seq bigint, write_checkpoint bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF pg_catalog.cardinality(client_ids) IS DISTINCT FROM pg_catalog.cardinality(seqs) THEN
    RAISE EXCEPTION 'client_ids and seqs must have the same length'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Correlated lookups, one primary-key probe per batch: a join's cached
  -- plan could be a scan of the whole table.
  IF force AND EXISTS (
      SELECT FROM unnest(client_ids, seqs) AS w(client_id, seq)
       WHERE (SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid)
                FROM syncline_internal.client_batches b
               WHERE b.client_id = w.client_id AND b.seq = w.seq) IS NULL) THEN
    PERFORM pg_catalog.pg_advisory_xact_lock(1398361667, 1);
    PERFORM syncline.flush();
  END IF;
  RETURN QUERY
    SELECT c.client_id, c.seq, c.write_checkpoint
      FROM (SELECT w.client_id, w.seq,
                   (SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid)
                      FROM syncline_internal.client_batches b
                     WHERE b.client_id = w.client_id AND b.seq = w.seq) AS write_checkpoint
              FROM unnest(client_ids, seqs) AS w(client_id, seq)) c
     WHERE c.write_checkpoint IS NOT NULL;
END
$$;
COMMENT ON FUNCTION syncline.write_checkpoints(text[], bigint[], boolean) IS
  'The write checkpoints of these (client_id, seq) batches that are published; with force, flushes first so every applied batch has one';

COMMENT ON FUNCTION syncline.checkpoint(jsonb, text) IS
  'checkpoint(claims), plus "write_checkpoint": the newest write checkpoint of that client of the claims'' subject published in the same snapshot (0 when none)';
