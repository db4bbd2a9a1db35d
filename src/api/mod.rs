//! The JSON API under `/api/v1`, described by the OpenAPI document it serves at
//! `/api/v1/openapi.json` (generated from these handlers and types).
//!
//! Every call carries a staff member's bearer token (`[staff.<name>]` in the configuration);
//! what they do is recorded with the actor `staff:<name>`. Every error is
//! `{"error": {"code", "field", "message": {"ja", "en"}, "details"}}` with a 4xx status when
//! the request was at fault; a fault of ours is a bare 500 with code `internal`, logged here.
//! Request bodies are limited by their declared length before they are read, and while they
//! are read.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures::StreamExt;
use hpki_events::Actor;
use hpki_events::vocabulary::{BlankCard, Channel};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

pub mod lifecycle;
mod outputs;
pub use outputs::busy;

use crate::config::{Config, Intake, Role};
use crate::intake::ApplicationForm;
use crate::office::{Approval, CardsReceived, ImportMode, ImportReport, Office, Submitted};
use crate::problem::{OfficeError, Problem};

/// What the API needs besides the store.
#[derive(Clone)]
pub struct Api {
    pub office: Office,
    /// The staff accounts, whose API tokens every call carries.
    directory: crate::staff::Directory,
    limits: Intake,
    simulate_cards: bool,
    /// Password attempts by source address, for the portal's rate limit.
    attempts: Arc<lifecycle::RateLimit>,
    processors: crate::processors::Processors,
    /// Mail-house names by the SHA-256 (hex) of their token.
    mail_houses: Arc<HashMap<String, String>>,
}

impl Api {
    /// The per-address password limit, shared with the portal's pages.
    pub fn password_limit(&self) -> Arc<lifecycle::RateLimit> {
        self.attempts.clone()
    }

    pub fn new(
        office: Office,
        config: &Config,
        processors: crate::processors::Processors,
        directory: crate::staff::Directory,
    ) -> Api {
        Api {
            attempts: Arc::new(lifecycle::RateLimit::new(
                config.lifecycle.password_attempts_per_minute,
                office.clock(),
            )),
            office,
            directory,
            limits: config.intake.clone(),
            simulate_cards: config.cards.simulate_personalisation,
            processors,
            mail_houses: Arc::new(
                config
                    .mail_houses
                    .iter()
                    .map(|(name, h)| (h.token_sha256.to_ascii_lowercase(), name.clone()))
                    .collect(),
            ),
        }
    }
}

/// Mounts `/api/v1`.
pub fn configure(cfg: &mut web::ServiceConfig, api: &Api) {
    let json = web::JsonConfig::default()
        .limit(api.limits.json_max_bytes)
        .error_handler(|error, _| {
            use actix_web::error::JsonPayloadError as E;
            let problem = match &error {
                E::OverflowKnownLength { length, limit } => too_large(*length, *limit),
                E::Overflow { limit } => too_large(*limit + 1, *limit),
                E::ContentType => Problem::new(
                    415,
                    "not_json",
                    "Content-Type は application/json にしてください",
                    "send Content-Type: application/json",
                ),
                E::Deserialize(e) => Problem::new(
                    400,
                    "bad_json",
                    format!(
                        "JSON を読めません（{}行 {}桁目）: {e}",
                        e.line(),
                        e.column()
                    ),
                    format!(
                        "the JSON body cannot be read (line {}, column {}): {e}",
                        e.line(),
                        e.column()
                    ),
                ),
                other => Problem::new(
                    400,
                    "bad_body",
                    "本文を読めません",
                    format!("the body cannot be read: {other}"),
                ),
            };
            ApiError(OfficeError::Problem(problem)).into()
        });
    // A path segment that does not read (a batch id that is not a UUID) answers in the API's
    // problem format, as a body does, not actix's plain text; query strings: [`Query`].
    let path = web::PathConfig::default().error_handler(|error, _| {
        let problem = Problem::new(
            404,
            "not_found",
            format!("その URL のものはありません（{error}）"),
            format!("nothing is at that URL ({error})"),
        );
        ApiError(OfficeError::Problem(problem)).into()
    });
    outputs::distribution_points(cfg, api);
    cfg.app_data(json).service(
        web::scope("/api/v1")
            .app_data(path)
            .route("/openapi.json", web::get().to(openapi))
            .route("/applications", web::post().to(submit))
            .route("/applications", web::get().to(list_applications))
            .route("/applications/import", web::post().to(import))
            .route("/applications/{id}", web::get().to(get_application))
            .route("/applications/{id}/photo", web::put().to(put_photo))
            .route("/applications/{id}/photo", web::get().to(get_photo))
            .route(
                "/applications/{id}/documents-checked",
                web::post().to(check_documents),
            )
            .route("/applications/{id}/approve", web::post().to(approve))
            .route("/applications/{id}/reject", web::post().to(reject))
            .route("/authorities", web::get().to(authorities))
            .route("/authorities/{id}/card-stock", web::get().to(card_stock))
            .route(
                "/authorities/{id}/card-stock/receipts",
                web::post().to(receive_cards),
            )
            .route(
                "/authorities/{id}/card-stock/uses",
                web::post().to(use_cards),
            )
            .route("/certificates/{serial}", web::get().to(certificate))
            .route("/qrs", web::get().to(list_qrs))
            .route("/work-lists", web::get().to(work_lists))
            .configure(lifecycle::routes)
            .configure(outputs::routes)
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError(Problem::not_found("API", "this API path").into()))
            })),
    );
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hpki-backoffice API", description = "The registration office's commands and work lists. Errors: {\"error\": {code, field, message: {ja, en}, details}}."),
    paths(submit, list_applications, import, get_application, put_photo, get_photo,
          check_documents, approve, reject, authorities, card_stock, receive_cards, use_cards,
          certificate, list_qrs, work_lists),
    components(schemas(ErrorBody, Problem)),
    modifiers(&StaffToken),
    security(("staff_token" = [])),
)]
struct ApiDoc;

struct StaffToken;

impl Modify for StaffToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "staff_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI 3 document of this API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(lifecycle::LifecycleDoc::openapi());
    doc.merge(outputs::OutputsDoc::openapi());
    doc
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(openapi_document())
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: Problem,
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub OfficeError);

impl From<OfficeError> for ApiError {
    fn from(e: OfficeError) -> ApiError {
        ApiError(e)
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> ApiError {
        ApiError(p.into())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        ApiError(e.into())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError(OfficeError::Internal(e))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match &self.0 {
            OfficeError::Problem(p) => {
                StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            OfficeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let problem = match &self.0 {
            OfficeError::Problem(p) => p.clone(),
            OfficeError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "an API call failed");
                Problem::internal()
            }
        };
        HttpResponse::build(self.status_code()).json(ErrorBody { error: problem })
    }
}

type Answer = Result<HttpResponse, ApiError>;

fn too_large(length: usize, limit: usize) -> Problem {
    Problem::new(
        413,
        "too_large",
        format!("本文が大きすぎます（{length}バイト、上限{limit}バイト）"),
        format!("the body is {length} bytes; at most {limit}"),
    )
}

/// The staff member a request acts for.
pub struct Staff(pub Actor, pub Vec<Role>);

impl Staff {
    /// Refuses a staff member who does not hold `role`.
    pub fn must_be(&self, role: Role) -> Result<(), ApiError> {
        if self.1.contains(&role) {
            return Ok(());
        }
        Err(Problem::new(
            403,
            "role_required",
            format!("この操作には {role:?} の役割が必要です"),
            format!("this needs the {role:?} role"),
        )
        .into())
    }
}

impl FromRequest for Staff {
    type Error = ApiError;
    type Future = futures::future::LocalBoxFuture<'static, Result<Staff, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let account = account(&req).await?;
            // A mail house's operator reaches only its print batches (`PrintCaller`).
            if !account.reads_office() {
                return Err(Problem::new(
                    403,
                    "role_required",
                    "この操作には職員の役割が必要です",
                    "this needs a staff role",
                )
                .into());
            }
            Ok(Staff(account.actor(), account.roles))
        })
    }
}

/// A query string read into `T`. Unlike actix's `web::Query`, whose refusal gives
/// serde_urlencoded's message alone ("invalid digit found in string"), a refusal here names the
/// parameter (`field`) and answers in the problem format (400 `bad_query`).
pub struct Query<T>(pub T);

impl<T> std::ops::Deref for Query<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: serde::de::DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = futures::future::Ready<Result<Query<T>, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let pairs = form_urlencoded::parse(req.query_string().as_bytes());
        let read = serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs));
        futures::future::ready(read.map(Query).map_err(|e| {
            let field = e.path().to_string();
            let why = e.into_inner();
            let problem = if field == "." {
                Problem::new(
                    400,
                    "bad_query",
                    format!("クエリ文字列を読めません: {why}"),
                    format!("the query string cannot be read: {why}"),
                )
            } else {
                Problem::new(
                    400,
                    "bad_query",
                    format!("クエリの「{field}」を読めません: {why}"),
                    format!("the query parameter {field:?} cannot be read: {why}"),
                )
                .field(&field)
            };
            ApiError(OfficeError::Problem(problem))
        }))
    }
}

/// The bearer token a request carries (`Authorization: Bearer ...`).
pub(super) fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The usable account whose API token the request carries.
pub(super) async fn account(req: &HttpRequest) -> Result<crate::staff::Account, ApiError> {
    let unauthorized = || {
        Problem::new(
            401,
            "unauthorized",
            "職員の API トークン（Authorization: Bearer ...）が必要です",
            "a staff API token (Authorization: Bearer ...) is required",
        )
    };
    let api = req
        .app_data::<web::Data<Api>>()
        .ok_or_else(|| anyhow::anyhow!("the API is not configured"))?;
    let token = bearer(req).ok_or_else(unauthorized)?;
    Ok(api
        .directory
        .by_token(token)
        .await?
        .ok_or_else(unauthorized)?)
}

/// Reads a raw body, refusing it from its declared length or as soon as it passes `limit`.
pub(super) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(length) = declared.filter(|&l| l > limit) {
        return Err(too_large(length, limit).into());
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            Problem::new(
                400,
                "bad_body",
                "本文を読めません",
                format!("the body cannot be read: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(body.len() + chunk.len(), limit).into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn application_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        Problem::new(
            404,
            "not_found",
            "申請番号の形式が違います",
            format!("{text:?} is not an application id"),
        )
        .field("id")
        .into()
    })
}

/// Takes in an application: from the applicants' web form (`channel` `web`) or keyed in by
/// staff from paper (`paper`). One open application per person and authority.
#[utoipa::path(post, path = "/api/v1/applications", tag = "applications",
    request_body = ApplicationForm,
    responses((status = 201, body = Submitted), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "an open application exists"),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn submit(api: web::Data<Api>, who: Staff, form: web::Json<ApplicationForm>) -> Answer {
    who.must_be(Role::Officer)?;
    let channel = match form.channel.as_deref().unwrap_or("web") {
        "web" => Channel::Web,
        "paper" => Channel::Paper,
        other => {
            return Err(Problem::new(
                422,
                "bad_channel",
                format!("channel「{other}」は web か paper です"),
                format!("channel {other:?} is neither web nor paper"),
            )
            .field("channel")
            .into());
        }
    };
    let photo = match &form.photo_base64 {
        Some(text) => Some(openssl::base64::decode_block(text.trim()).map_err(|_| {
            Problem::new(
                422,
                "bad_photo",
                "顔写真の base64 を読めません",
                "photo_base64 is not base64",
            )
            .field("photo_base64")
        })?),
        None => None,
    };
    let submitted = api
        .office
        .submit(&form, photo.as_deref(), channel, &who.0)
        .await?;
    Ok(HttpResponse::Created().json(submitted))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// The work list: `received`, `documents_checked`, `awaiting_card`, `issued`, `rejected`
    /// (for QRs: `to_print`, `email`, `screen`). All lists when absent.
    list: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct Listed {
    key: String,
    list: String,
    #[schema(value_type = Object)]
    body: serde_json::Value,
}

async fn listed(api: &Api, projection: &str, query: &ListQuery) -> Answer {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    fresh(api, projection).await?;
    let docs = api
        .office
        .store()
        .docs(projection, query.list.as_deref(), limit)
        .await?;
    let items: Vec<Listed> = docs
        .into_iter()
        .map(|(key, doc)| Listed {
            key,
            list: doc.list,
            body: doc.body,
        })
        .collect();
    Ok(HttpResponse::Ok().json(items))
}

/// Brings a read model up to date, so a list read right after a command shows it.
async fn fresh(api: &Api, projection: &str) -> Result<(), ApiError> {
    crate::projection_runner::catch_up_named(api.office.store(), projection).await?;
    Ok(())
}

/// Applications on a work list, oldest first.
#[utoipa::path(get, path = "/api/v1/applications", tag = "applications", params(ListQuery),
    responses((status = 200, body = Vec<Listed>)))]
async fn list_applications(api: web::Data<Api>, _who: Staff, query: Query<ListQuery>) -> Answer {
    listed(&api, "applications", &query).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    /// Import the good rows even when some are bad (default: import nothing then).
    good_rows: Option<bool>,
}

/// Imports a CSV batch from a prefectural association (UTF-8 with or without BOM, or
/// Shift_JIS/CP932). Every bad row is reported with line and column; by default a file with
/// bad rows imports nothing (422). Importing the same file again creates nothing new.
#[utoipa::path(post, path = "/api/v1/applications/import", tag = "applications",
    params(ImportQuery), request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = ImportReport), (status = 413, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "bad rows (each in details) or an unreadable file")))]
async fn import(
    api: web::Data<Api>,
    who: Staff,
    req: HttpRequest,
    query: Query<ImportQuery>,
    payload: web::Payload,
) -> Answer {
    who.must_be(Role::Officer)?;
    let bytes = read_body(&req, payload, api.limits.csv_max_bytes).await?;
    let mode = if query.good_rows.unwrap_or(false) {
        ImportMode::GoodRows
    } else {
        ImportMode::AllOrNothing
    };
    let report = api.office.import(&bytes, mode, &who.0, &|_, _| {}).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// An application's document on the work lists, read up to date.
async fn application_doc(api: &Api, id: Uuid) -> Result<hpki_projections::Doc, ApiError> {
    fresh(api, "applications").await?;
    Ok(api
        .office
        .store()
        .doc("applications", &id.to_string())
        .await?
        .ok_or_else(|| Problem::not_found("申請", "the application"))?)
}

/// One application with its state (no birth date).
#[utoipa::path(get, path = "/api/v1/applications/{id}", tag = "applications",
    params(("id" = Uuid, Path)), responses((status = 200, body = Listed), (status = 404, body = ErrorBody)))]
async fn get_application(api: web::Data<Api>, _who: Staff, id: web::Path<String>) -> Answer {
    let id = application_id(&id)?;
    let doc = application_doc(&api, id).await?;
    Ok(HttpResponse::Ok().json(Listed {
        key: id.to_string(),
        list: doc.list,
        body: doc.body,
    }))
}

/// Attaches the face photo (the raw JPEG or PNG bytes) to an open application.
#[utoipa::path(put, path = "/api/v1/applications/{id}/photo", tag = "applications",
    params(("id" = Uuid, Path)), request_body(content = Vec<u8>, content_type = "image/jpeg"),
    responses((status = 200, description = "attached"), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_photo(
    api: web::Data<Api>,
    who: Staff,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Answer {
    who.must_be(Role::Officer)?;
    let id = application_id(&id)?;
    let bytes = read_body(&req, payload, api.limits.photo_max_bytes).await?;
    let photo = api.office.attach_photo(id, &bytes, &who.0).await?;
    Ok(HttpResponse::Ok().json(photo_json(&photo)))
}

fn photo_json(photo: &hpki_events::vocabulary::PhotoRef) -> serde_json::Value {
    serde_json::json!({"sha256": photo.sha256, "media_type": photo.media_type, "bytes": photo.bytes})
}

/// The application's face photo.
#[utoipa::path(get, path = "/api/v1/applications/{id}/photo", tag = "applications",
    params(("id" = Uuid, Path)), responses((status = 200, content_type = "image/jpeg"), (status = 404, body = ErrorBody)))]
async fn get_photo(api: web::Data<Api>, _who: Staff, id: web::Path<String>) -> Answer {
    let id = application_id(&id)?;
    let doc = application_doc(&api, id).await?;
    let sha = doc.body["photo"]["sha256"]
        .as_str()
        .ok_or_else(|| Problem::not_found("顔写真", "the photo"))?;
    let photo = api
        .office
        .store()
        .photo(sha)
        .await?
        .ok_or_else(|| Problem::not_found("顔写真", "the photo"))?;
    Ok(HttpResponse::Ok()
        .content_type(photo.media_type)
        .insert_header(("Cache-Control", "no-store"))
        .body(photo.bytes))
}

/// Records that the documents were checked (needs the photo).
#[utoipa::path(post, path = "/api/v1/applications/{id}/documents-checked", tag = "review",
    params(("id" = Uuid, Path)), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn check_documents(api: web::Data<Api>, who: Staff, id: web::Path<String>) -> Answer {
    who.must_be(Role::Officer)?;
    let id = application_id(&id)?;
    api.office.check_documents(id, &who.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Approves and issues: second certificate and QR always, the card certificate when a card is
/// in stock (otherwise the card is deferred and the QR pre-issued).
#[utoipa::path(post, path = "/api/v1/applications/{id}/approve", tag = "review",
    params(("id" = Uuid, Path)), responses((status = 200, body = Approval), (status = 409, body = ErrorBody)))]
async fn approve(api: web::Data<Api>, who: Staff, id: web::Path<String>) -> Answer {
    who.must_be(Role::Officer)?;
    let id = application_id(&id)?;
    let approval = api.office.approve(id, &who.0).await?;
    Ok(HttpResponse::Ok().json(approval))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Rejection {
    /// Told to the applicant; 1 to 500 characters.
    reason: String,
}

/// Rejects an open application with a reason the applicant is told.
#[utoipa::path(post, path = "/api/v1/applications/{id}/reject", tag = "review",
    params(("id" = Uuid, Path)), request_body = Rejection,
    responses((status = 204), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn reject(
    api: web::Data<Api>,
    who: Staff,
    id: web::Path<String>,
    body: web::Json<Rejection>,
) -> Answer {
    who.must_be(Role::Officer)?;
    let id = application_id(&id)?;
    api.office.reject(id, &body.reason, &who.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, ToSchema)]
struct AuthorityView {
    id: String,
    name_ja: String,
    name_en: String,
    profession: String,
    #[schema(value_type = Vec<String>)]
    reissue_channels: Vec<crate::config::ReissueChannel>,
    password_hint_ja: String,
    password_hint_en: String,
    ca_subject: String,
}

/// The issuing authorities this office serves.
#[utoipa::path(get, path = "/api/v1/authorities", tag = "card stock",
    responses((status = 200, body = Vec<AuthorityView>)))]
async fn authorities(api: web::Data<Api>, _who: Staff) -> Answer {
    let views: Vec<AuthorityView> = api
        .office
        .authorities()
        .iter()
        .map(|(id, a)| AuthorityView {
            id: id.clone(),
            name_ja: a.name_ja.clone(),
            name_en: a.name_en.clone(),
            profession: a.profession.clone(),
            reissue_channels: a.reissue_channels.clone(),
            password_hint_ja: a.password_hint_ja.clone(),
            password_hint_en: a.password_hint_en.clone(),
            ca_subject: api
                .office
                .ca(id)
                .map(|ca| crate::pki::name_text(ca.subject()))
                .unwrap_or_default(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

#[derive(Serialize, ToSchema)]
struct StockView {
    authority: String,
    /// Blank cards in stock.
    available: usize,
    /// Approved applications waiting for a card.
    waiting: usize,
}

/// An authority's card stock and the queue waiting for it.
#[utoipa::path(get, path = "/api/v1/authorities/{id}/card-stock", tag = "card stock",
    params(("id" = String, Path)), responses((status = 200, body = StockView), (status = 404, body = ErrorBody)))]
async fn card_stock(api: web::Data<Api>, _who: Staff, id: web::Path<String>) -> Answer {
    let (available, waiting) = api.office.stock_counts(&id).await?;
    Ok(HttpResponse::Ok().json(StockView {
        authority: id.into_inner(),
        available,
        waiting,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CardInput {
    card_serial: String,
    /// The card's public key, PEM (`BEGIN PUBLIC KEY`); or give `csr_pem`.
    public_key_pem: Option<String>,
    /// A PKCS#10 request made on the card (its signature is checked).
    csr_pem: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Receipt {
    /// Each card with its serial and public key (from the card manifest).
    #[serde(default)]
    cards: Vec<CardInput>,
    /// Development only (`cards.simulate_personalisation`): this many cards, their keys
    /// generated here.
    count: Option<usize>,
}

/// Records blank cards received; deferred cards are then issued from them in approval order.
#[utoipa::path(post, path = "/api/v1/authorities/{id}/card-stock/receipts", tag = "card stock",
    params(("id" = String, Path)), request_body = Receipt,
    responses((status = 200, body = CardsReceived), (status = 422, body = ErrorBody)))]
async fn receive_cards(
    api: web::Data<Api>,
    who: Staff,
    id: web::Path<String>,
    body: web::Json<Receipt>,
) -> Answer {
    who.must_be(Role::Officer)?;
    let cards = match (body.count, body.cards.is_empty()) {
        (Some(count), true) if api.simulate_cards => {
            if !(1..=1000).contains(&count) {
                return Err(Problem::new(
                    422,
                    "bad_count",
                    "count は1から1000です",
                    "count must be 1 to 1000",
                )
                .field("count")
                .into());
            }
            api.office.simulate_cards(count).await?
        }
        (Some(_), _) => {
            return Err(Problem::new(
                422,
                "count_not_allowed",
                "枚数だけの受け入れは開発環境のみです。各カードの番号と公開鍵を送ってください",
                "a bare count is for development only (cards.simulate_personalisation); list each card with its public key",
            )
            .field("count")
            .into());
        }
        (None, _) => body
            .cards
            .iter()
            .enumerate()
            .map(|(i, card)| blank_card(i, card))
            .collect::<Result<Vec<_>, Problem>>()?,
    };
    let received = api.office.receive_cards(&id, cards, &who.0).await?;
    Ok(HttpResponse::Ok().json(received))
}

fn blank_card(i: usize, card: &CardInput) -> Result<BlankCard, Problem> {
    let bad = |en: String| {
        Problem::new(
            422,
            "bad_public_key",
            format!("{}枚目のカードの公開鍵を読めません", i + 1),
            en,
        )
        .field(&format!("cards[{i}]"))
    };
    let key = match (&card.public_key_pem, &card.csr_pem) {
        (Some(pem), None) => {
            openssl::pkey::PKey::public_key_from_pem(pem.as_bytes()).map_err(|_| {
                bad(format!(
                    "card {}: public_key_pem is not a PEM public key",
                    i + 1
                ))
            })?
        }
        (None, Some(pem)) => {
            let csr = openssl::x509::X509Req::from_pem(pem.as_bytes())
                .map_err(|_| bad(format!("card {}: csr_pem is not a PEM CSR", i + 1)))?;
            let key = csr
                .public_key()
                .map_err(|_| bad(format!("card {}: the CSR has no usable key", i + 1)))?;
            if !csr.verify(&key).unwrap_or(false) {
                return Err(bad(format!(
                    "card {}: the CSR's signature does not verify",
                    i + 1
                )));
            }
            key
        }
        _ => {
            return Err(bad(format!(
                "card {}: give exactly one of public_key_pem and csr_pem",
                i + 1
            )));
        }
    };
    let der = key
        .public_key_to_der()
        .map_err(|_| bad(format!("card {}: the key cannot be encoded", i + 1)))?;
    Ok(BlankCard {
        card_serial: card.card_serial.trim().to_owned(),
        public_key: openssl::base64::encode_block(&der),
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CardUse {
    card_serials: Vec<String>,
    reason: String,
}

/// Takes cards out of stock for another reason than issuance (spoiled, samples).
#[utoipa::path(post, path = "/api/v1/authorities/{id}/card-stock/uses", tag = "card stock",
    params(("id" = String, Path)), request_body = CardUse,
    responses((status = 204), (status = 422, body = ErrorBody)))]
async fn use_cards(
    api: web::Data<Api>,
    who: Staff,
    id: web::Path<String>,
    body: web::Json<CardUse>,
) -> Answer {
    who.must_be(Role::Officer)?;
    let body = body.into_inner();
    api.office
        .use_cards(&id, body.card_serials, &body.reason, &who.0)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// An issued certificate: JSON, or PEM with `Accept: application/x-pem-file`.
#[utoipa::path(get, path = "/api/v1/certificates/{serial}", tag = "certificates",
    params(("serial" = String, Path, description = "upper-case hex")),
    responses((status = 200, body = Listed), (status = 404, body = ErrorBody)))]
async fn certificate(
    api: web::Data<Api>,
    _who: Staff,
    req: HttpRequest,
    serial: web::Path<String>,
) -> Answer {
    fresh(&api, "certificates").await?;
    let serial = serial.to_ascii_uppercase();
    let doc = api
        .office
        .store()
        .doc("certificates", &serial)
        .await?
        .ok_or_else(|| Problem::not_found("証明書", "the certificate"))?;
    let wants_pem = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-pem-file"));
    if wants_pem {
        let der = openssl::base64::decode_block(doc.body["der"].as_str().unwrap_or_default())
            .map_err(anyhow::Error::from)?;
        let pem = openssl::x509::X509::from_der(&der)
            .and_then(|cert| cert.to_pem())
            .map_err(anyhow::Error::from)?;
        return Ok(HttpResponse::Ok()
            .content_type("application/x-pem-file")
            .body(pem));
    }
    Ok(HttpResponse::Ok().json(Listed {
        key: serial,
        list: doc.list,
        body: doc.body,
    }))
}

/// QRs by list: `to_print` (issued, waiting for a print batch), `email`, `screen`.
#[utoipa::path(get, path = "/api/v1/qrs", tag = "certificates", params(ListQuery),
    responses((status = 200, body = Vec<Listed>)))]
async fn list_qrs(api: web::Data<Api>, _who: Staff, query: Query<ListQuery>) -> Answer {
    listed(&api, "qrs", &query).await
}

#[derive(Serialize, ToSchema)]
struct WorkLists {
    /// Per read model, the number of documents on each list.
    #[schema(value_type = Object)]
    counts: serde_json::Value,
}

/// The work lists with their counts: applications to review and to decide, approved awaiting
/// card stock, certificates issued, QRs not yet printed, cards by state.
#[utoipa::path(get, path = "/api/v1/work-lists", tag = "applications",
    responses((status = 200, body = WorkLists)))]
async fn work_lists(api: web::Data<Api>, _who: Staff) -> Answer {
    let mut counts = serde_json::Map::new();
    for projection in ["applications", "certificates", "qrs", "cards", "lifecycle"] {
        fresh(&api, projection).await?;
        let lists: serde_json::Map<String, serde_json::Value> = api
            .office
            .store()
            .doc_counts(projection)
            .await?
            .into_iter()
            .map(|(list, n)| (list, n.into()))
            .collect();
        counts.insert(projection.into(), lists.into());
    }
    Ok(HttpResponse::Ok().json(WorkLists {
        counts: counts.into(),
    }))
}
