//! CRL publication through the API, on SQLite and PostgreSQL, checked by `openssl` as an
//! independent verifier: signature, profile fields, a revoked certificate reported revoked and
//! a good one good; numbers that only go up, never reused even by two publishers at once;
//! publication on the schedule (injected clock) and within a minute of a revocation; the
//! distribution point over HTTP with its caching headers; byte-for-byte reproduction from the
//! log; and a publication folder that cannot be written, refused with nothing recorded.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use hpki_backoffice::processors::Lease;
use serde_json::{Value, json};

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ca_pem(server: &Server, authority: &str) -> PathBuf {
    server
        .dir
        .path()
        .join(format!("keys/dev-ca-{authority}.crt.pem"))
}

fn published(server: &Server, authority: &str, file: &str) -> PathBuf {
    server.dir.path().join("crl").join(authority).join(file)
}

async fn publish(server: &Server) -> Vec<Value> {
    let answer = ok(server.post("/jobs/crl").send().await.unwrap()).await;
    answer.as_array().unwrap().clone()
}

async fn certificate_pem(server: &Server, serial: &str, into: &Path) {
    std::fs::write(into, server.certificate_pem(serial).await).unwrap();
}

/// Proposes (tanaka) and approves (sato) revoking the second certificate.
async fn revoke_second(server: &Server, serial: &str) {
    let proposal = ok(server
        .post_as(PROPOSER_TOKEN, "/revocation-proposals")
        .json(&json!({"certificate_serial": serial, "scope": "second_only", "reason": "keyCompromise"}))
        .send()
        .await
        .unwrap())
    .await;
    let id = proposal["id"].as_str().unwrap();
    ok(server
        .post_as(
            APPROVER_TOKEN,
            &format!("/revocation-proposals/{id}/approve"),
        )
        .send()
        .await
        .unwrap())
    .await;
}

fn quiet(config: &mut hpki_backoffice::config::Config) {
    config.crl.background = false;
    config.mail.background = false;
}

#[tokio::test]
async fn crls_are_signed_numbered_served_and_made_again_byte_for_byte() {
    for db in both().await {
        let server = Server::start_with(&db, quiet).await;
        ok(server
            .post("/authorities/jma/card-stock/receipts")
            .json(&json!({"count": 1}))
            .send()
            .await
            .unwrap())
        .await;
        let approval = server.issue("jma", "500001").await;
        let second = approval["second_certificate_serial"]
            .as_str()
            .unwrap()
            .to_owned();
        let card = approval["card"]["certificate_serial"]
            .as_str()
            .unwrap()
            .to_owned();

        // The first run publishes each authority's first CRL; the next finds nothing due.
        let first = publish(&server).await;
        let numbers: Vec<(String, u64)> = first
            .iter()
            .map(|p| {
                (
                    p["authority"].as_str().unwrap().to_owned(),
                    p["number"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            numbers,
            [("jma".into(), 1), ("jpa".into(), 1)],
            "{}",
            db.backend
        );
        assert!(publish(&server).await.is_empty());

        revoke_second(&server, &second).await;
        let after = publish(&server).await;
        assert_eq!(after.len(), 1, "only the JMA CRL is due: {after:?}");
        assert_eq!(after[0]["number"], 2);
        assert_eq!(after[0]["entries"], 1);

        // openssl: the signature, the profile, the entry.
        let dir = server.dir.path();
        let der = published(&server, "jma", "crl-sign2.crl");
        let ca = ca_pem(&server, "jma");
        let (verified, text) = openssl(&[
            "crl",
            "-inform",
            "DER",
            "-in",
            der.to_str().unwrap(),
            "-CAfile",
            ca.to_str().unwrap(),
            "-verify",
            "-noout",
        ]);
        assert!(verified && text.contains("verify OK"), "{text}");
        let (_, text) = openssl(&[
            "crl",
            "-inform",
            "DER",
            "-in",
            der.to_str().unwrap(),
            "-text",
            "-noout",
        ]);
        assert!(text.contains("Version 2 (0x1)"), "{text}");
        assert!(text.contains("sha256WithRSAEncryption"), "{text}");
        assert!(
            text.contains("X509v3 CRL Number: \n                2")
                || text.contains("CRL Number: \n                2"),
            "{text}"
        );
        assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
        assert!(text.contains(&format!("Serial Number: {second}")), "{text}");
        assert!(text.contains("Key Compromise"), "{text}");
        assert!(!text.contains(&format!("Serial Number: {card}")), "{text}");
        let crl = openssl::x509::X509Crl::from_der(&std::fs::read(&der).unwrap()).unwrap();
        let ca_cert = openssl::x509::X509::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
        assert_eq!(
            crl.issuer_name().to_der().unwrap(),
            ca_cert.subject_name().to_der().unwrap(),
            "issuer byte for byte"
        );
        let next = crl.next_update().unwrap();
        assert_eq!(
            crl.last_update().diff(next).unwrap().days,
            4,
            "nextUpdate is thisUpdate + 96 h"
        );

        // openssl verify -crl_check: the revoked one revoked, the good one good.
        let pem = published(&server, "jma", "crl-sign2.pem");
        let (revoked_pem, good_pem) = (dir.join("second.pem"), dir.join("card.pem"));
        certificate_pem(&server, &second, &revoked_pem).await;
        certificate_pem(&server, &card, &good_pem).await;
        // At the injected clock's time, not the machine's: the CRL's nextUpdate follows it.
        let at = hpki_backoffice::clock::Clock::now(server.clock.as_ref())
            .unix_timestamp()
            .to_string();
        let check = |cert: &Path| {
            openssl(&[
                "verify",
                "-attime",
                &at,
                "-crl_check",
                "-CAfile",
                ca.to_str().unwrap(),
                "-CRLfile",
                pem.to_str().unwrap(),
                cert.to_str().unwrap(),
            ])
        };
        let (ok_revoked, text) = check(&revoked_pem);
        assert!(
            !ok_revoked && text.contains("certificate revoked"),
            "{text}"
        );
        let (ok_good, text) = check(&good_pem);
        assert!(ok_good && text.contains(": OK"), "{text}");

        // Served at the distribution point's path, with caching headers.
        let url = format!(
            "http://127.0.0.1:{}/repository/crl/crl-sign2.crl",
            server.running.port
        );
        let answer = server.client.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["content-type"], "application/pkix-crl");
        assert!(answer.headers().contains_key("last-modified"));
        let etag = answer.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(answer.bytes().await.unwrap(), std::fs::read(&der).unwrap());
        let again = server
            .client
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);

        // The schedule: 02:00 JST the next day publishes both again.
        server.clock.advance(time::Duration::hours(24));
        let scheduled = publish(&server).await;
        assert_eq!(
            scheduled
                .iter()
                .map(|p| p["number"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [3, 2]
        );

        // An auditor makes each published CRL again from the log: identical.
        for (authority, number) in [("jma", 1), ("jma", 2), ("jma", 3), ("jpa", 2)] {
            let out = Command::new(env!("CARGO_BIN_EXE_hpki"))
                .args([
                    "crl",
                    "reproduce",
                    "--authority",
                    authority,
                    "--number",
                    &number.to_string(),
                ])
                .env("HPKI_DATABASE_URL", &db.url)
                .env("HPKI_DATA_DIR", dir)
                .env("HPKI_KEYS__KEK_FILE", dir.join("keys/kek.hex"))
                .env("HPKI_KEYS__QR_SECRET_FILE", dir.join("keys/qr-secret.hex"))
                .env("HPKI_AUDIT__KEY_FILE", dir.join("keys/audit.pem"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("identical"),
                "{} {authority} {number}: {text} {}",
                db.backend,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let archived = std::fs::read(dir.join("crl/jma/archive/2.crl")).unwrap();
        let listed = ok(server.get("/crls/jma").send().await.unwrap()).await;
        assert_eq!(
            listed[1]["sha256"],
            hex::encode(openssl::sha::sha256(&archived))
        );
        server.running.server.stop(true).await;
    }
}

#[tokio::test]
async fn a_folder_that_cannot_be_written_is_named_and_nothing_is_recorded() {
    let db = sqlite();
    let server = Server::start_with(&db, |c| {
        quiet(c);
        // A file where the folder should be: even root cannot write there.
        c.crl.publish_dir = c.data_dir.join("not-a-folder");
    })
    .await;
    std::fs::write(server.dir.path().join("not-a-folder"), b"x").unwrap();
    let answer = server.post("/jobs/crl").send().await.unwrap();
    assert_eq!(answer.status(), 500);
    let streams = server.running.store.read_stream("crl-jma").await.unwrap();
    assert!(streams.is_empty(), "nothing recorded");
    let dir = server.dir.path();
    let out = Command::new(env!("CARGO_BIN_EXE_hpki"))
        .args(["crl", "publish"])
        .env("HPKI_DATABASE_URL", &db.url)
        .env("HPKI_DATA_DIR", dir)
        .env("HPKI_CRL__PUBLISH_DIR", dir.join("not-a-folder"))
        .env("HPKI_KEYS__KEK_FILE", dir.join("keys/kek.hex"))
        .env("HPKI_KEYS__QR_SECRET_FILE", dir.join("keys/qr-secret.hex"))
        .env("HPKI_AUDIT__KEY_FILE", dir.join("keys/audit.pem"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not-a-folder") && stderr.contains("jma"),
        "{stderr}"
    );
    assert!(
        server
            .running
            .store
            .read_stream("crl-jma")
            .await
            .unwrap()
            .is_empty()
    );
}

/// One authority's CRL that cannot be written does not hold back the other's.
#[tokio::test]
async fn one_authoritys_failure_does_not_hold_back_the_others_crl() {
    let db = sqlite();
    let server = Server::start_with(&db, |c| {
        quiet(c);
        c.crl.publish_dir = c.data_dir.join("crls");
    })
    .await;
    let dir = server.dir.path().join("crls");
    std::fs::create_dir_all(&dir).unwrap();
    // A file where JMA's folder should be.
    std::fs::write(dir.join("jma"), b"x").unwrap();
    let answer = server.post("/jobs/crl").send().await.unwrap();
    assert_eq!(answer.status(), 500);
    let store = &server.running.store;
    assert!(store.read_stream("crl-jma").await.unwrap().is_empty());
    assert_eq!(store.read_stream("crl-jpa").await.unwrap().len(), 1);
    assert!(dir.join("jpa").is_dir());
}

#[tokio::test]
async fn two_publishers_at_once_never_share_a_number_and_one_instance_holds_the_lease() {
    for db in both().await {
        let a = Server::start_with(&db, quiet).await;
        let b = Server::start_with(&db, quiet).await;
        // Both instances ask at once, five times: the lease lets one publish, the other is
        // turned away, and the numbers never repeat or skip. (Each publication also appends at
        // the stream's version, which would refuse a second CRL of the same number; with the
        // lease in front, this test does not reach that path.)
        for _ in 0..5 {
            let (x, y) = tokio::join!(
                a.running.store.read_stream("crl-jma"),
                b.running.store.read_stream("crl-jma")
            );
            let _ = (x.unwrap(), y.unwrap());
            a.clock.advance(time::Duration::hours(24));
            b.clock.advance(time::Duration::hours(24));
            let (x, y) = tokio::join!(a.post("/jobs/crl").send(), b.post("/jobs/crl").send());
            let _ = (x.unwrap(), y.unwrap());
        }
        let numbers: Vec<u64> = a
            .running
            .store
            .read_stream("crl-jma")
            .await
            .unwrap()
            .iter()
            .map(|e| e.event.to_payload().unwrap()["number"].as_u64().unwrap())
            .collect();
        assert!(!numbers.is_empty());
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(
            numbers, expected,
            "{}: strictly increasing, none twice",
            db.backend
        );

        // The lease: one holder at a time, across connections (instances).
        let first = Lease::try_take(&a.running.store, "crl-test").await.unwrap();
        assert!(first.is_some(), "{}", db.backend);
        assert!(
            Lease::try_take(&b.running.store, "crl-test")
                .await
                .unwrap()
                .is_none()
        );
        first.unwrap().release().await;
        let second = Lease::try_take(&b.running.store, "crl-test").await.unwrap();
        assert!(second.is_some(), "{}: free again once released", db.backend);
        drop(second);
        a.running.server.stop(true).await;
        b.running.server.stop(true).await;
    }
}

#[tokio::test]
async fn a_revocation_is_on_the_published_crl_within_a_minute() {
    let db = sqlite();
    let server = Server::start_with(&db, |c| {
        c.mail.background = false;
        c.crl.poll_seconds = 1;
    })
    .await;
    let approval = server.issue("jma", "600001").await;
    let second = approval["second_certificate_serial"]
        .as_str()
        .unwrap()
        .to_owned();
    revoke_second(&server, &second).await;
    let der = published(&server, "jma", "crl-sign2.crl");
    let started = Instant::now();
    loop {
        let listed = std::fs::read(&der)
            .ok()
            .and_then(|d| openssl::x509::X509Crl::from_der(&d).ok())
            .and_then(|crl| {
                crl.get_revoked().map(|r| {
                    r.iter().any(|e| {
                        e.serial_number()
                            .to_bn()
                            .unwrap()
                            .to_hex_str()
                            .unwrap()
                            .to_string()
                            == second
                    })
                })
            })
            .unwrap_or(false);
        if listed {
            break;
        }
        if started.elapsed() >= Duration::from_secs(60) {
            let listed = ok(server.get("/crls/jma").send().await.unwrap()).await;
            panic!(
                "not published within 60 s; published: {listed}; file there: {}",
                der.exists()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
