-- How far pruning has reached into the change log: every change it deleted had a transaction id
-- below `below`. A table subscription resuming from a position whose base snapshot's xmin is
-- below it may have lost changes to pruning and is refused (RESUME_UNAVAILABLE); one at or above
-- it lost none. One row, written by the prune itself.
CREATE TABLE feedgate.pruned (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    below      xid8 NOT NULL
);
