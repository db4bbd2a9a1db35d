//! Signing in (name and password, then a passkey), setting an account up through its one-time
//! link (a password, then a passkey), and signing out.

use actix_web::{HttpRequest, HttpResponse, web};
use hpki_events::vocabulary::SignInFactor;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Console, Form, StaffSession, Stage, csrf_problem, or_page};
use crate::portal::ceremony::Pending;
use crate::portal::pages::Lang;
use crate::portal::see_other;
use crate::portal::session::{random_id, same_token};
use crate::problem::{OfficeError, Problem};
use crate::staff::SignIn;

/// Largest ceremony body accepted (a WebAuthn answer is a few kilobytes).
const CEREMONY_MAX_BYTES: usize = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    let ceremony = web::JsonConfig::default()
        .limit(CEREMONY_MAX_BYTES)
        .error_handler(|error, _| {
            let body = json!({"error": {"code": "bad_ceremony_body",
                "message": format!("認証器の応答を読めません / the authenticator's answer cannot be read: {error}")}});
            actix_web::error::InternalError::from_response(
                error,
                HttpResponse::BadRequest().json(body),
            )
            .into()
        });
    cfg.app_data(ceremony)
        .route("/sign-in", web::get().to(sign_in_page))
        .route("/sign-in", web::post().to(sign_in))
        .route("/sign-in/passkey", web::get().to(passkey_page))
        .route("/passkey/start", web::post().to(ceremony_start))
        .route("/passkey/finish", web::post().to(ceremony_finish))
        .route("/setup/passkey", web::get().to(passkey_page))
        .route("/setup/{token}", web::get().to(setup_link))
        .route("/setup", web::get().to(setup_page))
        .route("/setup", web::post().to(setup))
        .route("/sign-out", web::post().to(sign_out));
}

fn fresh_session(stage: Stage) -> StaffSession {
    StaffSession {
        csrf: random_id(),
        stage,
        pending: None,
        flash: None,
    }
}

impl Console {
    /// This request's session, or a new anonymous one (with the cookie to set).
    fn session_or_new(&self, req: &HttpRequest) -> (String, StaffSession, bool) {
        match self.session(req) {
            Ok((id, s)) => (id, s, false),
            Err(_) => {
                let session = fresh_session(Stage::Anonymous);
                let id = self.inner.sessions.start(session.clone());
                (id, session, true)
            }
        }
    }

    /// Answers `res` with a new session for `stage` in its cookie, ending `old`: a session id
    /// never outlives a change of who holds it.
    fn rotate(
        &self,
        mut res: HttpResponse,
        old: &str,
        stage: Stage,
        flash: Option<&str>,
    ) -> HttpResponse {
        self.inner.sessions.end(old);
        let mut session = fresh_session(stage);
        session.flash = flash.map(str::to_owned);
        let id = self.inner.sessions.start(session);
        let _ = res.add_cookie(&self.session_cookie(id));
        res
    }

    fn sign_in_form(
        &self,
        req: &HttpRequest,
        session: &StaffSession,
        status: u16,
        error: Option<String>,
        name: &str,
    ) -> HttpResponse {
        let lang = Lang::of(req);
        let expired = req.query_string().contains("expired=1");
        let flash = session.flash.as_deref().map(|k| self.text(lang, k));
        self.page_with_status(
            req,
            None,
            status,
            "sign_in.html",
            "title_sign_in",
            json!({"csrf": session.csrf, "error": error, "name": name,
                   "expired": expired, "flash": flash}),
        )
    }
}

async fn sign_in_page(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let (id, session, new) = console.session_or_new(&req);
    if matches!(session.stage, Stage::SignedIn { .. }) {
        return see_other("/console/dashboard");
    }
    console.inner.sessions.update(&id, |s| s.flash = None);
    let mut page = console.sign_in_form(&req, &session, 200, None, "");
    if new {
        let _ = page.add_cookie(&console.session_cookie(id));
    }
    page
}

async fn sign_in(console: web::Data<Console>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let lang = Lang::of(&req);
    let form = Form::parse(&body);
    or_page!(console.same_origin(&req));
    let Ok((id, session)) = console.session(&req) else {
        return see_other("/console/sign-in?expired=1");
    };
    if !same_token(form.get("_csrf"), &session.csrf) {
        return console.problem(&req, None, &csrf_problem());
    }
    let name = form.text("name").to_ascii_lowercase();
    let password = form.get("password").unwrap_or_default();
    let outcome = console
        .inner
        .directory
        .check_password(&name, password)
        .await;
    match outcome {
        Ok(SignIn::PasswordAccepted) => {
            let to = see_other("/console/sign-in/passkey");
            console.rotate(to, &id, Stage::Password { name }, None)
        }
        Ok(SignIn::Wrong) => {
            let error = console.text(lang, "sign_in_wrong");
            console.sign_in_form(&req, &session, 401, Some(error), &name)
        }
        Ok(SignIn::Locked(until)) => {
            let error = console
                .text(lang, "sign_in_locked")
                .replace("{until}", &crate::clock::show_jst(until));
            console.sign_in_form(&req, &session, 423, Some(error), &name)
        }
        Ok(SignIn::Unusable) => {
            let error = console.text(lang, "sign_in_unusable");
            console.sign_in_form(&req, &session, 403, Some(error), &name)
        }
        Err(e) => console.failed(&req, None, e),
    }
}

/// The passkey step, of a sign-in or of a setup.
async fn passkey_page(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let Ok((_, session)) = console.session(&req) else {
        return see_other("/console/sign-in?expired=1");
    };
    let (mode, name) = match &session.stage {
        Stage::Password { name } => ("sign_in", name.clone()),
        Stage::SetupPasskey { name, .. } => ("register", name.clone()),
        Stage::SignedIn { .. } => return see_other("/console/dashboard"),
        _ => return see_other("/console/sign-in"),
    };
    console.page(
        &req,
        None,
        "passkey.html",
        if mode == "register" {
            "title_setup_passkey"
        } else {
            "title_passkey"
        },
        json!({"csrf": session.csrf, "mode": mode, "name": name}),
    )
}

fn ceremony_error(status: u16, code: &str, message: String) -> HttpResponse {
    HttpResponse::build(super::status(status))
        .json(json!({"error": {"code": code, "message": message}}))
}

/// Checks a ceremony call's session and token; the JSON refusal otherwise.
fn ceremony_session(
    console: &Console,
    req: &HttpRequest,
) -> Result<(String, StaffSession), HttpResponse> {
    let lang = Lang::of(req);
    let (id, session) = console
        .session(req)
        .map_err(|_| ceremony_error(401, "signed_out", console.text(lang, "session_expired")))?;
    let sent = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok());
    if !same_token(sent, &session.csrf) {
        return Err(ceremony_error(403, "csrf", console.text(lang, "csrf")));
    }
    Ok((id, session))
}

/// A user handle for an account's passkeys: the first 16 bytes of a SHA-256 of its name,
/// the same for every passkey of the account and saying nothing else.
fn user_handle(name: &str) -> Uuid {
    let digest = openssl::sha::sha256(format!("hpki-staff:{name}").as_bytes());
    Uuid::from_slice(&digest[..16]).expect("16 bytes")
}

async fn ceremony_start(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let lang = Lang::of(&req);
    let (id, session) = or_page!(ceremony_session(&console, &req));
    let directory = &console.inner.directory;
    let started: Result<(Value, Pending), OfficeError> = match &session.stage {
        Stage::Password { name } => match directory.passkeys(name).await {
            Ok(passkeys) => console
                .inner
                .ceremonies
                .start_authentication_with(&passkeys)
                .map_err(OfficeError::Internal),
            Err(e) => Err(e),
        },
        Stage::SetupPasskey { name, .. } => match directory.account(name).await {
            Ok(Some(account)) => console
                .inner
                .ceremonies
                .start_registration_for(
                    user_handle(name),
                    name,
                    &account.display_name,
                    &account.passkeys,
                )
                .map_err(OfficeError::Internal),
            Ok(None) => Err(Problem::not_found("職員アカウント", "staff account").into()),
            Err(e) => Err(e),
        },
        _ => return ceremony_error(409, "no_ceremony", console.text(lang, "session_expired")),
    };
    match started {
        Ok((options, pending)) => {
            console
                .inner
                .sessions
                .update(&id, |s| s.pending = Some(pending));
            HttpResponse::Ok().json(options)
        }
        Err(e) => {
            tracing::error!(error = %e, "starting a staff passkey ceremony failed");
            ceremony_error(500, "network_error", console.text(lang, "network_error"))
        }
    }
}

async fn ceremony_finish(
    console: web::Data<Console>,
    req: HttpRequest,
    answer: web::Json<Value>,
) -> HttpResponse {
    let lang = Lang::of(&req);
    let (id, session) = or_page!(ceremony_session(&console, &req));
    let Some(pending) = console
        .inner
        .sessions
        .update(&id, |s| s.pending.take())
        .flatten()
    else {
        return ceremony_error(409, "no_ceremony", console.text(lang, "ceremony_again"));
    };
    let directory = &console.inner.directory;
    match (pending, &session.stage) {
        (Pending::Authentication(state), Stage::Password { name }) => {
            let Ok(Some(account)) = directory.account(name).await else {
                return ceremony_error(500, "network_error", console.text(lang, "network_error"));
            };
            match console
                .inner
                .ceremonies
                .finish_authentication(&answer, &state)
            {
                Ok(verified) => {
                    if let Err(e) = directory.signed_in(&account, &verified).await {
                        tracing::error!(error = %e, "recording a sign-in failed");
                        return ceremony_error(
                            500,
                            "network_error",
                            console.text(lang, "network_error"),
                        );
                    }
                    let next = HttpResponse::Ok().json(json!({"next": "/console/dashboard"}));
                    console.rotate(next, &id, Stage::SignedIn { name: name.clone() }, None)
                }
                Err(why) => {
                    tracing::info!(account = %name, why = %why, "a staff passkey was refused");
                    match directory.failed(&account, SignInFactor::Passkey).await {
                        Ok(SignIn::Locked(_)) => {
                            console.inner.sessions.end(&id);
                            ceremony_error(
                                423,
                                "locked",
                                console.text(lang, "sign_in_locked_short"),
                            )
                        }
                        _ => ceremony_error(
                            400,
                            "authenticator_error",
                            console.text(lang, "passkey_refused"),
                        ),
                    }
                }
            }
        }
        (Pending::Registration(state), Stage::SetupPasskey { name, link_id }) => {
            match console
                .inner
                .ceremonies
                .finish_registration(&answer, &state)
            {
                Ok(made) => {
                    if let Err(e) = directory.add_passkey(name, *link_id, &made).await {
                        return match e {
                            OfficeError::Problem(p) => {
                                ceremony_error(p.status, &p.code, lang.pick(&p.message).to_owned())
                            }
                            OfficeError::Internal(e) => {
                                tracing::error!(error = %e, "recording a staff passkey failed");
                                ceremony_error(
                                    500,
                                    "network_error",
                                    console.text(lang, "network_error"),
                                )
                            }
                        };
                    }
                    let next = HttpResponse::Ok().json(json!({"next": "/console/sign-in"}));
                    console.rotate(next, &id, Stage::Anonymous, Some("setup_done"))
                }
                Err(why) => {
                    tracing::info!(account = %name, why = %why, "a staff passkey registration was refused");
                    ceremony_error(
                        400,
                        "authenticator_error",
                        console.text(lang, "passkey_refused"),
                    )
                }
            }
        }
        _ => ceremony_error(409, "no_ceremony", console.text(lang, "ceremony_again")),
    }
}

/// `/console/setup/<token>`: a known, unexpired link opens a setup session; the token leaves
/// the address bar at the redirect and is never logged.
async fn setup_link(
    console: web::Data<Console>,
    req: HttpRequest,
    token: web::Path<String>,
) -> HttpResponse {
    match console.inner.directory.setup_link(&token).await {
        Ok(Some((account, link_id))) => {
            let old = console.session(&req).map(|(id, _)| id).unwrap_or_default();
            let stage = Stage::Setup {
                name: account.name,
                link_id,
            };
            console.rotate(see_other("/console/setup"), &old, stage, None)
        }
        Ok(None) => console.problem(
            &req,
            None,
            &Problem::new(
                404,
                "setup_link_unknown",
                "このセットアップ用リンクは使えません（使用済み、期限切れ、または誤り）。管理者に新しいリンクを依頼してください",
                "this setup link cannot be used (used, expired or mistyped); ask an administrator for a new one",
            ),
        ),
        Err(e) => console.failed(&req, None, e),
    }
}

fn setup_form(
    console: &Console,
    req: &HttpRequest,
    session: &StaffSession,
    status: u16,
    error: Option<String>,
) -> HttpResponse {
    let Stage::Setup { name, .. } = &session.stage else {
        return see_other("/console/sign-in");
    };
    console.page_with_status(
        req,
        None,
        status,
        "setup.html",
        "title_setup",
        json!({"csrf": session.csrf, "name": name, "error": error,
               "min_chars": console.inner.directory.rules().password_min_chars}),
    )
}

async fn setup_page(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let Ok((_, session)) = console.session(&req) else {
        return see_other("/console/sign-in?expired=1");
    };
    match session.stage {
        Stage::Setup { .. } => setup_form(&console, &req, &session, 200, None),
        Stage::SetupPasskey { .. } => see_other("/console/setup/passkey"),
        _ => see_other("/console/sign-in"),
    }
}

async fn setup(console: web::Data<Console>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let form = Form::parse(&body);
    or_page!(console.same_origin(&req));
    let Ok((id, session)) = console.session(&req) else {
        return see_other("/console/sign-in?expired=1");
    };
    if !same_token(form.get("_csrf"), &session.csrf) {
        return console.problem(&req, None, &csrf_problem());
    }
    let Stage::Setup { name, link_id } = session.stage.clone() else {
        return see_other("/console/sign-in");
    };
    let directory = &console.inner.directory;
    let account = match directory.account(&name).await {
        Ok(Some(a)) => a,
        Ok(None) => return see_other("/console/sign-in"),
        Err(e) => return console.failed(&req, None, e),
    };
    let set = directory
        .set_password(
            &account,
            link_id,
            form.get("password").unwrap_or_default(),
            form.get("password_again").unwrap_or_default(),
        )
        .await;
    match set {
        Ok(()) => {
            console
                .inner
                .sessions
                .update(&id, |s| s.stage = Stage::SetupPasskey { name, link_id });
            see_other("/console/setup/passkey")
        }
        Err(OfficeError::Problem(p)) => {
            let error = Lang::of(&req).pick(&p.message).to_owned();
            setup_form(&console, &req, &session, p.status, Some(error))
        }
        Err(e) => console.failed(&req, None, e),
    }
}

async fn sign_out(console: web::Data<Console>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let form = Form::parse(&body);
    if let Ok((id, session)) = console.session(&req) {
        if !same_token(form.get("_csrf"), &session.csrf) {
            return console.problem(&req, None, &csrf_problem());
        }
        console.inner.sessions.end(&id);
    }
    see_other("/console/sign-in")
}
