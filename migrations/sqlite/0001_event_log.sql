-- The log: one row per event, never updated or deleted. `body` holds the event's canonical
-- bytes; `hash` = SHA-256(previous row's hash || body). The other columns are indexes taken
-- from `body`, checked against it by `hpki audit verify`.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    event_id       TEXT    NOT NULL UNIQUE,
    stream         TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    recorded_at    INTEGER NOT NULL, -- microseconds since 1970-01-01 UTC
    body           BLOB    NOT NULL,
    hash           BLOB    NOT NULL,
    UNIQUE (stream, version)
);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events is append-only: UPDATE refused'); END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events is append-only: DELETE refused'); END;

-- The end of the log. Appenders lock this row, which orders positions and commits alike.
CREATE TABLE log_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    position    INTEGER NOT NULL,
    hash        BLOB    NOT NULL,
    recorded_at INTEGER NOT NULL
);
INSERT INTO log_head (id, position, hash, recorded_at) VALUES (1, 0, zeroblob(32), 0);
