//! The end-to-end tests, one binary: the real `oidc-gateway` binary and real parts around it (the
//! npm `oidc-provider` OP, Redis, Chromium, nginx, Caddy, Traefik) on 127.0.0.1, and the library's
//! parsers under generated input. One binary links the library once and lets the test harness
//! keep both cores busy across every file's tests.

// What a request future holds inline matters in the gateway, not in its tests.
#![allow(clippy::large_futures)]

mod support;

mod admin_api;
mod api_access;
mod browser;
mod certificate_bound;
mod check;
mod dashboard;
mod demo;
mod docs;
mod dpop;
mod faults;
mod fleet;
mod forward_auth;
mod h2_tls;
mod identity_assertion;
mod large_tokens;
mod login_hostile_op;
mod login_real_op;
mod outbound;
mod package;
mod par;
mod policy;
mod properties;
mod proxy;
mod rate_limit;
mod readiness;
mod redis_store;
mod security;
mod step_up;
mod systemd;
mod tls;
mod token_exchange;
mod tracing;
