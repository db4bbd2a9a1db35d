-- The read models' two indexes lead with a column that varies from row to row.
--
-- Each partition holds one projection, so `projection` is the same in every row of it: as the
-- first column of an index it tells no two rows apart, and a build's sort falls through to
-- full comparisons of the next column (its abbreviated keys, the first bytes of the first
-- column, are all equal). Leading with `key` (the primary key keeps `projection`, as a unique
-- index of a partitioned table must) and dropping `projection` from the work-list index
-- (which is not unique, so need not carry it; the partition already stands for it) made the
-- two builds of a million documents 0.8-1.0 s and 1.6 s instead of 1.4 s and 1.8-2.2 s
-- (BENCHMARKS.md, session 26). Every query names the projection, so each still reads one
-- partition; `ON CONFLICT (projection, key)` finds the primary key whatever its order.
ALTER TABLE read_models DROP CONSTRAINT read_models_pkey;
ALTER TABLE read_models ADD PRIMARY KEY (key, projection);
DROP INDEX read_models_by_list;
CREATE INDEX read_models_by_list ON read_models (list, sort_key);

-- The partitions' copies of the work-list index take the names a rebuild gives them.
DO $$
DECLARE
    child record;
BEGIN
    FOR child IN
        SELECT c.relname AS index_name, t.relname AS table_name
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_index x ON x.indexrelid = i.inhrelid
        JOIN pg_class t ON t.oid = x.indrelid
        WHERE i.inhparent = 'read_models_by_list'::regclass
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', child.index_name, child.table_name || '_by_list');
    END LOOP;
END
$$;
