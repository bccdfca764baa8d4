//! Each provider's last good discovery document and JWKS, kept under `[server] state_dir` so a
//! restart while the identity provider is down still verifies tokens signed with known keys.
//!
//! The files are sealed (XChaCha20-Poly1305, keys derived from the session secrets) and bound to
//! the provider's issuer and client id: whoever can write the directory but does not hold the
//! secrets cannot plant keys, and one provider's file cannot stand in for another's.

use super::types::Metadata;
use crate::config::{Provider, Secret};
use crate::crypto::Sealer;
use openidconnect::core::CoreJsonWebKeySet;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Sealing purpose: keys derived for these files are used for nothing else.
const PURPOSE: &str = "oidc-gateway provider metadata v1";

/// What one file holds.
#[derive(Serialize, Deserialize)]
struct Saved {
    /// When the document and keys were fetched from the provider (Unix seconds).
    fetched_at: u64,
    discovery: serde_json::Value,
    jwks: serde_json::Value,
}

/// The directory of saved provider metadata.
pub struct MetadataFiles {
    dir: PathBuf,
    sealer: Sealer,
}

/// Why a saved file was not used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// There is none yet (first start).
    #[error("none saved")]
    Missing,
    /// Unreadable, or sealed with other secrets or for another provider.
    #[error("cannot be opened (other secrets, another provider's file, or altered): {0}")]
    Invalid(String),
    /// Older than the provider's `max_stale`.
    #[error("saved {age}s ago, older than max_stale")]
    Stale {
        /// Seconds since it was fetched.
        age: u64,
    },
}

impl MetadataFiles {
    /// Files under `state_dir/providers`, sealed with keys derived from `secrets`.
    pub fn new(state_dir: &Path, secrets: &[Secret]) -> MetadataFiles {
        MetadataFiles {
            dir: state_dir.join("providers"),
            sealer: Sealer::new(secrets, PURPOSE),
        }
    }

    /// The file for `cfg` (provider names are letters, digits, `-`, `_` and `.`: safe in a path).
    fn path(&self, cfg: &Provider) -> PathBuf {
        self.dir.join(format!("{}.sealed", cfg.name))
    }

    fn aad(cfg: &Provider) -> Vec<u8> {
        [cfg.issuer.as_bytes(), cfg.client_id.as_bytes()].join(&0u8)
    }

    /// Writes `metadata` (with its JWKS) atomically: a reader sees the old file or the new one.
    pub fn save(&self, cfg: &Provider, metadata: &Metadata, fetched_at: u64) -> Result<(), String> {
        let saved = Saved {
            fetched_at,
            discovery: serde_json::to_value(metadata).map_err(|e| e.to_string())?,
            jwks: serde_json::to_value(metadata.jwks()).map_err(|e| e.to_string())?,
        };
        let plain = serde_json::to_vec(&saved).map_err(|e| e.to_string())?;
        let sealed = self.sealer.seal(&Self::aad(cfg), &plain);
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let path = self.path(cfg);
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(sealed.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The saved document and keys for `cfg` with the time they were fetched, if they open and
    /// are at most `max_stale` old at `now`.
    pub fn load(&self, cfg: &Provider, now: u64) -> Result<(Metadata, u64), LoadError> {
        let sealed = match std::fs::read_to_string(self.path(cfg)) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
            Err(e) => return Err(LoadError::Invalid(e.to_string())),
        };
        let plain = self
            .sealer
            .open(&Self::aad(cfg), sealed.trim())
            .ok_or_else(|| LoadError::Invalid("the seal does not verify".into()))?;
        let saved: Saved =
            serde_json::from_slice(&plain).map_err(|e| LoadError::Invalid(e.to_string()))?;
        let age = now.saturating_sub(saved.fetched_at);
        if age > cfg.max_stale.as_secs() {
            return Err(LoadError::Stale { age });
        }
        let metadata: Metadata = serde_json::from_value(saved.discovery)
            .map_err(|e| LoadError::Invalid(e.to_string()))?;
        let jwks: CoreJsonWebKeySet =
            serde_json::from_value(saved.jwks).map_err(|e| LoadError::Invalid(e.to_string()))?;
        Ok((metadata.set_jwks(jwks), saved.fetched_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn provider(issuer: &str, max_stale: &str) -> Provider {
        let text = format!(
            "[session]\nsecrets = [\"persisted-test-secret-0123456789abcdef\"]\n\
             [[providers]]\nname = \"a\"\nissuer = \"{issuer}\"\nclient_id = \"gw\"\n\
             client_secret = \"s\"\nredirect_uri = \"http://127.0.0.1:1/oauth2/callback\"\n\
             max_stale = \"{max_stale}\"\n\
             [[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:2\"]\n\
             [[routes]]\nname = \"r\"\nupstream = \"u\"\n"
        );
        let c = Config::parse(&text, Path::new("t.toml")).expect("valid");
        c.providers[0].clone()
    }

    fn metadata(issuer: &str) -> Metadata {
        let doc = serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        let jwks: CoreJsonWebKeySet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}
        ]}))
        .unwrap();
        serde_json::from_value::<Metadata>(doc)
            .unwrap()
            .set_jwks(jwks)
    }

    fn secrets(s: &str) -> Vec<Secret> {
        vec![Secret::new(s.to_owned())]
    }

    #[test]
    fn saved_metadata_opens_only_for_its_provider_with_its_secrets_while_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let a = provider("https://idp.example.com", "1h");
        let files = MetadataFiles::new(dir.path(), &secrets("first-secret-0123456789abcdef0123"));
        assert!(matches!(files.load(&a, 1000), Err(LoadError::Missing)));
        files.save(&a, &metadata(&a.issuer), 1000).unwrap();

        let (m, at) = files.load(&a, 1500).unwrap();
        assert_eq!(at, 1000);
        assert_eq!(m.issuer().as_str(), a.issuer);
        assert_eq!(
            m.jwks().keys().len(),
            1,
            "the keys come back with the document"
        );

        assert!(matches!(
            files.load(&a, 1000 + 3601),
            Err(LoadError::Stale { age: 3601 })
        ));
        let other_issuer = provider("https://other.example.com", "1h");
        assert!(matches!(
            files.load(&other_issuer, 1500),
            Err(LoadError::Invalid(_))
        ));
        let other_secret =
            MetadataFiles::new(dir.path(), &secrets("other-secret-0123456789abcdef0123"));
        assert!(matches!(
            other_secret.load(&a, 1500),
            Err(LoadError::Invalid(_))
        ));
    }
}
