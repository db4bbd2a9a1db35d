//! `hpki audit verify` against a log edited behind its back, on both backends: each edit is
//! found and the first bad position named.

mod common;

use common::*;
use hpki_backoffice::audit::{self, Tamper, VerifyError};
use hpki_backoffice::store::{Db, Store};

/// Runs SQL as an attacker with direct database access would: past the append-only triggers.
async fn behind_its_back(store: &Store, sql: &str) {
    match store.db() {
        Db::Sqlite(s) => {
            let bypass = "DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete;
                          DROP TRIGGER IF EXISTS checkpoints_no_update; DROP TRIGGER IF EXISTS checkpoints_no_delete;";
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{bypass}{sql}")))
                .execute(&s.pool)
                .await
                .unwrap();
        }
        Db::Postgres(p) => {
            let mut tx = p.pool.begin().await.unwrap();
            sqlx::query("SET LOCAL session_replication_role = replica")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
}

fn blob(store: &Store, bytes: &[u8]) -> String {
    match store.db() {
        Db::Sqlite(_) => format!("X'{}'", hex::encode(bytes)),
        Db::Postgres(_) => format!("'\\x{}'::bytea", hex::encode(bytes)),
    }
}

/// A log of 10 events with a checkpoint at its head.
async fn signed_log(db: &TestDb) -> (Store, hpki_backoffice::audit::AuditPublicKey) {
    let store = open(db, clock()).await;
    seed(&store, 10).await;
    let key = audit_key();
    audit::checkpoint(&store, &key, &*clock()).await.unwrap();
    (store, key.public())
}

async fn tamper_found(store: &Store, key: &hpki_backoffice::audit::AuditPublicKey) -> Tamper {
    match audit::verify(store, key, &|_| {}).await {
        Err(VerifyError::Tampered(t)) => t,
        other => panic!(
            "{}: tampering went unnoticed: {other:?}",
            store.db().backend()
        ),
    }
}

#[tokio::test]
async fn a_clean_log_verifies() {
    for db in both().await {
        let (store, key) = signed_log(&db).await;
        let summary = audit::verify(&store, &key, &|_| {}).await.unwrap();
        assert_eq!(
            (summary.events, summary.checkpoints),
            (10, 1),
            "{}",
            db.backend
        );
        assert_eq!(summary.head, store.head().await.unwrap().hash);
        assert!(
            summary
                .to_string()
                .starts_with("ok: 10 events, 1 checkpoints, head ")
        );
    }
}

#[tokio::test]
async fn an_edited_payload_is_found() {
    for db in both().await {
        let (store, key) = signed_log(&db).await;
        let edit = match store.db() {
            Db::Sqlite(_) => {
                "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'applicant3@', 'attacker@') AS BLOB) WHERE position = 4"
            }
            Db::Postgres(_) => {
                "UPDATE events SET body = convert_to(replace(convert_from(body, 'UTF8'), 'applicant3@', 'attacker@'), 'UTF8') WHERE position = 4"
            }
        };
        behind_its_back(&store, edit).await;
        let t = tamper_found(&store, &key).await;
        assert_eq!(t.position, 4, "{}: {t}", db.backend);
        assert!(t.what.contains("contents edited"), "{t}");
    }
}

#[tokio::test]
async fn an_edit_with_the_chain_recomputed_is_caught_by_the_checkpoint() {
    for db in both().await {
        let (store, key) = signed_log(&db).await;
        // The attacker edits event 4 and rewrites every later hash and the head, consistently.
        let rows = store.read_page(0, 100).await.unwrap();
        let mut prev = hpki_events::GENESIS_HASH;
        let mut sql = String::new();
        for row in rows {
            let mut body = row.body.clone();
            if row.position == 4 {
                body = String::from_utf8(body)
                    .unwrap()
                    .replace("applicant3@", "attacker@")
                    .into_bytes();
            }
            prev = prev.next(&body);
            sql += &format!(
                "UPDATE events SET body = {}, hash = {} WHERE position = {};",
                blob(&store, &body),
                blob(&store, &prev.0),
                row.position
            );
        }
        sql += &format!("UPDATE log_head SET hash = {};", blob(&store, &prev.0));
        behind_its_back(&store, &sql).await;
        let t = tamper_found(&store, &key).await;
        assert_eq!(t.position, 10, "{}: {t}", db.backend);
        assert!(t.what.contains("checkpoint #1 signed hash"), "{t}");
    }
}

#[tokio::test]
async fn a_deleted_event_is_found() {
    for db in both().await {
        let (store, key) = signed_log(&db).await;
        behind_its_back(&store, "DELETE FROM events WHERE position = 6").await;
        let t = tamper_found(&store, &key).await;
        assert_eq!(t.position, 6, "{}: {t}", db.backend);
        assert!(t.what.contains("missing"), "{t}");
    }
}

#[tokio::test]
async fn two_swapped_events_are_found() {
    for db in both().await {
        let (store, key) = signed_log(&db).await;
        let rows = store.read_page(4, 2).await.unwrap();
        let (a, b) = (&rows[0], &rows[1]);
        let sql = format!(
            "UPDATE events SET body = {}, hash = {} WHERE position = 5; UPDATE events SET body = {}, hash = {} WHERE position = 6;",
            blob(&store, &b.body),
            blob(&store, &b.hash),
            blob(&store, &a.body),
            blob(&store, &a.hash)
        );
        behind_its_back(&store, &sql).await;
        let t = tamper_found(&store, &key).await;
        assert_eq!(t.position, 5, "{}: {t}", db.backend);
        assert!(t.what.contains("swapped"), "{t}");
    }
}

#[tokio::test]
async fn a_forged_checkpoint_is_found() {
    for db in both().await {
        let (store, key) = signed_log(&db).await;
        let hash_at_3 = store.hash_at(3).await.unwrap().unwrap();
        behind_its_back(
            &store,
            &format!(
                "UPDATE checkpoints SET position = 3, hash = {} WHERE id = 1",
                blob(&store, &hash_at_3.0)
            ),
        )
        .await;
        let t = tamper_found(&store, &key).await;
        assert_eq!(t.position, 3, "{}: {t}", db.backend);
        assert!(t.what.contains("checkpoint #1 is not signed"), "{t}");
    }
}

#[tokio::test]
async fn a_tail_truncated_below_the_last_checkpoint_is_found() {
    for db in both().await {
        let (store, key) = signed_log(&db).await;
        let hash_at_7 = store.hash_at(7).await.unwrap().unwrap();
        behind_its_back(
            &store,
            &format!("DELETE FROM events WHERE position > 7; UPDATE log_head SET position = 7, hash = {};", blob(&store, &hash_at_7.0)),
        )
        .await;
        let t = tamper_found(&store, &key).await;
        assert_eq!(t.position, 8, "{}: {t}", db.backend);
        assert!(
            t.what
                .contains("the log ends at position 7 but checkpoint #1 was signed at position 10"),
            "{t}"
        );
    }
}

#[tokio::test]
async fn a_checkpoint_signed_by_another_key_is_refused() {
    let db = sqlite();
    let (store, key) = signed_log(&db).await;
    audit::checkpoint(&store, &audit_key(), &*clock())
        .await
        .unwrap();
    let t = tamper_found(&store, &key).await;
    assert!(t.what.contains("checkpoint #2 is not signed"), "{t}");
}
