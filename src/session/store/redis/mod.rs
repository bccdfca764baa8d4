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
//!
//! This file is the ticket layer (the cookie, the per-session key, the local cache, the
//! marks' verdict); `kv.rs` is the key-value layer underneath, which only stores sealed bytes.

use super::{Loaded, SaveError, SetCookies, TooLarge, carry, delete, timeouts};
use crate::cache::BoundedCache;
use crate::clock;
use crate::config::SessionSettings;
use crate::crypto::{self, Sealer, random_bytes};
use crate::fleet::{Fleet, FleetError, Invalidation};
use crate::http::cookies::CookieAttrs;
use crate::metrics;
use crate::session::chunks::{self, Read};
use crate::session::listing::SessionInfo;
use crate::session::revocations::{self, Subject};
use crate::session::{Remote, Session, SessionData, Sid, Timeouts, codec};
use kv::{SessionKv, Updated};
use std::sync::Arc;

mod kv;

/// Sessions in Redis, cached in memory for a few seconds.
pub struct RedisStore {
    kv: SessionKv,
    sealer: Sealer,
    name: String,
    timeouts: Timeouts,
    /// Sessions read from or written to Redis, by tag: served as they are for
    /// `local_cache_ttl`; with `0s`, only once Redis confirms them (see [`Self::confirm`]).
    local: Arc<BoundedCache<[u8; 32], Arc<Session>>>,
    /// The tag each recently seen cookie opens to (a fixed fact of the cookie and the
    /// secrets), so a cached session costs two lookups, not a decryption and an HMAC.
    tickets: BoundedCache<Box<str>, [u8; 32]>,
    /// The Redis keys of each recently read session's revocation marks (names, no session
    /// data: kept even with `local_cache_ttl = "0s"`), so a read is one round trip.
    mark_keys: BoundedCache<[u8; 32], revocations::MarkKeys>,
    local_ttl: u64,
}

/// How long a cookie's tag is remembered (it never changes; this only bounds stale entries).
const TICKET_TTL: u64 = 3600;

/// With `local_cache_ttl = "0s"`, how long a session is held in memory to be confirmed rather
/// than read again (each request still asks Redis; this only bounds stale entries).
const CONFIRMED_COPY_TTL: u64 = 300;

impl RedisStore {
    /// A Redis store for `settings`, through `fleet`.
    pub fn new(settings: &SessionSettings, fleet: Arc<Fleet>) -> RedisStore {
        let local_ttl = fleet.settings.local_cache_ttl.as_secs();
        let capacity = settings.cache_size;
        RedisStore {
            sealer: Sealer::new(&settings.secrets, "oidc-gateway redis session cookie"),
            name: settings.cookie_name.clone(),
            timeouts: timeouts(settings),
            local: Arc::new(BoundedCache::new(capacity)),
            tickets: BoundedCache::new(capacity),
            mark_keys: BoundedCache::new(settings.cache_size),
            local_ttl,
            kv: SessionKv::new(fleet),
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
            return self.held(session, cookies_present).await;
        }
        let Some((plain, index)) = self.sealer.open_indexed(self.name.as_bytes(), value) else {
            return invalid;
        };
        let Ok(ids) = <[u8; 64]>::try_from(plain.as_slice()) else {
            return invalid;
        };
        let (sid, key) = split(&ids);
        let tag = self.kv.fleet().name(index, &sid);
        self.tickets
            .insert((*value).into(), tag, now.saturating_add(TICKET_TTL), now);
        if let Some(session) = self.local.get(&tag, now) {
            return self.held(session, cookies_present).await;
        }
        metrics::redis_local_cache(false);
        read_from_redis(Box::pin(self.fetch(sid, key, tag)).await, cookies_present)
    }

    /// A session held in memory: served as it is within `local_cache_ttl`; with `0s`, once
    /// Redis confirms it.
    async fn held(&self, session: Arc<Session>, cookies_present: usize) -> Loaded {
        if self.local_ttl > 0 {
            metrics::redis_local_cache(true);
            return Loaded::Found {
                session,
                cache_hit: true,
                cookies_present,
            };
        }
        metrics::redis_local_cache(false);
        read_from_redis(Box::pin(self.confirm(session)).await, cookies_present)
    }

    /// With `0s`: the held copy if Redis still has the session at the same version and no mark
    /// ends it (versions are never reused, so the data is the same), else a fresh read. One
    /// round trip, as a read, without decrypting and decoding the session again.
    async fn confirm(&self, held: Arc<Session>) -> Result<Option<Arc<Session>>, FleetError> {
        let Some(remote) = held.remote.as_ref() else {
            return Ok(None);
        };
        let Some(keys) = self.mark_keys.get(&remote.tag, clock::now()) else {
            return Box::pin(self.fetch(held.sid, remote.key, remote.tag)).await;
        };
        let (version, marks) = self.kv.version(&remote.tag, &keys).await?;
        match version {
            Some(v) if v == remote.version => {
                if revocations::ended_by(&keys, &marks, held.data.created_at) {
                    self.local.remove(&remote.tag);
                    return Ok(None);
                }
                Ok(Some(held))
            }
            Some(_) => Box::pin(self.fetch(held.sid, remote.key, remote.tag)).await,
            None => {
                self.local.remove(&remote.tag);
                Ok(None)
            }
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
        let now = clock::now();
        // The session's marks are known from an earlier read: one round trip for both.
        let known = self.mark_keys.get(&tag, now);
        let (stored, marks) = self.kv.read(&tag, known.as_ref()).await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let Some(data) =
            crypto::open_with(&key, &tag, &stored.sealed).and_then(|p| codec::decode(&p))
        else {
            return Ok(None);
        };
        let keys = revocations::mark_keys(self.kv.fleet(), &sid, &data);
        let marks = match (known, marks) {
            (Some(known), Some(marks)) if known == keys => marks,
            _ => {
                self.mark_keys
                    .insert(tag, keys.clone(), now.saturating_add(TICKET_TTL), now);
                self.kv.marks(&keys).await?
            }
        };
        if revocations::ended_by(&keys, &marks, data.created_at) {
            return Ok(None);
        }
        let session = Arc::new(Session::with_remote(
            sid,
            data,
            Remote {
                tag,
                key,
                version: stored.version,
            },
        ));
        self.remember(&session);
        Ok(Some(session))
    }

    /// Keeps `session` in memory for the local-cache time (with `0s`, to be confirmed), never
    /// past its access token.
    fn remember(&self, session: &Arc<Session>) {
        let Some(remote) = &session.remote else {
            return;
        };
        let now = clock::now();
        let keep = match self.local_ttl {
            0 => CONFIRMED_COPY_TTL,
            ttl => ttl,
        };
        let mut until = now.saturating_add(keep);
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
            let meta = self.listing(&remote.tag, &data);
            let written = self
                .kv
                .update(&remote.tag, remote.version, &sealed, &meta, ttl)
                .await;
            let version = match written.map_err(unavailable)? {
                Updated::Version(v) => v,
                Updated::Gone => {
                    self.local.remove(&remote.tag);
                    return Err(SaveError::Gone);
                }
                Updated::Moved => {
                    self.local.remove(&remote.tag);
                    return Err(SaveError::Conflict);
                }
            };
            let session = Arc::new(Session::with_remote(
                found.sid,
                data,
                Remote {
                    version,
                    ..(**remote).clone()
                },
            ));
            self.remember(&session);
            return Ok((session, Vec::new()));
        }
        let sid: Sid = random_bytes();
        let key: [u8; 32] = random_bytes();
        let tag = self.kv.fleet().name(0, &sid);
        let sealed = crypto::seal_with(&key, &tag, &plain);
        let meta = self.listing(&tag, &data);
        if !self
            .kv
            .create(&tag, &sealed, &meta, ttl)
            .await
            .map_err(unavailable)?
        {
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
            if let Err(e) = self.kv.delete(&[remote.tag]).await {
                tracing::warn!("logout could not reach Redis: {e}");
            }
        }
        delete(&self.name, loaded, attrs)
    }

    /// Adds a new session to the indexes back-channel logout finds sessions by: its user and
    /// its IdP session (sets, living as long as the longest session in them).
    async fn index(&self, tag: &[u8; 32], data: &SessionData) -> Result<(), FleetError> {
        let idp = revocations::idp_sid(data);
        let subjects = revocations::subjects(&[0; 32], data, idp.as_deref())
            .into_iter()
            .skip(1)
            .map(|s| s.bytes());
        let keep = self.timeouts.absolute.as_secs().max(1);
        self.kv.index(tag, subjects, keep).await
    }

    /// Deletes every session indexed under `subject` (a user or an IdP session), under every
    /// naming key.
    pub async fn delete_indexed(&self, subject: Subject<'_>) {
        let bytes = subject.bytes();
        for i in 0..self.kv.fleet().names.count() {
            let tags = self.kv.take_index(&bytes, i).await;
            for t in &tags {
                self.local.remove(t);
            }
            // The marks already refuse them: deleting frees the memory and is best effort.
            if let Err(e) = self.kv.delete(&tags).await {
                tracing::warn!("back-channel logout could not delete sessions: {e}");
            }
        }
    }

    /// What the admin API lists of the session `tag` holding `data`, sealed with the session
    /// secrets (a Redis dump shows no one's name).
    fn listing(&self, tag: &[u8; 32], data: &SessionData) -> String {
        let info = SessionInfo::of(tag, data, data.renewed_at, &self.timeouts);
        let json = serde_json::to_vec(&info).unwrap_or_default();
        self.sealer.seal(&listing_aad(tag), &json)
    }

    /// The sessions indexed under `subject` (a user), from their listings.
    pub async fn list(&self, subject: Subject<'_>) -> Result<Vec<SessionInfo>, FleetError> {
        let bytes = subject.bytes();
        let mut out = Vec::new();
        for i in 0..self.kv.fleet().names.count() {
            for tag in self.kv.indexed(&bytes, i).await? {
                let Some(sealed) = self.kv.meta(&tag).await? else {
                    continue;
                };
                if let Some(info) = self
                    .sealer
                    .open(&listing_aad(&tag), &sealed)
                    .and_then(|plain| serde_json::from_slice(&plain).ok())
                {
                    out.push(info);
                }
            }
        }
        Ok(out)
    }

    /// Deletes the session `tag` (revoked by name: the mark already refuses it).
    pub async fn delete_named(&self, tag: [u8; 32]) {
        self.local.remove(&tag);
        if let Err(e) = self.kv.delete(&[tag]).await {
            tracing::warn!("a revoked session could not be deleted from Redis: {e}");
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

/// What a session's listing is sealed to: it and nothing else.
fn listing_aad(tag: &[u8; 32]) -> Vec<u8> {
    [b"oidc-gateway session listing ".as_slice(), tag].concat()
}

/// What a read from Redis makes of the request's session.
fn read_from_redis(
    read: Result<Option<Arc<Session>>, FleetError>,
    cookies_present: usize,
) -> Loaded {
    match read {
        Ok(Some(session)) => Loaded::Found {
            session,
            cache_hit: false,
            cookies_present,
        },
        Ok(None) => Loaded::Invalid { cookies_present },
        Err(_) => Loaded::Unavailable { cookies_present },
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
