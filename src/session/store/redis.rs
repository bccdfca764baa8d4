//! The Redis store: sessions shared by every instance of a fleet.
//!
//! The cookie carries a random session id and a random key, sealed with the session secrets
//! (about 150 bytes). Redis holds the session under `s:{HMAC(sid)}`, sealed with that key. So
//! neither a Redis dump nor a stolen Redis password reveals a token, and the cookie alone is
//! nothing without Redis (oauth2-proxy's "ticket", lua-resty-session's `hash_storage_key`).
//!
//! - Each save writes a new version with a compare-and-set script: an update to a session that
//!   logout deleted fails (it never comes back), and of two concurrent updates the second fails
//!   rather than overwriting the first (a renewal never undoes a refresh).
//! - Logout writes a revocation mark (`session::revocations`), deletes the session, then tells
//!   every instance to drop its cached copy. Every fetch also reads the marks for the session,
//!   its user and its IdP session, so a lost delete or a missed message cannot bring it back.
//! - Sessions are indexed by user and by IdP session (sets with TTLs), so a back-channel logout
//!   deletes them all.
//! - The hot path stays in memory: a session read from Redis is kept for `local_cache_ttl`
//!   (never past its access token's expiry); `0s` asks Redis on every request.
//! - Redis down: a cached session is still served; otherwise the request gets a 503, and the
//!   client's cookie is never cleared for it.

use super::{Loaded, SaveError, SetCookies, TooLarge, carry, delete, timeouts};
use crate::cache::BoundedCache;
use crate::clock;
use crate::config::SessionSettings;
use crate::crypto::{self, Sealer, random_bytes};
use crate::fleet::{Fleet, FleetError, Invalidation};
use crate::http::cookies::CookieAttrs;
use crate::metrics;
use crate::session::chunks::{self, Read};
use crate::session::revocations::{self, Subject};
use crate::session::{Remote, Session, SessionData, Sid, Timeouts, codec};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// Creates a session that must not exist yet.
static CREATE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', 1, 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1",
    )
});

/// Writes the next version of a session that still exists and is still at version ARGV[1]
/// (`0`: any version). Returns the new version, -1 when it is gone, -2 when it moved on.
static UPDATE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
if ARGV[1] ~= '0' and v ~= ARGV[1] then return -2 end
local n = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'v', n, 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n",
    )
});

/// Sessions in Redis, cached in memory for a few seconds.
pub struct RedisStore {
    fleet: Arc<Fleet>,
    sealer: Sealer,
    name: String,
    timeouts: Timeouts,
    /// Sessions read from or written to Redis, by tag.
    local: Arc<BoundedCache<[u8; 32], Arc<Session>>>,
    /// The tag each recently seen cookie opens to (a fixed fact of the cookie and the
    /// secrets), so a cached session costs two lookups, not a decryption and an HMAC.
    tickets: BoundedCache<Box<str>, [u8; 32]>,
    /// The Redis keys of each recently read session's revocation marks (names, no session
    /// data: kept even with `local_cache_ttl = "0s"`), so a read is one round trip.
    mark_keys: BoundedCache<[u8; 32], revocations::MarkKeys>,
    /// Redis is a Cluster (no multi-slot pipelines).
    cluster: bool,
    local_ttl: u64,
}

/// A session's hash in Redis (`v`, `d`).
type Hash = HashMap<String, Vec<u8>>;

/// How long a cookie's tag is remembered (it never changes; this only bounds stale entries).
const TICKET_TTL: u64 = 3600;

impl RedisStore {
    /// A Redis store for `settings`, through `fleet`.
    pub fn new(settings: &SessionSettings, fleet: Arc<Fleet>) -> RedisStore {
        let local_ttl = fleet.settings.local_cache_ttl.as_secs();
        let capacity = if local_ttl == 0 {
            0
        } else {
            settings.cache_size
        };
        RedisStore {
            sealer: Sealer::new(&settings.secrets, "oidc-gateway redis session cookie"),
            name: settings.cookie_name.clone(),
            timeouts: timeouts(settings),
            local: Arc::new(BoundedCache::new(capacity)),
            tickets: BoundedCache::new(capacity),
            mark_keys: BoundedCache::new(settings.cache_size),
            cluster: matches!(
                fleet.settings.topology,
                crate::config::RedisTopology::Cluster(_)
            ),
            local_ttl,
            fleet,
        }
    }

    /// What to do with an invalidation from the fleet's channel.
    pub fn invalidator(&self) -> crate::fleet::pubsub::Handler {
        let local = self.local.clone();
        Arc::new(move |inv| match inv {
            Invalidation::Session(tag) | Invalidation::Revoked { tag, .. } => local.remove(&tag),
            Invalidation::All => local.clear(),
        })
    }

    /// Drops `session` from memory (it was revoked).
    pub fn forget(&self, session: &Session) {
        if let Some(r) = &session.remote {
            self.local.remove(&r.tag);
        }
    }

    /// Finds the request's session: from memory, else from Redis.
    pub async fn load(&self, headers: &http::HeaderMap) -> Loaded {
        let presented = match chunks::read(headers, &self.name) {
            Read::Absent => return Loaded::Absent,
            Read::Invalid { cookies_present } => return Loaded::Invalid { cookies_present },
            Read::Value(p) => p,
        };
        let cookies_present = presented.cookies_present;
        let invalid = Loaded::Invalid { cookies_present };
        let [value] = presented.parts() else {
            return invalid;
        };
        let now = clock::now();
        if let Some(tag) = self.tickets.get(*value, now)
            && let Some(session) = self.local.get(&tag, now)
        {
            metrics::redis_local_cache(true);
            return Loaded::Found {
                session,
                cache_hit: true,
                cookies_present,
            };
        }
        let Some((plain, index)) = self.sealer.open_indexed(self.name.as_bytes(), value) else {
            return invalid;
        };
        let Ok(ids) = <[u8; 64]>::try_from(plain.as_slice()) else {
            return invalid;
        };
        let (sid, key) = split(&ids);
        let tag = self.fleet.name(index, &sid);
        self.tickets
            .insert((*value).into(), tag, now.saturating_add(TICKET_TTL), now);
        if let Some(session) = self.local.get(&tag, now) {
            metrics::redis_local_cache(true);
            return Loaded::Found {
                session,
                cache_hit: true,
                cookies_present,
            };
        }
        metrics::redis_local_cache(false);
        match Box::pin(self.fetch(sid, key, tag)).await {
            Ok(Some(session)) => Loaded::Found {
                session,
                cache_hit: false,
                cookies_present,
            },
            Ok(None) => invalid,
            Err(_) => Loaded::Unavailable { cookies_present },
        }
    }

    /// A version of `loaded`'s session newer than the loaded one with a valid access token,
    /// read from Redis (not memory), polling for up to `wait`.
    pub async fn newer_version(
        &self,
        loaded: &Loaded,
        wait: std::time::Duration,
    ) -> Option<(Arc<Session>, SetCookies)> {
        let found = loaded.session()?;
        let remote = found.remote.as_ref()?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Ok(Some(s)) = Box::pin(self.fetch(found.sid, remote.key, remote.tag)).await
                && s.remote
                    .as_ref()
                    .is_some_and(|r| r.version > remote.version)
                && !s.access_token_expired(clock::now(), std::time::Duration::ZERO)
            {
                return Some((s, Vec::new()));
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Reads, opens and checks a session in Redis; `None` when it is not (or no longer) valid.
    async fn fetch(
        &self,
        sid: Sid,
        key: [u8; 32],
        tag: [u8; 32],
    ) -> Result<Option<Arc<Session>>, FleetError> {
        let hgetall = redis::cmd("HGETALL").arg(self.fleet.key("s", &tag)).clone();
        let now = clock::now();
        // The session's marks are known from an earlier read: one round trip for both (not on
        // a Cluster, where they live in other slots).
        let known = self.mark_keys.get(&tag, now).filter(|_| !self.cluster);
        let (hash, marks): (Hash, Option<Vec<Option<u64>>>) = match &known {
            Some(keys) => {
                let mut p = redis::pipe();
                p.add_command(hgetall).add_command(revocations::mget(keys));
                let (hash, marks) = self.fleet.redis.pipeline("HGETALL", &p).await?;
                (hash, Some(marks))
            }
            None => (self.fleet.redis.query("HGETALL", &hgetall).await?, None),
        };
        let version = hash
            .get("v")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
        let (Some(version), Some(sealed)) = (version, hash.get("d")) else {
            return Ok(None);
        };
        let Some(data) = crypto::open_with(&key, &tag, sealed).and_then(|p| codec::decode(&p))
        else {
            return Ok(None);
        };
        let keys = revocations::mark_keys(&self.fleet, &sid, &data);
        let marks = match (known, marks) {
            (Some(known), Some(marks)) if known == keys => marks,
            _ => {
                self.mark_keys
                    .insert(tag, keys.clone(), now.saturating_add(TICKET_TTL), now);
                self.fleet
                    .redis
                    .query("MGET", &revocations::mget(&keys))
                    .await?
            }
        };
        if revocations::ended_by(&keys, &marks, data.created_at) {
            return Ok(None);
        }
        let session = Arc::new(Session::with_remote(
            sid,
            data,
            Remote { tag, key, version },
        ));
        self.remember(&session);
        Ok(Some(session))
    }

    /// Keeps `session` in memory for the local-cache time, never past its access token.
    fn remember(&self, session: &Arc<Session>) {
        let Some(remote) = &session.remote else {
            return;
        };
        let now = clock::now();
        let mut until = now.saturating_add(self.local_ttl);
        if let Some(exp) = session.data.expires_at {
            until = until.min(exp);
        }
        self.local.insert(remote.tag, session.clone(), until, now);
    }

    /// Milliseconds the session may live in Redis: until its idle or absolute timeout.
    fn ttl_ms(&self, data: &SessionData, now: u64) -> u64 {
        let absolute_end = data
            .created_at
            .saturating_add(self.timeouts.absolute.as_secs());
        let secs = absolute_end
            .saturating_sub(now)
            .min(self.timeouts.idle.as_secs())
            .max(1);
        secs * 1000
    }

    /// Stores `data`: an update of the found session (compare-and-set on its version), or a
    /// new session under fresh random id and key.
    pub async fn save(
        &self,
        loaded: &Loaded,
        data: SessionData,
        attrs: &CookieAttrs,
    ) -> Result<(Arc<Session>, SetCookies), SaveError> {
        let now = clock::now();
        let ttl = self.ttl_ms(&data, now);
        let plain = codec::encode(&data).ok_or(TooLarge(0))?;
        let unavailable = |_| SaveError::Unavailable;
        if let Some(found) = loaded.session()
            && let Some(remote) = &found.remote
        {
            let sealed = crypto::seal_with(&remote.key, &remote.tag, &plain);
            let version: i64 = self
                .fleet
                .redis
                .script(
                    "EVALSHA",
                    UPDATE
                        .key(self.fleet.key("s", &remote.tag))
                        .arg(remote.version)
                        .arg(sealed)
                        .arg(ttl),
                )
                .await
                .map_err(unavailable)?;
            match version {
                -1 => {
                    self.local.remove(&remote.tag);
                    return Err(SaveError::Gone);
                }
                -2 => {
                    self.local.remove(&remote.tag);
                    return Err(SaveError::Conflict);
                }
                _ => {}
            }
            let session = Arc::new(Session::with_remote(
                found.sid,
                data,
                Remote {
                    version: version as u64,
                    ..(**remote).clone()
                },
            ));
            self.remember(&session);
            // The others drop their copy; a lost message only keeps it for local_cache_ttl.
            let _ = self.fleet.publish(&Invalidation::Session(remote.tag)).await;
            return Ok((session, Vec::new()));
        }
        let sid: Sid = random_bytes();
        let key: [u8; 32] = random_bytes();
        let tag = self.fleet.name(0, &sid);
        let sealed = crypto::seal_with(&key, &tag, &plain);
        let created: i64 = self
            .fleet
            .redis
            .script(
                "EVALSHA",
                CREATE.key(self.fleet.key("s", &tag)).arg(sealed).arg(ttl),
            )
            .await
            .map_err(unavailable)?;
        if created != 1 {
            // 256 random bits collided: surely something else is wrong.
            return Err(SaveError::Conflict);
        }
        self.index(&tag, &data).await.map_err(unavailable)?;
        let mut ids = [0u8; 64];
        ids[..32].copy_from_slice(&sid);
        ids[32..].copy_from_slice(&key);
        let value = self.sealer.seal(self.name.as_bytes(), &ids);
        let cookies = carry(&self.name, &value, loaded.cookies_present(), attrs)?;
        self.tickets.insert(
            value.into_boxed_str(),
            tag,
            now.saturating_add(TICKET_TTL),
            now,
        );
        let session = Arc::new(Session::with_remote(
            sid,
            data,
            Remote {
                tag,
                key,
                version: 1,
            },
        ));
        self.remember(&session);
        Ok((session, cookies))
    }

    /// Deletes the request's session from Redis and tells every instance to drop its copy
    /// (the revocation mark, written first by `Sessions`, already refuses it). The cookie is
    /// deleted whatever Redis says.
    pub async fn clear(&self, loaded: &Loaded, attrs: &CookieAttrs) -> SetCookies {
        if let Some(found) = loaded.session()
            && let Some(remote) = &found.remote
        {
            self.local.remove(&remote.tag);
            if let Err(e) = self.delete(&[remote.tag]).await {
                tracing::warn!("logout could not reach Redis: {e}");
            }
        }
        delete(&self.name, loaded, attrs)
    }

    /// Deletes the sessions named `tags`, then tells every instance.
    async fn delete(&self, tags: &[[u8; 32]]) -> Result<(), FleetError> {
        if tags.is_empty() {
            return Ok(());
        }
        let mut del = redis::cmd("DEL");
        for t in tags {
            del.arg(self.fleet.key("s", t));
        }
        self.fleet.redis.query::<i64>("DEL", &del).await?;
        for t in tags {
            self.fleet.publish(&Invalidation::Session(*t)).await?;
        }
        Ok(())
    }

    /// Adds a new session to the indexes back-channel logout finds sessions by: its user and
    /// its IdP session (sets, living as long as the longest session in them).
    async fn index(&self, tag: &[u8; 32], data: &SessionData) -> Result<(), FleetError> {
        let idp = revocations::idp_sid(data);
        let keep = self.timeouts.absolute.as_secs().max(1);
        for subject in revocations::subjects(&[0; 32], data, idp.as_deref())
            .into_iter()
            .skip(1)
        {
            let key = self.fleet.key("ix", &self.fleet.name(0, &subject.bytes()));
            let mut p = redis::pipe();
            p.cmd("SADD")
                .arg(&key)
                .arg(&tag[..])
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(keep)
                .arg("GT")
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(keep)
                .arg("NX")
                .ignore();
            self.fleet.redis.pipeline::<()>("SADD", &p).await?;
        }
        Ok(())
    }

    /// Deletes every session indexed under `subject` (a user or an IdP session), under every
    /// naming key.
    pub async fn delete_indexed(&self, subject: Subject<'_>) {
        let bytes = subject.bytes();
        for i in 0..self.fleet.names.count() {
            let key = self.fleet.key("ix", &self.fleet.name(i, &bytes));
            let found: Result<Vec<Vec<u8>>, _> = self
                .fleet
                .redis
                .query("SMEMBERS", redis::cmd("SMEMBERS").arg(&key))
                .await;
            let tags: Vec<[u8; 32]> = found
                .unwrap_or_default()
                .iter()
                .filter_map(|t| <[u8; 32]>::try_from(t.as_slice()).ok())
                .collect();
            for t in &tags {
                self.local.remove(t);
            }
            // The marks already refuse them: deleting frees the memory and is best effort.
            if let Err(e) = self.delete(&tags).await {
                tracing::warn!("back-channel logout could not delete sessions: {e}");
            }
            let _ = self
                .fleet
                .redis
                .query::<i64>("DEL", redis::cmd("DEL").arg(&key))
                .await;
        }
    }

    /// Drops expired entries from memory.
    pub fn sweep(&self, now: u64) {
        self.local.sweep(now);
        self.tickets.sweep(now);
        self.mark_keys.sweep(now);
    }

    /// Sessions held in memory.
    pub fn len(&self) -> usize {
        self.local.len()
    }

    /// Whether none is held in memory.
    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.name
    }
}

/// The id and key a cookie carries.
fn split(ids: &[u8; 64]) -> (Sid, [u8; 32]) {
    let mut sid = [0u8; 32];
    let mut key = [0u8; 32];
    sid.copy_from_slice(&ids[..32]);
    key.copy_from_slice(&ids[32..]);
    (sid, key)
}
