//! The `hpki` command and `hpki serve` from the outside: exit codes, one-line errors naming the
//! place, and the operational HTTP endpoints.

mod common;

use std::process::{Command, Output};

use common::*;

fn hpki(dir: &std::path::Path, args: &[&str]) -> Output {
    hpki_with_env(dir, args, &[])
}

/// [`hpki`] with `env` set besides.
fn hpki_with_env(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hpki"))
        .args(args)
        .current_dir(dir)
        .env_remove("HPKI_DATABASE_URL")
        .env_remove("HPKI_CONFIG")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn help_explains_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = hpki(dir.path(), &["--help"]);
    let help = text(&out);
    for command in [
        "serve",
        "migrate",
        "audit",
        "events",
        "projections",
        "replay",
    ] {
        assert!(
            help.contains(command),
            "{command} missing from --help: {help}"
        );
    }
    let audit = text(&hpki(dir.path(), &["audit", "--help"]));
    assert!(
        audit.contains("verify") && audit.contains("checkpoint"),
        "{audit}"
    );
}

#[test]
fn a_log_written_into_a_pipe_is_plain_text() {
    // NO_COLOR empty (`hpki` sets it to 1), which allows colours: they follow whether stderr is
    // a terminal, and the pipe that `output` makes is not one.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("plain.db").display());
    let args = ["--database", &db, "audit", "checkpoint"];
    let out = hpki_with_env(dir.path(), &args, &[("NO_COLOR", "")]);
    assert!(out.status.success(), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    // The first checkpoint generates the audit key and says where it put it.
    assert!(
        log.contains("GENERATED A NEW AUDIT KEY") && log.contains("path=var/keys/audit-"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "escape codes in {log:?}");
}

#[tokio::test]
async fn verify_exits_0_on_a_clean_log_and_2_naming_the_position_after_an_edit() {
    for db in both().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&db, clock()).await;
        seed(&store, 4).await;
        let url = db.url.as_str();
        let out = hpki(dir.path(), &["--database", url, "audit", "checkpoint"]);
        assert!(out.status.success(), "{}", text(&out));
        let out = hpki(dir.path(), &["--database", url, "audit", "verify"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("ok: 4 events, 1 checkpoints, head "),
            "{}",
            text(&out)
        );

        let edit = match store.db() {
            hpki_backoffice::store::Db::Sqlite(s) => sqlx::raw_sql(
                "DROP TRIGGER events_no_delete; DELETE FROM events WHERE position = 2",
            )
            .execute(&s.pool)
            .await
            .map(|_| ()),
            hpki_backoffice::store::Db::Postgres(p) => sqlx::raw_sql(
                "ALTER TABLE events DISABLE TRIGGER USER; DELETE FROM events WHERE position = 2",
            )
            .execute(&p.pool)
            .await
            .map(|_| ()),
        };
        edit.unwrap();
        let out = hpki(dir.path(), &["--database", url, "audit", "verify"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains("TAMPERED: position 2: the event is missing"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn export_import_and_replay_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = format!("sqlite://{}", dir.path().join("a.db").display());
    let dst = format!("sqlite://{}", dir.path().join("b.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = hpki_backoffice::store::Store::open(&src, clock())
            .await
            .unwrap();
        seed(&store, 12).await;
    });
    let out = hpki(
        dir.path(),
        &["--database", &src, "events", "export", "-o", "log.jsonl"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = hpki(
        dir.path(),
        &["--database", &dst, "events", "import", "log.jsonl"],
    );
    assert!(text(&out).contains("imported 12 events"), "{}", text(&out));
    let out = hpki(
        dir.path(),
        &["--database", &dst, "events", "import", "log.jsonl"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("already holds 12 events"),
        "{}",
        text(&out)
    );

    let out = hpki(
        dir.path(),
        &[
            "--database",
            &dst,
            "replay",
            "--as-of",
            "2026-11-22T09:00:00+09:00",
        ],
    );
    let said = text(&out);
    assert!(
        said.contains("state as of 2026-11-22 09:00:00 JST") && said.contains("position 12"),
        "{said}"
    );
    assert!(
        dir.path()
            .join("var/replay/as-of-2026-11-22T000000000000Z.db")
            .exists(),
        "{said}"
    );
    let out = hpki(
        dir.path(),
        &["--database", &dst, "replay", "--as-of", "yesterday"],
    );
    assert!(
        text(&out).contains("\"yesterday\" is not an RFC 3339 time"),
        "{}",
        text(&out)
    );

    let out = hpki(dir.path(), &["--database", &dst, "projections", "rebuild"]);
    assert!(
        text(&out).contains("rebuilt streams up to position 12"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_configuration_and_database_urls_get_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hpki.toml"),
        "[projections]\npoll_interval_ms = \"often\"\n",
    )
    .unwrap();
    let out = hpki(dir.path(), &["--config", "hpki.toml", "migrate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "error: configuration: hpki.toml:2: projections.poll_interval_ms: invalid type"
        ),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // The same mistake made in the environment names the variable.
    let out = hpki_with_env(
        dir.path(),
        &["migrate"],
        &[("HPKI_PROJECTIONS__POLL_INTERVAL_MS", "often")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "error: configuration: environment variable HPKI_PROJECTIONS__POLL_INTERVAL_MS: \
             projections.poll_interval_ms: invalid type"
        ),
        "{err}"
    );

    let out = hpki(
        dir.path(),
        &["--database", "mysql://localhost/x", "migrate"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is neither sqlite:// nor postgres://"),
        "{}",
        text(&out)
    );

    let out = hpki(
        dir.path(),
        &[
            "--database",
            "postgres://nobody:secret@127.0.0.1:1/x",
            "migrate",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("cannot connect to postgres://nobody:***@127.0.0.1:1/x"),
        "{err}"
    );
    assert!(!err.contains("secret"), "the password leaked: {err}");

    let out = hpki(dir.path(), &["--config", "missing.toml", "migrate"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("configuration: missing.toml: no such file"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn serve_answers_health_readiness_and_metrics() {
    for db in both().await {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(&db, dir.path());
        // Only the seeded events are counted: no mail or CRL processor appends meanwhile.
        config.mail.background = false;
        config.crl.background = false;
        let mut running = hpki_backoffice::serve::start(&config, clock())
            .await
            .unwrap();
        let base = format!("http://127.0.0.1:{}", running.port);
        let client = http_client().build().unwrap();
        // The first start made a development CA for each authority, under data_dir/keys.
        for id in ["jma", "jpa"] {
            assert!(
                dir.path()
                    .join(format!("keys/dev-ca-{id}.crt.pem"))
                    .exists(),
                "{id}"
            );
        }

        let health = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);

        // The first start appended the administrator's account already.
        let before = running.store.appended();
        seed(&running.store, 5).await;
        // Readiness follows the projections: poll until they catch up, no sleeps. Bounded by
        // a deadline rather than a count of polls: 500 polls, about half a second, were once
        // too few for PostgreSQL with the whole suite running beside it.
        let mut ready = None;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let r = client.get(format!("{base}/readyz")).send().await.unwrap();
            if r.status() == 200 {
                ready = Some(r.json::<serde_json::Value>().await.unwrap());
                break;
            }
            tokio::task::yield_now().await;
        }
        let ready = ready.unwrap_or_else(|| panic!("{}: never ready", db.backend));
        assert_eq!(ready["migrations_applied"], true);

        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(&format!("hpki_events_appended_total {}", before + 5)),
            "{metrics}"
        );
        assert!(
            metrics.contains("hpki_projection_lag_events{projection=\"streams\"} 0"),
            "{metrics}"
        );
        assert!(
            metrics.contains(
                "hpki_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains("hpki_http_request_duration_seconds_bucket"),
            "{metrics}"
        );

        // The address the README gives leads to the staff console.
        let front = http_client()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{base}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(front.status(), 303, "{}", db.backend);
        assert_eq!(front.headers()["location"], "/console/", "{}", db.backend);

        // Dropped, the back office stops serving, not only its background work.
        let port = running.port;
        let done = std::mem::replace(&mut running.done, tokio::spawn(async { Ok(()) }));
        drop(running);
        tokio::time::timeout(std::time::Duration::from_secs(60), done)
            .await
            .unwrap_or_else(|_| panic!("{}: the dropped server never stopped", db.backend))
            .unwrap()
            .unwrap();
        let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(
            refused.is_err(),
            "{}: still answering on {port}",
            db.backend
        );
    }
}

#[test]
fn staff_accounts_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("staff.db").display());
    let out = hpki(
        dir.path(),
        &[
            "--database",
            &db,
            "staff",
            "create",
            "kato",
            "--display-name",
            "加藤 三郎",
            "--role",
            "officer",
            "--role",
            "approver",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let first = text(&out);
    assert!(first.contains("/console/setup/"), "{first}");
    let out = hpki(dir.path(), &["--database", &db, "staff", "list"]);
    let list = text(&out);
    assert!(
        list.contains("kato\t加藤 三郎\tofficer,approver\tnot set up"),
        "{list}"
    );
    // A new link; the same name twice and a role that does not exist are refused, exit 2 or 1.
    let out = hpki(
        dir.path(),
        &["--database", &db, "staff", "setup-link", "kato"],
    );
    assert!(
        out.status.success() && text(&out) != first,
        "{}",
        text(&out)
    );
    let out = hpki(
        dir.path(),
        &[
            "--database",
            &db,
            "staff",
            "create",
            "kato",
            "--display-name",
            "x",
            "--role",
            "officer",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("kato"), "{}", text(&out));
    let out = hpki(
        dir.path(),
        &[
            "--database",
            &db,
            "staff",
            "create",
            "ito",
            "--display-name",
            "x",
            "--role",
            "boss",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("--role \"boss\""), "{}", text(&out));
}
