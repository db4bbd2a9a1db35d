//! The initial-registration QR's rules: its last usable day, its password and its token.

use openssl::hash::{MessageDigest, hash};
use openssl::pkey::PKey;
use openssl::sign::Signer;
use time::{Date, Month};
use uuid::Uuid;

/// The last day a QR issued on `issued` (a JST date) can be used: three months from the issue
/// date counted as the Civil Code counts (Art. 140, 143). The issue day is not counted, so the
/// period starts the next day and ends at the end of the day before the day that corresponds
/// to that start three months later; when the last month has no corresponding day, it ends at
/// the end of that month.
pub fn last_usable_day(issued: Date) -> Date {
    let start = issued.next_day().expect("a date before 9999");
    let (year, month) = add_months(start.year(), start.month(), 3);
    match Date::from_calendar_date(year, month, start.day()) {
        Ok(corresponding) => corresponding.previous_day().expect("a date after year 1"),
        Err(_) => last_of_month(year, month),
    }
}

fn add_months(year: i32, month: Month, months: u8) -> (i32, Month) {
    let index = month as i32 - 1 + months as i32;
    let month = Month::try_from((index % 12 + 1) as u8).expect("1 to 12");
    (year + index / 12, month)
}

fn last_of_month(year: i32, month: Month) -> Date {
    Date::from_calendar_date(year, month, time::util::days_in_month(month, year))
        .expect("a month's last day")
}

/// Reads an entered password as an 8-digit birth date, `YYYYMMDD`. Full-width digits are read
/// as ASCII; anything that cannot be eight digits is refused (and is not a password attempt).
pub fn read_password(entered: &str) -> Option<String> {
    let digits = crate::intake::ascii_digits(entered.trim());
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// The QR's token: HMAC-SHA256 of its id under the server's QR secret, in base64url (43
/// characters, 256 bits). The log holds the id and [`token_hash`], never the token; only a
/// holder of the secret (the print and mail processors, through this function) can make the
/// registration URL again.
pub fn token(secret: &[u8], qr_id: Uuid) -> String {
    let key = PKey::hmac(secret).expect("an HMAC key from any bytes");
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("HMAC-SHA256");
    signer.update(b"hpki-qr-token/1\n").expect("hashing");
    signer.update(qr_id.as_bytes()).expect("hashing");
    let mac = signer.sign_to_vec().expect("HMAC-SHA256");
    base64url(&mac)
}

/// How the log names a token: the SHA-256 of its text, in hex. The landing page finds a QR
/// by hashing the token it was given.
pub fn token_hash(token: &str) -> String {
    hex::encode(hash(MessageDigest::sha256(), token.as_bytes()).expect("SHA-256"))
}

/// The registration URL printed as the QR code or sent by e-mail.
pub fn registration_url(portal_base: &str, token: &str) -> String {
    format!("{}/r/{token}", portal_base.trim_end_matches('/'))
}

fn base64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn the_three_examples_of_the_domain() {
        assert_eq!(
            last_usable_day(date!(2026 - 11 - 22)),
            date!(2027 - 02 - 22)
        );
        assert_eq!(
            last_usable_day(date!(2026 - 11 - 30)),
            date!(2027 - 02 - 28)
        );
        assert_eq!(
            last_usable_day(date!(2027 - 11 - 30)),
            date!(2028 - 02 - 29)
        );
    }

    #[test]
    fn month_ends_and_year_ends() {
        // Issued on the last day of a month: the period starts on the 1st.
        assert_eq!(
            last_usable_day(date!(2026 - 10 - 31)),
            date!(2027 - 01 - 31)
        );
        assert_eq!(
            last_usable_day(date!(2027 - 01 - 31)),
            date!(2027 - 04 - 30)
        );
        // The 29th: the period starts on the 30th, and February has no 30th.
        assert_eq!(
            last_usable_day(date!(2026 - 11 - 29)),
            date!(2027 - 02 - 28)
        );
        assert_eq!(
            last_usable_day(date!(2026 - 12 - 31)),
            date!(2027 - 03 - 31)
        );
        assert_eq!(
            last_usable_day(date!(2026 - 09 - 15)),
            date!(2026 - 12 - 15)
        );
    }

    #[test]
    fn the_last_day_of_february_gives_three_whole_months() {
        // The period starts on 1 March and runs three whole months: to 31 May, not 28 May.
        assert_eq!(
            last_usable_day(date!(2026 - 02 - 28)),
            date!(2026 - 05 - 31)
        );
        assert_eq!(
            last_usable_day(date!(2028 - 02 - 28)),
            date!(2028 - 05 - 28)
        );
        assert_eq!(
            last_usable_day(date!(2028 - 02 - 29)),
            date!(2028 - 05 - 31)
        );
    }

    #[test]
    fn over_four_years_the_last_day_never_goes_back_and_stays_near_three_months() {
        let mut day = date!(2026 - 01 - 01);
        let mut previous = last_usable_day(day);
        while day < date!(2030 - 01 - 01) {
            day = day.next_day().unwrap();
            let last = last_usable_day(day);
            assert!(
                last >= previous,
                "issued {day}: {last} comes before {previous}"
            );
            let days = (last - day).whole_days();
            assert!((88..=92).contains(&days), "issued {day}: {days} days");
            previous = last;
        }
    }

    #[test]
    fn passwords_are_eight_digits_full_width_or_not() {
        assert_eq!(read_password("19900317").as_deref(), Some("19900317"));
        assert_eq!(
            read_password("１９９００３１７").as_deref(),
            Some("19900317")
        );
        assert_eq!(read_password(" 19900317 ").as_deref(), Some("19900317"));
        for bad in [
            "",
            "1990031",
            "199003170",
            "1990O317",
            "1990-03-17",
            "abcdefgh",
        ] {
            assert_eq!(read_password(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_long_secret_dependent_and_hash_stably() {
        let id = Uuid::from_u128(7);
        let a = token(b"secret one", id);
        assert_eq!(a.len(), 43);
        assert_eq!(a, token(b"secret one", id));
        assert_ne!(a, token(b"secret two", id));
        assert_ne!(a, token(b"secret one", Uuid::from_u128(8)));
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
        assert_eq!(
            registration_url("https://reg.example.jp/", &a),
            format!("https://reg.example.jp/r/{a}")
        );
    }
}
