//! The embedded backend. One file, WAL journal, `synchronous = FULL` (an acknowledged append
//! survives a power cut). `BEGIN IMMEDIATE` takes the database's write lock up front, which
//! serialises appends across processes the way the `log_head` row lock does on PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hpki_events::ChainHash;
use hpki_projections::{Body, Change, Doc};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row as _, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::pg_copy::Columns;
use super::read_model_file::{self, Place};
use super::{
    AppendError, Appended, CheckpointRow, Head, Known, LastCommit, RawEvent, Row, StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Bytes a database page, for a database this creates (an existing file keeps its own). The
/// benchmark's batches of 1,000 events over 10,000 streams: 4 KB pages 28,261 events/s at a
/// million events, 16 KB 41,693-48,316, 32 KB 46,357-49,058, 64 KB 40,357-40,586
/// (BENCHMARKS.md, session 13). Each append touches a page of the `(stream, version)` index
/// for nearly every event; larger pages mean fewer of them to find, write to the WAL and copy
/// back.
const PAGE_SIZE: u32 = 32_768;

/// Nine columns a row; SQLite allows 32,766 bound values a statement.
const INSERT_CHUNK: usize = 1_000;

#[derive(Clone)]
pub struct SqliteStore {
    pub pool: SqlitePool,
    /// The database file; `None` for an in-memory database, which only the pool can see.
    file: Option<PathBuf>,
    /// Connections for read models: the same database, with the current read-model file
    /// attached (`read_model_file`). A pool of their own, so that the log's connections never
    /// have it attached: `BEGIN IMMEDIATE`, which appends take, takes the write lock of every
    /// database attached, and appends would wait for projections' writes.
    models_pool: SqlitePool,
    /// Where the read models are.
    models: Place,
}

const EVENT_COLUMNS: &str = Columns::All.names();

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(format!("database URL {url:?}: {e}")))?
            .create_if_missing(true)
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // 64 MB of page cache a connection (the default is 2 MB): the indexes of a
            // million-event log stay in memory instead of being re-read from the OS.
            .pragma("cache_size", "-65536")
            // Statement journals (a multi-row INSERT keeps one) in memory, not in temp files.
            .pragma("temp_store", "memory")
            // Copy the WAL back into the database every 40 MB rather than every 4 MB: index
            // pages that many appends touch are then written back once, not again and again.
            .pragma("wal_autocheckpoint", "10000")
            // sqlx hands rows from its worker thread through a channel; a deep one lets the
            // worker run a page ahead instead of waking the reader for every row.
            .row_buffer_size(super::PAGE as usize);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let file = Some(options.get_filename().to_owned()).filter(|_| !in_memory);
        if let Some(dir) = options.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Url(format!(
                        "cannot create the folder {} for {url:?}: {e}",
                        dir.display()
                    ))
                })?;
            }
        }
        let pool = pool_options(in_memory)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let models = Place::for_database(file.as_deref())?;
        models.ensure(&pool).await?;
        let models_pool = pool_options(in_memory).connect_with(options).await?;
        Ok(SqliteStore {
            pool,
            file,
            models_pool,
            models,
        })
    }

    /// A connection with the current read models attached (as `models`, found by the tables'
    /// plain names): every read or write of read models goes through one.
    pub async fn models(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        let mut conn = self.models_pool.acquire().await?;
        self.models.attach(&self.pool, &mut conn).await?;
        Ok(conn)
    }

    /// A new read-model file for a rebuild of every projection to fold into and then make
    /// current ([`read_model_file::Swap::install`]); `None` for an in-memory store, whose
    /// rebuild copies instead. Fails when another rebuild is under way.
    pub fn models_swap(&self) -> Result<Option<read_model_file::Swap>, StoreError> {
        let Place::Folder(dir) = &self.models else {
            return Ok(None);
        };
        match read_model_file::Lock::try_take(dir)? {
            Some(lock) => Ok(Some(read_model_file::Swap::new(dir.clone(), lock))),
            None => Err(StoreError::ReadModels(format!(
                "another rebuild is under way (it holds {})",
                dir.join("lock").display()
            ))),
        }
    }

    pub async fn migrations_applied(&self) -> Result<bool, StoreError> {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        Ok(applied as usize >= MIGRATOR.iter().count())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn head(&self) -> Result<Head, StoreError> {
        Ok(head(&mut *self.pool.acquire().await?).await?)
    }

    pub(super) async fn commit_group(
        &self,
        ids: &[Uuid],
        streams: &[&str],
        last: &LastCommit,
        plan: impl AsyncFnOnce(Known) -> (Vec<Row>, Vec<Result<Appended, AppendError>>, Known),
    ) -> Result<(Vec<Result<Appended, AppendError>>, Known), sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let head = head(&mut *tx).await?;
        let ids_json = serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
            .expect("strings encode");
        let existing_ids: HashSet<Uuid> = sqlx::query_scalar::<_, String>(
            "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(ids_json)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect();
        let (mut versions, unknown) = last.known(&head, streams);
        if !unknown.is_empty() {
            versions.extend(stream_versions(&mut tx, &unknown).await?);
        }

        let (rows, outcomes, known) = plan(Known {
            head,
            existing_ids,
            versions,
        })
        .await;
        if !rows.is_empty() {
            insert_rows(&mut tx, &rows).await?;
            set_head(&mut tx, &known.head).await?;
        }
        tx.commit().await?;
        Ok((outcomes, known))
    }

    pub async fn read_page(&self, after: i64, limit: i64) -> Result<Vec<RawEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, event_id, stream, version, event_type, schema_version, recorded_at, body, hash
             FROM events WHERE position > ?1 ORDER BY position LIMIT ?2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(raw_event).collect()
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub async fn read_stream(
        &self,
        stream: &str,
        after_version: i64,
    ) -> Result<Vec<RawEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, event_id, stream, version, event_type, schema_version, recorded_at, body, hash
             FROM events WHERE stream = ?1 AND version > ?2 ORDER BY version",
        )
        .bind(stream)
        .bind(after_version)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(raw_event).collect()
    }

    pub async fn count_events(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn insert_checkpoint(&self, cp: &CheckpointRow) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar(
            "INSERT INTO checkpoints (position, hash, signed_at, key_id, signature)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )
        .bind(cp.position)
        .bind(&cp.hash)
        .bind(&cp.signed_at)
        .bind(&cp.key_id)
        .bind(&cp.signature)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    pub async fn checkpoints(&self) -> Result<Vec<CheckpointRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, position, hash, signed_at, key_id, signature FROM checkpoints ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CheckpointRow {
                id: r.get(0),
                position: r.get(1),
                hash: r.get(2),
                signed_at: r.get(3),
                key_id: r.get(4),
                signature: r.get(5),
            })
            .collect())
    }

    pub async fn begin_import(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub async fn projection_checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = ?1")
                .bind(name)
                .fetch_optional(&mut *self.models().await?)
                .await?;
        Ok(position.unwrap_or(0))
    }

    /// Applies changes and moves the checkpoint from `from` to `to` in one transaction.
    /// Returns false, writing nothing, when another runner moved the checkpoint first.
    pub async fn apply_projection(
        &self,
        name: &str,
        from: i64,
        to: i64,
        changes: &[Change],
    ) -> Result<bool, StoreError> {
        let mut conn = self.models().await?;
        // A deferred BEGIN, whose first statement writes: it takes the read models' write lock
        // only. `BEGIN IMMEDIATE` would take every attached database's, the log's too, and hold
        // appends back while a projection writes.
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN").await?;
        let moved = sqlx::query(
            "INSERT INTO projection_checkpoints (name, position) VALUES (?1, ?3)
             ON CONFLICT (name) DO UPDATE SET position = ?3 WHERE projection_checkpoints.position = ?2",
        )
        .bind(name)
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for change in changes {
            apply_change(&mut tx, name, change).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces the documents of each of `names` with those in the finished spill at `spill`
    /// and sets their checkpoints to `position`, in one transaction: a rebuild of some of the
    /// projections, or of an in-memory store's (a rebuild of every projection of a file store
    /// makes a new read-model file instead, `read_model_file`). The spill is attached to one
    /// connection and copied inside SQLite (`INSERT ... SELECT`): no document passes through
    /// this process, which made the swap of a million documents the larger half of a rebuild's
    /// time (BENCHMARKS.md).
    pub async fn replace_projections(
        &self,
        spill: &Path,
        names: &[&str],
        position: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.models().await?;
        sqlx::query("ATTACH DATABASE ?1 AS rebuilt")
            .bind(file_uri(spill, "ro"))
            .execute(&mut *conn)
            .await?;
        // One transaction for every projection rebuilt, so that they come back together.
        let copied = async {
            // Deferred, and its first statements write the read models: their write lock only,
            // not the log's as well, which `BEGIN IMMEDIATE` takes on every attached database.
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN").await?;
            for name in names {
                sqlx::query(
                    "INSERT INTO models.projection_checkpoints (name, position) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET position = ?2",
                )
                .bind(name)
                .bind(position)
                .execute(&mut *tx)
                .await?;
            }
            let names_json = serde_json::to_string(names).expect("strings serialize");
            let others: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM models.read_models
                 WHERE projection NOT IN (SELECT value FROM json_each(?1)))",
            )
            .bind(&names_json)
            .fetch_one(&mut *tx)
            .await?;
            if others {
                sqlx::query(
                    "DELETE FROM models.read_models
                     WHERE projection IN (SELECT value FROM json_each(?1))",
                )
                .bind(&names_json)
                .execute(&mut *tx)
                .await?;
            } else {
                // Every document goes: without a condition SQLite frees the table's and its
                // index's pages whole instead of deleting row by row (a million documents, 0.4
                // against 1.0 s).
                sqlx::query("DELETE FROM models.read_models")
                    .execute(&mut *tx)
                    .await?;
            }
            // The scratch file holds the rebuilt projections' documents and nothing else, in a
            // read-model file's table, with the same indexes. Copied whole, with `*` and no
            // condition, so that SQLite can move the records of the table and of the work
            // lists' index as they are when `models.read_models` is empty (a rebuild of every
            // projection of an in-memory store): its "transfer optimization". Otherwise it
            // copies row by row, in key order, and keeps the index up to date. The index used
            // to be dropped and built again here: a whole rebuild takes as long either way (the
            // scratch file's index costs the fold what the copy saves), and a rebuild of one
            // small projection no longer sorts every other projection's entries again (10,000
            // documents beside a million: 0.02 s against 1.25 s; BENCHMARKS.md, session 21).
            sqlx::query("INSERT INTO models.read_models SELECT * FROM rebuilt.read_models")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        // Detached whatever happened (a failed transaction was rolled back first). Should that
        // fail, the connection is closed rather than returned to the pool with the file
        // attached; the pool's other connections keep an in-memory database alive.
        if sqlx::query("DETACH DATABASE rebuilt")
            .execute(&mut *conn)
            .await
            .is_err()
        {
            conn.close_on_drop();
        }
        Ok(copied?)
    }

    /// Documents of a projection, optionally of one list, in list order.
    pub async fn docs(
        &self,
        name: &str,
        list: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, Doc)>, StoreError> {
        let query = match list {
            Some(list) => sqlx::query(DOCS_OF_LIST).bind(name).bind(list),
            None => sqlx::query(DOCS).bind(name),
        };
        let rows = query
            .bind(limit)
            .fetch_all(&mut *self.models().await?)
            .await?;
        rows.iter().map(doc_row).collect()
    }
}

/// A projection's documents in list order, and one list's: two statements, because a planner
/// seeks the list in the work-list index only when the statement names it. One statement for
/// both (`?2 IS NULL OR list = ?2`) read every document of the projection that sorts before
/// the list: 0.87 s for an empty list after a million others, against 0.09 ms.
pub const DOCS: &str = "SELECT key, list, sort_key, body FROM read_models
     WHERE projection = ?1 ORDER BY list, sort_key LIMIT ?2";
pub const DOCS_OF_LIST: &str = "SELECT key, list, sort_key, body FROM read_models
     WHERE projection = ?1 AND list = ?2 ORDER BY sort_key LIMIT ?3";

/// Four connections a pool. An in-memory database lives only while a connection has it open:
/// for one, a connection is kept for good (none closed for being idle or old), so that neither
/// the log nor the read models vanish when the store goes quiet.
fn pool_options(in_memory: bool) -> SqlitePoolOptions {
    let options = SqlitePoolOptions::new().max_connections(4);
    if in_memory {
        options
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        options
    }
}

/// `file:PATH?mode=MODE` (`ro` or `rw`), for ATTACH. A plain path would be opened with the
/// connection's own flags: for an in-memory store that is a new, empty in-memory database, not
/// the file. sqlx opens every connection with URI filenames allowed, and either mode both
/// clears the in-memory flag and refuses to create a file that is not there.
pub(super) fn file_uri(path: &Path, mode: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let path = path.to_string_lossy();
    format!("file:{}?mode={mode}", utf8_percent_encode(&path, KEEP))
}

async fn apply_change(
    tx: &mut Transaction<'_, Sqlite>,
    name: &str,
    change: &Change,
) -> Result<(), StoreError> {
    match change {
        Change::Put { key, doc } => {
            sqlx::query(
                "INSERT INTO read_models (projection, key, list, sort_key, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (projection, key) DO UPDATE SET list = ?3, sort_key = ?4, body = ?5",
            )
            .bind(name)
            .bind(key)
            .bind(&doc.list)
            .bind(&doc.sort_key)
            .bind(doc.body.as_str())
            .execute(&mut **tx)
            .await?;
        }
        Change::Patch { key, list, merge } => {
            let row = sqlx::query("SELECT key, list, sort_key, body FROM read_models WHERE projection = ?1 AND key = ?2")
                .bind(name)
                .bind(key)
                .fetch_optional(&mut **tx)
                .await?;
            if let Some(row) = row {
                let mut doc = Doc {
                    list: row.get(1),
                    sort_key: row.get(2),
                    body: Body::stored(row.get(3)),
                };
                doc.patch(list.as_deref(), merge)
                    .map_err(|source| StoreError::Corrupt {
                        position: 0,
                        source,
                    })?;
                sqlx::query("UPDATE read_models SET list = ?3, body = ?4 WHERE projection = ?1 AND key = ?2")
                    .bind(name)
                    .bind(key)
                    .bind(&doc.list)
                    .bind(doc.body.as_str())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Change::Delete { key } => {
            sqlx::query("DELETE FROM read_models WHERE projection = ?1 AND key = ?2")
                .bind(name)
                .bind(key)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

pub(super) fn doc_row(row: &sqlx::sqlite::SqliteRow) -> Result<(String, Doc), StoreError> {
    let body: String = row.get(3);
    let body = serde_json::from_str(&body).map_err(|source| StoreError::Corrupt {
        position: 0,
        source,
    })?;
    Ok((
        row.get(0),
        Doc {
            list: row.get(1),
            sort_key: row.get(2),
            body,
        },
    ))
}

/// The current version of each stream named (0 for one that does not exist).
pub(super) async fn stream_versions(
    conn: &mut sqlx::SqliteConnection,
    streams: &[&str],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let streams_json = serde_json::to_string(streams).expect("strings encode");
    // One row holding a JSON object, not one row a stream: each row costs a thread hand-off.
    let versions: String = sqlx::query_scalar(
        "SELECT json_group_object(j.value,
                    (SELECT coalesce(max(version), 0) FROM events WHERE stream = j.value))
         FROM json_each(?1) AS j",
    )
    .bind(streams_json)
    .fetch_one(&mut *conn)
    .await?;
    serde_json::from_str(&versions).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

async fn head(conn: &mut sqlx::SqliteConnection) -> Result<Head, sqlx::Error> {
    let (position, hash, recorded_at): (i64, Vec<u8>, i64) =
        sqlx::query_as("SELECT position, hash, recorded_at FROM log_head WHERE id = 1")
            .fetch_one(conn)
            .await?;
    let hash = ChainHash::from_slice(&hash).unwrap_or(hpki_events::GENESIS_HASH);
    Ok(Head {
        position,
        hash,
        recorded_at,
    })
}

pub(crate) async fn set_head(
    tx: &mut Transaction<'static, Sqlite>,
    head: &Head,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE log_head SET position = ?1, hash = ?2, recorded_at = ?3 WHERE id = 1")
        .bind(head.position)
        .bind(head.hash.0.as_slice())
        .bind(head.recorded_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn insert_rows(
    tx: &mut Transaction<'static, Sqlite>,
    rows: &[Row],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut insert =
            QueryBuilder::<Sqlite>::new(format!("INSERT INTO events ({EVENT_COLUMNS}) "));
        insert.push_values(chunk, |mut values, row| {
            values
                .push_bind(row.position)
                .push_bind(row.event_id.to_string())
                .push_bind(row.stream.as_str())
                .push_bind(row.version)
                .push_bind(row.event_type)
                .push_bind(row.schema_version)
                .push_bind(row.recorded_at)
                .push_bind(row.body.as_slice())
                .push_bind(row.hash.0.as_slice());
        });
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn raw_event(row: &sqlx::sqlite::SqliteRow) -> Result<RawEvent, StoreError> {
    let position: i64 = row.get(0);
    let event_id: String = row.get(1);
    Ok(RawEvent {
        position,
        event_id: Uuid::parse_str(&event_id).unwrap_or(Uuid::nil()),
        stream: row.get(2),
        version: row.get(3),
        event_type: row.get(4),
        schema_version: row.get(5),
        recorded_at: row.get(6),
        body: row.get(7),
        hash: row.get(8),
    })
}

/// Reads the whole log after `after` in one read transaction (a consistent snapshot) and sends
/// it on in pages; stops when the receiver goes away. Runs on a blocking thread.
///
/// This one scan uses rusqlite rather than sqlx: sqlx's SQLite driver hands every row from its
/// worker thread to the async task one at a time, and for a million rows those hand-offs cost
/// more than the reading, hashing and folding together (BENCHMARKS.md).
pub fn scan(path: &Path, after: i64, columns: Columns, pages: super::Pages<RawEvent>) {
    let read = || -> rusqlite::Result<()> {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags)?;
        let selected = columns.names();
        let mut statement = conn.prepare(&format!(
            "SELECT {selected} FROM events WHERE position > ?1 ORDER BY position"
        ))?;
        let rows = statement.query_map([after], |row| match columns {
            Columns::All => {
                let event_id: String = row.get(1)?;
                Ok(RawEvent {
                    position: row.get(0)?,
                    event_id: Uuid::parse_str(&event_id).unwrap_or(Uuid::nil()),
                    stream: row.get(2)?,
                    version: row.get(3)?,
                    event_type: row.get(4)?,
                    schema_version: row.get(5)?,
                    recorded_at: row.get(6)?,
                    body: row.get(7)?,
                    hash: row.get(8)?,
                })
            }
            // The other fields left empty, which saves the scan three allocations an event and
            // the decoding thread three frees.
            Columns::ForDecoding => Ok(RawEvent::for_decoding(
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
            )),
        })?;
        let rows = rows.map(|row| row.map_err(|e| StoreError::Scan(e.to_string())));
        super::send_in_pages(rows, &pages);
        Ok(())
    };
    if let Err(error) = read() {
        let _ = pages.blocking_send(Err(StoreError::Scan(error.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder name with the characters a URI gives meaning to: the file attached is still
    /// the one at that path, and a path with no file is refused, not created.
    #[tokio::test]
    async fn a_file_is_attached_by_its_path_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a b?c#d%e&f=g");
        std::fs::create_dir(&odd).unwrap();
        let file = odd.join("spill.db");
        rusqlite::Connection::open(&file)
            .unwrap()
            .execute_batch("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('here');")
            .unwrap();
        for url in [
            "sqlite::memory:".to_owned(),
            format!("sqlite://{}", dir.path().join("store.db").display()),
        ] {
            let store = SqliteStore::connect(&url).await.unwrap();
            let mut conn = store.pool.acquire().await.unwrap();
            sqlx::query("ATTACH DATABASE ?1 AS other")
                .bind(file_uri(&file, "ro"))
                .execute(&mut *conn)
                .await
                .unwrap();
            let v: String = sqlx::query_scalar("SELECT v FROM other.t")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(v, "here", "{url}");
            sqlx::query("DETACH DATABASE other")
                .execute(&mut *conn)
                .await
                .unwrap();
            let missing = sqlx::query("ATTACH DATABASE ?1 AS other")
                .bind(file_uri(&odd.join("missing.db"), "ro"))
                .execute(&mut *conn)
                .await;
            assert!(missing.is_err(), "{url}");
            assert!(!odd.join("missing.db").exists());
        }
    }
}
