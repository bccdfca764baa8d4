//! A route's email rule: `email_domains`, `emails` and `emails_file` (oauth2-proxy's
//! `--email-domain` and `--authenticated-emails-file`).

use super::Builder;
use crate::config::EmailRule;
use crate::config::raw::{RawAuthTable, SStr};

impl Builder<'_> {
    /// The route's email rule (empty when none of the keys is set).
    pub(super) fn email_rule(&mut self, t: &RawAuthTable, key: &str) -> EmailRule {
        let mut rule = EmailRule::default();
        for (i, d) in t.email_domains.iter().flatten().enumerate() {
            let domain = d.get_ref().trim().to_ascii_lowercase();
            let bare = domain.strip_prefix('.').unwrap_or(&domain);
            if bare.is_empty() || bare.contains(['@', '*', '/', ' ']) || !bare.contains('.') {
                self.err(
                    d.span(),
                    format!("{key}.email_domains[{i}]"),
                    format!(
                        "{:?} is not a domain: give \"example.com\" (that domain) or \".example.com\" (it and its subdomains); to allow any email, leave the key out",
                        d.get_ref()
                    ),
                );
                continue;
            }
            rule.domains.push(domain);
        }
        for (i, e) in t.emails.iter().flatten().enumerate() {
            self.email_address(e.get_ref(), e, &format!("{key}.emails[{i}]"), &mut rule);
        }
        if let Some(f) = &t.emails_file {
            let k = format!("{key}.emails_file");
            if self.posted {
                self.errs.warn_at(
                    Some(f.span()),
                    k,
                    "not read: a posted configuration's files stay unread (run `oidc-gateway check` on the machine)",
                );
                return rule;
            }
            match std::fs::read_to_string(f.get_ref()) {
                Ok(text) => {
                    for line in text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    {
                        self.email_address(line, f, &k, &mut rule);
                    }
                }
                Err(e) => self.err(f.span(), k, format!("cannot read {:?}: {e}", f.get_ref())),
            }
        }
        rule
    }

    /// One listed address, added lower-cased to `rule`.
    fn email_address(&mut self, address: &str, at: &SStr, key: &str, rule: &mut EmailRule) {
        let a = address.trim().to_ascii_lowercase();
        match a.split_once('@') {
            Some((local, domain))
                if !local.is_empty() && domain.contains('.') && !domain.contains('@') =>
            {
                rule.addresses.insert(a);
            }
            _ => self.err(
                at.span(),
                key.to_owned(),
                format!("{address:?} is not an email address"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Auth, Config, EmailRule};
    use std::path::Path;

    const BASE: &str = "[session]\nsecrets = [\"emails-config-secret-0123456789abcdef\"]\n\
        [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
        redirect_uri = \"https://app.example.com/oauth2/callback\"\n\
        [[upstreams]]\nname = \"app\"\ntargets = [\"127.0.0.1:8080\"]\n";

    fn rule(auth: &str) -> Result<EmailRule, String> {
        let text = format!(
            "{BASE}[[routes]]\nname = \"r\"\nupstream = \"app\"\nauth = {{ provider = \"op\"{auth} }}\n"
        );
        let cfg = Config::parse(&text, Path::new("gw.toml")).map_err(|e| e.to_string())?;
        match &cfg.routes[0].auth {
            Auth::Oidc(spec) => Ok(spec.rules.emails.clone()),
            Auth::None => unreachable!(),
        }
    }

    #[test]
    fn domains_addresses_and_a_file_are_read_lower_cased() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("emails.txt");
        std::fs::write(&file, "# staff\nBob@Partner.org\n\n  carol@example.net  \n").unwrap();
        let r = rule(&format!(
            ", email_domains = [\"Example.com\", \".corp.example\"], emails = [\"Alice@Other.org\"], emails_file = \"{}\"",
            file.display()
        ))
        .unwrap();
        assert_eq!(r.domains, ["example.com", ".corp.example"]);
        let addresses: Vec<&str> = r.addresses.iter().map(String::as_str).collect();
        assert_eq!(
            addresses,
            ["alice@other.org", "bob@partner.org", "carol@example.net"]
        );
        assert!(rule("").unwrap().is_empty());
    }

    #[test]
    fn mistakes_name_their_line_and_key() {
        for (auth, key) in [
            (
                ", email_domains = [\"*\"]",
                "routes[0].auth.email_domains[0]",
            ),
            (
                ", email_domains = [\"a@b.com\"]",
                "routes[0].auth.email_domains[0]",
            ),
            (", emails = [\"alice\"]", "routes[0].auth.emails[0]"),
            (
                ", emails_file = \"/no/such/file\"",
                "routes[0].auth.emails_file",
            ),
        ] {
            let e = rule(auth).expect_err(auth);
            assert!(e.contains("gw.toml:") && e.contains(key), "{auth}: {e}");
        }
    }
}
