//! Benchmarks of issue 5 for BENCHMARKS.md. Run: `cargo bench --bench outputs [-- crl|pdf|mail]`
//! (all three by default).
//!
//! - crl: 100,000 and 1,000,000 revoked entries built and signed by `hpki_backoffice::crl`,
//!   best of three, beside `openssl ca -gencrl` over the same entries in the same run; both
//!   CRLs are checked by `openssl crl -verify` and counted.
//! - pdf: 10,000 QR cards, each with its own JPEG photo (240 × 320, made beforehand), rendered
//!   10-up; time, bytes per card, and the process's peak resident memory (VmHWM).
//! - mail: 2,000 applications imported, then every "received" mail sent by the outbox to a
//!   real SMTP server on loopback (aiosmtpd, `tests/support/smtp_server.py`).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpki_backoffice::clock::{SharedClock, SystemClock};
use hpki_backoffice::crl::{Entry, Spec, build};
use hpki_backoffice::pki::Ca;
use hpki_events::vocabulary::{Imposition, ReasonCode};
use time::OffsetDateTime;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_memory_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn entries(n: usize, now: OffsetDateTime) -> Vec<Entry> {
    let mut rng = fastrand::Rng::with_seed(5);
    (0..n)
        .map(|_| {
            let mut serial = vec![0u8; 16];
            rng.fill(&mut serial);
            serial[0] &= 0x7f;
            serial[0] |= 0x01;
            Entry {
                serial,
                revoked_at: now - time::Duration::seconds(rng.i64(0..365 * 86_400)),
                reason: if rng.u8(..10) == 0 {
                    ReasonCode::KeyCompromise
                } else {
                    ReasonCode::CessationOfOperation
                },
            }
        })
        .collect()
}

fn openssl_ok(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn crl(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::generate_dev(
        &[("C", "JP"), ("O", "Bench"), ("CN", "Bench CA")],
        time::macros::date!(2026 - 01 - 01),
    )
    .unwrap();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let list = entries(n, now);
    let spec = Spec {
        number: 7,
        this_update: now,
        next_update: now + time::Duration::hours(96),
    };
    let mut best = f64::MAX;
    let mut der = Vec::new();
    for _ in 0..3 {
        let mut copy = list.clone();
        let started = Instant::now();
        der = build(&ca, &spec, &mut copy).unwrap();
        best = best.min(started.elapsed().as_secs_f64());
    }
    std::fs::write(d.join("ours.der"), &der).unwrap();
    std::fs::write(d.join("ca.pem"), ca.cert.to_pem().unwrap()).unwrap();
    std::fs::write(d.join("ca.key"), ca.key_pem().unwrap()).unwrap();

    // The same entries for `openssl ca -gencrl`.
    let utc = |t: OffsetDateTime| {
        format!(
            "{:02}{:02}{:02}{:02}{:02}{:02}Z",
            t.year() % 100,
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    };
    let mut index = String::with_capacity(n * 80);
    for e in &list {
        let reason = if e.reason == ReasonCode::KeyCompromise {
            "keyCompromise"
        } else {
            "cessationOfOperation"
        };
        index.push_str(&format!(
            "R\t{}\t{},{reason}\t{}\tunknown\t/CN=x\n",
            utc(now + time::Duration::days(365)),
            utc(e.revoked_at),
            hex::encode_upper(&e.serial)
        ));
    }
    std::fs::write(d.join("index.txt"), index).unwrap();
    std::fs::write(d.join("crlnumber"), "07\n").unwrap();
    std::fs::write(
        d.join("ca.cnf"),
        format!(
            "[ca]\ndefault_ca = CA_default\n[CA_default]\ndatabase = {0}/index.txt\ncrlnumber = {0}/crlnumber\ncertificate = {0}/ca.pem\nprivate_key = {0}/ca.key\ndefault_md = sha256\ndefault_crl_hours = 96\ncrl_extensions = crl_ext\n[crl_ext]\nauthorityKeyIdentifier = keyid:always\n",
            d.display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    openssl_ok(&[
        "ca",
        "-config",
        d.join("ca.cnf").to_str().unwrap(),
        "-gencrl",
        "-batch",
        "-out",
        d.join("openssl.pem").to_str().unwrap(),
    ]);
    let theirs = started.elapsed().as_secs_f64();

    let ca_file = d.join("ca.pem");
    for (file, form) in [("ours.der", "DER"), ("openssl.pem", "PEM")] {
        let path = d.join(file);
        let out = Command::new("openssl")
            .args([
                "crl",
                "-inform",
                form,
                "-in",
                path.to_str().unwrap(),
                "-CAfile",
                ca_file.to_str().unwrap(),
                "-verify",
                "-noout",
            ])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("verify OK"),
            "{file} does not verify"
        );
        let bytes = std::fs::read(&path).unwrap();
        let parsed = if form == "DER" {
            openssl::x509::X509Crl::from_der(&bytes)
        } else {
            openssl::x509::X509Crl::from_pem(&bytes)
        }
        .unwrap();
        assert_eq!(
            parsed.get_revoked().map_or(0, |r| r.len()),
            n,
            "{file} lists every entry"
        );
    }
    println!(
        "crl: {n} entries: hpki build+sign {:.3} s (best of 3, {} MB DER); openssl ca -gencrl {:.2} s; ratio {:.1}x",
        best,
        der.len() / 1_000_000,
        theirs,
        theirs / best
    );
}

fn photo(n: usize) -> Vec<u8> {
    let (w, h) = (240u16, 320u16);
    let mut pixels = Vec::with_capacity(w as usize * h as usize * 3);
    let tint = (n % 97) as f32;
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f32 - 120.0, y as f32 - 140.0);
            let face = (dx * dx) / (70.0 * 70.0) + (dy * dy) / (95.0 * 95.0) < 1.0;
            let base = if face {
                [224.0, 184.0, 160.0]
            } else {
                [90.0 + tint, 130.0, 200.0 - tint]
            };
            let shade = (y as f32 / h as f32) * 30.0;
            let grain = ((x as usize * 31 + y as usize * 17 + n) % 7) as f32;
            pixels.extend(
                base.iter()
                    .map(|c| (c - shade + grain).clamp(0.0, 255.0) as u8),
            );
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 80)
        .encode(&pixels, w, h, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

fn pdf(cards: usize) {
    let started = Instant::now();
    let faces: Vec<hpki_backoffice::pdf::CardFace> = (0..cards)
        .map(|n| hpki_backoffice::pdf::CardFace {
            sequence: n as u32 + 1,
            card_id: uuid::Uuid::new_v4().to_string(),
            name_kanji: format!("山田 太郎{}", n % 100),
            name_kana: "ヤマダ タロウ".into(),
            subscriber_id: format!("{:06}", 100_000 + n),
            authority: "日本医師会電子認証センター".into(),
            issued_on: time::macros::date!(2026 - 11 - 22),
            last_usable_day: time::macros::date!(2027 - 02 - 21),
            password_hint: "パスワードは生年月日（西暦8桁、例：19900317）です。".into(),
            registration_url: format!(
                "https://portal.example.jp/r/{}",
                hex::encode(uuid::Uuid::new_v4().as_bytes())
            ),
            photo: Some(hpki_backoffice::pdf::Photo {
                media_type: "image/jpeg".into(),
                bytes: photo(n),
            }),
        })
        .collect();
    let photos: usize = faces
        .iter()
        .map(|f| f.photo.as_ref().unwrap().bytes.len())
        .sum();
    println!(
        "pdf: {cards} distinct JPEG photos made in {:.1} s, {:.1} KB each on average",
        started.elapsed().as_secs_f64(),
        photos as f64 / cards as f64 / 1024.0
    );
    let started = Instant::now();
    let bytes = hpki_backoffice::pdf::render(&hpki_backoffice::pdf::Batch {
        batch_id: uuid::Uuid::nil(),
        title: "bench".into(),
        created_at: OffsetDateTime::UNIX_EPOCH,
        imposition: Imposition::TenUp,
        cards: &faces,
    })
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "pdf: {cards} cards 10-up rendered in {seconds:.2} s; {:.1} MB, {:.1} KB per card; peak resident memory of the process {:.0} MB",
        bytes.len() as f64 / 1e6,
        bytes.len() as f64 / cards as f64 / 1024.0,
        peak_memory_mb()
    );
}

async fn mail(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("/usr/bin/python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/smtp_server.py"
        ))
        .arg(port.to_string())
        .arg(d.join("smtp"))
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let clock: SharedClock = Arc::new(SystemClock);
    let mut config = hpki_backoffice::config::Config::default();
    config.database_url = format!("sqlite://{}/hpki.db", d.display());
    config.data_dir = d.to_owned();
    config.keys.kek_file = d.join("keys/kek.hex");
    config.keys.qr_secret_file = d.join("keys/qr.hex");
    config.mail.transport = hpki_backoffice::config::MailTransport::Smtp;
    config.mail.smtp_port = port;
    let store = hpki_backoffice::serve::open_store(&config, clock.clone())
        .await
        .unwrap();
    let office = hpki_backoffice::serve::office(&config, store, clock)
        .await
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let mut csv = String::from(
        "認証局,氏名,氏名（カナ）,氏名（ローマ字）,生年月日,職種,登録番号,メールアドレス,郵便番号,住所,送付先\r\n",
    );
    for i in 0..n {
        let f = hpki_backoffice::demo::form("jma", i, &mut rng);
        csv.push_str(&format!(
            "jma,{},{},{},{},医師,{},{},{},{},自宅\r\n",
            f.name_kanji,
            f.name_kana,
            f.name_romaji,
            f.birth_date,
            f.registry_number,
            f.email,
            f.postal_code,
            f.address
        ));
    }
    let staff = hpki_events::Actor::parse("staff:bench").unwrap();
    office
        .import(
            csv.as_bytes(),
            hpki_backoffice::office::ImportMode::AllOrNothing,
            &staff,
            &|_, _| {},
        )
        .await
        .unwrap();
    let outbox = hpki_backoffice::processors::outbox::Outbox::new(office.clone(), &config).unwrap();
    let started = Instant::now();
    let (report, _) = outbox.step().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let received = std::fs::read_dir(d.join("smtp/inbox")).unwrap().count();
    let _ = server.kill();
    assert_eq!(report.sent, n);
    assert_eq!(received, n);
    println!(
        "mail: {n} mails sent to aiosmtpd on loopback and recorded in {seconds:.2} s: {:.0} mails/s (concurrency {})",
        n as f64 / seconds,
        config.mail.concurrency
    );
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if wants("crl") {
        crl(100_000);
        crl(1_000_000);
    }
    if wants("pdf") {
        pdf(10_000);
    }
    if wants("mail") {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(mail(2_000));
    }
}
