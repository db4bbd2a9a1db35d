//! Intake and issuance benchmarks for BENCHMARKS.md. Run: `cargo bench --bench intake
//! [-- ROWS PAIRS]` (default 10,000 CSV rows and 1,000 certificate pairs). Needs PostgreSQL at
//! $HPKI_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test) and `openssl`.
//!
//! - CSV import, end to end (decode, parse, validate, seal birth dates, check the log, one
//!   atomic append) of ROWS applications, UTF-8 and CP932, on each backend.
//! - Issuance: PAIRS approvals (card certificate from stock and second certificate, both
//!   signed, plus the QR and the stock allocation, appended atomically) from 16 concurrent
//!   callers, beside `openssl speed rsa2048` signing on the same machine. The keys are made
//!   beforehand, as the server's key pool makes them: RSA-2048 key generation is measured and
//!   reported on its own.

use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use hpki_backoffice::clock::{SharedClock, SystemClock};
use hpki_backoffice::config::Config;
use hpki_backoffice::office::{ImportMode, Office};
use hpki_events::Actor;

fn csv(rows: usize, offset: usize) -> String {
    let mut text = String::from(
        "認証局,氏名,氏名（カナ）,氏名（ローマ字）,生年月日,職種,登録番号,メールアドレス,郵便番号,住所,送付先,送付先団体名\r\n",
    );
    let mut rng = fastrand::Rng::with_seed(7);
    for n in 0..rows {
        let f = hpki_backoffice::demo::form("jma", offset + n, &mut rng);
        let delivery = if f.delivery == "home" {
            "自宅"
        } else {
            "団体"
        };
        text.push_str(&format!(
            "{},{},{},{},{},医師,{},{},{},{},{},{}\r\n",
            f.authority,
            f.name_kanji,
            f.name_kana,
            f.name_romaji,
            f.birth_date,
            f.registry_number,
            f.email,
            f.postal_code,
            f.address,
            delivery,
            f.delivery_office.unwrap_or_default()
        ));
    }
    text
}

async fn office(url: &str, dir: &std::path::Path) -> Office {
    let clock: SharedClock = Arc::new(SystemClock);
    let mut config = Config::default();
    config.database_url = url.to_owned();
    config.data_dir = dir.to_owned();
    config.keys.kek_file = dir.join("keys/kek.hex");
    config.keys.qr_secret_file = dir.join("keys/qr.hex");
    let store = hpki_backoffice::serve::open_store(&config, clock.clone())
        .await
        .unwrap();
    hpki_backoffice::serve::office(&config, store, clock)
        .await
        .unwrap()
}

async fn run(backend: &str, url: &str, rows: usize, pairs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let office = office(url, dir.path()).await;
    let staff = Actor::parse("staff:bench").unwrap();

    for (encoding, offset) in [("UTF-8", 0), ("CP932", rows)] {
        let text = csv(rows, offset);
        let bytes = match encoding {
            "UTF-8" => text.into_bytes(),
            _ => encoding_rs::SHIFT_JIS.encode(&text).0.into_owned(),
        };
        let started = Instant::now();
        let report = office
            .import(&bytes, ImportMode::AllOrNothing, &staff, &|_, _| {})
            .await
            .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(report.imported, rows);
        println!(
            "{backend}: CSV import of {rows} applications ({encoding}, {} KB): {seconds:.2} s ({:.0} rows/s)",
            bytes.len() / 1024,
            rows as f64 / seconds
        );
    }

    // Issuance: PAIRS applications ready for a decision, PAIRS cards in stock, PAIRS keys.
    let started = Instant::now();
    hpki_backoffice::office::generate_keys(office.store(), office.kek(), pairs, &|_, _| {})
        .await
        .unwrap();
    let cards = office.simulate_cards(pairs).await.unwrap();
    let keygen = started.elapsed().as_secs_f64();
    println!(
        "{backend}: RSA-2048 key generation (second keys and simulated cards), {} keys on every core: {keygen:.1} s ({:.1} keys/s)",
        2 * pairs,
        2.0 * pairs as f64 / keygen
    );
    office.receive_cards("jma", cards, &staff).await.unwrap();
    let text = csv(pairs, 2 * rows);
    office
        .import(
            text.as_bytes(),
            ImportMode::AllOrNothing,
            &staff,
            &|_, _| {},
        )
        .await
        .unwrap();
    hpki_backoffice::projection_runner::catch_up(office.store(), &hpki_projections::Applications)
        .await
        .unwrap();
    let docs = office
        .store()
        .docs("applications", Some("received"), 10_000_000)
        .await
        .unwrap();
    let ids: Vec<uuid::Uuid> = docs
        .iter()
        .filter(|(_, d)| {
            d.body["registry_number"]
                .as_str()
                .and_then(|r| r.parse::<usize>().ok())
                .is_some_and(|r| r >= 100_000 + 2 * rows)
        })
        .map(|(k, _)| k.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), pairs);
    for id in &ids {
        office
            .attach_photo(*id, hpki_backoffice::demo::SAMPLE_PHOTO, &staff)
            .await
            .unwrap();
        office.check_documents(*id, &staff).await.unwrap();
    }

    let started = Instant::now();
    let queue = Arc::new(std::sync::Mutex::new(ids));
    let mut callers = Vec::new();
    for _ in 0..16 {
        let office = office.clone();
        let staff = staff.clone();
        let queue = queue.clone();
        callers.push(tokio::spawn(async move {
            loop {
                let Some(id) = queue.lock().unwrap().pop() else {
                    return;
                };
                let approval = office.approve(id, &staff).await.unwrap();
                assert!(!approval.qr_pre_issued);
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{backend}: issuance of {pairs} certificate pairs (card + second certificate + QR, 16 concurrent approvals): {seconds:.2} s ({:.0} pairs/s, {:.0} signatures/s)",
        pairs as f64 / seconds,
        2.0 * pairs as f64 / seconds
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(10_000);
    let pairs = args.get(1).copied().unwrap_or(1_000);

    let speed = std::process::Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .output()
        .expect("openssl on the PATH");
    let speed = String::from_utf8_lossy(&speed.stdout);
    if let Some(line) = speed.lines().find(|l| l.starts_with("rsa 2048")) {
        println!("openssl speed rsa2048 (one core): {line}");
    }

    let backends =
        std::env::var("HPKI_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    if backends.contains("sqlite") {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        run("sqlite", &url, rows, pairs).await;
    }
    if backends.contains("postgres") {
        let server = std::env::var("HPKI_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&server).await.expect("PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        let url = format!("{server}?options=-c%20search_path%3D{schema}");
        run("postgres", &url, rows, pairs).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await
            .unwrap();
    }
}
