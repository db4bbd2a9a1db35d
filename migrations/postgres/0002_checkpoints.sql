-- Signed checkpoints: the head position and hash, signed with the audit key.
CREATE TABLE checkpoints (
    id        bigserial PRIMARY KEY,
    position  bigint    NOT NULL,
    hash      bytea     NOT NULL,
    signed_at text      NOT NULL,
    key_id    text      NOT NULL,
    signature bytea     NOT NULL
);

CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
