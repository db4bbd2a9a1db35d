//! The production backend. Appends lock the single `log_head` row until they commit, so
//! positions are assigned and become visible strictly in order across every process sharing
//! the database; the in-process group commit keeps that lock's cost per event small.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures::TryStreamExt as _;
use hpki_events::ChainHash;
use hpki_projections::{Body, Change, Doc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Row as _, Transaction};
use uuid::Uuid;

use super::{
    AppendError, Appended, CheckpointRow, Head, Known, LastCommit, RawEvent, Row, StoreError,
    redact_url,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone)]
pub struct PgStore {
    pub pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(format!("database URL {:?}: {e}", redact_url(url))))?;
        // One direct connection first: its error says why (refused, unknown host, bad
        // password), where the pool would only say that it timed out.
        let probe = PgConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::Url(format!("cannot connect to {}: {e}", redact_url(url))))?;
        probe.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Url(format!("cannot connect to {}: {e}", redact_url(url))))?;
        MIGRATOR.run(&pool).await?;
        Ok(PgStore { pool })
    }

    pub async fn migrations_applied(&self) -> Result<bool, StoreError> {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        Ok(applied as usize >= MIGRATOR.iter().count())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn head(&self) -> Result<Head, StoreError> {
        Ok(head(&mut *self.pool.acquire().await?, "").await?)
    }

    pub(super) async fn commit_group(
        &self,
        ids: &[Uuid],
        streams: &[&str],
        last: &LastCommit,
        plan: impl AsyncFnOnce(Known) -> (Vec<Row>, Vec<Result<Appended, AppendError>>, Known),
    ) -> Result<(Vec<Result<Appended, AppendError>>, Known), sqlx::Error> {
        // Five round trips: begin; lock the head; what is stored (ids, versions); insert and
        // move the head; commit. The lock comes first and alone: in READ COMMITTED each
        // statement sees what committed before it began, so the reads after the lock see every
        // append that held it before.
        let mut tx = self.pool.begin().await?;
        let head = head(&mut tx, " FOR UPDATE").await?;
        let (mut versions, unknown) = last.known(&head, streams);
        let (existing_ids, read) = stored(&mut tx, ids, &unknown).await?;
        versions.extend(read);

        let (rows, outcomes, known) = plan(Known {
            head,
            existing_ids,
            versions,
        })
        .await;
        if !rows.is_empty() {
            insert_rows(&mut tx, &rows, Some(&known.head)).await?;
        }
        tx.commit().await?;
        Ok((outcomes, known))
    }

    pub async fn read_page(&self, after: i64, limit: i64) -> Result<Vec<RawEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, event_id, stream, version, event_type, schema_version, recorded_at, body, hash
             FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(raw_event).collect())
    }

    pub async fn read_stream(
        &self,
        stream: &str,
        after_version: i64,
    ) -> Result<Vec<RawEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, event_id, stream, version, event_type, schema_version, recorded_at, body, hash
             FROM events WHERE stream = $1 AND version > $2 ORDER BY version",
        )
        .bind(stream)
        .bind(after_version)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(raw_event).collect())
    }

    pub async fn count_events(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn insert_checkpoint(&self, cp: &CheckpointRow) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar(
            "INSERT INTO checkpoints (position, hash, signed_at, key_id, signature)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(cp.position)
        .bind(&cp.hash)
        .bind(&cp.signed_at)
        .bind(&cp.key_id)
        .bind(&cp.signature)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    pub async fn checkpoints(&self) -> Result<Vec<CheckpointRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, position, hash, signed_at, key_id, signature FROM checkpoints ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CheckpointRow {
                id: r.get(0),
                position: r.get(1),
                hash: r.get(2),
                signed_at: r.get(3),
                key_id: r.get(4),
                signature: r.get(5),
            })
            .collect())
    }

    pub async fn begin_import(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        head(&mut tx, " FOR UPDATE").await?;
        Ok(tx)
    }

    pub async fn projection_checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(position.unwrap_or(0))
    }

    /// Applies changes and moves the checkpoint from `from` to `to` in one transaction.
    /// Returns false, writing nothing, when another runner moved the checkpoint first.
    pub async fn apply_projection(
        &self,
        name: &str,
        from: i64,
        to: i64,
        changes: &[Change],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "INSERT INTO projection_checkpoints (name, position) VALUES ($1, $3)
             ON CONFLICT (name) DO UPDATE SET position = $3 WHERE projection_checkpoints.position = $2",
        )
        .bind(name)
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for change in changes {
            apply_change(&mut tx, name, change).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces the documents of each of `names` with those in the finished spill at `spill`
    /// and sets its checkpoint to `position`, all in one transaction, so that the projections
    /// come back together.
    ///
    /// Each projection's documents go into a new table with no index (`COPY … FREEZE`, the
    /// table being new in this transaction), its two indexes are then built once by sorting,
    /// and it takes the place of the projection's partition of `read_models`
    /// (migrations/postgres/0008_read_models_partitioned.sql): the old documents are dropped
    /// with their table, not deleted row by row. The bodies go over as the spill stores them
    /// (JSON text). `read_models` is locked against readers only for the swap at the end.
    pub async fn replace_projections(
        &self,
        spill: &Path,
        names: &[&'static str],
        position: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Two rebuilds at once would each wait for the other's lock on `read_models` at the
        // swap; the second waits here instead, and then does its own.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('hpki projections rebuild'))")
            .execute(&mut *tx)
            .await?;
        for &name in names {
            let fresh = &Partition::of(name).fresh;
            execute(
                &mut tx,
                format!(
                    "CREATE TABLE {fresh} (LIKE read_models,
                         CONSTRAINT rebuilt_projection CHECK (projection = '{name}'))"
                ),
            )
            .await?;
            copy_docs(&mut tx, spill, name, fresh).await?;
            // The parent's two indexes exactly (migration 0009), so that attaching the table
            // takes them as its own instead of building others.
            for statement in [
                format!(
                    "ALTER TABLE {fresh} ADD CONSTRAINT {fresh}_pkey PRIMARY KEY (key, projection)"
                ),
                format!("CREATE INDEX {fresh}_by_list ON {fresh} (list, sort_key)"),
            ] {
                execute(&mut tx, statement).await?;
            }
        }
        for &name in names {
            let table = Partition::of(name);
            // A projection newer than the migrations kept its documents in the default
            // partition until now; there must be none of its left there to attach a table.
            sqlx::query("DELETE FROM read_models_default WHERE projection = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(&table.live)
                .fetch_one(&mut *tx)
                .await?;
            if exists {
                let live = &table.live;
                execute(
                    &mut tx,
                    format!("ALTER TABLE read_models DETACH PARTITION {live}"),
                )
                .await?;
                execute(&mut tx, format!("DROP TABLE {live}")).await?;
            }
            let Partition { fresh, live } = &table;
            for statement in [
                format!("ALTER TABLE {fresh} RENAME TO {live}"),
                format!("ALTER INDEX {fresh}_pkey RENAME TO {live}_pkey"),
                format!("ALTER INDEX {fresh}_by_list RENAME TO {live}_by_list"),
                // The check proves the partition's bound, so attaching reads no row; it is
                // redundant once attached.
                format!("ALTER TABLE read_models ATTACH PARTITION {live} FOR VALUES IN ('{name}')"),
                format!("ALTER TABLE {live} DROP CONSTRAINT rebuilt_projection"),
            ] {
                execute(&mut tx, statement).await?;
            }
            sqlx::query(
                "INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET position = $2",
            )
            .bind(name)
            .bind(position)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Documents of a projection, optionally of one list, in list order.
    pub async fn docs(
        &self,
        name: &str,
        list: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, Doc)>, StoreError> {
        let query = match list {
            Some(list) => sqlx::query(DOCS_OF_LIST).bind(name).bind(list),
            None => sqlx::query(DOCS).bind(name),
        };
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(doc_row).collect()
    }
}

/// A projection's documents in list order, and one list's: two statements, as on SQLite
/// (`sqlite::DOCS`). With one for both (`$2::text IS NULL OR list = $2`), a plan made for any
/// parameters (PostgreSQL's generic plan of a prepared statement) read the partition up to the
/// list: 622 ms for an empty list after a million others, against 0.08 ms.
pub const DOCS: &str = "SELECT key, list, sort_key, body::text FROM read_models
     WHERE projection = $1 ORDER BY list, sort_key LIMIT $2";
pub const DOCS_OF_LIST: &str = "SELECT key, list, sort_key, body::text FROM read_models
     WHERE projection = $1 AND list = $2 ORDER BY sort_key LIMIT $3";

/// The tables of a projection's documents: its partition of `read_models`, and the one a
/// rebuild fills to take its place.
struct Partition {
    live: String,
    fresh: String,
}

impl Partition {
    /// Projection names are the code's own (`hpki_projections::all`), written into statements
    /// as identifiers and literals: one with anything but lower-case letters and underscores
    /// is a bug, caught here rather than quoted.
    fn of(name: &str) -> Partition {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "projection name {name:?} cannot name a table"
        );
        Partition {
            live: format!("read_models_{name}"),
            fresh: format!("read_models_{name}_rebuilt"),
        }
    }
}

/// Runs one statement built from this module's constants and checked projection names.
async fn execute(tx: &mut Transaction<'static, Postgres>, sql: String) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Copies the documents of projection `name` from the finished spill into `table`, new in this
/// transaction. On a failure to read the spill the copy is refused, and nothing is kept.
async fn copy_docs(
    tx: &mut Transaction<'static, Postgres>,
    spill: &Path,
    name: &'static str,
    table: &str,
) -> Result<(), StoreError> {
    // Binary rather than text: nothing to escape, and the server takes a million documents
    // in 1.8 s instead of 2.2 (BENCHMARKS.md, session 18). A body's binary form as `json` is
    // its text.
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY {table} (projection, key, list, sort_key, body) FROM STDIN
             WITH (FORMAT binary, FREEZE)"
        ))
        .await?;
    let mut edge = Vec::new();
    super::pg_copy::write_header(&mut edge);
    copy.send(edge.as_slice()).await?;
    let mut buffers = super::spill::copy_rows(spill, name);
    loop {
        match buffers.try_next().await {
            Ok(Some(rows)) => copy.send(rows).await?,
            Ok(None) => break,
            Err(failed) => {
                let _ = copy
                    .abort("the rebuild's scratch file could not be read")
                    .await;
                return Err(failed);
            }
        };
    }
    edge.clear();
    super::pg_copy::write_trailer(&mut edge);
    copy.send(edge.as_slice()).await?;
    copy.finish().await?;
    Ok(())
}

async fn apply_change(
    tx: &mut Transaction<'static, Postgres>,
    name: &str,
    change: &Change,
) -> Result<(), StoreError> {
    match change {
        Change::Put { key, doc } => {
            sqlx::query(
                "INSERT INTO read_models (projection, key, list, sort_key, body) VALUES ($1, $2, $3, $4, $5::json)
                 ON CONFLICT (projection, key) DO UPDATE SET list = $3, sort_key = $4, body = $5::json",
            )
            .bind(name)
            .bind(key)
            .bind(&doc.list)
            .bind(&doc.sort_key)
            .bind(doc.body.as_str())
            .execute(&mut **tx)
            .await?;
        }
        Change::Patch { key, list, merge } => {
            let row = sqlx::query(
                "SELECT key, list, sort_key, body::text FROM read_models WHERE projection = $1 AND key = $2 FOR UPDATE",
            )
            .bind(name)
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(row) = row {
                let mut doc = Doc {
                    list: row.get(1),
                    sort_key: row.get(2),
                    body: Body::stored(row.get(3)),
                };
                doc.patch(list.as_deref(), merge)
                    .map_err(|source| StoreError::Corrupt {
                        position: 0,
                        source,
                    })?;
                sqlx::query("UPDATE read_models SET list = $3, body = $4::json WHERE projection = $1 AND key = $2")
                    .bind(name)
                    .bind(key)
                    .bind(&doc.list)
                    .bind(doc.body.as_str())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Change::Delete { key } => {
            sqlx::query("DELETE FROM read_models WHERE projection = $1 AND key = $2")
                .bind(name)
                .bind(key)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

pub(super) fn doc_row(row: &sqlx::postgres::PgRow) -> Result<(String, Doc), StoreError> {
    let body: String = row.get(3);
    let body = serde_json::from_str(&body).map_err(|source| StoreError::Corrupt {
        position: 0,
        source,
    })?;
    Ok((
        row.get(0),
        Doc {
            list: row.get(1),
            sort_key: row.get(2),
            body,
        },
    ))
}

/// The current version of each stream named (0 for one that does not exist).
/// Which of `ids` are stored already, and each of `streams`' version (0 when new), in one
/// round trip.
async fn stored(
    conn: &mut sqlx::PgConnection,
    ids: &[Uuid],
    streams: &[&str],
) -> Result<(HashSet<Uuid>, HashMap<String, i64>), sqlx::Error> {
    let rows: Vec<(Option<Uuid>, Option<String>, i64)> = sqlx::query_as(
        "SELECT event_id, NULL::text, 0::bigint FROM events WHERE event_id = ANY($1)
         UNION ALL
         SELECT NULL::uuid, s, (SELECT coalesce(max(version), 0) FROM events WHERE stream = s)
         FROM unnest($2::text[]) AS s",
    )
    .bind(ids)
    .bind(streams)
    .fetch_all(&mut *conn)
    .await?;
    let mut existing = HashSet::new();
    let mut versions = HashMap::new();
    for row in rows {
        match row {
            (Some(id), _, _) => {
                existing.insert(id);
            }
            (None, Some(stream), version) => {
                versions.insert(stream, version);
            }
            (None, None, _) => {}
        }
    }
    Ok((existing, versions))
}

pub(super) async fn stream_versions(
    conn: &mut sqlx::PgConnection,
    streams: &[&str],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    Ok(sqlx::query_as(
        "SELECT s, (SELECT coalesce(max(version), 0) FROM events WHERE stream = s)
         FROM unnest($1::text[]) AS s",
    )
    .bind(streams)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect())
}

async fn head(conn: &mut sqlx::PgConnection, lock: &'static str) -> Result<Head, sqlx::Error> {
    let sql = if lock.is_empty() {
        "SELECT position, hash, recorded_at FROM log_head WHERE id = 1"
    } else {
        "SELECT position, hash, recorded_at FROM log_head WHERE id = 1 FOR UPDATE"
    };
    let (position, hash, recorded_at): (i64, Vec<u8>, i64) =
        sqlx::query_as(sql).fetch_one(conn).await?;
    let hash = ChainHash::from_slice(&hash).unwrap_or(hpki_events::GENESIS_HASH);
    Ok(Head {
        position,
        hash,
        recorded_at,
    })
}

pub(crate) async fn set_head(
    tx: &mut Transaction<'static, Postgres>,
    head: &Head,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE log_head SET position = $1, hash = $2, recorded_at = $3 WHERE id = 1")
        .bind(head.position)
        .bind(head.hash.0.as_slice())
        .bind(head.recorded_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One statement for the whole group: the columns travel as arrays and `unnest` zips them.
/// With `head`, the same statement moves the log's head there (one round trip less).
pub(crate) async fn insert_rows(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[Row],
    head: Option<&Head>,
) -> Result<(), sqlx::Error> {
    let positions: Vec<i64> = rows.iter().map(|r| r.position).collect();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let streams: Vec<&str> = rows.iter().map(|r| r.stream.as_str()).collect();
    let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type).collect();
    let schema_versions: Vec<i32> = rows.iter().map(|r| r.schema_version).collect();
    let recorded: Vec<i64> = rows.iter().map(|r| r.recorded_at).collect();
    let bodies: Vec<&[u8]> = rows.iter().map(|r| r.body.as_slice()).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.0.as_slice()).collect();
    const INSERT: &str = "INSERT INTO events (position, event_id, stream, version, event_type, schema_version, recorded_at, body, hash)
         SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::int[],
                              $7::bigint[], $8::bytea[], $9::bytea[])";
    let sql = match head {
        None => INSERT.to_owned(),
        // A data-modifying WITH runs to completion whether or not the UPDATE reads it.
        Some(_) => format!(
            "WITH inserted AS ({INSERT})
             UPDATE log_head SET position = $10, hash = $11, recorded_at = $12 WHERE id = 1"
        ),
    };
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&positions)
        .bind(&ids)
        .bind(&streams)
        .bind(&versions)
        .bind(&types)
        .bind(&schema_versions)
        .bind(&recorded)
        .bind(&bodies)
        .bind(&hashes);
    if let Some(head) = head {
        query = query
            .bind(head.position)
            .bind(head.hash.0.as_slice())
            .bind(head.recorded_at);
    }
    let done = query.execute(&mut **tx).await?;
    if head.is_some() && done.rows_affected() != 1 {
        return Err(sqlx::Error::Protocol(
            "the log's head did not move with the inserted events".into(),
        ));
    }
    Ok(())
}

/// Streams the whole log after `after` with one binary `COPY` (one snapshot), and sends it on
/// in pages; stops when the receiver goes away.
pub async fn scan(
    pool: PgPool,
    after: i64,
    columns: super::pg_copy::Columns,
    pages: super::Pages<RawEvent>,
) {
    use futures::TryStreamExt;
    let read = async {
        // The log is read in position order, which its primary key gives. Left to itself the
        // planner may instead sort the whole table on disk in parallel workers when its
        // statistics are stale (a freshly imported or appended log, before autovacuum's
        // analyze): that made a million-event read take 6 s instead of 2. So this transaction
        // forbids the sort and the workers (and JIT, whose compile a plain scan never repays).
        // It only reads, and is rolled back when dropped.
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(
            "SET LOCAL enable_sort = off; SET LOCAL max_parallel_workers_per_gather = 0;
             SET LOCAL jit = off",
        )
        .execute(&mut *tx)
        .await?;
        let mut chunks = tx
            .copy_out_raw(&super::pg_copy::statement(after, columns))
            .await?;
        let mut parser = super::pg_copy::Parser::new(columns);
        let mut page = Vec::with_capacity(super::PAGE as usize);
        while let Some(chunk) = chunks.try_next().await? {
            parser.push(&chunk);
            while let Some(row) = parser.next_row()? {
                page.push(row);
                if page.len() == super::PAGE as usize {
                    let full =
                        std::mem::replace(&mut page, Vec::with_capacity(super::PAGE as usize));
                    if pages.send(Ok(full)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        if !parser.ended() {
            return Err(StoreError::Scan("the COPY of the log ended early".into()));
        }
        if !page.is_empty() {
            let _ = pages.send(Ok(page)).await;
        }
        Ok::<_, StoreError>(())
    };
    if let Err(error) = read.await {
        let _ = pages.send(Err(error)).await;
    }
}

fn raw_event(row: &sqlx::postgres::PgRow) -> RawEvent {
    RawEvent {
        position: row.get(0),
        event_id: row.get(1),
        stream: row.get(2),
        version: row.get(3),
        event_type: row.get(4),
        schema_version: row.get(5),
        recorded_at: row.get(6),
        body: row.get(7),
        hash: row.get(8),
    }
}
