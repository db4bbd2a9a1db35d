//! A phone's browser on the registration portal, without the browser: a cookie jar, no
//! redirects followed (so each step can be seen), forms posted as a page would post them.

use reqwest::StatusCode;
use reqwest::redirect::Policy;

use super::server::Server;

/// A phone: its own cookie jar, on the server's portal.
pub struct Phone {
    pub client: reqwest::Client,
    pub origin: String,
}

impl Phone {
    pub fn new(server: &Server) -> Phone {
        Phone {
            client: super::http_client()
                .cookie_store(true)
                .redirect(Policy::none())
                .build()
                .unwrap(),
            origin: format!("http://127.0.0.1:{}", server.running.port),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let res = self
            .client
            .get(format!("{}{path}", self.origin))
            .send()
            .await
            .unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        (status, headers, res.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String, String) {
        let res = self
            .client
            .post(format!("{}{path}", self.origin))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, location, res.text().await.unwrap())
    }

    /// The CSRF token the current page carries.
    pub async fn csrf(&self, path: &str) -> String {
        let (_, _, page) = self.get(path).await;
        let needle = "name=\"csrf-token\" content=\"";
        let at = page.find(needle).expect("a CSRF token") + needle.len();
        page[at..at + 64].to_owned()
    }
}

impl Phone {
    /// Lands on the QR, enters the right password and signs in: at the register step.
    pub async fn to_register_step(&self, token: &str, password: &str, id: &str) -> String {
        self.get(&format!("/r/{token}")).await;
        let csrf = self.csrf("/portal/password").await;
        let (status, location, page) = self
            .post(
                "/portal/password",
                &[("csrf", &csrf), ("password", password)],
            )
            .await;
        assert_eq!(status, 303, "{page}");
        assert_eq!(location, "/portal/sign-in");
        let (status, location, page) = self
            .post("/portal/sign-in", &[("csrf", &csrf), ("subscriber_id", id)])
            .await;
        assert_eq!(status, 303, "{page}");
        assert_eq!(location, "/portal/register");
        csrf
    }

    /// A ceremony call, as the page's script makes it.
    pub async fn ceremony(
        &self,
        step: &str,
        csrf: &str,
        body: &serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let res = self
            .client
            .post(format!("{}/portal/ceremony/{step}", self.origin))
            .header("x-csrf-token", csrf)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or_default())
    }
}
