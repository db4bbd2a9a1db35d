//! `hpki events export` and `hpki events import`: the log as JSON Lines.
//!
//! Each line is `{"position":N,"hash":"<hex>","body":"<the event's canonical bytes>"}`;
//! `body` is a JSON string whose value is exactly the bytes that were hashed. The last line is
//! `{"end":{"events":N,"head_hash":"<hex>"}}`, so a truncated file is recognised. A third party
//! checks a file with `ops/verify-export.py` or sha256sum and jq (docs/event-log.md).

use std::io::{BufRead, Write};

use futures::TryStreamExt;
use hpki_events::{Body, ChainHash, Event, GENESIS_HASH};
use serde::{Deserialize, Serialize};

use crate::store::{Head, Row, Store, StoreError};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    position: i64,
    hash: String,
    body: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndLine {
    end: End,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    events: i64,
    head_hash: String,
}

/// Writes the whole log; returns the number of events written.
pub async fn export(
    store: &Store,
    out: &mut dyn Write,
    progress: &dyn Fn(i64),
) -> anyhow::Result<i64> {
    let mut count = 0;
    let mut head = GENESIS_HASH;
    let mut rows = std::pin::pin!(store.read_all(0));
    while let Some(row) = rows.try_next().await? {
        let body = String::from_utf8(row.body).map_err(|_| {
            anyhow::anyhow!("position {}: stored bytes are not UTF-8", row.position)
        })?;
        let line = EventLine {
            position: row.position,
            hash: hex::encode(&row.hash),
            body,
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        head = ChainHash::from_slice(&row.hash).unwrap_or(head);
        count += 1;
        if count % 10_000 == 0 {
            progress(count);
        }
    }
    serde_json::to_writer(
        &mut *out,
        &EndLine {
            end: End {
                events: count,
                head_hash: head.to_hex(),
            },
        },
    )?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(count)
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}:{line}: {what}")]
    Line {
        file: String,
        line: u64,
        what: String,
    },
    #[error("{file}: {what}")]
    File { file: String, what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

const IMPORT_BATCH: usize = 1_000;

/// Loads an exported log into an empty store, checking every line; all or nothing.
pub async fn import(
    store: &Store,
    name: &str,
    input: impl BufRead,
    progress: &dyn Fn(i64),
) -> Result<i64, ImportError> {
    let file_error = |what: String| ImportError::File {
        file: name.to_owned(),
        what,
    };
    let mut tx = store.begin_import().await?;
    let held = store.count_events().await?;
    if held > 0 {
        return Err(file_error(format!(
            "the store already holds {held} events; import only into an empty store"
        )));
    }
    let mut head = Head {
        position: 0,
        hash: GENESIS_HASH,
        recorded_at: 0,
    };
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut ended = false;
    let mut line_no = 0u64;
    let mut versions: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for line in input.lines() {
        line_no += 1;
        let at = |what: String| ImportError::Line {
            file: name.to_owned(),
            line: line_no,
            what,
        };
        let line = line.map_err(|e| at(format!("cannot read: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        if ended {
            return Err(at("a line follows the end line".into()));
        }
        if line.starts_with("{\"end\"") {
            let end: EndLine =
                serde_json::from_str(&line).map_err(|e| at(format!("bad end line: {e}")))?;
            if end.end.events != head.position || end.end.head_hash != head.hash.to_hex() {
                return Err(at(format!(
                    "the end line says {} events ending in {}, but the file holds {} ending in {}",
                    end.end.events, end.end.head_hash, head.position, head.hash
                )));
            }
            ended = true;
            continue;
        }
        let row = parse_line(&line, &head).map_err(at)?;
        let version = versions.entry(row.stream.clone()).or_insert(0);
        if row.version != *version + 1 {
            return Err(at(format!(
                "position {}: stream {} jumps from version {} to {}",
                row.position, row.stream, version, row.version
            )));
        }
        *version = row.version;
        head = Head {
            position: row.position,
            hash: row.hash,
            recorded_at: row.recorded_at,
        };
        batch.push(row);
        if batch.len() == IMPORT_BATCH {
            tx.insert(&batch).await?;
            batch.clear();
            progress(head.position);
        }
    }
    if !ended {
        return Err(file_error(format!(
            "the file is truncated: no end line after line {line_no}"
        )));
    }
    tx.insert(&batch).await?;
    tx.finish(head).await?;
    Ok(head.position)
}

/// Checks one exported event against the chain so far and turns it into a row.
fn parse_line(line: &str, head: &Head) -> Result<Row, String> {
    let line: EventLine =
        serde_json::from_str(line).map_err(|e| format!("not an event line: {e}"))?;
    let expected = head.position + 1;
    if line.position != expected {
        return Err(format!(
            "position {} where {expected} was expected (lines missing or reordered)",
            line.position
        ));
    }
    let bytes = line.body.into_bytes();
    let body = Body::decode(&bytes)
        .map_err(|e| format!("position {expected}: the body is not an event: {e}"))?;
    if body.position != expected {
        return Err(format!(
            "position {expected}: the body says position {}",
            body.position
        ));
    }
    let hash = head.hash.next(&bytes);
    if line.hash != hash.to_hex() {
        return Err(format!(
            "position {expected}: the hash does not match the body and the previous hash"
        ));
    }
    let recorded_at = body
        .recorded_at()
        .map_err(|e| format!("position {expected}: {e}"))?;
    let recorded_micros = hpki_events::envelope::unix_micros(recorded_at);
    if recorded_micros < head.recorded_at {
        return Err(format!(
            "position {expected}: recorded_at goes back in time"
        ));
    }
    let event = Event::decode(&body.event_type, body.schema_version, body.payload.clone())
        .map_err(|e| format!("position {expected}: {e}"))?;
    Ok(Row {
        position: expected,
        event_id: body.event_id,
        stream: body.stream,
        version: body.version,
        event_type: event.type_name(),
        schema_version: body.schema_version as i32,
        recorded_at: recorded_micros,
        body: bytes,
        hash,
    })
}
