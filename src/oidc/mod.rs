//! Talking to OpenID Providers: discovery and keys, the authorization code flow, ID-token
//! validation, refresh and logout. Nothing here knows about routes or the proxy.

pub mod client_assertion;
pub mod form_post;
pub mod groups;
pub mod idp_http;
pub mod jwks;
pub mod jws;
pub mod login;
pub mod logout;
pub mod logout_token;
pub mod par;
pub mod persisted;
pub mod provider;
pub mod refresh;
pub mod revoke;
pub mod state;
pub mod step_up;
pub mod token_exchange;
pub mod types;
pub mod verify;
