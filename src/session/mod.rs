//! Sessions: what a successful login leaves behind, and the timeouts that end it.
//!
//! A session is identified by a random 256-bit id. Where it lives is the store's business
//! (`store/`); the cookie that carries it may be split into chunks (`chunks.rs`). Either way the
//! hot path is one in-memory lookup, with no call to the identity provider.

pub mod chunks;
pub mod codec;
pub mod listing;
pub mod revocations;
pub mod store;
pub mod token;

pub use token::Token;

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A session id: 256 random bits.
pub type Sid = [u8; 32];

/// What a session knows. This is what the cookie store seals into the cookie.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionData {
    /// Name of the provider that authenticated the user.
    pub provider: Box<str>,
    /// Subject (`sub`) at that provider.
    pub sub: Box<str>,
    /// Identity claims (ID token and userinfo), without token bookkeeping fields.
    pub claims: Claims,
    /// The raw ID token (for `id_token_hint` at logout and an optional upstream header).
    pub id_token: Token,
    /// The access token passed upstream.
    pub access_token: Token,
    /// When the access token expires (Unix seconds), if the provider said.
    pub expires_at: Option<u64>,
    /// Refresh token, if the provider issued one.
    pub refresh_token: Option<Token>,
    /// Login time (Unix seconds): the absolute timeout counts from here.
    pub created_at: u64,
    /// Last renewal (Unix seconds): the rolling timeout counts from here.
    pub renewed_at: u64,
}

/// Identity claims. The session keeps its ID token anyway, so only what the ID token does not
/// say (userinfo additions, granted scopes) is stored, as compact JSON; the full map is built
/// when a route's rules read it, and dropped again once the session is idle. Most sessions in a
/// large memory store are idle, and a parsed map costs several times its JSON text.
#[derive(Default)]
pub struct Claims {
    /// Claims not in the ID token (or different from it), as a JSON object.
    extra: Box<str>,
    // Boxed: an unparsed session pays one pointer, not the map's inline size.
    parsed: OnceLock<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl Claims {
    /// Claims `full` for a session holding `id_token`.
    pub fn derive(id_token: &str, full: serde_json::Map<String, serde_json::Value>) -> Claims {
        let base = crate::claims::of_verified_id_token(id_token);
        let extra: serde_json::Map<String, serde_json::Value> = full
            .into_iter()
            .filter(|(k, v)| base.get(k) != Some(v))
            .collect();
        Claims::from_extra(extra)
    }

    fn from_extra(extra: serde_json::Map<String, serde_json::Value>) -> Claims {
        let json = if extra.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&extra).unwrap_or_default()
        };
        Claims {
            extra: json.into_boxed_str(),
            parsed: OnceLock::new(),
        }
    }

    fn map(&self, id_token: &Token) -> &serde_json::Map<String, serde_json::Value> {
        self.parsed.get_or_init(|| Box::new(self.parse(id_token)))
    }

    fn parse(&self, id_token: &Token) -> serde_json::Map<String, serde_json::Value> {
        let mut m = crate::claims::of_verified_id_token(&id_token.text());
        if !self.extra.is_empty()
            && let Ok(extra) =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&self.extra)
        {
            m.extend(extra);
        }
        m
    }
}

impl Clone for Claims {
    fn clone(&self) -> Self {
        Claims {
            extra: self.extra.clone(),
            parsed: OnceLock::new(),
        }
    }
}

impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        self.extra == other.extra
    }
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Claims(+{})", &self.extra)
    }
}

/// On the wire (the cookie store's sealed cookie) only the extra claims travel.
impl Serialize for Claims {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let extra: serde_json::Map<String, serde_json::Value> = if self.extra.is_empty() {
            serde_json::Map::new()
        } else {
            serde_json::from_str(&self.extra).map_err(serde::ser::Error::custom)?
        };
        extra.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Map::deserialize(d).map(Claims::from_extra)
    }
}

impl SessionData {
    /// Every identity claim: the ID token's, plus userinfo's and the granted `scope`.
    pub fn claims(&self) -> &serde_json::Map<String, serde_json::Value> {
        self.claims.map(&self.id_token)
    }

    /// The same claims for a single use (building upstream headers): parsed without keeping
    /// the map, which costs a session about 2 KB of memory for as long as it is kept.
    pub fn claims_once(&self) -> Cow<'_, serde_json::Map<String, serde_json::Value>> {
        match self.claims.parsed.get() {
            Some(m) => Cow::Borrowed(m),
            None => Cow::Owned(self.claims.parse(&self.id_token)),
        }
    }
}

/// What a session derives on first use: its parsed claims and its upstream headers.
pub type Derived = (
    Option<Box<serde_json::Map<String, serde_json::Value>>>,
    Option<Box<[(http::HeaderName, http::HeaderValue)]>>,
    Option<Box<cel_interpreter::Value>>,
);

/// Why a session no longer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Older than `absolute_timeout`.
    Absolute,
    /// Not renewed within `rolling_timeout`.
    Rolling,
    /// No request within `idling_timeout`.
    Idle,
}

/// Session time limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Longest time since login.
    pub absolute: Duration,
    /// Longest time between renewals.
    pub rolling: Duration,
    /// Longest time between requests.
    pub idle: Duration,
}

impl Timeouts {
    /// How stale `last_seen`/`renewed_at` may get before the session is renewed: a quarter of
    /// the shorter timeout, so an active user never runs into either, while the cookie store
    /// sets a new cookie only every few minutes rather than on every request.
    pub fn renew_after(&self) -> u64 {
        (self.idle.min(self.rolling).as_secs() / 4).clamp(1, 300)
    }
}

/// Cookie values one cache entry recognises: its own and the three most recent older ones.
const MAX_COOKIE_VALUES: usize = 4;

/// A live session.
#[derive(Debug)]
pub struct Session {
    /// Its id.
    pub sid: Sid,
    /// Its contents.
    pub data: SessionData,
    /// Cookie store: the exact cookie value this entry was sealed into, then older cookies of
    /// the same session that were opened since, so a request carrying one is a cache hit.
    cookie_values: Box<[Box<str>]>,
    last_seen: AtomicU64,
    /// Headers sent upstream for this session, computed once.
    pub upstream_headers: OnceLock<Box<[(http::HeaderName, http::HeaderValue)]>>,
    /// Its claims as `allow_if` expressions read them, built once (routes with a policy only;
    /// boxed, so other sessions pay 16 bytes).
    pub policy_claims: OnceLock<Box<cel_interpreter::Value>>,
    /// Redis store: where the session lives there (boxed: other stores pay one pointer).
    pub remote: Option<Box<Remote>>,
    /// The revocation epoch at which it was last found not revoked.
    pub revocations_checked: AtomicU64,
}

/// Where a Redis-store session lives, and what saving it again needs.
#[derive(Clone)]
pub struct Remote {
    /// The HMAC of the session id that names its keys.
    pub tag: [u8; 32],
    /// The key its data is sealed with (only the cookie carries it).
    pub key: [u8; 32],
    /// The version loaded or saved last (compare-and-set).
    pub version: u64,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote(v{}, key hidden)", self.version)
    }
}

impl Session {
    /// Wraps data loaded or created now.
    pub fn new(sid: Sid, data: SessionData, cookie_value: Option<Box<str>>) -> Session {
        let seen = data.renewed_at;
        Session {
            sid,
            data,
            cookie_values: cookie_value.into_iter().collect(),
            last_seen: AtomicU64::new(seen),
            upstream_headers: OnceLock::new(),
            policy_claims: OnceLock::new(),
            remote: None,
            revocations_checked: AtomicU64::new(0),
        }
    }

    /// Wraps data loaded from, or saved to, Redis.
    pub fn with_remote(sid: Sid, data: SessionData, remote: Remote) -> Session {
        Session {
            remote: Some(Box::new(remote)),
            ..Session::new(sid, data, None)
        }
    }

    /// Whether a cookie value matching `equals` is known to open to this entry.
    pub fn has_cookie(&self, equals: impl Fn(&str) -> bool) -> bool {
        self.cookie_values.iter().any(|v| equals(v))
    }

    /// This entry, also recognising `older`: a cookie of this session from before it was
    /// renewed, which a client that never stores new cookies (a script, a load generator) or a
    /// request already in flight keeps sending. Without it every such request would decrypt the
    /// cookie again. Bounded: the newest few are kept.
    pub fn recognising(&self, older: Box<str>) -> Session {
        let mut values = self.cookie_values.to_vec();
        values.insert(1.min(values.len()), older);
        values.truncate(MAX_COOKIE_VALUES);
        Session {
            sid: self.sid,
            data: self.data.clone(),
            cookie_values: values.into_boxed_slice(),
            last_seen: AtomicU64::new(self.last_seen()),
            upstream_headers: self.upstream_headers.clone(),
            policy_claims: self.policy_claims.clone(),
            remote: self.remote.clone(),
            revocations_checked: AtomicU64::new(self.revocations_checked.load(Ordering::Relaxed)),
        }
    }

    /// Checks the three timeouts at `now` (Unix seconds).
    pub fn check(&self, now: u64, t: &Timeouts) -> Result<(), Expiry> {
        let d = &self.data;
        if now >= d.created_at.saturating_add(t.absolute.as_secs()) {
            return Err(Expiry::Absolute);
        }
        if now >= d.renewed_at.saturating_add(t.rolling.as_secs()) {
            return Err(Expiry::Rolling);
        }
        if now >= self.last_seen().saturating_add(t.idle.as_secs()) {
            return Err(Expiry::Idle);
        }
        Ok(())
    }

    /// Records a request at `now`.
    pub fn touch(&self, now: u64) {
        // Read first: most requests land in the same second, and skipping the write keeps the
        // cache line shared between cores instead of bouncing it on every request.
        if self.last_seen.load(Ordering::Relaxed) < now {
            self.last_seen.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Whether it holds what it derives on first use (parsed claims, upstream headers, the
    /// claims as policies read them).
    pub fn has_derived(&self) -> bool {
        self.data.claims.parsed.get().is_some()
            || self.upstream_headers.get().is_some()
            || self.policy_claims.get().is_some()
    }

    /// Takes what it derived on first use, to be rebuilt on its next request: an idle session
    /// keeps only what it must. The caller drops the result (outside any lock).
    pub fn take_derived(&mut self) -> Derived {
        (
            self.data.claims.parsed.take(),
            self.upstream_headers.take(),
            self.policy_claims.take(),
        )
    }

    /// Last request seen (Unix seconds).
    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// The session is due for renewal (a fresh cookie, a new rolling window).
    pub fn needs_renewal(&self, now: u64, t: &Timeouts) -> bool {
        now.saturating_sub(self.data.renewed_at) >= t.renew_after()
    }

    /// The access token has expired (or will within `leeway`).
    pub fn access_token_expired(&self, now: u64, leeway: Duration) -> bool {
        self.data
            .expires_at
            .is_some_and(|exp| now.saturating_add(leeway.as_secs()) >= exp)
    }

    /// A claim by name, as header text (see [`crate::claims::to_text`]).
    pub fn claim_str(&self, name: &str) -> Option<String> {
        crate::claims::to_text(self.data.claims().get(name)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn data(created: u64) -> SessionData {
        SessionData {
            provider: "p".into(),
            sub: "alice".into(),
            claims: Claims::derive(
                "id",
                serde_json::json!({"email": "a@example.com", "groups": ["x", "y"]})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            id_token: Token::new("id"),
            access_token: Token::new("at"),
            expires_at: Some(created + 300),
            refresh_token: None,
            created_at: created,
            renewed_at: created,
        }
    }

    const T: Timeouts = Timeouts {
        absolute: Duration::from_secs(1000),
        rolling: Duration::from_secs(400),
        idle: Duration::from_secs(100),
    };

    #[test]
    fn timeouts_are_enforced() {
        let s = Session::new([0; 32], data(1_000), None);
        assert_eq!(s.check(1_050, &T), Ok(()));
        assert_eq!(s.check(1_100, &T), Err(Expiry::Idle));
        s.touch(1_090);
        assert_eq!(s.check(1_150, &T), Ok(()));
        let mut d = data(1_000);
        d.renewed_at = 1_000;
        let s = Session::new([0; 32], d, None);
        for t in (1_000..1_400).step_by(50) {
            s.touch(t);
        }
        assert_eq!(s.check(1_400, &T), Err(Expiry::Rolling));
        let mut d = data(1_000);
        d.renewed_at = 1_950;
        assert_eq!(
            Session::new([0; 32], d, None).check(2_000, &T),
            Err(Expiry::Absolute)
        );
    }

    #[test]
    fn renewal_and_token_expiry() {
        let s = Session::new([0; 32], data(1_000), None);
        assert_eq!(T.renew_after(), 25);
        assert!(!s.needs_renewal(1_024, &T));
        assert!(s.needs_renewal(1_025, &T));
        assert!(!s.access_token_expired(1_200, Duration::from_secs(30)));
        assert!(s.access_token_expired(1_280, Duration::from_secs(30)));
    }

    #[test]
    fn claims_format_for_headers() {
        let s = Session::new([0; 32], data(1), None);
        assert_eq!(s.claim_str("email").as_deref(), Some("a@example.com"));
        assert_eq!(s.claim_str("groups").as_deref(), Some("x,y"));
        assert_eq!(s.claim_str("missing"), None);
    }
}
