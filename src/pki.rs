//! Certificates in the HPKI profile (`../shared/hpki-profile.md`), signed with openssl.
//!
//! openssl builds and signs; the four extensions that openssl's configuration strings cannot
//! express exactly (hcRole in subjectDirectoryAttributes, the critical certificate policy with
//! its CPS URI, the CRL distribution point) are written as DER by the small [`der`] module,
//! so their bytes are the profile's bytes and nothing else. The issuer name is copied from
//! the CA certificate's subject as openssl holds it, which keeps every attribute, repeated
//! OUs included, and its string type: the bytes are the CA's bytes.

use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time, Asn1Type};
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, PKeyRef, Private, Public};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Extension, X509Name, X509NameBuilder, X509NameRef};
use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time};

use crate::clock::JST;

/// The OID of hcRole's attribute type, id-hcpki-at-healthcareActor (ISO 17090).
pub const HC_ACTOR: &str = "1.0.17090.0.1";
/// The coding scheme of the Japanese HPKI roles, named inside hcRole.
pub const HPKI_ROLE_SCHEME: &str = "1.2.392.100495.1.6.1.1";
/// The signature certificate policy of the HPKI end-entity certificates.
pub const SIGNATURE_POLICY: &str = "1.2.392.100495.1.5.1.1.0.1";
const ID_QT_CPS: &str = "1.3.6.1.5.5.7.2.1";
const SUBJECT_DIRECTORY_ATTRIBUTES: &str = "2.5.29.9";
const CERTIFICATE_POLICIES: &str = "2.5.29.32";
const CRL_DISTRIBUTION_POINTS: &str = "2.5.29.31";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("openssl: {0}")]
    Openssl(#[from] ErrorStack),
    #[error("{0}")]
    Invalid(String),
}

/// An issuing CA: its certificate and its signing key.
#[derive(Clone)]
pub struct Ca {
    pub cert: X509,
    key: PKey<Private>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Ca")
            .field("subject", &self.cert.subject_name())
            .finish_non_exhaustive()
    }
}

impl Ca {
    pub fn new(cert: X509, key: PKey<Private>) -> Result<Ca, PkiError> {
        if !cert.public_key()?.public_eq(&key) {
            return Err(PkiError::Invalid(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        Ok(Ca { cert, key })
    }

    /// Reads a CA certificate and its key from PEM.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Ca, PkiError> {
        Ca::new(X509::from_pem(cert)?, PKey::private_key_from_pem(key)?)
    }

    /// A self-signed development CA with an RSA-2048 key, valid ten years from `first_day`.
    /// `subject` is a list of (attribute, value) pairs in order; attributes may repeat.
    pub fn generate_dev(subject: &[(&str, &str)], first_day: Date) -> Result<Ca, PkiError> {
        let mut name = X509NameBuilder::new()?;
        for (attribute, value) in subject {
            let kind = if *attribute == "C" {
                Asn1Type::PRINTABLESTRING
            } else {
                Asn1Type::UTF8STRING
            };
            check_attribute(attribute)?;
            name.append_entry_by_text_with_type(attribute, value, kind)?;
        }
        Ca::self_signed(&name.build(), first_day)
    }

    /// A self-signed CA named `name` (kept as it is, byte for byte), with a fresh RSA-2048 key.
    pub fn self_signed(name: &X509NameRef, first_day: Date) -> Result<Ca, PkiError> {
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let mut builder = X509::builder()?;
        builder.set_version(2)?;
        let serial = random_serial()?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(name)?;
        builder.set_issuer_name(name)?;
        builder.set_pubkey(&key)?;
        let (not_before, not_after) = validity(first_day, 10)?;
        builder.set_not_before(&not_before)?;
        builder.set_not_after(&not_after)?;
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(ski)?;
        builder.sign(&key, MessageDigest::sha256())?;
        Ca::new(builder.build(), key)
    }

    /// Signs `data` with the CA key: SHA-256, RSA PKCS#1 v1.5 (deterministic).
    pub fn sign_sha256(&self, data: &[u8]) -> Result<Vec<u8>, PkiError> {
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &self.key)?;
        signer.update(data)?;
        Ok(signer.sign_to_vec()?)
    }

    pub fn subject(&self) -> &X509NameRef {
        self.cert.subject_name()
    }

    pub fn key_pem(&self) -> Result<Vec<u8>, PkiError> {
        Ok(self.key.private_key_to_pem_pkcs8()?)
    }
}

/// What an authority puts in every end-entity certificate it issues.
#[derive(Clone, Debug)]
pub struct Profile {
    pub policy_oid: String,
    pub cps_uri: String,
    pub crl_url: String,
    /// The hcRole text: `Medical Doctor`, `Pharmacist`.
    pub role: String,
    /// Validity in years, counted from the first day.
    pub years: u32,
}

/// Who a certificate is for.
#[derive(Clone, Debug)]
pub struct Subject {
    /// The name in romaji, the certificate's CN.
    pub name_romaji: String,
    /// The CA-assigned subscriber ID, the subject's serialNumber.
    pub subscriber_id: String,
    /// The facility, when there is one.
    pub organization: Option<String>,
}

/// Issues an end-entity signature certificate for `public_key`, valid from 00:00 JST on
/// `first_day` to 23:59:59 JST on the day before the same date `profile.years` years later.
pub fn issue(
    ca: &Ca,
    profile: &Profile,
    subject: &Subject,
    public_key: &PKeyRef<Public>,
    first_day: Date,
) -> Result<X509, PkiError> {
    let rsa = public_key
        .rsa()
        .map_err(|_| PkiError::Invalid("the subject key is not an RSA key".into()))?;
    if rsa.size() != 256 {
        return Err(PkiError::Invalid(format!(
            "the subject key has {} bits; HPKI certificates carry RSA-2048 keys",
            rsa.size() * 8
        )));
    }
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let serial = random_serial()?;
    builder.set_serial_number(&serial)?;
    builder.set_issuer_name(ca.subject())?;
    let name = subject_name(subject)?;
    builder.set_subject_name(&name)?;
    builder.set_pubkey(public_key)?;
    let (not_before, not_after) = validity(first_day, profile.years)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;

    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&builder.x509v3_context(Some(&ca.cert), None))?;
    builder.append_extension(aki)?;
    let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(Some(&ca.cert), None))?;
    builder.append_extension(ski)?;
    builder.append_extension(KeyUsage::new().critical().non_repudiation().build()?)?;
    builder.append_extension(der_extension(
        CRL_DISTRIBUTION_POINTS,
        false,
        &der::crl_distribution_point(&profile.crl_url),
    )?)?;
    builder.append_extension(der_extension(
        SUBJECT_DIRECTORY_ATTRIBUTES,
        false,
        &hc_role(&profile.role),
    )?)?;
    builder.append_extension(der_extension(
        CERTIFICATE_POLICIES,
        true,
        &der::certificate_policy(&profile.policy_oid, &profile.cps_uri),
    )?)?;
    builder.sign(&ca.key, MessageDigest::sha256())?;
    Ok(builder.build())
}

/// The subjectDirectoryAttributes value carrying hcRole `role`.
pub fn hc_role(role: &str) -> Vec<u8> {
    use der::*;
    let coded_data = explicit(
        0,
        &set(&[
            explicit(0, &oid(HPKI_ROLE_SCHEME)),
            explicit(2, &utf8(role)),
        ]),
    );
    let actor = sequence(&[coded_data]);
    let attribute = sequence(&[oid(HC_ACTOR), set(&[set(&[actor])])]);
    sequence(&[attribute])
}

/// A positive serial number of 127 bits, the top one set: 126 random bits.
pub fn random_serial() -> Result<Asn1Integer, ErrorStack> {
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::ONE, false)?;
    serial.to_asn1_integer()
}

/// 00:00:00 JST on `first_day`, and 23:59:59 JST on the day before the same date `years` later
/// (a certificate from 29 February ends on 28 February).
pub fn validity(first_day: Date, years: u32) -> Result<(Asn1Time, Asn1Time), PkiError> {
    let start = PrimitiveDateTime::new(first_day, Time::MIDNIGHT).assume_offset(JST);
    let year = first_day.year() + years as i32;
    // As the Civil Code counts a period (Art. 143): the day before the corresponding day, or
    // the end of the month when it has none (29 February in a common year).
    let last_day = match Date::from_calendar_date(year, first_day.month(), first_day.day()) {
        Ok(same_date) => same_date - Duration::days(1),
        Err(_) => Date::from_calendar_date(year, Month::February, 28)
            .map_err(|e| PkiError::Invalid(format!("validity: {e}")))?,
    };
    let end = PrimitiveDateTime::new(last_day, Time::from_hms(23, 59, 59).expect("a time"))
        .assume_offset(JST);
    Ok((asn1_time(start)?, asn1_time(end)?))
}

fn asn1_time(at: OffsetDateTime) -> Result<Asn1Time, ErrorStack> {
    Asn1Time::from_unix(at.unix_timestamp() as _)
}

fn subject_name(subject: &Subject) -> Result<X509Name, PkiError> {
    let printable = |field: &str, value: &str| {
        let ok = !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c));
        if ok {
            Ok(())
        } else {
            Err(PkiError::Invalid(format!(
                "{field} {value:?} must be a non-empty PrintableString (letters, digits, space and '()+,-./:=?)"
            )))
        }
    };
    printable("subscriber ID", &subject.subscriber_id)?;
    if subject.name_romaji.trim().is_empty() {
        return Err(PkiError::Invalid("the romaji name is empty".into()));
    }
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid_with_type(Nid::COUNTRYNAME, "JP", Asn1Type::PRINTABLESTRING)?;
    if let Some(organization) = &subject.organization {
        name.append_entry_by_nid_with_type(
            Nid::ORGANIZATIONNAME,
            organization,
            Asn1Type::UTF8STRING,
        )?;
    }
    name.append_entry_by_nid_with_type(
        Nid::COMMONNAME,
        &subject.name_romaji,
        Asn1Type::UTF8STRING,
    )?;
    name.append_entry_by_nid_with_type(
        Nid::SERIALNUMBER,
        &subject.subscriber_id,
        Asn1Type::PRINTABLESTRING,
    )?;
    Ok(name.build())
}

fn der_extension(oid: &str, critical: bool, value: &[u8]) -> Result<X509Extension, ErrorStack> {
    let oid = Asn1Object::from_str(oid)?;
    let value = Asn1OctetString::new_from_bytes(value)?;
    X509Extension::new_from_der(&oid, critical, &value)
}

fn check_attribute(attribute: &str) -> Result<(), PkiError> {
    match attribute {
        "C" | "O" | "OU" | "CN" | "serialNumber" => Ok(()),
        other => Err(PkiError::Invalid(format!(
            "name attribute {other:?} is not one of C, O, OU, CN, serialNumber"
        ))),
    }
}

/// Just enough DER to write the profile's extensions. Written by hand: the values are a few
/// fixed shapes, and the DER crates' derive machinery would be more code than this.
pub mod der {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    pub fn sequence(parts: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }

    pub fn set(parts: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x31, &parts.concat())
    }

    /// An explicit context tag `[n]` around `inner`.
    pub fn explicit(n: u8, inner: &[u8]) -> Vec<u8> {
        tlv(0xA0 | n, inner)
    }

    pub fn utf8(text: &str) -> Vec<u8> {
        tlv(0x0C, text.as_bytes())
    }

    pub fn ia5(text: &str) -> Vec<u8> {
        tlv(0x16, text.as_bytes())
    }

    /// An OBJECT IDENTIFIER from its dotted form. Panics on a malformed OID: every OID here is
    /// a constant or comes from validated configuration.
    pub fn oid(dotted: &str) -> Vec<u8> {
        let arcs: Vec<u64> = dotted
            .split('.')
            .map(|arc| arc.parse().expect("a dotted OID"))
            .collect();
        assert!(arcs.len() >= 2, "an OID has at least two arcs");
        let mut content = Vec::new();
        let mut push = |mut value: u64| {
            let mut bytes = vec![(value & 0x7F) as u8];
            value >>= 7;
            while value > 0 {
                bytes.push(0x80 | (value & 0x7F) as u8);
                value >>= 7;
            }
            bytes.reverse();
            content.extend(bytes);
        };
        push(arcs[0] * 40 + arcs[1]);
        for arc in &arcs[2..] {
            push(*arc);
        }
        tlv(0x06, &content)
    }

    /// certificatePolicies with one policy and its CPS URI qualifier.
    pub fn certificate_policy(policy: &str, cps_uri: &str) -> Vec<u8> {
        let qualifier = sequence(&[oid(super::ID_QT_CPS), ia5(cps_uri)]);
        sequence(&[sequence(&[oid(policy), sequence(&[qualifier])])])
    }

    /// cRLDistributionPoints with one full-name URI.
    pub fn crl_distribution_point(uri: &str) -> Vec<u8> {
        let uri = tlv(0x86, uri.as_bytes());
        sequence(&[sequence(&[explicit(0, &explicit(0, &uri))])])
    }

    /// Whether `dotted` is an OID [`oid`] can encode.
    pub fn is_oid(dotted: &str) -> bool {
        let arcs: Vec<&str> = dotted.split('.').collect();
        arcs.len() >= 2
            && arcs
                .iter()
                .all(|a| !a.is_empty() && a.len() <= 18 && a.bytes().all(|b| b.is_ascii_digit()))
            && matches!(arcs[0], "0" | "1" | "2")
    }
}

/// A fresh RSA-2048 key pair: the second certificate's, or a card's in the demo and tests.
pub fn generate_key() -> Result<PKey<Private>, ErrorStack> {
    PKey::from_rsa(Rsa::generate(2048)?)
}

/// The public half of a key, as a `PKey<Public>`.
pub fn public_of(key: &PKeyRef<Private>) -> Result<PKey<Public>, ErrorStack> {
    PKey::public_key_from_der(&key.public_key_to_der()?)
}

/// The CA of each configured authority: loaded from its PEM files, or, when both file names
/// are empty, a development CA generated once under `keys_dir` and reused on later starts.
/// Returns the CAs and a warning for each development CA in use.
pub fn load_authorities(
    authorities: &std::collections::BTreeMap<String, crate::config::Authority>,
    keys_dir: &std::path::Path,
    today: Date,
) -> Result<(std::collections::BTreeMap<String, Ca>, Vec<String>), PkiError> {
    let mut cas = std::collections::BTreeMap::new();
    let mut warnings = Vec::new();
    for (id, authority) in authorities {
        if !der::is_oid(&authority.policy_oid) {
            return Err(PkiError::Invalid(format!(
                "authorities.{id}.policy_oid {:?} is not a dotted OID such as 1.2.392.100495.1.5.1.1.0.1",
                authority.policy_oid
            )));
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                PkiError::Invalid(format!(
                    "authorities.{id}: cannot read {}: {e}",
                    path.display()
                ))
            })
        };
        let configured = (
            authority.ca_cert_file.as_os_str().is_empty(),
            authority.ca_key_file.as_os_str().is_empty(),
        );
        let ca = match configured {
            (false, false) => Ca::from_pem(
                &read(&authority.ca_cert_file)?,
                &read(&authority.ca_key_file)?,
            )
            .map_err(|e| PkiError::Invalid(format!("authorities.{id}: {e}")))?,
            (true, true) => {
                let cert = keys_dir.join(format!("dev-ca-{id}.crt.pem"));
                let key = keys_dir.join(format!("dev-ca-{id}.key.pem"));
                let ca = if cert.exists() && key.exists() {
                    Ca::from_pem(&read(&cert)?, &read(&key)?)?
                } else {
                    let ca = Ca::generate_dev(
                        &[
                            ("C", "JP"),
                            ("O", &format!("{} (DEVELOPMENT)", authority.name_en)),
                            ("OU", "hpki-backoffice development CA"),
                            (
                                "CN",
                                &format!("HPKI-DEV-{}-forNonRepudiation", id.to_uppercase()),
                            ),
                        ],
                        today,
                    )?;
                    std::fs::create_dir_all(keys_dir).map_err(|e| {
                        PkiError::Invalid(format!("cannot create {}: {e}", keys_dir.display()))
                    })?;
                    write_private(&key, &ca.key_pem()?)?;
                    std::fs::write(&cert, ca.cert.to_pem()?).map_err(|e| {
                        PkiError::Invalid(format!("cannot write {}: {e}", cert.display()))
                    })?;
                    ca
                };
                warnings.push(format!(
                    "authority {id} signs with a DEVELOPMENT CA ({}): certificates it issues are for testing only; set authorities.{id}.ca_cert_file and ca_key_file for production",
                    cert.display()
                ));
                ca
            }
            _ => {
                return Err(PkiError::Invalid(format!(
                    "authorities.{id}: set both ca_cert_file and ca_key_file, or neither"
                )));
            }
        };
        cas.insert(id.clone(), ca);
    }
    Ok((cas, warnings))
}

/// Writes a secret file readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), PkiError> {
    crate::secrets::write_private(path, bytes)
        .map_err(|e| PkiError::Invalid(format!("cannot write {}: {e}", path.display())))
}

/// An ASN.1 time as an `OffsetDateTime` (UTC).
pub fn to_time(at: &openssl::asn1::Asn1TimeRef) -> Result<OffsetDateTime, PkiError> {
    let diff = Asn1Time::from_unix(0)?.diff(at)?;
    let seconds = diff.days as i64 * 86_400 + diff.secs as i64;
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|e| PkiError::Invalid(format!("certificate time out of range: {e}")))
}

/// A name as one line, `C=JP, O=..., CN=...`, for people.
pub fn name_text(name: &X509NameRef) -> String {
    name.entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = String::from_utf8_lossy(entry.data().as_slice());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
