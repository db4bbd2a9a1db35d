//! `hpki serve`: the HTTP server: the operational endpoints and the JSON API (`crate::api`);
//! the pages of the later issues hang on the same `App`.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::json;

use crate::api::Api;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

/// Binds and returns the server (not yet awaited) and the port it got.
pub fn build(
    state: AppState,
    api: Api,
    portal: crate::portal::Portal,
    console: crate::console::Console,
    listen: &str,
) -> std::io::Result<(Server, u16)> {
    let data = web::Data::new(state);
    let api_data = web::Data::new(api.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(api_data.clone())
            .configure(|cfg| crate::api::configure(cfg, &api))
            .configure(|cfg| crate::portal::routes(cfg, &portal))
            .configure(|cfg| crate::console::routes(cfg, &console))
            .wrap(actix_web::middleware::from_fn(observe))
            .route("/", web::get().to(front_door))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
    })
    .bind(listen)?;
    let port = server.addrs().first().map_or(0, |a| a.port());
    Ok((server.run(), port))
}

/// Counts and times every request. Requests are labelled and logged by their route pattern
/// (`/r/{token}`), never by the path itself, so secrets in URLs stay out of logs and metrics.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let response = next.call(req).await?;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(%method, %route, status, ms = seconds * 1000.0, "request");
    if let Some(metrics) = metrics {
        metrics.observe_request(&method, &route, status, seconds);
    }
    Ok(response)
}

/// The address the README gives (`http://127.0.0.1:8080`) leads to the staff console, whose
/// own front page sends a visitor on to its sign-in or dashboard. Subscribers never come here:
/// they arrive by their QR's link (`/r/…`) or the portal's addresses.
async fn front_door() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, "/console/"))
        .finish()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

/// Ready when the database answers, every migration is applied and every projection has
/// caught up with the head of the log.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.store.ping().await.is_ok();
    let migrations = database && state.store.migrations_applied().await.unwrap_or(false);
    let mut lagging = Vec::new();
    if database {
        match crate::projection_runner::status(&state.store).await {
            Ok(all) => lagging.extend(all.iter().filter(|s| s.position < s.head).map(|s| s.name)),
            Err(_) => lagging.push("(unreadable)"),
        }
    }
    let ready = database && migrations && lagging.is_empty();
    let body = json!({
        "ready": ready,
        "database": database,
        "migrations_applied": migrations,
        "projections_behind": lagging,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(all) = crate::projection_runner::status(&state.store).await {
        for s in all {
            state
                .metrics
                .set_projection_lag(s.name, s.head - s.position);
        }
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render(state.store.appended()))
}
