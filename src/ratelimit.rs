//! Limits on the requests that make the gateway talk to the provider: login starts, callbacks
//! (each one a client-authenticated token call) and introspection cache misses.
//!
//! Two layers, each unable to become a switch that turns sign-in off for everyone:
//!
//! - **Per client** ([`Limit`]): an exact count per client address (IPv6 by /64) over a sliding
//!   minute, in a map of bounded size. No key shares a counter with another, so clients under
//!   their own limit can never push anyone else over it. When the map is full the least
//!   recently seen client is forgotten: eviction only ever forgets a count (admits more), it
//!   never refuses a client that did nothing.
//! - **Per provider** ([`Ceiling`]): at most so many calls a second from this instance. Past it,
//!   only clients that already made a call this minute wait; a client's first call always goes
//!   through. A flood from many addresses is thereby cut to one call per address and minute,
//!   and a client that never sent a request is never held back by other clients' traffic.
//!
//! (The first version counted with a count-min sketch, `pingora_limits::rate::Rate`: about
//! 3,600 addresses each under its own limit filled every cell, and then every new client got
//! 429 for minutes.)

use crate::cache::Recency;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::net::IpAddr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The window a client's count runs over, in milliseconds.
const WINDOW_MS: u64 = 60_000;

/// Clients a limit remembers at once (a few megabytes when full).
pub const MAX_CLIENTS: usize = 65_536;

/// Over the limit: try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until the count has fallen below the limit.
    pub retry_after: u64,
}

/// What a limit knew of a client it admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Admitted {
    /// The client's first counted event in the window (or no limit applies): a [`Ceiling`]
    /// lets it through even when full.
    pub first: bool,
}

/// One client's counts: the current fixed minute and the one before it.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Index of the current minute (milliseconds since start / [`WINDOW_MS`]).
    index: u64,
    prev: u32,
    curr: u32,
}

impl Window {
    /// The counts as of minute `index` (older minutes fade out).
    fn at(self, index: u64) -> Window {
        match index.saturating_sub(self.index) {
            0 => self,
            1 => Window {
                index,
                prev: self.curr,
                curr: 0,
            },
            _ => Window {
                index,
                prev: 0,
                curr: 0,
            },
        }
    }
}

/// At most `limit` events per client and window (a minute unless set), counted exactly.
pub struct Limit {
    limit: u64,
    window_ms: u64,
    counts: DashMap<u128, Window, ahash::RandomState>,
    recency: Recency<u128>,
}

impl Limit {
    /// A limit of `per_minute` events per client; `None` for 0 (unlimited).
    pub fn new(per_minute: u64) -> Option<Limit> {
        Self::with_capacity(per_minute, MAX_CLIENTS)
    }

    /// Like [`new`](Self::new), remembering at most `capacity` clients.
    pub fn with_capacity(per_minute: u64, capacity: usize) -> Option<Limit> {
        Self::per_window(per_minute, WINDOW_MS, capacity)
    }

    /// At most `limit` events per key in any `window_ms` milliseconds, remembering at most
    /// `capacity` keys; `None` for a limit or window of 0.
    pub fn per_window(limit: u64, window_ms: u64, capacity: usize) -> Option<Limit> {
        (limit > 0 && window_ms > 0).then(|| Limit {
            limit,
            window_ms,
            counts: DashMap::with_hasher(ahash::RandomState::new()),
            recency: Recency::new(capacity),
        })
    }

    /// Counts one event for `client`, or refuses it when the client is at its limit (a refused
    /// event is not counted, so a client that waits gets in again).
    pub fn check(&self, client: IpAddr) -> Result<Admitted, Limited> {
        self.check_at(client, millis())
    }

    /// [`check`](Self::check) at `now_ms` milliseconds on the limiter's clock.
    pub fn check_at(&self, client: IpAddr, now_ms: u64) -> Result<Admitted, Limited> {
        self.check_key(client_key(client), now_ms)
    }

    /// Counts one event for the key `key` (any 128-bit name of a client) at `now_ms`, or
    /// refuses it.
    pub fn check_key(&self, key: u128, now_ms: u64) -> Result<Admitted, Limited> {
        let index = now_ms / self.window_ms;
        let elapsed = (now_ms % self.window_ms) as f64 / self.window_ms as f64;
        let id = self.counts.hasher().hash_one(key);
        let (first, inserted) = match self.counts.entry(key) {
            Entry::Occupied(mut entry) => {
                let w = entry.get().at(index);
                let (prev, curr) = (f64::from(w.prev), f64::from(w.curr));
                if prev * (1.0 - elapsed) + curr >= self.limit as f64 {
                    *entry.get_mut() = w;
                    drop(entry);
                    // A client knocking while refused stays remembered (and refused).
                    self.recency.touch(id);
                    return Err(retry(
                        self.limit as f64,
                        self.window_ms,
                        prev,
                        curr,
                        elapsed,
                    ));
                }
                *entry.get_mut() = Window {
                    curr: w.curr.saturating_add(1),
                    ..w
                };
                (w.prev == 0 && w.curr == 0, false)
            }
            Entry::Vacant(entry) => {
                entry.insert(Window {
                    index,
                    prev: 0,
                    curr: 1,
                });
                (true, true)
            }
        };
        if inserted {
            // Dropping the least recently seen clients keeps the map bounded; done after the
            // entry's shard lock is released.
            for old in self.recency.admit(id, key) {
                self.counts.remove(&old);
            }
        } else {
            self.recency.touch(id);
        }
        Ok(Admitted { first })
    }

    /// Clients remembered.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The wait until a sliding count of `prev * (1 - elapsed) + curr` falls below `limit`, with
/// windows of `window_ms`.
pub fn retry(limit: f64, window_ms: u64, prev: f64, curr: f64, elapsed: f64) -> Limited {
    let left = 1.0 - elapsed;
    let count = prev * left + curr;
    let window = window_ms as f64 / 1000.0;
    // The previous window's share fades linearly until this window ends; after that this
    // window's count fades through the next one.
    let wait = if prev > 0.0 && (count - limit) / prev < left {
        window * (count - limit) / prev
    } else {
        window * left + window * (1.0 - limit / curr.max(limit))
    };
    Limited {
        retry_after: wait.ceil().max(1.0) as u64,
    }
}

/// Checks `limit`, if there is one.
pub fn check(limit: Option<&Limit>, client: Option<IpAddr>) -> Result<Admitted, Limited> {
    match (limit, client) {
        (Some(l), Some(ip)) => l.check(ip),
        _ => Ok(Admitted { first: true }),
    }
}

/// Why a call to the provider was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client is over its own limit.
    Client(Limited),
    /// The instance's calls to providers are at their ceiling this second.
    Busy,
}

/// Admits one call to the provider for `client`: its own `limit` first, then the `ceiling`.
pub fn admit(
    limit: Option<&Limit>,
    ceiling: Option<&Ceiling>,
    client: Option<IpAddr>,
) -> Result<(), Refused> {
    let admitted = check(limit, client).map_err(Refused::Client)?;
    match ceiling {
        Some(c) if !c.admit(admitted) => Err(Refused::Busy),
        _ => Ok(()),
    }
}

/// At most `per_second` calls a second to the providers, except a client's first.
pub struct Ceiling {
    per_second: u64,
    /// The current second (high 40 bits) and the calls counted in it (low 24 bits).
    state: AtomicU64,
}

const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

impl Ceiling {
    /// A ceiling of `per_second` calls; `None` for 0 (none).
    pub fn new(per_second: u64) -> Option<Ceiling> {
        (per_second > 0).then(|| Ceiling {
            per_second: per_second.min(COUNT_MASK),
            state: AtomicU64::new(0),
        })
    }

    /// Counts one call, or refuses it when this second's calls are spent and `admitted` was
    /// not the client's first.
    pub fn admit(&self, admitted: Admitted) -> bool {
        self.admit_at(admitted, millis())
    }

    /// [`admit`](Self::admit) at `now_ms` milliseconds on the limiter's clock.
    pub fn admit_at(&self, admitted: Admitted, now_ms: u64) -> bool {
        let second = now_ms / 1000;
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (s, n) = (current >> COUNT_BITS, current & COUNT_MASK);
            let n = if s == second { n } else { 0 };
            if n >= self.per_second && !admitted.first {
                return false;
            }
            let next = (second << COUNT_BITS) | (n + 1).min(COUNT_MASK);
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

/// Milliseconds on the limiters' monotonic clock.
fn millis() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

/// IPv4 addresses count one by one; IPv6 ones by /64, the block one host usually has.
pub fn client_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => u128::from(v6) >> 64 << 64 | 1 << 127,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn a_client_over_its_limit_is_refused_and_others_are_not() {
        let limit = Limit::new(5).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(limit.check(a), Ok(Admitted { first: true }));
        for _ in 1..5 {
            assert_eq!(limit.check(a), Ok(Admitted { first: false }));
        }
        let refused = limit.check(a).unwrap_err();
        // All five in this window: the count falls under the limit during the next one.
        assert!((1..=120).contains(&refused.retry_after), "{refused:?}");
        assert_eq!(limit.check(b), Ok(Admitted { first: true }));
        assert!(Limit::new(0).is_none());
        assert_eq!(check(None, Some(a)), Ok(Admitted { first: true }));
    }

    #[test]
    fn the_count_slides_out_of_the_window() {
        let limit = Limit::new(4).unwrap();
        let a = ip(1);
        for _ in 0..4 {
            assert!(limit.check_at(a, 59_000).is_ok());
        }
        assert!(limit.check_at(a, 59_500).is_err());
        // Half-way through the next minute half of the last one still counts: 2 of 4.
        assert!(limit.check_at(a, 90_000).is_ok());
        assert!(limit.check_at(a, 90_000).is_ok());
        assert!(limit.check_at(a, 90_000).is_err());
        // The last minute's share keeps fading: a quarter of it is gone 15 s later.
        assert!(limit.check_at(a, 105_000).is_ok());
        // Two minutes on, nothing is left.
        assert_eq!(limit.check_at(a, 181_000), Ok(Admitted { first: true }));
    }

    #[test]
    fn clients_each_under_the_limit_never_limit_a_new_one() {
        // The review's flood: thousands of addresses, each just under its own limit. A
        // count-min sketch saturated and refused everyone; exact counts cannot.
        let limit = Limit::new(30).unwrap();
        for i in 0..4_000 {
            for _ in 0..29 {
                assert!(limit.check_at(ip(i), 1_000).is_ok());
            }
        }
        for i in 100_000..100_100 {
            assert_eq!(limit.check_at(ip(i), 1_500), Ok(Admitted { first: true }));
        }
    }

    #[test]
    fn a_full_map_forgets_the_least_recently_seen_client() {
        let limit = Limit::with_capacity(3, 1024).unwrap();
        let busy = ip(0);
        for _ in 0..3 {
            assert!(limit.check_at(busy, 0).is_ok());
        }
        for i in 1..20_000 {
            assert!(limit.check_at(ip(i), 0).is_ok());
            if i % 8 == 0 {
                // Seen often, so remembered (and still refused) however many others come.
                assert!(limit.check_at(busy, 0).is_err(), "forgotten after {i}");
            }
        }
        assert!(limit.len() <= 1024, "{}", limit.len());
    }

    #[test]
    fn ipv6_clients_count_by_slash_64() {
        let limit = Limit::new(2).unwrap();
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
            assert!(limit.check(host.parse().unwrap()).is_ok());
        }
        assert!(
            limit
                .check("2001:db8:1:2:ffff::9".parse().unwrap())
                .is_err()
        );
        assert!(limit.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            client_key("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn the_ceiling_holds_repeat_callers_and_lets_first_calls_through() {
        let c = Ceiling::new(3).unwrap();
        let again = Admitted { first: false };
        let first = Admitted { first: true };
        for _ in 0..3 {
            assert!(c.admit_at(again, 10_000));
        }
        assert!(!c.admit_at(again, 10_999), "this second's calls are spent");
        assert!(
            c.admit_at(first, 10_999),
            "a client's first call still goes"
        );
        assert!(c.admit_at(again, 11_000), "a new second");
        assert!(Ceiling::new(0).is_none());
    }
}
