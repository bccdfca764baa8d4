//! A client-authenticated form POST to one of the provider's endpoints that answers JSON (token
//! exchange, pushed authorization requests): timed, and its OAuth error read the one way.

use super::idp_http::client_form;
use super::provider::{ProviderHandle, error_chain};
use crate::metrics;
use std::time::Instant;

/// POSTs `params` to `endpoint` as the provider's client, timed as `name` in
/// `idp_request_duration_seconds`; the status and the JSON answer, or why there is none.
pub async fn post<T: serde::de::DeserializeOwned>(
    handle: &ProviderHandle,
    endpoint: &str,
    params: &[(&str, &str)],
    name: &'static str,
) -> Result<(http::StatusCode, T), String> {
    let cfg = &handle.config;
    let req = client_form(cfg, endpoint, params).ok_or("cannot build the request")?;
    let start = Instant::now();
    let resp = handle.http.send(req).await;
    metrics::idp_request(&cfg.name, name, start.elapsed());
    let resp = resp.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let answer = serde_json::from_slice(resp.body())
        .map_err(|_| format!("the {name} endpoint answered {status} without JSON"))?;
    Ok((status, answer))
}

/// The OAuth error of a 4xx answer (`error`, and `error_description` when given), as one line.
pub fn oauth_error(
    status: http::StatusCode,
    error: Option<String>,
    description: Option<String>,
) -> Option<String> {
    let error = error.filter(|_| status.is_client_error())?;
    Some(match description {
        Some(d) => format!("{error} ({d})"),
        None => error,
    })
}
