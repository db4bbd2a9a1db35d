//! Export and import: a round trip, a stored v1 payload read as the current type, and every
//! kind of bad file refused with its line named and nothing written.

mod common;

use std::io::Cursor;

use common::*;
use hpki_backoffice::export::{export, import};
use hpki_backoffice::store::Store;
use hpki_events::vocabulary::{ApplicationReceived, Channel, Source};
use hpki_events::{ChainHash, Event, GENESIS_HASH};

async fn exported(store: &Store) -> String {
    let mut out = Vec::new();
    export(store, &mut out, &|_| {}).await.unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn a_log_exported_and_imported_elsewhere_is_the_same_log() {
    let dbs = both().await;
    let source = open(&dbs[0], clock()).await;
    seed(&source, 25).await;
    let file = exported(&source).await;
    assert_eq!(file.lines().count(), 26);
    // SQLite to PostgreSQL.
    let target = open(&dbs[1], clock()).await;
    let count = import(&target, "log.jsonl", Cursor::new(file.clone()), &|_| {})
        .await
        .unwrap();
    assert_eq!(count, 25);
    assert_eq!(target.head().await.unwrap(), source.head().await.unwrap());
    assert_eq!(exported(&target).await, file);
    assert_eq!(
        target.read_stream("application-3").await.unwrap(),
        source.read_stream("application-3").await.unwrap()
    );
    // A store that is not empty takes no import.
    let err = import(&target, "log.jsonl", Cursor::new(file), &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds 25 events"), "{err}");
}

/// Builds an export line by hand, as an older version of the back office would have stored it.
fn line(position: i64, prev: &ChainHash, body: &str) -> (String, ChainHash) {
    let hash = prev.next(body.as_bytes());
    let line =
        serde_json::json!({"position": position, "hash": hash.to_hex(), "body": body}).to_string();
    (line, hash)
}

fn v1_body(position: i64, stream: &str) -> String {
    format!(
        r#"{{"actor":"staff:suzuki","causation_id":null,"correlation_id":"00000000-0000-0000-0000-000000000000","event_id":"{}","payload":{{"address":"東京都","application_id":"00000000-0000-0000-0000-000000000000","authority":"jma","birth_date":{{"data":"c2VhbGVk","kek":"test"}},"channel":"paper","delivery":{{"to":"home"}},"email":"a@example.jp","name_kana":"ヤマダ タロウ","name_kanji":"山田 太郎","name_romaji":"YAMADA TARO","photo":null,"postal_code":"113-8621","profession":"physician","registry_number":"123456","subscriber_id":"123456"}},"position":{position},"recorded_at":"2026-01-05T00:00:00.000000Z","schema_version":1,"stream":"{stream}","type":"ApplicationReceived","version":1}}"#,
        uuid::Uuid::new_v4()
    )
}

#[tokio::test]
async fn a_stored_v1_payload_is_read_as_the_current_type() {
    for db in both().await {
        let store = open(&db, clock()).await;
        let (l1, h1) = line(1, &GENESIS_HASH, &v1_body(1, "application-old"));
        let end = serde_json::json!({"end": {"events": 1, "head_hash": h1.to_hex()}}).to_string();
        import(
            &store,
            "old.jsonl",
            Cursor::new(format!("{l1}\n{end}\n")),
            &|_| {},
        )
        .await
        .unwrap();
        let events = store.read_stream("application-old").await.unwrap();
        let Event::ApplicationReceived(ApplicationReceived { source, .. }) = &events[0].event
        else {
            panic!()
        };
        assert_eq!(
            source,
            &Source {
                channel: Channel::Paper,
                batch: None
            },
            "{}",
            db.backend
        );
        // The stored bytes stay as they were: the chain still verifies.
        let summary = hpki_backoffice::audit::verify(&store, &audit_key().public(), &|_| {})
            .await
            .unwrap();
        assert_eq!(summary.events, 1);
    }
}

async fn refused(file: &str) -> String {
    let db = sqlite();
    let store = open(&db, clock()).await;
    let err = import(&store, "bad.jsonl", Cursor::new(file.to_owned()), &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        store.count_events().await.unwrap(),
        0,
        "half-written by: {err}"
    );
    assert_eq!(store.head().await.unwrap().position, 0);
    err
}

#[tokio::test]
async fn bad_files_are_refused_whole_with_the_place_named() {
    let db = sqlite();
    let store = open(&db, clock()).await;
    seed(&store, 3).await;
    let good = exported(&store).await;
    let lines: Vec<&str> = good.lines().collect();

    let truncated = lines[..3].join("\n");
    assert_eq!(
        refused(&truncated).await,
        "bad.jsonl: the file is truncated: no end line after line 3"
    );

    let cut_mid_line = &good[..good.len() - 40];
    assert!(refused(cut_mid_line).await.starts_with("bad.jsonl:4: "));

    let reordered = [lines[1], lines[0], lines[2], lines[3]].join("\n");
    let err = refused(&reordered).await;
    assert!(
        err.starts_with("bad.jsonl:1: position 2 where 1 was expected"),
        "{err}"
    );

    let corrupt = good.replacen("YAMADA", "YAMADB", 1);
    let err = refused(&corrupt).await;
    assert!(
        err.starts_with("bad.jsonl:1: position 1: the hash does not match"),
        "{err}"
    );

    let garbage = format!("{}\nnot json\n{}", lines[0], lines[3]);
    let err = refused(&garbage).await;
    assert!(err.starts_with("bad.jsonl:2: not an event line"), "{err}");

    let wrong_end = format!(
        "{}\n{}\n{}\n{}",
        lines[0],
        lines[1],
        lines[2],
        lines[3].replace("\"events\":3", "\"events\":4")
    );
    let err = refused(&wrong_end).await;
    assert!(
        err.starts_with("bad.jsonl:4: the end line says 4 events"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_types_and_wrong_shapes_are_refused() {
    let unknown = v1_body(1, "application-x").replace(
        "\"type\":\"ApplicationReceived\"",
        "\"type\":\"Teleported\"",
    );
    let (l1, h1) = line(1, &GENESIS_HASH, &unknown);
    let end = serde_json::json!({"end": {"events": 1, "head_hash": h1.to_hex()}}).to_string();
    let err = refused(&format!("{l1}\n{end}")).await;
    assert_eq!(
        err,
        "bad.jsonl:1: position 1: event type \"Teleported\" is not known"
    );

    let shape = v1_body(1, "application-x").replace("\"channel\":\"paper\"", "\"channel\":42");
    let (l1, h1) = line(1, &GENESIS_HASH, &shape);
    let end = serde_json::json!({"end": {"events": 1, "head_hash": h1.to_hex()}}).to_string();
    let err = refused(&format!("{l1}\n{end}")).await;
    // The v1 payload is upcast first; the bad channel is then found in the v2 shape.
    assert!(
        err.starts_with(
            "bad.jsonl:1: position 1: payload of ApplicationReceived v2 has the wrong shape"
        ),
        "{err}"
    );
}

/// The export can be checked by a third party with Python's standard library alone.
#[tokio::test]
async fn the_ops_script_verifies_an_export_and_spots_an_edit() {
    let db = sqlite();
    let store = open(&db, clock()).await;
    seed(&store, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let file = exported(&store).await;
    std::fs::write(&path, &file).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/verify-export.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = store.head().await.unwrap().hash.to_hex();
    assert_eq!(stdout.trim(), format!("ok: 5 events, head {head}"));

    std::fs::write(&path, file.replacen("applicant1@", "applicant9@", 1)).unwrap();
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("line 2: position 2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
