//! The processors that act on the world from the log: the mail outbox, print batches and CRL
//! publication. A processor never decides; it follows the log, does its effect, and records
//! what it did as events, so a crash at any point is followed by a run that finishes the work
//! without doing any of it twice.
//!
//! Each processor runs in at most one place at a time, by a lease per processor name:
//! - PostgreSQL: a session advisory lock held on a connection of its own, so several
//!   `hpki serve` instances on one database share the work and a dead instance's lease ends
//!   with its connection;
//! - SQLite: an exclusive lock on a file beside the database, which the operating system
//!   releases when the process ends.

use std::fs::{File, TryLockError};
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;

use crate::store::{Db, Store, StoreError};

pub mod crl_publisher;
mod mail_context;
pub mod outbox;
pub mod print_batches;

/// The right to run one processor.
pub enum Lease {
    /// The connection is `None` only once released.
    Postgres {
        connection: Option<PoolConnection<sqlx::Postgres>>,
        key: i64,
    },
    File(#[allow(dead_code)] File),
    /// An in-memory database belongs to one process.
    Memory,
}

/// The advisory-lock key of a processor: the first eight bytes of a hash of its name and the
/// schema the log lives in. Advisory locks are shared by the whole database, so two back
/// offices in two schemas of one database (or two tests) must not take each other's lease.
fn lock_key(schema: &str, name: &str) -> i64 {
    let digest = Sha256::digest(format!("hpki-processor:{schema}:{name}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("eight bytes"))
}

impl Lease {
    /// Takes the lease of `name` if no one holds it.
    pub async fn try_take(store: &Store, name: &str) -> Result<Option<Lease>, StoreError> {
        match store.db() {
            Db::Postgres(db) => {
                let mut connection = db.pool.acquire().await?;
                let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
                    .fetch_one(&mut *connection)
                    .await?;
                let key = lock_key(&schema, name);
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut *connection)
                    .await?;
                Ok(got.then_some(Lease::Postgres {
                    connection: Some(connection),
                    key,
                }))
            }
            Db::Sqlite(db) => {
                let Some(file) = db.file() else {
                    return Ok(Some(Lease::Memory));
                };
                let path = lock_path(file, name);
                let lock = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::Scan(format!("{}: {e}", path.display())))?;
                match lock.try_lock() {
                    Ok(()) => Ok(Some(Lease::File(lock))),
                    Err(TryLockError::WouldBlock) => Ok(None),
                    Err(TryLockError::Error(e)) => {
                        Err(StoreError::Scan(format!("{}: {e}", path.display())))
                    }
                }
            }
        }
    }

    /// Gives the lease back at once. A lease dropped without this also ends: its connection
    /// is closed rather than returned to the pool still holding the lock.
    pub async fn release(mut self) {
        if let Lease::Postgres { connection, key } = &mut self
            && let Some(mut held) = connection.take()
        {
            let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
                .bind(*key)
                .fetch_one(&mut *held)
                .await;
            if !matches!(unlocked, Ok(true)) {
                held.close_on_drop();
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Lease::Postgres {
            connection: Some(held),
            ..
        } = self
        {
            held.close_on_drop();
        }
    }
}

fn lock_path(database: &std::path::Path, name: &str) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push(format!(".{name}.lock"));
    PathBuf::from(path)
}

/// Runs `step` whenever there may be work, for ever, each time holding `name`'s lease: when
/// another instance (or a staff member's on-demand run) holds it, skips this turn. `step`
/// returns how long it may sleep at most before it has work again (a retry time, the next
/// schedule time). The lease is held only while a step runs, so on-demand runs through the
/// API are refused only while the work is actually being done.
pub async fn run<F, Fut>(store: Store, name: &'static str, poll: Duration, wake: Wake, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<Duration>>>,
{
    let mut head = store.watch_head();
    loop {
        let mut wait = poll;
        match exclusively(&store, name, step()).await {
            Ok(Some(Some(next))) => wait = wait.min(next),
            Ok(Some(None) | None) => {}
            Err(error) => tracing::error!(
                processor = name,
                error = format!("{error:#}"),
                "a processor step failed"
            ),
        }
        match wake {
            Wake::OnAppend => {
                let _ = tokio::time::timeout(wait, head.changed()).await;
            }
            Wake::OnTime => tokio::time::sleep(wait).await,
        }
    }
}

/// When a background processor looks for work besides its own wait.
#[derive(Clone, Copy)]
pub enum Wake {
    /// Also whenever an event is appended in this instance (mail, CRL after a revocation).
    OnAppend,
    /// Only when its wait ends (print batches, made at scheduled times).
    OnTime,
}

/// Runs `work` once while holding `name`'s lease: `None` when another instance (or this
/// instance's own background runner) holds it now.
pub async fn exclusively<T>(
    store: &Store,
    name: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<Option<T>> {
    let Some(lease) = Lease::try_take(store, name).await? else {
        return Ok(None);
    };
    let result = work.await;
    lease.release().await;
    result.map(Some)
}

/// The processors of one instance.
#[derive(Clone)]
pub struct Processors {
    pub outbox: outbox::Outbox,
    pub crl: crl_publisher::CrlPublisher,
    pub print: print_batches::PrintBatches,
}

impl Processors {
    pub fn new(
        office: &crate::office::Office,
        config: &crate::config::Config,
    ) -> anyhow::Result<Processors> {
        Ok(Processors {
            outbox: outbox::Outbox::new(office.clone(), config)?,
            crl: crl_publisher::CrlPublisher::new(office.clone(), config)?,
            print: print_batches::PrintBatches::new(office.clone(), config)?,
        })
    }

    /// Starts the processors the configuration runs in the background; their tasks' handles.
    pub fn spawn(
        &self,
        store: &Store,
        config: &crate::config::Config,
    ) -> Vec<tokio::task::AbortHandle> {
        let mut tasks = Vec::new();
        if config.mail.background {
            let outbox = self.outbox.clone();
            let task = tokio::spawn(run(
                store.clone(),
                "outbox",
                Duration::from_secs(5),
                Wake::OnAppend,
                move || {
                    let outbox = outbox.clone();
                    async move { Ok(outbox.step().await?.1) }
                },
            ));
            tasks.push(task.abort_handle());
        }
        if config.crl.background {
            let crl = self.crl.clone();
            let poll = Duration::from_secs(config.crl.poll_seconds.max(1));
            let task = tokio::spawn(run(store.clone(), "crl", poll, Wake::OnAppend, move || {
                let crl = crl.clone();
                async move { Ok(crl.step().await?.1) }
            }));
            tasks.push(task.abort_handle());
        }
        if config.print.background && self.print.scheduled() {
            let print = self.print.clone();
            let task = tokio::spawn(run(
                store.clone(),
                "print",
                Duration::from_secs(60),
                Wake::OnTime,
                move || {
                    let print = print.clone();
                    async move { Ok(print.step().await?.1) }
                },
            ));
            tasks.push(task.abort_handle());
        }
        tasks
    }
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a part:
/// a temporary file in the same folder, flushed to disk, then renamed over.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// The schedule's first time after `after`, the schedule read in JST.
pub fn next_scheduled(
    schedule: &cron::Schedule,
    after: time::OffsetDateTime,
) -> Option<time::OffsetDateTime> {
    let jst = chrono::FixedOffset::east_opt(crate::clock::JST.whole_seconds()).expect("valid");
    let after = chrono::DateTime::from_timestamp(after.unix_timestamp(), 0)?.with_timezone(&jst);
    let next = schedule.after(&after).next()?;
    time::OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
}

/// How long from `now` until `at` (zero when it has passed).
pub fn until(now: time::OffsetDateTime, at: time::OffsetDateTime) -> Duration {
    Duration::from_millis((at - now).whole_milliseconds().max(0) as u64)
}

/// `sha256:` of bytes as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
