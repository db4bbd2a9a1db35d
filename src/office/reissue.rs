//! Reissue of the initial-registration QR, by the channels each authority offers, and device
//! change (a reissue whose approval also removes the registered credential). Every reissue
//! supersedes every earlier live QR of the certificate.

use hpki_events::vocabulary::{
    DeviceRemoval, DeviceRemoved, QrDelivery, QrSuperseded, ReissueApproved, ReissueChannel,
    ReissueDocumentsChecked, ReissueReason, ReissueRejected, ReissueRequested,
};
use hpki_events::{Actor, Event};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::{Signer, Verifier};
use serde::Serialize;
use time::Date;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Office;
use super::lifecycle::portal;
use super::state::{Application, Card, Decision, QrStatus, Subscriber};
use crate::problem::{OfficeError, Problem};

/// What an approved reissue issued.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Reissued {
    pub request_id: Uuid,
    pub qr_id: Uuid,
    /// `print`, `email` or `screen`.
    pub delivery: String,
    #[schema(value_type = String)]
    pub last_usable_day: Date,
    /// Only for on-screen reissue, shown to the subscriber at once. Print and e-mail
    /// reissues leave the URL to the print and mail processors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_url: Option<String>,
}

/// A challenge for on-screen reissue: sign `challenge` (its UTF-8 bytes) with the IC card's
/// key, RSA PKCS#1 v1.5 with SHA-256.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Challenge {
    pub challenge: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

fn not_found(what_ja: &str, what_en: &str) -> Problem {
    Problem::not_found(what_ja, what_en)
}

fn conflict(code: &str, ja: &str, en: &str) -> OfficeError {
    Problem::new(409, code, ja, en).into()
}

impl Office {
    /// The subscriber stream and application that issued the certificate `serial`.
    pub(super) async fn by_certificate(
        &self,
        serial: &str,
    ) -> Result<(String, i64, std::sync::Arc<Subscriber>, Application), OfficeError> {
        let serial = serial.trim().to_ascii_uppercase();
        let missing = || not_found("証明書", "the certificate").field("certificate_serial");
        let stream = self.locate("cert", &serial).await?.ok_or_else(missing)?;
        let (version, subscriber) = self.subscriber(&stream).await?;
        let application = subscriber
            .application_of(&serial)
            .cloned()
            .ok_or_else(missing)?;
        Ok((stream, version, subscriber, application))
    }

    /// Records a reissue request (e-mail or web form) for a second certificate.
    pub async fn request_reissue(
        &self,
        certificate_serial: &str,
        channel: ReissueChannel,
        reason: ReissueReason,
        actor: &Actor,
    ) -> Result<Uuid, OfficeError> {
        if channel == ReissueChannel::OnScreen {
            return Err(Problem::new(
                422,
                "channel_not_here",
                "画面での再発行は IC カードでの署名で行います",
                "on-screen reissue goes through the signed challenge",
            )
            .field("channel")
            .into());
        }
        let serial = certificate_serial.trim().to_ascii_uppercase();
        let (stream, ..) = self.by_certificate(&serial).await?;
        self.decide_on(&stream, actor, |subscriber| {
            let application = subscriber
                .application_of(&serial)
                .ok_or_else(|| not_found("証明書", "the certificate"))?;
            self.check_reissuable(&subscriber, application, &serial, channel)?;
            let request_id = Uuid::now_v7();
            let event = ReissueRequested {
                request_id,
                certificate_serial: serial.clone(),
                channel,
                reason,
                challenge_sha256: None,
            };
            Ok((vec![event.into()], request_id))
        })
        .await
    }

    /// The subscriber's own reissue form (web form): they name themselves by authority,
    /// registry number and birth date. When these match an issued second certificate that
    /// can be reissued, a `web_form` request is recorded for staff to approve. Whether they
    /// matched is never said (the answer is the same either way), so the form cannot be used
    /// to test someone's birth date; the per-address rate limit applies to it.
    pub async fn request_reissue_by_form(
        &self,
        authority_id: &str,
        registry_number: &str,
        birth_date: &str,
        reason: ReissueReason,
    ) -> Result<(), OfficeError> {
        let authority = self.authority(authority_id)?;
        if !authority
            .reissue_channels
            .contains(&ReissueChannel::WebForm)
        {
            return Err(Problem::new(
                422,
                "channel_not_offered",
                format!(
                    "{}はウェブフォームでの再発行を受け付けていません",
                    authority.name_ja
                ),
                format!("{} does not offer reissue by web form", authority.name_en),
            )
            .field("authority")
            .into());
        }
        let registry = crate::intake::ascii_digits(registry_number.trim());
        let [min, max] = authority.registry_digits;
        if !(min..=max).contains(&registry.len()) || !registry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Problem::new(
                422,
                "bad_registry_number",
                format!("登録番号は{min}〜{max}桁の数字です"),
                format!("the registry number is {min} to {max} digits"),
            )
            .field("registry_number")
            .into());
        }
        let Some(entered) = crate::qr::read_password(&birth_date.replace('-', "")) else {
            return Err(Problem::new(
                422,
                "bad_birth_date",
                "生年月日は数字8桁で入力してください",
                "enter the birth date as 8 digits",
            )
            .field("birth_date")
            .into());
        };
        let stream = super::subscriber_stream(authority_id, &registry);
        let (_, subscriber) = self.subscriber(&stream).await?;
        let Some(application) = subscriber
            .applications
            .iter()
            .rev()
            .find(|a| a.second_serial.is_some())
        else {
            return Ok(());
        };
        if !self.birth_date_is(&application.received, &entered)? {
            return Ok(());
        }
        let serial = application.second_serial.clone().unwrap_or_default();
        match self
            .request_reissue(&serial, ReissueChannel::WebForm, reason, &portal())
            .await
        {
            Ok(_) | Err(OfficeError::Problem(_)) => Ok(()),
            Err(internal) => Err(internal),
        }
    }

    fn check_reissuable(
        &self,
        subscriber: &Subscriber,
        application: &Application,
        serial: &str,
        channel: ReissueChannel,
    ) -> Result<(), OfficeError> {
        if application.second_serial.as_deref() != Some(serial) {
            return Err(Problem::new(
                422,
                "not_a_second_certificate",
                "QR コードはセカンド電子証明書に対して発行します",
                "a QR is reissued for a second certificate",
            )
            .field("certificate_serial")
            .into());
        }
        if subscriber.revoked.contains(serial) {
            return Err(conflict(
                "certificate_revoked",
                "この証明書は失効しているため再発行できません",
                "the certificate is revoked; nothing can be reissued for it",
            ));
        }
        let authority = self.authority(&application.received.authority)?;
        if !authority.reissue_channels.contains(&channel) {
            return Err(Problem::new(
                422,
                "channel_not_offered",
                format!(
                    "{}はこの方法での再発行を受け付けていません",
                    authority.name_ja
                ),
                format!("{} does not offer reissue this way", authority.name_en),
            )
            .field("channel")
            .into());
        }
        let pending = subscriber
            .reissues
            .iter()
            .any(|r| r.decision == Decision::Open && r.requested.certificate_serial == serial);
        if pending {
            return Err(conflict(
                "reissue_pending",
                "この証明書の再発行申請はすでに受け付けています",
                "a reissue request for this certificate is already open",
            ));
        }
        Ok(())
    }

    async fn reissue_step(
        &self,
        request_id: Uuid,
        actor: &Actor,
        decide: impl Fn(&Subscriber) -> Result<(Vec<Event>, Option<Reissued>), OfficeError>,
    ) -> Result<Option<Reissued>, OfficeError> {
        let stream = self
            .locate("request", &request_id.to_string())
            .await?
            .ok_or_else(|| not_found("再発行申請", "the reissue request"))?;
        self.decide_on(&stream, actor, decide).await
    }

    pub async fn check_reissue_documents(
        &self,
        request_id: Uuid,
        actor: &Actor,
    ) -> Result<(), OfficeError> {
        self.reissue_step(request_id, actor, |subscriber| {
            open_request(subscriber, request_id)?;
            Ok((vec![ReissueDocumentsChecked { request_id }.into()], None))
        })
        .await
        .map(|_| ())
    }

    pub async fn reject_reissue(
        &self,
        request_id: Uuid,
        reason: &str,
        actor: &Actor,
    ) -> Result<(), OfficeError> {
        let reason = super::applications::reason_text(reason)?;
        self.reissue_step(request_id, actor, |subscriber| {
            open_request(subscriber, request_id)?;
            let event = ReissueRejected {
                request_id,
                reason: reason.clone(),
            };
            Ok((vec![event.into()], None))
        })
        .await
        .map(|_| ())
    }

    /// Approves a reissue: a new QR by the request's channel (printed for a web form, the URL
    /// by e-mail for an e-mail request, whose documents must have been checked first).
    pub async fn approve_reissue(
        &self,
        request_id: Uuid,
        actor: &Actor,
    ) -> Result<Reissued, OfficeError> {
        let done = self
            .reissue_step(request_id, actor, |subscriber| {
                let request = open_request(subscriber, request_id)?;
                if request.requested.channel == ReissueChannel::Email && !request.documents_checked
                {
                    return Err(conflict(
                        "documents_not_checked",
                        "書類の確認が済んでいません",
                        "the request's documents have not been checked",
                    ));
                }
                let serial = &request.requested.certificate_serial;
                if subscriber.revoked.contains(serial) {
                    return Err(conflict(
                        "certificate_revoked",
                        "この証明書は失効しているため再発行できません",
                        "the certificate is revoked; nothing can be reissued for it",
                    ));
                }
                let (events, reissued) = self.reissue_events(subscriber, &request.requested)?;
                Ok((events, Some(reissued)))
            })
            .await?;
        done.ok_or_else(|| anyhow::anyhow!("an approval always reissues").into())
    }

    /// The approval, the new QR, the supersession of every earlier live QR of the certificate
    /// and, for a device change, the removal of the registered credential.
    fn reissue_events(
        &self,
        subscriber: &Subscriber,
        request: &ReissueRequested,
    ) -> Result<(Vec<Event>, Reissued), OfficeError> {
        let serial = &request.certificate_serial;
        let application = subscriber
            .application_of(serial)
            .ok_or_else(|| not_found("証明書", "the certificate"))?;
        let mut qr = self.new_qr(application, serial, false);
        qr.delivery = match request.channel {
            ReissueChannel::Email => QrDelivery::Email,
            ReissueChannel::WebForm => QrDelivery::Print {
                destination: application.received.delivery.clone(),
            },
            ReissueChannel::OnScreen => QrDelivery::Screen,
        };
        let reissued = Reissued {
            request_id: request.request_id,
            qr_id: qr.qr_id,
            delivery: match request.channel {
                ReissueChannel::Email => "email",
                ReissueChannel::WebForm => "print",
                ReissueChannel::OnScreen => "screen",
            }
            .into(),
            last_usable_day: qr.last_usable_day,
            registration_url: (request.channel == ReissueChannel::OnScreen)
                .then(|| self.registration_url(qr.qr_id)),
        };
        let mut events: Vec<Event> = vec![
            ReissueApproved {
                request_id: request.request_id,
                qr_id: qr.qr_id,
            }
            .into(),
        ];
        for old in subscriber.qrs.iter().filter(|q| {
            q.issued.certificate_serial == *serial
                && !matches!(q.status, QrStatus::Superseded | QrStatus::Invalidated)
        }) {
            events.push(
                QrSuperseded {
                    qr_id: old.issued.qr_id,
                    by: qr.qr_id,
                }
                .into(),
            );
        }
        if request.reason == ReissueReason::DeviceChange {
            if let Some(device) = subscriber.device_of(serial) {
                events.push(
                    DeviceRemoved {
                        certificate_serial: serial.clone(),
                        credential_id: device.credential_id.clone(),
                        reason: DeviceRemoval::DeviceChange,
                    }
                    .into(),
                );
            }
        }
        events.push(qr.into());
        Ok((events, reissued))
    }

    /// A challenge for on-screen reissue, bound to the card certificate and valid for
    /// `challenge_minutes`. Stateless: it carries its own expiry under an HMAC of the
    /// server's QR secret.
    pub async fn reissue_challenge(&self, card_serial: &str) -> Result<Challenge, OfficeError> {
        let serial = card_serial.trim().to_ascii_uppercase();
        let (_, _, _, application) = self.by_certificate(&serial).await?;
        if !matches!(&application.card, Card::Issued { serial: s, .. } if *s == serial) {
            return Err(not_a_card().into());
        }
        let expires = self.inner.clock.now()
            + time::Duration::minutes(self.inner.lifecycle.challenge_minutes);
        let nonce = hex::encode(crate::secrets::Secret::random().bytes());
        let body = format!(
            "hpki-reissue/1.{serial}.{}.{nonce}",
            expires.unix_timestamp()
        );
        let mac = self.challenge_mac(&body);
        Ok(Challenge {
            challenge: format!("{body}.{mac}"),
            expires_at: hpki_events::envelope::format_time(expires),
        })
    }

    fn challenge_mac(&self, body: &str) -> String {
        let key = PKey::hmac(self.inner.qr_secret.bytes()).expect("an HMAC key from any bytes");
        let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("HMAC-SHA256");
        signer
            .update(b"hpki-reissue-challenge/1\n")
            .expect("hashing");
        signer.update(body.as_bytes()).expect("hashing");
        hex::encode(signer.sign_to_vec().expect("HMAC-SHA256"))
    }

    /// On-screen reissue: the subscriber signed our challenge with the IC card's key; if the
    /// signature verifies against the card certificate on record, a new QR is issued at once
    /// and its URL returned for display. Each challenge works once.
    pub async fn reissue_on_screen(
        &self,
        card_serial: &str,
        challenge: &str,
        signature_base64: &str,
        reason: ReissueReason,
    ) -> Result<Reissued, OfficeError> {
        let serial = card_serial.trim().to_ascii_uppercase();
        let (stream, _, _, application) = self.by_certificate(&serial).await?;
        if !matches!(&application.card, Card::Issued { serial: s, .. } if *s == serial) {
            return Err(not_a_card().into());
        }
        self.check_challenge(challenge, &serial)?;
        let signature =
            openssl::base64::decode_block(signature_base64.trim()).map_err(|_| bad_signature())?;
        let der = self.certificate_der(&stream, &serial).await?;
        let certificate =
            openssl::x509::X509::from_der(&der).map_err(|e| OfficeError::Internal(e.into()))?;
        let key = certificate
            .public_key()
            .map_err(|e| OfficeError::Internal(e.into()))?;
        let mut verifier = Verifier::new(MessageDigest::sha256(), &key)
            .map_err(|e| OfficeError::Internal(e.into()))?;
        let valid = verifier
            .verify_oneshot(&signature, challenge.as_bytes())
            .unwrap_or(false);
        if !valid {
            return Err(bad_signature().into());
        }
        let challenge_sha256 = hex::encode(openssl::sha::sha256(challenge.as_bytes()));
        self.decide_on(&stream, &portal(), |subscriber| {
            if subscriber.used_challenges.contains(&challenge_sha256) {
                return Err(Problem::new(
                    409,
                    "challenge_used",
                    "このチャレンジは使用済みです。最初からやり直してください",
                    "this challenge was already used; start again",
                )
                .field("challenge")
                .into());
            }
            if subscriber.revoked.contains(&serial) {
                return Err(conflict(
                    "certificate_revoked",
                    "IC カードの証明書が失効しています",
                    "the card certificate is revoked",
                ));
            }
            let application = subscriber
                .application_of(&serial)
                .ok_or_else(|| not_found("証明書", "the certificate"))?;
            let second = application
                .second_serial
                .clone()
                .ok_or_else(|| anyhow::anyhow!("an issued card without a second certificate"))?;
            self.check_reissuable(&subscriber, application, &second, ReissueChannel::OnScreen)?;
            let request = ReissueRequested {
                request_id: Uuid::now_v7(),
                certificate_serial: second,
                channel: ReissueChannel::OnScreen,
                reason,
                challenge_sha256: Some(challenge_sha256.clone()),
            };
            let (mut events, reissued) = self.reissue_events(&subscriber, &request)?;
            events.insert(0, request.into());
            Ok((events, reissued))
        })
        .await
    }

    fn check_challenge(&self, challenge: &str, serial: &str) -> Result<(), Problem> {
        let invalid = || {
            Problem::new(
                422,
                "bad_challenge",
                "チャレンジが正しくないか期限切れです。最初からやり直してください",
                "the challenge is not ours, not for this card, or expired; start again",
            )
            .field("challenge")
        };
        let (body, mac) = challenge.rsplit_once('.').ok_or_else(invalid)?;
        let expected = self.challenge_mac(body);
        if mac.len() != expected.len() || !openssl::memcmp::eq(mac.as_bytes(), expected.as_bytes())
        {
            return Err(invalid());
        }
        let parts: Vec<&str> = body.split('.').collect();
        let [_, for_serial, expires, _] = parts[..] else {
            return Err(invalid());
        };
        let expires: i64 = expires.parse().map_err(|_| invalid())?;
        if for_serial != serial || self.inner.clock.now().unix_timestamp() > expires {
            return Err(invalid());
        }
        Ok(())
    }

    /// A certificate's DER, from the subscriber's own stream.
    async fn certificate_der(&self, stream: &str, serial: &str) -> Result<Vec<u8>, OfficeError> {
        for event in self.store().read_stream_after(stream, 0).await? {
            let certificate = match &event.event {
                Event::CardCertificateIssued(e) => &e.certificate,
                Event::SecondCertificateIssued(e) => &e.certificate,
                _ => continue,
            };
            if certificate.serial == serial {
                return openssl::base64::decode_block(&certificate.der)
                    .map_err(|e| OfficeError::Internal(e.into()));
            }
        }
        Err(not_found("証明書", "the certificate").into())
    }
}

fn open_request(
    subscriber: &Subscriber,
    request_id: Uuid,
) -> Result<&super::state::Reissue, OfficeError> {
    let request = subscriber
        .reissue(request_id)
        .ok_or_else(|| not_found("再発行申請", "the reissue request"))?;
    if request.decision != Decision::Open {
        return Err(conflict(
            "reissue_decided",
            "この再発行申請はすでに決定済みです",
            "this reissue request was already decided",
        ));
    }
    Ok(request)
}

fn not_a_card() -> Problem {
    Problem::new(
        422,
        "not_a_card_certificate",
        "IC カードの証明書のシリアル番号を指定してください",
        "give the serial of an IC card certificate",
    )
    .field("card_certificate_serial")
}

fn bad_signature() -> Problem {
    Problem::new(
        422,
        "bad_signature",
        "IC カードによる署名を検証できませんでした",
        "the signature does not verify against the IC card certificate",
    )
    .field("signature")
}
