//! The envelope every event travels in, and its canonical bytes.
//!
//! The canonical bytes of an event are the compact JSON of [`Body`]: keys in ascending order
//! (the struct's fields are declared alphabetically, payload objects are sorted maps), no
//! spaces, UTF-8 unescaped, integers only. They are stored as they are and hashed into the chain.

use std::sync::LazyLock;

use memchr::memmem;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::canonical::{self, json_string};
use crate::chain::ChainHash;
use crate::vocabulary::{DecodeError, Event};

/// Who caused an event, as `kind:name`: `staff:suzuki`, `portal:subscriber`, `system:expiry`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Actor(String);

impl Actor {
    pub fn parse(text: &str) -> Result<Actor, String> {
        let (kind, name) = text
            .split_once(':')
            .ok_or_else(|| format!("actor {text:?} is not of the form kind:name"))?;
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.chars().all(|c| c.is_alphanumeric() || "-_.@".contains(c))
        };
        if !valid(kind) || !valid(name) {
            return Err(format!("actor {text:?} is not of the form kind:name"));
        }
        Ok(Actor(text.to_owned()))
    }

    pub fn system(process: &str) -> Actor {
        Actor::parse(&format!("system:{process}")).expect("process names are plain words")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Actor {
    type Error = String;
    fn try_from(text: String) -> Result<Actor, String> {
        Actor::parse(&text)
    }
}

impl From<Actor> for String {
    fn from(actor: Actor) -> String {
        actor.0
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who did it and why: carried by every event of one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub actor: Actor,
    /// One id for everything one request or job caused.
    pub correlation_id: Uuid,
    /// The event (or command) that directly caused this one.
    pub causation_id: Option<Uuid>,
}

impl Metadata {
    pub fn new(actor: Actor) -> Metadata {
        Metadata {
            actor,
            correlation_id: Uuid::new_v4(),
            causation_id: None,
        }
    }
}

/// An event about to be appended. Its id makes the append idempotent.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event: Event,
}

impl NewEvent {
    /// A new event with a fresh, time-ordered (version 7) id: ids that grow with time keep the
    /// log's id index appending at its end instead of touching a random page per event.
    pub fn new(event: Event) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event,
        }
    }
}

/// The canonical record of one event. Fields are in alphabetical order on purpose: serde
/// writes them in declaration order, which makes the JSON's keys sorted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    pub actor: Actor,
    pub causation_id: Option<Uuid>,
    pub correlation_id: Uuid,
    pub event_id: Uuid,
    pub payload: Value,
    pub position: i64,
    pub recorded_at: String,
    pub schema_version: u32,
    pub stream: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "payload of {event_type} holds a non-integer number at {path}; the log stores integers only"
    )]
    Float { event_type: String, path: String },
    #[error("encoding the event failed: {0}")]
    Json(#[from] serde_json::Error),
}

impl Body {
    /// Builds the record of `event` as it will be stored at `position`.
    pub fn new(
        event: &NewEvent,
        metadata: &Metadata,
        stream: &str,
        version: i64,
        position: i64,
        recorded_at: OffsetDateTime,
    ) -> Result<Body, EncodeError> {
        let payload = event.event.to_payload()?;
        Ok(Body {
            actor: metadata.actor.clone(),
            causation_id: metadata.causation_id,
            correlation_id: metadata.correlation_id,
            event_id: event.event_id,
            payload,
            position,
            recorded_at: format_time(recorded_at),
            schema_version: event.event.schema_version(),
            stream: stream.to_owned(),
            event_type: event.event.type_name().to_owned(),
            version,
        })
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if let Some(path) = find_float(&self.payload, "$") {
            return Err(EncodeError::Float {
                event_type: self.event_type.clone(),
                path,
            });
        }
        Ok(serde_json::to_vec(self)?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Body, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn recorded_at(&self) -> Result<OffsetDateTime, DecodeError> {
        parse_time(&self.recorded_at).ok_or_else(|| DecodeError::BadTime(self.recorded_at.clone()))
    }
}

/// An event's canonical bytes but for its position and version, which only the append's
/// transaction knows: encoded before the transaction (on another thread while the store reads
/// what the append needs), then finished with two numbers. Encoding was about a third of a
/// batched append's time, all of it spent while the database waited (BENCHMARKS.md, session 13).
#[derive(Clone, Debug)]
pub struct Encoded {
    /// Up to and including `"position":`.
    head: Vec<u8>,
    /// From `,"recorded_at":` up to and including `"version":`.
    middle: Vec<u8>,
    /// The time the bytes hold.
    pub recorded_at: OffsetDateTime,
}

const POSITION_KEY: &[u8] = b",\"position\":0,\"recorded_at\":";
const VERSION_KEY: &[u8] = b",\"version\":0}";

impl Encoded {
    pub fn new(
        event: &NewEvent,
        metadata: &Metadata,
        stream: &str,
        recorded_at: OffsetDateTime,
    ) -> Result<Encoded, EncodeError> {
        match Encoded::written(event, metadata, stream, recorded_at) {
            Some(encoded) => {
                // In debug builds, every append of every test holds the one-pass writer to
                // `Body`'s bytes, over every event type the tests write.
                #[cfg(debug_assertions)]
                {
                    let body = Encoded::through_body(event, metadata, stream, recorded_at);
                    let body = body
                        .map(|body| body.finish(1, 1))
                        .map_err(|e| e.to_string());
                    assert_eq!(
                        Ok(String::from_utf8_lossy(&encoded.finish(1, 1)).into_owned()),
                        body.map(|b| String::from_utf8_lossy(&b).into_owned()),
                        "the one-pass writer and Body disagree on a {}",
                        event.event.type_name()
                    );
                }
                Ok(encoded)
            }
            // What the one-pass writer gives up on goes through `Body`, which writes the
            // same bytes or names what is wrong (a float, and where).
            None => Encoded::through_body(event, metadata, stream, recorded_at),
        }
    }

    /// The body's members written one by one, the payload by [`canonical::write`], in the
    /// order of `Body`'s fields: what `Body::encode` writes (tested below).
    fn written(
        event: &NewEvent,
        metadata: &Metadata,
        stream: &str,
        recorded_at: OffsetDateTime,
    ) -> Option<Encoded> {
        let mut head = Vec::with_capacity(640);
        let mut uuid = Uuid::encode_buffer();
        let mut quoted_uuid = |out: &mut Vec<u8>, id: &Uuid| {
            out.push(b'"');
            out.extend_from_slice(id.hyphenated().encode_lower(&mut uuid).as_bytes());
            out.push(b'"');
        };
        head.extend_from_slice(b"{\"actor\":");
        json_string(&mut head, metadata.actor.as_str());
        head.extend_from_slice(b",\"causation_id\":");
        match &metadata.causation_id {
            Some(id) => quoted_uuid(&mut head, id),
            None => head.extend_from_slice(b"null"),
        }
        head.extend_from_slice(b",\"correlation_id\":");
        quoted_uuid(&mut head, &metadata.correlation_id);
        head.extend_from_slice(b",\"event_id\":");
        quoted_uuid(&mut head, &event.event_id);
        head.extend_from_slice(b",\"payload\":");
        canonical::write(&Payload(&event.event), &mut head).ok()?;
        head.extend_from_slice(b",\"position\":");

        let mut middle = Vec::with_capacity(128 + stream.len());
        middle.extend_from_slice(b",\"recorded_at\":\"");
        middle.extend_from_slice(format_time(recorded_at).as_bytes());
        middle.extend_from_slice(b"\",\"schema_version\":");
        middle.extend_from_slice(
            itoa::Buffer::new()
                .format(event.event.schema_version())
                .as_bytes(),
        );
        middle.extend_from_slice(b",\"stream\":");
        json_string(&mut middle, stream);
        middle.extend_from_slice(b",\"type\":");
        json_string(&mut middle, event.event.type_name());
        middle.extend_from_slice(b",\"version\":");
        Some(Encoded {
            head,
            middle,
            recorded_at,
        })
    }

    /// Through [`Body::encode`], then split where the two numbers go.
    fn through_body(
        event: &NewEvent,
        metadata: &Metadata,
        stream: &str,
        recorded_at: OffsetDateTime,
    ) -> Result<Encoded, EncodeError> {
        let bytes = Body::new(event, metadata, stream, 0, 0, recorded_at)?.encode()?;
        // The last `"position":0,"recorded_at":` is the body's own: the payload comes before
        // it, and the keys after it hold only a time, numbers and escaped strings.
        let at = bytes
            .windows(POSITION_KEY.len())
            .rposition(|w| w == POSITION_KEY)
            .expect("a body has a position followed by its time");
        // `head` ends where the position's `0` is; `middle` runs from after it to before the
        // version's `0}`, which end every body.
        let split = at + b",\"position\":".len();
        assert!(bytes.ends_with(VERSION_KEY), "a body ends with its version");
        let middle = bytes[split + 1..bytes.len() - 2].to_vec();
        let mut head = bytes;
        head.truncate(split);
        Ok(Encoded {
            head,
            middle,
            recorded_at,
        })
    }

    /// The canonical bytes of the event at `position`, `version`: what [`Body::encode`] writes.
    pub fn finish(&self, position: i64, version: i64) -> Vec<u8> {
        let mut numbers = itoa::Buffer::new();
        let mut out = Vec::with_capacity(self.head.len() + self.middle.len() + 42);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(numbers.format(position).as_bytes());
        out.extend_from_slice(&self.middle);
        out.extend_from_slice(numbers.format(version).as_bytes());
        out.push(b'}');
        out
    }
}

/// An event's payload, serialized as its own type.
struct Payload<'a>(&'a Event);

impl Serialize for Payload<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_payload(serializer)
    }
}

/// [`Body`] but for its payload, as read for folding: strings borrowed from the stored bytes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    actor: Actor,
    causation_id: Option<Uuid>,
    correlation_id: Uuid,
    event_id: Uuid,
    position: i64,
    #[serde(borrow)]
    recorded_at: std::borrow::Cow<'a, str>,
    schema_version: u32,
    stream: String,
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
    version: i64,
}

const PAYLOAD_KEY: &str = ",\"payload\":";
const POSITION_MEMBER: &str = ",\"position\":";

/// A body cut in two, as this store writes it (keys in order, the payload between
/// `event_id` and `position`): the envelope with the payload taken out, and the payload.
///
/// The payload's type is named after it (`type` sorts after `payload`), so read whole, the
/// payload has to be skipped over once to find its type and parsed again for it: 18% of
/// decoding's samples (BENCHMARKS.md, session 15). Cut out, it is parsed once. The first
/// `,"payload":` is the key (the keys before it hold only uuids and an actor, strings in which
/// a quote is escaped), and so is the last `,"position":` (after it come numbers and escaped
/// strings). A body written another way (an imported one) may cut wrongly; see
/// [`RecordedEvent::decode`].
fn cut_payload(body: &str) -> Option<(String, &str)> {
    // Built once: building a finder for each body was 3% of a replay's decoding (its
    // substring tables are made per needle).
    static PAYLOAD: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(PAYLOAD_KEY));
    static POSITION: LazyLock<memmem::FinderRev<'static>> =
        LazyLock::new(|| memmem::FinderRev::new(POSITION_MEMBER));
    let start = PAYLOAD.find(body.as_bytes())?;
    let end = POSITION.rfind(body.as_bytes())?;
    let payload = body.get(start + PAYLOAD_KEY.len()..end)?;
    let mut envelope = String::with_capacity(body.len() - payload.len());
    envelope.push_str(&body[..start]);
    envelope.push_str(&body[end..]);
    Some((envelope, payload))
}

impl RecordedEvent {
    /// Decodes stored bytes, upcasting the payload to the current type.
    pub fn decode(bytes: &[u8], hash: ChainHash) -> Result<RecordedEvent, DecodeError> {
        // Checked as UTF-8 once, so that neither part is checked again as it is parsed.
        let cut = simdutf8::basic::from_utf8(bytes).ok().and_then(cut_payload);
        if let Some((envelope, payload)) = cut {
            // Decoded in two parts, the event is right whenever both parts decode: the
            // envelope's fields are all numbers, strings and nulls, so an envelope that parses
            // was cut between two of the body's own members, and the payload that parses in
            // full between them is the body's payload.
            let envelope = serde_json::from_str(&envelope).map_err(DecodeError::NotAnEvent);
            if let Ok(event) = envelope.and_then(|e| RecordedEvent::assemble(e, payload, hash)) {
                return Ok(event);
            }
        }
        // Not cut, or a part that does not decode: read as a whole, for the error to name what
        // is wrong with the body itself, or for a body written another way to decode.
        let mut body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(bytes).map_err(DecodeError::NotAnEvent)?;
        let payload = body.remove("payload").ok_or_else(|| {
            DecodeError::NotAnEvent(<serde_json::Error as serde::de::Error>::missing_field(
                "payload",
            ))
        })?;
        let envelope = Envelope::deserialize(serde_json::Value::Object(body))
            .map_err(DecodeError::NotAnEvent)?;
        let payload = payload.to_string();
        RecordedEvent::assemble(envelope, &payload, hash)
    }

    fn assemble(
        body: Envelope,
        payload: &str,
        hash: ChainHash,
    ) -> Result<RecordedEvent, DecodeError> {
        let recorded_at = parse_time(&body.recorded_at)
            .ok_or_else(|| DecodeError::BadTime(body.recorded_at.clone().into_owned()))?;
        // Every body this store writes holds the time as `format_time` writes it, so the text
        // is kept rather than formatted again; an imported body may hold any RFC 3339 form.
        let recorded_at_text = if written_by_format_time(&body.recorded_at) {
            body.recorded_at.into_owned()
        } else {
            format_time(recorded_at)
        };
        let event = Event::decode_raw(&body.event_type, body.schema_version, payload)?;
        Ok(RecordedEvent {
            position: body.position,
            stream: body.stream,
            version: body.version,
            event_id: body.event_id,
            recorded_at,
            recorded_at_text,
            metadata: Metadata {
                actor: body.actor,
                correlation_id: body.correlation_id,
                causation_id: body.causation_id,
            },
            event,
            hash,
        })
    }
}

/// An event as read back from the log, payload upcast to the current type.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    pub position: i64,
    pub stream: String,
    pub version: i64,
    pub event_id: Uuid,
    pub recorded_at: OffsetDateTime,
    /// `recorded_at` as the log writes it ([`format_time`]): decoded once, so that the
    /// projections, which write it into nearly every document, do not format it again for
    /// each (five times an event, a tenth of a replay's folding; BENCHMARKS.md, session 15).
    pub recorded_at_text: String,
    pub metadata: Metadata,
    pub event: Event,
    pub hash: ChainHash,
}

/// What [`format_time`] writes, digits as zeros.
const TIME_LAYOUT: &[u8; 27] = b"0000-00-00T00:00:00.000000Z";

/// Times in the log: UTC, microseconds, always the same width, e.g. `2026-11-22T00:05:00.000000Z`.
///
/// Written out by hand rather than through a `time` format description: when every projection
/// formatted the time of every event it folded, a replay of a million events spent seconds
/// there (BENCHMARKS.md). The test below holds it to `time`'s own formatting.
pub fn format_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let (year, month, day) = at.to_calendar_date();
    if !(0..=9999).contains(&year) {
        return format_time_slowly(at);
    }
    let (hour, minute, second, micro) = at.to_hms_micro();
    let mut out = *TIME_LAYOUT;
    // Two digits at a time, each a division by a constant: the loop over powers of ten this
    // replaced divided by a variable and was a tenth of a replay's folding (BENCHMARKS.md,
    // session 15).
    let mut two = |at: usize, value: u32| {
        out[at] = b'0' + (value / 10) as u8;
        out[at + 1] = b'0' + (value % 10) as u8;
    };
    let year = year as u32;
    two(0, year / 100);
    two(2, year % 100);
    two(5, u8::from(month).into());
    two(8, day.into());
    two(11, hour.into());
    two(14, minute.into());
    two(17, second.into());
    two(20, micro / 10_000);
    two(22, micro / 100 % 100);
    two(24, micro % 100);
    std::str::from_utf8(&out)
        .expect("ASCII digits and separators")
        .to_owned()
}

/// Whether `text`, a time that parsed, is laid out as [`format_time`] writes it
/// (`2026-11-22T00:05:00.000000Z`), and so is what it writes for that instant.
fn written_by_format_time(text: &str) -> bool {
    text.len() == TIME_LAYOUT.len()
        && text
            .bytes()
            .zip(TIME_LAYOUT)
            .all(|(byte, &laid)| match laid {
                b'0' => byte.is_ascii_digit(),
                separator => byte == separator,
            })
}

fn format_time_slowly(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    at.format(&format)
        .expect("every UTC time in years 0..9999 formats")
}

pub fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// Microseconds since the Unix epoch: how times are stored in indexed columns.
pub fn unix_micros(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1000) as i64
}

/// The path of the first non-integer number in `value`, built only when there is one.
fn find_float(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| has_float(v).then(|| find_float(v, &format!("{path}[{i}]")))?),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| has_float(v).then(|| find_float(v, &format!("{path}.{k}")))?),
        _ => None,
    }
}

fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => !(n.is_i64() || n.is_u64()),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::tests::sample_application;

    fn body() -> Body {
        let event = NewEvent {
            event_id: Uuid::nil(),
            event: sample_application(),
        };
        let meta = Metadata {
            actor: Actor::parse("staff:suzuki").unwrap(),
            correlation_id: Uuid::nil(),
            causation_id: None,
        };
        let at = time::macros::datetime!(2026-11-22 07:44:00.5 UTC);
        Body::new(&event, &meta, "application-1", 1, 7, at).unwrap()
    }

    /// The hand-written formatter against `time`'s, over instants spread from year 0 to 9999
    /// with every field's edges (and a time given in JST, which must come out in UTC).
    #[test]
    fn times_format_as_time_formats_them() {
        let mut checked = 0;
        let mut at = time::macros::datetime!(0000-01-01 00:00:00 UTC);
        let end = time::macros::datetime!(9999-12-31 23:59:59.999999 UTC);
        let step = time::Duration::new(86_400 * 300 + 3_661, 999_999_000);
        while let Some(next) = at.checked_add(step).filter(|next| *next < end) {
            assert_eq!(format_time(at), format_time_slowly(at), "{at}");
            at = next;
            checked += 1;
        }
        assert!(checked > 10_000, "{checked}");
        assert_eq!(format_time(end), "9999-12-31T23:59:59.999999Z");
        let jst = time::macros::datetime!(2026-12-03 09:00:00.000123 +09:00);
        assert_eq!(format_time(jst), "2026-12-03T00:00:00.000123Z");
    }

    #[test]
    fn canonical_bytes_have_sorted_keys_and_no_spaces() {
        let bytes = body().encode().unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.starts_with(r#"{"actor":"staff:suzuki","causation_id":null,"correlation_id":"#)
        );
        assert!(text.contains(r#""position":7,"recorded_at":"2026-11-22T07:44:00.500000Z","#));
        assert!(text.contains("山田"), "Japanese stays unescaped: {text}");
        assert!(!text.contains(": ") && !text.contains(", "));
        // Re-encoding what was decoded gives the same bytes.
        assert_eq!(Body::decode(&bytes).unwrap().encode().unwrap(), bytes);
    }

    /// Finished with any two numbers, an event encoded ahead is what `Body::encode` writes,
    /// also when its strings hold the very keys the split looks for. (In debug builds every
    /// append of every test checks the same; these are the types no other test appends.)
    #[test]
    fn an_event_encoded_ahead_finishes_as_its_body_encodes() {
        use crate::vocabulary::{ReissueRejected, RevocationExpired, RevocationRejected};
        let mut meta = Metadata::new(Actor::parse("staff:suzuki").unwrap());
        meta.causation_id = Some(Uuid::now_v7());
        let at = time::macros::datetime!(2026-12-04 03:30:00.123456 UTC);
        let mut tricky = sample_application();
        if let Event::ApplicationReceived(a) = &mut tricky {
            a.name_kanji = r#"a,"position":0,"recorded_at":"x","version":0}"#.into();
        }
        let reason = "申請者の取り下げ\n\"quoted\"".to_owned();
        for event in [
            sample_application(),
            tricky,
            Event::ReissueRejected(ReissueRejected {
                request_id: Uuid::now_v7(),
                reason: reason.clone(),
            }),
            Event::RevocationRejected(RevocationRejected {
                proposal_id: Uuid::now_v7(),
                reason,
            }),
            Event::RevocationExpired(RevocationExpired {
                proposal_id: Uuid::now_v7(),
            }),
        ] {
            let event = NewEvent::new(event);
            let stream = r#"subscriber-jma-"position":0,"recorded_at":"#;
            let ahead = Encoded::written(&event, &meta, stream, at).unwrap();
            for (position, version) in [(1, 1), (0, 0), (9_876_543_210, 42), (i64::MAX, 7)] {
                let body = Body::new(&event, &meta, stream, version, position, at).unwrap();
                assert_eq!(
                    String::from_utf8(ahead.finish(position, version)).unwrap(),
                    String::from_utf8(body.encode().unwrap()).unwrap()
                );
            }
        }
    }

    /// A decoded event keeps the time's text as `format_time` writes it, also when the stored
    /// body (an imported one) writes the instant another way.
    #[test]
    fn a_decoded_time_reads_as_format_time_writes_it() {
        let bytes = String::from_utf8(body().encode().unwrap()).unwrap();
        let canonical = "2026-11-22T07:44:00.500000Z";
        assert!(bytes.contains(canonical));
        for written in [
            canonical,
            "2026-11-22T16:44:00.5+09:00",
            "2026-11-22t07:44:00.500000z",
        ] {
            let stored = bytes.replace(canonical, written);
            let event = RecordedEvent::decode(stored.as_bytes(), crate::GENESIS_HASH).unwrap();
            assert_eq!(event.recorded_at_text, canonical, "{written}");
            assert_eq!(format_time(event.recorded_at), canonical, "{written}");
        }
    }

    /// A body as this store writes it is cut in two and decoded part by part; one written
    /// another way (keys in another order, spaces, the payload last) decodes to the same event;
    /// a body that is wrong is named as before.
    #[test]
    fn bodies_decode_the_same_cut_or_whole() {
        let bytes = body().encode().unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        let (envelope, payload) = cut_payload(text).expect("a canonical body is cut");
        assert!(serde_json::from_str::<Envelope>(&envelope).is_ok());
        assert_eq!(
            serde_json::from_str::<Value>(payload).unwrap(),
            body().payload
        );
        let cut = RecordedEvent::decode(&bytes, crate::GENESIS_HASH).unwrap();
        assert_eq!(cut.position, 7);
        assert_eq!(cut.event, sample_application());

        let mut reordered = serde_json::to_value(body()).unwrap();
        let payload = reordered
            .as_object_mut()
            .unwrap()
            .remove("payload")
            .unwrap();
        let mut text = serde_json::to_string_pretty(&reordered).unwrap();
        text.truncate(text.rfind('}').unwrap());
        text.push_str(&format!(",\"payload\" : {payload} }}"));
        assert!(cut_payload(&text).is_none(), "{text}");
        let whole = RecordedEvent::decode(text.as_bytes(), crate::GENESIS_HASH).unwrap();
        assert_eq!(whole, cut);

        let wrong = |from: &str, to: &str| {
            let text = String::from_utf8(bytes.clone())
                .unwrap()
                .replacen(from, to, 1);
            RecordedEvent::decode(text.as_bytes(), crate::GENESIS_HASH)
                .unwrap_err()
                .to_string()
        };
        let missing = wrong(",\"payload\":", ",\"cargo\":");
        assert!(missing.contains("missing field `payload`"), "{missing}");
        let extra = wrong(",\"position\":", ",\"cargo\":1,\"position\":");
        assert!(extra.contains("unknown field `cargo`"), "{extra}");
        let unknown = wrong("\"type\":\"ApplicationReceived\"", "\"type\":\"Nothing\"");
        assert!(unknown.contains("\"Nothing\" is not known"), "{unknown}");
        let shape = wrong("\"authority\":", "\"authorities\":");
        assert!(
            shape.contains("wrong shape") && shape.contains("authorities"),
            "{shape}"
        );
        let time = wrong("2026-11-22T07:44:00.500000Z", "yesterday");
        assert!(
            time.contains("\"yesterday\" is not an RFC 3339 time"),
            "{time}"
        );
    }

    #[test]
    fn floats_are_refused() {
        let mut b = body();
        b.payload = serde_json::json!({"a": {"b": [1, 2.5]}});
        let err = b.encode().unwrap_err().to_string();
        assert!(err.contains("$.a.b[1]"), "{err}");
    }

    #[test]
    fn actors_are_kind_colon_name() {
        assert!(Actor::parse("staff:suzuki").is_ok());
        assert!(Actor::parse("suzuki").is_err());
        assert!(Actor::parse("staff:").is_err());
        assert!(Actor::parse("staff:a b").is_err());
    }
}
