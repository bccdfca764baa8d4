//! A cookie-keeping HTTP client that signs in the way a browser does: it follows redirects one
//! by one and fills in the provider's login and consent forms.

use reqwest::cookie::{CookieStore, Jar};
use std::sync::Arc;

/// A browser-like client.
pub struct Browser {
    /// The client (cookies on, redirects off).
    pub client: reqwest::Client,
    /// Its cookie jar.
    pub jar: Arc<Jar>,
}

/// The last response of a navigation.
pub struct Page {
    /// Final URL.
    pub url: String,
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body text.
    pub body: String,
    /// Every URL visited, in order.
    pub trail: Vec<String>,
}

impl Page {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A fresh browser with an empty cookie jar.
    pub fn new() -> Browser {
        Self::from_address(None)
    }

    /// A fresh browser whose connections come from `local` (any 127.x.y.z on loopback), or
    /// from the system's choice.
    pub fn from_address(local: Option<std::net::IpAddr>) -> Browser {
        Self::with(|b| b.local_address(local))
    }

    /// A fresh browser that also trusts the CA certificate `ca_pem` (a test PKI's).
    pub fn trusting(ca_pem: &[u8]) -> Browser {
        let ca = reqwest::Certificate::from_pem(ca_pem).unwrap();
        Self::with(|b| b.add_root_certificate(ca))
    }

    fn with(adjust: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder) -> Browser {
        let jar = Arc::new(Jar::default());
        let builder = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(15));
        let client = adjust(builder).build().unwrap();
        Browser { client, jar }
    }

    /// The `Cookie` header the jar would send to `url`.
    pub fn cookie_header(&self, url: &str) -> String {
        self.jar
            .cookies(&url.parse().unwrap())
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// GET `url` and follow redirects (up to 20), filling login/consent forms on the way with
    /// `credentials` when given. Stops at the first non-redirect that is not such a form.
    pub async fn navigate(&self, url: &str, credentials: Option<(&str, &str)>) -> Page {
        self.navigate_until(url, credentials, None).await
    }

    /// Like [`navigate`](Self::navigate), but stops before requesting the first URL that
    /// starts with `stop` (a callback to deliver by hand), returned as the page's `url`.
    pub async fn navigate_until(
        &self,
        url: &str,
        credentials: Option<(&str, &str)>,
        stop: Option<&str>,
    ) -> Page {
        let mut url = url.to_owned();
        let mut method = reqwest::Method::GET;
        let mut form: Option<Vec<(String, String)>> = None;
        let mut trail = Vec::new();
        for _ in 0..30 {
            if let Some(stop) = stop
                && url.starts_with(stop)
            {
                return Page {
                    url,
                    status: 0,
                    headers: reqwest::header::HeaderMap::new(),
                    body: String::new(),
                    trail,
                };
            }
            trail.push(url.clone());
            let mut req = self
                .client
                .request(method.clone(), &url)
                .header("Accept", "text/html,application/xhtml+xml");
            if let Some(f) = form.take() {
                req = req.form(&f);
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            if (300..400).contains(&status)
                && let Some(loc) = headers.get("location")
            {
                url = resolve(&url, loc.to_str().unwrap());
                method = reqwest::Method::GET;
                continue;
            }
            let body = resp.text().await.unwrap_or_default();
            let page = |url, body| Page {
                url,
                status,
                headers: headers.clone(),
                body,
                trail: trail.clone(),
            };
            // A sign-in form (the real OP's or the development IdP's): fill it in.
            if status == 200 && body.contains("name=\"password\"") {
                let Some((user, pass)) = credentials else {
                    return page(url, body);
                };
                if body.contains("Invalid username or password") {
                    return page(url, body);
                }
                let mut fields = hidden_fields(&body);
                fields.push(("username".into(), user.into()));
                fields.push(("password".into(), pass.into()));
                let action = form_action(&body)
                    .unwrap_or_else(|| format!("{}/login", url.split('?').next().unwrap()));
                url = resolve(&url, &action);
                method = reqwest::Method::POST;
                form = Some(fields);
                continue;
            }
            // The real OP's consent page.
            if status == 200 && url.contains("/interaction/") && body.contains("/confirm") {
                let base = url
                    .split('?')
                    .next()
                    .unwrap()
                    .trim_end_matches('/')
                    .to_owned();
                url = format!("{base}/confirm");
                method = reqwest::Method::POST;
                form = Some(Vec::new());
                continue;
            }
            return page(url, body);
        }
        panic!("too many redirects: {trail:?}");
    }

    /// POST an empty form to `url` (no redirects followed).
    pub async fn post(&self, url: &str) -> reqwest::Response {
        self.client
            .post(url)
            .header("Accept", "text/html")
            .form(&[("x", "")])
            .send()
            .await
            .unwrap()
    }
}

fn resolve(base: &str, href: &str) -> String {
    reqwest::Url::parse(base)
        .unwrap()
        .join(href)
        .unwrap()
        .to_string()
}

/// Every `<input type="hidden" name=".." value="..">` of an HTML page, character references
/// decoded as a browser would.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| {
            let tag = &tag[..tag.find('>')?];
            let attr = |a: &str| {
                let at = tag.find(&format!("{a}=\""))? + a.len() + 2;
                let raw = &tag[at..at + tag[at..].find('"')?];
                Some(html_escape::decode_html_entities(raw).into_owned())
            };
            Some((attr("name")?, attr("value").unwrap_or_default()))
        })
        .collect()
}

/// The value of `name="<field>" value="..."` in an HTML form.
pub fn form_value(html: &str, field: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{field}\""))?;
    let rest = &html[at..];
    let v = rest.find("value=\"")? + "value=\"".len();
    let end = rest[v..].find('"')?;
    Some(rest[v..v + end].to_owned())
}

/// The `action` of the first form in an HTML page.
pub fn form_action(html: &str) -> Option<String> {
    let at = html.find("action=\"")? + "action=\"".len();
    let end = html[at..].find('"')?;
    Some(html[at..at + end].replace("&amp;", "&"))
}

/// Signs `user` in at `/app/` through `gw` with a fresh browser; the session cookie as a
/// `Cookie` header value (`oidc_session=...`).
pub async fn sign_in(gw: &super::GatewayProcess, user: (&str, &str)) -> String {
    let b = Browser::new();
    let page = b.navigate(&gw.url("/app/"), Some(user)).await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, gw.log());
    b.cookie_header(gw.url("").trim_end_matches('/'))
        .split("; ")
        .find(|c| c.starts_with("oidc_session="))
        .expect("a session cookie")
        .to_owned()
}
