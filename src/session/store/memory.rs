//! The memory store: sessions kept in this process, the cookie holding only the session id.
//! Bounded by `memory_max_sessions` (least recently used out first); sessions end with the
//! process. Tokens, most of a session's size, are kept squeezed (see `token.rs`).

use super::registry::Registry;
use super::{Loaded, LocalStore, SID_LEN, SaveError, SetCookies, carry, delete, encode_sid};
use super::{presented_sid, timeouts};
use crate::config::SessionSettings;
use crate::crypto::random_bytes;
use crate::http::cookies::CookieAttrs;
use crate::session::chunks::{self, Read};
use crate::session::{Session, SessionData, Sid, Timeouts, Token};
use std::sync::Arc;

/// Sessions in memory.
pub struct MemoryStore {
    name: String,
    timeouts: Timeouts,
    sessions: Registry,
}

impl MemoryStore {
    /// A memory store for `settings`, holding at most `max_sessions`.
    pub fn new(settings: &SessionSettings, max_sessions: usize) -> MemoryStore {
        MemoryStore {
            name: settings.cookie_name.clone(),
            timeouts: timeouts(settings),
            sessions: Registry::new(max_sessions),
        }
    }
}

/// The first session's tokens make the dictionary that squeezes everyone's.
fn squeeze_tokens(data: &mut SessionData) {
    Token::prime(&[&data.id_token, &data.access_token]);
    data.id_token = data.id_token.squeezed();
    data.access_token = data.access_token.squeezed();
    data.refresh_token = data.refresh_token.as_ref().map(Token::squeezed);
}

impl LocalStore for MemoryStore {
    fn sessions_of(&self, sub: &str) -> Option<Vec<Arc<Session>>> {
        Some(self.sessions.matching(|s| &*s.data.sub == sub))
    }

    fn load(&self, headers: &http::HeaderMap) -> Loaded {
        let presented = match chunks::read(headers, &self.name) {
            Read::Absent => return Loaded::Absent,
            Read::Invalid { cookies_present } => return Loaded::Invalid { cookies_present },
            Read::Value(p) => p,
        };
        let cookies_present = presented.cookies_present;
        match presented_sid(&presented).and_then(|sid| self.sessions.get(&sid)) {
            Some(session) if presented.len() == SID_LEN => Loaded::Found {
                session,
                cache_hit: true,
                cookies_present,
            },
            _ => Loaded::Invalid { cookies_present },
        }
    }

    fn save(
        &self,
        loaded: &Loaded,
        mut data: SessionData,
        attrs: &CookieAttrs,
    ) -> Result<(Arc<Session>, SetCookies), SaveError> {
        squeeze_tokens(&mut data);
        if let Some(found) = loaded.session() {
            // An update keeps the id, so the client's cookie stays as it is; and only a session
            // still held is updated, so a refresh finishing after logout cannot bring it back.
            let session = Arc::new(Session::new(found.sid, data, None));
            return if self.sessions.replace_held(session.clone()) {
                Ok((session, Vec::new()))
            } else {
                Err(SaveError::Gone)
            };
        }
        let sid = random_bytes::<32>();
        let cookies = carry(
            &self.name,
            &encode_sid(&sid),
            loaded.cookies_present(),
            attrs,
        )?;
        let session = Arc::new(Session::new(sid, data, None));
        self.sessions.insert(session.clone());
        Ok((session, cookies))
    }

    fn clear(&self, loaded: &Loaded, attrs: &CookieAttrs) -> SetCookies {
        if let Some(s) = loaded.session() {
            self.sessions.remove(&s.sid);
        }
        delete(&self.name, loaded, attrs)
    }

    fn forget(&self, sid: &Sid) {
        self.sessions.remove(sid);
    }

    fn sweep(&self, now: u64) {
        self.sessions.sweep(now, &self.timeouts);
    }

    fn len(&self) -> usize {
        self.sessions.len()
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
    use super::super::conformance::{self, attrs, data, headers, settings};
    use super::super::registry::SLIM_AFTER_IDLE;
    use super::*;
    use crate::config::SessionStoreKind;
    use base64::Engine;

    fn store(max_sessions: usize) -> MemoryStore {
        MemoryStore::new(
            &settings(SessionStoreKind::Memory { max_sessions }, 100),
            max_sessions,
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn conformance() {
        conformance::run(&|capacity| {
            conformance::sessions(super::super::Store::Local(Box::new(store(capacity))), None)
        })
        .await;
    }

    #[test]
    fn the_cookie_holds_only_the_id_and_an_update_sets_none() {
        let s = store(10);
        let (_, cookies) = s.save(&Loaded::Absent, data(), &attrs()).unwrap();
        assert_eq!(cookies.len(), 1);
        let value = cookies[0].to_str().unwrap();
        let id = value.split(';').next().unwrap().split_once('=').unwrap().1;
        assert_eq!(id.len(), SID_LEN);
        let loaded = s.load(&headers(&cookies));
        let (_, update) = s.save(&loaded, data(), &attrs()).unwrap();
        assert!(update.is_empty());
    }

    /// A JWS shaped like the development IdP's ID token, with `n` making it unique.
    fn jws(n: u32) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
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
    fn squeezed_tokens_read_back_unchanged() {
        let s = store(10);
        for n in 0..3 {
            let (id, at) = (jws(n), jws(n + 100));
            let d = SessionData {
                id_token: id.as_str().into(),
                access_token: at.as_str().into(),
                ..data()
            };
            let (saved, cookies) = s.save(&Loaded::Absent, d, &attrs()).unwrap();
            let Loaded::Found { session, .. } = s.load(&headers(&cookies)) else {
                panic!("session not found");
            };
            assert!(Arc::ptr_eq(&session, &saved));
            assert_eq!(session.data.id_token.text(), id);
            assert_eq!(session.data.access_token.text(), at);
            assert_eq!(session.data.refresh_token.as_ref().unwrap().text(), "rt");
        }
    }

    #[test]
    fn sweeping_slims_sessions_idle_for_a_minute() {
        let s = store(10);
        let derive = |s: &Session| {
            let _ = s.data.claims();
            s.upstream_headers.get_or_init(Default::default);
        };
        let now = crate::clock::now();
        let save = || s.save(&Loaded::Absent, data(), &attrs()).unwrap();
        let (idle, idle_cookies) = save();
        let (held, _) = save();
        let (active, active_cookies) = save();
        for x in [&idle, &held, &active] {
            derive(x);
        }
        active.touch(now + SLIM_AFTER_IDLE);
        drop((idle, active));
        s.sweep(now + SLIM_AFTER_IDLE);
        let found = |cookies: &SetCookies| match s.load(&headers(cookies)) {
            Loaded::Found { session, .. } => session,
            other => panic!("{other:?}"),
        };
        assert!(!found(&idle_cookies).has_derived(), "idle: slimmed");
        assert!(found(&active_cookies).has_derived(), "active: kept");
        assert!(held.has_derived(), "held by a request: left alone");
        // The slimmed session still works and derives again on its next request.
        let again = found(&idle_cookies);
        derive(&again);
        assert!(again.has_derived());
    }
}
