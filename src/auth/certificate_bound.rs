//! Certificate-bound access tokens (RFC 8705) on routes with `certificate_bound`: a token whose
//! `cnf` names a certificate (`x5t#S256`, from the JWT or from introspection) is taken only on
//! a TLS connection whose client certificate has that SHA-256 thumbprint. The listener asks
//! for client certificates when it has a `client_ca_file`, and verifies them against it.

use super::bearer::{TokenError, VerifiedToken};
use super::{Authenticator, Denial, Denied};
use crate::config::{Binding, RouteAuth};
use crate::crypto::ct_eq;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::Value;

impl Authenticator {
    /// The route's `certificate_bound` for `token`, on a connection whose client certificate
    /// has the SHA-256 digest `peer_cert` (`None`: no certificate, or not TLS).
    pub(super) fn certificate_bound(
        &self,
        spec: &RouteAuth,
        token: &VerifiedToken,
        peer_cert: Option<&[u8]>,
    ) -> Result<(), Denied> {
        let Some(mode) = spec.certificate_bound else {
            return Ok(());
        };
        let bound = token
            .claims
            .get("cnf")
            .and_then(|c| c.get("x5t#S256"))
            .and_then(Value::as_str);
        let refused = match (bound, peer_cert, mode) {
            (Some(b), Some(cert), _) if ct_eq(b.as_bytes(), B64.encode(cert).as_bytes()) => {
                return Ok(());
            }
            (Some(_), Some(_), _) => "the token is bound to another client certificate",
            (Some(_), None, _) => {
                "the token is bound to a client certificate: connect over TLS with it"
            }
            (None, _, Binding::Required) => {
                "this service takes only tokens bound to the client certificate"
            }
            (None, _, Binding::Allowed) => return Ok(()),
        };
        crate::metrics::refused("certificate_bound");
        Err(Denial::InvalidToken {
            realm: spec.realm.clone(),
            error: TokenError::Certificate(refused),
        }
        .into())
    }
}
