//! Staff accounts (issue 7): who may use the console and the API, with which roles, and how
//! they sign in.
//!
//! An account is the stream `staff-<name>`: created with its roles, its setup links, password
//! and passkey changes, every sign-in and failed attempt, lockouts, unlocks. The secrets
//! themselves (the argon2id hash of the password, each passkey as the verifier keeps it, the
//! SHA-256 of each API token and setup link) live beside the log in `staff_credentials`, so no
//! export carries them. Rules chosen (docs/console.md):
//! - a name is 2 to 40 of `a-z`, `0-9`, `-`, starting with a letter (it is a stream name);
//! - a setup link works once, until it expires; following one sets a new password and replaces
//!   every passkey of the account;
//! - `console.max_failures` failed factors in a row lock the account for
//!   `console.lockout_minutes` (an administrator may unlock it sooner); a full sign-in resets
//!   the count; an unknown name costs the same hashing time as a known one;
//! - an API token acts with the account's current roles; a disabled account's tokens stop.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use hpki_events::vocabulary::{
    Role, SignInFactor, StaffAccountCreated, StaffApiTokenIssued, StaffDisabled, StaffLockedOut,
    StaffPasskeyRegistered, StaffPasswordSet, StaffRolesChanged, StaffSetupLinkIssued,
    StaffSignInFailed, StaffSignedIn, StaffUnlocked,
};
use hpki_events::{Actor, Event, Metadata, NewEvent, RecordedEvent};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::clock::SharedClock;
use crate::config::{Config, Console};
use crate::problem::{OfficeError, Problem};
use crate::store::{ExpectedVersion, StaffCredential, Store};

/// One staff account as its stream tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub mail_house: Option<String>,
    pub disabled: bool,
    /// Failed factors since the last full sign-in.
    pub failures: u32,
    pub locked_until: Option<OffsetDateTime>,
    pub password_set: bool,
    /// Credential ids (base64url) of the registered passkeys.
    pub passkeys: Vec<String>,
    pub created_at: OffsetDateTime,
    pub last_sign_in: Option<OffsetDateTime>,
    pub version: i64,
}

impl Account {
    pub fn holds(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the account reads the office's work (every role but a mail house's does).
    pub fn reads_office(&self) -> bool {
        self.roles.iter().any(|r| *r != Role::MailHouse)
    }

    /// The mail house whose print batches alone the account works on: that of a mail house's
    /// operator who is not also a registration officer.
    pub fn own_mail_house(&self) -> Option<&str> {
        (self.holds(Role::MailHouse) && !self.holds(Role::Officer))
            .then_some(self.mail_house.as_deref())
            .flatten()
    }

    pub fn actor(&self) -> Actor {
        Actor::parse(&format!("staff:{}", self.name)).expect("account names are valid actors")
    }

    pub fn locked_at(&self, now: OffsetDateTime) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// Ready to sign in: a password and at least one passkey.
    pub fn set_up(&self) -> bool {
        self.password_set && !self.passkeys.is_empty()
    }

    /// Folds a staff stream; `None` for an empty one.
    pub fn fold(events: &[RecordedEvent]) -> Option<Account> {
        let mut account: Option<Account> = None;
        for recorded in events {
            match (&recorded.event, account.as_mut()) {
                (Event::StaffAccountCreated(e), _) => {
                    account = Some(Account {
                        name: e.name.clone(),
                        display_name: e.display_name.clone(),
                        roles: e.roles.clone(),
                        mail_house: e.mail_house.clone(),
                        disabled: false,
                        failures: 0,
                        locked_until: None,
                        password_set: false,
                        passkeys: Vec::new(),
                        created_at: recorded.recorded_at,
                        last_sign_in: None,
                        version: 0,
                    })
                }
                (Event::StaffRolesChanged(e), Some(a)) => {
                    a.roles = e.roles.clone();
                    a.mail_house = e.mail_house.clone();
                }
                (Event::StaffPasswordSet(_), Some(a)) => {
                    a.password_set = true;
                    // A setup link replaces every passkey: the one registered next is the only.
                    a.passkeys.clear();
                    a.failures = 0;
                    a.locked_until = None;
                }
                (Event::StaffPasskeyRegistered(e), Some(a)) => {
                    a.passkeys.push(e.credential_id.clone())
                }
                (Event::StaffSignedIn(_), Some(a)) => {
                    a.failures = 0;
                    a.last_sign_in = Some(recorded.recorded_at);
                }
                (Event::StaffSignInFailed(e), Some(a)) => a.failures = e.failures,
                (Event::StaffLockedOut(e), Some(a)) => {
                    a.locked_until = OffsetDateTime::parse(
                        &e.until,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .ok();
                }
                (Event::StaffUnlocked(_), Some(a)) => {
                    a.failures = 0;
                    a.locked_until = None;
                }
                (Event::StaffDisabled(_), Some(a)) => a.disabled = true,
                _ => {}
            }
            if let Some(a) = account.as_mut() {
                a.version = recorded.version;
            }
        }
        account
    }
}

/// What a sign-in attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum SignIn {
    /// The password is right: the passkey comes next.
    PasswordAccepted,
    /// Name or password wrong (which is not said).
    Wrong,
    /// Locked until then (this failure may have locked it).
    Locked(OffsetDateTime),
    /// Disabled, or not yet set up.
    Unusable,
}

/// A one-time setup link as made: the URL is shown once and never stored.
#[derive(Debug)]
pub struct SetupLink {
    pub url: String,
    pub expires_at: OffsetDateTime,
}

/// The staff accounts, read from the log; credentials from beside it.
#[derive(Clone)]
pub struct Directory {
    store: Store,
    clock: SharedClock,
    rules: Console,
    mail_houses: Vec<String>,
    /// Hashed when a name is unknown, so a wrong name costs what a wrong password does.
    decoy: String,
}

pub fn stream(name: &str) -> String {
    format!("staff-{name}")
}

/// Checks an account name: it becomes a stream name and an actor.
pub fn check_name(name: &str) -> Result<(), Problem> {
    let ok = (2..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        return Ok(());
    }
    Err(Problem::new(
        422,
        "bad_staff_name",
        "名前は英小文字で始まる2〜40文字の英小文字・数字・「-」にしてください",
        "a name is 2 to 40 of a-z, 0-9 and '-', starting with a letter",
    )
    .field("name"))
}

fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
        .to_string())
}

fn password_matches(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Roles in one order, each once, so that two lists of the same roles compare equal.
fn normalised(roles: &[Role]) -> Vec<Role> {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    roles
}

fn sha256_hex(text: &str) -> String {
    hex::encode(openssl::sha::sha256(text.as_bytes()))
}

fn rfc3339(at: OffsetDateTime) -> String {
    hpki_events::envelope::format_time(at)
}

impl Directory {
    pub fn new(store: Store, clock: SharedClock, config: &Config) -> anyhow::Result<Directory> {
        Ok(Directory {
            store,
            clock,
            rules: config.console.clone(),
            mail_houses: config.mail_houses.keys().cloned().collect(),
            decoy: hash_password("not a password anyone has")?,
        })
    }

    pub fn rules(&self) -> &Console {
        &self.rules
    }

    pub fn mail_houses(&self) -> &[String] {
        &self.mail_houses
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub async fn account(&self, name: &str) -> Result<Option<Account>, OfficeError> {
        if check_name(name).is_err() {
            return Ok(None);
        }
        let events = self.store.read_stream(&stream(name)).await?;
        Ok(Account::fold(&events))
    }

    async fn existing(&self, name: &str) -> Result<Account, OfficeError> {
        self.account(name)
            .await?
            .ok_or_else(|| Problem::not_found("職員アカウント", "staff account").into())
    }

    /// Every account, by name.
    pub async fn accounts(&self) -> Result<Vec<Account>, OfficeError> {
        let names: Vec<String> = self
            .store
            .streams_of("staff")
            .await?
            .into_iter()
            .filter_map(|stream| stream.strip_prefix("staff-").map(str::to_owned))
            .collect();
        let mut all = Vec::new();
        for name in names {
            if let Some(account) = self.account(&name).await? {
                all.push(account);
            }
        }
        Ok(all)
    }

    async fn append(
        &self,
        name: &str,
        version: i64,
        events: Vec<Event>,
        actor: &Actor,
    ) -> Result<(), OfficeError> {
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        self.store
            .append_to(
                &stream(name),
                expected,
                events.into_iter().map(NewEvent::new).collect(),
                Metadata::new(actor.clone()),
            )
            .await
            .map_err(|e| match e {
                crate::store::AppendError::Conflict { .. } => Problem::new(
                    409,
                    "conflict",
                    "同時に別の変更がありました。もう一度お試しください",
                    "the account changed at the same moment; try again",
                )
                .into(),
                other => OfficeError::Internal(other.into()),
            })?;
        Ok(())
    }

    fn check_roles(&self, roles: &[Role], mail_house: Option<&str>) -> Result<(), Problem> {
        if roles.is_empty() {
            return Err(Problem::new(
                422,
                "no_role",
                "役割を一つ以上選んでください",
                "choose at least one role",
            )
            .field("roles"));
        }
        match (roles.contains(&Role::MailHouse), mail_house) {
            (true, Some(house)) if self.mail_houses.iter().any(|h| h == house) => Ok(()),
            (true, _) => Err(Problem::new(
                422,
                "bad_mail_house",
                "印刷・発送業者の役割には、設定にある業者名が必要です",
                "the mail-house role needs a mail house named in the configuration",
            )
            .field("mail_house")),
            (false, _) => Ok(()),
        }
    }

    /// Opens an account and returns its first setup link.
    pub async fn create(
        &self,
        name: &str,
        display_name: &str,
        roles: &[Role],
        mail_house: Option<&str>,
        actor: &Actor,
    ) -> Result<SetupLink, OfficeError> {
        check_name(name)?;
        let display_name = display_name.trim();
        if display_name.is_empty() || display_name.chars().count() > 60 {
            return Err(Problem::new(
                422,
                "bad_display_name",
                "表示名は1〜60文字にしてください",
                "the display name is 1 to 60 characters",
            )
            .field("display_name")
            .into());
        }
        let roles = normalised(roles);
        self.check_roles(&roles, mail_house)?;
        if self.account(name).await?.is_some() {
            return Err(Problem::new(
                409,
                "staff_exists",
                format!("職員「{name}」は既にあります"),
                format!("staff member {name} exists already"),
            )
            .field("name")
            .into());
        }
        let (link, token, issued) = self.new_link();
        let created = StaffAccountCreated {
            name: name.to_owned(),
            display_name: display_name.to_owned(),
            mail_house: mail_house
                .filter(|_| roles.contains(&Role::MailHouse))
                .map(str::to_owned),
            roles,
        };
        // The log first, then the credentials, here and below: a request the log refuses (a
        // conflict with another at the same time) then changes nothing, and no credential
        // changes without its record. Should the credential's write fail after the record,
        // the person tries again (a setup link stays usable until it is spent).
        self.append(name, 0, vec![created.into(), issued.clone().into()], actor)
            .await?;
        self.keep_link(name, &token, &issued).await?;
        Ok(link)
    }

    /// A new setup link: the link, its token, and the event that says it was made.
    fn new_link(&self) -> (SetupLink, String, StaffSetupLinkIssued) {
        let token = crate::portal::session::random_id();
        let expires_at = self.now() + time::Duration::hours(self.rules.setup_link_hours.max(1));
        let issued = StaffSetupLinkIssued {
            link_id: Uuid::now_v7(),
            expires_at: rfc3339(expires_at),
        };
        let url = format!(
            "{}/console/setup/{token}",
            self.rules.base_url.trim_end_matches('/')
        );
        (SetupLink { url, expires_at }, token, issued)
    }

    /// Keeps a setup link's token's hash for `name`: every earlier link of the account stops
    /// working.
    async fn keep_link(
        &self,
        name: &str,
        token: &str,
        issued: &StaffSetupLinkIssued,
    ) -> Result<(), OfficeError> {
        self.store
            .delete_staff_credentials(name, "setup", None)
            .await?;
        self.store
            .put_staff_credential(&StaffCredential {
                name,
                kind: "setup",
                id: &issued.link_id.to_string(),
                secret: &sha256_hex(token),
                expires_at: Some(&issued.expires_at),
            })
            .await?;
        Ok(())
    }

    /// A new setup link for an account (a lost passkey, a forgotten password).
    pub async fn reissue_setup_link(
        &self,
        name: &str,
        actor: &Actor,
    ) -> Result<SetupLink, OfficeError> {
        let account = self.existing(name).await?;
        let (link, token, issued) = self.new_link();
        self.append(name, account.version, vec![issued.clone().into()], actor)
            .await?;
        self.keep_link(name, &token, &issued).await?;
        Ok(link)
    }

    /// The account and link id a setup link's token opens, if it is known and unexpired.
    pub async fn setup_link(&self, token: &str) -> Result<Option<(Account, Uuid)>, OfficeError> {
        let found = self
            .store
            .staff_credential_by_secret("setup", &sha256_hex(token))
            .await?;
        let Some((name, id, expires)) = found else {
            return Ok(None);
        };
        let expired = expires
            .and_then(|e| {
                OffsetDateTime::parse(&e, &time::format_description::well_known::Rfc3339).ok()
            })
            .is_none_or(|e| self.now() >= e);
        let link_id = Uuid::parse_str(&id).map_err(anyhow::Error::from)?;
        match self.account(&name).await? {
            Some(account) if !expired && !account.disabled => Ok(Some((account, link_id))),
            _ => Ok(None),
        }
    }

    fn check_password_rules(&self, password: &str, again: &str) -> Result<(), Problem> {
        if password != again {
            return Err(Problem::new(
                422,
                "password_mismatch",
                "確認のパスワードが一致しません",
                "the two passwords differ",
            )
            .field("password_again"));
        }
        let min = self.rules.password_min_chars;
        if password.chars().count() < min || password.len() > 1024 {
            return Err(Problem::new(
                422,
                "password_short",
                format!("パスワードは{min}文字以上にしてください"),
                format!("a password has at least {min} characters"),
            )
            .field("password"));
        }
        Ok(())
    }

    /// Sets the password through a setup link (the link stays usable until a passkey is
    /// registered through it).
    pub async fn set_password(
        &self,
        account: &Account,
        link_id: Uuid,
        password: &str,
        again: &str,
    ) -> Result<(), OfficeError> {
        self.check_password_rules(password, again)?;
        let owned = password.to_owned();
        let phc = tokio::task::spawn_blocking(move || hash_password(&owned))
            .await
            .map_err(anyhow::Error::from)??;
        self.append(
            &account.name,
            account.version,
            vec![StaffPasswordSet { link_id }.into()],
            &account.actor(),
        )
        .await?;
        self.store
            .put_staff_credential(&StaffCredential {
                name: &account.name,
                kind: "password",
                id: "current",
                secret: &phc,
                expires_at: None,
            })
            .await?;
        self.store
            .delete_staff_credentials(&account.name, "passkey", None)
            .await?;
        Ok(())
    }

    /// Records the passkey registered through a setup link, and spends the link.
    pub async fn add_passkey(
        &self,
        name: &str,
        link_id: Uuid,
        made: &crate::portal::ceremony::Made,
    ) -> Result<(), OfficeError> {
        let account = self.existing(name).await?;
        self.append(
            name,
            account.version,
            vec![
                StaffPasskeyRegistered {
                    credential_id: made.credential_id.clone(),
                    aaguid: made.aaguid,
                }
                .into(),
            ],
            &account.actor(),
        )
        .await?;
        self.store
            .put_staff_credential(&StaffCredential {
                name,
                kind: "passkey",
                id: &made.credential_id,
                secret: &made.passkey,
                expires_at: None,
            })
            .await?;
        self.store
            .delete_staff_credentials(name, "setup", Some(&link_id.to_string()))
            .await?;
        Ok(())
    }

    /// The first factor. A wrong password (or a wrong name, at the same cost) counts towards
    /// the lockout; a locked, disabled or unfinished account is refused before any hashing.
    pub async fn check_password(&self, name: &str, password: &str) -> Result<SignIn, OfficeError> {
        let account = self.account(name).await?;
        let now = self.now();
        let phc = match &account {
            Some(a) if a.disabled || !a.set_up() => return Ok(SignIn::Unusable),
            Some(a) if a.locked_at(now) => {
                return Ok(SignIn::Locked(a.locked_until.expect("locked")));
            }
            Some(a) => self
                .store
                .staff_credentials(&a.name, "password")
                .await?
                .into_iter()
                .next()
                .map(|(_, phc)| phc),
            None => None,
        };
        let phc = phc.unwrap_or_else(|| self.decoy.clone());
        let entered = password.to_owned();
        let right = tokio::task::spawn_blocking(move || password_matches(&phc, &entered))
            .await
            .map_err(anyhow::Error::from)?;
        match account {
            Some(_) if right => Ok(SignIn::PasswordAccepted),
            Some(account) => self.failed(&account, SignInFactor::Password).await,
            None => Ok(SignIn::Wrong),
        }
    }

    /// Counts a failed factor; locks the account at the limit.
    pub async fn failed(
        &self,
        account: &Account,
        factor: SignInFactor,
    ) -> Result<SignIn, OfficeError> {
        let failures = account.failures + 1;
        let mut events: Vec<Event> = vec![StaffSignInFailed { factor, failures }.into()];
        let locked = failures >= self.rules.max_failures.max(1);
        let until = self.now() + time::Duration::minutes(self.rules.lockout_minutes.max(1));
        if locked {
            events.push(
                StaffLockedOut {
                    until: rfc3339(until),
                }
                .into(),
            );
        }
        self.append(&account.name, account.version, events, &account.actor())
            .await?;
        Ok(if locked {
            SignIn::Locked(until)
        } else {
            SignIn::Wrong
        })
    }

    /// The passkeys an account may sign in with.
    pub async fn passkeys(
        &self,
        name: &str,
    ) -> Result<Vec<webauthn_rs::prelude::Passkey>, OfficeError> {
        let rows = self.store.staff_credentials(name, "passkey").await?;
        rows.into_iter()
            .map(|(_, json)| serde_json::from_str(&json).map_err(|e| anyhow::anyhow!(e).into()))
            .collect()
    }

    /// Records a sign-in, and stores the passkey's new signature counter: webauthn-rs refuses
    /// a later sign-in whose counter is not above the stored one (a cloned authenticator), which
    /// only works if the stored one follows.
    pub async fn signed_in(
        &self,
        account: &Account,
        verified: &crate::portal::ceremony::Verified,
    ) -> Result<(), OfficeError> {
        let stored = self
            .store
            .staff_credentials(&account.name, "passkey")
            .await?;
        if let Some((id, json)) = stored
            .into_iter()
            .find(|(id, _)| *id == verified.credential_id)
        {
            let mut passkey: webauthn_rs::prelude::Passkey =
                serde_json::from_str(&json).map_err(|e| anyhow::anyhow!(e))?;
            if passkey.update_credential(&verified.result) == Some(true) {
                let json = serde_json::to_string(&passkey).map_err(|e| anyhow::anyhow!(e))?;
                self.store
                    .put_staff_credential(&StaffCredential {
                        name: &account.name,
                        kind: "passkey",
                        id: &id,
                        secret: &json,
                        expires_at: None,
                    })
                    .await?;
            }
        }
        self.append(
            &account.name,
            account.version,
            vec![
                StaffSignedIn {
                    credential_id: verified.credential_id.clone(),
                }
                .into(),
            ],
            &account.actor(),
        )
        .await
    }

    pub async fn change_roles(
        &self,
        name: &str,
        roles: &[Role],
        mail_house: Option<&str>,
        actor: &Actor,
    ) -> Result<(), OfficeError> {
        let account = self.existing(name).await?;
        let roles = normalised(roles);
        self.check_roles(&roles, mail_house)?;
        let mail_house = mail_house
            .filter(|_| roles.contains(&Role::MailHouse))
            .map(str::to_owned);
        if roles == account.roles && mail_house == account.mail_house {
            return Ok(());
        }
        self.append(
            name,
            account.version,
            vec![StaffRolesChanged { roles, mail_house }.into()],
            actor,
        )
        .await
    }

    pub async fn unlock(&self, name: &str, actor: &Actor) -> Result<(), OfficeError> {
        let account = self.existing(name).await?;
        self.append(name, account.version, vec![StaffUnlocked {}.into()], actor)
            .await
    }

    pub async fn disable(
        &self,
        name: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<(), OfficeError> {
        let account = self.existing(name).await?;
        if account.disabled {
            return Ok(());
        }
        if actor.as_str() == account.actor().as_str() {
            return Err(Problem::new(
                409,
                "disable_self",
                "自分のアカウントは停止できません",
                "you cannot disable your own account",
            )
            .into());
        }
        self.append(
            name,
            account.version,
            vec![
                StaffDisabled {
                    reason: reason.trim().to_owned(),
                }
                .into(),
            ],
            actor,
        )
        .await
    }

    /// A new API token for an account: shown once, only its SHA-256 kept.
    pub async fn issue_token(&self, name: &str, actor: &Actor) -> Result<String, OfficeError> {
        let account = self.existing(name).await?;
        let token = crate::portal::session::random_id();
        let token_id = Uuid::now_v7().to_string();
        self.store
            .put_staff_credential(&StaffCredential {
                name,
                kind: "token",
                id: &token_id,
                secret: &sha256_hex(&token),
                expires_at: None,
            })
            .await?;
        self.append(
            name,
            account.version,
            vec![StaffApiTokenIssued { token_id }.into()],
            actor,
        )
        .await?;
        Ok(token)
    }

    /// The account an API token belongs to, if it is usable.
    pub async fn by_token(&self, token: &str) -> Result<Option<Account>, OfficeError> {
        let found = self
            .store
            .staff_credential_by_secret("token", &sha256_hex(token.trim()))
            .await?;
        let Some((name, _, _)) = found else {
            return Ok(None);
        };
        Ok(self.account(&name).await?.filter(|a| !a.disabled))
    }

    /// Brings the accounts `[staff.<name>]` of the configuration into the log: created with
    /// their roles, or their roles brought in line, and their token registered.
    pub async fn provision(&self, config: &Config) -> Result<(), OfficeError> {
        let actor = Actor::system("configuration");
        for (name, entry) in &config.staff {
            check_name(name).map_err(|p| anyhow::anyhow!("[staff.{name}]: {}", p.message.en))?;
            // The token is registered (again: the configuration may have changed it) before
            // the account's events, so the account never exists without it.
            self.store
                .put_staff_credential(&StaffCredential {
                    name,
                    kind: "token",
                    id: "configuration",
                    secret: &entry.token_sha256.to_ascii_lowercase(),
                    expires_at: None,
                })
                .await?;
            let roles = normalised(&entry.roles);
            let (version, events): (i64, Vec<Event>) = match self.account(name).await? {
                None => (
                    0,
                    vec![
                        StaffAccountCreated {
                            name: name.clone(),
                            display_name: name.clone(),
                            roles,
                            mail_house: None,
                        }
                        .into(),
                        StaffApiTokenIssued {
                            token_id: "configuration".into(),
                        }
                        .into(),
                    ],
                ),
                Some(account) if roles != account.roles => (
                    account.version,
                    vec![
                        StaffRolesChanged {
                            roles,
                            mail_house: account.mail_house.clone(),
                        }
                        .into(),
                    ],
                ),
                Some(_) => continue,
            };
            self.append(name, version, events, &actor).await?;
        }
        Ok(())
    }

    /// While no administrator can sign in (the first start, or one never finished): opens
    /// the account `admin` (or gives it a new link, the old one then dead) and returns its
    /// setup link, for the operator to follow once.
    pub async fn first_start(&self) -> Result<Option<SetupLink>, OfficeError> {
        let accounts = self.accounts().await?;
        let usable = |a: &Account| a.holds(Role::Administrator) && a.set_up() && !a.disabled;
        if accounts.iter().any(usable) {
            return Ok(None);
        }
        let actor = Actor::system("first-start");
        if accounts.iter().any(|a| a.name == "admin") {
            return Ok(Some(self.reissue_setup_link("admin", &actor).await?));
        }
        let roles = [Role::Administrator];
        Ok(Some(
            self.create("admin", "管理者 Administrator", &roles, None, &actor)
                .await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stream_names() {
        assert!(check_name("suzuki").is_ok());
        assert!(check_name("mail-house-1").is_ok());
        for bad in [
            "",
            "a",
            "Suzuki",
            "1abc",
            "sato_",
            "<script>",
            &"a".repeat(41),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(password_matches(&phc, "correct horse battery"));
        assert!(!password_matches(&phc, "correct horse batterY"));
        assert!(!password_matches("not a hash", "x"));
    }
}
