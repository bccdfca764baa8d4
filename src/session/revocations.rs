//! Revocations: sessions ended before their time (logout, back-channel logout), remembered
//! until they would have expired anyway, so their cookies are refused everywhere — by this
//! instance, by the others of a fleet, and after a restart.
//!
//! A mark names what it revokes with an HMAC ([`Names`]), never in clear: one session (our
//! id), an IdP session (provider and the ID token's `sid`), or a user (provider and `sub`). It
//! holds the time it was made: a session issued before a mark for its user or IdP session is
//! refused, one issued after it is not (the user logged in again).
//!
//! Where marks outlive the process:
//! - `[redis]`: a key per mark (read by the Redis store with each session it fetches), a sorted
//!   set every instance loads when it starts and whenever its subscription may have missed
//!   something, and a message so the other instances apply the mark at once;
//! - otherwise a file under `[server] state_dir`, so one instance keeps them across restarts;
//! - otherwise nowhere, and `check` warns.
//!
//! The hot path pays two atomic loads: a session remembers the revocation epoch it was last
//! checked at, and only after a new mark is it checked again (a few HMACs, once).

use crate::clock;
use crate::crypto::Names;
use crate::fleet::{Fleet, FleetError, Invalidation, hex, unhex};
use crate::session::{Session, SessionData, Sid};
use dashmap::DashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a mark revokes.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// One gateway session, by its id.
    Session(&'a Sid),
    /// Every session of one IdP session: provider name and the ID token's `sid`.
    IdpSession(&'a str, &'a str),
    /// Every session of one user: provider name and `sub`.
    User(&'a str, &'a str),
}

impl Subject<'_> {
    /// The bytes its name is made from (kinds are kept apart by a prefix).
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Subject::Session(sid) => sid.to_vec(),
            Subject::IdpSession(provider, sid) => format!("i\0{provider}\0{sid}").into_bytes(),
            Subject::User(provider, sub) => format!("u\0{provider}\0{sub}").into_bytes(),
        }
    }

    /// Whether a mark made at `at` ends a session created at `created_at`. A session's own
    /// mark always does; a user's or IdP session's only for sessions issued until then.
    fn ends(&self, at: u64, created_at: u64) -> bool {
        matches!(self, Subject::Session(_)) || at >= created_at
    }
}

/// Every subject that can revoke a session: itself, its IdP session, its user.
pub fn subjects<'a>(
    sid: &'a Sid,
    data: &'a SessionData,
    idp_sid: Option<&'a str>,
) -> Vec<Subject<'a>> {
    let mut out = vec![
        Subject::Session(sid),
        Subject::User(&data.provider, &data.sub),
    ];
    if let Some(s) = idp_sid {
        out.push(Subject::IdpSession(&data.provider, s));
    }
    out
}

/// The ID token's `sid` claim (the IdP's session), if it has one (read from the token: it is
/// bookkeeping, not one of the session's identity claims).
pub fn idp_sid(data: &SessionData) -> Option<String> {
    crate::claims::jwt_payload(&data.id_token.text())?
        .get("sid")?
        .as_str()
        .map(str::to_owned)
}

/// A revocation: when it was made and how long it must be kept (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// When it was made.
    pub at: u64,
    /// When every session it can end has expired anyway.
    pub until: u64,
}

/// Where marks outlive the process.
enum Keep {
    Nowhere,
    File(PathBuf),
    Fleet(Arc<Fleet>),
}

/// The revocations this instance knows.
pub struct Revocations {
    names: Names,
    marks: DashMap<[u8; 32], Mark>,
    /// Bumped by every new mark: sessions checked at an older epoch are checked again.
    epoch: AtomicU64,
    keep: Keep,
    /// Serialises writes to the file.
    file_lock: std::sync::Mutex<()>,
}

/// The file under `state_dir`.
const FILE: &str = "revocations";

impl Revocations {
    /// Revocations named with `names`, kept in Redis (`fleet`), else in `state_dir`, else in
    /// memory only. Reads what the file holds.
    pub fn new(
        names: Names,
        fleet: Option<Arc<Fleet>>,
        state_dir: Option<&Path>,
    ) -> Result<Revocations, String> {
        let keep = match (fleet, state_dir) {
            (Some(f), _) => Keep::Fleet(f),
            (None, Some(dir)) => Keep::File(dir.join(FILE)),
            (None, None) => Keep::Nowhere,
        };
        let r = Revocations {
            names,
            marks: DashMap::new(),
            epoch: AtomicU64::new(1),
            keep,
            file_lock: std::sync::Mutex::new(()),
        };
        if let (Keep::File(path), Some(dir)) = (&r.keep, state_dir) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create state_dir {}: {e}", dir.display()))?;
            r.read_file(path)?;
        }
        Ok(r)
    }

    /// Records `mark` for the name `tag` (from another instance, the file or Redis).
    pub fn apply(&self, tag: [u8; 32], mark: Mark) {
        let mut entry = self.marks.entry(tag).or_insert(mark);
        entry.at = entry.at.max(mark.at);
        entry.until = entry.until.max(mark.until);
        drop(entry);
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// Revokes `subject` now, until `until`: here at once, then where marks are kept (and, in
    /// a fleet, on every instance). An error means the mark is only known here.
    pub async fn revoke(&self, subject: Subject<'_>, until: u64) -> Result<(), String> {
        Box::pin(self.revoke_named(self.names.name(0, &subject.bytes()), until)).await
    }

    /// The name marks give the session `sid` (the admin API's session id).
    pub fn session_name(&self, sid: &Sid) -> [u8; 32] {
        self.names.name(0, &Subject::Session(sid).bytes())
    }

    /// Revokes what is named `tag` (a session's name from [`session_name`](Self::session_name)
    /// or the Redis store), as [`revoke`](Self::revoke) does.
    pub async fn revoke_named(&self, tag: [u8; 32], until: u64) -> Result<(), String> {
        let mark = Mark {
            at: clock::now(),
            until,
        };
        self.apply(tag, mark);
        match &self.keep {
            Keep::Nowhere => Ok(()),
            Keep::File(path) => self.append(path, &tag, mark),
            Keep::Fleet(fleet) => share(fleet, &tag, mark).await.map_err(|e| e.to_string()),
        }
    }

    /// Whether `session` was revoked: checked again only after a new mark.
    pub fn is_revoked(&self, session: &Session) -> bool {
        let epoch = self.epoch.load(Ordering::Acquire);
        if session.revocations_checked.load(Ordering::Relaxed) == epoch {
            return false;
        }
        let revoked = self.ends(&session.sid, &session.data);
        if !revoked {
            session.revocations_checked.store(epoch, Ordering::Relaxed);
        }
        revoked
    }

    /// Whether a mark known here ends the session `sid` with `data`.
    pub fn ends(&self, sid: &Sid, data: &SessionData) -> bool {
        if self.marks.is_empty() {
            return false;
        }
        let idp = idp_sid(data);
        subjects(sid, data, idp.as_deref()).iter().any(|s| {
            let bytes = s.bytes();
            (0..self.names.count()).any(|i| {
                self.marks
                    .get(&self.names.name(i, &bytes))
                    .is_some_and(|m| s.ends(m.at, data.created_at))
            })
        })
    }

    /// Reads every mark kept in Redis (at start, and when messages may have been missed).
    pub async fn load_shared(&self) -> Result<usize, FleetError> {
        let Keep::Fleet(fleet) = &self.keep else {
            return Ok(0);
        };
        let members: Vec<(String, u64)> = fleet
            .redis
            .query(
                "ZRANGE",
                redis::cmd("ZRANGE")
                    .arg(log_key(fleet))
                    .arg(clock::now())
                    .arg("+inf")
                    .arg("BYSCORE")
                    .arg("WITHSCORES"),
            )
            .await?;
        let mut n = 0;
        for (member, until) in members {
            if let Some((tag, at)) = parse_member(&member) {
                self.apply(tag, Mark { at, until });
                n += 1;
            }
        }
        Ok(n)
    }

    /// Forgets marks that can no longer end anything; rewrites the file when some went.
    pub fn sweep(&self, now: u64) {
        let before = self.marks.len();
        self.marks.retain(|_, m| m.until > now);
        if self.marks.len() < before
            && let Keep::File(path) = &self.keep
            && let Err(e) = self.rewrite(path)
        {
            tracing::warn!("{e}");
        }
    }

    /// Marks known here.
    pub fn len(&self) -> usize {
        self.marks.len()
    }

    /// Whether no mark is known here.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    fn read_file(&self, path: &Path) -> Result<(), String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let now = clock::now();
        for line in text.lines() {
            // A torn last line (a crash while appending) is skipped, not fatal.
            let mut f = line.split(' ');
            let (Some(tag), Some(at), Some(until)) = (
                f.next().and_then(unhex),
                f.next().and_then(|v| v.parse().ok()),
                f.next().and_then(|v| v.parse::<u64>().ok()),
            ) else {
                continue;
            };
            if until > now {
                self.apply(tag, Mark { at, until });
            }
        }
        Ok(())
    }

    fn append(&self, path: &Path, tag: &[u8; 32], m: Mark) -> Result<(), String> {
        let _guard = self.file_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        writeln!(f, "{} {} {}", hex(tag), m.at, m.until)
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn rewrite(&self, path: &Path) -> Result<(), String> {
        let _guard = self.file_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        for e in self.marks.iter() {
            text.push_str(&format!("{} {} {}\n", hex(e.key()), e.at, e.until));
        }
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot rewrite {}: {e}", path.display()))
    }
}

/// The sorted set of every live mark (member `hex:at`, score `until`).
fn log_key(fleet: &Fleet) -> String {
    format!("{}revocations", fleet.settings.key_prefix)
}

fn parse_member(member: &str) -> Option<([u8; 32], u64)> {
    let (tag, at) = member.split_once(':')?;
    Some((unhex(tag)?, at.parse().ok()?))
}

/// Writes `mark` to Redis: the mark's own key (same slot as the session it names), the log,
/// then the message to every instance.
async fn share(fleet: &Fleet, tag: &[u8; 32], m: Mark) -> Result<(), FleetError> {
    let now = clock::now();
    let ttl = m.until.saturating_sub(now).max(1);
    fleet
        .redis
        .query::<()>(
            "SET",
            redis::cmd("SET")
                .arg(fleet.key("rv", tag))
                .arg(m.at)
                .arg("EX")
                .arg(ttl),
        )
        .await?;
    let mut p = redis::pipe();
    p.cmd("ZADD")
        .arg(log_key(fleet))
        .arg(m.until)
        .arg(format!("{}:{}", hex(tag), m.at))
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(log_key(fleet))
        .arg("-inf")
        .arg(now)
        .ignore();
    fleet.redis.pipeline::<()>("ZADD", &p).await?;
    fleet
        .publish(&Invalidation::Revoked {
            tag: *tag,
            at: m.at,
            until: m.until,
        })
        .await
}

/// The Redis keys of every mark that could end a session, each with whether any mark there
/// ends it (its own) or only a mark made after the session was issued (its user's, its IdP
/// session's). Fixed for a session: the Redis store remembers them.
pub type MarkKeys = std::sync::Arc<[(String, bool)]>;

/// The [`MarkKeys`] of the session `sid` with `data`.
pub fn mark_keys(fleet: &Fleet, sid: &Sid, data: &SessionData) -> MarkKeys {
    let idp = idp_sid(data);
    let mut keys = Vec::new();
    for s in subjects(sid, data, idp.as_deref()) {
        let bytes = s.bytes();
        for i in 0..fleet.names.count() {
            keys.push((
                fleet.key("rv", &fleet.name(i, &bytes)),
                matches!(s, Subject::Session(_)),
            ));
        }
    }
    keys.into()
}

/// `MGET` of `keys`: a Cluster client splits it by slot (a pipeline of GETs would be refused
/// as crossing slots).
pub fn mget(keys: &MarkKeys) -> redis::Cmd {
    let mut mget = redis::cmd("MGET");
    for (k, _) in keys.iter() {
        mget.arg(k);
    }
    mget
}

/// Whether the marks read for `keys` end a session created at `created_at`.
pub fn ended_by(keys: &MarkKeys, marks: &[Option<u64>], created_at: u64) -> bool {
    keys.iter()
        .zip(marks)
        .any(|((_, own), m)| m.is_some_and(|at| *own || at >= created_at))
}

/// Whether a mark in Redis ends the session `sid` with `data` (the Redis store asks with every
/// session it fetches, so a missed message cannot keep a revoked session alive).
pub async fn ended_in_redis(
    fleet: &Fleet,
    sid: &Sid,
    data: &SessionData,
) -> Result<bool, FleetError> {
    let keys = mark_keys(fleet, sid, data);
    let marks: Vec<Option<u64>> = fleet.redis.query("MGET", &mget(&keys)).await?;
    Ok(ended_by(&keys, &marks, data.created_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::session::tests::data;

    fn names() -> Names {
        Names::new(&[Secret::new("revocation-test-secret-0123456789abcdef")])
    }

    #[tokio::test]
    async fn a_user_mark_ends_older_sessions_only_and_the_epoch_rechecks_cached_ones() {
        let r = Revocations::new(names(), None, None).unwrap();
        let now = clock::now();
        let old = Session::new([1; 32], data(now - 100), None);
        let other = Session::new([2; 32], data(now - 100), None);
        assert!(!r.is_revoked(&old));
        r.revoke(Subject::User(&old.data.provider, &old.data.sub), now + 3600)
            .await
            .unwrap();
        assert!(r.is_revoked(&old), "checked again after the new mark");
        let mut later = data(now + 1);
        later.sub = "someone".into();
        assert!(!r.ends(&[3; 32], &later));
        later.sub = old.data.sub.clone();
        assert!(!r.ends(&[3; 32], &later), "a login after the mark survives");
        r.revoke(Subject::Session(&other.sid), now + 3600)
            .await
            .unwrap();
        assert!(r.ends(&other.sid, &other.data));
    }

    #[tokio::test]
    async fn the_file_keeps_marks_across_restarts_and_sweeps_expired_ones() {
        let dir = tempfile::tempdir().unwrap();
        let now = clock::now();
        let s = Session::new([9; 32], data(now - 10), None);
        {
            let r = Revocations::new(names(), None, Some(dir.path())).unwrap();
            r.revoke(Subject::Session(&s.sid), now + 3600)
                .await
                .unwrap();
            // Far enough ahead that a second ticking over before the reload keeps it.
            r.revoke(Subject::Session(&[8; 32]), now + 30)
                .await
                .unwrap();
        }
        // A torn line from a crash is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap()
            .write_all(b"abc")
            .unwrap();
        let r = Revocations::new(names(), None, Some(dir.path())).unwrap();
        assert!(r.ends(&s.sid, &s.data));
        assert_eq!(r.len(), 2);
        r.sweep(now + 31);
        assert_eq!(r.len(), 1);
        let again = Revocations::new(names(), None, Some(dir.path())).unwrap();
        assert_eq!(again.len(), 1);
        assert!(again.ends(&s.sid, &s.data));
        // Another secret's names do not match.
        let other = Revocations::new(
            Names::new(&[Secret::new("another-secret-another-secret-0123456789")]),
            None,
            Some(dir.path()),
        )
        .unwrap();
        assert!(!other.ends(&s.sid, &s.data));
    }
}
