//! The mail outbox: every e-mail the log calls for (`hpki_projections::mail_kind`), sent once.
//!
//! Each mail's outcomes go on its own stream, `mail-<mail id>`, appended at the version read
//! before sending: `MailSent`, `MailDeferred` (a 4xx reply or no connection: tried again
//! after a backoff that doubles), `MailFailed` (a 5xx reply: listed for staff, who may ask
//! for a retry). The Message-ID is made from the mail id, so the rare repeat (the process
//! dies after the server accepted the mail and before `MailSent` is recorded) carries the
//! same Message-ID as the first and a receiver can recognise it.
//!
//! When the process lives on but the log refuses the record (a full disk, a database that
//! answers reads and not writes), the outcome is kept in memory and recorded at the next step
//! instead of sending the mail again: a failing log must not turn into a mail every few
//! seconds to the same subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use hpki_events::vocabulary::{MailDeferred, MailFailed, MailSent};
use hpki_events::{Actor, Event, Metadata, RecordedEvent};
use hpki_projections::Doc;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::{Config, Mail, MailTransport, SmtpTls};
use crate::office::Office;
use crate::office::state::{Aggregate, Subscriber};
use crate::store::{ExpectedVersion, StreamAppend};

/// The e-mail templates, `templates/mail/<authority>/<kind>.txt`: a `Subject:` line, a blank
/// line, the body. Built in, so a fresh binary has them.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "jma/received",
        include_str!("../../templates/mail/jma/received.txt"),
    ),
    (
        "jma/approved",
        include_str!("../../templates/mail/jma/approved.txt"),
    ),
    (
        "jma/rejected",
        include_str!("../../templates/mail/jma/rejected.txt"),
    ),
    (
        "jma/deferred",
        include_str!("../../templates/mail/jma/deferred.txt"),
    ),
    (
        "jma/reissue_url",
        include_str!("../../templates/mail/jma/reissue_url.txt"),
    ),
    (
        "jma/expiring",
        include_str!("../../templates/mail/jma/expiring.txt"),
    ),
    (
        "jma/locked",
        include_str!("../../templates/mail/jma/locked.txt"),
    ),
    (
        "jma/revoked",
        include_str!("../../templates/mail/jma/revoked.txt"),
    ),
    (
        "jpa/received",
        include_str!("../../templates/mail/jpa/received.txt"),
    ),
    (
        "jpa/approved",
        include_str!("../../templates/mail/jpa/approved.txt"),
    ),
    (
        "jpa/rejected",
        include_str!("../../templates/mail/jpa/rejected.txt"),
    ),
    (
        "jpa/deferred",
        include_str!("../../templates/mail/jpa/deferred.txt"),
    ),
    (
        "jpa/reissue_url",
        include_str!("../../templates/mail/jpa/reissue_url.txt"),
    ),
    (
        "jpa/expiring",
        include_str!("../../templates/mail/jpa/expiring.txt"),
    ),
    (
        "jpa/locked",
        include_str!("../../templates/mail/jpa/locked.txt"),
    ),
    (
        "jpa/revoked",
        include_str!("../../templates/mail/jpa/revoked.txt"),
    ),
];

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// Why a send did not go through.
enum Failure {
    /// Worth trying again later.
    Temporary(String),
    /// Will not work by trying again: a 5xx, no address, no template.
    Permanent(String),
}

#[derive(Clone)]
pub struct Outbox {
    office: Office,
    transport: Arc<Transport>,
    from: Mailbox,
    domain: String,
    config: Mail,
    templates: Arc<minijinja::Environment<'static>>,
    /// Outcomes of sends whose record the log refused, by mail id: recorded at the mail's next
    /// turn rather than sent again.
    unrecorded: Arc<Mutex<HashMap<Uuid, Event>>>,
}

/// A mail the outbox read model says is waiting.
struct Pending {
    mail_id: Uuid,
    kind: String,
    subscriber: String,
    due_at: OffsetDateTime,
}

/// What the outbox did in one step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub sent: usize,
    pub deferred: usize,
    pub failed: usize,
}

impl Outbox {
    pub fn new(office: Office, config: &Config) -> anyhow::Result<Outbox> {
        let mail = config.mail.clone();
        let from: Mailbox = mail
            .from
            .parse()
            .with_context(|| format!("mail.from {:?} is not a mail address", mail.from))?;
        let domain = from.email.domain().to_owned();
        let transport = match mail.transport {
            MailTransport::File => {
                let dir = config.mail_dir();
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating the mail folder {}", dir.display()))?;
                Transport::File(AsyncFileTransport::new(dir))
            }
            MailTransport::Smtp => Transport::Smtp(smtp(&mail)?),
        };
        let mut templates = minijinja::Environment::new();
        for (name, source) in TEMPLATES {
            templates
                .add_template(name, source)
                .with_context(|| format!("the mail template {name} does not parse"))?;
        }
        Ok(Outbox {
            office,
            transport: Arc::new(transport),
            from,
            domain,
            config: mail,
            templates: Arc::new(templates),
            unrecorded: Arc::default(),
        })
    }

    /// Sends every mail that is due; returns what it did and how long until the next one is.
    pub async fn step(&self) -> anyhow::Result<(Report, Option<Duration>)> {
        let store = self.office.store();
        crate::projection_runner::catch_up(store, &hpki_projections::Outbox).await?;
        let now = self.office.clock().now();
        let mut due = Vec::new();
        let mut next: Option<OffsetDateTime> = None;
        for (_, doc) in store.docs("outbox", Some("mail:pending"), i64::MAX).await? {
            let pending = pending(&doc)?;
            if pending.due_at <= now {
                due.push(pending);
            } else {
                next = Some(next.map_or(pending.due_at, |n| n.min(pending.due_at)));
            }
        }
        let outcomes: Vec<anyhow::Result<Option<Event>>> = futures::stream::iter(due)
            .map(|pending| self.deliver(pending))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut report = Report::default();
        for outcome in outcomes {
            match outcome? {
                Some(Event::MailSent(_)) => report.sent += 1,
                Some(Event::MailDeferred(_)) => report.deferred += 1,
                Some(Event::MailFailed(_)) => report.failed += 1,
                _ => {}
            }
        }
        let wait =
            next.map(|at| Duration::from_millis((at - now).whole_milliseconds().max(0) as u64));
        Ok((report, wait))
    }

    /// Sends one mail unless its stream says it already went, and records what happened.
    async fn deliver(&self, pending: Pending) -> anyhow::Result<Option<Event>> {
        let store = self.office.store();
        let stream = format!("mail-{}", pending.mail_id);
        let history = store.read_stream(&stream).await?;
        if !still_pending(&history) {
            // Recorded by now, by this process or another.
            self.unrecorded().remove(&pending.mail_id);
            return Ok(None);
        }
        let unrecorded = self.unrecorded().remove(&pending.mail_id);
        let event = match unrecorded {
            Some(event) => event,
            None => self.attempt(&pending, &history).await,
        };
        let expected = history.last().map_or(ExpectedVersion::NoStream, |e| {
            ExpectedVersion::Exact(e.version)
        });
        let append = StreamAppend {
            stream,
            expected,
            events: vec![hpki_events::NewEvent::new(event.clone())],
        };
        let mut metadata = Metadata::new(Actor::system("outbox"));
        metadata.causation_id = Some(pending.mail_id);
        if let Err(error) = store.append(vec![append], metadata).await {
            self.unrecorded().insert(pending.mail_id, event);
            return Err(error)
                .with_context(|| format!("recording what became of mail {}", pending.mail_id));
        }
        Ok(Some(event))
    }

    fn unrecorded(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Event>> {
        // A panic while the map was held leaves it as it was: still usable.
        self.unrecorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tries to send the mail; what became of it, as the event to record.
    async fn attempt(&self, pending: &Pending, history: &[RecordedEvent]) -> Event {
        let attempt = history
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    Event::MailSent(_) | Event::MailDeferred(_) | Event::MailFailed(_)
                )
            })
            .count() as u32
            + 1;
        let message_id = format!("<{}@{}>", pending.mail_id, self.domain);
        let result = match self.compose(pending, &message_id).await {
            Ok(message) => self.send(message).await,
            Err(failure) => Err(failure),
        };
        let kind = pending.kind.clone();
        match result {
            Ok(()) => MailSent {
                mail_id: pending.mail_id,
                kind,
                message_id,
                attempt,
            }
            .into(),
            Err(Failure::Temporary(error)) => {
                let retry_at = self.office.clock().now() + self.backoff(attempt);
                tracing::warn!(mail = %pending.mail_id, attempt, %error, "a mail was deferred");
                MailDeferred {
                    mail_id: pending.mail_id,
                    kind,
                    attempt,
                    error,
                    retry_at: hpki_events::envelope::format_time(retry_at),
                }
                .into()
            }
            Err(Failure::Permanent(error)) => {
                tracing::error!(mail = %pending.mail_id, attempt, %error, "a mail failed for good");
                MailFailed {
                    mail_id: pending.mail_id,
                    kind,
                    attempt,
                    error,
                }
                .into()
            }
        }
    }

    fn backoff(&self, attempt: u32) -> time::Duration {
        let first = self.config.retry_first_seconds.max(1);
        let seconds = first
            .saturating_mul(1_i64 << attempt.saturating_sub(1).min(30))
            .min(self.config.retry_max_seconds.max(first));
        time::Duration::seconds(seconds)
    }

    async fn send(&self, message: Message) -> Result<(), Failure> {
        match self.transport.as_ref() {
            Transport::Smtp(smtp) => smtp.send(message).await.map(|_| ()).map_err(|e| {
                if e.is_permanent() {
                    Failure::Permanent(e.to_string())
                } else {
                    Failure::Temporary(e.to_string())
                }
            }),
            Transport::File(file) => file
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| Failure::Temporary(e.to_string())),
        }
    }

    /// The message for a pending mail, from the subscriber's stream and the template.
    async fn compose(&self, pending: &Pending, message_id: &str) -> Result<Message, Failure> {
        let events = self
            .office
            .store()
            .read_stream(&pending.subscriber)
            .await
            .map_err(|e| Failure::Temporary(e.to_string()))?;
        let mut subscriber = Subscriber::default();
        let mut cause = None;
        for event in &events {
            subscriber.apply(event);
            if event.event_id == pending.mail_id {
                cause = Some(event);
                break;
            }
        }
        let cause = cause.ok_or_else(|| {
            Failure::Permanent(format!(
                "the event {} is not on {}",
                pending.mail_id, pending.subscriber
            ))
        })?;
        let (to, context) = super::mail_context::context(&self.office, &subscriber, cause)
            .map_err(Failure::Permanent)?;
        let authority = pending.subscriber.split('-').nth(1).unwrap_or_default();
        let name = format!("{authority}/{}", pending.kind);
        let template = self
            .templates
            .get_template(&name)
            .map_err(|_| Failure::Permanent(format!("there is no mail template {name}")))?;
        let text = template
            .render(context)
            .map_err(|e| Failure::Permanent(format!("the template {name} failed: {e}")))?;
        let (subject, body) = split_subject(&text).ok_or_else(|| {
            Failure::Permanent(format!("the template {name} has no Subject line"))
        })?;
        let to: Mailbox = to
            .parse()
            .map_err(|_| Failure::Permanent("the subscriber's mail address is not valid".into()))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.to_owned()))
            .date(std::time::SystemTime::from(self.office.clock().now()))
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| Failure::Permanent(e.to_string()))
    }
}

/// Whether a mail's stream leaves it to be sent: nothing yet, a deferral, or a staff retry
/// after a failure.
fn still_pending(history: &[RecordedEvent]) -> bool {
    match history.last().map(|e| &e.event) {
        None | Some(Event::MailDeferred(_)) | Some(Event::MailRetryRequested(_)) => true,
        _ => false,
    }
}

/// `Subject: ...`, a blank line, the body.
fn split_subject(text: &str) -> Option<(&str, &str)> {
    let rest = text.trim_start().strip_prefix("Subject:")?;
    let (subject, body) = rest.split_once('\n')?;
    Some((subject.trim(), body.trim_start_matches(['\r', '\n'])))
}

fn pending(doc: &Doc) -> anyhow::Result<Pending> {
    let body = &doc.body;
    let text = |field: &str| {
        body[field]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("an outbox document has no {field}"))
    };
    Ok(Pending {
        mail_id: text("mail_id")?.parse()?,
        kind: text("kind")?,
        subscriber: text("subscriber")?,
        due_at: hpki_events::envelope::parse_time(&text("due_at")?)
            .context("an outbox document's due_at is not a time")?,
    })
}

fn smtp(mail: &Mail) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls = match mail.smtp_tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls => Tls::Required(TlsParameters::new(mail.smtp_host.clone())?),
        SmtpTls::Tls => Tls::Wrapper(TlsParameters::new(mail.smtp_host.clone())?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&mail.smtp_host)
        .port(mail.smtp_port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(mail.timeout_seconds.max(1))));
    if !mail.smtp_username.is_empty() {
        let password = std::fs::read_to_string(&mail.smtp_password_file).with_context(|| {
            format!(
                "reading mail.smtp_password_file {}",
                mail.smtp_password_file.display()
            )
        })?;
        builder = builder.credentials(Credentials::new(
            mail.smtp_username.clone(),
            password.trim_end().to_owned(),
        ));
    }
    Ok(builder.build())
}

/// Staff ask for a failed mail to be sent again. Refused unless its last outcome is a failure.
pub async fn retry(
    office: &Office,
    mail_id: Uuid,
    actor: &Actor,
) -> Result<(), crate::problem::OfficeError> {
    use crate::problem::Problem;
    let stream = format!("mail-{mail_id}");
    let history = office.store().read_stream(&stream).await?;
    let Some(last) = history.last() else {
        return Err(Problem::new(
            404,
            "unknown_mail",
            "そのメールはありません",
            "there is no such mail",
        )
        .field("mail_id")
        .into());
    };
    if !matches!(last.event, Event::MailFailed(_)) {
        return Err(Problem::new(
            409,
            "mail_not_failed",
            "このメールは送信失敗の状態ではありません",
            "this mail has not failed",
        )
        .field("mail_id")
        .into());
    }
    let append = StreamAppend {
        stream,
        expected: ExpectedVersion::Exact(last.version),
        events: vec![hpki_events::NewEvent::new(
            hpki_events::vocabulary::MailRetryRequested { mail_id }.into(),
        )],
    };
    office
        .store()
        .append(vec![append], Metadata::new(actor.clone()))
        .await
        .map_err(|e| crate::problem::OfficeError::Internal(e.into()))?;
    Ok(())
}
