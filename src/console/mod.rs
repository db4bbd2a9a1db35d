//! The staff console (issue 7): the registration office, approvers, the mail house, auditors
//! and administrators at work in the browser, under `/console`.
//!
//! Pages are rendered on the server from `templates/console/` (Japanese first, `?lang=en`
//! switches, times in JST); the only script is the passkey ceremony's. Every change is a POST
//! of a form carrying the session's synchronizer token (`_csrf`), checked with the session,
//! the account's current roles and the request's Origin before anything is done; it is done
//! by the same domain commands the JSON API calls, with the staff member as the actor. A
//! refusal is a page with a 4xx status saying why; nothing has changed. Rules chosen:
//! docs/console.md.

use std::sync::Arc;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpRequest, HttpResponse, web};
use hpki_events::vocabulary::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit::AuditKey;
use crate::config::Config;
use crate::office::Office;
use crate::portal::ceremony::{Ceremonies, Pending};
use crate::portal::pages::{Lang, Pages};
use crate::portal::session::{Lookup, Sessions, same_token};
use crate::portal::{html, see_other};
use crate::problem::{OfficeError, Problem};
use crate::processors::Processors;
use crate::staff::{Account, Directory};

mod admin;
mod jobs;
mod sign_in;
mod work;

pub const SESSION_COOKIE: &str = "hpki_console";
/// Largest form accepted (uploads have their own limit, `intake.csv_max_bytes`).
const FORM_MAX_BYTES: usize = 64 * 1024;

const TEMPLATES: &[(&str, &str)] = &[
    (
        "base.html",
        include_str!("../../templates/console/base.html"),
    ),
    (
        "problem.html",
        include_str!("../../templates/console/problem.html"),
    ),
    (
        "sign_in.html",
        include_str!("../../templates/console/sign_in.html"),
    ),
    (
        "passkey.html",
        include_str!("../../templates/console/passkey.html"),
    ),
    (
        "setup.html",
        include_str!("../../templates/console/setup.html"),
    ),
    (
        "dashboard.html",
        include_str!("../../templates/console/dashboard.html"),
    ),
    (
        "applications.html",
        include_str!("../../templates/console/applications.html"),
    ),
    (
        "application.html",
        include_str!("../../templates/console/application.html"),
    ),
    (
        "stock.html",
        include_str!("../../templates/console/stock.html"),
    ),
    ("qrs.html", include_str!("../../templates/console/qrs.html")),
    (
        "revocations.html",
        include_str!("../../templates/console/revocations.html"),
    ),
    (
        "print.html",
        include_str!("../../templates/console/print.html"),
    ),
    (
        "mail.html",
        include_str!("../../templates/console/mail.html"),
    ),
    (
        "crls.html",
        include_str!("../../templates/console/crls.html"),
    ),
    (
        "subscribers.html",
        include_str!("../../templates/console/subscribers.html"),
    ),
    (
        "timeline.html",
        include_str!("../../templates/console/timeline.html"),
    ),
    (
        "audit.html",
        include_str!("../../templates/console/audit.html"),
    ),
    ("job.html", include_str!("../../templates/console/job.html")),
    (
        "staff.html",
        include_str!("../../templates/console/staff.html"),
    ),
    (
        "shown_once.html",
        include_str!("../../templates/console/shown_once.html"),
    ),
    (
        "settings.html",
        include_str!("../../templates/console/settings.html"),
    ),
];
const MESSAGES: &str = include_str!("../../templates/console/messages.json");
const CSS: &str = include_str!("../../templates/console/static/console.css");
/// The passkey ceremony, the portal's own script: its endpoints come from the button.
const JS: &str = include_str!("../../templates/portal/static/portal.js");

/// How far a console session got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Nothing yet: the sign-in form.
    Anonymous,
    /// The password was right; the passkey comes next.
    Password {
        name: String,
    },
    SignedIn {
        name: String,
    },
    /// Opened through a setup link: choose a password.
    Setup {
        name: String,
        link_id: Uuid,
    },
    /// The password is set: register a passkey.
    SetupPasskey {
        name: String,
        link_id: Uuid,
    },
}

#[derive(Clone)]
pub struct StaffSession {
    pub csrf: String,
    pub stage: Stage,
    pending: Option<Pending>,
    /// A message for the next page (a message key), shown once.
    flash: Option<String>,
}

#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    office: Office,
    directory: Directory,
    processors: Processors,
    audit_key: AuditKey,
    sessions: Sessions<StaffSession>,
    pages: Pages,
    ceremonies: Ceremonies,
    jobs: jobs::Jobs,
    config: Config,
    secure_cookie: bool,
}

/// A signed-in staff member making this request.
pub struct Who {
    pub session_id: String,
    pub session: StaffSession,
    pub account: Account,
}

impl Who {
    pub fn holds(&self, role: Role) -> bool {
        self.account.holds(role)
    }

    /// Whether the account may read the office's work pages (all but a mail house's).
    pub fn reads(&self) -> bool {
        self.account.reads_office()
    }
}

impl Console {
    pub fn new(
        office: Office,
        directory: Directory,
        processors: Processors,
        audit_key: AuditKey,
        config: &Config,
    ) -> anyhow::Result<Console> {
        let clock = office.clock();
        Ok(Console {
            inner: Arc::new(Inner {
                sessions: Sessions::new(
                    clock.clone(),
                    time::Duration::minutes(config.console.idle_minutes.max(1)),
                ),
                pages: Pages::from(TEMPLATES, MESSAGES)?,
                ceremonies: Ceremonies::for_site(
                    "console",
                    &config.console.base_url,
                    &config.console.rp_id,
                    &config.console.rp_name,
                )?,
                jobs: jobs::Jobs::default(),
                secure_cookie: config.console.base_url.starts_with("https://"),
                config: config.clone(),
                office,
                directory,
                processors,
                audit_key,
            }),
        })
    }

    fn office(&self) -> &Office {
        &self.inner.office
    }

    fn text(&self, lang: Lang, key: &str) -> String {
        self.inner.pages.text(lang, key)
    }

    /// Renders a page: the signed-in member's navigation, the flash message, `values`.
    fn page(
        &self,
        req: &HttpRequest,
        who: Option<&Who>,
        template: &str,
        title: &str,
        values: Value,
    ) -> HttpResponse {
        self.page_with_status(req, who, 200, template, title, values)
    }

    fn page_with_status(
        &self,
        req: &HttpRequest,
        who: Option<&Who>,
        status: u16,
        template: &str,
        title: &str,
        values: Value,
    ) -> HttpResponse {
        let lang = Lang::of(req);
        let flash = who.and_then(|w| {
            self.inner
                .sessions
                .update(&w.session_id, |s| s.flash.take())
                .flatten()
        });
        let mut context = json!({
            "me": who.map(|w| json!({
                "name": w.account.name,
                "display_name": w.account.display_name,
                "roles": w.account.roles,
                "reads": w.reads(),
                "officer": w.holds(Role::Officer),
                "approver": w.holds(Role::Approver),
                "mail_house": w.holds(Role::MailHouse),
                "auditor": w.holds(Role::Auditor),
                "administrator": w.holds(Role::Administrator),
            })),
            "csrf": who.map(|w| w.session.csrf.clone()),
            "flash": flash.map(|key| self.text(lang, &key)),
        });
        if let (Some(into), Value::Object(from)) = (context.as_object_mut(), values) {
            into.extend(from);
        }
        let (status, body) = match self.inner.pages.render(template, lang, title, context) {
            Ok(body) => (status, body),
            Err(e) => {
                tracing::error!(error = %e, "a console page failed to render");
                (
                    500,
                    "<!doctype html><title>Error</title><p>エラーが発生しました / An error occurred"
                        .to_owned(),
                )
            }
        };
        let mut res = html(req, status, body);
        crate::portal::secure_headers(res.headers_mut());
        // No secret travels in a console URL past the setup link's redirect, so referrers may
        // go within this site; browsers then send the real Origin with each form (with
        // `no-referrer` they send `Origin: null`).
        res.headers_mut().insert(
            header::REFERRER_POLICY,
            header::HeaderValue::from_static("same-origin"),
        );
        res
    }

    /// A refusal: a page with the problem's status and its message in the page's language.
    fn problem(&self, req: &HttpRequest, who: Option<&Who>, problem: &Problem) -> HttpResponse {
        let lang = Lang::of(req);
        self.page_with_status(
            req,
            who,
            problem.status,
            "problem.html",
            "title_problem",
            json!({"code": problem.code, "message": lang.pick(&problem.message),
                   "field": problem.field, "back": back(req),
                   "details": problem.details.iter().map(|d| lang.pick(&d.message)).collect::<Vec<_>>()}),
        )
    }

    fn failed(&self, req: &HttpRequest, who: Option<&Who>, error: OfficeError) -> HttpResponse {
        match error {
            OfficeError::Problem(p) => self.problem(req, who, &p),
            OfficeError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "a console request failed");
                self.problem(req, who, &Problem::internal())
            }
        }
    }

    fn session_cookie(&self, id: String) -> Cookie<'static> {
        Cookie::build(SESSION_COOKIE, id)
            .path("/console")
            .http_only(true)
            .secure(self.inner.secure_cookie)
            .same_site(SameSite::Strict)
            .finish()
    }

    /// The session of this request, if any.
    fn session(&self, req: &HttpRequest) -> Result<(String, StaffSession), Lookup> {
        let id = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        let session = self.inner.sessions.get(id.as_deref())?;
        Ok((id.unwrap_or_default(), session))
    }

    /// The signed-in member, read afresh from the log (a role taken away or an account
    /// disabled counts at once); otherwise the sign-in page.
    async fn who(&self, req: &HttpRequest) -> Result<Who, HttpResponse> {
        let to_sign_in = |expired: bool| {
            let to = if expired {
                "/console/sign-in?expired=1"
            } else {
                "/console/sign-in"
            };
            // A page asked for goes to the sign-in page; a form sent is refused outright.
            if req.method() == actix_web::http::Method::GET {
                see_other(to)
            } else {
                self.problem(
                    req,
                    None,
                    &Problem::new(
                        401,
                        "signed_out",
                        "サインインしていないか、一定時間操作がなかったためサインアウトしました",
                        "you are not signed in, or were signed out after a while without activity",
                    ),
                )
            }
        };
        let (session_id, session) = match self.session(req) {
            Ok(found) => found,
            Err(Lookup::Expired) => return Err(to_sign_in(true)),
            Err(Lookup::Missing) => return Err(to_sign_in(false)),
        };
        let Stage::SignedIn { name } = &session.stage else {
            return Err(to_sign_in(false));
        };
        match self.inner.directory.account(name).await {
            Ok(Some(account)) if !account.disabled => Ok(Who {
                session_id,
                session,
                account,
            }),
            Ok(_) => {
                self.inner.sessions.end(&session_id);
                Err(to_sign_in(false))
            }
            Err(e) => Err(self.failed(req, None, e)),
        }
    }

    /// For a page: signed in, and holding one of `roles` (any role at all when empty).
    async fn reader(&self, req: &HttpRequest, roles: &[Role]) -> Result<Who, HttpResponse> {
        let who = self.who(req).await?;
        let allowed = if roles.is_empty() {
            who.reads()
        } else {
            roles.iter().any(|r| who.holds(*r))
        };
        if allowed {
            Ok(who)
        } else {
            Err(self.problem(req, Some(&who), &role_needed(roles)))
        }
    }

    /// For a change: a form from this origin, with this session's token, by a member holding
    /// one of `roles`. Checked in that order, before anything is done.
    async fn actor(
        &self,
        req: &HttpRequest,
        form: &Form,
        roles: &[Role],
    ) -> Result<Who, HttpResponse> {
        self.same_origin(req)?;
        let who = self.who(req).await?;
        if !same_token(form.get("_csrf"), &who.session.csrf) {
            return Err(self.problem(req, Some(&who), &csrf_problem()));
        }
        if !roles.iter().any(|r| who.holds(*r)) {
            return Err(self.problem(req, Some(&who), &role_needed(roles)));
        }
        Ok(who)
    }

    /// Refuses a POST whose Origin header names another site (browsers send it on every POST;
    /// the SameSite=Strict cookie already keeps other sites' forms out).
    fn same_origin(&self, req: &HttpRequest) -> Result<(), HttpResponse> {
        // No Origin, or `null` (a privacy setting, a sandboxed frame): the token decides.
        let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .filter(|o| *o != "null")
        else {
            return Ok(());
        };
        let host = req.connection_info().host().to_owned();
        let ours = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host);
        if ours {
            Ok(())
        } else {
            Err(self.problem(req, None, &csrf_problem()))
        }
    }

    /// After a change: the message for the next page, and back to `to`.
    fn done(&self, who: &Who, message: &str, to: &str) -> HttpResponse {
        let message = message.to_owned();
        self.inner
            .sessions
            .update(&who.session_id, |s| s.flash = Some(message));
        see_other(to)
    }
}

/// The page a refused form came from (this site's Referer), to go back to.
fn back(req: &HttpRequest) -> Option<String> {
    let referer = req.headers().get(header::REFERER)?.to_str().ok()?;
    let host = req.connection_info().host().to_owned();
    let path = referer.split_once("://")?.1.strip_prefix(host.as_str())?;
    path.starts_with("/console/").then(|| path.to_owned())
}

fn csrf_problem() -> Problem {
    Problem::new(
        403,
        "csrf",
        "フォームの確認用トークンが正しくありません。ページを開き直してからもう一度送信してください",
        "the form's token is not right; open the page again and send it once more",
    )
}

fn role_needed(roles: &[Role]) -> Problem {
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Problem::new(
        403,
        "role_required",
        format!(
            "この操作・ページには次の役割が必要です: {}",
            names.join(", ")
        ),
        format!("this needs one of the roles: {}", names.join(", ")),
    )
}

/// A form as sent (`application/x-www-form-urlencoded`), keeping repeated keys (checkboxes).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self, key: &str) -> &str {
        self.get(key).unwrap_or_default().trim()
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

macro_rules! or_page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(page) => return page,
        }
    };
}
pub(crate) use or_page;

/// Parses an id from a path, or the not-found page.
fn path_id(
    console: &Console,
    req: &HttpRequest,
    who: &Who,
    text: &str,
) -> Result<Uuid, HttpResponse> {
    Uuid::parse_str(text).map_err(|_| {
        console.problem(
            req,
            Some(who),
            &Problem::not_found("対象", "what was asked for"),
        )
    })
}

pub fn routes(cfg: &mut web::ServiceConfig, console: &Console) {
    let form = web::PayloadConfig::new(FORM_MAX_BYTES);
    cfg.service(
        web::scope("/console")
            .app_data(web::Data::new(console.clone()))
            .app_data(form)
            .wrap(ErrorHandlers::new().handler(StatusCode::PAYLOAD_TOO_LARGE, form_too_large))
            .route(
                "",
                web::get().to(|| async { see_other("/console/dashboard") }),
            )
            .route(
                "/",
                web::get().to(|| async { see_other("/console/dashboard") }),
            )
            .route("/static/console.css", web::get().to(css))
            .route("/static/passkey.js", web::get().to(js))
            .configure(sign_in::routes)
            .configure(work::routes)
            .configure(admin::routes)
            .configure(jobs::routes)
            .default_service(web::to(not_found)),
    );
}

/// A form past [`FORM_MAX_BYTES`], which actix refuses before any handler runs: the console's
/// page in the staff member's language rather than actix's plain text.
/// A 413 a handler answered itself (an upload's, with its own limit) carries no actix error
/// and is left as it is.
fn form_too_large<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let console = res.request().app_data::<web::Data<Console>>().cloned();
    let Some(console) = console.filter(|_| res.response().error().is_some()) else {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    };
    let problem = Problem::new(
        413,
        "too_large",
        format!("送られた内容が大きすぎます（上限 {FORM_MAX_BYTES} バイト）"),
        format!("what was sent is too large (at most {FORM_MAX_BYTES} bytes)"),
    );
    let page = console.problem(res.request(), None, &problem);
    Ok(ErrorHandlerResponse::Response(
        res.into_response(page).map_into_right_body(),
    ))
}

async fn not_found(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = console.who(&req).await.ok();
    console.problem(
        &req,
        who.as_ref(),
        &Problem::not_found("ページ", "the page"),
    )
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=3600"))
        .body(CSS)
}

async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=3600"))
        .body(JS)
}

/// An HTML status answer with the page's headers, for downloads refused.
fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `t.<key>` a console template uses, and every message key the code names, is in
    /// messages.json in both languages.
    #[test]
    fn every_word_the_pages_use_is_in_both_languages() {
        let messages: std::collections::HashMap<String, [String; 2]> =
            serde_json::from_str(MESSAGES).unwrap();
        let mut missing = Vec::new();
        for (name, source) in TEMPLATES {
            let mut rest = *source;
            while let Some(at) = rest.find("t.") {
                let before = rest[..at].chars().last();
                rest = &rest[at + 2..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let key: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !key.is_empty() && key != "title" && !messages.contains_key(&key) {
                    missing.push(format!("{name}: {key}"));
                }
            }
        }
        let code = [
            include_str!("mod.rs"),
            include_str!("sign_in.rs"),
            include_str!("work.rs"),
            include_str!("jobs.rs"),
            include_str!("admin.rs"),
        ];
        for source in code {
            for prefix in ["\"done_", "\"job_", "\"title_", "\"sign_in_"] {
                for (at, _) in source.match_indices(prefix) {
                    let key: String = source[at + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if key.ends_with('_') {
                        continue;
                    }
                    if !messages.contains_key(&key) {
                        missing.push(format!("code: {key}"));
                    }
                }
            }
        }
        // The timeline names every event type in both languages.
        for (event_type, _) in hpki_events::Event::TYPES {
            if !messages.contains_key(&format!("event_{event_type}")) {
                missing.push(format!("event_{event_type}"));
            }
        }
        for (key, [ja, en]) in &messages {
            if ja.is_empty() || en.is_empty() {
                missing.push(format!("{key}: empty"));
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }
}
