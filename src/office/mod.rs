//! The registration office's commands: take in applications, review them, issue certificates
//! and QRs, keep the card stock. Every command reads the aggregates it decides on, decides,
//! and appends with the versions it read, so two staff members acting at once can never both
//! succeed on stale state: the loser re-reads and decides again.
//!
//! Streams: `subscriber-<authority>-<registry number>` (one person at one authority: their
//! applications, certificates and QRs) and `cardstock-<authority>`.

mod applications;
mod issuance;
mod lifecycle;
mod reissue;
mod revocation;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use hpki_events::{Actor, Metadata, NewEvent};
use time::Date;
use uuid::Uuid;

use crate::clock::{JST, SharedClock};
use crate::config::{Authority, Config};
use crate::pki::Ca;
use crate::problem::{OfficeError, Problem};
use crate::secrets::{Kek, Secret};
use crate::settings::Settings;
use crate::store::{AppendError, ExpectedVersion, Store, StreamAppend};

pub(crate) use applications::row_detail;
pub use applications::{ImportMode, ImportReport, Submitted};
pub use issuance::{Approval, CardOutcome, CardsReceived, generate_keys};
pub use lifecycle::{DeviceReport, ExpiryReport, Landing, PasswordOutcome, TimelineEntry};
pub use reissue::{Challenge, Reissued};
pub use revocation::{Decided, ProposalForm};
use state::{Aggregate, Stock, Subscriber};

/// How often a command re-reads and decides again after losing a race before it gives up.
const TRIES: usize = 20;

/// The office: cheap to clone, shared by the API, the CLI and the demo.
#[derive(Clone)]
pub struct Office {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: SharedClock,
    settings: Settings,
    cas: BTreeMap<String, Ca>,
    kek: Kek,
    qr_secret: Secret,
    portal_base_url: String,
    photo_max_bytes: usize,
    subscribers: Cache<Subscriber>,
    stocks: Cache<Stock>,
    /// One issuing command at a time per authority in this process: every approval takes
    /// from the same card stock stream, and racing them would only waste signatures on
    /// retries. Other processes are still kept apart by the stream's version.
    issuing: BTreeMap<String, tokio::sync::Mutex<()>>,
    /// Commands on one subscriber stream take turns in this process (by the stream's hash,
    /// over a fixed set of locks): fifty password attempts at once are then decided one after
    /// another instead of retrying against each other. Other processes are kept apart by the
    /// stream's version as before.
    stripes: Vec<tokio::sync::Mutex<()>>,
    lifecycle: crate::config::Lifecycle,
}

/// Aggregates as last read, by stream, so a command reads only the events after the version
/// it already holds. Bounded: past `CACHE_LIMIT` streams it starts afresh.
struct Cache<A>(Mutex<HashMap<String, (i64, Arc<A>)>>);

const CACHE_LIMIT: usize = 200_000;

impl<A> Default for Cache<A> {
    fn default() -> Self {
        Cache(Mutex::new(HashMap::new()))
    }
}

/// Another command changed a stream between our read and our append.
struct Raced;

impl Office {
    pub fn new(
        store: Store,
        config: &Config,
        cas: BTreeMap<String, Ca>,
        kek: Kek,
        qr_secret: Secret,
        clock: SharedClock,
    ) -> anyhow::Result<Office> {
        for id in config.authorities.keys() {
            let plain = !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            anyhow::ensure!(
                plain,
                "authority id {id:?} must be lowercase letters and digits (it names streams)"
            );
            anyhow::ensure!(cas.contains_key(id), "authority {id} has no CA loaded");
        }
        Ok(Office {
            inner: Arc::new(Inner {
                store,
                clock,
                settings: Settings::new(config.authorities.clone()),
                cas,
                kek,
                qr_secret,
                portal_base_url: config.portal.base_url.clone(),
                photo_max_bytes: config.intake.photo_max_bytes,
                subscribers: Cache::default(),
                stocks: Cache::default(),
                issuing: config
                    .authorities
                    .keys()
                    .map(|id| (id.clone(), tokio::sync::Mutex::new(())))
                    .collect(),
                stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
                lifecycle: config.lifecycle.clone(),
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The authorities' settings in force (the file's, overlaid with the log's changes).
    pub fn authorities(&self) -> Arc<BTreeMap<String, Authority>> {
        self.inner.settings.current()
    }

    /// The handle through which the settings are read and changed.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn ca(&self, authority: &str) -> Option<&Ca> {
        self.inner.cas.get(authority)
    }

    pub fn clock(&self) -> SharedClock {
        self.inner.clock.clone()
    }

    /// Days before its last usable day an unused QR is reminded and listed as expiring.
    pub fn reminder_days(&self) -> i64 {
        self.inner.lifecycle.reminder_days
    }

    pub fn kek(&self) -> &Kek {
        &self.inner.kek
    }

    /// The registration URL of a QR: for the print and mail processors only.
    pub fn registration_url(&self, qr_id: Uuid) -> String {
        let token = crate::qr::token(self.inner.qr_secret.bytes(), qr_id);
        crate::qr::registration_url(&self.inner.portal_base_url, &token)
    }

    /// The JST date the office is working on.
    pub fn today(&self) -> Date {
        self.inner.clock.now().to_offset(JST).date()
    }

    fn authority(&self, id: &str) -> Result<Authority, Problem> {
        self.authorities().get(id).cloned().ok_or_else(|| {
            Problem::new(
                404,
                "unknown_authority",
                format!("認証局「{id}」はありません"),
                format!("there is no authority {id:?}"),
            )
            .field("authority")
        })
    }

    /// Waits for this process's turn on a subscriber stream.
    async fn stream_turn(&self, stream: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        stream.hash(&mut hasher);
        let stripe = hasher.finish() as usize % self.inner.stripes.len();
        self.inner.stripes[stripe].lock().await
    }

    /// The subscriber stream an id belongs to (`kind`: token, qr, cert, credential, request,
    /// case, proposal), from the `locator` read model, brought up to date first when the id
    /// is not there yet. `None` when no such thing was ever recorded.
    pub async fn locate(&self, kind: &str, id: &str) -> Result<Option<String>, OfficeError> {
        let key = format!("{kind}:{id}");
        for attempt in 0..2 {
            if let Some(doc) = self.store().doc("locator", &key).await? {
                if let Some(stream) = doc.body["subscriber"].as_str() {
                    return Ok(Some(stream.to_owned()));
                }
            }
            if attempt == 0 {
                crate::projection_runner::catch_up(self.store(), &hpki_projections::Locator)
                    .await?;
            }
        }
        Ok(None)
    }

    pub async fn subscriber(&self, stream: &str) -> Result<(i64, Arc<Subscriber>), OfficeError> {
        self.load(&self.inner.subscribers, stream).await
    }

    async fn stock(&self, authority: &str) -> Result<(i64, Arc<Stock>), OfficeError> {
        self.load(&self.inner.stocks, &stock_stream(authority))
            .await
    }

    /// The card stock as this process last read or wrote it (read when not cached yet).
    async fn cached_stock(&self, authority: &str) -> Result<(i64, Arc<Stock>), OfficeError> {
        let stream = stock_stream(authority);
        let cached = self
            .inner
            .stocks
            .0
            .lock()
            .expect("not poisoned")
            .get(&stream)
            .cloned();
        match cached {
            Some(cached) => Ok(cached),
            None => self.stock(authority).await,
        }
    }

    /// Records in the cache the stock this process just appended to, so the next approval in
    /// turn need not read it again.
    fn remember_stock(
        &self,
        authority: &str,
        version: i64,
        before: &Stock,
        events: &[hpki_events::Event],
    ) {
        let mut stock = before.clone();
        for event in events {
            stock.apply_event(event);
        }
        let stream = stock_stream(authority);
        let mut map = self.inner.stocks.0.lock().expect("not poisoned");
        let newer = map.get(&stream).is_some_and(|(v, _)| *v >= version);
        if !newer {
            map.insert(stream, (version, Arc::new(stock)));
        }
    }

    /// The aggregate of `stream` as of now: the cached state, brought up to date.
    async fn load<A: Aggregate>(
        &self,
        cache: &Cache<A>,
        stream: &str,
    ) -> Result<(i64, Arc<A>), OfficeError> {
        let cached = cache.0.lock().expect("not poisoned").get(stream).cloned();
        let (mut version, mut state) = cached.unwrap_or_default();
        let events = self.inner.store.read_stream_after(stream, version).await?;
        if let Some(last) = events.last() {
            let fresh = Arc::make_mut(&mut state);
            for event in &events {
                fresh.apply(event);
            }
            version = last.version;
            let mut map = cache.0.lock().expect("not poisoned");
            if map.len() >= CACHE_LIMIT {
                map.clear();
            }
            let newer = map.get(stream).is_some_and(|(v, _)| *v > version);
            if !newer {
                map.insert(stream.to_owned(), (version, state.clone()));
            }
        }
        Ok((version, state))
    }

    /// Decides on one subscriber stream and appends what `decide` returns, at the version it
    /// decided on. In this process, commands on a stream take turns; when another process
    /// changed the stream first, `decide` runs again on the new state. Nothing is appended
    /// when `decide` returns no events.
    async fn decide_on<T>(
        &self,
        stream: &str,
        actor: &Actor,
        mut decide: impl FnMut(&Subscriber) -> Result<(Vec<hpki_events::Event>, T), OfficeError>,
    ) -> Result<T, OfficeError> {
        let _turn = self.stream_turn(stream).await;
        for _ in 0..TRIES {
            let (version, subscriber) = self.subscriber(stream).await?;
            let (events, value) = decide(&subscriber)?;
            if events.is_empty()
                || self
                    .append(vec![to(stream, version, events)], actor)
                    .await?
                    .is_ok()
            {
                return Ok(value);
            }
        }
        Err(busy())
    }

    /// Appends atomically; `Err(Raced)` when a stream moved since it was read.
    async fn append(
        &self,
        appends: Vec<StreamAppend>,
        actor: &Actor,
    ) -> Result<Result<i64, Raced>, OfficeError> {
        match self
            .inner
            .store
            .append(appends, Metadata::new(actor.clone()))
            .await
        {
            Ok(appended) => Ok(Ok(appended.last_position)),
            Err(AppendError::Conflict { .. }) => Ok(Err(Raced)),
            Err(e) => Err(OfficeError::Internal(e.into())),
        }
    }
}

pub fn subscriber_stream(authority: &str, registry_number: &str) -> String {
    format!("subscriber-{authority}-{registry_number}")
}

pub fn stock_stream(authority: &str) -> String {
    format!("cardstock-{authority}")
}

/// The expectation for appending to a stream read at `version`.
fn at(version: i64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}

fn to(stream: &str, version: i64, events: Vec<hpki_events::Event>) -> StreamAppend {
    StreamAppend {
        stream: stream.to_owned(),
        expected: at(version),
        events: events.into_iter().map(NewEvent::new).collect(),
    }
}

fn busy() -> OfficeError {
    OfficeError::Problem(Problem::new(
        503,
        "busy",
        "混み合っています。しばらくしてからもう一度お試しください",
        "the office is busy with the same records; try again shortly",
    ))
}
