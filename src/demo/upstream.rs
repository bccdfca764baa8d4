//! The demo's upstream application: a page showing what the upstream received from the gateway
//! (identity headers, and the access token's claims — never a raw token), with a sign-out button.

use crate::http::responses::escape;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{Map, Value, json};

/// Headers worth showing, in display order.
const SHOWN: &[&str] = &[
    "x-auth-request-user",
    "x-auth-request-email",
    "x-consumer-id",
    "x-consumer-username",
    "x-consumer-custom-id",
    "x-credential-identifier",
    "x-authenticated-groups",
    "x-anonymous-consumer",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// The demo upstream.
pub struct DemoUpstream;

#[async_trait]
impl ServeHttp for DemoUpstream {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_owned();
        if path == "/healthz" {
            return respond(200, "text/plain", b"ok\n".to_vec());
        }
        if path == "/favicon.ico" {
            // A public route in the demo config, so a browser's icon request never starts a
            // sign-in; there is no icon.
            return respond(404, "text/plain", b"no icon\n".to_vec());
        }
        let mut headers = Map::new();
        for name in SHOWN {
            if let Some(v) = req.headers.get(*name).and_then(|v| v.to_str().ok()) {
                headers.insert((*name).to_owned(), v.into());
            }
        }
        let token = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let claims = token.and_then(crate::claims::jwt_payload);
        if let Some(t) = token {
            // Show that a token arrived, never the token itself.
            headers.insert(
                "authorization".into(),
                format!("Bearer <access token, {} bytes, hidden>", t.len()).into(),
            );
        }
        let wants_json = req
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
        // `/api` is the bearer-token route: an API, so always JSON.
        let api = path == "/api" || path.starts_with("/api/");
        if wants_json || api {
            let mut body = json!({"path": path, "headers": headers, "access_token_claims": claims});
            if api {
                body["route"] =
                    "api: bearer tokens only (audience demo-api), no browser sign-in".into();
            }
            return respond(200, "application/json", body.to_string().into_bytes());
        }
        respond(
            200,
            "text/html; charset=utf-8",
            page(&path, &headers, claims.as_ref()).into_bytes(),
        )
    }
}

fn page(path: &str, headers: &Map<String, Value>, claims: Option<&Map<String, Value>>) -> String {
    let user = headers.get("x-auth-request-user").and_then(Value::as_str);
    let greeting = match user {
        Some(u) => format!(
            "<h1>Hello, {}</h1><p>You are signed in through oidc-gateway.</p>",
            escape(u)
        ),
        None => "<h1>Public page</h1><p>This page needs no sign-in.</p>".to_owned(),
    };
    // Only a signed-in user has anything to sign out of.
    let sign_out = if user.is_some() {
        "<form method=\"post\" action=\"/oauth2/logout\"><button type=\"submit\" id=\"logout\">Sign out</button></form>"
    } else {
        ""
    };
    let rows: String = headers
        .iter()
        .map(|(k, v)| {
            format!(
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(k),
                escape(v.as_str().unwrap_or(""))
            )
        })
        .collect();
    let claims = claims
        .map(|c| {
            let pretty = serde_json::to_string_pretty(c).unwrap_or_default();
            format!(
                "<h2>Access token claims</h2><pre id=\"claims\">{}</pre>",
                escape(&pretty)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>oidc-gateway demo app</title><style>\
body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2.5rem auto;padding:0 1rem;color:#222}}\
table{{border-collapse:collapse}}th,td{{text-align:left;padding:.25rem .75rem .25rem 0;font-size:.9rem;vertical-align:top}}\
th{{font-family:monospace}}pre{{background:#f5f5f5;padding:.75rem;overflow:auto}}button{{padding:.45rem 1rem}}\
nav a{{margin-right:1rem}}.note{{color:#666;font-size:.85rem}}</style></head><body>\
<nav><a href=\"/\">Home</a><a href=\"/admin\">Admins only</a><a href=\"/public\">Public</a><a href=\"/oauth2/userinfo\">/oauth2/userinfo</a>\
<a href=\"/api/hello\" title=\"bearer tokens only: see the curl commands the demo printed\">/api (bearer tokens, JSON)</a></nav>\
{greeting}<p>Path: <code>{path}</code></p><h2>What the upstream received</h2><table id=\"headers\">{rows}</table>\
<p class=\"note\">The demo sets <code>X-Auth-Request-User</code> from the <code>preferred_username</code> claim \
(<code>upstream_headers</code> in <code>oidc-gateway demo --print-config</code>); by default it is the subject, \
<code>sub</code>.</p>{claims}{sign_out}</body></html>",
        path = escape(path),
    )
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let len = r.body().len();
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("text/plain")),
    );
    h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}
