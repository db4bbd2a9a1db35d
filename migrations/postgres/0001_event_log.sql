-- The log: one row per event, never updated or deleted. `body` holds the event's canonical
-- bytes; `hash` = SHA-256(previous row's hash || body). The other columns are indexes taken
-- from `body`, checked against it by `hpki audit verify`.
CREATE TABLE events (
    position       bigint  PRIMARY KEY,
    event_id       uuid    NOT NULL UNIQUE,
    stream         text    NOT NULL,
    version        bigint  NOT NULL,
    event_type     text    NOT NULL,
    schema_version integer NOT NULL,
    recorded_at    bigint  NOT NULL, -- microseconds since 1970-01-01 UTC
    body           bytea   NOT NULL,
    hash           bytea   NOT NULL,
    UNIQUE (stream, version)
);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- The end of the log. Appenders lock this row (SELECT ... FOR UPDATE) and hold it until they
-- commit, so positions are assigned and become visible strictly in order.
CREATE TABLE log_head (
    id          integer PRIMARY KEY CHECK (id = 1),
    position    bigint  NOT NULL,
    hash        bytea   NOT NULL,
    recorded_at bigint  NOT NULL
);
INSERT INTO log_head (id, position, hash, recorded_at) VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000', 0);
