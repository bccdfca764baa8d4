//! The Redis session store against the machine's Redis on 6379 (`.ci/run` starts one), each test
//! under a key prefix of its own: the conformance suite every store passes, sharing between
//! instances, the marks read with every session when nothing is cached, versions, and Redis down;
//! and the kept-values facility's suite.
//! (The fleet's behaviour through the running binary, Sentinel and Cluster are in `fleet.rs`.)

use crate::support::redis::RedisServer;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use oidc_gateway::clock;
use oidc_gateway::config::{RedisSettings, RedisTopology, SessionStoreKind};
use oidc_gateway::crypto::random_bytes;
use oidc_gateway::fleet::{self, Fleet};
use oidc_gateway::session::SessionData;
use oidc_gateway::session::revocations::Subject;
use oidc_gateway::session::store::conformance::{self, attrs, data, headers, settings};
use oidc_gateway::session::store::{Loaded, RedisStore, SaveError, Store};
use std::sync::Arc;
use std::time::Duration;

/// The machine's Redis, with a key prefix of this test's own.
fn fleet(local_cache: Duration) -> Arc<Fleet> {
    let prefix = format!("oidc-gateway-test:{}:", fleet::hex(&random_bytes::<8>()));
    let r = RedisSettings {
        topology: RedisTopology::Single("redis://127.0.0.1:6379".into()),
        username: None,
        password: None,
        key_prefix: prefix,
        command_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ca_file: None,
        local_cache_ttl: local_cache,
    };
    let s = settings(SessionStoreKind::Redis, 100);
    Arc::new(Fleet::new(&r, &s.secrets).unwrap())
}

fn store(fleet: &Arc<Fleet>, capacity: usize) -> RedisStore {
    RedisStore::new(&settings(SessionStoreKind::Redis, capacity), fleet.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance() {
    // A cache that outlives the suite: on a loaded machine the eviction check's 2560 saves
    // take longer than 5 s, and a lapsed entry would read as evicted.
    let f = fleet(Duration::from_secs(120));
    conformance::run(&|capacity| {
        conformance::sessions(Store::Redis(Box::new(store(&f, capacity))), Some(f.clone()))
    })
    .await;
}

/// Kept values (forms, used states and jtis) in Redis pass the suite the memory backend
/// passes; the deadlines are Redis's own, so the suite's 120 ms really pass.
#[tokio::test(flavor = "multi_thread")]
async fn kept_values_conformance() {
    let f = fleet(Duration::from_secs(5));
    let secrets = settings(SessionStoreKind::Redis, 100).secrets;
    let kept = oidc_gateway::kept::Kept::new(&secrets, Some(f.clone()));
    assert!(kept.is_shared());
    oidc_gateway::kept::conformance::run(&kept, tokio::time::sleep).await;
    // Another instance sees what this one kept and claimed.
    let other = oidc_gateway::kept::Kept::new(&secrets, Some(f));
    kept.put("x", b"form", b"body", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        kept.claim("y", b"state", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        !other
            .claim("y", b"state", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(
        other.take("x", b"form").await.unwrap().as_deref(),
        Some(&b"body"[..])
    );
    assert_eq!(kept.take("x", b"form").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_sessions_and_a_dump_reveals_no_token() {
    let f = fleet(Duration::from_secs(5));
    let (a, b) = (store(&f, 100), store(&f, 100));
    let d = SessionData {
        access_token: "eyJhbGciOiJSUzI1NiJ9.secret-access-token.sig".into(),
        refresh_token: Some("refresh-token-never-in-clear".into()),
        ..data()
    };
    let (saved, cookies) = a.save(&Loaded::Absent, d.clone(), &attrs()).await.unwrap();
    let cookie = cookies[0].to_str().unwrap().to_owned();
    assert!(cookie.len() < 200, "a small cookie: {cookie}");
    match b.load(&headers(&cookies)).await {
        Loaded::Found {
            session, cache_hit, ..
        } => {
            assert!(!cache_hit, "read from Redis");
            assert_eq!(session.sid, saved.sid);
            assert_eq!(session.data, d);
        }
        other => panic!("{other:?}"),
    }
    // Nothing in Redis names the session or holds a token in clear.
    let keys: Vec<String> = f
        .redis
        .query(
            "KEYS",
            redis::cmd("KEYS").arg(format!("{}*", f.settings.key_prefix)),
        )
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let sid_b64 = B64.encode(saved.sid);
    for k in &keys {
        assert!(!k.contains(&sid_b64), "{k}");
        let dump: Vec<u8> = f
            .redis
            .query("DUMP", redis::cmd("DUMP").arg(k))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&dump);
        for secret in ["eyJ", "refresh-token-never-in-clear", "secret-access-token"] {
            assert!(!text.contains(secret), "{k} reveals {secret}");
        }
    }
    // Logout on A ends it for every instance: one whose cached copy is gone (the fleet's
    // message drops it; no subscriber runs in this test, so a fresh instance stands in) finds
    // it invalid in Redis.
    let loaded = a.load(&headers(&cookies)).await;
    a.clear(&loaded, &attrs()).await;
    assert!(matches!(
        store(&f, 100).load(&headers(&cookies)).await,
        Loaded::Invalid { .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_local_cache_every_read_checks_the_marks_in_redis() {
    let f = fleet(Duration::ZERO);
    let make = || conformance::sessions(Store::Redis(Box::new(store(&f, 100))), Some(f.clone()));
    let (here, there) = (make(), make());
    let (_, cookies) = here.save(&Loaded::Absent, data(), &attrs()).await.unwrap();
    // The first read learns the session's mark keys; later ones read them with the session.
    for _ in 0..3 {
        assert!(matches!(
            here.load(&headers(&cookies)).await,
            Loaded::Found {
                cache_hit: false,
                ..
            }
        ));
    }
    // Another instance marks every session of the user as ended (the mark alone: the
    // session stays in Redis); no message reaches `here` (nothing subscribes in this test),
    // so only the marks read with the session can refuse it.
    let d = data();
    there
        .revocations()
        .revoke(Subject::User(&d.provider, &d.sub), clock::now() + 60)
        .await
        .unwrap();
    assert!(here.revocations().is_empty());
    assert!(matches!(
        here.load(&headers(&cookies)).await,
        Loaded::Invalid { .. }
    ));
}

/// With `0s`, a session held in memory is served only as Redis confirms it, in each request's
/// round trip: a newer version written by another instance, a deleted session and Redis
/// stalled are all seen at once. Redis of its own, so it can be stopped and its commands
/// counted.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_local_cache_a_held_session_is_served_only_as_redis_confirms_it() {
    let server = RedisServer::start();
    let mut r = fleet(Duration::ZERO).settings.clone();
    r.topology = RedisTopology::Single(server.url());
    r.command_timeout = Duration::from_millis(300);
    let secrets = settings(SessionStoreKind::Redis, 100).secrets;
    let f = Arc::new(Fleet::new(&r, &secrets).unwrap());
    let (a, b) = (store(&f, 100), store(&f, 100));
    let (_, cookies) = a.save(&Loaded::Absent, data(), &attrs()).await.unwrap();
    let h = headers(&cookies);
    let original = data().access_token.text().into_owned();
    assert_eq!(
        access_token(&a, &h).await.as_deref(),
        Some(original.as_str())
    );
    // Held and confirmed: two commands a read (the version and the marks), in one round trip.
    let calls = |cmd: &str| -> u64 {
        server
            .cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|v| v.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let (hget, hmget) = (calls("hget"), calls("hmget"));
    for _ in 0..5 {
        assert_eq!(
            access_token(&a, &h).await.as_deref(),
            Some(original.as_str())
        );
    }
    assert_eq!(calls("hget") - hget, 5, "the version, once a request");
    assert_eq!(calls("hmget") - hmget, 0, "the held copy is not read again");

    // Another instance writes a newer version: the next read on `a` serves it.
    let seen_by_b = b.load(&h).await;
    assert!(matches!(seen_by_b, Loaded::Found { .. }), "{seen_by_b:?}");
    let mut refreshed = data();
    refreshed.access_token = "refreshed-elsewhere".into();
    b.save(&seen_by_b, refreshed, &attrs()).await.unwrap();
    assert_eq!(
        access_token(&a, &h).await.as_deref(),
        Some("refreshed-elsewhere")
    );

    // Redis stalled: the held copy is not served (a revocation could not be checked).
    server.signal("STOP");
    let started = std::time::Instant::now();
    let stalled = a.load(&h).await;
    server.signal("CONT");
    assert!(matches!(stalled, Loaded::Unavailable { .. }), "{stalled:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Deleted in Redis with no message to `a` (a logout elsewhere): refused at once.
    let keys = server.cli(&["--scan", "--pattern", &format!("{}s:*", r.key_prefix)]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    server.cli(&["DEL", keys[0]]);
    assert_eq!(access_token(&a, &h).await, None);
}

/// The access token of the session `s` finds for `h`, which it reads from Redis; `None`: invalid.
async fn access_token(s: &RedisStore, h: &http::HeaderMap) -> Option<String> {
    match s.load(h).await {
        Loaded::Found {
            session, cache_hit, ..
        } => {
            assert!(!cache_hit, "with 0s every read asks Redis");
            Some(session.data.access_token.text().into_owned())
        }
        Loaded::Invalid { .. } => None,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_update_does_not_overwrite_a_newer_version() {
    let f = fleet(Duration::ZERO);
    let (a, b) = (store(&f, 100), store(&f, 100));
    let (_, cookies) = a.save(&Loaded::Absent, data(), &attrs()).await.unwrap();
    let seen_by_a = a.load(&headers(&cookies)).await;
    let seen_by_b = b.load(&headers(&cookies)).await;
    let mut refreshed = data();
    refreshed.access_token = "refreshed".into();
    b.save(&seen_by_b, refreshed, &attrs()).await.unwrap();
    let mut renewed = data();
    renewed.renewed_at += 60;
    assert!(matches!(
        a.save(&seen_by_a, renewed, &attrs()).await,
        Err(SaveError::Conflict)
    ));
    let Loaded::Found { session, .. } = a.load(&headers(&cookies)).await else {
        panic!("gone");
    };
    assert_eq!(session.data.access_token.text(), "refreshed");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_unavailable_not_invalid() {
    let r = RedisSettings {
        topology: RedisTopology::Single("redis://127.0.0.1:1".into()),
        username: None,
        password: None,
        key_prefix: "x:".into(),
        command_timeout: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(100),
        ca_file: None,
        local_cache_ttl: Duration::from_secs(5),
    };
    let s = settings(SessionStoreKind::Redis, 100);
    let down = Arc::new(Fleet::new(&r, &s.secrets).unwrap());
    let up = fleet(Duration::from_secs(5));
    // A cookie the down instance can open (same secrets).
    let (_, cookies) = store(&up, 10)
        .save(&Loaded::Absent, data(), &attrs())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(
        store(&down, 10).load(&headers(&cookies)).await,
        Loaded::Unavailable { .. }
    ));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
