//! What every backend of [`Kept`] must do, run against memory (unit tests) and Redis
//! (`tests/e2e/redis_store.rs`). `pass` lets the given time go by on the backend's clock: moved
//! for memory, slept for Redis, whose expiry cannot be moved.

use super::Kept;
use std::future::Future;
use std::time::Duration;

/// Runs the suite; each run uses fresh random values, so backends may be shared.
pub async fn run<F, Fut>(kept: &Kept, pass: F)
where
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    let ttl = Duration::from_secs(60);
    let fresh = || rand::random::<[u8; 16]>();

    // A kept value is read once.
    let what = fresh();
    kept.put("cf", &what, b"form", ttl).await.unwrap();
    assert!(kept.contains("cf", &what).await.unwrap());
    assert_eq!(
        kept.take("cf", &what).await.unwrap().as_deref(),
        Some(&b"form"[..])
    );
    assert_eq!(kept.take("cf", &what).await.unwrap(), None);
    assert!(!kept.contains("cf", &what).await.unwrap());

    // A later put replaces; kinds do not share names.
    let what = fresh();
    kept.put("cf", &what, b"one", ttl).await.unwrap();
    kept.put("cf", &what, b"two", ttl).await.unwrap();
    assert_eq!(kept.take("cg", &what).await.unwrap(), None);
    assert_eq!(
        kept.take("cf", &what).await.unwrap().as_deref(),
        Some(&b"two"[..])
    );

    // A claim is granted once, and seen by contains.
    let what = fresh();
    assert!(!kept.contains("cc", &what).await.unwrap());
    assert!(kept.claim("cc", &what, ttl).await.unwrap());
    assert!(!kept.claim("cc", &what, ttl).await.unwrap());
    assert!(kept.contains("cc", &what).await.unwrap());
    assert!(kept.claim("cd", &what, ttl).await.unwrap(), "another kind");

    // Everything ends at its deadline: a value is gone, a claim may be made again.
    let (value, claimed) = (fresh(), fresh());
    let short = Duration::from_millis(50);
    kept.put("cf", &value, b"soon gone", short).await.unwrap();
    assert!(kept.claim("cc", &claimed, short).await.unwrap());
    pass(Duration::from_millis(120)).await;
    kept.sweep();
    assert_eq!(kept.take("cf", &value).await.unwrap(), None);
    assert!(!kept.contains("cc", &claimed).await.unwrap());
    assert!(kept.claim("cc", &claimed, ttl).await.unwrap());
}
