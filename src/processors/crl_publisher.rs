//! CRL publication, per authority.
//!
//! Each CRL is recorded as `CrlPublished` on `crl-<authority>`, appended at the stream's
//! version: its number is the previous number plus one, and a second instance that tried the
//! same number finds the stream moved and publishes nothing, so no number is ever used twice.
//! The event keeps the log position the entries were read up to (`as_of`) and the times,
//! so [`reproduce`] makes the same CRL again from the log, byte for byte (RSA PKCS#1 v1.5
//! signatures are deterministic).
//!
//! A CRL is due when an authority has none yet, when a certificate was revoked after the last
//! one's `as_of`, or when the schedule (`crl.schedule`, JST) passed a time since the last
//! one. The files are written after the event is recorded, atomically; when the process dies
//! between the two, the next step finds the files behind the log and writes them again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use hpki_events::envelope::{format_time, parse_time};
use hpki_events::vocabulary::{CrlPublished, ReasonCode};
use hpki_events::{Actor, Event, Metadata, NewEvent, RecordedEvent};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::config::Config;
use crate::office::Office;
use crate::pki::Ca;
use crate::store::{AppendError, ExpectedVersion, Store, StreamAppend};

pub fn crl_stream(authority: &str) -> String {
    format!("crl-{authority}")
}

/// What the log says each CA's CRL must list, read up to `position`.
#[derive(Default, Clone)]
pub struct Revocations {
    pub position: i64,
    /// Every certificate's notAfter, by serial (serials are 128-bit random).
    not_after: HashMap<String, OffsetDateTime>,
    /// By authority, then serial: when and why.
    revoked: HashMap<String, HashMap<String, (OffsetDateTime, ReasonCode)>>,
    /// The position of each authority's latest revocation.
    latest: HashMap<String, i64>,
}

impl Revocations {
    fn apply(&mut self, event: &RecordedEvent) {
        self.position = event.position;
        match &event.event {
            Event::CardCertificateIssued(e) => self.remember(&e.certificate),
            Event::SecondCertificateIssued(e) => self.remember(&e.certificate),
            Event::CertificateRevoked(e) => {
                let at = parse_time(&e.revoked_at).unwrap_or(event.recorded_at);
                self.revoked
                    .entry(e.authority.clone())
                    .or_default()
                    .insert(e.serial.clone(), (at, e.reason));
                self.latest.insert(e.authority.clone(), event.position);
            }
            _ => {}
        }
    }

    fn remember(&mut self, certificate: &hpki_events::vocabulary::Certificate) {
        if let Some(at) = parse_time(&certificate.not_after) {
            self.not_after.insert(certificate.serial.clone(), at);
        }
    }

    /// Reads the log from where this stopped up to `up_to` (inclusive).
    pub async fn advance(&mut self, store: &Store, up_to: i64) -> anyhow::Result<()> {
        if up_to <= self.position {
            return Ok(());
        }
        let mut events = std::pin::pin!(store.read_decoded(self.position));
        while let Some(event) = events.try_next().await? {
            if event.position > up_to {
                break;
            }
            self.apply(&event);
        }
        self.position = self.position.max(up_to);
        Ok(())
    }

    /// The entries of `authority`'s CRL at `this_update`: every revoked certificate that has
    /// not expired by then.
    pub fn entries(
        &self,
        authority: &str,
        this_update: OffsetDateTime,
    ) -> anyhow::Result<Vec<crate::crl::Entry>> {
        let Some(revoked) = self.revoked.get(authority) else {
            return Ok(Vec::new());
        };
        revoked
            .iter()
            .filter(|(serial, _)| {
                self.not_after
                    .get(*serial)
                    .is_none_or(|end| *end >= this_update)
            })
            .map(|(serial, (at, reason))| {
                Ok(crate::crl::Entry {
                    serial: crate::crl::serial_from_hex(serial)
                        .with_context(|| format!("the revoked serial {serial:?}"))?,
                    revoked_at: *at,
                    reason: *reason,
                })
            })
            .collect()
    }
}

/// The last CRL of an authority as the log has it, with its stream version.
async fn last_published(
    store: &Store,
    authority: &str,
) -> anyhow::Result<(i64, Option<CrlPublished>)> {
    let events = store.read_stream(&crl_stream(authority)).await?;
    let version = events.last().map_or(0, |e| e.version);
    let last = events.into_iter().rev().find_map(|e| match e.event {
        Event::CrlPublished(p) => Some(p),
        _ => None,
    });
    Ok((version, last))
}

/// Where an authority's CRL is published: the folder, and the file name of the CRL
/// distribution point's URL (`crl-sign2.crl`).
pub struct Paths {
    pub der: PathBuf,
    pub pem: PathBuf,
    /// Every CRL by number, for auditors and the staff console.
    pub archive: PathBuf,
}

impl Paths {
    pub fn of(dir: &Path, authority: &str, crl_url: &str) -> Paths {
        let name = crl_url
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("crl.crl");
        let folder = dir.join(authority);
        let pem = Path::new(name).with_extension("pem");
        Paths {
            der: folder.join(name),
            pem: folder.join(pem),
            archive: folder.join("archive"),
        }
    }

    pub fn numbered(&self, number: u64) -> PathBuf {
        self.archive.join(format!("{number}.crl"))
    }
}

fn pem(der: &[u8]) -> Vec<u8> {
    let body = openssl::base64::encode_block(der);
    let mut out = String::from("-----BEGIN X509 CRL-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END X509 CRL-----\n");
    out.into_bytes()
}

/// What one publication did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Published {
    pub authority: String,
    pub number: u64,
    pub entries: u64,
    pub sha256: String,
    pub this_update: String,
    pub next_update: String,
}

#[derive(Clone)]
pub struct CrlPublisher {
    office: Office,
    dir: PathBuf,
    next_update: time::Duration,
    schedule: cron::Schedule,
    urls: Arc<HashMap<String, String>>,
    /// The fold of the log, kept between steps so each step reads only what is new.
    revocations: Arc<Mutex<Revocations>>,
}

impl CrlPublisher {
    pub fn new(office: Office, config: &Config) -> anyhow::Result<CrlPublisher> {
        let schedule = cron::Schedule::from_str(&config.crl.schedule).with_context(|| {
            format!(
                "crl.schedule {:?} is not a cron expression",
                config.crl.schedule
            )
        })?;
        let urls = config
            .authorities
            .iter()
            .map(|(id, a)| (id.clone(), a.crl_url.clone()))
            .collect();
        Ok(CrlPublisher {
            office,
            dir: config.crl_dir(),
            next_update: time::Duration::hours(config.crl.next_update_hours),
            schedule,
            urls: Arc::new(urls),
            revocations: Arc::new(Mutex::new(Revocations::default())),
        })
    }

    pub fn paths(&self, authority: &str) -> Option<Paths> {
        let url = self.urls.get(authority)?;
        Some(Paths::of(&self.dir, authority, url))
    }

    /// The authorities whose CRL distribution point has this URL path (`/repository/crl/crl-sign2.crl`).
    pub fn serving(&self) -> Vec<(String, String)> {
        self.urls
            .iter()
            .filter_map(|(id, url)| {
                let path = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
                let path = &path[path.find('/')?..];
                Some((id.clone(), path.to_owned()))
            })
            .collect()
    }

    /// Publishes every CRL that is due and repairs files left behind by a crash; returns what
    /// it published and how long until the schedule's next time.
    pub async fn step(&self) -> anyhow::Result<(Vec<Published>, Option<Duration>)> {
        let store = self.office.store();
        let head = store.head().await?.position;
        let mut revocations = self.revocations.lock().await;
        revocations.advance(store, head).await?;
        let now = self.office.clock().now();
        let mut published = Vec::new();
        let mut wait: Option<Duration> = None;
        let mut authorities: Vec<&String> = self.urls.keys().collect();
        authorities.sort();
        // One authority's failure (its folder cannot be written, say) does not keep the others'
        // CRLs from being published: each is tried, and the first failure reported after.
        let mut failures: Vec<anyhow::Error> = Vec::new();
        for authority in authorities {
            let (version, last) = last_published(store, authority).await?;
            if let Some(last) = &last
                && let Err(error) = self
                    .repair(&revocations, authority, last)
                    .await
                    .with_context(|| format!("repairing the published {authority} CRL"))
            {
                failures.push(error);
                continue;
            }
            let due = match &last {
                None => true,
                Some(last) => {
                    let revoked_since = revocations
                        .latest
                        .get(authority)
                        .is_some_and(|p| *p > last.as_of);
                    let scheduled = super::next_scheduled(
                        &self.schedule,
                        parse_time(&last.this_update).unwrap_or(now),
                    );
                    if let Some(at) = scheduled.filter(|at| *at > now) {
                        let until = super::until(now, at);
                        wait = Some(wait.map_or(until, |w| w.min(until)));
                    }
                    revoked_since || scheduled.is_some_and(|at| at <= now)
                }
            };
            if due {
                match self
                    .publish(&revocations, authority, now, version, last.as_ref())
                    .await
                    .with_context(|| format!("publishing the {authority} CRL"))
                {
                    Ok(Some(done)) => published.push(done),
                    Ok(None) => {}
                    Err(error) => failures.push(error),
                }
            }
        }
        let mut failures = failures.into_iter();
        let Some(first) = failures.next() else {
            return Ok((published, wait));
        };
        // The first is returned (and logged or answered by the caller); the others are logged.
        for other in failures {
            tracing::error!(error = format!("{other:#}"), "a CRL step failed");
        }
        Err(first)
    }

    fn ca(&self, authority: &str) -> anyhow::Result<&Ca> {
        self.office
            .ca(authority)
            .with_context(|| format!("there is no CA for the authority {authority:?}"))
    }

    /// Makes the CRL after `last` (recorded at the stream's `version`) of `authority` as of the
    /// fold, records it, then writes it. `None`, nothing written, when another instance
    /// recorded a CRL since `version` was read.
    async fn publish(
        &self,
        revocations: &Revocations,
        authority: &str,
        now: OffsetDateTime,
        version: i64,
        last: Option<&CrlPublished>,
    ) -> anyhow::Result<Option<Published>> {
        let store = self.office.store();
        let number = last.map_or(1, |l| l.number + 1);
        let this_update = now.replace_nanosecond(0).expect("zero is valid");
        let next_update = this_update + self.next_update;
        let mut entries = revocations.entries(authority, this_update)?;
        let spec = crate::crl::Spec {
            number,
            this_update,
            next_update,
        };
        let der = crate::crl::build(self.ca(authority)?, &spec, &mut entries)?;
        let paths = self.paths(authority).context("no CRL distribution point")?;
        // Fails here, before anything is recorded, when the folder cannot be written.
        std::fs::create_dir_all(&paths.archive).with_context(|| {
            format!(
                "creating the publication folder {}",
                paths.archive.display()
            )
        })?;
        let probe = paths.archive.join(format!(".{number}.probe"));
        std::fs::write(&probe, b"").with_context(|| {
            format!(
                "the publication folder {} is not writable",
                paths.archive.display()
            )
        })?;
        let _ = std::fs::remove_file(&probe);

        let event = CrlPublished {
            authority: authority.to_owned(),
            number,
            this_update: format_time(this_update),
            next_update: format_time(next_update),
            as_of: revocations.position,
            entries: entries.len() as u64,
            sha256: super::sha256_hex(&der),
        };
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let append = StreamAppend {
            stream: crl_stream(authority),
            expected,
            events: vec![NewEvent::new(event.clone().into())],
        };
        match store
            .append(vec![append], Metadata::new(Actor::system("crl")))
            .await
        {
            Ok(_) => {}
            // Another instance published this number first.
            Err(AppendError::Conflict { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        write_files(&paths, number, &der)?;
        tracing::info!(
            authority,
            number,
            entries = event.entries,
            "published a CRL"
        );
        Ok(Some(Published {
            authority: authority.to_owned(),
            number,
            entries: event.entries,
            sha256: event.sha256,
            this_update: event.this_update,
            next_update: event.next_update,
        }))
    }

    /// Writes the last recorded CRL again when the published file is not it.
    async fn repair(
        &self,
        revocations: &Revocations,
        authority: &str,
        last: &CrlPublished,
    ) -> anyhow::Result<()> {
        let Some(paths) = self.paths(authority) else {
            return Ok(());
        };
        let current = std::fs::read(&paths.der).ok();
        if current.as_deref().map(super::sha256_hex).as_deref() == Some(last.sha256.as_str()) {
            return Ok(());
        }
        let der = if revocations.position >= last.as_of {
            reproduce(
                self.office.store(),
                self.ca(authority)?,
                authority,
                last.number,
            )
            .await?
            .0
        } else {
            return Ok(());
        };
        if super::sha256_hex(&der) != last.sha256 {
            anyhow::bail!(
                "CRL number {} made again differs from the one recorded",
                last.number
            );
        }
        tracing::warn!(
            authority,
            number = last.number,
            "the published CRL was behind the log; wrote it again"
        );
        write_files(&paths, last.number, &der)?;
        Ok(())
    }
}

fn write_files(paths: &Paths, number: u64, der: &[u8]) -> anyhow::Result<()> {
    let write = |path: &Path, bytes: &[u8]| {
        super::write_atomically(path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    write(&paths.numbered(number), der)?;
    write(&paths.pem, &pem(der))?;
    write(&paths.der, der)
}

/// CRL number `number` of `authority`, made again from the log as it stood: the DER, and the
/// SHA-256 recorded when it was published.
pub async fn reproduce(
    store: &Store,
    ca: &Ca,
    authority: &str,
    number: u64,
) -> anyhow::Result<(Vec<u8>, String)> {
    let (_, _) = (store, authority);
    let published = store
        .read_stream(&crl_stream(authority))
        .await?
        .into_iter()
        .find_map(|e| match e.event {
            Event::CrlPublished(p) if p.number == number => Some(p),
            _ => None,
        })
        .with_context(|| format!("the {authority} CRL number {number} was never published"))?;
    let mut revocations = Revocations::default();
    revocations.advance(store, published.as_of).await?;
    let this_update = parse_time(&published.this_update).context("thisUpdate is not a time")?;
    let next_update = parse_time(&published.next_update).context("nextUpdate is not a time")?;
    let mut entries = revocations.entries(authority, this_update)?;
    let spec = crate::crl::Spec {
        number,
        this_update,
        next_update,
    };
    let der = crate::crl::build(ca, &spec, &mut entries)?;
    Ok((der, published.sha256))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SharedClock};

    /// Two instances that read the same last CRL each make the next one: the one recorded
    /// second is refused by the stream's version and writes no file. The lease keeps this from
    /// happening in `step`; this reaches the path behind it.
    #[tokio::test]
    async fn a_crl_number_recorded_first_elsewhere_is_neither_recorded_nor_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.database_url = format!("sqlite://{}", dir.path().join("hpki.db").display());
        config.data_dir = dir.path().to_owned();
        config.audit.key_file = dir.path().join("keys/audit.pem");
        config.keys.kek_file = dir.path().join("keys/kek.hex");
        config.keys.qr_secret_file = dir.path().join("keys/qr-secret.hex");
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let clock: SharedClock = ManualClock::new(now);
        let store = Store::open(&config.database_url, clock.clone())
            .await
            .unwrap();
        let office = crate::serve::office(&config, store.clone(), clock)
            .await
            .unwrap();
        let first = CrlPublisher::new(office.clone(), &config).unwrap();
        let second = CrlPublisher::new(office, &config).unwrap();
        let mut revocations = Revocations::default();
        let head = store.head().await.unwrap().position;
        revocations.advance(&store, head).await.unwrap();

        let (version, last) = last_published(&store, "jma").await.unwrap();
        assert_eq!((version, &last), (0, &None));
        let published = first
            .publish(&revocations, "jma", now, version, None)
            .await
            .unwrap()
            .expect("the first is recorded");
        assert_eq!(published.number, 1);
        // A second later, so that its CRL differs from the first one in its bytes.
        let later = now + time::Duration::seconds(1);
        let refused = second
            .publish(&revocations, "jma", later, version, None)
            .await
            .unwrap();
        assert!(refused.is_none(), "the second is refused: {refused:?}");

        let (version, last) = last_published(&store, "jma").await.unwrap();
        assert_eq!(version, 1, "one CRL recorded");
        assert_eq!(last.unwrap().sha256, published.sha256);
        let paths = first.paths("jma").unwrap();
        let file = std::fs::read(&paths.der).unwrap();
        assert_eq!(
            super::super::sha256_hex(&file),
            published.sha256,
            "the file is the first's"
        );
    }
}
