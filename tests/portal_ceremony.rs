//! The portal's WebAuthn ceremony over HTTP with a software authenticator
//! (webauthn-authenticator-rs's SoftPasskey), on both backends: a phone registered with user
//! verification, labelled, then the same QR signing in with it; and every bad answer refused
//! with nothing recorded: tampered, replayed, made for another QR's challenge, without user
//! verification, malformed, oversized.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::phone::Phone;
use common::server::*;
use common::*;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

/// Every log line this test process writes, at debug level and above, kept for inspection.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static std::sync::Mutex<Vec<u8>> =
            Box::leak(Box::new(std::sync::Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Capture(logs))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        logs
    })
}

struct Capture(&'static std::sync::Mutex<Vec<u8>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The origin the portal expects (its base URL; any port on localhost).
fn origin() -> Url {
    Url::parse("http://localhost:8080").unwrap()
}

/// A phone whose authenticator verifies its user (`true`) or cannot (`false`).
fn authenticator(verifies: bool) -> SoftPasskey {
    SoftPasskey::new(verifies)
}

/// The soft authenticator cannot keep resident keys and refuses options that require one
/// (a phone's authenticator keeps them); the test asserts the server asks for one, then lets
/// this authenticator answer without.
fn register_answer(authenticator: &mut SoftPasskey, mut options: Value) -> Value {
    let selection = &mut options["publicKey"]["authenticatorSelection"];
    selection["residentKey"] = json!("discouraged");
    selection["requireResidentKey"] = json!(false);
    register_as_asked(authenticator, options)
}

/// What a phone without user verification answers: it is not asked for any (a page altered
/// by the phone, say), so it makes a credential without.
fn register_unverified(mut options: Value) -> Value {
    options["publicKey"]["authenticatorSelection"] = json!({
        "residentKey": "discouraged", "requireResidentKey": false, "userVerification": "discouraged"
    });
    register_as_asked(&mut authenticator(false), options)
}

fn register_as_asked(authenticator: &mut SoftPasskey, options: Value) -> Value {
    let options: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let answer = authenticator.do_registration(origin(), options).unwrap();
    serde_json::to_value(answer).unwrap()
}

fn kinds(server_timeline: &[Value]) -> Vec<String> {
    server_timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn device_events(server: &Server, subscriber: &str) -> Vec<String> {
    kinds(&server.timeline(subscriber).await)
        .into_iter()
        .filter(|k| k.starts_with("Device"))
        .collect()
}

#[tokio::test]
async fn a_phone_registers_labels_and_then_signs_in_with_the_same_qr() {
    let logs = captured_logs();
    for db in both().await {
        let server = Server::start(&db, 100).await;
        let approval = server.issue("jma", "818181").await;
        let token = server.token(approval["qr_id"].as_str().unwrap());
        let mut phone_key = authenticator(true);

        let phone = Phone::new(&server);
        let csrf = phone.to_register_step(&token, "19800401", "818181").await;
        let (status, options) = phone.ceremony("start", &csrf, &json!({})).await;
        assert_eq!(status, 200, "{}: {options}", db.backend);
        let selection = &options["publicKey"]["authenticatorSelection"];
        assert_eq!(selection["residentKey"], "required", "{options}");
        assert_eq!(selection["userVerification"], "required", "{options}");
        assert_eq!(options["publicKey"]["rp"]["id"], "localhost");

        let answer = register_answer(&mut phone_key, options);
        let (status, done) = phone.ceremony("finish", &csrf, &answer).await;
        assert_eq!(status, 200, "{}: {done}", db.backend);
        assert_eq!(done["next"], "/portal/label");

        // The label page, OK with the label set for the subscriber.
        let (_, _, page) = phone.get("/portal/label").await;
        assert!(page.contains("value=\"HPKI JMA 818181\""), "{page}");
        let (status, location, _) = phone
            .post(
                "/portal/label",
                &[
                    ("csrf", &csrf),
                    ("label", "HPKI JMA 818181"),
                    ("action", "ok"),
                ],
            )
            .await;
        assert_eq!((status.as_u16(), location.as_str()), (303, "/portal/done"));
        let (_, _, page) = phone.get("/portal/done").await;
        assert!(page.contains("紐づけが完了しました"), "{page}");

        // What the log holds: the credential id, the COSE key as sent, and the label.
        let store = server.running.store.clone();
        let recorded = store
            .read_stream("subscriber-jma-818181")
            .await
            .unwrap()
            .into_iter()
            .find_map(|e| match e.event {
                hpki_events::Event::DeviceRegistered(d) => Some(d),
                _ => None,
            })
            .expect("registered");
        assert_eq!(recorded.credential_id, answer["id"].as_str().unwrap());
        assert!(recorded.passkey.is_some());
        let cose = URL_SAFE_NO_PAD.decode(&recorded.public_key).unwrap();
        assert_eq!(cose[0] & 0xe0, 0xa0, "a CBOR map: {cose:02x?}");
        assert_eq!(
            device_events(&server, "subscriber-jma-818181").await,
            ["DeviceRegistered", "DeviceLabelled"]
        );

        // The same QR again: the button reads Sign in, and the phone's key confirms it.
        let again = Phone::new(&server);
        let csrf = again.to_register_step(&token, "19800401", "818181").await;
        let (_, _, page) = again.get("/portal/register").await;
        assert!(page.contains("data-mode=\"sign-in\""), "{page}");
        assert!(page.contains("セキュリティキーによるサインイン"), "{page}");
        let (status, options) = again.ceremony("start", &csrf, &json!({})).await;
        assert_eq!(status, 200, "{options}");
        let options: RequestChallengeResponse = serde_json::from_value(options).unwrap();
        let answer = phone_key.do_authentication(origin(), options).unwrap();
        let (status, done) = again
            .ceremony("finish", &csrf, &serde_json::to_value(answer).unwrap())
            .await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["next"], "/portal/done");
        let (_, _, page) = again.get("/portal/done").await;
        assert!(page.contains("登録を確かめました"), "{page}");
        assert_eq!(
            device_events(&server, "subscriber-jma-818181").await,
            ["DeviceRegistered", "DeviceLabelled"],
            "a sign-in records nothing"
        );

        // Nothing written to the log names the token or the birth date, though the whole
        // flow ran at debug level; the capture works (the requests are there).
        let written = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        assert!(
            written.contains("/r/{token}"),
            "requests are logged by pattern"
        );
        for secret in [token.as_str(), "19800401", "1980-04-01"] {
            assert!(!written.contains(secret), "{secret:?} in a log line");
        }
    }
}

#[tokio::test]
async fn bad_answers_are_refused_and_nothing_is_recorded() {
    let db = sqlite();
    let server = Server::start(&db, 100).await;
    let first = server.issue("jpa", "919191").await;
    let second = server.issue("jpa", "929292").await;
    let token_a = server.token(first["qr_id"].as_str().unwrap());
    let token_b = server.token(second["qr_id"].as_str().unwrap());
    let a = Phone::new(&server);
    let b = Phone::new(&server);
    let csrf_a = a.to_register_step(&token_a, "19800401", "919191-jpa").await;
    let csrf_b = b.to_register_step(&token_b, "19800401", "929292-jpa").await;

    // An answer made for another QR's challenge.
    let (_, options_a) = a.ceremony("start", &csrf_a, &json!({})).await;
    let (_, options_b) = b.ceremony("start", &csrf_b, &json!({})).await;
    let for_b = register_answer(&mut authenticator(true), options_b);
    let (status, refused) = a.ceremony("finish", &csrf_a, &for_b).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "authenticator_error");

    // A challenge is answered once: A must start again. A tampered answer (its signed client
    // data changed) is refused.
    let (status, _) = a.ceremony("finish", &csrf_a, &for_b).await;
    assert_eq!(status, 409);
    let (_, options_a2) = a.ceremony("start", &csrf_a, &json!({})).await;
    assert_ne!(
        options_a["publicKey"]["challenge"],
        options_a2["publicKey"]["challenge"]
    );
    let mut tampered = register_answer(&mut authenticator(true), options_a2);
    let client_data = URL_SAFE_NO_PAD
        .decode(tampered["response"]["clientDataJSON"].as_str().unwrap())
        .unwrap();
    let changed = String::from_utf8(client_data)
        .unwrap()
        .replace("http://localhost:8080", "https://elsewhere.example");
    tampered["response"]["clientDataJSON"] = json!(URL_SAFE_NO_PAD.encode(changed));
    let (status, refused) = a.ceremony("finish", &csrf_a, &tampered).await;
    assert_eq!(status, 400, "{refused}");

    // A phone that cannot verify its user (no biometric set up).
    let (_, options) = a.ceremony("start", &csrf_a, &json!({})).await;
    let unverified = register_unverified(options);
    let (status, refused) = a.ceremony("finish", &csrf_a, &unverified).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Security Key Error"),
        "{refused}"
    );

    // Malformed and oversized bodies, and a replay of a good answer after it was used.
    let (_, options) = a.ceremony("start", &csrf_a, &json!({})).await;
    let (status, _) = a.ceremony("finish", &csrf_a, &json!({"id": 3})).await;
    assert_eq!(status, 400);
    let (_, options_again) = a.ceremony("start", &csrf_a, &json!({})).await;
    let _ = options;
    let huge = json!({"padding": "x".repeat(100_000)});
    let (status, _) = a.ceremony("finish", &csrf_a, &huge).await;
    assert_eq!(status, 413);
    let good = register_answer(&mut authenticator(true), options_again.clone());
    let (_, options_fresh) = a.ceremony("start", &csrf_a, &json!({})).await;
    let _ = options_fresh;
    let (status, _) = a.ceremony("finish", &csrf_a, &good).await;
    assert_eq!(status, 400, "an answer to a challenge that was replaced");

    assert!(
        device_events(&server, "subscriber-jpa-919191")
            .await
            .is_empty()
    );
    assert!(
        device_events(&server, "subscriber-jpa-929292")
            .await
            .is_empty()
    );

    // A credential already bound to another certificate: B's phone answers, but before B
    // finishes, the same credential id is bound to a third QR's certificate.
    let third = server.issue("jpa", "939393").await;
    let qr_c = third["qr_id"].as_str().unwrap();
    let (_, options_b) = b.ceremony("start", &csrf_b, &json!({})).await;
    let answer_b = register_answer(&mut authenticator(true), options_b);
    assert_eq!(server.password(qr_c, "19800401").await.status(), 200);
    let bound = server
        .portal("/devices")
        .json(&json!({
            "token": server.token(qr_c),
            "credential_id": answer_b["id"],
            "public_key": "pQECAyYgASFYIMAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "aaguid": "08987058-cadc-4b81-b6e1-30de50dcbe96",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), 201);
    let (status, refused) = b.ceremony("finish", &csrf_b, &answer_b).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "credential_in_use");
    assert!(
        device_events(&server, "subscriber-jpa-929292")
            .await
            .is_empty()
    );

    // After all that, A still registers with a fresh challenge.
    let (_, options) = a.ceremony("start", &csrf_a, &json!({})).await;
    let answer = register_answer(&mut authenticator(true), options);
    let (status, done) = a.ceremony("finish", &csrf_a, &answer).await;
    assert_eq!(status, 200, "{done}");
    let (status, _) = a.ceremony("finish", &csrf_a, &answer).await;
    assert_eq!(status, 409, "the same answer again");
    assert_eq!(
        device_events(&server, "subscriber-jpa-919191").await,
        ["DeviceRegistered"]
    );
}
