//! Values good for one use: a login `state`, a logout token's `jti`. Recorded here and, in a
//! fleet, in Redis, so a replay is refused by every instance.

use crate::clock::now;
use crate::fleet::{Fleet, FleetError};
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;

/// The used-once record: local entries (kind, NUL, value) until they could no longer be
/// replayed, and the fleet's claims when `[redis]` is configured.
pub(super) struct UsedOnce {
    local: DashMap<Vec<u8>, u64>,
    fleet: Option<Arc<Fleet>>,
}

impl UsedOnce {
    /// An empty record, shared with the fleet when there is one.
    pub(super) fn new(fleet: Option<Arc<Fleet>>) -> UsedOnce {
        UsedOnce {
            local: DashMap::new(),
            fleet,
        }
    }

    /// Records `what` (of kind `kind`) as used for `ttl`: true the first time, false for a
    /// replay — here, and on every instance of a fleet (an error then: Redis cannot tell, so
    /// the caller fails closed). A failure spends nothing: the same value may be tried again.
    pub(super) async fn first_use(
        &self,
        kind: &str,
        what: &[u8],
        ttl: Duration,
    ) -> Result<bool, FleetError> {
        let until = now().saturating_add(ttl.as_secs());
        let local = key(kind, what);
        if self.local.insert(local.clone(), until).is_some() {
            return Ok(false);
        }
        let claimed = match &self.fleet {
            Some(fleet) => fleet.claim_once(kind, what, ttl).await,
            None => Ok(true),
        };
        if claimed.is_err() {
            self.local.remove(&local);
        }
        claimed
    }

    /// Whether `what` of kind `kind` was already recorded by [`first_use`](Self::first_use),
    /// here or by any instance of a fleet. Records nothing.
    pub(super) async fn used_before(&self, kind: &str, what: &[u8]) -> Result<bool, FleetError> {
        if self.local.contains_key(&key(kind, what)) {
            return Ok(true);
        }
        match &self.fleet {
            Some(fleet) => fleet.was_claimed(kind, what).await,
            None => Ok(false),
        }
    }

    /// Drops the local entries that can no longer be replayed.
    pub(super) fn sweep(&self, now: u64) {
        self.local.retain(|_, until| *until > now);
    }
}

/// The key of `what` of kind `kind` in the local record.
fn key(kind: &str, what: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(kind.len() + 1 + what.len());
    key.extend_from_slice(kind.as_bytes());
    key.push(0);
    key.extend_from_slice(what);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_value_is_good_once_per_kind() {
        let used = UsedOnce::new(None);
        let ttl = Duration::from_secs(60);
        assert!(!used.used_before("st", b"abc").await.unwrap());
        assert!(used.first_use("st", b"abc", ttl).await.unwrap());
        assert!(!used.first_use("st", b"abc", ttl).await.unwrap());
        assert!(used.used_before("st", b"abc").await.unwrap());
        // Another kind is another record.
        assert!(used.first_use("jti", b"abc", ttl).await.unwrap());
        // Swept once it can no longer be replayed.
        used.sweep(now() + 61);
        assert!(used.first_use("st", b"abc", ttl).await.unwrap());
    }
}
