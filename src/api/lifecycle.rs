//! The API after issuance: the registration portal's calls (password, device, on-screen
//! reissue), which carry the QR token or a signed challenge instead of a staff token; and the
//! staff's reissue, loss, revocation, expiry-job and timeline calls.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use actix_web::{HttpRequest, HttpResponse, web};
use hpki_events::vocabulary::{LossKind, ReissueChannel, ReissueReason};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use super::{Answer, Api, ApiError, ErrorBody, ListQuery, Listed, Staff, fresh, listed};
use crate::clock::SharedClock;
use crate::config::Role;
use crate::office::{
    Challenge, Decided, DeviceReport, ExpiryReport, PasswordOutcome, ProposalForm, Reissued,
    TimelineEntry,
};
use crate::problem::Problem;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/portal/password", web::post().to(password))
        .route("/portal/devices", web::post().to(register_device))
        .route("/portal/challenges", web::post().to(challenge))
        .route(
            "/portal/on-screen-reissue",
            web::post().to(on_screen_reissue),
        )
        .route("/portal/reissue-requests", web::post().to(reissue_form))
        .route("/jobs/expiry", web::post().to(run_expiry))
        .route("/lifecycle", web::get().to(list_lifecycle))
        .route("/qrs/expiring", web::get().to(expiring))
        .route("/reissue-requests", web::post().to(request_reissue))
        .route(
            "/reissue-requests/{id}/documents-checked",
            web::post().to(check_reissue_documents),
        )
        .route(
            "/reissue-requests/{id}/approve",
            web::post().to(approve_reissue),
        )
        .route(
            "/reissue-requests/{id}/reject",
            web::post().to(reject_reissue),
        )
        .route("/loss-reports", web::post().to(report_loss))
        .route("/loss-cases/{id}/close", web::post().to(close_case))
        .route("/revocation-proposals", web::post().to(propose))
        .route(
            "/revocation-proposals/{id}/approve",
            web::post().to(approve_revocation),
        )
        .route(
            "/revocation-proposals/{id}/reject",
            web::post().to(reject_revocation),
        )
        .route(
            "/subscribers/{subscriber}/timeline",
            web::get().to(timeline),
        );
}

#[derive(OpenApi)]
#[openapi(paths(
    password,
    register_device,
    challenge,
    on_screen_reissue,
    reissue_form,
    run_expiry,
    list_lifecycle,
    expiring,
    request_reissue,
    check_reissue_documents,
    approve_reissue,
    reject_reissue,
    report_loss,
    close_case,
    propose,
    approve_revocation,
    reject_revocation,
    timeline
))]
pub struct LifecycleDoc;

/// Password attempts per source address per clock minute. Written here because the limit
/// must follow the back office's injected clock (tests move time instead of sleeping), which
/// the rate-limiting crates' own clocks do not.
pub struct RateLimit {
    per_minute: u32,
    clock: SharedClock,
    windows: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl RateLimit {
    pub fn new(per_minute: u32, clock: SharedClock) -> RateLimit {
        RateLimit {
            per_minute,
            clock,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt from `address`; refuses it past the limit for this minute.
    pub fn check(&self, address: Option<IpAddr>) -> Result<(), Problem> {
        let Some(address) = address else {
            return Ok(());
        };
        let minute = self.clock.now().unix_timestamp().div_euclid(60);
        let mut windows = self.windows.lock().expect("not poisoned");
        if windows.len() > 100_000 {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let window = windows.entry(address).or_insert((minute, 0));
        if window.0 != minute {
            *window = (minute, 0);
        }
        if window.1 >= self.per_minute {
            return Err(Problem::new(
                429,
                "too_many_attempts",
                "試行回数が多すぎます。1分ほど待ってからもう一度お試しください",
                "too many attempts from this address; wait a minute and try again",
            ));
        }
        window.1 += 1;
        Ok(())
    }
}

fn peer(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

fn id(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        Problem::new(
            404,
            "not_found",
            format!("{what}の番号の形式が違います"),
            format!("{text:?} is not an id"),
        )
        .field("id")
        .into()
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordForm {
    /// The token from the registration URL (`/r/<token>`).
    token: String,
    /// The birth date, 8 digits (full-width digits are accepted).
    password: String,
}

/// The portal's password check. An evaluated attempt answers 200 with its result; a
/// malformed password (422), an unknown token (404), or a QR that cannot be used (410 expired,
/// superseded, revoked or used; 423 locked) is refused without counting.
#[utoipa::path(post, path = "/api/v1/portal/password", tag = "portal", request_body = PasswordForm,
    security(()),
    responses((status = 200, body = PasswordOutcome), (status = 404, body = ErrorBody),
              (status = 410, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 423, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn password(api: web::Data<Api>, req: HttpRequest, body: web::Json<PasswordForm>) -> Answer {
    api.attempts.check(peer(&req))?;
    let outcome = api
        .office
        .check_password(&body.token, &body.password)
        .await?;
    Ok(HttpResponse::Ok().json(outcome))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DeviceForm {
    token: String,
    /// base64url, as WebAuthn gives it.
    credential_id: String,
    /// The credential's COSE public key, base64url.
    public_key: String,
    aaguid: Uuid,
    /// When the portal registered it (RFC 3339); now when absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>)]
    registered_at: Option<OffsetDateTime>,
}

/// The portal reports the passkey it registered through a QR whose password was entered.
/// One active credential per second certificate (409 `device_already_registered`).
#[utoipa::path(post, path = "/api/v1/portal/devices", tag = "portal", request_body = DeviceForm,
    security(()),
    responses((status = 201, body = DeviceReport), (status = 409, body = ErrorBody),
              (status = 410, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn register_device(api: web::Data<Api>, body: web::Json<DeviceForm>) -> Answer {
    let report = api
        .office
        .register_device(
            &body.token,
            &body.credential_id,
            &body.public_key,
            body.aaguid,
            body.registered_at,
            None,
        )
        .await?;
    Ok(HttpResponse::Created().json(report))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChallengeForm {
    card_certificate_serial: String,
}

/// A challenge for on-screen reissue (JMA): sign it with the IC card.
#[utoipa::path(post, path = "/api/v1/portal/challenges", tag = "portal", request_body = ChallengeForm,
    security(()),
    responses((status = 200, body = Challenge), (status = 404, body = ErrorBody)))]
async fn challenge(
    api: web::Data<Api>,
    req: HttpRequest,
    body: web::Json<ChallengeForm>,
) -> Answer {
    api.attempts.check(peer(&req))?;
    let challenge = api
        .office
        .reissue_challenge(&body.card_certificate_serial)
        .await?;
    Ok(HttpResponse::Ok().json(challenge))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OnScreenForm {
    card_certificate_serial: String,
    challenge: String,
    /// base64 of the RSA PKCS#1 v1.5 SHA-256 signature of the challenge's UTF-8 bytes.
    signature: String,
    #[schema(value_type = String, example = "lost")]
    reason: ReissueReason,
}

/// On-screen reissue: the signature verifies against the card certificate on record, and a
/// new QR (its registration URL) is returned at once for display.
#[utoipa::path(post, path = "/api/v1/portal/on-screen-reissue", tag = "portal",
    request_body = OnScreenForm, security(()),
    responses((status = 201, body = Reissued), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn on_screen_reissue(
    api: web::Data<Api>,
    req: HttpRequest,
    body: web::Json<OnScreenForm>,
) -> Answer {
    api.attempts.check(peer(&req))?;
    let reissued = api
        .office
        .reissue_on_screen(
            &body.card_certificate_serial,
            &body.challenge,
            &body.signature,
            body.reason,
        )
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(reissued))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscriberReissueForm {
    /// `jma`, ...: an authority that offers reissue by web form.
    authority: String,
    registry_number: String,
    /// 8 digits (`YYYYMMDD`) or `YYYY-MM-DD`.
    birth_date: String,
    #[schema(value_type = String, example = "lost")]
    reason: ReissueReason,
}

#[derive(Serialize, ToSchema)]
struct FormReceived {
    received: bool,
    message: crate::problem::Message,
}

/// The subscriber's own reissue form (web form). The answer is the same whether or not the
/// details matched a certificate: a matching one becomes a `web_form` request for staff.
#[utoipa::path(post, path = "/api/v1/portal/reissue-requests", tag = "portal",
    request_body = SubscriberReissueForm, security(()),
    responses((status = 202, body = FormReceived), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
async fn reissue_form(
    api: web::Data<Api>,
    req: HttpRequest,
    body: web::Json<SubscriberReissueForm>,
) -> Answer {
    api.attempts.check(peer(&req))?;
    api.office
        .request_reissue_by_form(
            &body.authority,
            &body.registry_number,
            &body.birth_date,
            body.reason,
        )
        .await?;
    Ok(HttpResponse::Accepted().json(FormReceived {
        received: true,
        message: crate::problem::Message {
            ja: "受け付けました。ご登録の内容と一致した場合、認証局から手続きのご案内をお送りします".into(),
            en: "Received. If the details match our records, the authority will send you the next steps.".into(),
        },
    }))
}

/// Runs the expiry job now (it also runs on `lifecycle.expiry_schedule`).
#[utoipa::path(post, path = "/api/v1/jobs/expiry", tag = "lifecycle",
    responses((status = 200, body = ExpiryReport)))]
async fn run_expiry(api: web::Data<Api>, who: Staff) -> Answer {
    who.must_be(Role::Officer)?;
    Ok(HttpResponse::Ok().json(api.office.run_expiry().await?))
}

/// The work lists after issuance: `qr:locked`, `qr:open`, `reissue:open`, `case:open`,
/// `proposal:open`, `revoked:<authority>` and the rest (see `projections/src/lifecycle.rs`).
#[utoipa::path(get, path = "/api/v1/lifecycle", tag = "lifecycle", params(ListQuery),
    responses((status = 200, body = Vec<Listed>)))]
async fn list_lifecycle(
    api: web::Data<Api>,
    _who: Staff,
    query: super::Query<ListQuery>,
) -> Answer {
    listed(&api, "lifecycle", &query).await
}

/// QRs still unused whose last usable day is within `lifecycle.reminder_days`, soonest first.
#[utoipa::path(get, path = "/api/v1/qrs/expiring", tag = "lifecycle",
    responses((status = 200, body = Vec<Listed>)))]
async fn expiring(api: web::Data<Api>, _who: Staff) -> Answer {
    fresh(&api, "lifecycle").await?;
    let today = api.office.today();
    let until = (today + time::Duration::days(api.office.reminder_days())).to_string();
    let today = today.to_string();
    let docs = api
        .office
        .store()
        .docs("lifecycle", Some("qr:open"), i64::MAX)
        .await?;
    let items: Vec<Listed> = docs
        .into_iter()
        .filter(|(_, doc)| {
            let last = doc.body["last_usable_day"].as_str().unwrap_or_default();
            last >= today.as_str()
        })
        .take_while(|(_, doc)| {
            doc.body["last_usable_day"].as_str().unwrap_or_default() <= until.as_str()
        })
        .map(|(key, doc)| Listed {
            key,
            list: doc.list,
            body: doc.body,
        })
        .collect();
    Ok(HttpResponse::Ok().json(items))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReissueForm {
    /// The second certificate the new QR is for.
    certificate_serial: String,
    /// `email` or `web_form`, as the authority offers.
    #[schema(value_type = String, example = "web_form")]
    channel: ReissueChannel,
    /// `lost`, `locked`, `expired`, `spoiled` or `device_change`.
    #[schema(value_type = String, example = "locked")]
    reason: ReissueReason,
}

#[derive(Serialize, ToSchema)]
struct Created {
    id: Uuid,
}

/// Records a reissue request (e-mail or web form), from staff or the subscriber's form.
#[utoipa::path(post, path = "/api/v1/reissue-requests", tag = "reissue", request_body = ReissueForm,
    responses((status = 201, body = Created), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn request_reissue(api: web::Data<Api>, who: Staff, body: web::Json<ReissueForm>) -> Answer {
    who.must_be(Role::Officer)?;
    let id = api
        .office
        .request_reissue(&body.certificate_serial, body.channel, body.reason, &who.0)
        .await?;
    Ok(HttpResponse::Created().json(Created { id }))
}

/// The documents of an e-mail reissue request were checked.
#[utoipa::path(post, path = "/api/v1/reissue-requests/{id}/documents-checked", tag = "reissue",
    params(("id" = Uuid, Path)), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn check_reissue_documents(
    api: web::Data<Api>,
    who: Staff,
    path: web::Path<String>,
) -> Answer {
    who.must_be(Role::Officer)?;
    let request = id(&path, "再発行申請")?;
    api.office.check_reissue_documents(request, &who.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Approves a reissue: a new QR by the request's channel; every earlier QR is superseded.
#[utoipa::path(post, path = "/api/v1/reissue-requests/{id}/approve", tag = "reissue",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Reissued), (status = 409, body = ErrorBody)))]
async fn approve_reissue(api: web::Data<Api>, who: Staff, path: web::Path<String>) -> Answer {
    who.must_be(Role::Officer)?;
    let request = id(&path, "再発行申請")?;
    Ok(HttpResponse::Ok().json(api.office.approve_reissue(request, &who.0).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Reason {
    /// 1 to 500 characters; told to the person concerned.
    reason: String,
}

#[utoipa::path(post, path = "/api/v1/reissue-requests/{id}/reject", tag = "reissue",
    params(("id" = Uuid, Path)), request_body = Reason,
    responses((status = 204), (status = 409, body = ErrorBody)))]
async fn reject_reissue(
    api: web::Data<Api>,
    who: Staff,
    path: web::Path<String>,
    body: web::Json<Reason>,
) -> Answer {
    who.must_be(Role::Officer)?;
    let request = id(&path, "再発行申請")?;
    api.office
        .reject_reissue(request, &body.reason, &who.0)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LossForm {
    /// Either certificate of the issuance concerned.
    certificate_serial: String,
    /// `card` or `device`.
    #[schema(value_type = String, example = "card")]
    kind: LossKind,
    #[serde(default)]
    note: String,
}

/// Records a lost IC card or phone; the case waits for a decision.
#[utoipa::path(post, path = "/api/v1/loss-reports", tag = "revocation", request_body = LossForm,
    responses((status = 201, body = Created), (status = 404, body = ErrorBody)))]
async fn report_loss(api: web::Data<Api>, who: Staff, body: web::Json<LossForm>) -> Answer {
    who.must_be(Role::Officer)?;
    let id = api
        .office
        .report_loss(&body.certificate_serial, body.kind, &body.note, &who.0)
        .await?;
    Ok(HttpResponse::Created().json(Created { id }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CloseForm {
    note: String,
}

/// Closes a loss case without revoking anything.
#[utoipa::path(post, path = "/api/v1/loss-cases/{id}/close", tag = "revocation",
    params(("id" = Uuid, Path)), request_body = CloseForm,
    responses((status = 204), (status = 409, body = ErrorBody)))]
async fn close_case(
    api: web::Data<Api>,
    who: Staff,
    path: web::Path<String>,
    body: web::Json<CloseForm>,
) -> Answer {
    who.must_be(Role::Officer)?;
    let case = id(&path, "紛失の届出")?;
    api.office.close_case(case, &body.note, &who.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, ToSchema)]
struct Proposed {
    id: Uuid,
    #[schema(value_type = String)]
    decide_by: time::Date,
    card_serial: Option<String>,
    second_serial: Option<String>,
    credential_id: Option<String>,
}

/// Proposes a revocation; a different staff member with the approver role decides it.
#[utoipa::path(post, path = "/api/v1/revocation-proposals", tag = "revocation",
    request_body = ProposalForm,
    responses((status = 201, body = Proposed), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn propose(api: web::Data<Api>, who: Staff, body: web::Json<ProposalForm>) -> Answer {
    who.must_be(Role::Officer)?;
    let proposed = api.office.propose_revocation(&body, &who.0).await?;
    Ok(HttpResponse::Created().json(Proposed {
        id: proposed.proposal_id,
        decide_by: proposed.decide_by,
        card_serial: proposed.card_serial,
        second_serial: proposed.second_serial,
        credential_id: proposed.credential_id,
    }))
}

/// The second person approves (approver role; never the proposer).
#[utoipa::path(post, path = "/api/v1/revocation-proposals/{id}/approve", tag = "revocation",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Decided), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn approve_revocation(api: web::Data<Api>, who: Staff, path: web::Path<String>) -> Answer {
    who.must_be(Role::Approver)?;
    let proposal = id(&path, "失効提案")?;
    Ok(HttpResponse::Ok().json(api.office.approve_revocation(proposal, &who.0).await?))
}

/// The second person rejects; one rejection ends the proposal.
#[utoipa::path(post, path = "/api/v1/revocation-proposals/{id}/reject", tag = "revocation",
    params(("id" = Uuid, Path)), request_body = Reason,
    responses((status = 204), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn reject_revocation(
    api: web::Data<Api>,
    who: Staff,
    path: web::Path<String>,
    body: web::Json<Reason>,
) -> Answer {
    who.must_be(Role::Approver)?;
    let proposal = id(&path, "失効提案")?;
    api.office
        .reject_revocation(proposal, &body.reason, &who.0)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Every event of one subscriber (`subscriber-<authority>-<registry number>`), oldest first,
/// with who did it and when (JST).
#[utoipa::path(get, path = "/api/v1/subscribers/{subscriber}/timeline", tag = "lifecycle",
    params(("subscriber" = String, Path)),
    responses((status = 200, body = Vec<TimelineEntry>), (status = 404, body = ErrorBody)))]
async fn timeline(api: web::Data<Api>, _who: Staff, path: web::Path<String>) -> Answer {
    Ok(HttpResponse::Ok().json(api.office.timeline(&path).await?))
}
