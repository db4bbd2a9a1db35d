//! The CRL encoder: a v2 X.509 CRL (RFC 5280, section 5) in the HPKI profile, signed by the
//! CA with sha256WithRSAEncryption.
//!
//! Written by hand because the openssl crate can parse CRLs but not build them, and rcgen
//! re-encodes the issuer name (the profile wants the CA's subject byte for byte) and cannot
//! sign with our openssl key. The DER here is small and plain, and it writes a million
//! entries into one buffer without an allocation per entry.
//!
//! The same input always gives the same bytes: entries are written in serial order, times to
//! the second, and PKCS#1 v1.5 signatures are deterministic. That is what lets an auditor
//! make a published CRL again from the log.

use hpki_events::vocabulary::ReasonCode;
use time::OffsetDateTime;

use crate::pki::{Ca, PkiError};

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The serial number's magnitude, big-endian (leading zeros allowed).
    pub serial: Vec<u8>,
    pub revoked_at: OffsetDateTime,
    pub reason: ReasonCode,
}

/// What a CRL says besides its entries.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
}

/// Serials are stored in the log as upper-case hex, as `openssl x509 -serial` prints them.
pub fn serial_from_hex(hex: &str) -> Result<Vec<u8>, PkiError> {
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_owned()
    };
    let bytes = ::hex::decode(&padded)
        .map_err(|_| PkiError::Invalid(format!("the serial {hex:?} is not hexadecimal")))?;
    // RFC 5280 4.1.2.2: at most 20 octets.
    if hex.is_empty() || trimmed(&bytes).len() > 20 {
        return Err(PkiError::Invalid(format!(
            "the serial {hex:?} is not 1 to 20 octets"
        )));
    }
    Ok(bytes)
}

/// RFC 5280 CRLReason values.
fn reason_value(reason: ReasonCode) -> Option<u8> {
    Some(match reason {
        // RFC 5280 5.3.1: the extension SHOULD be absent rather than say unspecified.
        ReasonCode::Unspecified => return None,
        ReasonCode::KeyCompromise => 1,
        ReasonCode::CaCompromise => 2,
        ReasonCode::AffiliationChanged => 3,
        ReasonCode::Superseded => 4,
        ReasonCode::CessationOfOperation => 5,
        ReasonCode::CertificateHold => 6,
        ReasonCode::RemoveFromCrl => 8,
        ReasonCode::PrivilegeWithdrawn => 9,
        ReasonCode::AaCompromise => 10,
    })
}

const SHA256_WITH_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
const OID_REASON_CODE: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x15];
const OID_CRL_NUMBER: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x14];
const OID_AUTHORITY_KEY_ID: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x23];

/// Appends a DER length.
fn length(out: &mut Vec<u8>, n: usize) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Appends tag, length and contents.
fn tlv(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    length(out, contents.len());
    out.extend_from_slice(contents);
}

/// Appends an INTEGER holding an unsigned magnitude.
fn unsigned(out: &mut Vec<u8>, magnitude: &[u8]) {
    let start = magnitude.iter().take_while(|b| **b == 0).count();
    let digits = if start == magnitude.len() {
        &[0u8][..]
    } else {
        &magnitude[start..]
    };
    let pad = digits[0] & 0x80 != 0;
    out.push(0x02);
    length(out, digits.len() + pad as usize);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
}

/// Appends a Time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5).
fn time(out: &mut Vec<u8>, at: OffsetDateTime) {
    let at = at.to_offset(time::UtcOffset::UTC);
    let year = at.year();
    let two = |out: &mut Vec<u8>, n: u8| out.extend_from_slice(&[b'0' + n / 10, b'0' + n % 10]);
    if (1950..2050).contains(&year) {
        out.extend_from_slice(&[0x17, 13]);
        two(out, (year % 100) as u8);
    } else {
        out.extend_from_slice(&[0x18, 15]);
        two(out, (year / 100) as u8);
        two(out, (year % 100) as u8);
    }
    two(out, u8::from(at.month()));
    two(out, at.day());
    two(out, at.hour());
    two(out, at.minute());
    two(out, at.second());
    out.push(b'Z');
}

/// The serial with leading zeros removed: orders numerically as (length, bytes).
fn trimmed(serial: &[u8]) -> &[u8] {
    let start = serial.iter().take_while(|b| **b == 0).count();
    &serial[start..]
}

/// Builds and signs the CRL; returns its DER. Sorts `entries` into serial order.
pub fn build(ca: &Ca, spec: &Spec, entries: &mut [Entry]) -> Result<Vec<u8>, PkiError> {
    if spec.next_update <= spec.this_update {
        return Err(PkiError::Invalid(
            "nextUpdate must come after thisUpdate".into(),
        ));
    }
    entries.sort_unstable_by(|a, b| {
        let (a, b) = (trimmed(&a.serial), trimmed(&b.serial));
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    });
    for pair in entries.windows(2) {
        if trimmed(&pair[0].serial) == trimmed(&pair[1].serial) {
            return Err(PkiError::Invalid(format!(
                "the serial {} is listed twice",
                ::hex::encode_upper(trimmed(&pair[0].serial))
            )));
        }
    }
    let issuer = ca.cert.subject_name().to_der()?;
    let key_id = ca
        .cert
        .subject_key_id()
        .ok_or_else(|| PkiError::Invalid("the CA certificate has no subjectKeyIdentifier".into()))?
        .as_slice()
        .to_vec();

    // revokedCertificates: each entry written straight into one buffer.
    let mut revoked = Vec::with_capacity(entries.len() * 48);
    let mut entry = Vec::with_capacity(64);
    for e in entries.iter() {
        entry.clear();
        unsigned(&mut entry, &e.serial);
        time(&mut entry, e.revoked_at);
        if let Some(code) = reason_value(e.reason) {
            // crlEntryExtensions: SEQUENCE { SEQUENCE { reasonCode, OCTET STRING { ENUMERATED } } }
            entry.extend_from_slice(&[0x30, 0x0c, 0x30, 0x0a]);
            entry.extend_from_slice(OID_REASON_CODE);
            entry.extend_from_slice(&[0x04, 0x03, 0x0a, 0x01, code]);
        }
        tlv(&mut revoked, 0x30, &entry);
    }

    // crlExtensions, in the order of the real JMA and MEDIS CRLs: AKI, then cRLNumber.
    let mut aki_value = Vec::new();
    let mut key = Vec::new();
    tlv(&mut key, 0x80, &key_id);
    tlv(&mut aki_value, 0x30, &key);
    let mut aki = OID_AUTHORITY_KEY_ID.to_vec();
    tlv(&mut aki, 0x04, &aki_value);
    let mut number_value = Vec::new();
    unsigned(&mut number_value, &spec.number.to_be_bytes());
    let mut number = OID_CRL_NUMBER.to_vec();
    tlv(&mut number, 0x04, &number_value);
    let mut extensions = Vec::new();
    tlv(&mut extensions, 0x30, &aki);
    tlv(&mut extensions, 0x30, &number);
    let mut extensions_seq = Vec::new();
    tlv(&mut extensions_seq, 0x30, &extensions);

    let mut tbs_body = Vec::with_capacity(revoked.len() + issuer.len() + 256);
    tbs_body.extend_from_slice(&[0x02, 0x01, 0x01]); // v2
    tbs_body.extend_from_slice(SHA256_WITH_RSA);
    tbs_body.extend_from_slice(&issuer);
    time(&mut tbs_body, spec.this_update);
    time(&mut tbs_body, spec.next_update);
    if !revoked.is_empty() {
        // RFC 5280: absent, not empty, when nothing is revoked.
        tlv(&mut tbs_body, 0x30, &revoked);
    }
    drop(revoked);
    tlv(&mut tbs_body, 0xa0, &extensions_seq);
    let mut tbs = Vec::with_capacity(tbs_body.len() + 8);
    tlv(&mut tbs, 0x30, &tbs_body);
    drop(tbs_body);

    let signature = ca.sign_sha256(&tbs)?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(&signature);

    let mut body = tbs;
    body.extend_from_slice(SHA256_WITH_RSA);
    tlv(&mut body, 0x03, &bits);
    let mut crl = Vec::with_capacity(body.len() + 8);
    tlv(&mut crl, 0x30, &body);
    Ok(crl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn lengths_integers_and_times_are_der() {
        let mut out = Vec::new();
        length(&mut out, 0x7f);
        length(&mut out, 0x80);
        length(&mut out, 0x1_0000);
        assert_eq!(out, [0x7f, 0x81, 0x80, 0x83, 0x01, 0x00, 0x00]);
        let mut out = Vec::new();
        unsigned(&mut out, &[0x00, 0x00, 0x9a]);
        unsigned(&mut out, &[0x00]);
        unsigned(&mut out, &[0x01, 0x00]);
        assert_eq!(
            out,
            [
                0x02, 0x02, 0x00, 0x9a, 0x02, 0x01, 0x00, 0x02, 0x02, 0x01, 0x00
            ]
        );
        let mut out = Vec::new();
        time(&mut out, datetime!(2026-11-22 02:00:00 +09:00));
        time(&mut out, datetime!(2050-01-01 00:00:00 UTC));
        assert_eq!(&out[..15], b"\x17\x0d261121170000Z");
        assert_eq!(&out[15..], b"\x18\x0f20500101000000Z");
    }

    #[test]
    fn serials_read_from_hex_of_any_length() {
        assert_eq!(serial_from_hex("9A").unwrap(), [0x9a]);
        assert_eq!(serial_from_hex("100").unwrap(), [0x01, 0x00]);
        assert!(serial_from_hex("XY").is_err());
    }
}
