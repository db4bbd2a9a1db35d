//! Administration and audit: staff accounts, the authorities' settings, the integrity check,
//! checkpoints, the export and the state as of an instant.

use actix_web::{HttpRequest, HttpResponse, web};
use hpki_events::vocabulary::{ReissueChannel, Role};
use serde_json::json;

use super::jobs::Outcome;
use super::{Console, Form, or_page};
use crate::problem::{OfficeError, Problem};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/staff", web::get().to(staff))
        .route("/staff", web::post().to(create))
        .route("/staff/{name}/{action}", web::post().to(change))
        .route("/settings", web::get().to(settings))
        .route("/settings/{authority}", web::post().to(change_settings))
        .route("/audit", web::get().to(audit))
        .route("/audit/{action}", web::post().to(audit_action));
}

/// Staff accounts: administrators change them; auditors read them.
async fn staff(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(
        console
            .reader(&req, &[Role::Administrator, Role::Auditor])
            .await
    );
    let now = console.inner.directory.now();
    match console.inner.directory.accounts().await {
        Ok(accounts) => {
            let rows: Vec<_> = accounts
                .iter()
                .map(|a| {
                    json!({
                        "name": a.name, "display_name": a.display_name, "roles": a.roles,
                        "mail_house": a.mail_house, "disabled": a.disabled,
                        "locked": a.locked_at(now),
                        "locked_until": a.locked_until.map(hpki_events::envelope::format_time),
                        "set_up": a.set_up(), "passkeys": a.passkeys.len(),
                        "last_sign_in": a.last_sign_in.map(hpki_events::envelope::format_time),
                    })
                })
                .collect();
            console.page(
                &req,
                Some(&who),
                "staff.html",
                "title_staff",
                json!({
                    "accounts": rows,
                    "roles": Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    "mail_houses": console.inner.directory.mail_houses(),
                }),
            )
        }
        Err(e) => console.failed(&req, Some(&who), e),
    }
}

fn roles_of(form: &Form) -> Result<Vec<Role>, Problem> {
    form.all("roles")
        .into_iter()
        .map(|r| {
            Role::parse(r).ok_or_else(|| {
                Problem::new(
                    422,
                    "bad_role",
                    format!("役割「{r}」はありません"),
                    format!("there is no role {r:?}"),
                )
                .field("roles")
            })
        })
        .collect()
}

/// Shows a secret (a setup link, an API token) once, on a page that is not cached.
fn shown_once(
    console: &Console,
    req: &HttpRequest,
    who: &super::Who,
    kind: &str,
    name: &str,
    secret: &str,
) -> HttpResponse {
    console.page(
        req,
        Some(who),
        "shown_once.html",
        "title_shown_once",
        json!({"kind": kind, "name": name, "secret": secret}),
    )
}

async fn create(console: web::Data<Console>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let form = Form::parse(&body);
    let who = or_page!(console.actor(&req, &form, &[Role::Administrator]).await);
    let roles = match roles_of(&form) {
        Ok(r) => r,
        Err(p) => return console.problem(&req, Some(&who), &p),
    };
    let mail_house = Some(form.text("mail_house")).filter(|m| !m.is_empty());
    match console
        .inner
        .directory
        .create(
            form.text("name"),
            form.text("display_name"),
            &roles,
            mail_house,
            &who.account.actor(),
        )
        .await
    {
        Ok(link) => shown_once(
            &console,
            &req,
            &who,
            "setup_link",
            form.text("name"),
            &link.url,
        ),
        Err(e) => console.failed(&req, Some(&who), e),
    }
}

async fn change(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let form = Form::parse(&body);
    let who = or_page!(console.actor(&req, &form, &[Role::Administrator]).await);
    let (name, action) = path.into_inner();
    let directory = &console.inner.directory;
    let actor = who.account.actor();
    let result: Result<&str, OfficeError> = match action.as_str() {
        "roles" => match roles_of(&form) {
            Ok(roles) => {
                let house = Some(form.text("mail_house")).filter(|m| !m.is_empty());
                directory
                    .change_roles(&name, &roles, house, &actor)
                    .await
                    .map(|_| "done_roles")
            }
            Err(p) => Err(p.into()),
        },
        "unlock" => directory
            .unlock(&name, &actor)
            .await
            .map(|_| "done_unlocked"),
        "disable" => {
            let done = directory.disable(&name, form.text("reason"), &actor).await;
            if done.is_ok() {
                // Whoever is signed in to it is signed out now.
                console.inner.sessions.end_where(
                    |s| matches!(&s.stage, super::Stage::SignedIn { name: n } if *n == name),
                );
            }
            done.map(|_| "done_disabled")
        }
        "setup-link" => {
            return match directory.reissue_setup_link(&name, &actor).await {
                Ok(link) => shown_once(&console, &req, &who, "setup_link", &name, &link.url),
                Err(e) => console.failed(&req, Some(&who), e),
            };
        }
        "token" => {
            return match directory.issue_token(&name, &actor).await {
                Ok(token) => shown_once(&console, &req, &who, "api_token", &name, &token),
                Err(e) => console.failed(&req, Some(&who), e),
            };
        }
        _ => Err(Problem::not_found("操作", "the action").into()),
    };
    console.decided(&req, &who, result, "/console/staff")
}

/// The authorities' settings in force: administrators change the managed ones (each change
/// recorded in the log); auditors read them and their history.
async fn settings(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(
        console
            .reader(&req, &[Role::Administrator, Role::Auditor])
            .await
    );
    let settings = console.office().settings();
    // Another process may have changed them since this one last looked.
    if let Err(e) = settings.refresh(console.office().store()).await {
        return console.failed(&req, Some(&who), e.into());
    }
    let authorities: Vec<_> = console
        .office()
        .authorities()
        .iter()
        .map(|(id, a)| {
            let overridden: serde_json::Map<_, _> = settings
                .overridden(id)
                .into_iter()
                .map(|(field, c)| (field.to_owned(), json!({"actor": c.actor, "at": c.at})))
                .collect();
            json!({
                "id": id, "version": settings.version(id),
                "role": a.role, "profession": a.profession,
                "crl_url": a.crl_url, "cps_uri": a.cps_uri, "policy_oid": a.policy_oid,
                "name_ja": a.name_ja, "name_en": a.name_en,
                // In the form's order.
                "managed": [
                    ["name_ja", a.name_ja], ["name_en", a.name_en],
                    ["contact_ja", a.contact_ja], ["contact_en", a.contact_en],
                    ["password_hint_ja", a.password_hint_ja],
                    ["password_hint_en", a.password_hint_en],
                ],
                "reissue_channels": a.reissue_channels, "validity_years": a.validity_years,
                "overridden": overridden,
                "history": settings.history(id).into_iter().rev().collect::<Vec<_>>(),
            })
        })
        .collect();
    let rules = console.inner.directory.rules();
    console.page(&req, Some(&who), "settings.html", "title_settings", json!({
        "authorities": authorities,
        "channels": ReissueChannel::ALL,
        "validity": [crate::settings::VALIDITY_YEARS.start(), crate::settings::VALIDITY_YEARS.end()],
        "console": {"idle_minutes": rules.idle_minutes, "max_failures": rules.max_failures,
                    "lockout_minutes": rules.lockout_minutes, "setup_link_hours": rules.setup_link_hours,
                    "password_min_chars": rules.password_min_chars},
    }))
}

/// An administrator's change to one authority's managed settings.
async fn change_settings(
    console: web::Data<Console>,
    req: HttpRequest,
    authority: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let form = Form::parse(&body);
    let who = or_page!(console.actor(&req, &form, &[Role::Administrator]).await);
    let result = match settings_form(&form) {
        Ok((version, proposed)) => console
            .office()
            .settings()
            .change(
                console.office().store(),
                &authority,
                version,
                &proposed,
                &who.account.actor(),
            )
            .await
            .map(|changed| {
                if changed {
                    "done_settings"
                } else {
                    "done_no_change"
                }
            }),
        Err(p) => Err(p.into()),
    };
    console.decided(&req, &who, result, "/console/settings")
}

/// The settings form: the version it was made from, and every managed field.
fn settings_form(form: &Form) -> Result<(i64, crate::settings::Proposed), Problem> {
    let version = form.text("version").parse::<i64>().map_err(|_| {
        Problem::new(
            422,
            "bad_version",
            "フォームの版（version）が読めません。画面を開き直してください",
            "the form's version cannot be read; open the page again",
        )
        .field("version")
    })?;
    let reissue_channels = form
        .all("reissue_channels")
        .into_iter()
        .map(|c| {
            ReissueChannel::ALL
                .into_iter()
                .find(|known| known.as_str() == c)
                .ok_or_else(|| {
                    Problem::new(
                        422,
                        "bad_channel",
                        format!("再発行の受付方法「{c}」はありません"),
                        format!("there is no reissue channel {c:?}"),
                    )
                    .field("reissue_channels")
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let text = |key: &str| form.text(key).to_owned();
    Ok((
        version,
        crate::settings::Proposed {
            name_ja: text("name_ja"),
            name_en: text("name_en"),
            contact_ja: text("contact_ja"),
            contact_en: text("contact_en"),
            password_hint_ja: text("password_hint_ja"),
            password_hint_en: text("password_hint_en"),
            reissue_channels,
            validity_years: text("validity_years"),
            reason: text("reason"),
        },
    ))
}

async fn audit(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let who = or_page!(
        console
            .reader(&req, &[Role::Auditor, Role::Administrator])
            .await
    );
    let store = console.office().store();
    let (checkpoints, head) = match (store.checkpoints().await, store.head().await) {
        (Ok(c), Ok(h)) => (c, h),
        (Err(e), _) | (_, Err(e)) => return console.failed(&req, Some(&who), e.into()),
    };
    let rows: Vec<_> = checkpoints
        .iter()
        .rev()
        .take(50)
        .map(|c| {
            json!({"id": c.id, "position": c.position, "hash": hex::encode(&c.hash),
                        "signed_at": c.signed_at, "key_id": c.key_id})
        })
        .collect();
    console.page(
        &req,
        Some(&who),
        "audit.html",
        "title_audit",
        json!({
            "checkpoints": rows, "total_checkpoints": checkpoints.len(),
            "head": {"position": head.position, "hash": head.hash.to_hex()},
            "now": hpki_events::envelope::format_time(console.inner.directory.now()),
        }),
    )
}

/// The audit's operations. Each reads the log and changes nothing but the checkpoint table
/// (a checkpoint) or files of its own (an export, a replay); auditors and administrators run
/// them.
async fn audit_action(
    console: web::Data<Console>,
    req: HttpRequest,
    action: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let form = Form::parse(&body);
    let roles = [Role::Auditor, Role::Administrator];
    let who = or_page!(console.actor(&req, &form, &roles).await);
    let store = console.office().store().clone();
    let total = store.head().await.map_or(0, |h| h.position);
    let data_dir = console.inner.config.data_dir.clone();
    match action.as_str() {
        "verify" => {
            let key = console.inner.audit_key.public();
            console.start_job(&who, "job_verify", total, move |job| async move {
                let progress = |at: i64| job.progress(at);
                match crate::audit::verify(&store, &key, &progress).await {
                    Ok(summary) => {
                        job.progress(summary.events);
                        Ok(Outcome::Done {
                            message: "job_verify_done".into(),
                            values: json!({"events": summary.events, "checkpoints": summary.checkpoints,
                                           "head": summary.head.to_hex()}),
                            file: None,
                        })
                    }
                    Err(crate::audit::VerifyError::Tampered(t)) => Err(Problem::new(
                        409,
                        "tampered",
                        format!("記録が改ざんされています: 位置 {} — {}", t.position, t.what),
                        format!("the log has been altered: position {}: {}", t.position, t.what),
                    )
                    .into()),
                    Err(e) => Err(OfficeError::Internal(e.into())),
                }
            })
        }
        "checkpoint" => {
            match crate::audit::checkpoint(
                &store,
                &console.inner.audit_key,
                console.office().clock().as_ref(),
            )
            .await
            {
                Ok(_) => console.done(&who, "done_checkpoint", "/console/audit"),
                Err(e) => console.failed(&req, Some(&who), e.into()),
            }
        }
        "export" => console.start_job(&who, "job_export", total, move |job| async move {
            let dir = data_dir.join("exports");
            std::fs::create_dir_all(&dir).map_err(anyhow::Error::from)?;
            let path = dir.join(format!("events-{}.jsonl", job.id));
            let mut out =
                std::io::BufWriter::new(std::fs::File::create(&path).map_err(anyhow::Error::from)?);
            let progress = |at: i64| job.progress(at);
            let count = crate::export::export(&store, &mut out, &progress).await?;
            std::io::Write::flush(&mut out).map_err(anyhow::Error::from)?;
            job.progress(count);
            Ok(Outcome::Done {
                message: "job_export_done".into(),
                values: json!({"events": count}),
                file: Some((
                    path,
                    "application/x-ndjson".into(),
                    "hpki-events.jsonl".into(),
                )),
            })
        }),
        "as-of" => {
            let text = form.text("as_of");
            let Some(as_of) = parse_instant(text) else {
                return console.problem(
                    &req,
                    Some(&who),
                    &Problem::new(
                        422,
                        "bad_time",
                        format!(
                            "「{text}」は日時として読めません（例: 2026-12-01T09:00、日本時間）"
                        ),
                        format!("{text:?} is not a time (e.g. 2026-12-01T09:00, Japan time)"),
                    )
                    .field("as_of"),
                );
            };
            console.start_job(&who, "job_as_of", total, move |job| async move {
                let dir = data_dir.join("replays");
                std::fs::create_dir_all(&dir).map_err(anyhow::Error::from)?;
                let path = dir.join(format!("as-of-{}.db", job.id));
                let progress = |at: i64| job.progress(at);
                let replay = crate::projection_runner::replay_as_of(&store, as_of, &path, &progress).await?;
                job.progress(replay.position);
                let counts = replay_counts(&path).await?;
                Ok(Outcome::Done {
                    message: "job_as_of_done".into(),
                    values: json!({"as_of": crate::clock::show_jst(as_of), "position": replay.position,
                                   "documents": replay.documents, "counts": counts}),
                    file: Some((path, "application/vnd.sqlite3".into(), "as-of.db".into())),
                })
            })
        }
        _ => console.problem(&req, Some(&who), &Problem::not_found("操作", "the action")),
    }
}

/// A time typed on the page: `datetime-local` (read in JST) or RFC 3339.
fn parse_instant(text: &str) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    let with_seconds = if text.len() == 16 {
        format!("{text}:00")
    } else {
        text.to_owned()
    };
    time::OffsetDateTime::parse(&format!("{with_seconds}+09:00"), &Rfc3339).ok()
}

/// The work-list counts of a replay file: what the lists held at that instant.
async fn replay_counts(path: &std::path::Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await?;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT projection, list, count(*) FROM read_models
         WHERE projection IN ('applications', 'lifecycle', 'qrs', 'outbox')
         GROUP BY projection, list ORDER BY projection, list",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(rows
        .into_iter()
        .map(|(p, l, n)| json!({"projection": p, "list": l, "count": n}))
        .collect())
}
