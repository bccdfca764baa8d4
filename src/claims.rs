//! Claims: reading a JWT's payload and looking claims up. Plain functions on JSON, used by
//! sessions (which keep their ID token rather than a second copy of its claims), by the OIDC
//! code, by route rules and consumer mapping, and by the demo.
//!
//! Decoding here never checks a signature: it is only for tokens verified before (a session's
//! ID token), for choosing keys, or for display.

use serde_json::{Map, Value};

/// A JSON object of claims.
pub type ClaimMap = Map<String, Value>;

/// Token bookkeeping claims, which are not part of a user's identity; distributed claims'
/// pointers (`_claim_names`, `_claim_sources`) too: the gateway resolves the groups ones itself
/// (`oidc/groups.rs`) and never follows a URL a token names.
const BOOKKEEPING: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "azp",
    "jti",
    "sid",
    "_claim_names",
    "_claim_sources",
];

/// A JWT's payload, without checking its signature.
pub fn jwt_payload(token: &str) -> Option<ClaimMap> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let mut v = Validation::new(Algorithm::RS256);
    v.insecure_disable_signature_validation();
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<ClaimMap>(token, &DecodingKey::from_secret(&[]), &v)
        .ok()
        .map(|d| d.claims)
}

/// The identity claims of a claim set: without token bookkeeping (times, nonce, hashes).
pub fn identity(mut claims: ClaimMap) -> ClaimMap {
    for k in BOOKKEEPING {
        claims.remove(*k);
    }
    claims
}

/// Identity claims read from an ID token that was verified earlier.
pub fn of_verified_id_token(id_token: &str) -> ClaimMap {
    jwt_payload(id_token).map(identity).unwrap_or_default()
}

/// The value at `path` (`["realm_access", "roles"]`), descending through objects.
pub fn lookup<'a>(claims: &'a ClaimMap, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(claims.get(first)?, |v, key| v.as_object()?.get(key))
}

/// A claim value as header text: strings as they are, numbers and booleans formatted, arrays
/// joined by `,`; objects and null have none.
pub fn to_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(to_text).collect();
            Some(parts.join(","))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_decode_without_a_signature_check_and_lose_bookkeeping() {
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MSwibm9uY2UiOiJuIn0.c2ln";
        let p = jwt_payload(token).unwrap();
        assert_eq!(p["sub"], "alice");
        let id = of_verified_id_token(token);
        assert_eq!(id, json!({"sub": "alice"}).as_object().unwrap().clone());
        assert!(jwt_payload("not a jwt").is_none());
    }

    #[test]
    fn lookup_descends_and_text_joins() {
        let c = json!({"realm_access": {"roles": ["a", "b"]}, "n": 3, "ok": true})
            .as_object()
            .unwrap()
            .clone();
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let roles = lookup(&c, &path(&["realm_access", "roles"])).unwrap();
        assert_eq!(to_text(roles).as_deref(), Some("a,b"));
        assert_eq!(to_text(&c["n"]).as_deref(), Some("3"));
        assert_eq!(to_text(&c["ok"]).as_deref(), Some("true"));
        assert!(lookup(&c, &path(&["realm_access", "missing"])).is_none());
        assert!(lookup(&c, &path(&[])).is_none());
        assert_eq!(to_text(&json!({"x": 1})), None);
    }
}
