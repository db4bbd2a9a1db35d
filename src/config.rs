//! Typed, layered configuration: defaults, then a TOML file, then `HPKI_*` environment
//! variables (`HPKI_SERVER__LISTEN` sets `server.listen`). `ops/hpki.example.toml` documents
//! every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `sqlite://var/hpki.db` (the embedded default) or `postgres://user@host/db`.
    pub database_url: String,
    /// Where the back office keeps files of its own: keys, replays, publications.
    pub data_dir: PathBuf,
    pub server: Server,
    pub audit: Audit,
    pub projections: Projections,
    pub log: Log,
    /// The issuing authorities this back office serves, by id (`jma`, `jpa`).
    pub authorities: BTreeMap<String, Authority>,
    pub keys: Keys,
    pub portal: Portal,
    pub console: Console,
    pub intake: Intake,
    pub cards: Cards,
    pub lifecycle: Lifecycle,
    /// Staff who may call the API, by name (the actor recorded is `staff:<name>`).
    pub staff: BTreeMap<String, Staff>,
    pub crl: Crl,
    pub mail: Mail,
    pub print: Print,
    /// The mail houses that print and mail QR cards, by name (the actor is `mail-house:<name>`).
    pub mail_houses: BTreeMap<String, MailHouse>,
}

/// CRL publication (issue 5).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crl {
    /// Whether `hpki serve` publishes on its own (on the schedule, and within `poll_seconds`
    /// of a revocation). When false, only when asked (`POST /api/v1/jobs/crl`, `hpki crl publish`).
    pub background: bool,
    /// Cron expression, seconds first, in JST: when every authority's CRL is published.
    pub schedule: String,
    /// nextUpdate is thisUpdate plus this many hours.
    pub next_update_hours: i64,
    /// Where the CRLs are written (DER and PEM); created when missing. Empty: `data_dir/crl`.
    pub publish_dir: PathBuf,
    /// How often (seconds) the publisher looks for revocations made by another instance;
    /// a revocation made in this instance wakes it at once.
    pub poll_seconds: u64,
}

/// The mail outbox (issue 5).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mail {
    /// Whether `hpki serve` sends mail as the log calls for it. When false, mail goes only when
    /// asked (`POST /api/v1/jobs/mail`, `hpki mail send`).
    pub background: bool,
    /// `smtp`, or `file` (development: each mail is written to `file_dir` as an .eml file).
    pub transport: MailTransport,
    pub smtp_host: String,
    pub smtp_port: u16,
    /// `none` (plain, for a relay on loopback), `starttls` or `tls`.
    pub smtp_tls: SmtpTls,
    /// Empty for no authentication.
    pub smtp_username: String,
    /// The file holding the SMTP password (never the password itself in configuration).
    pub smtp_password_file: PathBuf,
    pub from: String,
    /// For the `file` transport. Empty: `data_dir/mail`.
    pub file_dir: PathBuf,
    /// Mails sent at once.
    pub concurrency: usize,
    /// The first retry waits this long; each next one twice as long, up to `retry_max_seconds`.
    pub retry_first_seconds: i64,
    pub retry_max_seconds: i64,
    /// Seconds one SMTP exchange may take before it counts as a temporary failure.
    pub timeout_seconds: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MailTransport {
    Smtp,
    File,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

/// Print batches (issue 5).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Print {
    /// Where batch PDFs and manifests are written; created when missing. Empty:
    /// `data_dir/print`.
    pub dir: PathBuf,
    /// Cron expression, seconds first, in JST: when batches are made of the waiting QRs.
    /// Empty: only when staff ask.
    pub schedule: String,
    /// Whether `hpki serve` makes the scheduled batches on its own. When false, only when
    /// asked (`POST /api/v1/jobs/print`, `hpki print scheduled`).
    pub background: bool,
    /// Most cards in one batch.
    pub max_cards: usize,
    /// Postal addresses of the association offices cards may be sent to, by office name.
    pub offices: BTreeMap<String, OfficeAddress>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfficeAddress {
    pub postal_code: String,
    pub address: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailHouse {
    /// SHA-256 (hex) of the mail house's API token; `hpki staff token NAME` makes one.
    pub token_sha256: String,
    /// The authorities whose cards this mail house prints.
    pub authorities: Vec<String>,
    /// `ten_up` (A4 sheets) or `one_per_page` (a card printer).
    pub imposition: hpki_events::vocabulary::Imposition,
    /// How the manifest and the confirmation files are encoded: `utf-8-bom` or `cp932`.
    pub encoding: FileEncoding,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum FileEncoding {
    #[serde(rename = "utf-8-bom")]
    Utf8Bom,
    #[serde(rename = "cp932")]
    Cp932,
}

impl FileEncoding {
    pub fn name(self) -> &'static str {
        match self {
            FileEncoding::Utf8Bom => "utf-8-bom",
            FileEncoding::Cp932 => "cp932",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// The key-encryption key (64 hex digits) sealing second-certificate keys and birth
    /// dates with AES-256-GCM. Generated on first start, with a warning, when absent.
    pub kek_file: PathBuf,
    /// The secret (64 hex digits) QR tokens are derived from. Generated on first start.
    pub qr_secret_file: PathBuf,
    /// Second-certificate key pairs kept generated ahead of issuance.
    pub pool_size: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Portal {
    /// The registration portal's public base URL; QR codes carry `<base_url>/r/<token>`. It is
    /// also the WebAuthn origin, so it must be `https://`, or `http://localhost` in development
    /// (browsers allow passkeys nowhere else).
    pub base_url: String,
    /// The WebAuthn relying-party id: a domain, the base URL's host or a parent of it. Empty:
    /// the base URL's host. Passkeys are bound to it for good: changing it orphans them.
    pub rp_id: String,
    /// The name the phone shows for the relying party.
    pub rp_name: String,
    /// Minutes a portal session may sit idle before it starts over from the QR code.
    pub idle_minutes: i64,
    /// Portal requests one source address may make per minute (pages and ceremonies; the
    /// password has its own limit, `lifecycle.password_attempts_per_minute`).
    pub requests_per_minute: u32,
}

/// The staff console (issue 7).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// The console's base URL as staff browsers reach it: the WebAuthn origin of staff
    /// passkeys, and the start of setup links. `https://`, or `http://localhost` in development.
    pub base_url: String,
    /// The WebAuthn relying-party id for staff passkeys; empty: the base URL's host.
    pub rp_id: String,
    pub rp_name: String,
    /// Minutes a console session may sit idle before its holder signs in again.
    pub idle_minutes: i64,
    /// Failed sign-ins in a row (password or passkey) that lock an account.
    pub max_failures: u32,
    /// How long a locked account stays locked, unless an administrator unlocks it first.
    pub lockout_minutes: i64,
    /// How long a setup link may be used.
    pub setup_link_hours: i64,
    /// The shortest password accepted.
    pub password_min_chars: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intake {
    /// Largest face photo accepted, in bytes.
    pub photo_max_bytes: usize,
    /// Largest JSON request body accepted (a photo travels base64 inside it), in bytes.
    pub json_max_bytes: usize,
    /// Largest CSV upload accepted, in bytes.
    pub csv_max_bytes: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cards {
    /// Development only: a stock receipt may give a count instead of each card's public key,
    /// and the keys are generated here as a card would make them at personalisation.
    pub simulate_personalisation: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Staff {
    /// SHA-256 (hex) of the staff member's API token; `hpki staff token NAME` makes one.
    pub token_sha256: String,
    /// What the staff member may do; a registration officer when not given.
    #[serde(default = "officer")]
    pub roles: Vec<Role>,
}

fn officer() -> Vec<Role> {
    vec![Role::Officer]
}

pub use hpki_events::vocabulary::Role;

/// The rules after issuance (issue 4).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Cron expression, seconds first, in JST: when QRs past their last usable day are marked
    /// expired and reminders are queued, and undecided revocation proposals expire.
    pub expiry_schedule: String,
    /// A QR still unused this many days before its last usable day queues a reminder mail.
    pub reminder_days: i64,
    /// Password attempts one source address may make per minute, over all QRs.
    pub password_attempts_per_minute: u32,
    /// Days a revocation proposal waits for a second person before it expires.
    pub revocation_decide_days: i64,
    /// Minutes an on-screen reissue challenge stays valid.
    pub challenge_minutes: i64,
}

/// How an applicant's subscriber ID is made from the registry number.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubscriberId {
    /// The registry number itself (JMA: the medical registration number, 医籍登録番号).
    RegistryNumber,
    /// `<registry number>-jpa` (JPA).
    RegistryNumberJpa,
}

/// How a subscriber can ask for a new QR (the event vocabulary's type).
pub use hpki_events::vocabulary::ReissueChannel;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authority {
    pub name_ja: String,
    pub name_en: String,
    /// `physician` or `pharmacist`: who applies to this authority.
    pub profession: String,
    /// The hcRole written into every certificate: `Medical Doctor`, `Pharmacist`.
    pub role: String,
    /// Digits a registry number has at least and at most.
    pub registry_digits: [usize; 2],
    pub subscriber_id: SubscriberId,
    /// The CA certificate and RSA-2048 key, PEM. Both empty: a development CA is generated
    /// under `data_dir/keys/` on first start, with a warning.
    pub ca_cert_file: PathBuf,
    pub ca_key_file: PathBuf,
    pub crl_url: String,
    pub cps_uri: String,
    pub policy_oid: String,
    pub validity_years: u32,
    /// The password hint printed on QR cards and used in e-mails, Japanese then English.
    pub password_hint_ja: String,
    pub password_hint_en: String,
    pub reissue_channels: Vec<ReissueChannel>,
    /// Where subscribers turn for help: shown on error pages and in e-mails.
    pub contact_ja: String,
    pub contact_en: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// The Ed25519 key (PKCS#8 PEM) that signs checkpoints; generated on first use if absent.
    pub key_file: PathBuf,
    /// Cron expression, seconds first, in JST: when `hpki serve` signs a checkpoint.
    pub checkpoint_schedule: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Projections {
    /// How often a projection looks for events written by another process.
    pub poll_interval_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `hpki_backoffice=debug,info`.
    pub level: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The top-level keys, as the environment may name them.
const KEYS: &[&str] = &[
    "database_url",
    "data_dir",
    "server",
    "audit",
    "projections",
    "log",
    "authorities",
    "keys",
    "portal",
    "intake",
    "cards",
    "lifecycle",
    "staff",
    "crl",
    "mail",
    "print",
    "mail_houses",
];

impl Default for Config {
    fn default() -> Config {
        Config {
            database_url: "sqlite://var/hpki.db".into(),
            data_dir: "var".into(),
            server: Server {
                listen: "127.0.0.1:8080".into(),
            },
            audit: Audit {
                key_file: "var/keys/audit-ed25519.pem".into(),
                checkpoint_schedule: "0 0 * * * *".into(),
            },
            projections: Projections {
                poll_interval_ms: 1000,
            },
            log: Log {
                format: LogFormat::Text,
                level: "info".into(),
            },
            authorities: BTreeMap::from([
                ("jma".to_owned(), Authority::jma()),
                ("jpa".to_owned(), Authority::jpa()),
            ]),
            keys: Keys {
                kek_file: "var/keys/kek.hex".into(),
                qr_secret_file: "var/keys/qr-secret.hex".into(),
                pool_size: 32,
            },
            portal: Portal {
                base_url: "http://localhost:8080".into(),
                rp_id: String::new(),
                rp_name: "HPKI セカンド電子証明書".into(),
                idle_minutes: 5,
                requests_per_minute: 120,
            },
            console: Console {
                base_url: "http://localhost:8080".into(),
                rp_id: String::new(),
                rp_name: "HPKI 発行局 業務コンソール".into(),
                idle_minutes: 15,
                max_failures: 5,
                lockout_minutes: 15,
                setup_link_hours: 72,
                password_min_chars: 12,
            },
            intake: Intake {
                photo_max_bytes: 2 * 1024 * 1024,
                json_max_bytes: 3 * 1024 * 1024,
                csv_max_bytes: 32 * 1024 * 1024,
            },
            cards: Cards {
                simulate_personalisation: true,
            },
            lifecycle: Lifecycle {
                expiry_schedule: "0 5 0 * * *".into(),
                reminder_days: 14,
                password_attempts_per_minute: 10,
                revocation_decide_days: 7,
                challenge_minutes: 5,
            },
            staff: BTreeMap::new(),
            crl: Crl {
                background: true,
                schedule: "0 0 2 * * *".into(),
                next_update_hours: 96,
                publish_dir: PathBuf::new(),
                poll_seconds: 10,
            },
            mail: Mail {
                background: true,
                transport: MailTransport::File,
                smtp_host: "127.0.0.1".into(),
                smtp_port: 25,
                smtp_tls: SmtpTls::None,
                smtp_username: String::new(),
                smtp_password_file: PathBuf::new(),
                from: "HPKI 認証局 <noreply@hpki.example.jp>".into(),
                file_dir: PathBuf::new(),
                concurrency: 8,
                retry_first_seconds: 60,
                retry_max_seconds: 3600,
                timeout_seconds: 30,
            },
            print: Print {
                dir: PathBuf::new(),
                schedule: String::new(),
                background: true,
                max_cards: 10_000,
                offices: BTreeMap::new(),
            },
            mail_houses: BTreeMap::new(),
        }
    }
}

impl Authority {
    /// JMA-CA, for physicians. Its cards say that the password is the birth date.
    pub fn jma() -> Authority {
        Authority {
            name_ja: "日本医師会電子認証センター".into(),
            name_en: "JMA Certificate Authority".into(),
            profession: "physician".into(),
            role: "Medical Doctor".into(),
            registry_digits: [1, 6],
            subscriber_id: SubscriberId::RegistryNumber,
            ca_cert_file: PathBuf::new(),
            ca_key_file: PathBuf::new(),
            crl_url: "http://crl.pki.med.or.jp/repository/crl/crl-sign2.crl".into(),
            cps_uri: "http://www.pki.med.or.jp/certpolicy/".into(),
            policy_oid: "1.2.392.100495.1.5.1.1.0.1".into(),
            validity_years: 5,
            password_hint_ja: "パスワードは生年月日（西暦8桁、例：19900317）です。".into(),
            password_hint_en: "The password is your date of birth (8 digits, e.g. 19900317)."
                .into(),
            reissue_channels: vec![ReissueChannel::WebForm, ReissueChannel::OnScreen],
            contact_ja: "日本医師会電子認証センター お問い合わせ窓口".into(),
            contact_en: "JMA Certificate Authority help desk".into(),
        }
    }

    /// JPA-CA, for pharmacists. It does not publish that the password is the birth date.
    pub fn jpa() -> Authority {
        Authority {
            name_ja: "日本薬剤師会認証局".into(),
            name_en: "JPA Certificate Authority".into(),
            profession: "pharmacist".into(),
            role: "Pharmacist".into(),
            registry_digits: [1, 6],
            subscriber_id: SubscriberId::RegistryNumberJpa,
            ca_cert_file: PathBuf::new(),
            ca_key_file: PathBuf::new(),
            crl_url: "http://crl.example.jp/jpa/crl-sign.crl".into(),
            cps_uri: "http://www.example.jp/jpa/certpolicy/".into(),
            policy_oid: "1.2.392.100495.1.5.1.1.0.1".into(),
            validity_years: 5,
            password_hint_ja: "パスワードは同封のご案内をご覧ください。".into(),
            password_hint_en: "For the password, see the letter enclosed.".into(),
            reissue_channels: vec![ReissueChannel::Email],
            contact_ja: "日本薬剤師会認証局 事務局（メール）".into(),
            contact_en: "JPA Certificate Authority office (by e-mail)".into(),
        }
    }

    /// The subscriber ID for a registry number.
    pub fn subscriber_id(&self, registry_number: &str) -> String {
        match self.subscriber_id {
            SubscriberId::RegistryNumber => registry_number.to_owned(),
            SubscriberId::RegistryNumberJpa => format!("{registry_number}-jpa"),
        }
    }

    /// Why `number` is not a registry number of this authority, if it is not one.
    pub fn check_registry_number(&self, number: &str) -> Result<(), String> {
        let [min, max] = self.registry_digits;
        let digits = number.len();
        if number.bytes().all(|b| b.is_ascii_digit()) && (min..=max).contains(&digits) {
            Ok(())
        } else if min == max {
            Err(format!("{number:?} is not {min} digits"))
        } else {
            Err(format!("{number:?} is not {min} to {max} digits"))
        }
    }
}

impl Config {
    /// A folder of the configuration, `data_dir/<name>` when left empty.
    fn folder(&self, configured: &Path, name: &str) -> PathBuf {
        if configured.as_os_str().is_empty() {
            self.data_dir.join(name)
        } else {
            configured.to_owned()
        }
    }

    pub fn crl_dir(&self) -> PathBuf {
        self.folder(&self.crl.publish_dir, "crl")
    }

    pub fn mail_dir(&self) -> PathBuf {
        self.folder(&self.mail.file_dir, "mail")
    }

    pub fn print_dir(&self) -> PathBuf {
        self.folder(&self.print.dir, "print")
    }

    /// Defaults, then `file` (if given, it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!("{}: no such file", file.display())));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // Only variables naming a configuration key: HPKI_CONFIG, HPKI_TEST_POSTGRES_URL and
        // the like belong to other tools.
        let env = Env::prefixed("HPKI_")
            .filter(|key| {
                let first = key
                    .as_str()
                    .split("__")
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                KEYS.contains(&first.as_str())
            })
            .split("__");
        figment.merge(env).extract().map_err(|error| {
            let lines: Vec<String> = error.into_iter().map(|e| describe(&e)).collect();
            ConfigError(lines.join("; "))
        })
    }
}

/// Why the configuration could not be read, on one line: for each key that is wrong, where it
/// was set (`hpki.toml:3`, or the environment variable) and the key as written in the file
/// (`server.listen`), separated by `; `.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// One of figment's errors as `where: key: what`. Figment's own text names the key with its
/// profile (`default.server.listen`) and the file by its last component only, and never the
/// line; the line is found here by looking the key up in the file again, with its spans.
fn describe(error: &figment::Error) -> String {
    let key = error.path.join(".");
    let source = error.metadata.as_ref().map(|m| (&m.name, &m.source));
    let place = match source {
        Some((_, Some(figment::Source::File(path)))) => match line_of(path, &error.path) {
            Some(line) => format!("{}:{line}", path.display()),
            None => path.display().to_string(),
        },
        Some((name, _)) if name.contains("environment") => {
            let parts: Vec<String> = error.path.iter().map(|p| p.to_ascii_uppercase()).collect();
            format!("environment variable HPKI_{}", parts.join("__"))
        }
        _ => "configuration".to_owned(),
    };
    // A TOML syntax error comes as several lines: where, the offending line under a caret
    // (which may hold a password), and what is wrong. The first and the last are kept.
    let what = error.kind.to_string();
    let mut lines = what.lines().map(str::trim).filter(|line| !line.is_empty());
    let first = lines.next().unwrap_or_default();
    let what = match lines.next_back() {
        Some(last) => format!("{first}: {last}"),
        None => first.to_owned(),
    };
    if key.is_empty() {
        format!("{place}: {what}")
    } else {
        format!("{place}: {key}: {what}")
    }
}

/// The line of `file` on which the key at `path` (`["server", "listen"]`) is written, or of
/// the nearest table above it that is written there (for a key that is missing).
fn line_of(file: &Path, path: &[String]) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    let document = toml_edit::ImDocument::parse(text.as_str()).ok()?;
    let mut table: &dyn toml_edit::TableLike = document.as_table();
    let mut found = None;
    for part in path {
        let Some((key, item)) = table.get_key_value(part) else {
            break;
        };
        found = key.span().or(found);
        match item.as_table_like() {
            Some(inner) => table = inner,
            None => break,
        }
    }
    let start = found?.start;
    Some(text[..start].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::value::{Dict, Value};

    /// The error of loading `text` as a configuration file, which starts with `at`: the
    /// file's path, then the rest of `at`.
    fn assert_refused(text: &str, at: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hpki.toml");
        std::fs::write(&file, text).unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}{at}", file.display())), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_file() {
        assert_refused(
            "[projections]\npoll_interval_ms = \"soon\"\n",
            ":2: projections.poll_interval_ms: invalid type",
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        assert_refused(
            "# comment\n[server]\nlisten = \"127.0.0.1:1\"\n\n[audit]\nevery = 3\n",
            ":6: audit.every: unknown field",
        );
    }

    #[test]
    fn a_file_that_is_not_toml_gets_one_line_naming_where() {
        let err = assert_refused(
            "[server]\nlisten = \"127.0.0.1:1\n",
            ": TOML parse error at line 2, column 22: ",
        );
        assert!(!err.contains("127.0.0.1"), "the line is shown: {err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Config::load(Some(Path::new("/nonexistent/hpki.toml")))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "/nonexistent/hpki.toml: no such file");
    }

    #[test]
    fn the_example_file_is_complete_and_valid() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/hpki.example.toml");
        let config = Config::load(Some(&example)).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080");

        // Every key the defaults have is written in the example (maps that start empty, such
        // as [staff.NAME], are shown commented out), so the file documents them all.
        let text = std::fs::read_to_string(&example).unwrap();
        let written: Dict = Figment::from(Toml::file_exact(&example)).extract().unwrap();
        let defaults: Dict = Figment::from(Serialized::defaults(Config::default()))
            .extract()
            .unwrap();
        let mut missing = Vec::new();
        missing_keys(&defaults, &written, &text, "", &mut missing);
        assert!(missing.is_empty(), "not in the example: {missing:?}");
    }

    fn missing_keys(
        defaults: &Dict,
        written: &Dict,
        text: &str,
        prefix: &str,
        missing: &mut Vec<String>,
    ) {
        for (key, value) in defaults {
            let path = format!("{prefix}{key}");
            match (value, written.get(key)) {
                (Value::Dict(_, t), _) if t.is_empty() => {
                    if !text.contains(&format!("# [{path}.")) {
                        missing.push(path);
                    }
                }
                (Value::Dict(_, t), Some(Value::Dict(_, w))) => {
                    missing_keys(t, w, text, &format!("{path}."), missing)
                }
                (_, None) => missing.push(path),
                _ => {}
            }
        }
    }

    #[test]
    fn both_authorities_are_there_by_default_and_a_file_changes_one_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hpki.toml");
        std::fs::write(&file, "[authorities.jpa]\nvalidity_years = 2\n").unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.authorities["jpa"].validity_years, 2);
        assert_eq!(config.authorities["jpa"].role, "Pharmacist");
        assert_eq!(config.authorities["jma"].role, "Medical Doctor");
        assert_eq!(
            config.authorities["jpa"].subscriber_id("999999"),
            "999999-jpa"
        );
        assert_eq!(config.authorities["jma"].subscriber_id("123456"), "123456");
        assert!(
            config.authorities["jma"]
                .check_registry_number("123456")
                .is_ok()
        );
        let why = config.authorities["jma"]
            .check_registry_number("12345a")
            .unwrap_err();
        assert!(why.contains("1 to 6 digits"), "{why}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hpki.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
    }
}
