//! The API of what the log drives: the mail outbox (staff), print batches (staff and the mail
//! house) and CRLs (staff).

use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use hpki_events::Actor;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use super::{Answer, Api, ApiError, ListQuery, Listed, Staff, listed, read_body};
use crate::config::Role;
use crate::problem::Problem;
use crate::processors::crl_publisher::{Published, crl_stream};
use crate::processors::print_batches::{BatchSummary, Confirmed};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/jobs/mail", web::post().to(send_mail))
        .route("/mail", web::get().to(list_mail))
        .route("/mail/{id}/retry", web::post().to(retry_mail))
        .route("/print-batches", web::post().to(create_batch))
        .route("/print-batches", web::get().to(list_batches))
        .route("/print-batches/{id}/pdf", web::get().to(batch_pdf))
        .route(
            "/print-batches/{id}/manifest",
            web::get().to(batch_manifest),
        )
        .route(
            "/print-batches/{id}/confirmation",
            web::post().to(confirm_batch),
        )
        .route(
            "/print-batches/{id}/render-check",
            web::post().to(render_check),
        )
        .route("/jobs/crl", web::post().to(publish_crls))
        .route("/jobs/print", web::post().to(scheduled_batches))
        .route("/crls/{authority}", web::get().to(list_crls))
        .route("/crls/{authority}/{number}", web::get().to(crl_by_number));
}

/// Each authority's CRL at its distribution point's path, for relying parties: no token.
pub fn distribution_points(cfg: &mut web::ServiceConfig, api: &Api) {
    for (authority, path) in api.processors.crl.serving() {
        cfg.service(
            web::resource(path)
                .app_data(web::Data::new(CrlOf(authority)))
                .route(web::get().to(distribution_point))
                .route(web::head().to(distribution_point)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(paths(
    send_mail,
    list_mail,
    retry_mail,
    create_batch,
    list_batches,
    batch_pdf,
    batch_manifest,
    confirm_batch,
    render_check,
    publish_crls,
    scheduled_batches,
    list_crls,
    crl_by_number
))]
pub struct OutputsDoc;

/// A processor is running elsewhere (another instance, or this one's background runner).
pub fn busy(processor: &str) -> Problem {
    Problem::new(
        409,
        "processor_busy",
        format!("{processor} は別の処理で実行中です。しばらくしてからやり直してください"),
        format!("{processor} is running elsewhere right now; try again shortly"),
    )
}

#[derive(Serialize, ToSchema)]
struct MailReport {
    sent: usize,
    deferred: usize,
    failed: usize,
}

/// Sends every mail that is due now (`hpki serve` also does so on its own unless
/// `mail.background` is false).
#[utoipa::path(post, path = "/api/v1/jobs/mail", tag = "outputs",
    responses((status = 200, body = MailReport), (status = 409, description = "running elsewhere")))]
async fn send_mail(api: web::Data<Api>, who: Staff) -> Answer {
    who.must_be(Role::Officer)?;
    let outbox = &api.processors.outbox;
    let done = crate::processors::exclusively(api.office.store(), "outbox", outbox.step()).await?;
    let (report, _) = done.ok_or_else(|| busy("outbox"))?;
    Ok(HttpResponse::Ok().json(MailReport {
        sent: report.sent,
        deferred: report.deferred,
        failed: report.failed,
    }))
}

/// The outbox: `mail:pending`, `mail:sent`, `mail:failed`.
#[utoipa::path(get, path = "/api/v1/mail", tag = "outputs", params(ListQuery),
    responses((status = 200, body = Vec<Listed>)))]
async fn list_mail(api: web::Data<Api>, _who: Staff, query: super::Query<ListQuery>) -> Answer {
    listed(&api, "outbox", &query).await
}

/// Sends a failed mail again.
#[utoipa::path(post, path = "/api/v1/mail/{id}/retry", tag = "outputs",
    params(("id" = Uuid, Path)), responses((status = 204), (status = 409, description = "not failed")))]
async fn retry_mail(api: web::Data<Api>, who: Staff, id: web::Path<Uuid>) -> Answer {
    who.must_be(Role::Officer)?;
    crate::processors::outbox::retry(&api.office, id.into_inner(), &who.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Who calls the print-batch API: a staff member (officer), or a mail house by its token.
pub struct PrintCaller {
    actor: Actor,
    /// The mail house, which sees only its own batches; `None` for staff.
    mail_house: Option<String>,
}

impl FromRequest for PrintCaller {
    type Error = ApiError;
    type Future = futures::future::LocalBoxFuture<'static, Result<PrintCaller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { print_caller(&req).await })
    }
}

async fn print_caller(req: &HttpRequest) -> Result<PrintCaller, ApiError> {
    let api = req
        .app_data::<web::Data<Api>>()
        .ok_or_else(|| anyhow::anyhow!("the API is not configured"))?;
    let token = super::bearer(req).map(|t| hex::encode(openssl::sha::sha256(t.trim().as_bytes())));
    if let Some(name) = token.as_ref().and_then(|t| api.mail_houses.get(t)) {
        let actor =
            Actor::parse(&format!("mail-house:{name}")).map_err(|why| anyhow::anyhow!(why))?;
        return Ok(PrintCaller {
            actor,
            mail_house: Some(name.clone()),
        });
    }
    let account = super::account(req).await?;
    // A mail-house operator's own account acts for its mail house.
    if let Some(house) = account.own_mail_house() {
        return Ok(PrintCaller {
            actor: account.actor(),
            mail_house: Some(house.to_owned()),
        });
    }
    let staff = Staff(account.actor(), account.roles);
    staff.must_be(Role::Officer)?;
    Ok(PrintCaller {
        actor: staff.0,
        mail_house: None,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewBatch {
    authority: String,
}

/// Makes a print batch of the authority's QRs waiting to be printed (staff). 204 when none
/// is waiting.
#[utoipa::path(post, path = "/api/v1/print-batches", tag = "outputs", request_body = NewBatch,
    responses((status = 201, body = BatchSummary), (status = 204, description = "nothing to print")))]
async fn create_batch(api: web::Data<Api>, who: Staff, body: web::Json<NewBatch>) -> Answer {
    who.must_be(Role::Officer)?;
    let print = &api.processors.print;
    let made = crate::processors::exclusively(api.office.store(), "print", async {
        Ok(print.create(&body.authority, &who.0).await)
    })
    .await?
    .ok_or_else(|| busy("print"))??;
    Ok(match made {
        Some(summary) => HttpResponse::Created().json(summary),
        None => HttpResponse::NoContent().finish(),
    })
}

/// Print batches, newest last: a mail house sees only its own.
#[utoipa::path(get, path = "/api/v1/print-batches", tag = "outputs",
    responses((status = 200, body = Vec<Listed>)))]
async fn list_batches(api: web::Data<Api>, who: PrintCaller) -> Answer {
    let store = api.office.store();
    crate::projection_runner::catch_up(store, &hpki_projections::PrintQueue).await?;
    let list = who.mail_house.as_ref().map(|m| format!("batch:{m}"));
    let items: Vec<Listed> = store
        .docs("print", list.as_deref(), 10_000)
        .await?
        .into_iter()
        .filter(|(key, _)| key.starts_with("batch/"))
        .map(|(key, doc)| Listed {
            key,
            list: doc.list,
            body: doc.body,
        })
        .collect();
    Ok(HttpResponse::Ok().json(items))
}

/// A batch's PDF or manifest as a download.
async fn batch_file(api: &Api, who: &PrintCaller, id: Uuid, pdf: bool) -> Answer {
    let (bytes, content_type, filename) = api
        .processors
        .print
        .read_file(id, who.mail_house.as_deref(), pdf)
        .await?;
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .body(bytes))
}

/// The batch's PDF of QR cards.
#[utoipa::path(get, path = "/api/v1/print-batches/{id}/pdf", tag = "outputs",
    params(("id" = Uuid, Path)), responses((status = 200, content_type = "application/pdf", body = Vec<u8>)))]
async fn batch_pdf(api: web::Data<Api>, who: PrintCaller, id: web::Path<Uuid>) -> Answer {
    batch_file(&api, &who, id.into_inner(), true).await
}

/// The batch's manifest CSV (UTF-8 with BOM or CP932, as the mail house is configured).
#[utoipa::path(get, path = "/api/v1/print-batches/{id}/manifest", tag = "outputs",
    params(("id" = Uuid, Path)), responses((status = 200, content_type = "text/csv", body = String)))]
async fn batch_manifest(api: web::Data<Api>, who: PrintCaller, id: web::Path<Uuid>) -> Answer {
    batch_file(&api, &who, id.into_inner(), false).await
}

/// The mail house's confirmation file: columns 連番 (sequence), カードID (card_id), 状態
/// (status: 印刷済 printed, 発送済 mailed, 損紙 spoiled) and 追跡番号 (tracking_number, for
/// mailed). Accepted whole or refused whole with every problem listed.
#[utoipa::path(post, path = "/api/v1/print-batches/{id}/confirmation", tag = "outputs",
    params(("id" = Uuid, Path)), request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = Confirmed), (status = 422, description = "every problem, by line")))]
async fn confirm_batch(
    api: web::Data<Api>,
    who: PrintCaller,
    id: web::Path<Uuid>,
    req: HttpRequest,
    payload: web::Payload,
) -> Answer {
    let bytes = read_body(&req, payload, api.limits.csv_max_bytes).await?;
    let confirmed = api
        .processors
        .print
        .confirm(
            id.into_inner(),
            &bytes,
            who.mail_house.as_deref(),
            &who.actor,
        )
        .await?;
    Ok(HttpResponse::Ok().json(confirmed))
}

#[derive(Serialize, ToSchema)]
struct RenderCheck {
    pdf_identical: bool,
    csv_identical: bool,
}

/// For auditors: renders the batch again from the log and compares it with the SHA-256 its
/// event recorded.
#[utoipa::path(post, path = "/api/v1/print-batches/{id}/render-check", tag = "outputs",
    params(("id" = Uuid, Path)), responses((status = 200, body = RenderCheck)))]
async fn render_check(api: web::Data<Api>, _who: Staff, id: web::Path<Uuid>) -> Answer {
    let print = &api.processors.print;
    let batch = print.find(id.into_inner(), None).await?;
    let (pdf, csv) = print.render_again(&batch).await?;
    Ok(HttpResponse::Ok().json(RenderCheck {
        pdf_identical: crate::processors::sha256_hex(&pdf) == batch.pdf_sha256,
        csv_identical: crate::processors::sha256_hex(&csv) == batch.csv_sha256,
    }))
}

/// Publishes every CRL that is due now (also done on `crl.schedule` and after revocations).
#[utoipa::path(post, path = "/api/v1/jobs/crl", tag = "outputs",
    responses((status = 200, body = Vec<Published>), (status = 409, description = "running elsewhere")))]
async fn publish_crls(api: web::Data<Api>, who: Staff) -> Answer {
    who.must_be(Role::Officer)?;
    let crl = &api.processors.crl;
    let done = crate::processors::exclusively(api.office.store(), "crl", crl.step()).await?;
    let (published, _) = done.ok_or_else(|| busy("crl"))?;
    Ok(HttpResponse::Ok().json(published))
}

/// Makes the print batches `print.schedule` calls for now (what the background runner does
/// at each scheduled time); an empty list when none is due or no schedule is set.
#[utoipa::path(post, path = "/api/v1/jobs/print", tag = "outputs",
    responses((status = 200, body = Vec<BatchSummary>), (status = 409, description = "running elsewhere")))]
async fn scheduled_batches(api: web::Data<Api>, who: Staff) -> Answer {
    who.must_be(Role::Officer)?;
    let print = &api.processors.print;
    let done = crate::processors::exclusively(api.office.store(), "print", async {
        Ok(print.step().await)
    })
    .await?;
    let (made, _) = done.ok_or_else(|| busy("print"))??;
    Ok(HttpResponse::Ok().json(made))
}

/// Every CRL published for an authority, oldest first.
#[utoipa::path(get, path = "/api/v1/crls/{authority}", tag = "outputs",
    params(("authority" = String, Path)), responses((status = 200, body = Vec<Published>)))]
async fn list_crls(api: web::Data<Api>, _who: Staff, authority: web::Path<String>) -> Answer {
    let events = api
        .office
        .store()
        .read_stream(&crl_stream(&authority))
        .await?;
    let all: Vec<Published> = events
        .into_iter()
        .filter_map(|e| match e.event {
            hpki_events::Event::CrlPublished(p) => Some(Published {
                authority: p.authority,
                number: p.number,
                entries: p.entries,
                sha256: p.sha256,
                this_update: p.this_update,
                next_update: p.next_update,
            }),
            _ => None,
        })
        .collect();
    Ok(HttpResponse::Ok().json(all))
}

/// A published CRL by number (DER), as archived.
#[utoipa::path(get, path = "/api/v1/crls/{authority}/{number}", tag = "outputs",
    params(("authority" = String, Path), ("number" = u64, Path)),
    responses((status = 200, content_type = "application/pkix-crl", body = Vec<u8>)))]
async fn crl_by_number(api: web::Data<Api>, _who: Staff, path: web::Path<(String, u64)>) -> Answer {
    let (authority, number) = path.into_inner();
    let paths = api
        .processors
        .crl
        .paths(&authority)
        .ok_or_else(|| Problem::not_found("認証局", "authority").field("authority"))?;
    let bytes = std::fs::read(paths.numbered(number))
        .map_err(|_| Problem::not_found("CRL", "CRL").field("number"))?;
    Ok(HttpResponse::Ok()
        .content_type("application/pkix-crl")
        .body(bytes))
}

struct CrlOf(String);

/// The current CRL at its distribution point, with an ETag (its SHA-256) and Last-Modified;
/// a matching If-None-Match gets 304.
async fn distribution_point(
    api: web::Data<Api>,
    of: web::Data<CrlOf>,
    req: HttpRequest,
) -> HttpResponse {
    let Some(paths) = api.processors.crl.paths(&of.0) else {
        return HttpResponse::NotFound().finish();
    };
    let (Ok(bytes), Ok(meta)) = (std::fs::read(&paths.der), std::fs::metadata(&paths.der)) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("no CRL has been published yet\n");
    };
    let etag = format!("\"{}\"", crate::processors::sha256_hex(&bytes));
    let modified = meta
        .modified()
        .map(actix_web::http::header::HttpDate::from)
        .ok();
    let matches = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header(("ETag", etag))
        .insert_header(("Cache-Control", "public, max-age=300"))
        .content_type("application/pkix-crl");
    if let Some(modified) = modified {
        response.insert_header(("Last-Modified", modified.to_string()));
    }
    if matches {
        response.finish()
    } else {
        response.body(bytes)
    }
}
