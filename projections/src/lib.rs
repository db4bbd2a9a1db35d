//! Read models: pure folds from events to documents. A projection looks at one event and says
//! which documents change; it never reads or writes a database. The runner in the application
//! (`src/projection_runner.rs`) applies those changes in the same transaction as the
//! projection's checkpoint, or into a SQLite file when rebuilding or replaying.

use std::collections::BTreeMap;

use hpki_events::RecordedEvent;
use serde_json::Value;

mod json_text;
mod lifecycle;
mod outputs;
mod streams;
mod work;

pub use json_text::needs_no_escape;
pub use lifecycle::{Lifecycle, Locator};
pub use outputs::{Outbox, PrintQueue, destination_name, mail_kind};
pub use streams::Streams;
pub use work::{Applications, Cards, Certificates, Qrs};

/// A row of a read model. `list` is the work list (or state) the row is on, `sort_key` orders
/// it within that list, `body` holds what the pages show: a parsed [`Value`] as the pages read
/// it, or the stored [`Body`] text as projections write it.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc<B = Value> {
    pub list: String,
    pub sort_key: String,
    pub body: B,
}

impl Doc<Body> {
    /// The document with its body parsed.
    pub fn parsed(&self) -> Result<Doc, serde_json::Error> {
        Ok(Doc {
            list: self.list.clone(),
            sort_key: self.sort_key.clone(),
            body: self.body.value()?,
        })
    }

    /// Applies a patch: the one rule shared by every sink.
    pub fn patch(&mut self, list: Option<&str>, merge: &Value) -> Result<(), serde_json::Error> {
        if let Some(list) = list {
            self.list = list.to_owned();
        }
        self.body.merge(merge)
    }
}

/// A document's body as the JSON text it is stored as. Projections write it field by field
/// ([`body!`]) rather than building a [`Value`] tree first: a rebuild makes a document for
/// nearly every event, and building, serialising and freeing those trees was most of its time
/// (BENCHMARKS.md).
#[derive(Clone, Debug, PartialEq)]
pub struct Body(String);

impl Body {
    /// Text read back from a store (which holds only bodies written as [`Body`]).
    pub fn stored(text: String) -> Body {
        Body(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// Merges `merge` into the body (RFC 7396).
    pub fn merge(&mut self, merge: &Value) -> Result<(), serde_json::Error> {
        let mut value = self.value()?;
        json_patch::merge(&mut value, merge);
        self.0 = value.to_string();
        Ok(())
    }
}

impl From<&Value> for Body {
    fn from(value: &Value) -> Body {
        Body(value.to_string())
    }
}

/// Writes a JSON object one field at a time, for [`body!`].
pub struct BodyWriter(String);

impl BodyWriter {
    /// A writer with room for `capacity` bytes, so that a body seldom has to grow (and be
    /// copied) as it is written: [`body!`] reckons it from the keys and their number.
    pub fn with_capacity(capacity: usize) -> BodyWriter {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        BodyWriter(out)
    }

    /// A field whose key is already written as JSON, quotes and colon included (`"name":`).
    pub fn field_written(&mut self, key: &'static str, value: &(impl serde::Serialize + ?Sized)) {
        self.comma();
        self.0.push_str(key);
        json_text::write_value(&mut self.0, value);
    }

    fn comma(&mut self) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
    }

    pub fn finish(mut self) -> Body {
        self.0.push('}');
        Body(self.0)
    }
}

/// A document's [`Body`] from a flat object literal, written as `serde_json::json!` reads:
/// `body!({ "id": id, "at": at })`. Each value is serialised straight into the text; each key,
/// which must need no escaping (checked when compiling), is written out when compiling. The text
/// is given room for the keys and 28 bytes a value (a UUID and its quotes, a time, a short name)
/// up front.
#[macro_export]
macro_rules! body {
    ({ $($key:literal : $value:expr),* $(,)? }) => {{
        const CAPACITY: usize = 2 $(+ $key.len() + 4 + 28)*;
        #[allow(unused_mut)] // `body!({})` writes no field
        let mut writer = $crate::BodyWriter::with_capacity(CAPACITY);
        $(
            const {
                assert!($crate::needs_no_escape($key), "a body's keys are written unescaped")
            };
            writer.field_written(concat!("\"", $key, "\":"), &$value);
        )*
        writer.finish()
    }};
}

/// `parts` and then `id` (hyphenated, lower case) in one string made to measure: the keys and
/// sort keys of the documents nearly every event makes. Written out rather than with `format!`,
/// whose `Display` machinery was a sixth of a replay's folding (BENCHMARKS.md, session 16).
pub(crate) fn ending_in_id(parts: &[&str], id: &uuid::Uuid) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 36);
    for part in parts {
        out.push_str(part);
    }
    out.push_str(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
    out
}

/// What one event does to one document of a projection.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Put {
        key: String,
        doc: Doc<Body>,
    },
    /// Moves the document to `list` (when given) and merges `merge` into its body
    /// (RFC 7396). A patch on a missing document does nothing.
    Patch {
        key: String,
        list: Option<String>,
        merge: Value,
    },
    Delete {
        key: String,
    },
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Put { key, .. } | Change::Patch { key, .. } | Change::Delete { key } => key,
        }
    }
}

pub trait Projection: Send + Sync {
    /// A stable name: it keys the checkpoint and the stored rows.
    fn name(&self) -> &'static str;
    fn apply(&self, event: &RecordedEvent) -> Vec<Change>;
}

/// Every projection the back office keeps.
pub fn all() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(Streams),
        Box::new(Applications),
        Box::new(Certificates),
        Box::new(Qrs),
        Box::new(Cards),
        Box::new(Locator),
        Box::new(Lifecycle),
        Box::new(Outbox),
        Box::new(PrintQueue),
    ]
}

/// A projection's documents held in memory: the reference the runner's bounded fold is tested
/// against, and the projections' own tests.
#[derive(Default, Debug)]
pub struct MemoryModel {
    pub docs: BTreeMap<String, Doc>,
}

impl MemoryModel {
    pub fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Put { key, doc } => {
                    let doc = doc.parsed().expect("a projection writes JSON");
                    self.docs.insert(key, doc);
                }
                Change::Patch { key, list, merge } => {
                    if let Some(doc) = self.docs.get_mut(&key) {
                        if let Some(list) = list {
                            doc.list = list;
                        }
                        json_patch::merge(&mut doc.body, &merge);
                    }
                }
                Change::Delete { key } => {
                    self.docs.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `body!` writes what `json!` builds: strings needing escapes, Japanese, numbers, nulls,
    /// nested values, and an object with no fields.
    #[test]
    fn a_written_body_reads_back_as_the_object_json_builds() {
        let name = "山田 \"太郎\"\n\\";
        let missing: Option<&str> = None;
        let written = body!({
            "name": name,
            "count": 3,
            "ratio": -1.5,
            "missing": missing,
            "list": ["a", "b"],
            "nested": json!({ "k": true }),
        });
        let built = json!({
            "name": name,
            "count": 3,
            "ratio": -1.5,
            "missing": null,
            "list": ["a", "b"],
            "nested": { "k": true },
        });
        assert_eq!(written.value().unwrap(), built);
        assert_eq!(body!({}).as_str(), "{}");
    }

    #[test]
    fn a_key_ending_in_an_id_is_what_format_writes() {
        let id = uuid::Uuid::from_u128(0x0193_5f2a_7c00_7abc_8def_0123_4567_89ab);
        assert_eq!(ending_in_id(&["mail/"], &id), format!("mail/{id}"));
        assert_eq!(ending_in_id(&["2026", "/"], &id), format!("2026/{id}"));
        assert_eq!(ending_in_id(&[], &id), id.to_string());
    }

    #[test]
    fn a_patch_moves_the_document_and_merges_its_body() {
        let mut doc = Doc {
            list: "received".to_owned(),
            sort_key: "1".to_owned(),
            body: body!({ "a": 1, "b": "x" }),
        };
        doc.patch(Some("issued"), &json!({ "b": null, "c": [1] }))
            .unwrap();
        assert_eq!(doc.list, "issued");
        assert_eq!(doc.body.value().unwrap(), json!({ "a": 1, "c": [1] }));
        let mut corrupt = Doc {
            body: Body::stored("{not json".to_owned()),
            ..doc
        };
        assert!(corrupt.patch(None, &json!({})).is_err());
    }
}
