//! The mail outbox against a real SMTP server on loopback (aiosmtpd): what the log calls for
//! goes out once, with Japanese subjects MIME-encoded; 4xx replies, a server that is down or
//! drops the connection mid-message are retried with a doubling backoff on the injected
//! clock; a 5xx is listed for staff, who retry it; a process killed between the server's
//! acceptance and the record sends again with the same Message-ID, recorded once; and a log
//! that refuses the record while the process lives on gets it later, the mail not sent again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::server::*;
use common::smtp::{SmtpServer, free_port};
use common::*;
use hpki_backoffice::config::{Config, MailTransport};
use serde_json::Value;

fn smtp_to(config: &mut Config, port: u16) {
    config.mail.transport = MailTransport::Smtp;
    config.mail.smtp_port = port;
    config.mail.background = false;
    config.mail.retry_first_seconds = 60;
    config.mail.timeout_seconds = 10;
}

async fn send(server: &Server) -> Value {
    ok(server.post("/jobs/mail").send().await.unwrap()).await
}

async fn mail_list(server: &Server, list: &str) -> Vec<Value> {
    let items = ok(server
        .get(&format!("/mail?list={list}"))
        .send()
        .await
        .unwrap())
    .await;
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["body"].clone())
        .collect()
}

/// The events of one mail's stream, by type.
async fn outcomes(server: &Server, mail_id: &str) -> Vec<(String, Value)> {
    server
        .running
        .store
        .read_stream(&format!("mail-{mail_id}"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.event.type_name().to_owned(),
                e.event.to_payload().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_mail_the_log_calls_for_goes_out_once_in_japanese() {
    for db in both().await {
        let smtp = SmtpServer::start();
        let server = Server::start_with(&db, |c| smtp_to(c, smtp.port)).await;
        server.issue("jma", "100001").await;
        let report = send(&server).await;
        // No card stock: received, approved, and card deferred with the QR pre-issued.
        assert_eq!(report["sent"], 3, "{} {report}", db.backend);
        let received = smtp.received();
        assert_eq!(received.len(), 3, "{}", db.backend);
        let subjects: BTreeSet<String> = received.iter().map(|m| m.subject.clone()).collect();
        assert_eq!(
            subjects,
            BTreeSet::from([
                "【日本医師会 HPKI】HPKI電子証明書の発行申請を受け付けました".to_owned(),
                "【日本医師会 HPKI】HPKI電子証明書の発行を承認しました".to_owned(),
                "【日本医師会 HPKI】ICカードの発行が遅れます（QRコードを先にお送りします）"
                    .to_owned(),
            ])
        );
        for mail in &received {
            assert!(
                mail.raw_subject.trim_start().starts_with("=?utf-8?"),
                "{}",
                mail.raw_subject
            );
            assert!(mail.to.contains("hanako@example.jp"), "{}", mail.to);
            assert!(mail.body.contains("山田 花子 様"), "{}", mail.body);
            assert!(
                mail.body.contains("日本医師会電子認証センター"),
                "{}",
                mail.body
            );
            assert!(
                !mail.body.contains("1980"),
                "no birth date in a mail: {}",
                mail.body
            );
        }
        let ids: BTreeSet<&str> = received.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(ids.len(), 3);
        // Nothing twice: the next run finds nothing to send.
        assert_eq!(send(&server).await["sent"], 0);
        assert_eq!(smtp.received().len(), 3);
        let sent = mail_list(&server, "mail:sent").await;
        assert_eq!(sent.len(), 3);
        for mail in &sent {
            let id = mail["mail_id"].as_str().unwrap();
            assert!(
                ids.contains(format!("<{id}@hpki.example.jp>").as_str()),
                "{mail}"
            );
            let types: Vec<String> = outcomes(&server, id)
                .await
                .into_iter()
                .map(|o| o.0)
                .collect();
            assert_eq!(types, ["MailSent"]);
        }
        server.running.server.stop(true).await;
    }
}

#[tokio::test]
async fn down_4xx_and_a_dropped_connection_are_retried_with_backoff_and_delivered_once() {
    let db = sqlite();
    let port = free_port();
    let server = Server::start_with(&db, |c| smtp_to(c, port)).await;
    ok(server
        .post("/applications")
        .json(&form("jpa", "200001"))
        .send()
        .await
        .unwrap())
    .await;
    // The server is down.
    assert_eq!(send(&server).await["deferred"], 1);
    let pending = mail_list(&server, "mail:pending").await;
    let mail_id = pending[0]["mail_id"].as_str().unwrap().to_owned();
    // Not due again before its backoff.
    assert_eq!(send(&server).await["deferred"], 0);

    let smtp = SmtpServer::start_on(port);
    smtp.set_mode("tempfail");
    server.clock.advance(time::Duration::seconds(60));
    assert_eq!(send(&server).await["deferred"], 1);
    smtp.set_mode("disconnect");
    server.clock.advance(time::Duration::seconds(120));
    assert_eq!(send(&server).await["deferred"], 1);
    assert!(smtp.received().is_empty());
    smtp.set_mode("accept");
    server.clock.advance(time::Duration::seconds(239));
    assert_eq!(
        send(&server).await["sent"],
        0,
        "the third retry waits 240 s"
    );
    server.clock.advance(time::Duration::seconds(1));
    assert_eq!(send(&server).await["sent"], 1);

    let history = outcomes(&server, &mail_id).await;
    let types: Vec<&str> = history.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(
        types,
        ["MailDeferred", "MailDeferred", "MailDeferred", "MailSent"]
    );
    assert!(
        history[1].1["error"].as_str().unwrap().contains("451"),
        "{:?}",
        history[1]
    );
    let received = smtp.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].subject,
        "【日本薬剤師会 HPKI】HPKI電子証明書の発行申請を受け付けました"
    );
    assert_eq!(send(&server).await["sent"], 0);
}

#[tokio::test]
async fn a_5xx_is_listed_for_staff_who_retry_it() {
    let db = sqlite();
    let smtp = SmtpServer::start();
    let server = Server::start_with(&db, |c| smtp_to(c, smtp.port)).await;
    ok(server
        .post("/applications")
        .json(&form("jma", "300001"))
        .send()
        .await
        .unwrap())
    .await;
    smtp.set_mode("permfail");
    assert_eq!(send(&server).await["failed"], 1);
    let failed = mail_list(&server, "mail:failed").await;
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["error"].as_str().unwrap().contains("550"),
        "{}",
        failed[0]
    );
    // Not tried again on its own.
    server.clock.advance(time::Duration::hours(5));
    assert_eq!(send(&server).await["failed"], 0);

    let id = failed[0]["mail_id"].as_str().unwrap();
    let retry = |path: String| server.post(&path).send();
    let answer = retry(format!("/mail/{id}/retry")).await.unwrap();
    assert_eq!(answer.status(), 204);
    let again = retry(format!("/mail/{id}/retry")).await.unwrap();
    assert_eq!(refused(again, 409).await, "mail_not_failed");
    let unknown = retry(format!("/mail/{}/retry", uuid::Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(refused(unknown, 404).await, "unknown_mail");

    smtp.set_mode("accept");
    assert_eq!(send(&server).await["sent"], 1);
    assert_eq!(smtp.received().len(), 1);
    let types: Vec<String> = outcomes(&server, id)
        .await
        .into_iter()
        .map(|o| o.0)
        .collect();
    assert_eq!(types, ["MailFailed", "MailRetryRequested", "MailSent"]);
}

#[tokio::test]
async fn a_mail_whose_record_the_log_refused_is_recorded_later_not_sent_again() {
    for db in both().await {
        let smtp = SmtpServer::start();
        let server = Server::start_with(&db, |c| smtp_to(c, smtp.port)).await;
        ok(server
            .post("/applications")
            .json(&form("jma", "500001"))
            .send()
            .await
            .unwrap())
        .await;
        let mail_id = mail_list(&server, "mail:pending").await[0]["mail_id"]
            .as_str()
            .unwrap()
            .to_owned();
        smtp.set_mode("accept");
        refuse_appends(&db, true).await;
        // The server takes the mail; the log refuses to record it, twice over.
        for _ in 0..2 {
            let answer = server.post("/jobs/mail").send().await.unwrap();
            assert!(answer.status().is_server_error(), "{}", db.backend);
        }
        assert_eq!(smtp.received().len(), 1, "{}", db.backend);
        assert!(outcomes(&server, &mail_id).await.is_empty());

        refuse_appends(&db, false).await;
        assert_eq!(send(&server).await["sent"], 1, "{}", db.backend);
        server.clock.advance(time::Duration::hours(1));
        assert_eq!(send(&server).await["sent"], 0, "{}", db.backend);
        let received = smtp.received();
        assert_eq!(
            received.len(),
            1,
            "sent once, recorded once: {}",
            db.backend
        );
        let types: Vec<String> = outcomes(&server, &mail_id)
            .await
            .into_iter()
            .map(|o| o.0)
            .collect();
        assert_eq!(types, ["MailSent"], "{}", db.backend);
        assert_eq!(mail_list(&server, "mail:sent").await.len(), 1);
    }
}

/// `hpki serve` as a process of its own, so that it can be killed.
struct Process {
    child: std::process::Child,
    base: String,
}

impl Process {
    fn start(config_file: &std::path::Path, port: u16) -> Process {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hpki"))
            .args(["--config", config_file.to_str().unwrap(), "serve"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Process {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits, up to a minute, for `done` (readiness, not timing).
async fn until(mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "gave up waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_crash_after_the_server_took_a_mail_sends_it_again_with_the_same_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start();
    smtp.set_mode("hang");
    let port = free_port();
    let d = dir.path().display();
    let config_file = dir.path().join("hpki.toml");
    std::fs::write(
        &config_file,
        format!(
            "database_url = \"sqlite://{d}/hpki.db\"\ndata_dir = \"{d}\"\n\
             [server]\nlisten = \"127.0.0.1:{port}\"\n\
             [audit]\nkey_file = \"{d}/keys/audit.pem\"\ncheckpoint_schedule = \"0 0 * * * *\"\n\
             [keys]\nkek_file = \"{d}/keys/kek.hex\"\nqr_secret_file = \"{d}/keys/qr.hex\"\npool_size = 1\n\
             [mail]\ntransport = \"smtp\"\nsmtp_port = {}\ntimeout_seconds = 600\n\
             [staff.suzuki]\ntoken_sha256 = \"{}\"\n",
            smtp.port,
            hex::encode(openssl::sha::sha256(STAFF_TOKEN.as_bytes())),
        ),
    )
    .unwrap();
    let client = http_client().build().unwrap();
    let first = Process::start(&config_file, port);
    until(async || {
        client
            .get(format!("{}/healthz", first.base))
            .send()
            .await
            .is_ok()
    })
    .await;
    ok(client
        .post(format!("{}/api/v1/applications", first.base))
        .bearer_auth(STAFF_TOKEN)
        .json(&form("jma", "400001"))
        .send()
        .await
        .unwrap())
    .await;
    // The server has the mail; the back office waits for its answer, and dies.
    until(async || !smtp.received().is_empty()).await;
    drop(first);

    smtp.set_mode("accept");
    let second = Process::start(&config_file, port);
    let sent = async || {
        let Ok(answer) = client
            .get(format!("{}/api/v1/mail?list=mail:sent", second.base))
            .bearer_auth(STAFF_TOKEN)
            .send()
            .await
        else {
            return false;
        };
        answer
            .json::<Value>()
            .await
            .is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == 1))
    };
    until(sent).await;
    drop(second);

    let received = smtp.received();
    assert_eq!(
        received.len(),
        2,
        "delivered, then sent again after the crash"
    );
    assert_eq!(received[0].message_id, received[1].message_id);
    let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
    for mail in &received {
        *by_id.entry(&mail.message_id).or_default() += 1;
    }
    assert_eq!(by_id.len(), 1, "one mail once a receiver drops the repeat");

    let store = hpki_backoffice::store::Store::open(&format!("sqlite://{d}/hpki.db"), clock())
        .await
        .unwrap();
    let id = received[0]
        .message_id
        .trim_matches(['<', '>'])
        .split('@')
        .next()
        .unwrap();
    let types: Vec<String> = store
        .read_stream(&format!("mail-{id}"))
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.type_name().to_owned())
        .collect();
    assert_eq!(types, ["MailSent"]);
}
