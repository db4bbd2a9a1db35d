//! Print batches for the mail house: the QRs waiting to be printed, as a PDF of QR cards and a
//! manifest CSV in the same order, grouped by destination; and the mail house's confirmation
//! file, which records each card printed, mailed or spoiled. A spoiled card's QR is superseded
//! and a fresh one waits for the next batch.
//!
//! A batch is recorded as `PrintBatchCreated` on `print-<authority>`, appended at the version
//! the queue was read at, so two batches never share a card. Its files are written first
//! (atomically) and named by the batch id; a crash between the two leaves only files no
//! event names, and the cards stay in the queue.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use hpki_events::envelope::parse_time;
use hpki_events::vocabulary::{
    BatchCard, CardOutcome, ConfirmedCard, Delivery, PrintBatchCreated, PrintConfirmationReceived,
    QrCardMailed, QrCardPrinted, QrCardSpoiled, QrSuperseded,
};
use hpki_events::{Actor, Event, Metadata, NewEvent};
use serde::Serialize;
use uuid::Uuid;

use crate::batch::RowError;
use crate::config::{Config, FileEncoding, MailHouse, OfficeAddress};
use crate::office::Office;
use crate::office::state::QrStatus;
use crate::problem::{OfficeError, Problem};
use crate::store::{AppendError, ExpectedVersion, StreamAppend};

/// How old a print file no batch names must be before it is removed (`sweep_orphans`).
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

pub fn print_stream(authority: &str) -> String {
    format!("print-{authority}")
}

#[derive(Clone)]
pub struct PrintBatches {
    office: Office,
    dir: PathBuf,
    max_cards: usize,
    offices: BTreeMap<String, OfficeAddress>,
    mail_houses: BTreeMap<String, MailHouse>,
    /// `print.schedule`, when batches are also made without being asked.
    schedule: Option<cron::Schedule>,
}

/// A batch as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchSummary {
    pub batch_id: Uuid,
    pub authority: String,
    pub mail_house: String,
    pub cards: usize,
    pub skipped: usize,
    pub pdf_sha256: String,
    pub csv_sha256: String,
}

/// What a confirmation file recorded.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Confirmed {
    pub batch_id: Uuid,
    pub printed: usize,
    pub mailed: usize,
    pub spoiled: usize,
    /// The fresh QRs made for spoiled cards; they join the next batch.
    pub reissued: Vec<Uuid>,
    /// The same file was accepted before: nothing new was recorded.
    pub repeated: bool,
}

/// The batches of one authority's stream, folded.
#[derive(Default)]
struct Batches {
    version: i64,
    created: HashMap<Uuid, PrintBatchCreated>,
    /// Each card's latest confirmed outcome, by batch.
    outcomes: HashMap<Uuid, HashMap<Uuid, CardOutcome>>,
    /// Confirmation files accepted, by SHA-256.
    files: HashMap<String, Uuid>,
}

impl PrintBatches {
    pub fn new(office: Office, config: &Config) -> anyhow::Result<PrintBatches> {
        let schedule = match config.print.schedule.trim() {
            "" => None,
            text => Some(
                cron::Schedule::from_str(text)
                    .with_context(|| format!("print.schedule {text:?} is not a cron expression"))?,
            ),
        };
        Ok(PrintBatches {
            office,
            dir: config.print_dir(),
            max_cards: config.print.max_cards.max(1),
            offices: config.print.offices.clone(),
            mail_houses: config.mail_houses.clone(),
            schedule,
        })
    }

    /// Whether batches are made on a schedule as well as when staff ask.
    pub fn scheduled(&self) -> bool {
        self.schedule.is_some()
    }

    /// Makes the batches the schedule calls for: an authority's waiting QRs are batched at
    /// the schedule's first time after the oldest of them was queued, so no QR waits past
    /// the next scheduled time. Returns the batches made and how long until the next one
    /// may be due. The rule reads only the log's queue, so a run missed while no instance
    /// was up happens at the next start.
    pub async fn step(&self) -> Result<(Vec<BatchSummary>, Option<Duration>), OfficeError> {
        let Some(schedule) = &self.schedule else {
            return Ok((Vec::new(), None));
        };
        let store = self.office.store();
        let actor = Actor::system("print");
        let mut made = Vec::new();
        let mut wait: Option<Duration> = None;
        for authority in self.printed_authorities() {
            loop {
                crate::projection_runner::catch_up(store, &hpki_projections::PrintQueue).await?;
                let waiting = store
                    .docs(
                        "print",
                        Some(&format!("print:waiting:{authority}")),
                        i64::MAX,
                    )
                    .await?;
                let Some(oldest) = waiting
                    .iter()
                    .filter_map(|(_, d)| d.body["queued_at"].as_str().and_then(parse_time))
                    .min()
                else {
                    break;
                };
                let now = self.office.clock().now();
                match super::next_scheduled(schedule, oldest) {
                    Some(at) if at <= now => match self.create(&authority, &actor).await? {
                        Some(batch) => made.push(batch),
                        None => break,
                    },
                    Some(at) => {
                        let until = super::until(now, at);
                        wait = Some(wait.map_or(until, |w| w.min(until)));
                        break;
                    }
                    None => break,
                }
            }
        }
        Ok((made, wait))
    }

    /// The authorities a mail house prints for, each once.
    fn printed_authorities(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .mail_houses
            .values()
            .flat_map(|h| h.authorities.iter().cloned())
            .filter(|a| self.office.ca(a).is_some())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    pub fn pdf_path(&self, authority: &str, batch_id: Uuid) -> PathBuf {
        self.dir.join(authority).join(format!("{batch_id}.pdf"))
    }

    pub fn csv_path(&self, authority: &str, batch_id: Uuid) -> PathBuf {
        self.dir.join(authority).join(format!("{batch_id}.csv"))
    }

    fn mail_house_of(&self, authority: &str) -> Result<(&String, &MailHouse), Problem> {
        self.mail_houses
            .iter()
            .find(|(_, h)| h.authorities.iter().any(|a| a == authority))
            .ok_or_else(|| {
                Problem::new(
                    409,
                    "no_mail_house",
                    format!(
                        "認証局「{authority}」のカードを印刷する印刷・発送業者が設定されていません"
                    ),
                    format!("no mail house is configured for the authority {authority:?}"),
                )
                .field("authority")
            })
    }

    async fn batches(&self, authority: &str) -> Result<Batches, OfficeError> {
        let mut batches = Batches::default();
        for event in self
            .office
            .store()
            .read_stream(&print_stream(authority))
            .await?
        {
            batches.version = event.version;
            match event.event {
                Event::PrintBatchCreated(e) => {
                    batches.created.insert(e.batch_id, e);
                }
                Event::PrintConfirmationReceived(e) => {
                    batches.files.insert(e.file_sha256.clone(), e.batch_id);
                    let outcomes = batches.outcomes.entry(e.batch_id).or_default();
                    for row in e.rows {
                        outcomes.insert(row.qr_id, row.outcome);
                    }
                }
                _ => {}
            }
        }
        Ok(batches)
    }

    /// Makes a batch of the QRs of `authority` waiting to be printed (at most
    /// `print.max_cards`); `None` when none is waiting.
    pub async fn create(
        &self,
        authority: &str,
        actor: &Actor,
    ) -> Result<Option<BatchSummary>, OfficeError> {
        if self.office.ca(authority).is_none() {
            return Err(Problem::not_found("認証局", "authority")
                .field("authority")
                .into());
        }
        let (house_name, house) = self.mail_house_of(authority)?;
        let store = self.office.store();
        let before = self.batches(authority).await?;
        self.sweep_orphans(authority, &before);
        crate::projection_runner::catch_up(store, &hpki_projections::PrintQueue).await?;
        let waiting = store
            .docs(
                "print",
                Some(&format!("print:waiting:{authority}")),
                self.max_cards as i64,
            )
            .await?;
        if waiting.is_empty() {
            return Ok(None);
        }
        let today = self.office.today();
        let mut cards = Vec::new();
        let mut faces = Vec::new();
        let mut manifest = Vec::new();
        let mut skipped = Vec::new();
        for (_, doc) in &waiting {
            let qr_id: Uuid = doc.body["qr_id"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .map_err(anyhow::Error::from)?;
            let stream = doc.body["subscriber"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let (_, subscriber) = self.office.subscriber(&stream).await?;
            let Some(qr) = subscriber
                .qr(qr_id)
                .filter(|q| q.status_on(today) == QrStatus::Open && !q.registered)
            else {
                skipped.push(qr_id);
                continue;
            };
            let Some(application) = subscriber.application(qr.issued.application_id) else {
                skipped.push(qr_id);
                continue;
            };
            let sequence = cards.len() as u32 + 1;
            let destination = match &qr.issued.delivery {
                hpki_events::vocabulary::QrDelivery::Print { destination } => destination.clone(),
                _ => application.received.delivery.clone(),
            };
            let (face, row) = self
                .card(authority, application, qr, sequence, &destination)
                .await?;
            faces.push(face);
            manifest.push(row);
            cards.push(BatchCard {
                sequence,
                qr_id,
                subscriber: stream,
                destination,
            });
        }
        let batch_id = Uuid::now_v7();
        let created_at = self
            .office
            .clock()
            .now()
            .replace_nanosecond(0)
            .expect("zero is valid");
        let mut pdf = Vec::new();
        let mut csv = Vec::new();
        if !cards.is_empty() {
            (pdf, csv) = render(
                batch_id,
                authority,
                created_at,
                house.imposition,
                house.encoding,
                &faces,
                &manifest,
            )?;
            for (path, bytes) in [
                (self.pdf_path(authority, batch_id), &pdf),
                (self.csv_path(authority, batch_id), &csv),
            ] {
                super::write_atomically(&path, bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        let event = PrintBatchCreated {
            batch_id,
            authority: authority.to_owned(),
            mail_house: house_name.clone(),
            imposition: house.imposition,
            created_at: hpki_events::envelope::format_time(created_at),
            cards,
            skipped,
            pdf_sha256: super::sha256_hex(&pdf),
            csv_sha256: super::sha256_hex(&csv),
            manifest_encoding: house.encoding.name().to_owned(),
        };
        let summary = BatchSummary {
            batch_id,
            authority: authority.to_owned(),
            mail_house: house_name.clone(),
            cards: event.cards.len(),
            skipped: event.skipped.len(),
            pdf_sha256: event.pdf_sha256.clone(),
            csv_sha256: event.csv_sha256.clone(),
        };
        let append = StreamAppend {
            stream: print_stream(authority),
            expected: expected(before.version),
            events: vec![NewEvent::new(event.into())],
        };
        match store
            .append(vec![append], Metadata::new(actor.clone()))
            .await
        {
            Ok(_) => Ok(Some(summary)),
            Err(AppendError::Conflict { .. }) => {
                let _ = std::fs::remove_file(self.pdf_path(authority, batch_id));
                let _ = std::fs::remove_file(self.csv_path(authority, batch_id));
                Err(Problem::new(
                    409,
                    "batch_race",
                    "同時に別のバッチが作られました。もう一度お試しください",
                    "another batch was made at the same time; try again",
                )
                .into())
            }
            Err(e) => {
                // The files hold live registration URLs: removed unless the batch is in the
                // log after all (an error can come after a commit, a lost reply say). Left
                // when the log cannot be read to tell.
                let recorded = store.read_stream(&print_stream(authority)).await.map(|events| {
                    events.iter().any(|recorded| {
                        matches!(&recorded.event, Event::PrintBatchCreated(b) if b.batch_id == batch_id)
                    })
                });
                if let Ok(false) = recorded {
                    let _ = std::fs::remove_file(self.pdf_path(authority, batch_id));
                    let _ = std::fs::remove_file(self.csv_path(authority, batch_id));
                }
                Err(OfficeError::Internal(e.into()))
            }
        }
    }

    /// Removes the files of batches the log does not name, an hour or more after they were
    /// written: a crash between a batch's files and its event leaves them, and they hold live
    /// registration URLs. Younger files are left, as another instance may be about to record
    /// their batch; the hour is the files' own time on disk, which the injected clock does not
    /// move. A file that cannot be removed is left for the next batch to try again.
    fn sweep_orphans(&self, authority: &str, recorded: &Batches) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(authority)) else {
            return;
        };
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = match name.rsplit_once('.') {
                // A temporary file of write_atomically: `.<file>.<random>.tmp`.
                Some((_, "tmp")) => name.starts_with('.'),
                Some((stem, "pdf" | "csv")) => {
                    Uuid::parse_str(stem).is_ok_and(|batch| !recorded.created.contains_key(&batch))
                }
                _ => false,
            };
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| now.duration_since(at).unwrap_or_default() >= ORPHAN_AGE);
            if ours && old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::warn!(
                authority,
                removed,
                "removed print files no batch in the log names"
            );
        }
    }

    /// One card's face and manifest row.
    async fn card(
        &self,
        authority: &str,
        application: &crate::office::state::Application,
        qr: &crate::office::state::Qr,
        sequence: u32,
        destination: &Delivery,
    ) -> Result<(crate::pdf::CardFace, [String; 6]), OfficeError> {
        let received = &application.received;
        let qr_id = qr.issued.qr_id;
        let photo = match &application.photo {
            Some(photo) => {
                self.office
                    .store()
                    .photo(&photo.sha256)
                    .await?
                    .map(|p| crate::pdf::Photo {
                        media_type: p.media_type,
                        bytes: p.bytes,
                    })
            }
            None => None,
        };
        let config = &self.office.authorities()[authority];
        let face = crate::pdf::CardFace {
            sequence,
            card_id: qr_id.to_string(),
            name_kanji: received.name_kanji.clone(),
            name_kana: received.name_kana.clone(),
            subscriber_id: received.subscriber_id.clone(),
            authority: config.name_ja.clone(),
            issued_on: qr.issued.issued_on,
            last_usable_day: qr.issued.last_usable_day,
            password_hint: config.password_hint_ja.clone(),
            registration_url: self.office.registration_url(qr_id),
            photo,
        };
        let (postal_code, address, to) = match destination {
            Delivery::Home => (
                received.postal_code.clone(),
                received.address.clone(),
                "自宅".to_owned(),
            ),
            Delivery::Office { name } => {
                let office = self.offices.get(name);
                (
                    office.map(|o| o.postal_code.clone()).unwrap_or_default(),
                    office.map_or_else(|| name.clone(), |o| o.address.clone()),
                    name.clone(),
                )
            }
        };
        let row = [
            sequence.to_string(),
            qr_id.to_string(),
            received.name_kanji.clone(),
            postal_code,
            address,
            to,
        ];
        Ok((face, row))
    }

    /// Renders a recorded batch again from the log: the PDF and the manifest, which must be
    /// the bytes recorded when it was made.
    pub async fn render_again(
        &self,
        batch: &PrintBatchCreated,
    ) -> Result<(Vec<u8>, Vec<u8>), OfficeError> {
        let mut faces = Vec::new();
        let mut manifest = Vec::new();
        for card in &batch.cards {
            let (_, subscriber) = self.office.subscriber(&card.subscriber).await?;
            let qr = subscriber.qr(card.qr_id).ok_or_else(|| {
                anyhow::anyhow!("QR {} is not on {}", card.qr_id, card.subscriber)
            })?;
            let application = subscriber
                .application(qr.issued.application_id)
                .ok_or_else(|| {
                    anyhow::anyhow!("the application of QR {} is missing", card.qr_id)
                })?;
            let (face, row) = self
                .card(
                    &batch.authority,
                    application,
                    qr,
                    card.sequence,
                    &card.destination,
                )
                .await?;
            faces.push(face);
            manifest.push(row);
        }
        let created_at = hpki_events::envelope::parse_time(&batch.created_at)
            .ok_or_else(|| anyhow::anyhow!("created_at is not a time"))?;
        let encoding = if batch.manifest_encoding == FileEncoding::Cp932.name() {
            FileEncoding::Cp932
        } else {
            FileEncoding::Utf8Bom
        };
        Ok(render(
            batch.batch_id,
            &batch.authority,
            created_at,
            batch.imposition,
            encoding,
            &faces,
            &manifest,
        )?)
    }

    /// The batch `batch_id` if `mail_house` (or staff, when `None`) may see it.
    pub async fn find(
        &self,
        batch_id: Uuid,
        mail_house: Option<&str>,
    ) -> Result<PrintBatchCreated, OfficeError> {
        let store = self.office.store();
        crate::projection_runner::catch_up(store, &hpki_projections::PrintQueue).await?;
        let not_found = || OfficeError::from(Problem::not_found("印刷バッチ", "print batch"));
        let doc = store
            .doc("print", &format!("batch/{batch_id}"))
            .await?
            .ok_or_else(not_found)?;
        let authority = doc.body["authority"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let batch = self
            .batches(&authority)
            .await?
            .created
            .remove(&batch_id)
            .ok_or_else(not_found)?;
        if mail_house.is_some_and(|m| m != batch.mail_house) {
            // Another mail house's batch is, to this one, no batch at all.
            return Err(not_found());
        }
        Ok(batch)
    }

    /// A batch's PDF (`pdf`) or manifest as written, checked against the SHA-256 its event
    /// recorded: the bytes, their content type and a file name.
    pub async fn read_file(
        &self,
        batch_id: Uuid,
        mail_house: Option<&str>,
        pdf: bool,
    ) -> Result<(Vec<u8>, String, String), OfficeError> {
        let batch = self.find(batch_id, mail_house).await?;
        let (path, sha) = if pdf {
            (self.pdf_path(&batch.authority, batch_id), &batch.pdf_sha256)
        } else {
            (self.csv_path(&batch.authority, batch_id), &batch.csv_sha256)
        };
        let bytes =
            std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        if super::sha256_hex(&bytes) != *sha {
            return Err(
                anyhow::anyhow!("{} is not the file the batch recorded", path.display()).into(),
            );
        }
        Ok(if pdf {
            (
                bytes,
                "application/pdf".into(),
                format!("qr-cards-{batch_id}.pdf"),
            )
        } else {
            let charset = if batch.manifest_encoding == "cp932" {
                "Shift_JIS"
            } else {
                "utf-8"
            };
            (
                bytes,
                format!("text/csv; charset={charset}"),
                format!("manifest-{batch_id}.csv"),
            )
        })
    }

    /// Records a confirmation file for a batch, or refuses it whole with every problem.
    pub async fn confirm(
        &self,
        batch_id: Uuid,
        bytes: &[u8],
        mail_house: Option<&str>,
        actor: &Actor,
    ) -> Result<Confirmed, OfficeError> {
        let batch = self.find(batch_id, mail_house).await?;
        let rows = parse_confirmation(bytes).map_err(refused)?;
        let file_sha256 = super::sha256_hex(bytes);
        let store = self.office.store();
        for _ in 0..5 {
            let batches = self.batches(&batch.authority).await?;
            if let Some(earlier) = batches.files.get(&file_sha256) {
                if *earlier == batch_id {
                    return Ok(Confirmed {
                        batch_id,
                        printed: 0,
                        mailed: 0,
                        spoiled: 0,
                        reissued: vec![],
                        repeated: true,
                    });
                }
            }
            let known = batches.outcomes.get(&batch_id);
            let confirmed = check_rows(&batch, &rows, known).map_err(refused)?;
            let mut appends = vec![StreamAppend {
                stream: print_stream(&batch.authority),
                expected: expected(batches.version),
                events: vec![NewEvent::new(
                    PrintConfirmationReceived {
                        batch_id,
                        file_sha256: file_sha256.clone(),
                        rows: confirmed.clone(),
                    }
                    .into(),
                )],
            }];
            let mut reissued = Vec::new();
            let mut by_subscriber: BTreeMap<&str, Vec<&ConfirmedCard>> = BTreeMap::new();
            let subscriber_of: HashMap<Uuid, &str> = batch
                .cards
                .iter()
                .map(|c| (c.qr_id, c.subscriber.as_str()))
                .collect();
            for row in &confirmed {
                by_subscriber
                    .entry(subscriber_of[&row.qr_id])
                    .or_default()
                    .push(row);
            }
            for (stream, rows) in by_subscriber {
                let (version, subscriber) = self.office.subscriber(stream).await?;
                let mut events: Vec<Event> = Vec::new();
                for row in rows {
                    let (qr_id, sequence) = (row.qr_id, row.sequence);
                    match &row.outcome {
                        CardOutcome::Printed => events.push(
                            QrCardPrinted {
                                qr_id,
                                batch_id,
                                sequence,
                            }
                            .into(),
                        ),
                        CardOutcome::Mailed { tracking_number } => events.push(
                            QrCardMailed {
                                qr_id,
                                batch_id,
                                sequence,
                                tracking_number: tracking_number.clone(),
                            }
                            .into(),
                        ),
                        CardOutcome::Spoiled => {
                            events.push(
                                QrCardSpoiled {
                                    qr_id,
                                    batch_id,
                                    sequence,
                                }
                                .into(),
                            );
                            let Some(qr) = subscriber.qr(qr_id) else {
                                continue;
                            };
                            let usable = qr.status_on(self.office.today()) == QrStatus::Open
                                && !qr.registered;
                            let application = subscriber.application(qr.issued.application_id);
                            if let (true, Some(application)) = (usable, application) {
                                let fresh = self.office.new_qr(
                                    application,
                                    &qr.issued.certificate_serial,
                                    qr.issued.pre_issued,
                                );
                                reissued.push(fresh.qr_id);
                                events.push(
                                    QrSuperseded {
                                        qr_id,
                                        by: fresh.qr_id,
                                    }
                                    .into(),
                                );
                                events.push(fresh.into());
                            }
                        }
                    }
                }
                appends.push(StreamAppend {
                    stream: stream.to_owned(),
                    expected: expected(version),
                    events: events.into_iter().map(NewEvent::new).collect(),
                });
            }
            match store.append(appends, Metadata::new(actor.clone())).await {
                Ok(_) => {
                    let count = |f: fn(&CardOutcome) -> bool| {
                        confirmed.iter().filter(|r| f(&r.outcome)).count()
                    };
                    return Ok(Confirmed {
                        batch_id,
                        printed: count(|o| matches!(o, CardOutcome::Printed)),
                        mailed: count(|o| matches!(o, CardOutcome::Mailed { .. })),
                        spoiled: count(|o| matches!(o, CardOutcome::Spoiled)),
                        reissued,
                        repeated: false,
                    });
                }
                Err(AppendError::Conflict { .. }) => continue,
                Err(e) => return Err(OfficeError::Internal(e.into())),
            }
        }
        Err(Problem::new(
            503,
            "busy",
            "混み合っています。もう一度お試しください",
            "busy; try again",
        )
        .into())
    }
}

fn render(
    batch_id: Uuid,
    authority: &str,
    created_at: time::OffsetDateTime,
    imposition: hpki_events::vocabulary::Imposition,
    encoding: FileEncoding,
    faces: &[crate::pdf::CardFace],
    manifest: &[[String; 6]],
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let pdf = crate::pdf::render(&crate::pdf::Batch {
        batch_id,
        title: format!("{authority} QR cards {batch_id}"),
        created_at,
        imposition,
        cards: faces,
    })
    .map_err(|e| anyhow::anyhow!("rendering the batch PDF: {e}"))?;
    Ok((pdf, manifest_csv(manifest, encoding)))
}

fn expected(version: i64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}

fn refused(problems: Vec<RowError>) -> OfficeError {
    Problem::new(
        422,
        "bad_confirmation",
        format!(
            "確認ファイルに {} 件の問題があります。ファイル全体を受け付けませんでした",
            problems.len()
        ),
        format!(
            "the confirmation file has {} problems; none of it was recorded",
            problems.len()
        ),
    )
    .details(
        problems
            .into_iter()
            .map(crate::office::row_detail)
            .collect(),
    )
    .into()
}

/// The manifest: a header, then one row per card in sequence order, for Excel.
fn manifest_csv(rows: &[[String; 6]], encoding: FileEncoding) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer
        .write_record(["連番", "カードID", "氏名", "郵便番号", "住所", "送付先"])
        .expect("in memory");
    for row in rows {
        writer.write_record(row).expect("in memory");
    }
    let text =
        String::from_utf8(writer.into_inner().expect("in memory")).expect("written from strings");
    match encoding {
        FileEncoding::Utf8Bom => [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat(),
        FileEncoding::Cp932 => cp932(&text),
    }
}

/// CP932, with a character it cannot hold printed as 〓 (the geta mark typesetters use for
/// a missing glyph) rather than encoding_rs's HTML escape.
fn cp932(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(text);
    if !unmappable {
        return bytes.into_owned();
    }
    let mut out = Vec::with_capacity(text.len() * 2);
    let mut buffer = [0u8; 4];
    for ch in text.chars() {
        let (one, _, bad) = encoding_rs::SHIFT_JIS.encode(ch.encode_utf8(&mut buffer));
        if bad {
            out.extend_from_slice(&[0x81, 0xAC]);
        } else {
            out.extend_from_slice(&one);
        }
    }
    out
}

/// A confirmation row as read: the line it is on and its fields.
struct Row {
    line: u64,
    sequence: String,
    card_id: String,
    status: String,
    tracking_number: String,
}

const CONFIRMATION_COLUMNS: &[(&str, &[&str], bool)] = &[
    ("sequence", &["連番", "sequence"], true),
    ("card_id", &["カードID", "card_id"], true),
    ("status", &["状態", "status"], true),
    ("tracking_number", &["追跡番号", "tracking_number"], false),
];

fn problem(
    line: u64,
    column: &str,
    field: &'static str,
    code: &'static str,
    ja: String,
    en: String,
) -> RowError {
    RowError {
        line,
        column: column.to_owned(),
        field,
        code,
        ja,
        en,
    }
}

/// Reads a confirmation file (UTF-8 with or without BOM, or CP932), or every problem it has.
fn parse_confirmation(bytes: &[u8]) -> Result<Vec<Row>, Vec<RowError>> {
    let (text, _) = crate::batch::decode(bytes).map_err(|e| vec![e])?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| {
        vec![crate::batch::file_error(
            1,
            "",
            "bad_csv",
            format!("見出し行を読めません: {e}"),
            format!("the header line cannot be read: {e}"),
        )]
    })?;
    let mut index = HashMap::new();
    let mut problems = Vec::new();
    for (field, names, required) in CONFIRMATION_COLUMNS {
        match headers.iter().position(|h| names.contains(&h.trim())) {
            Some(i) => {
                index.insert(*field, i);
            }
            None if *required => problems.push(crate::batch::file_error(
                1,
                names[0],
                "missing_column",
                format!("列「{}」（{}）がありません", names[0], names[1]),
                format!("the column {} ({}) is missing", names[1], names[0]),
            )),
            None => {}
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(crate::batch::file_error(
                    line,
                    "",
                    "bad_csv",
                    format!("{line}行目を読めません: {e}"),
                    format!("line {line} cannot be read: {e}"),
                ));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let get = |field: &str| {
            index
                .get(field)
                .and_then(|&i| record.get(i))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        rows.push(Row {
            line,
            sequence: get("sequence"),
            card_id: get("card_id"),
            status: get("status"),
            tracking_number: get("tracking_number"),
        });
    }
    if rows.is_empty() && problems.is_empty() {
        problems.push(crate::batch::file_error(
            1,
            "",
            "empty",
            "行がありません".into(),
            "the file has no rows".into(),
        ));
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

/// Checks every row against the batch and what was confirmed before; every problem listed.
fn check_rows(
    batch: &PrintBatchCreated,
    rows: &[Row],
    known: Option<&HashMap<Uuid, CardOutcome>>,
) -> Result<Vec<ConfirmedCard>, Vec<RowError>> {
    let by_id: HashMap<Uuid, &BatchCard> = batch.cards.iter().map(|c| (c.qr_id, c)).collect();
    let mut seen: HashMap<Uuid, u64> = HashMap::new();
    let mut problems = Vec::new();
    let mut confirmed = Vec::new();
    for row in rows {
        let line = row.line;
        let Ok(card_id) = row.card_id.parse::<Uuid>() else {
            problems.push(problem(
                line,
                "カードID",
                "card_id",
                "bad_card_id",
                format!(
                    "{line}行目: カードID「{}」は正しい形式ではありません",
                    row.card_id
                ),
                format!("line {line}: card id {:?} is not a card id", row.card_id),
            ));
            continue;
        };
        let Some(card) = by_id.get(&card_id) else {
            problems.push(problem(
                line,
                "カードID",
                "card_id",
                "not_in_batch",
                format!("{line}行目: カードID {card_id} はこのバッチにありません"),
                format!("line {line}: card {card_id} is not in this batch"),
            ));
            continue;
        };
        if row.sequence.parse::<u32>().ok() != Some(card.sequence) {
            problems.push(problem(
                line,
                "連番",
                "sequence",
                "wrong_sequence",
                format!(
                    "{line}行目: 連番「{}」はカード {card_id} の連番 {} と違います",
                    row.sequence, card.sequence
                ),
                format!(
                    "line {line}: sequence {:?} is not card {card_id}'s sequence {}",
                    row.sequence, card.sequence
                ),
            ));
        }
        if let Some(first) = seen.insert(card_id, line) {
            problems.push(problem(
                line,
                "カードID",
                "card_id",
                "repeated_row",
                format!("{line}行目: カード {card_id} は{first}行目にもあります"),
                format!("line {line}: card {card_id} is also on line {first}"),
            ));
            continue;
        }
        let outcome = match row.status.as_str() {
            "printed" | "印刷済" => CardOutcome::Printed,
            "spoiled" | "損紙" => CardOutcome::Spoiled,
            "mailed" | "発送済" if row.tracking_number.is_empty() => {
                problems.push(problem(
                    line,
                    "追跡番号",
                    "tracking_number",
                    "missing_tracking_number",
                    format!("{line}行目: 発送済には追跡番号が必要です"),
                    format!("line {line}: a mailed card needs a tracking number"),
                ));
                continue;
            }
            "mailed" | "発送済" => CardOutcome::Mailed {
                tracking_number: row.tracking_number.clone(),
            },
            other => {
                problems.push(problem(line, "状態", "status", "bad_status", format!("{line}行目: 状態「{other}」は 印刷済・発送済・損紙（printed, mailed, spoiled）のどれでもありません"), format!("line {line}: status {other:?} is not printed, mailed or spoiled")));
                continue;
            }
        };
        let before = known.and_then(|k| k.get(&card_id));
        let allowed = match (before, &outcome) {
            (None, _) => true,
            (Some(CardOutcome::Printed), CardOutcome::Mailed { .. } | CardOutcome::Spoiled) => true,
            _ => false,
        };
        if !allowed {
            problems.push(problem(
                line,
                "状態",
                "status",
                "already_confirmed",
                format!(
                    "{line}行目: カード {card_id} は確認済みです（{}）",
                    status_name(before)
                ),
                format!(
                    "line {line}: card {card_id} was already confirmed ({})",
                    status_name(before)
                ),
            ));
            continue;
        }
        confirmed.push(ConfirmedCard {
            sequence: card.sequence,
            qr_id: card_id,
            outcome,
        });
    }
    if problems.is_empty() {
        Ok(confirmed)
    } else {
        Err(problems)
    }
}

fn status_name(outcome: Option<&CardOutcome>) -> &'static str {
    match outcome {
        Some(CardOutcome::Printed) => "printed",
        Some(CardOutcome::Mailed { .. }) => "mailed",
        Some(CardOutcome::Spoiled) => "spoiled",
        None => "none",
    }
}
