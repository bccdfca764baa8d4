//! The cookie store: the whole session sealed (XChaCha20-Poly1305, bound to its id and the
//! cookie name) into the cookie, so any instance with the secrets can open it. Recently seen
//! sessions stay in memory, so a request normally costs one lookup and one comparison, not a
//! decryption. Logged-out sessions are refused by their revocation marks (`Sessions`).

use super::registry::Registry;
use super::{
    Loaded, LocalStore, SaveError, SetCookies, TooLarge, carry, decode_sid, delete, encode_sid,
    presented_sid, timeouts,
};
use crate::config::SessionSettings;
use crate::crypto::{Sealer, random_bytes};
use crate::http::cookies::CookieAttrs;
use crate::session::chunks::{self, Read};
use crate::session::{Session, SessionData, Sid, Timeouts, codec};
use std::sync::Arc;

/// Sessions sealed into their cookies.
pub struct CookieStore {
    sealer: Sealer,
    name: String,
    timeouts: Timeouts,
    /// Opened cookies, so most requests need no decryption.
    cache: Registry,
}

impl CookieStore {
    /// A cookie store for `settings` (`cache_size` sessions kept opened).
    pub fn new(settings: &SessionSettings) -> CookieStore {
        CookieStore {
            sealer: Sealer::new(&settings.secrets, "oidc-gateway session"),
            name: settings.cookie_name.clone(),
            timeouts: timeouts(settings),
            cache: Registry::new(settings.cache_size),
        }
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

    /// The cached `session`, now also recognising the older cookie `value` (which has just
    /// been opened and belongs to it), unless the entry changed meanwhile.
    fn recognise(&self, session: Arc<Session>, value: String) -> Arc<Session> {
        let updated = Arc::new(session.recognising(value.into_boxed_str()));
        if self.cache.replace(&session, updated.clone()) {
            updated
        } else {
            session
        }
    }

    #[cfg(test)]
    fn seal_raw(&self, sid: &Sid, plain: &[u8]) -> String {
        let sid_b64 = encode_sid(sid);
        let sealed = self.sealer.seal(self.aad(&sid_b64).as_bytes(), plain);
        format!("{sid_b64}.{sealed}")
    }
}

impl LocalStore for CookieStore {
    fn load(&self, headers: &http::HeaderMap) -> Loaded {
        let presented = match chunks::read(headers, &self.name) {
            Read::Absent => return Loaded::Absent,
            Read::Invalid { cookies_present } => return Loaded::Invalid { cookies_present },
            Read::Value(p) => p,
        };
        let cookies_present = presented.cookies_present;
        let invalid = Loaded::Invalid { cookies_present };
        let Some(sid) = presented_sid(&presented) else {
            return invalid;
        };
        let cached = self.cache.get(&sid);
        // A plain comparison is fine: reaching it requires the secret session id.
        if let Some(session) = cached
            .as_ref()
            .filter(|s| s.has_cookie(|v| presented.equals(v)))
        {
            return Loaded::Found {
                session: session.clone(),
                cache_hit: true,
                cookies_present,
            };
        }
        let value = presented.joined();
        let Some(data) = self.open(&sid, &value) else {
            return invalid;
        };
        // An older cookie of a session renewed since (a request that was in flight): the newer
        // state in memory wins.
        if let Some(session) = cached.filter(|s| s.data.renewed_at >= data.renewed_at) {
            return Loaded::Found {
                session: self.recognise(session, value),
                cache_hit: false,
                cookies_present,
            };
        }
        let session = Arc::new(Session::new(sid, data, Some(value.into_boxed_str())));
        self.cache.insert(session.clone());
        Loaded::Found {
            session,
            cache_hit: false,
            cookies_present,
        }
    }

    fn save(
        &self,
        loaded: &Loaded,
        data: SessionData,
        attrs: &CookieAttrs,
    ) -> Result<(Arc<Session>, SetCookies), SaveError> {
        let sid = loaded.session().map_or_else(random_bytes::<32>, |s| s.sid);
        let sid_b64 = encode_sid(&sid);
        let plain = codec::encode(&data).ok_or(TooLarge(0))?;
        let sealed = self.sealer.seal(self.aad(&sid_b64).as_bytes(), &plain);
        let value = format!("{sid_b64}.{sealed}");
        let cookies = carry(&self.name, &value, loaded.cookies_present(), attrs)?;
        let session = Arc::new(Session::new(sid, data, Some(value.into_boxed_str())));
        self.cache.insert(session.clone());
        Ok((session, cookies))
    }

    fn clear(&self, loaded: &Loaded, attrs: &CookieAttrs) -> SetCookies {
        if let Some(s) = loaded.session() {
            self.cache.remove(&s.sid);
        }
        delete(&self.name, loaded, attrs)
    }

    fn forget(&self, sid: &Sid) {
        self.cache.remove(sid);
    }

    fn sweep(&self, now: u64) {
        self.cache.sweep(now, &self.timeouts);
    }

    fn len(&self) -> usize {
        self.cache.len()
    }

    fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    fn cookie_name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, data, headers, settings};
    use super::*;
    use crate::config::SessionStoreKind;

    fn store() -> CookieStore {
        CookieStore::new(&settings(SessionStoreKind::Cookie, 100))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn conformance() {
        conformance::run(&|capacity| {
            conformance::sessions(
                super::super::Store::Local(Box::new(CookieStore::new(&settings(
                    SessionStoreKind::Cookie,
                    capacity,
                )))),
                None,
            )
        })
        .await;
    }

    #[test]
    fn a_restarted_process_opens_the_cookie_itself() {
        let s = store();
        let (session, cookies) = s
            .save(&Loaded::Absent, data(), &CookieAttrs::default())
            .unwrap();
        let restarted = store();
        match restarted.load(&headers(&cookies)) {
            Loaded::Found {
                session: found,
                cache_hit,
                ..
            } => {
                assert!(!cache_hit);
                assert_eq!(found.data, session.data);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cookie_sealed_before_compression_still_opens() {
        let s = store();
        let json = serde_json::to_vec(&data()).unwrap();
        let value = s.seal_raw(&random_bytes::<32>(), &json);
        let pairs = chunks::split("s", &value).unwrap();
        let h = conformance::headers_of_pairs(&pairs);
        match s.load(&h) {
            Loaded::Found { session, .. } => assert_eq!(session.data, data()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_key_opens_nothing() {
        let (_, cookies) = store()
            .save(&Loaded::Absent, data(), &CookieAttrs::default())
            .unwrap();
        let mut other = settings(SessionStoreKind::Cookie, 100);
        other.secrets = vec![crate::config::Secret::new(
            "another-secret-another-secret-another!",
        )];
        assert!(matches!(
            CookieStore::new(&other).load(&headers(&cookies)),
            Loaded::Invalid { .. }
        ));
    }

    #[tokio::test]
    async fn newer_state_wins_over_old_cookies_which_are_recognised_from_memory() {
        let s = store();
        let attrs = CookieAttrs::default();
        let (first, old) = s.save(&Loaded::Absent, data(), &attrs).unwrap();
        let loaded = s.load(&headers(&old));
        let mut d = first.data.clone();
        d.access_token = "new".into();
        d.renewed_at += 10;
        let (second, new) = s.save(&loaded, d, &attrs).unwrap();
        assert_eq!(second.sid, first.sid);
        assert_ne!(old, new);
        // The old cookie is opened once, then recognised from memory; the new one still is.
        for (cookies, hit) in [(&old, false), (&old, true), (&new, true), (&old, true)] {
            match s.load(&headers(cookies)) {
                Loaded::Found {
                    session, cache_hit, ..
                } => {
                    assert_eq!(session.data.access_token.text(), "new");
                    assert_eq!(cache_hit, hit);
                }
                other => panic!("{other:?}"),
            }
        }
        // Logging out refuses the old cookie as well, though it still opens.
        let sessions = conformance::sessions(super::super::Store::Local(Box::new(s)), None);
        let loaded = sessions.load(&headers(&old)).await;
        sessions.clear(&loaded, &attrs).await;
        for cookies in [&old, &new] {
            assert!(matches!(
                sessions.load(&headers(cookies)).await,
                Loaded::Invalid { .. }
            ));
        }
    }

    #[test]
    fn an_entry_recognises_only_a_few_older_cookies() {
        let s = store();
        let attrs = CookieAttrs::default();
        let (session, first) = s.save(&Loaded::Absent, data(), &attrs).unwrap();
        let mut old = vec![first];
        for i in 1..=5 {
            let loaded = s.load(&headers(old.last().unwrap()));
            let mut d = session.data.clone();
            d.renewed_at += i;
            old.push(s.save(&loaded, d, &attrs).unwrap().1);
        }
        let current = old.pop().unwrap();
        for cookies in &old {
            assert!(matches!(s.load(&headers(cookies)), Loaded::Found { .. }));
        }
        let hit = |cookies| match s.load(&headers(cookies)) {
            Loaded::Found { cache_hit, .. } => cache_hit,
            other => panic!("{other:?}"),
        };
        assert!(hit(&current));
        // The three most recently seen older cookies are kept; the earliest two were dropped.
        assert!(old[2..].iter().all(&hit));
        assert!(!hit(&old[0]));
    }
}
