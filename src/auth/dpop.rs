//! DPoP (RFC 9449) on bearer routes (`dpop = "allowed" | "required"`): an access token bound to
//! a key (`cnf.jkt`, from the JWT or from introspection) is taken only as `Authorization: DPoP`
//! with a proof, a JWT the client signs with that key for this one request.
//!
//! A proof passes only if it is a `dpop+jwt` signed with an asymmetric algorithm by the public
//! key in its header (never `none`, never HMAC, never a private key); its `htm` and `htu` are
//! the request as the gateway routed it (the canonical target, without query); its `iat` is at
//! most [`PROOF_LIFETIME`] old; its `ath` is the token's hash; its key's thumbprint is the
//! token's `cnf.jkt`; and its `jti` was never seen (the used-once store: the fleet's Redis with
//! `[redis]`, so a replay to another instance is refused too). Server nonces are not offered.

use super::{Authenticator, Denial, Denied};
use crate::auth::bearer::VerifiedToken;
use crate::config::{Binding, RouteAuth};
use crate::crypto::ct_eq;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pingora::http::RequestHeader;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The algorithms a proof may be signed with (`algs` in the challenge).
pub const ALGS: &str = "ES256 RS256 PS256 EdDSA";

/// How long after its `iat` a proof is taken (and its `jti` remembered).
pub const PROOF_LIFETIME: u64 = 60;

/// How far ahead of the gateway's clock a proof's `iat` may be.
const CLOCK_AHEAD: u64 = 5;

/// How the access token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer`
    Bearer,
    /// `Authorization: DPoP`
    Dpop,
}

/// The access token in `Authorization`, and its scheme; `DPoP` is read only where the route
/// takes it (`dpop`).
pub fn presented(headers: &http::HeaderMap, dpop: bool) -> Option<(Scheme, &str)> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((Scheme::Bearer, token))
    } else if dpop && scheme.eq_ignore_ascii_case("dpop") {
        Some((Scheme::Dpop, token))
    } else {
        None
    }
}

/// Why a DPoP-presented (or DPoP-bound) token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// The proof is missing or does not pass (`invalid_dpop_proof`).
    #[error("{0}")]
    Proof(&'static str),
    /// The token and the proof do not belong together (`invalid_token`).
    #[error("{0}")]
    Binding(&'static str),
    /// The proof's `jti` could not be recorded (the used-once store is unreachable).
    #[error("the proof could not be checked right now")]
    Unavailable,
}

impl DpopError {
    /// The RFC 9449 / RFC 6750 error code.
    pub fn code(&self) -> &'static str {
        match self {
            DpopError::Proof(_) => "invalid_dpop_proof",
            DpopError::Binding(_) => "invalid_token",
            DpopError::Unavailable => "temporarily_unavailable",
        }
    }
}

/// A proof that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Its key's RFC 7638 thumbprint.
    pub jkt: String,
    /// Its `jti`.
    pub jti: String,
}

#[derive(serde::Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<f64>,
    ath: Option<String>,
}

/// Verifies `proof` for a `method` request to `htu` carrying `token`, at `now`.
pub fn verify(
    proof: &str,
    method: &str,
    htu: &str,
    token: &str,
    now: u64,
) -> Result<Proof, DpopError> {
    use DpopError::Proof as Bad;
    let raw_header: Value = proof
        .split('.')
        .next()
        .and_then(|h| B64.decode(h).ok())
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(Bad("the proof is not a JWT"))?;
    if raw_header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(Bad("the proof's typ is not dpop+jwt"));
    }
    let jwk = raw_header
        .get("jwk")
        .ok_or(Bad("the proof's header has no jwk"))?;
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|k| jwk.get(k).is_some())
    {
        return Err(Bad("the proof's jwk is not a public key"));
    }
    let header = jsonwebtoken::decode_header(proof).map_err(|_| Bad("the proof is malformed"))?;
    if !matches!(
        header.alg,
        Algorithm::ES256 | Algorithm::RS256 | Algorithm::PS256 | Algorithm::EdDSA
    ) {
        return Err(Bad(
            "the proof's algorithm is not accepted (ES256, RS256, PS256, EdDSA)",
        ));
    }
    let key = header
        .jwk
        .as_ref()
        .and_then(|k| DecodingKey::from_jwk(k).ok())
        .ok_or(Bad("the proof's jwk is not a usable public key"))?;
    let mut v = Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(proof, &key, &v)
        .map_err(|_| Bad("the proof's signature does not verify with its jwk"))?
        .claims;
    if claims.htm.as_deref() != Some(method) {
        return Err(Bad("the proof's htm is not this request's method"));
    }
    if !claims.htu.as_deref().is_some_and(|u| same_target(u, htu)) {
        return Err(Bad("the proof's htu is not this request's URL"));
    }
    let iat = claims.iat.ok_or(Bad("the proof has no iat"))?;
    if iat < now.saturating_sub(PROOF_LIFETIME) as f64 || iat > (now + CLOCK_AHEAD) as f64 {
        return Err(Bad("the proof's iat is too old or in the future"));
    }
    let ath = B64.encode(Sha256::digest(token.as_bytes()));
    if !claims
        .ath
        .as_deref()
        .is_some_and(|a| ct_eq(a.as_bytes(), ath.as_bytes()))
    {
        return Err(Bad("the proof's ath is not this token's hash"));
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(Bad("the proof has no usable jti"))?;
    let jkt = thumbprint(jwk).ok_or(Bad("the proof's jwk is not a usable public key"))?;
    Ok(Proof { jkt, jti })
}

/// Whether a proof's `htu` names `expected` (the routed URL): scheme, host, port and path,
/// after URL normalisation; query and fragment are not part of it (RFC 9449 4.3).
fn same_target(htu: &str, expected: &str) -> bool {
    use openidconnect::url::Url;
    let (Ok(a), Ok(b)) = (Url::parse(htu), Url::parse(expected)) else {
        return false;
    };
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path() == b.path()
}

/// The RFC 7638 thumbprint of a public JWK: SHA-256 of its required members, in order, as
/// compact JSON.
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let members: &[&str] = match jwk.get("kty")?.as_str()? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = String::from("{");
    for (i, m) in members.iter().enumerate() {
        let value = jwk.get(*m)?.as_str()?;
        if i > 0 {
            canonical.push(',');
        }
        canonical.push_str(&serde_json::to_string(m).ok()?);
        canonical.push(':');
        canonical.push_str(&serde_json::to_string(value).ok()?);
    }
    canonical.push('}');
    Some(B64.encode(Sha256::digest(canonical.as_bytes())))
}

impl Authenticator {
    /// The route's sender constraints on a verified token: `certificate_bound` against the
    /// connection's client certificate (`peer_cert`), then `dpop` for a token presented with
    /// `scheme`: a DPoP-bound token needs a proof by its key (`proof_key`, the thumbprint
    /// [`dpop_proof`](Self::dpop_proof) found); a plain bearer token passes only where DPoP is
    /// merely allowed.
    pub(super) fn sender_constrained(
        &self,
        spec: &RouteAuth,
        verified: &VerifiedToken,
        scheme: Option<Scheme>,
        proof_key: Option<&str>,
        peer_cert: Option<&[u8]>,
    ) -> Result<(), Denied> {
        self.certificate_bound(spec, verified, peer_cert)?;
        let (Some(mode), Some(scheme)) = (spec.dpop, scheme) else {
            return Ok(());
        };
        let bound = verified
            .claims
            .get("cnf")
            .and_then(|c| c.get("jkt"))
            .and_then(Value::as_str);
        let refused = match (scheme, bound, proof_key) {
            (Scheme::Bearer, Some(_), _) => DpopError::Binding(
                "the token is bound to a DPoP key: present it as DPoP, with a proof",
            ),
            (Scheme::Bearer, None, _) if mode == Binding::Required => {
                DpopError::Proof("this service takes only DPoP-bound tokens, with a DPoP proof")
            }
            (Scheme::Bearer, None, _) => return Ok(()),
            (Scheme::Dpop, None, _) => {
                DpopError::Binding("the token is not bound to a key (no cnf.jkt)")
            }
            (Scheme::Dpop, Some(b), Some(key)) if ct_eq(b.as_bytes(), key.as_bytes()) => {
                return Ok(());
            }
            (Scheme::Dpop, Some(_), _) => {
                DpopError::Binding("the token is bound to another key than the proof's")
            }
        };
        Err(refusal(spec, refused))
    }

    /// Checks the request's one `DPoP` header for `token` sent to `target` (the canonical
    /// path), and spends its `jti`; the thumbprint of the key that signed it.
    pub(super) async fn dpop_proof(
        &self,
        spec: &RouteAuth,
        req: &RequestHeader,
        token: &str,
        target: &str,
        now: u64,
    ) -> Result<String, Denied> {
        let mut headers = req.headers.get_all("dpop").iter();
        let (Some(proof), None) = (headers.next(), headers.next()) else {
            return Err(refusal(
                spec,
                DpopError::Proof("one DPoP header is required"),
            ));
        };
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let htu = format!(
            "{}://{}{path}",
            self.site_scheme(spec),
            crate::http::headers::request_host(req)
        );
        let proof = proof
            .to_str()
            .map_err(|_| DpopError::Proof("the proof is not a JWT"))
            .and_then(|p| verify(p, req.method.as_str(), &htu, token, now))
            .map_err(|e| refusal(spec, e))?;
        let once = format!("{}\0{}", proof.jkt, proof.jti);
        let ttl = Duration::from_secs(PROOF_LIFETIME + CLOCK_AHEAD);
        match self.proofs.claim("dpop", once.as_bytes(), ttl).await {
            Ok(true) => Ok(proof.jkt),
            Ok(false) => Err(refusal(
                spec,
                DpopError::Proof("the proof was used before (jti)"),
            )),
            Err(e) => {
                tracing::warn!(realm = %spec.realm, "a DPoP proof's jti could not be recorded: {e}");
                Err(refusal(spec, DpopError::Unavailable))
            }
        }
    }
}

/// A refusal for the route's `dpop` (counted).
fn refusal(spec: &RouteAuth, error: DpopError) -> Denied {
    crate::metrics::refused("dpop");
    Denial::Dpop {
        realm: spec.realm.clone(),
        error,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_follow_rfc_7638() {
        // RFC 7638 section 3.1's example.
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        assert_eq!(
            thumbprint(&serde_json::json!({"kty": "oct", "k": "x"})),
            None
        );
    }

    #[test]
    fn the_scheme_decides_what_is_read() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "DPoP abc".parse().unwrap());
        assert_eq!(presented(&h, true), Some((Scheme::Dpop, "abc")));
        assert_eq!(presented(&h, false), None, "not on a route without dpop");
        h.insert("authorization", "bearer abc".parse().unwrap());
        assert_eq!(presented(&h, true), Some((Scheme::Bearer, "abc")));
    }

    #[test]
    fn targets_compare_without_query_and_after_normalisation() {
        assert!(same_target(
            "https://API.example.com:443/orders?x=1",
            "https://api.example.com/orders"
        ));
        assert!(!same_target(
            "https://api.example.com/orders/",
            "https://api.example.com/orders"
        ));
        assert!(!same_target(
            "http://api.example.com/orders",
            "https://api.example.com/orders"
        ));
        assert!(!same_target("not a url", "https://api.example.com/"));
    }

    #[test]
    fn a_proof_must_be_a_signed_dpop_jwt_with_a_public_key() {
        let token = "the.access.token";
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"typ":"dpop+jwt","alg":"none","jwk":{"kty":"EC","crv":"P-256","x":"a","y":"b"}}"#),
            B64.encode(br#"{"htm":"GET"}"#)
        );
        assert!(matches!(
            verify(&none, "GET", "https://a/", token, 0),
            Err(DpopError::Proof(_))
        ));
        let private = format!(
            "{}.{}.x",
            B64.encode(br#"{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"c"}}"#),
            B64.encode(b"{}")
        );
        assert_eq!(
            verify(&private, "GET", "https://a/", token, 0),
            Err(DpopError::Proof("the proof's jwk is not a public key"))
        );
        let hmac = format!(
            "{}.{}.x",
            B64.encode(br#"{"typ":"dpop+jwt","alg":"HS256","jwk":{"kty":"EC","crv":"P-256","x":"a","y":"b"}}"#),
            B64.encode(b"{}")
        );
        assert!(matches!(
            verify(&hmac, "GET", "https://a/", token, 0),
            Err(DpopError::Proof(_))
        ));
        let typ = format!(
            "{}.{}.x",
            B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#),
            B64.encode(b"{}")
        );
        assert_eq!(
            verify(&typ, "GET", "https://a/", token, 0),
            Err(DpopError::Proof("the proof's typ is not dpop+jwt"))
        );
    }
}
