//! A small builder for the gateway configurations the end-to-end tests run, so each test states
//! only what is special about it. It writes TOML, the same text an operator would.

/// A configuration body (everything after `[server]` and `[metrics]`, which
/// [`GatewayProcess`](super::GatewayProcess) writes).
#[derive(Debug, Clone, Default)]
pub struct Toml {
    session: Option<String>,
    sections: Vec<String>,
}

impl Toml {
    /// An empty configuration.
    pub fn new() -> Toml {
        Toml::default()
    }

    /// The start of most tests against the real OP: `[session]` with `secret` and
    /// `session_extra`, provider `op` at `issuer` (the OP's `gateway` client, its callback on
    /// `origin`), upstream `app` at `upstream`, and route `app` (`/app`) signing in there.
    pub fn app_at_op(
        secret: &str,
        session_extra: &str,
        issuer: &str,
        origin: &str,
        upstream: &str,
    ) -> Toml {
        Toml::new()
            .session(secret, session_extra)
            .provider("op", issuer, "gateway-secret-0123456789", origin, "")
            .upstream("app", upstream)
            .route("app", &["/app"], "app", r#"provider = "op""#, "")
    }

    /// `[session]` with `secret` and extra lines (`store = "memory"`, ...).
    pub fn session(mut self, secret: &str, extra: &str) -> Toml {
        self.session = Some(format!("[session]\nsecrets = [\"{secret}\"]\n{extra}\n"));
        self
    }

    /// A `[[providers]]` entry: client `gateway` with `client_secret`, its callback at
    /// `origin/oauth2/callback`, plus extra lines.
    pub fn provider(
        mut self,
        name: &str,
        issuer: &str,
        client_secret: &str,
        origin: &str,
        extra: &str,
    ) -> Toml {
        self.sections.push(format!(
            "[[providers]]\nname = \"{name}\"\nissuer = \"{issuer}\"\nclient_id = \"gateway\"\n\
             client_secret = \"{client_secret}\"\nredirect_uri = \"{origin}/oauth2/callback\"\n{extra}\n"
        ));
        self
    }

    /// An `[[upstreams]]` entry with one target.
    pub fn upstream(mut self, name: &str, target: &str) -> Toml {
        self.sections.push(format!(
            "[[upstreams]]\nname = \"{name}\"\ntargets = [\"{target}\"]\n"
        ));
        self
    }

    /// A `[[routes]]` entry: `paths` (none: every path), its upstream, and `auth` (the inside of
    /// `auth = { ... }`; empty for a public route), plus extra lines.
    pub fn route(
        mut self,
        name: &str,
        paths: &[&str],
        upstream: &str,
        auth: &str,
        extra: &str,
    ) -> Toml {
        let mut r = format!("[[routes]]\nname = \"{name}\"\nupstream = \"{upstream}\"\n");
        if !paths.is_empty() {
            let list: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
            r.push_str(&format!("paths = [{}]\n", list.join(", ")));
        }
        if !auth.is_empty() {
            r.push_str(&format!("auth = {{ {auth} }}\n"));
        }
        r.push_str(extra);
        r.push('\n');
        self.sections.push(r);
        self
    }

    /// Any other text, as written.
    pub fn raw(mut self, text: &str) -> Toml {
        self.sections.push(format!("{text}\n"));
        self
    }

    /// The configuration text.
    pub fn build(&self) -> String {
        let mut out = self.session.clone().unwrap_or_default();
        for s in &self.sections {
            out.push_str(s);
        }
        out
    }
}
