//! What a mail template may say, read from the subscriber's state as it stood when the event
//! that calls for the mail was recorded.

use hpki_events::vocabulary::ReissueChannel;
use hpki_events::{Event, RecordedEvent};
use serde_json::{Value, json};
use time::Date;

use crate::office::Office;
use crate::office::state::{Application, Subscriber};

/// `2026年11月22日`.
pub fn japanese_date(date: Date) -> String {
    format!(
        "{}年{}月{}日",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// The recipient and the template's variables for `cause`. Every template gets `name`,
/// `subscriber_id`, `authority`, `contact` and `reissue_routes`; some get more (`reason`,
/// `url`, `last_usable_day`, `serial`, `certificate`, `revoked_at`).
pub fn context(
    office: &Office,
    subscriber: &Subscriber,
    cause: &RecordedEvent,
) -> Result<(String, Value), String> {
    let qr_application = |qr_id| {
        let qr = subscriber.qr(qr_id).ok_or("the QR is not on the stream")?;
        let application = subscriber
            .application(qr.issued.application_id)
            .ok_or("the QR's application is not on the stream")?;
        Ok::<_, String>((qr, application))
    };
    let mut extra = json!({});
    let application: &Application = match &cause.event {
        Event::ApplicationReceived(e) => by_id(subscriber, e.application_id)?,
        Event::ApplicationApproved(e) => by_id(subscriber, e.application_id)?,
        Event::CardDeferred(e) => by_id(subscriber, e.application_id)?,
        Event::ApplicationRejected(e) => {
            extra = json!({ "reason": e.reason });
            by_id(subscriber, e.application_id)?
        }
        Event::QrIssued(e) => {
            extra = json!({
                // The bearer URL goes into the mail body only: never into the log or a trace.
                "url": office.registration_url(e.qr_id),
                "last_usable_day": japanese_date(e.last_usable_day),
            });
            qr_application(e.qr_id)?.1
        }
        Event::QrReminderDue(e) => {
            extra = json!({ "last_usable_day": japanese_date(e.last_usable_day) });
            qr_application(e.qr_id)?.1
        }
        Event::QrLocked(e) => qr_application(e.qr_id)?.1,
        Event::CertificateRevoked(e) => {
            let certificate = match e.kind {
                hpki_events::vocabulary::CertificateKind::Card => "ICカードの電子証明書",
                hpki_events::vocabulary::CertificateKind::Second => "セカンド電子証明書",
            };
            let revoked_at = hpki_events::envelope::parse_time(&e.revoked_at)
                .map(crate::clock::show_jst)
                .unwrap_or_else(|| e.revoked_at.clone());
            extra =
                json!({ "serial": e.serial, "certificate": certificate, "revoked_at": revoked_at });
            subscriber
                .application_of(&e.serial)
                .ok_or("the revoked certificate's application is not on the stream")?
        }
        other => return Err(format!("{} does not call for a mail", other.type_name())),
    };
    let received = &application.received;
    if received.email.trim().is_empty() {
        return Err("the application gives no mail address".into());
    }
    let authorities = office.authorities();
    let authority = authorities
        .get(&received.authority)
        .ok_or("the authority is not configured")?;
    let routes: Vec<&str> = authority
        .reissue_channels
        .iter()
        .map(|c| match c {
            ReissueChannel::Email => "メールでの再発行申請",
            ReissueChannel::WebForm => "Webフォームでの再発行申請",
            ReissueChannel::OnScreen => "ICカードを使った画面での再発行",
        })
        .collect();
    let mut context = json!({
        "name": received.name_kanji,
        "subscriber_id": received.subscriber_id,
        "authority": authority.name_ja,
        "contact": authority.contact_ja,
        "password_hint": authority.password_hint_ja,
        "reissue_routes": routes.join("、"),
        "application_id": received.application_id.to_string(),
    });
    if let (Some(context), Some(extra)) = (context.as_object_mut(), extra.as_object()) {
        context.extend(extra.clone());
    }
    Ok((received.email.clone(), context))
}

fn by_id(subscriber: &Subscriber, id: uuid::Uuid) -> Result<&Application, String> {
    subscriber
        .application(id)
        .ok_or_else(|| "the application is not on the stream".to_owned())
}
