//! Read models: pure folds from events to documents. A projection looks at one event and says
//! which documents change; it never reads or writes a database. The runner in the application
//! (`src/projection_runner.rs`) applies those changes in the same transaction as the
//! projection's checkpoint, or into a SQLite file when rebuilding or replaying.

use std::collections::BTreeMap;

use hpki_events::RecordedEvent;
use serde_json::Value;

mod lifecycle;
mod outputs;
mod streams;
mod work;

pub use lifecycle::{Lifecycle, Locator};
pub use outputs::{Outbox, PrintQueue, destination_name, mail_kind};
pub use streams::Streams;
pub use work::{Applications, Cards, Certificates, Qrs};

/// A row of a read model. `list` is the work list (or state) the row is on, `sort_key` orders
/// it within that list, `body` holds what the pages show.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    pub list: String,
    pub sort_key: String,
    pub body: Value,
}

/// What one event does to one document of a projection.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Put {
        key: String,
        doc: Doc,
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

/// Applies a patch to a stored document: the one rule shared by every sink.
pub fn patch(doc: &mut Doc, list: Option<&str>, merge: &Value) {
    if let Some(list) = list {
        doc.list = list.to_owned();
    }
    json_patch::merge(&mut doc.body, merge);
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
                    self.docs.insert(key, doc);
                }
                Change::Patch { key, list, merge } => {
                    if let Some(doc) = self.docs.get_mut(&key) {
                        patch(doc, list.as_deref(), &merge);
                    }
                }
                Change::Delete { key } => {
                    self.docs.remove(&key);
                }
            }
        }
    }
}
