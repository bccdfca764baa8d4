//! Short-lived values kept by name until a deadline: a form waiting for its sign-in, a login
//! `state` or a logout token's `jti` already used. One facility with two backends that pass one
//! conformance suite: this process's memory, or the fleet's Redis, where every instance sees
//! the same record (a callback may reach any instance; a replay must be refused by all).
//!
//! Values are named with the session secrets (HMAC), never stored under what they are about;
//! what is kept is sealed by the caller when it is secret.

mod memory;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

use crate::config::Secret;
use crate::crypto::Names;
use crate::fleet::{Fleet, FleetError};
use memory::Memory;
use std::sync::Arc;
use std::time::Duration;

/// Where kept values live.
enum Backend {
    /// This process: fine for one instance, or for values only this instance reads.
    Memory(Memory),
    /// The fleet's Redis.
    Redis(Arc<Fleet>),
}

/// Values kept by (kind, name) until their time-to-live has passed.
pub struct Kept {
    names: Names,
    backend: Backend,
}

impl Kept {
    /// Keeps values in Redis when `fleet` is given, else in this process; `secrets` name them.
    pub fn new(secrets: &[Secret], fleet: Option<Arc<Fleet>>) -> Kept {
        Kept {
            names: Names::new(secrets),
            backend: match fleet {
                Some(fleet) => Backend::Redis(fleet),
                None => Backend::Memory(Memory::new(crate::clock::now_ms)),
            },
        }
    }

    /// In this process, on the clock `now_ms` (milliseconds), which tests move.
    #[cfg(any(test, feature = "testing"))]
    pub fn in_memory(secrets: &[Secret], now_ms: fn() -> u64) -> Kept {
        Kept {
            names: Names::new(secrets),
            backend: Backend::Memory(Memory::new(now_ms)),
        }
    }

    /// Keeps `value` as `what` of kind `kind` for `ttl`, replacing any value kept before.
    pub async fn put(
        &self,
        kind: &'static str,
        what: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), FleetError> {
        let name = self.names.name(0, what);
        match &self.backend {
            Backend::Memory(m) => {
                m.put(kind, name, Some(value.into()), ttl);
                Ok(())
            }
            Backend::Redis(fleet) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(fleet.key(kind, &name))
                    .arg(value)
                    .arg("PX")
                    .arg(millis(ttl));
                fleet.redis.query::<()>("SET", &cmd).await
            }
        }
    }

    /// The value kept as `what`, removed as it is read (it is good once); `None` when there is
    /// none or it expired. Values named under an older secret are found too.
    pub async fn take(
        &self,
        kind: &'static str,
        what: &[u8],
    ) -> Result<Option<Vec<u8>>, FleetError> {
        for index in 0..self.names.count() {
            let name = self.names.name(index, what);
            let found = match &self.backend {
                Backend::Memory(m) => m.take(kind, &name),
                Backend::Redis(fleet) => {
                    let mut cmd = redis::cmd("GETDEL");
                    cmd.arg(fleet.key(kind, &name));
                    fleet.redis.query::<Option<Vec<u8>>>("GETDEL", &cmd).await?
                }
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Records `what` as used for `ttl`: true the first time, false while it is recorded (a
    /// replay). An error records nothing: the same value may be tried again.
    pub async fn claim(
        &self,
        kind: &'static str,
        what: &[u8],
        ttl: Duration,
    ) -> Result<bool, FleetError> {
        let name = self.names.name(0, what);
        match &self.backend {
            Backend::Memory(m) => Ok(m.claim(kind, name, ttl)),
            Backend::Redis(fleet) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(fleet.key(kind, &name))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl));
                let set: Option<String> = fleet.redis.query("SET", &cmd).await?;
                Ok(set.is_some())
            }
        }
    }

    /// Whether `what` is recorded (by [`claim`](Self::claim) or [`put`](Self::put)) and has
    /// not expired. Records nothing.
    pub async fn contains(&self, kind: &'static str, what: &[u8]) -> Result<bool, FleetError> {
        let name = self.names.name(0, what);
        match &self.backend {
            Backend::Memory(m) => Ok(m.contains(kind, &name)),
            Backend::Redis(fleet) => {
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(fleet.key(kind, &name));
                let n: i64 = fleet.redis.query("EXISTS", &cmd).await?;
                Ok(n > 0)
            }
        }
    }

    /// Whether every instance of a fleet sees the same values (Redis).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// Drops expired values from memory (Redis expires its own).
    pub fn sweep(&self) {
        if let Backend::Memory(m) = &self.backend {
            m.sweep();
        }
    }
}

/// `ttl` in whole milliseconds, at least one (Redis refuses `PX 0`).
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static NOW_MS: AtomicU64 = AtomicU64::new(1_000_000);

    fn now_ms() -> u64 {
        NOW_MS.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn the_memory_backend_passes_the_conformance_suite() {
        let kept = Kept::in_memory(&[Secret::new("m".repeat(32))], now_ms);
        conformance::run(&kept, |d| {
            NOW_MS.fetch_add(u64::try_from(d.as_millis()).unwrap(), Ordering::Relaxed);
            async {}
        })
        .await;
    }
}
