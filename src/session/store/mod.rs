//! Where sessions live, behind one interface in the spirit of oauth2-proxy's
//! `SessionStore{Save, Load, Clear}`: `load` finds the request's session, `save` stores one and
//! `clear` ends one, and each hands back the `Set-Cookie` values to send — the store decides
//! which cookies to write, callers only append them.
//!
//! - [`CookieStore`] (`cookie.rs`): the session sealed into the cookie; stateless.
//! - [`MemoryStore`] (`memory.rs`): the session in this process; the cookie holds its id.
//! - [`RedisStore`] (`redis/`): the session in Redis, shared by a fleet; the cookie holds a
//!   sealed id and key.
//!
//! [`Sessions`] is the one interface the gateway uses. Every store keeps sessions in memory
//! (a bounded [`registry::Registry`], or the Redis store's local cache), so the hot path is one
//! lookup and no call to anything. `conformance.rs` holds the tests every store must pass.

mod cookie;
mod memory;
mod redis;
pub mod registry;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

pub use cookie::CookieStore;
pub use memory::MemoryStore;
pub use redis::RedisStore;

use super::chunks;
use super::listing::SessionInfo;
use super::revocations::{Mark, Revocations, Subject};
use super::{Session, SessionData, Sid, Timeouts};
use crate::clock;
use crate::config::{SessionSettings, SessionStoreKind};
use crate::crypto::Names;
use crate::fleet::{Fleet, Invalidation};
use crate::http::cookies::{self, CookieAttrs};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use std::path::Path;
use std::sync::Arc;

/// `Set-Cookie` values to send with the response.
pub type SetCookies = Vec<http::HeaderValue>;

/// Length of a base64url session id.
const SID_LEN: usize = 43;

/// What a request carries, as a store read it.
#[derive(Debug, Clone)]
pub enum Loaded {
    /// No session cookie.
    Absent,
    /// A session cookie that does not open: tampered, truncated, oversized, revoked or unknown.
    Invalid {
        /// Session cookie chunks the client holds (to delete).
        cookies_present: usize,
    },
    /// The store cannot be asked right now (Redis down): neither a session nor a reason to
    /// clear the client's cookie.
    Unavailable {
        /// Session cookie chunks the client holds.
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

impl Loaded {
    /// Session cookie chunks the client holds.
    pub fn cookies_present(&self) -> usize {
        match self {
            Loaded::Absent => 0,
            Loaded::Invalid { cookies_present }
            | Loaded::Unavailable { cookies_present }
            | Loaded::Found {
                cookies_present, ..
            } => *cookies_present,
        }
    }

    /// The session, if one was found.
    pub fn session(&self) -> Option<&Arc<Session>> {
        match self {
            Loaded::Found { session, .. } => Some(session),
            _ => None,
        }
    }

    /// The same request as if it carried no session: what a login saves to, so the new session
    /// gets a fresh id (never one the browser brought) and its cookies replace every chunk the
    /// client holds.
    pub fn without_session(&self) -> Loaded {
        match self.cookies_present() {
            0 => Loaded::Absent,
            n => Loaded::Invalid { cookies_present: n },
        }
    }
}

/// A session could not be stored in a cookie.
#[derive(Debug, thiserror::Error)]
#[error(
    "the session is too large for cookies ({0} bytes); use store = \"memory\" or request fewer claims"
)]
pub struct TooLarge(pub usize);

/// Why a session was not saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Too large for cookies.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// It ended meanwhile (logged out elsewhere): it must not come back.
    #[error("the session ended meanwhile")]
    Gone,
    /// Another instance changed it meanwhile; the other change stands.
    #[error("the session was changed meanwhile")]
    Conflict,
    /// The store cannot be asked right now.
    #[error("the session store is unavailable")]
    Unavailable,
}

/// A store answered from this process alone (cookie, memory): synchronous.
pub trait LocalStore: Send + Sync {
    /// Finds the request's session (timeouts are the caller's to check).
    fn load(&self, headers: &http::HeaderMap) -> Loaded;

    /// Stores `data` as the request's session: the found session updated under its id
    /// (renewal, refresh), or a new session under a fresh id. Returns the session and the
    /// cookies that carry it (none when the client's cookie stays valid).
    fn save(
        &self,
        loaded: &Loaded,
        data: SessionData,
        attrs: &CookieAttrs,
    ) -> Result<(Arc<Session>, SetCookies), SaveError>;

    /// Ends the request's session, if it has one, so its cookie is refused from now on; returns
    /// the cookies that delete it from the client.
    fn clear(&self, loaded: &Loaded, attrs: &CookieAttrs) -> SetCookies;

    /// Drops the session `sid` from memory (it was revoked elsewhere).
    fn forget(&self, sid: &Sid);

    /// Drops expired sessions (run periodically).
    fn sweep(&self, now: u64);

    /// Sessions held in memory.
    fn len(&self) -> usize;

    /// Whether no session is held in memory.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured timeouts.
    fn timeouts(&self) -> &Timeouts;

    /// The session cookie's name.
    fn cookie_name(&self) -> &str;

    /// Whether `cookie` is (a chunk of) the session cookie.
    fn is_session_cookie(&self, cookie: &str) -> bool {
        chunks::is_session_cookie(cookie, self.cookie_name())
    }

    /// The sessions held for `sub` (at any provider); `None` when the store cannot list them
    /// (the cookie store: sessions live in browsers).
    fn sessions_of(&self, _sub: &str) -> Option<Vec<Arc<Session>>> {
        None
    }
}

/// Where the sessions themselves are.
pub enum Store {
    /// The cookie or memory store.
    Local(Box<dyn LocalStore>),
    /// The Redis store (boxed: it is much larger than a pointer).
    Redis(Box<RedisStore>),
}

/// Session storage, as `[session]` asks for it, with the revocations that refuse ended
/// sessions whatever the store: the one interface the gateway uses.
pub struct Sessions {
    store: Store,
    revocations: Arc<Revocations>,
}

impl Sessions {
    /// The store `[session]` asks for (`fleet`: the `[redis]` connection, when configured;
    /// `state_dir`: where revocations are kept without one).
    pub fn new(
        settings: &SessionSettings,
        fleet: Option<&Arc<Fleet>>,
        state_dir: Option<&Path>,
    ) -> Result<Sessions, String> {
        let store = match settings.store {
            SessionStoreKind::Cookie => Store::Local(Box::new(CookieStore::new(settings))),
            SessionStoreKind::Memory { max_sessions } => {
                Store::Local(Box::new(MemoryStore::new(settings, max_sessions)))
            }
            SessionStoreKind::Redis => {
                let fleet = fleet.ok_or("store = \"redis\" needs a [redis] section")?;
                Store::Redis(Box::new(RedisStore::new(settings, fleet.clone())))
            }
        };
        let revocations =
            Revocations::new(Names::new(&settings.secrets), fleet.cloned(), state_dir)?;
        Ok(Sessions::with(store, Arc::new(revocations)))
    }

    /// `store`, refusing what `revocations` ended.
    pub fn with(store: Store, revocations: Arc<Revocations>) -> Sessions {
        Sessions { store, revocations }
    }

    /// The revocations.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// Finds the request's session (timeouts are the caller's to check).
    pub async fn load(&self, headers: &http::HeaderMap) -> Loaded {
        let loaded = match &self.store {
            Store::Local(s) => s.load(headers),
            Store::Redis(s) => s.load(headers).await,
        };
        match &loaded {
            Loaded::Found { session, .. } if self.revocations.is_revoked(session) => {
                self.forget(session);
                loaded.without_session()
            }
            _ => loaded,
        }
    }

    /// Drops `session` from memory (it was revoked elsewhere).
    fn forget(&self, session: &Session) {
        match &self.store {
            Store::Local(s) => s.forget(&session.sid),
            Store::Redis(s) => s.forget(session),
        }
    }

    /// Stores `data` as the request's session: the found session updated under its id
    /// (renewal, refresh), or a new session under a fresh id. Returns the session and the
    /// cookies that carry it (none when the client's cookie stays valid).
    pub async fn save(
        &self,
        loaded: &Loaded,
        data: SessionData,
        attrs: &CookieAttrs,
    ) -> Result<(Arc<Session>, SetCookies), SaveError> {
        if let Some(found) = loaded.session()
            && self.revocations.ends(&found.sid, &found.data)
        {
            // Logged out meanwhile (a refresh finishing after logout): it stays ended.
            self.forget(found);
            return Err(SaveError::Gone);
        }
        match &self.store {
            Store::Local(s) => s.save(loaded, data, attrs),
            Store::Redis(s) => Box::pin(s.save(loaded, data, attrs)).await,
        }
    }

    /// A version of `loaded`'s session newer than the one loaded, with a valid access token,
    /// when another instance saved one (a refresh elsewhere), waiting up to `wait` for it. Only
    /// the Redis store can know; the others answer `None`.
    pub async fn newer_version(
        &self,
        loaded: &Loaded,
        wait: std::time::Duration,
    ) -> Option<(Arc<Session>, SetCookies)> {
        match &self.store {
            Store::Local(_) => None,
            Store::Redis(s) => Box::pin(s.newer_version(loaded, wait)).await,
        }
    }

    /// Ends the request's session, if it has one, everywhere it is known: a revocation mark
    /// first (so nothing can bring it back), then the session itself. Returns the cookies that
    /// delete it from the client.
    pub async fn clear(&self, loaded: &Loaded, attrs: &CookieAttrs) -> SetCookies {
        if let Some(s) = loaded.session() {
            let until = s
                .data
                .created_at
                .saturating_add(self.timeouts().absolute.as_secs());
            if let Err(e) = Box::pin(self.revocations.revoke(Subject::Session(&s.sid), until)).await
            {
                tracing::warn!("the logout is only known to this instance: {e}");
            }
        }
        Box::pin(self.discard(loaded, attrs)).await
    }

    /// Deletes the request's expired session without a revocation mark (its own timestamps
    /// refuse it everywhere); returns the cookies that delete it from the client.
    pub async fn discard(&self, loaded: &Loaded, attrs: &CookieAttrs) -> SetCookies {
        match &self.store {
            Store::Local(s) => s.clear(loaded, attrs),
            Store::Redis(s) => Box::pin(s.clear(loaded, attrs)).await,
        }
    }

    /// Ends every session `subject` names (back-channel logout), on every instance: the mark,
    /// then the sessions the Redis store indexed under it. An error means it is not shared.
    pub async fn revoke(&self, subject: Subject<'_>) -> Result<(), String> {
        let until = clock::now().saturating_add(self.timeouts().absolute.as_secs());
        self.revocations.revoke(subject, until).await?;
        if let Store::Redis(s) = &self.store {
            Box::pin(s.delete_indexed(subject)).await;
        }
        Ok(())
    }

    /// The live sessions of `sub` at each of `providers`; `None` when the store cannot list
    /// them (the cookie store).
    pub async fn list(
        &self,
        providers: &[&str],
        sub: &str,
    ) -> Result<Option<Vec<SessionInfo>>, String> {
        let now = clock::now();
        let t = self.timeouts();
        let mut out = Vec::new();
        match &self.store {
            Store::Local(s) => {
                // One walk over the sessions held, whatever the number of providers.
                let Some(found) = s.sessions_of(sub) else {
                    return Ok(None);
                };
                out.extend(
                    found
                        .iter()
                        .filter(|s| {
                            providers.contains(&&*s.data.provider)
                                && s.check(now, t).is_ok()
                                && !self.revocations.ends(&s.sid, &s.data)
                        })
                        .map(|s| {
                            let id = self.revocations.session_name(&s.sid);
                            SessionInfo::of(&id, &s.data, s.last_seen(), t)
                        }),
                );
            }
            Store::Redis(s) => {
                for p in providers {
                    let found = Box::pin(s.list(Subject::User(p, sub))).await;
                    let found = found.map_err(|e| e.to_string())?;
                    out.extend(found.into_iter().filter(|i| i.expires > now));
                }
            }
        }
        out.sort_by_key(|i| i.created);
        Ok(Some(out))
    }

    /// Ends the one session named `id` (from [`list`](Self::list)) on every instance: a mark,
    /// then the session itself where the Redis store keeps it.
    pub async fn revoke_named(&self, id: [u8; 32]) -> Result<(), String> {
        let until = clock::now().saturating_add(self.timeouts().absolute.as_secs());
        self.revocations.revoke_named(id, until).await?;
        if let Store::Redis(s) = &self.store {
            Box::pin(s.delete_named(id)).await;
        }
        Ok(())
    }

    /// Drops expired sessions and marks from memory (run periodically).
    pub fn sweep(&self, now: u64) {
        match &self.store {
            Store::Local(s) => s.sweep(now),
            Store::Redis(s) => s.sweep(now),
        }
        self.revocations.sweep(now);
    }

    /// Sessions held in memory.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Local(s) => s.len(),
            Store::Redis(s) => s.len(),
        }
    }

    /// Whether no session is held in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        match &self.store {
            Store::Local(s) => s.timeouts(),
            Store::Redis(s) => s.timeouts(),
        }
    }

    /// What to do with the fleet's messages: apply marks made elsewhere, drop sessions other
    /// instances changed from the Redis store's cache, and after a gap re-read every mark.
    pub fn invalidator(&self) -> crate::fleet::pubsub::Handler {
        let revocations = self.revocations.clone();
        let local = match &self.store {
            Store::Redis(s) => Some(s.invalidator()),
            Store::Local(_) => None,
        };
        Arc::new(move |inv| {
            match &inv {
                Invalidation::Revoked { tag, at, until } => revocations.apply(
                    *tag,
                    Mark {
                        at: *at,
                        until: *until,
                    },
                ),
                Invalidation::All => {
                    let r = revocations.clone();
                    tokio::spawn(async move {
                        if let Err(e) = r.load_shared().await {
                            tracing::warn!("cannot read revocations from Redis: {e}");
                        }
                    });
                }
                Invalidation::Session(_) => {}
            }
            if let Some(local) = &local {
                local(inv);
            }
        })
    }

    /// Whether `cookie` is (a chunk of) the session cookie.
    pub fn is_session_cookie(&self, cookie: &str) -> bool {
        let name = match &self.store {
            Store::Local(s) => s.cookie_name(),
            Store::Redis(s) => s.cookie_name(),
        };
        chunks::is_session_cookie(cookie, name)
    }
}

/// The timeouts of `[session]`.
fn timeouts(settings: &SessionSettings) -> Timeouts {
    Timeouts {
        absolute: settings.absolute_timeout,
        rolling: settings.rolling_timeout,
        idle: settings.idling_timeout,
    }
}

/// `Set-Cookie` values carrying `value` under `name` (split into chunks), deleting chunks the
/// client holds beyond them.
fn carry(
    name: &str,
    value: &str,
    cookies_present: usize,
    attrs: &CookieAttrs,
) -> Result<SetCookies, TooLarge> {
    let pairs = chunks::split(name, value).ok_or(TooLarge(value.len()))?;
    let mut out: SetCookies = pairs
        .iter()
        .map(|(n, v)| cookies::set(n, v, attrs, None))
        .collect();
    out.extend(expire_chunks(name, pairs.len(), cookies_present, attrs));
    Ok(out)
}

/// `Set-Cookie` values deleting the session cookie's chunks from index `from` on.
fn expire_chunks(
    name: &str,
    from: usize,
    cookies_present: usize,
    attrs: &CookieAttrs,
) -> SetCookies {
    (from..cookies_present)
        .map(|i| {
            let chunk = if i == 0 {
                name.to_owned()
            } else {
                format!("{name}.{i}")
            };
            cookies::expire(&chunk, attrs)
        })
        .collect()
}

/// `Set-Cookie` values deleting every chunk the client holds (at least the first).
fn delete(name: &str, loaded: &Loaded, attrs: &CookieAttrs) -> SetCookies {
    expire_chunks(name, 0, loaded.cookies_present().max(1), attrs)
}

fn encode_sid(sid: &Sid) -> String {
    B64.encode(sid)
}

fn decode_sid(s: &str) -> Option<Sid> {
    let mut out = [0u8; 32];
    match B64.decode_slice(s, &mut out) {
        Ok(32) => Some(out),
        _ => None,
    }
}

/// The session id a presented cookie value starts with, if it is well formed.
fn presented_sid(p: &chunks::Presented<'_>) -> Option<Sid> {
    p.parts()
        .first()
        .and_then(|first| first.get(..SID_LEN))
        .and_then(decode_sid)
}
