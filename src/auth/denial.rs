//! Why a request is not let through, as data — and the one place that turns it into an answer:
//! a page for browsers, JSON for everything else, `WWW-Authenticate` for API clients
//! (RFC 6750). Authentication decides; this renders.

use super::bearer::TokenError;
use crate::http::responses::{Action, Reply};
use crate::ratelimit::Limited;
use crate::session::store::SetCookies;

/// A request authentication refused.
#[derive(Debug)]
pub enum Denial {
    /// Sign in at the provider: a redirect to its authorization endpoint.
    SignIn {
        /// The authorization request.
        location: http::HeaderValue,
    },
    /// A session is needed, and the request cannot follow a redirect (API call, XHR, non-GET).
    SessionRequired {
        /// The route's realm.
        realm: String,
    },
    /// No credential.
    Unauthorized {
        /// The route's realm.
        realm: String,
    },
    /// A presented token was refused.
    InvalidToken {
        /// The route's realm.
        realm: String,
        /// Why.
        error: TokenError,
    },
    /// A token refused by the route's `dpop` (RFC 9449): a bad or missing proof, or a token
    /// and a proof that do not belong together.
    Dpop {
        /// The route's realm.
        realm: String,
        /// Why.
        error: super::dpop::DpopError,
    },
    /// The credential's authentication is too weak or too old for the route (step-up), and the
    /// request cannot be sent to sign in again: RFC 9470 `insufficient_user_authentication`.
    StepUpRequired {
        /// The route's realm.
        realm: String,
        /// What the route asks: its `acr_values`, space-separated, and `max_age` in seconds.
        acr_values: String,
        /// `max_age` in seconds.
        max_age: Option<u64>,
    },
    /// A rule or the consumer mapping failed.
    Forbidden {
        /// The route's realm.
        realm: String,
        /// What failed, for people.
        message: String,
        /// The credential was a token (RFC 6750 `insufficient_scope`), not a session.
        token: bool,
        /// `forbidden_redirect_uri`, for browsers.
        redirect: Option<String>,
        /// Where the page's "Sign out" button posts.
        logout_path: String,
    },
    /// The provider cannot be reached to start a sign-in (or its discovery failed); the
    /// gateway's last error with it, verbatim.
    ProviderUnavailable(Option<std::sync::Arc<str>>),
    /// The session store (Redis) cannot be reached to check the session.
    StoreUnavailable,
    /// A form posted before sign-in cannot be kept for it (`preserve_post`).
    PostNotKept,
    /// The client is over one of its limits on requests that reach the provider.
    TooMany {
        /// When to try again.
        limited: Limited,
        /// What was limited, for people ("sign-in attempts").
        what: &'static str,
    },
    /// This instance's calls to the providers are at their ceiling (`provider_call_limit`).
    ProviderBusy,
    /// The provider would not exchange the user's token for the route's upstream (RFC 8693).
    ExchangeRefused {
        /// The audience asked for.
        audience: String,
        /// The provider's OAuth error, and its description.
        reason: String,
    },
    /// The token exchange for the route's upstream could not be made right now.
    ExchangeUnavailable,
    /// The configuration cannot serve this request.
    Misconfigured(&'static str),
}

/// A denial and the cookies to set with it (a sign-in's attempt cookie, or deleting a session
/// cookie that no longer opens).
#[derive(Debug)]
pub struct Denied {
    /// Why (boxed: a denial is the rare path, and the `Result` stays small on the hot one).
    pub denial: Box<Denial>,
    /// `Set-Cookie` values.
    pub cookies: SetCookies,
}

impl From<Denial> for Denied {
    fn from(denial: Denial) -> Denied {
        Denied {
            denial: Box::new(denial),
            cookies: Vec::new(),
        }
    }
}

impl Denied {
    /// Adds cookies to set.
    pub fn with_cookies(mut self, cookies: SetCookies) -> Denied {
        self.cookies.extend(cookies);
        self
    }

    /// Whether the request needed a session and could not be sent to sign in (a POST, an API
    /// call): the case a kept form (`preserve_post`) turns into a sign-in.
    pub fn needs_session(&self) -> bool {
        matches!(*self.denial, Denial::SessionRequired { .. })
    }

    /// The answer, as a page when `html` (the client prefers HTML), JSON otherwise.
    pub fn render(self, html: bool) -> Reply {
        render(*self.denial, html).with_cookies(self.cookies)
    }
}

fn render(denial: Denial, html: bool) -> Reply {
    match denial {
        Denial::SignIn { location } => Reply::redirect(location),
        Denial::SessionRequired { realm } => Reply::error(
            401,
            "login_required",
            "Sign-in required",
            "This request needs a signed-in session.",
            html,
        )
        .with_header(http::header::WWW_AUTHENTICATE, challenge(&realm, None)),
        Denial::Unauthorized { realm } => Reply::error(
            401,
            "unauthorized",
            "Sign-in required",
            "This address needs credentials: send an access token in the Authorization header (Authorization: Bearer <token>).",
            html,
        )
        .with_header(http::header::WWW_AUTHENTICATE, challenge(&realm, None)),
        Denial::InvalidToken { realm, error } => {
            let message = error.to_string();
            Reply::error(401, "invalid_token", "Sign-in required", &message, html).with_header(
                http::header::WWW_AUTHENTICATE,
                challenge(&realm, Some(("invalid_token", &message))),
            )
        }
        Denial::Dpop { error, .. } if error == super::dpop::DpopError::Unavailable => unavailable(
            "dpop_unavailable",
            "Try again",
            &error.to_string(),
            "5",
            html,
        ),
        Denial::Dpop { realm, error } => {
            let message = error.to_string();
            let text = format!(
                "DPoP realm=\"{}\", error=\"{}\", error_description=\"{}\", algs=\"{}\"",
                quote(&realm),
                error.code(),
                quote(&message),
                super::dpop::ALGS
            );
            Reply::error(401, error.code(), "Sign-in required", &message, html)
                .with_header(http::header::WWW_AUTHENTICATE, header_value(&text))
        }
        Denial::StepUpRequired {
            realm,
            acr_values,
            max_age,
        } => {
            let message = "This request needs a stronger or more recent sign-in.";
            let mut text =
                challenge_text(&realm, Some(("insufficient_user_authentication", message)));
            if !acr_values.is_empty() {
                text.push_str(&format!(", acr_values=\"{}\"", quote(&acr_values)));
            }
            if let Some(age) = max_age {
                text.push_str(&format!(", max_age={age}"));
            }
            Reply::error(
                401,
                "insufficient_user_authentication",
                "A stronger sign-in is needed",
                message,
                html,
            )
            .with_header(http::header::WWW_AUTHENTICATE, header_value(&text))
        }
        Denial::Forbidden {
            realm,
            message,
            token,
            redirect,
            logout_path,
        } => {
            if html
                && !token
                && let Some(target) = redirect
            {
                return Reply::redirect(header_value(&target));
            }
            let reply = if html {
                Reply::page(
                    403,
                    "Access denied",
                    &format!(
                        "{message} Ask your administrator for access, or sign in with another account."
                    ),
                    &[
                        Action::Link("Back to the start page", "/"),
                        Action::Post("Sign out", &logout_path),
                    ],
                )
            } else {
                Reply::error(403, "insufficient_scope", "Access denied", &message, false)
            };
            if token {
                reply.with_header(
                    http::header::WWW_AUTHENTICATE,
                    challenge(&realm, Some(("insufficient_scope", ""))),
                )
            } else {
                reply
            }
        }
        Denial::ProviderUnavailable(error) => {
            let detail = match error {
                Some(e) => format!(
                    "The gateway cannot use the identity provider right now. Please try again in a minute. Its last attempt: {e}"
                ),
                None => "The gateway cannot use the identity provider right now. Please try again in a minute.".to_owned(),
            };
            unavailable(
                "idp_unavailable",
                "Sign-in is temporarily unavailable",
                &detail,
                "30",
                html,
            )
        }
        Denial::ProviderBusy => unavailable(
            "provider_busy",
            "Busy",
            "Too many sign-ins and token checks are reaching the identity provider right now. Please try again in a moment.",
            "1",
            html,
        ),
        Denial::ExchangeRefused { audience, reason } => Reply::error(
            403,
            "token_exchange_refused",
            "Access denied",
            &format!(
                "The identity provider will not issue your account a token for {audience}: {reason}."
            ),
            html,
        ),
        Denial::ExchangeUnavailable => unavailable(
            "token_exchange_unavailable",
            "Temporarily unavailable",
            "The token this service needs cannot be obtained from the identity provider right now. Please try again in a moment.",
            "5",
            html,
        ),
        Denial::PostNotKept => unavailable(
            "post_not_kept",
            "Temporarily unavailable",
            "You need to sign in again, and the form you sent cannot be kept for that right now. Go back, keep a copy of what you typed, and send it again in a moment.",
            "5",
            html,
        ),
        Denial::StoreUnavailable => unavailable(
            "session_store_unavailable",
            "Temporarily unavailable",
            "Your session cannot be checked right now. Please try again in a moment.",
            "5",
            html,
        ),
        Denial::TooMany { limited, what } => {
            let wait = limited.retry_after;
            Reply::error(
                429,
                "rate_limited",
                "Too many requests",
                &format!("Too many {what} from your address. Please try again in {wait} seconds."),
                html,
            )
            .with_header(http::header::RETRY_AFTER, http::HeaderValue::from(wait))
        }
        Denial::Misconfigured(detail) => {
            Reply::error(500, "misconfigured", "Server error", detail, html)
        }
    }
}

/// A client over one of its limits on requests that reach the provider (counted).
pub(crate) fn too_many(limited: Limited, what: &'static str) -> Denied {
    crate::metrics::refused("rate_limited");
    Denial::TooMany { limited, what }.into()
}

/// A call to the provider not made: the client's limit, or the instance's ceiling (counted).
pub(crate) fn refusal(refused: crate::ratelimit::Refused, what: &'static str) -> Denied {
    match refused {
        crate::ratelimit::Refused::Client(limited) => too_many(limited, what),
        crate::ratelimit::Refused::Busy => {
            crate::metrics::refused("provider_busy");
            Denial::ProviderBusy.into()
        }
    }
}

/// A 503 with `Retry-After: retry_after` (seconds).
fn unavailable(
    code: &str,
    title: &str,
    detail: &str,
    retry_after: &'static str,
    html: bool,
) -> Reply {
    Reply::error(503, code, title, detail, html).with_header(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static(retry_after),
    )
}

/// `Bearer realm="..."`, with `error` (and a description, when not empty) if given.
fn challenge(realm: &str, error: Option<(&str, &str)>) -> http::HeaderValue {
    header_value(&challenge_text(realm, error))
}

fn challenge_text(realm: &str, error: Option<(&str, &str)>) -> String {
    let realm = quote(realm);
    match error {
        None => format!("Bearer realm=\"{realm}\""),
        Some((code, "")) => format!("Bearer realm=\"{realm}\", error=\"{code}\""),
        Some((code, description)) => format!(
            "Bearer realm=\"{realm}\", error=\"{code}\", error_description=\"{}\"",
            quote(description)
        ),
    }
}

/// Escapes a value for a quoted-string in `WWW-Authenticate`.
fn quote(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .collect()
}

fn header_value(s: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(s).unwrap_or_else(|_| http::HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &Reply, name: http::HeaderName) -> Option<String> {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn a_step_up_challenge_says_what_is_asked_as_rfc_9470_does() {
        let r = Denied::from(Denial::StepUpRequired {
            realm: "admin".into(),
            acr_values: "urn:mfa phr".into(),
            max_age: Some(900),
        })
        .render(false);
        assert_eq!(r.status, 401);
        let www = header(&r, http::header::WWW_AUTHENTICATE).unwrap();
        assert!(
            www.starts_with("Bearer realm=\"admin\", error=\"insufficient_user_authentication\"")
                && www.ends_with(", acr_values=\"urn:mfa phr\", max_age=900"),
            "{www}"
        );
        let r = Denied::from(Denial::StepUpRequired {
            realm: "r".into(),
            acr_values: String::new(),
            max_age: Some(60),
        })
        .render(false);
        let www = header(&r, http::header::WWW_AUTHENTICATE).unwrap();
        assert!(
            !www.contains("acr_values") && www.ends_with("max_age=60"),
            "{www}"
        );
    }

    #[test]
    fn api_clients_get_rfc_6750_challenges_and_browsers_pages() {
        let r = Denied::from(Denial::InvalidToken {
            realm: "api \"x\"".into(),
            error: TokenError::Expired,
        })
        .render(false);
        assert_eq!(r.status, 401);
        let www = header(&r, http::header::WWW_AUTHENTICATE).unwrap();
        assert!(
            www.starts_with("Bearer realm=\"api 'x'\", error=\"invalid_token\""),
            "{www}"
        );
        let forbidden = |html| {
            Denied::from(Denial::Forbidden {
                realm: "r".into(),
                message: "No.".into(),
                token: false,
                redirect: Some("/denied".into()),
                logout_path: "/oauth2/logout".into(),
            })
            .render(html)
        };
        assert_eq!(
            forbidden(true).status,
            302,
            "the configured page, for browsers"
        );
        assert_eq!(forbidden(false).status, 403);
        assert_eq!(forbidden(false).content_type, "application/json");
    }

    #[test]
    fn limits_say_when_to_come_back_and_cookies_come_along() {
        let cookie = http::HeaderValue::from_static("s=; Max-Age=0");
        let r = Denied::from(Denial::TooMany {
            limited: Limited { retry_after: 42 },
            what: "sign-in attempts",
        })
        .with_cookies(vec![cookie.clone()])
        .render(true);
        assert_eq!(r.status, 429);
        assert_eq!(header(&r, http::header::RETRY_AFTER).as_deref(), Some("42"));
        assert_eq!(
            header(&r, http::header::SET_COOKIE),
            Some("s=; Max-Age=0".into())
        );
        assert!(String::from_utf8_lossy(&r.body).contains("try again in 42 seconds"));
    }
}
