-- Stream names compared byte by byte ("C"), as SQLite compares them, rather than by the
-- database's locale: stream names are ASCII (lowercase, digits, '-'), so the order is the same,
-- and each comparison in the (stream, version) index costs a memcmp instead of a strcoll.
-- That index is probed and extended for every appended event (BENCHMARKS.md, session 14).
-- The column's type is unchanged, so the table is not rewritten; its index is rebuilt.
ALTER TABLE events ALTER COLUMN stream TYPE text COLLATE "C";
