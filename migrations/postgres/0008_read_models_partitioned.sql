-- Read models partitioned by projection, one table each, and bodies kept as `json` (the text,
-- checked to be JSON) rather than `jsonb` (parsed into a binary form on every write).
--
-- A rebuild fills a new table for each projection it rebuilds, with no index, builds the two
-- indexes once by sorting, and swaps it in for the projection's old partition in the same
-- transaction (src/store/postgres.rs, `replace_projections`). A million documents went in
-- that way in 3.4 s, against 5.4-5.9 s by COPY into the indexed table, and the old documents
-- go with their table instead of being deleted one by one (BENCHMARKS.md, session 18).
--
-- Nothing reads a body inside the database: documents are read as text and patched by the
-- application, so `jsonb`'s parse bought nothing; `json` keeps the check that a body is JSON
-- and stores the text exactly as written (COPY of a million documents: 4.0-4.4 s as `json`,
-- 5.4-5.9 s as `jsonb`).
--
-- A projection added later and not listed here keeps its documents in the default partition
-- until its first rebuild gives it a table of its own.
ALTER TABLE read_models RENAME TO read_models_unpartitioned;
ALTER INDEX read_models_pkey RENAME TO read_models_unpartitioned_pkey;
ALTER INDEX read_models_by_list RENAME TO read_models_unpartitioned_by_list;

CREATE TABLE read_models (
    projection text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    list       text COLLATE "C" NOT NULL,
    sort_key   text COLLATE "C" NOT NULL,
    body       json NOT NULL,
    PRIMARY KEY (projection, key)
) PARTITION BY LIST (projection);
CREATE INDEX read_models_by_list ON read_models (projection, list, sort_key);

CREATE TABLE read_models_streams PARTITION OF read_models FOR VALUES IN ('streams');
CREATE TABLE read_models_applications PARTITION OF read_models FOR VALUES IN ('applications');
CREATE TABLE read_models_certificates PARTITION OF read_models FOR VALUES IN ('certificates');
CREATE TABLE read_models_qrs PARTITION OF read_models FOR VALUES IN ('qrs');
CREATE TABLE read_models_cards PARTITION OF read_models FOR VALUES IN ('cards');
CREATE TABLE read_models_locator PARTITION OF read_models FOR VALUES IN ('locator');
CREATE TABLE read_models_lifecycle PARTITION OF read_models FOR VALUES IN ('lifecycle');
CREATE TABLE read_models_outbox PARTITION OF read_models FOR VALUES IN ('outbox');
CREATE TABLE read_models_print PARTITION OF read_models FOR VALUES IN ('print');
CREATE TABLE read_models_default PARTITION OF read_models DEFAULT;

INSERT INTO read_models (projection, key, list, sort_key, body)
    SELECT projection, key, list, sort_key, body::json FROM read_models_unpartitioned;
DROP TABLE read_models_unpartitioned;
