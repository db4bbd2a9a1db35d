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
    /// A WebAuthn ceremony started and not yet finished.
    pub pending: Option<Pending>,
}

impl Session {
    pub fn new(token: &str, qr_id: Uuid, authority: &str, subscriber_id: &str) -> Session {
        Session {
            token: token.to_owned(),
            qr_id,
            authority: authority.to_owned(),
            subscriber_id: subscriber_id.to_owned(),
            csrf: random_id(),
            stage: Stage::Password,
            pending: None,
        }
    }
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

/// Sessions of one kind (the portal's, the console's), by random id, each dropped once it has
/// sat idle longer than `idle` on the injected clock.
pub struct Sessions<T> {
    clock: SharedClock,
    idle: time::Duration,
    by_id: Mutex<HashMap<String, (T, OffsetDateTime)>>,
}

/// 32 random bytes as lower-case hex.
pub fn random_id() -> String {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).expect("the system's random source works");
    hex::encode(bytes)
}

/// Compares a sent synchronizer token with the session's in constant time.
pub fn same_token(sent: Option<&str>, expected: &str) -> bool {
    sent.is_some_and(|s| {
        s.len() == expected.len() && openssl::memcmp::eq(s.as_bytes(), expected.as_bytes())
    })
}

impl<T: Clone> Sessions<T> {
    pub fn new(clock: SharedClock, idle: time::Duration) -> Sessions<T> {
        Sessions {
            clock,
            idle,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps a new session; returns its id.
    pub fn start(&self, session: T) -> String {
        let now = self.clock.now();
        let id = random_id();
        let mut all = self.by_id.lock().expect("not poisoned");
        if all.len() > 10_000 {
            let idle = self.idle;
            all.retain(|_, (_, seen)| now - *seen <= idle);
        }
        all.insert(id.clone(), (session, now));
        id
    }

    /// The session `id` names, touched now; an idle one is dropped.
    pub fn get(&self, id: Option<&str>) -> Result<T, Lookup> {
        let id = id.ok_or(Lookup::Missing)?;
        let now = self.clock.now();
        let mut all = self.by_id.lock().expect("not poisoned");
        let (session, seen) = all.get_mut(id).ok_or(Lookup::Missing)?;
        if now - *seen > self.idle {
            all.remove(id);
            return Err(Lookup::Expired);
        }
        *seen = now;
        Ok(session.clone())
    }

    /// Changes a session in place (if it is still there) and returns what `change` returned.
    pub fn update<R>(&self, id: &str, change: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.by_id
            .lock()
            .expect("not poisoned")
            .get_mut(id)
            .map(|(session, _)| change(session))
    }

    pub fn end(&self, id: &str) {
        self.by_id.lock().expect("not poisoned").remove(id);
    }

    /// Ends every session `which` picks (an account disabled, say).
    pub fn end_where(&self, which: impl Fn(&T) -> bool) {
        self.by_id
            .lock()
            .expect("not poisoned")
            .retain(|_, (session, _)| !which(session));
    }
}
