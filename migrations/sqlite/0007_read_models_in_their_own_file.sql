-- Read models and their checkpoints move out of the log's database into a file of their own,
-- in the folder `<database>.read-models/` (src/store/read_model_file.rs, docs/event-log.md):
-- a rebuild of every projection then writes a new file and makes it current by changing the
-- one name below, instead of copying every document into this database. What the tables held
-- is not moved: read models are a fold of the log, and the first start after this migration
-- makes an empty file that the projection runner folds the whole log into.
DROP TABLE read_models;
DROP TABLE projection_checkpoints;

-- The current read-model file's name, inside the folder.
CREATE TABLE read_model_file (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL
);
