//! The signed identity assertion for upstreams (`[identity_assertion]`), as Pomerium's
//! `X-Pomerium-Jwt-Assertion` and Google IAP's `x-goog-iap-jwt-assertion`: a short-lived ES256
//! JWT stating who the user is, so an upstream reachable by others too can verify that a request
//! came through the gateway. The public keys are published as a JWKS.
//!
//! Signing costs tens of microseconds, so a token is reused for half its lifetime by everyone
//! whose assertion would read the same (same audience, provider, subject, email and groups).

use crate::cache::BoundedCache;
use crate::clock::now;
use crate::config::IdentityAssertion;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Distinct assertions kept for reuse.
const CACHE_SIZE: usize = 100_000;
/// The generated key's file under `state_dir`.
const GENERATED_KEY: &str = "identity-assertion-key.pem";

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

/// Signs and caches identity assertions.
pub struct IdentitySigner {
    cfg: IdentityAssertion,
    keys: Vec<SigningKey>,
    cache: BoundedCache<[u8; 32], http::HeaderValue>,
}

impl IdentitySigner {
    /// Loads `key_files`, or the key kept in `state_dir` (generated and written on first start).
    pub fn new(
        cfg: &IdentityAssertion,
        state_dir: Option<&Path>,
    ) -> Result<IdentitySigner, String> {
        let pems: Vec<Vec<u8>> = if cfg.key_files.is_empty() {
            let dir = state_dir.ok_or("identity_assertion: no key_files and no state_dir")?;
            vec![generated_key(dir)?]
        } else {
            cfg.key_files
                .iter()
                .map(|f| std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display())))
                .collect::<Result<_, _>>()?
        };
        let keys = pems
            .iter()
            .zip(
                cfg.key_files
                    .iter()
                    .map(|f| f.display().to_string())
                    .chain(std::iter::repeat(GENERATED_KEY.to_owned())),
            )
            .map(|(pem, name)| {
                signing_key(pem).map_err(|e| format!("identity_assertion key {name}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IdentitySigner {
            cfg: cfg.clone(),
            keys,
            cache: BoundedCache::new(CACHE_SIZE),
        })
    }

    /// The header it is sent in.
    pub fn header(&self) -> &http::HeaderName {
        &self.cfg.header
    }

    /// Where the JWKS is served.
    pub fn jwks_path(&self) -> &str {
        &self.cfg.jwks_path
    }

    /// Every public key, the signing one first.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// The assertion for `sub` of the provider `idp` (its issuer) with `claims`, for a request
    /// forwarded to the upstream named `upstream` (the audience unless one is configured;
    /// never anything the client sent): a cached one while it has at least half its lifetime
    /// left.
    pub fn assertion(
        &self,
        sub: &str,
        idp: &str,
        claims: Option<&Map<String, Value>>,
        upstream: &str,
    ) -> Option<http::HeaderValue> {
        let aud = self.cfg.audience.as_deref().unwrap_or(upstream);
        let claim = |name: &str| {
            claims
                .and_then(|c| c.get(name))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let (email, groups) = (claim("email"), claim("groups"));
        let mut digest = Sha256::new();
        for part in [aud, idp, sub, &email.to_string(), &groups.to_string()] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part.as_bytes());
        }
        let id: [u8; 32] = digest.finalize().into();
        let now = now();
        if let Some(v) = self.cache.get(&id, now) {
            return Some(v);
        }
        let lifetime = self.cfg.lifetime.as_secs();
        // `idp` scopes `sub`: the same subject at two providers is two people.
        let mut body = json!({
            "iss": self.cfg.issuer, "aud": aud, "sub": sub, "idp": idp,
            "iat": now, "exp": now + lifetime,
            "jti": B64.encode(crate::crypto::random_bytes::<16>()),
        });
        if !email.is_null() {
            body["email"] = email;
        }
        if !groups.is_null() {
            body["groups"] = groups;
        }
        let key = self.keys.first()?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".into());
        let jwt = jsonwebtoken::encode(&header, &body, &key.encoding).ok()?;
        let value = http::HeaderValue::from_str(&jwt).ok()?;
        self.cache
            .insert(id, value.clone(), now + lifetime / 2, now);
        Some(value)
    }
}

/// The key kept under `dir`, generated (and written, owner-only) when there is none.
fn generated_key(dir: &Path) -> Result<Vec<u8>, String> {
    let path = dir.join(GENERATED_KEY);
    match std::fs::read(&path) {
        Ok(pem) => return Ok(pem),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot read {}: {e}", path.display()));
        }
        Err(_) => {}
    }
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "cannot generate a P-256 key".to_owned())?;
    let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    write_private(&tmp, pem.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "generated the identity assertion signing key");
    Ok(pem.into_bytes())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A P-256 signing key from PEM (PKCS#8), with its public JWK and a `kid` derived from it.
fn signing_key(pem: &[u8]) -> Result<SigningKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text")?;
    let der: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der.trim())
        .map_err(|_| "not PEM")?;
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        .map_err(|_| "not a PKCS#8 EC P-256 private key")?;
    let public = pair.public_key().as_ref();
    // Uncompressed point: 0x04 || X || Y.
    let (x, y) = (&public[1..33], &public[33..65]);
    let kid = B64.encode(&Sha256::digest(public)[..12]);
    Ok(SigningKey {
        encoding: EncodingKey::from_ec_der(&der),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
            "kid": kid, "x": B64.encode(x), "y": B64.encode(y),
        }),
        kid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(audience: Option<&str>) -> (IdentitySigner, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = IdentityAssertion {
            header: http::HeaderName::from_static("x-gateway-assertion"),
            issuer: "https://gateway.test".into(),
            audience: audience.map(str::to_owned),
            lifetime: std::time::Duration::from_secs(60),
            key_files: Vec::new(),
            jwks_path: "/jwks.json".into(),
        };
        (IdentitySigner::new(&cfg, Some(dir.path())).unwrap(), dir)
    }

    fn claims(v: &http::HeaderValue) -> Value {
        let payload = v.to_str().unwrap().split('.').nth(1).unwrap();
        serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn the_audience_is_configuration_and_the_provider_scopes_the_subject() {
        let (s, _dir) = signer(None);
        let a = s
            .assertion("alice", "https://idp-a.test", None, "orders")
            .unwrap();
        let b = s
            .assertion("alice", "https://idp-b.test", None, "orders")
            .unwrap();
        assert_ne!(a, b, "one subject at two providers: two assertions");
        assert_eq!(claims(&a)["aud"], "orders");
        assert_eq!(claims(&a)["idp"], "https://idp-a.test");
        assert_eq!(claims(&b)["idp"], "https://idp-b.test");
        assert_eq!(
            s.assertion("alice", "https://idp-a.test", None, "orders"),
            Some(a),
            "reused while young"
        );
        let (configured, _dir) = signer(Some("orders-api"));
        let c = configured
            .assertion("alice", "https://idp-a.test", None, "orders")
            .unwrap();
        assert_eq!(claims(&c)["aud"], "orders-api");
    }
}
