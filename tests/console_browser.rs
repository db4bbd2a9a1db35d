//! The staff console in headless Chromium against the real server (SQLite), with a WebAuthn
//! virtual authenticator holding each member's passkey: the first administrator sets up
//! through the setup link; an officer signs in with password and passkey and approves an
//! application, which leaves the inbox; the officer proposes a revocation and, with no approve
//! button for them, a second person approves it, after which the CRL page lists the new CRL;
//! the mail house sees only its batches and uploads a confirmation file; an auditor reads the
//! timeline while every change is refused, in the page (no buttons) and by direct POST. The
//! main pages are photographed into `docs/screenshots/console-*.png`.

mod common;

use std::path::PathBuf;

use common::browser::Browser;
use common::server::*;
use common::staff::{PASSWORD, account};
use common::*;
use hpki_backoffice::config::{FileEncoding, MailHouse};
use hpki_events::vocabulary::Imposition;
use serde_json::json;

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs/screenshots")
        .join(format!("console-{name}.png"))
}

/// Where staff open the console: `localhost` (browsers allow passkeys there over http).
fn at(server: &Server, path: &str) -> String {
    format!("http://localhost:{}{path}", server.running.port)
}

fn local(server: &Server, link: &str) -> String {
    at(server, link.trim_start_matches("http://localhost:8080"))
}

/// Each member's passkey, kept as their own security key would be: Chromium's virtual
/// authenticator keeps at most three resident credentials, so each member's lives on an
/// authenticator of its own, plugged in (added) while they use it.
#[derive(Default)]
struct Keys {
    by_name: std::collections::HashMap<String, serde_json::Value>,
    /// The authenticator plugged in, and whose it is.
    plugged: Option<(String, String)>,
}

impl Keys {
    /// Takes the authenticator out, keeping its credential as it now stands: its signature
    /// counter has risen with each sign-in, and the console refuses one that goes back (a
    /// cloned key), so the next authenticator must carry on from here.
    async fn unplug(&mut self, browser: &Browser) {
        if let Some((id, name)) = self.plugged.take() {
            if self.by_name.contains_key(&name) {
                let credentials = browser.credentials(&id).await;
                assert_eq!(credentials.len(), 1, "{name}");
                self.by_name.insert(name, credentials[0].clone());
            }
            browser.remove_authenticator(&id).await;
        }
    }

    /// A fresh authenticator, holding `name`'s credential when they have one.
    async fn plug(&mut self, browser: &Browser, name: &str) -> String {
        self.unplug(browser).await;
        let id = browser.add_authenticator(true).await;
        if let Some(credential) = self.by_name.get(name) {
            browser.add_credential(&id, credential).await;
        }
        self.plugged = Some((id.clone(), name.to_owned()));
        id
    }

    /// Follows a setup link: password, then a passkey on the member's own authenticator.
    async fn set_up(&mut self, browser: &Browser, server: &Server, name: &str, link: &str) {
        browser.delete_cookies().await;
        let id = self.plug(browser, name).await;
        browser.open(&local(server, link)).await;
        browser.wait_for_page("setup").await;
        if name == "admin" {
            browser.screenshot(&shot("01-setup")).await;
        }
        browser.type_into("#password", PASSWORD).await;
        browser.type_into("#password_again", PASSWORD).await;
        browser.click("#submit").await;
        browser.wait_for_page("passkey").await;
        browser.click("#ceremony").await;
        browser.wait_for_page("sign_in").await;
        browser
            .wait_for_text("#flash", "アカウントの設定が終わりました")
            .await;
        let credentials = browser.credentials(&id).await;
        assert_eq!(credentials.len(), 1, "{name}");
        self.by_name.insert(name.to_owned(), credentials[0].clone());
    }

    /// Password and passkey; lands on `page`.
    async fn sign_in(&mut self, browser: &Browser, server: &Server, name: &str, page: &str) {
        browser.delete_cookies().await;
        self.plug(browser, name).await;
        browser.open(&at(server, "/console/sign-in")).await;
        browser.wait_for_page("sign_in").await;
        browser.type_into("#name", name).await;
        browser.type_into("#password", PASSWORD).await;
        browser.click("#submit").await;
        browser.wait_for_page("passkey").await;
        browser.click("#ceremony").await;
        browser.wait_for_page(page).await;
    }
}

/// POSTs a form from inside the page, as a forged or hand-made request would: the status.
async fn post_from_page(browser: &Browser, path: &str, body: &str) -> u64 {
    let status = browser
        .run_async(
            "var done = arguments[arguments.length - 1];
             fetch(arguments[0], {method: 'POST', body: arguments[1], credentials: 'same-origin',
                    headers: {'content-type': 'application/x-www-form-urlencoded'}})
               .then(function (r) { done(r.status); }, function (e) { done(String(e)); });",
            json!([path, body]),
        )
        .await;
    status.as_u64().unwrap_or_else(|| panic!("{status}"))
}

#[tokio::test]
async fn staff_work_in_chromium_with_passkeys_roles_and_dual_control() {
    let db = sqlite();
    let server = Server::start_with(&db, |c| {
        c.crl.background = false;
        c.mail.background = false;
        c.print.background = false;
        c.mail_houses.insert(
            "yamato".into(),
            MailHouse {
                token_sha256: hex::encode(openssl::sha::sha256(b"yamato-token-for-tests")),
                authorities: vec!["jma".into()],
                imposition: Imposition::TenUp,
                encoding: FileEncoding::Utf8Bom,
            },
        );
    })
    .await;
    let browser = Browser::desktop().await;
    let mut keys = Keys::default();

    // The first administrator, through the link printed at first start.
    let link = server.running.setup_link.clone().unwrap();
    keys.set_up(&browser, &server, "admin", &link).await;

    // The administrator opens the officer's account on the staff page and hands over the link.
    keys.sign_in(&browser, &server, "admin", "dashboard").await;
    browser.open(&at(&server, "/console/staff")).await;
    browser.type_into("#new-name", "yamada").await;
    browser.type_into("#new-display-name", "山田 一郎").await;
    browser.click("#role-officer").await;
    browser.click("#create-account").await;
    browser.wait_for_page("shown_once").await;
    let officer_link = browser.text("#secret").await;
    assert!(officer_link.contains("/console/setup/"), "{officer_link}");
    browser.open(&at(&server, "/console/staff")).await;
    browser.wait_for_text("#accounts", "yamada").await;
    browser.screenshot(&shot("09-staff")).await;

    // The administrator changes an authority's contact; the change is in the log with them.
    browser.open(&at(&server, "/console/settings")).await;
    browser.wait_for_page("settings").await;
    browser
        .type_into(
            "#jma-contact_ja",
            "日本医師会 電子認証センター 03-0000-2222",
        )
        .await;
    browser
        .type_into("#jma-reason", "窓口の電話番号の変更")
        .await;
    browser.click("#jma-save").await;
    browser.wait_for_text("#flash", "設定を変更しました").await;
    browser
        .wait_for_text("#authority-jma", "窓口の電話番号の変更")
        .await;
    browser.screenshot(&shot("13-settings")).await;
    let changes = server
        .running
        .store
        .read_stream("authority-jma")
        .await
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].metadata.actor.as_str(), "staff:admin");
    let approver_link = account(&server, "takahashi", &["approver"], None).await;
    let house_link = account(&server, "yamato-op", &["mail_house"], Some("yamato")).await;
    let auditor_link = account(&server, "kansa", &["auditor"], None).await;
    for (name, link) in [
        ("yamada", &officer_link),
        ("takahashi", &approver_link),
        ("yamato-op", &house_link),
        ("kansa", &auditor_link),
    ] {
        keys.set_up(&browser, &server, name, link).await;
    }

    // Work for the officer: two applications with documents checked (one with markup in its
    // address), and one issued earlier whose certificate will be revoked.
    let mut ids = Vec::new();
    for (registry, address) in [
        ("600001", "東京都文京区本駒込2-28-16"),
        ("600002", "<b>大阪府</b><script>alert(1)</script>"),
    ] {
        let mut f = form("jma", registry);
        f["address"] = json!(address);
        let id = server.checked(&f).await;
        ids.push(id);
    }
    let issued = server.issue("jma", "600003").await;
    let serial = issued["second_certificate_serial"]
        .as_str()
        .unwrap()
        .to_owned();

    // The officer: password and passkey, the dashboard, the inbox, the detail, approve.
    let yamada_at_setup = keys.by_name["yamada"].clone();
    keys.sign_in(&browser, &server, "yamada", "dashboard").await;
    browser.wait_for_text("#tile-documents-checked", "2").await;
    browser.screenshot(&shot("02-dashboard")).await;
    browser
        .open(&at(&server, "/console/applications?list=documents_checked"))
        .await;
    browser.find(&format!("tr[data-id='{}']", ids[0])).await;
    browser.screenshot(&shot("03-inbox")).await;
    browser
        .open(&at(&server, &format!("/console/applications/{}", ids[1])))
        .await;
    // Markup a subscriber supplied is shown as text.
    assert_eq!(
        browser.text("#address").await,
        "〒113-8621 <b>大阪府</b><script>alert(1)</script>"
    );
    browser
        .open(&at(&server, &format!("/console/applications/{}", ids[0])))
        .await;
    browser.find("#photo").await;
    browser.screenshot(&shot("04-application")).await;
    browser.click("#approve").await;
    browser
        .wait_for_text("#flash", "承認し、証明書を発行しました")
        .await;
    let inbox = browser.page_source().await;
    assert!(
        !inbox.contains(&ids[0]),
        "the approved application left the inbox"
    );
    assert!(inbox.contains(&ids[1]));

    // The officer proposes revoking the earlier certificate; they get no approve button.
    browser.open(&at(&server, "/console/revocations")).await;
    browser.type_into("#certificate_serial", &serial).await;
    browser
        .run_async(
            "document.getElementById('scope').value = 'second_only';
             document.getElementById('reason').value = 'keyCompromise';
             arguments[arguments.length - 1](true);",
            json!([]),
        )
        .await;
    browser.click("#propose-submit").await;
    browser.wait_for_text("#flash", "失効を提案しました").await;
    browser.find(".own-proposal").await;
    assert!(!browser.page_source().await.contains("approve-revocation"));
    // The officer makes a print batch of the waiting QRs: a job with its own page.
    browser.open(&at(&server, "/console/print")).await;
    browser.click("#create-batch button").await;
    browser.wait_for_page("job").await;
    browser
        .wait_for_text("#job", "印刷バッチを作りました")
        .await;
    browser.screenshot(&shot("07-job")).await;

    // A second person approves; the CRL page then lists the new CRL.
    keys.sign_in(&browser, &server, "takahashi", "dashboard")
        .await;
    browser.open(&at(&server, "/console/revocations")).await;
    browser.find(".approve-revocation").await;
    browser.screenshot(&shot("05-revocations")).await;
    browser.click(".approve-revocation").await;
    browser.wait_for_text("#flash", "失効を承認しました").await;
    keys.sign_in(&browser, &server, "yamada", "dashboard").await;
    browser.open(&at(&server, "/console/crls")).await;
    browser.click("#publish").await;
    browser.wait_for_text("#flash", "CRLを発行しました").await;
    browser
        .wait_for_text("table.crls[data-authority='jma'] .entries", "1")
        .await;
    browser.screenshot(&shot("06-crls")).await;

    // A copy of the officer's key taken at setup (a cloned authenticator) signs correctly, but
    // its signature counter is behind the one the console stored: refused.
    keys.unplug(&browser).await;
    let genuine = keys
        .by_name
        .insert("yamada".into(), yamada_at_setup)
        .unwrap();
    keys.sign_in(&browser, &server, "yamada", "passkey").await;
    browser
        .wait_for_text("#error", "パスキーを確認できませんでした")
        .await;
    keys.unplug(&browser).await;
    keys.by_name.insert("yamada".into(), genuine);

    // The mail house: only its print page and its batches; it uploads a confirmation.
    // A mail house lands on its print batches.
    keys.sign_in(&browser, &server, "yamato-op", "print").await;
    let manifest = browser
        .run_async(
            "var done = arguments[arguments.length - 1];
             var link = document.querySelector('#batches a[href$=\"/manifest\"]');
             fetch(link.href).then(function (r) { return r.text(); }).then(done);",
            json!([]),
        )
        .await;
    let manifest = manifest
        .as_str()
        .unwrap()
        .trim_start_matches('\u{feff}')
        .to_owned();
    let mut confirmation = String::from("連番,カードID,状態,追跡番号\n");
    for line in manifest.lines().skip(1) {
        let mut cells = line.split(',');
        let (sequence, card) = (cells.next().unwrap(), cells.next().unwrap());
        confirmation.push_str(&format!(
            "{sequence},{card},発送済,1234-5678-{sequence:0>4}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("confirmation.csv");
    std::fs::write(&file, confirmation.as_bytes()).unwrap();
    browser
        .send_keys("#batches input[type=file]", file.to_str().unwrap())
        .await;
    browser.click("#batches form.upload button").await;
    browser
        .wait_for_text("#flash", "報告ファイルを受け付けました")
        .await;
    browser
        .wait_for_text("#batches .confirmation", "発送")
        .await;
    browser.screenshot(&shot("08-print-mail-house")).await;
    let page = browser.page_source().await;
    assert!(
        !page.contains("href=\"/console/applications\""),
        "the mail house sees no other pages"
    );
    browser.open(&at(&server, "/console/applications")).await;
    browser.wait_for_text("#problem", "役割").await;

    // The auditor reads the timeline; no page offers a change, and a direct POST is refused.
    keys.sign_in(&browser, &server, "kansa", "dashboard").await;
    browser
        .open(&at(&server, "/console/subscribers?q=600003"))
        .await;
    browser.click("#results a").await;
    browser.wait_for_page("timeline").await;
    browser
        .wait_for_text("#timeline", "RevocationApproved")
        .await;
    browser.screenshot(&shot("10-timeline")).await;
    browser
        .open(&at(&server, &format!("/console/applications/{}", ids[1])))
        .await;
    browser.find("#fields").await;
    assert!(!browser.page_source().await.contains("id=\"approve\""));
    let csrf = browser.attribute("meta[name=csrf-token]", "content").await;
    let head = server.running.store.head().await.unwrap().position;
    for (path, body) in [
        (
            format!("/console/applications/{}/approve", ids[1]),
            format!("_csrf={csrf}"),
        ),
        (
            "/console/revocations/propose".to_owned(),
            format!(
                "_csrf={csrf}&certificate_serial={serial}&scope=second_only&reason=keyCompromise"
            ),
        ),
        ("/console/crls/publish".to_owned(), format!("_csrf={csrf}")),
        (
            "/console/staff".to_owned(),
            format!("_csrf={csrf}&name=intruder&display_name=x&roles=administrator"),
        ),
    ] {
        assert_eq!(post_from_page(&browser, &path, &body).await, 403, "{path}");
    }
    assert_eq!(
        post_from_page(
            &browser,
            &format!("/console/applications/{}/approve", ids[1]),
            "_csrf=forged"
        )
        .await,
        403
    );
    assert_eq!(
        server.running.store.head().await.unwrap().position,
        head,
        "nothing written"
    );
    browser.open(&at(&server, "/console/audit")).await;
    browser.click("#verify").await;
    browser.wait_for_page("job").await;
    browser.wait_for_text("#job", "改ざんはありません").await;
    browser.open(&at(&server, "/console/audit")).await;
    browser.screenshot(&shot("11-audit")).await;

    // English, as a toggle.
    browser
        .open(&at(&server, "/console/dashboard?lang=en"))
        .await;
    browser.wait_for_text("h1", "Dashboard").await;
    browser.screenshot(&shot("12-dashboard-en")).await;
}
