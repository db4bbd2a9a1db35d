//! What the processors work from.
//!
//! - `outbox`: every e-mail the log calls for, keyed `mail/<mail id>` (the id of the event
//!   that called for it), on `mail:pending` (with `due_at`, the time it may be tried),
//!   `mail:sent` or `mail:failed`.
//! - `print`: QR cards to print. `qr/<id>` on `print:waiting:<authority>` (sorted by
//!   destination, then subscriber), then `print:batched`, `print:printed`, `print:mailed`,
//!   `print:spoiled`; `batch/<id>` on `batch:<mail house>`.
//!
//! No document holds a token, a birth date or an e-mail address: the processors read those
//! from the subscriber's stream when they need them.

use hpki_events::vocabulary::{CardOutcome, Delivery, QrDelivery};
use hpki_events::{Event, RecordedEvent};
use serde_json::json;

use crate::{Change, Doc, Projection, body, ending_in_id};

pub struct Outbox;

/// The template an event calls for, if it calls for a mail.
pub fn mail_kind(event: &Event) -> Option<&'static str> {
    Some(match event {
        Event::ApplicationReceived(_) => "received",
        Event::ApplicationApproved(_) => "approved",
        Event::ApplicationRejected(_) => "rejected",
        Event::CardDeferred(_) => "deferred",
        Event::QrIssued(e) if e.delivery == QrDelivery::Email => "reissue_url",
        Event::QrReminderDue(_) => "expiring",
        Event::QrLocked(_) => "locked",
        Event::CertificateRevoked(_) => "revoked",
        _ => return None,
    })
}

fn move_mail(mail_id: uuid::Uuid, list: &str, merge: serde_json::Value) -> Change {
    Change::Patch {
        key: ending_in_id(&["mail/"], &mail_id),
        list: Some(list.to_owned()),
        merge,
    }
}

impl Projection for Outbox {
    fn name(&self) -> &'static str {
        "outbox"
    }

    fn apply(&self, event: &RecordedEvent) -> Vec<Change> {
        let at = event.recorded_at_text.as_str();
        if let Some(kind) = mail_kind(&event.event) {
            let key = ending_in_id(&["mail/"], &event.event_id);
            return vec![Change::Put {
                doc: Doc {
                    list: "mail:pending".into(),
                    sort_key: ending_in_id(&[at, "/"], &event.event_id),
                    body: body!({
                        "mail_id": event.event_id,
                        "kind": kind,
                        "subscriber": event.stream,
                        "position": event.position,
                        "caused_at": at,
                        "due_at": at,
                        "attempt": 0,
                    }),
                },
                key,
            }];
        }
        match &event.event {
            Event::MailSent(e) => vec![move_mail(
                e.mail_id,
                "mail:sent",
                json!({ "attempt": e.attempt, "message_id": e.message_id, "sent_at": at }),
            )],
            Event::MailDeferred(e) => vec![move_mail(
                e.mail_id,
                "mail:pending",
                json!({ "attempt": e.attempt, "due_at": e.retry_at, "error": e.error }),
            )],
            Event::MailFailed(e) => vec![move_mail(
                e.mail_id,
                "mail:failed",
                json!({ "attempt": e.attempt, "error": e.error, "failed_at": at }),
            )],
            Event::MailRetryRequested(e) => vec![move_mail(
                e.mail_id,
                "mail:pending",
                json!({ "due_at": at, "error": null }),
            )],
            _ => vec![],
        }
    }
}

pub struct PrintQueue;

/// The manifest's and the queue's name for a destination.
pub fn destination_name(delivery: &Delivery) -> String {
    match delivery {
        Delivery::Home => "home".into(),
        Delivery::Office { name } => format!("office:{name}"),
    }
}

impl Projection for PrintQueue {
    fn name(&self) -> &'static str {
        "print"
    }

    fn apply(&self, event: &RecordedEvent) -> Vec<Change> {
        let at = event.recorded_at_text.as_str();
        let card = |qr_id: uuid::Uuid, list: &str, merge: serde_json::Value| Change::Patch {
            key: format!("qr/{qr_id}"),
            list: Some(list.to_owned()),
            merge,
        };
        match &event.event {
            Event::QrIssued(e) => {
                let QrDelivery::Print { destination } = &e.delivery else {
                    return vec![];
                };
                let authority = event.stream.split('-').nth(1).unwrap_or_default();
                let destination = destination_name(destination);
                vec![Change::Put {
                    key: format!("qr/{}", e.qr_id),
                    doc: Doc {
                        list: format!("print:waiting:{authority}"),
                        sort_key: format!("{destination}/{}/{}", event.stream, e.qr_id),
                        body: body!({
                            "qr_id": e.qr_id,
                            "subscriber": event.stream,
                            "destination": destination,
                            "issued_on": e.issued_on.to_string(),
                            "queued_at": at,
                        }),
                    },
                }]
            }
            Event::PrintBatchCreated(e) => {
                let mut changes: Vec<Change> = e
                    .cards
                    .iter()
                    .map(|c| {
                        card(
                            c.qr_id,
                            "print:batched",
                            json!({ "batch_id": e.batch_id, "sequence": c.sequence }),
                        )
                    })
                    .collect();
                changes.extend(e.skipped.iter().map(|qr_id| Change::Delete {
                    key: format!("qr/{qr_id}"),
                }));
                changes.push(Change::Put {
                    key: format!("batch/{}", e.batch_id),
                    doc: Doc {
                        list: format!("batch:{}", e.mail_house),
                        sort_key: format!("{}/{}", e.created_at, e.batch_id),
                        body: body!({
                            "batch_id": e.batch_id,
                            "authority": e.authority,
                            "mail_house": e.mail_house,
                            "cards": e.cards.len(),
                            "created_at": e.created_at,
                            "pdf_sha256": e.pdf_sha256,
                            "csv_sha256": e.csv_sha256,

                        }),
                    },
                });
                changes
            }
            Event::PrintConfirmationReceived(e) => {
                let count =
                    |f: fn(&CardOutcome) -> bool| e.rows.iter().filter(|r| f(&r.outcome)).count();
                vec![Change::Patch {
                    key: format!("batch/{}", e.batch_id),
                    list: None,
                    merge: json!({
                        "last_confirmation": {
                            "at": at,
                            "file_sha256": e.file_sha256,
                            "printed": count(|o| matches!(o, CardOutcome::Printed)),
                            "mailed": count(|o| matches!(o, CardOutcome::Mailed { .. })),
                            "spoiled": count(|o| matches!(o, CardOutcome::Spoiled)),
                        }
                    }),
                }]
            }
            Event::QrCardPrinted(e) => {
                vec![card(e.qr_id, "print:printed", json!({ "printed_at": at }))]
            }
            Event::QrCardMailed(e) => vec![card(
                e.qr_id,
                "print:mailed",
                json!({ "mailed_at": at, "tracking_number": e.tracking_number }),
            )],
            Event::QrCardSpoiled(e) => {
                vec![card(e.qr_id, "print:spoiled", json!({ "spoiled_at": at }))]
            }
            _ => vec![],
        }
    }
}
