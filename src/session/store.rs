//! Where sessions live. One registry (a bounded `DashMap` keyed by session id) serves both stores:
//! for the memory store it is the truth, for the cookie store a cache of decrypted cookies, so a
//! request normally costs one lookup and one comparison, not a decryption.

use super::codec;
use super::cookie::{self, Read};
use super::{Session, SessionData, Sid, Timeouts, Token};
use crate::cache::Recency;
use crate::config::{SessionSettings, SessionStoreKind};
use crate::crypto::{Sealer, random_bytes};
use crate::http::cookies::{self, CookieAttrs};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use dashmap::DashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

/// Cookie (name, value) pairs to set.
pub type CookiePairs = Vec<(String, String)>;

/// A stored session and the cookies that carry it.
pub type Stored = (Arc<Session>, CookiePairs);

/// Memory-store sessions are all kept in memory: their tokens, most of their size, are kept
/// squeezed (see `token.rs`). The first session's tokens make the dictionary.
fn squeeze_tokens(data: &mut SessionData) {
    Token::prime(&[&data.id_token, &data.access_token]);
    data.id_token = data.id_token.squeezed();
    data.access_token = data.access_token.squeezed();
    data.refresh_token = data.refresh_token.as_ref().map(Token::squeezed);
}

/// Seconds without a request after which a session gives back what it derived on first use.
const SLIM_AFTER_IDLE: u64 = 60;

/// Length of a base64url session id.
const SID_LEN: usize = 43;

/// The result of looking for a session in a request.
#[derive(Debug)]
pub enum Lookup {
    /// No session cookie.
    Absent,
    /// A session cookie that does not open: tampered, truncated, oversized, revoked or unknown.
    Invalid {
        /// Session cookie chunks the client holds (to delete).
        cookies_present: usize,
    },
    /// A session (its timeouts are not checked yet).
    Found {
        /// The session.
        session: Arc<Session>,
        /// Served from memory without decrypting.
        cache_hit: bool,
        /// Session cookie chunks the client holds.
        cookies_present: usize,
    },
}

/// A session could not be stored in a cookie.
#[derive(Debug, thiserror::Error)]
#[error(
    "the session is too large for cookies ({0} bytes); use store = \"memory\" or request fewer claims"
)]
pub struct TooLarge(pub usize);

/// Session storage, per the `[session]` settings.
pub struct SessionStore {
    kind: SessionStoreKind,
    sealer: Sealer,
    name: String,
    /// The configured timeouts.
    pub timeouts: Timeouts,
    /// Keyed by the first 64 bits of the session id (random, so they need no hashing); the
    /// full id is compared on every hit. Half the key size matters at a million sessions.
    registry: DashMap<u64, Arc<Session>, BuildHasherDefault<RandomKeyHasher>>,
    /// Use order of the registry's keys: when full, the least recently used session goes.
    recency: Recency<u64>,
    capacity: usize,
    /// Cookie-store sessions logged out here, until they would have expired anyway.
    revoked: DashMap<Sid, u64>,
}

impl SessionStore {
    /// A store for `settings`.
    pub fn new(settings: &SessionSettings) -> SessionStore {
        let capacity = match settings.store {
            SessionStoreKind::Memory { max_sessions } => max_sessions,
            SessionStoreKind::Cookie => settings.cache_size,
        };
        SessionStore {
            kind: settings.store,
            sealer: Sealer::new(&settings.secrets, "oidc-gateway session"),
            name: settings.cookie_name.clone(),
            timeouts: Timeouts {
                absolute: settings.absolute_timeout,
                rolling: settings.rolling_timeout,
                idle: settings.idling_timeout,
            },
            registry: DashMap::default(),
            recency: Recency::new(capacity),
            capacity,
            revoked: DashMap::new(),
        }
    }

    /// Whether the cookie holds the session itself (cookie store), so a changed session needs a
    /// new cookie.
    pub fn cookie_carries_session(&self) -> bool {
        self.kind == SessionStoreKind::Cookie
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.name
    }

    /// Whether `cookie` is (a chunk of) the session cookie.
    pub fn is_session_cookie(&self, cookie: &str) -> bool {
        cookie::is_session_cookie(cookie, &self.name)
    }

    /// Finds the request's session.
    pub fn lookup(&self, headers: &http::HeaderMap) -> Lookup {
        let presented = match cookie::read(headers, &self.name) {
            Read::Absent => return Lookup::Absent,
            Read::Invalid { cookies_present } => return Lookup::Invalid { cookies_present },
            Read::Value(p) => p,
        };
        let cookies_present = presented.cookies_present;
        let invalid = Lookup::Invalid { cookies_present };
        let Some(sid) = presented.parts()[0].get(..SID_LEN).and_then(decode_sid) else {
            return invalid;
        };
        if self.revoked.contains_key(&sid) {
            return invalid;
        }
        let cached = self
            .registry
            .get(&key(&sid))
            .map(|e| e.value().clone())
            .filter(|s| s.sid == sid);
        if cached.is_some() {
            self.recency.touch(key(&sid));
        }
        match self.kind {
            SessionStoreKind::Memory { .. } => match cached {
                Some(session) if presented.len() == SID_LEN => Lookup::Found {
                    session,
                    cache_hit: true,
                    cookies_present,
                },
                _ => invalid,
            },
            SessionStoreKind::Cookie => {
                // A plain comparison is fine: reaching it requires the secret session id.
                if let Some(session) = cached
                    .as_ref()
                    .filter(|s| s.has_cookie(|v| presented.equals(v)))
                {
                    return Lookup::Found {
                        session: session.clone(),
                        cache_hit: true,
                        cookies_present,
                    };
                }
                let value = presented.joined();
                let Some(data) = self.open(&sid, &value) else {
                    return invalid;
                };
                // An older cookie of a session renewed since (a request that was in flight):
                // the newer state in memory wins.
                if let Some(session) = cached.filter(|s| s.data.renewed_at >= data.renewed_at) {
                    return Lookup::Found {
                        session: self.recognise(session, value),
                        cache_hit: false,
                        cookies_present,
                    };
                }
                let session = Arc::new(Session::new(sid, data, Some(value.into_boxed_str())));
                self.insert(session.clone());
                Lookup::Found {
                    session,
                    cache_hit: false,
                    cookies_present,
                }
            }
        }
    }

    /// Stores a new session under a fresh id (never one the browser brought). Returns the
    /// session and the cookies to set.
    pub fn create(&self, data: SessionData) -> Result<Stored, TooLarge> {
        self.store(random_bytes::<32>(), data)
    }

    /// Replaces a session's contents (renewal, token refresh), keeping its id.
    pub fn update(&self, sid: Sid, data: SessionData) -> Result<Stored, TooLarge> {
        self.store(sid, data)
    }

    fn store(&self, sid: Sid, mut data: SessionData) -> Result<Stored, TooLarge> {
        let sid_b64 = B64.encode(sid);
        let (value, cookie_value) = match self.kind {
            SessionStoreKind::Memory { .. } => {
                squeeze_tokens(&mut data);
                (sid_b64, None)
            }
            SessionStoreKind::Cookie => {
                let plain = codec::encode(&data).ok_or(TooLarge(0))?;
                let sealed = self.sealer.seal(self.aad(&sid_b64).as_bytes(), &plain);
                let v = format!("{sid_b64}.{sealed}");
                (v.clone(), Some(v.into_boxed_str()))
            }
        };
        let pairs = cookie::split(&self.name, &value).ok_or(TooLarge(value.len()))?;
        let session = Arc::new(Session::new(sid, data, cookie_value));
        self.insert(session.clone());
        Ok((session, pairs))
    }

    /// Ends a session here: deleted from memory, and (cookie store) its id refused until it
    /// would have expired anyway, so a copied cookie stops working on this instance too.
    pub fn destroy(&self, session: &Session) {
        if self
            .registry
            .remove_if(&key(&session.sid), |_, s| s.sid == session.sid)
            .is_some()
        {
            self.recency.remove(key(&session.sid));
        }
        if self.kind == SessionStoreKind::Cookie {
            let until = session
                .data
                .created_at
                .saturating_add(self.timeouts.absolute.as_secs());
            self.revoked.insert(session.sid, until);
        }
    }

    /// `Set-Cookie` headers for `pairs`, deleting chunks the client holds beyond them.
    pub fn cookie_headers(
        &self,
        pairs: &[(String, String)],
        cookies_present: usize,
        attrs: &CookieAttrs,
    ) -> Vec<http::HeaderValue> {
        let mut out: Vec<http::HeaderValue> = pairs
            .iter()
            .map(|(n, v)| cookies::set(n, v, attrs, None))
            .collect();
        out.extend(self.expire_chunks(pairs.len(), cookies_present, attrs));
        out
    }

    /// `Set-Cookie` headers deleting the session cookie and every chunk from index `from`.
    pub fn expire_chunks(
        &self,
        from: usize,
        cookies_present: usize,
        attrs: &CookieAttrs,
    ) -> Vec<http::HeaderValue> {
        (from..cookies_present)
            .map(|i| {
                let name = if i == 0 {
                    self.name.clone()
                } else {
                    format!("{}.{i}", self.name)
                };
                cookies::expire(&name, attrs)
            })
            .collect()
    }

    /// Drops expired sessions and revocations (run periodically).
    pub fn sweep(&self, now: u64) {
        let t = self.timeouts;
        let mut derived = Vec::new();
        let mut expired = Vec::new();
        self.registry.retain(|k, s| {
            if s.check(now, &t).is_err() {
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
        // Freed here, not while holding the registry's shard locks.
        drop(derived);
        for k in expired {
            self.recency.remove(k);
        }
        self.revoked.retain(|_, until| *until > now);
    }

    /// Sessions held in memory.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// Whether no session is held in memory.
    pub fn is_empty(&self) -> bool {
        self.registry.is_empty()
    }

    fn insert(&self, session: Arc<Session>) {
        if self.capacity == 0 {
            return;
        }
        let k = key(&session.sid);
        self.registry.insert(k, session);
        // Full: the least recently used sessions go, so one client logging in again and again
        // drops its own idle sessions, not other users' active ones.
        for old in self.recency.admit(k, k) {
            self.registry.remove(&old);
        }
    }

    /// Replaces the cached `session` by one that also recognises the older cookie `value`
    /// (which has just been opened and belongs to it), unless the entry changed meanwhile.
    fn recognise(&self, session: Arc<Session>, value: String) -> Arc<Session> {
        let Some(mut entry) = self.registry.get_mut(&key(&session.sid)) else {
            return session;
        };
        if !Arc::ptr_eq(entry.value(), &session) {
            return session;
        }
        let updated = Arc::new(session.recognising(value.into_boxed_str()));
        *entry.value_mut() = updated.clone();
        updated
    }

    fn aad(&self, sid_b64: &str) -> String {
        format!("{}|{sid_b64}", self.name)
    }

    fn open(&self, sid: &Sid, value: &str) -> Option<SessionData> {
        let (sid_b64, sealed) = value.split_once('.')?;
        if decode_sid(sid_b64)? != *sid {
            return None;
        }
        codec::decode(&self.sealer.open(self.aad(sid_b64).as_bytes(), sealed)?)
    }
}

/// The registry key of a session id.
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

fn decode_sid(s: &str) -> Option<Sid> {
    let mut out = [0u8; 32];
    match B64.decode_slice(s, &mut out) {
        Ok(32) => Some(out),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SameSite, Secret};
    use std::time::Duration;

    fn settings(store: SessionStoreKind, secret: &str) -> SessionSettings {
        SessionSettings {
            store,
            secrets: vec![Secret::new(secret)],
            cookie_name: "s".into(),
            cookie_path: "/".into(),
            cookie_domain: None,
            same_site: SameSite::Lax,
            rolling_timeout: Duration::from_secs(3600),
            idling_timeout: Duration::from_secs(900),
            absolute_timeout: Duration::from_secs(86400),
            cache_size: 100,
            login_timeout: Duration::from_secs(600),
            max_login_cookies: 5,
            userinfo_path: "/oauth2/userinfo".into(),
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn memory_store(max_sessions: usize) -> SessionStore {
        SessionStore::new(&settings(SessionStoreKind::Memory { max_sessions }, SECRET))
    }

    fn data() -> SessionData {
        let now = super::super::now();
        SessionData {
            provider: "p".into(),
            sub: "alice".into(),
            claims: crate::session::Claims::default(),
            id_token: "id".into(),
            access_token: "at".into(),
            expires_at: None,
            refresh_token: Some("rt".into()),
            created_at: now,
            renewed_at: now,
        }
    }

    fn headers(pairs: &[(String, String)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        let v: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
        h.insert(http::header::COOKIE, v.join("; ").parse().unwrap());
        h
    }

    #[test]
    fn cookie_store_round_trip_hits_the_cache_then_decrypts_after_a_restart() {
        let store = SessionStore::new(&settings(SessionStoreKind::Cookie, SECRET));
        let (s, pairs) = store.create(data()).unwrap();
        match store.lookup(&headers(&pairs)) {
            Lookup::Found {
                session, cache_hit, ..
            } => {
                assert!(cache_hit);
                assert_eq!(session.sid, s.sid);
            }
            other => panic!("{other:?}"),
        }
        // A fresh process (empty cache) opens the cookie itself.
        let restarted = SessionStore::new(&settings(SessionStoreKind::Cookie, SECRET));
        match restarted.lookup(&headers(&pairs)) {
            Lookup::Found {
                session, cache_hit, ..
            } => {
                assert!(!cache_hit);
                assert_eq!(session.data, s.data);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cookie_sealed_before_compression_still_opens() {
        let store = SessionStore::new(&settings(SessionStoreKind::Cookie, SECRET));
        let sid = random_bytes::<32>();
        let sid_b64 = B64.encode(sid);
        let json = serde_json::to_vec(&data()).unwrap();
        let sealed = store.sealer.seal(store.aad(&sid_b64).as_bytes(), &json);
        let pairs = cookie::split("s", &format!("{sid_b64}.{sealed}")).unwrap();
        match store.lookup(&headers(&pairs)) {
            Lookup::Found { session, .. } => assert_eq!(session.data, data()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tampered_cookies_are_invalid_even_when_cached() {
        let store = SessionStore::new(&settings(SessionStoreKind::Cookie, SECRET));
        let (_, pairs) = store.create(data()).unwrap();
        let value = &pairs[0].1;
        let mid = value.len() / 2;
        let flipped = if &value[mid..=mid] == "A" { "B" } else { "A" };
        let tampered = format!("{}{}{}", &value[..mid], flipped, &value[mid + 1..]);
        for bad in [
            tampered,
            value[..value.len() - 10].to_owned(),
            "x".repeat(50),
            String::new(),
        ] {
            let h = headers(&[("s".into(), bad.clone())]);
            assert!(matches!(store.lookup(&h), Lookup::Invalid { .. }), "{bad}");
        }
        let other_key = SessionStore::new(&settings(
            SessionStoreKind::Cookie,
            "another-secret-another-secret-another!",
        ));
        assert!(matches!(
            other_key.lookup(&headers(&pairs)),
            Lookup::Invalid { .. }
        ));
    }

    #[test]
    fn destroyed_cookie_sessions_are_refused() {
        let store = SessionStore::new(&settings(SessionStoreKind::Cookie, SECRET));
        let (s, pairs) = store.create(data()).unwrap();
        store.destroy(&s);
        assert!(matches!(
            store.lookup(&headers(&pairs)),
            Lookup::Invalid { .. }
        ));
    }

    #[test]
    fn memory_store_cookie_holds_only_the_id() {
        let store = memory_store(10);
        let (s, pairs) = store.create(data()).unwrap();
        assert_eq!(pairs[0].1.len(), SID_LEN);
        assert!(matches!(
            store.lookup(&headers(&pairs)),
            Lookup::Found { .. }
        ));
        store.destroy(&s);
        assert!(matches!(
            store.lookup(&headers(&pairs)),
            Lookup::Invalid { .. }
        ));
    }

    /// A JWS shaped like the development IdP's ID token, with `n` making it unique.
    fn jws(n: u32) -> String {
        let b64 = |b: &[u8]| B64.encode(b);
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#),
            b64(format!(
                r#"{{"iss":"https://idp.example.com","sub":"u{n}","aud":"demo","email":"u{n}@example.com","iat":1795900000}}"#
            )
            .as_bytes()),
            b64(&[n as u8; 64])
        )
    }

    #[test]
    fn memory_store_tokens_read_back_unchanged() {
        let store = memory_store(10);
        for n in 0..3 {
            let (id, at) = (jws(n), jws(n + 100));
            let (s, pairs) = store
                .create(SessionData {
                    id_token: id.as_str().into(),
                    access_token: at.as_str().into(),
                    ..data()
                })
                .unwrap();
            let Lookup::Found { session, .. } = store.lookup(&headers(&pairs)) else {
                panic!("session not found");
            };
            assert!(Arc::ptr_eq(&session, &s));
            assert_eq!(session.data.id_token.text(), id);
            assert_eq!(session.data.access_token.text(), at);
            assert_eq!(session.data.refresh_token.as_ref().unwrap().text(), "rt");
        }
    }

    #[test]
    fn sweeping_slims_sessions_idle_for_a_minute() {
        let store = memory_store(10);
        let derive = |s: &Session| {
            let _ = s.data.claims();
            s.upstream_headers.get_or_init(Default::default);
        };
        let now = super::super::now();
        let (idle, idle_pairs) = store.create(data()).unwrap();
        let (held, _) = store.create(data()).unwrap();
        let (active, active_pairs) = store.create(data()).unwrap();
        for s in [&idle, &held, &active] {
            derive(s);
        }
        active.touch(now + SLIM_AFTER_IDLE);
        drop((idle, active));
        store.sweep(now + SLIM_AFTER_IDLE);
        let found = |pairs: &[(String, String)]| match store.lookup(&headers(pairs)) {
            Lookup::Found { session, .. } => session,
            other => panic!("{other:?}"),
        };
        assert!(!found(&idle_pairs).has_derived(), "idle: slimmed");
        assert!(found(&active_pairs).has_derived(), "active: kept");
        assert!(held.has_derived(), "held by a request: left alone");
        // The slimmed session still works and derives again on its next request.
        let again = found(&idle_pairs);
        derive(&again);
        assert!(again.has_derived());
    }

    #[test]
    fn memory_store_is_bounded() {
        let store = memory_store(32);
        for _ in 0..100 {
            store.create(data()).unwrap();
        }
        assert!(store.len() <= 32, "{}", store.len());
    }

    #[test]
    fn a_full_memory_store_drops_the_least_recently_used_sessions() {
        let store = memory_store(256);
        let idle: Vec<CookiePairs> = (0..128).map(|_| store.create(data()).unwrap().1).collect();
        let (_, active) = store.create(data()).unwrap();
        let found =
            |pairs: &CookiePairs| matches!(store.lookup(&headers(pairs)), Lookup::Found { .. });
        // One account logging in ten times the capacity while another user keeps browsing.
        for i in 0..2560 {
            store.create(data()).unwrap();
            if i % 16 == 0 {
                assert!(
                    found(&active),
                    "the active session was evicted after {i} logins"
                );
            }
        }
        assert!(found(&active));
        assert_eq!(store.len(), 256);
        assert!(idle.iter().all(|p| !found(p)), "idle sessions go first");
    }

    #[test]
    fn updates_keep_the_id_and_newer_state_wins_over_old_cookies() {
        let store = SessionStore::new(&settings(SessionStoreKind::Cookie, SECRET));
        let (s, old_pairs) = store.create(data()).unwrap();
        let mut d = s.data.clone();
        d.access_token = "new".into();
        d.renewed_at += 10;
        let (s2, new_pairs) = store.update(s.sid, d).unwrap();
        assert_eq!(s2.sid, s.sid);
        assert_ne!(old_pairs, new_pairs);
        // The old cookie is opened once, then recognised from memory; the new one still is.
        for (pairs, hit) in [
            (&old_pairs, false),
            (&old_pairs, true),
            (&new_pairs, true),
            (&old_pairs, true),
        ] {
            match store.lookup(&headers(pairs)) {
                Lookup::Found {
                    session, cache_hit, ..
                } => {
                    assert_eq!(session.data.access_token.text(), "new");
                    assert_eq!(cache_hit, hit);
                }
                other => panic!("{other:?}"),
            }
        }
        // Logging out refuses the old cookie as well.
        let Lookup::Found { session, .. } = store.lookup(&headers(&old_pairs)) else {
            panic!("not found");
        };
        store.destroy(&session);
        assert!(matches!(
            store.lookup(&headers(&old_pairs)),
            Lookup::Invalid { .. }
        ));
    }

    #[test]
    fn an_entry_recognises_only_a_few_older_cookies() {
        let store = SessionStore::new(&settings(SessionStoreKind::Cookie, SECRET));
        let (s, first) = store.create(data()).unwrap();
        let mut old = vec![first];
        for i in 1..=5 {
            let mut d = s.data.clone();
            d.renewed_at += i;
            old.push(store.update(s.sid, d).unwrap().1);
        }
        let current = old.pop().unwrap();
        for pairs in &old {
            assert!(matches!(
                store.lookup(&headers(pairs)),
                Lookup::Found { .. }
            ));
        }
        let hit = |pairs| match store.lookup(&headers(pairs)) {
            Lookup::Found { cache_hit, .. } => cache_hit,
            other => panic!("{other:?}"),
        };
        assert!(hit(&current));
        // The three most recently seen older cookies are kept; the earliest two were dropped.
        assert!(old[2..].iter().all(|p| hit(p)));
        assert!(!hit(&old[0]));
    }
}
