//! What a request asks for, as authentication reads it: a bearer token, a CORS preflight, a
//! navigation that can follow a redirect to the provider.

use pingora::http::RequestHeader;

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == http::Method::OPTIONS
        && req.headers.contains_key(http::header::ORIGIN)
        && req
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive), if any.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    super::dpop::presented(headers, false).map(|(_, token)| token)
}

/// A request a browser made by navigating (it can follow a redirect to the provider).
pub fn can_follow_redirect(req: &RequestHeader) -> bool {
    let method_ok = req.method == http::Method::GET || req.method == http::Method::HEAD;
    let xhr = req.headers.contains_key("x-requested-with");
    let accept = req
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json_only = accept.contains("application/json") && !accept.contains("text/html");
    method_ok && !xhr && !json_only
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn bearer_tokens_and_preflights_are_recognised() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "bearer abc.def.ghi".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("abc.def.ghi"));
        h.insert("authorization", "Basic Zm9vOmJhcg==".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
        let pre = req(
            "OPTIONS",
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "POST"),
            ],
        );
        assert!(is_preflight(&pre));
        assert!(!is_preflight(&req(
            "OPTIONS",
            &[("origin", "https://a.example")]
        )));
    }

    #[test]
    fn only_navigations_are_redirected_to_login() {
        assert!(can_follow_redirect(&req(
            "GET",
            &[("accept", "text/html,*/*")]
        )));
        assert!(can_follow_redirect(&req("GET", &[])));
        assert!(!can_follow_redirect(&req("POST", &[])));
        assert!(!can_follow_redirect(&req(
            "GET",
            &[("accept", "application/json")]
        )));
        assert!(!can_follow_redirect(&req(
            "GET",
            &[("x-requested-with", "XMLHttpRequest")]
        )));
    }
}
