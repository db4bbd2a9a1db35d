//! The two aggregates commands decide on, folded from their streams: a subscriber (one person
//! at one authority) and an authority's card stock.

use std::collections::VecDeque;

use hpki_events::vocabulary::{ApplicationReceived, BlankCard, PhotoRef, QrIssued};
use hpki_events::{Event, RecordedEvent};
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

#[derive(Clone, Debug, Default)]
pub struct Subscriber {
    pub applications: Vec<Application>,
    pub qrs: Vec<QrIssued>,
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
            Event::QrIssued(e) => self.qrs.push(e.clone()),
            Event::CardStockReceived(_)
            | Event::CardStockUsed(_)
            | Event::CardQueued(_)
            | Event::CardAllocated(_) => {}
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
        match &event.event {
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
