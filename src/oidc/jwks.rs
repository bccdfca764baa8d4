//! A provider's signing keys, in the form `jsonwebtoken` verifies with. The algorithm of a key
//! comes from the key (its `alg`, else its type and curve), never from a token; symmetric
//! (`oct`) and encryption keys are never used.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;

/// A verification key and the one algorithm it may be used with.
pub struct SigningKey {
    /// The key.
    pub key: DecodingKey,
    /// Its algorithm.
    pub alg: Algorithm,
    /// Whether the key named its `alg`. An RSA key that did not may also verify the other RSA
    /// algorithms, where the caller has a list of those the provider uses (ID tokens).
    pub explicit: bool,
}

impl SigningKey {
    /// Whether a token signed with `alg` may be checked with this key; `advertised` is the
    /// caller's list of algorithms the provider signs with, if it has one.
    pub fn suits(&self, alg: Algorithm, advertised: Option<&[Algorithm]>) -> bool {
        self.alg == alg
            || (!self.explicit
                && is_rsa(self.alg)
                && is_rsa(alg)
                && advertised.is_some_and(|a| a.contains(&alg)))
    }
}

/// Whether `alg` is an RSA signature (PKCS#1 v1.5 or PSS).
fn is_rsa(alg: Algorithm) -> bool {
    use Algorithm::*;
    matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
}

/// A provider's signing keys, by `kid`.
#[derive(Default)]
pub struct SigningKeys {
    by_kid: HashMap<String, SigningKey>,
    /// Keys published without a `kid`.
    anonymous: Vec<SigningKey>,
}

impl SigningKeys {
    /// Keys from a JWKS (as JSON); keys that cannot verify signatures are skipped.
    pub fn from_jwks(jwks: &serde_json::Value) -> SigningKeys {
        let mut out = SigningKeys::default();
        for raw in jwks["keys"].as_array().into_iter().flatten() {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Some(alg) = algorithm(&jwk) else { continue };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let k = SigningKey {
                key,
                alg,
                explicit: jwk.common.key_algorithm.is_some(),
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    out.by_kid.insert(kid.clone(), k);
                }
                None => out.anonymous.push(k),
            }
        }
        out
    }

    /// The key for a token's `kid` (or the only key without one).
    pub fn find(&self, kid: Option<&str>) -> Option<&SigningKey> {
        match kid {
            Some(k) => self.by_kid.get(k),
            None if self.anonymous.len() == 1 && self.by_kid.is_empty() => self.anonymous.first(),
            None => None,
        }
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    /// Whether there is no usable key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(a) = &jwk.common.key_algorithm {
        return match a {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            // Symmetric and encryption algorithms never verify access tokens.
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::OctetKey(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_take_their_algorithm_from_the_key_and_skip_symmetric_ones() {
        let jwks = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0", "alg": "HS256"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"}
        ]});
        let keys = SigningKeys::from_jwks(&jwks);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.find(Some("r")).unwrap().alg, Algorithm::RS256);
        assert!(keys.find(Some("h")).is_none());
        assert!(keys.find(Some("enc")).is_none());
        assert!(keys.find(None).is_none());
    }
}
