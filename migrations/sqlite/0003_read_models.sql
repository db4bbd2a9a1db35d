-- Read models: documents written by projections, each on a list (work list or state).
CREATE TABLE read_models (
    projection TEXT NOT NULL,
    key        TEXT NOT NULL,
    list       TEXT NOT NULL,
    sort_key   TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (projection, key)
);
CREATE INDEX read_models_by_list ON read_models (projection, list, sort_key);

-- How far each projection has read; moved in the same transaction as its documents.
CREATE TABLE projection_checkpoints (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
