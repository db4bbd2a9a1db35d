//! The vocabulary of the back office: every event type, its schema versions and upcasters,
//! and the canonical bytes and hash chain that make the log tamper-evident. No I/O.

pub mod canonical;
pub mod chain;
pub mod envelope;
pub mod vocabulary;

pub use chain::{ChainHash, GENESIS_HASH};
pub use envelope::{Actor, Body, EncodeError, Metadata, NewEvent, RecordedEvent};
pub use vocabulary::{DecodeError, Event};
