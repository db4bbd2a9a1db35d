//! Long operations started from the console (importing applications, making a print batch,
//! checking the log, exporting it, replaying it as of an instant): each runs in the background
//! and its page shows how far it got, refreshing itself each second until it is done, so no
//! page waits on it. Jobs live in this instance's memory; what they do is in the log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use hpki_events::vocabulary::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Console, Form, Who, or_page, path_id};
use crate::office::ImportMode;
use crate::portal::see_other;
use crate::problem::{OfficeError, Problem};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/jobs/{id}", web::get().to(job_page))
        .route("/jobs/{id}/download", web::get().to(download));
}

/// How a job ended.
#[derive(Clone)]
pub enum Outcome {
    /// A message key and values for the page; a file to download, if any.
    Done {
        message: String,
        values: Value,
        file: Option<(PathBuf, String, String)>,
    },
    Failed(Problem),
}

pub struct Job {
    pub id: Uuid,
    /// The message key naming the job.
    pub kind: &'static str,
    /// Who started it: only they (or an auditor, for audit jobs) see it.
    pub owner: String,
    pub done: AtomicI64,
    pub total: AtomicI64,
    pub outcome: Mutex<Option<Outcome>>,
}

impl Job {
    pub fn progress(&self, done: i64) {
        self.done.store(done, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Jobs {
    all: Mutex<HashMap<Uuid, Arc<Job>>>,
}

impl Console {
    /// Starts `work` in the background and sends the member to its page.
    pub(super) fn start_job<F, Fut>(
        &self,
        who: &Who,
        kind: &'static str,
        total: i64,
        work: F,
    ) -> HttpResponse
    where
        F: FnOnce(Arc<Job>) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<Outcome, OfficeError>> + 'static,
    {
        let job = Arc::new(Job {
            id: Uuid::now_v7(),
            kind,
            owner: who.account.name.clone(),
            done: AtomicI64::new(0),
            total: AtomicI64::new(total),
            outcome: Mutex::new(None),
        });
        self.inner
            .jobs
            .all
            .lock()
            .expect("not poisoned")
            .insert(job.id, job.clone());
        let running = job.clone();
        actix_web::rt::spawn(async move {
            let outcome = match work(running.clone()).await {
                Ok(outcome) => outcome,
                Err(OfficeError::Problem(p)) => Outcome::Failed(p),
                Err(OfficeError::Internal(e)) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        job = running.kind,
                        "a console job failed"
                    );
                    Outcome::Failed(Problem::internal())
                }
            };
            *running.outcome.lock().expect("not poisoned") = Some(outcome);
        });
        see_other(&format!("/console/jobs/{}", job.id))
    }

    fn job(&self, who: &Who, id: Uuid) -> Option<Arc<Job>> {
        let job = self
            .inner
            .jobs
            .all
            .lock()
            .expect("not poisoned")
            .get(&id)
            .cloned()?;
        (job.owner == who.account.name).then_some(job)
    }
}

async fn job_page(
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let who = or_page!(console.who(&req).await);
    let id = or_page!(path_id(&console, &req, &who, &id));
    let Some(job) = console.job(&who, id) else {
        return console.problem(&req, Some(&who), &Problem::not_found("処理", "the job"));
    };
    let lang = crate::portal::pages::Lang::of(&req);
    let outcome = job.outcome.lock().expect("not poisoned").clone();
    let (state, result) = match &outcome {
        None => ("running", json!(null)),
        Some(Outcome::Done {
            message,
            values,
            file,
        }) => {
            let mut text = console.text(lang, message);
            if let Value::Object(o) = values {
                for (k, v) in o {
                    let shown = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    text = text.replace(&format!("{{{k}}}"), &shown);
                }
            }
            (
                "done",
                json!({"message": text, "values": values, "download": file.is_some()}),
            )
        }
        Some(Outcome::Failed(p)) => (
            "failed",
            json!({"message": lang.pick(&p.message), "code": p.code,
                   "details": p.details.iter().map(|d| lang.pick(&d.message)).collect::<Vec<_>>()}),
        ),
    };
    console.page(
        &req,
        Some(&who),
        "job.html",
        "title_job",
        json!({"job": {"id": job.id, "kind": console.text(lang, job.kind),
               "done": job.done.load(Ordering::Relaxed), "total": job.total.load(Ordering::Relaxed),
               "state": state, "result": result}}),
    )
}

async fn download(
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let who = or_page!(console.who(&req).await);
    let id = or_page!(path_id(&console, &req, &who, &id));
    let file =
        console
            .job(&who, id)
            .and_then(|job| match &*job.outcome.lock().expect("not poisoned") {
                Some(Outcome::Done { file, .. }) => file.clone(),
                _ => None,
            });
    let Some((path, content_type, filename)) = file else {
        return console.problem(
            &req,
            Some(&who),
            &Problem::not_found("ファイル", "the file"),
        );
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => HttpResponse::Ok()
            .content_type(content_type)
            .insert_header((
                "Content-Disposition",
                format!("attachment; filename=\"{filename}\""),
            ))
            .insert_header(("Cache-Control", "no-store"))
            .body(bytes),
        Err(e) => console.failed(
            &req,
            Some(&who),
            anyhow::anyhow!("reading {}: {e}", path.display()).into(),
        ),
    }
}

/// A multipart upload: its form fields and its one file.
pub struct Upload {
    pub form: Form,
    pub file: Vec<u8>,
}

impl Console {
    /// A file sent with a form (at most `intake.csv_max_bytes`), read whole, then checked as
    /// every change is (origin, session, token, one of `roles`).
    pub(super) async fn uploaded(
        &self,
        req: &HttpRequest,
        payload: actix_multipart::Multipart,
        roles: &[Role],
    ) -> Result<(Who, Upload), HttpResponse> {
        let limit = self.inner.config.intake.csv_max_bytes;
        let upload = match read_upload(payload, limit).await {
            Ok(upload) => upload,
            Err(p) => {
                let who = self.who(req).await.ok();
                return Err(self.problem(req, who.as_ref(), &p));
            }
        };
        let who = self.actor(req, &upload.form, roles).await?;
        Ok((who, upload))
    }
}

/// Reads a multipart form (fields and a `file` of at most `limit` bytes).
async fn read_upload(
    mut payload: actix_multipart::Multipart,
    limit: usize,
) -> Result<Upload, Problem> {
    let mut fields = Vec::new();
    let mut file = None;
    let unreadable = |e: String| {
        Problem::new(
            400,
            "bad_upload",
            "送信されたファイルを読めません",
            format!("the upload cannot be read: {e}"),
        )
    };
    while let Some(field) = payload.next().await {
        let mut field = field.map_err(|e| unreadable(e.to_string()))?;
        let name = field.name().unwrap_or_default().to_owned();
        let max = if name == "file" { limit } else { 4096 };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| unreadable(e.to_string()))?;
            if bytes.len() + chunk.len() > max {
                return Err(Problem::new(
                    413,
                    "too_large",
                    format!("ファイルが大きすぎます（上限{max}バイト）"),
                    format!("the file is larger than {max} bytes"),
                )
                .field(&name));
            }
            bytes.extend_from_slice(&chunk);
        }
        if name == "file" {
            file = Some(bytes);
        } else {
            fields.push((name, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    let file = file.filter(|f| !f.is_empty()).ok_or_else(|| {
        Problem::new(422, "no_file", "ファイルを選んでください", "choose a file").field("file")
    })?;
    Ok(Upload {
        form: Form(fields),
        file,
    })
}

/// `POST /console/applications/import`: an association's CSV, imported in the background.
pub async fn import_applications(
    console: web::Data<Console>,
    req: HttpRequest,
    payload: actix_multipart::Multipart,
) -> HttpResponse {
    let (who, upload) = or_page!(console.uploaded(&req, payload, &[Role::Officer]).await);
    let mode = if upload.form.get("good_rows") == Some("on") {
        ImportMode::GoodRows
    } else {
        ImportMode::AllOrNothing
    };
    let office = console.office().clone();
    let actor = who.account.actor();
    console.start_job(&who, "job_import", 0, move |job| async move {
        let progress = |done: u64, total: u64| {
            job.total.store(total as i64, Ordering::Relaxed);
            job.progress(done as i64);
        };
        let report = office.import(&upload.file, mode, &actor, &progress).await?;
        Ok(Outcome::Done {
            message: "job_import_done".into(),
            values: json!({"rows": report.rows, "imported": report.imported,
                           "already": report.already_imported, "errors": report.errors.len()}),
            file: None,
        })
    })
}

/// `POST /console/print`: a print batch of an authority's waiting QRs.
pub async fn create_batch(
    console: web::Data<Console>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let form = Form::parse(&body);
    let who = or_page!(console.actor(&req, &form, &[Role::Officer]).await);
    let authority = form.text("authority").to_owned();
    let store = console.office().store().clone();
    let print = console.inner.processors.print.clone();
    let actor = who.account.actor();
    console.start_job(&who, "job_print", 1, move |job| async move {
        let made = crate::processors::exclusively(&store, "print", async {
            Ok(print.create(&authority, &actor).await)
        })
        .await?
        .ok_or_else(|| crate::api::busy("print"))??;
        job.progress(1);
        Ok(Outcome::Done {
            message: if made.is_some() {
                "job_print_done".into()
            } else {
                "job_print_nothing".into()
            },
            values: made.map_or(
                json!({}),
                |m| json!({"cards": m.cards, "batch_id": m.batch_id}),
            ),
            file: None,
        })
    })
}
