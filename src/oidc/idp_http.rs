//! The HTTP client for calls to identity providers: connect and total timeouts, no redirects
//! (a redirect from discovery or the token endpoint is an error, not a new destination), and a
//! cap on response size.

use crate::config::{ClientAuth, Outbound};
use base64::Engine;
use openidconnect::reqwest;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Largest response accepted from a provider (discovery, JWKS, tokens, userinfo).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why a call to the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum IdpHttpError {
    /// Connecting, sending or receiving failed, or a timeout expired.
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    /// The response body exceeded [`MAX_RESPONSE_BYTES`].
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The request could not be built.
    #[error("invalid request: {0}")]
    Build(String),
}

/// A client for one provider.
#[derive(Clone)]
pub struct IdpHttp {
    client: reqwest::Client,
}

impl IdpHttp {
    /// A client with the given timeouts, also trusting the CA certificates in `ca_file` (PEM),
    /// going out as `outbound` says (proxy, client certificate).
    pub fn new(
        connect_timeout: Duration,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
        outbound: &Outbound,
    ) -> Result<IdpHttp, String> {
        let mut builder = reqwest::Client::builder();
        match &outbound.proxy {
            Some(url) => {
                let no_proxy = reqwest::NoProxy::from_string(&outbound.no_proxy.join(","));
                let proxy = reqwest::Proxy::all(url.expose())
                    .map_err(|_| "http_proxy is not a valid proxy URL".to_owned())?
                    .no_proxy(no_proxy);
                // A configured proxy replaces the environment's (reqwest stops reading it).
                builder = builder.proxy(proxy);
            }
            None if !outbound.proxy_from_env => builder = builder.no_proxy(),
            // reqwest reads HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY itself.
            None => {}
        }
        if let Some(identity) = outbound.identity()? {
            builder = builder.identity(identity);
        }
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .user_agent(concat!("oidc-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(IdpHttp { client })
    }

    /// Sends a request and reads at most [`MAX_RESPONSE_BYTES`] of the answer.
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, IdpHttpError> {
        let request =
            reqwest::Request::try_from(request).map_err(|e| IdpHttpError::Build(e.to_string()))?;
        let mut response = self.client.execute(request).await?;
        if response
            .content_length()
            .is_some_and(|l| l > MAX_RESPONSE_BYTES as u64)
        {
            return Err(IdpHttpError::TooLarge(MAX_RESPONSE_BYTES));
        }
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(IdpHttpError::TooLarge(MAX_RESPONSE_BYTES));
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| IdpHttpError::Build(e.to_string()))
    }

    /// The underlying client, for requests `openidconnect` does not model (introspection).
    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }
}

/// A form POST about one token (RFC 7662 introspection, RFC 7009 revocation), authenticated as
/// the provider's client. Built here rather than through `openidconnect` because its revocation
/// refuses the plain-http loopback providers allowed for development.
pub fn token_request(
    cfg: &crate::config::Provider,
    endpoint: &str,
    token: &str,
    token_type_hint: &str,
) -> Option<http::Request<Vec<u8>>> {
    client_form(
        cfg,
        endpoint,
        &[("token", token), ("token_type_hint", token_type_hint)],
    )
}

/// A form POST of `params` to `endpoint`, authenticated as the provider's client (its secret
/// in Basic or in the body, a `private_key_jwt` assertion, or the client id beside the TLS
/// client certificate).
pub fn client_form(
    cfg: &crate::config::Provider,
    endpoint: &str,
    params: &[(&str, &str)],
) -> Option<http::Request<Vec<u8>>> {
    let mut form = openidconnect::url::form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(params);
    let mut req = http::Request::builder()
        .method(http::Method::POST)
        .uri(endpoint)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json");
    let secret = cfg.client_secret.as_ref().map(|s| s.expose()).unwrap_or("");
    match cfg.client_auth {
        ClientAuth::Basic => {
            // RFC 6749 section 2.3.1: form-encode id and secret, then Basic.
            let enc = |s: &str| {
                openidconnect::url::form_urlencoded::byte_serialize(s.as_bytes())
                    .collect::<String>()
            };
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(&cfg.client_id),
                enc(secret)
            ));
            req = req.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        ClientAuth::Post => {
            form.append_pair("client_id", &cfg.client_id)
                .append_pair("client_secret", secret);
        }
        ClientAuth::TlsClientAuth => {
            form.append_pair("client_id", &cfg.client_id);
        }
        ClientAuth::PrivateKeyJwt => {
            form.append_pair("client_id", &cfg.client_id);
            for (k, v) in super::client_assertion::params(cfg, endpoint)? {
                form.append_pair(k, &v);
            }
        }
    }
    req.body(form.finish().into_bytes()).ok()
}

impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = IdpHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, IdpHttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
