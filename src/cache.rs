//! Bounded, concurrent maps for what the hot path reuses: verified bearer tokens, introspection
//! answers and (in `session/store.rs`) sessions. When one is full, the least recently used entry
//! goes first ([`Recency`]), so a client that fills a cache evicts its own entries before anyone
//! else's. Evicting costs O(1) per entry: nothing scans the map on the request path.

use dashmap::DashMap;
use std::hash::Hash;

/// Keys are hashed with a randomly seeded fast hash (tokens are long; SipHash would dominate).
type Hasher = ahash::RandomState;

/// Shards of the recency order: a touch locks one of them, never the whole order.
const SHARDS: usize = 16;

/// The least-recently-used order of a map's keys, kept beside the map. Each entry is known by a
/// `u64` (a hash of its key, or the key itself when it is already random) and carries the key
/// the map needs to remove it.
///
/// This is Pingora's sharded LRU: each shard keeps exact order and eviction takes the tail of
/// the longer of two random shards, so an entry touched recently outlives, in its shard, every
/// entry touched before it.
pub struct Recency<K> {
    lru: pingora_lru::Lru<K, SHARDS>,
}

impl<K> Recency<K> {
    /// An order that keeps at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Recency {
            // Shards grow as entries arrive: a large capacity reserves nothing up front.
            lru: pingora_lru::Lru::with_capacity(capacity, 0),
        }
    }

    /// Records a new (or replaced) entry as the most recent; returns the keys to drop from the
    /// map to stay within capacity, least recently used first.
    #[must_use]
    pub fn admit(&self, id: u64, key: K) -> Vec<K> {
        self.lru.admit(id, key, 1);
        self.lru
            .evict_to_limit()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// Marks an entry as just used.
    pub fn touch(&self, id: u64) {
        self.lru.promote(id);
    }

    /// Forgets an entry the map dropped itself (expiry, logout).
    pub fn remove(&self, id: u64) {
        self.lru.remove(id);
    }

    /// Entries tracked.
    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.lru.len() == 0
    }
}

/// A bounded cache with per-entry expiry (Unix seconds).
pub struct BoundedCache<K: Eq + Hash, V: Clone> {
    map: DashMap<K, (V, u64), Hasher>,
    recency: Recency<K>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> BoundedCache<K, V> {
    /// A cache of at most `capacity` entries (0 disables it).
    pub fn new(capacity: usize) -> Self {
        BoundedCache {
            map: DashMap::with_hasher(Hasher::new()),
            recency: Recency::new(capacity),
            capacity,
        }
    }

    fn id<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.map.hasher().hash_one(key)
    }

    /// The value for `key`, if present and not expired at `now`.
    pub fn get<Q>(&self, key: &Q, now: u64) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let value = {
            let entry = self.map.get(key)?;
            let (v, expires) = entry.value();
            (now < *expires).then(|| v.clone())?
        };
        self.recency.touch(self.id(key));
        Some(value)
    }

    /// Stores `value` until `expires` (Unix seconds).
    pub fn insert(&self, key: K, value: V, expires: u64, now: u64) {
        if self.capacity == 0 || expires <= now {
            return;
        }
        let id = self.id(&key);
        self.map.insert(key.clone(), (value, expires));
        for old in self.recency.admit(id, key) {
            self.map.remove(&old);
        }
    }

    /// Removes `key`.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.map.remove(key).is_some() {
            self.recency.remove(self.id(key));
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let keys: Vec<K> = self.map.iter().map(|e| e.key().clone()).collect();
        for k in keys {
            self.remove(&k);
        }
    }

    /// Drops expired entries.
    pub fn sweep(&self, now: u64) {
        let mut expired = Vec::new();
        self.map.retain(|k, (_, e)| {
            let keep = *e > now;
            if !keep {
                expired.push(self.id(k));
            }
            keep
        });
        for id in expired {
            self.recency.remove(id);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_capacity_is_kept() {
        let c: BoundedCache<String, u32> = BoundedCache::new(32);
        c.insert("a".into(), 1, 100, 10);
        assert_eq!(c.get("a", 99), Some(1));
        assert_eq!(c.get("a", 100), None);
        for i in 0..100 {
            c.insert(format!("k{i}"), i, 100, 10);
        }
        assert!(c.len() <= 32);
        assert_eq!(c.recency.len(), c.len(), "order and map agree");
        c.insert("past".into(), 1, 5, 10);
        assert_eq!(
            c.get("past", 1),
            None,
            "already expired entries are not stored"
        );
        c.sweep(100);
        assert!(c.is_empty() && c.recency.is_empty());
    }

    #[test]
    fn the_least_recently_used_entries_go_first() {
        let c: BoundedCache<u32, u32> = BoundedCache::new(256);
        for i in 0..128 {
            c.insert(i, i, 1000, 10);
        }
        c.insert(1000, 0, 1000, 10);
        // A client filling the cache with ten times its capacity, while entry 1000 stays in use.
        for i in 0..2560 {
            c.insert(10_000 + i, i, 1000, 10);
            if i % 16 == 0 {
                assert!(c.get(&1000, 10).is_some(), "evicted after {i} inserts");
            }
        }
        assert!(c.get(&1000, 10).is_some());
        assert_eq!(c.len(), 256);
        assert!(
            (0..128).all(|i| c.get(&i, 10).is_none()),
            "idle entries went first"
        );
    }
}
