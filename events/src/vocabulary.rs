//! Every event type the log may hold, with the current schema version of each and the
//! upcasters that read older payloads as the current type.
//!
//! Adding a type: a payload struct, a line in `vocabulary!`. Changing a payload's shape: bump its
//! version in `vocabulary!` and add an arm to `upcast` that turns the previous shape into the new
//! one. Stored bytes are never rewritten; old shapes are upcast every time they are read.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::Date;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event type {0:?} is not known")]
    UnknownType(String),
    #[error("{event_type} has no schema version {version} (the newest is {current})")]
    UnknownVersion {
        event_type: String,
        version: u32,
        current: u32,
    },
    #[error("payload of {event_type} v{version} has the wrong shape: {source}")]
    Shape {
        event_type: String,
        version: u32,
        source: serde_json::Error,
    },
    #[error("recorded_at {0:?} is not an RFC 3339 time")]
    BadTime(String),
    #[error("the stored bytes are not an event: {0}")]
    NotAnEvent(serde_json::Error),
}

macro_rules! vocabulary {
    ($($name:ident = $version:literal),* $(,)?) => {
        /// One event of the back office's history.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Event { $($name($name)),* }

        impl Event {
            /// The stored type name.
            pub fn type_name(&self) -> &'static str {
                match self { $(Event::$name(_) => stringify!($name)),* }
            }

            /// The schema version this build writes.
            pub fn schema_version(&self) -> u32 {
                match self { $(Event::$name(_) => $version),* }
            }

            pub fn to_payload(&self) -> Result<Value, serde_json::Error> {
                match self { $(Event::$name(p) => serde_json::to_value(p)),* }
            }

            /// Serializes the payload alone, as its own type does.
            pub fn serialize_payload<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self { $(Event::$name(p) => p.serialize(serializer)),* }
            }

            /// Reads a stored payload of any known version as the current type.
            pub fn decode(event_type: &str, version: u32, payload: Value) -> Result<Event, DecodeError> {
                let current = match event_type {
                    $(stringify!($name) => $version,)*
                    _ => return Err(DecodeError::UnknownType(event_type.to_owned())),
                };
                if version == 0 || version > current {
                    return Err(DecodeError::UnknownVersion { event_type: event_type.to_owned(), version, current });
                }
                let payload = (version..current).try_fold(payload, |payload, from| {
                    upcast(event_type, from, payload).map_err(|source| DecodeError::Shape {
                        event_type: event_type.to_owned(), version: from, source,
                    })
                })?;
                let shape = |source| DecodeError::Shape { event_type: event_type.to_owned(), version: current, source };
                match event_type {
                    $(stringify!($name) => serde_json::from_value(payload).map(Event::$name).map_err(shape),)*
                    _ => unreachable!("checked above"),
                }
            }

            /// As [`Event::decode`], from the payload's JSON text: a payload already at the
            /// current version goes straight into its type, without building a `Value`.
            pub fn decode_raw(event_type: &str, version: u32, payload: &str) -> Result<Event, DecodeError> {
                let current = Event::TYPES.iter().find(|(name, _)| *name == event_type).map(|(_, v)| *v);
                if current != Some(version) {
                    let value = serde_json::from_str(payload).map_err(DecodeError::NotAnEvent)?;
                    return Event::decode(event_type, version, value);
                }
                let shape = |source| DecodeError::Shape { event_type: event_type.to_owned(), version, source };
                match event_type {
                    $(stringify!($name) => serde_json::from_str(payload).map(Event::$name).map_err(shape),)*
                    _ => unreachable!("checked above"),
                }
            }

            /// Every known type name with its current version.
            pub const TYPES: &'static [(&'static str, u32)] = &[$((stringify!($name), $version)),*];
        }

        $(impl From<$name> for Event {
            fn from(payload: $name) -> Event { Event::$name(payload) }
        })*
    };
}

vocabulary! {
    // An applicant's stream, `subscriber-<authority>-<registry number>`: every application of
    // one person to one authority, and everything issued to them.
    ApplicationReceived = 2,
    PhotoAttached = 1,
    DocumentsChecked = 1,
    ApplicationApproved = 1,
    ApplicationRejected = 1,
    CardDeferred = 1,
    CardCertificateIssued = 1,
    SecondCertificateIssued = 1,
    QrIssued = 1,
    // After issuance, on the same subscriber stream: the QR's life, the phone, reissues,
    // loss reports and revocations under dual control.
    PasswordAccepted = 1,
    PasswordFailed = 1,
    QrLocked = 1,
    QrExpired = 1,
    QrReminderDue = 1,
    QrSuperseded = 1,
    QrInvalidated = 1,
    DeviceRegistered = 2,
    DeviceLabelled = 1,
    DeviceRemoved = 1,
    ReissueRequested = 1,
    ReissueDocumentsChecked = 1,
    ReissueApproved = 1,
    ReissueRejected = 1,
    LossReported = 1,
    LossCaseClosed = 1,
    RevocationProposed = 1,
    RevocationApproved = 1,
    RevocationRejected = 1,
    RevocationExpired = 1,
    CertificateRevoked = 1,
    // An authority's card stock, `cardstock-<authority>`: blank cards received and used, and
    // the queue of approved applications waiting for a card.
    CardStockReceived = 1,
    CardStockUsed = 1,
    CardQueued = 1,
    CardAllocated = 1,
    // What the processors did (issue 5). Print batches and their confirmations on
    // `print-<authority>`; each card's printing, mailing or spoiling on its subscriber stream.
    PrintBatchCreated = 1,
    PrintConfirmationReceived = 1,
    QrCardPrinted = 1,
    QrCardMailed = 1,
    QrCardSpoiled = 1,
    // Each e-mail on `mail-<mail id>`, the mail id being the id of the event that called for it.
    MailSent = 1,
    MailDeferred = 1,
    MailFailed = 1,
    MailRetryRequested = 1,
    // Each authority's CRLs on `crl-<authority>`, one event per CRL number.
    CrlPublished = 1,
    // Each staff account on `staff-<name>` (issue 7): who may do what, and how they signed
    // in. Credentials (password hash, passkeys, API-token hashes, setup links) are kept beside
    // the log, never in it; these events say when they changed.
    StaffAccountCreated = 1,
    StaffRolesChanged = 1,
    StaffSetupLinkIssued = 1,
    StaffPasswordSet = 1,
    StaffPasskeyRegistered = 1,
    StaffApiTokenIssued = 1,
    StaffSignedIn = 1,
    StaffSignInFailed = 1,
    StaffLockedOut = 1,
    StaffUnlocked = 1,
    StaffDisabled = 1,
    // Each authority's managed settings on `authority-<id>` (issue 7): what an administrator
    // changed in the console, overriding the configuration file's value field by field.
    AuthoritySettingsChanged = 1,
}

/// Turns a payload of version `from` into version `from + 1`.
fn upcast(event_type: &str, from: u32, mut payload: Value) -> Result<Value, serde_json::Error> {
    match (event_type, from) {
        // Version 1 named only the channel; version 2 names the source, with the batch row for
        // idempotent CSV import. Everything else is unchanged.
        ("ApplicationReceived", 1) => {
            let object = payload.as_object_mut().ok_or_else(|| {
                serde::de::Error::custom("an ApplicationReceived v1 payload is an object")
            })?;
            let channel = object
                .remove("channel")
                .ok_or_else(|| serde::de::Error::missing_field("channel"))?;
            object.insert(
                "source".into(),
                serde_json::json!({"channel": channel, "batch": null}),
            );
            Ok(payload)
        }
        // Version 2 adds the verifier's stored credential; phones registered before it (by
        // the JSON API) have none, and cannot sign in on the portal.
        ("DeviceRegistered", 1) => {
            let object = payload.as_object_mut().ok_or_else(|| {
                serde::de::Error::custom("a DeviceRegistered v1 payload is an object")
            })?;
            object.insert("passkey".into(), Value::Null);
            Ok(payload)
        }
        _ => Ok(payload),
    }
}

/// How an application reached the office.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The JSON API, used by the applicant-facing web form.
    Web,
    /// Staff keying in a paper form.
    Paper,
    /// A CSV batch from a prefectural association.
    Csv,
}

/// Where an application came from; a CSV row is named by the file's hash and its line, so
/// importing the same file twice adds nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub channel: Channel,
    pub batch: Option<BatchRow>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRow {
    pub file_sha256: String,
    pub line: u64,
}

/// Where the QR card (and the IC card) is sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Delivery {
    /// The subscriber's postal address.
    Home,
    /// An association office, which hands the card over in person.
    Office { name: String },
}

/// A secret sealed with AES-256-GCM under the key-encryption key `kek` (named by its id);
/// `data` is base64 of nonce, ciphertext and tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub kek: String,
    pub data: String,
}

/// A face photo, kept beside the log by its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhotoRef {
    pub sha256: String,
    pub media_type: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationReceived {
    pub application_id: Uuid,
    pub authority: String,
    pub registry_number: String,
    pub subscriber_id: String,
    pub name_kanji: String,
    pub name_kana: String,
    pub name_romaji: String,
    /// Sealed: the birth date is the QR's password and never stands in the log in clear.
    pub birth_date: Sealed,
    pub profession: String,
    pub email: String,
    pub postal_code: String,
    pub address: String,
    pub delivery: Delivery,
    pub photo: Option<PhotoRef>,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhotoAttached {
    pub application_id: Uuid,
    pub photo: PhotoRef,
}

/// Staff checked the documents (identity, licence, photo) against the application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentsChecked {
    pub application_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationApproved {
    pub application_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationRejected {
    pub application_id: Uuid,
    /// Told to the applicant.
    pub reason: String,
}

/// No blank card was in stock at approval: the card waits, the QR goes out alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardDeferred {
    pub application_id: Uuid,
}

/// An issued certificate as the log keeps it: public, so whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    /// The DER, base64.
    pub der: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardCertificateIssued {
    pub application_id: Uuid,
    /// The IC card's own serial number.
    pub card_serial: String,
    pub certificate: Certificate,
}

/// The second certificate, whose key the back office holds sealed (`key_id`) for the signing
/// platform. The private key never enters the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondCertificateIssued {
    pub application_id: Uuid,
    pub key_id: Uuid,
    pub certificate: Certificate,
}

/// How a QR reaches its subscriber.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum QrDelivery {
    /// Printed on a QR card by the mail house and sent to `destination`.
    Print { destination: Delivery },
    /// The registration URL sent by e-mail (JPA's reissue route).
    Email,
    /// Shown on screen at once (JMA's on-screen reissue).
    Screen,
}

/// An initial-registration QR. The token is not here: only its SHA-256, and the server's QR
/// secret can derive it again from `qr_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrIssued {
    pub qr_id: Uuid,
    pub application_id: Uuid,
    /// The second certificate the QR registers a phone for.
    pub certificate_serial: String,
    pub token_sha256: String,
    /// JST dates, `YYYY-MM-DD`.
    pub issued_on: Date,
    pub last_usable_day: Date,
    /// Issued before the IC card, because cards were short.
    pub pre_issued: bool,
    pub delivery: QrDelivery,
}

/// The right birth date was entered for a QR: the portal goes on to sign-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordAccepted {
    pub qr_id: Uuid,
}

/// A wrong birth date was entered; `attempt` counts the QR's failures (1 to 5). What was
/// entered is not recorded: it may be someone's birth date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordFailed {
    pub qr_id: Uuid,
    pub attempt: u8,
}

/// The fifth failure: the QR's URL no longer works. The certificate is not affected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrLocked {
    pub qr_id: Uuid,
}

/// The QR's last usable day has ended. The certificate is not affected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrExpired {
    pub qr_id: Uuid,
}

/// The QR is still unused close to its last usable day: a reminder mail is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrReminderDue {
    pub qr_id: Uuid,
    pub last_usable_day: Date,
}

/// A reissue replaced the QR with `by`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrSuperseded {
    pub qr_id: Uuid,
    pub by: Uuid,
}

/// The QR can no longer be used because its certificate was revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrInvalidated {
    pub qr_id: Uuid,
    pub certificate_serial: String,
}

/// The portal registered a phone's passkey for a second certificate, through a QR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRegistered {
    pub certificate_serial: String,
    pub qr_id: Uuid,
    /// base64url, as WebAuthn gives it.
    pub credential_id: String,
    /// The credential's public key (COSE), base64url.
    pub public_key: String,
    /// The authenticator model, as a UUID.
    pub aaguid: Uuid,
    /// When the portal registered it (RFC 3339).
    pub registered_at: String,
    /// The credential as the portal's WebAuthn verifier keeps it (webauthn-rs `Passkey`, JSON),
    /// to check a later sign-in with this phone. `public_key` is the same key in the standard
    /// COSE form, for anyone checking the log without that library. None when the credential
    /// came through the JSON API, which verifies no ceremony (version 1 events).
    pub passkey: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRemoval {
    /// 機種変更: a new phone follows through a new QR or URL.
    DeviceChange,
    /// The phone was lost and the office decided to delete its credential only.
    DeviceLost,
    /// The second certificate was revoked.
    CertificateRevoked,
}

/// The subscriber named a registered phone's key on the portal's label page (the seeds'
/// ラベル登録画面); only when they pressed OK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceLabelled {
    pub certificate_serial: String,
    pub credential_id: String,
    pub label: String,
}

/// A registered credential is no longer bound to its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRemoved {
    pub certificate_serial: String,
    pub credential_id: String,
    pub reason: DeviceRemoval,
}

/// How a reissue was asked for (the authority's configuration says which it offers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReissueChannel {
    /// By e-mail with documents; the new registration URL is e-mailed (JPA).
    Email,
    /// By web form; a new QR card is printed and mailed (JMA).
    WebForm,
    /// On screen, proving possession of the IC card; the QR is shown at once (JMA).
    OnScreen,
}

impl ReissueChannel {
    pub const ALL: [ReissueChannel; 3] = [
        ReissueChannel::Email,
        ReissueChannel::WebForm,
        ReissueChannel::OnScreen,
    ];

    /// As written in the log, the configuration and forms.
    pub fn as_str(self) -> &'static str {
        match self {
            ReissueChannel::Email => "email",
            ReissueChannel::WebForm => "web_form",
            ReissueChannel::OnScreen => "on_screen",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReissueReason {
    Lost,
    Locked,
    Expired,
    Spoiled,
    /// 機種変更: the registered credential is removed when the reissue is approved.
    DeviceChange,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReissueRequested {
    pub request_id: Uuid,
    /// The second certificate the new QR is for.
    pub certificate_serial: String,
    pub channel: ReissueChannel,
    pub reason: ReissueReason,
    /// On screen: the SHA-256 of the signed challenge, so it is never used twice.
    pub challenge_sha256: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReissueDocumentsChecked {
    pub request_id: Uuid,
}

/// Followed, in the same append, by the new `QrIssued` and a `QrSuperseded` for each earlier
/// QR of the certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReissueApproved {
    pub request_id: Uuid,
    pub qr_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReissueRejected {
    pub request_id: Uuid,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// The IC card.
    Card,
    /// The phone holding the second certificate's credential.
    Device,
}

/// A loss report opens a case the office must decide (by a revocation proposal, or by closing
/// it with a note).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossReported {
    pub case_id: Uuid,
    pub kind: LossKind,
    /// The issuance (application) whose card or phone was lost.
    pub application_id: Uuid,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossCaseClosed {
    pub case_id: Uuid,
    /// The approved proposal that decided it, if one did.
    pub proposal_id: Option<Uuid>,
    pub note: String,
}

/// What a revocation decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationScope {
    CardOnly,
    CardAndSecond,
    SecondOnly,
    /// Deletes the phone's credential; revokes no certificate.
    DeviceOnly,
}

/// RFC 5280 CRLReason, named as the RFC names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReasonCode {
    #[serde(rename = "unspecified")]
    Unspecified,
    #[serde(rename = "keyCompromise")]
    KeyCompromise,
    #[serde(rename = "cACompromise")]
    CaCompromise,
    #[serde(rename = "affiliationChanged")]
    AffiliationChanged,
    #[serde(rename = "superseded")]
    Superseded,
    #[serde(rename = "cessationOfOperation")]
    CessationOfOperation,
    #[serde(rename = "certificateHold")]
    CertificateHold,
    #[serde(rename = "removeFromCRL")]
    RemoveFromCrl,
    #[serde(rename = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
    #[serde(rename = "aACompromise")]
    AaCompromise,
}

impl ReasonCode {
    /// The CRLReason value written into a CRL entry.
    pub fn code(self) -> u8 {
        match self {
            ReasonCode::Unspecified => 0,
            ReasonCode::KeyCompromise => 1,
            ReasonCode::CaCompromise => 2,
            ReasonCode::AffiliationChanged => 3,
            ReasonCode::Superseded => 4,
            ReasonCode::CessationOfOperation => 5,
            ReasonCode::CertificateHold => 6,
            ReasonCode::RemoveFromCrl => 8,
            ReasonCode::PrivilegeWithdrawn => 9,
            ReasonCode::AaCompromise => 10,
        }
    }
}

/// One staff member proposes; a different one with the approver role decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationProposed {
    pub proposal_id: Uuid,
    pub case_id: Option<Uuid>,
    /// The issuance whose certificates and phone the proposal concerns.
    pub application_id: Uuid,
    pub scope: RevocationScope,
    /// Absent for [`RevocationScope::DeviceOnly`].
    pub reason: Option<ReasonCode>,
    /// What the approver is shown and what approval will do, fixed when proposed.
    pub card_serial: Option<String>,
    pub second_serial: Option<String>,
    pub credential_id: Option<String>,
    /// The last JST day it may be decided; after it the proposal has expired.
    pub decide_by: Date,
}

/// Followed, in the same append, by what it decided: `CertificateRevoked`, `DeviceRemoved`,
/// `QrInvalidated`, `LossCaseClosed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationApproved {
    pub proposal_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRejected {
    pub proposal_id: Uuid,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationExpired {
    pub proposal_id: Uuid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateKind {
    Card,
    Second,
}

/// A certificate goes on its authority's CRL from here on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRevoked {
    pub serial: String,
    pub authority: String,
    pub kind: CertificateKind,
    pub reason: ReasonCode,
    /// The revocation date of the CRL entry (RFC 3339, UTC).
    pub revoked_at: String,
    pub proposal_id: Uuid,
}

/// A blank IC card: its serial and the public key made on it at personalisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlankCard {
    pub card_serial: String,
    /// SubjectPublicKeyInfo, DER, base64.
    pub public_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardStockReceived {
    pub cards: Vec<BlankCard>,
}

/// Cards taken out of stock other than by issuance (spoiled at personalisation, samples).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardStockUsed {
    pub card_serials: Vec<String>,
    pub reason: String,
}

/// An approved application waits for a card, in approval order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardQueued {
    pub subscriber: String,
    pub application_id: Uuid,
}

/// A card from stock goes to an application (at approval, or from the queue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardAllocated {
    pub card_serial: String,
    pub subscriber: String,
    pub application_id: Uuid,
}

/// How the QR cards of a print batch are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Imposition {
    /// Ten cards on an A4 sheet, with crop marks.
    TenUp,
    /// One card per page, for a card printer.
    OnePerPage,
}

/// A QR card's place in a print batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchCard {
    /// 1, 2, ... in the order of the PDF and the manifest.
    pub sequence: u32,
    /// The card id on the manifest is the QR's id.
    pub qr_id: Uuid,
    pub subscriber: String,
    pub destination: Delivery,
}

/// A print batch was rendered: the PDF and the manifest are in the print folder, and their
/// SHA-256 let anyone check a copy. Rendering the batch again gives the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrintBatchCreated {
    pub batch_id: Uuid,
    pub authority: String,
    pub mail_house: String,
    pub imposition: Imposition,
    /// The instant written into the PDF (RFC 3339, UTC).
    pub created_at: String,
    pub cards: Vec<BatchCard>,
    /// QRs that were waiting but are no longer usable (superseded, revoked, expired,
    /// registered): left out of the batch and off the queue.
    pub skipped: Vec<Uuid>,
    pub pdf_sha256: String,
    pub csv_sha256: String,
    /// `utf-8-bom` or `cp932`: how the manifest is encoded.
    pub manifest_encoding: String,
}

/// The mail house's confirmation file for a batch, accepted whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrintConfirmationReceived {
    pub batch_id: Uuid,
    pub file_sha256: String,
    pub rows: Vec<ConfirmedCard>,
}

/// One row of a confirmation file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmedCard {
    pub sequence: u32,
    pub qr_id: Uuid,
    pub outcome: CardOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CardOutcome {
    Printed,
    Mailed { tracking_number: String },
    Spoiled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrCardPrinted {
    pub qr_id: Uuid,
    pub batch_id: Uuid,
    pub sequence: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrCardMailed {
    pub qr_id: Uuid,
    pub batch_id: Uuid,
    pub sequence: u32,
    pub tracking_number: String,
}

/// A card spoiled in printing: its QR is superseded and a fresh one joins the next batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrCardSpoiled {
    pub qr_id: Uuid,
    pub batch_id: Uuid,
    pub sequence: u32,
}

/// The SMTP server accepted the mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSent {
    pub mail_id: Uuid,
    /// `received`, `approved`, ...: the template's name.
    pub kind: String,
    /// The Message-ID header, the same on every attempt, so a receiver can drop a repeat.
    pub message_id: String,
    pub attempt: u32,
}

/// A temporary failure (a 4xx reply, no connection): tried again from `retry_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailDeferred {
    pub mail_id: Uuid,
    pub kind: String,
    pub attempt: u32,
    pub error: String,
    /// RFC 3339, UTC.
    pub retry_at: String,
}

/// A permanent failure (a 5xx reply, no address): listed for staff, who may retry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailFailed {
    pub mail_id: Uuid,
    pub kind: String,
    pub attempt: u32,
    pub error: String,
}

/// Staff asked for a failed mail to be sent again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailRetryRequested {
    pub mail_id: Uuid,
}

/// A CRL was published. `as_of` is the log position its entries were read up to, so the
/// same CRL can be made again from the log, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlPublished {
    pub authority: String,
    pub number: u64,
    /// RFC 3339, UTC, whole seconds.
    pub this_update: String,
    pub next_update: String,
    pub as_of: i64,
    pub entries: u64,
    /// Of the DER.
    pub sha256: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn sample_application() -> Event {
        Event::ApplicationReceived(ApplicationReceived {
            application_id: Uuid::nil(),
            authority: "jma".into(),
            registry_number: "123456".into(),
            subscriber_id: "123456".into(),
            name_kanji: "山田 太郎".into(),
            name_kana: "ヤマダ タロウ".into(),
            name_romaji: "YAMADA TARO".into(),
            birth_date: Sealed {
                kek: "k1".into(),
                data: "AAAA".into(),
            },
            profession: "physician".into(),
            email: "taro@example.jp".into(),
            postal_code: "113-8621".into(),
            address: "東京都文京区本駒込2-28-16".into(),
            delivery: Delivery::Office {
                name: "東京都医師会".into(),
            },
            photo: None,
            source: Source {
                channel: Channel::Web,
                batch: None,
            },
        })
    }

    #[test]
    fn current_payload_round_trips() {
        let event = sample_application();
        let payload = event.to_payload().unwrap();
        assert_eq!(
            payload["delivery"],
            json!({"to": "office", "name": "東京都医師会"})
        );
        assert_eq!(
            Event::decode("ApplicationReceived", 2, payload).unwrap(),
            event
        );
    }

    #[test]
    fn version_1_is_upcast() {
        let mut v1 = sample_application().to_payload().unwrap();
        let object = v1.as_object_mut().unwrap();
        object.remove("source");
        object.insert("channel".into(), json!("web"));
        assert_eq!(
            Event::decode("ApplicationReceived", 1, v1).unwrap(),
            sample_application()
        );
        let err = Event::decode("ApplicationReceived", 1, json!({"authority": "jma"})).unwrap_err();
        assert!(err.to_string().contains("channel"), "{err}");
    }

    #[test]
    fn dates_are_written_as_iso_days() {
        let qr = QrIssued {
            qr_id: Uuid::nil(),
            application_id: Uuid::nil(),
            certificate_serial: "01".into(),
            token_sha256: "00".into(),
            issued_on: time::macros::date!(2026 - 11 - 22),
            last_usable_day: time::macros::date!(2027 - 02 - 22),
            pre_issued: false,
            delivery: QrDelivery::Email,
        };
        let payload = Event::QrIssued(qr.clone()).to_payload().unwrap();
        assert_eq!(payload["issued_on"], "2026-11-22");
        assert_eq!(payload["delivery"], json!({"by": "email"}));
        assert_eq!(
            Event::decode("QrIssued", 1, payload).unwrap(),
            Event::QrIssued(qr)
        );
    }

    #[test]
    fn unknown_types_versions_and_shapes_are_named() {
        let err = Event::decode("Nonsense", 1, json!({})).unwrap_err();
        assert_eq!(err.to_string(), "event type \"Nonsense\" is not known");
        let err = Event::decode("ApplicationApproved", 9, json!({})).unwrap_err();
        assert!(err.to_string().contains("no schema version 9"), "{err}");
        let err = Event::decode("ApplicationRejected", 1, json!({"reason": 5})).unwrap_err();
        assert!(err.to_string().contains("wrong shape"), "{err}");
    }
}

/// A staff role. One person may hold several; the dual control of revocations holds whatever
/// they hold.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Registration officer: applications, stock, reissues, loss reports, proposals, print
    /// batches, mail.
    Officer,
    /// Revocation approver: decides proposals made by someone else.
    Approver,
    /// A mail house's operator: its own print batches only.
    MailHouse,
    /// Reads everything, changes nothing; runs the integrity check and exports the log.
    Auditor,
    /// Manages staff accounts and the authorities' managed settings.
    Administrator,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Officer,
        Role::Approver,
        Role::MailHouse,
        Role::Auditor,
        Role::Administrator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Approver => "approver",
            Role::MailHouse => "mail_house",
            Role::Auditor => "auditor",
            Role::Administrator => "administrator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// A staff account was opened. It can be used once its holder has followed a setup link,
/// chosen a password and registered a passkey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffAccountCreated {
    pub name: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    /// For the mail-house role: which mail house (a `[mail_houses.<name>]` of the configuration).
    pub mail_house: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffRolesChanged {
    pub roles: Vec<Role>,
    pub mail_house: Option<String>,
}

/// A one-time setup link was made (its token's hash is kept beside the log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffSetupLinkIssued {
    pub link_id: Uuid,
    /// RFC 3339.
    pub expires_at: String,
}

/// The account's password was set (through a setup link).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffPasswordSet {
    pub link_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffPasskeyRegistered {
    /// base64url.
    pub credential_id: String,
    pub aaguid: Uuid,
}

/// An API token was issued for the account (its SHA-256 is kept beside the log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffApiTokenIssued {
    pub token_id: String,
}

/// Password and passkey both verified: a console session began.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffSignedIn {
    pub credential_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInFactor {
    Password,
    Passkey,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffSignInFailed {
    pub factor: SignInFactor,
    /// Failures in a row, this one included.
    pub failures: u32,
}

/// Too many failures in a row: no sign-in until `until` or an administrator's unlock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffLockedOut {
    /// RFC 3339.
    pub until: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffUnlocked {}

/// The account can no longer sign in or use its API tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffDisabled {
    pub reason: String,
}

/// An administrator changed some of an authority's settings. Only the fields changed are
/// present; each overrides the configuration file's value (and any earlier change) from this
/// event on. The CA's identity and certificate profile (CRL URL, CPS, policy, hcRole) are not
/// among them: they stay with the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthoritySettingsChanged {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_ja: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_en: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_ja: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_en: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hint_ja: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hint_en: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reissue_channels: Option<Vec<ReissueChannel>>,
    /// Years of the certificates issued from now on; those already issued keep theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_years: Option<u32>,
    /// Why, in the administrator's words.
    pub reason: String,
}
