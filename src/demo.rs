//! `hpki demo`: a realistic data set made through the office's own commands, so every event
//! in it is one the real paths would write. Both authorities; applications from the web form,
//! keyed in from paper and imported from an association's CSV; every state (received,
//! documents checked, rejected, approved with a card, approved with the card deferred and the
//! QR pre-issued because JMA ran short of cards); and after issuance a few locked QRs,
//! registered phones, reissue requests, loss cases and a revocation proposal waiting for a
//! second person.

use hpki_events::Actor;
use hpki_events::vocabulary::Channel;

use crate::intake::ApplicationForm;
use crate::office::{ImportMode, Office};
use crate::problem::OfficeError;

/// What the demo made.
#[derive(Debug, Default)]
pub struct Seeded {
    pub applications: usize,
    pub approved: usize,
    pub deferred: usize,
    pub rejected: usize,
    /// After issuance: QRs locked, phones registered, reissue requests, loss cases and
    /// revocation proposals waiting for a second person.
    pub locked: usize,
    pub registered: usize,
    pub reissues: usize,
    pub losses: usize,
    pub proposals: usize,
}

const SURNAMES: &[(&str, &str, &str)] = &[
    ("佐藤", "サトウ", "SATO"),
    ("鈴木", "スズキ", "SUZUKI"),
    ("高橋", "タカハシ", "TAKAHASHI"),
    ("田中", "タナカ", "TANAKA"),
    ("伊藤", "イトウ", "ITO"),
    ("渡辺", "ワタナベ", "WATANABE"),
    ("山本", "ヤマモト", "YAMAMOTO"),
    ("中村", "ナカムラ", "NAKAMURA"),
    ("小林", "コバヤシ", "KOBAYASHI"),
    ("加藤", "カトウ", "KATO"),
    ("吉田", "ヨシダ", "YOSHIDA"),
    ("山田", "ヤマダ", "YAMADA"),
];

const GIVEN: &[(&str, &str, &str)] = &[
    ("太郎", "タロウ", "TARO"),
    ("花子", "ハナコ", "HANAKO"),
    ("健一", "ケンイチ", "KENICHI"),
    ("美咲", "ミサキ", "MISAKI"),
    ("大輔", "ダイスケ", "DAISUKE"),
    ("陽子", "ヨウコ", "YOKO"),
    ("翔太", "ショウタ", "SHOTA"),
    ("恵", "メグミ", "MEGUMI"),
    ("誠", "マコト", "MAKOTO"),
    ("由美", "ユミ", "YUMI"),
];

const PLACES: &[(&str, &str, &str)] = &[
    ("100-0005", "東京都千代田区丸の内1-1-1", "東京都"),
    ("530-0001", "大阪府大阪市北区梅田2-2-2", "大阪府"),
    ("460-0008", "愛知県名古屋市中区栄3-3-3", "愛知県"),
    ("812-0011", "福岡県福岡市博多区博多駅前4-4-4", "福岡県"),
    ("060-0001", "北海道札幌市中央区北1条西5-5", "北海道"),
    ("980-0021", "宮城県仙台市青葉区中央6-6-6", "宮城県"),
];

/// A 1×1 grey PNG, standing in for a face photo.
pub const SAMPLE_PHOTO: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x3A, 0x7E, 0x9B,
    0x55, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x68, 0x00, 0x00, 0x00,
    0x82, 0x00, 0x81, 0x77, 0xCD, 0x72, 0xB6, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

/// The form of demo applicant `n` to `authority`.
pub fn form(authority: &str, n: usize, rng: &mut fastrand::Rng) -> ApplicationForm {
    let (s_kanji, s_kana, s_romaji) = SURNAMES[rng.usize(..SURNAMES.len())];
    let (g_kanji, g_kana, g_romaji) = GIVEN[rng.usize(..GIVEN.len())];
    let (postal, address, prefecture) = PLACES[rng.usize(..PLACES.len())];
    let office = rng.u8(..4) == 0;
    let association = if authority == "jma" {
        "医師会"
    } else {
        "薬剤師会"
    };
    ApplicationForm {
        authority: authority.into(),
        name_kanji: format!("{s_kanji} {g_kanji}"),
        name_kana: format!("{s_kana} {g_kana}"),
        name_romaji: format!("{s_romaji} {g_romaji}"),
        birth_date: format!(
            "{}-{:02}-{:02}",
            rng.i32(1950..=1998),
            rng.u8(1..=12),
            rng.u8(1..=28)
        ),
        profession: if authority == "jma" {
            "physician"
        } else {
            "pharmacist"
        }
        .into(),
        registry_number: format!("{}", 100_000 + n),
        email: format!("{}.{}{n}@example.jp", g_romaji, s_romaji).to_lowercase(),
        postal_code: postal.into(),
        address: format!("{address} {}号室", 100 + n % 900),
        delivery: if office { "office" } else { "home" }.into(),
        delivery_office: office.then(|| format!("{prefecture}{association}")),
        ..ApplicationForm::default()
    }
}

/// One line of a CSV batch, as an association would export it.
fn csv_line(f: &ApplicationForm) -> String {
    [
        f.authority.as_str(),
        &f.name_kanji,
        &f.name_kana,
        &f.name_romaji,
        &f.birth_date,
        &f.profession,
        &f.registry_number,
        &f.email,
        &f.postal_code,
        &f.address,
        if f.delivery == "home" {
            "自宅"
        } else {
            "団体"
        },
        f.delivery_office.as_deref().unwrap_or(""),
    ]
    .join(",")
}

/// Seeds about `total` applications, split between JMA and JPA. `progress` hears (done, total).
pub async fn seed(
    office: &Office,
    total: usize,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<Seeded, OfficeError> {
    let mut rng = fastrand::Rng::with_seed(20261122);
    let staff = Actor::parse("staff:demo").expect("a plain name");
    let mut seeded = Seeded::default();
    // Of every ten: four approved, one rejected, two documents checked, three just received.
    let approvals = total * 4 / 10 + 1;
    progress("鍵ペアを生成中 / generating key pairs", 0, approvals as u64);
    crate::office::generate_keys(office.store(), office.kek(), approvals, &|done, all| {
        progress("鍵ペアを生成中 / generating key pairs", done, all)
    })
    .await?;

    // A CSV batch from an association: the first tenth of JMA's applicants.
    let csv_rows = total / 10;
    let mut csv = String::from(
        "認証局,氏名,氏名（カナ）,氏名（ローマ字）,生年月日,職種,登録番号,メールアドレス,郵便番号,住所,送付先,送付先団体名\n",
    );
    let forms: Vec<ApplicationForm> = (0..total)
        .map(|n| form(if n % 3 == 2 { "jpa" } else { "jma" }, n, &mut rng))
        .collect();
    let (from_csv, one_by_one): (Vec<_>, Vec<_>) = forms
        .iter()
        .enumerate()
        .partition(|(n, f)| f.authority == "jma" && *n < csv_rows * 3 / 2);
    for (_, f) in &from_csv {
        csv.push_str(&csv_line(f));
        csv.push('\n');
    }
    let report = office
        .import(csv.as_bytes(), ImportMode::AllOrNothing, &staff, &|_, _| {})
        .await?;
    seeded.applications += report.imported;

    // Each application with its birth date where the demo knows it (not for CSV rows).
    let mut ids: Vec<(uuid::Uuid, Option<String>)> = Vec::new();
    for (i, (_, f)) in one_by_one.iter().enumerate() {
        let channel = if i % 2 == 0 {
            Channel::Web
        } else {
            Channel::Paper
        };
        let submitted = office
            .submit(f, Some(SAMPLE_PHOTO), channel, &staff)
            .await?;
        ids.push((submitted.application_id, Some(f.birth_date.clone())));
        seeded.applications += 1;
        progress(
            "申請を登録中 / submitting",
            i as u64 + 1,
            one_by_one.len() as u64,
        );
    }
    crate::projection_runner::catch_up(office.store(), &hpki_projections::Applications).await?;
    let imported = office
        .store()
        .docs("applications", Some("received"), 100_000)
        .await?;
    for (key, _) in imported
        .iter()
        .filter(|(_, doc)| doc.body["channel"] == "csv")
    {
        let id = key
            .parse()
            .map_err(|e: uuid::Error| OfficeError::Internal(e.into()))?;
        office.attach_photo(id, SAMPLE_PHOTO, &staff).await?;
        ids.push((id, None));
    }

    // JPA has cards for everyone; JMA for about two thirds of its approvals.
    let jma_approvals = approvals * 2 / 3;
    office
        .receive_cards(
            "jpa",
            office.simulate_cards(approvals - jma_approvals + 1).await?,
            &staff,
        )
        .await?;
    office
        .receive_cards(
            "jma",
            office.simulate_cards(jma_approvals * 2 / 3).await?,
            &staff,
        )
        .await?;

    let count = ids.len();
    let mut issued = Vec::new();
    for (i, (id, birth_date)) in ids.into_iter().enumerate() {
        match i % 10 {
            0..=3 => {
                office.check_documents(id, &staff).await?;
                let approval = office.approve(id, &staff).await?;
                seeded.approved += 1;
                if approval.qr_pre_issued {
                    seeded.deferred += 1;
                }
                if let Some(birth_date) = birth_date {
                    issued.push((approval, birth_date));
                }
            }
            4 => {
                office
                    .reject(
                        id,
                        "医師免許証の写しが不鮮明です。再提出をお願いします。",
                        &staff,
                    )
                    .await?;
                seeded.rejected += 1;
            }
            5 | 6 => office.check_documents(id, &staff).await?,
            _ => {}
        }
        progress("審査中 / reviewing", i as u64 + 1, count as u64);
    }
    after_issuance(office, &issued, &staff, &mut seeded).await?;
    Ok(seeded)
}

/// Through the portal's and the office's commands: of every eight issued, one QR locked by
/// wrong passwords, three phones registered, one reissue request, one lost card and one lost
/// phone whose revocation waits for a second person.
async fn after_issuance(
    office: &Office,
    issued: &[(crate::office::Approval, String)],
    staff: &Actor,
    seeded: &mut Seeded,
) -> Result<(), OfficeError> {
    use hpki_events::vocabulary::{
        LossKind, ReasonCode, ReissueChannel, ReissueReason, RevocationScope,
    };
    let proposer = Actor::parse("staff:demo-proposer").expect("a plain name");
    for (i, (approval, birth_date)) in issued.iter().enumerate() {
        let url = office.registration_url(approval.qr_id);
        let token = url.rsplit('/').next().unwrap_or_default().to_owned();
        let password = birth_date.replace('-', "");
        let second = approval.second_certificate_serial.as_str();
        let register = |n: usize| {
            let token = token.clone();
            let password = password.clone();
            async move {
                office.check_password(&token, &password).await?;
                let credential = format!("ZGVtby1jcmVkZW50aWFsLQ{n:08}");
                office
                    .register_device(
                        &token,
                        &credential,
                        "pQECAyYgASFYIGRlbW8tY29zZS1rZXktYnl0ZXMtZm9yLWRlbW8",
                        uuid::Uuid::nil(),
                        None,
                        None,
                    )
                    .await
            }
        };
        match i % 8 {
            0 => {
                for _ in 0..5 {
                    office.check_password(&token, "19000101").await?;
                }
                seeded.locked += 1;
            }
            1 | 2 => {
                register(i).await?;
                seeded.registered += 1;
            }
            3 => {
                // The authority's own channel for a request staff record.
                let authority = approval_authority(office, approval).await?;
                let channel = office
                    .authorities()
                    .get(&authority)
                    .and_then(|a| {
                        a.reissue_channels
                            .iter()
                            .copied()
                            .find(|c| *c != ReissueChannel::OnScreen)
                    })
                    .unwrap_or(ReissueChannel::Email);
                office
                    .request_reissue(second, channel, ReissueReason::Lost, staff)
                    .await?;
                seeded.reissues += 1;
            }
            4 => {
                if let crate::office::CardOutcome::Issued {
                    certificate_serial, ..
                } = &approval.card
                {
                    office
                        .report_loss(
                            certificate_serial,
                            LossKind::Card,
                            "電話で届出（デモ）",
                            staff,
                        )
                        .await?;
                    seeded.losses += 1;
                }
            }
            5 => {
                register(i).await?;
                seeded.registered += 1;
                let case = office
                    .report_loss(
                        second,
                        LossKind::Device,
                        "スマートフォン紛失（デモ）",
                        staff,
                    )
                    .await?;
                seeded.losses += 1;
                let form = crate::office::ProposalForm {
                    certificate_serial: second.to_owned(),
                    scope: RevocationScope::SecondOnly,
                    reason: Some(ReasonCode::KeyCompromise),
                    case_id: Some(case),
                };
                office.propose_revocation(&form, &proposer).await?;
                seeded.proposals += 1;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The authority an approval was issued by (from its application).
async fn approval_authority(
    office: &Office,
    approval: &crate::office::Approval,
) -> Result<String, OfficeError> {
    let stream = office.application_stream(approval.application_id).await?;
    Ok(stream.split('-').nth(1).unwrap_or_default().to_owned())
}
