//! The authorities' settings an administrator manages in the console.
//!
//! The configuration file sets every authority at start. Part of that is the office's policy
//! rather than the CA's identity: display names, contacts, password hints, the reissue
//! channels offered and the validity of new certificates. An administrator may change those
//! in the console. Each change is an `AuthoritySettingsChanged` on `authority-<id>` naming only
//! the fields it changes, with the administrator as actor and their reason; the settings in
//! force are the file's, overlaid with the log's changes in order. A change therefore survives
//! restarts, sits in the audit trail, and is exported and verified with the rest of the log.
//!
//! What stays with the configuration file: the CA's key and certificate, the CRL distribution
//! point, CPS and policy OID, hcRole, profession and subscriber-ID format. Those are written
//! into certificates or name the CA itself; changing them is a change of the PKI, made with the
//! relying parties, not a form in the console.
//!
//! Every part of the office (commands, portal, processors, API, console) reads the settings
//! through one [`Settings`] handle. A change made through it counts at once in this process;
//! other processes on the same database read it at their next [`Settings::refresh`] (`hpki
//! serve` refreshes with every projection poll).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use hpki_events::vocabulary::{AuthoritySettingsChanged, ReissueChannel};
use hpki_events::{Actor, Event, Metadata, NewEvent};
use serde::Serialize;

use crate::config::Authority;
use crate::problem::{Detail, Message, OfficeError, Problem};
use crate::store::{AppendError, ExpectedVersion, Store, StoreError};

/// Certificates of HPKI run from 1 year (JMA's test certificates) to 5 (MEDIS's); the
/// console accepts that range for new certificates.
pub const VALIDITY_YEARS: std::ops::RangeInclusive<u32> = 1..=5;

/// The longest name, contact or hint accepted (characters).
const MAX_CHARS: usize = 300;

pub fn stream(authority: &str) -> String {
    format!("authority-{authority}")
}

/// The settings in force, shared by every part of one process.
#[derive(Clone)]
pub struct Settings {
    file: Arc<BTreeMap<String, Authority>>,
    state: Arc<RwLock<State>>,
}

#[derive(Default)]
struct State {
    current: Arc<BTreeMap<String, Authority>>,
    /// The version of each `authority-<id>` stream applied so far.
    versions: BTreeMap<String, i64>,
    history: BTreeMap<String, Vec<Change>>,
}

/// One recorded change, for the settings page.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub version: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub actor: String,
    pub fields: Vec<&'static str>,
    pub reason: String,
}

/// What an administrator submitted: every managed field, as the form shows it.
#[derive(Clone, Debug, Default)]
pub struct Proposed {
    pub name_ja: String,
    pub name_en: String,
    pub contact_ja: String,
    pub contact_en: String,
    pub password_hint_ja: String,
    pub password_hint_en: String,
    pub reissue_channels: Vec<ReissueChannel>,
    /// As typed; checked here.
    pub validity_years: String,
    pub reason: String,
}

impl Settings {
    /// The configuration file's settings, before the log's changes are read.
    pub fn new(file: BTreeMap<String, Authority>) -> Settings {
        let file = Arc::new(file);
        let state = State {
            current: file.clone(),
            ..State::default()
        };
        Settings {
            file,
            state: Arc::new(RwLock::new(state)),
        }
    }

    /// The settings in force, as last read.
    pub fn current(&self) -> Arc<BTreeMap<String, Authority>> {
        self.read().current.clone()
    }

    /// The version of the authority's settings stream read so far (0: never changed).
    pub fn version(&self, authority: &str) -> i64 {
        self.read().versions.get(authority).copied().unwrap_or(0)
    }

    /// Every change recorded for the authority, oldest first.
    pub fn history(&self, authority: &str) -> Vec<Change> {
        self.read()
            .history
            .get(authority)
            .cloned()
            .unwrap_or_default()
    }

    /// The fields the log overrides for the authority, with the change that last set each.
    pub fn overridden(&self, authority: &str) -> BTreeMap<&'static str, Change> {
        let mut by_field = BTreeMap::new();
        for change in self.history(authority) {
            for field in &change.fields {
                by_field.insert(*field, change.clone());
            }
        }
        by_field
    }

    /// Reads the changes recorded since the last refresh (by any process).
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        for id in self.file.keys() {
            let after = self.version(id);
            let events = store.read_stream_after(&stream(id), after).await?;
            if events.is_empty() {
                continue;
            }
            let mut state = self.state.write().expect("settings lock poisoned");
            let mut current = (*state.current).clone();
            for recorded in events {
                // Two refreshes at once may both have read this event: apply it once.
                if recorded.version <= state.versions.get(id).copied().unwrap_or(0) {
                    continue;
                }
                state.versions.insert(id.clone(), recorded.version);
                let Event::AuthoritySettingsChanged(change) = &recorded.event else {
                    continue;
                };
                if let Some(authority) = current.get_mut(id) {
                    apply(authority, change);
                }
                state.history.entry(id.clone()).or_default().push(Change {
                    version: recorded.version,
                    at: hpki_events::envelope::format_time(recorded.recorded_at),
                    actor: recorded.metadata.actor.as_str().to_owned(),
                    fields: fields_of(change),
                    reason: change.reason.clone(),
                });
            }
            state.current = Arc::new(current);
        }
        Ok(())
    }

    /// Records an administrator's change to one authority, made against the settings at
    /// `read_version` (the version their form showed). `Ok(false)`: nothing differed, nothing
    /// recorded. Refused, with every bad field named, before anything is written.
    pub async fn change(
        &self,
        store: &Store,
        authority: &str,
        read_version: i64,
        proposed: &Proposed,
        actor: &Actor,
    ) -> Result<bool, OfficeError> {
        self.refresh(store).await?;
        let current = self.current();
        let Some(now) = current.get(authority) else {
            return Err(Problem::not_found("認証局", "the authority").into());
        };
        if read_version != self.version(authority) {
            return Err(changed_meanwhile().into());
        }
        let change = decide(now, proposed)?;
        if fields_of(&change).is_empty() {
            return Ok(false);
        }
        let expected = if read_version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(read_version)
        };
        store
            .append_to(
                &stream(authority),
                expected,
                vec![NewEvent::new(change.into())],
                Metadata::new(actor.clone()),
            )
            .await
            .map_err(|e| match e {
                AppendError::Conflict { .. } => OfficeError::from(changed_meanwhile()),
                other => OfficeError::Internal(other.into()),
            })?;
        self.refresh(store).await?;
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().expect("settings lock poisoned")
    }
}

fn changed_meanwhile() -> Problem {
    Problem::new(
        409,
        "settings_changed",
        "この画面を開いた後に別の変更が記録されました。画面を開き直してから変更してください。何も変更していません",
        "the settings were changed after this page was opened; open it again and make your change there. Nothing was changed",
    )
}

/// The overlay: each field the change names replaces the one in force.
fn apply(authority: &mut Authority, change: &AuthoritySettingsChanged) {
    let texts = [
        (&change.name_ja, &mut authority.name_ja),
        (&change.name_en, &mut authority.name_en),
        (&change.contact_ja, &mut authority.contact_ja),
        (&change.contact_en, &mut authority.contact_en),
        (&change.password_hint_ja, &mut authority.password_hint_ja),
        (&change.password_hint_en, &mut authority.password_hint_en),
    ];
    for (new, old) in texts {
        if let Some(new) = new {
            old.clone_from(new);
        }
    }
    if let Some(channels) = &change.reissue_channels {
        authority.reissue_channels.clone_from(channels);
    }
    if let Some(years) = change.validity_years {
        authority.validity_years = years;
    }
}

/// The names of the fields a change sets, in the form's order.
pub fn fields_of(change: &AuthoritySettingsChanged) -> Vec<&'static str> {
    let present = [
        ("name_ja", change.name_ja.is_some()),
        ("name_en", change.name_en.is_some()),
        ("contact_ja", change.contact_ja.is_some()),
        ("contact_en", change.contact_en.is_some()),
        ("password_hint_ja", change.password_hint_ja.is_some()),
        ("password_hint_en", change.password_hint_en.is_some()),
        ("reissue_channels", change.reissue_channels.is_some()),
        ("validity_years", change.validity_years.is_some()),
    ];
    present
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
}

/// Checks every field of a proposal and keeps those that differ from `now`.
fn decide(now: &Authority, proposed: &Proposed) -> Result<AuthoritySettingsChanged, Problem> {
    let mut bad = Vec::new();
    let mut change = AuthoritySettingsChanged::default();
    let texts = [
        (
            "name_ja",
            &proposed.name_ja,
            &now.name_ja,
            &mut change.name_ja,
        ),
        (
            "name_en",
            &proposed.name_en,
            &now.name_en,
            &mut change.name_en,
        ),
        (
            "contact_ja",
            &proposed.contact_ja,
            &now.contact_ja,
            &mut change.contact_ja,
        ),
        (
            "contact_en",
            &proposed.contact_en,
            &now.contact_en,
            &mut change.contact_en,
        ),
        (
            "password_hint_ja",
            &proposed.password_hint_ja,
            &now.password_hint_ja,
            &mut change.password_hint_ja,
        ),
        (
            "password_hint_en",
            &proposed.password_hint_en,
            &now.password_hint_en,
            &mut change.password_hint_en,
        ),
    ];
    for (field, new, old, slot) in texts {
        let new = new.trim();
        match text_problem(new) {
            Some((ja, en)) => bad.push(detail(field, ja, en)),
            None if new != old => *slot = Some(new.to_owned()),
            None => {}
        }
    }

    let mut channels = proposed.reissue_channels.clone();
    channels.sort();
    channels.dedup();
    let mut old_channels = now.reissue_channels.clone();
    old_channels.sort();
    if channels.is_empty() {
        bad.push(detail(
            "reissue_channels",
            "再発行の受付方法を一つ以上選んでください（選ばないと利用者が再発行を申し込めません）".into(),
            "choose at least one reissue channel (without one, subscribers cannot ask for a reissue)".into(),
        ));
    } else if channels != old_channels {
        change.reissue_channels = Some(channels);
    }

    match proposed.validity_years.trim().parse::<u32>() {
        Ok(years) if VALIDITY_YEARS.contains(&years) => {
            if years != now.validity_years {
                change.validity_years = Some(years);
            }
        }
        _ => bad.push(detail(
            "validity_years",
            format!(
                "有効期間は{}から{}までの整数（年）で入力してください（「{}」は使えません）",
                VALIDITY_YEARS.start(),
                VALIDITY_YEARS.end(),
                proposed.validity_years
            ),
            format!(
                "the validity is a whole number of years from {} to {} ({:?} is not)",
                VALIDITY_YEARS.start(),
                VALIDITY_YEARS.end(),
                proposed.validity_years
            ),
        )),
    }

    let reason = proposed.reason.trim();
    match text_problem(reason) {
        Some((ja, en)) => bad.push(detail("reason", ja, en)),
        None => change.reason = reason.to_owned(),
    }

    if bad.is_empty() {
        Ok(change)
    } else {
        Err(Problem::new(
            422,
            "invalid_settings",
            "設定に誤りがあります。何も変更していません",
            "the settings have mistakes; nothing was changed",
        )
        .field(&bad[0].field.clone())
        .details(bad))
    }
}

/// Why a one-line text cannot be used, if it cannot.
fn text_problem(text: &str) -> Option<(String, String)> {
    if text.is_empty() {
        return Some(("入力してください".into(), "must not be empty".into()));
    }
    if text.chars().count() > MAX_CHARS {
        return Some((
            format!("{MAX_CHARS}文字以内で入力してください"),
            format!("at most {MAX_CHARS} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Some((
            "改行や制御文字は使えません".into(),
            "no line breaks or control characters".into(),
        ));
    }
    None
}

/// What the form calls a field, Japanese and English.
pub fn label(field: &str) -> (&'static str, &'static str) {
    match field {
        "name_ja" => ("名称（日本語）", "Name (Japanese)"),
        "name_en" => ("名称（英語）", "Name (English)"),
        "contact_ja" => ("問い合わせ先（日本語）", "Contact (Japanese)"),
        "contact_en" => ("問い合わせ先（英語）", "Contact (English)"),
        "password_hint_ja" => ("パスワードの案内（日本語）", "Password hint (Japanese)"),
        "password_hint_en" => ("パスワードの案内（英語）", "Password hint (English)"),
        "reissue_channels" => ("再発行の受付方法", "Reissue channels"),
        "validity_years" => (
            "新しい証明書の有効期間（年）",
            "Validity of new certificates (years)",
        ),
        "reason" => ("変更の理由", "Reason for the change"),
        _ => ("", ""),
    }
}

/// A bad field, its message led by the field's label.
fn detail(field: &str, ja: String, en: String) -> Detail {
    let (label_ja, label_en) = label(field);
    Detail {
        line: None,
        column: None,
        field: field.to_owned(),
        code: "invalid".to_owned(),
        message: Message {
            ja: format!("{label_ja}: {ja}"),
            en: format!("{label_en}: {en}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jma() -> Authority {
        crate::config::Config::default().authorities["jma"].clone()
    }

    fn as_is(a: &Authority) -> Proposed {
        Proposed {
            name_ja: a.name_ja.clone(),
            name_en: a.name_en.clone(),
            contact_ja: a.contact_ja.clone(),
            contact_en: a.contact_en.clone(),
            password_hint_ja: a.password_hint_ja.clone(),
            password_hint_en: a.password_hint_en.clone(),
            reissue_channels: a.reissue_channels.iter().rev().copied().collect(),
            validity_years: a.validity_years.to_string(),
            reason: "見直し".into(),
        }
    }

    #[test]
    fn an_unchanged_form_changes_nothing_and_a_changed_field_only_that() {
        let a = jma();
        let change = decide(&a, &as_is(&a)).unwrap();
        assert!(fields_of(&change).is_empty(), "{change:?}");

        let mut p = as_is(&a);
        p.contact_ja = "  日本医師会 電子認証センター 03-0000-0000 ".into();
        p.validity_years = "2".into();
        let change = decide(&a, &p).unwrap();
        assert_eq!(fields_of(&change), ["contact_ja", "validity_years"]);
        assert_eq!(
            change.contact_ja.as_deref(),
            Some("日本医師会 電子認証センター 03-0000-0000")
        );

        let mut b = a.clone();
        apply(&mut b, &change);
        assert_eq!(b.validity_years, 2);
        assert_eq!(b.contact_ja, "日本医師会 電子認証センター 03-0000-0000");
        assert_eq!(b.name_ja, a.name_ja);
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let a = jma();
        let mut p = as_is(&a);
        p.name_ja = " ".into();
        p.contact_en = "line\nbreak".into();
        p.password_hint_ja = "あ".repeat(MAX_CHARS + 1);
        p.reissue_channels.clear();
        p.validity_years = "9".into();
        p.reason = String::new();
        let problem = decide(&a, &p).unwrap_err();
        assert_eq!(problem.status, 422);
        let fields: Vec<_> = problem.details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name_ja",
                "contact_en",
                "password_hint_ja",
                "reissue_channels",
                "validity_years",
                "reason"
            ]
        );
        for years in ["0", "-1", "abc", "", "2.5"] {
            p = as_is(&a);
            p.validity_years = years.into();
            let problem = decide(&a, &p).unwrap_err();
            assert_eq!(
                problem.field.as_deref(),
                Some("validity_years"),
                "{years:?}"
            );
        }
    }
}
