//! The tests every session store must pass: round trip, timeouts, id rotation, logout,
//! tampering, eviction and concurrent use. Each store's own test module calls [`run`] with a
//! constructor (the Redis store against a real `redis-server`).

use super::{Loaded, Sessions, SetCookies};
use crate::config::{SameSite, SessionSettings, SessionStoreKind};
use crate::http::cookies::CookieAttrs;
use crate::session::{Claims, SessionData};
use std::time::Duration;

/// Makes a store that keeps at most this many sessions in memory.
pub type MakeStore<'a> = &'a dyn Fn(usize) -> Sessions;

/// Runs every conformance test against stores made by `make`.
pub async fn run(make: MakeStore<'_>) {
    round_trip(make).await;
    timeouts(make).await;
    Box::pin(ids_rotate_at_login_and_stay_on_update(make)).await;
    Box::pin(logout_refuses_the_cookie(make)).await;
    tampered_cookies_are_invalid(make).await;
    eviction_keeps_the_recently_used(make).await;
    concurrent_use(make).await;
}

/// `store` behind the one interface, with revocations of its own (`fleet`: shared through
/// Redis).
pub fn sessions(
    store: super::Store,
    fleet: Option<std::sync::Arc<crate::fleet::Fleet>>,
) -> Sessions {
    let names = crate::crypto::Names::new(&settings(SessionStoreKind::Cookie, 0).secrets);
    let revocations = crate::session::revocations::Revocations::new(names, fleet, None)
        .expect("revocations without a file");
    Sessions::with(store, std::sync::Arc::new(revocations))
}

/// `[session]` settings for tests.
pub fn settings(store: SessionStoreKind, cache_size: usize) -> SessionSettings {
    SessionSettings {
        store,
        secrets: vec![crate::config::Secret::new(
            "0123456789abcdef0123456789abcdef-test",
        )],
        cookie_name: "s".into(),
        cookie_path: "/".into(),
        cookie_domain: None,
        same_site: SameSite::Lax,
        rolling_timeout: Duration::from_secs(3600),
        idling_timeout: Duration::from_secs(900),
        absolute_timeout: Duration::from_secs(86400),
        cache_size,
        login_timeout: Duration::from_secs(600),
        max_cookie_header_bytes: 8192,
        max_login_cookies: 5,
        userinfo_path: "/oauth2/userinfo".into(),
    }
}

/// Cookie attributes for tests.
pub fn attrs() -> CookieAttrs {
    CookieAttrs::default()
}

/// A session as a login leaves it, now.
pub fn data() -> SessionData {
    let now = crate::clock::now();
    SessionData {
        provider: "p".into(),
        sub: "alice".into(),
        claims: Claims::default(),
        id_token: "id".into(),
        access_token: "at".into(),
        expires_at: None,
        refresh_token: Some("rt".into()),
        created_at: now,
        renewed_at: now,
    }
}

/// The `Cookie` header a browser sends after receiving `set` (deletions left out).
pub fn headers(set: &SetCookies) -> http::HeaderMap {
    let pairs: Vec<(String, String)> = set
        .iter()
        .filter_map(|v| {
            let text = v.to_str().ok()?;
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=')?;
            (!attrs.contains("Max-Age=0")).then(|| (name.to_owned(), value.to_owned()))
        })
        .collect();
    headers_of_pairs(&pairs)
}

/// A `Cookie` header of (name, value) pairs.
pub fn headers_of_pairs(pairs: &[(String, String)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    let v: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
    h.insert(http::header::COOKIE, v.join("; ").parse().unwrap());
    h
}

async fn found(
    store: &Sessions,
    set: &SetCookies,
) -> Option<(std::sync::Arc<crate::session::Session>, bool)> {
    match store.load(&headers(set)).await {
        Loaded::Found {
            session, cache_hit, ..
        } => Some((session, cache_hit)),
        _ => None,
    }
}

async fn save_new(store: &Sessions) -> (std::sync::Arc<crate::session::Session>, SetCookies) {
    store
        .save(&Loaded::Absent, data(), &attrs())
        .await
        .expect("a new session is saved")
}

async fn round_trip(make: MakeStore<'_>) {
    let store = make(100);
    assert!(matches!(
        store.load(&http::HeaderMap::new()).await,
        Loaded::Absent
    ));
    let (saved, cookies) = save_new(&store).await;
    assert!(!cookies.is_empty(), "a new session sets a cookie");
    let (session, _) = found(&store, &cookies)
        .await
        .expect("the session loads back");
    assert_eq!(session.sid, saved.sid);
    assert_eq!(session.data, data());
    assert_eq!(store.len(), 1);
    assert!(
        cookies
            .iter()
            .all(|c| c.to_str().unwrap().contains("HttpOnly")),
        "{cookies:?}"
    );
}

async fn timeouts(make: MakeStore<'_>) {
    let store = make(100);
    let t = *store.timeouts();
    let (_, cookies) = save_new(&store).await;
    let (session, _) = found(&store, &cookies).await.unwrap();
    let now = crate::clock::now();
    assert!(session.check(now, &t).is_ok());
    assert!(session.check(now + t.idle.as_secs(), &t).is_err(), "idle");
    assert!(
        session.check(now + t.absolute.as_secs(), &t).is_err(),
        "absolute"
    );
    // Expired sessions leave memory at the next sweep.
    store.sweep(now + t.absolute.as_secs());
    assert_eq!(store.len(), 0);
}

async fn ids_rotate_at_login_and_stay_on_update(make: MakeStore<'_>) {
    let store = make(100);
    let (first, cookies) = save_new(&store).await;
    let loaded = store.load(&headers(&cookies)).await;
    // Renewal or refresh: the same session, new contents.
    let mut d = data();
    d.access_token = "refreshed".into();
    d.renewed_at += 1;
    let (updated, update_cookies) = store.save(&loaded, d, &attrs()).await.unwrap();
    assert_eq!(updated.sid, first.sid);
    let current = if update_cookies.is_empty() {
        cookies.clone()
    } else {
        update_cookies
    };
    let (session, _) = found(&store, &current).await.unwrap();
    assert_eq!(session.data.access_token.text(), "refreshed");
    // A login over an existing session: a fresh id, never the one the browser brought.
    let loaded = store.load(&headers(&current)).await;
    store.clear(&loaded, &attrs()).await;
    let (fresh, fresh_cookies) = store
        .save(&loaded.without_session(), data(), &attrs())
        .await
        .unwrap();
    assert_ne!(fresh.sid, first.sid);
    assert!(found(&store, &fresh_cookies).await.is_some());
    assert!(
        found(&store, &current).await.is_none(),
        "the old session is gone"
    );
}

async fn logout_refuses_the_cookie(make: MakeStore<'_>) {
    let store = make(100);
    let (_, cookies) = save_new(&store).await;
    let loaded = store.load(&headers(&cookies)).await;
    let deleted = store.clear(&loaded, &attrs()).await;
    assert!(
        deleted.iter().any(|c| {
            let c = c.to_str().unwrap();
            c.starts_with("s=;") && c.contains("Max-Age=0")
        }),
        "{deleted:?}"
    );
    assert!(matches!(
        store.load(&headers(&cookies)).await,
        Loaded::Invalid { .. }
    ));
    // An update of the logged-out session (a refresh in flight) must not bring it back.
    let mut d = data();
    d.renewed_at += 1;
    let _ = store.save(&loaded, d, &attrs()).await;
    assert!(matches!(
        store.load(&headers(&cookies)).await,
        Loaded::Invalid { .. }
    ));
    // Clearing a request without a session still deletes the cookie.
    assert!(!store.clear(&Loaded::Absent, &attrs()).await.is_empty());
}

async fn tampered_cookies_are_invalid(make: MakeStore<'_>) {
    let store = make(100);
    let (_, cookies) = save_new(&store).await;
    let value = cookies[0]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    let mid = value.len() / 2;
    let flipped = if &value[mid..=mid] == "A" { "B" } else { "A" };
    let tampered = format!("{}{}{}", &value[..mid], flipped, &value[mid + 1..]);
    let foreign = crate::session::store::encode_sid(&crate::crypto::random_bytes::<32>());
    for bad in [
        tampered,
        value[..value.len() - 10].to_owned(),
        format!("{value}x"),
        "x".repeat(50),
        foreign,
    ] {
        let h = headers_of_pairs(&[("s".into(), bad.clone())]);
        assert!(
            matches!(store.load(&h).await, Loaded::Invalid { .. }),
            "{bad} opened"
        );
    }
}

async fn eviction_keeps_the_recently_used(make: MakeStore<'_>) {
    let store = make(256);
    let mut idle = Vec::new();
    for _ in 0..128 {
        idle.push(save_new(&store).await.1);
    }
    let (_, active) = save_new(&store).await;
    // One account logging in ten times the capacity while another user keeps browsing.
    for i in 0..2560 {
        save_new(&store).await;
        if i % 16 == 0 {
            assert!(
                found(&store, &active).await.is_some_and(|(_, hit)| hit),
                "the active session was evicted after {i} logins"
            );
        }
    }
    assert!(found(&store, &active).await.is_some_and(|(_, hit)| hit));
    assert_eq!(store.len(), 256);
    for c in &idle {
        assert!(
            !found(&store, c).await.is_some_and(|(_, hit)| hit),
            "idle sessions go first"
        );
    }
}

async fn concurrent_use(make: MakeStore<'_>) {
    let store = std::sync::Arc::new(make(10_000));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    let (saved, cookies) = save_new(&store).await;
                    let loaded = store.load(&headers(&cookies)).await;
                    assert_eq!(loaded.session().map(|s| s.sid), Some(saved.sid));
                    let mut d = data();
                    d.renewed_at += 1;
                    store.save(&loaded, d, &attrs()).await.unwrap();
                    let again = store.load(&headers(&cookies)).await;
                    store.clear(&again, &attrs()).await;
                    assert!(matches!(
                        store.load(&headers(&cookies)).await,
                        Loaded::Invalid { .. }
                    ));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.len(), 0);
}
