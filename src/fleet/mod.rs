//! What the instances of a fleet share, through Redis (`[redis]`): sessions (with
//! `store = "redis"`), revocation marks, used login `state`s and back-channel `jti`s, refresh
//! leases, and invalidation messages for the in-process caches.
//!
//! Nothing in Redis names a session, a user or a state in clear: every key ends with an HMAC
//! (keyed from the session secrets) of what it is about, inside braces — a Cluster hash tag, so
//! the keys about one session share a slot.

pub mod client;
mod per_thread;
pub mod pubsub;

pub use client::{FleetError, RedisClient};

use crate::config::{RedisSettings, Secret};
use crate::crypto;
use std::time::Duration;

/// The fleet's shared state.
pub struct Fleet {
    /// The connection.
    pub redis: RedisClient,
    /// Settings (prefix, timeouts, local cache).
    pub settings: RedisSettings,
    /// Names of sessions, users and states in keys.
    pub names: crypto::Names,
}

/// What an instance tells the others through the invalidation channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// One session changed or ended: drop it from memory.
    Session([u8; 32]),
    /// Something was revoked (see `session::revocations`): apply the mark.
    Revoked {
        /// The name of what was revoked.
        tag: [u8; 32],
        /// When.
        at: u64,
        /// Until when the mark must be kept.
        until: u64,
    },
    /// Drop every cached session: messages may have been missed.
    All,
}

impl Invalidation {
    /// The message text.
    pub fn encode(&self) -> String {
        match self {
            Invalidation::Session(tag) => format!("s:{}", hex(tag)),
            Invalidation::Revoked { tag, at, until } => format!("r:{}:{at}:{until}", hex(tag)),
            Invalidation::All => "all".into(),
        }
    }

    /// Parses a message; unknown ones mean "drop everything", the safe reading.
    pub fn decode(text: &str) -> Invalidation {
        if let Some(tag) = text.strip_prefix("s:").and_then(unhex) {
            return Invalidation::Session(tag);
        }
        let revoked = text.strip_prefix("r:").and_then(|rest| {
            let mut f = rest.split(':');
            Some(Invalidation::Revoked {
                tag: unhex(f.next()?)?,
                at: f.next()?.parse().ok()?,
                until: f.next()?.parse().ok()?,
            })
        });
        revoked.unwrap_or(Invalidation::All)
    }
}

impl Fleet {
    /// The fleet for `[redis]`, naming keys with the session secrets.
    pub fn new(settings: &RedisSettings, secrets: &[Secret]) -> Result<Fleet, String> {
        Ok(Fleet {
            redis: RedisClient::new(settings)?,
            settings: settings.clone(),
            names: crypto::Names::new(secrets),
        })
    }

    /// The name of `what` under the naming key of secret `index` (0: the current one).
    pub fn name(&self, index: usize, what: &[u8]) -> [u8; 32] {
        self.names.name(index, what)
    }

    /// The Redis key of kind `kind` (`s`, `rs`, `ru`, `st`, `lk`, ...) about `tag`.
    pub fn key(&self, kind: &str, tag: &[u8; 32]) -> String {
        format!("{}{kind}:{{{}}}", self.settings.key_prefix, hex(tag))
    }

    /// The invalidation channel.
    pub fn channel(&self) -> String {
        format!("{}invalidate", self.settings.key_prefix)
    }

    /// Tells every instance (this one included) to drop what `inv` names from memory.
    pub async fn publish(&self, inv: &Invalidation) -> Result<(), FleetError> {
        self.redis
            .query::<i64>(
                "PUBLISH",
                redis::cmd("PUBLISH").arg(self.channel()).arg(inv.encode()),
            )
            .await
            .map(|_| ())
    }
}

/// A lease (a lock with an expiry) held by this instance.
#[derive(Debug)]
pub struct Lease {
    key: String,
    token: String,
}

/// Extends a lease, if it is still ours.
static RENEW: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
    )
});

/// Releases a lease, if it is still ours (never another instance's that took it over).
static RELEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
});

impl Fleet {
    /// Takes the lease `kind` on `tag` for `ttl`, if no instance holds it.
    pub async fn acquire(
        &self,
        kind: &str,
        tag: &[u8; 32],
        ttl: Duration,
    ) -> Result<Option<Lease>, FleetError> {
        let key = self.key(kind, tag);
        let token = hex(&crypto::random_bytes::<16>());
        let set: Option<String> = self
            .redis
            .query(
                "SET",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64),
            )
            .await?;
        Ok(set.map(|_| Lease { key, token }))
    }

    /// Extends `lease` to `ttl` from now; false when it is no longer ours.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, FleetError> {
        let renewed: i64 = self
            .redis
            .script(
                "EVALSHA",
                RENEW
                    .key(&lease.key)
                    .arg(&lease.token)
                    .arg(ttl.as_millis().max(1) as u64),
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Gives `lease` back (compare-and-delete).
    pub async fn release(&self, lease: Lease) {
        let _ = self
            .redis
            .script::<i64>("EVALSHA", RELEASE.key(&lease.key).arg(&lease.token))
            .await;
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The 32 bytes `hex` wrote.
pub fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
        out[i] = (d(pair[0])? << 4) | d(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_round_trip_and_unknown_ones_flush_everything() {
        let tag = [7u8; 32];
        let m = Invalidation::Session(tag).encode();
        assert_eq!(Invalidation::decode(&m), Invalidation::Session(tag));
        let r = Invalidation::Revoked {
            tag,
            at: 5,
            until: 9,
        };
        assert_eq!(Invalidation::decode(&r.encode()), r);
        assert_eq!(Invalidation::decode("r:00:1"), Invalidation::All);
        assert_eq!(Invalidation::decode("all"), Invalidation::All);
        assert_eq!(Invalidation::decode("s:zz"), Invalidation::All);
        assert_eq!(Invalidation::decode("something new"), Invalidation::All);
    }
}
