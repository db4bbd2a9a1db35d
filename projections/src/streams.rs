//! `streams`: one row per stream with its version and last event, listed by category (the
//! part of the stream name before the first `-`: `application`, `qr`, ...). Operators use it
//! to see what the log holds; tests use it to prove the runner neither skips nor repeats.

use hpki_events::RecordedEvent;

use crate::{Change, Doc, Projection, body};

pub struct Streams;

impl Projection for Streams {
    fn name(&self) -> &'static str {
        "streams"
    }

    fn apply(&self, event: &RecordedEvent) -> Vec<Change> {
        let category = event.stream.split('-').next().unwrap_or_default();
        vec![Change::Put {
            key: event.stream.clone(),
            doc: Doc {
                list: category.to_owned(),
                sort_key: event.stream.clone(),
                body: body!({
                    "version": event.version,
                    "last_type": event.event.type_name(),
                    "last_position": event.position,
                    "updated_at": event.recorded_at_text,
                }),
            },
        }]
    }
}
