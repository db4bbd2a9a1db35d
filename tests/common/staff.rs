//! A staff member's browser on the console, without the browser: a cookie jar, redirects not
//! followed (each step seen), forms posted as the pages post them, and a software passkey
//! (webauthn-authenticator-rs's SoftPasskey) answering the console's WebAuthn ceremonies.

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

use super::server::Server;

pub struct Desk {
    pub client: reqwest::Client,
    pub origin: String,
    pub key: SoftPasskey,
}

/// A page as answered: status, where it redirects, its body.
pub struct Page {
    pub status: StatusCode,
    pub location: String,
    pub body: String,
}

impl Page {
    /// The synchronizer token the page's forms carry.
    pub fn csrf(&self) -> String {
        let needle = "name=\"_csrf\" value=\"";
        let at = self
            .body
            .find(needle)
            .unwrap_or_else(|| panic!("no form token on {}", self.body))
            + needle.len();
        self.body[at..at + 64].to_owned()
    }
}

impl Desk {
    pub fn new(server: &Server) -> Desk {
        Desk {
            client: super::http_client()
                .cookie_store(true)
                .redirect(Policy::none())
                .build()
                .unwrap(),
            origin: format!("http://127.0.0.1:{}", server.running.port),
            key: SoftPasskey::new(true),
        }
    }

    async fn page(res: reqwest::Response) -> Page {
        let status = res.status();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Page {
            status,
            location,
            body: res.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.origin)
        };
        Desk::page(self.client.get(url).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        Desk::page(
            self.client
                .post(format!("{}{path}", self.origin))
                .form(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Posts `form` with the token of the page at `from` (as a button on it would).
    pub async fn submit(&self, from: &str, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut all = vec![("_csrf", csrf.as_str())];
        all.extend_from_slice(form);
        self.post(path, &all).await
    }

    async fn ceremony(&self, step: &str, csrf: &str, body: &Value) -> (u16, Value) {
        let res = self
            .client
            .post(format!("{}/console/passkey/{step}", self.origin))
            .header("x-csrf-token", csrf)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    fn meta_csrf(page: &Page) -> String {
        let needle = "name=\"csrf-token\" content=\"";
        let at = page.body.find(needle).expect("a CSRF meta tag") + needle.len();
        page.body[at..at + 64].to_owned()
    }

    /// Follows a setup link: chooses `password`, registers this desk's passkey.
    pub async fn set_up(&mut self, link: &str, password: &str) {
        let opened = self.get(link).await;
        assert_eq!(opened.status, 303, "{}", opened.body);
        assert_eq!(opened.location, "/console/setup");
        let form = self.get("/console/setup").await;
        let set = self
            .post(
                "/console/setup",
                &[
                    ("_csrf", &form.csrf()),
                    ("password", password),
                    ("password_again", password),
                ],
            )
            .await;
        assert_eq!(set.location, "/console/setup/passkey", "{}", set.body);
        let page = self.get("/console/setup/passkey").await;
        let csrf = Desk::meta_csrf(&page);
        let (status, mut options) = self.ceremony("start", &csrf, &json!({})).await;
        assert_eq!(status, 200, "{options}");
        // The soft authenticator keeps no resident keys; the server asks for one.
        assert_eq!(
            options["publicKey"]["authenticatorSelection"]["residentKey"],
            "required"
        );
        options["publicKey"]["authenticatorSelection"]["residentKey"] = json!("discouraged");
        options["publicKey"]["authenticatorSelection"]["requireResidentKey"] = json!(false);
        let options: CreationChallengeResponse = serde_json::from_value(options).unwrap();
        let answer = self.key.do_registration(origin(), options).unwrap();
        let (status, done) = self
            .ceremony("finish", &csrf, &serde_json::to_value(answer).unwrap())
            .await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["next"], "/console/sign-in");
    }

    /// The password step; the page it led to.
    pub async fn password(&self, name: &str, password: &str) -> Page {
        let form = self.get("/console/sign-in").await;
        self.post(
            "/console/sign-in",
            &[
                ("_csrf", &form.csrf()),
                ("name", name),
                ("password", password),
            ],
        )
        .await
    }

    /// The passkey step after a right password: the ceremony's status and answer.
    pub async fn passkey(&mut self) -> (u16, Value) {
        let page = self.get("/console/sign-in/passkey").await;
        let csrf = Desk::meta_csrf(&page);
        let (status, options) = self.ceremony("start", &csrf, &json!({})).await;
        assert_eq!(status, 200, "{options}");
        let options: RequestChallengeResponse = serde_json::from_value(options).unwrap();
        let answer = self.key.do_authentication(origin(), options).unwrap();
        self.ceremony("finish", &csrf, &serde_json::to_value(answer).unwrap())
            .await
    }

    /// Password and passkey.
    pub async fn sign_in(&mut self, name: &str, password: &str) {
        let after = self.password(name, password).await;
        assert_eq!(after.location, "/console/sign-in/passkey", "{}", after.body);
        let (status, done) = self.passkey().await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["next"], "/console/dashboard");
    }
}

/// The console's origin as the soft authenticator reports it (any port on localhost).
pub fn origin() -> Url {
    Url::parse("http://localhost:8080").unwrap()
}

/// Opens an account directly (as `hpki staff create` does) and returns its setup link.
pub async fn account(
    server: &Server,
    name: &str,
    roles: &[&str],
    mail_house: Option<&str>,
) -> String {
    let config = server_config(server);
    let directory = hpki_backoffice::staff::Directory::new(
        server.running.store.clone(),
        server.clock.clone(),
        &config,
    )
    .unwrap();
    let roles: Vec<_> = roles
        .iter()
        .map(|r| hpki_backoffice::config::Role::parse(r).unwrap())
        .collect();
    directory
        .create(
            name,
            &format!("{name} (test)"),
            &roles,
            mail_house,
            &hpki_events::Actor::system("test"),
        )
        .await
        .unwrap()
        .url
}

fn server_config(server: &Server) -> hpki_backoffice::config::Config {
    server.config.clone()
}

pub const PASSWORD: &str = "correct horse battery staple";
