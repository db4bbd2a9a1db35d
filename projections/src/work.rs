//! The registration office's work lists.
//!
//! - `applications`: one document per application, on the list of its state: `received`
//!   (to review), `documents_checked` (to decide), `awaiting_card` (approved, card deferred),
//!   `issued` (card and second certificate out), `rejected`.
//! - `certificates`: one per certificate issued, on `card` or `second`.
//! - `qrs`: one per QR, on `to_print` until a print batch takes it (issue 5), or on the list of
//!   how else it went out (`email`, `screen`).
//! - `cards`: one per blank card received, on `<authority>:available`, `:allocated` or `:used`.
//!
//! No document holds a birth date, a token or a key.

use hpki_events::vocabulary::{Certificate, QrDelivery};
use hpki_events::{Event, RecordedEvent};
use serde_json::json;

use crate::{Change, Doc, Projection, body, ending_in_id};

pub struct Applications;

fn patch(key: impl ToString, list: Option<&str>, merge: serde_json::Value) -> Change {
    Change::Patch {
        key: key.to_string(),
        list: list.map(str::to_owned),
        merge,
    }
}

impl Projection for Applications {
    fn name(&self) -> &'static str {
        "applications"
    }

    fn apply(&self, event: &RecordedEvent) -> Vec<Change> {
        let at = event.recorded_at_text.as_str();
        let by = event.metadata.actor.as_str();
        match &event.event {
            Event::ApplicationReceived(e) => vec![Change::Put {
                key: ending_in_id(&[], &e.application_id),
                doc: Doc {
                    list: "received".into(),
                    // Oldest first: the order staff work through them.
                    sort_key: ending_in_id(&[at, "/"], &e.application_id),
                    body: body!({
                        "application_id": e.application_id,
                        "subscriber": event.stream,
                        "authority": e.authority,
                        "registry_number": e.registry_number,
                        "subscriber_id": e.subscriber_id,
                        "name_kanji": e.name_kanji,
                        "name_kana": e.name_kana,
                        "name_romaji": e.name_romaji,
                        "profession": e.profession,
                        "email": e.email,
                        "postal_code": e.postal_code,
                        "address": e.address,
                        "delivery": e.delivery,
                        "photo": e.photo,
                        "channel": e.source.channel,
                        "received_at": at,
                        "received_by": by,
                    }),
                },
            }],
            Event::PhotoAttached(e) => {
                vec![patch(e.application_id, None, json!({ "photo": e.photo }))]
            }
            Event::DocumentsChecked(e) => vec![patch(
                e.application_id,
                Some("documents_checked"),
                json!({ "checked_at": at, "checked_by": by }),
            )],
            Event::ApplicationApproved(e) => vec![patch(
                e.application_id,
                Some("issued"),
                json!({ "approved_at": at, "approved_by": by }),
            )],
            Event::ApplicationRejected(e) => vec![patch(
                e.application_id,
                Some("rejected"),
                json!({ "rejected_at": at, "rejected_by": by, "reason": e.reason }),
            )],
            // Approval and deferral are appended together; the deferral decides the list.
            Event::CardDeferred(e) => vec![patch(
                e.application_id,
                Some("awaiting_card"),
                json!({ "card": "deferred" }),
            )],
            Event::CardCertificateIssued(e) => vec![patch(
                e.application_id,
                Some("issued"),
                json!({ "card": "issued", "card_serial": e.card_serial,
                        "card_certificate": e.certificate.serial }),
            )],
            Event::SecondCertificateIssued(e) => vec![patch(
                e.application_id,
                None,
                json!({ "second_certificate": e.certificate.serial }),
            )],
            Event::QrIssued(e) => vec![patch(
                e.application_id,
                None,
                json!({ "qr_id": e.qr_id, "qr_last_usable_day": e.last_usable_day.to_string() }),
            )],
            _ => vec![],
        }
    }
}

pub struct Certificates;

fn certificate_doc(
    kind: &str,
    event: &RecordedEvent,
    application_id: uuid::Uuid,
    cert: &Certificate,
    card_serial: Option<&str>,
) -> Change {
    let authority = event.stream.split('-').nth(1).unwrap_or_default();
    Change::Put {
        key: cert.serial.clone(),
        doc: Doc {
            list: kind.into(),
            sort_key: format!("{}/{}", event.recorded_at_text, cert.serial),
            body: body!({
                "serial": cert.serial,
                "kind": kind,
                "authority": authority,
                "subscriber": event.stream,
                "application_id": application_id,
                "not_before": cert.not_before,
                "not_after": cert.not_after,
                "issued_at": event.recorded_at_text,
                "der": cert.der,
                "card_serial": card_serial,
            }),
        },
    }
}

impl Projection for Certificates {
    fn name(&self) -> &'static str {
        "certificates"
    }

    fn apply(&self, event: &RecordedEvent) -> Vec<Change> {
        match &event.event {
            Event::CardCertificateIssued(e) => vec![certificate_doc(
                "card",
                event,
                e.application_id,
                &e.certificate,
                Some(&e.card_serial),
            )],
            Event::SecondCertificateIssued(e) => vec![certificate_doc(
                "second",
                event,
                e.application_id,
                &e.certificate,
                None,
            )],
            _ => vec![],
        }
    }
}

pub struct Qrs;

impl Projection for Qrs {
    fn name(&self) -> &'static str {
        "qrs"
    }

    fn apply(&self, event: &RecordedEvent) -> Vec<Change> {
        match &event.event {
            Event::QrIssued(e) => {
                let (list, destination) = match &e.delivery {
                    QrDelivery::Print { destination } => ("to_print", Some(destination)),
                    QrDelivery::Email => ("email", None),
                    QrDelivery::Screen => ("screen", None),
                };
                vec![Change::Put {
                    key: e.qr_id.to_string(),
                    doc: Doc {
                        list: list.into(),
                        sort_key: format!("{}/{}", event.recorded_at_text, e.qr_id),
                        body: body!({
                            "qr_id": e.qr_id,
                            "subscriber": event.stream,
                            "application_id": e.application_id,
                            "certificate_serial": e.certificate_serial,
                            "token_sha256": e.token_sha256,
                            "issued_on": e.issued_on.to_string(),
                            "last_usable_day": e.last_usable_day.to_string(),
                            "pre_issued": e.pre_issued,
                            "destination": destination,
                        }),
                    },
                }]
            }
            _ => vec![],
        }
    }
}

pub struct Cards;

impl Projection for Cards {
    fn name(&self) -> &'static str {
        "cards"
    }

    fn apply(&self, event: &RecordedEvent) -> Vec<Change> {
        let authority = event.stream.strip_prefix("cardstock-").unwrap_or_default();
        let at = event.recorded_at_text.as_str();
        match &event.event {
            Event::CardStockReceived(e) => e
                .cards
                .iter()
                .map(|card| Change::Put {
                    key: format!("{authority}/{}", card.card_serial),
                    doc: Doc {
                        list: format!("{authority}:available"),
                        sort_key: format!("{at}/{}", card.card_serial),
                        body: body!({ "card_serial": card.card_serial, "authority": authority,
                                      "received_at": at }),
                    },
                })
                .collect(),
            Event::CardAllocated(e) => vec![patch(
                format!("{authority}/{}", e.card_serial),
                Some(&format!("{authority}:allocated")),
                json!({ "application_id": e.application_id, "allocated_at": at }),
            )],
            Event::CardStockUsed(e) => e
                .card_serials
                .iter()
                .map(|serial| {
                    patch(
                        format!("{authority}/{serial}"),
                        Some(&format!("{authority}:used")),
                        json!({ "used_at": at, "reason": e.reason }),
                    )
                })
                .collect(),
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryModel;
    use hpki_events::vocabulary::*;
    use hpki_events::{Actor, Metadata};
    use uuid::Uuid;

    fn recorded(stream: &str, version: i64, event: Event) -> RecordedEvent {
        RecordedEvent {
            position: version,
            stream: stream.into(),
            version,
            event_id: Uuid::now_v7(),
            recorded_at: time::macros::datetime!(2026-11-22 01:00 UTC),
            recorded_at_text: "2026-11-22T01:00:00.000000Z".into(),
            metadata: Metadata::new(Actor::parse("staff:suzuki").unwrap()),
            event,
            hash: hpki_events::GENESIS_HASH,
        }
    }

    #[test]
    fn an_application_moves_through_the_lists() {
        let id = Uuid::now_v7();
        let stream = "subscriber-jma-123456";
        let received = ApplicationReceived {
            application_id: id,
            authority: "jma".into(),
            registry_number: "123456".into(),
            subscriber_id: "123456".into(),
            name_kanji: "山田 太郎".into(),
            name_kana: "ヤマダ タロウ".into(),
            name_romaji: "YAMADA TARO".into(),
            birth_date: Sealed {
                kek: "k".into(),
                data: "sealed".into(),
            },
            profession: "physician".into(),
            email: "t@example.jp".into(),
            postal_code: "113-8621".into(),
            address: "東京都".into(),
            delivery: Delivery::Home,
            photo: None,
            source: Source {
                channel: Channel::Web,
                batch: None,
            },
        };
        let mut model = MemoryModel::default();
        let events = [
            Event::ApplicationReceived(received),
            Event::DocumentsChecked(DocumentsChecked { application_id: id }),
            Event::ApplicationApproved(ApplicationApproved { application_id: id }),
            Event::CardDeferred(CardDeferred { application_id: id }),
        ];
        let mut lists = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            model.apply(Applications.apply(&recorded(stream, i as i64 + 1, event)));
            lists.push(model.docs[&id.to_string()].list.clone());
        }
        assert_eq!(
            lists,
            ["received", "documents_checked", "issued", "awaiting_card"]
        );
        let body = &model.docs[&id.to_string()].body;
        assert_eq!(body["checked_by"], "staff:suzuki");
        assert!(
            !body.to_string().contains("sealed"),
            "no birth date in a work list"
        );
    }
}
