//! Feeds the log to the projections. Each projection's documents and checkpoint move in one
//! transaction, and the checkpoint only moves from the value the batch was read after, so a
//! crash or a second runner can neither skip nor repeat an event.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use hpki_events::RecordedEvent;
use hpki_projections::{Body, Change, Doc, Projection};
use time::OffsetDateTime;

use crate::store::{Spill, Store, StoreError, read_model_file};

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

/// Documents a fold keeps in memory before it writes them out to its spill. Bounds the memory
/// of a rebuild or replay whatever the size of the log: a document held is about 500 bytes, so
/// 100,000 are some 50 MB. The documents in steady use (each stream's row, say) must fit in it
/// with room to spare, or flushes keep writing them out and reading them back: with 20,000, a
/// replay of the benchmark's log (10,000 streams) wrote 2,000,001 rows to its spill for
/// 1,010,001 documents; with 100,000 it writes each once (BENCHMARKS.md, session 12).
const FOLD_CACHE_DOCS: usize = 100_000;

/// Every projection's documents while the log is folded: a bounded cache in front of a SQLite
/// `read_models` table (a replay's file, a rebuild's new read-model file or its scratch file).
/// When the cache is full, the documents not used again since they came in (or since the last
/// time it was full) are handed to the spill's writer thread, which writes them while the fold
/// goes on; the ones in use stay, so a document every few events touch (a stream's row) is
/// written once, not at every turn. A patch of a document already handed over reads it back first.
struct Folded<'a> {
    projections: &'a [Box<dyn Projection>],
    /// By projection. foldhash rather than SipHash: hashing the keys was 2% of a replay's
    /// instructions. Its seed is random per process, and the keys are the log's own stream
    /// and document names.
    cache: Vec<HashMap<String, Held, foldhash::fast::RandomState>>,
    cached: usize,
    /// Documents held before they are written out.
    limit: usize,
    spill: &'a Spill,
}

struct Held {
    /// `None` records that the document is absent (deleted, or never there).
    doc: Option<Doc<Body>>,
    /// Used again since it came in or since the cache was last full.
    again: bool,
}

impl<'a> Folded<'a> {
    fn new(projections: &'a [Box<dyn Projection>], spill: &'a Spill, limit: usize) -> Folded<'a> {
        Folded {
            projections,
            cache: projections.iter().map(|_| HashMap::default()).collect(),
            cached: 0,
            limit,
            spill,
        }
    }

    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), StoreError> {
        for (i, projection) in self.projections.iter().enumerate() {
            for change in projection.apply(event) {
                match change {
                    Change::Put { key, doc } => self.hold(i, key, Some(doc)),
                    Change::Delete { key } => self.hold(i, key, None),
                    Change::Patch { key, list, merge } => {
                        if let Some(held) = self.cache[i].get_mut(&key) {
                            held.again = true;
                        } else {
                            let doc = self.spill.doc(projection.name(), &key).await?;
                            self.cached += 1;
                            let held = Held { doc, again: false };
                            self.cache[i].insert(key.clone(), held);
                        }
                        let held = self.cache[i].get_mut(&key);
                        if let Some(doc) = held.and_then(|held| held.doc.as_mut()) {
                            doc.patch(list.as_deref(), &merge).map_err(|source| {
                                StoreError::Corrupt {
                                    position: 0,
                                    source,
                                }
                            })?;
                        }
                    }
                }
            }
        }
        if self.cached >= self.limit {
            self.flush(false).await?;
            // Nearly all in use: write everything, so memory stays bounded.
            if self.cached >= self.limit * 3 / 4 {
                self.flush(true).await?;
            }
        }
        Ok(())
    }

    fn hold(&mut self, projection: usize, key: String, doc: Option<Doc<Body>>) {
        match self.cache[projection].entry(key) {
            Entry::Occupied(mut held) => *held.get_mut() = Held { doc, again: true },
            Entry::Vacant(vacant) => {
                vacant.insert(Held { doc, again: false });
                self.cached += 1;
            }
        }
    }

    /// Hands the documents not used again since the last flush (`all`: every document) to the
    /// spill and forgets them; the others stay, counted as unused from now.
    async fn flush(&mut self, all: bool) -> Result<(), StoreError> {
        for (projection, cache) in self.projections.iter().zip(&mut self.cache) {
            // Emptied and the documents that stay put back, rather than the others taken out
            // one by one: a map whose entries are removed one by one keeps their places as
            // tombstones, and had to be rehashed whole again and again as it refilled.
            let mut docs = Vec::new();
            let mut kept = Vec::new();
            for (key, mut held) in cache.drain() {
                if all || !std::mem::replace(&mut held.again, false) {
                    docs.push((key, held.doc));
                } else {
                    kept.push((key, held));
                }
            }
            cache.extend(kept);
            self.cached -= docs.len();
            self.spill.write(projection.name(), docs).await?;
        }
        Ok(())
    }
}

/// Folds the log into `spill` from position 1, stopping before the first event recorded after
/// `as_of` (reading to the end when `None`). Returns the last event folded. Events are
/// streamed and documents written out in pages, so memory stays flat.
async fn fold(
    store: &Store,
    projections: &[Box<dyn Projection>],
    spill: &Spill,
    as_of: Option<OffsetDateTime>,
    progress: &dyn Fn(i64),
) -> anyhow::Result<Option<RecordedEvent>> {
    let mut folded = Folded::new(projections, spill, FOLD_CACHE_DOCS);
    let mut last = None;
    let mut pages = std::pin::pin!(store.read_decoded_pages(0));
    while let Some(page) = pages.try_next().await? {
        let before = page
            .iter()
            .take_while(|event| as_of.is_none_or(|as_of| event.recorded_at <= as_of))
            .count();
        for event in &page[..before] {
            folded.apply(event).await?;
            if event.position % 100_000 == 0 {
                progress(event.position);
            }
        }
        if before > 0 {
            last = Some(page[before - 1].clone());
        }
        if before < page.len() {
            break;
        }
    }
    folded.flush(true).await?;
    Ok(last)
}

/// Names the spill file a fold could not create.
fn creating<T>(spill: Result<T, StoreError>, path: &Path) -> anyhow::Result<T> {
    spill.with_context(|| format!("creating {}", path.display()))
}

/// Rebuilds projections from position 0 and swaps their documents in, all at once.
///
/// A rebuild of every projection on a SQLite file store folds the log into a new read-model
/// file and makes it the current one (`store::read_model_file`): nothing is copied. Otherwise
/// (one projection, PostgreSQL, an in-memory store) the fold is written to a scratch SQLite
/// file in the system's temporary folder (`TMPDIR`), then copied into the store in one
/// transaction.
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
    let names: Vec<&'static str> = projections.iter().map(|p| p.name()).collect();
    let swap = match only {
        None => store.read_models_swap()?,
        Some(_) => None,
    };
    let position = if let Some(swap) = swap {
        let spill = creating(Spill::create_read_models(swap.path()).await, swap.path())?;
        // Dropped on failure, the swap removes its file; the current one is left as it was.
        let (last, _) = fold_whole(store, &projections, spill, None, progress).await?;
        let position = last.map_or(0, |event| event.position);
        store.install_read_models(swap, &names, position).await?;
        position
    } else {
        let scratch = tempfile::tempdir().context("making a scratch folder for the rebuild")?;
        let path = scratch.path().join("rebuild.db");
        let spill = creating(store.rebuild_spill(&path).await, &path)?;
        let (last, _) = fold_whole(store, &projections, spill, None, progress).await?;
        let position = last.map_or(0, |event| event.position);
        store.replace_projections(&path, &names, position).await?;
        position
    };
    Ok(names.into_iter().map(|name| (name, position)).collect())
}

/// [`fold`], then the spill finished (committed and closed): the last event folded and the
/// documents written. On failure the spill is closed uncommitted, for its owner to remove.
async fn fold_whole(
    store: &Store,
    projections: &[Box<dyn Projection>],
    spill: Spill,
    as_of: Option<OffsetDateTime>,
    progress: &dyn Fn(i64),
) -> anyhow::Result<(Option<RecordedEvent>, i64)> {
    match fold(store, projections, &spill, as_of, progress).await {
        Ok(last) => Ok((last, spill.finish().await?)),
        Err(error) => {
            spill.abandon().await;
            Err(error)
        }
    }
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
    let spill = creating(Spill::create_read_models(out).await, out)?;
    let folded = fold_whole(store, &projections, spill, Some(as_of), progress).await;
    let (last, documents) = match folded {
        Ok(folded) => folded,
        Err(error) => {
            // Nothing half-written is left behind.
            read_model_file::remove_with_journals(out);
            return Err(error);
        }
    };
    let (position, hash) = last.map_or((0, hpki_events::GENESIS_HASH.to_hex()), |event| {
        (event.position, event.hash.to_hex())
    });
    let documents = documents as usize;
    // A read-model file like the live one, with the instant it stands at in a table of its own.
    let names: Vec<&'static str> = projections.iter().map(|p| p.name()).collect();
    let file = out.to_owned();
    let as_of_text = hpki_events::envelope::format_time(as_of);
    let replay_hash = hash.clone();
    tokio::task::spawn_blocking(move || {
        rusqlite::Connection::open(&file)
            .and_then(|conn| {
                conn.execute_batch(
                    "CREATE TABLE replay (as_of TEXT NOT NULL, position INTEGER NOT NULL, hash TEXT NOT NULL)",
                )?;
                conn.execute(
                    "INSERT INTO replay VALUES (?1, ?2, ?3)",
                    rusqlite::params![as_of_text, position, replay_hash],
                )?;
                conn.close().map_err(|(_, e)| e)
            })
            .with_context(|| format!("finishing {}", file.display()))?;
        read_model_file::seal(&file, &names, position)?;
        anyhow::Ok(())
    })
    .await??;
    Ok(Replay {
        path: out.to_owned(),
        position,
        hash,
        documents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpki_events::vocabulary::StaffUnlocked;
    use hpki_events::{Actor, Event, GENESIS_HASH, Metadata};
    use hpki_projections::MemoryModel;
    use serde_json::json;

    /// Answers the event at position `p` with the changes scripted for it.
    struct Scripted(Vec<Vec<Change>>);

    impl Projection for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn apply(&self, event: &RecordedEvent) -> Vec<Change> {
            self.0[event.position as usize].clone()
        }
    }

    fn event(position: i64) -> RecordedEvent {
        RecordedEvent {
            position,
            stream: "test".into(),
            version: position,
            event_id: uuid::Uuid::new_v4(),
            recorded_at: OffsetDateTime::UNIX_EPOCH,
            recorded_at_text: "1970-01-01T00:00:00.000000Z".into(),
            metadata: Metadata::new(Actor::system("test")),
            event: Event::StaffUnlocked(StaffUnlocked {}),
            hash: GENESIS_HASH,
        }
    }

    /// Puts, patches (of documents held and of documents already written out), deletes and
    /// puts again over 400 keys, with room for 3 to 300 documents: the spill ends holding what
    /// the in-memory reference holds.
    #[tokio::test]
    async fn a_fold_that_spills_ends_where_the_in_memory_fold_ends() {
        let mut script = Vec::new();
        for step in 0..6_000u64 {
            // A fixed pseudo-random walk (no seed to vary between runs).
            let n = step.wrapping_mul(2_654_435_761) % 10_000;
            let key = format!("k{:03}", (n / 7) % 400);
            script.push(vec![match n % 5 {
                0 | 1 => Change::Put {
                    key,
                    doc: Doc {
                        list: format!("l{}", n % 3),
                        sort_key: step.to_string(),
                        body: Body::from(&json!({"put": step, "n": n})),
                    },
                },
                2 | 3 => Change::Patch {
                    key,
                    list: (n % 2 == 0).then(|| "patched".to_owned()),
                    merge: json!({"patched": step, "n": null}),
                },
                _ => Change::Delete { key },
            }]);
        }
        let mut reference = MemoryModel::default();
        for changes in script.clone() {
            reference.apply(changes);
        }
        let expected: Vec<(String, Doc)> = reference.docs.into_iter().collect();
        assert!(
            expected.len() > 5,
            "the script leaves documents: {expected:?}"
        );
        assert!(
            expected
                .iter()
                .any(|(_, d)| d.body.get("patched").is_some()),
            "the script patches documents"
        );
        // Room for 3, 12, 30 and 300 documents of the 400: nearly everything written out at
        // once, some kept because they are in use, most kept (pages of more than the 50 rows
        // the spill puts with one statement, and of fewer).
        for limit in [3, 12, 30, 300] {
            let dir = tempfile::tempdir().unwrap();
            let spill = Spill::create(&dir.path().join("spill.db"), false)
                .await
                .unwrap();
            let projections: Vec<Box<dyn Projection>> = vec![Box::new(Scripted(script.clone()))];
            let mut folded = Folded::new(&projections, &spill, limit);
            for position in 0..script.len() {
                folded.apply(&event(position as i64)).await.unwrap();
            }
            folded.flush(true).await.unwrap();
            drop(folded);
            let path = spill.path().to_owned();
            spill.finish().await.unwrap();
            let spilled: Vec<(String, Doc)> = crate::store::spill::docs(&path, "scripted").unwrap();
            assert_eq!(spilled, expected, "room for {limit}");
        }
    }
}
