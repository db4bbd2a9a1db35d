-- Read models: documents written by projections, each on a list (work list or state).
CREATE TABLE read_models (
    projection text NOT NULL,
    key        text NOT NULL,
    list       text NOT NULL,
    sort_key   text NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (projection, key)
);
CREATE INDEX read_models_by_list ON read_models (projection, list, sort_key);

-- How far each projection has read; moved in the same transaction as its documents.
CREATE TABLE projection_checkpoints (
    name     text PRIMARY KEY,
    position bigint NOT NULL
);
