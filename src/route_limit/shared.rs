//! The fleet's count for a route limit: the same sliding window as the local one, in Redis,
//! checked and counted in one round trip by a script (a refused request is not counted, so a
//! client that waits gets in again).

use crate::fleet::{Fleet, FleetError};
use crate::ratelimit::{self, Limited};
use std::sync::{Arc, LazyLock};

/// KEYS: this window's count, the last one's. ARGV: the limit, the share of this window gone
/// (0..1), how long a count is kept (ms). Returns {admitted, this window, last window}.
static COUNT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"local curr = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
if prev * (1 - tonumber(ARGV[2])) + curr >= tonumber(ARGV[1]) then
  return {0, curr, prev}
end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, curr + 1, prev}",
    )
});

/// One route's limit, counted in Redis.
pub(super) struct Window {
    fleet: Arc<Fleet>,
    limit: u64,
    window_ms: u64,
}

impl Window {
    pub(super) fn new(fleet: Arc<Fleet>, limit: u64, window_ms: u64) -> Window {
        Window {
            fleet,
            limit,
            window_ms,
        }
    }

    /// Counts one request for `key` at `now_ms`, or says how long until it would be admitted.
    pub(super) async fn check(
        &self,
        key: &[u8; 32],
        now_ms: u64,
    ) -> Result<Result<(), Limited>, FleetError> {
        let index = now_ms / self.window_ms;
        let elapsed = (now_ms % self.window_ms) as f64 / self.window_ms as f64;
        // Keyed by an HMAC, so Redis never holds who was counted; both windows in one slot.
        let base = self.fleet.key("rl", &self.fleet.name(0, key));
        let (admitted, curr, prev): (u8, u64, u64) = self
            .fleet
            .redis
            .script(
                "EVALSHA",
                COUNT
                    .key(format!("{base}:{index}"))
                    .key(format!("{base}:{}", index.wrapping_sub(1)))
                    .arg(self.limit)
                    .arg(format!("{elapsed:.6}"))
                    .arg(self.window_ms.saturating_mul(2)),
            )
            .await?;
        Ok(if admitted == 1 {
            Ok(())
        } else {
            Err(ratelimit::retry(
                self.limit as f64,
                self.window_ms,
                prev as f64,
                curr as f64,
                elapsed,
            ))
        })
    }
}
