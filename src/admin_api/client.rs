//! `oidc-gateway admin ...`: the admin API from the command line, for operators and scripts.

use openidconnect::reqwest;
use std::time::Duration;

/// What the command asks the admin API.
#[derive(Debug, Clone)]
pub enum Request {
    /// `GET /admin/status`
    Status,
    /// `GET /admin/sessions?sub=..`
    Sessions {
        /// The user.
        sub: String,
        /// Only this provider's sessions.
        provider: Option<String>,
    },
    /// `DELETE /admin/sessions?sub=..`
    RevokeUser {
        /// The user.
        sub: String,
        /// Only this provider's sessions.
        provider: Option<String>,
    },
    /// `DELETE /admin/sessions/{id}`
    RevokeSession {
        /// The session's id, as listed.
        id: String,
    },
    /// `POST /admin/config/check` with a file's text.
    CheckConfig {
        /// The file's text.
        text: String,
    },
}

/// Sends `request` to the admin API at `base` with the bearer `token`; the answer's JSON,
/// pretty-printed, or why there is none (a refusal's status and message).
pub async fn send(base: &str, token: &str, request: Request) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let base = base.trim_end_matches('/');
    let user = |sub: &str, provider: &Option<String>| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("sub", sub);
        if let Some(p) = provider {
            q.append_pair("provider", p);
        }
        format!("{base}/admin/sessions?{}", q.finish())
    };
    let builder = match &request {
        Request::Status => client.get(format!("{base}/admin/status")),
        Request::Sessions { sub, provider } => client.get(user(sub, provider)),
        Request::RevokeUser { sub, provider } => client.delete(user(sub, provider)),
        Request::RevokeSession { id } => client.delete(format!(
            "{base}/admin/sessions/{}",
            form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        )),
        Request::CheckConfig { text } => client
            .post(format!("{base}/admin/config/check"))
            .body(text.clone()),
    };
    let answer = builder
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    let status = answer.status();
    let text = answer.text().await.map_err(|e| e.to_string())?;
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    // A configuration with errors is an answer, not a failure of the call; the exit code
    // still says it is not valid.
    if status.is_success() {
        Ok(pretty)
    } else {
        Err(format!("{}: {pretty}", status.as_u16()))
    }
}
