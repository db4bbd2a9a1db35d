//! Intake and issuance through the public JSON API, on SQLite and PostgreSQL: applications,
//! review, card stock with deferral, certificates checked by `openssl`, CSV batches in every
//! encoding, and the errors clients get for bad input.

mod common;

use std::process::Command;

use common::*;
use reqwest::{Client, Response};
use serde_json::{Value, json};

struct Server {
    base: String,
    client: Client,
    /// Before `dir`: see `common::server::Server`.
    running: hpki_backoffice::serve::Running,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(db: &TestDb) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = config(db, dir.path());
        let running = hpki_backoffice::serve::start(&config, clock())
            .await
            .unwrap();
        Server {
            base: format!("http://127.0.0.1:{}/api/v1", running.port),
            client: http_client().build().unwrap(),
            dir,
            running,
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(STAFF_TOKEN)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(STAFF_TOKEN)
    }

    fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .put(format!("{}{path}", self.base))
            .bearer_auth(STAFF_TOKEN)
    }

    async fn certificate_pem(&self, serial: &str) -> String {
        let response = self
            .get(&format!("/certificates/{serial}"))
            .header("accept", "application/x-pem-file")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    fn ca_file(&self, authority: &str) -> std::path::PathBuf {
        self.dir
            .path()
            .join(format!("keys/dev-ca-{authority}.crt.pem"))
    }
}

fn form(authority: &str, registry: &str) -> Value {
    let profession = if authority == "jma" {
        "physician"
    } else {
        "pharmacist"
    };
    json!({
        "authority": authority,
        "name_kanji": "山田 太郎",
        "name_kana": "ヤマダ タロウ",
        "name_romaji": "YAMADA TARO",
        "birth_date": "1980-04-01",
        "profession": profession,
        "registry_number": registry,
        "email": "taro@example.jp",
        "postal_code": "113-8621",
        "address": "東京都文京区本駒込2-28-16",
        "delivery": "office",
        "delivery_office": "東京都医師会",
        "channel": "paper",
    })
}

fn photo_base64() -> String {
    openssl::base64::encode_block(hpki_backoffice::demo::SAMPLE_PHOTO)
}

/// The error body of a response, after checking its status.
async fn error(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.unwrap();
    let error = body["error"].clone();
    assert!(error["code"].is_string(), "{body}");
    assert!(
        error["message"]["ja"].is_string() && error["message"]["en"].is_string(),
        "{body}"
    );
    error
}

async fn ok(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

/// Writes `pem` to a file and has `openssl verify` check it against the authority's CA at an
/// instant inside its validity.
fn openssl_verify(server: &Server, authority: &str, pem: &str) -> String {
    let file = server.dir.path().join("check.pem");
    std::fs::write(&file, pem).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-attime", "1796083200", "-CAfile"])
        .arg(server.ca_file(authority))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&file)
        .output()
        .unwrap();
    String::from_utf8(text.stdout).unwrap()
}

#[tokio::test]
async fn an_application_goes_from_intake_to_certificates_and_a_qr() {
    for db in both().await {
        let server = Server::start(&db).await;

        // Without a token: 401, as JSON.
        let response = server
            .client
            .post(format!("{}/applications", server.base))
            .json(&form("jma", "123456"))
            .send()
            .await
            .unwrap();
        assert_eq!(error(response, 401).await["code"], "unauthorized");

        // A form with several mistakes: every one named.
        let mut bad = form("jma", "12a");
        bad["birth_date"] = json!("1980-02-30");
        bad["postal_code"] = json!("1138621");
        let e = error(
            server
                .post("/applications")
                .json(&bad)
                .send()
                .await
                .unwrap(),
            422,
        )
        .await;
        assert_eq!(e["code"], "invalid_application");
        let fields: Vec<&str> = e["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            ["birth_date", "postal_code", "registry_number"],
            "{e}"
        );

        // Malformed JSON, an unknown field, a body over the limit: 4xx, each with its code.
        let e = error(
            server
                .post("/applications")
                .header("content-type", "application/json")
                .body("{\"authority\": ")
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        assert_eq!(e["code"], "bad_json");
        // A query string or a path that does not read answers in the same format.
        let e = error(
            server.get("/applications?limit=ten").send().await.unwrap(),
            400,
        )
        .await;
        assert_eq!(e["code"], "bad_query");
        assert_eq!(e["field"], "limit", "{e}");
        assert!(
            e["message"]["en"]
                .as_str()
                .unwrap()
                .contains("\"limit\" cannot be read: invalid digit"),
            "{e}"
        );
        let e = error(
            server
                .post("/applications/import?good_rows=maybe")
                .body("")
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        assert_eq!(e["field"], "good_rows", "{e}");
        let e = error(
            server.get("/print-batches/xyz/pdf").send().await.unwrap(),
            404,
        )
        .await;
        assert_eq!(e["code"], "not_found");
        let mut unknown = form("jma", "123456");
        unknown["favourite_colour"] = json!("blue");
        let e = error(
            server
                .post("/applications")
                .json(&unknown)
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        assert!(
            e["message"]["en"]
                .as_str()
                .unwrap()
                .contains("favourite_colour"),
            "{e}"
        );
        let huge = "x".repeat(4 * 1024 * 1024);
        let e = error(
            server
                .post("/applications")
                .header("content-type", "application/json")
                .body(huge)
                .send()
                .await
                .unwrap(),
            413,
        )
        .await;
        assert_eq!(e["code"], "too_large");

        // A good application, keyed in from paper with its photo; a second one for the same
        // person is refused while the first is open.
        let mut good = form("jma", "123456");
        good["photo_base64"] = json!(photo_base64());
        let first = ok(server
            .post("/applications")
            .json(&good)
            .send()
            .await
            .unwrap())
        .await;
        let id = first["application_id"].as_str().unwrap().to_owned();
        assert_eq!(first["subscriber_id"], "123456");
        // A refused application (with the same photo or another), or a photo for an
        // application that does not exist, leaves no photo behind.
        let mut other_photo = hpki_backoffice::demo::SAMPLE_PHOTO.to_vec();
        other_photo.push(0);
        let mut refused = good.clone();
        refused["photo_base64"] = json!(openssl::base64::encode_block(&other_photo));
        for again in [&good, &refused] {
            let e = error(
                server
                    .post("/applications")
                    .json(again)
                    .send()
                    .await
                    .unwrap(),
                409,
            )
            .await;
            assert_eq!(e["code"], "open_application");
        }
        error(
            server
                .put(&format!("/applications/{}/photo", uuid::Uuid::new_v4()))
                .body(other_photo.clone())
                .send()
                .await
                .unwrap(),
            404,
        )
        .await;
        let sha256 = hex::encode(openssl::sha::sha256(&other_photo));
        assert!(
            server.running.store.photo(&sha256).await.unwrap().is_none(),
            "{}",
            db.backend
        );

        // Approving before the documents are checked is refused.
        let e = error(
            server
                .post(&format!("/applications/{id}/approve"))
                .send()
                .await
                .unwrap(),
            409,
        )
        .await;
        assert_eq!(e["code"], "wrong_status");
        ok(server
            .post(&format!("/applications/{id}/documents-checked"))
            .send()
            .await
            .unwrap())
        .await;

        // No cards in stock: the card is deferred, the QR pre-issued, the second certificate out.
        let approval = ok(server
            .post(&format!("/applications/{id}/approve"))
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(approval["card"]["status"], "deferred", "{approval}");
        assert_eq!(approval["qr_pre_issued"], true);
        assert_eq!(approval["qr_last_usable_day"], "2027-02-22");
        let second = approval["second_certificate_serial"].as_str().unwrap();
        let text = openssl_verify(&server, "jma", &server.certificate_pem(second).await);
        assert!(text.contains("serialNumber = 123456"), "{text}");
        assert!(text.contains("Non Repudiation"), "{text}");
        assert!(
            text.contains("Policy: 1.2.392.100495.1.5.1.1.0.1"),
            "{text}"
        );
        assert!(
            text.contains("Not Before: Nov 21 15:00:00 2026 GMT"),
            "{text}"
        );

        let stock = ok(server
            .get("/authorities/jma/card-stock")
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(
            stock,
            json!({"authority": "jma", "available": 0, "waiting": 1})
        );

        // A second applicant, approved while stock is still zero, queues behind the first.
        let mut other = form("jma", "654321");
        other["photo_base64"] = json!(photo_base64());
        let other = ok(server
            .post("/applications")
            .json(&other)
            .send()
            .await
            .unwrap())
        .await;
        let other_id = other["application_id"].as_str().unwrap().to_owned();
        ok(server
            .post(&format!("/applications/{other_id}/documents-checked"))
            .send()
            .await
            .unwrap())
        .await;
        let later = ok(server
            .post(&format!("/applications/{other_id}/approve"))
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(later["card"]["status"], "deferred");

        // One card arrives: it goes to the first approved. A second card: to the other.
        let received = ok(server
            .post("/authorities/jma/card-stock/receipts")
            .json(&json!({"count": 1}))
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(received["issued_from_queue"], json!([id]), "{received}");
        assert_eq!(received["still_waiting"], 1);
        let received = ok(server
            .post("/authorities/jma/card-stock/receipts")
            .json(&json!({"count": 1}))
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(received["issued_from_queue"], json!([other_id]));

        let detail = ok(server
            .get(&format!("/applications/{id}"))
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(detail["list"], "issued", "{detail}");
        let card = detail["body"]["card_certificate"].as_str().unwrap();
        assert_ne!(card, second);
        let text = openssl_verify(&server, "jma", &server.certificate_pem(card).await);
        assert!(text.contains("CN = YAMADA TARO"), "{text}");
        assert_eq!(detail["body"]["checked_by"], "staff:suzuki");

        // Stock on hand: the next approval gets its card at once.
        ok(server
            .post("/authorities/jma/card-stock/receipts")
            .json(&json!({"count": 1}))
            .send()
            .await
            .unwrap())
        .await;
        let mut third = form("jma", "111111");
        third["photo_base64"] = json!(photo_base64());
        let third = ok(server
            .post("/applications")
            .json(&third)
            .send()
            .await
            .unwrap())
        .await;
        let third_id = third["application_id"].as_str().unwrap().to_owned();
        ok(server
            .post(&format!("/applications/{third_id}/documents-checked"))
            .send()
            .await
            .unwrap())
        .await;
        let approval = ok(server
            .post(&format!("/applications/{third_id}/approve"))
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(approval["card"]["status"], "issued", "{approval}");
        assert_eq!(approval["qr_pre_issued"], false);

        // A JPA applicant without a photo: the documents cannot be checked until it comes; a
        // photo that is not an image is refused; then rejection, with its reason.
        let jpa = ok(server
            .post("/applications")
            .json(&form("jpa", "999999"))
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(jpa["subscriber_id"], "999999-jpa");
        let jpa_id = jpa["application_id"].as_str().unwrap().to_owned();
        let e = error(
            server
                .post(&format!("/applications/{jpa_id}/documents-checked"))
                .send()
                .await
                .unwrap(),
            409,
        )
        .await;
        assert_eq!(e["code"], "photo_missing");
        let e = error(
            server
                .put(&format!("/applications/{jpa_id}/photo"))
                .body("GIF89a....")
                .send()
                .await
                .unwrap(),
            422,
        )
        .await;
        assert_eq!(e["code"], "bad_photo");
        // One that only begins like a JPEG (or a PNG) is refused as it comes in, not when its
        // card is printed.
        for fake in [
            &b"\xFF\xD8\xFF\xE0 not a picture"[..],
            b"\x89PNG\r\n\x1a\n not a picture",
        ] {
            let e = error(
                server
                    .put(&format!("/applications/{jpa_id}/photo"))
                    .body(fake)
                    .send()
                    .await
                    .unwrap(),
                422,
            )
            .await;
            assert_eq!(e["code"], "bad_photo");
            assert_eq!(e["field"], "photo");
        }
        let e = error(
            server
                .put(&format!("/applications/{jpa_id}/photo"))
                .body(vec![0xFF; 3 * 1024 * 1024])
                .send()
                .await
                .unwrap(),
            413,
        )
        .await;
        assert_eq!(e["code"], "too_large");
        ok(server
            .put(&format!("/applications/{jpa_id}/photo"))
            .body(hpki_backoffice::demo::SAMPLE_PHOTO)
            .send()
            .await
            .unwrap())
        .await;
        let e = error(
            server
                .post(&format!("/applications/{jpa_id}/reject"))
                .json(&json!({"reason": " "}))
                .send()
                .await
                .unwrap(),
            422,
        )
        .await;
        assert_eq!(e["field"], "reason");
        ok(server
            .post(&format!("/applications/{jpa_id}/reject"))
            .json(&json!({"reason": "薬剤師免許証の写しが不鮮明です"}))
            .send()
            .await
            .unwrap())
        .await;
        let e = error(
            server
                .post(&format!("/applications/{jpa_id}/approve"))
                .send()
                .await
                .unwrap(),
            409,
        )
        .await;
        assert_eq!(e["code"], "wrong_status");
        // Once rejected, the person may apply again.
        ok(server
            .post("/applications")
            .json(&form("jpa", "999999"))
            .send()
            .await
            .unwrap())
        .await;

        // Unknown ids and paths: 404 as JSON.
        let e = error(
            server
                .post("/applications/not-a-uuid/approve")
                .send()
                .await
                .unwrap(),
            404,
        )
        .await;
        assert_eq!(e["code"], "not_found");
        let e = error(
            server
                .post(&format!("/applications/{}/approve", uuid::Uuid::nil()))
                .send()
                .await
                .unwrap(),
            404,
        )
        .await;
        assert_eq!(e["code"], "not_found");
        let e = error(server.get("/nothing-here").send().await.unwrap(), 404).await;
        assert_eq!(e["code"], "not_found");

        // The work lists.
        let lists = ok(server.get("/work-lists").send().await.unwrap()).await;
        let counts = &lists["counts"];
        assert_eq!(
            counts["applications"],
            json!({"issued": 3, "received": 1, "rejected": 1}),
            "{lists}"
        );
        assert_eq!(counts["certificates"], json!({"card": 3, "second": 3}));
        assert_eq!(counts["qrs"], json!({"to_print": 3}));
        assert_eq!(counts["cards"], json!({"jma:allocated": 3}));
        let to_print = ok(server.get("/qrs?list=to_print").send().await.unwrap()).await;
        assert_eq!(to_print.as_array().unwrap().len(), 3);
        assert_eq!(
            to_print[0]["body"]["destination"],
            json!({"to": "office", "name": "東京都医師会"})
        );

        no_secrets_in_the_log(&server).await;
        second_keys_are_sealed_and_match(&server, second).await;
        server.running.server.stop(true).await;
    }
}

/// The log holds no birth date, QR token, registration URL or private key in clear. Each
/// QR's real token is derived from the server's QR secret and searched for, with its URL;
/// a bare "/r/" would also match by chance inside base64 certificate bytes.
async fn no_secrets_in_the_log(server: &Server) {
    use futures::TryStreamExt;
    let store = &server.running.store;
    let (qr_secret, _) = hpki_backoffice::secrets::Secret::load_or_generate(
        &server.dir.path().join("keys/qr-secret.hex"),
    )
    .unwrap();
    let rows: Vec<_> = store.read_all(0).try_collect().await.unwrap();
    let mut secrets: Vec<String> = ["1980-04-01", "19800401", "PRIVATE KEY", "8080/r/"]
        .map(String::from)
        .to_vec();
    for row in &rows {
        if row.event_type == "QrIssued" {
            let body: serde_json::Value = serde_json::from_slice(&row.body).unwrap();
            let qr_id = body["payload"]["qr_id"].as_str().unwrap().parse().unwrap();
            let token = hpki_backoffice::qr::token(qr_secret.bytes(), qr_id);
            assert_eq!(
                body["payload"]["token_sha256"],
                json!(hpki_backoffice::qr::token_hash(&token))
            );
            secrets.push(token);
        }
    }
    assert!(secrets.len() > 4, "the flow issued QRs");
    for row in rows {
        let text = String::from_utf8(row.body).unwrap();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret in the log: {text}"
            );
        }
    }
}

/// The second certificate's private key is held sealed, opens under the KEK, and is the
/// key the certificate certifies.
async fn second_keys_are_sealed_and_match(server: &Server, serial: &str) {
    let pem = server.certificate_pem(serial).await;
    let cert = openssl::x509::X509::from_pem(pem.as_bytes()).unwrap();
    let store = &server.running.store;
    let stream = {
        let doc = store.doc("certificates", serial).await.unwrap().unwrap();
        doc.body["subscriber"].as_str().unwrap().to_owned()
    };
    let key_id = store
        .read_stream(&stream)
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e.event {
            hpki_events::Event::SecondCertificateIssued(s) if s.certificate.serial == serial => {
                Some(s.key_id)
            }
            _ => None,
        })
        .unwrap();
    let sealed = store.sealed_key(key_id).await.unwrap().unwrap();
    let kek_hex = std::fs::read_to_string(server.dir.path().join("keys/kek.hex")).unwrap();
    let secret: [u8; 32] = hex::decode(kek_hex.trim()).unwrap().try_into().unwrap();
    // Open it the way the signing platform would, independently: AES-256-GCM, nonce first,
    // tag last, the key id as associated data.
    let data = openssl::base64::decode_block(&sealed.data).unwrap();
    let (nonce, rest) = data.split_at(12);
    let (cipher, tag) = rest.split_at(rest.len() - 16);
    let plain = openssl::symm::decrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        &secret,
        Some(nonce),
        format!("second-key/{key_id}").as_bytes(),
        cipher,
        tag,
    )
    .unwrap();
    let key = openssl::pkey::PKey::private_key_from_pkcs8(&plain).unwrap();
    assert!(cert.public_key().unwrap().public_eq(&key));
}

fn csv_file(rows: &[&str]) -> String {
    let mut text = String::from(
        "認証局,氏名,氏名（カナ）,氏名（ローマ字）,生年月日,職種,登録番号,メールアドレス,郵便番号,住所,送付先,送付先団体名\r\n",
    );
    for row in rows {
        text.push_str(row);
        text.push_str("\r\n");
    }
    text
}

fn row(registry: &str) -> String {
    format!(
        "jma,佐藤 花子,サトウ ハナコ,SATO HANAKO,1985/07/07,医師,{registry},hanako{registry}@example.jp,100-0005,東京都千代田区丸の内1-1-1,自宅,"
    )
}

#[tokio::test]
async fn csv_batches_in_any_encoding_are_all_or_nothing_and_idempotent() {
    for db in both().await {
        let server = Server::start(&db).await;
        let good: Vec<String> = (0..5).map(|i| row(&format!("20000{i}"))).collect();
        let good_refs: Vec<&str> = good.iter().map(String::as_str).collect();
        let utf8 = csv_file(&good_refs);

        // Shift_JIS (CP932), as Excel saves it.
        let (sjis, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&utf8);
        assert!(!unmappable);
        let report = ok(server
            .post("/applications/import")
            .body(sjis.to_vec())
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(report["imported"], 5, "{report}");
        assert_eq!(report["encoding"], "Shift_JIS (CP932)");
        // The same file again: nothing new.
        let again = ok(server
            .post("/applications/import")
            .body(sjis.to_vec())
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(
            (
                again["imported"].as_u64(),
                again["already_imported"].as_u64()
            ),
            (Some(0), Some(5))
        );

        // UTF-8 with a BOM; a file with bad rows imports nothing and names each.
        let mixed = csv_file(&[
            &row("300001"),
            "jma,佐藤 花子,さとう,SATO HANAKO,1985/07/07,医師,300002,x@example.jp,100-0005,東京,自宅,",
            &row("300003"),
            "jma,佐藤 花子,サトウ ハナコ,SATO HANAKO,1985/13/07,医師,300004,x@example.jp,1000005,東京,自宅,",
            &row("200001"),
        ]);
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(mixed.as_bytes());
        let e = error(
            server
                .post("/applications/import")
                .body(bom.clone())
                .send()
                .await
                .unwrap(),
            422,
        )
        .await;
        assert_eq!(e["code"], "invalid_rows");
        let found: Vec<(u64, String)> = e["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["line"].as_u64().unwrap(),
                    d["column"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (3, "氏名（カナ）".to_owned()),
                (5, "生年月日".to_owned()),
                (5, "郵便番号".to_owned()),
                (6, "登録番号".to_owned()),
            ],
            "{e}"
        );
        assert!(
            !e.to_string().contains("1985"),
            "a birth date in an error: {e}"
        );
        let lists = ok(server.get("/work-lists").send().await.unwrap()).await;
        assert_eq!(
            lists["counts"]["applications"],
            json!({"received": 5}),
            "nothing was half-written"
        );

        // Told to, it imports the good rows and still lists the bad.
        let report = ok(server
            .post("/applications/import?good_rows=true")
            .body(bom)
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(report["imported"], 2, "{report}");
        assert_eq!(report["errors"].as_array().unwrap().len(), 4);

        // A file that is not text in either encoding: refused whole, naming the line.
        let mut broken = csv_file(&[&row("400001")]).into_bytes();
        broken.extend_from_slice(&[0x82, 0xFF, 0x0A]);
        let e = error(
            server
                .post("/applications/import")
                .body(broken)
                .send()
                .await
                .unwrap(),
            422,
        )
        .await;
        assert_eq!(e["code"], "unreadable_file");
        server.running.server.stop(true).await;
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let db = sqlite();
    let server = Server::start(&db).await;
    let doc = ok(server
        .client
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap())
    .await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/applications",
        "/api/v1/applications/import",
        "/api/v1/applications/{id}/approve",
        "/api/v1/applications/{id}/reject",
        "/api/v1/authorities/{id}/card-stock/receipts",
        "/api/v1/certificates/{serial}",
        "/api/v1/work-lists",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["ApplicationForm"].is_object());
    assert!(doc["components"]["securitySchemes"]["staff_token"].is_object());
    server.running.server.stop(true).await;
}

#[tokio::test]
async fn the_cli_imports_with_progress_and_exit_codes() {
    let db = sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&db, dir.path());
    let toml = format!(
        "database_url = {:?}\ndata_dir = {:?}\n[keys]\nkek_file = {:?}\nqr_secret_file = {:?}\npool_size = 2\n",
        config.database_url, config.data_dir, config.keys.kek_file, config.keys.qr_secret_file
    );
    std::fs::write(dir.path().join("hpki.toml"), toml).unwrap();
    let file = dir.path().join("batch.csv");
    std::fs::write(&file, csv_file(&[&row("500001"), &row("500002")])).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hpki"))
            .arg("--config")
            .arg(dir.path().join("hpki.toml"))
            .args(args)
            .env_remove("HPKI_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run(&["import", "applications", file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 2"));
    let out = run(&["import", "applications", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already imported 2"));

    std::fs::write(&file, csv_file(&[&row("500003"), "jma,,,,,,,,,,,"])).unwrap();
    let out = run(&["import", "applications", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch.csv:3:"), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
}

#[tokio::test]
async fn the_demo_seeds_every_state_through_the_commands() {
    let db = sqlite();
    let server = Server::start(&db).await;
    let config = config(&db, server.dir.path());
    let office = hpki_backoffice::serve::office(&config, server.running.store.clone(), clock())
        .await
        .unwrap();
    let seeded = hpki_backoffice::demo::seed(&office, 40, &|_, _, _| {})
        .await
        .unwrap();
    assert_eq!(seeded.applications, 40);
    assert!(seeded.deferred > 0, "{seeded:?}");
    assert!(
        seeded.locked > 0
            && seeded.registered > 0
            && seeded.reissues > 0
            && seeded.losses > 0
            && seeded.proposals > 0,
        "every state after issuance: {seeded:?}"
    );
    let lists = ok(server.get("/work-lists").send().await.unwrap()).await;
    let applications = &lists["counts"]["applications"];
    for list in [
        "received",
        "documents_checked",
        "rejected",
        "issued",
        "awaiting_card",
    ] {
        assert!(
            applications[list].as_u64().unwrap_or(0) > 0,
            "{list}: {lists}"
        );
    }
    let csv = ok(server
        .get("/applications?list=received&limit=1000")
        .send()
        .await
        .unwrap())
    .await;
    assert!(
        csv.as_array()
            .unwrap()
            .iter()
            .any(|a| a["body"]["channel"] == "csv")
    );
    server.running.server.stop(true).await;
}
