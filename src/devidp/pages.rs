//! The provider's responses: JSON, OAuth errors, redirects and its two small pages.

use super::*;

pub(super) fn with_params(base: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        if let Some(v) = v {
            s.append_pair(k, v);
        }
    }
    let query = s.finish();
    if query.is_empty() {
        return base.to_owned();
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

pub(super) fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("text/plain")),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

pub(super) fn json_response(status: u16, v: &Value) -> Response<Vec<u8>> {
    response(status, "application/json", v.to_string().into_bytes())
}

pub(super) fn oauth_error(status: u16, error: &str) -> Response<Vec<u8>> {
    json_response(status, &json!({ "error": error }))
}

pub(super) fn redirect(location: &str) -> Response<Vec<u8>> {
    let mut r = response(302, "text/plain", Vec::new());
    if let Ok(v) = http::HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

pub(super) const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;color:#222}\
.dev{background:#fff3cd;border:1px solid #e0c36a;padding:.5rem .75rem;border-radius:.3rem;font-size:.9rem}\
label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.45rem;box-sizing:border-box}\
button{margin-top:1rem;padding:.5rem 1.2rem;background:#2457c5;color:#fff;border:0;border-radius:.3rem}\
.error{color:#b00020}";

pub(super) fn page(status: u16, title: &str, detail: &str, extra_html: &str) -> Response<Vec<u8>> {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body>\
<p class=\"dev\">Development identity provider &mdash; for local development only.</p><h1>{t}</h1><p>{d}</p>{extra_html}</body></html>",
        t = escape(title),
        d = escape(detail),
    );
    response(status, "text/html; charset=utf-8", body.into_bytes())
}

pub(super) fn login_page(request_id: &str, error: Option<&str>) -> Response<Vec<u8>> {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    let form = format!(
        "{error}<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"request\" value=\"{id}\">\
<label for=\"username\">Username</label><input id=\"username\" name=\"username\" autocomplete=\"username\" autofocus>\
<label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\
<button type=\"submit\" id=\"submit\">Sign in</button></form>",
        id = escape(request_id),
    );
    page(
        200,
        "Sign in",
        "Sign in to continue to the application.",
        &form,
    )
}
