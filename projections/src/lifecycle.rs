//! After issuance.
//!
//! - `locator`: which subscriber stream an id belongs to: `token:<sha256>`, `qr:<id>`,
//!   `cert:<serial>`, `credential:<id>` (while bound), `request:<id>`, `case:<id>`,
//!   `proposal:<id>`. Commands use it to find the stream they decide on.
//! - `lifecycle`: the work lists after issuance.
//!   - `qr/<id>` on `qr:open`, `qr:registered`, `qr:locked`, `qr:expired`, `qr:superseded`,
//!     `qr:revoked`; sorted by last usable day, so the open ones expiring soonest come first.
//!   - `reissue/<id>` on `reissue:open`, `reissue:approved`, `reissue:rejected`.
//!   - `case/<id>` on `case:open`, `case:closed`.
//!   - `proposal/<id>` on `proposal:open`, `proposal:approved`, `proposal:rejected`,
//!     `proposal:expired`.
//!   - `revoked/<serial>` on `revoked:<authority>`: what each CA's CRL must list.
//!
//! No document holds a birth date, a token, or credential key bytes.

use hpki_events::vocabulary::QrDelivery;
use hpki_events::{Event, RecordedEvent};
use serde_json::json;

use crate::{Body, Change, Doc, Projection, body};

pub struct Locator;

fn locate(kind: &str, id: impl std::fmt::Display, stream: &str) -> Change {
    let key = format!("{kind}:{id}");
    Change::Put {
        doc: Doc {
            list: kind.into(),
            sort_key: key.clone(),
            body: body!({ "subscriber": stream }),
        },
        key,
    }
}

impl Projection for Locator {
    fn name(&self) -> &'static str {
        "locator"
    }

    fn apply(&self, event: &RecordedEvent) -> Vec<Change> {
        let stream = event.stream.as_str();
        match &event.event {
            Event::QrIssued(e) => vec![
                locate("token", &e.token_sha256, stream),
                locate("qr", e.qr_id, stream),
            ],
            Event::CardCertificateIssued(e) => vec![locate("cert", &e.certificate.serial, stream)],
            Event::SecondCertificateIssued(e) => {
                vec![locate("cert", &e.certificate.serial, stream)]
            }
            Event::DeviceRegistered(e) => vec![locate("credential", &e.credential_id, stream)],
            Event::DeviceRemoved(e) => vec![Change::Delete {
                key: format!("credential:{}", e.credential_id),
            }],
            Event::ReissueRequested(e) => vec![locate("request", e.request_id, stream)],
            Event::LossReported(e) => vec![locate("case", e.case_id, stream)],
            Event::RevocationProposed(e) => vec![locate("proposal", e.proposal_id, stream)],
            _ => vec![],
        }
    }
}

pub struct Lifecycle;

fn patch(key: String, list: &str, merge: serde_json::Value) -> Change {
    Change::Patch {
        key,
        list: Some(list.to_owned()),
        merge,
    }
}

fn put(key: String, list: &str, sort_key: String, body: Body) -> Change {
    Change::Put {
        key,
        doc: Doc {
            list: list.to_owned(),
            sort_key,
            body,
        },
    }
}

impl Projection for Lifecycle {
    fn name(&self) -> &'static str {
        "lifecycle"
    }

    fn apply(&self, event: &RecordedEvent) -> Vec<Change> {
        let at = event.recorded_at_text.as_str();
        let by = event.metadata.actor.as_str();
        let stream = event.stream.as_str();
        let qr = |id: &uuid::Uuid| format!("qr/{id}");
        match &event.event {
            Event::QrIssued(e) => vec![put(
                qr(&e.qr_id),
                "qr:open",
                format!("{}/{}", e.last_usable_day, e.qr_id),
                body!({
                    "qr_id": e.qr_id,
                    "subscriber": stream,
                    "certificate_serial": e.certificate_serial,
                    "issued_on": e.issued_on.to_string(),
                    "last_usable_day": e.last_usable_day.to_string(),
                    "delivery": match &e.delivery {
                        QrDelivery::Print { .. } => "print",
                        QrDelivery::Email => "email",
                        QrDelivery::Screen => "screen",
                    },
                    "failures": 0,
                }),
            )],
            Event::PasswordFailed(e) => vec![Change::Patch {
                key: qr(&e.qr_id),
                list: None,
                merge: json!({ "failures": e.attempt, "last_failure_at": at }),
            }],
            Event::QrLocked(e) => {
                vec![patch(qr(&e.qr_id), "qr:locked", json!({ "locked_at": at }))]
            }
            Event::QrExpired(e) => {
                vec![patch(
                    qr(&e.qr_id),
                    "qr:expired",
                    json!({ "expired_at": at }),
                )]
            }
            Event::QrSuperseded(e) => vec![patch(
                qr(&e.qr_id),
                "qr:superseded",
                json!({ "superseded_by": e.by, "superseded_at": at }),
            )],
            Event::QrInvalidated(e) => {
                vec![patch(
                    qr(&e.qr_id),
                    "qr:revoked",
                    json!({ "revoked_at": at }),
                )]
            }
            Event::QrReminderDue(e) => vec![Change::Patch {
                key: qr(&e.qr_id),
                list: None,
                merge: json!({ "reminder_due_at": at }),
            }],
            Event::DeviceRegistered(e) => vec![patch(
                qr(&e.qr_id),
                "qr:registered",
                json!({ "registered_at": e.registered_at, "aaguid": e.aaguid }),
            )],
            Event::ReissueRequested(e) => vec![put(
                format!("reissue/{}", e.request_id),
                "reissue:open",
                format!("{at}/{}", e.request_id),
                body!({
                    "request_id": e.request_id,
                    "subscriber": stream,
                    "certificate_serial": e.certificate_serial,
                    "channel": e.channel,
                    "reason": e.reason,
                    "documents_checked": false,
                    "requested_at": at,
                    "requested_by": by,
                }),
            )],
            Event::ReissueDocumentsChecked(e) => vec![Change::Patch {
                key: format!("reissue/{}", e.request_id),
                list: None,
                merge: json!({ "documents_checked": true, "checked_by": by }),
            }],
            Event::ReissueApproved(e) => vec![patch(
                format!("reissue/{}", e.request_id),
                "reissue:approved",
                json!({ "qr_id": e.qr_id, "decided_at": at, "decided_by": by }),
            )],
            Event::ReissueRejected(e) => vec![patch(
                format!("reissue/{}", e.request_id),
                "reissue:rejected",
                json!({ "rejection": e.reason, "decided_at": at, "decided_by": by }),
            )],
            Event::LossReported(e) => vec![put(
                format!("case/{}", e.case_id),
                "case:open",
                format!("{at}/{}", e.case_id),
                body!({
                    "case_id": e.case_id,
                    "subscriber": stream,
                    "kind": e.kind,
                    "application_id": e.application_id,
                    "note": e.note,
                    "reported_at": at,
                    "reported_by": by,
                }),
            )],
            Event::LossCaseClosed(e) => vec![patch(
                format!("case/{}", e.case_id),
                "case:closed",
                json!({ "proposal_id": e.proposal_id, "closing_note": e.note,
                        "closed_at": at, "closed_by": by }),
            )],
            Event::RevocationProposed(e) => vec![put(
                format!("proposal/{}", e.proposal_id),
                "proposal:open",
                format!("{at}/{}", e.proposal_id),
                body!({
                    "proposal_id": e.proposal_id,
                    "subscriber": stream,
                    "case_id": e.case_id,
                    "application_id": e.application_id,
                    "scope": e.scope,
                    "reason": e.reason,
                    "card_serial": e.card_serial,
                    "second_serial": e.second_serial,
                    "credential_id": e.credential_id,
                    "decide_by": e.decide_by.to_string(),
                    "proposed_at": at,
                    "proposed_by": by,
                }),
            )],
            Event::RevocationApproved(e) => vec![patch(
                format!("proposal/{}", e.proposal_id),
                "proposal:approved",
                json!({ "decided_at": at, "decided_by": by }),
            )],
            Event::RevocationRejected(e) => vec![patch(
                format!("proposal/{}", e.proposal_id),
                "proposal:rejected",
                json!({ "rejection": e.reason, "decided_at": at, "decided_by": by }),
            )],
            Event::RevocationExpired(e) => vec![patch(
                format!("proposal/{}", e.proposal_id),
                "proposal:expired",
                json!({ "expired_at": at }),
            )],
            Event::CertificateRevoked(e) => vec![put(
                format!("revoked/{}", e.serial),
                &format!("revoked:{}", e.authority),
                format!("{}/{}", e.revoked_at, e.serial),
                body!({
                    "serial": e.serial,
                    "authority": e.authority,
                    "kind": e.kind,
                    "reason": e.reason,
                    "reason_code": e.reason.code(),
                    "revoked_at": e.revoked_at,
                    "subscriber": stream,
                    "proposal_id": e.proposal_id,
                }),
            )],
            _ => vec![],
        }
    }
}
