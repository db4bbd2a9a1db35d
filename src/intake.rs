//! An application as it arrives (from the API, a keyed-in paper form or a CSV row) and the
//! rules it must pass before anything is appended. Validation is pure: it sees the form, the
//! authorities and today's date, and returns every problem at once, each naming its field.

use std::collections::BTreeMap;

use hpki_events::vocabulary::Delivery;
use serde::Deserialize;
use time::Date;
use utoipa::ToSchema;

use crate::config::Authority;

/// An application as submitted: every field as the applicant wrote it.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationForm {
    /// The issuing authority's id: `jma` or `jpa`.
    #[schema(example = "jma")]
    pub authority: String,
    #[schema(example = "山田 太郎")]
    pub name_kanji: String,
    /// Full-width katakana.
    #[schema(example = "ヤマダ タロウ")]
    pub name_kana: String,
    /// Latin letters, as the certificate will carry it.
    #[schema(example = "YAMADA TARO")]
    pub name_romaji: String,
    /// `YYYY-MM-DD` (also `YYYY/MM/DD` or `YYYYMMDD`).
    #[schema(example = "1980-04-01")]
    pub birth_date: String,
    /// `physician` (医師) or `pharmacist` (薬剤師); must be the authority's.
    #[schema(example = "physician")]
    pub profession: String,
    /// Digits only: the medical registration number (医籍登録番号) or the pharmacist registry
    /// number.
    #[schema(example = "123456")]
    pub registry_number: String,
    #[schema(example = "taro.yamada@example.jp")]
    pub email: String,
    /// `NNN-NNNN`.
    #[schema(example = "113-8621")]
    pub postal_code: String,
    #[schema(example = "東京都文京区本駒込2-28-16")]
    pub address: String,
    /// `home`, or `office` with `delivery_office` naming the association office.
    #[schema(example = "home")]
    pub delivery: String,
    #[serde(default)]
    pub delivery_office: Option<String>,
    /// API only: `web` (the applicants' web form, the default) or `paper` (keyed in by staff
    /// from a paper form).
    #[serde(default)]
    #[schema(example = "paper")]
    pub channel: Option<String>,
    /// API only: the face photo, JPEG or PNG, base64. It may also be attached later.
    #[serde(default)]
    pub photo_base64: Option<String>,
}

/// A form that passed every rule, in the shapes the log keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidApplication {
    pub authority: String,
    pub name_kanji: String,
    pub name_kana: String,
    pub name_romaji: String,
    pub birth_date: Date,
    pub profession: String,
    pub registry_number: String,
    pub subscriber_id: String,
    pub email: String,
    pub postal_code: String,
    pub address: String,
    pub delivery: Delivery,
}

/// One thing wrong with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    /// Stable and machine-readable: `required`, `too_long`, `bad_date`, ...
    pub code: &'static str,
    pub ja: String,
    pub en: String,
}

impl FieldError {
    fn new(field: &'static str, code: &'static str, ja: String, en: String) -> FieldError {
        FieldError {
            field,
            code,
            ja,
            en,
        }
    }
}

/// Checks a form; `today` is the JST date the office is working on.
pub fn validate(
    form: &ApplicationForm,
    authorities: &BTreeMap<String, Authority>,
    today: Date,
) -> Result<ValidApplication, Vec<FieldError>> {
    let mut errors = Vec::new();
    fn keep(errors: &mut Vec<FieldError>, result: Result<String, FieldError>) -> String {
        result.unwrap_or_else(|error| {
            errors.push(error);
            String::new()
        })
    }

    let authority_id = form.authority.trim().to_ascii_lowercase();
    let authority = authorities.get(&authority_id);
    if authority.is_none() {
        let known = authorities.keys().cloned().collect::<Vec<_>>().join(", ");
        keep(
            &mut errors,
            Err(FieldError::new(
                "authority",
                "unknown_authority",
                format!(
                    "認証局「{}」はありません（{known} のいずれか）",
                    form.authority
                ),
                format!(
                    "there is no authority {:?} (one of {known})",
                    form.authority
                ),
            )),
        );
    }
    let name_kanji = keep(
        &mut errors,
        text("name_kanji", "氏名（漢字）", &form.name_kanji, 50),
    );
    let name_kana = keep(&mut errors, kana(&form.name_kana));
    let name_romaji = keep(&mut errors, romaji(&form.name_romaji));
    let birth_date = match birth_date(&form.birth_date, today) {
        Ok(date) => Some(date),
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let email = keep(&mut errors, email(&form.email));
    let postal_code = keep(&mut errors, postal_code(&form.postal_code));
    let address = keep(&mut errors, text("address", "住所", &form.address, 200));
    let registry_number = ascii_digits(form.registry_number.trim());
    let mut profession = String::new();
    if let Some(authority) = authority {
        if let Err(why) = authority.check_registry_number(&registry_number) {
            errors.push(FieldError::new(
                "registry_number",
                "bad_registry_number",
                format!("登録番号の形式が違います: {why}"),
                format!("registry number: {why}"),
            ));
        }
        profession = match form.profession.trim() {
            "医師" | "physician" => "physician",
            "薬剤師" | "pharmacist" => "pharmacist",
            other => other,
        }
        .to_owned();
        if profession != authority.profession {
            errors.push(FieldError::new(
                "profession",
                "wrong_profession",
                format!(
                    "職種「{}」は{}の対象ではありません（{}）",
                    form.profession, authority.name_ja, authority.profession
                ),
                format!(
                    "profession {:?} is not served by {} (expected {})",
                    form.profession, authority.name_en, authority.profession
                ),
            ));
        }
    }
    let delivery = match delivery(&form.delivery, form.delivery_office.as_deref()) {
        Ok(delivery) => Some(delivery),
        Err(error) => {
            errors.push(error);
            None
        }
    };

    match (authority, birth_date, delivery) {
        (Some(authority), Some(birth_date), Some(delivery)) if errors.is_empty() => {
            Ok(ValidApplication {
                subscriber_id: authority.subscriber_id(&registry_number),
                authority: authority_id,
                name_kanji,
                name_kana,
                name_romaji,
                birth_date,
                profession,
                registry_number,
                email,
                postal_code,
                address,
                delivery,
            })
        }
        _ => Err(errors),
    }
}

/// Full-width digits (as Excel users often type them) read as ASCII.
pub fn ascii_digits(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            'ー' | '－' | '‐' | '−' => '-',
            c => c,
        })
        .collect()
}

fn required(field: &'static str, label_ja: &str) -> FieldError {
    FieldError::new(
        field,
        "required",
        format!("{label_ja}を入力してください"),
        format!("{field} is required"),
    )
}

/// Trimmed, inner runs of spaces (ASCII or full-width) made one, at most `max` characters,
/// no control characters.
fn text(
    field: &'static str,
    label_ja: &str,
    value: &str,
    max: usize,
) -> Result<String, FieldError> {
    let value = value
        .split(|c: char| c == ' ' || c == '\u{3000}' || c == '\t')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if value.is_empty() {
        return Err(required(field, label_ja));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(FieldError::new(
            field,
            "bad_character",
            format!("{label_ja}に使えない文字（U+{:04X}）があります", c as u32),
            format!("{field} holds a control character (U+{:04X})", c as u32),
        ));
    }
    let count = value.chars().count();
    if count > max {
        return Err(FieldError::new(
            field,
            "too_long",
            format!("{label_ja}は{max}文字以内です（{count}文字）"),
            format!("{field} is {count} characters; at most {max}"),
        ));
    }
    Ok(value)
}

fn kana(value: &str) -> Result<String, FieldError> {
    let value = text("name_kana", "氏名（カナ）", value, 50)?;
    let katakana = |c: char| ('\u{30A1}'..='\u{30FA}').contains(&c) || "ー・ ".contains(c);
    match value.chars().find(|&c| !katakana(c)) {
        None => Ok(value),
        Some(c) => Err(FieldError::new(
            "name_kana",
            "not_katakana",
            format!("氏名（カナ）は全角カタカナで入力してください（「{c}」は使えません）"),
            format!("name_kana must be full-width katakana ({c:?} is not)"),
        )),
    }
}

/// Latin letters, spaces, `-`, `'` and `.`; kept as written (the certificate's CN).
fn romaji(value: &str) -> Result<String, FieldError> {
    let value = text("name_romaji", "氏名（ローマ字）", value, 64)?;
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphabetic() || " -'.".contains(*c)))
    {
        None => Ok(value),
        Some(c) => Err(FieldError::new(
            "name_romaji",
            "not_romaji",
            format!("氏名（ローマ字）は半角英字で入力してください（「{c}」は使えません）"),
            format!("name_romaji must be Latin letters ({c:?} is not)"),
        )),
    }
}

/// `YYYY-MM-DD`, `YYYY/MM/DD` (what Excel writes) or `YYYYMMDD`; a real date, after 1900-01-01
/// and before today.
pub fn birth_date(value: &str, today: Date) -> Result<Date, FieldError> {
    let value = ascii_digits(value.trim());
    if value.is_empty() {
        return Err(required("birth_date", "生年月日"));
    }
    let bad = || {
        FieldError::new(
            "birth_date",
            "bad_date",
            "生年月日は YYYY-MM-DD の形の実在する日付で入力してください".into(),
            "birth_date must be a real date written YYYY-MM-DD".into(),
        )
    };
    let parts: Vec<&str> = if value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit()) {
        vec![&value[..4], &value[4..6], &value[6..]]
    } else {
        value.split(['-', '/']).collect()
    };
    let [year, month, day] = parts[..] else {
        return Err(bad());
    };
    let number = |s: &str, digits: std::ops::RangeInclusive<usize>| {
        (digits.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (Some(year), Some(month), Some(day)) = (
        number(year, 4..=4),
        number(month, 1..=2),
        number(day, 1..=2),
    ) else {
        return Err(bad());
    };
    let month = time::Month::try_from(month as u8).map_err(|_| bad())?;
    let date = Date::from_calendar_date(year as i32, month, day as u8).map_err(|_| bad())?;
    if date >= today || date.year() < 1900 {
        return Err(FieldError::new(
            "birth_date",
            "not_past",
            "生年月日は1900年以降の過去の日付です".into(),
            "birth_date must be in the past (and not before 1900)".into(),
        ));
    }
    Ok(date)
}

/// A deliberately plain check: one `@`, a local part, a domain of dotted labels. Deliverability
/// is proved by the mail itself, not by a regular expression.
fn email(value: &str) -> Result<String, FieldError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(required("email", "メールアドレス"));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let local_ok = |local: &str| {
        !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b))
    };
    let ok = value.len() <= 254
        && match value.split_once('@') {
            Some((local, domain)) => {
                local_ok(local) && domain.contains('.') && domain.split('.').all(label_ok)
            }
            None => false,
        };
    if ok {
        Ok(value.to_owned())
    } else {
        Err(FieldError::new(
            "email",
            "bad_email",
            "メールアドレスの形式が正しくありません".into(),
            "email is not an e-mail address".into(),
        ))
    }
}

fn postal_code(value: &str) -> Result<String, FieldError> {
    let value = ascii_digits(value.trim());
    if value.is_empty() {
        return Err(required("postal_code", "郵便番号"));
    }
    let b = value.as_bytes();
    let ok = b.len() == 8
        && b[3] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 3 || c.is_ascii_digit());
    if ok {
        Ok(value)
    } else {
        Err(FieldError::new(
            "postal_code",
            "bad_postal_code",
            "郵便番号は NNN-NNNN の形で入力してください".into(),
            "postal_code must be written NNN-NNNN".into(),
        ))
    }
}

fn delivery(kind: &str, office: Option<&str>) -> Result<Delivery, FieldError> {
    match kind.trim() {
        "home" | "自宅" => Ok(Delivery::Home),
        "office" | "団体" | "医師会" | "薬剤師会" => {
            let name = text(
                "delivery_office",
                "送付先団体名",
                office.unwrap_or_default(),
                100,
            )?;
            Ok(Delivery::Office { name })
        }
        "" => Err(required("delivery", "送付先")),
        other => Err(FieldError::new(
            "delivery",
            "bad_delivery",
            format!("送付先「{other}」は「自宅」か「団体」です"),
            format!("delivery {other:?} is neither home nor office"),
        )),
    }
}

/// Photos: JPEG or PNG, told by their first bytes, not by what the sender claims.
pub fn photo_media_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn authorities() -> BTreeMap<String, Authority> {
        crate::config::Config::default().authorities
    }

    pub fn form() -> ApplicationForm {
        ApplicationForm {
            authority: "jma".into(),
            name_kanji: "山田　太郎".into(),
            name_kana: "ヤマダ　タロウ".into(),
            name_romaji: "YAMADA TARO".into(),
            birth_date: "1980/04/01".into(),
            profession: "医師".into(),
            registry_number: "１２３４５６".into(),
            email: "taro.yamada@example.jp".into(),
            postal_code: "113-8621".into(),
            address: "東京都文京区本駒込2-28-16".into(),
            delivery: "home".into(),
            ..ApplicationForm::default()
        }
    }

    #[test]
    fn a_good_form_is_normalised() {
        let valid = validate(&form(), &authorities(), date!(2026 - 11 - 22)).unwrap();
        assert_eq!(valid.name_kanji, "山田 太郎");
        assert_eq!(valid.registry_number, "123456");
        assert_eq!(valid.subscriber_id, "123456");
        assert_eq!(valid.birth_date, date!(1980 - 04 - 01));
        assert_eq!(valid.profession, "physician");
        let mut jpa = form();
        jpa.authority = "jpa".into();
        jpa.profession = "pharmacist".into();
        let valid = validate(&jpa, &authorities(), date!(2026 - 11 - 22)).unwrap();
        assert_eq!(valid.subscriber_id, "123456-jpa");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let bad = ApplicationForm {
            authority: "jma".into(),
            name_kanji: "".into(),
            name_kana: "やまだ".into(),
            name_romaji: "山田".into(),
            birth_date: "1980-02-30".into(),
            profession: "pharmacist".into(),
            registry_number: "12a".into(),
            email: "taro@@example".into(),
            postal_code: "1138621".into(),
            address: "x".repeat(201),
            delivery: "office".into(),
            ..ApplicationForm::default()
        };
        let errors = validate(&bad, &authorities(), date!(2026 - 11 - 22)).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| (e.field, e.code)).collect();
        assert_eq!(
            fields,
            [
                ("name_kanji", "required"),
                ("name_kana", "not_katakana"),
                ("name_romaji", "not_romaji"),
                ("birth_date", "bad_date"),
                ("email", "bad_email"),
                ("postal_code", "bad_postal_code"),
                ("address", "too_long"),
                ("registry_number", "bad_registry_number"),
                ("profession", "wrong_profession"),
                ("delivery_office", "required"),
            ]
        );
        assert!(errors.iter().all(|e| !e.ja.is_empty() && !e.en.is_empty()));
    }

    #[test]
    fn birth_dates_must_be_real_and_past() {
        let today = date!(2026 - 11 - 22);
        assert_eq!(
            birth_date("19900317", today).unwrap(),
            date!(1990 - 03 - 17)
        );
        assert_eq!(
            birth_date("１９９０-３-１７", today).unwrap(),
            date!(1990 - 03 - 17)
        );
        assert_eq!(
            birth_date("2000-02-29", today).unwrap(),
            date!(2000 - 02 - 29)
        );
        for bad in [
            "1900-02-29",
            "1990-13-01",
            "1990-3",
            "90-03-17",
            "abcd-ef-gh",
            "1990-03-17x",
        ] {
            assert_eq!(
                birth_date(bad, today).unwrap_err().code,
                "bad_date",
                "{bad}"
            );
        }
        assert_eq!(
            birth_date("2026-11-22", today).unwrap_err().code,
            "not_past"
        );
        assert_eq!(
            birth_date("1899-12-31", today).unwrap_err().code,
            "not_past"
        );
    }

    #[test]
    fn emails_and_postal_codes() {
        for good in ["a@b.jp", "taro.yamada+hpki@mail.example.co.jp"] {
            assert!(email(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a", "a@b", "a@@b.jp", ".a@b.jp", "a b@c.jp", "a@-b.jp", "a@b..jp",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert_eq!(postal_code("１１３－８６２１").unwrap(), "113-8621");
        for bad in ["1138621", "113-862", "11-38621", "abc-defg"] {
            assert!(postal_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn photos_are_told_by_their_bytes() {
        assert_eq!(
            photo_media_type(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some("image/jpeg")
        );
        assert_eq!(
            photo_media_type(b"\x89PNG\r\n\x1a\n...."),
            Some("image/png")
        );
        assert_eq!(photo_media_type(b"GIF89a"), None);
    }
}
