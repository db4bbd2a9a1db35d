//! The event store: one append-only, hash-chained log on SQLite or PostgreSQL.
//!
//! Appends go through one writer task per process, which gathers the appends that arrive
//! together into one transaction (group commit). Inside that transaction the single row of
//! `log_head` is locked, so positions are handed out and committed strictly in order, even with
//! several processes on one database: a follower reading `position > n` never skips an event
//! that commits late, and the hash chain always extends the true predecessor.

mod pg_copy;
mod postgres;
pub mod read_model_file;
mod side;
pub mod spill;
mod sqlite;

/// The statements that read a projection's documents (`Store::docs`), for tests of their plans.
pub mod docs_statements {
    pub use super::postgres::{DOCS as POSTGRES, DOCS_OF_LIST as POSTGRES_OF_LIST};
    pub use super::sqlite::{DOCS as SQLITE, DOCS_OF_LIST as SQLITE_OF_LIST};
}

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, TryStreamExt};
use hpki_events::envelope::{Encoded, format_time, unix_micros};
use hpki_events::{ChainHash, DecodeError, EncodeError, Metadata, NewEvent, RecordedEvent};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::clock::SharedClock;

pub use postgres::PgStore;
pub use side::{PooledKey, StaffCredential, StoredPhoto};
pub use spill::Spill;
pub use sqlite::SqliteStore;

/// What the appender believes the stream's version to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have this version.
    Exact(i64),
    /// No check.
    Any,
}

/// Events for one stream, as part of an append.
#[derive(Clone, Debug)]
pub struct StreamAppend {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// What an append wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Events written by this call; 0 when every event id was already stored.
    pub written: usize,
    /// The global position of the last event written (or of the head, when none was).
    pub last_position: i64,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream} is at version {actual}, not {expected:?}")]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: i64,
    },
    #[error("event {0} is already stored, but others of the same append are not")]
    PartlyStored(Uuid),
    #[error("event {0} appears twice in one append")]
    DuplicateId(Uuid),
    #[error("stream name {0:?} is not valid (lowercase letters, digits and '-', 1 to 200 long)")]
    BadStream(String),
    #[error("an append must hold at least one event")]
    Empty,
    #[error(transparent)]
    Encode(Arc<EncodeError>),
    #[error("the database refused the append: {0}")]
    Database(Arc<sqlx::Error>),
    #[error("the store is shut down")]
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("event at position {position} cannot be read: {source}")]
    Decode { position: i64, source: DecodeError },
    #[error("event at position {position} is not valid JSON: {source}")]
    Corrupt {
        position: i64,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Url(String),
    #[error("reading the log failed: {0}")]
    Scan(String),
    #[error("the fold's working file failed: {0}")]
    Spill(String),
    #[error("the read models' file: {0}")]
    ReadModels(String),
}

/// An event row as stored: the indexed columns and the canonical bytes they were taken from.
#[derive(Clone, Debug)]
pub struct RawEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub stream: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub recorded_at: i64,
    pub body: Vec<u8>,
    pub hash: Vec<u8>,
}

impl RawEvent {
    /// What a read for decoding carries ([`pg_copy::Columns::ForDecoding`]): the position,
    /// body and hash; the other fields empty, for the body holds them all.
    pub fn for_decoding(position: i64, body: Vec<u8>, hash: Vec<u8>) -> RawEvent {
        RawEvent {
            position,
            event_id: Uuid::nil(),
            stream: String::new(),
            version: 0,
            event_type: String::new(),
            schema_version: 0,
            recorded_at: 0,
            body,
            hash,
        }
    }

    pub fn decode(&self) -> Result<RecordedEvent, StoreError> {
        let hash = ChainHash::from_slice(&self.hash).unwrap_or(hpki_events::GENESIS_HASH);
        RecordedEvent::decode(&self.body, hash).map_err(|source| match source {
            DecodeError::NotAnEvent(source) => StoreError::Corrupt {
                position: self.position,
                source,
            },
            source => StoreError::Decode {
                position: self.position,
                source,
            },
        })
    }
}

/// The end of the log: its last position, hash and recorded time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub position: i64,
    pub hash: ChainHash,
    pub recorded_at: i64,
}

/// A signed checkpoint as stored.
#[derive(Clone, Debug)]
pub struct CheckpointRow {
    pub id: i64,
    pub position: i64,
    pub hash: Vec<u8>,
    pub signed_at: String,
    pub key_id: String,
    pub signature: Vec<u8>,
}

#[derive(Clone)]
pub enum Db {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// One append waiting for the writer.
struct Request {
    submitted: Submitted,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// What one append asks to write.
struct Submitted {
    appends: Vec<StreamAppend>,
    metadata: Metadata,
}

impl Submitted {
    fn events(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }
}

/// The store handle: cheap to clone, shared by the server, the processors and the CLI.
#[derive(Clone)]
pub struct Store {
    db: Db,
    writer: mpsc::Sender<Request>,
    head: watch::Receiver<i64>,
    appended: Arc<AtomicU64>,
}

/// Most events the writer puts in one transaction.
const GROUP_LIMIT: usize = 2_000;
/// Groups of at least this many events are encoded on blocking threads while the store reads
/// what the group needs (two halves on two threads from twice this many); smaller ones are
/// encoded in place, where a thread hand-off would cost more than it saves.
const ENCODE_APART: usize = 64;
/// Rows per page when reading the log in order.
pub const PAGE: i64 = 5_000;

impl Store {
    /// Connects, runs migrations and starts the writer.
    pub async fn open(url: &str, clock: SharedClock) -> Result<Store, StoreError> {
        let db = if url.starts_with("sqlite:") {
            Db::Sqlite(SqliteStore::connect(url).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Db::Postgres(PgStore::connect(url).await?)
        } else {
            return Err(StoreError::Url(format!(
                "database URL {:?} is neither sqlite:// nor postgres://",
                redact_url(url)
            )));
        };
        let head = db.head().await?;
        let (head_tx, head_rx) = watch::channel(head.position);
        let (tx, rx) = mpsc::channel(1024);
        let appended = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_loop(db.clone(), clock, rx, head_tx, appended.clone()));
        Ok(Store {
            db,
            writer: tx,
            head: head_rx,
            appended,
        })
    }

    /// Events this process has appended since it opened the store.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Appends events to one or more streams atomically: all are written or none.
    pub async fn append(
        &self,
        appends: Vec<StreamAppend>,
        metadata: Metadata,
    ) -> Result<Appended, AppendError> {
        check_request(&appends)?;
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Request {
                submitted: Submitted { appends, metadata },
                reply,
            })
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// Appends events to one stream.
    pub async fn append_to(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        metadata: Metadata,
    ) -> Result<Appended, AppendError> {
        let append = StreamAppend {
            stream: stream.to_owned(),
            expected,
            events,
        };
        self.append(vec![append], metadata).await
    }

    /// The last position this process knows to be committed; changes when this process
    /// appends. Followers also poll, for appends made by other processes.
    pub fn watch_head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    pub async fn head(&self) -> Result<Head, StoreError> {
        self.db.head().await
    }

    /// Up to `limit` events after `after`, in position order.
    pub async fn read_page(&self, after: i64, limit: i64) -> Result<Vec<RawEvent>, StoreError> {
        match &self.db {
            Db::Sqlite(db) => db.read_page(after, limit).await,
            Db::Postgres(db) => db.read_page(after, limit).await,
        }
    }

    /// Every event after `after`, in order, as stored.
    pub fn read_all(
        &self,
        after: i64,
    ) -> impl Stream<Item = Result<RawEvent, StoreError>> + Send + 'static {
        flatten(self.read_pages(after, pg_copy::Columns::All, Ok, None))
    }

    /// Every event after `after`, in order, each page run through `prepare` on the reading
    /// side (so that work shares the two cores with the consumer's).
    pub fn read_all_prepared<T: Send + 'static>(
        &self,
        after: i64,
        prepare: fn(Vec<RawEvent>) -> Result<Vec<T>, StoreError>,
    ) -> impl Stream<Item = Result<T, StoreError>> + Send + 'static {
        flatten(self.read_pages(after, pg_copy::Columns::All, prepare, None))
    }

    /// Every event after `after`, in order, decoded (on the reading side, so decoding and
    /// folding share the two cores).
    pub fn read_decoded(
        &self,
        after: i64,
    ) -> impl Stream<Item = Result<RecordedEvent, StoreError>> + Send + 'static {
        flatten(
            self.read_decoded_pages(after)
                .map_ok(DecodedPage::into_events),
        )
    }

    /// [`Store::read_decoded`] a page at a time: for a consumer that goes through a million
    /// events, where moving each event out of its page and through the stream's layers was a
    /// twentieth of a replay's folding. A page dropped goes back to the decoding thread to be
    /// freed there ([`DecodedPage`]).
    pub fn read_decoded_pages(
        &self,
        after: i64,
    ) -> impl Stream<Item = Result<DecodedPage, StoreError>> + Send + 'static {
        let (spent, spent_received) = std::sync::mpsc::channel();
        let prepare = |page: Vec<RawEvent>| {
            // Sized first: collecting `Result`s cannot know the length, and growing a page of
            // events step by step copied it several times over (6% of the decoding thread).
            let mut events = Vec::with_capacity(page.len());
            for raw in &page {
                events.push(raw.decode()?);
            }
            Ok(events)
        };
        let pages = self.read_pages(
            after,
            pg_copy::Columns::ForDecoding,
            prepare,
            Some(spent_received),
        );
        pages.map_ok(move |events| DecodedPage {
            events,
            spent: spent.clone(),
        })
    }

    /// Reads the log after `after` in pages: one producer reads them, a second runs each
    /// through `prepare`, and each stays at most two pages ahead of the next, so reading,
    /// preparing and consuming overlap on the machine's cores and memory stays flat whatever
    /// the log's length. Pages sent back on `spent` are dropped by the second, before it
    /// prepares the next.
    fn read_pages<T: Send + 'static>(
        &self,
        after: i64,
        columns: pg_copy::Columns,
        prepare: fn(Vec<RawEvent>) -> Result<Vec<T>, StoreError>,
        spent: Option<std::sync::mpsc::Receiver<Vec<T>>>,
    ) -> impl Stream<Item = Result<Vec<T>, StoreError>> + Send + 'static {
        let (raw_pages, mut raw_received) = mpsc::channel(2);
        match &self.db {
            Db::Sqlite(db) if db.file().is_some() => {
                let file = db.file().expect("checked").to_owned();
                tokio::task::spawn_blocking(move || sqlite::scan(&file, after, columns, raw_pages));
            }
            Db::Postgres(db) => {
                tokio::spawn(postgres::scan(db.pool.clone(), after, columns, raw_pages));
            }
            Db::Sqlite(_) => {
                // An in-memory database: only the pool's connections can see it.
                let store = self.clone();
                tokio::spawn(async move {
                    let mut after = after;
                    loop {
                        let page = store.read_page(after, PAGE).await;
                        let next = page
                            .as_ref()
                            .ok()
                            .and_then(|p| p.last())
                            .map(|l| l.position);
                        let failed = page.is_err();
                        if raw_pages.send(page).await.is_err() || failed {
                            return;
                        }
                        match next {
                            Some(next) => after = next,
                            None => return,
                        }
                    }
                });
            }
        }
        let (pages, received) = mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            while let Some(page) = raw_received.blocking_recv() {
                if let Some(spent) = &spent {
                    spent.try_iter().for_each(drop);
                }
                let page = page.and_then(prepare);
                let failed = page.is_err();
                if pages.blocking_send(page).is_err() || failed {
                    return;
                }
            }
        });
        pages_received(received)
    }

    /// Every event of one stream, decoded, in version order.
    pub async fn read_stream(&self, stream: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_stream_after(stream, 0).await
    }

    /// The events of one stream after version `after_version`, decoded, in version order.
    pub async fn read_stream_after(
        &self,
        stream: &str,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = match &self.db {
            Db::Sqlite(db) => db.read_stream(stream, after_version).await?,
            Db::Postgres(db) => db.read_stream(stream, after_version).await?,
        };
        rows.iter().map(RawEvent::decode).collect()
    }

    pub async fn count_events(&self) -> Result<i64, StoreError> {
        match &self.db {
            Db::Sqlite(db) => db.count_events().await,
            Db::Postgres(db) => db.count_events().await,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(db) => db.ping().await,
            Db::Postgres(db) => db.ping().await,
        }
    }

    /// Whether every migration this build knows has been applied.
    pub async fn migrations_applied(&self) -> Result<bool, StoreError> {
        match &self.db {
            Db::Sqlite(db) => db.migrations_applied().await,
            Db::Postgres(db) => db.migrations_applied().await,
        }
    }

    pub async fn insert_checkpoint(&self, cp: &CheckpointRow) -> Result<i64, StoreError> {
        match &self.db {
            Db::Sqlite(db) => db.insert_checkpoint(cp).await,
            Db::Postgres(db) => db.insert_checkpoint(cp).await,
        }
    }

    pub async fn checkpoints(&self) -> Result<Vec<CheckpointRow>, StoreError> {
        match &self.db {
            Db::Sqlite(db) => db.checkpoints().await,
            Db::Postgres(db) => db.checkpoints().await,
        }
    }

    /// Hash stored at `position` (the head's, or genesis at 0).
    pub async fn hash_at(&self, position: i64) -> Result<Option<ChainHash>, StoreError> {
        if position == 0 {
            return Ok(Some(hpki_events::GENESIS_HASH));
        }
        let page = self.read_page(position - 1, 1).await?;
        Ok(page
            .first()
            .filter(|row| row.position == position)
            .and_then(|row| ChainHash::from_slice(&row.hash)))
    }
}

impl Db {
    async fn head(&self) -> Result<Head, StoreError> {
        match self {
            Db::Sqlite(db) => db.head().await,
            Db::Postgres(db) => db.head().await,
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }
}

/// What a reader on a blocking thread hands to an async consumer: pages of items, or the error
/// that stopped it.
type Pages<T> = mpsc::Sender<Result<Vec<T>, StoreError>>;

/// Sends `items` on in pages of [`PAGE`], from a blocking thread. Stops at the first error (sent
/// on in place of the unfinished page) or when the receiver has gone.
fn send_in_pages<T>(items: impl Iterator<Item = Result<T, StoreError>>, pages: &Pages<T>) {
    let size = PAGE as usize;
    let mut page = Vec::with_capacity(size);
    for item in items {
        match item {
            Ok(item) => page.push(item),
            Err(error) => {
                let _ = pages.blocking_send(Err(error));
                return;
            }
        }
        if page.len() == size {
            let full = std::mem::replace(&mut page, Vec::with_capacity(size));
            if pages.blocking_send(Ok(full)).is_err() {
                return;
            }
        }
    }
    if !page.is_empty() {
        let _ = pages.blocking_send(Ok(page));
    }
}

/// The pages received, as a stream.
fn pages_received<T: Send + 'static>(
    received: mpsc::Receiver<Result<Vec<T>, StoreError>>,
) -> impl Stream<Item = Result<Vec<T>, StoreError>> + Send + 'static {
    futures::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|page| (page, received))
    })
}

/// The items of pages, one at a time.
fn flatten<T: Send + 'static>(
    pages: impl Stream<Item = Result<Vec<T>, StoreError>> + Send + 'static,
) -> impl Stream<Item = Result<T, StoreError>> + Send + 'static {
    pages
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
        .try_flatten()
}

/// A page of decoded events ([`Store::read_decoded_pages`]). When it is dropped its events go
/// back to the thread that decoded them, to be freed there: freeing memory on the thread that
/// allocated it is the allocator's quick path, and it takes that work off the consumer's
/// thread (which a replay keeps busiest).
pub struct DecodedPage {
    events: Vec<RecordedEvent>,
    spent: std::sync::mpsc::Sender<Vec<RecordedEvent>>,
}

impl DecodedPage {
    fn into_events(mut self) -> Vec<RecordedEvent> {
        std::mem::take(&mut self.events)
    }
}

impl std::ops::Deref for DecodedPage {
    type Target = [RecordedEvent];

    fn deref(&self) -> &[RecordedEvent] {
        &self.events
    }
}

impl Drop for DecodedPage {
    fn drop(&mut self) {
        if !self.events.is_empty() {
            // Once the decoding thread has finished, the page is freed here instead.
            let _ = self.spent.send(std::mem::take(&mut self.events));
        }
    }
}

/// Hides the passwords in a database URL before it is shown: the one after the user name,
/// and the value of any parameter whose name holds `password` (libpq takes `?password=` and
/// `?sslpassword=` as well).
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &base[..scheme + 3], &base[at..]),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                    format!("{name}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&parameters.join("&"));
    }
    out
}

fn check_request(appends: &[StreamAppend]) -> Result<(), AppendError> {
    if appends.iter().all(|a| a.events.is_empty()) {
        return Err(AppendError::Empty);
    }
    let mut seen = HashSet::new();
    for append in appends {
        let valid = !append.stream.is_empty()
            && append.stream.len() <= 200
            && append
                .stream
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(AppendError::BadStream(append.stream.clone()));
        }
        for event in &append.events {
            if !seen.insert(event.event_id) {
                return Err(AppendError::DuplicateId(event.event_id));
            }
        }
    }
    Ok(())
}

/// What the database said about the streams and ids a group touches, read under the head lock.
pub(crate) struct Known {
    pub head: Head,
    pub existing_ids: HashSet<Uuid>,
    pub versions: HashMap<String, i64>,
}

/// Stream versions as this process's last commit left them. They hold while the log's head is
/// still where that commit put it: every append moves the head under the lock a group holds
/// while it reads, so an unmoved head means no one else has appended since. A group then reads
/// from the database only the versions of streams this process has not appended to lately,
/// which at a batch of a thousand events was about a quarter of PostgreSQL's work
/// (BENCHMARKS.md, session 14).
/// Forgotten whole when a commit fails (its outcome is unknown) or when it holds
/// [`LAST_COMMIT_STREAMS`].
#[derive(Default)]
pub(crate) struct LastCommit {
    head: Option<Head>,
    versions: HashMap<String, i64>,
}

/// Streams whose versions [`LastCommit`] keeps at most (some 100 bytes each).
const LAST_COMMIT_STREAMS: usize = 100_000;

impl LastCommit {
    /// The versions of `streams` known when the log's head is `head`, and the streams whose
    /// versions must be read.
    pub(crate) fn known<'s>(
        &self,
        head: &Head,
        streams: &[&'s str],
    ) -> (HashMap<String, i64>, Vec<&'s str>) {
        if self.head.as_ref() != Some(head) {
            return (HashMap::new(), streams.to_vec());
        }
        let mut known = HashMap::with_capacity(streams.len());
        let mut unknown = Vec::new();
        for stream in streams {
            match self.versions.get(*stream) {
                Some(version) => {
                    known.insert((*stream).to_owned(), *version);
                }
                None => unknown.push(*stream),
            }
        }
        (known, unknown)
    }

    fn committed(&mut self, known: Known) {
        if self.versions.len() + known.versions.len() > LAST_COMMIT_STREAMS {
            self.versions.clear();
        }
        self.versions.extend(known.versions);
        self.head = Some(known.head);
    }

    fn forget(&mut self) {
        *self = LastCommit::default();
    }
}

/// A row ready to insert.
pub(crate) struct Row {
    pub position: i64,
    pub event_id: Uuid,
    pub stream: String,
    pub version: i64,
    pub event_type: &'static str,
    pub schema_version: i32,
    pub recorded_at: i64,
    pub body: Vec<u8>,
    pub hash: ChainHash,
}

/// Decides, without I/O, what each request of a group writes. Requests are taken in arrival
/// order; a refused request changes nothing and does not affect the others.
fn plan(
    group: &[Submitted],
    encoded: Vec<Result<Encoded, Arc<EncodeError>>>,
    mut known: Known,
    now: OffsetDateTime,
) -> (Vec<Row>, Vec<Result<Appended, AppendError>>, Known) {
    // Recorded times never go backwards, so "the log as of T" is always a prefix of it.
    let now_us = unix_micros(now).max(known.head.recorded_at);
    let recorded_at = from_micros(now_us).expect("a stored time is in range");
    let mut rows = Vec::new();
    let mut outcomes = Vec::with_capacity(group.len());
    let mut encoded = encoded.into_iter();
    for request in group {
        // Exactly this request's events, whether or not it is refused before using them all.
        let mine = encoded.by_ref().take(request.events()).collect();
        let outcome = plan_one(request, mine, &mut known, recorded_at, &mut rows);
        outcomes.push(outcome);
    }
    (rows, outcomes, known)
}

fn plan_one(
    request: &Submitted,
    encoded: Vec<Result<Encoded, Arc<EncodeError>>>,
    known: &mut Known,
    recorded_at: OffsetDateTime,
    rows: &mut Vec<Row>,
) -> Result<Appended, AppendError> {
    let ids: Vec<Uuid> = request
        .appends
        .iter()
        .flat_map(|a| a.events.iter().map(|e| e.event_id))
        .collect();
    let stored = ids
        .iter()
        .filter(|id| known.existing_ids.contains(id))
        .count();
    if stored == ids.len() {
        return Ok(Appended {
            written: 0,
            last_position: known.head.position,
        });
    }
    if let Some(id) = ids.iter().find(|id| known.existing_ids.contains(id)) {
        return Err(AppendError::PartlyStored(*id));
    }

    // One pass: check each stream's expected version, then number its events from there.
    let mut head = known.head;
    let mut new_rows = Vec::with_capacity(ids.len());
    let mut versions: HashMap<&str, i64> = HashMap::new();
    let mut encoded = encoded.into_iter();
    for append in &request.appends {
        let version = versions
            .entry(&append.stream)
            .or_insert_with(|| known.versions.get(&append.stream).copied().unwrap_or(0));
        let fits = match append.expected {
            ExpectedVersion::NoStream => *version == 0,
            ExpectedVersion::Exact(v) => *version == v,
            ExpectedVersion::Any => true,
        };
        if !fits {
            return Err(AppendError::Conflict {
                stream: append.stream.clone(),
                expected: append.expected,
                actual: *version,
            });
        }
        for event in &append.events {
            *version += 1;
            let position = head.position + 1;
            // Encoded ahead at the time the group was taken; again here in the rare case the
            // log's last event is later than that (another process's clock ran ahead).
            let ahead = match encoded.next() {
                Some(Ok(ahead)) if ahead.recorded_at == recorded_at => ahead,
                Some(Err(error)) => return Err(AppendError::Encode(error)),
                _ => Encoded::new(event, &request.metadata, &append.stream, recorded_at)
                    .map_err(|e| AppendError::Encode(Arc::new(e)))?,
            };
            let body = ahead.finish(position, *version);
            let hash = head.hash.next(&body);
            new_rows.push(Row {
                position,
                event_id: event.event_id,
                stream: append.stream.clone(),
                version: *version,
                event_type: event.event.type_name(),
                schema_version: event.event.schema_version() as i32,
                recorded_at: unix_micros(recorded_at),
                body,
                hash,
            });
            head = Head {
                position,
                hash,
                recorded_at: unix_micros(recorded_at),
            };
        }
    }

    for (stream, version) in versions {
        known.versions.insert(stream.to_owned(), version);
    }
    known.existing_ids.extend(ids.iter().copied());
    known.head = head;
    rows.extend(new_rows);
    Ok(Appended {
        written: ids.len(),
        last_position: head.position,
    })
}

async fn write_loop(
    db: Db,
    clock: SharedClock,
    mut requests: mpsc::Receiver<Request>,
    head: watch::Sender<i64>,
    appended: Arc<AtomicU64>,
) {
    let mut last = LastCommit::default();
    while let Some(first) = requests.recv().await {
        let mut group = vec![first.submitted];
        let mut replies = vec![first.reply];
        let mut events = group[0].events();
        while events < GROUP_LIMIT {
            match requests.try_recv() {
                Ok(next) => {
                    events += next.submitted.events();
                    group.push(next.submitted);
                    replies.push(next.reply);
                }
                Err(_) => break,
            }
        }
        let result = commit_group(&db, Arc::new(group), clock.now(), &last).await;
        match result {
            Ok((outcomes, known)) => {
                let new_head = known.head.position;
                last.committed(known);
                let written: usize = outcomes.iter().flatten().map(|a| a.written).sum();
                appended.fetch_add(written as u64, Ordering::Relaxed);
                head.send_if_modified(|known| {
                    let moved = *known != new_head;
                    *known = new_head;
                    moved
                });
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                last.forget();
                tracing::error!(%error, "appending a group of events failed");
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(AppendError::Database(error.clone())));
                }
            }
        }
    }
}

/// Lock the head, learn what the group touches, plan, insert, move the head, commit.
async fn commit_group(
    db: &Db,
    group: Arc<Vec<Submitted>>,
    now: OffsetDateTime,
    last: &LastCommit,
) -> Result<(Vec<Result<Appended, AppendError>>, Known), sqlx::Error> {
    let events: usize = group.iter().map(Submitted::events).sum();
    // The time as the log stores it (microseconds), so the encoded bytes hold what plan checks.
    let at = from_micros(unix_micros(now)).expect("the clock's time is in range");
    let apart = |from: usize, to: usize| {
        let group = group.clone();
        tokio::task::spawn_blocking(move || encode_events(&group, at, from..to))
    };
    let encoding = match events {
        n if n < ENCODE_APART => None,
        // The database only reads meanwhile, so both cores are free to encode.
        n if n < 2 * ENCODE_APART => Some(vec![apart(0, n)]),
        n => Some(vec![apart(0, n / 2), apart(n / 2, n)]),
    };
    let encode_and_plan = async |known| {
        let encoded = match encoding {
            Some(parts) => {
                let mut encoded = Vec::with_capacity(events);
                for part in parts {
                    encoded.extend(part.await.expect("encoding events does not panic"));
                }
                encoded
            }
            None => encode_events(&group, at, 0..events),
        };
        plan(&group, encoded, known, now)
    };
    let ids: Vec<Uuid> = group
        .iter()
        .flat_map(|r| {
            r.appends
                .iter()
                .flat_map(|a| a.events.iter().map(|e| e.event_id))
        })
        .collect();
    let mut streams: Vec<&str> = group
        .iter()
        .flat_map(|r| r.appends.iter().map(|a| a.stream.as_str()))
        .collect();
    streams.sort_unstable();
    streams.dedup();
    match db {
        Db::Sqlite(db) => db.commit_group(&ids, &streams, last, encode_and_plan).await,
        Db::Postgres(db) => db.commit_group(&ids, &streams, last, encode_and_plan).await,
    }
}

/// The events of `group` numbered `range` (counting across its requests, in order), encoded as
/// recorded at `at`.
fn encode_events(
    group: &[Submitted],
    at: OffsetDateTime,
    range: std::ops::Range<usize>,
) -> Vec<Result<Encoded, Arc<EncodeError>>> {
    group
        .iter()
        .flat_map(|request| {
            request.appends.iter().flat_map(move |append| {
                append
                    .events
                    .iter()
                    .map(move |event| (event, &request.metadata, append.stream.as_str()))
            })
        })
        .skip(range.start)
        .take(range.len())
        .map(|(event, metadata, stream)| {
            Encoded::new(event, metadata, stream, at).map_err(Arc::new)
        })
        .collect()
}

/// A time stored as microseconds since the Unix epoch ([`unix_micros`]); `None` out of range.
fn from_micros(micros: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1000).ok()
}

/// Shown in messages about a stored time.
pub fn show_micros(micros: i64) -> String {
    from_micros(micros)
        .map(format_time)
        .unwrap_or_else(|| micros.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://var/x.db"), "sqlite://var/x.db");
        assert_eq!(
            redact_url("postgres://app@db/hpki?sslmode=require&password=s3cret&sslpassword=k@y"),
            "postgres://app@db/hpki?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(
            redact_url("postgres://u:p@h/db?options=-c%20search_path%3Dx"),
            "postgres://u:***@h/db?options=-c%20search_path%3Dx"
        );
        assert_eq!(
            redact_url("sqlite://x.db?mode=rwc"),
            "sqlite://x.db?mode=rwc"
        );
    }
}

/// One transaction that loads a whole exported log into an empty store: all or nothing.
pub enum ImportTx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Store {
    /// Starts an import; the head stays locked (other appends wait) until it ends.
    pub async fn begin_import(&self) -> Result<ImportTx, StoreError> {
        Ok(match &self.db {
            Db::Sqlite(db) => ImportTx::Sqlite(db.begin_import().await?),
            Db::Postgres(db) => ImportTx::Postgres(db.begin_import().await?),
        })
    }
}

impl ImportTx {
    pub(crate) async fn insert(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        match self {
            ImportTx::Sqlite(tx) => sqlite::insert_rows(tx, rows).await?,
            ImportTx::Postgres(tx) => postgres::insert_rows(tx, rows, None).await?,
        }
        Ok(())
    }

    pub async fn finish(self, head: Head) -> Result<(), StoreError> {
        match self {
            ImportTx::Sqlite(mut tx) => {
                sqlite::set_head(&mut tx, &head).await?;
                tx.commit().await?;
            }
            ImportTx::Postgres(mut tx) => {
                postgres::set_head(&mut tx, &head).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

impl Store {
    pub async fn projection_checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        match &self.db {
            Db::Sqlite(db) => db.projection_checkpoint(name).await,
            Db::Postgres(db) => db.projection_checkpoint(name).await,
        }
    }

    /// Writes a projection's changes and moves its checkpoint from `from` to `to`, atomically;
    /// false when another runner got there first (nothing written).
    pub async fn apply_projection(
        &self,
        name: &str,
        from: i64,
        to: i64,
        changes: &[hpki_projections::Change],
    ) -> Result<bool, StoreError> {
        match &self.db {
            Db::Sqlite(db) => db.apply_projection(name, from, to, changes).await,
            Db::Postgres(db) => db.apply_projection(name, from, to, changes).await,
        }
    }

    /// A new scratch spill at `path` for a rebuild to fold into and [`Store::replace_projections`]
    /// to install from, laid out for this backend's install: SQLite copies the work lists'
    /// index's records as they are, PostgreSQL builds its own index and reads the file by key
    /// only.
    pub async fn rebuild_spill(&self, path: &std::path::Path) -> Result<Spill, StoreError> {
        let list_index = match &self.db {
            Db::Sqlite(_) => true,
            Db::Postgres(_) => false,
        };
        Spill::create(path, list_index).await
    }

    /// A new read-model file for a rebuild of every projection to fold into, under the lock
    /// that rebuilds take turns on: on a SQLite file store only (`None` otherwise: those
    /// rebuilds copy into the store). Fails when another rebuild holds the lock.
    pub fn read_models_swap(&self) -> Result<Option<read_model_file::Swap>, StoreError> {
        match &self.db {
            Db::Sqlite(db) => db.models_swap(),
            Db::Postgres(_) => Ok(None),
        }
    }

    /// Makes a finished read-model file ([`Store::read_models_swap`]) the current one, each
    /// of `names` at `position`.
    pub async fn install_read_models(
        &self,
        swap: read_model_file::Swap,
        names: &[&'static str],
        position: i64,
    ) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(db) => swap.install(&db.pool, names, position).await,
            Db::Postgres(_) => Err(StoreError::ReadModels(
                "a PostgreSQL store keeps its read models in the database, not in a file".into(),
            )),
        }
    }

    /// Replaces the documents of each of `names` with those of a finished spill
    /// ([`Store::rebuild_spill`]) and moves its checkpoint to `position`: one transaction per
    /// projection, so each read model switches from old to new at once.
    pub async fn replace_projections(
        &self,
        spill: &std::path::Path,
        names: &[&'static str],
        position: i64,
    ) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(db) => db.replace_projections(spill, names, position).await,
            Db::Postgres(db) => db.replace_projections(spill, names, position).await,
        }
    }

    pub async fn docs(
        &self,
        name: &str,
        list: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, hpki_projections::Doc)>, StoreError> {
        match &self.db {
            Db::Sqlite(db) => db.docs(name, list, limit).await,
            Db::Postgres(db) => db.docs(name, list, limit).await,
        }
    }
}
