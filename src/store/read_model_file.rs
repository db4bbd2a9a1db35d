//! A SQLite store's read models live in a file of their own, beside the database: the
//! projections' documents and checkpoints, nothing else. Every connection that reads or writes
//! them attaches the current file as `models` ([`Place::attach`]); the main database names
//! which file is current (`read_model_file`, migrations/sqlite/0007).
//!
//! Why a file of its own: read models are a fold of the log and nothing more, so a rebuild of
//! every projection writes a new file and makes it current by changing that one name, instead
//! of copying a million documents into the live database (which wrote them twice more, to the
//! WAL and back into the database: two thirds of a rebuild's time; BENCHMARKS.md, session 25).
//! A connection finds the name changed the next time it is taken for read models and attaches
//! the new file. Whatever is written into an old file after the swap is lost with that file,
//! and nothing is lost by it: the new file holds its own checkpoints, from which the runner
//! folds on.
//!
//! The folder `<database>.read-models/` holds the current file, a lock file that rebuilds and
//! the making of a first file take turns on, and, for a moment, the file a rebuild is writing.
//! A file missing or laid out for another version of this program is made again, empty, and
//! the runner folds the log into it from position 0.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use sqlx::{Sqlite, SqlitePool, pool::PoolConnection};

use super::StoreError;

/// The layout of a read-model file, in its `user_version`. A file of another layout is not
/// attached: a new one is made and folded from the log.
pub const LAYOUT: i64 = 1;

/// A read-model file's tables. Read models are a `WITHOUT ROWID` table: rows are stored in the
/// B-tree of their key itself, so a write touches one B-tree, not a rowid table and an index of
/// the key (a million `INSERT OR REPLACE` through Python's sqlite3: 5.3 s against 3.7 s;
/// BENCHMARKS.md, session 12). Bodies are a few hundred bytes, well under the twentieth of a
/// page SQLite recommends for such tables. The work lists are read through
/// `read_models_by_list`. The same table as migrations/sqlite/0006 made in the log's database
/// before 0007 dropped it: written out here because this file is made by code, not by
/// migrations (a file of another layout is replaced, not migrated).
const SCHEMA: &str = "
CREATE TABLE read_models (
    projection TEXT NOT NULL,
    key        TEXT NOT NULL,
    list       TEXT NOT NULL,
    sort_key   TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (projection, key)
) WITHOUT ROWID;
CREATE INDEX read_models_by_list ON read_models (projection, list, sort_key);
-- How far each projection has read; moved in the same transaction as its documents.
CREATE TABLE projection_checkpoints (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
";

/// Makes a new read-model file at `path`, which must not exist. 16 KB pages rather than
/// SQLite's 4 KB: a million documents take a quarter of the page splits and page-cache
/// lookups (BENCHMARKS.md, session 13). The page size is set before anything is written: it
/// holds only from a database's creation.
pub fn create(path: &Path) -> rusqlite::Result<Connection> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.execute_batch(&format!(
        "PRAGMA page_size = 16384; BEGIN; {SCHEMA} PRAGMA user_version = {LAYOUT}; COMMIT;"
    ))?;
    Ok(conn)
}

/// Finishes a read-model file written without a journal (a fold's): sets every projection of
/// `names` at `position`, puts the file in WAL mode, as live read models are, and syncs it and
/// its folder, so that it can be named current.
pub fn seal(path: &Path, names: &[&str], position: i64) -> Result<(), StoreError> {
    let sealed = || -> rusqlite::Result<()> {
        let conn = Connection::open(path)?;
        let mut insert = conn.prepare(
            "INSERT INTO projection_checkpoints (name, position) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET position = ?2",
        )?;
        for name in names {
            insert.execute(rusqlite::params![name, position])?;
        }
        drop(insert);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.close().map_err(|(_, e)| e)
    };
    sealed().map_err(|e| failed(path, e))?;
    sync(path)
}

/// Writes `path` and its folder's entry for it to disk.
fn sync(path: &Path) -> Result<(), StoreError> {
    let synced = File::open(path)
        .and_then(|file| file.sync_all())
        .and_then(
            |()| match path.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(dir) => File::open(dir).and_then(|dir| dir.sync_all()),
                None => Ok(()),
            },
        );
    synced.map_err(|e| failed(path, e))
}

fn failed(path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError::ReadModels(format!("{}: {error}", path.display()))
}

/// Where a SQLite store keeps its read models.
#[derive(Clone, Debug)]
pub enum Place {
    /// In a folder beside the database file.
    Folder(PathBuf),
    /// An in-memory store's: a shared in-memory database of its own, named for the store, which
    /// lives as long as the pool's connections do. Rebuilt by copying, not by swapping.
    Memory(String),
}

impl Place {
    /// The place for the database file `file` (`None`: an in-memory database). The folder is
    /// made, and named by its canonical path: that is how SQLite reports an attached file.
    pub fn for_database(file: Option<&Path>) -> Result<Place, StoreError> {
        let Some(file) = file else {
            let name = uuid::Uuid::new_v4().simple();
            return Ok(Place::Memory(format!(
                "file:hpki-read-models-{name}?mode=memory&cache=shared"
            )));
        };
        // The database's own path, links resolved: two processes that name it differently
        // must find the same folder.
        let file = std::fs::canonicalize(file).map_err(|e| failed(file, e))?;
        let mut name = file.as_os_str().to_owned();
        name.push(".read-models");
        let dir = PathBuf::from(name);
        std::fs::create_dir_all(&dir).map_err(|e| failed(&dir, e))?;
        let dir = std::fs::canonicalize(&dir).map_err(|e| failed(&dir, e))?;
        Ok(Place::Folder(dir))
    }

    /// Makes sure the database names a usable read-model file, making an empty one if it names
    /// none, a missing one or one of another layout. Run when a store is opened, and when a
    /// connection cannot attach the file named.
    pub async fn ensure(&self, pool: &SqlitePool) -> Result<(), StoreError> {
        let Place::Folder(dir) = self else {
            return Ok(());
        };
        if usable(dir, current(pool).await?.as_deref())? {
            return Ok(());
        }
        let lock = Lock::wait(dir).await?;
        // Another process may have made one while this one waited.
        if usable(dir, current(pool).await?.as_deref())? {
            return Ok(());
        }
        let swap = Swap::new(dir.clone(), lock);
        create(swap.path()).map_err(|e| failed(swap.path(), e))?;
        swap.install(pool, &[], 0).await?;
        tracing::info!(folder = %dir.display(), "made a new, empty read-model file");
        Ok(())
    }

    /// Attaches the current read-model file to `conn` as `models`, unless it is attached
    /// already; a connection still holding an earlier file lets it go first. A file named that
    /// is missing when a connection comes to attach it (removed behind the store's back) is
    /// made again, empty, and folded from the log; a connection that already has it open goes
    /// on reading the removed file until the name changes or the connection closes.
    pub async fn attach(
        &self,
        pool: &SqlitePool,
        conn: &mut PoolConnection<Sqlite>,
    ) -> Result<(), StoreError> {
        let dir = match self {
            Place::Memory(uri) => return attach_memory(conn, uri).await,
            Place::Folder(dir) => dir,
        };
        let (name, attached): (Option<String>, Option<String>) = sqlx::query_as(
            "SELECT (SELECT name FROM main.read_model_file WHERE id = 1),
                    (SELECT file FROM pragma_database_list WHERE name = 'models')",
        )
        .fetch_one(&mut **conn)
        .await?;
        let wanted = name.map(|name| dir.join(name));
        if wanted.is_some() && attached.as_deref().map(Path::new) == wanted.as_deref() {
            return Ok(());
        }
        if attached.is_some() {
            sqlx::query("DETACH DATABASE models")
                .execute(&mut **conn)
                .await?;
        }
        if let Some(wanted) = &wanted
            && attach_file(conn, wanted).await.is_ok()
        {
            return Ok(());
        }
        self.ensure(pool).await?;
        let wanted = dir.join(current(pool).await?.unwrap_or_default());
        attach_file(conn, &wanted)
            .await
            .map_err(|e| failed(&wanted, e))
    }
}

/// The name the main database gives the current file.
async fn current(pool: &SqlitePool) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT name FROM read_model_file WHERE id = 1")
            .fetch_optional(pool)
            .await?,
    )
}

/// Whether `name` in `dir` is a read-model file of this layout.
/// No name, no file or another layout: false. A file that is there but cannot be read (too
/// many open files, another user's shared-memory file) is an error, never a reason to put an
/// empty file in its place.
fn usable(dir: &Path, name: Option<&str>) -> Result<bool, StoreError> {
    let Some(name) = name else { return Ok(false) };
    let path = dir.join(name);
    if !path.try_exists().map_err(|e| failed(&path, e))? {
        return Ok(false);
    }
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let layout = Connection::open_with_flags(&path, flags)
        .and_then(|conn| conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0)))
        .map_err(|e| failed(&path, e))?;
    Ok(layout == LAYOUT)
}

/// Read models may lose their last commits in a power cut (`synchronous = NORMAL`, not the
/// log's FULL): a commit lost takes its checkpoint with it, and the runner folds those events
/// again. 64 MB of page cache, as the main database has.
const ATTACHED: &str = "PRAGMA models.synchronous = NORMAL; PRAGMA models.cache_size = -65536;";

async fn attach_file(conn: &mut PoolConnection<Sqlite>, path: &Path) -> Result<(), sqlx::Error> {
    // `mode=rw`: a missing file is an error, not a new empty database.
    sqlx::query("ATTACH DATABASE ?1 AS models")
        .bind(super::sqlite::file_uri(path, "rw"))
        .execute(&mut **conn)
        .await?;
    sqlx::raw_sql(ATTACHED).execute(&mut **conn).await?;
    Ok(())
}

async fn attach_memory(conn: &mut PoolConnection<Sqlite>, uri: &str) -> Result<(), StoreError> {
    let attached: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pragma_database_list WHERE name = 'models')",
    )
    .fetch_one(&mut **conn)
    .await?;
    if attached {
        return Ok(());
    }
    sqlx::query("ATTACH DATABASE ?1 AS models")
        .bind(uri)
        .execute(&mut **conn)
        .await?;
    // The first connection makes the tables; the others find them.
    let made: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM models.sqlite_master WHERE name = 'read_models')",
    )
    .fetch_one(&mut **conn)
    .await?;
    if !made {
        let schema = SCHEMA.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS models.");
        let schema = schema.replace(
            "CREATE INDEX read_models_by_list ON",
            "CREATE INDEX IF NOT EXISTS models.read_models_by_list ON",
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
            .execute(&mut **conn)
            .await?;
    }
    Ok(())
}

/// The folder's lock: one rebuild (or making of a first file) at a time, across processes.
/// Held as long as the file is open: dropping it releases the lock.
pub struct Lock {
    _held: File,
}

impl Lock {
    fn open(dir: &Path) -> Result<File, StoreError> {
        // Made again if the folder was removed while the store was open.
        std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
        let path = dir.join("lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| failed(&path, e))
    }

    /// Takes the lock, or answers `None` when another rebuild holds it.
    pub fn try_take(dir: &Path) -> Result<Option<Lock>, StoreError> {
        let file = Lock::open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lock { _held: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(failed(&dir.join("lock"), e)),
        }
    }

    /// Takes the lock, waiting for a rebuild that holds it.
    async fn wait(dir: &Path) -> Result<Lock, StoreError> {
        let file = Lock::open(dir)?;
        let path = dir.join("lock");
        tokio::task::spawn_blocking(move || file.lock().map(|()| Lock { _held: file }))
            .await
            .map_err(|e| failed(&path, e))?
            .map_err(|e| failed(&path, e))
    }
}

/// A new read-model file being written, under the folder's lock, to be made current by
/// [`Swap::install`]. Dropped before that, its file is removed.
pub struct Swap {
    dir: PathBuf,
    path: PathBuf,
    installed: bool,
    _lock: Lock,
}

impl Swap {
    pub fn new(dir: PathBuf, lock: Lock) -> Swap {
        let path = dir.join(format!("{}.db", uuid::Uuid::now_v7().simple()));
        Swap {
            dir,
            path,
            installed: false,
            _lock: lock,
        }
    }

    /// Where the new file is to be written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals the finished file (`names` at `position`), makes it the current one, and removes
    /// every other file in the folder: earlier files, and any a crashed rebuild left. A
    /// connection of another process that still has an earlier file open keeps reading it
    /// until it is next taken for read models.
    pub async fn install(
        mut self,
        pool: &SqlitePool,
        names: &[&'static str],
        position: i64,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sealed = {
            let (names, path) = (names.to_vec(), path.clone());
            tokio::task::spawn_blocking(move || seal(&path, &names, position))
        };
        sealed.await.map_err(|e| failed(&path, e))??;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a name this made");
        sqlx::query(
            "INSERT INTO read_model_file (id, name) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET name = ?1",
        )
        .bind(name)
        .execute(pool)
        .await?;
        self.installed = true;
        // Freeing a large file's blocks takes a tenth of a second: off the async threads.
        let (dir, name) = (self.dir.clone(), name.to_owned());
        let _ = tokio::task::spawn_blocking(move || remove_all_but(&dir, &name)).await;
        Ok(())
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        if !self.installed {
            remove_with_journals(&self.path);
        }
    }
}

/// Removes the read-model files in `dir` other than `keep` (and their WAL, shared-memory and
/// journal files). Failures are only logged: a file left over is removed by the next rebuild.
fn remove_all_but(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stem = ["-wal", "-shm", "-journal"]
            .iter()
            .fold(name, |name, suffix| name.trim_end_matches(suffix));
        if stem.ends_with(".db")
            && stem != keep
            && let Err(error) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(file = %entry.path().display(), %error, "an earlier read-model file was not removed");
        }
    }
}

/// Removes the SQLite file at `path` with its WAL, shared-memory and journal files, ignoring
/// any that are not there.
pub fn remove_with_journals(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}
