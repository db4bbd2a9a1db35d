//! Loss reports and revocation under dual control: one staff member proposes a scope and an
//! RFC 5280 reason; a different one, holding the approver role, approves or rejects. Approval
//! appends what the scope decides, in the same atomic step.

use hpki_events::envelope::format_time;
use hpki_events::vocabulary::{
    CertificateKind, CertificateRevoked, DeviceRemoval, DeviceRemoved, LossCaseClosed, LossKind,
    LossReported, QrInvalidated, ReasonCode, RevocationApproved, RevocationProposed,
    RevocationRejected, RevocationScope,
};
use hpki_events::{Actor, Event};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Office;
use super::state::{Card, Decision, Proposal, QrStatus, Subscriber};
use crate::problem::{OfficeError, Problem};

/// A revocation proposal as staff send it.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposalForm {
    /// Either certificate of the issuance concerned (card or second).
    pub certificate_serial: String,
    #[schema(value_type = String, example = "card_only")]
    pub scope: RevocationScope,
    /// RFC 5280 name, e.g. `keyCompromise`; absent for `device_only`.
    #[schema(value_type = Option<String>, example = "keyCompromise")]
    pub reason: Option<ReasonCode>,
    /// The loss case this proposal decides, if any.
    pub case_id: Option<Uuid>,
}

/// What an approval did.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Decided {
    pub proposal_id: Uuid,
    /// Serials revoked now (already revoked ones are left as they were).
    pub revoked: Vec<String>,
    pub device_removed: bool,
    pub qrs_invalidated: usize,
}

/// The reasons each scope allows. Never: `cACompromise` and `aACompromise` (not a subscriber
/// matter), `certificateHold` and `removeFromCRL` (HPKI does not suspend). Deleting a
/// credential revokes nothing, so it takes no reason.
pub fn allowed_reasons(scope: RevocationScope) -> &'static [ReasonCode] {
    use ReasonCode::*;
    match scope {
        RevocationScope::CardOnly
        | RevocationScope::CardAndSecond
        | RevocationScope::SecondOnly => &[
            Unspecified,
            KeyCompromise,
            AffiliationChanged,
            Superseded,
            CessationOfOperation,
            PrivilegeWithdrawn,
        ],
        RevocationScope::DeviceOnly => &[],
    }
}

/// The scopes a loss case may be decided with (domain.md, loss reports).
fn scopes_for(kind: LossKind) -> &'static [RevocationScope] {
    match kind {
        LossKind::Card => &[RevocationScope::CardOnly, RevocationScope::CardAndSecond],
        LossKind::Device => &[RevocationScope::SecondOnly, RevocationScope::DeviceOnly],
    }
}

fn conflict(code: &str, ja: &str, en: &str) -> OfficeError {
    Problem::new(409, code, ja, en).into()
}

impl Office {
    /// Records a lost IC card or phone: a case staff must decide.
    pub async fn report_loss(
        &self,
        certificate_serial: &str,
        kind: LossKind,
        note: &str,
        actor: &Actor,
    ) -> Result<Uuid, OfficeError> {
        let note = note.trim();
        if note.chars().count() > 1000 {
            return Err(Problem::new(
                422,
                "note_too_long",
                "メモは1000文字以内にしてください",
                "the note is at most 1000 characters",
            )
            .field("note")
            .into());
        }
        let (stream, ..) = self.by_certificate(certificate_serial).await?;
        let serial = certificate_serial.trim().to_ascii_uppercase();
        self.decide_on(&stream, actor, |subscriber| {
            let application = subscriber
                .application_of(&serial)
                .ok_or_else(|| Problem::not_found("証明書", "the certificate"))?;
            let application_id = application.received.application_id;
            let case_id = Uuid::now_v7();
            let event = LossReported {
                case_id,
                kind,
                application_id,
                note: note.to_owned(),
            };
            Ok((vec![event.into()], case_id))
        })
        .await
    }

    /// Closes a loss case without a revocation (found again, or decided otherwise).
    pub async fn close_case(
        &self,
        case_id: Uuid,
        note: &str,
        actor: &Actor,
    ) -> Result<(), OfficeError> {
        let note = super::applications::reason_text(note)?;
        let stream = self
            .locate("case", &case_id.to_string())
            .await?
            .ok_or_else(|| Problem::not_found("紛失の届出", "the loss case"))?;
        self.decide_on(&stream, actor, |subscriber| {
            let case = subscriber
                .case(case_id)
                .ok_or_else(|| Problem::not_found("紛失の届出", "the loss case"))?;
            if !case.open {
                return Err(case_closed());
            }
            let event = LossCaseClosed {
                case_id,
                proposal_id: None,
                note: note.clone(),
            };
            Ok((vec![event.into()], ()))
        })
        .await
    }

    /// Proposes a revocation. What it would revoke or delete is fixed now, for the approver
    /// to see.
    pub async fn propose_revocation(
        &self,
        form: &ProposalForm,
        actor: &Actor,
    ) -> Result<RevocationProposed, OfficeError> {
        let allowed = allowed_reasons(form.scope);
        match form.reason {
            None if !allowed.is_empty() => {
                return Err(Problem::new(
                    422,
                    "reason_required",
                    "失効理由（RFC 5280）を指定してください",
                    "give an RFC 5280 revocation reason",
                )
                .field("reason")
                .into());
            }
            Some(reason) if !allowed.contains(&reason) => {
                let names: Vec<String> = allowed
                    .iter()
                    .map(|r| {
                        serde_json::to_value(r)
                            .expect("a name")
                            .as_str()
                            .unwrap_or_default()
                            .to_owned()
                    })
                    .collect();
                let list = if names.is_empty() {
                    "（なし）".to_owned()
                } else {
                    names.join(", ")
                };
                return Err(Problem::new(
                    422,
                    "reason_not_allowed",
                    format!("この範囲で使える失効理由は {list} です"),
                    format!(
                        "this scope allows the reasons: {}",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                )
                .field("reason")
                .into());
            }
            _ => {}
        }
        let serial = form.certificate_serial.trim().to_ascii_uppercase();
        let (stream, ..) = self.by_certificate(&serial).await?;
        let decide_by =
            self.today() + time::Duration::days(self.inner.lifecycle.revocation_decide_days);
        self.decide_on(&stream, actor, |subscriber| {
            let application = subscriber
                .application_of(&serial)
                .ok_or_else(|| Problem::not_found("証明書", "the certificate"))?;
            let application_id = application.received.application_id;
            if let Some(case_id) = form.case_id {
                let case = subscriber
                    .case(case_id)
                    .filter(|c| c.reported.application_id == application_id)
                    .ok_or_else(|| {
                        Problem::not_found(
                            "この証明書の紛失の届出",
                            "a loss case of this certificate",
                        )
                        .field("case_id")
                    })?;
                if !case.open {
                    return Err(case_closed());
                }
                if !scopes_for(case.reported.kind).contains(&form.scope) {
                    return Err(Problem::new(
                        422,
                        "scope_not_for_case",
                        "この紛失の届出には使えない範囲です（IC カード紛失：カードのみ／カードとセカンド、端末紛失：セカンドのみ／端末の登録削除のみ）",
                        "this scope does not decide this kind of loss (card lost: card only or card and second; device lost: second only or device only)",
                    )
                    .field("scope")
                    .into());
                }
            }
            if subscriber.proposals.iter().any(|p| {
                p.decision == Decision::Open
                    && p.proposed.application_id == application_id
                    && self.today() <= p.proposed.decide_by
            }) {
                return Err(conflict(
                    "proposal_pending",
                    "この証明書の失効提案がすでに承認待ちです",
                    "a revocation proposal for these certificates is already waiting",
                ));
            }
            let card = match &application.card {
                Card::Issued { serial, .. } => Some(serial.clone()),
                _ => None,
            };
            let second = application.second_serial.clone();
            let device = second
                .as_deref()
                .and_then(|s| subscriber.device_of(s))
                .map(|d| d.credential_id.clone());
            let (card_serial, second_serial, credential_id) = match form.scope {
                RevocationScope::CardOnly => (card.clone(), None, None),
                RevocationScope::CardAndSecond => (card.clone(), second.clone(), device),
                RevocationScope::SecondOnly => (None, second.clone(), device),
                RevocationScope::DeviceOnly => (None, None, device),
            };
            if form.scope == RevocationScope::CardOnly && card.is_none() {
                return Err(conflict(
                    "no_card_certificate",
                    "IC カードの証明書がまだ発行されていません",
                    "no card certificate has been issued yet",
                ));
            }
            if form.scope == RevocationScope::DeviceOnly && credential_id.is_none() {
                return Err(conflict(
                    "no_device",
                    "登録された端末がありません",
                    "no phone is registered for this certificate",
                ));
            }
            let proposed = RevocationProposed {
                proposal_id: Uuid::now_v7(),
                case_id: form.case_id,
                application_id,
                scope: form.scope,
                reason: form.reason,
                card_serial,
                second_serial,
                credential_id,
                decide_by,
            };
            Ok((vec![proposed.clone().into()], proposed))
        })
        .await
    }

    async fn decide_proposal(
        &self,
        proposal_id: Uuid,
        actor: &Actor,
        decide: impl Fn(&Subscriber, &Proposal) -> Result<(Vec<Event>, Option<Decided>), OfficeError>,
    ) -> Result<Option<Decided>, OfficeError> {
        let stream = self
            .locate("proposal", &proposal_id.to_string())
            .await?
            .ok_or_else(|| Problem::not_found("失効提案", "the revocation proposal"))?;
        self.decide_on(&stream, actor, |subscriber| {
            let proposal = subscriber
                .proposal(proposal_id)
                .ok_or_else(|| Problem::not_found("失効提案", "the revocation proposal"))?;
            if proposal.decision != Decision::Open {
                return Err(conflict(
                    "proposal_decided",
                    &format!(
                        "この失効提案はすでに決定済みです（{}）",
                        proposal.decision.as_str()
                    ),
                    &format!(
                        "this proposal was already decided ({})",
                        proposal.decision.as_str()
                    ),
                ));
            }
            if self.today() > proposal.proposed.decide_by {
                return Err(conflict(
                    "proposal_expired",
                    "期限までに決定されなかったため、この失効提案は失効しました。必要なら提案し直してください",
                    "this proposal expired undecided; propose again if still needed",
                ));
            }
            if proposal.proposer == *actor {
                return Err(Problem::new(
                    403,
                    "own_proposal",
                    "自分の提案は承認・却下できません（別の承認者が必要です）",
                    "nobody decides their own proposal; another approver must",
                )
                .into());
            }
            let (events, decided) = decide(&subscriber, proposal)?;
            Ok((events, decided))
        })
        .await
    }

    /// A second person approves: the certificates in scope are revoked (already revoked ones
    /// are left alone), a revoked second certificate loses its credential and its live QRs,
    /// the loss case closes.
    pub async fn approve_revocation(
        &self,
        proposal_id: Uuid,
        actor: &Actor,
    ) -> Result<Decided, OfficeError> {
        let now = format_time(self.inner.clock.now());
        let decided = self
            .decide_proposal(proposal_id, actor, |subscriber, proposal| {
                let p = &proposal.proposed;
                let authority = subscriber
                    .applications
                    .iter()
                    .find(|a| a.received.application_id == p.application_id)
                    .map(|a| a.received.authority.clone())
                    .unwrap_or_default();
                let mut events: Vec<Event> = vec![RevocationApproved { proposal_id }.into()];
                let mut decided = Decided {
                    proposal_id,
                    revoked: Vec::new(),
                    device_removed: false,
                    qrs_invalidated: 0,
                };
                let targets = [
                    (p.card_serial.as_ref(), CertificateKind::Card),
                    (p.second_serial.as_ref(), CertificateKind::Second),
                ];
                for (serial, kind) in targets {
                    let Some(serial) = serial else { continue };
                    if subscriber.revoked.contains(serial) {
                        continue;
                    }
                    events.push(
                        CertificateRevoked {
                            serial: serial.clone(),
                            authority: authority.clone(),
                            kind,
                            reason: p.reason.unwrap_or(ReasonCode::Unspecified),
                            revoked_at: now.clone(),
                            proposal_id,
                        }
                        .into(),
                    );
                    decided.revoked.push(serial.clone());
                }
                if let Some(second) = &p.second_serial {
                    for qr in subscriber.qrs.iter().filter(|q| {
                        q.issued.certificate_serial == *second
                            && matches!(q.status, QrStatus::Open | QrStatus::Locked)
                    }) {
                        events.push(
                            QrInvalidated {
                                qr_id: qr.issued.qr_id,
                                certificate_serial: second.clone(),
                            }
                            .into(),
                        );
                        decided.qrs_invalidated += 1;
                    }
                }
                if let Some(credential) = &p.credential_id {
                    if let Some(device) = subscriber
                        .devices
                        .iter()
                        .find(|d| d.credential_id == *credential)
                    {
                        let reason = if p.scope == RevocationScope::DeviceOnly {
                            DeviceRemoval::DeviceLost
                        } else {
                            DeviceRemoval::CertificateRevoked
                        };
                        events.push(
                            DeviceRemoved {
                                certificate_serial: device.certificate_serial.clone(),
                                credential_id: credential.clone(),
                                reason,
                            }
                            .into(),
                        );
                        decided.device_removed = true;
                    }
                } else if let Some(second) = &p.second_serial {
                    // A phone registered after the proposal goes with the certificate too.
                    if let Some(device) = subscriber.device_of(second) {
                        events.push(
                            DeviceRemoved {
                                certificate_serial: second.clone(),
                                credential_id: device.credential_id.clone(),
                                reason: DeviceRemoval::CertificateRevoked,
                            }
                            .into(),
                        );
                        decided.device_removed = true;
                    }
                }
                if let Some(case_id) = p.case_id {
                    if subscriber.case(case_id).is_some_and(|c| c.open) {
                        events.push(
                            LossCaseClosed {
                                case_id,
                                proposal_id: Some(proposal_id),
                                note: "revocation approved".into(),
                            }
                            .into(),
                        );
                    }
                }
                Ok((events, Some(decided.clone())))
            })
            .await?;
        decided.ok_or_else(|| anyhow::anyhow!("an approval always decides").into())
    }

    /// A second person rejects: the proposal ends, nothing is revoked.
    pub async fn reject_revocation(
        &self,
        proposal_id: Uuid,
        reason: &str,
        actor: &Actor,
    ) -> Result<(), OfficeError> {
        let reason = super::applications::reason_text(reason)?;
        self.decide_proposal(proposal_id, actor, |_, _| {
            let event = RevocationRejected {
                proposal_id,
                reason: reason.clone(),
            };
            Ok((vec![event.into()], None))
        })
        .await
        .map(|_| ())
    }
}

fn case_closed() -> OfficeError {
    conflict(
        "case_closed",
        "この紛失の届出はすでに終了しています",
        "this loss case is already closed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_has_its_reasons_and_none_allows_hold_or_ca_compromise() {
        for scope in [
            RevocationScope::CardOnly,
            RevocationScope::CardAndSecond,
            RevocationScope::SecondOnly,
        ] {
            let allowed = allowed_reasons(scope);
            assert!(allowed.contains(&ReasonCode::KeyCompromise));
            for never in [
                ReasonCode::CertificateHold,
                ReasonCode::RemoveFromCrl,
                ReasonCode::CaCompromise,
                ReasonCode::AaCompromise,
            ] {
                assert!(!allowed.contains(&never), "{scope:?} allows {never:?}");
            }
        }
        assert!(allowed_reasons(RevocationScope::DeviceOnly).is_empty());
    }

    #[test]
    fn a_loss_is_decided_only_with_its_scopes() {
        assert_eq!(
            scopes_for(LossKind::Card),
            [RevocationScope::CardOnly, RevocationScope::CardAndSecond]
        );
        assert!(!scopes_for(LossKind::Device).contains(&RevocationScope::CardOnly));
    }

    #[test]
    fn reason_codes_are_rfc_5280_values() {
        assert_eq!(ReasonCode::KeyCompromise.code(), 1);
        assert_eq!(ReasonCode::PrivilegeWithdrawn.code(), 9);
        assert_eq!(
            serde_json::to_value(ReasonCode::KeyCompromise).unwrap(),
            "keyCompromise"
        );
    }
}
