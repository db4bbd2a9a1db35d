//! Every event type the log may hold, with the current schema version of each and the
//! upcasters that read older payloads as the current type.
//!
//! Adding a type: a payload struct, a line in `vocabulary!`. Changing a payload's shape: bump its
//! version in `vocabulary!` and add an arm to `upcast` that turns the previous shape into the new
//! one. Stored bytes are never rewritten; old shapes are upcast every time they are read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
            pub fn decode_raw(event_type: &str, version: u32, payload: &serde_json::value::RawValue) -> Result<Event, DecodeError> {
                let current = Event::TYPES.iter().find(|(name, _)| *name == event_type).map(|(_, v)| *v);
                if current != Some(version) {
                    let value = serde_json::from_str(payload.get()).map_err(DecodeError::NotAnEvent)?;
                    return Event::decode(event_type, version, value);
                }
                let shape = |source| DecodeError::Shape { event_type: event_type.to_owned(), version, source };
                match event_type {
                    $(stringify!($name) => serde_json::from_str(payload.get()).map(Event::$name).map_err(shape),)*
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
    ApplicationReceived = 2,
    ApplicationApproved = 1,
    ApplicationRejected = 1,
}

/// Turns a payload of version `from` into version `from + 1`.
fn upcast(event_type: &str, from: u32, payload: Value) -> Result<Value, serde_json::Error> {
    match (event_type, from) {
        ("ApplicationReceived", 1) => {
            let v1: ApplicationReceivedV1 = serde_json::from_value(payload)?;
            serde_json::to_value(ApplicationReceived {
                authority: v1.authority,
                registry_number: v1.registry_number,
                name_kanji: v1.name_kanji,
                name_kana: v1.name_kana,
                name_romaji: v1.name_romaji,
                email: v1.email,
                source: Source {
                    channel: v1.channel,
                    batch: None,
                },
            })
        }
        _ => Ok(payload),
    }
}

/// How an application reached the office.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Web,
    Paper,
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationReceived {
    pub authority: String,
    pub registry_number: String,
    pub name_kanji: String,
    pub name_kana: String,
    pub name_romaji: String,
    pub email: String,
    pub source: Source,
}

/// Version 1 named only the channel; version 2 added the batch row for idempotent CSV import.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplicationReceivedV1 {
    authority: String,
    registry_number: String,
    name_kanji: String,
    name_kana: String,
    name_romaji: String,
    email: String,
    channel: Channel,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationApproved {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationRejected {
    /// Told to the applicant.
    pub reason: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn sample_application() -> Event {
        Event::ApplicationReceived(ApplicationReceived {
            authority: "jma".into(),
            registry_number: "123456".into(),
            name_kanji: "山田 太郎".into(),
            name_kana: "ヤマダ タロウ".into(),
            name_romaji: "YAMADA TARO".into(),
            email: "taro@example.jp".into(),
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
            Event::decode("ApplicationReceived", 2, payload).unwrap(),
            event
        );
    }

    #[test]
    fn version_1_is_upcast() {
        let v1 = json!({
            "authority": "jma", "registry_number": "123456", "name_kanji": "山田 太郎",
            "name_kana": "ヤマダ タロウ", "name_romaji": "YAMADA TARO",
            "email": "taro@example.jp", "channel": "web"
        });
        assert_eq!(
            Event::decode("ApplicationReceived", 1, v1).unwrap(),
            sample_application()
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
