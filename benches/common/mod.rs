//! Shared by the criterion benches: the test signing key and a provider discovered with it,
//! so benches verify real signatures without an IdP.

use oidc_gateway::oidc::types::Metadata;

/// The test keys under `tests/e2e/support/keys` (key1: RSA, used to sign bench tokens).
pub const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/support/keys");

/// Discovery metadata of `https://idp.example.com` whose JWKS holds the public half of key1.
pub fn idp_metadata() -> Metadata {
    let jwk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{KEYS}/key1.jwk.json")).unwrap())
            .unwrap();
    let metadata: Metadata = serde_json::from_value(serde_json::json!({
        "issuer": "https://idp.example.com",
        "authorization_endpoint": "https://idp.example.com/authorize",
        "token_endpoint": "https://idp.example.com/token",
        "jwks_uri": "https://idp.example.com/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .unwrap();
    metadata.set_jwks(serde_json::from_value(serde_json::json!({ "keys": [jwk] })).unwrap())
}
