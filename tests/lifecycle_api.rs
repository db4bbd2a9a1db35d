//! After issuance, through the public API only, on SQLite and PostgreSQL, with time moved by
//! the injectable clock: the two scenarios of issue 4 (JMA and JPA), the password lockout
//! under fifty concurrent attempts, the per-address rate limit, and on-screen reissue with a
//! real IC-card key.

mod common;

use std::sync::Arc;

use common::server::*;
use common::*;
use reqwest::Response;
use serde_json::{Value, json};
use time::Duration;
use time::macros::datetime;

fn device(credential: &str) -> Value {
    json!({
        "credential_id": credential,
        "public_key": "pQECAyYgASFYIMAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "aaguid": "08987058-cadc-4b81-b6e1-30de50dcbe96",
    })
}

async fn register(server: &Server, qr_id: &str, credential: &str) -> Response {
    let mut body = device(credential);
    body["token"] = json!(server.token(qr_id));
    server.portal("/devices").json(&body).send().await.unwrap()
}

fn types(timeline: &[Value]) -> Vec<String> {
    timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// A card key pair made "on the card": the test keeps the private half to sign with.
fn card_key() -> (openssl::pkey::PKey<openssl::pkey::Private>, String) {
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let key = openssl::pkey::PKey::from_rsa(rsa).unwrap();
    let pem = String::from_utf8(key.public_key_to_pem().unwrap()).unwrap();
    (key, pem)
}

#[tokio::test]
async fn jma_shortage_lockout_reissue_registration_card_and_device_loss() {
    for db in both().await {
        let server = Server::start(&db, 100).await;
        let subscriber = "subscriber-jma-111111";

        // Approved during a card shortage: the card waits, the QR goes out first.
        let approval = server.issue("jma", "111111").await;
        assert_eq!(approval["card"]["status"], "deferred", "{approval}");
        assert_eq!(approval["qr_pre_issued"], true);
        let second = approval["second_certificate_serial"]
            .as_str()
            .unwrap()
            .to_owned();
        let first_qr = approval["qr_id"].as_str().unwrap().to_owned();

        // Not a password attempt: malformed input, refused without counting.
        for bad in ["1980041", "abcdefgh", "", "1980-04-01x"] {
            assert_eq!(
                refused(server.password(&first_qr, bad).await, 422).await,
                "password_format"
            );
        }
        // Five wrong passwords lock the QR; the fifth says so.
        for left in [4, 3, 2, 1] {
            let outcome = ok(server.password(&first_qr, "19800402").await).await;
            assert_eq!(outcome, json!({"result": "wrong", "attempts_left": left}));
        }
        let outcome = ok(server.password(&first_qr, "19800402").await).await;
        assert_eq!(outcome, json!({"result": "locked"}));
        // Even the right password is not evaluated now.
        assert_eq!(
            refused(server.password(&first_qr, "19800401").await, 423).await,
            "qr_locked"
        );
        let locked = server.lifecycle("qr:locked").await;
        assert_eq!(locked.len(), 1);
        assert_eq!(locked[0]["failures"], 5);

        // Web-form reissue (JMA): approved, printed; the locked QR is superseded.
        let e = server
            .post("/reissue-requests")
            .json(&json!({"certificate_serial": second, "channel": "email", "reason": "locked"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 422).await, "channel_not_offered");
        // The subscriber submits the web form. Details that match nothing get the same
        // answer and record nothing; matching ones become a request for staff.
        let reissue_form = |birth: &str| {
            server.portal("/reissue-requests").json(&json!({
                "authority": "jma", "registry_number": "111111",
                "birth_date": birth, "reason": "locked"}))
        };
        let wrong = ok(reissue_form("19800402").send().await.unwrap()).await;
        assert!(server.lifecycle("reissue:open").await.is_empty());
        let right = ok(reissue_form("1980-04-01").send().await.unwrap()).await;
        assert_eq!(wrong, right);
        let open = server.lifecycle("reissue:open").await;
        assert_eq!(open.len(), 1);
        assert_eq!(open[0]["channel"], "web_form");
        assert_eq!(open[0]["requested_by"], "system:portal");
        let request_id = open[0]["request_id"].as_str().unwrap().to_owned();
        let reissued = ok(server
            .post(&format!("/reissue-requests/{request_id}/approve"))
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(reissued["delivery"], "print");
        assert!(reissued.get("registration_url").is_none(), "{reissued}");
        let qr = reissued["qr_id"].as_str().unwrap().to_owned();
        assert_eq!(
            refused(server.password(&first_qr, "19800401").await, 410).await,
            "qr_superseded"
        );
        let e = server
            .post(&format!("/reissue-requests/{request_id}/approve"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 409).await, "reissue_decided");

        // The right password, in full-width digits: sign-in with the subscriber ID.
        let outcome = ok(server.password(&qr, "１９８００４０１").await).await;
        assert_eq!(
            outcome,
            json!({"result": "accepted", "subscriber_id": "111111", "authority": "jma",
                   "registered": false})
        );

        // The phone is registered; a second one is refused; the QR now offers Sign in.
        let report = ok(register(&server, &qr, "Y3JlZGVudGlhbC1vbmUtMDAwMQ").await).await;
        assert_eq!(report["certificate_serial"], json!(second));
        assert_eq!(
            refused(
                register(&server, &qr, "Y3JlZGVudGlhbC10d28tMDAwMg").await,
                409
            )
            .await,
            "device_already_registered"
        );
        let outcome = ok(server.password(&qr, "19800401").await).await;
        assert_eq!(outcome["registered"], true);

        // Card stock arrives: the deferred card is issued.
        let (_, card_pem) = card_key();
        let receipt = ok(server
            .post("/authorities/jma/card-stock/receipts")
            .json(&json!({"cards": [{"card_serial": "JMA-CARD-0001", "public_key_pem": card_pem}]}))
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(receipt["issued_from_queue"].as_array().unwrap().len(), 1);

        // The phone is lost: a case, a proposal, and a second person's approval.
        let case = ok(server
            .post("/loss-reports")
            .json(&json!({"certificate_serial": second, "kind": "device", "note": "電話で届出"}))
            .send()
            .await
            .unwrap())
        .await;
        let case_id = case["id"].as_str().unwrap();
        assert_eq!(server.lifecycle("case:open").await.len(), 1);
        let e = server
            .post_as(PROPOSER_TOKEN, "/revocation-proposals")
            .json(&json!({"certificate_serial": second, "scope": "card_only",
                          "reason": "keyCompromise", "case_id": case_id}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 422).await, "scope_not_for_case");
        let e = server
            .post_as(PROPOSER_TOKEN, "/revocation-proposals")
            .json(
                &json!({"certificate_serial": second, "scope": "second_only",
                          "reason": "certificateHold", "case_id": case_id}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 422).await, "reason_not_allowed");
        let proposal = ok(server
            .post_as(PROPOSER_TOKEN, "/revocation-proposals")
            .json(
                &json!({"certificate_serial": second, "scope": "second_only",
                          "reason": "keyCompromise", "case_id": case_id}),
            )
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(proposal["second_serial"], json!(second));
        assert_eq!(proposal["credential_id"], "Y3JlZGVudGlhbC1vbmUtMDAwMQ");
        let proposal_id = proposal["id"].as_str().unwrap();
        let approve = format!("/revocation-proposals/{proposal_id}/approve");
        // The proposer holds the approver role, and still cannot decide their own proposal.
        let e = server
            .post_as(PROPOSER_TOKEN, &approve)
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 403).await, "own_proposal");
        // A registration officer without the approver role cannot either.
        let e = server.post(&approve).send().await.unwrap();
        assert_eq!(refused(e, 403).await, "role_required");
        assert_eq!(server.lifecycle("proposal:open").await.len(), 1);
        let decided = ok(server
            .post_as(APPROVER_TOKEN, &approve)
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(decided["revoked"], json!([second]));
        assert_eq!(decided["device_removed"], true);
        assert_eq!(decided["qrs_invalidated"], 1);
        let e = server
            .post_as(APPROVER_TOKEN, &approve)
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 409).await, "proposal_decided");

        // The credential is gone, the QR is dead, nothing can be reissued for the certificate.
        assert_eq!(
            refused(server.password(&qr, "19800401").await, 410).await,
            "qr_revoked"
        );
        let e = server
            .post("/reissue-requests")
            .json(&json!({"certificate_serial": second, "channel": "web_form", "reason": "lost"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 409).await, "certificate_revoked");
        let revoked = server.lifecycle("revoked:jma").await;
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0]["serial"], json!(second));
        assert_eq!(revoked[0]["reason_code"], 1);
        assert_eq!(server.lifecycle("case:closed").await.len(), 1);

        let timeline = server.timeline(subscriber).await;
        let kinds = types(&timeline);
        for expected in [
            "CardDeferred",
            "QrLocked",
            "ReissueApproved",
            "QrSuperseded",
            "PasswordAccepted",
            "DeviceRegistered",
            "CardCertificateIssued",
            "LossReported",
            "RevocationProposed",
            "RevocationApproved",
            "CertificateRevoked",
            "DeviceRemoved",
            "QrInvalidated",
            "LossCaseClosed",
        ] {
            assert!(
                kinds.contains(&expected.to_owned()),
                "{expected} in {kinds:?}"
            );
        }
        assert_eq!(kinds.iter().filter(|k| *k == "PasswordFailed").count(), 5);
        let approved = timeline
            .iter()
            .find(|e| e["type"] == "RevocationApproved")
            .unwrap();
        assert_eq!(approved["by"], "staff:sato");
        assert!(approved["at_jst"].as_str().unwrap().ends_with("JST"));
        let text = serde_json::to_string(&timeline).unwrap();
        assert!(!text.contains("token_sha256") && !text.contains("birth_date"));
        server.running.server.stop(true).await;
    }
}

#[tokio::test]
async fn jpa_expiry_to_the_second_email_reissue_and_card_loss_keeping_the_phone() {
    for db in both().await {
        let server = Server::start(&db, 100).await;
        ok(server
            .post("/authorities/jpa/card-stock/receipts")
            .json(&json!({"count": 1}))
            .send()
            .await
            .unwrap())
        .await;
        let approval = server.issue("jpa", "222222").await;
        assert_eq!(approval["card"]["status"], "issued", "{approval}");
        let card = approval["card"]["certificate_serial"]
            .as_str()
            .unwrap()
            .to_owned();
        let second = approval["second_certificate_serial"]
            .as_str()
            .unwrap()
            .to_owned();
        let qr = approval["qr_id"].as_str().unwrap().to_owned();
        // Issued 2026-11-22 (JST): the last usable day is 2027-02-22.
        assert_eq!(approval["qr_last_usable_day"], "2027-02-22");

        // Fourteen days before, the job queues one reminder, once.
        server.clock.set(datetime!(2027-02-08 00:05 +09:00));
        assert_eq!(
            server.expiry().await,
            json!({"qrs_expired": 0, "reminders_due": 1, "proposals_expired": 0})
        );
        assert_eq!(server.expiry().await["reminders_due"], 0);
        let expiring = ok(server.get("/qrs/expiring").send().await.unwrap()).await;
        assert_eq!(expiring.as_array().unwrap().len(), 1);

        // The last second of the last usable day: still usable.
        server.clock.set(datetime!(2027-02-22 23:59:59 +09:00));
        let outcome = ok(server.password(&qr, "19800402").await).await;
        assert_eq!(outcome, json!({"result": "wrong", "attempts_left": 4}));
        assert_eq!(server.expiry().await["qrs_expired"], 0);
        // One second later it is expired, before the job has run, and the job records it.
        server.clock.advance(Duration::seconds(1));
        assert_eq!(
            refused(server.password(&qr, "19800401").await, 410).await,
            "qr_expired"
        );
        assert_eq!(server.expiry().await["qrs_expired"], 1);
        assert_eq!(server.expiry().await["qrs_expired"], 0);
        assert_eq!(server.lifecycle("qr:expired").await.len(), 1);

        // E-mail reissue (JPA): no web form; documents first; the URL goes by e-mail.
        let e = server
            .post("/reissue-requests")
            .json(
                &json!({"certificate_serial": second, "channel": "web_form", "reason": "expired"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 422).await, "channel_not_offered");
        let e = server
            .post("/reissue-requests")
            .json(&json!({"certificate_serial": card, "channel": "email", "reason": "expired"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 422).await, "not_a_second_certificate");
        let request = ok(server
            .post("/reissue-requests")
            .json(&json!({"certificate_serial": second, "channel": "email", "reason": "expired"}))
            .send()
            .await
            .unwrap())
        .await;
        let request_id = request["id"].as_str().unwrap();
        let e = server
            .post(&format!("/reissue-requests/{request_id}/approve"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 409).await, "documents_not_checked");
        ok(server
            .post(&format!("/reissue-requests/{request_id}/documents-checked"))
            .send()
            .await
            .unwrap())
        .await;
        let reissued = ok(server
            .post(&format!("/reissue-requests/{request_id}/approve"))
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(reissued["delivery"], "email");
        assert_eq!(reissued["last_usable_day"], "2027-05-23");
        let qr = reissued["qr_id"].as_str().unwrap().to_owned();

        // Registered.
        let outcome = ok(server.password(&qr, "19800401").await).await;
        assert_eq!(outcome["subscriber_id"], "222222-jpa");
        ok(register(&server, &qr, "anBhLXBob25lLWNyZWRlbnRpYWw").await).await;

        // The card is lost: the card certificate only is revoked.
        let case = ok(server
            .post("/loss-reports")
            .json(&json!({"certificate_serial": card, "kind": "card"}))
            .send()
            .await
            .unwrap())
        .await;
        let proposal = ok(server
            .post("/revocation-proposals")
            .json(&json!({"certificate_serial": card, "scope": "card_only",
                          "reason": "keyCompromise", "case_id": case["id"]}))
            .send()
            .await
            .unwrap())
        .await;
        let proposal_id = proposal["id"].as_str().unwrap();
        let decided = ok(server
            .post_as(
                APPROVER_TOKEN,
                &format!("/revocation-proposals/{proposal_id}/approve"),
            )
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(decided["revoked"], json!([card]));
        assert_eq!(decided["device_removed"], false);

        // The phone still works: the QR still signs in, the credential is still bound.
        let outcome = ok(server.password(&qr, "19800401").await).await;
        assert_eq!(outcome["registered"], true);
        let revoked = server.lifecycle("revoked:jpa").await;
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0]["kind"], "card");
        let kinds = types(&server.timeline("subscriber-jpa-222222").await);
        assert!(!kinds.contains(&"DeviceRemoved".to_owned()), "{kinds:?}");
        server.running.server.stop(true).await;
    }
}

#[tokio::test]
async fn fifty_simultaneous_wrong_passwords_record_five_failures_and_one_lock() {
    for db in both().await {
        let server = Arc::new(Server::start(&db, 1000).await);
        let approval = server.issue("jma", "333333").await;
        let qr = approval["qr_id"].as_str().unwrap().to_owned();
        let attempts: Vec<_> = (0..50)
            .map(|_| {
                let server = server.clone();
                let qr = qr.clone();
                tokio::spawn(async move {
                    let response = server.password(&qr, "20000101").await;
                    let status = response.status().as_u16();
                    (status, response.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut wrong = 0;
        let mut locked = 0;
        let mut refused = 0;
        for attempt in attempts {
            let (status, body) = attempt.await.unwrap();
            match (status, body["result"].as_str()) {
                (200, Some("wrong")) => wrong += 1,
                (200, Some("locked")) => locked += 1,
                (423, None) => {
                    assert_eq!(body["error"]["code"], "qr_locked");
                    refused += 1
                }
                other => panic!("{}: unexpected {other:?} {body}", db.backend),
            }
        }
        assert_eq!((wrong, locked, refused), (4, 1, 45), "{}", db.backend);
        let kinds = types(&server.timeline("subscriber-jma-333333").await);
        assert_eq!(kinds.iter().filter(|k| *k == "PasswordFailed").count(), 5);
        assert_eq!(kinds.iter().filter(|k| *k == "QrLocked").count(), 1);
        assert_eq!(kinds.last().map(String::as_str), Some("QrLocked"));
        server.running.server.stop(true).await;
    }
}

#[tokio::test]
async fn password_attempts_are_limited_per_address_per_minute() {
    let db = sqlite();
    let server = Server::start(&db, 3).await;
    let approval = server.issue("jma", "444444").await;
    let qr = approval["qr_id"].as_str().unwrap().to_owned();
    ok(server.password(&qr, "20000101").await).await;
    refused(server.password(&qr, "nonsense").await, 422).await;
    ok(server.password(&qr, "20000101").await).await;
    assert_eq!(
        refused(server.password(&qr, "19800401").await, 429).await,
        "too_many_attempts"
    );
    server.clock.advance(Duration::minutes(1));
    ok(server.password(&qr, "19800401").await).await;
    // Only evaluated attempts count toward the lock: two wrong so far.
    let kinds = types(&server.timeline("subscriber-jma-444444").await);
    assert_eq!(kinds.iter().filter(|k| *k == "PasswordFailed").count(), 2);
    // Unknown and malformed tokens are refused alike, revealing nothing.
    server.clock.advance(Duration::minutes(1));
    for token in ["", "short", &"A".repeat(43)] {
        let response = server
            .portal("/password")
            .json(&json!({"token": token, "password": "19800401"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(response, 404).await, "unknown_qr");
    }
    server.running.server.stop(true).await;
}

#[tokio::test]
async fn on_screen_reissue_proves_the_card_and_shows_a_new_qr_at_once() {
    for db in both().await {
        let server = Server::start(&db, 100).await;
        let (key, pem) = card_key();
        ok(server
            .post("/authorities/jma/card-stock/receipts")
            .json(&json!({"cards": [{"card_serial": "JMA-CARD-0100", "public_key_pem": pem}]}))
            .send()
            .await
            .unwrap())
        .await;
        let approval = server.issue("jma", "555555").await;
        let card = approval["card"]["certificate_serial"]
            .as_str()
            .unwrap()
            .to_owned();
        let old_qr = approval["qr_id"].as_str().unwrap().to_owned();
        let challenge = |serial: String| {
            let server = &server;
            async move {
                ok(server
                    .portal("/challenges")
                    .json(&json!({"card_certificate_serial": serial}))
                    .send()
                    .await
                    .unwrap())
                .await["challenge"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        };
        let sign = |text: &str, key: &openssl::pkey::PKey<openssl::pkey::Private>| {
            let mut signer =
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key).unwrap();
            openssl::base64::encode_block(&signer.sign_oneshot_to_vec(text.as_bytes()).unwrap())
        };
        let reissue = |challenge: String, signature: String| {
            server
                .portal("/on-screen-reissue")
                .json(
                    &json!({"card_certificate_serial": card, "challenge": challenge,
                              "signature": signature, "reason": "lost"}),
                )
                .send()
        };

        // A signature by another key, a tampered challenge, an expired one: refused.
        let text = challenge(card.clone()).await;
        let (stranger, _) = card_key();
        let e = reissue(text.clone(), sign(&text, &stranger)).await.unwrap();
        assert_eq!(refused(e, 422).await, "bad_signature");
        let tampered = text.replacen("hpki-reissue/1.", "hpki-reissue/1.0", 1);
        let e = reissue(tampered.clone(), sign(&tampered, &key))
            .await
            .unwrap();
        assert_eq!(refused(e, 422).await, "bad_challenge");
        server.clock.advance(Duration::minutes(6));
        let e = reissue(text.clone(), sign(&text, &key)).await.unwrap();
        assert_eq!(refused(e, 422).await, "bad_challenge");
        let kinds = types(&server.timeline("subscriber-jma-555555").await);
        assert!(
            !kinds.contains(&"ReissueRequested".to_owned()),
            "no state change"
        );

        // Signed by the card: a new QR at once, its URL to display; the old one superseded.
        let text = challenge(card.clone()).await;
        let reissued = ok(reissue(text.clone(), sign(&text, &key)).await.unwrap()).await;
        assert_eq!(reissued["delivery"], "screen");
        let qr = reissued["qr_id"].as_str().unwrap();
        let url = reissued["registration_url"].as_str().unwrap();
        assert!(url.ends_with(&format!("/r/{}", server.token(qr))), "{url}");
        assert_eq!(
            refused(server.password(&old_qr, "19800401").await, 410).await,
            "qr_superseded"
        );
        ok(server.password(qr, "19800401").await).await;
        // The same challenge never works twice.
        let e = reissue(text.clone(), sign(&text, &key)).await.unwrap();
        assert_eq!(refused(e, 409).await, "challenge_used");
        // A challenge names a card certificate, not the second one.
        let second = approval["second_certificate_serial"]
            .as_str()
            .unwrap()
            .to_owned();
        let e = server
            .portal("/challenges")
            .json(&json!({"card_certificate_serial": second}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 422).await, "not_a_card_certificate");
        server.running.server.stop(true).await;
    }
}

#[tokio::test]
async fn the_cli_runs_the_lifecycle_commands_with_dual_control() {
    let db = sqlite();
    let server = Server::start(&db, 100).await;
    ok(server
        .post("/authorities/jma/card-stock/receipts")
        .json(&json!({"count": 1}))
        .send()
        .await
        .unwrap())
    .await;
    let approval = server.issue("jma", "666666").await;
    let card = approval["card"]["certificate_serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = server.dir.path();
    let config = config(&db, dir);
    let toml = format!(
        "database_url = {:?}\ndata_dir = {:?}\n[keys]\nkek_file = {:?}\nqr_secret_file = {:?}\npool_size = 2\n\
         [staff.suzuki]\ntoken_sha256 = \"{}\"\n[staff.sato]\ntoken_sha256 = \"{}\"\nroles = [\"approver\"]\n",
        config.database_url,
        config.data_dir,
        config.keys.kek_file,
        config.keys.qr_secret_file,
        "0".repeat(64),
        "1".repeat(64),
    );
    std::fs::write(dir.join("hpki.toml"), toml).unwrap();
    // Asynchronously: the server under test runs on this same thread meanwhile.
    let run = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hpki"));
        command
            .arg("--config")
            .arg(dir.join("hpki.toml"))
            .args(args)
            .env_remove("HPKI_DATABASE_URL");
        async move {
            let out = command.output().await.unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.code(), stdout, stderr)
        }
    };
    let json_of = |stdout: &str| serde_json::from_str::<Value>(stdout).unwrap();

    let (code, out, err) = run(&[
        "loss",
        "report",
        &card,
        "--kind",
        "card",
        "--actor",
        "staff:suzuki",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let case = json_of(&out)["id"].as_str().unwrap().to_owned();
    let (code, _, err) = run(&[
        "revocation",
        "propose",
        &card,
        "--scope",
        "card_only",
        "--reason",
        "certificateHold",
        "--case",
        &case,
        "--actor",
        "staff:suzuki",
    ])
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("reason_not_allowed [reason]: "), "{err}");
    let (code, out, err) = run(&[
        "revocation",
        "propose",
        &card,
        "--scope",
        "card_only",
        "--reason",
        "keyCompromise",
        "--case",
        &case,
        "--actor",
        "staff:suzuki",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let proposal = json_of(&out)["proposal_id"].as_str().unwrap().to_owned();
    // suzuki holds no approver role; sato does.
    let (code, _, err) = run(&[
        "revocation",
        "approve",
        &proposal,
        "--actor",
        "staff:suzuki",
    ])
    .await;
    assert_eq!(code, Some(2), "a refusal: {err}");
    assert!(err.contains("does not hold the approver role"), "{err}");
    // Only accounts of the log act; the configuration's were provisioned into it.
    let (code, _, err) = run(&[
        "loss",
        "report",
        &card,
        "--kind",
        "card",
        "--actor",
        "staff:nobody",
    ])
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("there is no staff account"), "{err}");
    let (code, out, err) =
        run(&["revocation", "approve", &proposal, "--actor", "staff:sato"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json_of(&out)["revoked"], json!([card]));
    let (code, out, _) = run(&["qr", "timeline", "subscriber-jma-666666"]).await;
    assert_eq!(code, Some(0));
    let kinds: Vec<Value> = json_of(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert!(kinds.contains(&json!("CertificateRevoked")), "{kinds:?}");
    let (code, out, err) = run(&["qr", "expire"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(json_of(&out)["qrs_expired"].is_number());

    // A disabled account no longer acts, whatever the configuration says.
    let directory = hpki_backoffice::staff::Directory::new(
        server.running.store.clone(),
        server.clock.clone(),
        &server.config,
    )
    .unwrap();
    let admin = hpki_events::Actor::parse("staff:admin").unwrap();
    directory.disable("suzuki", "退職", &admin).await.unwrap();
    let subscriber = || async {
        let store = &server.running.store;
        store
            .read_stream("subscriber-jma-666666")
            .await
            .unwrap()
            .len()
    };
    let before = subscriber().await;
    let (code, _, err) = run(&[
        "loss",
        "report",
        &card,
        "--kind",
        "card",
        "--actor",
        "staff:suzuki",
    ])
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is disabled"), "{err}");
    assert_eq!(subscriber().await, before, "nothing recorded");
    server.running.server.stop(true).await;
}

/// A PKCS#10 request signed by `key`, as a card's personalisation would make it.
fn card_csr(key: &openssl::pkey::PKey<openssl::pkey::Private>) -> openssl::x509::X509Req {
    let mut builder = openssl::x509::X509ReqBuilder::new().unwrap();
    builder.set_pubkey(key).unwrap();
    builder
        .sign(key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    builder.build()
}

#[tokio::test]
async fn card_stock_takes_csrs_checks_their_signatures_and_records_other_uses() {
    for db in both().await {
        let server = Server::start(&db, 100).await;
        let receipts = "/authorities/jpa/card-stock/receipts";
        let (key, pem) = card_key();
        let csr = String::from_utf8(card_csr(&key).to_pem().unwrap()).unwrap();

        // A CSR whose signature was made by another key: refused, naming the card.
        let (other, _) = card_key();
        let mut forged = openssl::x509::X509ReqBuilder::new().unwrap();
        forged.set_pubkey(&key).unwrap();
        forged
            .sign(&other, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let forged = String::from_utf8(forged.build().to_pem().unwrap()).unwrap();
        let response = server
            .post(receipts)
            .json(&json!({"cards": [
                {"card_serial": "JPA-0001", "csr_pem": csr},
                {"card_serial": "JPA-0002", "csr_pem": forged}]}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["field"], "cards[1]");
        assert!(
            body["error"]["message"]["en"]
                .as_str()
                .unwrap()
                .contains("does not verify")
        );
        // Both a key and a CSR for one card: refused.
        let e = server
            .post(receipts)
            .json(&json!({"cards": [{"card_serial": "JPA-0003", "csr_pem": csr, "public_key_pem": pem}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 422).await, "bad_public_key");
        // Nothing of the refused receipts was recorded.
        let stock = ok(server
            .get("/authorities/jpa/card-stock")
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(stock["available"], 0);

        ok(server
            .post(receipts)
            .json(&json!({"cards": [
                {"card_serial": "JPA-0001", "csr_pem": csr},
                {"card_serial": "JPA-0002", "public_key_pem": pem}]}))
            .send()
            .await
            .unwrap())
        .await;
        // One card spoiled at personalisation; an unknown serial is refused.
        let uses = "/authorities/jpa/card-stock/uses";
        let e = server
            .post(uses)
            .json(&json!({"card_serials": ["JPA-9999"], "reason": "印刷不良"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(e, 422).await, "card_not_in_stock");
        ok(server
            .post(uses)
            .json(&json!({"card_serials": ["JPA-0001"], "reason": "印刷不良"}))
            .send()
            .await
            .unwrap())
        .await;
        let stock = ok(server
            .get("/authorities/jpa/card-stock")
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(stock["available"], 1);

        // The card left is the one issued, and its certificate carries the CSR's key.
        let approval = server.issue("jpa", "777777").await;
        assert_eq!(approval["card"]["card_serial"], "JPA-0002", "{approval}");
        let serial = approval["card"]["certificate_serial"].as_str().unwrap();
        let cert_pem = server.certificate_pem(serial).await;
        let cert = openssl::x509::X509::from_pem(cert_pem.as_bytes()).unwrap();
        assert!(cert.public_key().unwrap().public_eq(&key));
        server.running.server.stop(true).await;
    }
}
