//! Kept values in this process: a concurrent map swept of what expired.

use dashmap::DashMap;
use std::time::Duration;

/// An entry: its deadline (milliseconds) and its value (`None`: a bare record, as a claim).
struct Entry {
    until_ms: u64,
    value: Option<Vec<u8>>,
}

/// Values by (kind, name), on a millisecond clock.
pub(super) struct Memory {
    entries: DashMap<(&'static str, [u8; 32]), Entry>,
    now_ms: fn() -> u64,
}

impl Memory {
    pub(super) fn new(now_ms: fn() -> u64) -> Memory {
        Memory {
            entries: DashMap::new(),
            now_ms,
        }
    }

    fn deadline(&self, ttl: Duration) -> u64 {
        (self.now_ms)().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn put(
        &self,
        kind: &'static str,
        name: [u8; 32],
        value: Option<Vec<u8>>,
        ttl: Duration,
    ) {
        let until_ms = self.deadline(ttl);
        self.entries.insert((kind, name), Entry { until_ms, value });
    }

    pub(super) fn take(&self, kind: &'static str, name: &[u8; 32]) -> Option<Vec<u8>> {
        let now = (self.now_ms)();
        let (_, entry) = self.entries.remove(&(kind, *name))?;
        (entry.until_ms > now).then_some(entry.value).flatten()
    }

    pub(super) fn claim(&self, kind: &'static str, name: [u8; 32], ttl: Duration) -> bool {
        let now = (self.now_ms)();
        let until_ms = self.deadline(ttl);
        match self.entries.entry((kind, name)) {
            dashmap::Entry::Occupied(mut e) if e.get().until_ms <= now => {
                e.insert(Entry {
                    until_ms,
                    value: None,
                });
                true
            }
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(e) => {
                e.insert(Entry {
                    until_ms,
                    value: None,
                });
                true
            }
        }
    }

    pub(super) fn contains(&self, kind: &'static str, name: &[u8; 32]) -> bool {
        let now = (self.now_ms)();
        self.entries
            .get(&(kind, *name))
            .is_some_and(|e| e.until_ms > now)
    }

    pub(super) fn sweep(&self) {
        let now = (self.now_ms)();
        self.entries.retain(|_, e| e.until_ms > now);
    }
}
