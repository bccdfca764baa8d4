//! The in-memory table of sessions both local stores keep: for the memory store it is the
//! truth, for the cookie store a cache of opened cookies. Bounded, least recently used first
//! out, and keyed by the first 64 bits of the session id (random, so they need no hashing; the
//! full id is compared on every hit). Half the key size matters at a million sessions.

use crate::cache::Recency;
use crate::session::{Session, Sid, Timeouts};
use dashmap::DashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

/// Seconds without a request after which a session gives back what it derived on first use.
pub const SLIM_AFTER_IDLE: u64 = 60;

/// Bounded sessions by id.
pub struct Registry {
    map: DashMap<u64, Arc<Session>, BuildHasherDefault<RandomKeyHasher>>,
    /// Use order of the keys: when full, the least recently used session goes, so one client
    /// logging in again and again drops its own idle sessions, not other users' active ones.
    recency: Recency<u64>,
    capacity: usize,
}

impl Registry {
    /// A registry of at most `capacity` sessions (0: keeps nothing).
    pub fn new(capacity: usize) -> Registry {
        Registry {
            map: DashMap::default(),
            recency: Recency::new(capacity),
            capacity,
        }
    }

    /// The session with id `sid`, marked as just used.
    pub fn get(&self, sid: &Sid) -> Option<Arc<Session>> {
        let session = self
            .map
            .get(&key(sid))
            .map(|e| e.value().clone())
            .filter(|s| s.sid == *sid)?;
        self.recency.touch(key(sid));
        Some(session)
    }

    /// Stores `session`, replacing any with its id; evicts the least recently used when full.
    pub fn insert(&self, session: Arc<Session>) {
        if self.capacity == 0 {
            return;
        }
        let k = key(&session.sid);
        self.map.insert(k, session);
        for old in self.recency.admit(k, k) {
            self.map.remove(&old);
        }
    }

    /// Replaces the session with `next`'s id by `next`, if one is held; false otherwise.
    pub fn replace_held(&self, next: Arc<Session>) -> bool {
        let Some(mut entry) = self.map.get_mut(&key(&next.sid)) else {
            return false;
        };
        if entry.value().sid != next.sid {
            return false;
        }
        *entry.value_mut() = next;
        true
    }

    /// Replaces `current` by `next` (same id), unless the entry changed meanwhile.
    pub fn replace(&self, current: &Arc<Session>, next: Arc<Session>) -> bool {
        let Some(mut entry) = self.map.get_mut(&key(&current.sid)) else {
            return false;
        };
        if !Arc::ptr_eq(entry.value(), current) {
            return false;
        }
        *entry.value_mut() = next;
        true
    }

    /// Removes the session with id `sid`.
    pub fn remove(&self, sid: &Sid) {
        if self
            .map
            .remove_if(&key(sid), |_, s| s.sid == *sid)
            .is_some()
        {
            self.recency.remove(key(sid));
        }
    }

    /// Drops sessions past a timeout at `now`, and slims idle ones.
    pub fn sweep(&self, now: u64, t: &Timeouts) {
        let mut derived = Vec::new();
        let mut expired = Vec::new();
        self.map.retain(|k, s| {
            if s.check(now, t).is_err() {
                expired.push(*k);
                return false;
            }
            // Parsed claims and upstream headers cost a session more than its own data: an idle
            // one gives them back (unless a request holds it right now) and rebuilds them on
            // its next request, so memory follows the active sessions, not all of them.
            if now >= s.last_seen().saturating_add(SLIM_AFTER_IDLE)
                && let Some(s) = Arc::get_mut(s)
                && s.has_derived()
            {
                derived.push(s.take_derived());
            }
            true
        });
        // Freed here, not while holding the map's shard locks.
        drop(derived);
        for k in expired {
            self.recency.remove(k);
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The sessions `keep` picks (a walk over all of them: for the admin API, not requests).
    pub fn matching(&self, keep: impl Fn(&Session) -> bool) -> Vec<Arc<Session>> {
        self.map
            .iter()
            .filter(|e| keep(e.value()))
            .map(|e| e.value().clone())
            .collect()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The map key of a session id.
fn key(sid: &Sid) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&sid[..8]);
    u64::from_le_bytes(b)
}

/// Session ids are random: their first 64 bits are already a uniform hash.
#[derive(Default)]
pub struct RandomKeyHasher(u64);

impl std::hash::Hasher for RandomKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
