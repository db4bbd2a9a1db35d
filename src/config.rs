//! Typed, layered configuration: defaults, then a TOML file, then `HPKI_*` environment
//! variables (`HPKI_SERVER__LISTEN` sets `server.listen`). `ops/hpki.example.toml` documents
//! every key.

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
        }
    }
}

impl Config {
    /// Defaults, then `file` (if given, it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, figment::Error> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(figment::Error::from(format!(
                    "configuration file {} does not exist",
                    file.display()
                )));
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
        figment.merge(env).extract()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_type_names_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hpki.toml");
        std::fs::write(&file, "[projections]\npoll_interval_ms = \"soon\"\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("projections.poll_interval_ms"), "{err}");
        assert!(err.contains("hpki.toml"), "{err}");
    }

    #[test]
    fn the_example_file_is_complete_and_valid() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/hpki.example.toml");
        let config = Config::load(Some(&example)).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080");
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
