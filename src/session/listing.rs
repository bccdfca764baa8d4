//! What the admin API shows of a session: whose it is, at which provider, when it was created,
//! last seen and ends, and the provider's session id. Never a token, a claim or a cookie.

use super::{SessionData, Timeouts};
use serde::{Deserialize, Serialize};

/// One session, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Its name in revocation marks (hex): what `DELETE /admin/sessions/{id}` takes.
    pub id: String,
    /// The provider's name.
    pub provider: String,
    /// The user.
    pub sub: String,
    /// Sign-in (Unix seconds).
    pub created: u64,
    /// The last request seen (memory store), or the last renewal (Redis store: it is written
    /// only every quarter of the idle timeout).
    pub last_seen: u64,
    /// When it ends unless used again (the earliest of its three timeouts).
    pub expires: u64,
    /// The ID token's `sid` (the provider's session), if it has one.
    pub idp_sid: Option<String>,
}

impl SessionInfo {
    /// The description of the session named `id` holding `data`, last seen at `last_seen`.
    pub fn of(id: &[u8; 32], data: &SessionData, last_seen: u64, t: &Timeouts) -> SessionInfo {
        let expires = data
            .created_at
            .saturating_add(t.absolute.as_secs())
            .min(data.renewed_at.saturating_add(t.rolling.as_secs()))
            .min(last_seen.saturating_add(t.idle.as_secs()));
        SessionInfo {
            id: crate::fleet::hex(id),
            provider: data.provider.to_string(),
            sub: data.sub.to_string(),
            created: data.created_at,
            last_seen,
            expires,
            idp_sid: super::revocations::idp_sid(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_listing_ends_at_the_first_of_its_timeouts_and_holds_no_token() {
        let mut d = crate::session::tests::data(1_000);
        d.renewed_at = 1_500;
        let t = Timeouts {
            absolute: Duration::from_secs(10_000),
            rolling: Duration::from_secs(2_000),
            idle: Duration::from_secs(600),
        };
        let info = SessionInfo::of(&[0xab; 32], &d, 1_700, &t);
        assert_eq!(info.expires, 2_300, "idle: last seen + 600");
        assert_eq!(
            SessionInfo::of(&[0xab; 32], &d, 3_000, &t).expires,
            3_500,
            "rolling"
        );
        assert_eq!((info.created, info.last_seen), (1_000, 1_700));
        assert_eq!(info.id, "ab".repeat(32));
        assert_eq!((info.provider.as_str(), info.sub.as_str()), ("p", "alice"));
        let json = serde_json::to_string(&info).unwrap();
        assert!(
            !json.contains("\"at\"") && !json.contains("email"),
            "{json}"
        );
    }
}
