-- Read models' keys and orderings compared byte by byte ("C"), as SQLite compares them, rather
-- than by the database's locale: a rebuild inserts a million rows into two indexes on these
-- columns, each comparison a strcoll otherwise (BENCHMARKS.md, session 14). Lists are then
-- ordered by code point on both backends (UTF-8's byte order), whatever the database's locale.
ALTER TABLE read_models
    ALTER COLUMN projection TYPE text COLLATE "C",
    ALTER COLUMN key TYPE text COLLATE "C",
    ALTER COLUMN list TYPE text COLLATE "C",
    ALTER COLUMN sort_key TYPE text COLLATE "C";
