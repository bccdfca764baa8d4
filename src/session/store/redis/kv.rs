//! The Redis store's key-value layer: sealed session blobs under `s:{tag}` with a version
//! (compare-and-set scripts), the revocation marks read with them, the indexes by user and IdP
//! session, and the invalidations other instances hear. It knows nothing of cookies, keys or
//! what a session holds; the ticket layer (`mod.rs`) seals and opens.

use crate::fleet::{Fleet, FleetError, Invalidation};
use crate::session::revocations::{self, MarkKeys};
use std::sync::{Arc, LazyLock};

/// Creates a session that must not exist yet.
static CREATE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', 1, 'd', ARGV[1], 'm', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1",
    )
});

/// Writes the next version of a session that still exists and is still at version ARGV[1]
/// (`0`: any version). Returns the new version, -1 when it is gone, -2 when it moved on.
static UPDATE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
if ARGV[1] ~= '0' and v ~= ARGV[1] then return -2 end
local n = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'v', n, 'd', ARGV[2], 'm', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n",
    )
});

/// A session's `v` (version) and `d` (sealed data) in Redis; its hash also holds `m`, what
/// the admin API lists, sealed.
type Fields = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A stored session: its version and its sealed bytes.
pub(super) struct Stored {
    /// Incremented by every update.
    pub version: u64,
    /// What the ticket layer sealed.
    pub sealed: Vec<u8>,
}

/// What an update found.
pub(super) enum Updated {
    /// Written as this version.
    Version(u64),
    /// The session no longer exists (logged out).
    Gone,
    /// Another writer moved it to another version first.
    Moved,
}

/// Sessions as sealed blobs in the fleet's Redis.
pub(super) struct SessionKv {
    fleet: Arc<Fleet>,
    /// Redis is a Cluster (no multi-slot pipelines).
    cluster: bool,
}

impl SessionKv {
    pub(super) fn new(fleet: Arc<Fleet>) -> SessionKv {
        SessionKv {
            cluster: matches!(
                fleet.settings.topology,
                crate::config::RedisTopology::Cluster(_)
            ),
            fleet,
        }
    }

    /// The fleet this layer writes to.
    pub(super) fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Reads the session `tag`, and the marks at `known` in the same round trip when they
    /// are given (not on a Cluster, where they live in other slots; `None` then).
    pub(super) async fn read(
        &self,
        tag: &[u8; 32],
        known: Option<&MarkKeys>,
    ) -> Result<(Option<Stored>, Option<Vec<Option<u64>>>), FleetError> {
        // Only the version and the sealed session: the listing (`m`) is the admin API's.
        let hmget = redis::cmd("HMGET")
            .arg(self.fleet.key("s", tag))
            .arg("v")
            .arg("d")
            .clone();
        let (fields, marks): (Fields, _) = match known.filter(|_| !self.cluster) {
            Some(keys) => {
                let mut p = redis::pipe();
                p.add_command(hmget).add_command(revocations::mget(keys));
                let (fields, marks) = self.fleet.redis.pipeline("HMGET", &p).await?;
                (fields, Some(marks))
            }
            None => (self.fleet.redis.query("HMGET", &hmget).await?, None),
        };
        let (version, sealed) = fields;
        let stored = match (version.as_deref().and_then(parse_version), sealed) {
            (Some(version), Some(sealed)) => Some(Stored { version, sealed }),
            _ => None,
        };
        Ok((stored, marks))
    }

    /// The version of the session `tag` (`None`: gone), and the marks at `keys`: one round
    /// trip, except on a Cluster, where the marks live in other slots.
    pub(super) async fn version(
        &self,
        tag: &[u8; 32],
        keys: &MarkKeys,
    ) -> Result<(Option<u64>, Vec<Option<u64>>), FleetError> {
        let hget = redis::cmd("HGET")
            .arg(self.fleet.key("s", tag))
            .arg("v")
            .clone();
        let (version, marks): (Option<Vec<u8>>, _) = if self.cluster {
            let version = self.fleet.redis.query("HGET", &hget).await?;
            (version, self.marks(keys).await?)
        } else {
            let mut p = redis::pipe();
            p.add_command(hget).add_command(revocations::mget(keys));
            self.fleet.redis.pipeline("HGET", &p).await?
        };
        Ok((version.as_deref().and_then(parse_version), marks))
    }

    /// The marks at `keys`.
    pub(super) async fn marks(&self, keys: &MarkKeys) -> Result<Vec<Option<u64>>, FleetError> {
        self.fleet
            .redis
            .query("MGET", &revocations::mget(keys))
            .await
    }

    /// Stores a new session `tag` (and its sealed listing `meta`) for `ttl_ms`; false if one
    /// exists already.
    pub(super) async fn create(
        &self,
        tag: &[u8; 32],
        sealed: &[u8],
        meta: &str,
        ttl_ms: u64,
    ) -> Result<bool, FleetError> {
        let created: i64 = self
            .fleet
            .redis
            .script(
                "EVALSHA",
                CREATE
                    .key(self.fleet.key("s", tag))
                    .arg(sealed)
                    .arg(ttl_ms)
                    .arg(meta),
            )
            .await?;
        Ok(created == 1)
    }

    /// Writes the next version of session `tag`, if it is still at `version`, and tells the
    /// other instances to drop their copy (a lost message only keeps it for their cache time).
    pub(super) async fn update(
        &self,
        tag: &[u8; 32],
        version: u64,
        sealed: &[u8],
        meta: &str,
        ttl_ms: u64,
    ) -> Result<Updated, FleetError> {
        let written: i64 = self
            .fleet
            .redis
            .script(
                "EVALSHA",
                UPDATE
                    .key(self.fleet.key("s", tag))
                    .arg(version)
                    .arg(sealed)
                    .arg(ttl_ms)
                    .arg(meta),
            )
            .await?;
        Ok(match written {
            -1 => Updated::Gone,
            -2 => Updated::Moved,
            n => {
                let _ = self.fleet.publish(&Invalidation::Session(*tag)).await;
                Updated::Version(u64::try_from(n).unwrap_or(0))
            }
        })
    }

    /// Deletes the sessions named `tags`, then tells every instance.
    pub(super) async fn delete(&self, tags: &[[u8; 32]]) -> Result<(), FleetError> {
        if tags.is_empty() {
            return Ok(());
        }
        let mut del = redis::cmd("DEL");
        for t in tags {
            del.arg(self.fleet.key("s", t));
        }
        self.fleet.redis.query::<i64>("DEL", &del).await?;
        for t in tags {
            self.fleet.publish(&Invalidation::Session(*t)).await?;
        }
        Ok(())
    }

    /// Adds session `tag` to the index of each of `subjects` (sets living `keep_secs`, as long
    /// as the longest session in them).
    pub(super) async fn index(
        &self,
        tag: &[u8; 32],
        subjects: impl Iterator<Item = Vec<u8>>,
        keep_secs: u64,
    ) -> Result<(), FleetError> {
        for subject in subjects {
            let key = self.fleet.key("ix", &self.fleet.name(0, &subject));
            let mut p = redis::pipe();
            p.cmd("SADD")
                .arg(&key)
                .arg(&tag[..])
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(keep_secs)
                .arg("GT")
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(keep_secs)
                .arg("NX")
                .ignore();
            self.fleet.redis.pipeline::<()>("SADD", &p).await?;
        }
        Ok(())
    }

    /// Takes the index of `subject` under naming key `index`: the tags in it (none when Redis
    /// cannot say), and the index itself deleted.
    pub(super) async fn take_index(&self, subject: &[u8], index: usize) -> Vec<[u8; 32]> {
        let found = self.indexed(subject, index).await;
        let key = self.fleet.key("ix", &self.fleet.name(index, subject));
        let _ = self
            .fleet
            .redis
            .query::<i64>("DEL", redis::cmd("DEL").arg(&key))
            .await;
        found.unwrap_or_default()
    }

    /// The tags in the index of `subject` under naming key `index`.
    pub(super) async fn indexed(
        &self,
        subject: &[u8],
        index: usize,
    ) -> Result<Vec<[u8; 32]>, FleetError> {
        let key = self.fleet.key("ix", &self.fleet.name(index, subject));
        let found: Vec<Vec<u8>> = self
            .fleet
            .redis
            .query("SMEMBERS", redis::cmd("SMEMBERS").arg(&key))
            .await?;
        Ok(found
            .iter()
            .filter_map(|t| <[u8; 32]>::try_from(t.as_slice()).ok())
            .collect())
    }

    /// The sealed listing of session `tag` (`None`: gone, or saved before listings were kept).
    pub(super) async fn meta(&self, tag: &[u8; 32]) -> Result<Option<String>, FleetError> {
        self.fleet
            .redis
            .query(
                "HGET",
                redis::cmd("HGET").arg(self.fleet.key("s", tag)).arg("m"),
            )
            .await
    }
}

/// A stored version (`v`, a decimal integer).
fn parse_version(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}
