//! A back office under test, served on a free port over a fresh database, driven through its
//! public API with the injectable clock.

use std::sync::Arc;

use hpki_backoffice::clock::ManualClock;
use hpki_backoffice::config::{Config, Role, Staff};
use reqwest::{Client, Response};
use serde_json::{Value, json};

use super::*;

pub const APPROVER_TOKEN: &str = "approver-token-for-tests-only-0002";
pub const PROPOSER_TOKEN: &str = "proposer-approver-token-for-tests-0003";

pub struct Server {
    pub base: String,
    pub client: Client,
    /// Before `dir`: fields drop in order, and the back office's background work stops when
    /// `running` drops, so nothing is written into the folder after it is removed.
    pub running: hpki_backoffice::serve::Running,
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    /// The configuration it was started with.
    pub config: Config,
}

pub fn staff(token: &str, roles: Vec<Role>) -> Staff {
    Staff {
        token_sha256: hex::encode(openssl::sha::sha256(token.as_bytes())),
        roles,
    }
}

impl Server {
    pub async fn start(db: &TestDb, attempts_per_minute: u32) -> Server {
        Server::start_with(db, |config| {
            config.lifecycle.password_attempts_per_minute = attempts_per_minute
        })
        .await
    }

    /// A server whose configuration `adjust` may change first.
    pub async fn start_with(db: &TestDb, adjust: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(db, dir.path());
        // sato approves; tanaka both proposes and approves (dual control must still hold).
        config
            .staff
            .insert("sato".into(), staff(APPROVER_TOKEN, vec![Role::Approver]));
        config.staff.insert(
            "tanaka".into(),
            staff(PROPOSER_TOKEN, vec![Role::Officer, Role::Approver]),
        );
        adjust(&mut config);
        let clock = clock();
        let running = hpki_backoffice::serve::start(&config, clock.clone())
            .await
            .unwrap();
        Server {
            base: format!("http://127.0.0.1:{}/api/v1", running.port),
            client: http_client().build().unwrap(),
            dir,
            clock,
            running,
            config,
        }
    }

    pub fn post_as(&self, token: &str, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.post_as(STAFF_TOKEN, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(STAFF_TOKEN)
    }

    /// A portal call: no staff token.
    pub fn portal(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}/portal{path}", self.base))
    }

    /// The registration token of a QR, made as the print and mail processors make it.
    pub fn token(&self, qr_id: &str) -> String {
        let (secret, _) = hpki_backoffice::secrets::Secret::load_or_generate(
            &self.dir.path().join("keys/qr-secret.hex"),
        )
        .unwrap();
        hpki_backoffice::qr::token(secret.bytes(), qr_id.parse().unwrap())
    }

    pub async fn password(&self, qr_id: &str, entered: &str) -> Response {
        self.portal("/password")
            .json(&json!({"token": self.token(qr_id), "password": entered}))
            .send()
            .await
            .unwrap()
    }

    /// Applies with `form` and checks the documents: the application's id, waiting for a
    /// decision.
    pub async fn checked(&self, form: &Value) -> String {
        let application = ok(self.post("/applications").json(form).send().await.unwrap()).await;
        let id = application["application_id"].as_str().unwrap().to_owned();
        ok(self
            .post(&format!("/applications/{id}/documents-checked"))
            .send()
            .await
            .unwrap())
        .await;
        id
    }

    /// Applies, checks the documents and approves: the approval.
    pub async fn issue(&self, authority: &str, registry: &str) -> Value {
        let id = self.checked(&form(authority, registry)).await;
        ok(self
            .post(&format!("/applications/{id}/approve"))
            .send()
            .await
            .unwrap())
        .await
    }

    /// A certificate as the API serves it, PEM.
    pub async fn certificate_pem(&self, serial: &str) -> String {
        let response = self
            .get(&format!("/certificates/{serial}"))
            .header("accept", "application/x-pem-file")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "certificate {serial}");
        response.text().await.unwrap()
    }

    pub async fn timeline(&self, subscriber: &str) -> Vec<Value> {
        let entries = ok(self
            .get(&format!("/subscribers/{subscriber}/timeline"))
            .send()
            .await
            .unwrap())
        .await;
        entries.as_array().unwrap().clone()
    }

    pub async fn expiry(&self) -> Value {
        ok(self.post("/jobs/expiry").send().await.unwrap()).await
    }

    pub async fn lifecycle(&self, list: &str) -> Vec<Value> {
        let items = ok(self
            .get(&format!("/lifecycle?list={list}"))
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
}

pub fn form(authority: &str, registry: &str) -> Value {
    let profession = if authority == "jma" {
        "physician"
    } else {
        "pharmacist"
    };
    json!({
        "authority": authority,
        "name_kanji": "山田 花子",
        "name_kana": "ヤマダ ハナコ",
        "name_romaji": "YAMADA HANAKO",
        "birth_date": "1980-04-01",
        "profession": profession,
        "registry_number": registry,
        "email": "hanako@example.jp",
        "postal_code": "113-8621",
        "address": "東京都文京区本駒込2-28-16",
        "delivery": "home",
        "channel": "paper",
        "photo_base64": openssl::base64::encode_block(hpki_backoffice::demo::SAMPLE_PHOTO),
    })
}

pub async fn ok(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

/// The error code of a refusal, after checking its status and that it says nothing of the
/// birth date.
pub async fn refused(response: Response, status: u16) -> String {
    let got = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    assert!(
        !text.contains("19800401") && !text.contains("1980-04-01"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}
