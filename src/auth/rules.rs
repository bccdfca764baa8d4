//! Claim rules: `scopes_required`, `groups_required`, `roles_required`, `audience_required`.
//! Kong's semantics: the entries are alternatives (any one suffices); the space-separated words
//! of an entry must all be present. Claims are found by path (`["realm_access", "roles"]`);
//! a string claim counts as space-separated values (as `scope` is), an array as its elements.

use crate::claims::lookup;
use crate::config::{EmailRule, Requirement, Rules};
use serde_json::{Map, Value};

/// Whether `value` (a string of words or an array) contains `wanted`.
fn contains(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => s.split_whitespace().any(|w| w == wanted),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(wanted)),
        _ => false,
    }
}

/// Whether `claims` meet `req` (always true when nothing is required).
pub fn satisfied(req: &Requirement, claims: &Map<String, Value>) -> bool {
    if req.any_of.is_empty() {
        return true;
    }
    let Some(value) = lookup(claims, &req.claim) else {
        return false;
    };
    req.any_of
        .iter()
        // An empty alternative would pass `.all()`: configuration refuses one, and it never
        // counts here either.
        .any(|all| !all.is_empty() && all.iter().all(|w| contains(value, w)))
}

/// The first rule `claims` fail, by its config name.
pub fn first_failure(
    rules: &Rules,
    claims: &Map<String, Value>,
    check_audience: bool,
) -> Option<&'static str> {
    if !satisfied(&rules.scopes, claims) {
        return Some("scopes_required");
    }
    if !satisfied(&rules.groups, claims) {
        return Some("groups_required");
    }
    if !satisfied(&rules.roles, claims) {
        return Some("roles_required");
    }
    if check_audience && !satisfied(&rules.audience, claims) {
        return Some("audience_required");
    }
    if !email_allowed(&rules.emails, claims) {
        return Some("email");
    }
    None
}

/// Whether `claims`' `email` passes `rule`: listed, or in a listed domain (a `.domain` entry
/// takes its subdomains too), compared without case. An email the provider says is not
/// verified never passes.
pub fn email_allowed(rule: &EmailRule, claims: &Map<String, Value>) -> bool {
    if rule.is_empty() {
        return true;
    }
    if claims.get("email_verified") == Some(&Value::Bool(false)) {
        return false;
    }
    let Some(email) = claims.get("email").and_then(Value::as_str) else {
        return false;
    };
    let email = email.to_ascii_lowercase();
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() {
        return false;
    }
    rule.addresses.contains(&email)
        || rule.domains.iter().any(|d| match d.strip_prefix('.') {
            Some(parent) => domain == parent || domain.ends_with(d.as_str()),
            None => domain == d,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(claim: &[&str], any_of: &[&str]) -> Requirement {
        Requirement {
            claim: claim.iter().map(|s| (*s).to_owned()).collect(),
            any_of: any_of
                .iter()
                .map(|a| a.split_whitespace().map(str::to_owned).collect())
                .collect(),
        }
    }

    fn claims() -> Map<String, Value> {
        serde_json::json!({
            "scope": "orders:read profile",
            "groups": ["admins", "ops"],
            "realm_access": {"roles": ["orders:read", "billing"]}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn entries_are_alternatives_and_words_must_all_match() {
        let c = claims();
        assert!(satisfied(&req(&["scope"], &["orders:read"]), &c));
        assert!(satisfied(
            &req(&["scope"], &["orders:write", "orders:read profile"]),
            &c
        ));
        assert!(!satisfied(
            &req(&["scope"], &["orders:read orders:write"]),
            &c
        ));
        assert!(satisfied(&req(&["groups"], &["admins", "ops oncall"]), &c));
        assert!(!satisfied(&req(&["groups"], &["ops oncall"]), &c));
        assert!(satisfied(&req(&["groups"], &[]), &c), "nothing required");
    }

    #[test]
    fn nested_claims_are_found_by_path() {
        let c = claims();
        assert!(satisfied(
            &req(&["realm_access", "roles"], &["billing"]),
            &c
        ));
        assert!(!satisfied(&req(&["realm_access", "roles"], &["admin"]), &c));
        assert!(!satisfied(&req(&["missing", "roles"], &["billing"]), &c));
    }

    #[test]
    fn the_first_failing_rule_is_named() {
        let mut rules = Rules {
            groups: req(&["groups"], &["nobody"]),
            ..Default::default()
        };
        assert_eq!(
            first_failure(&rules, &claims(), true),
            Some("groups_required")
        );
        rules.groups = req(&["groups"], &["ops"]);
        assert_eq!(first_failure(&rules, &claims(), true), None);
    }

    #[test]
    fn email_rules_take_listed_addresses_and_domains_and_never_an_unverified_email() {
        let rule = EmailRule {
            domains: vec!["example.com".into(), ".corp.example".into()],
            addresses: ["bob@partner.org".to_owned()].into(),
        };
        let with = |email: &str, verified: Option<bool>| {
            let mut c = serde_json::json!({ "email": email });
            if let Some(v) = verified {
                c["email_verified"] = v.into();
            }
            email_allowed(&rule, c.as_object().unwrap())
        };
        assert!(with("alice@example.com", Some(true)));
        assert!(with("Alice@EXAMPLE.com", None), "case does not matter");
        assert!(with("bob@partner.org", None));
        assert!(with("x@corp.example", None));
        assert!(
            with("x@eu.corp.example", None),
            "a .domain takes subdomains"
        );
        assert!(!with("x@sub.example.com", None), "a bare domain does not");
        assert!(!with("x@evilcorp.example", None));
        assert!(!with("alice@example.com.evil.org", None));
        assert!(!with("alice@example.com", Some(false)), "unverified");
        assert!(!with("example.com", None));
        assert!(!with("@example.com", None));
        assert!(!email_allowed(&rule, &Map::new()), "no email");
        assert!(email_allowed(&EmailRule::default(), &Map::new()), "no rule");
    }
}
