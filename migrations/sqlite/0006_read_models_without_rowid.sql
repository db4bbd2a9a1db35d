-- Read models as a WITHOUT ROWID table: the rows are stored in the B-tree of their primary key
-- (projection, key) itself, not in a rowid table plus a separate index of the key. Every write
-- touches one B-tree instead of two: a million INSERT OR REPLACE through Python's sqlite3 took
-- 5.3 s into the rowid table and 3.7 s into this one (BENCHMARKS.md, session 12). Bodies are a
-- few hundred bytes, well under the twentieth of a page SQLite recommends for such tables.
-- The table is written out again because SQLite cannot alter a table into WITHOUT ROWID, and
-- 0003 cannot be edited: databases that applied it keep its checksum.
CREATE TABLE read_models_new (
    projection TEXT NOT NULL,
    key        TEXT NOT NULL,
    list       TEXT NOT NULL,
    sort_key   TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (projection, key)
) WITHOUT ROWID;
INSERT INTO read_models_new (projection, key, list, sort_key, body)
    SELECT projection, key, list, sort_key, body FROM read_models ORDER BY projection, key;
DROP TABLE read_models;
ALTER TABLE read_models_new RENAME TO read_models;
CREATE INDEX read_models_by_list ON read_models (projection, list, sort_key);
