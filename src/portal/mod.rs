//! The registration portal (issue 6): the pages a subscriber's phone opens from the QR code.
//! Landing `/r/<token>` → password (birth date) → sign-in (subscriber ID) → register a passkey
//! (or, when this QR already registered one, sign in with it) → label → done. Every decision is
//! the domain's (the password command with its lockout, the device-binding command); the portal
//! renders, keeps the session, and runs the WebAuthn ceremony. Rules chosen: docs/portal.md.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::api::lifecycle::RateLimit;
use crate::config::{Authority, Config};
use crate::office::Office;
use crate::office::{Landing, PasswordOutcome};
use crate::problem::{OfficeError, Problem};
use hpki_events::vocabulary::ReissueChannel;

pub mod ceremony;
pub mod pages;
pub mod session;

use ceremony::{Ceremonies, Pending};
use pages::{Lang, Pages};
use session::{Lookup, Session, Sessions, Stage};

pub const SESSION_COOKIE: &str = "hpki_portal";
/// Largest ceremony body accepted (a WebAuthn response is a few kilobytes).
const CEREMONY_MAX_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct Portal {
    inner: Arc<Inner>,
}

struct Inner {
    office: Office,
    sessions: Sessions<Session>,
    pages: Pages,
    ceremonies: Ceremonies,
    /// Every portal request, per address.
    requests: RateLimit,
    /// Password entries per address, shared with the JSON API's.
    passwords: Arc<RateLimit>,
    secure_cookie: bool,
}

impl Portal {
    pub fn new(
        office: Office,
        config: &Config,
        passwords: Arc<RateLimit>,
    ) -> anyhow::Result<Portal> {
        let clock = office.clock().clone();
        Ok(Portal {
            inner: Arc::new(Inner {
                sessions: Sessions::new(
                    clock.clone(),
                    time::Duration::minutes(config.portal.idle_minutes.max(1)),
                ),
                pages: Pages::new()?,
                ceremonies: Ceremonies::new(&config.portal)?,
                requests: RateLimit::new(config.portal.requests_per_minute, clock),
                passwords,
                secure_cookie: config.portal.base_url.starts_with("https://"),
                office,
            }),
        })
    }
}

pub fn routes(cfg: &mut web::ServiceConfig, portal: &Portal) {
    let ceremony_json = web::JsonConfig::default()
        .limit(CEREMONY_MAX_BYTES)
        .error_handler(|error, _| {
            let problem = Problem::new(
                if matches!(
                    error,
                    actix_web::error::JsonPayloadError::Overflow { .. }
                        | actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
                ) {
                    413
                } else {
                    400
                },
                "bad_ceremony_body",
                "認証器の応答を読めません",
                format!("the authenticator's answer cannot be read: {error}"),
            );
            crate::api::ApiError(OfficeError::Problem(problem)).into()
        });
    // A form that does not read (too long, not a form, a field twice) gets the portal's own
    // page, in the subscriber's language, not actix's plain text.
    let form = {
        let portal = portal.clone();
        web::FormConfig::default()
            .limit(4096)
            .error_handler(move |error, req| {
                let status = match &error {
                    actix_web::error::UrlencodedError::Overflow { .. } => 413,
                    actix_web::error::UrlencodedError::ContentType => 415,
                    _ => 400,
                };
                let page = portal.problem_page(Lang::of(req), None, status, "bad_form", false);
                actix_web::error::InternalError::from_response(error, page).into()
            })
    };
    cfg.app_data(web::Data::new(portal.clone())).service(
        web::scope("/r")
            .wrap(actix_web::middleware::from_fn(guard))
            .route("/{token}", web::get().to(landing)),
    );
    cfg.service(
        web::scope("/portal")
            .wrap(actix_web::middleware::from_fn(guard))
            .app_data(form)
            .app_data(ceremony_json)
            .route("/password", web::get().to(password_page))
            .route("/password", web::post().to(password))
            .route("/sign-in", web::get().to(sign_in_page))
            .route("/sign-in", web::post().to(sign_in))
            .route("/register", web::get().to(register_page))
            .route("/ceremony/start", web::post().to(ceremony_start))
            .route("/ceremony/finish", web::post().to(ceremony_finish))
            .route("/label", web::get().to(label_page))
            .route("/label", web::post().to(label))
            .route("/done", web::get().to(done_page))
            .route("/restart", web::get().to(restart))
            .route("/static/portal.css", web::get().to(css))
            .route("/static/portal.js", web::get().to(js)),
    );
}

/// The headers every portal answer carries, and the per-address limit on portal requests.
/// The token is in `/r/<token>` URLs: `no-referrer` keeps it from leaking to any other site;
/// nothing is cached; scripts and styles come only from this origin.
async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let limited = req
        .app_data::<web::Data<Portal>>()
        .map(|p| p.inner.requests.check(peer(req.request())))
        .transpose();
    let mut res = match limited {
        Err(_) => {
            let portal = req
                .app_data::<web::Data<Portal>>()
                .expect("checked above")
                .clone();
            let lang = Lang::of(req.request());
            let page = portal.problem_page(lang, None, 429, "too_many", false);
            req.into_response(page).map_into_right_body()
        }
        Ok(_) => next.call(req).await?.map_into_left_body(),
    };
    secure_headers(res.headers_mut());
    Ok(res)
}

/// The headers every page of the portal and the console carries.
pub fn secure_headers(headers: &mut actix_web::http::header::HeaderMap) {
    for (name, value) in [
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn peer(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// A page's answer, remembering a language switch in a cookie.
pub fn html(req: &HttpRequest, status: u16, body: String) -> HttpResponse {
    let mut res = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
    res.content_type("text/html; charset=utf-8");
    if let Some(lang) = Lang::asked(req) {
        res.cookie(
            Cookie::build(pages::LANG_COOKIE, lang.code())
                .path("/")
                .same_site(SameSite::Lax)
                .max_age(actix_web::cookie::time::Duration::days(365))
                .finish(),
        );
    }
    res.body(body)
}

pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

impl Portal {
    /// The authority's settings in force (an administrator may have changed them).
    fn authority(&self, id: &str) -> Option<Authority> {
        self.inner.office.authorities().get(id).cloned()
    }

    fn contact(&self, lang: Lang, authority: Option<&str>) -> Option<String> {
        let a = self.authority(authority?)?;
        Some(match lang {
            Lang::Ja => a.contact_ja.clone(),
            Lang::En => a.contact_en.clone(),
        })
    }

    /// What a subscriber can do about a QR that cannot be used: their authority's own routes.
    fn next_steps(&self, lang: Lang, authority: Option<&str>) -> Vec<String> {
        let t = |k: &str| self.inner.pages.text(lang, k);
        let mut steps = vec![t("step_check_card")];
        match authority.and_then(|a| self.authority(a)) {
            Some(a) => {
                let contact = self.contact(lang, Some(authority.unwrap_or_default()));
                for channel in &a.reissue_channels {
                    steps.push(match channel {
                        ReissueChannel::Email => t("step_reissue_email")
                            .replace("{contact}", contact.as_deref().unwrap_or_default()),
                        ReissueChannel::WebForm => t("step_reissue_web_form"),
                        ReissueChannel::OnScreen => t("step_reissue_on_screen"),
                    });
                }
            }
            None => {}
        }
        steps.push(t("step_contact"));
        steps
    }

    fn common(&self, lang: Lang, authority: Option<&str>, csrf: Option<&str>) -> serde_json::Value {
        let name = authority
            .and_then(|a| self.authority(a))
            .map(|a| match lang {
                Lang::Ja => a.name_ja.clone(),
                Lang::En => a.name_en.clone(),
            });
        json!({
            "authority_name": name,
            "contact": self.contact(lang, authority),
            "csrf": csrf,
        })
    }

    fn render(
        &self,
        template: &str,
        lang: Lang,
        title: &str,
        base: serde_json::Value,
        values: serde_json::Value,
    ) -> String {
        let mut all = base;
        if let (Some(into), serde_json::Value::Object(from)) = (all.as_object_mut(), values) {
            into.extend(from);
        }
        self.inner
            .pages
            .render(template, lang, title, all)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "a portal page failed to render");
                "<!doctype html><title>Error</title><p>エラーが発生しました / An error occurred"
                    .to_owned()
            })
    }

    /// The page for a QR that cannot be used (or a token that names none).
    fn qr_problem_page(&self, lang: Lang, authority: Option<&str>, problem: &Problem) -> String {
        let message = lang.pick(&problem.message);
        self.render(
            "qr_problem.html",
            lang,
            "title_qr_problem",
            self.common(lang, authority, None),
            json!({
                "code": problem.code,
                "message": message,
                "steps": self.next_steps(lang, authority),
            }),
        )
    }

    /// A page for something that went wrong in the portal itself (`key` in messages.json).
    fn problem_page(
        &self,
        lang: Lang,
        authority: Option<&str>,
        status: u16,
        key: &str,
        restart: bool,
    ) -> HttpResponse {
        let body = self.render(
            "problem.html",
            lang,
            "title_problem",
            self.common(lang, authority, None),
            json!({
                "code": key,
                "message": self.inner.pages.text(lang, key),
                "restart": restart,
            }),
        );
        HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST))
            .content_type("text/html; charset=utf-8")
            .body(body)
    }

    /// The session of this request, or the page saying why there is none.
    fn session(&self, req: &HttpRequest) -> Result<(String, Session), HttpResponse> {
        let id = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        match self.inner.sessions.get(id.as_deref()) {
            Ok(session) => Ok((id.unwrap_or_default(), session)),
            Err(Lookup::Missing) => {
                Err(self.problem_page(Lang::of(req), None, 401, "no_session", false))
            }
            Err(Lookup::Expired) => {
                Err(self.problem_page(Lang::of(req), None, 401, "session_expired", false))
            }
        }
    }

    /// Checks the synchronizer token a form or a ceremony call sent.
    fn csrf(
        &self,
        req: &HttpRequest,
        session: &Session,
        sent: Option<&str>,
    ) -> Result<(), HttpResponse> {
        let sent = sent.or_else(|| {
            req.headers()
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
        });
        if session::same_token(sent, &session.csrf) {
            Ok(())
        } else {
            Err(self.problem_page(Lang::of(req), Some(&session.authority), 403, "csrf", false))
        }
    }

    /// Sends a subscriber who opened a later page too early back to where they are.
    fn at_stage(&self, session: &Session, wanted: Stage) -> Result<(), HttpResponse> {
        if session.stage == wanted {
            return Ok(());
        }
        Err(see_other(stage_page(session.stage)))
    }
}

fn stage_page(stage: Stage) -> &'static str {
    match stage {
        Stage::Password => "/portal/password",
        Stage::SignIn => "/portal/sign-in",
        Stage::Register => "/portal/register",
        Stage::Label => "/portal/label",
        Stage::Done { .. } => "/portal/done",
    }
}

/// `/r/<token>`: a usable QR starts a session and goes to the password page; any other shows
/// what happened and what to do. The token never appears in a log line (requests are logged
/// by route pattern) and leaves the address bar at the redirect.
async fn landing(
    portal: web::Data<Portal>,
    req: HttpRequest,
    token: web::Path<String>,
) -> HttpResponse {
    let lang = Lang::of(&req);
    match portal.inner.office.landing(&token).await {
        Ok(landing) => {
            if let Some(problem) = &landing.refused {
                let body = portal.qr_problem_page(lang, Some(&landing.authority), problem);
                return html(&req, problem.status, body);
            }
            let id = portal.inner.sessions.start(Session::new(
                &token,
                landing.qr_id,
                &landing.authority,
                &landing.subscriber_id,
            ));
            let mut res = see_other("/portal/password");
            let _ = res.add_cookie(
                &Cookie::build(SESSION_COOKIE, id)
                    .path("/")
                    .http_only(true)
                    .secure(portal.inner.secure_cookie)
                    .same_site(SameSite::Lax)
                    .finish(),
            );
            if let Some(lang) = Lang::asked(&req) {
                let _ = res.add_cookie(
                    &Cookie::build(pages::LANG_COOKIE, lang.code())
                        .path("/")
                        .same_site(SameSite::Lax)
                        .finish(),
                );
            }
            res
        }
        Err(OfficeError::Problem(problem)) => {
            let body = portal.qr_problem_page(lang, None, &problem);
            html(&req, problem.status, body)
        }
        Err(OfficeError::Internal(e)) => {
            tracing::error!(error = format!("{e:#}"), "the portal's landing failed");
            portal.problem_page(lang, None, 500, "network_error", false)
        }
    }
}

macro_rules! session_or_page {
    ($portal:expr, $req:expr) => {
        match $portal.session(&$req) {
            Ok(found) => found,
            Err(page) => return page,
        }
    };
}

macro_rules! or_page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(page) => return page,
        }
    };
}

fn password_form(
    portal: &Portal,
    req: &HttpRequest,
    session: &Session,
    status: u16,
    error: Option<String>,
) -> HttpResponse {
    let lang = Lang::of(req);
    let hint = portal.authority(&session.authority).map(|a| match lang {
        Lang::Ja => a.password_hint_ja.clone(),
        Lang::En => a.password_hint_en.clone(),
    });
    let body = portal.render(
        "password.html",
        lang,
        "title_password",
        portal.common(lang, Some(&session.authority), Some(&session.csrf)),
        json!({"error": error, "hint": hint}),
    );
    html(req, status, body)
}

async fn password_page(portal: web::Data<Portal>, req: HttpRequest) -> HttpResponse {
    let (_, session) = session_or_page!(portal, req);
    or_page!(portal.at_stage(&session, Stage::Password));
    password_form(&portal, &req, &session, 200, None)
}

#[derive(Deserialize)]
struct PasswordForm {
    csrf: Option<String>,
    password: Option<String>,
}

async fn password(
    portal: web::Data<Portal>,
    req: HttpRequest,
    form: web::Form<PasswordForm>,
) -> HttpResponse {
    let lang = Lang::of(&req);
    let (id, session) = session_or_page!(portal, req);
    or_page!(portal.csrf(&req, &session, form.csrf.as_deref()));
    or_page!(portal.at_stage(&session, Stage::Password));
    if portal.inner.passwords.check(peer(&req)).is_err() {
        return portal.problem_page(lang, Some(&session.authority), 429, "too_many", false);
    }
    let entered = form.password.as_deref().unwrap_or_default();
    match portal
        .inner
        .office
        .check_password(&session.token, entered)
        .await
    {
        Ok(PasswordOutcome::Accepted { .. }) => {
            portal
                .inner
                .sessions
                .update(&id, |s| s.stage = Stage::SignIn);
            see_other("/portal/sign-in")
        }
        Ok(PasswordOutcome::Wrong { attempts_left }) => {
            let error = portal
                .inner
                .pages
                .text(lang, "password_wrong")
                .replace("{n}", &attempts_left.to_string());
            password_form(&portal, &req, &session, 422, Some(error))
        }
        Ok(PasswordOutcome::Locked) => {
            portal.inner.sessions.end(&id);
            let locked = portal
                .inner
                .office
                .landing(&session.token)
                .await
                .ok()
                .and_then(|l| l.refused)
                .unwrap_or_else(|| Problem::new(423, "qr_locked", "ロックされています", "locked"));
            let body = portal.qr_problem_page(lang, Some(&session.authority), &locked);
            html(&req, 423, body)
        }
        Err(OfficeError::Problem(p)) if p.code == "password_format" => {
            let error = portal.inner.pages.text(lang, "password_format");
            password_form(&portal, &req, &session, 422, Some(error))
        }
        Err(OfficeError::Problem(p)) => {
            portal.inner.sessions.end(&id);
            let body = portal.qr_problem_page(lang, Some(&session.authority), &p);
            html(&req, p.status, body)
        }
        Err(OfficeError::Internal(e)) => {
            tracing::error!(
                error = format!("{e:#}"),
                "the portal's password check failed"
            );
            portal.problem_page(lang, Some(&session.authority), 500, "network_error", true)
        }
    }
}

fn sign_in_form(
    portal: &Portal,
    req: &HttpRequest,
    session: &Session,
    status: u16,
    shown: &str,
    error: Option<String>,
) -> HttpResponse {
    let lang = Lang::of(req);
    let body = portal.render(
        "sign_in.html",
        lang,
        "title_sign_in",
        portal.common(lang, Some(&session.authority), Some(&session.csrf)),
        json!({"error": error, "subscriber_id": shown}),
    );
    html(req, status, body)
}

async fn sign_in_page(portal: web::Data<Portal>, req: HttpRequest) -> HttpResponse {
    let (_, session) = session_or_page!(portal, req);
    or_page!(portal.at_stage(&session, Stage::SignIn));
    sign_in_form(&portal, &req, &session, 200, &session.subscriber_id, None)
}

#[derive(Deserialize)]
struct SignInForm {
    csrf: Option<String>,
    subscriber_id: Option<String>,
}

/// Full-width digits and letters as ASCII, surrounding spaces dropped, lower case (JPA's
/// `-jpa`): what a subscriber may type for their ID.
fn normalise_id(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| match c {
            '０'..='９' | 'Ａ'..='Ｚ' | 'ａ'..='ｚ' => {
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            }
            'ー' | '－' | '‐' => '-',
            c => c,
        })
        .collect::<String>()
        .to_ascii_lowercase()
}

async fn sign_in(
    portal: web::Data<Portal>,
    req: HttpRequest,
    form: web::Form<SignInForm>,
) -> HttpResponse {
    let lang = Lang::of(&req);
    let (id, session) = session_or_page!(portal, req);
    or_page!(portal.csrf(&req, &session, form.csrf.as_deref()));
    or_page!(portal.at_stage(&session, Stage::SignIn));
    let typed = form.subscriber_id.as_deref().unwrap_or_default();
    if normalise_id(typed) != normalise_id(&session.subscriber_id) {
        let error = portal.inner.pages.text(lang, "sign_in_wrong");
        return sign_in_form(&portal, &req, &session, 422, typed, Some(error));
    }
    portal
        .inner
        .sessions
        .update(&id, |s| s.stage = Stage::Register);
    see_other("/portal/register")
}

async fn register_page(portal: web::Data<Portal>, req: HttpRequest) -> HttpResponse {
    let lang = Lang::of(&req);
    let (_, session) = session_or_page!(portal, req);
    or_page!(portal.at_stage(&session, Stage::Register));
    // A QR locked, superseded or revoked since the session began gets its own page here too.
    let registered = match portal.inner.office.landing(&session.token).await {
        Ok(Landing {
            refused: Some(problem),
            ..
        })
        | Err(OfficeError::Problem(problem)) => {
            let body = portal.qr_problem_page(lang, Some(&session.authority), &problem);
            return html(&req, problem.status, body);
        }
        Ok(landing) => landing.device.is_some(),
        Err(OfficeError::Internal(e)) => {
            tracing::error!(
                error = format!("{e:#}"),
                "the register page could not read its QR"
            );
            return portal.problem_page(
                lang,
                Some(&session.authority),
                500,
                "network_error",
                false,
            );
        }
    };
    let (lead, button, mode) = if registered {
        ("signin_lead", "signin_button", "sign-in")
    } else {
        ("register_lead", "register_button", "register")
    };
    let t = |k| portal.inner.pages.text(lang, k);
    let body = portal.render(
        "register.html",
        lang,
        "title_register",
        portal.common(lang, Some(&session.authority), Some(&session.csrf)),
        json!({
            "lead": t(lead),
            "button": t(button),
            "mode": mode,
            "messages": {
                "cancelled": t("cancelled"),
                "authenticator_error": t("authenticator_error"),
                "network_error": t("network_error"),
            }
        }),
    );
    html(&req, 200, body)
}

/// A ceremony refused: JSON for the page's script, with the message to show.
fn ceremony_refused(
    portal: &Portal,
    lang: Lang,
    status: u16,
    key: &str,
    detail: &str,
) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST)).json(
        json!({
            "error": {
                "code": key,
                "message": portal.inner.pages.text(lang, key),
                "detail": detail,
            }
        }),
    )
}

/// A ceremony refused by the office: its status, code and message, for the page's script.
fn ceremony_problem(lang: Lang, problem: &Problem) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(problem.status).unwrap_or(StatusCode::CONFLICT))
        .json(json!({"error": {"code": problem.code, "message": lang.pick(&problem.message)}}))
}

/// Starts the WebAuthn ceremony: registration, or authentication when this QR already
/// registered a phone. The challenge is kept in the session and answered at most once.
async fn ceremony_start(portal: web::Data<Portal>, req: HttpRequest) -> HttpResponse {
    let lang = Lang::of(&req);
    let (id, session) = session_or_page!(portal, req);
    or_page!(portal.csrf(&req, &session, None));
    if session.stage != Stage::Register {
        return ceremony_refused(&portal, lang, 409, "wrong_step", "not at the register step");
    }
    // The QR may have been locked, superseded or revoked since the session began: say which,
    // as a landing would. A database that fails is logged and answered as the network's fault.
    let landing = match portal.inner.office.landing(&session.token).await {
        Ok(Landing {
            refused: Some(problem),
            ..
        })
        | Err(OfficeError::Problem(problem)) => return ceremony_problem(lang, &problem),
        Ok(landing) => landing,
        Err(OfficeError::Internal(e)) => {
            tracing::error!(error = format!("{e:#}"), "a ceremony could not read its QR");
            return ceremony_refused(&portal, lang, 500, "network_error", "");
        }
    };
    let started = match &landing.device {
        Some(device) => portal.inner.ceremonies.start_authentication(device),
        None => portal.inner.ceremonies.start_registration(
            session.qr_id,
            &session.subscriber_id,
            &portal
                .authority(&session.authority)
                .map_or(String::new(), |a| a.name_ja),
        ),
    };
    match started {
        Ok((options, pending)) => {
            portal
                .inner
                .sessions
                .update(&id, |s| s.pending = Some(pending));
            HttpResponse::Ok().json(options)
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "a WebAuthn ceremony could not start"
            );
            ceremony_refused(&portal, lang, 500, "network_error", "")
        }
    }
}

/// Finishes the ceremony with the browser's answer: a verified registration is recorded
/// through the domain's device-binding command; a verified authentication confirms the
/// registration. Anything else is refused and nothing is recorded.
async fn ceremony_finish(
    portal: web::Data<Portal>,
    req: HttpRequest,
    answer: web::Json<serde_json::Value>,
) -> HttpResponse {
    let lang = Lang::of(&req);
    let (id, session) = session_or_page!(portal, req);
    or_page!(portal.csrf(&req, &session, None));
    if session.stage != Stage::Register {
        return ceremony_refused(&portal, lang, 409, "wrong_step", "not at the register step");
    }
    let Some(pending) = portal
        .inner
        .sessions
        .update(&id, |s| s.pending.take())
        .flatten()
    else {
        return ceremony_refused(&portal, lang, 409, "wrong_step", "no ceremony was started");
    };
    match pending {
        Pending::Registration(state) => {
            let made = match portal.inner.ceremonies.finish_registration(&answer, &state) {
                Ok(made) => made,
                Err(why) => {
                    return ceremony_refused(&portal, lang, 400, "authenticator_error", &why);
                }
            };
            match portal
                .inner
                .office
                .register_device(
                    &session.token,
                    &made.credential_id,
                    &made.public_key,
                    made.aaguid,
                    None,
                    Some(made.passkey),
                )
                .await
            {
                Ok(_) => {
                    portal
                        .inner
                        .sessions
                        .update(&id, |s| s.stage = Stage::Label);
                    HttpResponse::Ok().json(json!({"next": "/portal/label"}))
                }
                Err(OfficeError::Problem(p)) => ceremony_problem(lang, &p),
                Err(OfficeError::Internal(e)) => {
                    tracing::error!(error = format!("{e:#}"), "recording a device failed");
                    ceremony_refused(&portal, lang, 500, "network_error", "")
                }
            }
        }
        Pending::Authentication(state) => {
            match portal
                .inner
                .ceremonies
                .finish_authentication(&answer, &state)
            {
                Ok(_) => {
                    portal
                        .inner
                        .sessions
                        .update(&id, |s| s.stage = Stage::Done { confirmed: true });
                    HttpResponse::Ok().json(json!({"next": "/portal/done"}))
                }
                Err(why) => ceremony_refused(&portal, lang, 400, "authenticator_error", &why),
            }
        }
    }
}

async fn label_page(portal: web::Data<Portal>, req: HttpRequest) -> HttpResponse {
    let lang = Lang::of(&req);
    let (_, session) = session_or_page!(portal, req);
    or_page!(portal.at_stage(&session, Stage::Label));
    let body = portal.render(
        "label.html",
        lang,
        "title_label",
        portal.common(lang, Some(&session.authority), Some(&session.csrf)),
        json!({"label": default_label(&session)}),
    );
    html(&req, 200, body)
}

/// The label set for the subscriber, as the seeds describe ("set automatically").
fn default_label(session: &Session) -> String {
    format!(
        "HPKI {} {}",
        session.authority.to_uppercase(),
        session.subscriber_id
    )
}

#[derive(Deserialize)]
struct LabelForm {
    csrf: Option<String>,
    label: Option<String>,
    action: Option<String>,
}

/// OK records the label; Cancel finishes all the same (the seeds: "処理は正常に終了します").
async fn label(
    portal: web::Data<Portal>,
    req: HttpRequest,
    form: web::Form<LabelForm>,
) -> HttpResponse {
    let lang = Lang::of(&req);
    let (id, session) = session_or_page!(portal, req);
    or_page!(portal.csrf(&req, &session, form.csrf.as_deref()));
    or_page!(portal.at_stage(&session, Stage::Label));
    if form.action.as_deref() != Some("cancel") {
        let label = form
            .label
            .clone()
            .unwrap_or_else(|| default_label(&session));
        if let Err(e) = portal
            .inner
            .office
            .label_device(&session.token, &label)
            .await
        {
            let status = match &e {
                OfficeError::Problem(p) => p.status,
                OfficeError::Internal(e) => {
                    tracing::error!(error = format!("{e:#}"), "recording a phone's label failed");
                    500
                }
            };
            let body = portal.render(
                "label.html",
                lang,
                "title_label",
                portal.common(lang, Some(&session.authority), Some(&session.csrf)),
                json!({"label": label, "error": portal.inner.pages.text(lang, "label_bad")}),
            );
            return html(&req, status, body);
        }
    }
    portal
        .inner
        .sessions
        .update(&id, |s| s.stage = Stage::Done { confirmed: false });
    see_other("/portal/done")
}

async fn done_page(portal: web::Data<Portal>, req: HttpRequest) -> HttpResponse {
    let lang = Lang::of(&req);
    let (_, session) = session_or_page!(portal, req);
    let Stage::Done { confirmed } = session.stage else {
        return see_other(stage_page(session.stage));
    };
    let key = if confirmed {
        "done_confirmed"
    } else {
        "done_registered"
    };
    let body = portal.render(
        "done.html",
        lang,
        "title_done",
        portal.common(lang, Some(&session.authority), None),
        json!({"message": portal.inner.pages.text(lang, key)}),
    );
    html(&req, 200, body)
}

/// Start again after a cancelled or failed ceremony: back to the password page of the same
/// QR. No attempt is counted by starting again; entering the password again is.
async fn restart(portal: web::Data<Portal>, req: HttpRequest) -> HttpResponse {
    let (id, session) = session_or_page!(portal, req);
    if matches!(session.stage, Stage::Done { .. } | Stage::Label) {
        return see_other(stage_page(session.stage));
    }
    portal.inner.sessions.update(&id, |s| {
        s.stage = Stage::Password;
        s.pending = None;
    });
    see_other("/portal/password")
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(pages::CSS)
}

async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(pages::JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_typed_in_full_width_or_upper_case_are_the_same_id() {
        assert_eq!(normalise_id(" １２３４５６－ＪＰＡ "), "123456-jpa");
        assert_eq!(normalise_id("123456"), "123456");
        assert_ne!(normalise_id("123457"), normalise_id("123456"));
    }

    #[test]
    fn every_page_renders_in_both_languages_with_every_word_found() {
        let pages = Pages::new().unwrap();
        for lang in [Lang::Ja, Lang::En] {
            for (template, title) in [
                ("password.html", "title_password"),
                ("sign_in.html", "title_sign_in"),
                ("register.html", "title_register"),
                ("label.html", "title_label"),
                ("done.html", "title_done"),
                ("problem.html", "title_problem"),
                ("qr_problem.html", "title_qr_problem"),
            ] {
                let html = pages
                    .render(
                        template,
                        lang,
                        title,
                        json!({"csrf": "x", "steps": ["a"], "messages": {"cancelled": "c"}}),
                    )
                    .unwrap();
                assert!(html.contains(&format!("<html lang=\"{}\">", lang.code())));
                assert!(!html.contains("title_"), "{template}: a missing word");
            }
        }
    }
}
