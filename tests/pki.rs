//! Certificates in the HPKI profile, checked by the openssl command line and against the real
//! HPKI certificates in ../shared/fixtures/real-hpki.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

use hpki_backoffice::pki::{self, Ca, Profile, Subject};
use openssl::x509::X509;
use time::macros::date;

const HC_ROLE_MEDICAL_DOCTOR: &str = "303430320606288185420001312831263024A0223120A00C060A2A830886910F01060101A2100C0E4D65646963616C20446F63746F72";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/real-hpki")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn jma_profile() -> Profile {
    Profile {
        policy_oid: pki::SIGNATURE_POLICY.into(),
        cps_uri: "http://www.pki.med.or.jp/certpolicy/".into(),
        crl_url: "http://crl.pki.med.or.jp/repository/crl/crl-sign2.crl".into(),
        role: "Medical Doctor".into(),
        years: 1,
    }
}

fn subject() -> Subject {
    Subject {
        name_romaji: "YAMADA TARO".into(),
        subscriber_id: "123456".into(),
        organization: None,
    }
}

fn jma_ca() -> Ca {
    Ca::generate_dev(
        &[
            ("C", "JP"),
            ("O", "Japan Medical Association"),
            ("OU", "Digital Certificate Center"),
            ("CN", "HPKI-01-DEV-forNonRepudiation"),
        ],
        date!(2026 - 01 - 01),
    )
    .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs openssl with `args`, returning stdout; panics with its stderr when it fails.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl on the PATH");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn hc_role_is_the_documented_bytes_and_those_of_real_certificates() {
    let medical_doctor = pki::hc_role("Medical Doctor");
    assert_eq!(hex::encode_upper(&medical_doctor), HC_ROLE_MEDICAL_DOCTOR);
    assert!(
        contains(&fixture("m5.der"), &medical_doctor),
        "the real JMA physician certificate"
    );
    assert!(
        contains(&fixture("m8.der"), &pki::hc_role("Pharmacist")),
        "the real pharmacist certificate"
    );
}

#[test]
fn an_issued_certificate_passes_openssl_and_shows_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let ca = jma_ca();
    let key = pki::generate_key().unwrap();
    let public = pki::public_of(&key).unwrap();
    let cert = pki::issue(
        &ca,
        &jma_profile(),
        &subject(),
        &public,
        date!(2026 - 11 - 23),
    )
    .unwrap();

    let ca_pem = dir.path().join("ca.pem");
    let cert_pem = dir.path().join("cert.pem");
    std::fs::write(&ca_pem, ca.cert.to_pem().unwrap()).unwrap();
    std::fs::write(&cert_pem, cert.to_pem().unwrap()).unwrap();
    // Checked as of 2026-12-01 00:00 UTC, inside the validity, whatever today is.
    let verified = openssl(&[
        "verify",
        "-attime",
        "1796083200",
        "-CAfile",
        ca_pem.to_str().unwrap(),
        cert_pem.to_str().unwrap(),
    ]);
    assert!(verified.contains(": OK"), "{verified}");

    let text = openssl(&[
        "x509",
        "-in",
        cert_pem.to_str().unwrap(),
        "-noout",
        "-text",
        "-nameopt",
        "RFC2253",
    ]);
    for expected in [
        "Version: 3 (0x2)",
        "Signature Algorithm: sha256WithRSAEncryption",
        "Public-Key: (2048 bit)",
        "Not Before: Nov 22 15:00:00 2026 GMT",
        "Not After : Nov 22 14:59:59 2027 GMT",
        "Subject: serialNumber=123456,CN=YAMADA TARO,C=JP",
        "X509v3 Key Usage: critical\n                Non Repudiation\n",
        "X509v3 Certificate Policies: critical\n                Policy: 1.2.392.100495.1.5.1.1.0.1\n                  CPS: http://www.pki.med.or.jp/certpolicy/",
        "URI:http://crl.pki.med.or.jp/repository/crl/crl-sign2.crl",
        "X509v3 Subject Directory Attributes:",
        "X509v3 Authority Key Identifier:",
        "X509v3 Subject Key Identifier:",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    for absent in [
        "Digital Signature",
        "Extended Key Usage",
        "Basic Constraints",
    ] {
        assert!(
            !text.contains(absent),
            "{absent:?} must not appear in\n{text}"
        );
    }
    // The hcRole extension's value, byte for byte.
    assert!(contains(
        &cert.to_der().unwrap(),
        &pki::hc_role("Medical Doctor")
    ));
    // The subject's string types: C and serialNumber PrintableString, CN UTF8String.
    let parsed = openssl(&["asn1parse", "-in", cert_pem.to_str().unwrap()]);
    assert!(parsed.contains("PRINTABLESTRING   :123456"), "{parsed}");
    assert!(
        parsed.contains("UTF8STRING        :YAMADA TARO"),
        "{parsed}"
    );
}

#[test]
fn the_issuer_is_the_ca_subject_byte_for_byte_even_with_two_ous() {
    // A CA named exactly as the MHLW root (C, O, OU, OU), taken from the real certificate.
    let root = X509::from_der(&fixture("m10.der")).unwrap();
    let real_subject = root.subject_name().to_der().unwrap();
    let ca = Ca::self_signed(root.subject_name(), date!(2026 - 01 - 01)).unwrap();
    let public = pki::public_of(&pki::generate_key().unwrap()).unwrap();
    let cert = pki::issue(
        &ca,
        &jma_profile(),
        &subject(),
        &public,
        date!(2026 - 11 - 23),
    )
    .unwrap();
    assert_eq!(cert.issuer_name().to_der().unwrap(), real_subject);
    assert!(contains(&cert.to_der().unwrap(), &real_subject));
    let ous = cert
        .issuer_name()
        .entries_by_nid(openssl::nid::Nid::ORGANIZATIONALUNITNAME)
        .count();
    assert_eq!(ous, 2);
}

#[test]
fn serials_are_positive_unique_and_random_enough() {
    let ca = jma_ca();
    let public = pki::public_of(&pki::generate_key().unwrap()).unwrap();
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let cert = pki::issue(
            &ca,
            &jma_profile(),
            &subject(),
            &public,
            date!(2026 - 11 - 23),
        )
        .unwrap();
        let serial = cert.serial_number().to_bn().unwrap();
        assert!(!serial.is_negative());
        assert!(serial.num_bits() >= 64 + 1, "{} bits", serial.num_bits());
        assert!(seen.insert(serial.to_vec()), "a serial repeated");
    }
}

#[test]
fn keys_and_names_outside_the_profile_are_refused() {
    let ca = jma_ca();
    let small = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap();
    let small = pki::public_of(&small).unwrap();
    let error = pki::issue(
        &ca,
        &jma_profile(),
        &subject(),
        &small,
        date!(2026 - 11 - 23),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("1024 bits"), "{error}");

    let public = pki::public_of(&pki::generate_key().unwrap()).unwrap();
    let mut bad = subject();
    bad.subscriber_id = "12345６".into();
    let error = pki::issue(&ca, &jma_profile(), &bad, &public, date!(2026 - 11 - 23))
        .unwrap_err()
        .to_string();
    assert!(error.contains("subscriber ID"), "{error}");

    let error = Ca::generate_dev(&[("L", "Tokyo")], date!(2026 - 01 - 01))
        .unwrap_err()
        .to_string();
    assert!(error.contains("\"L\""), "{error}");
}

#[test]
fn validity_starts_at_midnight_jst_and_handles_29_february() {
    let (from, to) = pki::validity(date!(2028 - 02 - 29), 1).unwrap();
    assert_eq!(from.to_string(), "Feb 28 15:00:00 2028 GMT");
    assert_eq!(to.to_string(), "Feb 28 14:59:59 2029 GMT");
    let (_, five) = pki::validity(date!(2022 - 02 - 07), 5).unwrap();
    // MEDIS's five-year certificate of 2022-02-07 runs to 2027-02-06 23:59:59 JST.
    assert_eq!(five.to_string(), "Feb  6 14:59:59 2027 GMT");
}

#[test]
fn development_cas_are_generated_once_with_a_warning_and_half_a_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = hpki_backoffice::config::Config::default();
    let (first, warnings) =
        pki::load_authorities(&config.authorities, dir.path(), date!(2026 - 11 - 22)).unwrap();
    assert_eq!(first.keys().collect::<Vec<_>>(), ["jma", "jpa"]);
    assert_eq!(warnings.len(), 2);
    assert!(warnings[0].contains("DEVELOPMENT CA"), "{}", warnings[0]);
    let (second, _) =
        pki::load_authorities(&config.authorities, dir.path(), date!(2026 - 11 - 23)).unwrap();
    assert_eq!(
        first["jma"].cert.to_der().unwrap(),
        second["jma"].cert.to_der().unwrap(),
        "the development CA is kept, not made anew"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("dev-ca-jma.key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let mut half = config.authorities.clone();
    half.get_mut("jpa").unwrap().ca_cert_file = dir.path().join("dev-ca-jpa.crt.pem");
    let error = pki::load_authorities(&half, dir.path(), date!(2026 - 11 - 22))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("authorities.jpa") && error.contains("both"),
        "{error}"
    );

    let mut bad_oid = config.authorities.clone();
    bad_oid.get_mut("jma").unwrap().policy_oid = "1.2.x".into();
    let error = pki::load_authorities(&bad_oid, dir.path(), date!(2026 - 11 - 22))
        .unwrap_err()
        .to_string();
    assert!(error.contains("authorities.jma.policy_oid"), "{error}");

    // Configured PEM files: the JPA certificate with the JMA key is refused.
    let mut mismatched = config.authorities.clone();
    let jpa = mismatched.get_mut("jpa").unwrap();
    jpa.ca_cert_file = dir.path().join("dev-ca-jpa.crt.pem");
    jpa.ca_key_file = dir.path().join("dev-ca-jma.key.pem");
    let error = pki::load_authorities(&mismatched, dir.path(), date!(2026 - 11 - 22))
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not belong"), "{error}");
}
