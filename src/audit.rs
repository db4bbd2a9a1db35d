//! Tamper evidence: signed checkpoints of the log's head, and the check that recomputes the
//! whole chain against them.
//!
//! A checkpoint signs `hpki-checkpoint/1`, the position, the hash at that position and the
//! signing time, one per line, with an Ed25519 audit key kept outside the database. Whoever
//! can write to the database can rebuild the chain after an edit, but cannot sign: an edit at
//! or before the last checkpoint is always found, and `checkpoint_schedule` bounds the window
//! after it.

use std::collections::HashMap;
use std::path::Path;

use futures::TryStreamExt;
use hpki_events::envelope::format_time;
use hpki_events::{ChainHash, GENESIS_HASH};
use openssl::pkey::{PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::clock::Clock;
use crate::store::{CheckpointRow, RawEvent, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("audit key {path}: {why}")]
    File { path: String, why: String },
    #[error("audit key: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

/// The private audit key, which signs checkpoints.
#[derive(Clone)]
pub struct AuditKey(PKey<Private>);

/// Its public half, all an auditor needs.
pub struct AuditPublicKey(PKey<Public>);

impl AuditKey {
    /// Reads the key, or creates it (and says so) when the file does not exist.
    pub fn load_or_generate(path: &Path) -> Result<(AuditKey, bool), KeyError> {
        let file_error = |why: String| KeyError::File {
            path: path.display().to_string(),
            why,
        };
        if path.exists() {
            let pem = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
            let key = PKey::private_key_from_pem(&pem)
                .map_err(|_| file_error("is not a PEM private key".into()))?;
            if key.id() != openssl::pkey::Id::ED25519 {
                return Err(file_error("is not an Ed25519 key".into()));
            }
            return Ok((AuditKey(key), false));
        }
        let key = PKey::generate_ed25519()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| file_error(e.to_string()))?;
        }
        write_private(path, &key.private_key_to_pem_pkcs8()?)
            .map_err(|e| file_error(e.to_string()))?;
        Ok((AuditKey(key), true))
    }

    pub fn public(&self) -> AuditPublicKey {
        let der = self
            .0
            .public_key_to_der()
            .expect("an Ed25519 key has a public half");
        AuditPublicKey(PKey::public_key_from_der(&der).expect("just encoded"))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(Signer::new_without_digest(&self.0)?.sign_oneshot_to_vec(message)?)
    }
}

impl AuditPublicKey {
    pub fn from_pem(pem: &[u8]) -> Result<AuditPublicKey, KeyError> {
        Ok(AuditPublicKey(PKey::public_key_from_pem(pem)?))
    }

    pub fn to_pem(&self) -> String {
        String::from_utf8(self.0.public_key_to_pem().expect("encodes")).expect("PEM is ASCII")
    }

    /// The first 16 hex digits of the SHA-256 of the key's SubjectPublicKeyInfo.
    pub fn key_id(&self) -> String {
        let der = self.0.public_key_to_der().expect("encodes");
        hex::encode(&Sha256::digest(der)[..8])
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        Verifier::new_without_digest(&self.0)
            .and_then(|mut v| v.verify_oneshot(signature, message))
            .unwrap_or(false)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, pem: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(pem)
}

/// The bytes a checkpoint signs.
pub fn checkpoint_message(position: i64, hash: &[u8], signed_at: &str) -> Vec<u8> {
    format!(
        "hpki-checkpoint/1\n{position}\n{}\n{signed_at}\n",
        hex::encode(hash)
    )
    .into_bytes()
}

/// Signs the current head and records the checkpoint.
pub async fn checkpoint(
    store: &Store,
    key: &AuditKey,
    clock: &dyn Clock,
) -> anyhow::Result<CheckpointRow> {
    let head = store.head().await?;
    let signed_at = format_time(clock.now());
    let signature = key.sign(&checkpoint_message(head.position, &head.hash.0, &signed_at))?;
    let mut row = CheckpointRow {
        id: 0,
        position: head.position,
        hash: head.hash.0.to_vec(),
        signed_at,
        key_id: key.public().key_id(),
        signature,
    };
    row.id = store.insert_checkpoint(&row).await?;
    Ok(row)
}

/// A clean log: what was checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub events: i64,
    pub checkpoints: usize,
    pub head: ChainHash,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok: {} events, {} checkpoints, head {}",
            self.events, self.checkpoints, self.head
        )
    }
}

/// The first thing found wrong, and where.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("position {position}: {what}")]
pub struct Tamper {
    pub position: i64,
    pub what: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the log has been altered: {0}")]
    Tampered(#[from] Tamper),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The columns `verify` compares with the stored bytes; the payload is skipped, not parsed.
#[derive(Deserialize)]
struct Indexed<'a> {
    event_id: Uuid,
    position: i64,
    recorded_at: &'a str,
    schema_version: i32,
    stream: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    version: i64,
}

/// Recomputes the chain from the first event and checks every checkpoint against it.
pub async fn verify(
    store: &Store,
    key: &AuditPublicKey,
    progress: &dyn Fn(i64),
) -> Result<Summary, VerifyError> {
    let checkpoints = store.checkpoints().await?;
    for cp in &checkpoints {
        if !key.verifies(
            &checkpoint_message(cp.position, &cp.hash, &cp.signed_at),
            &cp.signature,
        ) {
            return Err(Tamper {
                position: cp.position,
                what: format!(
                    "checkpoint #{} is not signed by the audit key {} (forged or altered)",
                    cp.id,
                    key.key_id()
                ),
            }
            .into());
        }
    }
    let mut at_position: HashMap<i64, Vec<&CheckpointRow>> = HashMap::new();
    for cp in &checkpoints {
        at_position.entry(cp.position).or_default().push(cp);
    }
    if let Some(cps) = at_position.get(&0) {
        check_checkpoints(cps, &GENESIS_HASH)?;
    }

    let mut prev = GENESIS_HASH;
    let mut expected = 1;
    // Each row's own check (its bytes parse and agree with its columns) runs in the reading
    // pipeline, beside the reading; only the chain, which is sequential, runs here.
    let mut rows = std::pin::pin!(store.read_all_prepared(0, |page| {
        Ok(page
            .into_iter()
            .map(|row| {
                let columns = check_columns(&row);
                (row, columns)
            })
            .collect())
    }));
    while let Some((row, columns)) = rows.try_next().await? {
        prev = check_chain(&row, columns, expected, &prev)?;
        if let Some(cps) = at_position.get(&row.position) {
            check_checkpoints(cps, &prev)?;
        }
        if expected % 100_000 == 0 {
            progress(expected);
        }
        expected += 1;
    }
    let last = expected - 1;

    if let Some(cp) = checkpoints
        .iter()
        .filter(|cp| cp.position > last)
        .max_by_key(|cp| cp.position)
    {
        return Err(Tamper {
            position: last + 1,
            what: format!(
                "the log ends at position {last} but checkpoint #{} was signed at position {}: events were removed",
                cp.id, cp.position
            ),
        }
        .into());
    }
    let head = store.head().await?;
    if head.position != last || head.hash != prev {
        return Err(Tamper {
            position: last.min(head.position) + 1,
            what: format!(
                "the log ends at position {last} but its head records position {} (events removed or the head edited)",
                head.position
            ),
        }
        .into());
    }
    Ok(Summary {
        events: last,
        checkpoints: checkpoints.len(),
        head: prev,
    })
}

/// Checks one stored row against the chain and returns its hash.
pub fn check_row(row: &RawEvent, expected: i64, prev: &ChainHash) -> Result<ChainHash, Tamper> {
    check_chain(row, check_columns(row), expected, prev)
}

/// What is wrong with a row on its own: its stored bytes are not an event, or they say another
/// position, stream, version, type or time than its columns.
fn check_columns(row: &RawEvent) -> Result<(), String> {
    let indexed: Indexed = serde_json::from_slice(&row.body)
        .map_err(|e| format!("the stored bytes are not an event: {e}"))?;
    let columns_agree = indexed.position == row.position
        && indexed.event_id == row.event_id
        && indexed.stream == row.stream
        && indexed.version == row.version
        && indexed.event_type == row.event_type
        && indexed.schema_version == row.schema_version
        && indexed.recorded_at == crate::store::show_micros(row.recorded_at);
    if !columns_agree {
        return Err(format!(
            "the stored bytes say position {} of stream {} but the row is position {} of {} (moved or swapped)",
            indexed.position, indexed.stream, row.position, row.stream
        ));
    }
    Ok(())
}

/// Checks a row, whose own check gave `columns`, against the chain: it is the `expected`
/// position and its hash covers `prev` and its bytes. Returns its hash.
fn check_chain(
    row: &RawEvent,
    columns: Result<(), String>,
    expected: i64,
    prev: &ChainHash,
) -> Result<ChainHash, Tamper> {
    let tamper = |what: String| Tamper {
        position: expected,
        what,
    };
    if row.position != expected {
        return Err(tamper(format!(
            "the event is missing (the next stored event is at position {})",
            row.position
        )));
    }
    columns.map_err(tamper)?;
    let hash = prev.next(&row.body);
    if row.hash != hash.0 {
        return Err(tamper(
            "the hash does not match the stored bytes and the previous hash (contents edited)"
                .into(),
        ));
    }
    Ok(hash)
}

fn check_checkpoints(cps: &[&CheckpointRow], hash: &ChainHash) -> Result<(), Tamper> {
    match cps.iter().find(|cp| cp.hash != hash.0) {
        Some(cp) => Err(Tamper {
            position: cp.position,
            what: format!(
                "checkpoint #{} signed hash {} but the log now has {hash} there",
                cp.id,
                hex::encode(&cp.hash)
            ),
        }),
        None => Ok(()),
    }
}
