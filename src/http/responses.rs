//! The gateway's own answers (404, 400, 502, 503, 504, and later login pages and redirects).
//! Every one carries Content-Length, so the client connection stays reusable, and pages carry a
//! strict Content-Security-Policy. Nothing from the request is reflected into them.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Something the user can do from a gateway page.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// A link: (text, same-origin href).
    Link(&'a str, &'a str),
    /// A button posting an empty form: (text, same-origin path).
    Post(&'a str, &'a str),
}

/// Content-Security-Policy of every gateway page: no scripts, no external resources.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A complete response the gateway writes itself.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers (Location, Set-Cookie, WWW-Authenticate, ...).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Content-Type of `body`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// An error answer as HTML (for browsers) or JSON (for everything else).
    ///
    /// `code` is a short machine-readable reason, `title` and `detail` are for people.
    pub fn error(status: u16, code: &str, title: &str, detail: &str, html: bool) -> Reply {
        if html {
            Reply::html(status, title, detail)
        } else {
            let body = serde_json::json!({ "error": code, "message": detail });
            Reply {
                status,
                headers: Vec::new(),
                content_type: "application/json",
                body: Bytes::from(body.to_string()),
            }
        }
    }

    /// A small HTML page. `title` and `detail` are escaped.
    pub fn html(status: u16, title: &str, detail: &str) -> Reply {
        Reply::page(status, title, detail, &[])
    }

    /// A small HTML page with what the user can do next. Everything is escaped.
    pub fn page(status: u16, title: &str, detail: &str, actions: &[Action<'_>]) -> Reply {
        let action: String = actions
            .iter()
            .map(|a| match a {
                Action::Link(text, href) => {
                    format!("<a class=\"button\" href=\"{}\">{}</a> ", escape(href), escape(text))
                }
                Action::Post(text, path) => format!(
                    "<form method=\"post\" action=\"{}\"><button class=\"button\" type=\"submit\">{}</button></form> ",
                    escape(path),
                    escape(text)
                ),
            })
            .collect();
        let action = if action.is_empty() {
            action
        } else {
            format!("<div class=\"actions\">{action}</div>")
        };
        let body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
h1{{font-size:1.4rem}}p{{line-height:1.5}}.code{{color:#888;font-size:.9rem}}\
.button{{display:inline-block;padding:.5rem 1rem;border-radius:.3rem;background:#2457c5;color:#fff;text-decoration:none;border:0;font:inherit;cursor:pointer}}\
.actions form{{display:inline;margin:0}}</style></head>\
<body><h1>{title}</h1><p>{detail}</p>{action}<p class=\"code\">HTTP {status} &middot; oidc-gateway</p></body></html>\n",
            title = escape(title),
            detail = escape(detail),
        );
        Reply {
            status,
            headers: Vec::new(),
            content_type: "text/html; charset=utf-8",
            body: Bytes::from(body),
        }
    }

    /// A `302 Found` to `location`, with an empty body.
    pub fn redirect(location: http::HeaderValue) -> Reply {
        Reply {
            status: 302,
            headers: vec![(http::header::LOCATION, location)],
            content_type: "text/plain",
            body: Bytes::new(),
        }
    }

    /// An empty answer with `status` (e.g. 204).
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            content_type: "text/plain",
            body: Bytes::new(),
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            body: Bytes::from(value.to_string()),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Reply {
        self.headers.push((name, value));
        self
    }

    /// Adds a `Set-Cookie` header for each of `cookies` (what a session store or the login
    /// cookies hand back): the one place cookies join a reply.
    pub fn with_cookies(mut self, cookies: impl IntoIterator<Item = http::HeaderValue>) -> Reply {
        self.headers
            .extend(cookies.into_iter().map(|c| (http::header::SET_COOKIE, c)));
        self
    }

    /// The response header, with Content-Length and the security headers.
    pub fn header(&self) -> pingora::Result<ResponseHeader> {
        let mut h = ResponseHeader::build(self.status, Some(4 + self.headers.len()))?;
        h.insert_header(http::header::CONTENT_LENGTH, self.body.len())?;
        if !self.body.is_empty() {
            h.insert_header(http::header::CONTENT_TYPE, self.content_type)?;
        }
        // A reply's own caching or page policy replaces the default: two `Cache-Control`s
        // contradict each other, and two CSPs would both apply (the stricter one would block a
        // page's nonce'd script).
        let own = |name| self.headers.iter().any(|(n, _)| *n == name);
        if !own(http::header::CACHE_CONTROL) {
            h.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        }
        h.insert_header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")?;
        if self.content_type.starts_with("text/html") {
            if !own(http::header::CONTENT_SECURITY_POLICY) {
                h.insert_header(http::header::CONTENT_SECURITY_POLICY, PAGE_CSP)?;
            }
            if !own(http::header::REFERRER_POLICY) {
                h.insert_header(http::header::REFERRER_POLICY, "no-referrer")?;
            }
        }
        for (name, value) in &self.headers {
            h.append_header(name.clone(), value.clone())?;
        }
        Ok(h)
    }

    /// Writes the whole response (no body for HEAD).
    pub async fn send(self, session: &mut Session) -> pingora::Result<()> {
        let header = self.header()?;
        let head = session.req_header().method == http::Method::HEAD;
        let no_body = head || self.body.is_empty();
        session
            .write_response_header(Box::new(header), no_body)
            .await?;
        if !no_body {
            session.write_response_body(Some(self.body), true).await?;
        }
        Ok(())
    }
}

/// Whether the client prefers an HTML page (a browser) over JSON.
pub fn wants_html(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::ACCEPT).iter().any(|v| {
        v.as_bytes()
            .windows(9)
            .any(|w| w.eq_ignore_ascii_case(b"text/html"))
    })
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_pages_escape_and_carry_csp_and_length() {
        let r = Reply::html(404, "Not <found>", "a \"b\" & c");
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(body.contains("Not &lt;found&gt;"));
        assert!(body.contains("a &quot;b&quot; &amp; c"));
        let h = r.header().unwrap();
        assert_eq!(
            h.headers["content-length"],
            r.body.len().to_string().as_str()
        );
        assert!(
            h.headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
    }

    #[test]
    fn a_replys_own_cache_control_replaces_no_store() {
        let cache = |r: &Reply| -> Vec<String> {
            let h = r.header().unwrap();
            h.headers
                .get_all(http::header::CACHE_CONTROL)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        let r = Reply::json(200, &serde_json::json!({})).with_header(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=300"),
        );
        assert_eq!(cache(&r), ["public, max-age=300"]);
        assert_eq!(cache(&Reply::empty(200)), ["no-store"]);
    }

    #[test]
    fn json_errors_are_json() {
        let r = Reply::error(503, "no_healthy_upstream", "t", "d", false);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "no_healthy_upstream");
        assert_eq!(r.content_type, "application/json");
    }

    #[test]
    fn accept_negotiation() {
        let mut h = http::HeaderMap::new();
        assert!(!wants_html(&h));
        h.insert(
            http::header::ACCEPT,
            "text/html,application/xhtml+xml;q=0.9".parse().unwrap(),
        );
        assert!(wants_html(&h));
        h.insert(http::header::ACCEPT, "application/json".parse().unwrap());
        assert!(!wants_html(&h));
    }
}
