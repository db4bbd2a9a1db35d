//! The two aggregates commands decide on, folded from their streams: a subscriber (one person
//! at one authority) and an authority's card stock.

use std::collections::VecDeque;

use std::collections::HashSet;

use hpki_events::vocabulary::{
    ApplicationReceived, BlankCard, LossReported, PhotoRef, QrIssued, ReissueRequested,
    RevocationProposed,
};
use hpki_events::{Actor, Event, RecordedEvent};
use time::Date;
use uuid::Uuid;

/// State folded from a stream; commands read it and append with the version they read.
pub trait Aggregate: Clone + Default + Send + Sync + 'static {
    fn apply(&mut self, event: &RecordedEvent);
}

/// Where one application stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Received,
    DocumentsChecked,
    Approved,
    Rejected,
}

impl Status {
    pub fn is_open(self) -> bool {
        matches!(self, Status::Received | Status::DocumentsChecked)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::DocumentsChecked => "documents_checked",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
        }
    }
}

/// The IC card of an approved application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Card {
    None,
    Deferred,
    Issued { card_serial: String, serial: String },
}

#[derive(Clone, Debug)]
pub struct Application {
    pub received: ApplicationReceived,
    pub photo: Option<PhotoRef>,
    pub status: Status,
    pub card: Card,
    pub second_serial: Option<String>,
}

/// Where a QR stands, as recorded. A QR recorded `Open` past its last usable day is expired
/// all the same: see [`Qr::status_on`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QrStatus {
    Open,
    Locked,
    Expired,
    Superseded,
    /// Its certificate was revoked.
    Invalidated,
}

#[derive(Clone, Debug)]
pub struct Qr {
    pub issued: QrIssued,
    pub status: QrStatus,
    pub failures: u8,
    pub password_accepted: bool,
    /// A phone was registered through it.
    pub registered: bool,
    pub reminded: bool,
}

impl Qr {
    /// The status on the JST day `today`: the last usable day ends at midnight JST whether
    /// or not the expiry job has run.
    pub fn status_on(&self, today: Date) -> QrStatus {
        match self.status {
            QrStatus::Open if today > self.issued.last_usable_day => QrStatus::Expired,
            status => status,
        }
    }
}

/// A phone's credential bound to a second certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub certificate_serial: String,
    pub credential_id: String,
    /// As recorded: the COSE public key, base64url.
    pub public_key: String,
    /// The portal verifier's stored credential, when the portal registered it.
    pub passkey: Option<String>,
    pub qr_id: Uuid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Open,
    Approved,
    Rejected,
    Expired,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Open => "open",
            Decision::Approved => "approved",
            Decision::Rejected => "rejected",
            Decision::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Reissue {
    pub requested: ReissueRequested,
    pub documents_checked: bool,
    pub decision: Decision,
}

#[derive(Clone, Debug)]
pub struct LossCase {
    pub reported: LossReported,
    pub open: bool,
}

#[derive(Clone, Debug)]
pub struct Proposal {
    pub proposed: RevocationProposed,
    pub proposer: Actor,
    pub decision: Decision,
}

#[derive(Clone, Debug, Default)]
pub struct Subscriber {
    pub applications: Vec<Application>,
    pub qrs: Vec<Qr>,
    /// Credentials bound now (removed ones are gone from here).
    pub devices: Vec<Device>,
    pub revoked: HashSet<String>,
    pub reissues: Vec<Reissue>,
    pub cases: Vec<LossCase>,
    pub proposals: Vec<Proposal>,
    /// SHA-256 of every on-screen challenge already used.
    pub used_challenges: HashSet<String>,
}

impl Subscriber {
    pub fn application(&self, id: Uuid) -> Option<&Application> {
        self.applications
            .iter()
            .find(|a| a.received.application_id == id)
    }

    fn application_mut(&mut self, id: Uuid) -> Option<&mut Application> {
        self.applications
            .iter_mut()
            .find(|a| a.received.application_id == id)
    }

    /// The application still waiting for a decision, if any: a person has at most one per
    /// authority.
    pub fn open_application(&self) -> Option<&Application> {
        self.applications.iter().find(|a| a.status.is_open())
    }

    pub fn qr(&self, qr_id: Uuid) -> Option<&Qr> {
        self.qrs.iter().find(|q| q.issued.qr_id == qr_id)
    }

    fn qr_mut(&mut self, qr_id: Uuid) -> Option<&mut Qr> {
        self.qrs.iter_mut().find(|q| q.issued.qr_id == qr_id)
    }

    /// The application that issued the certificate `serial` (card or second).
    pub fn application_of(&self, serial: &str) -> Option<&Application> {
        self.applications.iter().find(|a| {
            a.second_serial.as_deref() == Some(serial)
                || matches!(&a.card, Card::Issued { serial: s, .. } if s == serial)
        })
    }

    pub fn device_of(&self, certificate_serial: &str) -> Option<&Device> {
        self.devices
            .iter()
            .find(|d| d.certificate_serial == certificate_serial)
    }

    pub fn reissue(&self, request_id: Uuid) -> Option<&Reissue> {
        self.reissues
            .iter()
            .find(|r| r.requested.request_id == request_id)
    }

    pub fn case(&self, case_id: Uuid) -> Option<&LossCase> {
        self.cases.iter().find(|c| c.reported.case_id == case_id)
    }

    pub fn proposal(&self, proposal_id: Uuid) -> Option<&Proposal> {
        self.proposals
            .iter()
            .find(|p| p.proposed.proposal_id == proposal_id)
    }
}

impl Aggregate for Subscriber {
    fn apply(&mut self, event: &RecordedEvent) {
        match &event.event {
            Event::ApplicationReceived(received) => self.applications.push(Application {
                photo: received.photo.clone(),
                received: received.clone(),
                status: Status::Received,
                card: Card::None,
                second_serial: None,
            }),
            Event::PhotoAttached(e) => {
                if let Some(a) = self.application_mut(e.application_id) {
                    a.photo = Some(e.photo.clone());
                }
            }
            Event::DocumentsChecked(e) => {
                if let Some(a) = self.application_mut(e.application_id) {
                    a.status = Status::DocumentsChecked;
                }
            }
            Event::ApplicationApproved(e) => {
                if let Some(a) = self.application_mut(e.application_id) {
                    a.status = Status::Approved;
                }
            }
            Event::ApplicationRejected(e) => {
                if let Some(a) = self.application_mut(e.application_id) {
                    a.status = Status::Rejected;
                }
            }
            Event::CardDeferred(e) => {
                if let Some(a) = self.application_mut(e.application_id) {
                    a.card = Card::Deferred;
                }
            }
            Event::CardCertificateIssued(e) => {
                if let Some(a) = self.application_mut(e.application_id) {
                    a.card = Card::Issued {
                        card_serial: e.card_serial.clone(),
                        serial: e.certificate.serial.clone(),
                    };
                }
            }
            Event::SecondCertificateIssued(e) => {
                if let Some(a) = self.application_mut(e.application_id) {
                    a.second_serial = Some(e.certificate.serial.clone());
                }
            }
            Event::QrIssued(e) => self.qrs.push(Qr {
                issued: e.clone(),
                status: QrStatus::Open,
                failures: 0,
                password_accepted: false,
                registered: false,
                reminded: false,
            }),
            Event::PasswordAccepted(e) => {
                if let Some(q) = self.qr_mut(e.qr_id) {
                    q.password_accepted = true;
                }
            }
            Event::PasswordFailed(e) => {
                if let Some(q) = self.qr_mut(e.qr_id) {
                    q.failures = e.attempt;
                }
            }
            Event::QrLocked(e) => self.set_qr(e.qr_id, QrStatus::Locked),
            Event::QrExpired(e) => self.set_qr(e.qr_id, QrStatus::Expired),
            Event::QrSuperseded(e) => self.set_qr(e.qr_id, QrStatus::Superseded),
            Event::QrInvalidated(e) => self.set_qr(e.qr_id, QrStatus::Invalidated),
            Event::QrReminderDue(e) => {
                if let Some(q) = self.qr_mut(e.qr_id) {
                    q.reminded = true;
                }
            }
            Event::DeviceRegistered(e) => {
                if let Some(q) = self.qr_mut(e.qr_id) {
                    q.registered = true;
                }
                self.devices.push(Device {
                    certificate_serial: e.certificate_serial.clone(),
                    credential_id: e.credential_id.clone(),
                    public_key: e.public_key.clone(),
                    passkey: e.passkey.clone(),
                    qr_id: e.qr_id,
                });
            }
            Event::DeviceRemoved(e) => self.devices.retain(|d| d.credential_id != e.credential_id),
            Event::DeviceLabelled(_) => {}
            Event::ReissueRequested(e) => {
                if let Some(hash) = &e.challenge_sha256 {
                    self.used_challenges.insert(hash.clone());
                }
                self.reissues.push(Reissue {
                    requested: e.clone(),
                    documents_checked: false,
                    decision: Decision::Open,
                });
            }
            Event::ReissueDocumentsChecked(e) => {
                if let Some(r) = self.reissue_mut(e.request_id) {
                    r.documents_checked = true;
                }
            }
            Event::ReissueApproved(e) => {
                if let Some(r) = self.reissue_mut(e.request_id) {
                    r.decision = Decision::Approved;
                }
            }
            Event::ReissueRejected(e) => {
                if let Some(r) = self.reissue_mut(e.request_id) {
                    r.decision = Decision::Rejected;
                }
            }
            Event::LossReported(e) => self.cases.push(LossCase {
                reported: e.clone(),
                open: true,
            }),
            Event::LossCaseClosed(e) => {
                if let Some(c) = self
                    .cases
                    .iter_mut()
                    .find(|c| c.reported.case_id == e.case_id)
                {
                    c.open = false;
                }
            }
            Event::RevocationProposed(e) => self.proposals.push(Proposal {
                proposed: e.clone(),
                proposer: event.metadata.actor.clone(),
                decision: Decision::Open,
            }),
            Event::RevocationApproved(e) => self.decide(e.proposal_id, Decision::Approved),
            Event::RevocationRejected(e) => self.decide(e.proposal_id, Decision::Rejected),
            Event::RevocationExpired(e) => self.decide(e.proposal_id, Decision::Expired),
            Event::CertificateRevoked(e) => {
                self.revoked.insert(e.serial.clone());
            }
            Event::CardStockReceived(_)
            | Event::CardStockUsed(_)
            | Event::CardQueued(_)
            | Event::CardAllocated(_) => {}
            // What the processors did changes no decision on the subscriber: the print
            // queue and the outbox read models follow these.
            Event::PrintBatchCreated(_)
            | Event::PrintConfirmationReceived(_)
            | Event::QrCardPrinted(_)
            | Event::QrCardMailed(_)
            | Event::QrCardSpoiled(_)
            | Event::MailSent(_)
            | Event::MailDeferred(_)
            | Event::MailFailed(_)
            | Event::MailRetryRequested(_)
            | Event::CrlPublished(_) => {}
            // Staff accounts have streams of their own (crate::staff).
            Event::StaffAccountCreated(_)
            | Event::StaffRolesChanged(_)
            | Event::StaffSetupLinkIssued(_)
            | Event::StaffPasswordSet(_)
            | Event::StaffPasskeyRegistered(_)
            | Event::StaffApiTokenIssued(_)
            | Event::StaffSignedIn(_)
            | Event::StaffSignInFailed(_)
            | Event::StaffLockedOut(_)
            | Event::StaffUnlocked(_)
            | Event::StaffDisabled(_) => {}
            // Authority settings too (crate::settings).
            Event::AuthoritySettingsChanged(_) => {}
        }
    }
}

impl Subscriber {
    fn set_qr(&mut self, qr_id: Uuid, status: QrStatus) {
        if let Some(q) = self.qr_mut(qr_id) {
            q.status = status;
        }
    }

    fn reissue_mut(&mut self, request_id: Uuid) -> Option<&mut Reissue> {
        self.reissues
            .iter_mut()
            .find(|r| r.requested.request_id == request_id)
    }

    fn decide(&mut self, proposal_id: Uuid, decision: Decision) {
        if let Some(p) = self
            .proposals
            .iter_mut()
            .find(|p| p.proposed.proposal_id == proposal_id)
        {
            p.decision = decision;
        }
    }
}

/// An approved application waiting for a card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub subscriber: String,
    pub application_id: Uuid,
}

#[derive(Clone, Debug, Default)]
pub struct Stock {
    /// Blank cards in the order they were received: the oldest goes out first.
    pub available: VecDeque<BlankCard>,
    /// Approved applications waiting for a card, in approval order.
    pub queue: VecDeque<Waiting>,
    /// Every card serial this authority ever received, to refuse a serial twice.
    pub known: std::collections::HashSet<String>,
}

impl Aggregate for Stock {
    fn apply(&mut self, event: &RecordedEvent) {
        self.apply_event(&event.event);
    }
}

impl Stock {
    /// Folds one event; also used to update the cached stock after this process appended.
    pub fn apply_event(&mut self, event: &Event) {
        match event {
            Event::CardStockReceived(e) => {
                for card in &e.cards {
                    self.known.insert(card.card_serial.clone());
                    self.available.push_back(card.clone());
                }
            }
            Event::CardStockUsed(e) => {
                self.available
                    .retain(|card| !e.card_serials.contains(&card.card_serial));
            }
            Event::CardQueued(e) => self.queue.push_back(Waiting {
                subscriber: e.subscriber.clone(),
                application_id: e.application_id,
            }),
            Event::CardAllocated(e) => {
                if let Some(i) = self
                    .available
                    .iter()
                    .position(|card| card.card_serial == e.card_serial)
                {
                    self.available.remove(i);
                }
                self.queue.retain(|w| w.application_id != e.application_id);
            }
            _ => {}
        }
    }
}
