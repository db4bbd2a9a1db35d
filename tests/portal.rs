//! The registration portal's pages over HTTP, as a phone's browser meets them (a cookie jar, no
//! redirects followed so each step can be seen): landing, password with its lockout, sign-in,
//! the register step, the security headers, CSRF, idle sessions, and the pages for QRs that
//! cannot be used. The WebAuthn ceremony itself runs in the browser tests.

mod common;

use common::phone::Phone;
use common::server::*;
use common::*;
use serde_json::Value;

fn kinds(timeline: &[Value]) -> Vec<String> {
    timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_qr_leads_through_password_and_sign_in_to_the_register_step() {
    for db in both().await {
        let server = Server::start(&db, 100).await;
        let approval = server.issue("jpa", "424242").await;
        let token = server.token(approval["qr_id"].as_str().unwrap());
        let phone = Phone::new(&server);

        // Landing: a session cookie bound to this QR, and the token leaves the address bar.
        let res = phone
            .client
            .get(format!("{}/r/{token}", phone.origin))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "{}", db.backend);
        assert_eq!(res.headers()["location"], "/portal/password");
        assert_eq!(res.headers()["referrer-policy"], "no-referrer");
        let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.starts_with("hpki_portal="), "{cookie}");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );

        let (status, headers, page) = phone.get("/portal/password").await;
        assert_eq!(status, 200);
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert_eq!(headers["cache-control"], "no-store");
        assert!(page.contains("<html lang=\"ja\">"), "{page}");
        assert!(page.contains("inputmode=\"numeric\""), "{page}");
        assert!(page.contains("同封のご案内"), "JPA's own hint: {page}");
        assert!(!page.contains(&token), "the page never shows the token");
        let csrf = phone.csrf("/portal/password").await;

        // A wrong password shows what is left; one that cannot be 8 digits is not counted.
        let (status, _, page) = phone
            .post(
                "/portal/password",
                &[("csrf", &csrf), ("password", "19990101")],
            )
            .await;
        assert_eq!(status, 422);
        assert!(page.contains("あと 4 回"), "{page}");
        let (status, _, page) = phone
            .post(
                "/portal/password",
                &[("csrf", &csrf), ("password", "1980-4")],
            )
            .await;
        assert_eq!(status, 422);
        assert!(page.contains("回数に数えていません"), "{page}");
        let (_, _, page) = phone
            .post(
                "/portal/password",
                &[("csrf", &csrf), ("password", "19990102")],
            )
            .await;
        assert!(page.contains("あと 3 回"), "{page}");

        // A form that does not read gets the portal's page, not plain text: a field sent
        // twice, and a form longer than any the portal sends.
        let (status, _, page) = phone
            .post(
                "/portal/password",
                &[("csrf", &csrf), ("password", "1"), ("password", "2")],
            )
            .await;
        assert_eq!(status, 400);
        assert!(page.contains("送られた内容を読めませんでした"), "{page}");
        let long = "9".repeat(5000);
        let (status, _, page) = phone
            .post("/portal/password", &[("csrf", &csrf), ("password", &long)])
            .await;
        assert_eq!(status, 413);
        assert!(page.contains("<html lang=\"ja\">"), "{page}");

        // Sign-in can't be skipped to; the right password (full-width digits too) leads there.
        let (status, _, _) = phone.get("/portal/register").await;
        assert_eq!(status, 303);
        let (status, location, _) = phone
            .post(
                "/portal/password",
                &[("csrf", &csrf), ("password", "１９８００４０１")],
            )
            .await;
        assert_eq!(
            (status.as_u16(), location.as_str()),
            (303, "/portal/sign-in")
        );

        // The subscriber ID is filled in; another is refused; typed in full width it is fine.
        let (_, _, page) = phone.get("/portal/sign-in").await;
        assert!(page.contains("value=\"424242-jpa\""), "{page}");
        let (status, _, page) = phone
            .post(
                "/portal/sign-in",
                &[("csrf", &csrf), ("subscriber_id", "424243-jpa")],
            )
            .await;
        assert_eq!(status, 422);
        assert!(page.contains("本人 ID が QR コードのカード"), "{page}");
        let (status, location, _) = phone
            .post(
                "/portal/sign-in",
                &[("csrf", &csrf), ("subscriber_id", "４２４２４２－ＪＰＡ")],
            )
            .await;
        assert_eq!(
            (status.as_u16(), location.as_str()),
            (303, "/portal/register")
        );

        // The register step, in Japanese, and in English when asked.
        let (_, _, page) = phone.get("/portal/register").await;
        assert!(page.contains("data-mode=\"register\""), "{page}");
        assert!(page.contains(">登録</button>"), "{page}");
        assert!(page.contains("src=\"/portal/static/portal.js\""), "{page}");
        let (_, _, page) = phone.get("/portal/register?lang=en").await;
        assert!(
            page.contains("<html lang=\"en\">") && page.contains(">Register</button>"),
            "{page}"
        );
        // The choice is remembered.
        let (_, _, page) = phone.get("/portal/register").await;
        assert!(page.contains("<html lang=\"en\">"), "{page}");

        let timeline = kinds(&server.timeline("subscriber-jpa-424242").await);
        assert_eq!(
            timeline.iter().filter(|k| *k == "PasswordFailed").count(),
            2,
            "{timeline:?}"
        );
        assert!(timeline.contains(&"PasswordAccepted".to_owned()));
    }
}

#[tokio::test]
async fn five_wrong_passwords_lock_the_qr_and_the_page_says_what_to_do() {
    let db = sqlite();
    let server = Server::start(&db, 100).await;
    let approval = server.issue("jma", "515151").await;
    let token = server.token(approval["qr_id"].as_str().unwrap());
    let phone = Phone::new(&server);
    phone.get(&format!("/r/{token}")).await;
    let csrf = phone.csrf("/portal/password").await;
    for attempt in 1..=4 {
        let (status, _, page) = phone
            .post(
                "/portal/password",
                &[("csrf", &csrf), ("password", "20000101")],
            )
            .await;
        assert_eq!(status, 422);
        assert!(page.contains(&format!("あと {} 回", 5 - attempt)), "{page}");
    }
    let (status, _, page) = phone
        .post(
            "/portal/password",
            &[("csrf", &csrf), ("password", "20000101")],
        )
        .await;
    assert_eq!(status, 423);
    assert!(page.contains("data-code=\"qr_locked\""), "{page}");
    assert!(
        page.contains("Web フォーム"),
        "JMA's own reissue route: {page}"
    );
    assert!(page.contains("日本医師会電子認証センター"), "{page}");

    // The session is over; the QR itself now lands on the locked page, even the right password
    // is never evaluated again.
    let (status, _, _) = phone.get("/portal/password").await;
    assert_eq!(status, 401);
    let (status, _, page) = phone.get(&format!("/r/{token}")).await;
    assert_eq!(status, 423);
    assert!(page.contains("data-code=\"qr_locked\""), "{page}");
}

#[tokio::test]
async fn unknown_and_expired_qrs_have_their_own_pages_and_reveal_nothing() {
    let db = sqlite();
    let server = Server::start(&db, 100).await;
    let approval = server.issue("jpa", "616161").await;
    let token = server.token(approval["qr_id"].as_str().unwrap());
    let phone = Phone::new(&server);

    let unknown = "A".repeat(43);
    let (status, _, page) = phone.get(&format!("/r/{unknown}")).await;
    assert_eq!(status, 404);
    assert!(page.contains("data-code=\"unknown_qr\""), "{page}");
    assert!(!page.contains("日本薬剤師会"), "names no authority: {page}");
    let (status, _, _) = phone.get("/r/short").await;
    assert_eq!(status, 404);

    // Past its three months: the expired page, with JPA's route (e-mail) and contact.
    server.clock.advance(time::Duration::days(100));
    let (status, _, page) = phone.get(&format!("/r/{token}?lang=en")).await;
    assert_eq!(status, 410);
    assert!(page.contains("data-code=\"qr_expired\""), "{page}");
    assert!(page.contains("by e-mail"), "{page}");
}

#[tokio::test]
async fn forms_without_the_csrf_token_and_idle_sessions_are_refused_with_nothing_recorded() {
    let db = sqlite();
    let server = Server::start(&db, 100).await;
    let approval = server.issue("jma", "717171").await;
    let token = server.token(approval["qr_id"].as_str().unwrap());
    let phone = Phone::new(&server);
    phone.get(&format!("/r/{token}")).await;

    let (status, _, page) = phone
        .post("/portal/password", &[("password", "19800401")])
        .await;
    assert_eq!(status, 403);
    assert!(page.contains("data-code=\"csrf\""), "{page}");
    let (status, _, _) = phone
        .post(
            "/portal/password",
            &[("csrf", &"0".repeat(64)), ("password", "19800401")],
        )
        .await;
    assert_eq!(status, 403);
    // A ceremony call without the header, and one before the register step.
    let res = phone
        .client
        .post(format!("{}/portal/ceremony/start", phone.origin))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let csrf = phone.csrf("/portal/password").await;
    let res = phone
        .client
        .post(format!("{}/portal/ceremony/start", phone.origin))
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let timeline = kinds(&server.timeline("subscriber-jma-717171").await);
    assert!(
        !timeline
            .iter()
            .any(|k| k.starts_with("Password") || k == "DeviceRegistered"),
        "{timeline:?}"
    );

    // Five minutes idle is fine; six starts over.
    server.clock.advance(time::Duration::minutes(5));
    let (status, _, _) = phone.get("/portal/password").await;
    assert_eq!(status, 200);
    server.clock.advance(time::Duration::minutes(6));
    let (status, _, page) = phone.get("/portal/password").await;
    assert_eq!(status, 401);
    assert!(page.contains("data-code=\"session_expired\""), "{page}");
}

#[tokio::test]
async fn an_address_past_its_portal_limit_gets_a_page_saying_to_wait() {
    let db = sqlite();
    let server = Server::start_with(&db, |c| c.portal.requests_per_minute = 3).await;
    let phone = Phone::new(&server);
    let unknown = format!("/r/{}", "B".repeat(43));
    for _ in 0..3 {
        let (status, _, _) = phone.get(&unknown).await;
        assert_eq!(status, 404);
    }
    let (status, headers, page) = phone.get(&unknown).await;
    assert_eq!(status, 429);
    assert!(page.contains("data-code=\"too_many\""), "{page}");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    // The next minute (on the injected clock) is open again.
    server.clock.advance(time::Duration::minutes(1));
    let (status, _, _) = phone.get(&unknown).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_qr_superseded_at_the_register_step_is_refused_there_and_at_the_ceremony() {
    for db in both().await {
        let server = Server::start(&db, 100).await;
        let approval = server.issue("jma", "818181").await;
        let serial = approval["second_certificate_serial"].as_str().unwrap();
        let token = server.token(approval["qr_id"].as_str().unwrap());
        let phone = Phone::new(&server);
        let csrf = phone.to_register_step(&token, "19800401", "818181").await;

        // Staff reissue the QR while the phone is at the register step.
        let request = ok(server
            .post("/reissue-requests")
            .json(&serde_json::json!({
                "certificate_serial": serial, "channel": "web_form", "reason": "lost"}))
            .send()
            .await
            .unwrap())
        .await;
        let request_id = request["id"].as_str().unwrap();
        ok(server
            .post(&format!("/reissue-requests/{request_id}/approve"))
            .send()
            .await
            .unwrap())
        .await;

        let (status, body) = phone.ceremony("start", &csrf, &serde_json::json!({})).await;
        assert_eq!(status, 410, "{}: {body}", db.backend);
        assert_eq!(body["error"]["code"], "qr_superseded", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("QR"),
            "{body}"
        );
        let (status, _, page) = phone.get("/portal/register").await;
        assert_eq!(status, 410);
        assert!(page.contains("data-code=\"qr_superseded\""), "{page}");
    }
}
