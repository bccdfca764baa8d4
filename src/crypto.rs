//! Sealing values that travel through the browser (session and login cookies): XChaCha20-Poly1305
//! with a random 192-bit nonce per seal and keys derived from the configured secrets with
//! HKDF-SHA256. The first secret seals; every secret opens (key rotation). The associated data
//! binds a sealed value to where it is used (the cookie name), so values cannot be swapped.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::config::Secret;

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// Seals and opens byte strings with the configured secrets.
pub struct Sealer {
    /// (key id, cipher); the first one seals.
    keys: Vec<([u8; KEY_ID_LEN], XChaCha20Poly1305)>,
}

impl Sealer {
    /// Derives one key per secret for `purpose` (different purposes never share keys).
    pub fn new(secrets: &[Secret], purpose: &str) -> Sealer {
        let keys = secrets
            .iter()
            .map(|s| {
                let key = derive_key(s, purpose);
                let digest = Sha256::digest(key);
                let mut id = [0u8; KEY_ID_LEN];
                id.copy_from_slice(&digest[..KEY_ID_LEN]);
                (id, XChaCha20Poly1305::new(&key.into()))
            })
            .collect();
        Sealer { keys }
    }

    /// Encrypts and authenticates `plaintext`, bound to `aad`. Returns URL-safe base64.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> String {
        let (id, cipher) = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        B64.encode(out)
    }

    /// Opens a sealed value; `None` when it is malformed, tampered with, bound to other
    /// associated data, or sealed with a key no longer configured.
    pub fn open(&self, aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
        self.open_indexed(aad, sealed).map(|(plain, _)| plain)
    }

    /// As [`Sealer::open`], also saying which secret (by position) opened it.
    pub fn open_indexed(&self, aad: &[u8], sealed: &str) -> Option<(Vec<u8>, usize)> {
        let raw = B64.decode(sealed).ok()?;
        if raw.len() < HEADER_LEN + 16 || raw[0] != VERSION {
            return None;
        }
        let id = &raw[1..1 + KEY_ID_LEN];
        let nonce = XNonce::from_slice(&raw[1 + KEY_ID_LEN..HEADER_LEN]);
        let index = self.keys.iter().position(|(k, _)| k == id)?;
        let plain = self.keys[index]
            .1
            .decrypt(
                nonce,
                Payload {
                    msg: &raw[HEADER_LEN..],
                    aad,
                },
            )
            .ok()?;
        Some((plain, index))
    }

    /// Whether sealing is possible (at least one secret).
    pub fn is_usable(&self) -> bool {
        !self.keys.is_empty()
    }
}

/// Names for things that must not be recognisable where they are stored (Redis keys, the
/// revocation file): HMACs under one key per session secret. The first secret names new
/// things; the others still find what older secrets named, so a rotation loses nothing.
#[derive(Clone)]
pub struct Names(Vec<[u8; 32]>);

impl Names {
    /// Naming keys derived from `secrets` (at least one).
    pub fn new(secrets: &[Secret]) -> Names {
        Names(
            secrets
                .iter()
                .map(|s| derive_key(s, "oidc-gateway redis names"))
                .collect(),
        )
    }

    /// The name of `what` under naming key `index` (0: the current secret's).
    pub fn name(&self, index: usize, what: &[u8]) -> [u8; 32] {
        match self.0.get(index).or(self.0.last()) {
            Some(key) => mac(key, what),
            None => [0; 32],
        }
    }

    /// How many naming keys there are.
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

/// A 256-bit key derived from `secret` for `purpose` (HKDF-SHA256).
pub fn derive_key(secret: &Secret, purpose: &str) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"oidc-gateway v1"), secret.expose().as_bytes());
    let mut key = [0u8; 32];
    hk.expand(purpose.as_bytes(), &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

/// HMAC-SHA256 of `data` under `key`: names derived from secrets (storage keys) that reveal
/// nothing of what they name.
pub fn mac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut m =
        <hmac::Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Encrypts `plaintext` under a raw 256-bit `key`, bound to `aad`: nonce, then ciphertext.
pub fn seal_with(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens what [`seal_with`] sealed; `None` when tampered with or under another key or `aad`.
pub fn open_with(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

/// Random bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b
}

/// Constant-time equality of two byte strings (lengths may leak; contents do not).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(secrets: &[&str]) -> Sealer {
        let s: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        Sealer::new(&s, "test")
    }

    #[test]
    fn round_trip_with_random_nonce() {
        let s = sealer(&["a-very-long-secret-of-32-bytes-or-more!"]);
        let a = s.seal(b"cookie", b"hello");
        let b = s.seal(b"cookie", b"hello");
        assert_ne!(a, b, "a fresh nonce per seal");
        assert_eq!(s.open(b"cookie", &a).unwrap(), b"hello");
    }

    #[test]
    fn tampering_other_aad_and_unknown_keys_fail() {
        let s = sealer(&["a-very-long-secret-of-32-bytes-or-more!"]);
        let sealed = s.seal(b"cookie", b"hello");
        assert!(s.open(b"other", &sealed).is_none());
        let mut bytes = B64.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(s.open(b"cookie", &B64.encode(&bytes)).is_none());
        assert!(s.open(b"cookie", &sealed[..sealed.len() - 4]).is_none());
        assert!(s.open(b"cookie", "not base64!").is_none());
        assert!(
            sealer(&["another-secret-that-is-long-enough-too"])
                .open(b"cookie", &sealed)
                .is_none()
        );
    }

    #[test]
    fn rotation_old_secret_still_opens_new_one_seals() {
        let old = sealer(&["old-secret-old-secret-old-secret-old!"]);
        let sealed_old = old.seal(b"c", b"v1");
        let rotated = sealer(&[
            "new-secret-new-secret-new-secret-new!",
            "old-secret-old-secret-old-secret-old!",
        ]);
        assert_eq!(rotated.open(b"c", &sealed_old).unwrap(), b"v1");
        let sealed_new = rotated.seal(b"c", b"v2");
        assert!(old.open(b"c", &sealed_new).is_none());
    }

    #[test]
    fn purposes_use_different_keys() {
        let s: Vec<Secret> = vec![Secret::new("a-very-long-secret-of-32-bytes-or-more!")];
        let sealed = Sealer::new(&s, "session").seal(b"c", b"v");
        assert!(Sealer::new(&s, "login").open(b"c", &sealed).is_none());
    }
}
