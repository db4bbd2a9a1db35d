//! The fold's spill (`src/projection_runner.rs`): a SQLite file with a `read_models` table that a
//! rebuild or replay writes its documents into while it folds the log, reads one document back
//! from when a later event patches it, and streams out at the end.
//!
//! The spill is written by a thread of its own through rusqlite, not through sqlx: sqlx's SQLite
//! driver passes every statement from the async task to its worker thread and back, and a
//! million documents cost more in those hand-offs than in the writing (BENCHMARKS.md). Here the
//! fold hands over a page of documents and goes on folding while the thread writes it, so
//! folding and writing share the two cores. Requests run in the order they were sent, so a
//! read always sees every page sent before it.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use futures::stream::BoxStream;
use hpki_projections::{Body, Doc};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, read_model_file};

enum Request {
    /// Puts (`Some`) and deletes (`None`) for one projection.
    Write {
        projection: &'static str,
        docs: Vec<(String, Option<Doc<Body>>)>,
    },
    Read {
        projection: &'static str,
        key: String,
        reply: oneshot::Sender<Result<Option<Doc<Body>>, StoreError>>,
    },
    /// Commits and closes; answers with the number of documents held.
    Finish {
        reply: oneshot::Sender<Result<i64, StoreError>>,
    },
    /// Closes without committing; answers once the file is closed.
    Abandon { reply: oneshot::Sender<()> },
}

pub struct Spill {
    path: PathBuf,
    requests: mpsc::Sender<Request>,
}

/// What a spill file is for.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A rebuild's scratch file, copied into the store and then removed; with the work lists'
    /// index or without.
    Scratch { list_index: bool },
    /// A read-model file, kept: a replay's, or a rebuild's that becomes the live one.
    ReadModels,
}

impl Spill {
    /// Creates a new scratch spill at `path` with the store's table of read models, its work
    /// lists' index kept up to date (`list_index`) or dropped: a rebuild's
    /// ([`crate::store::Store::rebuild_spill`]).
    pub async fn create(path: &Path, list_index: bool) -> Result<Spill, StoreError> {
        Spill::create_as(path, Kind::Scratch { list_index }).await
    }

    /// Creates a new spill at `path` that is a read-model file once finished and sealed
    /// ([`read_model_file::seal`]): a replay's, or a rebuild's new live file.
    pub async fn create_read_models(path: &Path) -> Result<Spill, StoreError> {
        Spill::create_as(path, Kind::ReadModels).await
    }

    async fn create_as(path: &Path, kind: Kind) -> Result<Spill, StoreError> {
        // The layout of a read-model file, which a replay's is and a rebuild's becomes.
        let conn = read_model_file::create(path)
            .and_then(|conn| prepare(conn, kind))
            .map_err(spill_error)?;
        let file = path.to_owned();
        // Two pages in flight at most: the fold waits rather than holding more in memory.
        let (requests, received) = mpsc::channel(2);
        std::thread::Builder::new()
            .name("hpki-spill".into())
            .spawn(move || serve(conn, &file, kind, received))
            .map_err(|e| StoreError::Spill(e.to_string()))?;
        Ok(Spill {
            path: path.to_owned(),
            requests,
        })
    }

    /// Hands a page of documents (in any order, a key at most once) to the writer and returns
    /// at once.
    pub async fn write(
        &self,
        projection: &'static str,
        docs: Vec<(String, Option<Doc<Body>>)>,
    ) -> Result<(), StoreError> {
        self.send(Request::Write { projection, docs }).await
    }

    /// A document as the pages written so far leave it.
    pub async fn doc(
        &self,
        projection: &'static str,
        key: &str,
    ) -> Result<Option<Doc<Body>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Read {
            projection,
            key: key.to_owned(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Commits everything written and closes the file; the number of documents it holds.
    /// An error of any earlier write is reported here. The file then holds the documents for
    /// [`docs`] to read back by key.
    pub async fn finish(self) -> Result<i64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Finish { reply }).await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Closes the file without committing, so that it can be removed.
    pub async fn abandon(self) {
        let (reply, answer) = oneshot::channel();
        if self.send(Request::Abandon { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn send(&self, request: Request) -> Result<(), StoreError> {
        self.requests.send(request).await.map_err(|_| stopped())
    }
}

/// A projection's documents by key, as [`copy_rows`] and [`docs`] read them.
const DOCS_BY_KEY: &str =
    "SELECT key, list, sort_key, body FROM read_models WHERE projection = ?1 ORDER BY key";

/// A finished spill opened for reading only.
fn open_finished(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Every document of a projection in a finished spill, by key, as rows of a binary `COPY`
/// into `read_models` (`pg_copy::write_text_row`), in buffers of about a megabyte. Read and
/// written on a blocking thread straight from SQLite's columns, so that no document is made
/// into strings and handed across threads one by one: a rebuild's copy into PostgreSQL went no
/// quicker in binary until this side did (BENCHMARKS.md, session 18).
pub fn copy_rows(
    path: &Path,
    projection: &'static str,
) -> BoxStream<'static, Result<Vec<u8>, StoreError>> {
    const BUFFER: usize = 1 << 20;
    let (buffers, received) = mpsc::channel(2);
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let read = || -> rusqlite::Result<()> {
            let conn = open_finished(&path)?;
            let mut statement = conn.prepare(DOCS_BY_KEY)?;
            let mut rows = statement.query([projection])?;
            let mut buffer = Vec::with_capacity(BUFFER + BUFFER / 8);
            while let Some(row) = rows.next()? {
                let text = |column: usize| -> rusqlite::Result<&str> {
                    row.get_ref(column)?.as_str().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            column,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })
                };
                super::pg_copy::write_text_row(
                    &mut buffer,
                    &[projection, text(0)?, text(1)?, text(2)?, text(3)?],
                );
                if buffer.len() >= BUFFER {
                    let full =
                        std::mem::replace(&mut buffer, Vec::with_capacity(BUFFER + BUFFER / 8));
                    if buffers.blocking_send(Ok(full)).is_err() {
                        return Ok(());
                    }
                }
            }
            if !buffer.is_empty() {
                let _ = buffers.blocking_send(Ok(buffer));
            }
            Ok(())
        };
        if let Err(error) = read() {
            let _ = buffers.blocking_send(Err(spill_error(error)));
        }
    });
    // Each buffer a "page" of bytes.
    super::pages_received(received).boxed()
}

/// Every document of a projection in a finished spill or a read-model file (a replay's), by
/// key, bodies parsed: what tests compare with the documents the projections make in memory.
pub fn docs(path: &Path, projection: &str) -> Result<Vec<(String, Doc)>, StoreError> {
    let conn = open_finished(path).map_err(spill_error)?;
    let mut statement = conn.prepare(DOCS_BY_KEY).map_err(spill_error)?;
    let rows = statement
        .query_map([projection], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .map_err(spill_error)?;
    rows.map(|row| {
        let (key, list, sort_key, body) = row.map_err(spill_error)?;
        // A body the writer stored that does not parse is a corrupt file (position 0: not an
        // event's).
        let body = serde_json::from_str(&body).map_err(|source| StoreError::Corrupt {
            position: 0,
            source,
        })?;
        Ok((
            key,
            Doc {
                list,
                sort_key,
                body,
            },
        ))
    })
    .collect()
}

fn prepare(conn: Connection, kind: Kind) -> rusqlite::Result<Connection> {
    // No journal and no fsync while folding: the file is either finished (and a replay's is
    // complete then) or removed, never rolled back and kept. 64 MB of page cache keeps the
    // upper levels of the table's B-tree in memory (256 MB measured no faster).
    conn.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -65536;
         PRAGMA temp_store = MEMORY;
         BEGIN;",
    )?;
    // The work lists' index (migrations/sqlite/0006_read_models_without_rowid.sql) is kept up
    // to date as documents are written, rather than dropped and built at the end: most sort
    // keys begin with the time of the event, so entries mostly go in at the end of the index,
    // and a replay ended with a second of one core sorting while the other sat idle. Kept up
    // to date, a million-event replay took 3.8-4.4 s against 4.1-5.5 s (nine pairs), with
    // less CPU in all. A rebuild's copy into an empty SQLite store then moves the index's
    // records as they are, as it does the table's (`SqliteStore::replace_projections`;
    // BENCHMARKS.md, session 21). A rebuild into PostgreSQL reads its scratch file by key
    // only, and needs no such index.
    if kind == (Kind::Scratch { list_index: false }) {
        conn.execute_batch("DROP INDEX read_models_by_list;")?;
    }
    Ok(conn)
}

/// The writer: runs requests in order until `Finish`, or until the fold goes away or abandons
/// the file (then it closes it uncommitted, for its owner to remove). After a failed write it
/// answers every later request with that failure.
fn serve(conn: Connection, path: &Path, kind: Kind, mut requests: mpsc::Receiver<Request>) {
    let mut failed: Option<String> = None;
    while let Some(request) = requests.blocking_recv() {
        match request {
            Request::Write { projection, docs } => {
                if failed.is_none()
                    && let Err(e) = write(&conn, projection, &docs)
                {
                    failed = Some(e.to_string());
                }
                // Dropped here, on this thread, not on the fold's.
                drop(docs);
            }
            Request::Read {
                projection,
                key,
                reply,
            } => {
                let answer = match &failed {
                    Some(e) => Err(StoreError::Spill(e.clone())),
                    None => read(&conn, projection, &key),
                };
                let _ = reply.send(answer);
            }
            Request::Finish { reply } => {
                let answer = match failed.take() {
                    Some(e) => Err(StoreError::Spill(e)),
                    None => finish(conn, path, kind),
                };
                let _ = reply.send(answer);
                return;
            }
            Request::Abandon { reply } => {
                // Closed uncommitted; the owner removes the file.
                drop(conn);
                let _ = reply.send(());
                return;
            }
        }
    }
}

/// Documents a put statement writes at once: one statement for 50 rows took two thirds of the
/// time of 50 single-row statements (a million documents, 0.73 against 1.13 µs a row;
/// BENCHMARKS.md, session 15).
const ROWS_A_STATEMENT: usize = 50;

/// `INSERT OR REPLACE` of `rows` documents of one projection (`?1`).
fn put_sql(rows: usize) -> String {
    // REPLACE, not an upsert's ON CONFLICT: the row is replaced whole either way, and SQLite
    // finds the conflict in the course of the insert instead of looking the key up first (a
    // million new rows through Python's sqlite3: 4.2 s upsert, 3.7 s replace).
    let mut sql = String::from(
        "INSERT OR REPLACE INTO read_models (projection, key, list, sort_key, body) VALUES ",
    );
    for row in 0..rows {
        let first = 2 + row * 4;
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(?1, ?{first}, ?{}, ?{}, ?{})",
            first + 1,
            first + 2,
            first + 3
        ));
    }
    sql
}

/// Writes a page of one projection's documents. A page holds each key once, so its puts and
/// deletes may run in any order.
fn write(
    conn: &Connection,
    projection: &str,
    docs: &[(String, Option<Doc<Body>>)],
) -> rusqlite::Result<()> {
    let mut puts: Vec<(&str, &Doc<Body>)> = docs
        .iter()
        .filter_map(|(key, doc)| Some((key.as_str(), doc.as_ref()?)))
        .collect();
    // In key order, so that the rows go into the table's B-tree side by side. Sorted here
    // rather than by the fold: this thread has time to spare, the fold's has none, and these
    // pairs of references are a quarter of the size of the documents to move.
    puts.sort_unstable_by_key(|(key, _)| *key);
    let mut pages = puts.chunks_exact(ROWS_A_STATEMENT);
    if pages.len() > 0 {
        let mut many = conn.prepare_cached(&put_sql(ROWS_A_STATEMENT))?;
        many.raw_bind_parameter(1, projection)?;
        for page in &mut pages {
            for (row, (key, doc)) in page.iter().enumerate() {
                let first = 2 + row * 4;
                many.raw_bind_parameter(first, key)?;
                many.raw_bind_parameter(first + 1, &doc.list)?;
                many.raw_bind_parameter(first + 2, &doc.sort_key)?;
                many.raw_bind_parameter(first + 3, doc.body.as_str())?;
            }
            many.raw_execute()?;
        }
    }
    let mut one = conn.prepare_cached(&put_sql(1))?;
    for (key, doc) in pages.remainder() {
        one.execute(params![
            projection,
            key,
            doc.list,
            doc.sort_key,
            doc.body.as_str()
        ])?;
    }
    let mut delete =
        conn.prepare_cached("DELETE FROM read_models WHERE projection = ?1 AND key = ?2")?;
    for (key, _) in docs.iter().filter(|(_, doc)| doc.is_none()) {
        delete.execute(params![projection, key])?;
    }
    Ok(())
}

fn read(conn: &Connection, projection: &str, key: &str) -> Result<Option<Doc<Body>>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT list, sort_key, body FROM read_models WHERE projection = ?1 AND key = ?2",
        )
        .map_err(spill_error)?;
    statement
        .query_row(params![projection, key], |row| {
            Ok(Doc {
                list: row.get(0)?,
                sort_key: row.get(1)?,
                body: Body::stored(row.get(2)?),
            })
        })
        .optional()
        .map_err(spill_error)
}

fn finish(conn: Connection, path: &Path, kind: Kind) -> Result<i64, StoreError> {
    // A read-model file is made durable when it is sealed next (`read_model_file::seal`
    // syncs it): a quarter of a second at the end of a million-document replay, spent writing
    // the table's pages to disk. Started here, on a thread of its own, most of that writing is
    // done while the last pages are committed, counted and closed. Its outcome is not needed:
    // the seal's own sync reports what fails.
    let early_sync = (kind == Kind::ReadModels).then(|| {
        let path = path.to_owned();
        std::thread::spawn(move || std::fs::File::open(path).and_then(|file| file.sync_data()))
    });
    conn.execute_batch("COMMIT").map_err(spill_error)?;
    let count = conn
        .query_row("SELECT count(*) FROM read_models", [], |row| row.get(0))
        .map_err(spill_error)?;
    conn.close().map_err(|(_, e)| spill_error(e))?;
    if let Some(sync) = early_sync {
        let _ = sync.join();
    }
    Ok(count)
}

/// The scratch file's own failure, as the store reports it.
fn spill_error(error: rusqlite::Error) -> StoreError {
    StoreError::Spill(error.to_string())
}

fn stopped() -> StoreError {
    StoreError::Spill("the spill's writer stopped".into())
}
