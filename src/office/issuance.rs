//! Approval and issuance: the card certificate (when a blank card is in stock), the second
//! certificate (its key from the sealed pool) and the initial-registration QR, all appended
//! in one atomic step with the stock they take from. Card stock: receipts, other uses, and
//! the queue of approved applications whose card was deferred.

use std::collections::HashSet;

use hpki_events::vocabulary::{
    ApplicationApproved, BlankCard, CardAllocated, CardCertificateIssued, CardDeferred, CardQueued,
    CardStockReceived, CardStockUsed, Certificate, QrDelivery, QrIssued, SecondCertificateIssued,
};
use hpki_events::{Actor, Event};
use openssl::pkey::{PKey, Private, Public};
use openssl::x509::X509;
use serde::Serialize;
use time::Date;
use utoipa::ToSchema;
use uuid::Uuid;

use super::applications::wrong_status;
use super::state::{Application, Card, Status};
use super::{Office, TRIES, busy, stock_stream, to};
use crate::config::Authority;
use crate::pki::{self, Ca, Profile, Subject};
use crate::problem::{OfficeError, Problem};
use crate::secrets::Kek;
use crate::store::{PooledKey, Store, StreamAppend};

/// What an approval issued.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Approval {
    pub application_id: Uuid,
    pub card: CardOutcome,
    pub second_certificate_serial: String,
    pub qr_id: Uuid,
    /// `YYYY-MM-DD` (JST).
    #[schema(value_type = String)]
    pub qr_last_usable_day: Date,
    /// The QR went out before the card, for want of stock.
    pub qr_pre_issued: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CardOutcome {
    Issued {
        card_serial: String,
        certificate_serial: String,
    },
    /// No card in stock: it follows, in approval order, when stock arrives.
    Deferred,
}

/// What a stock receipt did.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CardsReceived {
    pub received: usize,
    /// Deferred cards issued from this receipt, in approval order.
    pub issued_from_queue: Vec<Uuid>,
    pub available: usize,
    pub still_waiting: usize,
}

impl Office {
    /// Approves an application whose documents were checked, and issues: the second
    /// certificate and the QR always; the card certificate when a blank card is in stock,
    /// otherwise the card is deferred and the QR goes out first.
    pub async fn approve(
        &self,
        application_id: Uuid,
        actor: &Actor,
    ) -> Result<Approval, OfficeError> {
        let stream = self.application_stream(application_id).await?;
        let documents_checked = |subscriber: &super::state::Subscriber| {
            let application = subscriber
                .application(application_id)
                .ok_or_else(|| Problem::not_found("申請", "the application"))?
                .clone();
            if application.status != Status::DocumentsChecked {
                return Err(wrong_status(application.status, "documents_checked"));
            }
            Ok::<_, OfficeError>(application)
        };
        // The second certificate does not depend on the card stock: its key is claimed and
        // it is signed before this approval waits for the authority's turn, so approvals
        // sign in parallel and only the card certificate is signed in turn. (A refusal found
        // in turn leaves the claimed key unused in the pool table.)
        let mut read = Some(self.subscriber(&stream).await?);
        let application = documents_checked(&read.as_ref().expect("just read").1)?;
        let authority_id = application.received.authority.clone();
        let authority = self.authority(&authority_id)?.clone();
        let ca = self
            .ca(&authority_id)
            .cloned()
            .ok_or_else(|| OfficeError::Internal(anyhow::anyhow!("no CA for {authority_id}")))?;
        let today = self.today();
        let (key_id, public_key) = self.take_key().await?;
        let second = {
            let (ca, authority, application) = (ca.clone(), authority.clone(), application.clone());
            tokio::task::spawn_blocking(move || {
                sign(&ca, &authority, &application, &public_key, today)
            })
            .await
            .map_err(|e| OfficeError::Internal(e.into()))??
        };
        let _turn = self.turn(&authority_id).await;
        for attempt in 0..TRIES {
            // First try: the subscriber as read above and the stock as this process last
            // left it, without reading again; the append's expected versions catch anything
            // another process changed, and the next try reads both afresh.
            let (version, subscriber) = match read.take() {
                Some(read) => read,
                None => self.subscriber(&stream).await?,
            };
            let application = documents_checked(&subscriber)?;
            let (stock_version, stock) = if attempt == 0 {
                self.cached_stock(&authority_id).await?
            } else {
                self.stock(&authority_id).await?
            };
            let card = stock.available.front().cloned();
            let card_cert = match &card {
                Some(card) => {
                    let (ca, authority, application, card) = (
                        ca.clone(),
                        authority.clone(),
                        application.clone(),
                        card.clone(),
                    );
                    Some(
                        tokio::task::spawn_blocking(move || {
                            sign(&ca, &authority, &application, &card_key(&card)?, today)
                        })
                        .await
                        .map_err(|e| OfficeError::Internal(e.into()))??,
                    )
                }
                None => None,
            };
            let qr = self.new_qr(&application, &second.serial, card.is_none());

            let mut events: Vec<Event> = vec![ApplicationApproved { application_id }.into()];
            let mut stock_events: Vec<Event> = Vec::new();
            let outcome = match (&card, card_cert) {
                (Some(card), Some(certificate)) => {
                    stock_events.push(
                        CardAllocated {
                            card_serial: card.card_serial.clone(),
                            subscriber: stream.clone(),
                            application_id,
                        }
                        .into(),
                    );
                    let outcome = CardOutcome::Issued {
                        card_serial: card.card_serial.clone(),
                        certificate_serial: certificate.serial.clone(),
                    };
                    events.push(
                        CardCertificateIssued {
                            application_id,
                            card_serial: card.card_serial.clone(),
                            certificate,
                        }
                        .into(),
                    );
                    outcome
                }
                _ => {
                    stock_events.push(
                        CardQueued {
                            subscriber: stream.clone(),
                            application_id,
                        }
                        .into(),
                    );
                    events.push(CardDeferred { application_id }.into());
                    CardOutcome::Deferred
                }
            };
            let approval = Approval {
                application_id,
                card: outcome,
                second_certificate_serial: second.serial.clone(),
                qr_id: qr.qr_id,
                qr_last_usable_day: qr.last_usable_day,
                qr_pre_issued: qr.pre_issued,
            };
            events.push(
                SecondCertificateIssued {
                    application_id,
                    key_id,
                    certificate: second.clone(),
                }
                .into(),
            );
            events.push(qr.into());
            let appends = vec![
                to(&stream, version, events),
                to(
                    &stock_stream(&authority_id),
                    stock_version,
                    stock_events.clone(),
                ),
            ];
            if self.append(appends, actor).await?.is_ok() {
                self.remember_stock(
                    &authority_id,
                    stock_version + stock_events.len() as i64,
                    &stock,
                    &stock_events,
                );
                return Ok(approval);
            }
        }
        Err(busy())
    }

    pub fn new_qr(
        &self,
        application: &Application,
        second_serial: &str,
        pre_issued: bool,
    ) -> QrIssued {
        let qr_id = Uuid::now_v7();
        let token = crate::qr::token(self.inner.qr_secret.bytes(), qr_id);
        let issued_on = self.today();
        QrIssued {
            qr_id,
            application_id: application.received.application_id,
            certificate_serial: second_serial.to_owned(),
            token_sha256: crate::qr::token_hash(&token),
            issued_on,
            last_usable_day: crate::qr::last_usable_day(issued_on),
            pre_issued,
            delivery: QrDelivery::Print {
                destination: application.received.delivery.clone(),
            },
        }
    }

    /// A key pair from the pool, generating one now when the pool is empty.
    async fn take_key(&self) -> Result<(Uuid, PKey<Public>), OfficeError> {
        loop {
            if let Some((key_id, der)) = self.store().claim_keys(1).await?.pop() {
                let public =
                    PKey::public_key_from_der(&der).map_err(|e| OfficeError::Internal(e.into()))?;
                return Ok((key_id, public));
            }
            tracing::warn!("the second-certificate key pool is empty; generating a key now");
            generate_keys(self.store(), self.kek(), 1, &|_, _| {}).await?;
        }
    }

    /// Records blank cards received, then issues deferred cards from them in approval order.
    pub async fn receive_cards(
        &self,
        authority_id: &str,
        cards: Vec<BlankCard>,
        actor: &Actor,
    ) -> Result<CardsReceived, OfficeError> {
        let authority = self.authority(authority_id)?.clone();
        if cards.is_empty() {
            return Err(Problem::new(
                422,
                "no_cards",
                "受け入れるカードがありません",
                "the receipt lists no cards",
            )
            .field("cards")
            .into());
        }
        let mut seen = HashSet::new();
        for (i, card) in cards.iter().enumerate() {
            check_card_serial(&card.card_serial, i)?;
            if !seen.insert(card.card_serial.clone()) {
                return Err(card_problem(
                    i,
                    "duplicate_card",
                    "同じカード番号が二度あります",
                    "the same card serial appears twice",
                ));
            }
            card_key(card).map_err(|e| {
                card_problem(
                    i,
                    "bad_public_key",
                    &format!("公開鍵が使えません: {e}"),
                    &format!("unusable public key: {e}"),
                )
            })?;
        }
        let ca = self
            .ca(authority_id)
            .cloned()
            .ok_or_else(|| OfficeError::Internal(anyhow::anyhow!("no CA for {authority_id}")))?;
        let stock_name = stock_stream(authority_id);
        let _turn = self.turn(authority_id).await;
        for _ in 0..TRIES {
            let (stock_version, stock) = self.stock(authority_id).await?;
            if let Some(i) = cards
                .iter()
                .position(|c| stock.known.contains(&c.card_serial))
            {
                return Err(card_problem(
                    i,
                    "card_known",
                    "このカード番号は受け入れ済みです",
                    "this card serial was already received",
                ));
            }
            // Pair the queue's head with the new cards (and any left from before).
            let mut available: Vec<BlankCard> = stock.available.iter().cloned().collect();
            available.extend(cards.iter().cloned());
            let mut plans = Vec::new();
            for waiting in &stock.queue {
                if plans.len() == available.len() {
                    break;
                }
                let (version, subscriber) = self.subscriber(&waiting.subscriber).await?;
                let Some(application) = subscriber.application(waiting.application_id) else {
                    continue;
                };
                if application.card != Card::Deferred {
                    continue;
                }
                plans.push((waiting.subscriber.clone(), version, application.clone()));
            }
            let today = self.today();
            let signed = {
                let ca = ca.clone();
                let authority = authority.clone();
                let pairs: Vec<_> = plans
                    .iter()
                    .zip(&available)
                    .map(|((_, _, application), card)| (application.clone(), card.clone()))
                    .collect();
                tokio::task::spawn_blocking(move || {
                    pairs
                        .iter()
                        .map(|(application, card)| {
                            sign(&ca, &authority, application, &card_key(card)?, today)
                        })
                        .collect::<anyhow::Result<Vec<Certificate>>>()
                })
                .await
                .map_err(|e| OfficeError::Internal(e.into()))??
            };
            let mut stock_events: Vec<Event> = vec![
                CardStockReceived {
                    cards: cards.clone(),
                }
                .into(),
            ];
            let mut appends: Vec<StreamAppend> = Vec::new();
            let mut issued = Vec::new();
            for (((subscriber, version, application), card), certificate) in
                plans.iter().zip(&available).zip(signed)
            {
                let application_id = application.received.application_id;
                stock_events.push(
                    CardAllocated {
                        card_serial: card.card_serial.clone(),
                        subscriber: subscriber.clone(),
                        application_id,
                    }
                    .into(),
                );
                let event = CardCertificateIssued {
                    application_id,
                    card_serial: card.card_serial.clone(),
                    certificate,
                };
                appends.push(to(subscriber, *version, vec![event.into()]));
                issued.push(application_id);
            }
            appends.insert(0, to(&stock_name, stock_version, stock_events));
            if self.append(appends, actor).await?.is_ok() {
                return Ok(CardsReceived {
                    received: cards.len(),
                    available: available.len() - issued.len(),
                    still_waiting: stock.queue.len() - issued.len(),
                    issued_from_queue: issued,
                });
            }
        }
        Err(busy())
    }

    /// Development: `count` blank cards whose key pairs are made here, as personalisation
    /// would make them on the card (the private halves are discarded).
    pub async fn simulate_cards(&self, count: usize) -> Result<Vec<BlankCard>, OfficeError> {
        let keys = generate_rsa(count, &|_, _| {}).await?;
        keys.iter()
            .map(|key| {
                let der = key
                    .public_key_to_der()
                    .map_err(|e| OfficeError::Internal(e.into()))?;
                Ok(BlankCard {
                    // The random half of a v7 UUID (its first half is the clock's).
                    card_serial: format!(
                        "DEV-{}",
                        &Uuid::now_v7().simple().to_string()[16..].to_uppercase()
                    ),
                    public_key: openssl::base64::encode_block(&der),
                })
            })
            .collect()
    }

    /// Takes cards out of stock for another reason than issuance (spoiled, samples).
    pub async fn use_cards(
        &self,
        authority_id: &str,
        card_serials: Vec<String>,
        reason: &str,
        actor: &Actor,
    ) -> Result<usize, OfficeError> {
        self.authority(authority_id)?;
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 200 {
            return Err(Problem::new(
                422,
                "bad_reason",
                "理由を200文字以内で入力してください",
                "give a reason of 1 to 200 characters",
            )
            .field("reason")
            .into());
        }
        for _ in 0..TRIES {
            let (version, stock) = self.stock(authority_id).await?;
            for (i, serial) in card_serials.iter().enumerate() {
                if !stock.available.iter().any(|c| &c.card_serial == serial) {
                    return Err(card_problem(
                        i,
                        "card_not_in_stock",
                        "このカードは在庫にありません",
                        "this card is not in stock",
                    ));
                }
            }
            if card_serials.is_empty() {
                return Err(Problem::new(
                    422,
                    "no_cards",
                    "カード番号がありません",
                    "no card serials given",
                )
                .field("card_serials")
                .into());
            }
            let event = CardStockUsed {
                card_serials: card_serials.clone(),
                reason: reason.to_owned(),
            };
            let append = vec![to(&stock_stream(authority_id), version, vec![event.into()])];
            if self.append(append, actor).await?.is_ok() {
                return Ok(card_serials.len());
            }
        }
        Err(busy())
    }
}

/// Signs one certificate for `application` with the authority's profile.
fn sign(
    ca: &Ca,
    authority: &Authority,
    application: &Application,
    public_key: &PKey<Public>,
    first_day: Date,
) -> anyhow::Result<Certificate> {
    let profile = Profile {
        policy_oid: authority.policy_oid.clone(),
        cps_uri: authority.cps_uri.clone(),
        crl_url: authority.crl_url.clone(),
        role: authority.role.clone(),
        years: authority.validity_years,
    };
    let subject = Subject {
        name_romaji: application.received.name_romaji.clone(),
        subscriber_id: application.received.subscriber_id.clone(),
        organization: None,
    };
    let cert = pki::issue(ca, &profile, &subject, public_key, first_day)?;
    record(&cert)
}

/// A certificate as the log keeps it.
pub fn record(cert: &X509) -> anyhow::Result<Certificate> {
    let serial = cert.serial_number().to_bn()?.to_hex_str()?.to_string();
    let time =
        |t| -> anyhow::Result<String> { Ok(hpki_events::envelope::format_time(pki::to_time(t)?)) };
    Ok(Certificate {
        serial,
        not_before: time(cert.not_before())?,
        not_after: time(cert.not_after())?,
        der: openssl::base64::encode_block(&cert.to_der()?),
    })
}

fn card_key(card: &BlankCard) -> anyhow::Result<PKey<Public>> {
    let der = openssl::base64::decode_block(&card.public_key)
        .map_err(|_| anyhow::anyhow!("the public key is not base64"))?;
    let key = PKey::public_key_from_der(&der)
        .map_err(|_| anyhow::anyhow!("the public key is not a DER SubjectPublicKeyInfo"))?;
    match key.rsa() {
        Ok(rsa) if rsa.size() == 256 => Ok(key),
        _ => anyhow::bail!("the card key must be RSA-2048"),
    }
}

fn check_card_serial(serial: &str, i: usize) -> Result<(), OfficeError> {
    let ok = (1..=32).contains(&serial.len())
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(card_problem(
            i,
            "bad_card_serial",
            "カード番号は英数字と「-」の32文字以内です",
            "a card serial is 1 to 32 letters, digits or '-'",
        ))
    }
}

fn card_problem(i: usize, code: &str, ja: &str, en: &str) -> OfficeError {
    Problem::new(
        422,
        code,
        format!("{}枚目のカード: {ja}", i + 1),
        format!("card {}: {en}", i + 1),
    )
    .field(&format!("cards[{i}]"))
    .into()
}

/// Generates `n` RSA-2048 key pairs on every core, reporting progress (done, total).
pub async fn generate_rsa(
    n: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Vec<PKey<Private>>, OfficeError> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(n.max(1));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for w in 0..workers {
        let tx = tx.clone();
        let share = n / workers + usize::from(w < n % workers);
        tokio::task::spawn_blocking(move || {
            for _ in 0..share {
                if tx.send(pki::generate_key()).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut keys = Vec::with_capacity(n);
    while let Some(key) = rx.recv().await {
        keys.push(key.map_err(|e| OfficeError::Internal(e.into()))?);
        progress(keys.len() as u64, n as u64);
    }
    Ok(keys)
}

/// Generates `n` second-certificate key pairs, seals their private halves and adds them to
/// the pool.
pub async fn generate_keys(
    store: &Store,
    kek: &Kek,
    n: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(), OfficeError> {
    let keys = generate_rsa(n, progress).await?;
    let pooled = keys
        .iter()
        .map(|key| {
            let key_id = Uuid::now_v7();
            let private = key.private_key_to_pkcs8().map_err(anyhow::Error::from)?;
            Ok(PooledKey {
                key_id,
                public_key: key.public_key_to_der().map_err(anyhow::Error::from)?,
                sealed: kek.seal(&format!("second-key/{key_id}"), &private),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    store.add_keys(&pooled).await?;
    Ok(())
}

impl Office {
    /// Waits for this process's turn to issue for `authority_id`.
    async fn turn(&self, authority_id: &str) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.inner.issuing.get(authority_id) {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    /// Blank cards in stock, and approved applications waiting for one.
    pub async fn stock_counts(&self, authority_id: &str) -> Result<(usize, usize), OfficeError> {
        self.authority(authority_id)?;
        let (_, stock) = self.stock(authority_id).await?;
        Ok((stock.available.len(), stock.queue.len()))
    }
}
