//! The registration portal in headless Chromium (Debian's `chromium`, driven by chromedriver)
//! against the real server, with a WebAuthn virtual authenticator (CTAP2, internal transport,
//! resident keys, user verification): landing → password → sign-in → register → label →
//! done; the same QR again signs in; five wrong passwords lock the QR; an expired QR shows its
//! page; a cancelled ceremony is started again without a password attempt counted. Each page
//! is photographed into `docs/screenshots/` at a 375-px phone width.

mod common;

use std::path::PathBuf;

use common::browser::Browser;
use common::server::*;
use common::*;

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs/screenshots")
        .join(format!("{name}.png"))
}

/// Where the phone opens the portal: `localhost` (browsers allow passkeys there over http).
fn at(server: &Server, path: &str) -> String {
    format!("http://localhost:{}{path}", server.running.port)
}

async fn to_register_step(browser: &Browser, server: &Server, token: &str, id: &str) {
    browser.open(&at(server, &format!("/r/{token}"))).await;
    password_and_sign_in(browser, id).await;
}

async fn password_and_sign_in(browser: &Browser, id: &str) {
    browser.wait_for_page("password").await;
    browser.type_into("#password", "19800401").await;
    browser.click("#submit").await;
    browser.wait_for_page("sign_in").await;
    assert_eq!(browser.attribute("#subscriber_id", "value").await, id);
    browser.click("#submit").await;
    browser.wait_for_page("register").await;
}

fn kinds(timeline: &[serde_json::Value]) -> Vec<String> {
    timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_phone_registers_in_chromium_and_the_error_pages_show() {
    let db = sqlite();
    // The injected clock stands still, so one "minute" of rate limits spans the whole test.
    let server = Server::start_with(&db, |c| {
        c.lifecycle.password_attempts_per_minute = 1_000;
        c.portal.requests_per_minute = 10_000;
    })
    .await;
    let browser = Browser::start().await;
    let phone_key = browser.add_authenticator(true).await;

    // The happy path, photographed page by page.
    let first = server.issue("jma", "313131").await;
    let token = server.token(first["qr_id"].as_str().unwrap());
    browser.open(&at(&server, &format!("/r/{token}"))).await;
    browser.find("#password").await;
    assert_eq!(browser.attribute("#password", "inputmode").await, "numeric");
    browser.screenshot(&shot("01-password")).await;
    browser.type_into("#password", "19800401").await;
    browser.click("#submit").await;
    browser.wait_for_page("sign_in").await;
    assert_eq!(browser.attribute("#subscriber_id", "value").await, "313131");
    browser.screenshot(&shot("02-sign-in")).await;
    browser.click("#submit").await;
    browser.wait_for_page("register").await;
    assert_eq!(browser.text("#ceremony").await, "登録");
    browser.screenshot(&shot("03-register")).await;
    browser.click("#ceremony").await;
    browser.wait_for_page("label").await;
    browser.screenshot(&shot("04-label")).await;
    browser.click("#ok").await;
    browser.wait_for_page("done").await;
    assert!(
        browser.text("#done").await.contains("紐づけが完了しました"),
        "{}",
        browser.page_source().await
    );
    browser.screenshot(&shot("05-done")).await;
    let held = browser.credentials(&phone_key).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["isResidentCredential"], true, "{held:?}");
    let log = kinds(&server.timeline("subscriber-jma-313131").await);
    assert!(log.contains(&"DeviceRegistered".to_owned()), "{log:?}");
    assert!(log.contains(&"DeviceLabelled".to_owned()), "{log:?}");

    // The same QR again: Sign in, confirmed by the phone's key; in English this time.
    browser.delete_cookies().await;
    to_register_step(&browser, &server, &token, "313131").await;
    assert_eq!(browser.attribute("#ceremony", "data-mode").await, "sign-in");
    browser.open(&at(&server, "/portal/register?lang=en")).await;
    browser.wait_for_page("register").await;
    assert_eq!(
        browser.text("#ceremony").await,
        "Sign in with a security key"
    );
    browser.screenshot(&shot("06-sign-in-again-en")).await;
    browser.click("#ceremony").await;
    browser.wait_for_page("done").await;
    assert!(
        browser
            .text("#done")
            .await
            .contains("registration is confirmed"),
        "{}",
        browser.page_source().await
    );
    browser.open(&at(&server, "/portal/done?lang=ja")).await;

    // Five wrong passwords lock the QR.
    let second = server.issue("jma", "323232").await;
    let locked = server.token(second["qr_id"].as_str().unwrap());
    browser.delete_cookies().await;
    browser.open(&at(&server, &format!("/r/{locked}"))).await;
    for left in (1..=4).rev() {
        browser.type_into("#password", "20000101").await;
        browser.click("#submit").await;
        browser
            .wait_for_text("#error", &format!("あと {left} 回"))
            .await;
    }
    browser.type_into("#password", "20000101").await;
    browser.click("#submit").await;
    browser.wait_for_text("#problem", "ロック").await;
    assert_eq!(
        browser.attribute("#problem", "data-code").await,
        "qr_locked"
    );
    browser.screenshot(&shot("07-locked")).await;

    // A cancelled ceremony, started again: no password attempt is counted.
    let third = server.issue("jma", "333331").await;
    let cancelled = server.token(third["qr_id"].as_str().unwrap());
    browser.remove_authenticator(&phone_key).await;
    let refusing = browser.add_authenticator(false).await;
    browser.delete_cookies().await;
    to_register_step(&browser, &server, &cancelled, "333331").await;
    browser.click("#ceremony").await;
    browser.wait_for_text("#error", "中止されました").await;
    assert_eq!(browser.attribute("#error", "data-code").await, "cancelled");
    browser.screenshot(&shot("08-cancelled")).await;
    browser.remove_authenticator(&refusing).await;
    browser.add_authenticator(true).await;
    browser.click("#restart").await;
    password_and_sign_in(&browser, "333331").await;
    browser.click("#ceremony").await;
    browser.wait_for_page("label").await;
    browser.click("#cancel").await;
    browser.wait_for_page("done").await;
    assert!(browser.text("#done").await.contains("紐づけが完了しました"));
    let log = kinds(&server.timeline("subscriber-jma-333331").await);
    assert!(!log.contains(&"PasswordFailed".to_owned()), "{log:?}");
    assert!(log.contains(&"DeviceRegistered".to_owned()), "{log:?}");
    assert!(
        !log.contains(&"DeviceLabelled".to_owned()),
        "Cancel on the label page: {log:?}"
    );

    // Past three months: the expired page.
    let fourth = server.issue("jpa", "343434").await;
    let expired = server.token(fourth["qr_id"].as_str().unwrap());
    server.clock.advance(time::Duration::days(100));
    browser.delete_cookies().await;
    browser.open(&at(&server, &format!("/r/{expired}"))).await;
    assert_eq!(
        browser.attribute("#problem", "data-code").await,
        "qr_expired"
    );
    browser.screenshot(&shot("09-expired")).await;

    // A token that names no QR: a page that names no one.
    browser
        .open(&at(&server, &format!("/r/{}", "Q".repeat(43))))
        .await;
    assert_eq!(
        browser.attribute("#problem", "data-code").await,
        "unknown_qr"
    );
    browser.screenshot(&shot("10-unknown")).await;

    // A page left idle past five minutes starts over.
    let fifth = server.issue("jpa", "353535").await;
    let idle = server.token(fifth["qr_id"].as_str().unwrap());
    browser.open(&at(&server, &format!("/r/{idle}"))).await;
    browser.wait_for_page("password").await;
    server.clock.advance(time::Duration::minutes(6));
    browser.type_into("#password", "19800401").await;
    browser.click("#submit").await;
    browser.wait_for_page("problem").await;
    assert_eq!(
        browser.attribute("#problem", "data-code").await,
        "session_expired"
    );
    browser.screenshot(&shot("11-session-expired")).await;
    let log = kinds(&server.timeline("subscriber-jpa-353535").await);
    assert!(!log.iter().any(|k| k.starts_with("Password")), "{log:?}");
}
