//! Event-log benchmarks for BENCHMARKS.md. Run: `cargo bench --bench event_log [-- EVENTS]`
//! (default 1,000,000). `HPKI_BENCH_SQLITE_FILE`, `HPKI_BENCH_PG_SCHEMA` and `HPKI_BENCH_PHASES`
//! (below) are for profiling one phase. Needs PostgreSQL at $HPKI_TEST_POSTGRES_URL
//! (default postgres://postgres@127.0.0.1:5432/test) and `pgbench` on the PATH.

use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;

/// mimalloc rather than glibc's allocator: reading the log hands every event from the reading
/// thread to the folding one, and glibc frees memory from another thread slowly (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use hpki_backoffice::audit::{self, AuditKey};
use hpki_backoffice::clock::{SharedClock, SystemClock};
use hpki_backoffice::projection_runner;
use hpki_backoffice::store::{ExpectedVersion, Store, StreamAppend};
use hpki_events::vocabulary::{ApplicationReceived, Channel, Source};
use hpki_events::{Actor, Event, Metadata, NewEvent};

fn event(n: u64) -> NewEvent {
    NewEvent::new(Event::ApplicationReceived(ApplicationReceived {
        application_id: uuid::Uuid::nil(),
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
        authority: "jma".into(),
        registry_number: format!("{:06}", n % 1_000_000),
        name_kanji: "山田 太郎".into(),
        name_kana: "ヤマダ タロウ".into(),
        name_romaji: "YAMADA TARO".into(),
        email: format!("applicant{n}@example.jp"),
        source: Source {
            channel: Channel::Csv,
            batch: Some(hpki_events::vocabulary::BatchRow {
                file_sha256: "ab".repeat(32),
                line: n,
            }),
        },
    }))
}

fn meta() -> Metadata {
    Metadata::new(Actor::parse("system:bench").unwrap())
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time the whole machine spent busy so far (every process: the benchmark and the
/// PostgreSQL server alike), from the first line of /proc/stat: user, nice, system, irq and
/// softirq, not idle, iowait or time stolen by the hypervisor. Its unit is USER_HZ, which the
/// kernel's ABI fixes at 100 a second on x86-64 and arm64.
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    busy as f64 / 100.0
}

/// CPU time (user and system) this process has used so far, from /proc/self/stat (utime and
/// stime, the 14th and 15th fields, in USER_HZ).
fn own_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// What the machine and this process have used so far: (machine, own) CPU-seconds.
fn busy_now() -> (f64, f64) {
    (machine_busy_secs(), own_busy_secs())
}

/// "; the machine busy N CPU-s, this process M" since `start` (from [`busy_now`]): with two
/// cores, a phase cannot take less wall time than half of the machine's figure.
fn busy_since(start: (f64, f64)) -> String {
    let (machine, own) = busy_now();
    format!(
        "; the machine busy {:.2} CPU-s, this process {:.2}",
        machine - start.0,
        own - start.1
    )
}

async fn batched(store: &Store, total: u64) -> f64 {
    let started = Instant::now();
    for batch in 0..total / 1_000 {
        let appends = (0..1_000u64)
            .map(|i| StreamAppend {
                // 10,000 streams of 100 events: the fold keeps 10,000 documents.
                stream: format!("application-{}", (batch * 1_000 + i) % 10_000),
                expected: ExpectedVersion::Any,
                events: vec![event(batch * 1_000 + i)],
            })
            .collect();
        store.append(appends, meta()).await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn concurrent(store: &Store, round: u64, clients: u64, each: u64) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..each {
                    let stream = format!("qr-{round}-{c}-{i}");
                    store
                        .append_to(&stream, ExpectedVersion::NoStream, vec![event(i)], meta())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (clients * each) as f64 / started.elapsed().as_secs_f64()
}

fn pgbench(server: &str) -> f64 {
    let psql = |sql: &str| {
        std::process::Command::new("psql")
            .args([server, "-qc", sql])
            .status()
            .unwrap();
    };
    psql(
        "DROP TABLE IF EXISTS bench_pgbench; CREATE TABLE bench_pgbench (id bigserial PRIMARY KEY, body bytea NOT NULL)",
    );
    let script = std::env::temp_dir().join("hpki-pgbench.sql");
    std::fs::write(
        &script,
        "INSERT INTO bench_pgbench (body) VALUES (convert_to(repeat('x', 400), 'UTF8'));\n",
    )
    .unwrap();
    let out = std::process::Command::new("pgbench")
        .args(["-n", "-c", "16", "-j", "2", "-T", "10", "-f"])
        .arg(&script)
        .arg(server)
        .output()
        .expect("pgbench on the PATH");
    psql("DROP TABLE bench_pgbench");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "pgbench said: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// `HPKI_BENCH_PHASES=append,verify` (say) runs only those phases, for profiling one; every
/// phase after `append` reads what it appended. Default: all.
fn phase(name: &str) -> bool {
    std::env::var("HPKI_BENCH_PHASES").map_or(true, |phases| phases.split(',').any(|p| p == name))
}

async fn run(backend: &str, url: &str, total: u64, clock: SharedClock) {
    let store = Store::open(url, clock.clone()).await.unwrap();
    if phase("append") {
        let rate = batched(&store, total).await;
        println!(
            "{backend}: batched append, {total} events in batches of 1,000: {rate:.0} events/s"
        );
        // The append's gigabyte of dirty pages written out before the phases that only read
        // the log, so that they do not share the disk and the cores with that writeback.
        let _ = std::process::Command::new("sync").status();
    }
    if phase("read") {
        read(backend, &store).await;
    }
    if phase("replay") {
        replay(backend, &store, &clock).await;
    }
    if phase("rebuild") {
        rebuild(backend, &store).await;
    }
    if phase("verify") {
        verify(backend, &store, &clock).await;
    }
    println!(
        "{backend}: peak RSS of the benchmark process so far: {:.0} MB",
        peak_rss_mb()
    );
    if backend == "postgres" && phase("concurrent") {
        // Commit latency on this kind of machine swings by 2-4x from one run to the next
        // (BENCHMARKS.md), so ours and pgbench take turns, three times, and each pair is
        // reported beside the median ratio.
        let server = std::env::var("HPKI_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut ratios = Vec::new();
        for round in 1..=3 {
            let ours = concurrent(&store, round, 16, 2_000).await;
            let theirs = pgbench(&server);
            ratios.push(ours / theirs);
            println!(
                "postgres: round {round}: single-event appends, 16 concurrent clients: {ours:.0} events/s; pgbench single-row INSERT, 16 clients: {theirs:.0} tps; ratio {:.0}%",
                100.0 * ours / theirs
            );
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "postgres: single-event appends against pgbench, median ratio of 3 rounds: {:.0}%",
            100.0 * ratios[1]
        );
    }
}

async fn read(backend: &str, store: &Store) {
    let started = Instant::now();
    let read = store
        .read_all(0)
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await
        .unwrap();
    println!(
        "{backend}: read {read} events, nothing done with them: {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

/// A progress callback that notes when it was last called: the fold reports every
/// 100,000th event as it folds it, so with a round total, when the last event was folded.
fn noting_last_fold() -> (impl Fn(i64), std::rc::Rc<std::cell::Cell<Option<Instant>>>) {
    let last = std::rc::Rc::new(std::cell::Cell::new(None));
    let noted = last.clone();
    (move |_| noted.set(Some(Instant::now())), last)
}

/// "…; the last event folded at N s" when the fold reported at all.
fn folded_at(started: Instant, last: Option<Instant>) -> String {
    last.map(|at| {
        format!(
            " (the last event folded at {:.2} s)",
            at.duration_since(started).as_secs_f64()
        )
    })
    .unwrap_or_default()
}

async fn replay(backend: &str, store: &Store, clock: &SharedClock) {
    let out = std::env::temp_dir().join(format!("hpki-bench-replay-{}.db", uuid::Uuid::new_v4()));
    let (progress, last) = noting_last_fold();
    let busy = busy_now();
    let started = Instant::now();
    let replay = projection_runner::replay_as_of(store, clock.now(), &out, &progress)
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{backend}: replay (read + fold {} events, write {} documents): {secs:.2} s{}{}",
        replay.position,
        replay.documents,
        folded_at(started, last.get()),
        busy_since(busy)
    );
    let _ = std::fs::remove_file(&out);
}

async fn rebuild(backend: &str, store: &Store) {
    let (progress, last) = noting_last_fold();
    let busy = busy_now();
    let started = Instant::now();
    projection_runner::rebuild(store, None, &progress)
        .await
        .unwrap();
    println!(
        "{backend}: projections rebuild from 0: {:.2} s{}{}",
        started.elapsed().as_secs_f64(),
        folded_at(started, last.get()),
        busy_since(busy)
    );
}

async fn verify(backend: &str, store: &Store, clock: &SharedClock) {
    let dir = std::env::temp_dir().join(format!("hpki-bench-key-{}", uuid::Uuid::new_v4()));
    let key = AuditKey::load_or_generate(&dir.join("audit.pem"))
        .unwrap()
        .0;
    audit::checkpoint(store, &key, clock.as_ref())
        .await
        .unwrap();
    let started = Instant::now();
    let summary = audit::verify(store, &key.public(), &|_| {}).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    // The audit key generated for this run is not left in the temporary folder.
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{backend}: audit verify {} events: {secs:.2} s = {:.0} events/s",
        summary.events,
        summary.events as f64 / secs
    );
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let clock: SharedClock = Arc::new(SystemClock);

    // HPKI_BENCH_BACKENDS=sqlite (or postgres) runs one backend only, for profiling.
    let backends =
        std::env::var("HPKI_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let dir = tempfile::tempdir().unwrap();
    if !backends.contains("sqlite") {
        return run_postgres(total, clock).await;
    }
    // HPKI_BENCH_SQLITE_FILE=path keeps the SQLite log there, so that a later run can profile
    // one phase on the log an earlier run appended (`HPKI_BENCH_PHASES=replay`, say).
    let file = std::env::var("HPKI_BENCH_SQLITE_FILE")
        .map_or_else(|_| dir.path().join("bench.db"), std::path::PathBuf::from);
    let sqlite = format!("sqlite://{}", file.display());
    run("sqlite", &sqlite, total, clock.clone()).await;
    if backends.contains("postgres") {
        // SQLite's gigabytes are removed and the kernel's dirty pages written out first, so
        // that PostgreSQL's phases do not share the disk with their writeback (BENCHMARKS.md,
        // session 14: its append gave 42-54k events/s right after SQLite's phases, 55-57k
        // alone).
        drop(dir);
        let _ = std::process::Command::new("sync").status();
        run_postgres(total, clock).await;
    }
}

async fn run_postgres(total: u64, clock: SharedClock) {
    let server = std::env::var("HPKI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    // HPKI_BENCH_PG_SCHEMA=name keeps the log in that schema (made if missing, never dropped),
    // as HPKI_BENCH_SQLITE_FILE does for SQLite; otherwise a new schema, dropped at the end.
    let kept = std::env::var("HPKI_BENCH_PG_SCHEMA").ok();
    if let Some(name) = &kept {
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "HPKI_BENCH_PG_SCHEMA: lower-case letters and _ only"
        );
    }
    let schema = kept
        .clone()
        .unwrap_or_else(|| format!("bench_{}", uuid::Uuid::new_v4().simple()));
    let admin = sqlx::PgPool::connect(&server)
        .await
        .expect("PostgreSQL for the benchmark");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let url = format!("{server}?options=-c%20search_path%3D{schema}");
    run("postgres", &url, total, clock).await;
    if kept.is_none() {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await
            .unwrap();
    }
}
