//! The wall clock, in the unit sessions, tokens and caches count in: whole seconds since the
//! Unix epoch (milliseconds for the short deadlines of kept values).
//!
//! Builds with the `testing` feature (the test suite's, never a release build) can move it
//! forward ([`advance`], reached through the metrics listener's `POST /test/clock`), so the
//! end-to-end tests see sessions idle out and access tokens expire without sleeping for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds the clock has been moved forward (0 outside tests).
static AHEAD: AtomicU64 = AtomicU64::new(0);

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now() -> u64 {
    since_epoch()
        .as_secs()
        .saturating_add(AHEAD.load(Ordering::Relaxed))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it), for deadlines shorter than
/// a second.
pub fn now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(AHEAD.load(Ordering::Relaxed).saturating_mul(1000))
}

/// Moves the clock forward by `seconds` (tests only); returns the new [`now`].
#[cfg(feature = "testing")]
pub fn advance(seconds: u64) -> u64 {
    AHEAD.fetch_add(seconds, Ordering::Relaxed);
    now()
}
