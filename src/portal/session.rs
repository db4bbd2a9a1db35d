//! Portal sessions: one per QR landing, kept in this instance's memory.
//!
//! A session holds the QR token (a secret: it never leaves memory, never reaches a log) and
//! how far the subscriber got. Its id travels in an `HttpOnly`, `SameSite=Lax` cookie; a
//! session that sat idle longer than `portal.idle_minutes` is gone, and the subscriber starts
//! over from the QR code. Sessions live in one instance's memory: behind a load balancer the
//! portal needs sticky sessions (documented in docs/portal.md).

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;
use uuid::Uuid;

use super::ceremony::Pending;
use crate::clock::SharedClock;

/// How far a subscriber got on this QR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Password,
    SignIn,
    Register,
    Label,
    Done { confirmed: bool },
}

#[derive(Clone)]
pub struct Session {
    /// The QR token: a secret.
    pub token: String,
    pub qr_id: Uuid,
    pub authority: String,
    pub subscriber_id: String,
    /// The synchronizer token every form and ceremony call must send back.
    pub csrf: String,
    pub stage: Stage,
    pub last_seen: OffsetDateTime,
    /// A WebAuthn ceremony started and not yet finished.
    pub pending: Option<Pending>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("qr_id", &self.qr_id)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

/// Why a session could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No cookie, or one naming no session this instance knows.
    Missing,
    /// It sat idle too long.
    Expired,
}

pub struct Sessions {
    clock: SharedClock,
    idle: time::Duration,
    by_id: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes as lower-case hex.
pub fn random_id() -> String {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).expect("the system's random source works");
    hex::encode(bytes)
}

impl Sessions {
    pub fn new(clock: SharedClock, idle: time::Duration) -> Sessions {
        Sessions {
            clock,
            idle,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session for a QR; returns its id.
    pub fn start(&self, token: &str, qr_id: Uuid, authority: &str, subscriber_id: &str) -> String {
        let now = self.clock.now();
        let id = random_id();
        let session = Session {
            token: token.to_owned(),
            qr_id,
            authority: authority.to_owned(),
            subscriber_id: subscriber_id.to_owned(),
            csrf: random_id(),
            stage: Stage::Password,
            last_seen: now,
            pending: None,
        };
        let mut all = self.by_id.lock().expect("not poisoned");
        if all.len() > 10_000 {
            let idle = self.idle;
            all.retain(|_, s| now - s.last_seen <= idle);
        }
        all.insert(id.clone(), session);
        id
    }

    /// The session `id` names, touched now; an idle one is dropped.
    pub fn get(&self, id: Option<&str>) -> Result<Session, Lookup> {
        let id = id.ok_or(Lookup::Missing)?;
        let now = self.clock.now();
        let mut all = self.by_id.lock().expect("not poisoned");
        let session = all.get_mut(id).ok_or(Lookup::Missing)?;
        if now - session.last_seen > self.idle {
            all.remove(id);
            return Err(Lookup::Expired);
        }
        session.last_seen = now;
        Ok(session.clone())
    }

    /// Changes a session in place (if it is still there).
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Session)) {
        if let Some(session) = self.by_id.lock().expect("not poisoned").get_mut(id) {
            change(session);
        }
    }

    /// Takes the pending ceremony out of a session: each challenge is answered at most once.
    pub fn take_pending(&self, id: &str) -> Option<Pending> {
        self.by_id
            .lock()
            .expect("not poisoned")
            .get_mut(id)
            .and_then(|s| s.pending.take())
    }

    pub fn end(&self, id: &str) {
        self.by_id.lock().expect("not poisoned").remove(id);
    }
}
