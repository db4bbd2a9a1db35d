-- Signed checkpoints: the head position and hash, signed with the audit key.
CREATE TABLE checkpoints (
    id        INTEGER PRIMARY KEY,
    position  INTEGER NOT NULL,
    hash      BLOB    NOT NULL,
    signed_at TEXT    NOT NULL,
    key_id    TEXT    NOT NULL,
    signature BLOB    NOT NULL
);

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints is append-only: UPDATE refused'); END;

CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints is append-only: DELETE refused'); END;
