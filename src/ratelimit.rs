//! Per-client limits on the requests that make the gateway talk to the provider: login starts,
//! callbacks (each one a client-authenticated token call) and introspection cache misses.
//! Without them an anonymous client can spend the gateway's rate limit at the IdP.
//!
//! Counting is Pingora's own rate estimator (`pingora-limits`): a count-min sketch of fixed size,
//! so a flood of client addresses cannot grow it, read as a sliding minute (the previous minute's
//! count weighted by how much of it is still inside the window, plus the current one).

use pingora_limits::rate::Rate;
use std::net::IpAddr;
use std::time::Duration;

/// The window every limit counts over.
const WINDOW: Duration = Duration::from_secs(60);

/// Over the limit: try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until the count has fallen below the limit.
    pub retry_after: u64,
}

/// At most `per_minute` events per client and minute.
pub struct Limit {
    rate: Rate,
    per_minute: f64,
}

impl Limit {
    /// A limit of `per_minute` events per client; `None` for 0 (unlimited).
    pub fn new(per_minute: u64) -> Option<Limit> {
        (per_minute > 0).then(|| Limit {
            rate: Rate::new(WINDOW),
            per_minute: per_minute as f64,
        })
    }

    /// Counts one event for `client`, or refuses it when the client is at its limit (a refused
    /// event is not counted, so a client that waits gets in again).
    pub fn check(&self, client: IpAddr) -> Result<(), Limited> {
        let key = client_key(client);
        let limit = self.per_minute;
        let refused = self.rate.rate_with(&key, |c| {
            let (prev, curr) = (c.prev_samples as f64, c.curr_samples as f64);
            let window = c.interval.as_secs_f64();
            let left = 1.0 - c.current_interval_fraction;
            let count = prev * left + curr;
            if count < limit {
                return None;
            }
            // The previous window's share fades linearly until this window ends; after that
            // this window's count fades through the next one.
            let wait = if prev > 0.0 && (count - limit) / prev < left {
                window * (count - limit) / prev
            } else {
                window * left + window * (1.0 - limit / curr.max(limit))
            };
            Some(Limited {
                retry_after: wait.ceil().max(1.0) as u64,
            })
        });
        if let Some(limited) = refused {
            return Err(limited);
        }
        self.rate.observe(&key, 1);
        Ok(())
    }
}

/// Checks `limit`, if there is one.
pub fn check(limit: Option<&Limit>, client: Option<IpAddr>) -> Result<(), Limited> {
    match (limit, client) {
        (Some(l), Some(ip)) => l.check(ip),
        _ => Ok(()),
    }
}

/// IPv4 addresses count one by one; IPv6 ones by /64, the block one host usually has.
fn client_key(ip: IpAddr) -> u128 {
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

    #[test]
    fn a_client_over_its_limit_is_refused_and_others_are_not() {
        let limit = Limit::new(5).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(limit.check(a), Ok(()));
        }
        let refused = limit.check(a).unwrap_err();
        // All five in this window: the count falls under the limit during the next one.
        assert!((1..=120).contains(&refused.retry_after), "{refused:?}");
        assert_eq!(limit.check(b), Ok(()));
        assert!(Limit::new(0).is_none());
        assert_eq!(check(None, Some(a)), Ok(()));
    }

    #[test]
    fn ipv6_clients_count_by_slash_64() {
        let limit = Limit::new(2).unwrap();
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
            assert_eq!(limit.check(host.parse().unwrap()), Ok(()));
        }
        assert!(
            limit
                .check("2001:db8:1:2:ffff::9".parse().unwrap())
                .is_err()
        );
        assert_eq!(limit.check("2001:db8:1:3::1".parse().unwrap()), Ok(()));
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            client_key("192.0.2.1".parse().unwrap())
        );
    }
}
