//! The staff console over HTTP, on both backends: the first administrator's setup link, sign-in
//! with password and passkey (a software authenticator), lockout, roles, CSRF, dual control,
//! escaping of what subscribers supplied, search, and secrets kept out of the log's export.
//! The same flows in headless Chromium: tests/console_browser.rs.

mod common;

use common::server::*;
use common::staff::{Desk, PASSWORD, account};
use common::*;
use serde_json::json;

/// The processors only run when asked, so the log moves only by what a test does.
fn quiet(c: &mut hpki_backoffice::config::Config) {
    c.mail.background = false;
    c.crl.background = false;
    c.print.background = false;
}

async fn staff_events(server: &Server, name: &str) -> Vec<String> {
    server
        .running
        .store
        .read_stream(&format!("staff-{name}"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.type_name().to_owned())
        .collect()
}

#[tokio::test]
async fn the_first_administrator_sets_up_through_the_link_and_signs_in_with_both_factors() {
    for db in both().await {
        let server = Server::start(&db, 100).await;
        let link = server
            .running
            .setup_link
            .clone()
            .expect("the first start makes a setup link");
        assert!(
            link.starts_with("http://localhost:8080/console/setup/"),
            "{link}"
        );
        let path = link.trim_start_matches("http://localhost:8080");

        let mut desk = Desk::new(&server);
        // A short password, then two that differ, are refused; nothing is set.
        desk.get(path).await;
        let form = desk.get("/console/setup").await;
        let short = desk
            .post(
                "/console/setup",
                &[
                    ("_csrf", &form.csrf()),
                    ("password", "short"),
                    ("password_again", "short"),
                ],
            )
            .await;
        assert_eq!(short.status, 422, "{}", db.backend);
        assert!(short.body.contains("12"), "{}", short.body);
        let differ = desk
            .post(
                "/console/setup",
                &[
                    ("_csrf", &form.csrf()),
                    ("password", PASSWORD),
                    ("password_again", "another long one"),
                ],
            )
            .await;
        assert_eq!(differ.status, 422);
        assert!(
            !staff_events(&server, "admin")
                .await
                .contains(&"StaffPasswordSet".to_owned())
        );

        desk.set_up(path, PASSWORD).await;
        // The link works once.
        let again = desk.get(path).await;
        assert_eq!(again.status, 404, "{}", again.body);
        assert!(again.body.contains("setup_link_unknown"));

        // Wrong password: refused without saying whether the name exists.
        let wrong = desk.password("admin", "not the password at all").await;
        assert_eq!(wrong.status, 401);
        let unknown = desk.password("nobody", "not the password at all").await;
        assert_eq!(unknown.status, 401);
        assert_eq!(
            wrong
                .body
                .matches("アカウント名またはパスワードが違います")
                .count(),
            unknown
                .body
                .matches("アカウント名またはパスワードが違います")
                .count()
        );

        // The password alone does not open the console.
        let half = desk.password("admin", PASSWORD).await;
        assert_eq!(half.location, "/console/sign-in/passkey");
        let dashboard = desk.get("/console/dashboard").await;
        assert_eq!(dashboard.location, "/console/sign-in");
        let (status, done) = desk.passkey().await;
        assert_eq!(status, 200, "{done}");
        let dashboard = desk.get("/console/dashboard").await;
        assert_eq!(dashboard.status, 200, "{}", dashboard.body);
        assert!(dashboard.body.contains("管理者 Administrator (admin)"));
        assert!(dashboard.body.contains("lang=\"ja\""));

        assert_eq!(
            staff_events(&server, "admin").await,
            [
                "StaffAccountCreated",
                "StaffSetupLinkIssued",
                "StaffPasswordSet",
                "StaffPasskeyRegistered",
                "StaffSignInFailed",
                "StaffSignedIn"
            ]
        );
        // Every console change carries its actor.
        let events = server
            .running
            .store
            .read_stream("staff-admin")
            .await
            .unwrap();
        assert_eq!(events[0].metadata.actor.as_str(), "system:first-start");
        assert_eq!(events[5].metadata.actor.as_str(), "staff:admin");

        // Signing out ends the session; its cookie opens nothing.
        let csrf = dashboard.csrf();
        let out = desk.post("/console/sign-out", &[("_csrf", &csrf)]).await;
        assert_eq!(out.location, "/console/sign-in");
        assert_eq!(
            desk.get("/console/dashboard").await.location,
            "/console/sign-in"
        );

        // The stored passkey follows the authenticator's signature counter (the software key
        // counts each signature), so a cloned key's older counter would be refused.
        let counter = || async {
            let stored = server
                .running
                .store
                .staff_credentials("admin", "passkey")
                .await
                .unwrap();
            let passkey: serde_json::Value = serde_json::from_str(&stored[0].1).unwrap();
            passkey["cred"]["counter"].as_u64().unwrap()
        };
        let after_first = counter().await;
        assert!(after_first >= 1, "{after_first}");
        desk.sign_in("admin", PASSWORD).await;
        assert_eq!(counter().await, after_first + 1);

        // No password hash, passkey or link token in the log's export.
        let mut export = Vec::new();
        hpki_backoffice::export::export(&server.running.store, &mut export, &|_| {})
            .await
            .unwrap();
        let export = String::from_utf8(export).unwrap();
        assert!(export.contains("StaffPasswordSet"));
        assert!(!export.contains("$argon2id$"));
        assert!(!export.contains(path.trim_start_matches("/console/setup/")));
        assert!(!export.contains("\"cred\""), "no stored passkey in the log");
    }
}

#[tokio::test]
async fn repeated_failures_lock_the_account_until_the_time_passes_or_an_administrator_unlocks() {
    for db in both().await {
        let server = Server::start(&db, 100).await;
        let mut admin = Desk::new(&server);
        let link = server.running.setup_link.clone().unwrap();
        admin
            .set_up(link.trim_start_matches("http://localhost:8080"), PASSWORD)
            .await;
        admin.sign_in("admin", PASSWORD).await;

        let mut officer = Desk::new(&server);
        let link = account(&server, "yamada", &["officer"], None).await;
        officer
            .set_up(link.trim_start_matches("http://localhost:8080"), PASSWORD)
            .await;

        for _ in 0..4 {
            assert_eq!(
                officer.password("yamada", "a wrong password!").await.status,
                401
            );
        }
        let fifth = officer.password("yamada", "a wrong password!").await;
        assert_eq!(fifth.status, 423, "{}: {}", db.backend, fifth.body);
        assert!(fifth.body.contains("JST"), "{}", fifth.body);
        // Locked: the right password is refused too.
        assert_eq!(officer.password("yamada", PASSWORD).await.status, 423);
        let events = staff_events(&server, "yamada").await;
        assert_eq!(
            events.iter().filter(|e| *e == "StaffSignInFailed").count(),
            5
        );
        assert!(events.contains(&"StaffLockedOut".to_owned()));

        // An administrator unlocks it.
        let unlocked = admin
            .submit("/console/staff", "/console/staff/yamada/unlock", &[])
            .await;
        assert_eq!(unlocked.location, "/console/staff", "{}", unlocked.body);
        officer.sign_in("yamada", PASSWORD).await;

        // Locked again, it opens by itself after console.lockout_minutes.
        let mut again = Desk::new(&server);
        again.key = officer.key;
        for _ in 0..5 {
            again.password("yamada", "a wrong password!").await;
        }
        assert_eq!(again.password("yamada", PASSWORD).await.status, 423);
        server.clock.advance(time::Duration::minutes(16));
        again.sign_in("yamada", PASSWORD).await;
        // The administrator sat idle past console.idle_minutes (15): signed out.
        let idle = admin.get("/console/dashboard").await;
        assert_eq!(
            idle.location, "/console/sign-in?expired=1",
            "{}",
            db.backend
        );
        let notice = admin.get(&idle.location).await;
        assert!(notice.body.contains("一定時間操作がなかったため"));
        let idle_post = admin
            .post("/console/staff/yamada/unlock", &[("_csrf", "x")])
            .await;
        assert_eq!(idle_post.status, 401);
    }
}

/// Sets up the admin (through the first-start link) and the given accounts; returns their
/// desks, signed in, in order.
async fn staffed(server: &Server, accounts: &[(&str, &[&str], Option<&str>)]) -> Vec<Desk> {
    let mut admin = Desk::new(server);
    let link = server.running.setup_link.clone().unwrap();
    admin
        .set_up(link.trim_start_matches("http://localhost:8080"), PASSWORD)
        .await;
    admin.sign_in("admin", PASSWORD).await;
    let mut desks = vec![admin];
    for (name, roles, house) in accounts {
        let link = account(server, name, roles, *house).await;
        let mut desk = Desk::new(server);
        desk.set_up(link.trim_start_matches("http://localhost:8080"), PASSWORD)
            .await;
        desk.sign_in(name, PASSWORD).await;
        desks.push(desk);
    }
    desks
}

#[tokio::test]
async fn roles_tokens_and_sessions_decide_every_change_and_refusals_change_nothing() {
    for db in both().await {
        // No processor appends on its own while refusals are counted.
        let server = Server::start_with(&db, quiet).await;
        let desks = staffed(
            &server,
            &[
                ("yamada", &["officer"], None),
                ("kansa", &["auditor"], None),
            ],
        )
        .await;
        let (admin, officer, auditor) = (&desks[0], &desks[1], &desks[2]);

        // An application with its documents checked, waiting for a decision.
        let id = server.checked(&form("jma", "777001")).await;
        let detail = format!("/console/applications/{id}");
        let before = server.running.store.head().await.unwrap().position;

        // The auditor reads the application but has no buttons, and a direct POST is refused.
        let page = auditor.get(&detail).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(!page.body.contains("id=\"approve\""));
        let token = page.csrf(); // the sign-out form's
        let refused = auditor
            .post(&format!("{detail}/approve"), &[("_csrf", &token)])
            .await;
        assert_eq!(refused.status, 403, "{}: {}", db.backend, refused.body);
        assert!(refused.body.contains("role_required"));

        // The officer with a forged token, with none, and from another site: refused.
        let forged = officer
            .post(&format!("{detail}/approve"), &[("_csrf", &"0".repeat(64))])
            .await;
        assert_eq!(forged.status, 403);
        assert!(
            forged.body.contains("data-code=\"csrf\""),
            "{}",
            forged.body
        );
        let none = officer.post(&format!("{detail}/approve"), &[]).await;
        assert_eq!(none.status, 403);
        let csrf = officer.get(&detail).await.csrf();
        let cross = officer
            .client
            .post(format!("{}{detail}/approve", officer.origin))
            .header("origin", "https://evil.example")
            .form(&[("_csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(cross.status(), 403);
        // Another member's token does not work in this session.
        let admins_token = admin.get("/console/dashboard").await.csrf();
        assert_eq!(
            officer
                .post(&format!("{detail}/approve"), &[("_csrf", &admins_token)])
                .await
                .status,
            403
        );
        // The officer may not administer accounts.
        let staff_post = officer
            .post(
                "/console/staff",
                &[
                    ("_csrf", &csrf),
                    ("name", "intruder"),
                    ("display_name", "x"),
                    ("roles", "administrator"),
                ],
            )
            .await;
        assert_eq!(staff_post.status, 403);
        // Without a session: 401, not a redirect, for a POST.
        let anonymous = Desk::new(&server);
        assert_eq!(
            anonymous
                .post(&format!("{detail}/approve"), &[("_csrf", &csrf)])
                .await
                .status,
            401
        );
        assert_eq!(
            server.running.store.head().await.unwrap().position,
            before,
            "nothing written"
        );
        assert!(
            server
                .running
                .store
                .read_stream("staff-intruder")
                .await
                .unwrap()
                .is_empty()
        );

        // The officer approves; the application leaves the inbox's "to decide" list.
        let approved = officer
            .post(&format!("{detail}/approve"), &[("_csrf", &csrf)])
            .await;
        assert_eq!(approved.status, 303, "{}", approved.body);
        let inbox = officer
            .get("/console/applications?list=documents_checked")
            .await;
        assert!(
            inbox.body.contains("承認し、証明書を発行しました"),
            "the flash message"
        );
        assert!(!inbox.body.contains(&id));
        let events = server
            .running
            .store
            .read_stream("subscriber-jma-777001")
            .await
            .unwrap();
        let approval = events
            .iter()
            .find(|e| e.event.type_name() == "ApplicationApproved")
            .unwrap();
        assert_eq!(approval.metadata.actor.as_str(), "staff:yamada");

        // The administrator takes the officer role away: it counts at once.
        let changed = admin
            .submit(
                "/console/staff",
                "/console/staff/yamada/roles",
                &[("roles", "auditor")],
            )
            .await;
        assert_eq!(changed.status, 303, "{}", changed.body);
        let csrf = officer.get("/console/mail").await.csrf();
        assert_eq!(
            officer
                .post("/console/crls/publish", &[("_csrf", &csrf)])
                .await
                .status,
            403
        );

        // API tokens belong to accounts: one issued on the staff page acts with its roles.
        let shown = admin
            .submit("/console/staff", "/console/staff/kansa/token", &[])
            .await;
        assert_eq!(shown.status, 200);
        let at = shown.body.find("id=\"secret\">").unwrap() + "id=\"secret\">".len();
        let token = &shown.body[at..at + 64];
        let read = server
            .client
            .get(format!("{}/work-lists", server.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        let write = server
            .client
            .post(format!("{}/jobs/crl", server.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            write.status(),
            403,
            "an auditor's token reads, never writes"
        );
        // Disabled, the account's token and sessions stop.
        let disabled = admin
            .submit(
                "/console/staff",
                "/console/staff/kansa/disable",
                &[("reason", "left")],
            )
            .await;
        assert_eq!(disabled.status, 303);
        let read = server
            .client
            .get(format!("{}/work-lists", server.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 401);
        assert_eq!(
            auditor.get("/console/dashboard").await.location,
            "/console/sign-in"
        );
    }
}

#[tokio::test]
async fn the_proposer_cannot_approve_and_a_second_person_revokes_then_the_crl_page_lists_it() {
    for db in both().await {
        let server = Server::start_with(&db, |c| c.crl.background = false).await;
        let desks = staffed(
            &server,
            &[
                ("yamada", &["officer", "approver"], None),
                ("takahashi", &["approver"], None),
            ],
        )
        .await;
        let (proposer, approver) = (&desks[1], &desks[2]);
        let approval = server.issue("jma", "515151").await;
        let serial = approval["second_certificate_serial"]
            .as_str()
            .unwrap_or_else(|| panic!("{approval}"))
            .to_owned();

        let proposed = proposer
            .submit(
                "/console/revocations",
                "/console/revocations/propose",
                &[
                    ("certificate_serial", &serial),
                    ("scope", "second_only"),
                    ("reason", "keyCompromise"),
                    ("case_id", ""),
                ],
            )
            .await;
        assert_eq!(proposed.status, 303, "{}: {}", db.backend, proposed.body);
        let page = proposer.get("/console/revocations").await;
        assert!(
            page.body.contains("own-proposal"),
            "the proposer sees a note, not the button"
        );
        assert!(!page.body.contains("approve-revocation"));
        let id_at = page.body.find("<tr data-id=\"").unwrap() + "<tr data-id=\"".len();
        let proposal = page.body[id_at..id_at + 36].to_owned();
        // Holding the approver role does not let the proposer decide: the POST is refused.
        let own = proposer
            .post(
                &format!("/console/revocations/{proposal}/approve"),
                &[("_csrf", &page.csrf())],
            )
            .await;
        assert_eq!(own.status, 403, "{}", own.body);

        let page = approver.get("/console/revocations").await;
        assert!(page.body.contains("approve-revocation"));
        let decided = approver
            .post(
                &format!("/console/revocations/{proposal}/approve"),
                &[("_csrf", &page.csrf())],
            )
            .await;
        assert_eq!(decided.status, 303, "{}", decided.body);

        let published = proposer
            .submit("/console/crls", "/console/crls/publish", &[])
            .await;
        assert_eq!(published.status, 303, "{}", published.body);
        let crls = approver.get("/console/crls").await;
        assert!(
            crls.body.contains("class=\"num entries\">1<"),
            "{}",
            crls.body
        );
        let number_at = crls.body.find("href=\"/console/crls/jma/").unwrap();
        let href = &crls.body[number_at + 6..];
        let href = &href[..href.find('"').unwrap()];
        let der = approver
            .client
            .get(format!("{}{href}", approver.origin))
            .send()
            .await
            .unwrap();
        assert_eq!(der.status(), 200);
        // A number that is not one, and a form past the console's limit: the console's own
        // pages in Japanese, not actix's plain text.
        let page = approver.get("/console/crls/jma/abc").await;
        assert_eq!(page.status, 404, "{}", page.body);
        assert!(page.body.contains("<html lang=\"ja\">"), "{}", page.body);
        let long = "x".repeat(70 * 1024);
        let page = approver
            .post("/console/crls/publish", &[("_csrf", &long)])
            .await;
        assert_eq!(page.status, 413, "{}", page.body);
        assert!(page.body.contains("大きすぎます"), "{}", page.body);
        let bytes = der.bytes().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("crl.der"), &bytes).unwrap();
        let text = std::process::Command::new("openssl")
            .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
            .arg(dir.path().join("crl.der"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        let plain = serial
            .to_ascii_uppercase()
            .trim_start_matches('0')
            .to_owned();
        assert!(
            text.to_ascii_uppercase().contains(&plain),
            "{serial}: {text}"
        );
    }
}

#[tokio::test]
async fn what_subscribers_supplied_is_escaped_and_search_finds_them_by_every_field() {
    for db in both().await {
        let server = Server::start(&db, 100).await;
        let desks = staffed(&server, &[("yamada", &["officer"], None)]).await;
        let officer = &desks[1];
        let mut hostile = form("jma", "424242");
        hostile["address"] = json!("東京都<script>alert('x')</script><img src=x onerror=alert(1)>");
        let submitted = ok(server
            .post("/applications")
            .json(&hostile)
            .send()
            .await
            .unwrap())
        .await;
        let id = submitted["application_id"].as_str().unwrap();

        let page = officer.get(&format!("/console/applications/{id}")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(!page.body.contains("<script>alert"), "{}", page.body);
        assert!(!page.body.contains("<img src=x"));
        assert!(page.body.contains("&lt;script&gt;alert("), "{}", db.backend);
        assert!(page.body.contains("content=\"same-origin\""));

        for query in ["山田花子", "ヤマダ", "yamada hanako", "424242"] {
            let found = officer
                .get(&format!("/console/subscribers?q={}", urlencode(query)))
                .await;
            assert!(found.body.contains(id), "{query}: {}", db.backend);
        }
        let other = officer.get("/console/subscribers?q=suzuki").await;
        assert!(!other.body.contains(id));
        let subscriber_id = submitted["subscriber_id"].as_str().map(str::to_owned);
        if let Some(sid) = subscriber_id {
            let found = officer.get(&format!("/console/subscribers?q={sid}")).await;
            assert!(found.body.contains(id));
        }
        let none = officer.get("/console/subscribers?q=%25").await;
        assert!(!none.body.contains(id), "% is matched as itself");
        let timeline = officer
            .get(&format!("/console/subscribers/subscriber-jma-424242"))
            .await;
        assert_eq!(timeline.status, 200);
        assert!(
            timeline.body.contains("ApplicationReceived"),
            "{}",
            timeline.body
        );
        assert!(timeline.body.contains("JST"));
        assert!(!timeline.body.contains("<script>alert"));
    }
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn every_page_answers_each_role_as_its_roles_allow() {
    for db in both().await {
        let server = Server::start_with(&db, |c| {
            c.mail_houses.insert(
                "yamato".into(),
                hpki_backoffice::config::MailHouse {
                    token_sha256: "0".repeat(64),
                    authorities: vec!["jma".into()],
                    imposition: hpki_events::vocabulary::Imposition::TenUp,
                    encoding: hpki_backoffice::config::FileEncoding::Utf8Bom,
                },
            );
        })
        .await;
        // Something on every list: an issued certificate, a loss report, a proposal.
        let approval = server.issue("jma", "909090").await;
        let serial = approval["second_certificate_serial"].as_str().unwrap();
        ok(server
            .post("/loss-reports")
            .json(&json!({"certificate_serial": serial, "kind": "device", "note": "電車で紛失"}))
            .send()
            .await
            .unwrap())
        .await;
        ok(server.post("/revocation-proposals").json(&json!({"certificate_serial": serial, "scope": "second_only", "reason": "keyCompromise"})).send().await.unwrap()).await;
        let desks = staffed(
            &server,
            &[
                ("yamada", &["officer"], None),
                ("takahashi", &["approver"], None),
                ("kansa", &["auditor"], None),
                ("yamato-op", &["mail_house"], Some("yamato")),
            ],
        )
        .await;
        let work = [
            "/console/dashboard",
            "/console/applications",
            "/console/applications?list=issued",
            &format!(
                "/console/applications/{}",
                approval["application_id"].as_str().unwrap()
            ),
            "/console/stock",
            "/console/qrs",
            "/console/qrs?list=qr:open",
            "/console/revocations",
            "/console/mail",
            "/console/mail?list=mail:sent",
            "/console/crls",
            "/console/subscribers",
            "/console/subscribers?q=%E5%B1%B1%E7%94%B0",
            "/console/subscribers/subscriber-jma-909090",
        ]
        .map(str::to_owned);
        let oversight = ["/console/audit", "/console/staff", "/console/settings"];
        for (desk, name) in desks
            .iter()
            .zip(["admin", "yamada", "takahashi", "kansa", "yamato-op"])
        {
            for path in &work {
                let page = desk.get(path).await;
                let expected = match name {
                    "yamato-op" if path == "/console/dashboard" => 303,
                    "yamato-op" => 403,
                    _ => 200,
                };
                assert_eq!(
                    page.status.as_u16(),
                    expected,
                    "{} {name} {path}: {}",
                    db.backend,
                    page.body
                );
                if expected == 200 {
                    assert!(page.body.contains("<main id=\"page\""), "{name} {path}");
                    assert!(
                        page.body.contains("JST") || !page.body.contains("UTC"),
                        "{name} {path}"
                    );
                }
            }
            for path in oversight {
                let expected = if ["admin", "kansa"].contains(&name) {
                    200
                } else {
                    403
                };
                assert_eq!(
                    desk.get(path).await.status.as_u16(),
                    expected,
                    "{name} {path}"
                );
            }
            assert_eq!(
                desk.get("/console/print").await.status.as_u16(),
                200,
                "{name}"
            );
            assert_eq!(desk.get("/console/no-such-page").await.status.as_u16(), 404);
            assert_eq!(
                desk.get(&format!("/console/jobs/{}", uuid::Uuid::nil()))
                    .await
                    .status
                    .as_u16(),
                404
            );
        }
        // The officer closes the loss case from its row; it leaves the open cases.
        let page = desks[1].get("/console/revocations").await;
        let cases = &page.body[page.body.find("id=\"cases\"").unwrap()..];
        let at = cases.find("<tr data-id=\"").unwrap() + "<tr data-id=\"".len();
        let case = cases[at..at + 36].to_owned();
        let closed = desks[1]
            .post(
                &format!("/console/loss-cases/{case}/close"),
                &[("_csrf", &page.csrf()), ("note", "失効の提案へ")],
            )
            .await;
        assert_eq!(closed.status, 303, "{}", closed.body);
        let after = desks[1].get("/console/revocations").await.body;
        let open_cases = &after[after.find("id=\"cases\"").unwrap()
            ..after.find("id=\"decided\"").unwrap_or(after.len())];
        assert!(!open_cases.contains(&case));
        // An action the page does not offer is no action.
        let unknown = desks[1]
            .post(
                &format!("/console/loss-cases/{case}/reopen"),
                &[("_csrf", &page.csrf())],
            )
            .await;
        assert_eq!(unknown.status, 404);

        // English, as a toggle.
        let english = desks[1].get("/console/revocations?lang=en").await;
        assert!(english.body.contains("lang=\"en\""));
        assert!(english.body.contains("Revocations to approve"));
        assert!(
            desks[1]
                .get("/console/revocations")
                .await
                .body
                .contains("Revocations to approve"),
            "remembered"
        );
    }
}

/// Polls a job's page until it is done (each request lets the job run on; bounded).
async fn finished(desk: &Desk, job: &str) -> common::staff::Page {
    for _ in 0..2_000 {
        let page = desk.get(job).await;
        if !page.body.contains("data-state=\"running\"") {
            return page;
        }
        tokio::task::yield_now().await;
    }
    panic!("{job} never finished");
}

#[tokio::test]
async fn long_operations_run_in_the_background_with_a_progress_page() {
    for db in both().await {
        let server = Server::start_with(&db, quiet).await;
        let desks = staffed(
            &server,
            &[
                ("yamada", &["officer"], None),
                ("kansa", &["auditor"], None),
            ],
        )
        .await;
        let (officer, auditor) = (&desks[1], &desks[2]);

        // An association's CSV, uploaded: imported in the background.
        let csv = "\u{feff}認証局,氏名,氏名（カナ）,氏名（ローマ字）,生年月日,職種,登録番号,メールアドレス,郵便番号,住所,送付先,送付先団体名\r\n\
                   jma,佐藤 一郎,サトウ イチロウ,SATO ICHIRO,1975/05/05,医師,880001,sato@example.jp,100-0001,東京都千代田区1-1,自宅,\r\n";
        let csrf = officer.get("/console/applications").await.csrf();
        let boundary = "hpki-test-boundary";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n{csrf}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\nContent-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n"
        );
        let upload = |body: String| {
            officer
                .client
                .post(format!("{}/console/applications/import", officer.origin))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body)
                .send()
        };
        let started = upload(body).await.unwrap();
        assert_eq!(started.status(), 303, "{}", db.backend);
        // An upload's field past its limit keeps the upload's own page and limit.
        let long = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n{}\r\n--{boundary}--\r\n",
            "x".repeat(5000)
        );
        let refused = upload(long).await.unwrap();
        assert_eq!(refused.status(), 413);
        let page = refused.text().await.unwrap();
        assert!(page.contains("上限4096バイト"), "{page}");
        let job = started.headers()["location"].to_str().unwrap().to_owned();
        assert!(job.starts_with("/console/jobs/"));
        let done = finished(officer, &job).await;
        assert!(done.body.contains("data-state=\"done\""), "{}", done.body);
        assert!(done.body.contains("1 件を取り込みました"), "{}", done.body);
        // A job is its starter's only.
        assert_eq!(auditor.get(&job).await.status, 404);

        // The auditor exports the log and replays it as of now.
        let exported = auditor
            .submit("/console/audit", "/console/audit/export", &[])
            .await;
        let job = exported.location;
        let done = finished(auditor, &job).await;
        assert!(
            done.body.contains("件の出来事を書き出しました"),
            "{}",
            done.body
        );
        let file = auditor.get(&format!("{job}/download")).await;
        assert_eq!(file.status, 200);
        let lines: Vec<serde_json::Value> = file
            .body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Every event, then the end line with the count and the head hash.
        let head = server.running.store.head().await.unwrap();
        assert_eq!(lines.len() as i64, head.position + 1);
        assert_eq!(lines.last().unwrap()["end"]["events"], head.position);
        assert!(!file.body.contains("$argon2id$"));

        let now = "2026-11-22T09:30";
        let replayed = auditor
            .submit("/console/audit", "/console/audit/as-of", &[("as_of", now)])
            .await;
        let done = finished(auditor, &replayed.location).await;
        assert!(
            done.body.contains("2026-11-22 09:30:00 JST"),
            "{}",
            done.body
        );
        assert!(done.body.contains("as-of-counts"));
        let bad = auditor
            .submit(
                "/console/audit",
                "/console/audit/as-of",
                &[("as_of", "yesterday")],
            )
            .await;
        assert_eq!(bad.status, 422);
        assert!(bad.body.contains("as_of"));

        let verified = auditor
            .submit("/console/audit", "/console/audit/verify", &[])
            .await;
        let done = finished(auditor, &verified.location).await;
        assert!(done.body.contains("改ざんはありません"), "{}", done.body);
    }
}

#[tokio::test]
async fn an_unfinished_first_start_gives_a_new_link_at_the_next_start_and_a_finished_one_none() {
    for db in both().await {
        let server = Server::start(&db, 100).await;
        let first = server.running.setup_link.clone().unwrap();
        let restart = || hpki_backoffice::serve::start(&server.config, server.clock.clone());
        let again = restart().await.unwrap();
        let second = again.setup_link.clone().expect("still no administrator");
        assert_ne!(first, second);
        let mut desk = Desk::new(&server);
        let dead = desk
            .get(first.trim_start_matches("http://localhost:8080"))
            .await;
        assert_eq!(
            dead.status, 404,
            "{}: the earlier link stops working",
            db.backend
        );
        desk.set_up(second.trim_start_matches("http://localhost:8080"), PASSWORD)
            .await;
        let third = restart().await.unwrap();
        assert_eq!(third.setup_link, None);
        again.server.stop(false).await;
        third.server.stop(false).await;
    }
}

/// The settings form as the page fills it, with `changes` over it.
fn settings_form<'a>(
    page: &'a common::staff::Page,
    authority: &str,
    changes: &[(&'a str, &'a str)],
) -> Vec<(&'a str, String)> {
    let at = page
        .body
        .find(&format!("action=\"/console/settings/{authority}\""))
        .expect("the authority's form");
    let end = at + page.body[at..].find("</form>").unwrap();
    let form = &page.body[at..end];
    let mut fields = Vec::new();
    for input in form.split("<input").skip(1) {
        let attribute = |name: &str| {
            let needle = format!("{name}=\"");
            input.find(&needle).map(|i| {
                let rest = &input[i + needle.len()..];
                rest[..rest.find('"').unwrap()].to_owned()
            })
        };
        let name = attribute("name").unwrap();
        let name: &'a str = [
            "_csrf",
            "version",
            "name_ja",
            "name_en",
            "contact_ja",
            "contact_en",
            "password_hint_ja",
            "password_hint_en",
            "reissue_channels",
            "validity_years",
            "reason",
        ]
        .into_iter()
        .find(|n| *n == name)
        .unwrap_or_else(|| panic!("unexpected field {name}"));
        if name == "reissue_channels" && !input.contains("checked") {
            continue;
        }
        if changes.iter().any(|(n, _)| *n == name) {
            continue;
        }
        fields.push((name, attribute("value").unwrap_or_default()));
    }
    fields.extend(changes.iter().map(|(n, v)| (*n, (*v).to_owned())));
    fields
}

async fn post_settings(
    desk: &Desk,
    authority: &str,
    form: &[(&str, String)],
) -> common::staff::Page {
    let form: Vec<(&str, &str)> = form.iter().map(|(n, v)| (*n, v.as_str())).collect();
    desk.post(&format!("/console/settings/{authority}"), &form)
        .await
}

#[tokio::test]
async fn an_administrator_changes_authority_settings_through_the_log_and_the_office_uses_them() {
    for db in both().await {
        let server = Server::start_with(&db, quiet).await;
        let desks = staffed(
            &server,
            &[
                ("yamada", &["officer"], None),
                ("kansa", &["auditor"], None),
            ],
        )
        .await;
        let (admin, officer, auditor) = (&desks[0], &desks[1], &desks[2]);
        let store = &server.running.store;
        let settings_events = || async {
            store
                .read_stream("authority-jpa")
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.metadata.actor.as_str().to_owned(), e.event))
                .collect::<Vec<_>>()
        };

        // As the file sets them, with the version the form was made from.
        let page = admin.get("/console/settings").await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("設定ファイルの値"), "{}", page.body);
        let new_contact = "日本薬剤師会 認証局窓口 03-0000-1111";
        let good = settings_form(
            &page,
            "jpa",
            &[
                ("contact_ja", new_contact),
                ("validity_years", "2"),
                ("reason", "窓口の電話番号と有効期間の見直し"),
            ],
        );
        let mut good = good;
        good.push(("reissue_channels", "web_form".into()));
        assert!(good.contains(&("version", "0".into())), "{good:?}");

        // Bad fields: each named, nothing written.
        let before = store.head().await.unwrap().position;
        let bad: &[(&str, &str, &str)] = &[
            ("validity_years", "9", "有効期間"),
            ("validity_years", "二年", "有効期間"),
            ("reason", "", "変更の理由"),
            ("name_ja", "  ", "名称（日本語）"),
            ("contact_en", "a\r\nb", "問い合わせ先（英語）"),
        ];
        for (field, value, named) in bad {
            let mut form = good.clone();
            form.retain(|(n, _)| n != field);
            form.push((field, (*value).to_owned()));
            let refused = post_settings(admin, "jpa", &form).await;
            assert_eq!(refused.status, 422, "{field}={value:?}: {}", refused.body);
            assert!(refused.body.contains(named), "{field}: {}", refused.body);
        }
        let mut no_channel = good.clone();
        no_channel.retain(|(n, _)| *n != "reissue_channels");
        let refused = post_settings(admin, "jpa", &no_channel).await;
        assert_eq!(refused.status, 422);
        assert!(
            refused.body.contains("再発行の受付方法"),
            "{}",
            refused.body
        );
        let mut unknown = good.clone();
        unknown.push(("reissue_channels", "fax".into()));
        assert_eq!(post_settings(admin, "jpa", &unknown).await.status, 422);
        assert_eq!(post_settings(admin, "nosuch", &good).await.status, 404);

        // Other roles are refused, whatever they post; the auditor's page has no form.
        let with_token = |desk_csrf: String| {
            let mut form = good.clone();
            form.retain(|(n, _)| *n != "_csrf");
            form.push(("_csrf", desk_csrf));
            form
        };
        let officer_form = with_token(officer.get("/console/dashboard").await.csrf());
        assert_eq!(
            post_settings(officer, "jpa", &officer_form).await.status,
            403
        );
        let auditor_page = auditor.get("/console/settings").await;
        assert_eq!(auditor_page.status, 200);
        assert!(!auditor_page.body.contains("action=\"/console/settings/"));
        let auditor_form = with_token(auditor_page.csrf());
        assert_eq!(
            post_settings(auditor, "jpa", &auditor_form).await.status,
            403
        );
        let forged = with_token("0".repeat(64));
        assert_eq!(post_settings(admin, "jpa", &forged).await.status, 403);
        assert_eq!(
            store.head().await.unwrap().position,
            before,
            "{}",
            db.backend
        );
        assert!(settings_events().await.is_empty());

        // The change: one event naming only what changed, by the administrator.
        let done = post_settings(admin, "jpa", &good).await;
        assert_eq!(done.status, 303, "{}", done.body);
        let events = settings_events().await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, "staff:admin");
        let hpki_events::Event::AuthoritySettingsChanged(change) = &events[0].1 else {
            panic!("{events:?}");
        };
        assert_eq!(
            hpki_backoffice::settings::fields_of(change),
            ["contact_ja", "reissue_channels", "validity_years"]
        );
        assert_eq!(change.contact_ja.as_deref(), Some(new_contact));
        assert_eq!(change.reason, "窓口の電話番号と有効期間の見直し");
        let page = admin.get("/console/settings").await;
        assert!(page.body.contains("設定を変更しました"), "{}", page.body);
        assert!(page.body.contains(new_contact));
        assert!(page.body.contains("name=\"version\" value=\"1\""));

        // A form made before the change is refused; the same values again record nothing.
        let stale = post_settings(admin, "jpa", &with_token(page.csrf())).await;
        assert_eq!(stale.status, 409, "{}", stale.body);
        assert!(stale.body.contains("settings_changed"), "{}", stale.body);
        let again = settings_form(&page, "jpa", &[("reason", "確認")]);
        assert_eq!(post_settings(admin, "jpa", &again).await.status, 303);
        assert!(
            admin
                .get("/console/settings")
                .await
                .body
                .contains("変更された項目がない")
        );
        assert_eq!(settings_events().await.len(), 1);

        // The office uses them: the API's authority, and a certificate issued now runs two
        // years (JMA's, unchanged, five).
        let authorities = ok(server.get("/authorities").send().await.unwrap()).await;
        let jpa = authorities
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == "jpa")
            .unwrap_or_else(|| panic!("{authorities}"));
        assert_eq!(
            jpa["reissue_channels"],
            json!(["email", "web_form"]),
            "{jpa}"
        );
        for (authority, registry, year) in [("jpa", "333333", "2028"), ("jma", "333334", "2031")] {
            let approval = server.issue(authority, registry).await;
            let serial = approval["second_certificate_serial"].as_str().unwrap();
            let file = server.dir.path().join("settings.pem");
            std::fs::write(&file, server.certificate_pem(serial).await).unwrap();
            let out = std::process::Command::new("openssl")
                .args(["x509", "-noout", "-enddate", "-in"])
                .arg(&file)
                .output()
                .unwrap();
            let end = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(end.contains(&format!(" {year} GMT")), "{authority}: {end}");
        }

        // A restart reads them back from the log, with who changed them.
        server.running.server.stop(false).await;
        let again = hpki_backoffice::serve::start(&server.config, server.clock.clone())
            .await
            .unwrap();
        let office = hpki_backoffice::serve::office(
            &server.config,
            again.store.clone(),
            server.clock.clone(),
        )
        .await
        .unwrap();
        let jpa = office.authorities()["jpa"].clone();
        assert_eq!(jpa.contact_ja, new_contact);
        assert_eq!(jpa.validity_years, 2);
        assert_eq!(
            office.settings().overridden("jpa")["contact_ja"].actor,
            "staff:admin"
        );
        assert_eq!(office.authorities()["jma"].validity_years, 5);
        again.server.stop(false).await;
    }
}

/// The log first, then the credentials: a password or a setup link the log refuses to record
/// (another change to the account came first) changes no credential.
#[tokio::test]
async fn a_credential_change_the_log_refuses_changes_nothing() {
    for db in both().await {
        let folder = tempfile::tempdir().unwrap();
        let store = open(&db, clock()).await;
        let directory = hpki_backoffice::staff::Directory::new(
            store.clone(),
            clock(),
            &config(&db, folder.path()),
        )
        .unwrap();
        let admin = hpki_events::Actor::parse("staff:root").unwrap();
        let link = directory
            .create(
                "tanaka",
                "田中",
                &[hpki_backoffice::config::Role::Officer],
                None,
                &admin,
            )
            .await
            .unwrap();
        let token = link.url.rsplit('/').next().unwrap().to_owned();
        let (stale, link_id) = directory.setup_link(&token).await.unwrap().unwrap();
        // Another change to the account comes first: a new link (the old one stops working).
        let fresh = directory
            .reissue_setup_link("tanaka", &admin)
            .await
            .unwrap();
        let refused = directory
            .set_password(
                &stale,
                link_id,
                "correct horse battery",
                "correct horse battery",
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, hpki_backoffice::problem::OfficeError::Problem(p) if p.status == 409),
            "{}: {refused:?}",
            db.backend
        );
        assert!(
            store
                .staff_credentials("tanaka", "password")
                .await
                .unwrap()
                .is_empty(),
            "{}: a password the log did not record",
            db.backend
        );
        let fresh_token = fresh.url.rsplit('/').next().unwrap();
        assert!(directory.setup_link(fresh_token).await.unwrap().is_some());
    }
}
