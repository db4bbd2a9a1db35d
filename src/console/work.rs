//! The registration office's pages: dashboard, applications, card stock, QRs and reissues,
//! loss cases and revocations, print batches, the mail outbox, CRLs, subscribers.

use actix_web::{HttpRequest, HttpResponse, web};
use hpki_events::vocabulary::Role;
use serde_json::{Value, json};

use super::{Console, Form, Who, or_page, path_id};
use crate::office::ProposalForm;
use crate::problem::{OfficeError, Problem};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(dashboard))
        .route("/applications", web::get().to(applications))
        .route(
            "/applications/import",
            web::post().to(super::jobs::import_applications),
        )
        .route("/applications/{id}", web::get().to(application))
        .route("/applications/{id}/photo", web::get().to(photo))
        .route(
            "/applications/{id}/{action}",
            web::post().to(decide_application),
        )
        .route("/stock", web::get().to(stock))
        .route("/qrs", web::get().to(qrs))
        .route("/reissues/{id}/{action}", web::post().to(decide_reissue))
        .route("/revocations", web::get().to(revocations))
        .route("/revocations/propose", web::post().to(propose))
        .route(
            "/revocations/{id}/{action}",
            web::post().to(decide_proposal),
        )
        .route("/loss-cases/{id}/{action}", web::post().to(close_case))
        .route("/print", web::get().to(print))
        .route("/print", web::post().to(super::jobs::create_batch))
        .route("/print/{id}/pdf", web::get().to(batch_pdf))
        .route("/print/{id}/manifest", web::get().to(batch_manifest))
        .route("/print/{id}/confirmation", web::post().to(confirm_batch))
        .route("/mail", web::get().to(mail))
        .route("/mail/{id}/{action}", web::post().to(retry_mail))
        .route("/crls", web::get().to(crls))
        .route("/crls/publish", web::post().to(publish_crls))
        .route("/crls/{authority}/{number}", web::get().to(crl_file))
        .route("/subscribers", web::get().to(subscribers))
        .route("/subscribers/{stream}", web::get().to(timeline));
}

impl Console {
    /// Brings a read model up to date, once per page, so that it shows what was just done.
    pub(super) async fn fresh(&self, projection: &str) -> Result<(), OfficeError> {
        crate::projection_runner::catch_up_named(self.office().store(), projection).await?;
        Ok(())
    }

    /// A read model's documents on `list` (all lists when `None`), as they stand.
    pub(super) async fn docs(
        &self,
        projection: &str,
        list: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, Value)>, OfficeError> {
        let store = self.office().store();
        Ok(store
            .docs(projection, list, limit)
            .await?
            .into_iter()
            .map(|(key, doc)| (key, with_list(doc)))
            .collect())
    }

    pub(super) async fn counts(
        &self,
        projection: &str,
    ) -> Result<serde_json::Map<String, Value>, OfficeError> {
        Ok(self
            .office()
            .store()
            .doc_counts(projection)
            .await?
            .into_iter()
            .map(|(list, n)| (list, json!(n)))
            .collect())
    }

    fn authority_names(&self) -> Value {
        self.office()
            .authorities()
            .iter()
            .map(|(id, a)| (id.clone(), json!({"ja": a.name_ja, "en": a.name_en})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// A form posted to `<what>/<id>/<action>`: checked (origin, session, token, `role`) and read.
struct Decision {
    who: Who,
    id: uuid::Uuid,
    action: String,
    form: Form,
}

async fn decision(
    console: &Console,
    req: &HttpRequest,
    path: web::Path<(String, String)>,
    body: &[u8],
    role: Role,
) -> Result<Decision, HttpResponse> {
    let form = Form::parse(body);
    let who = console.actor(req, &form, &[role]).await?;
    let (id, action) = path.into_inner();
    let id = path_id(console, req, &who, &id)?;
    Ok(Decision {
        who,
        id,
        action,
        form,
    })
}

impl Console {
    /// After a change: back to `to` with its message, or the refusal's page.
    pub(super) fn decided(
        &self,
        req: &HttpRequest,
        who: &Who,
        result: Result<&str, OfficeError>,
        to: &str,
    ) -> HttpResponse {
        match result {
            Ok(message) => self.done(who, message, to),
            Err(e) => self.failed(req, Some(who), e),
        }
    }
}

fn no_such_action() -> OfficeError {
    Problem::not_found("操作", "the action").into()
}

/// A document's body, with the list it is on.
fn with_list(doc: hpki_projections::Doc) -> Value {
    let mut body = doc.body;
    if let Value::Object(o) = &mut body {
        o.insert("list".into(), json!(doc.list));
    }
    body
}

/// The list `?list=` names, when it is one of `lists`; otherwise `default`.
fn chosen_list(req: &HttpRequest, lists: &[&'static str], default: &'static str) -> &'static str {
    let query = Form::parse(req.query_string().as_bytes());
    let asked = query.get("list").unwrap_or_default();
    lists
        .iter()
        .copied()
        .find(|l| *l == asked)
        .unwrap_or(default)
}

fn bodies(docs: Vec<(String, Value)>) -> Vec<Value> {
    docs.into_iter().map(|(_, body)| body).collect()
}

async fn dashboard(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(console.who(&req).await);
    if !who.reads() {
        // A mail house works on its print batches only.
        return crate::portal::see_other("/console/print");
    }
    let mut counts = serde_json::Map::new();
    for projection in [
        "applications",
        "qrs",
        "lifecycle",
        "outbox",
        "print",
        "cards",
    ] {
        let counted = match console.fresh(projection).await {
            Ok(()) => console.counts(projection).await,
            Err(e) => Err(e),
        };
        match counted {
            Ok(c) => {
                counts.insert(projection.into(), c.into());
            }
            Err(e) => return console.failed(&req, Some(&who), e),
        }
    }
    console.page(
        &req,
        Some(&who),
        "dashboard.html",
        "title_dashboard",
        json!({"counts": counts}),
    )
}

const APPLICATION_LISTS: [&str; 5] = [
    "received",
    "documents_checked",
    "awaiting_card",
    "issued",
    "rejected",
];

async fn applications(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(console.reader(&req, &[]).await);
    let list = chosen_list(&req, &APPLICATION_LISTS, "received");
    if let Err(e) = console.fresh("applications").await {
        return console.failed(&req, Some(&who), e);
    }
    let counts = match console.counts("applications").await {
        Ok(c) => c,
        Err(e) => return console.failed(&req, Some(&who), e),
    };
    match console.docs("applications", Some(list), 500).await {
        Ok(docs) => console.page(
            &req,
            Some(&who),
            "applications.html",
            "title_applications",
            json!({"list": list, "lists": APPLICATION_LISTS, "counts": counts,
                   "items": bodies(docs), "authorities": console.authority_names()}),
        ),
        Err(e) => console.failed(&req, Some(&who), e),
    }
}

async fn application(
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let who = or_page!(console.reader(&req, &[]).await);
    let id = or_page!(path_id(&console, &req, &who, &id));
    let store = console.office().store();
    let found = match console.fresh("applications").await {
        Ok(_) => store.doc("applications", &id.to_string()).await,
        Err(e) => return console.failed(&req, Some(&who), e),
    };
    match found {
        Ok(Some(doc)) => console.page(
            &req,
            Some(&who),
            "application.html",
            "title_application",
            json!({"a": doc.body, "list": doc.list, "authorities": console.authority_names()}),
        ),
        Ok(None) => console.problem(
            &req,
            Some(&who),
            &Problem::not_found("申請", "the application"),
        ),
        Err(e) => console.failed(&req, Some(&who), e.into()),
    }
}

async fn photo(
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let who = or_page!(console.reader(&req, &[]).await);
    let id = or_page!(path_id(&console, &req, &who, &id));
    let store = console.office().store();
    let sha = match store.doc("applications", &id.to_string()).await {
        Ok(Some(doc)) => doc.body["photo"]["sha256"].as_str().map(str::to_owned),
        _ => None,
    };
    match sha {
        Some(sha) => match store.photo(&sha).await {
            Ok(Some(p)) => HttpResponse::Ok()
                .content_type(p.media_type)
                .insert_header(("Cache-Control", "no-store"))
                .insert_header(("X-Content-Type-Options", "nosniff"))
                .body(p.bytes),
            _ => HttpResponse::NotFound().finish(),
        },
        None => HttpResponse::NotFound().finish(),
    }
}

async fn decide_application(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let d = or_page!(decision(&console, &req, path, &body, Role::Officer).await);
    let (office, actor) = (console.office(), d.who.account.actor());
    let result = match d.action.as_str() {
        "check" => office
            .check_documents(d.id, &actor)
            .await
            .map(|_| "done_checked"),
        "approve" => office.approve(d.id, &actor).await.map(|_| "done_approved"),
        "reject" => office
            .reject(d.id, d.form.text("reason"), &actor)
            .await
            .map(|_| "done_rejected"),
        _ => Err(no_such_action()),
    };
    // After the document check the decision comes next, on the same page.
    let to = match result {
        Ok("done_checked") => format!("/console/applications/{}", d.id),
        _ => "/console/applications?list=documents_checked".to_owned(),
    };
    console.decided(&req, &d.who, result, &to)
}

async fn stock(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(console.reader(&req, &[]).await);
    let mut rows = Vec::new();
    for (id, a) in console.office().authorities().iter() {
        match console.office().stock_counts(id).await {
            Ok((available, queued)) => rows.push(json!({
                "authority": id, "name_ja": a.name_ja, "name_en": a.name_en,
                "available": available, "queued": queued,
            })),
            Err(e) => return console.failed(&req, Some(&who), e),
        }
    }
    if let Err(e) = console.fresh("cards").await {
        return console.failed(&req, Some(&who), e);
    }
    let cards = match console.counts("cards").await {
        Ok(c) => c,
        Err(e) => return console.failed(&req, Some(&who), e),
    };
    console.page(
        &req,
        Some(&who),
        "stock.html",
        "title_stock",
        json!({"rows": rows, "cards": cards}),
    )
}

const QR_LISTS: [&str; 6] = [
    "qr:open",
    "qr:locked",
    "qr:registered",
    "qr:expired",
    "qr:superseded",
    "qr:revoked",
];

async fn qrs(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(console.reader(&req, &[]).await);
    let list = chosen_list(&req, &QR_LISTS, "qr:locked");
    if let Err(e) = console.fresh("lifecycle").await {
        return console.failed(&req, Some(&who), e);
    }
    let counts = match console.counts("lifecycle").await {
        Ok(c) => c,
        Err(e) => return console.failed(&req, Some(&who), e),
    };
    let (qrs, reissues) = match (
        console.docs("lifecycle", Some(list), 500).await,
        console.docs("lifecycle", Some("reissue:open"), 500).await,
    ) {
        (Ok(q), Ok(r)) => (q, r),
        (Err(e), _) | (_, Err(e)) => return console.failed(&req, Some(&who), e),
    };
    // Open QRs whose last usable day falls within the reminder window are "expiring".
    let soon = (console.office().today() + time::Duration::days(console.office().reminder_days()))
        .to_string();
    let expiring: Vec<Value> = match console.docs("lifecycle", Some("qr:open"), 500).await {
        Ok(open) => bodies(open)
            .into_iter()
            .filter(|q| {
                q["last_usable_day"]
                    .as_str()
                    .is_some_and(|d| d <= soon.as_str())
            })
            .collect(),
        Err(e) => return console.failed(&req, Some(&who), e),
    };
    console.page(
        &req,
        Some(&who),
        "qrs.html",
        "title_qrs",
        json!({"list": list, "lists": QR_LISTS, "counts": counts, "items": bodies(qrs),
               "reissues": bodies(reissues), "expiring": expiring}),
    )
}

async fn decide_reissue(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let d = or_page!(decision(&console, &req, path, &body, Role::Officer).await);
    let (office, actor) = (console.office(), d.who.account.actor());
    let result = match d.action.as_str() {
        "check" => office
            .check_reissue_documents(d.id, &actor)
            .await
            .map(|_| "done_checked"),
        "approve" => office
            .approve_reissue(d.id, &actor)
            .await
            .map(|_| "done_reissued"),
        "reject" => office
            .reject_reissue(d.id, d.form.text("reason"), &actor)
            .await
            .map(|_| "done_rejected"),
        _ => Err(no_such_action()),
    };
    console.decided(&req, &d.who, result, "/console/qrs")
}

async fn revocations(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(console.reader(&req, &[]).await);
    if let Err(e) = console.fresh("lifecycle").await {
        return console.failed(&req, Some(&who), e);
    }
    let mut lists = serde_json::Map::new();
    for list in [
        "case:open",
        "proposal:open",
        "proposal:approved",
        "proposal:rejected",
        "proposal:expired",
    ] {
        match console.docs("lifecycle", Some(list), 500).await {
            Ok(docs) => {
                let mut items = bodies(docs);
                // The approver's queue: each proposal says whether this member may decide it.
                for item in &mut items {
                    let own = item["proposed_by"].as_str() == Some(who.account.actor().as_str());
                    item["own"] = json!(own);
                    item["may_decide"] = json!(!own && who.holds(Role::Approver));
                }
                lists.insert(list.replace(':', "_"), items.into());
            }
            Err(e) => return console.failed(&req, Some(&who), e),
        }
    }
    let mut decided: Vec<Value> = ["proposal_approved", "proposal_rejected", "proposal_expired"]
        .iter()
        .flat_map(|l| lists[*l].as_array().cloned().unwrap_or_default())
        .collect();
    decided.sort_by(|a, b| {
        let at = |v: &Value| {
            v["decided_at"]
                .as_str()
                .or(v["expired_at"].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        at(b).cmp(&at(a))
    });
    console.page(&req, Some(&who), "revocations.html", "title_revocations", json!({"lists": lists, "decided": decided,
        "scopes": ["card_only", "card_and_second", "second_only", "device_only"],
        "reasons": ["keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation", "unspecified"]}))
}

async fn propose(console: web::Data<Console>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let form = Form::parse(&body);
    let who = or_page!(console.actor(&req, &form, &[Role::Officer]).await);
    let bad = |field: &str, ja: &str, en: &str| {
        Problem::new(422, "invalid_proposal", ja, en).field(field)
    };
    let scope = match serde_json::from_value(json!(form.text("scope"))) {
        Ok(s) => s,
        Err(_) => {
            return console.problem(
                &req,
                Some(&who),
                &bad(
                    "scope",
                    "失効の範囲を選んでください",
                    "choose what to revoke",
                ),
            );
        }
    };
    let reason = match form.text("reason") {
        "" => None,
        text => match serde_json::from_value(json!(text)) {
            Ok(r) => Some(r),
            Err(_) => {
                return console.problem(
                    &req,
                    Some(&who),
                    &bad(
                        "reason",
                        "失効理由が正しくありません",
                        "the revocation reason is not known",
                    ),
                );
            }
        },
    };
    let case_id = match form.text("case_id") {
        "" => None,
        text => Some(or_page!(path_id(&console, &req, &who, text))),
    };
    let proposal = ProposalForm {
        certificate_serial: form.text("certificate_serial").to_owned(),
        scope,
        reason,
        case_id,
    };
    match console
        .office()
        .propose_revocation(&proposal, &who.account.actor())
        .await
    {
        Ok(_) => console.done(&who, "done_proposed", "/console/revocations"),
        Err(e) => console.failed(&req, Some(&who), e),
    }
}

async fn decide_proposal(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let d = or_page!(decision(&console, &req, path, &body, Role::Approver).await);
    let (office, actor) = (console.office(), d.who.account.actor());
    let result = match d.action.as_str() {
        "approve" => office
            .approve_revocation(d.id, &actor)
            .await
            .map(|_| "done_revoked"),
        "reject" => office
            .reject_revocation(d.id, d.form.text("reason"), &actor)
            .await
            .map(|_| "done_rejected"),
        _ => Err(no_such_action()),
    };
    console.decided(&req, &d.who, result, "/console/revocations")
}

async fn close_case(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let d = or_page!(decision(&console, &req, path, &body, Role::Officer).await);
    let result = match d.action.as_str() {
        "close" => console
            .office()
            .close_case(d.id, d.form.text("note"), &d.who.account.actor())
            .await
            .map(|_| "done_closed"),
        _ => Err(no_such_action()),
    };
    console.decided(&req, &d.who, result, "/console/revocations")
}

/// Print batches: staff see all; a mail house's operator only its own.
async fn print(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(
        console
            .reader(
                &req,
                &[
                    Role::Officer,
                    Role::Approver,
                    Role::Auditor,
                    Role::Administrator,
                    Role::MailHouse
                ]
            )
            .await
    );
    let own = own_mail_house(&who);
    let list = own.as_ref().map(|m| format!("batch:{m}"));
    if let Err(e) = console.fresh("print").await {
        return console.failed(&req, Some(&who), e);
    }
    let batches = match console.docs("print", list.as_deref(), 10_000).await {
        Ok(docs) => docs
            .into_iter()
            .filter(|(key, _)| key.starts_with("batch/"))
            .map(|(_, body)| body)
            .rev()
            .collect::<Vec<_>>(),
        Err(e) => return console.failed(&req, Some(&who), e),
    };
    let waiting = if own.is_none() {
        match console.counts("print").await {
            Ok(c) => c,
            Err(e) => return console.failed(&req, Some(&who), e),
        }
    } else {
        Default::default()
    };
    console.page(
        &req,
        Some(&who),
        "print.html",
        "title_print",
        json!({"batches": batches, "waiting": waiting, "own_house": own,
               "authorities": console.authority_names()}),
    )
}

/// The mail house whose batches alone a member sees; a mail house's operator with none named
/// sees no batch at all.
fn own_mail_house(who: &Who) -> Option<String> {
    who.account
        .own_mail_house()
        .map(str::to_owned)
        .or_else(|| (!who.reads()).then(String::new))
}

async fn batch_download(console: &Console, req: &HttpRequest, id: &str, pdf: bool) -> HttpResponse {
    let who = or_page!(
        console
            .reader(req, &[Role::Officer, Role::Auditor, Role::MailHouse])
            .await
    );
    let id = or_page!(path_id(console, req, &who, id));
    let own = own_mail_house(&who);
    match console
        .inner
        .processors
        .print
        .read_file(id, own.as_deref(), pdf)
        .await
    {
        Ok((bytes, content_type, filename)) => HttpResponse::Ok()
            .content_type(content_type)
            .insert_header((
                "Content-Disposition",
                format!("attachment; filename=\"{filename}\""),
            ))
            .insert_header(("Cache-Control", "no-store"))
            .body(bytes),
        Err(e) => console.failed(req, Some(&who), e),
    }
}

async fn batch_pdf(
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    batch_download(&console, &req, &id, true).await
}

async fn batch_manifest(
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    batch_download(&console, &req, &id, false).await
}

/// The mail house's confirmation file, uploaded from the page (multipart: `_csrf`, `file`).
async fn confirm_batch(
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: actix_multipart::Multipart,
) -> HttpResponse {
    // An officer may upload for any batch; a mail house's operator for its own.
    let roles = [Role::Officer, Role::MailHouse];
    let (who, upload) = or_page!(console.uploaded(&req, payload, &roles).await);
    let id = or_page!(path_id(&console, &req, &who, &id));
    let own = own_mail_house(&who);
    match console
        .inner
        .processors
        .print
        .confirm(id, &upload.file, own.as_deref(), &who.account.actor())
        .await
    {
        Ok(_) => console.done(&who, "done_confirmed", "/console/print"),
        Err(e) => console.failed(&req, Some(&who), e),
    }
}

const MAIL_LISTS: [&str; 3] = ["mail:pending", "mail:failed", "mail:sent"];

async fn mail(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(console.reader(&req, &[]).await);
    let list = chosen_list(&req, &MAIL_LISTS, "mail:failed");
    if let Err(e) = console.fresh("outbox").await {
        return console.failed(&req, Some(&who), e);
    }
    let (counts, items) = match (
        console.counts("outbox").await,
        console.docs("outbox", Some(list), 500).await,
    ) {
        (Ok(c), Ok(d)) => (c, bodies(d)),
        (Err(e), _) | (_, Err(e)) => return console.failed(&req, Some(&who), e),
    };
    console.page(
        &req,
        Some(&who),
        "mail.html",
        "title_mail",
        json!({"list": list, "lists": MAIL_LISTS, "counts": counts, "items": items}),
    )
}

async fn retry_mail(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let d = or_page!(decision(&console, &req, path, &body, Role::Officer).await);
    let result = match d.action.as_str() {
        "retry" => crate::processors::outbox::retry(console.office(), d.id, &d.who.account.actor())
            .await
            .map(|_| "done_retry"),
        _ => Err(no_such_action()),
    };
    console.decided(&req, &d.who, result, "/console/mail?list=mail:pending")
}

async fn crls(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(console.reader(&req, &[]).await);
    let mut all = Vec::new();
    for (id, a) in console.office().authorities().iter() {
        let events = match console
            .office()
            .store()
            .read_stream(&crate::processors::crl_publisher::crl_stream(id))
            .await
        {
            Ok(e) => e,
            Err(e) => return console.failed(&req, Some(&who), e.into()),
        };
        let crls: Vec<Value> = events
            .into_iter()
            .rev()
            .filter_map(|e| match e.event {
                hpki_events::Event::CrlPublished(p) => Some(json!({
                    "number": p.number, "entries": p.entries, "sha256": p.sha256,
                    "this_update": p.this_update, "next_update": p.next_update,
                })),
                _ => None,
            })
            .collect();
        all.push(
            json!({"authority": id, "name_ja": a.name_ja, "name_en": a.name_en, "crls": crls}),
        );
    }
    console.page(
        &req,
        Some(&who),
        "crls.html",
        "title_crls",
        json!({"authorities": all}),
    )
}

async fn crl_file(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let who = or_page!(console.reader(&req, &[]).await);
    let (authority, number) = path.into_inner();
    // Read here rather than by the route, whose refusal would be actix's plain text.
    let Ok(number) = number.parse::<u64>() else {
        return console.problem(&req, Some(&who), &Problem::not_found("CRL", "CRL"));
    };
    let Some(paths) = console.inner.processors.crl.paths(&authority) else {
        return console.problem(&req, Some(&who), &Problem::not_found("認証局", "authority"));
    };
    match std::fs::read(paths.numbered(number)) {
        Ok(bytes) => HttpResponse::Ok()
            .content_type("application/pkix-crl")
            .insert_header((
                "Content-Disposition",
                format!("attachment; filename=\"{authority}-{number}.crl\""),
            ))
            .body(bytes),
        Err(_) => console.problem(&req, Some(&who), &Problem::not_found("CRL", "CRL")),
    }
}

/// Subscriber search: any of kanji, kana or romaji name, registry number, subscriber ID or
/// certificate serial, matched as a part of the text (romaji without regard to case).
async fn subscribers(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(console.reader(&req, &[]).await);
    let q = Form::parse(req.query_string().as_bytes())
        .text("q")
        .to_owned();
    let items = if q.is_empty() {
        Vec::new()
    } else {
        let store = console.office().store();
        let found = match console.fresh("applications").await {
            Ok(_) => store.search_docs("applications", &q, 200).await,
            Err(e) => return console.failed(&req, Some(&who), e),
        };
        match found {
            Ok(found) => found.into_iter().map(|(_, doc)| with_list(doc)).collect(),
            Err(e) => return console.failed(&req, Some(&who), e.into()),
        }
    };
    console.page(
        &req,
        Some(&who),
        "subscribers.html",
        "title_subscribers",
        json!({"q": q, "items": items, "searched": !q.is_empty()}),
    )
}

async fn timeline(
    console: web::Data<Console>,
    req: HttpRequest,
    stream: web::Path<String>,
) -> HttpResponse {
    let who = or_page!(console.reader(&req, &[]).await);
    if !stream.starts_with("subscriber-") {
        return console.problem(
            &req,
            Some(&who),
            &Problem::not_found("申請者", "the subscriber"),
        );
    }
    match console.office().timeline(&stream).await {
        Ok(entries) if !entries.is_empty() => {
            let (_, subscriber) = match console.office().subscriber(&stream).await {
                Ok(s) => s,
                Err(e) => return console.failed(&req, Some(&who), e),
            };
            let latest = subscriber.applications.last().map(|a| json!({
                "name_kanji": a.received.name_kanji, "name_kana": a.received.name_kana,
                "name_romaji": a.received.name_romaji, "registry_number": a.received.registry_number,
                "subscriber_id": a.received.subscriber_id, "authority": a.received.authority,
            }));
            console.page(
                &req,
                Some(&who),
                "timeline.html",
                "title_timeline",
                json!({"stream": stream.as_str(), "entries": entries, "who": latest}),
            )
        }
        Ok(_) => console.problem(
            &req,
            Some(&who),
            &Problem::not_found("申請者", "the subscriber"),
        ),
        Err(e) => console.failed(&req, Some(&who), e),
    }
}

/// Publishes every CRL that is due now (as `crl.schedule` and revocations also do).
async fn publish_crls(
    console: web::Data<Console>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let form = Form::parse(&body);
    let who = or_page!(console.actor(&req, &form, &[Role::Officer]).await);
    let crl = &console.inner.processors.crl;
    match crate::processors::exclusively(console.office().store(), "crl", crl.step()).await {
        Ok(Some(_)) => console.done(&who, "done_published", "/console/crls"),
        Ok(None) => console.problem(&req, Some(&who), &crate::api::busy("crl")),
        Err(e) => console.failed(&req, Some(&who), e.into()),
    }
}
