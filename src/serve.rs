//! Starting the back office: the store, the projection runner, the checkpoint schedule and the
//! HTTP server, from one configuration.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::Api;
use crate::audit::{self, AuditKey};
use crate::clock::{JST, SharedClock};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::office::Office;
use crate::projection_runner;
use crate::secrets::{Kek, Secret};
use crate::store::{Store, redact_url};

/// Opens the store named by the configuration, with a clear message when it cannot.
pub async fn open_store(config: &Config, clock: SharedClock) -> anyhow::Result<Store> {
    Store::open(&config.database_url, clock)
        .await
        .with_context(|| format!("opening the database {}", redact_url(&config.database_url)))
}

/// Reads the audit key, creating a development key (loudly) on first start.
pub fn audit_key(config: &Config) -> anyhow::Result<AuditKey> {
    let (key, generated) = AuditKey::load_or_generate(&config.audit.key_file)?;
    if generated {
        tracing::warn!(
            path = %config.audit.key_file.display(),
            "GENERATED A NEW AUDIT KEY: fine for development; in production provision audit.key_file and keep its public half elsewhere"
        );
    }
    Ok(key)
}

/// Each authority's CA, generating development CAs (loudly) where none are configured.
pub fn authority_cas(
    config: &Config,
    clock: &dyn crate::clock::Clock,
) -> anyhow::Result<std::collections::BTreeMap<String, crate::pki::Ca>> {
    let today = clock.now().to_offset(crate::clock::JST).date();
    let (cas, warnings) =
        crate::pki::load_authorities(&config.authorities, &config.data_dir.join("keys"), today)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(cas)
}

/// A secret file, generated (with a warning) on first start.
fn secret(path: &std::path::Path, what: &str) -> anyhow::Result<Secret> {
    let (secret, generated) = Secret::load_or_generate(path)?;
    if generated {
        tracing::warn!(
            path = %path.display(),
            "GENERATED A NEW {what}: fine for development; in production provision it and back it up apart from the database"
        );
    }
    Ok(secret)
}

/// The registration office over `store`: authorities and their CAs, the key-encryption key
/// and the QR secret, all from the configuration (development ones made on first start); the
/// authorities' settings as the configuration sets them and the log has changed them.
pub async fn office(config: &Config, store: Store, clock: SharedClock) -> anyhow::Result<Office> {
    let cas = authority_cas(config, clock.as_ref())?;
    let kek = Kek::new(secret(&config.keys.kek_file, "KEY-ENCRYPTION KEY")?);
    let qr_secret = secret(&config.keys.qr_secret_file, "QR SECRET")?;
    let office = Office::new(store, config, cas, kek, qr_secret, clock)?;
    office
        .settings()
        .refresh(office.store())
        .await
        .context("reading the authorities' settings from the log")?;
    Ok(office)
}

/// Keeps `size` second-certificate key pairs generated ahead of issuance.
async fn fill_key_pool(office: Office, size: usize) {
    loop {
        match office.store().unclaimed_keys().await {
            Ok(have) if (have as usize) < size => {
                let want = (size - have as usize).min(8);
                if let Err(error) =
                    crate::office::generate_keys(office.store(), office.kek(), want, &|_, _| {})
                        .await
                {
                    tracing::error!(error = %error, "filling the key pool failed");
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
            Ok(_) => tokio::time::sleep(Duration::from_secs(5)).await,
            Err(error) => {
                tracing::error!(error = %error, "reading the key pool failed");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}

/// Reads the authorities' settings other processes changed (this one's own changes count at
/// once).
async fn follow_settings(office: Office, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(error) = office.settings().refresh(office.store()).await {
            tracing::warn!(error = %error, "reading the authorities' settings failed");
        }
    }
}

/// A running back office.
pub struct Running {
    pub port: u16,
    /// The first administrator's setup link, when this start created it.
    pub setup_link: Option<String>,
    pub store: Store,
    pub server: actix_web::dev::ServerHandle,
    pub done: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The background work (projections, processors, schedules), stopped when this is
    /// dropped: a back office dropped in a test does not go on writing (CRLs into a folder
    /// already removed, say) while the next one runs.
    tasks: Vec<tokio::task::AbortHandle>,
}

/// Dropped, a back office stops whole: its background work is aborted and its HTTP server told
/// to stop at once (not gracefully), so that a dropped one no longer answers on its port.
/// `done` resolves once the server has stopped.
impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // `stop` sends the command when called; the future it returns only waits for the
        // server to finish, which a `Drop` cannot do. A server already stopped ignores it.
        drop(self.server.stop(false));
    }
}

pub async fn start(config: &Config, clock: SharedClock) -> anyhow::Result<Running> {
    let schedule =
        cron::Schedule::from_str(&config.audit.checkpoint_schedule).with_context(|| {
            format!(
                "audit.checkpoint_schedule {:?} is not a cron expression",
                config.audit.checkpoint_schedule
            )
        })?;
    let expiry =
        cron::Schedule::from_str(&config.lifecycle.expiry_schedule).with_context(|| {
            format!(
                "lifecycle.expiry_schedule {:?} is not a cron expression",
                config.lifecycle.expiry_schedule
            )
        })?;
    let store = open_store(config, clock.clone()).await?;
    let key = audit_key(config)?;
    let office = office(config, store.clone(), clock.clone()).await?;
    let poll = Duration::from_millis(config.projections.poll_interval_ms.max(10));
    let mut tasks = vec![
        tokio::spawn(fill_key_pool(office.clone(), config.keys.pool_size)).abort_handle(),
        tokio::spawn(run_expiry(office.clone(), clock.clone(), expiry)).abort_handle(),
        tokio::spawn(projection_runner::follow(
            store.clone(),
            hpki_projections::all(),
            poll,
        ))
        .abort_handle(),
        tokio::spawn(follow_settings(
            office.clone(),
            poll.max(Duration::from_secs(1)),
        ))
        .abort_handle(),
        tokio::spawn(sign_checkpoints(
            store.clone(),
            key.clone(),
            clock.clone(),
            schedule,
        ))
        .abort_handle(),
    ];

    let state = AppState {
        store: store.clone(),
        metrics: Arc::new(Metrics::default()),
    };
    let processors = crate::processors::Processors::new(&office, config)?;
    tasks.extend(processors.spawn(&store, config));
    let directory = crate::staff::Directory::new(store.clone(), clock.clone(), config)?;
    directory.provision(config).await?;
    let setup_link = directory.first_start().await?.map(|link| link.url);
    if let Some(url) = &setup_link {
        // Printed, never logged: the link is a secret that works once.
        eprintln!(
            "\n  最初の管理者アカウント admin のセットアップ用リンク（一度だけ有効、{} 時間以内）:\n  The first administrator's one-time setup link (account admin, valid {} hours):\n\n    {url}\n",
            config.console.setup_link_hours, config.console.setup_link_hours
        );
    }
    let api = Api::new(
        office.clone(),
        config,
        processors.clone(),
        directory.clone(),
    );
    let console = crate::console::Console::new(office.clone(), directory, processors, key, config)?;
    let portal = crate::portal::Portal::new(office, config, api.password_limit())?;
    let (server, port) = http::build(state, api, portal, console, &config.server.listen)
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let handle = server.handle();
    tracing::info!(
        port,
        backend = store.db().backend(),
        "the back office is serving"
    );
    Ok(Running {
        port,
        setup_link,
        store,
        server: handle,
        done: tokio::spawn(server),
        tasks,
    })
}

/// How long until the schedule's next time after now (read in JST); `None` when it has none.
fn until_next(clock: &SharedClock, schedule: &cron::Schedule) -> Option<Duration> {
    let now = clock.now();
    let now_jst = chrono::DateTime::from_timestamp(now.unix_timestamp(), now.nanosecond())
        .expect("in range")
        .with_timezone(&chrono::FixedOffset::east_opt(JST.whole_seconds()).expect("valid"));
    let next = schedule.after(&now_jst).next()?;
    Some(Duration::from_millis(
        (next.timestamp_millis() - now_jst.timestamp_millis()).max(0) as u64,
    ))
}

/// Runs the expiry job (QRs expired, reminders due, proposals expired) at every time the
/// schedule names. A QR is refused after its last usable day even when this has not run.
async fn run_expiry(office: Office, clock: SharedClock, schedule: cron::Schedule) {
    while let Some(wait) = until_next(&clock, &schedule) {
        tokio::time::sleep(wait).await;
        match office.run_expiry().await {
            Ok(report) => tracing::info!(
                qrs_expired = report.qrs_expired,
                reminders_due = report.reminders_due,
                proposals_expired = report.proposals_expired,
                "ran the expiry job"
            ),
            Err(error) => tracing::error!(error = %error, "the expiry job failed"),
        }
    }
}

/// Signs a checkpoint at every time the schedule names (read in JST).
async fn sign_checkpoints(
    store: Store,
    key: AuditKey,
    clock: SharedClock,
    schedule: cron::Schedule,
) {
    while let Some(wait) = until_next(&clock, &schedule) {
        tokio::time::sleep(wait).await;
        match audit::checkpoint(&store, &key, clock.as_ref()).await {
            Ok(cp) => tracing::info!(
                position = cp.position,
                id = cp.id,
                "signed a checkpoint of the log"
            ),
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "signing a checkpoint failed")
            }
        }
    }
}
