//! Feeds the log to the projections. Each projection's documents and checkpoint move in one
//! transaction, and the checkpoint only moves from the value the batch was read after, so a
//! crash or a second runner can neither skip nor repeat an event.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use hpki_events::RecordedEvent;
use hpki_projections::{MemoryModel, Projection};
use time::OffsetDateTime;

use crate::store::{SqliteStore, Store};

/// Events read per transaction when following the log.
const BATCH: i64 = 1_000;

/// [`catch_up`] for the projection named `name` (so a list read right after a command shows
/// it).
pub async fn catch_up_named(store: &Store, name: &str) -> anyhow::Result<i64> {
    let all = hpki_projections::all();
    let projection = all
        .iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| anyhow::anyhow!("no projection {name}"))?;
    catch_up(store, projection.as_ref()).await
}

/// Applies every event after the projection's checkpoint; returns the checkpoint reached.
pub async fn catch_up(store: &Store, projection: &dyn Projection) -> anyhow::Result<i64> {
    let name = projection.name();
    loop {
        let from = store.projection_checkpoint(name).await?;
        let page = store.read_page(from, BATCH).await?;
        let Some(last) = page.last() else {
            return Ok(from);
        };
        let mut changes = Vec::new();
        for row in &page {
            let event = row
                .decode()
                .with_context(|| format!("projection {name} cannot read the log"))?;
            changes.extend(projection.apply(&event));
        }
        // When another runner moved the checkpoint first, read again from where it is now.
        store
            .apply_projection(name, from, last.position, &changes)
            .await?;
    }
}

/// Follows the log for ever: woken by this process's appends, polling for other processes'.
pub async fn follow(store: Store, projections: Vec<Box<dyn Projection>>, poll: Duration) {
    let mut head = store.watch_head();
    loop {
        for projection in &projections {
            if let Err(error) = catch_up(&store, projection.as_ref()).await {
                tracing::error!(
                    projection = projection.name(),
                    error = format!("{error:#}"),
                    "a projection stopped"
                );
            }
        }
        let _ = tokio::time::timeout(poll, head.changed()).await;
    }
}

/// How far a projection has read.
pub struct Status {
    pub name: &'static str,
    pub position: i64,
    pub head: i64,
}

pub async fn status(store: &Store) -> anyhow::Result<Vec<Status>> {
    let head = store.head().await?.position;
    let mut out = Vec::new();
    for projection in hpki_projections::all() {
        let position = store.projection_checkpoint(projection.name()).await?;
        out.push(Status {
            name: projection.name(),
            position,
            head,
        });
    }
    Ok(out)
}

/// Folds the log into memory from position 1, stopping before the first event recorded after
/// `as_of` (reading to the end when `None`). Returns the models and the last row folded.
async fn fold(
    store: &Store,
    projections: &[Box<dyn Projection>],
    as_of: Option<OffsetDateTime>,
    progress: &dyn Fn(i64),
) -> anyhow::Result<(Vec<MemoryModel>, Option<RecordedEvent>)> {
    let mut models: Vec<MemoryModel> = projections.iter().map(|_| MemoryModel::default()).collect();
    let mut last = None;
    let mut events = std::pin::pin!(store.read_decoded(0));
    while let Some(event) = events.try_next().await? {
        if as_of.is_some_and(|as_of| event.recorded_at > as_of) {
            break;
        }
        for (projection, model) in projections.iter().zip(&mut models) {
            model.apply(projection.apply(&event));
        }
        if event.position % 100_000 == 0 {
            progress(event.position);
        }
        last = Some(event);
    }
    Ok((models, last))
}

/// Rebuilds projections from position 0 and swaps their documents in one transaction each.
pub async fn rebuild(
    store: &Store,
    only: Option<&str>,
    progress: &dyn Fn(i64),
) -> anyhow::Result<Vec<(&'static str, i64)>> {
    let projections: Vec<_> = hpki_projections::all()
        .into_iter()
        .filter(|p| only.is_none_or(|name| p.name() == name))
        .collect();
    if projections.is_empty() {
        let known: Vec<_> = hpki_projections::all().iter().map(|p| p.name()).collect();
        anyhow::bail!(
            "no projection is named {:?} (known: {})",
            only.unwrap_or_default(),
            known.join(", ")
        );
    }
    let (models, last) = fold(store, &projections, None, progress).await?;
    let position = last.map_or(0, |event| event.position);
    let mut done = Vec::new();
    for (projection, model) in projections.iter().zip(models) {
        store
            .replace_projection(projection.name(), &model.docs, position)
            .await?;
        done.push((projection.name(), position));
    }
    Ok(done)
}

/// Where a replay ended.
#[derive(Debug)]
pub struct Replay {
    pub path: PathBuf,
    pub position: i64,
    pub hash: String,
    pub documents: usize,
}

/// Rebuilds every projection as it stood at `as_of` into a new SQLite file at `out`; the live
/// read models are not touched.
pub async fn replay_as_of(
    store: &Store,
    as_of: OffsetDateTime,
    out: &Path,
    progress: &dyn Fn(i64),
) -> anyhow::Result<Replay> {
    if out.exists() {
        anyhow::bail!(
            "{} already exists; a replay writes a new file",
            out.display()
        );
    }
    let projections = hpki_projections::all();
    let (models, last) = fold(store, &projections, Some(as_of), progress).await?;
    let (position, hash) = last.map_or((0, hpki_events::GENESIS_HASH.to_hex()), |event| {
        (event.position, event.hash.to_hex())
    });

    let url = format!("sqlite://{}", out.display());
    let target = SqliteStore::connect(&url)
        .await
        .with_context(|| format!("creating {}", out.display()))?;
    let mut documents = 0;
    for (projection, model) in projections.iter().zip(&models) {
        documents += model.docs.len();
        target
            .replace_projection(projection.name(), &model.docs, position)
            .await?;
    }
    sqlx::query(
        "CREATE TABLE replay (as_of TEXT NOT NULL, position INTEGER NOT NULL, hash TEXT NOT NULL)",
    )
    .execute(&target.pool)
    .await?;
    sqlx::query("INSERT INTO replay VALUES (?1, ?2, ?3)")
        .bind(hpki_events::envelope::format_time(as_of))
        .bind(position)
        .bind(&hash)
        .execute(&target.pool)
        .await?;
    target.pool.close().await;
    Ok(Replay {
        path: out.to_owned(),
        position,
        hash,
        documents,
    })
}
