//! Print batches through the API, checked with independent tools: the QR codes decoded from
//! the rendered PDF by zbarimg (after pdftoppm) carry each card's registration URL; pdftotext
//! finds the Japanese names; the manifest opens as Excel reads it (UTF-8 with BOM, or CP932);
//! the mail house sees only its own batches; a confirmation file with any problem is refused
//! whole with every problem listed; a spoiled card's QR is superseded and a fresh one goes in
//! the next batch; and the same batch rendered again from the log gives the same bytes.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::server::*;
use common::*;
use hpki_backoffice::config::{FileEncoding, MailHouse};
use hpki_events::vocabulary::Imposition;
use serde_json::{Value, json};

const YAMATO: &str = "mail-house-yamato-token-0001";
const SAGAWA: &str = "mail-house-sagawa-token-0002";

fn house(
    token: &str,
    authority: &str,
    imposition: Imposition,
    encoding: FileEncoding,
) -> MailHouse {
    MailHouse {
        token_sha256: hex::encode(openssl::sha::sha256(token.as_bytes())),
        authorities: vec![authority.into()],
        imposition,
        encoding,
    }
}

async fn start(db: &TestDb) -> Server {
    Server::start_with(db, |c| {
        c.mail.background = false;
        c.crl.background = false;
        c.mail_houses.insert(
            "yamato".into(),
            house(YAMATO, "jma", Imposition::TenUp, FileEncoding::Utf8Bom),
        );
        c.mail_houses.insert(
            "sagawa".into(),
            house(SAGAWA, "jpa", Imposition::OnePerPage, FileEncoding::Cp932),
        );
    })
    .await
}

async fn apply(server: &Server, authority: &str, registry: &str, name: &str) -> Value {
    let mut form = form(authority, registry);
    form["name_kanji"] = json!(name);
    let application = ok(server
        .post("/applications")
        .json(&form)
        .send()
        .await
        .unwrap())
    .await;
    let id = application["application_id"].as_str().unwrap().to_owned();
    ok(server
        .post(&format!("/applications/{id}/documents-checked"))
        .send()
        .await
        .unwrap())
    .await;
    ok(server
        .post(&format!("/applications/{id}/approve"))
        .send()
        .await
        .unwrap())
    .await
}

fn as_house(server: &Server, token: &str, path: &str) -> reqwest::RequestBuilder {
    server
        .client
        .get(format!("{}{path}", server.base))
        .bearer_auth(token)
}

async fn bytes(response: reqwest::Response) -> Vec<u8> {
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap().to_vec()
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success() || program == "zbarimg",
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `pdfinfo` field's value.
fn field(info: &str, name: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

async fn confirm(server: &Server, token: &str, batch: &str, body: &[u8]) -> reqwest::Response {
    server
        .client
        .post(format!(
            "{}/print-batches/{batch}/confirmation",
            server.base
        ))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_prints_scannable_cards_and_takes_the_mail_houses_confirmation() {
    for db in both().await {
        let server = start(&db).await;
        let mut qrs = Vec::new();
        for n in 0..12 {
            let approval = apply(&server, "jma", &format!("7{n:05}"), &format!("医師 {n}郎")).await;
            qrs.push(approval["qr_id"].as_str().unwrap().to_owned());
        }
        let created = server
            .post("/print-batches")
            .json(&json!({"authority": "jma"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{}", db.backend);
        let batch: Value = created.json().await.unwrap();
        assert_eq!(batch["cards"], 12);
        let id = batch["batch_id"].as_str().unwrap().to_owned();
        // Nothing more waits.
        let none = server
            .post("/print-batches")
            .json(&json!({"authority": "jma"}))
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), 204);

        // The mail house sees its own batch; the other sees none and cannot fetch it.
        let mine: Value = as_house(&server, YAMATO, "/print-batches")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(mine.as_array().unwrap().len(), 1);
        let theirs: Value = as_house(&server, SAGAWA, "/print-batches")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(theirs.as_array().unwrap().is_empty());
        let refused_pdf = as_house(&server, SAGAWA, &format!("/print-batches/{id}/pdf"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused_pdf.status(), 404);

        let pdf = bytes(
            as_house(&server, YAMATO, &format!("/print-batches/{id}/pdf"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            hex::encode(openssl::sha::sha256(&pdf)),
            batch["pdf_sha256"].as_str().unwrap()
        );
        assert!(
            pdf.len() < 12 * 40 * 1024,
            "under 40 KB a card: {}",
            pdf.len()
        );
        let dir = server.dir.path();
        let file = dir.join("batch.pdf");
        std::fs::write(&file, &pdf).unwrap();
        let info = tool("pdfinfo", &[file.to_str().unwrap()]);
        assert_eq!(field(&info, "Pages"), "2", "{info}");
        assert!(info.contains("595.") && info.contains("841."), "A4: {info}");
        // Every page at two resolutions, the codes read from either: zbar once missed one code
        // of twelve on a page at 300 dpi (CI, session 14) that it reads at others. A code that
        // reads wrong, or at neither resolution, still fails the comparison below.
        let mut urls = BTreeSet::new();
        for dpi in ["300", "400"] {
            let prefix = dir.join(format!("page{dpi}"));
            tool(
                "pdftoppm",
                &[
                    "-r",
                    dpi,
                    "-png",
                    file.to_str().unwrap(),
                    prefix.to_str().unwrap(),
                ],
            );
            for page in 1..=2 {
                let png = format!("{}-{page}.png", prefix.display());
                for line in tool("zbarimg", &["--raw", "-q", &png]).lines() {
                    urls.insert(line.trim().to_owned());
                }
            }
        }
        let expected: BTreeSet<String> = qrs
            .iter()
            .map(|q| format!("http://localhost:8080/r/{}", server.token(q)))
            .collect();
        assert_eq!(
            urls, expected,
            "{}: every card's QR decodes to its own URL",
            db.backend
        );
        let text = tool("pdftotext", &[file.to_str().unwrap(), "-"]);
        assert!(
            text.contains("医師 0郎") && text.contains("医師 11郎"),
            "{text}"
        );
        assert!(
            text.contains("ヤマダ ハナコ") && text.contains("700011"),
            "{text}"
        );

        // The manifest: UTF-8 with BOM, in card order.
        let csv = bytes(
            as_house(&server, YAMATO, &format!("/print-batches/{id}/manifest"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(csv.starts_with(b"\xEF\xBB\xBF"));
        let text = std::str::from_utf8(&csv[3..]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "連番,カードID,氏名,郵便番号,住所,送付先");
        assert_eq!(lines.len(), 13);
        let card_ids: Vec<String> = lines[1..]
            .iter()
            .map(|l| l.split(',').nth(1).unwrap().to_owned())
            .collect();
        assert!(lines[1].starts_with("1,") && lines[12].starts_with("12,"));
        assert!(
            lines[1].contains("113-8621") && lines[1].contains("自宅"),
            "{}",
            lines[1]
        );

        // A bad confirmation is refused whole, every problem listed with its line.
        let stranger = uuid::Uuid::new_v4();
        let bad = format!(
            "連番,カードID,状態,追跡番号\n1,{a},発送済,\n2,{b},印刷済,\n2,{b},印刷済,\n3,{stranger},印刷済,\n4,{d},なくした,\n",
            a = card_ids[0],
            b = card_ids[1],
            d = card_ids[3]
        );
        let answer = confirm(&server, YAMATO, &id, bad.as_bytes()).await;
        assert_eq!(answer.status(), 422);
        let problems: Value = answer.json().await.unwrap();
        let details = problems["error"]["details"].as_array().unwrap();
        let found: Vec<(u64, &str)> = details
            .iter()
            .map(|d| (d["line"].as_u64().unwrap(), d["code"].as_str().unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                (2, "missing_tracking_number"),
                (4, "repeated_row"),
                (5, "not_in_batch"),
                (6, "bad_status")
            ]
        );
        let missing = confirm(&server, YAMATO, &id, "連番,状態\n1,印刷済\n".as_bytes()).await;
        let missing: Value = missing.json().await.unwrap();
        assert_eq!(missing["error"]["details"][0]["code"], "missing_column");
        let utf16 = confirm(&server, YAMATO, &id, b"\xFF\xFEx\x00").await;
        assert_eq!(utf16.status(), 422);
        assert!(
            server
                .running
                .store
                .read_stream("print-jma")
                .await
                .unwrap()
                .len()
                == 1,
            "nothing recorded"
        );

        // The good file: one mailed, one spoiled, the rest printed.
        let mut good = String::from("sequence,card_id,status,tracking_number\r\n");
        for (i, card) in card_ids.iter().enumerate() {
            let status = match i {
                0 => "mailed,1234-5678-9012",
                1 => "spoiled,",
                _ => "printed,",
            };
            good.push_str(&format!("{},{card},{status}\r\n", i + 1));
        }
        let answer = confirm(&server, YAMATO, &id, good.as_bytes()).await;
        let confirmed = ok(answer).await;
        assert_eq!(
            (
                confirmed["printed"].as_u64(),
                confirmed["mailed"].as_u64(),
                confirmed["spoiled"].as_u64()
            ),
            (Some(10), Some(1), Some(1))
        );
        let fresh = confirmed["reissued"][0].as_str().unwrap().to_owned();
        let repeated = ok(confirm(&server, YAMATO, &id, good.as_bytes()).await).await;
        assert_eq!(repeated["repeated"], true);
        // Mailed after printed is fine; mailed twice is not.
        let later = format!(
            "連番,カードID,状態,追跡番号\n3,{},発送済,555\n",
            card_ids[2]
        );
        ok(confirm(&server, YAMATO, &id, later.as_bytes()).await).await;
        let twice = format!(
            "連番,カードID,状態,追跡番号\n3,{},発送済,556\n",
            card_ids[2]
        );
        let twice: Value = confirm(&server, YAMATO, &id, twice.as_bytes())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(twice["error"]["details"][0]["code"], "already_confirmed");

        // The spoiled card's QR no longer works; its fresh QR is the next batch.
        let old = server.password(&card_ids[1], "19800401").await;
        assert_eq!(refused(old, 410).await, "qr_superseded");
        let next: Value = server
            .post("/print-batches")
            .json(&json!({"authority": "jma"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(next["cards"], 1);
        let timeline = server.timeline("subscriber-jma-700001").await;
        let types: Vec<&str> = timeline
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert!(
            types.contains(&"QrCardSpoiled") && types.contains(&"QrSuperseded"),
            "{types:?}"
        );
        let _ = fresh;

        // The same batch made again from the log: the same bytes.
        let again = server.running.store.read_stream("print-jma").await.unwrap();
        assert!(!again.is_empty());
        let rendered = server
            .post(&format!("/print-batches/{id}/render-check"))
            .send()
            .await
            .unwrap();
        let rendered = ok(rendered).await;
        assert_eq!(rendered["pdf_identical"], true, "{rendered}");
        assert_eq!(rendered["csv_identical"], true, "{rendered}");
        server.running.server.stop(true).await;
    }
}

/// A batch the log refuses to record leaves no files behind: they hold live registration
/// URLs, and no one could download them. (A batch recorded keeps its files: the test above.)
#[tokio::test]
async fn a_batch_the_log_refuses_leaves_no_files() {
    for db in both().await {
        let server = start(&db).await;
        apply(&server, "jma", "710001", "医師 一郎").await;
        let files = || -> Vec<String> {
            std::fs::read_dir(server.config.print_dir().join("jma"))
                .map(|dir| {
                    dir.map(|entry| entry.unwrap().file_name().into_string().unwrap())
                        .filter(|name| name.ends_with(".pdf") || name.ends_with(".csv"))
                        .collect()
                })
                .unwrap_or_default()
        };
        let create = || {
            server
                .post("/print-batches")
                .json(&json!({"authority": "jma"}))
                .send()
        };
        refuse_appends(&db, true).await;
        let refused = create().await.unwrap();
        assert!(refused.status().is_server_error(), "{}", db.backend);
        assert_eq!(files(), Vec::<String>::new(), "{}", db.backend);
    }
}

#[tokio::test]
async fn a_card_printer_gets_one_card_a_page_and_a_cp932_manifest() {
    let db = sqlite();
    let server = start(&db).await;
    apply(&server, "jpa", "810001", "髙橋 薬子").await;
    apply(&server, "jpa", "810002", "𠮷田 調剤").await;
    let batch: Value = server
        .post("/print-batches")
        .json(&json!({"authority": "jpa"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = batch["batch_id"].as_str().unwrap();
    let pdf = bytes(
        as_house(&server, SAGAWA, &format!("/print-batches/{id}/pdf"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let file = server.dir.path().join("cards.pdf");
    std::fs::write(&file, &pdf).unwrap();
    let info = tool("pdfinfo", &[file.to_str().unwrap()]);
    assert_eq!(field(&info, "Pages"), "2", "{info}");
    assert!(
        info.contains("242.") && info.contains("153."),
        "a card-sized page: {info}"
    );
    let answer = as_house(&server, SAGAWA, &format!("/print-batches/{id}/manifest"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.headers()["content-type"],
        "text/csv; charset=Shift_JIS"
    );
    let csv = answer.bytes().await.unwrap();
    let (text, _, bad) = encoding_rs::SHIFT_JIS.decode(&csv);
    assert!(!bad, "valid CP932");
    assert!(text.contains("髙橋 薬子"), "{text}");
    assert!(
        text.contains("〓田 調剤"),
        "a character CP932 lacks is printed as 〓: {text}"
    );
}

/// `print.schedule`: a waiting QR is batched at the schedule's first time (JST) after it was
/// queued, and not before; the clock is the injected one.
#[tokio::test]
async fn the_schedule_batches_each_waiting_qr_at_its_next_time() {
    for db in both().await {
        let server = Server::start_with(&db, |c| {
            c.mail.background = false;
            c.crl.background = false;
            c.print.schedule = "0 0 10 * * *".into();
            c.print.background = false;
            c.mail_houses.insert(
                "yamato".into(),
                house(YAMATO, "jma", Imposition::TenUp, FileEncoding::Utf8Bom),
            );
        })
        .await;
        let scheduled = async || -> Vec<Value> {
            let made = ok(server.post("/jobs/print").send().await.unwrap()).await;
            made.as_array().unwrap().clone()
        };
        // 09:00 JST: queued now, due at 10:00.
        apply(&server, "jma", "710001", "予定 一郎").await;
        assert!(scheduled().await.is_empty(), "{}: before 10:00", db.backend);
        server.clock.advance(time::Duration::minutes(59));
        assert!(scheduled().await.is_empty(), "{}: 09:59", db.backend);

        server.clock.advance(time::Duration::minutes(1));
        let made = scheduled().await;
        assert_eq!(made.len(), 1, "{}: 10:00 {made:?}", db.backend);
        assert_eq!(made[0]["cards"], 1);
        let id = made[0]["batch_id"].as_str().unwrap();
        let manifest = bytes(
            as_house(&server, YAMATO, &format!("/print-batches/{id}/manifest"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let manifest = String::from_utf8(manifest).unwrap();
        assert!(manifest.contains("予定 一郎"), "{manifest}");

        // Queued at 10:00 after that run: it waits for 10:00 the next day.
        apply(&server, "jma", "710002", "予定 二郎").await;
        server.clock.advance(time::Duration::hours(23));
        assert!(
            scheduled().await.is_empty(),
            "{}: 09:00 next day",
            db.backend
        );
        server.clock.advance(time::Duration::hours(1));
        assert_eq!(scheduled().await.len(), 1, "{}", db.backend);
    }
}

/// Files a crash left between a batch's files and its event (no event names them) are removed
/// when the next batch is made, once an hour old; younger ones, and a recorded batch's however
/// old, are left.
#[tokio::test]
async fn print_files_no_batch_names_are_removed_an_hour_after_they_were_written() {
    for db in both().await {
        let server = start(&db).await;
        let make_batch = || async {
            let batch = ok(server
                .post("/print-batches")
                .json(&json!({"authority": "jma"}))
                .send()
                .await
                .unwrap())
            .await;
            batch["batch_id"].as_str().unwrap().to_owned()
        };
        apply(&server, "jma", "720001", "医師 一郎").await;
        let recorded = make_batch().await;
        let dir = server.config.print_dir().join("jma");
        let orphan = uuid::Uuid::now_v7();
        let young = uuid::Uuid::now_v7();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        let mut aged = vec![
            format!("{recorded}.pdf"),
            format!("{recorded}.csv"),
            format!("{orphan}.pdf"),
            format!("{orphan}.csv"),
            format!(".{orphan}.pdf.0123abcd.tmp"),
            "notes.txt".to_owned(),
        ];
        for name in &aged[2..] {
            std::fs::write(dir.join(name), b"orphan").unwrap();
        }
        std::fs::write(dir.join(format!("{young}.pdf")), b"young").unwrap();
        for name in &aged {
            let file = std::fs::File::options()
                .write(true)
                .open(dir.join(name))
                .unwrap();
            file.set_modified(two_hours_ago).unwrap();
        }

        apply(&server, "jma", "720002", "医師 二郎").await;
        let second = make_batch().await;
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        aged.truncate(2);
        aged.extend([
            format!("{second}.pdf"),
            format!("{second}.csv"),
            format!("{young}.pdf"),
            "notes.txt".to_owned(),
        ]);
        aged.sort();
        assert_eq!(left, aged, "{}", db.backend);
    }
}
