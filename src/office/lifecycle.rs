//! After issuance: the QR's password and lockout, expiry and reminders, the phone's
//! credential, and each subscriber's timeline. Rules chosen are in `docs/lifecycle.md`.

use std::collections::BTreeSet;

use hpki_events::envelope::format_time;
use hpki_events::vocabulary::{
    DeviceLabelled, DeviceRegistered, PasswordAccepted, PasswordFailed, QrExpired, QrLocked,
    QrReminderDue, RevocationExpired,
};
use hpki_events::{Actor, Event};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Office;
use super::state::{Decision, Qr, QrStatus, Subscriber};
use crate::problem::{OfficeError, Problem};

/// The fifth wrong password locks the QR.
pub const LOCK_AFTER: u8 = 5;

/// What one evaluated password attempt came to. Attempts that are not evaluated (malformed
/// input, a QR that cannot be used) are errors instead, and count for nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PasswordOutcome {
    /// Go on to sign-in with this subscriber ID. `registered`: a phone was already registered
    /// through this QR, so the portal offers Sign in instead of Register.
    Accepted {
        subscriber_id: String,
        authority: String,
        registered: bool,
    },
    Wrong {
        attempts_left: u8,
    },
    /// That was the fifth wrong password: the QR is locked now.
    Locked,
}

/// What the expiry job did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ExpiryReport {
    pub qrs_expired: usize,
    pub reminders_due: usize,
    pub proposals_expired: usize,
}

/// A registered phone.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeviceReport {
    pub certificate_serial: String,
    pub subscriber_id: String,
}

/// One event of a subscriber's history, as staff read it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub version: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `2026-11-22 09:00:00 JST`.
    pub at_jst: String,
    /// RFC 3339, UTC.
    pub at: String,
    pub by: String,
    /// The event's fields, without sealed data, token hashes or certificate bytes.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// A QR as the portal's landing page sees it.
#[derive(Debug, Clone)]
pub struct Landing {
    pub qr_id: Uuid,
    pub authority: String,
    pub subscriber_id: String,
    /// Why it cannot be used now, if it cannot.
    pub refused: Option<Problem>,
    /// The phone this QR registered, if it did.
    pub device: Option<crate::office::state::Device>,
}

pub fn portal() -> Actor {
    Actor::system("portal")
}

fn unknown_qr() -> Problem {
    Problem::new(
        404,
        "unknown_qr",
        "この QR コード（URL）は無効です。お手元の QR コードをお確かめください",
        "this QR code (URL) is not valid; check the QR code you have",
    )
    .field("token")
}

impl Office {
    /// The stream and id of the QR a token names. A token that is not 43 base64url characters
    /// is not looked up.
    pub(super) async fn qr_by_token(&self, token: &str) -> Result<(String, Uuid), OfficeError> {
        let well_formed = token.len() == 43
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(unknown_qr().into());
        }
        let hash = crate::qr::token_hash(token);
        let stream = self.locate("token", &hash).await?.ok_or_else(unknown_qr)?;
        let (_, subscriber) = self.subscriber(&stream).await?;
        let qr = subscriber
            .qrs
            .iter()
            .find(|q| q.issued.token_sha256 == hash)
            .ok_or_else(unknown_qr)?;
        Ok((stream, qr.issued.qr_id))
    }

    /// Refuses a QR that cannot be used today, each way with its own code.
    pub(super) fn usable(&self, subscriber: &Subscriber, qr: &Qr) -> Result<(), Problem> {
        let (status, code, ja, en) = match qr.status_on(self.today()) {
            QrStatus::Open => {
                if subscriber.revoked.contains(&qr.issued.certificate_serial) {
                    (
                        410,
                        "qr_revoked",
                        "証明書が失効しているため",
                        "its certificate was revoked",
                    )
                } else if qr.registered
                    && subscriber
                        .device_of(&qr.issued.certificate_serial)
                        .is_none_or(|d| d.qr_id != qr.issued.qr_id)
                {
                    (
                        410,
                        "qr_used",
                        "この QR コードで登録した端末はすでに削除されたため",
                        "the phone registered with it has since been removed",
                    )
                } else {
                    return Ok(());
                }
            }
            QrStatus::Locked => (
                423,
                "qr_locked",
                "パスワードを5回間違えたためロックされています",
                "it is locked after five wrong passwords",
            ),
            QrStatus::Expired => (
                410,
                "qr_expired",
                "有効期限（発行日から3か月）を過ぎたため",
                "its three months have passed",
            ),
            QrStatus::Superseded => (
                410,
                "qr_superseded",
                "再発行により新しい QR コードに置き換えられたため",
                "a reissued QR code replaced it",
            ),
            QrStatus::Invalidated => (
                410,
                "qr_revoked",
                "証明書が失効しているため",
                "its certificate was revoked",
            ),
        };
        Err(Problem::new(
            status,
            code,
            format!("この QR コードは使えません（{ja}）"),
            format!("this QR code can no longer be used: {en}"),
        )
        .field("token"))
    }

    /// What the portal's landing page needs of a token: the QR's authority (for the help a
    /// refusal page gives, even when the QR cannot be used), and whether it can be used. Records
    /// nothing. An unknown token is `Err` (nothing about anyone is revealed).
    pub async fn landing(&self, token: &str) -> Result<Landing, OfficeError> {
        let (stream, qr_id) = self.qr_by_token(token).await?;
        let (_, subscriber) = self.subscriber(&stream).await?;
        let qr = subscriber.qr(qr_id).ok_or_else(unknown_qr)?;
        let application = subscriber
            .application(qr.issued.application_id)
            .ok_or_else(|| anyhow::anyhow!("QR {qr_id} names no application"))?;
        let device = subscriber
            .device_of(&qr.issued.certificate_serial)
            .filter(|d| d.qr_id == qr_id)
            .cloned();
        Ok(Landing {
            qr_id,
            authority: application.received.authority.clone(),
            subscriber_id: application.received.subscriber_id.clone(),
            refused: self.usable(&subscriber, qr).err(),
            device,
        })
    }

    /// The registration portal's password check: `entered` is the birth date as 8 digits
    /// (full-width digits are read as ASCII). Input that cannot be 8 digits is refused without
    /// counting. Attempts on one QR are decided one at a time, so concurrent wrong attempts
    /// record exactly five failures and one lock, and nothing after the lock is evaluated.
    pub async fn check_password(
        &self,
        token: &str,
        entered: &str,
    ) -> Result<PasswordOutcome, OfficeError> {
        let (stream, qr_id) = self.qr_by_token(token).await?;
        let Some(password) = crate::qr::read_password(entered) else {
            return Err(Problem::new(
                422,
                "password_format",
                "パスワードは数字8桁で入力してください",
                "enter the password as 8 digits",
            )
            .field("password")
            .into());
        };
        self.decide_on(&stream, &portal(), |subscriber| {
            let qr = subscriber.qr(qr_id).ok_or_else(unknown_qr)?;
            self.usable(&subscriber, qr)?;
            let application = subscriber
                .application(qr.issued.application_id)
                .ok_or_else(|| anyhow::anyhow!("QR {qr_id} names no application"))?;
            let right = self.birth_date_is(&application.received, &password)?;
            let (events, outcome): (Vec<Event>, _) = if right {
                (
                    vec![PasswordAccepted { qr_id }.into()],
                    PasswordOutcome::Accepted {
                        subscriber_id: application.received.subscriber_id.clone(),
                        authority: application.received.authority.clone(),
                        registered: qr.registered,
                    },
                )
            } else {
                let attempt = qr.failures + 1;
                let failed = PasswordFailed { qr_id, attempt }.into();
                if attempt >= LOCK_AFTER {
                    (
                        vec![failed, QrLocked { qr_id }.into()],
                        PasswordOutcome::Locked,
                    )
                } else {
                    (
                        vec![failed],
                        PasswordOutcome::Wrong {
                            attempts_left: LOCK_AFTER - attempt,
                        },
                    )
                }
            };
            Ok((events, outcome))
        })
        .await
    }

    /// Records the phone the portal registered through a QR: one active credential per second
    /// certificate, one certificate per credential. The QR must have had its password right.
    pub async fn register_device(
        &self,
        token: &str,
        credential_id: &str,
        public_key: &str,
        aaguid: Uuid,
        registered_at: Option<OffsetDateTime>,
        passkey: Option<String>,
    ) -> Result<DeviceReport, OfficeError> {
        let (stream, qr_id) = self.qr_by_token(token).await?;
        check_base64url(credential_id, "credential_id", 16, 1023)?;
        check_base64url(public_key, "public_key", 16, 2048)?;
        if let Some(other) = self.locate("credential", credential_id).await? {
            let (_, holder) = self.subscriber(&other).await?;
            if holder
                .devices
                .iter()
                .any(|d| d.credential_id == credential_id)
            {
                return Err(Problem::new(
                    409,
                    "credential_in_use",
                    "この端末の認証情報はすでに別の証明書に登録されています",
                    "this credential is already registered for another certificate",
                )
                .field("credential_id")
                .into());
            }
        }
        let registered_at = registered_at.unwrap_or_else(|| self.inner.clock.now());
        self.decide_on(&stream, &portal(), |subscriber| {
            let qr = subscriber.qr(qr_id).ok_or_else(unknown_qr)?;
            self.usable(&subscriber, qr)?;
            if !qr.password_accepted {
                return Err(Problem::new(
                    409,
                    "password_first",
                    "先にパスワード（生年月日）を入力してください",
                    "the QR's password has not been entered yet",
                )
                .into());
            }
            let serial = qr.issued.certificate_serial.clone();
            if subscriber.device_of(&serial).is_some() {
                return Err(Problem::new(
                    409,
                    "device_already_registered",
                    "この証明書にはすでに端末が登録されています。機種変更の手続きをしてください",
                    "a phone is already registered for this certificate; use the device-change procedure",
                )
                .into());
            }
            let application = subscriber
                .application(qr.issued.application_id)
                .ok_or_else(|| anyhow::anyhow!("QR {qr_id} names no application"))?;
            let report = DeviceReport {
                certificate_serial: serial.clone(),
                subscriber_id: application.received.subscriber_id.clone(),
            };
            let event = DeviceRegistered {
                certificate_serial: serial,
                qr_id,
                credential_id: credential_id.to_owned(),
                public_key: public_key.to_owned(),
                aaguid,
                registered_at: format_time(registered_at),
                passkey: passkey.clone(),
            };
            Ok((vec![event.into()], report))
        })
        .await
    }

    /// Records the name the subscriber gave the phone's key on the label page: at most 64
    /// characters, no control characters, surrounding spaces trimmed. The QR must have
    /// registered the phone that is bound now.
    pub async fn label_device(&self, token: &str, label: &str) -> Result<(), OfficeError> {
        let label = label.trim();
        if label.chars().count() > 64 || label.chars().any(char::is_control) {
            return Err(Problem::new(
                422,
                "bad_label",
                "ラベルは64文字以内で、制御文字を含めないでください",
                "a label is at most 64 characters, without control characters",
            )
            .field("label")
            .into());
        }
        let (stream, qr_id) = self.qr_by_token(token).await?;
        self.decide_on(&stream, &portal(), |subscriber| {
            let qr = subscriber.qr(qr_id).ok_or_else(unknown_qr)?;
            let device = subscriber
                .device_of(&qr.issued.certificate_serial)
                .filter(|d| d.qr_id == qr_id)
                .ok_or_else(|| {
                    Problem::new(
                        409,
                        "no_device",
                        "この QR コードで登録した端末がありません",
                        "no phone is registered through this QR code",
                    )
                })?;
            let event = DeviceLabelled {
                certificate_serial: device.certificate_serial.clone(),
                credential_id: device.credential_id.clone(),
                label: label.to_owned(),
            };
            Ok((vec![event.into()], ()))
        })
        .await
    }

    /// The daily job: marks QRs past their last usable day expired, queues a reminder for QRs
    /// still unused `reminder_days` before it, and expires undecided revocation proposals.
    /// Running it twice on one day adds nothing.
    pub async fn run_expiry(&self) -> Result<ExpiryReport, OfficeError> {
        crate::projection_runner::catch_up(self.store(), &hpki_projections::Lifecycle).await?;
        let today = self.today();
        let remind_from = today + time::Duration::days(self.inner.lifecycle.reminder_days);
        let remind_until = remind_from.to_string();
        let mut streams = BTreeSet::new();
        // Open QRs in order of their last usable day: stop at the first not yet due.
        for (_, doc) in self
            .store()
            .docs("lifecycle", Some("qr:open"), i64::MAX)
            .await?
        {
            let last = doc.body["last_usable_day"].as_str().unwrap_or_default();
            if last > remind_until.as_str() {
                break;
            }
            streams.insert(
                doc.body["subscriber"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        for (_, doc) in self
            .store()
            .docs("lifecycle", Some("proposal:open"), i64::MAX)
            .await?
        {
            streams.insert(
                doc.body["subscriber"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        let mut report = ExpiryReport::default();
        let actor = Actor::system("expiry");
        for stream in streams.into_iter().filter(|s| !s.is_empty()) {
            let counts = self
                .decide_on(&stream, &actor, |subscriber| {
                    let mut events: Vec<Event> = Vec::new();
                    let mut counts = ExpiryReport::default();
                    for qr in subscriber.qrs.iter().filter(|q| q.status == QrStatus::Open) {
                        let qr_id = qr.issued.qr_id;
                        if today > qr.issued.last_usable_day {
                            events.push(QrExpired { qr_id }.into());
                            counts.qrs_expired += 1;
                        } else if !qr.registered
                            && !qr.reminded
                            && remind_from >= qr.issued.last_usable_day
                        {
                            events.push(
                                QrReminderDue {
                                    qr_id,
                                    last_usable_day: qr.issued.last_usable_day,
                                }
                                .into(),
                            );
                            counts.reminders_due += 1;
                        }
                    }
                    for proposal in &subscriber.proposals {
                        if proposal.decision == Decision::Open
                            && today > proposal.proposed.decide_by
                        {
                            events.push(
                                RevocationExpired {
                                    proposal_id: proposal.proposed.proposal_id,
                                }
                                .into(),
                            );
                            counts.proposals_expired += 1;
                        }
                    }
                    Ok((events, counts))
                })
                .await?;
            report.qrs_expired += counts.qrs_expired;
            report.reminders_due += counts.reminders_due;
            report.proposals_expired += counts.proposals_expired;
        }
        Ok(report)
    }

    /// Every event of one subscriber stream, oldest first, with who and when (JST).
    pub async fn timeline(&self, stream: &str) -> Result<Vec<TimelineEntry>, OfficeError> {
        if !stream.starts_with("subscriber-") {
            return Err(Problem::not_found("資格者", "the subscriber").into());
        }
        let events = self.store().read_stream_after(stream, 0).await?;
        if events.is_empty() {
            return Err(Problem::not_found("資格者", "the subscriber").into());
        }
        events
            .into_iter()
            .map(|e| {
                let mut payload = e
                    .event
                    .to_payload()
                    .map_err(|err| OfficeError::Internal(err.into()))?;
                strip_secrets(&mut payload);
                Ok(TimelineEntry {
                    version: e.version,
                    event_type: e.event.type_name().to_owned(),
                    at_jst: crate::clock::show_jst(e.recorded_at),
                    at: format_time(e.recorded_at),
                    by: e.metadata.actor.as_str().to_owned(),
                    event: payload,
                })
            })
            .collect()
    }
}

/// Drops what a timeline never shows: sealed data, token hashes, certificate and key bytes.
fn strip_secrets(value: &mut serde_json::Value) {
    if let Some(object) = value.as_object_mut() {
        for field in [
            "birth_date",
            "token_sha256",
            "der",
            "public_key",
            "passkey",
            "challenge_sha256",
        ] {
            object.remove(field);
        }
        for (_, inner) in object.iter_mut() {
            strip_secrets(inner);
        }
    }
}

fn check_base64url(text: &str, field: &str, min: usize, max: usize) -> Result<(), Problem> {
    let ok = (min..=max).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            422,
            "bad_credential",
            format!("{field} は {min}〜{max} 文字の base64url にしてください"),
            format!("{field} must be base64url, {min} to {max} characters"),
        )
        .field(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timelines_show_no_sealed_or_secret_fields() {
        let mut payload = json!({
            "birth_date": {"kek": "k", "data": "x"},
            "token_sha256": "ab",
            "certificate": {"serial": "01", "der": "MII"},
            "name_kanji": "山田",
        });
        strip_secrets(&mut payload);
        assert_eq!(
            payload,
            json!({"certificate": {"serial": "01"}, "name_kanji": "山田"})
        );
    }

    #[test]
    fn credential_ids_must_be_base64url_of_a_sane_length() {
        assert!(check_base64url("AAAAAAAAAAAAAAAAAAAA", "credential_id", 16, 1023).is_ok());
        let short = check_base64url("AAAA", "credential_id", 16, 1023).unwrap_err();
        assert_eq!(short.field.as_deref(), Some("credential_id"));
        assert!(check_base64url("AAAAAAAAAAAAAAAAAA+/", "credential_id", 16, 1023).is_err());
    }
}
