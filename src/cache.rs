//! A bounded, expiring, concurrent map (a `DashMap`) for results worth reusing on the hot path:
//! verified bearer tokens and introspection answers. Entries never outlive their expiry; when
//! full, expired entries go first, then arbitrary ones.

use dashmap::DashMap;
use std::hash::Hash;

/// Keys are hashed with a randomly seeded fast hash (tokens are long; SipHash would dominate).
type Hasher = ahash::RandomState;

/// A bounded cache with per-entry expiry (Unix seconds).
pub struct BoundedCache<K: Eq + Hash, V: Clone> {
    map: DashMap<K, (V, u64), Hasher>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> BoundedCache<K, V> {
    /// A cache of at most `capacity` entries (0 disables it).
    pub fn new(capacity: usize) -> Self {
        BoundedCache {
            map: DashMap::with_hasher(Hasher::new()),
            capacity,
        }
    }

    /// The value for `key`, if present and not expired at `now`.
    pub fn get<Q>(&self, key: &Q, now: u64) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.map.get(key)?;
        let (v, expires) = entry.value();
        (now < *expires).then(|| v.clone())
    }

    /// Stores `value` until `expires` (Unix seconds).
    pub fn insert(&self, key: K, value: V, expires: u64, now: u64) {
        if self.capacity == 0 || expires <= now {
            return;
        }
        if self.map.len() >= self.capacity {
            self.map.retain(|_, (_, e)| *e > now);
            let target = self.capacity - self.capacity / 16 - 1;
            if self.map.len() > target {
                let excess = self.map.len() - target;
                let doomed: Vec<K> = self
                    .map
                    .iter()
                    .take(excess)
                    .map(|e| e.key().clone())
                    .collect();
                for k in doomed {
                    self.map.remove(&k);
                }
            }
        }
        self.map.insert(key, (value, expires));
    }

    /// Removes `key`.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key);
    }

    /// Drops expired entries.
    pub fn sweep(&self, now: u64) {
        self.map.retain(|_, (_, e)| *e > now);
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
        c.insert("past".into(), 1, 5, 10);
        assert_eq!(
            c.get("past", 1),
            None,
            "already expired entries are not stored"
        );
    }
}
