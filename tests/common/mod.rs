//! What the black-box tests share: a fresh database on each backend, and sample events.
#![allow(dead_code)]

pub mod browser;
pub mod phone;
pub mod server;
pub mod smtp;
pub mod staff;

use std::sync::Arc;

use hpki_backoffice::clock::{ManualClock, SharedClock};
use hpki_backoffice::store::{ExpectedVersion, Store};
use hpki_events::vocabulary::{ApplicationReceived, Channel, Source};
use hpki_events::{Actor, Event, Metadata, NewEvent};
use time::macros::datetime;

/// An HTTP client for the server under test. It drops connections idle for a second: actix-web
/// closes an idle keep-alive connection after five, and a request sent on a pooled connection
/// just as the server closes it fails with `IncompleteMessage` (CI, after a test spent five
/// seconds rasterising a PDF between two requests).
pub fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().pool_idle_timeout(std::time::Duration::from_secs(1))
}

/// A fresh, empty database: a temporary SQLite file, or a new schema on the PostgreSQL server.
pub struct TestDb {
    pub backend: &'static str,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hpki.db").display());
    TestDb {
        backend: "sqlite",
        url,
        _dir: Some(dir),
    }
}

/// The server PostgreSQL tests run against. On CI it must be reachable: a test fails, never
/// skips, when it is not.
pub fn postgres_server() -> String {
    std::env::var("HPKI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// How old a test schema must be before a later run drops it: far longer than the suite runs.
const STALE_SCHEMA_SECS: u64 = 3600;

/// A test's schema is named `t_<unix seconds>_<uuid>`: a schema cannot be dropped when its test
/// ends (the test's own pool and tasks may still hold it, and a `Drop` cannot wait for them on
/// the test's runtime), so the first PostgreSQL test of each run drops those of earlier runs,
/// once they are an hour old, and the database does not fill with them.
pub async fn drop_stale_schemas(conn: &sqlx::PgPool, now: u64) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname ~ '^t_([0-9]+_)?[0-9a-f]{32}$'",
    )
    .fetch_all(conn)
    .await
    .unwrap();
    for name in names {
        // Schemas named before the time was in the name (`t_<uuid>`) count as stale.
        let made: u64 = name
            .split('_')
            .nth(1)
            .filter(|part| part.len() < 32)
            .and_then(|secs| secs.parse().ok())
            .unwrap_or(0);
        if now.saturating_sub(made) > STALE_SCHEMA_SECS {
            // Another run sweeping at the same moment may have dropped it first.
            let drop = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(conn).await;
        }
    }
}

pub async fn postgres() -> TestDb {
    let server = postgres_server();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let schema = format!("t_{now}_{}", uuid::Uuid::new_v4().simple());
    let conn = sqlx::postgres::PgPool::connect(&server)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {server}: {e}\n\
             The store tests run on SQLite and PostgreSQL. Start PostgreSQL (see README.md) \
             or point HPKI_TEST_POSTGRES_URL at one."
            )
        });
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        drop_stale_schemas(&conn, now).await;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&conn)
        .await
        .unwrap();
    conn.close().await;
    let sep = if server.contains('?') { '&' } else { '?' };
    let url = format!("{server}{sep}options=-c%20search_path%3D{schema}");
    TestDb {
        backend: "postgres",
        url,
        _dir: None,
    }
}

/// Both backends, SQLite first.
pub async fn both() -> Vec<TestDb> {
    vec![sqlite(), postgres().await]
}

pub fn clock() -> Arc<ManualClock> {
    ManualClock::new(datetime!(2026-11-22 00:00 UTC))
}

pub async fn open(db: &TestDb, clock: SharedClock) -> Store {
    Store::open(&db.url, clock)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", db.backend))
}

pub fn application(n: u64) -> Event {
    Event::ApplicationReceived(ApplicationReceived {
        application_id: uuid::Uuid::from_u128(n as u128 + 1),
        subscriber_id: "000000".into(),
        birth_date: hpki_events::vocabulary::Sealed {
            kek: "test".into(),
            data: "c2VhbGVk".into(),
        },
        profession: "physician".into(),
        postal_code: "113-8621".into(),
        address: "東京都文京区本駒込2-28-16".into(),
        delivery: hpki_events::vocabulary::Delivery::Home,
        photo: None,
        authority: if n % 2 == 0 {
            "jma".into()
        } else {
            "jpa".into()
        },
        registry_number: format!("{:06}", n % 1_000_000),
        name_kanji: "山田 太郎".into(),
        name_kana: "ヤマダ タロウ".into(),
        name_romaji: "YAMADA TARO".into(),
        email: format!("applicant{n}@example.jp"),
        source: Source {
            channel: Channel::Web,
            batch: None,
        },
    })
}

pub fn meta() -> Metadata {
    Metadata::new(Actor::parse("staff:suzuki").unwrap())
}

/// Appends `n` applications, one stream each, in one append.
pub async fn seed(store: &Store, n: u64) {
    let appends = (0..n)
        .map(|i| hpki_backoffice::store::StreamAppend {
            stream: format!("application-{i}"),
            expected: ExpectedVersion::NoStream,
            events: vec![NewEvent::new(application(i))],
        })
        .collect();
    store.append(appends, meta()).await.unwrap();
}

/// A throwaway audit key for tests.
pub fn audit_key() -> hpki_backoffice::audit::AuditKey {
    let dir = tempfile::tempdir().unwrap();
    hpki_backoffice::audit::AuditKey::load_or_generate(&dir.path().join("audit.pem"))
        .unwrap()
        .0
}

/// A configuration for a server under test: every file under `dir`, any free port, one staff
/// member (`suzuki`, token [`STAFF_TOKEN`]), a small key pool.
pub fn config(db: &TestDb, dir: &std::path::Path) -> hpki_backoffice::config::Config {
    let mut config = hpki_backoffice::config::Config::default();
    config.database_url = db.url.clone();
    config.server.listen = "127.0.0.1:0".into();
    config.data_dir = dir.to_owned();
    config.audit.key_file = dir.join("keys/audit.pem");
    config.keys.kek_file = dir.join("keys/kek.hex");
    config.keys.qr_secret_file = dir.join("keys/qr-secret.hex");
    config.keys.pool_size = 2;
    config.projections.poll_interval_ms = 20;
    config.staff.insert(
        "suzuki".into(),
        hpki_backoffice::config::Staff {
            token_sha256: hex::encode(openssl::sha::sha256(STAFF_TOKEN.as_bytes())),
            roles: vec![hpki_backoffice::config::Role::Officer],
        },
    );
    config
}

pub const STAFF_TOKEN: &str = "test-token-for-suzuki";

/// Makes the log refuse every append (`on`) or take them again, behind the store's back: a
/// database that still answers reads and refuses writes.
pub async fn refuse_appends(db: &TestDb, on: bool) {
    if db.backend == "sqlite" {
        let file = db.url.trim_start_matches("sqlite://").to_owned();
        // On a blocking thread: waiting for the write lock on the test's own thread would stop
        // the server under test, which runs on that thread too, from finishing the transaction
        // that holds it (until the 30 s ran out).
        tokio::task::spawn_blocking(move || {
            let file = rusqlite::Connection::open(file).unwrap();
            file.busy_timeout(std::time::Duration::from_secs(30))
                .unwrap();
            file.execute_batch(if on {
                "BEGIN IMMEDIATE;
                 CREATE TRIGGER refused_by_the_test BEFORE INSERT ON events
                 BEGIN SELECT RAISE(ABORT, 'appends refused by the test'); END;
                 COMMIT;"
            } else {
                "BEGIN IMMEDIATE; DROP TRIGGER refused_by_the_test; COMMIT;"
            })
            .unwrap_or_else(|e| panic!("refuse_appends({on}): {e}"));
        })
        .await
        .unwrap();
        return;
    }
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let statements: &[&str] = if on {
        &[
            "CREATE FUNCTION refused_by_the_test() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'appends refused by the test'; END $$",
            "CREATE TRIGGER refused_by_the_test BEFORE INSERT ON events
             FOR EACH ROW EXECUTE FUNCTION refused_by_the_test()",
        ]
    } else {
        &["DROP TRIGGER refused_by_the_test ON events"]
    };
    for statement in statements {
        sqlx::query(*statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
}
